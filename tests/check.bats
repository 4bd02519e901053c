#!/usr/bin/env bats
# check.bats - `qimg check` on images qemu-img made: the same output as
# qemu-img check (human and JSON, to the character), the same exit codes
# and errors, and never a write without -r. Corrupted images are in
# repair.bats and repair-tables.bats.
load helpers
load corrupt
load crypto_helpers

setup() { common_setup; }

# same_check FILE [OPTIONS...]: stdout and exit code equal qemu-img's, in
# both output formats.
same_check() {
    local f=$1 o qrc mrc
    shift
    for o in human json; do
        qrc=0 mrc=0
        qemu-img check --output=$o "$@" "$f" >q.out 2>q.err || qrc=$?
        qimg check --output=$o "$@" "$f" >m.out 2>m.err || mrc=$?
        [ "$qrc" -eq "$mrc" ] || { echo "$o: exit $qrc vs $mrc"; cat q.err m.err; return 1; }
        diff q.out m.out || { echo "$o output differs"; return 1; }
    done
}

@test "an empty image checks as qemu-img checks it" {
    qemu-img create -q -f qcow2 img.qcow2 1G
    same_check img.qcow2
    run -0 qimg check img.qcow2
    assert_output "No errors were found on the image.
Image end offset: 262144"
}

@test "an image with data checks as qemu-img checks it" {
    mk_image img.qcow2
    same_check img.qcow2
}

@test "an image with two snapshots and divergent writes checks as qemu-img checks it" {
    qemu-img create -q -f qcow2 img.qcow2 64M
    qemu-io -c 'write -P 1 0 1M' img.qcow2 >/dev/null
    qemu-img snapshot -c one img.qcow2
    qemu-io -c 'write -P 2 512k 1M' img.qcow2 >/dev/null
    qemu-img snapshot -c two img.qcow2
    qemu-io -c 'write -P 3 0 64k' -c 'discard 1M 64k' img.qcow2 >/dev/null
    same_check img.qcow2
}

@test "compressed clusters (zlib and zstd) check as qemu-img checks them" {
    for t in zlib zstd; do
        qemu-img create -q -f qcow2 -o compression_type=$t $t.qcow2 64M
        qemu-io -c 'write -c -P 1 0 64k' -c 'write -c -P 2 128k 64k' \
            -c 'write -P 3 1M 64k' $t.qcow2 >/dev/null
        same_check $t.qcow2
    done
}

@test "extended L2 entries check as qemu-img checks them" {
    qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 64M
    qemu-io -c 'write -P 1 0 4k' -c 'write -P 2 128k 64k' -c 'write -z 1M 8k' \
        -c 'write -c -P 4 2M 64k' img.qcow2 >/dev/null
    same_check img.qcow2
}

@test "a version 2 image with a snapshot checks as qemu-img checks it" {
    qemu-img create -q -f qcow2 -o compat=0.10 img.qcow2 64M
    qemu-io -c 'write -P 1 0 1M' img.qcow2 >/dev/null
    qemu-img snapshot -c a img.qcow2
    same_check img.qcow2
}

@test "every refcount width checks as qemu-img checks it" {
    for rb in 1 2 4 8 32 64; do
        qemu-img create -q -f qcow2 -o refcount_bits=$rb r$rb.qcow2 16M
        qemu-io -c 'write -P 1 0 1M' r$rb.qcow2 >/dev/null
        same_check r$rb.qcow2
    done
}

@test "cluster sizes 512 and 2M check as qemu-img checks them" {
    for cs in 512 2M; do
        qemu-img create -q -f qcow2 -o cluster_size=$cs c$cs.qcow2 64M
        qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 8M 3M' c$cs.qcow2 >/dev/null
        same_check c$cs.qcow2
    done
}

@test "preallocated, lazy-refcount, backed and bitmap images check as qemu-img checks them" {
    qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 16M
    same_check pm.qcow2
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lz.qcow2 16M
    qemu-io -c 'write -P 1 0 1M' lz.qcow2 >/dev/null
    same_check lz.qcow2
    qemu-img create -q -f qcow2 -b lz.qcow2 -F qcow2 ov.qcow2
    qemu-io -c 'write -P 5 4k 4k' ov.qcow2 >/dev/null
    same_check ov.qcow2
    qemu-img bitmap --add lz.qcow2 b0
    qemu-img bitmap --add -g 512k lz.qcow2 b1
    same_check lz.qcow2
}

