#!/usr/bin/env bats
# convert.bats - qimg convert's options: sparseness (-S), -n, several
# inputs, -l, -c and -m, -B, -p, -U, and its errors (wording as qemu-img's,
# no output left behind, inputs never written).
load helpers

setup() { common_setup; }
teardown() { release_image; }

# A 4 MiB raw file: random data, a zero run written as data, text, a hole.
sparse_source() {
    make_pattern rand.bin 1 3
    {
        head -c 524288 rand.bin
        head -c 1048576 /dev/zero
        yes "convert me $RANDOM" | head -c 524288
        tail -c 65536 rand.bin
    } >"$1"
    truncate -s 4M "$1"
}

# qemu-img's message for the same command line, with our program name.
qemu_says() {
    qemu-img "$@" 2>&1 >/dev/null | sed 's/^qemu-img: /qimg: /'
}

@test "convert --help prints the synopsis" {
    run -0 qimg convert --help
    assert_line --index 0 --partial "usage: qimg convert [-q] [-p] [-c] [-f fmt] [-O fmt]"
}

@test "by default zero runs stay sparse, as many clusters as qemu-img allocates" {
    sparse_source src.raw
    run -0 qimg convert -O qcow2 src.raw a.qcow2
    qemu-img convert -O qcow2 src.raw b.qcow2
    a=$(qemu-img check --output=json a.qcow2 | jq '."allocated-clusters"')
    b=$(qemu-img check --output=json b.qcow2 | jq '."allocated-clusters"')
    [ "$a" -eq "$b" ]
    [ "$a" -lt 64 ]
    run -0 qemu-img compare src.raw a.qcow2
    # raw output: holes where the source reads zeros
    run -0 qimg convert src.raw a.raw
    cmp src.raw a.raw
    [ "$(du -k a.raw | cut -f1)" -lt 2048 ]
}

@test "-S 0 fully allocates the output, as qemu-img does" {
    sparse_source src.raw
    run -0 qimg convert -S 0 -O qcow2 src.raw a.qcow2
    qemu-img convert -S 0 -O qcow2 src.raw b.qcow2
    a=$(qemu-img check --output=json a.qcow2 | jq '."allocated-clusters"')
    b=$(qemu-img check --output=json b.qcow2 | jq '."allocated-clusters"')
    [ "$a" -eq "$b" ]
    [ "$a" -eq 64 ]
    run -0 qimg convert -S 0 src.raw a.raw
    cmp src.raw a.raw
    [ "$(du -k a.raw | cut -f1)" -ge 4096 ]
}

@test "-S with a larger size keeps shorter zero runs as data" {
    sparse_source src.raw
    run -0 qimg convert -S 2M -O qcow2 src.raw a.qcow2
    run -0 qimg convert -O qcow2 src.raw b.qcow2
    a=$(qemu-img check --output=json a.qcow2 | jq '."allocated-clusters"')
    b=$(qemu-img check --output=json b.qcow2 | jq '."allocated-clusters"')
    [ "$a" -gt "$b" ]
    run -0 qemu-img compare src.raw a.qcow2
}

@test "-n writes into an existing qcow2 image over its old data" {
    sparse_source src.raw
    qemu-img create -q -f qcow2 -o cluster_size=4k dst.qcow2 8M
    qemu-io -c "write -c -P 0xdd 1M 4k" dst.qcow2 >/dev/null
    qemu-io -c "write -P 0xee 0 1M" -c "write -P 0xee 1028k 7164k" dst.qcow2 >/dev/null
    qemu-img snapshot -c old dst.qcow2
    run -0 qimg convert -n -O qcow2 src.raw dst.qcow2
    run -0 qemu-img check dst.qcow2
    qemu-img convert -O raw dst.qcow2 dst.raw
    cmp -n 4194304 src.raw dst.raw
    # past the source the old data stays, and so does the snapshot
    qemu-io -c "read -P 0xee 4M 4M" dst.qcow2 | grep -q "read 4194304/4194304"
    qemu-img convert -l old -O raw dst.qcow2 old.raw
    qemu-io -f raw -c "read -P 0xee 0 1M" -c "read -P 0xdd 1M 4k" old.raw >qio.out
    run ! grep -q "Pattern verification failed" qio.out
}

@test "-n writes into an existing raw file, zeros included" {
    sparse_source src.raw
    head -c 4194304 /dev/urandom >dst.raw
    run -0 qimg convert -n src.raw dst.raw
    cmp src.raw dst.raw
}

