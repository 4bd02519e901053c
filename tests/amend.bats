#!/usr/bin/env bats
# amend.bats - qimg amend: every change keeps every byte of the active layer
# and of every snapshot, passes qemu-img check and shows in qemu-img info;
# every refusal prints qemu-img's message (where it has one) and leaves the
# file byte-identical; a crash after any write leaves only leaks.
load helpers
load crypto_helpers

# One rich image (and its layers) for the tests that only read it first.
setup_file() {
    cd "$BATS_FILE_TMPDIR" || return 1
    rich rich.qcow2
    layers rich.qcow2 rich-ref
}

setup() { common_setup; }
teardown() { release_image; }

# use_rich: r.qcow2 is a fresh copy of the rich image; its layers are in $RICH.
use_rich() {
    cp "$BATS_FILE_TMPDIR/rich.qcow2" r.qcow2
    RICH=$BATS_FILE_TMPDIR/rich-ref
}

# rich IMG [create options...]: 4 MiB with data, compressed clusters, plain
# and preallocated zero clusters, and two snapshots with different data
# between them (the "rich image has every kind of cluster" test checks it).
rich() {
    local img=$1
    shift
    qemu-img create -q -f qcow2 "$@" "$img" 4M
    qemu-io -c 'write -P 0x11 0 512k' -c 'write -c -P 0x22 1M 128k' \
        -c 'write -z 1536k 128k' -c 'write -P 0x33 2M 256k' "$img" >/dev/null
    qemu-img snapshot -c s1 "$img"
    qemu-io -c 'write -P 0x44 256k 512k' -c 'write -z 2M 128k' \
        -c 'write -z -u 0 64k' "$img" >/dev/null
    qemu-img snapshot -c s2 "$img"
    qemu-io -c 'write -P 0x55 3M 256k' -c 'write -c -P 0x66 3584k 64k' \
        -c 'write -z 3M 64k' "$img" >/dev/null
}

# The p_* helpers run in a plain bash through plain() (helpers.bash).
# layers IMG DIR: the active layer and every snapshot, as raw files.
p_layers() {
    mkdir -p "$2"
    qemu-img convert -O raw "$1" "$2/active.raw" || return 1
    for id in $(qemu-img snapshot -l "$1" | awk 'NR > 2 { print $1 }'); do
        qemu-img convert -l "$id" -O raw "$1" "$2/$id.raw" || return 1
    done
}
layers() { plain p_layers "$@"; }

# same_layers IMG DIR: every layer byte-identical to DIR (the same set).
p_same_layers() {
    rm -rf now
    p_layers "$1" now || return 1
    diff <(cd now && ls) <(cd "$2" && ls) || return 1
    for f in "$2"/*.raw; do
        cmp "now/${f##*/}" "$f" || return 1
    done
}
same_layers() { plain p_same_layers "$@"; }

# prefix_layers IMG DIR N: the first N bytes of every layer as in DIR, and
# the rest of the longer one zero (for size changes).
p_prefix_layers() {
    rm -rf now
    p_layers "$1" now || return 1
    for f in "$2"/*.raw; do
        local a="now/${f##*/}"
        cmp -n "$3" "$a" "$f" || return 1
        for g in "$a" "$f"; do
            [ "$(tail -c +"$(($3 + 1))" "$g" | tr -d '\0' | wc -c)" = 0 ] ||
                { echo "$g: data past $3"; return 1; }
        done
    done
}
prefix_layers() { plain p_prefix_layers "$@"; }

# messages PROG FILE OPTS...: for each OPTS, what PROG amend says and returns.
p_messages() {
    local prog=$1 file=$2 o
    shift 2
    for o in "$@"; do
        printf -- '-o %s: ' "$o"
        "$prog" amend $AMEND_ARGS -o "$o" "$file" 2>&1 >/dev/null
        echo "exit $?"
    done
}

info() { qemu-img info --output=json "$1" | jq -r "$2"; }