@test "a 1 TiB sparse image checks as qemu-img checks it" {
    qemu-img create -q -f qcow2 img.qcow2 1T
    qemu-io -c 'write -P 1 0 1M' -c 'write -P 1 500G 1M' img.qcow2 >/dev/null
    same_check img.qcow2
}

@test "an encrypted image checks without its key, as qemu-img with it" {
    qcreate --object secret,id=s0,data=pw \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 img.qcow2 16M
    qemu-img check --object secret,id=s0,data=pw \
        --image-opts driver=qcow2,file.filename=img.qcow2,encrypt.key-secret=s0 >q.out
    run -0 qimg check img.qcow2
    assert_output "$(cat q.out)"
}

@test "-q prints nothing and keeps the exit code" {
    mk_image img.qcow2
    run -0 qimg check -q img.qcow2
    assert_output ""
    corrupt_leak_tail img.qcow2
    run -3 --separate-stderr qimg check -q --output=json img.qcow2
    assert_output ""
}

@test "check without -r never writes, even to a dirty or corrupt image" {
    mk_image img.qcow2
    corrupt_dirty_stale img.qcow2
    corrupt_set_corrupt_bit img.qcow2
    sum=$(file_sum img.qcow2)
    run -2 qimg check img.qcow2
    run -2 qimg check --deep --output=json img.qcow2
    [ "$(file_sum img.qcow2)" = "$sum" ]
}

@test "check -r all clears the dirty bit; a clean repair writes nothing" {
    mk_image img.qcow2 lazy_refcounts=on
    sum=$(file_sum img.qcow2)
    run -0 qimg check -r all img.qcow2
    [ "$(file_sum img.qcow2)" = "$sum" ]
    hdr img.qcow2
    wr64 img.qcow2 72 $((INCOMPAT | 1))
    run -0 qimg check -r leaks img.qcow2
    (( ! ($(incompat img.qcow2) & 1) ))
}