@test "-n refuses an output smaller than the input, as qemu-img does" {
    sparse_source src.raw
    qemu-img create -q -f qcow2 small.qcow2 1M
    before=$(file_sum small.qcow2)
    run -1 qimg convert -n -O qcow2 src.raw small.qcow2
    assert_output "$(qemu_says convert -n -O qcow2 src.raw small.qcow2)"
    [ "$(file_sum small.qcow2)" = "$before" ]
}

@test "several inputs are concatenated, as qemu-img concatenates them" {
    make_pattern a.raw 1 1
    qemu-img create -q -f qcow2 b.qcow2 3073k
    qemu-io -c "write -P 0x42 1000k 100k" -c "write -P 0x43 3M 1k" b.qcow2 >/dev/null
    head -c 70000 /dev/urandom >c.raw
    run -0 qimg convert -O qcow2 a.raw b.qcow2 c.raw out.qcow2
    qemu-img convert -O raw a.raw b.qcow2 c.raw want.raw
    qemu-img convert -O raw out.qcow2 got.raw
    cmp want.raw got.raw
    run -0 qemu-img check out.qcow2
}

@test "-l reads a snapshot by name, by id, and in the snapshot.name= / snapshot.id= forms" {
    qemu-img create -q -f qcow2 img.qcow2 4M
    qemu-io -c "write -P 0x11 0 2M" img.qcow2 >/dev/null
    qemu-img snapshot -c first img.qcow2
    qemu-io -c "write -P 0x22 1M 3M" img.qcow2 >/dev/null
    qemu-img snapshot -c second img.qcow2
    qemu-io -c "write -P 0x33 0 4M" img.qcow2 >/dev/null
    for l in first second 1 2 snapshot.name=first snapshot.id=2; do
        run -0 qimg convert -l "$l" img.qcow2 got.raw
        qemu-img convert -l "$l" img.qcow2 want.raw
        cmp got.raw want.raw
    done
    qemu-img convert -l first img.qcow2 first.raw
    run -1 cmp -s first.raw want.raw
}

@test "-l with a missing snapshot fails as qemu-img does and leaves no output" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    qemu-img snapshot -c one img.qcow2
    run -1 qimg convert -l nope img.qcow2 out.raw
    assert_output "$(qemu_says convert -l nope img.qcow2 out.raw)"
    [ ! -e out.raw ]
    run -1 qimg convert -l one img.qcow2 img.qcow2 out.raw
    assert_output "$(qemu_says convert -l one img.qcow2 img.qcow2 out.raw)"
}

@test "-c compresses the clusters, as many as qemu-img compresses" {
    sparse_source src.raw
    run -0 qimg convert -c -O qcow2 src.raw a.qcow2
    qemu-img convert -c -O qcow2 src.raw b.qcow2
    run -0 qemu-img check a.qcow2
    assert_output --regexp "[1-9][0-9.]*% compressed clusters"
    a=$(qemu-img check --output=json a.qcow2 | jq '."compressed-clusters"')
    b=$(qemu-img check --output=json b.qcow2 | jq '."compressed-clusters"')
    [ "$a" -eq "$b" ]
    run -0 qemu-img compare src.raw a.qcow2
}

@test "-m 1, -m 2 and -m 16 give byte-identical compressed outputs" {
    sparse_source src.raw
    run -0 qimg convert -c -m 1 -O qcow2 -o cluster_size=4k src.raw m1.qcow2
    run -0 qimg convert -c -m 2 -O qcow2 -o cluster_size=4k src.raw m2.qcow2
    run -0 qimg convert -c -m 16 -O qcow2 -o cluster_size=4k src.raw m16.qcow2
    cmp m1.qcow2 m2.qcow2
    cmp m1.qcow2 m16.qcow2
    run -0 qemu-img compare src.raw m1.qcow2
}

@test "-B stores only what differs from the new backing file" {
    make_pattern base.raw 2 5
    qemu-img convert -q -f raw -O qcow2 base.raw base.qcow2
    cp base.raw src.raw
    printf 'changed' | dd of=src.raw bs=1 seek=70000 conv=notrunc status=none
    dd if=/dev/zero of=src.raw bs=64k seek=10 count=1 conv=notrunc status=none
    run -0 qimg convert -O qcow2 -B base.qcow2 -F qcow2 src.raw out.qcow2
    run -0 qemu-img compare src.raw out.qcow2
    run -0 qemu-img check --output=json out.qcow2
    [ "$(echo "$output" | jq '."allocated-clusters"')" -eq 1 ]
    run -0 qemu-img map --output=json out.qcow2
    [ "$(echo "$output" | jq '[.[] | select(.depth == 0)] | length')" -eq 2 ]
}

