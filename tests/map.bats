#!/usr/bin/env bats
# map.bats - `qimg map` prints what `qemu-img map` prints, human and JSON,
# character for character, over backing chains, zero and compressed
# clusters, v2 and v3 images; it exits as qemu-img does and never writes.
load helpers
load crypto_helpers

setup() { common_setup; }

# same_map ARGS...: qimg map ARGS prints what qemu-img map ARGS prints, in
# both forms, and exits the same way.
same_map() {
    local o q i qrc irc
    for o in human json; do
        q=$(qemu-img map --output=$o "$@" 2>&1) && qrc=0 || qrc=$?
        i=$(qimg map --output=$o "$@" 2>&1) && irc=0 || irc=$?
        q=${q//qemu-img:/qimg:}
        [ "$q" = "$i" ] && [ "$qrc" = "$irc" ] || {
            echo "--output=$o $* differs (qemu-img exit $qrc, qimg exit $irc):" >&2
            diff <(echo "$q") <(echo "$i") >&2
            return 1
        }
    done
}

# A chain base <- mid <- top with data, zero clusters and holes at every
# level; $1 is the compat level.
make_chain() {
    local compat=$1
    qemu-img create -q -f qcow2 -o compat=$compat base.qcow2 8M
    qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 64k' -c 'write -P 3 3M 192k' \
        -c 'write -P 4 6M 64k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=$compat -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -P 5 512k 128k' -c 'write -z 3M 64k' -c 'write -P 6 5M 64k' \
        mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=$compat -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 7 64k 64k' -c 'write -z 5M 64k' -c 'write -P 8 7M 1M' \
        -c 'write -P 9 2M 64k' top.qcow2 >/dev/null
}

@test "a v3 chain maps as qemu-img maps it, at every depth" {
    make_chain 1.1
    same_map top.qcow2
    same_map mid.qcow2
    same_map base.qcow2
}

@test "a v2 chain (zero writes allocate) maps as qemu-img maps it" {
    make_chain 0.10
    same_map top.qcow2
    same_map mid.qcow2
}

@test "--start-offset and --max-length cut the map as qemu-img cuts it" {
    make_chain 1.1
    same_map --start-offset=100000 top.qcow2
    same_map --max-length=3M top.qcow2
    same_map --start-offset=1000 --max-length=12345 top.qcow2
    same_map -s 1M -l 2M top.qcow2
    same_map --start-offset=8M top.qcow2
    same_map --start-offset=20M top.qcow2
    same_map --max-length=0 top.qcow2
}

@test "an overlay larger than its backing file reads zeros past the backing's end" {
    qemu-img create -q -f qcow2 small.qcow2 1M
    qemu-io -c 'write -P 7 0 64k' -c 'write -P 7 960k 64k' small.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 big.qcow2 4M
    qemu-io -c 'write -P 8 2M 64k' big.qcow2 >/dev/null
    same_map big.qcow2
}

@test "raw images and a raw backing file map as qemu-img maps them" {
    truncate -s 4M disk.raw
    printf 'data' | dd of=disk.raw bs=64k seek=10 conv=notrunc status=none
    make_pattern p.raw 1
    dd if=p.raw of=disk.raw bs=1M seek=2 conv=notrunc status=none
    same_map disk.raw
    same_map -f raw disk.raw
    qemu-img create -q -f qcow2 -b disk.raw -F raw over.qcow2
    qemu-io -c 'write -P 1 2M 64k' over.qcow2 >/dev/null
    same_map over.qcow2
}

@test "small, large and extended-L2 clusters map as qemu-img maps them" {
    qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 1M
    qemu-io -c 'write -P 1 1000 3000' -c 'write -z 100k 2k' c512.qcow2 >/dev/null
    same_map c512.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=2M big.qcow2 16M
    qemu-io -c 'write -P 1 3M 4k' -c 'write -z 8M 2M' big.qcow2 >/dev/null
    same_map big.qcow2
    # (qemu-img gives an offset to the unallocated subclusters of the last
    # image of a chain; qimg does not: the base here has no subclusters.)
    qemu-img create -q -f qcow2 base.qcow2 2M
    qemu-io -c 'write -P 1 0 12k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k -b base.qcow2 \
        -F qcow2 e.qcow2
    qemu-io -c 'write -P 2 4k 4k' -c 'write -P 3 256k 8k' e.qcow2 >/dev/null
    same_map e.qcow2
}

@test "internal snapshots do not show: the active state is mapped" {
    make_chain 1.1
    qemu-img snapshot -c s1 top.qcow2
    qemu-io -c 'write -P 10 64k 64k' -c 'write -P 11 4M 64k' top.qcow2 >/dev/null
    same_map top.qcow2
}

@test "compressed clusters: the same JSON; a human map where qemu-img gives up" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -P 3 3M 128k' base.qcow2 >/dev/null
    qemu-img convert -c -O qcow2 base.qcow2 comp.qcow2
    qemu-io -c 'write -P 2 1M 64k' comp.qcow2 >/dev/null
    run -0 diff <(qemu-img map --output=json comp.qcow2) <(qimg map --output=json comp.qcow2)
    run -1 qemu-img map comp.qcow2
    assert_output --partial "File contains external, encrypted or compressed clusters."
    run -0 qimg map comp.qcow2
    # Every range with data in the JSON map is a line, with "-" for the
    # compressed ones that have no host offset.
    want=$(qemu-img map --output=json comp.qcow2 |
        jq '[.[] | select(.data and (.zero | not))] | length')
    [ "$(echo "$output" | tail -n +2 | wc -l)" = "$want" ]
    assert_line --index 0 "Offset          Length          Mapped to       File"
    assert_line --index 1 "0               0x100000        -               comp.qcow2"
    assert_line --index 3 "0x300000        0x20000         -               comp.qcow2"
    off=$(qemu-img map --output=json comp.qcow2 | jq -r '.[] | select(.start == 1048576) | .offset')
    assert_line --index 2 "$(printf '%-16s%-16s%-16s%s' 0x100000 0x10000 "$(printf '%#x' "$off")" comp.qcow2)"
}