# check_ok IMG: qemu-img check finds nothing.
check_ok() {
    run qemu-img check "$1"
    [ "$status" = 0 ] || { echo "$output"; return 1; }
}

# same_messages FILE OPTS...: for each OPTS, qimg and qemu-img refuse it
# on copies of FILE with the same words (program name aside), and neither
# copy changes. Extra amend arguments come from $AMEND_ARGS.
same_messages() {
    local src=$1 before
    shift
    cp "$src" q.img
    cp "$src" m.img
    before=$(file_sum "$src")
    plain p_messages qemu-img q.img "$@" | sed 's/qemu-img/qimg/g' >want.txt
    plain p_messages "$QIMG_BIN" m.img "$@" >got.txt
    [ "$(grep -c 'exit 1$' want.txt)" = $# ]     # qemu-img refuses each one
    diff got.txt want.txt
    [ "$(file_sum m.img)" = "$before" ]
    [ "$(file_sum q.img)" = "$before" ]
}

@test "-o help, raw images and bad command lines answer as qemu-img does" {
    qemu-img create -q -f qcow2 t.qcow2 1M
    run -0 qimg amend -o help t.qcow2
    assert_output "$(qemu-img amend -o help t.qcow2)"
    run -0 qimg amend -f qcow2 -o size=1M,help
    assert_output "$(qemu-img amend -f qcow2 -o help)"
    qemu-img create -q -f raw x.raw 1M
    AMEND_ARGS="-f raw" same_messages x.raw size=1M
    run -1 qimg amend -o size=1M x.raw
    assert_output "qimg: Format driver 'raw' does not support option amendment"
    run -1 qimg amend t.qcow2
    assert_line --index 0 "qimg: Must specify options (-o)"
    run -1 qimg amend -o size=2M
    assert_output "qimg: Expecting one image file name"
    run -1 qimg amend -o size=2M t.qcow2 x.raw
    assert_output "qimg: Expecting one image file name"
    run -1 qimg amend -o size=2M nope.qcow2
    assert_output "qimg: Could not open 'nope.qcow2': Could not open 'nope.qcow2': No such file or directory"
}

@test "options amend cannot change are refused as qemu-img refuses them, before any write" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2 4M
    same_messages t.qcow2 backing_file=x backing_fmt=raw backing_file=base.qcow2 \
        cluster_size=4096 preallocation=metadata compression_type=zstd extended_l2=on \
        encrypt.format=luks encryption=on encrypt.key-secret=s data_file_raw=on \
        data_file=d.raw encrypt.keyslot=1 encrypt.new-secret=x frob=1 \
        cluster_size=4k,frob=2 refcount_bits=3 refcount_bits=0 refcount_bits=128 \
        refcount_bits=abc compat=0.9 compat= lazy_refcounts=maybe size=abc size=1000 \
        size help=1 '' ,size=1M size=1M,
    # naming the backing file the image already has is no change
    before=$(file_sum t.qcow2)
    run -0 qimg amend -o backing_file=base.qcow2,backing_fmt=qcow2 t.qcow2
    [ "$(file_sum t.qcow2)" = "$before" ]
}

@test "v2 images refuse lazy refcounts and other refcount widths with qemu-img's messages" {
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
    same_messages v2.qcow2 lazy_refcounts=on refcount_bits=8 compat=0.10,refcount_bits=32
    before=$(file_sum v2.qcow2)
    run -0 qimg amend -o lazy_refcounts=off,refcount_bits=16,compat=0.10 v2.qcow2
    [ "$(file_sum v2.qcow2)" = "$before" ]
}