@test "-p shows qemu-img's progress line on a terminal, and nothing otherwise" {
    command -v script >/dev/null || skip "script is not installed"
    make_pattern src.raw 1
    run -0 script -qc "$QIMG_BIN convert -p src.raw out.raw" /dev/null
    assert_output --partial "    (100.00/100%)"
    run -0 --separate-stderr qimg convert -p src.raw out2.raw
    [ -z "$output" ] && [ -z "$stderr" ]
    run -0 script -qc "$QIMG_BIN convert -q -p src.raw out3.raw" /dev/null
    refute_output --partial "100%"
}

@test "a locked input is refused, and -U opens it anyway" {
    make_pattern src.raw 1
    # A writer holding qemu's image lock (as a running VM would).
    hold_image src.raw raw
    run -1 qimg convert src.raw out.raw
    assert_output --partial "Failed to get shared \"write\" lock"
    [ ! -e out.raw ]
    run -0 qimg convert -U src.raw out.raw
    cmp src.raw out.raw
    release_image
}

@test "inputs stay byte-identical (raw, qcow2 with a backing file, -l)" {
    sparse_source src.raw
    qemu-img create -q -f qcow2 -b src.raw -F raw top.qcow2
    qemu-io -c "write -P 0x77 1M 64k" top.qcow2 >/dev/null
    qemu-img snapshot -c snap top.qcow2
    s1=$(file_sum src.raw)
    s2=$(file_sum top.qcow2)
    run -0 qimg convert -O qcow2 top.qcow2 a.qcow2
    run -0 qimg convert -c -O qcow2 -l snap top.qcow2 b.qcow2
    run -0 qimg convert src.raw top.qcow2 c.raw
    [ "$(file_sum src.raw)" = "$s1" ]
    [ "$(file_sum top.qcow2)" = "$s2" ]
}

@test "errors read as qemu-img's and exit 1" {
    make_pattern src.raw 1
    for args in "missing.img out.img" "-O foo src.raw out.img" "-c -O raw src.raw out.img" \
                "-S 3 src.raw out.img" "-S foo src.raw out.img" "-m 0 src.raw out.img" \
                "-m 17 src.raw out.img" "-O qcow2 -o foo=bar src.raw out.img" \
                "-O qcow2 -o cluster_size=3k src.raw out.img" \
                "-O qcow2 -o compat=0.10,refcount_bits=8 src.raw out.img" \
                "-O qcow2 -o compat=0.10,compression_type=zstd src.raw out.img" \
                "-O qcow2 -o extended_l2=on,cluster_size=4k src.raw out.img" \
                "-O raw -o cluster_size=4k src.raw out.img" \
                "-B src.raw -O raw src.raw out.img" "-B src.raw -O qcow2 src.raw out.img" \
                "-n src.raw missing.img" "-n -o cluster_size=4k src.raw out.img" \
                "src.raw" "-O qcow2 src.raw /nonexistent/out.img"; do
        run -1 qimg convert $args
        assert_output "$(qemu_says convert $args)"
        [ ! -e out.img ]
    done
}

@test "a read error in the middle removes the output it created" {
    qemu-img create -q -f qcow2 bad.qcow2 4M
    qemu-io -c "write -P 0x11 0 4M" bad.qcow2 >/dev/null
    l1=$(peek_be64 bad.qcow2 40)
    l2=$(($(peek_be32 bad.qcow2 $((l1 + 4))) & ~0x1ff))
    poke bad.qcow2 $((l2 + 8 * 20)) 8000000000012200    # a misaligned data cluster
    s=$(file_sum bad.qcow2)
    run -1 qimg convert -O qcow2 bad.qcow2 out.qcow2
    assert_output --partial "error while reading block status at offset 1310720: Cluster allocation offset 0x12200 unaligned"
    [ ! -e out.qcow2 ]
    [ "$(file_sum bad.qcow2)" = "$s" ]
}

@test "running out of space fails the convert and removes the output" {
    make_pattern src.raw 2
    run -1 bash -c "trap '' XFSZ; ulimit -f 1024; '$QIMG_BIN' convert -O qcow2 src.raw out.qcow2"
    assert_output --partial "error while writing at byte"
    assert_output --partial "File too large"
    [ ! -e out.qcow2 ]
}

@test "the output may not be one of the inputs" {
    make_pattern src.raw 1
    s=$(file_sum src.raw)
    run -1 qimg convert -U src.raw src.raw
    [ "$(file_sum src.raw)" = "$s" ]
}