@test "a chain named by absolute path prints absolute file names, as qemu-img" {
    make_chain 1.1
    same_map "$PWD/top.qcow2"
    mkdir sub
    mv base.qcow2 mid.qcow2 top.qcow2 sub/
    same_map sub/top.qcow2
}

@test "bad options and missing files fail as qemu-img fails" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    same_map --start-offset=xyz a.qcow2
    same_map --start-offset=-5 a.qcow2
    same_map --max-length=1x a.qcow2
    same_map missing.qcow2
    run -1 qimg map --output=xml a.qcow2
    assert_output "qimg: --output must be used with human or json as argument."
    run -1 qimg map
    assert_output --partial "Expecting one image file name"
    run -1 qimg map a.qcow2 b.qcow2
    assert_output --partial "Expecting one image file name"
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
    same_map orphan.qcow2
}

@test "map never writes, and -U maps an image another process holds" {
    make_chain 1.1
    s=$(file_sum top.qcow2)
    qimg map top.qcow2 >/dev/null
    qimg map --output=json top.qcow2 >/dev/null
    [ "$(file_sum top.qcow2)" = "$s" ]
    qemu-io -c 'sleep 3000' top.qcow2 3>&- &
    sleep 0.5
    run -1 qimg map top.qcow2
    assert_output --partial "lock"
    run -0 qimg map -U top.qcow2
    kill %1 2>/dev/null || true
    wait || true
    [ "$(file_sum top.qcow2)" = "$s" ]
}

@test "preallocated images: holes in the file show as zeros, as qemu-img guesses" {
    qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 4M
    qemu-io -c 'write -P 1 64k 4k' -c 'write -P 2 1M 128k' pm.qcow2 >/dev/null
    same_map pm.qcow2
    # a sparse copy of an image with zeroed data clusters looks preallocated too
    qemu-img create -q -f qcow2 b.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -P 0 1M 512k' b.qcow2 >/dev/null
    cp --sparse=always b.qcow2 sparse.qcow2
    same_map sparse.qcow2
    run -0 qimg map --output=json sparse.qcow2
    assert_output --partial '"zero": true, "data": true'
}

@test "--object and --image-opts map an image as qemu-img map does" {
    mkdir fx
    luks_fixture fx/e.qcow2
    qio fx/e.qcow2 pw 'write -P 1 0 1M' 'write -z 2M 64k' >/dev/null
    same_cmd map "${SEC[@]}" --output=json --image-opts "$(io e.qcow2)"
    same_cmd map "${SEC[@]}" --output=json --start-offset=1M --image-opts "$(io e.qcow2)"
    qemu-img create -q -f qcow2 fx/p.qcow2 1M
    qemu-io -c 'write -P 2 64k 64k' fx/p.qcow2 >/dev/null
    same_cmd map -U --image-opts driver=qcow2,file.filename=p.qcow2
    same_cmd map --image-opts driver=raw,file.filename=p.qcow2
}

@test "a missing or wrong secret, or -f with --image-opts, fail as in qemu-img map" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd map --output=json --image-opts "$o"
    same_cmd map --output=json --object secret,id=sec0,data=bad --image-opts "$o"
    same_cmd map "${SEC[@]}" -f qcow2 --image-opts "$o"
    object_help map
}
