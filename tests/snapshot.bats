#!/usr/bin/env bats
# snapshot.bats - qimg snapshot: create, apply, delete, rename and list
# internal snapshots, checked against qemu-img (check, snapshot -l, info,
# convert -l) in both directions, at every refcount width and cluster size
# that matters, with compressed clusters, crashes and refusals.
load helpers
load crypto_helpers

setup() { common_setup; }

# img FILE [qemu-img create -o options]: a 4 MiB qcow2 image.
img() {
    qemu-img create -q -f qcow2 ${2:+-o "$2"} "$1" 4M
}

# wr FILE PATTERN OFFSET LEN [-c]: write a pattern with qemu-io.
wr() {
    qemu-io -c "write ${5:-} -P $2 $3 $4" "$1" >/dev/null
}

# raw_of FILE OUT [SNAPSHOT]: the guest data (of a snapshot) as raw.
raw_of() {
    qemu-img convert ${3:+-l "$3"} -O raw "$1" "$2"
}

# The image is consistent by qemu-img's own checker.
clean() {
    run qemu-img check "$1"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

# Snapshot names as qemu-img sees them, one line per snapshot: "ID NAME".
qnames() {
    qemu-img info --output=json "$1" | jq -r '.snapshots // [] | .[] | "\(.id) \(.name)"'
}

@test "snapshots qimg creates are listed by qemu-img with the same ids and names" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    run -0 qimg snapshot -c s1 a.qcow2
    assert_output ""
    wr a.qcow2 2 0 64k
    run -0 qimg snapshot -c s2 a.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(printf '1 s1\n2 s2')"
    run -0 qemu-img snapshot -l a.qcow2
    assert_line --index 2 --regexp '^1 +s1 +0 B '
    assert_line --index 3 --regexp '^2 +s2 +0 B '
}

@test "each snapshot holds the data of its moment, as qemu-img convert -l reads it" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    wr a.qcow2 2 1M 192k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c s1 a.qcow2
    wr a.qcow2 3 32k 64k
    wr a.qcow2 4 3M 64k
    raw_of a.qcow2 at2.raw
    qimg snapshot -c s2 a.qcow2
    wr a.qcow2 5 0 4M
    raw_of a.qcow2 now.raw
    clean a.qcow2
    raw_of a.qcow2 s1.raw s1
    raw_of a.qcow2 s2.raw s2
    cmp s1.raw at1.raw
    cmp s2.raw at2.raw
    raw_of a.qcow2 active.raw
    cmp active.raw now.raw
    run ! cmp -s at1.raw at2.raw
}

@test "apply restores a snapshot's data and delete removes it, clean after every step" {
    img a.qcow2
    wr a.qcow2 1 0 128k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c s1 a.qcow2
    clean a.qcow2
    wr a.qcow2 2 64k 128k
    raw_of a.qcow2 at2.raw
    qimg snapshot -c s2 a.qcow2
    clean a.qcow2
    wr a.qcow2 3 0 1M
    run -0 qimg snapshot -a s1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot -d s2 a.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output "1 s1"
    run -0 qimg snapshot -a 1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot -d s1 a.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output ""
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    # the active state writes in place again: nothing shared is left
    wr a.qcow2 6 0 64k
    clean a.qcow2
}

@test "snapshots qemu-img created are applied and deleted by qimg" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qemu-img snapshot -c q1 a.qcow2
    wr a.qcow2 2 0 128k
    raw_of a.qcow2 at2.raw
    qemu-img snapshot -c q2 a.qcow2
    wr a.qcow2 3 512k 64k
    run -0 qimg snapshot -a q1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot -d q1 a.qcow2
    clean a.qcow2
    run -0 qimg snapshot -a q2 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at2.raw
    run -0 qnames a.qcow2
    assert_output "2 q2"
}