@test "compat=0.10 keeps every byte of every layer and expands the zero clusters" {
    use_rich
    # the rich image has every kind of cluster: data, compressed (data
    # without offset), plain and preallocated zeros; and two snapshots
    qemu-img map --output=json r.qcow2 >map.json
    [ "$(jq '[.[] | select(.data and .offset)] | length' map.json)" -gt 0 ]
    [ "$(jq '[.[] | select(.data and (has("offset") | not))] | length' map.json)" -gt 0 ]
    [ "$(jq '[.[] | select(.present and .zero and (has("offset") | not))] | length' map.json)" -gt 0 ]
    [ "$(jq '[.[] | select(.present and .zero and .offset)] | length' map.json)" -gt 0 ]
    [ "$(ls "$RICH" | wc -l)" = 3 ]
    check_ok r.qcow2
    run -0 qimg amend -o compat=0.10 r.qcow2
    check_ok r.qcow2
    [ "$(info r.qcow2 '."format-specific".data.compat')" = 0.10 ]
    [ "$(peek_be32 r.qcow2 4)" = 2 ]
    same_layers r.qcow2 "$RICH"
    # no backing file: plain zero clusters became unallocated, no zero flag is left
    qemu-img map --output=json r.qcow2 >map.json
    [ "$(jq '[.[] | select(.present and .zero)] | length' map.json)" = 0 ]
}

@test "compat=0.10 over a backing file writes the zero clusters out" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -c 'write -P 0x99 0 4M' base.qcow2 >/dev/null
    rich r.qcow2 -b base.qcow2 -F qcow2
    layers r.qcow2 ref
    run -0 qimg amend -o compat=0.10 r.qcow2
    check_ok r.qcow2
    same_layers r.qcow2 ref
}

@test "a zero cluster still holding a snapshot's data is not zeroed under the snapshot" {
    # qemu-img 7.2 writes zeros into the shared cluster here, changing
    # snapshot s1 and leaving check errors; qimg gives it a cluster of its own.
    qemu-img create -q -f qcow2 t.qcow2 1M
    qemu-io -c 'write -P 0xaa 0 256k' t.qcow2 >/dev/null
    qemu-img snapshot -c s1 t.qcow2
    qemu-io -c 'write -z 0 128k' t.qcow2 >/dev/null
    [ "$(qemu-img map --output=json t.qcow2 | jq '.[0].zero and (.[0].offset != null)')" = true ]
    layers t.qcow2 ref
    run -0 qimg amend -o compat=0.10 t.qcow2
    check_ok t.qcow2
    same_layers t.qcow2 ref
}

@test "compat round trip v3 -> v2 -> v3 keeps every layer" {
    use_rich
    run -0 qimg amend -o compat=0.10 r.qcow2
    run -0 qimg amend -o compat=1.1,lazy_refcounts=on r.qcow2
    check_ok r.qcow2
    [ "$(info r.qcow2 '."format-specific".data.compat')" = 1.1 ]
    [ "$(info r.qcow2 '."format-specific".data."lazy-refcounts"')" = true ]
    [ "$(peek_be32 r.qcow2 100)" = 112 ]
    same_layers r.qcow2 "$RICH"
}

@test "upgrading v2 writes what qemu-img writes, even without room for the feature table" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=512 -b base.qcow2 -F qcow2 t.qcow2 4M
    qemu-io -c 'write -P 1 0 64k' t.qcow2 >/dev/null
    cp t.qcow2 q.qcow2
    run -0 qimg amend -o compat=1.1 t.qcow2
    qemu-img amend -o compat=1.1 q.qcow2
    cmp t.qcow2 q.qcow2
    check_ok t.qcow2
    run -0 qimg amend -o compat=v2 t.qcow2
    qemu-img amend -o compat=v2 q.qcow2
    cmp t.qcow2 q.qcow2
}