@test "-o help lists the creation options exactly as qemu-img convert does" {
    run -0 qimg convert -O qcow2 -o help
    assert_output "$(qemu-img convert -O qcow2 -o help)"
    assert_output --partial "encrypt.format=<str>"
    run -0 qimg convert -O qcow2 -o help src.raw out.qcow2
    assert_output "$(qemu-img convert -O qcow2 -o help src.raw out.qcow2)"
    run -0 qimg convert -O raw -o help
    assert_output "$(qemu-img convert -O raw -o help)"
}

# same_as_qemu_convert OPTS: qimg and qemu-img convert src.raw with -o OPTS;
# the output passes qemu-img check, reads back as the source, and qemu-img
# info reports the same as for qemu-img's own output (the file name aside).
same_as_qemu_convert() {
    rm -f mine.qcow2 theirs.qcow2
    run -0 qimg convert -O qcow2 -o "$1" src.raw mine.qcow2
    qemu-img convert -O qcow2 -o "$1" src.raw theirs.qcow2
    qemu-img check -q mine.qcow2
    qemu-img convert -O raw mine.qcow2 back.raw
    cmp src.raw back.raw
    diff <(qemu-img info --output=json mine.qcow2 | grep -v '"filename"') \
        <(qemu-img info --output=json theirs.qcow2 | grep -v '"filename"')
    # the layout qemu-img's allocator leaves: same clusters, same file size
    cmp <(qemu-img map --output=json mine.qcow2) <(qemu-img map --output=json theirs.qcow2)
    [ "$(stat -c %s mine.qcow2)" = "$(stat -c %s theirs.qcow2)" ]
}

@test "preallocation=metadata, falloc and full give qemu-img's image and read back identical" {
    sparse_source src.raw
    same_as_qemu_convert preallocation=metadata
    same_as_qemu_convert preallocation=falloc
    same_as_qemu_convert preallocation=full
    same_as_qemu_convert cluster_size=512,preallocation=full
}

@test "-o combinations (cluster size, refcount width, compat, extended L2, zstd) match qemu-img convert" {
    sparse_source src.raw
    same_as_qemu_convert cluster_size=4k,refcount_bits=8,lazy_refcounts=on
    same_as_qemu_convert compat=0.10,cluster_size=16k
    same_as_qemu_convert extended_l2=on,compression_type=zstd,preallocation=metadata
    same_as_qemu_convert refcount_bits=1,cluster_size=2M
}

@test "bad -o values get qemu-img convert's messages and leave no output" {
    sparse_source src.raw
    local o
    for o in foo=1 cluster_size=3 cluster_size=abc refcount_bits=3 compat=0.10,refcount_bits=8 \
        preallocation=bad lazy_refcounts=maybe compat=v4 backing_file=src.raw \
        encrypt.format=luks encrypt.format=luks,encrypt.key-secret=nope \
        encrypt.format=des encryption=on,encrypt.format=aes; do
        run -1 qimg convert -O qcow2 -o "$o" src.raw out.qcow2
        assert_output "$(qemu_says convert -O qcow2 -o "$o" src.raw out.qcow2)"
        [ ! -e out.qcow2 ]
    done
    run -1 qimg convert -c -O qcow2 -o preallocation=full src.raw out.qcow2
    assert_output "$(qemu_says convert -c -O qcow2 -o preallocation=full src.raw out.qcow2)"
    [ ! -e out.qcow2 ]
}

@test "-B with -o backing_fmt, and -o backing_file, give qemu-img's header" {
    sparse_source src.raw
    qemu-img create -q -f raw base.raw 4M
    run -0 qimg convert -O qcow2 -B base.raw -o backing_fmt=raw,cluster_size=32k src.raw a.qcow2
    qemu-img convert -O qcow2 -B base.raw -o backing_fmt=raw,cluster_size=32k src.raw b.qcow2
    diff <(qemu-img info --output=json a.qcow2 | grep -v '"filename"') \
        <(qemu-img info --output=json b.qcow2 | grep -v '"filename"')
    run -0 qimg convert -O qcow2 -o backing_file=base.raw,backing_fmt=raw src.raw c.qcow2
    qemu-img info --output=json c.qcow2 >c.json
    [ "$(json_get c.json '."backing-filename"')" = base.raw ]
    qemu-img compare src.raw c.qcow2
}

@test "-t writeback syncs the output and writes the same bytes" {
    sparse_source src.raw
    run -0 qimg convert -O qcow2 src.raw a.qcow2
    run -0 qimg convert -t writeback -O qcow2 src.raw b.qcow2
    cmp a.qcow2 b.qcow2
    run -1 qimg convert -t bogus -O qcow2 src.raw c.qcow2
    assert_output "$(qemu_says convert -t bogus -O qcow2 src.raw c.qcow2)"
}