@test "snapshots qimg created are applied and deleted by qemu-img" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c s1 a.qcow2
    wr a.qcow2 2 0 64k
    qimg snapshot -c s2 a.qcow2
    run -0 qemu-img snapshot -a s1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qemu-img snapshot -d s2 a.qcow2
    clean a.qcow2
    run -0 qemu-img snapshot -d s1 a.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output ""
}

@test "qimg numbers a new snapshot after the largest id, as qemu-img does" {
    img a.qcow2
    img b.qcow2
    for f in a b; do
        qemu-img snapshot -c x $f.qcow2
        qemu-img snapshot -c y $f.qcow2
        qemu-img snapshot -c z $f.qcow2
        qemu-img snapshot -d x $f.qcow2
        qemu-img snapshot -d y $f.qcow2
    done
    qemu-img snapshot -c w a.qcow2
    qimg snapshot -c w b.qcow2
    run -0 qnames b.qcow2
    assert_output "$(qnames a.qcow2)"
    assert_line --index 1 --regexp '^[0-9]+ w$'
    refute_line --index 1 "2 w"
}

@test "a snapshot entry is written as qemu-img writes it (extra data, disk size, icount)" {
    img a.qcow2
    img b.qcow2
    qemu-img snapshot -c s1 a.qcow2
    qimg snapshot -c s1 b.qcow2
    for f in a b; do
        off=$(peek_be64 $f.qcow2 64)
        # the entry without its date, whose bytes differ: 40 fixed, 24 extra, id, name
        { xxd -p -s "$off" -l 16 $f.qcow2; xxd -p -s "$((off + 24))" -l 43 $f.qcow2; } >$f.entry
    done
    cmp a.entry b.entry
}

@test "refcount_bits=1 cannot hold a second reference: create fails and changes nothing" {
    img a.qcow2 refcount_bits=1
    wr a.qcow2 1 0 64k
    cp a.qcow2 q.qcow2
    sum=$(file_sum a.qcow2)
    run -1 --separate-stderr qimg snapshot -c s1 a.qcow2
    assert_regex "$stderr" "^qimg: Could not create snapshot 's1': Refcount of cluster 0x[0-9a-f]+ would exceed 1 \\(refcount_bits=1\\); the image is unchanged \\(a snapshot adds a reference to every cluster in use\\)$"
    assert_equal "$(file_sum a.qcow2)" "$sum"
    clean a.qcow2
    # qemu-img fails as well (exit 1), but leaks the L1 copy it wrote
    run -1 qemu-img snapshot -c s1 q.qcow2
    run -3 qemu-img check q.qcow2
}

@test "refcount_bits=1 still takes a snapshot of an image without data, as qemu-img" {
    img a.qcow2 refcount_bits=1
    img q.qcow2 refcount_bits=1
    run -0 qimg snapshot -c s1 a.qcow2
    run -0 qemu-img snapshot -c s1 q.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(qnames q.qcow2)"
    run -0 qimg snapshot -d s1 a.qcow2
    clean a.qcow2
}

@test "refcount_bits=2 refuses the fourth reference and changes nothing" {
    img a.qcow2 refcount_bits=2
    wr a.qcow2 1 0 64k
    qimg snapshot -c s1 a.qcow2
    qimg snapshot -c s2 a.qcow2
    sum=$(file_sum a.qcow2)
    run -1 qimg snapshot -c s3 a.qcow2
    assert_output --partial "would exceed 3 (refcount_bits=2)"
    assert_equal "$(file_sum a.qcow2)" "$sum"
    clean a.qcow2
    # applying needs one more reference too: refused, unchanged
    run -1 qimg snapshot -a s1 a.qcow2
    assert_equal "$(file_sum a.qcow2)" "$sum"
    run -0 qimg snapshot -d s2 a.qcow2
    run -0 qimg snapshot -a s1 a.qcow2
    clean a.qcow2
}

