#!/usr/bin/env bats
# interop.bats - qimg and qemu-img agree on image contents, both ways:
# images written by qemu-io convert to the same raw bytes with qimg as with
# qemu-img, and what qimg writes passes qemu-img check and reads back, in
# qemu-img, as the source it was made from.
load helpers

setup() { common_setup; }

# qemu_fixture FILE [CREATE_OPTS [SIZE]]: a qcow2 image that qemu-io filled
# with every kind of cluster: data, partial writes, zeros, a discard,
# compressed clusters, a compressed cluster partly overwritten, the tail.
qemu_fixture() {
    local f=$1 opts=${2:-} size=${3:-4M} cs bytes
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$f" "$size"
    cs=$(qemu-img info --output=json "$f" | jq '."cluster-size"')
    bytes=$(qemu-img info --output=json "$f" | jq '."virtual-size"')
    qemu-io -c "write -P 0x11 0 $((cs + cs / 2))" \
            -c "write -P 0x22 $((3 * cs + cs / 8)) $((cs / 4))" \
            -c "write -z $((cs)) $((cs))" \
            -c "write -c -P 0x33 $((5 * cs)) $cs" \
            -c "write -P 0x55 $((7 * cs)) $((2 * cs))" \
            -c "discard $((7 * cs)) $cs" \
            -c "write -P 0x66 $((bytes - 4096)) 4096" \
            "$f" >/dev/null
    # A new session: qemu 7.2 mishandles compressed writes after frees in one.
    qemu-io -c "write -c -P 0x44 $((10 * cs)) $cs" \
            -c "write -P 0x45 $((10 * cs + cs / 4)) $((cs / 4))" \
            -c "write -c -P 0x77 $((11 * cs)) $cs" \
            "$f" >/dev/null
}

# same_as_qemu IMAGE [FLAGS...]: qimg and qemu-img convert it to the same raw bytes.
same_as_qemu() {
    local f=$1
    shift
    qimg convert "$@" -O raw "$f" qimg.raw
    qemu-img convert "$@" -O raw "$f" qemu.raw
    cmp qimg.raw qemu.raw
}

@test "a qcow2 image written by qemu-io converts to the same raw bytes as qemu-img's" {
    qemu_fixture img.qcow2
    run -0 same_as_qemu img.qcow2
}

@test "cluster sizes from 512 bytes to 2 MiB convert like qemu-img" {
    for cs in 512 4k 64k 2M; do
        rm -f img.qcow2
        qemu_fixture img.qcow2 "cluster_size=$cs" "$([ $cs = 2M ] && echo 32M || echo 4M)"
        run -0 same_as_qemu img.qcow2
    done
}

@test "refcount widths of 1 and 64 bits convert like qemu-img" {
    for rb in 1 64; do
        rm -f img.qcow2
        qemu_fixture img.qcow2 "refcount_bits=$rb"
        run -0 same_as_qemu img.qcow2
    done
}

@test "extended L2 entries with subcluster writes convert like qemu-img" {
    for cs in 16k 64k; do
        rm -f img.qcow2
        qemu_fixture img.qcow2 "extended_l2=on,cluster_size=$cs"
        # subclusters: 1/32 of a cluster each; partial, zero and discarded ones
        qemu-io -c "write -P 0x88 $((12 * 65536 + 2048)) 2048" \
                -c "write -P 0x89 $((13 * 65536 + 100)) 7000" \
                -c "write -z $((13 * 65536 + 4096)) 2048" \
                -c "write -P 0x8a $((14 * 65536)) 65536" \
                -c "discard $((14 * 65536 + 8192)) 8192" img.qcow2 >/dev/null
        run -0 same_as_qemu img.qcow2
    done
}

@test "zstd compressed clusters convert like qemu-img" {
    qemu_fixture img.qcow2 "compression_type=zstd"
    run -0 qemu-img check img.qcow2
    assert_output --partial "compressed clusters"
    run -0 same_as_qemu img.qcow2
}

@test "a compat=0.10 image converts like qemu-img" {
    qemu_fixture img.qcow2 "compat=0.10"
    run -0 same_as_qemu img.qcow2
}

@test "an image with snapshots converts its active state like qemu-img" {
    qemu_fixture img.qcow2
    qemu-img snapshot -c one img.qcow2
    qemu-io -c "write -P 0x99 64k 256k" -c "write -z 2M 64k" img.qcow2 >/dev/null
    qemu-img snapshot -c two img.qcow2
    qemu-io -c "write -P 0x9a 100k 1M" img.qcow2 >/dev/null
    run -0 same_as_qemu img.qcow2
    run -0 same_as_qemu img.qcow2 -l one
    run -0 same_as_qemu img.qcow2 -l two
}

@test "a backing chain of three images is flattened like qemu-img does" {
    qemu-img create -q -f raw base.raw 6M
    qemu-io -f raw -c "write -P 0x01 0 6M" base.raw >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4k -b base.raw -F raw mid.qcow2 8M
    qemu-io -c "write -P 0x02 1M 1M" -c "write -z 3M 512k" -c "discard 4M 64k" mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 10M
    qemu-io -c "write -P 0x03 1536k 1M" -c "write -P 0x04 9M 4k" -c "write -z 5M 64k" \
            top.qcow2 >/dev/null
    run -0 same_as_qemu top.qcow2
}

