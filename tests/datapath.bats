#!/usr/bin/env bats
# datapath.bats - the qcow2 write path (src/qcow2/write.c) against qemu-io:
# the same requests (pattern writes at any offset and length, zero writes,
# compressed clusters) go to two copies of one image, one through qemu-io,
# one through engine_io (tests/unit/engine_io.c, a qemu-io for qimg's engine).
# The guest data must match, qemu-img check must find nothing (no leaks
# either), and snapshots must keep what they had.
load helpers

setup_file() {
    # Built by `make units` with the engine's objects.
    export ENGINE_IO="$BATS_TEST_DIRNAME/../${BUILD:-build}/unit/engine_io"
}

setup() {
    common_setup
    [ -x "$ENGINE_IO" ] || skip "engine_io is not built (make units)"
}

engine_io() { ${QIMG_WRAPPER:-} "$ENGINE_IO" "$@"; }

# random_requests N: N requests in REQS (cluster size CS, image size SIZE).
# Compressed writes go to clusters no request has touched yet (qemu refuses
# to compress over allocated clusters), and first: qemu 7.2 can pack
# compressed data into a cluster that the same session freed and reused.
random_requests() {
    local k n off len pat c tries zreqs=() reqs=()
    for ((n = 0; n < $1; n++)); do
        k=$((RANDOM % 10))
        pat=$(printf '0x%02x' $((RANDOM % 255 + 1)))
        if [ $k -lt 2 ] && [ "${NOCOMP:-}" != 1 ]; then
            c=$((RANDOM % (SIZE / CS)))
            for ((tries = 0; tries < 20 && ${TOUCHED[$c]:-0}; tries++)); do
                c=$((RANDOM % (SIZE / CS)))
            done
            [ "${TOUCHED[$c]:-0}" = 0 ] || continue
            TOUCHED[$c]=1
            zreqs+=(-c "write -c -P $pat $((c * CS)) $CS")
            continue
        fi
        off=$(((RANDOM * 32768 + RANDOM) % SIZE))
        if [ $k -lt 5 ]; then
            off=$((off / 512 * 512))
            len=$((((RANDOM % 256) + 1) * 512 * ((RANDOM % 4) + 1)))
        else
            len=$(((RANDOM * 32768 + RANDOM) % (CS * 3) + 1))
        fi
        [ $((off + len)) -le "$SIZE" ] || len=$((SIZE - off))
        for ((c = off / CS; c <= (off + len - 1) / CS; c++)); do TOUCHED[$c]=1; done
        if [ $k -lt 5 ]; then
            reqs+=(-c "write -z $off $len")
        else
            reqs+=(-c "write -P $pat $off $len")
        fi
    done
    REQS=("${zreqs[@]}" "${reqs[@]}")
}

# same_writes OPTS SEED [snap] [backing]: build an image with qemu-io (and
# snapshots / a backing file), copy it, send the same random requests to
# both copies, compare.
same_writes() {
    local opts=$1 mode="${*:3}"
    RANDOM=$2
    SIZE=$((3 * 1024 * 1024))
    declare -gA TOUCHED=()
    local back=()
    if [[ $mode == *backing* ]]; then
        qemu-img create -q -f qcow2 base.qcow2 "$SIZE"
        qemu-io -c "write -P 0xbb 0 $SIZE" base.qcow2 >/dev/null
        back=(-b base.qcow2 -F qcow2)
    fi
    rm -f a.qcow2 b.qcow2
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "${back[@]}" a.qcow2 "$SIZE"
    CS=$(qemu-img info --output=json a.qcow2 | jq '."cluster-size"')
    random_requests 20
    qemu-io "${REQS[@]}" a.qcow2 >/dev/null
    if [[ $mode == *snap* ]]; then
        qemu-img snapshot -c s1 a.qcow2
        random_requests 4
        qemu-io "${REQS[@]}" a.qcow2 >/dev/null
        qemu-img snapshot -c s2 a.qcow2
    fi
    cp a.qcow2 b.qcow2
    random_requests 40
    qemu-io "${REQS[@]}" a.qcow2 >/dev/null
    engine_io b.qcow2 "${REQS[@]}"
    qemu-img check b.qcow2
    qemu-img compare a.qcow2 b.qcow2
    if [[ $mode == *snap* ]]; then
        for s in s1 s2; do
            qemu-img convert -l $s a.qcow2 sa.raw
            qemu-img convert -l $s b.qcow2 sb.raw
            cmp sa.raw sb.raw
        done
    fi
}