@test "upgrading v2 snapshots without extra data rewrites the snapshot table" {
    qemu-img create -q -f qcow2 -o compat=0.10 v.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' v.qcow2 >/dev/null
    qemu-img snapshot -c snapA v.qcow2
    qemu-io -c 'write -P 2 0 512k' v.qcow2 >/dev/null
    # rewrite the entry as old qemu wrote it: extra_size 0, id and name right after
    sn=$(peek_be64 v.qcow2 64)
    [ "$(peek_be32 v.qcow2 $((sn + 36)))" -ge 16 ]
    poke_be32 v.qcow2 $((sn + 36)) 0
    poke v.qcow2 $((sn + 40)) "$(printf '1snapA' | xxd -p)$(printf '%048d' 0)"
    check_ok v.qcow2
    layers v.qcow2 ref
    run -0 qimg amend -o compat=v3 v.qcow2
    check_ok v.qcow2
    sn=$(peek_be64 v.qcow2 64)
    [ "$(peek_be32 v.qcow2 $((sn + 36)))" -ge 16 ]
    [ "$(info v.qcow2 '.snapshots[0].name')" = snapA ]
    same_layers v.qcow2 ref
}

@test "refcount_bits goes to every width and back without snapshots" {
    qemu-img create -q -f qcow2 -o cluster_size=4096 t.qcow2 1M
    qemu-io -c 'write -P 0x11 0 256k' -c 'write -z 256k 64k' -c 'write -P 0x22 768k 128k' \
        -c 'write -z 768k 8k' t.qcow2 >/dev/null
    cp t.qcow2 orig.qcow2
    for bits in 1 2 4 8 32 64 1 16; do
        run -0 qimg amend -o refcount_bits=$bits t.qcow2
        check_ok t.qcow2
        [ "$(info t.qcow2 '."format-specific".data."refcount-bits"')" = $bits ]
        qemu-img compare -q orig.qcow2 t.qcow2
    done
}

@test "refcount_bits with snapshots: widths too narrow are refused as qemu-img refuses them" {
    use_rich
    same_messages r.qcow2 refcount_bits=1 refcount_bits=2
    for bits in 4 64 16; do
        run -0 qimg amend -o refcount_bits=$bits r.qcow2
        check_ok r.qcow2
        [ "$(info r.qcow2 '."format-specific".data."refcount-bits"')" = $bits ]
        same_layers r.qcow2 "$RICH"
    done
}

@test "refcount width and downgrade in one call: compat=0.10,refcount_bits=16" {
    rich r.qcow2 -o refcount_bits=8
    layers r.qcow2 ref
    same_messages r.qcow2 compat=0.10
    run -0 qimg amend -o compat=0.10,refcount_bits=16 r.qcow2
    check_ok r.qcow2
    [ "$(info r.qcow2 '."format-specific".data.compat')" = 0.10 ]
    same_layers r.qcow2 ref
}