@test "a repair prints what qemu-img's prints, in both formats" {
    mk_image img.qcow2
    corrupt_leak_tail img.qcow2
    for o in human json; do
        cp img.qcow2 q.qcow2
        cp img.qcow2 m.qcow2
        run -0 --separate-stderr qemu-img check -r all --output=$o q.qcow2
        expected=${output//q.qcow2/m.qcow2}
        run -0 --separate-stderr qimg check -r all --output=$o m.qcow2
        assert_output "$expected"
    done
}

@test "a raw image cannot be checked (exit 63), as with qemu-img" {
    head -c 1M /dev/zero >img.raw
    run -63 qemu-img check img.raw
    expected=${output/qemu-img/qimg}
    run -63 qimg check img.raw
    assert_output "$expected"
    run -63 qimg check -r all -f raw img.raw
}

@test "errors are worded as qemu-img's" {
    head -c 1M /dev/zero >img.raw
    run -1 qimg check -f qcow2 img.raw
    assert_output "qimg: Could not open 'img.raw': Image is not in qcow2 format"
    run -1 qimg check nothere.qcow2
    assert_output "qimg: Could not open 'nothere.qcow2': Could not open 'nothere.qcow2': No such file or directory"
    mk_image img.qcow2
    run -1 qimg check -r some img.qcow2
    assert_line --index 0 "qimg: Unknown option value for -r (expecting 'leaks' or 'all'): some"
    run -1 qimg check --output=xml img.qcow2
    assert_output "qimg: --output must be used with human or json as argument."
    run -1 qimg check
    assert_line --index 0 "qimg: Expecting one image file name"
    run -1 qimg check -U -r all img.qcow2
    assert_output "qimg: Could not open 'img.qcow2': force-share=on can only be used with read-only images"
    run -0 qimg check -U img.qcow2
}

@test "--deep names the guest offset of a compressed cluster that cannot be decompressed" {
    mk_compressed img.qcow2
    hdr img.qcow2
    e=$(l2_entry img.qcow2 2097152)
    pokex img.qcow2 $((e & ((1 << (62 - (CB - 8))) - 1))) 0102030405060708090a0b0c0d0e0f
    run -0 qemu-img check img.qcow2
    run -0 qimg check img.qcow2
    run -2 --separate-stderr qimg check --deep img.qcow2
    [[ "$stderr" == *"cannot be decompressed (guest offset 0x200000..0x20ffff)"* ]]
    mk_compressed ok.qcow2
    run -0 qimg check --deep ok.qcow2
}

@test "repair --help shows the synopsis, and help check works" {
    run -0 qimg repair --help
    assert_line --index 0 "usage: qimg repair [-q] [-f fmt] [--output=human|json] [--leaks-only] [--dry-run] FILE"
    run -0 qimg help check
    assert_line --index 0 "usage: qimg check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [--deep] FILE"
}

# What a terminal shows of tty output: CRLF to LF, and of each line only
# what the last carriage return left (the progress line is redrawn in place).
on_screen() { sed 's/\r*$//; s/.*\r//'; }

@test "-p draws one progress line on a terminal, which ends at 100% before the summary" {
    command -v script >/dev/null || skip "script is not installed"
    mk_snapshot img.qcow2
    qimg check img.qcow2 >plain.out
    run -0 script -qec "$QIMG_BIN check -p img.qcow2" /dev/null
    # Drawn in place: the line is rewritten with carriage returns, never a newline.
    [[ $output == *"    (0.00/100%)"*$'\r'*"    (100.00/100%)"* ]]
    on_screen <<<"$output" >screen.out
    run -0 head -n 1 screen.out
    assert_output --regexp '^    \(100\.00/100%\)( .*(in all))? *$'
    tail -n +2 screen.out | diff plain.out -
    # The percentages only go up.
    grep -oE '\(([0-9.]+)/100%\)' <<<"$output" | tr -d '(' | cut -d/ -f1 | sort -c -n
    run -0 script -qec "$QIMG_BIN check -q -p img.qcow2" /dev/null
    assert_output ""
}

@test "-p draws nothing when stderr is not a terminal, unless QIMG_PROGRESS=always" {
    mk_image img.qcow2
    qimg check img.qcow2 >plain.out
    run -0 --separate-stderr qimg check -p img.qcow2
    assert_equal "$stderr" ""
    diff plain.out <(printf '%s\n' "$output")
    run -0 --separate-stderr env QIMG_PROGRESS=always "$QIMG_BIN" check -p img.qcow2
    [[ $stderr == *"(0.00/100%)"$'\r'*"(100.00/100%)"* ]]
    diff plain.out <(printf '%s\n' "$output")
    run -0 --separate-stderr env QIMG_PROGRESS=always "$QIMG_BIN" check img.qcow2
    assert_equal "$stderr" ""
    run -0 qimg check --help
    assert_line --regexp '^  -p, --progress +show a progress bar'
}

@test "--object and --image-opts check an encrypted image as qemu-img check does" {
    mkdir fx
    luks_fixture fx/e.qcow2
    qio fx/e.qcow2 pw 'write -P 7 0 300k' >/dev/null
    same_cmd check "${SEC[@]}" --image-opts "$(io e.qcow2)"
    same_cmd check "${SEC[@]}" --output=json --image-opts "$(io e.qcow2)"
    same_cmd check "${SEC[@]}" -r all --image-opts "$(io e.qcow2)"
}

@test "a missing or wrong secret, -f or -U -r with --image-opts fail as in qemu-img check" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd check --image-opts "$o"
    same_cmd check --object secret,id=sec0,data=bad --image-opts "$o"
    same_cmd check --object secret,id=sec0 --image-opts "$o"
    same_cmd check "${SEC[@]}" -f qcow2 --image-opts "$o"
    same_cmd check "${SEC[@]}" -U -r all --image-opts "$o"
    same_cmd check --image-opts driver=qcow2,file.filename=none.qcow2
    same_cmd check --image-opts e.qcow2
    object_help check
}