@test "refcount_bits=64 snapshots work both ways" {
    img a.qcow2 refcount_bits=64
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c s1 a.qcow2
    wr a.qcow2 2 0 128k
    qemu-img snapshot -c q2 a.qcow2
    clean a.qcow2
    run -0 qimg snapshot -a s1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot -d q2 a.qcow2
    run -0 qimg snapshot -d s1 a.qcow2
    clean a.qcow2
}

# same_data IMAGE RAW: the image's guest data equals RAW.
same_data() {
    qemu-img compare -q -f qcow2 -F raw "$1" "$2"
}

# cycle FILE: create, change, create, apply, delete; data checked each time.
cycle() {
    local f=$1
    wr "$f" 1 0 96k
    wr "$f" 2 1M 64k
    raw_of "$f" at1.raw
    qimg snapshot -c s1 "$f"
    wr "$f" 3 32k 1M
    raw_of "$f" at2.raw
    qimg snapshot -c s2 "$f"
    clean "$f"
    wr "$f" 4 0 2M
    qimg snapshot -a s1 "$f"
    clean "$f"
    same_data "$f" at1.raw
    qimg snapshot -d s1 "$f"
    clean "$f"
    raw_of "$f" s2.raw s2
    cmp s2.raw at2.raw
    qimg snapshot -a s2 "$f"
    qimg snapshot -d s2 "$f"
    clean "$f"
    same_data "$f" at2.raw
}

@test "512-byte clusters: create, apply and delete stay consistent" {
    img a.qcow2 cluster_size=512
    cycle a.qcow2
}

@test "2 MiB clusters: create, apply and delete stay consistent" {
    img a.qcow2 cluster_size=2M
    cycle a.qcow2
}

@test "extended L2 entries: create, apply and delete stay consistent" {
    img a.qcow2 extended_l2=on
    cycle a.qcow2
}

@test "compat=0.10 images take snapshots too" {
    img a.qcow2 compat=0.10
    cycle a.qcow2
}

@test "compressed clusters are shared with snapshots and counted as qemu counts them" {
    img a.qcow2
    # several compressed streams packed into the same host clusters
    for i in 0 1 2 3 4 5; do
        wr a.qcow2 $((i + 1)) $((i * 64))k 64k -c
    done
    raw_of a.qcow2 at1.raw
    qimg snapshot -c s1 a.qcow2
    clean a.qcow2
    qimg snapshot -c s2 a.qcow2
    clean a.qcow2
    # overwrite some (copied, uncompressed), compress more at fresh places
    wr a.qcow2 8 0 128k
    wr a.qcow2 9 1M 128k -c
    clean a.qcow2
    qemu-img snapshot -c q3 a.qcow2
    raw_of a.qcow2 at3.raw
    qimg snapshot -a s1 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    qimg snapshot -d s1 a.qcow2
    clean a.qcow2
    qimg snapshot -d s2 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    qimg snapshot -a q3 a.qcow2
    qimg snapshot -d q3 a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at3.raw
}

@test "100 snapshots in a row: qemu-img lists 100 and the image is clean" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    for i in $(seq 1 100); do
        qimg snapshot -c "snap$i" a.qcow2
    done
    clean a.qcow2
    run -0 qemu-img snapshot -l a.qcow2
    [ "${#lines[@]}" -eq 102 ]
    assert_line --index 101 --regexp '^100 +snap100 '
    for i in $(seq 1 10 100); do
        qimg snapshot -d "snap$i" a.qcow2
    done
    clean a.qcow2
    run -0 qnames a.qcow2
    [ "${#lines[@]}" -eq 90 ]
}

@test "apply brings back the snapshot's disk size and what lies beyond the current one" {
    # 4k clusters: one L1 entry maps 2 MiB, so 60M lies far past 4M
    qemu-img create -q -f qcow2 -o cluster_size=4k a.qcow2 64M
    wr a.qcow2 1 0 64k
    wr a.qcow2 2 60M 64k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c big a.qcow2
    qemu-img resize -q --shrink a.qcow2 4M
    cp a.qcow2 q.qcow2
    run -0 qimg snapshot -a big a.qcow2
    run -0 qemu-img snapshot -a big q.qcow2
    clean a.qcow2
    assert_equal "$(qemu-img info --output=json a.qcow2 | jq '."virtual-size"')" \
                 "$(qemu-img info --output=json q.qcow2 | jq '."virtual-size"')"
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
}

