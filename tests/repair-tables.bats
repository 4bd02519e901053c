#!/usr/bin/env bats
# repair-tables.bats - corrupted L1 and L2 tables, compressed descriptors
# and snapshot tables, made, checked and repaired as in repair.bats (the
# split keeps each file quick). Many are cases qemu-img cannot repair.
load helpers
load corrupt

setup() { common_setup; }

@test "an L2 entry past the end of the file is dropped and its guest range named" {
    mk_image img.qcow2
    corrupt_l2_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    grep -q 'guest offset 0x10000..0x1ffff' repair.err
}

@test "an L2 entry pointing into the refcount table gets its own copy" {
    mk_image img.qcow2
    corrupt_l2_into_reftable img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    # the refcount table is the refcount table's alone again
    [ "$(get_refcount img.qcow2 "$(cluster_of img.qcow2 "$(rt_off img.qcow2)")")" -eq 1 ]
    [ "$(host_of img.qcow2 65536)" -ne "$(rt_off img.qcow2)" ]
}

@test "a cluster shared by two L2 entries keeps both owners" {
    mk_image img.qcow2
    corrupt_shared_cluster img.qcow2
    check_both img.qcow2
    qemu-img convert -O raw img.qcow2 img.qcow2.orig.raw     # both read 0x11 now
    repair_and_verify img.qcow2
    [ "$(get_refcount img.qcow2 "$(cluster_of img.qcow2 "$(host_of img.qcow2 0)")")" -eq 2 ]
    (( ! ($(l2_entry img.qcow2 0) & COPIED) ))
}

@test "OFLAG_COPIED set on a cluster a snapshot shares is cleared" {
    mk_image img.qcow2
    corrupt_copied_set_on_shared img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    (( ! ($(l2_entry img.qcow2 0) & COPIED) ))
}

@test "a snapshot with an unaligned L1 table offset is deleted (qemu-img keeps it)" {
    mk_snapshot img.qcow2
    corrupt_snapshot_l1_unaligned img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    grep -q 'snapshot 1 (snap) l1_offset=0xa0200: L1 table is not cluster aligned.*the snapshot is deleted' repair.err
    run -0 qemu-img snapshot -l img.qcow2
    refute_output --partial snap
}

@test "a snapshot whose L1 table lies past the end of the file is deleted" {
    mk_snapshot img.qcow2
    corrupt_snapshot_l1_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a snapshot with an invalid L1 size is deleted (qemu-img keeps it)" {
    mk_snapshot img.qcow2
    corrupt_snapshot_l1_size img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "oversized snapshot extra data is cut to 1024 bytes" {
    mk_snapshot img.qcow2
    corrupt_snapshot_extra img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    run -0 qemu-img snapshot -l img.qcow2
    assert_output --partial snap
}

@test "a snapshot table entry cut off by the end of the file is dropped" {
    mk_snapshot img.qcow2
    corrupt_snapshot_incomplete img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a compressed descriptor past the end of the file is dropped" {
    mk_compressed img.qcow2
    corrupt_compressed_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    grep -q 'guest offset 0x200000..0x20ffff' repair.err
}

@test "a compressed descriptor with OFLAG_COPIED loses the flag, keeps its data" {
    mk_compressed img.qcow2
    corrupt_compressed_copied img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    cmp img.qcow2.orig.raw qimg.raw
}

@test "an unaligned L1 entry is dropped (qemu-img cannot repair it)" {
    mk_image img.qcow2
    corrupt_unaligned_l1 img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    grep -q 'guest offset 0x0..0x3fffff' repair.err
}

@test "an L1 entry pointing at the L1 table itself is dropped" {
    mk_image img.qcow2
    corrupt_l1_self img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "an unaligned L2 entry is dropped (qemu-img cannot repair it)" {
    mk_image img.qcow2
    corrupt_unaligned_l2 img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "an L2 table shared by two L1 entries keeps both" {
    mk_image img.qcow2 cluster_size=4096
    corrupt_shared_l2_table img.qcow2
    qemu-img convert -O raw img.qcow2 img.qcow2.orig.raw
    check_both img.qcow2
    repair_and_verify img.qcow2
    cmp img.qcow2.orig.raw qimg.raw
}

@test "extended L2: a subcluster both allocated and zero keeps its data" {
    mk_image img.qcow2 extended_l2=on
    corrupt_extl2_alloc_zero img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "refcount_bits=1: a cluster shared by two L2 entries is copied" {
    mk_image img.qcow2 refcount_bits=1
    corrupt_shared_cluster img.qcow2
    qemu-img convert -O raw img.qcow2 img.qcow2.orig.raw
    check_both img.qcow2
    repair_and_verify img.qcow2
    cmp img.qcow2.orig.raw qimg.raw
}

@test "cluster_size=512: an L2 entry past the end of the file is dropped" {
    mk_image img.qcow2 cluster_size=512
    corrupt_l2_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "an active L1 table past the end of the file is replaced by an empty one" {
    mk_image img.qcow2
    corrupt_l1_table_past_eof img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
}

@test "a snapshot table offset qemu-img rejects is cleared (qemu-img cannot check it)" {
    mk_image img.qcow2
    corrupt_snapshot_offset_invalid img.qcow2
    check_both img.qcow2
    repair_and_verify img.qcow2
    [ "$(peek_be64 img.qcow2 64)" -eq 0 ]
}