@test "random writes, zero writes and compressed writes match qemu-io's" {
    run -0 same_writes "" 1
}

@test "writes into clusters shared with snapshots copy them and keep the snapshots" {
    run -0 same_writes "" 4 snap
    run -0 same_writes "cluster_size=4k" 6 snap
}

@test "partial writes over a backing file copy the rest of the cluster from it" {
    run -0 same_writes "" 7 backing
    run -0 same_writes "" 8 snap backing
}

@test "extended L2 entries: subcluster state survives partial and zero writes" {
    run -0 same_writes "extended_l2=on" 9 snap
    run -0 same_writes "extended_l2=on,cluster_size=16k" 10 backing
}

@test "compat=0.10: zero writes deallocate, or write zeros over a backing file" {
    run -0 same_writes "compat=0.10" 12
    run -0 same_writes "compat=0.10" 13 backing
}

@test "cluster sizes of 512 bytes and 2 MiB" {
    run -0 same_writes "cluster_size=512" 14
    run -0 same_writes "cluster_size=2M" 15
}

@test "refcount widths of 1 and 2 bits, and zstd compression" {
    run -0 same_writes "refcount_bits=1" 16
    run -0 same_writes "refcount_bits=2,cluster_size=4k" 17
    run -0 same_writes "compression_type=zstd" 19 snap
}

@test "a zero write frees the clusters it covers, as qemu's zero-with-unmap does" {
    qemu-img create -q -f qcow2 img.qcow2 4M
    qemu-io -c "write -P 0x11 0 4M" img.qcow2 >/dev/null
    run -0 engine_io img.qcow2 -c "write -z 64k 1M"
    run -0 qemu-img check --output=json img.qcow2
    [ "$(echo "$output" | jq '."allocated-clusters"')" -eq 48 ]
    [ "$(echo "$output" | jq '.leaks // 0')" -eq 0 ]
    qemu-io -c "read -P 0 64k 1M" -c "read -P 0x11 0 64k" -c "read -P 0x11 1088k 2M" \
        img.qcow2 >qio.out
    run ! grep -q "verification failed" qio.out
}

@test "compressed writes store what shrinks compressed and the rest plainly" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    run -0 engine_io img.qcow2 -c "write -c -P 0x5a 0 64k"
    run -0 qemu-img check --output=json img.qcow2
    [ "$(echo "$output" | jq '."compressed-clusters"')" -eq 1 ]
    # random data does not shrink: convert -c keeps it uncompressed
    make_pattern rand.bin 1
    run -0 qimg convert -c -O qcow2 -f raw rand.bin r.qcow2
    run -0 qemu-img check --output=json r.qcow2
    [ "$(echo "$output" | jq '."compressed-clusters" // 0')" -eq 0 ]
    [ "$(echo "$output" | jq '."allocated-clusters"')" -eq 16 ]
    run -0 qemu-img compare -f raw rand.bin r.qcow2
}

@test "an image marked corrupt is never written" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    poke img.qcow2 79 02            # incompatible bit 1: corrupt
    s=$(file_sum img.qcow2)
    run -1 engine_io img.qcow2 -c "write -P 0x11 0 4k"
    assert_output --partial "corrupt"
    [ "$(file_sum img.qcow2)" = "$s" ]
}
