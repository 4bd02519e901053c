#!/usr/bin/env bats
# repair.bats - corrupted refcounts, flags and header bits, and the repair
# modes: each test makes an image with qemu-img and qemu-io, pokes one
# corruption into it, checks it with qimg and qemu-img (same exit code and
# counts), repairs it with qimg, checks again with both (exit 0), and
# compares the guest data with what qemu-img's own repair of a copy keeps:
# qimg keeps at least as much. L1/L2/snapshot damage: repair-tables.bats.
load helpers
load corrupt

setup() { common_setup; }

@test "a leaked cluster past the data is found and freed" {
    mk_image img.qcow2
    corrupt_leak_tail img.qcow2
    check_both img.qcow2
    run -3 qimg check img.qcow2
    repair_and_verify img.qcow2
    grep -q '^Repairing cluster .* refcount=1 reference=0$' repair.err
}

@test "a data cluster counted twice is a leak and a wrong OFLAG_COPIED" {
    mk_image img.qcow2
    corrupt_raise_refcount img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a used data cluster with refcount 0 gets its refcount back" {
    mk_image img.qcow2
    corrupt_zero_data_refcount img.qcow2
    check_both img.qcow2
    run -2 qimg check img.qcow2
    assert_output --partial "errors were found on the image"
    repair_and_verify img.qcow2
    grep -q 'Repairing cluster .* refcount=0 reference=1 (guest offset 0x100000..0x10ffff)' repair.err
}