@test "apply moves the active L1 table when the snapshot's is larger" {
    # 512-byte clusters: an L1 entry maps 32k; 8M takes 256 entries, 4 clusters
    qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 8M
    wr a.qcow2 3 7M 4k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c big a.qcow2
    qemu-img resize -q --shrink a.qcow2 64k
    # make the active L1 table as small as 64k needs (2 entries, one
    # cluster; the entries past it are zero after the shrink)
    poke_be32 a.qcow2 36 2
    qemu-img check -q -r leaks a.qcow2
    clean a.qcow2
    l1=$(peek_be64 a.qcow2 40)
    run -0 qimg snapshot -a big a.qcow2
    clean a.qcow2
    [ "$(peek_be32 a.qcow2 36)" -eq 256 ]
    [ "$(peek_be64 a.qcow2 40)" -ne "$l1" ]
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
}

@test "a snapshot's VM state past the disk end survives apply and delete, as with qemu-img" {
    # qemu keeps VM state in the guest address space after the disk: at
    # 512M (the second L1 entry) for 64k clusters. Make such a snapshot:
    # data there, snapshot, shrink the disk, mark 128k of it VM state.
    qemu-img create -q -f qcow2 a.qcow2 1G
    wr a.qcow2 1 0 64k
    wr a.qcow2 9 512M 128k
    qimg snapshot -c vm a.qcow2
    qemu-img resize -q --shrink a.qcow2 8M
    off=$(peek_be64 a.qcow2 64)
    poke_be32 a.qcow2 $((off + 32)) 131072
    poke_be64 a.qcow2 $((off + 40)) 131072
    poke_be64 a.qcow2 $((off + 48)) 8388608
    clean a.qcow2
    run -0 qemu-img snapshot -l a.qcow2
    assert_line --index 2 --regexp '^1 +vm +128 KiB '
    expected=$output
    run -0 qimg snapshot -l a.qcow2
    assert_output "$expected"
    cp a.qcow2 q.qcow2
    run -0 qimg snapshot -a vm a.qcow2
    run -0 qemu-img snapshot -a vm q.qcow2
    clean a.qcow2
    # the same active L1 table as qemu-img makes, VM state entry included
    [ "$(peek_be32 a.qcow2 36)" -eq "$(peek_be32 q.qcow2 36)" ]
    cmp <(xxd -p -s "$(peek_be64 a.qcow2 40)" -l 16 a.qcow2) \
        <(xxd -p -s "$(peek_be64 q.qcow2 40)" -l 16 q.qcow2)
    [ "$(peek_be64 a.qcow2 $(( $(peek_be64 a.qcow2 40) + 8 )))" -ne 0 ]
    run -0 qimg snapshot -d vm a.qcow2
    clean a.qcow2
    [ "$(peek_be64 a.qcow2 $(( $(peek_be64 a.qcow2 40) + 8 )))" -ne 0 ]
}

@test "an old entry without extra data is applied at the current size and upgraded, as qemu" {
    # version 2 images may have entries without extra data (v3 must not)
    img a.qcow2 compat=0.10
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qemu-img snapshot -c old a.qcow2
    wr a.qcow2 2 0 64k
    # cut the entry's extra data (24 bytes) out: id and name move up
    off=$(peek_be64 a.qcow2 64)
    poke_be32 a.qcow2 $((off + 36)) 0
    poke a.qcow2 $((off + 40)) "$(xxd -p -s $((off + 64)) -l 4 a.qcow2)00000000"
    clean a.qcow2
    run -0 qimg snapshot -a old a.qcow2
    clean a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot -c new a.qcow2
    clean a.qcow2
    run -0 qemu-img snapshot -l a.qcow2
    expected=$output
    run -0 qimg snapshot -l a.qcow2
    assert_output "$expected"
    # rewritten with the v3 fields: extra data, disk size = image size
    off=$(peek_be64 a.qcow2 64)
    [ "$(peek_be32 a.qcow2 $((off + 36)))" -ge 16 ]
    [ "$(peek_be64 a.qcow2 $((off + 48)))" -eq 4194304 ]
}