@test "a qcow version 1 image with a backing file converts like qemu-img" {
    qemu-img create -q -f qcow base.qcow 3M
    qemu-io -f qcow -c "write -P 0x11 0 64k" -c "write -c -P 0x22 1M 4k" \
            -c "write -P 0x33 2M 100k" base.qcow >/dev/null
    qemu-img create -q -f qcow -b base.qcow -F qcow top.qcow 4M
    qemu-io -f qcow -c "write -P 0x44 1M 8k" -c "write -P 0x55 3M 32k" top.qcow >/dev/null
    run -0 same_as_qemu base.qcow
    run -0 same_as_qemu top.qcow
    run -0 qimg convert -O qcow2 top.qcow out.qcow2
    qemu-img convert -O raw out.qcow2 out.raw
    cmp out.raw qemu.raw
}

# mixed_source FILE: 4 MiB of random data, zeros and compressible text.
mixed_source() {
    make_pattern rand.bin 2 7
    {
        head -c 1048576 rand.bin
        head -c 524288 /dev/zero
        yes "the quick brown fox jumps over the lazy dog $RANDOM" | head -c 1048576
        head -c 524288 /dev/zero
        tail -c 524288 rand.bin
        head -c 4096 /dev/zero
        yes "qimg" | head -c 520192
    } >"$1"
}

# qemu_reads_back IMAGE SOURCE: qemu-img checks it clean and reads SOURCE back.
qemu_reads_back() {
    qemu-img check "$1"
    qemu-img convert -O raw "$1" back.raw
    cmp back.raw "$2"
}

@test "qimg's qcow2 output passes qemu-img check and reads back as the source" {
    mixed_source src.raw
    run -0 qimg convert -O qcow2 src.raw out.qcow2
    run -0 qemu_reads_back out.qcow2 src.raw
}

@test "qimg's compressed output, zlib and zstd, reads back in qemu-img" {
    mixed_source src.raw
    run -0 qimg convert -c -O qcow2 src.raw z.qcow2
    run -0 qemu_reads_back z.qcow2 src.raw
    assert_output --regexp "[1-9][0-9.]*% compressed clusters"
    run -0 qimg convert -c -O qcow2 -o compression_type=zstd src.raw zs.qcow2
    run -0 qemu_reads_back zs.qcow2 src.raw
    run -0 qemu-img info --output=json zs.qcow2
    [ "$(echo "$output" | jq -r '."format-specific".data."compression-type"')" = zstd ]
}

@test "qimg's output with other creation options reads back in qemu-img" {
    mixed_source src.raw
    for o in cluster_size=4k cluster_size=2M compat=0.10 extended_l2=on refcount_bits=1 \
             refcount_bits=64 lazy_refcounts=on cluster_size=512; do
        rm -f out.qcow2
        run -0 qimg convert -O qcow2 -o "$o" src.raw out.qcow2
        run -0 qemu_reads_back out.qcow2 src.raw
    done
    # packed compressed clusters with one reference each
    run -0 qimg convert -c -O qcow2 -o refcount_bits=1,cluster_size=4k src.raw one.qcow2
    run -0 qemu_reads_back one.qcow2 src.raw
}

@test "qimg's output on a backing file (-B) reads back as the source in qemu-img" {
    mixed_source src.raw
    qemu-img convert -q -f raw -O qcow2 src.raw base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c "write -P 0x21 256k 128k" -c "write -z 1600k 64k" -c "write -P 0x22 3M 4k" \
            top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 want.raw
    run -0 qimg convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 out.qcow2
    run -0 qemu_reads_back out.qcow2 want.raw
    run -0 qemu-img info --output=json out.qcow2
    [ "$(echo "$output" | jq -r '."backing-filename"')" = base.qcow2 ]
    # only the clusters that differ from base are stored
    run -0 qemu-img map --output=json out.qcow2
    [ "$(echo "$output" | jq '[.[] | select(.depth == 0 and .data) | .length] | add')" -eq \
        $((128 * 1024 + 65536)) ]
}

@test "a 64 MiB ext4 file system round-trips raw -> qcow2 -> raw identically" {
    command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 is not installed"
    # as much of /usr/share/doc as fits comfortably (about 32 MiB)
    mkdir stage
    du -sk /usr/share/doc/* | awk '{ if (t + $1 < 32000) { t += $1; print $2 } }' |
        xargs -d '\n' cp -a -t stage/ 2>/dev/null || true
    truncate -s 64M fs.raw
    mkfs.ext4 -q -F -E root_owner=0:0 -d stage fs.raw
    run -0 qimg convert -O qcow2 fs.raw fs.qcow2
    run -0 qemu-img check fs.qcow2
    run -0 qimg convert -O raw fs.qcow2 back.raw
    cmp fs.raw back.raw
    run -0 qimg convert -c -O qcow2 fs.raw fsc.qcow2
    qemu-img convert -O raw fsc.qcow2 backc.raw
    cmp fs.raw backc.raw
}