@test "downgrades v2 cannot express are refused before any write" {
    qemu-img create -q -f qcow2 -o extended_l2=on e.qcow2 4M
    cp e.qcow2 q.qcow2
    run -1 qemu-img amend -o compat=0.10 q.qcow2
    want=${output//qemu-img/qimg}
    run -1 qimg amend -o compat=0.10 e.qcow2
    assert_output --partial "$want"
    assert_output --partial "extended L2 entries"
    cmp e.qcow2 q.qcow2

    qemu-img create -q -f qcow2 -o compression_type=zstd z.qcow2 4M
    qemu-io -c 'write -c -P 3 0 64k' z.qcow2 >/dev/null
    same_messages z.qcow2 compat=0.10

    # zstd data only in a snapshot: qemu-img 7.2 checks the active layer only
    qemu-img create -q -f qcow2 -o compression_type=zstd zs.qcow2 4M
    qemu-io -c 'write -c -P 3 0 64k' zs.qcow2 >/dev/null
    qemu-img snapshot -c s zs.qcow2
    qemu-io -c 'write -P 4 0 64k' zs.qcow2 >/dev/null
    before=$(file_sum zs.qcow2)
    run -1 qimg amend -o compat=0.10 zs.qcow2
    assert_output "qimg: Cannot downgrade an image with zstd compression type and existing compressed clusters"
    [ "$(file_sum zs.qcow2)" = "$before" ]

    qemu-img create -q -f qcow2 b.qcow2 4M
    qemu-img bitmap --add b.qcow2 bm0
    before=$(file_sum b.qcow2)
    run -1 qimg amend -o compat=0.10 b.qcow2
    assert_output "qimg: Cannot downgrade an image with persistent bitmaps"
    [ "$(file_sum b.qcow2)" = "$before" ]

    qemu-img create -q -f qcow2 s.qcow2 4M
    qemu-img snapshot -c s1 s.qcow2
    qemu-img resize -q s.qcow2 8M
    same_messages s.qcow2 compat=0.10

    # zstd without compressed clusters: nothing stands in the way
    qemu-img create -q -f qcow2 -o compression_type=zstd z2.qcow2 4M
    qemu-io -c 'write -P 3 0 64k' z2.qcow2 >/dev/null
    run -0 qimg amend -o compat=0.10 z2.qcow2
    check_ok z2.qcow2
    [ "$(info z2.qcow2 '."format-specific".data."compression-type"')" = zlib ]
}

@test "a dirty image is repaired on open, as qemu does, and then amended" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on t.qcow2 4M
    qemu-io -c 'write -P 7 0 64k' t.qcow2 >/dev/null
    qemu-img convert -O raw t.qcow2 before.raw
    poke t.qcow2 79 01      # incompatible feature bit 0: dirty
    run -0 qimg amend -o compat=0.10 t.qcow2
    run -0 qemu-img check t.qcow2
    [ "$(info t.qcow2 '."format-specific".data.compat')" = 0.10 ]
    qemu-img convert -O raw t.qcow2 after.raw
    cmp before.raw after.raw
}

@test "lazy_refcounts turns on and off on v3" {
    use_rich
    run -0 qimg amend -o lazy_refcounts=on r.qcow2
    [ "$(info r.qcow2 '."format-specific".data."lazy-refcounts"')" = true ]
    run -0 qimg amend -o lazy_refcounts=off r.qcow2
    [ "$(info r.qcow2 '."format-specific".data."lazy-refcounts"')" = false ]
    check_ok r.qcow2
    same_layers r.qcow2 "$RICH"
}

@test "amending to what the image already is writes nothing" {
    use_rich
    before=$(file_sum r.qcow2)
    run -0 qimg amend -o compat=1.1,refcount_bits=16,lazy_refcounts=off,size=4M r.qcow2
    [ "$(file_sum r.qcow2)" = "$before" ]
    run -0 qimg amend -o size=0 r.qcow2
    [ "$(file_sum r.qcow2)" = "$before" ]
}

@test "growing past an L1 boundary moves the L1 table; snapshots keep their size" {
    qemu-img create -q -f qcow2 -o cluster_size=512 t.qcow2 1M
    qemu-io -c 'write -P 0x11 0 256k' -c 'write -P 0x12 1008k 16k' t.qcow2 >/dev/null
    qemu-img snapshot -c s1 t.qcow2
    qemu-io -c 'write -P 0x13 64k 64k' t.qcow2 >/dev/null
    layers t.qcow2 ref
    l1=$(peek_be64 t.qcow2 40)
    run -0 qimg amend -o size=8M t.qcow2
    check_ok t.qcow2
    [ "$(info t.qcow2 '."virtual-size"')" = 8388608 ]
    [ "$(peek_be32 t.qcow2 36)" -ge 256 ]
    [ "$(peek_be64 t.qcow2 40)" != "$l1" ]
    [ "$(info t.qcow2 '.snapshots[0]."vm-state-size"')" = 0 ]
    prefix_layers t.qcow2 ref 1048576
    # the new L1 entries work: write past the old end and read it back
    qemu-io -c 'write -P 0x77 7M 64k' t.qcow2 >/dev/null
    run -0 qemu-io -c 'read -P 0x77 7M 64k' -c 'read -P 0x11 0 64k' t.qcow2
    check_ok t.qcow2
}

