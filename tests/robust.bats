#!/usr/bin/env bats
# robust.bats - qimg under hostile conditions that are not hostile bytes:
# a disk that fills up part way through a write (a tiny tmpfs, or a file
# size limit with `ulimit -f`), and a second process holding the image.
# Each full-disk run must fail with one clear line and a non-zero exit, never
# a crash, and afterwards the image is as it was or `qimg repair` (with room
# again) brings it back with every byte of guest data it held before.
load helpers

setup() {
    common_setup
}

teardown() {
    if [ -n "${MNT:-}" ] && mountpoint -q "$MNT"; then
        umount "$MNT" || true
    fi
    release_image
}

# A small image with data, a compressed cluster, zeros and a snapshot.
make_base() {
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$@" base.qcow2 4M
    qemu-io -c 'write -P 0x11 0 192k' -c 'write -c -P 0x22 256k 64k' -c 'write -z 384k 16k' \
        -c 'write -P 0x33 1m 12k' base.qcow2 >/dev/null
}

# Mount a tmpfs at $MNT (needs root); skip the test when that is not possible.
use_tmpfs() {
    MNT=$BATS_TEST_TMPDIR/mnt
    mkdir -p "$MNT"
    ! mountpoint -q "$MNT" || return 0
    mount -t tmpfs -o size=64m tmpfs "$MNT" 2>/dev/null || skip "cannot mount a tmpfs here"
}

# run_short MODE KIB ARGS...: run qimg ARGS on $IMG with KIB KiB of room
# left: in a tmpfs remounted just that much larger than the image (writes
# into holes fail as well as growth), or with the file size limit at the
# image's size plus KIB (growth fails with EFBIG).
run_short() {
    local mode=$1 kib=$2 size; shift 2
    size=$(stat -c %s "$IMG")
    if [ "$mode" = tmpfs ]; then
        # tmpfs counts pages: the image's pages plus the room, rounded up.
        mount -o remount,size=$(( (size + 4095) / 4096 * 4 + kib ))k "$MNT"
        "$QIMG_BIN" "$@"
    else
        bash -c 'trap "" XFSZ; ulimit -f "$1"; shift; exec "$@"' _ \
            $(( (size + 1023) / 1024 + kib )) "$QIMG_BIN" "$@"
    fi
}

# disk_loop MODE IMAGE EXPECT_RAW -- ARGS...: copy IMAGE to $IMG and run
# `qimg ARGS` with 0, 4, 8, ... KiB of room until it succeeds. After every
# failure: exit 1, one line naming the cause, and once there is room again
# repair exits 0, qemu-img check is clean and the active layer reads as
# EXPECT_RAW.
disk_loop() {
    local mode=$1 src=$2 expect=$3 kib=0 rc fails=0
    shift 4
    while [ $kib -le 1024 ]; do
        [ "$mode" != tmpfs ] || mount -o remount,size=64m "$MNT"
        cp "$src" "$IMG"
        rc=0
        run_short "$mode" $kib "$@" >out 2>err || rc=$?
        [ $rc -ne 0 ] || break
        [ "$mode" != tmpfs ] || mount -o remount,size=64m "$MNT"
        # One error line, the last (repair prints its findings before it).
        if [ $rc -ne 1 ] || [ "$(grep -c '^qimg: ' err)" -ne 1 ] ||
            ! tail -n 1 err | grep -Eq "^qimg: .*(No space left on device|File too large)$"; then
            echo "room $kib KiB: exit $rc, stderr:"; cat err; return 1
        fi
        [ $fails -gt 0 ] || echo "first failure: $(tail -n 1 err)" >&3
        fails=$((fails + 1))
        run qimg repair "$IMG"
        [ "$status" -eq 0 ] || { echo "room $kib KiB: repair exits $status"; echo "$output"; return 1; }
        run qemu-img check "$IMG"
        [ "$status" -eq 0 ] || { echo "room $kib KiB: qemu-img check exits $status"; echo "$output"; return 1; }
        qemu-img convert -O raw "$IMG" now.raw
        cmp now.raw "$expect" || { echo "room $kib KiB: data changed"; return 1; }
        kib=$((kib + 4))
    done
    [ $rc -eq 0 ] || { echo "still failing with 1 MiB of room"; cat err; return 1; }
    echo "$fails failing runs before it fit" >&3
    FAILS=$fails
}

