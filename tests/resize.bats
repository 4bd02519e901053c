#!/usr/bin/env bats
# resize.bats - qimg resize against qemu-img resize 7.2: the same fixture
# is resized by both, in two directories; exit status, stdout and stderr
# (program name aside) must be the same, and so must the result: qemu-img
# check clean, and every layer (the active one and each snapshot) converted
# to raw byte-identical to what qemu-img's own resize leaves.
load helpers

setup() {
    common_setup
    mkdir fx
}

# p_layers IMG DIR: the active layer and every snapshot, as raw files.
p_layers() {
    mkdir -p "$2"
    qemu-img convert -O raw "$1" "$2/active.raw" || return 1
    for id in $(qemu-img snapshot -l "$1" | awk 'NR > 2 { print $1 }'); do
        qemu-img convert -l "$id" -O raw "$1" "$2/$id.raw" || return 1
    done
}

# same IMG ARGS...: resize the fixture image IMG (in a copy of fx/ each)
# with qemu-img and with qimg, arguments ARGS; compare as said above.
same() {
    local img=$1 f
    shift
    rm -rf a b la lb a.rc b.rc
    cp -a fx a
    cp -a fx b
    (cd a && { qemu-img resize "$@" >../a.out 2>../a.err || echo $? >../a.rc; })
    (cd b && { qimg resize "$@" >../b.out 2>../b.err || echo $? >../b.rc; })
    [ -e a.rc ] || echo 0 >a.rc
    [ -e b.rc ] || echo 0 >b.rc
    sed -i 's/qemu-img/qimg/g' a.err
    diff a.rc b.rc || fail "exit status differs: $(cat a.err b.err)"
    diff a.out b.out || fail "stdout differs"
    diff a.err b.err || fail "stderr differs"
    if [[ $img == *.raw ]]; then
        cmp "a/$img" "b/$img" || fail "the raw images differ"
        return
    fi
    if [ "$(cat a.rc)" != 0 ]; then
        cmp "fx/$img" "b/$img" || fail "a refused resize changed the image"
        return
    fi
    [ -z "${SAME_OUTPUT_ONLY:-}" ] || return 0
    run qemu-img check "b/$img"
    assert_success
    # (the raw layers have the virtual size as their length)
    p_layers "a/$img" la
    p_layers "b/$img" lb
    diff <(cd la && ls) <(cd lb && ls) || fail "not the same snapshots"
    for f in la/*.raw; do
        cmp "$f" "lb/${f#la/}" || fail "layer ${f#la/} differs"
    done
}

# rich IMG SIZE [create options]: data, compressed, zero clusters, snapshot.
rich() {
    local img=$1 size=$2
    shift 2
    qemu-img create -q -f qcow2 "$@" "fx/$img" "$size"
    qemu-io -c 'write -P 0x11 0 1M' -c 'write -c -P 0x22 1M 128k' \
        -c 'write -z 1536k 128k' -c 'write -P 0x33 3M 512k' "fx/$img" >/dev/null
}

@test "growing a qcow2 image, absolutely and relatively, v2 and v3" {
    rich v3.qcow2 4M
    rich v2.qcow2 4M -o compat=0.10
    same v3.qcow2 v3.qcow2 +9M
    same v2.qcow2 v2.qcow2 +10M
    same v2.qcow2 -q v2.qcow2 4100k
}

@test "growing grows the L1 table (512-byte clusters, extended L2)" {
    rich small.qcow2 4M -o cluster_size=512
    rich ext.qcow2 4M -o cluster_size=16k,extended_l2=on
    same small.qcow2 small.qcow2 40M
    same ext.qcow2 ext.qcow2 +36M
}

@test "shrinking is refused without --shrink, with qemu-img's warning" {
    rich a.qcow2 4M
    truncate -s 1M fx/r.raw
    same a.qcow2 a.qcow2 2M
    same a.qcow2 a.qcow2 -- -1M
    same r.raw -f raw r.raw 512k
}

@test "shrinking drops data, compressed and zero clusters past the new end" {
    rich a.qcow2 4M
    rich e.qcow2 4M -o extended_l2=on
    same a.qcow2 --shrink a.qcow2 1M
    same a.qcow2 --shrink a.qcow2 -- -2M
    same a.qcow2 --shrink a.qcow2 1000k
    same e.qcow2 --shrink e.qcow2 1200k
}

@test "internal snapshots keep their data through a shrink and a grow (v3)" {
    rich s.qcow2 4M
    qemu-img snapshot -c one fx/s.qcow2
    qemu-io -c 'write -P 0x44 512k 3M' fx/s.qcow2 >/dev/null
    qemu-img snapshot -c two fx/s.qcow2
    qemu-io -c 'write -P 0x55 3M 1M' fx/s.qcow2 >/dev/null
    same s.qcow2 --shrink s.qcow2 1M
    same s.qcow2 s.qcow2 12M
}

@test "a v2 image with snapshots cannot be resized" {
    rich s.qcow2 4M -o compat=0.10
    qemu-img snapshot -c one fx/s.qcow2
    same s.qcow2 s.qcow2 8M
    same s.qcow2 --shrink s.qcow2 1M
}

@test "growing over a longer backing file shows zeros, not the backing data" {
    qemu-img create -q -f qcow2 fx/base.qcow2 4M
    qemu-io -c 'write -P 0x77 0 4M' fx/base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 fx/o.qcow2 1M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 fx/u.qcow2 1000k
    qemu-io -c 'write -P 0x12 900k 50k' fx/u.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 fx/v2.qcow2 1M
    same o.qcow2 o.qcow2 3M
    same o.qcow2 o.qcow2 +6M
    same u.qcow2 u.qcow2 3M
    same v2.qcow2 v2.qcow2 3M
    same o.qcow2 --shrink o.qcow2 512k
}

@test "qcow2 preallocation of the new part reads as zeros" {
    rich a.qcow2 4M
    same a.qcow2 --preallocation=metadata a.qcow2 5M
    same a.qcow2 --preallocation=falloc a.qcow2 +1M
    same a.qcow2 --preallocation=full a.qcow2 6M
    same a.qcow2 --preallocation=off a.qcow2 6M
}

@test "raw images grow, shrink and preallocate as with qemu-img" {
    printf 'hello' >fx/r.raw
    truncate -s 1000 fx/r.raw
    same r.raw -f raw r.raw +0
    same r.raw -f raw r.raw 1500
    same r.raw -f raw --shrink r.raw 700
    same r.raw -f raw --preallocation=metadata r.raw 1M
    same r.raw -f raw --preallocation=falloc r.raw 2M
    same r.raw -f raw --preallocation=full r.raw 3M
    same r.raw r.raw 4M
}

@test "bad arguments get qemu-img's messages" {
    rich a.qcow2 4M
    same a.qcow2 a.qcow2
    same a.qcow2 a.qcow2 1x
    same a.qcow2 a.qcow2 0
    same a.qcow2 --shrink a.qcow2 -- -4M
    same a.qcow2 a.qcow2 9E
    same a.qcow2 a.qcow2 16E
    same a.qcow2 a.qcow2 18446744073709551615
    same a.qcow2 a.qcow2 18446744073709551616
    same a.qcow2 a.qcow2 1.5
    same a.qcow2 a.qcow2 -1
    same a.qcow2 a.qcow2 7E
    same a.qcow2 --shrink a.qcow2 1000
    same a.qcow2 --preallocation=full a.qcow2 2M
    same a.qcow2 --preallocation=foo a.qcow2 8M
    same a.qcow2 a.qcow2 extra 8M
    same a.qcow2 missing.qcow2 8M
    same a.qcow2 a.qcow2 +0
}

@test "resize --help is generated from the option table" {
    run qimg resize --help
    assert_success
    assert_line --index 0 --partial "usage: qimg resize "
    assert_output --partial "--shrink"
    assert_output --partial "--preallocation=mode"
    run qimg help resize
    assert_success
}

@test "an encrypted image is resized with --object and --image-opts" {
    local d sec=(--object secret,id=s0,data=pw)
    qemu-img create -q -f qcow2 "${sec[@]}" \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 fx/c.qcow2 1M
    qemu-io "${sec[@]}" --image-opts -c 'write -P 9 0 1M' \
        driver=qcow2,file.filename=fx/c.qcow2,encrypt.key-secret=s0 >/dev/null
    SAME_OUTPUT_ONLY=1 same c.qcow2 "${sec[@]}" --image-opts \
        driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=s0 2M
    for d in a b; do
        qemu-img check "${sec[@]}" --image-opts \
            "driver=qcow2,file.filename=$d/c.qcow2,encrypt.key-secret=s0"
        qemu-img convert "${sec[@]}" --image-opts -O raw \
            "driver=qcow2,file.filename=$d/c.qcow2,encrypt.key-secret=s0" $d.raw
    done
    cmp a.raw b.raw
    same c.qcow2 "${sec[@]}" -f qcow2 --image-opts \
        driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=s0 2M
}