@test "growing over a longer backing file shows zeros there, as qemu-img does" {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu-io -c 'write -P 0x99 0 16M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 t.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 2 3M 64k' t.qcow2 >/dev/null
    qemu-img snapshot -c s1 t.qcow2     # the last L2 table is shared: it is copied
    cp t.qcow2 q.qcow2
    layers t.qcow2 ref
    run -0 qimg amend -o size=12M t.qcow2
    qemu-img amend -o size=12M q.qcow2
    check_ok t.qcow2
    run -0 qemu-img compare t.qcow2 q.qcow2
    run -0 qemu-io -c 'read -P 0 4M 8M' t.qcow2
    qemu-img convert -l s1 -O raw t.qcow2 s1.raw
    cmp -n 4194304 s1.raw ref/1.raw
}

@test "shrinking needs --force and nothing allocated past the new end" {
    qemu-img create -q -f qcow2 -o cluster_size=4096 t.qcow2 8M
    qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 5M 4k' -c 'write -z 6M 64k' t.qcow2 >/dev/null
    layers t.qcow2 ref
    before=$(file_sum t.qcow2)
    run -1 qimg amend -o size=2M t.qcow2
    assert_output "qimg: Use the --force option to perform a shrink operation."
    run -1 qimg amend --force -o size=2M t.qcow2
    assert_output "qimg: Cannot shrink the image to 2097152 bytes: guest offset 0x500000 past the new end is allocated"
    [ "$(file_sum t.qcow2)" = "$before" ]
    run -0 qimg amend --force -o size=5636096 t.qcow2      # 5M + 256k: only zeros past it
    check_ok t.qcow2
    [ "$(info t.qcow2 '."virtual-size"')" = 5636096 ]
    prefix_layers t.qcow2 ref 5636096
    # and back: the area past the old end reads as zeros
    run -0 qimg amend -o size=8M t.qcow2
    check_ok t.qcow2
    prefix_layers t.qcow2 ref 8388608
}

@test "v2 images: no size change with snapshots or over a longer backing file, as in qemu-img" {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 b.qcow2 4M
    same_messages b.qcow2 size=8M
    qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 4M
    qemu-img snapshot -c s1 t.qcow2
    same_messages t.qcow2 size=8M
    run -0 qimg amend -o compat=1.1,size=8M t.qcow2
    check_ok t.qcow2
    [ "$(info t.qcow2 '."virtual-size"')" = 8388608 ]
}

@test "-p shows progress on a terminal only" {
    use_rich
    run -0 --separate-stderr qimg amend -p -o compat=0.10 r.qcow2
    assert_equal "$stderr" ""
    run -0 script -qec "$QIMG_BIN amend -p -o compat=1.1 r.qcow2" /dev/null
    assert_output --partial "(100.00/100%)"
    run -0 script -qec "$QIMG_BIN amend -q -p -o refcount_bits=8 r.qcow2" /dev/null
    assert_output ""
}

@test "a locked image is refused; -U amends it anyway" {
    qemu-img create -q -f qcow2 t.qcow2 4M
    hold_image t.qcow2
    run -1 qimg amend -o lazy_refcounts=on t.qcow2
    assert_line --index 0 --partial 'Failed to get "write" lock'
    run -0 qimg amend -U -o lazy_refcounts=on t.qcow2
    release_image
    [ "$(info t.qcow2 '."format-specific".data."lazy-refcounts"')" = true ]
}

# crash_each IMG REFDIR OPTS...: stop qimg after every write in turn; the
# image must then check clean or with leaks only, its active layer read as
# IMG's (qemu-img compare), and each snapshot as in REFDIR. The loop runs in
# a plain bash: under Bats' per-command trace it would take many times longer.
crash_each() { plain crash_loop "$@"; }

