#!/usr/bin/env bats
# measure.bats - qimg measure against qemu-img measure 7.2: for sizes and
# for images (backing chains, snapshots, compressed and zero clusters, v2
# and v3, raw with holes, persistent bitmaps), every output format and
# creation option, human and JSON output, errors and exit status must be
# the same, character for character (program name aside).
load helpers

setup() { common_setup; }

# same ARGS...: qemu-img measure and qimg measure agree on ARGS.
same() {
    local a b ra=0 rb=0
    a=$(qemu-img measure "$@" 2>&1) || ra=$?
    b=$(qimg measure "$@" 2>&1) || rb=$?
    [ "$ra" = "$rb" ] || fail "exit $ra vs $rb for '$*': $a / $b"
    [ "${a//qemu-img/qimg}" = "$b" ] || fail "for '$*':"$'\n'"$a"$'\n'"vs"$'\n'"$b"
}

# p_same_all ARGS...: same, for every option set below (in a plain bash:
# Bats traces every command of a test, which makes loops slow).
all_options() {
    local o
    for o in "" "-O qcow2" "-O qcow2 -o cluster_size=512" "-O qcow2 -o cluster_size=2M" \
        "-O qcow2 -o compat=0.10" "-O qcow2 -o refcount_bits=1" "-O qcow2 -o refcount_bits=64" \
        "-O qcow2 -o extended_l2=on" "-O qcow2 -o preallocation=metadata" \
        "-O qcow2 -o preallocation=falloc" "-O qcow2 -o backing_file=x" \
        "-O qcow2 --output=json" "--output=json" "-O qcow2 -o cluster_size=4k,refcount_bits=8"; do
        # shellcheck disable=SC2086
        same $o "$@"
    done
}

@test "sizes alone give qemu-img's figures for every cluster size and width" {
    local sz o
    for sz in 0 1000 1M 3G 16T; do
        for o in "" cluster_size=512 cluster_size=2M refcount_bits=1 refcount_bits=64 \
            extended_l2=on,cluster_size=2M compat=0.10 preallocation=full; do
            same -O qcow2 ${o:+-o "$o"} --size "$sz"
        done
        same --size "$sz"
        same -O raw --output=json --size "$sz"
    done
    same -O qcow2 --output=json --size 1G
}

@test "an image's allocated clusters through its backing chain are counted" {
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-io -c 'write -P 1 0 3M' -c 'write -P 2 5M 100k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 10M
    qemu-io -c 'write -P 3 2M 2M' -c 'write -z 0 512k' -c 'write -c -P 4 8M 64k' \
        -c 'write -P 5 9M 1000' ov.qcow2 >/dev/null
    all_options base.qcow2
    all_options ov.qcow2
    same -f raw ov.qcow2
}

@test "-l measures an internal snapshot" {
    qemu-img create -q -f qcow2 s.qcow2 4M
    qemu-io -c 'write -P 1 0 3M' s.qcow2 >/dev/null
    qemu-img snapshot -c s1 s.qcow2
    qemu-io -c 'write -z 0 3M' -c 'write -P 2 3M 1M' s.qcow2 >/dev/null
    same -O qcow2 -l s1 s.qcow2
    same -O qcow2 -l 1 --output=json s.qcow2
    same -O qcow2 -l snapshot.name=s1 s.qcow2
    same -O qcow2 s.qcow2
    same -l nope s.qcow2
}

@test "v2 images and raw images with holes" {
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 3M
    qemu-io -c 'write 1M 7k' v2.qcow2 >/dev/null
    head -c 100000 /dev/urandom >r.raw
    truncate -s 5M r.raw
    printf x | dd of=r.raw bs=1 seek=4000000 conv=notrunc status=none
    all_options v2.qcow2
    all_options r.raw
}

@test "persistent bitmaps of a v3 input are sized" {
    qemu-img create -q -f qcow2 bm.qcow2 10M
    qemu-io -c 'write -P 1 0 3M' bm.qcow2 >/dev/null
    qemu-img bitmap --add bm.qcow2 b0
    qemu-img bitmap --add -g 512 bm.qcow2 a-longer-name
    all_options bm.qcow2
}

@test "LUKS encryption adds its header and key material" {
    local s=(--object secret,id=s,data=x) it=encrypt.iter-time=10
    same "${s[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s,$it --size 1G
    same "${s[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s,$it,encrypt.cipher-alg=aes-128 --size 1G
    same "${s[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s,$it,cluster_size=2M --size 1G
    same -O qcow2 -o encrypt.format=luks --size 1G
    same -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s,$it --size 1G
}

@test "bad arguments and options get qemu-img's messages" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    same
    same --size 1G a.qcow2
    same a.qcow2 a.qcow2
    same --size 1x
    same -O vmdk --size 1G
    same -O nope --size 1G
    same -o foo=1 --size 1G
    same -O qcow2 -o cluster_size=1k --size 1T
    same --output=xml --size 1G
    same missing.qcow2
    local o
    for o in preallocation=foo cluster_size=3000 cluster_size=1x refcount_bits=3 \
        refcount_bits=x compat=0.10,refcount_bits=8 compat=2 extended_l2=on,cluster_size=4k \
        extended_l2=maybe foo "" "a=1,,b" size=2G lazy_refcounts=on,compat=0.10; do
        same -O qcow2 -o "$o" --size 1G
    done
    same -O raw -o cluster_size=1k --size 1G
    same -O raw -o preallocation=full --size 1000
}

@test "measure never writes to its input" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    qemu-io -c 'write 0 64k' a.qcow2 >/dev/null
    local before
    before=$(file_sum a.qcow2)
    run qimg measure -O qcow2 a.qcow2
    assert_success
    [ "$(file_sum a.qcow2)" = "$before" ]
}