@test "an L2 table with refcount 0 gets its refcount back" {
    mk_image img.qcow2
    corrupt_zero_l2_refcount img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "OFLAG_COPIED cleared on an unshared cluster is set again" {
    mk_image img.qcow2
    corrupt_copied_cleared img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    (( $(l2_entry img.qcow2 1048576) & COPIED ))
}

@test "a zeroed refcount table is rebuilt" {
    mk_image img.qcow2
    corrupt_zero_reftable img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    grep -q '^Rebuilding refcount structure$' repair.err
}

@test "a refcount table entry past the end of the file is rebuilt" {
    mk_image img.qcow2
    corrupt_reftable_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a refcount table entry with reserved bits set is rebuilt" {
    mk_image img.qcow2
    corrupt_reftable_reserved img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "an unaligned refcount block is rebuilt (qemu-img cannot)" {
    mk_image img.qcow2
    corrupt_refblock_unaligned img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a dirty lazy-refcounts image with stale refcounts is repaired and marked clean" {
    mk_image img.qcow2 lazy_refcounts=on
    corrupt_dirty_stale img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    (( ! ($(incompat img.qcow2) & 1) ))
}

@test "the corrupt bit alone checks clean, and repair clears it" {
    mk_image img.qcow2
    corrupt_set_corrupt_bit img.qcow2
    run -0 qimg check img.qcow2
    run -0 qemu-img check img.qcow2
    run -0 qimg repair img.qcow2
    (( ! ($(incompat img.qcow2) & 2) ))
    run -0 qemu-io -c "write 0 512" img.qcow2
}

@test "refcount_bits=1: a leak is freed" {
    mk_image img.qcow2 refcount_bits=1
    corrupt_leak_tail img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "refcount_bits=64: a used data cluster with refcount 0 is repaired" {
    mk_image img.qcow2 refcount_bits=64
    corrupt_zero_data_refcount img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "refcount_bits=4: a zeroed refcount table is rebuilt" {
    mk_image img.qcow2 refcount_bits=4
    corrupt_zero_reftable img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "cluster_size=512: a zeroed refcount table is rebuilt" {
    mk_image img.qcow2 cluster_size=512
    corrupt_zero_reftable img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "compat=0.10: a used data cluster with refcount 0 is repaired" {
    mk_image img.qcow2 compat=0.10
    corrupt_zero_data_refcount img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "repair --leaks-only frees leaks and leaves corruptions" {
    mk_image img.qcow2
    corrupt_leak_tail img.qcow2
    corrupt_zero_data_refcount img.qcow2
    cp img.qcow2 copy.qcow2
    run -2 --separate-stderr qimg repair --leaks-only --output=json img.qcow2
    [ "$(jq '."leaks-fixed"' <<<"$output")" -eq 1 ]
    run -2 --separate-stderr qimg check --output=json img.qcow2
    [ "$(jq '.leaks // 0' <<<"$output")" -eq 0 ]
    # what is left is what qemu-img leaves
    qemu-img check -r leaks copy.qcow2 >/dev/null 2>&1 || true
    run -2 --separate-stderr qemu-img check --output=json copy.qcow2
    [ "$(jq '.corruptions' <<<"$output")" -eq 2 ]
    run -2 --separate-stderr qimg check --output=json img.qcow2
    [ "$(jq '.corruptions' <<<"$output")" -eq 2 ]
}

@test "repair --dry-run reports the repairs and writes nothing" {
    mk_image img.qcow2
    corrupt_zero_data_refcount img.qcow2
    corrupt_unaligned_l1 img.qcow2
    sum=$(file_sum img.qcow2)
    run -2 --separate-stderr qimg repair --dry-run img.qcow2
    assert_output --partial "would be repaired"
    [[ "$stderr" == *"Would repair"* ]]
    [ "$(file_sum img.qcow2)" = "$sum" ]
}

# Kill the repair before its 1st, 2nd, ... write until one run is not
# killed: after each kill a second repair must finish the job.
kill_and_repair() {
    local n rc
    cp img.qcow2 pristine.qcow2
    for ((n = 0; n < 40; n++)); do
        cp pristine.qcow2 img.qcow2
        rc=0
        QIMG_DEBUG_KILL_AFTER_WRITES=$n qimg repair img.qcow2 >/dev/null 2>&1 || rc=$?
        run qimg repair img.qcow2
        [ "$status" -eq 0 ] || { echo "after kill at write $n: $output"; false; }
        run -0 qemu-img check img.qcow2
        qemu-img convert -O raw img.qcow2 out.raw
        cmp img.qcow2.orig.raw out.raw
        [ "$rc" -eq 137 ] || break
    done
    [ "$n" -ge 3 ] && [ "$n" -lt 40 ]
}

@test "a repair killed after any write is completed by a second repair" {
    mk_image img.qcow2
    corrupt_leak_tail img.qcow2
    corrupt_zero_data_refcount img.qcow2
    corrupt_l2_into_reftable img.qcow2
    corrupt_copied_cleared img.qcow2
    qemu-img convert -O raw img.qcow2 img.qcow2.orig.raw
    kill_and_repair
}

@test "a rebuild killed after any write is completed by a second repair" {
    mk_image img.qcow2
    corrupt_zero_reftable img.qcow2
    kill_and_repair
}

@test "a refcount table size that covers other metadata is rebuilt" {
    mk_image img.qcow2
    corrupt_reftable_clusters img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    [ "$(peek_be32 img.qcow2 56)" -eq 1 ]
}

@test "repair -p prints the findings above one progress line that ends cleanly" {
    command -v script >/dev/null || skip "script is not installed"
    mk_image img.qcow2
    corrupt_zero_data_refcount img.qcow2
    cp img.qcow2 plain.qcow2
    qimg repair plain.qcow2 >plain.out 2>plain.err
    run -0 script -qec "$QIMG_BIN repair -p img.qcow2" /dev/null
    # What the terminal shows: the findings, the report, the finished bar, the summary.
    sed 's/\r*$//; s/.*\r//' <<<"$output" | grep -v '^ *$' >screen.out
    grep -v '^ *$' plain.err >want
    grep -v '^ *$' plain.out | sed '/^Double checking/q' >>want
    grep -v '^ *$' plain.out | sed '1,/^Double checking/d' >tail.want
    head -n "$(wc -l <want)" screen.out | diff want -
    sed -n "$(($(wc -l <want) + 1))p" screen.out | grep -qE '^    \(100\.00/100%\)'
    tail -n +"$(($(wc -l <want) + 2))" screen.out | diff tail.want -
    # One line over the repair and the double check: the percentages only go up.
    grep -oE '\(([0-9.]+)/100%\)' <<<"$output" | tr -d '(' | cut -d/ -f1 | sort -c -n
    run -0 qemu-img check img.qcow2
}

@test "repair -p without a terminal prints what repair prints" {
    mk_image img.qcow2
    corrupt_leak_tail img.qcow2
    cp img.qcow2 plain.qcow2
    qimg repair plain.qcow2 >plain.out 2>plain.err
    run -0 --separate-stderr qimg repair -p img.qcow2
    diff plain.err <(printf '%s' "$stderr"; [ -z "$stderr" ] || echo)
    diff plain.out <(printf '%s\n' "$output")
    cmp plain.qcow2 img.qcow2
}
