#!/usr/bin/env bats
# crash.bats - stop qimg with SIGKILL before its Nth write
# (QIMG_DEBUG_KILL_AFTER_WRITES=N) for every N until the command completes,
# and show each time that `qimg repair` followed by `qemu-img check` is
# clean and that the data the image held before the command is still there.
load helpers

setup() {
    common_setup
}

needs() {
    qimg "$1" --help >/dev/null 2>&1 || skip "qimg $1 is not built yet"
}

# An image with data, a compressed cluster, zeros and a snapshot.
make_base() {
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$1" 4M
    qemu-io -c 'write -P 0x11 0 64k' -c 'write -c -P 0x22 128k 64k' -c 'write -z 256k 16k' \
        -c 'write -P 0x33 1m 12k' "$1" >/dev/null
    qemu-img snapshot -c before "$1"
    qemu-io -c 'write -P 0x44 8k 8k' "$1" >/dev/null
}

# crash_loop IMAGE EXPECT_RAW -- ARGS...: run `qimg ARGS` killed at each write.
# After every kill: repair exits 0, qemu-img check exits 0, and the active
# layer still reads as EXPECT_RAW (when EXPECT_RAW is not "-").
crash_loop() {
    local img=$1 expect=$2; shift 3
    local n=0 rc kills=0
    cp "$img" pristine.qcow2
    while [ $n -lt 400 ]; do
        cp pristine.qcow2 "$img"
        rc=0; QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" "$@" >/dev/null 2>&1 || rc=$?
        [ $rc -eq 137 ] || break
        kills=$((kills + 1))
        run qimg repair "$img"
        [ "$status" -eq 0 ] || { echo "kill at write $n: repair exits $status"; echo "$output"; return 1; }
        run qemu-img check "$img"
        [ "$status" -eq 0 ] || { echo "kill at write $n: qemu-img check exits $status"; echo "$output"; return 1; }
        if [ "$expect" != - ]; then
            qemu-img convert -O raw "$img" now.raw
            cmp now.raw "$expect" || { echo "kill at write $n: data changed"; return 1; }
        fi
        n=$((n + 1))
    done
    [ $rc -eq 0 ] || { echo "the uninterrupted run failed with $rc"; return 1; }
    [ $kills -gt 0 ] || { echo "the command never wrote"; return 1; }
    echo "$kills kill points" >&3
}

@test "a convert into qcow2 killed at any write leaves an output that repair makes clean" {
    needs convert
    needs repair
    make_pattern in.raw 2
    truncate -s 4M in.raw
    qemu-img create -q -f qcow2 -o cluster_size=4096 out.qcow2 4M
    crash_loop out.qcow2 - -- convert -n -O qcow2 in.raw out.qcow2
    qemu-img convert -O raw out.qcow2 final.raw
    cmp in.raw final.raw
}

@test "snapshot -c killed at any write keeps every byte and repairs clean" {
    needs snapshot
    needs repair
    make_base img.qcow2
    qemu-img convert -O raw img.qcow2 expect.raw
    crash_loop img.qcow2 expect.raw -- snapshot -c s2 img.qcow2
}

@test "snapshot -d killed at any write keeps the active data and repairs clean" {
    needs snapshot
    needs repair
    make_base img.qcow2
    qemu-img convert -O raw img.qcow2 expect.raw
    crash_loop img.qcow2 expect.raw -- snapshot -d before img.qcow2
}

@test "snapshot -a killed at any write repairs clean, with the old or the snapshot's data" {
    needs snapshot
    needs repair
    make_base img.qcow2
    crash_loop img.qcow2 - -- snapshot -a before img.qcow2
}

@test "amend refcount_bits killed at any write keeps every byte and repairs clean" {
    needs amend
    needs repair
    make_base img.qcow2
    qemu-img convert -O raw img.qcow2 expect.raw
    crash_loop img.qcow2 expect.raw -- amend -o refcount_bits=64 img.qcow2
}

@test "amend compat=0.10 killed at any write keeps every byte and repairs clean" {
    needs amend
    needs repair
    make_base img.qcow2
    qemu-img convert -O raw img.qcow2 expect.raw
    crash_loop img.qcow2 expect.raw -- amend -o compat=0.10 img.qcow2
}

@test "repair killed at any write can be finished by a second repair" {
    needs repair
    make_base img.qcow2
    qemu-img convert -O raw img.qcow2 expect.raw
    # Leak three clusters by raising refcounts of unused space past the end.
    rt=$(peek_be64 img.qcow2 48)
    rb=$(( $(peek_be64 img.qcow2 "$rt") ))
    size=$(stat -c %s img.qcow2)
    truncate -s $((size + 3 * 4096)) img.qcow2
    for i in 0 1 2; do poke_be16 img.qcow2 $((rb + 2 * (size / 4096 + i))) 1; done
    crash_loop img.qcow2 expect.raw -- repair img.qcow2
}