crash_loop() {
    local img=$1 ref=$2 n=0 rc f id snaps=() sizes=()
    shift 2
    for f in "$ref"/*.raw; do
        id=${f##*/}
        [ "$id" = active.raw ] && continue
        snaps+=("${id%.raw}")
        sizes+=("$(stat -c %s "$f")")
    done
    while :; do
        cp "$img" c.qcow2
        rc=0
        QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" amend "$@" c.qcow2 2>/dev/null || rc=$?
        qemu-img check c.qcow2 >check.out 2>&1 || [ $? = 3 ] ||
            { echo "after $n writes:"; cat check.out; return 1; }
        qemu-img compare -q "$img" c.qcow2 || { echo "after $n writes: active differs"; return 1; }
        for f in "${!snaps[@]}"; do
            qemu-img convert -l "${snaps[f]}" -O raw c.qcow2 snap.raw
            cmp -n "${sizes[f]}" snap.raw "$ref/${snaps[f]}.raw" ||
                { echo "after $n writes: snapshot ${snaps[f]} differs"; return 1; }
        done
        [ "$rc" = 0 ] && break
        [ "$rc" = 137 ] || { echo "exit $rc after $n writes"; return 1; }
        n=$((n + 1))
    done
    [ "$n" -gt 2 ]
}

@test "a crash after any write of a refcount width change leaves only leaks" {
    use_rich
    crash_each r.qcow2 "$RICH" -o refcount_bits=8
}

@test "a crash after any write of a downgrade leaves only leaks" {
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-io -c 'write -P 0x99 0 1M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 s.qcow2 1M
    qemu-io -c 'write -P 1 0 64k' -c 'write -z 128k 16k' s.qcow2 >/dev/null
    qemu-img snapshot -c s1 s.qcow2
    qemu-io -c 'write -z 0 8k' s.qcow2 >/dev/null     # zero flag on s1's data
    layers s.qcow2 ref
    crash_each s.qcow2 ref -o compat=0.10
}

@test "a crash after any write of a grow (L1 move, zeros over backing) leaves only leaks" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -c 'write -P 0x99 0 4M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 t.qcow2 1M
    qemu-io -c 'write -P 1 0 64k' t.qcow2 >/dev/null
    qemu-img snapshot -c s1 t.qcow2
    layers t.qcow2 ref
    crash_each t.qcow2 ref -o size=5M
}

@test "an encrypted image named by --image-opts is amended as qemu-img amend does" {
    mkdir fx
    luks_fixture fx/e.qcow2
    qio fx/e.qcow2 pw 'write -P 3 0 200k' >/dev/null
    same_cmd amend "${SEC[@]}" -o lazy_refcounts=on,size=6M --image-opts "$(io e.qcow2)"
    [ "$(info a/e.qcow2 '."virtual-size"')" = "$(info b/e.qcow2 '."virtual-size"')" ]
    [ "$(info b/e.qcow2 '."format-specific".data."lazy-refcounts"')" = true ]
    qemu-img check -q "${SEC[@]}" --image-opts "$(io b/e.qcow2)"
    qconvert a/e.qcow2 pw a.raw
    qconvert b/e.qcow2 pw b.raw
    cmp a.raw b.raw
    same_cmd amend "${SEC[@]}" -o help --image-opts "$(io e.qcow2)"
    same_cmd amend "${SEC[@]}" -o help -f qcow2 --image-opts "$(io e.qcow2)"
}

@test "a missing secret, or -f with --image-opts, fail as in qemu-img amend" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd amend -o lazy_refcounts=on --image-opts "$o"
    same_cmd amend -o help --image-opts "$o"
    same_cmd amend "${SEC[@]}" -f qcow2 -o lazy_refcounts=on --image-opts "$o"
    cmp fx/e.qcow2 b/e.qcow2
    same_cmd amend "${SEC[@]}" -o lazy_refcounts=on --image-opts driver=raw,file.filename=e.qcow2
    object_help amend
}
