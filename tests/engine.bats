#!/usr/bin/env bats
# engine.bats - refcount.c through the unit driver build/unit/alloc: every
# cluster the engine allocates must be counted exactly once, at every
# refcount width and cluster size, across refcount-table growth; qemu-img
# check is the judge (allocated but unused clusters are exactly the leaks).
load helpers

setup() {
    common_setup
    ALLOC="$TOP/${BUILD:-build}/unit/alloc"
    [ -x "$ALLOC" ] || skip "unit drivers not built (make units)"
}

# alloc_case CLUSTER_SIZE REFCOUNT_BITS MODE N LEN EXPECTED_LEAKS
alloc_case() {
    qemu-img create -q -f qcow2 -o cluster_size=$1,refcount_bits=$2 t.qcow2 1G
    run -0 "$ALLOC" t.qcow2 "$3" "$4" "$5"
    run --separate-stderr qemu-img check --output=json t.qcow2
    [ "$(jq -r '.corruptions // 0' <<<"$output")" = 0 ]
    [ "$(jq -r '.leaks // 0' <<<"$output")" = "$6" ]
    qemu-img check -q -r leaks t.qcow2 >/dev/null
    run -0 qemu-img check t.qcow2
}

@test "single clusters are counted once with 64 KiB clusters and 16-bit refcounts" {
    alloc_case 65536 16 clusters 3000 1 3000
}

@test "single clusters are counted once across refcount table growth (512 B, 64-bit)" {
    alloc_case 512 64 clusters 3000 1 3000
}

@test "single clusters are counted once with 1-bit refcounts" {
    alloc_case 512 1 clusters 3000 1 3000
}

@test "single clusters are counted once with 2-bit and 4-bit refcounts" {
    alloc_case 1024 2 clusters 2000 1 2000
    rm -f t.qcow2
    alloc_case 2048 4 clusters 2000 1 2000
}

@test "runs of clusters are contiguous and counted once (8- and 32-bit refcounts)" {
    alloc_case 4096 8 runs 200 7 1400
    rm -f t.qcow2
    alloc_case 1024 32 runs 50 100 5000
}

@test "compressed-style byte allocations leave no corruption" {
    qemu-img create -q -f qcow2 -o cluster_size=512 t.qcow2 1G
    run -0 "$ALLOC" t.qcow2 bytes 3000 200
    run --separate-stderr qemu-img check --output=json t.qcow2
    [ "$(jq -r '.corruptions // 0' <<<"$output")" = 0 ]
    [ "$(jq -r '.leaks // 0' <<<"$output")" -gt 0 ]
}