@test "--rename gives a snapshot a new name that qemu-img sees, the id stays" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qimg snapshot -c old a.qcow2
    qimg snapshot -c other a.qcow2
    run -0 qimg snapshot --rename old new a.qcow2
    clean a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(printf '1 new\n2 other')"
    raw_of a.qcow2 s.raw new
    cmp s.raw at1.raw
    run -0 qimg snapshot --rename 2 renamed a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(printf '1 new\n2 renamed')"
    sum=$(file_sum a.qcow2)
    run -1 qimg snapshot --rename new renamed a.qcow2
    assert_output "qimg: Could not rename snapshot 'new': a snapshot named 'renamed' already exists (id 2); add --force to use the name anyway"
    run -1 qimg snapshot --rename gone x a.qcow2
    assert_output "qimg: Could not rename snapshot 'gone': snapshot not found"
    assert_equal "$(file_sum a.qcow2)" "$sum"
}

# An image whose snapshots cover what -l prints: qemu-img's and qimg's,
# a name longer than the TAG column, a multibyte name, and a last entry
# without icount (its extra data cut from 24 to 16 bytes).
listing_image() {
    img a.qcow2
    wr a.qcow2 1 0 64k
    qemu-img snapshot -c "from qemu" a.qcow2
    qimg snapshot -c s2 a.qcow2
    qimg snapshot -c "a rather long snapshot name, wider than its column" a.qcow2
    qemu-img snapshot -c "é" a.qcow2
    qimg snapshot -c last a.qcow2
    local e i
    e=$(peek_be64 a.qcow2 64)
    for i in 1 2 3 4; do
        e=$(( e + (40 + $(peek_be32 a.qcow2 $((e + 36))) + $(peek_be16 a.qcow2 $((e + 12))) +
                   $(peek_be16 a.qcow2 $((e + 14))) + 7) / 8 * 8 ))
    done
    poke_be32 a.qcow2 $((e + 36)) 16
    poke a.qcow2 $((e + 56)) "$(xxd -p -s $((e + 64)) -l 5 a.qcow2)0000000000000000"
}

@test "snapshot -l prints exactly what qemu-img prints, line for line" {
    listing_image
    run -0 qemu-img snapshot -l a.qcow2
    expected=$output
    run -0 qimg snapshot -l a.qcow2
    assert_output "$expected"
    assert_line --index 0 "Snapshot list:"
    assert_line --index 6 --regexp '^5 +last +0 B .* 00:00:00.000 {11}$'
    [ "${#lines[@]}" -eq 7 ]
    # -q does not silence the list (nor does it in qemu-img)
    run -0 qimg snapshot -q -l a.qcow2
    assert_output "$expected"
}

@test "snapshot -l --output=json has qemu-img info's snapshot objects, values and key order" {
    listing_image
    qemu-img info --output=json a.qcow2 | jq -c .snapshots >expected.json
    run -0 qimg snapshot -l --output=json a.qcow2
    echo "$output" | jq -c . >actual.json
    cmp actual.json expected.json
    # qemu's layout: 4-space indentation, one member per line
    qemu-img info --output=json a.qcow2 | sed -n '/^    "snapshots": \[/,/^    \]/p' |
        sed '1s/.*/[/; $s/.*/]/; s/^    //' >layout.txt
    echo "$output" | diff - layout.txt
    # the entry without icount has no icount key
    [ "$(jq '.[4] | has("icount")' actual.json)" = false ]
    [ "$(jq '.[3] | has("icount")' actual.json)" = true ]
}