# place MODE: set $IMG (in a tmpfs for MODE tmpfs) and expect.raw, the
# guest data of base.qcow2.
place() {
    if [ "$1" = tmpfs ]; then
        use_tmpfs
        IMG=$MNT/img.qcow2
    else
        IMG=$BATS_TEST_TMPDIR/img.qcow2
    fi
    qemu-img convert -O raw base.qcow2 expect.raw
}

@test "snapshot -c on a full tmpfs fails in one line and repair keeps every byte" {
    make_base
    qemu-img snapshot -c first base.qcow2
    place tmpfs
    disk_loop tmpfs base.qcow2 expect.raw -- snapshot -c s2 "$IMG"
    [ "$FAILS" -gt 0 ]
}

@test "snapshot -c past the file size limit fails in one line and repair keeps every byte" {
    make_base
    qemu-img snapshot -c first base.qcow2
    place ulimit
    disk_loop ulimit base.qcow2 expect.raw -- snapshot -c s2 "$IMG"
    [ "$FAILS" -gt 0 ]
}

@test "amend compat=0.10 to 1.1 on a full disk leaves the image usable and its data whole" {
    make_base -o compat=0.10
    qemu-img snapshot -c first base.qcow2
    for mode in tmpfs ulimit; do
        place $mode
        disk_loop $mode base.qcow2 expect.raw -- amend -o compat=1.1 "$IMG"
        [ "$(qemu-img info --output=json "$IMG" | jq -r '.["format-specific"].data.compat')" = 1.1 ]
        # With a refcount width change the upgrade needs room.
        disk_loop $mode base.qcow2 expect.raw -- amend -o compat=1.1,refcount_bits=64 "$IMG"
        [ "$FAILS" -gt 0 ]
        [ "$(qemu-img info --output=json "$IMG" | jq -r '.["format-specific"].data.compat')" = 1.1 ]
    done
}

@test "amend refcount_bits=64 and =8 on a full disk fail in one line and repair keeps every byte" {
    make_base
    qemu-img snapshot -c first base.qcow2
    for mode in tmpfs ulimit; do
        for bits in 64 8; do
            place $mode
            disk_loop $mode base.qcow2 expect.raw -- amend -o refcount_bits=$bits "$IMG"
            [ "$FAILS" -gt 0 ]
            [ "$(qemu-img info --output=json "$IMG" | jq '.["format-specific"].data["refcount-bits"]')" = $bits ]
        done
    done
}

@test "repair that must rebuild the refcounts on a full disk fails in one line, and succeeds with room" {
    make_base
    qemu-img snapshot -c first base.qcow2
    # Drop the first refcount block from the refcount table: a rebuild.
    poke_be64 base.qcow2 "$(peek_be64 base.qcow2 48)" 0
    run -2 qemu-img check base.qcow2
    for mode in tmpfs ulimit; do
        place $mode
        disk_loop $mode base.qcow2 expect.raw -- repair "$IMG"
        [ "$FAILS" -gt 0 ]
    done
}

# ---- a second process holding the image -------------------------------

@test "snapshot, amend and repair refuse an image another process writes, and change nothing" {
    make_base
    hold_image base.qcow2
    s=$(file_sum base.qcow2)
    for args in "snapshot -c s1" "snapshot -d s1" "snapshot -a s1" "amend -o lazy_refcounts=on" \
                "repair" "repair --leaks-only" "check -r all"; do
        run qimg $args base.qcow2
        [ "$status" -eq 1 ] || { echo "$args: exit $status"; echo "$output"; return 1; }
        assert_output --partial "Could not open 'base.qcow2': Failed to get \"write\" lock"
        [ "${#lines[@]}" -le 2 ]
    done
    [ "$(file_sum base.qcow2)" = "$s" ]
}

@test "-U lets info, check and snapshot -l read an image another process writes" {
    make_base
    qemu-img snapshot -c first base.qcow2
    hold_image base.qcow2
    s=$(file_sum base.qcow2)
    run -1 qimg check base.qcow2
    assert_output --partial "Failed to get shared \"write\" lock"
    run -0 qimg check -U base.qcow2
    assert_output --partial "No errors were found on the image."
    run -0 qimg info -U --output=json base.qcow2
    run -0 qimg snapshot -U -l base.qcow2
    assert_output --partial first
    run -1 qimg snapshot -U -c s2 base.qcow2
    [ "$(file_sum base.qcow2)" = "$s" ]
}