@test "snapshot -l of an image without snapshots prints nothing, as qemu-img" {
    img a.qcow2
    run -0 qemu-img snapshot -l a.qcow2
    assert_output ""
    run -0 qimg snapshot -l a.qcow2
    assert_output ""
    run -0 qimg snapshot -l --output=json a.qcow2
    assert_output "$(printf '[\n]')"
}

@test "snapshot -l never writes, with or without -U" {
    listing_image
    sum=$(file_sum a.qcow2)
    chmod a-w a.qcow2
    run -0 qimg snapshot -l a.qcow2
    run -0 qimg snapshot -l -U --output=json a.qcow2
    chmod u+w a.qcow2
    assert_equal "$(file_sum a.qcow2)" "$sum"
}

@test "a duplicate name is refused and the file is unchanged; --force allows it as qemu-img" {
    img a.qcow2
    qimg snapshot -c s1 a.qcow2
    sum=$(file_sum a.qcow2)
    run -1 qimg snapshot -c s1 a.qcow2
    assert_output "qimg: Could not create snapshot 's1': a snapshot named 's1' already exists (id 1); add --force to use the name anyway"
    run -1 qimg snapshot -c 1 a.qcow2
    assert_output "qimg: Could not create snapshot '1': '1' is the id of snapshot 's1', so the name would be ambiguous; add --force to use the name anyway"
    run -1 qimg snapshot -c '' a.qcow2
    assert_output "qimg: Could not create snapshot '': a snapshot name must not be empty"
    run -1 qimg snapshot -c "$(printf 'x%.0s' $(seq 256))" a.qcow2
    assert_output --partial "qemu keeps at most 255 bytes of a snapshot name"
    assert_equal "$(file_sum a.qcow2)" "$sum"
    run -0 qimg snapshot --force -c s1 a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(printf '1 s1\n2 s1')"
    clean a.qcow2
}

@test "a missing snapshot is refused with qemu-img's messages and the file is unchanged" {
    img a.qcow2
    qimg snapshot -c s1 a.qcow2
    sum=$(file_sum a.qcow2)
    run -1 qimg snapshot -a nope a.qcow2
    assert_output "$(qemu-img snapshot -a nope a.qcow2 2>&1 | sed 's/^qemu-img:/qimg:/')"
    run -1 qimg snapshot -d nope a.qcow2
    assert_output "$(qemu-img snapshot -d nope a.qcow2 2>&1 | sed 's/^qemu-img:/qimg:/')"
    assert_equal "$(file_sum a.qcow2)" "$sum"
}

@test "an ambiguous name is refused with the ids to use; --force takes qemu-img's choice" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    raw_of a.qcow2 at1.raw
    qemu-img snapshot -c dup a.qcow2
    wr a.qcow2 2 0 64k
    qemu-img snapshot -c dup a.qcow2
    qemu-img snapshot -c 1 a.qcow2
    sum=$(file_sum a.qcow2)
    run -1 qimg snapshot -a dup a.qcow2
    assert_output "qimg: Could not apply snapshot 'dup': 2 snapshots match 'dup' (ids 1, 2); name the one you mean by its id, or add --force to take id 1 as qemu-img would"
    run -1 qimg snapshot -d dup a.qcow2
    assert_output --partial "(ids 1, 2)"
    run -1 qimg snapshot --rename dup x a.qcow2
    assert_output --partial "(ids 1, 2)"
    # '1' is snapshot 1's id and snapshot 3's name
    run -1 qimg snapshot -a 1 a.qcow2
    assert_output --partial "2 snapshots match '1' (ids 1, 3)"
    run -1 qimg snapshot -d 1 a.qcow2
    assert_output --partial "add --force to take id 3 as qemu-img would"
    assert_equal "$(file_sum a.qcow2)" "$sum"
    # by id it is unambiguous
    run -0 qimg snapshot -a 2 a.qcow2
    # --force: -a takes the id first, -d the name first, as qemu-img
    run -0 qimg snapshot --force -a dup a.qcow2
    raw_of a.qcow2 now.raw
    cmp now.raw at1.raw
    run -0 qimg snapshot --force -d 1 a.qcow2
    run -0 qnames a.qcow2
    assert_output "$(printf '1 dup\n2 dup')"
    run -0 qimg snapshot --force -d dup a.qcow2
    run -0 qnames a.qcow2
    assert_output "2 dup"
    clean a.qcow2
}

# crash_at OP...: run qimg snapshot OP on copies of base.qcow2, killed after
# each write in turn until it completes. After every crash qemu-img check
# finds at worst leaks (and COPIED flags that disagree with a refcount in
# the window between the two writes, which nothing can avoid and which
# makes no write go astray; repair fixes them); the guest data is intact.
crash_at() {
    local n rc
    raw_of base.qcow2 before.raw
    for n in $(seq 0 100); do
        cp base.qcow2 t.qcow2
        run env QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" snapshot "$@" t.qcow2
        rc=$status
        run qemu-img check t.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || [ "$status" -eq 2 ]
        refute_output --regexp 'ERROR (cluster|l2_offset|L2|Refcount)'
        refute_output --partial 'refcount=0'
        if [ "$status" -eq 2 ]; then
            [ "$(grep -c '^ERROR' <<<"$output")" = "$(grep -c '^ERROR OFLAG_COPIED' <<<"$output")" ]
            run -0 qemu-img check -q -r all t.qcow2
        fi
        if [ "$rc" -eq 0 ]; then
            [ "$n" -gt 1 ]
            return 0
        fi
        [ "$rc" -eq 137 ]
        same_data t.qcow2 before.raw
    done
    return 1
}

@test "a crash at any write of create or delete leaves only leaks" {
    img base.qcow2
    wr base.qcow2 1 0 128k
    wr base.qcow2 2 512k 64k -c
    wr base.qcow2 2 1M 64k
    qimg snapshot -c s0 base.qcow2
    wr base.qcow2 3 0 64k
    crash_at -c s1
    crash_at -d s0
}

@test "a crash at any write of apply leaves the old or the new state and only leaks" {
    img base.qcow2
    wr base.qcow2 1 0 128k
    raw_of base.qcow2 s0.raw
    qimg snapshot -c s0 base.qcow2
    wr base.qcow2 3 0 64k
    raw_of base.qcow2 cur.raw
    for n in $(seq 0 50); do
        cp base.qcow2 t.qcow2
        run env QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" snapshot -a s0 t.qcow2
        rc=$status
        run qemu-img check t.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
        same_data t.qcow2 cur.raw || same_data t.qcow2 s0.raw
        [ "$rc" -ne 0 ] || break
    done
    [ "$rc" -eq 0 ]
}

@test "a snapshot pointing past the end of the file is refused before anything changes" {
    img a.qcow2
    wr a.qcow2 1 0 64k
    qimg snapshot -c s1 a.qcow2
    qimg snapshot -c s2 a.qcow2
    # s1's L1 table: its first entry now names an L2 table far past the end
    l1=$(peek_be64 a.qcow2 $(peek_be64 a.qcow2 64))
    poke_be64 a.qcow2 "$l1" 0x00ffffffffff0000
    run -1 qimg snapshot -d s1 a.qcow2
    assert_output --partial "L2 table offset 0xffffffffff0000 lies past the end of the file"
    # still listed: only the corrupt bit was set, as qemu does
    run -0 qnames a.qcow2
    assert_output "$(printf '1 s1\n2 s2')"
    run -1 qimg snapshot -d s2 a.qcow2
    assert_output --partial "Image is corrupt; cannot be opened read/write"
}

@test "options: actions cannot be mixed, -U only lists, --output only with -l" {
    img a.qcow2
    run -1 qimg snapshot -l -c x a.qcow2
    assert_line --index 0 "qimg: Cannot mix '-l', '-a', '-c', '-d'"
    run -1 qimg snapshot -l --rename a b a.qcow2
    assert_line --index 0 "qimg: Cannot mix '-l', '-a', '-c', '-d', '--rename'"
    run -1 qimg snapshot -U -c x a.qcow2
    assert_output "$(qemu-img snapshot -U -c x a.qcow2 2>&1 | sed 's/^qemu-img:/qimg:/')"
    run -1 qimg snapshot --output=json -c x a.qcow2
    assert_output "qimg: --output is only used with -l"
    run -1 qimg snapshot -l
    assert_line --index 0 "qimg: Expecting one image file name"
    run -1 qimg snapshot -l a.qcow2 b.qcow2
    assert_line --index 0 "qimg: Expecting one image file name"
    run -1 qimg snapshot -l nonexistent.qcow2
    assert_output "$(qemu-img snapshot -l nonexistent.qcow2 2>&1 | sed 's/^qemu-img:/qimg:/')"
    # no action: the image is opened and nothing else happens, as qemu-img
    sum=$(file_sum a.qcow2)
    run -0 qimg snapshot a.qcow2
    assert_output ""
    assert_equal "$(file_sum a.qcow2)" "$sum"
    run -0 qimg snapshot --help
    assert_line --index 0 --partial "snapshot [-q] [-f fmt] [--output=human|json] [--force] [-l | -c NAME"
}

@test "raw images have no snapshots: -l prints nothing, -c is not supported" {
    truncate -s 1M r.raw
    run -0 qimg snapshot -f raw -l r.raw
    assert_output ""
    run -1 qimg snapshot -f raw -c x r.raw
    assert_output --partial "qimg: Could not create snapshot 'x': Operation not supported"
}

@test "snapshots of an encrypted image named by --image-opts, as qemu-img snapshot" {
    local d want
    mkdir fx
    luks_fixture fx/e.qcow2
    qio fx/e.qcow2 pw 'write -P 1 0 256k' >/dev/null
    same_cmd snapshot "${SEC[@]}" -c s1 --image-opts "$(io e.qcow2)"
    [ "$(qnames a/e.qcow2)" = "$(qnames b/e.qcow2)" ]
    run -0 qemu-img snapshot "${SEC[@]}" -l --image-opts "$(io b/e.qcow2)"
    want=$output
    run -0 qimg snapshot "${SEC[@]}" -l --image-opts "$(io b/e.qcow2)"
    assert_output "$want"
    for d in a b; do qio $d/e.qcow2 pw 'write -P 2 64k 128k' >/dev/null; done
    qemu-img snapshot "${SEC[@]}" -a s1 --image-opts "$(io a/e.qcow2)"
    run -0 qimg snapshot "${SEC[@]}" -a s1 --image-opts "$(io b/e.qcow2)"
    qconvert a/e.qcow2 pw a.raw
    qconvert b/e.qcow2 pw b.raw
    cmp a.raw b.raw
    qemu-img check -q "${SEC[@]}" --image-opts "$(io b/e.qcow2)"
    cp b/e.qcow2 fx/e.qcow2
    same_cmd snapshot "${SEC[@]}" -d s1 --image-opts "$(io e.qcow2)"
    [ "$(qnames b/e.qcow2)" = "" ]
}

@test "a missing or wrong secret, or -U with a change, fail as in qemu-img snapshot" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd snapshot -l --image-opts "$o"
    same_cmd snapshot --object secret,id=sec0,data=bad -c s1 --image-opts "$o"
    same_cmd snapshot "${SEC[@]}" -U -c s1 --image-opts "$o"
    object_help snapshot
    # (qemu-img snapshot has no -f; qimg's is refused with --image-opts)
    run -1 qimg snapshot "${SEC[@]}" -f qcow2 -l --image-opts "$(io fx/e.qcow2)"
    assert_output "qimg: --image-opts and --format are mutually exclusive"
}
