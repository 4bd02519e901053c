#!/usr/bin/env bats
# messages.bats - the error messages people meet most often, to the
# character: each is compared with what qemu-img 7.2 prints for the same
# command line (the program name stripped from both), and where qemu-img
# has no such message, with the text qimg is meant to print. Every message
# names the file, says what is wrong, and where there is one, what to do.
load helpers

setup() {
    common_setup
    qemu-img create -q -f qcow2 ok.qcow2 4M
    head -c 1M /dev/zero >raw.img
    echo "not an image" >text.txt
}

teardown() {
    [ -z "${HOLDER:-}" ] || kill "$HOLDER" 2>/dev/null || true
}

# stderr of one command with "PROG: " cut from the start of each line, and
# its exit code in $RC.
errtext() {
    local prog=$1
    shift
    RC=0
    TEXT=$("$@" 2>&1 >/dev/null) || RC=$?
    TEXT=$(sed "s|^$prog: ||" <<<"$TEXT")
}

# same_error ARGS...: qemu-img ARGS and qimg ARGS fail with the same exit
# code and the same message. Files either of them creates are removed
# before the other runs.
same_error() {
    local qtext qrc
    errtext qemu-img qemu-img "$@"
    qtext=$TEXT qrc=$RC
    rm -f x.qcow2 x.raw out.qcow2 out.raw
    errtext qimg "$QIMG_BIN" "$@"
    rm -f x.qcow2 x.raw out.qcow2 out.raw
    [ "$qrc" -ne 0 ] || fail "qemu-img $* did not fail"
    [ "$qrc" -eq "$RC" ] || fail "qimg $*: exit $RC, qemu-img exits $qrc"$'\n'"$TEXT"
    assert_equal "$TEXT" "$qtext"
}

# qimg_error TEXT ARGS...: qimg ARGS fails with exactly TEXT on stderr
# (after "qimg: ").
qimg_error() {
    local want=$1
    shift
    errtext qimg "$QIMG_BIN" "$@"
    [ "$RC" -ne 0 ] || fail "qimg $* did not fail"
    assert_equal "$TEXT" "$want"
}

# A writer holding qemu's lock on FILE, as a running VM does.
hold_lock() {
    qemu-io -c 'sleep 30000' "$1" 3>&- &
    HOLDER=$!
    sleep 0.5
}

@test "a missing file, a directory and a file of another format are named in the error" {
    mkdir adir
    same_error info nothere.qcow2
    same_error check nothere.qcow2
    same_error info adir
    same_error info -f qcow2 raw.img
    same_error check -f qcow2 text.txt
    same_error convert -O raw nothere.qcow2 out.raw
    same_error convert -n -O raw ok.qcow2 nothere.raw
}

@test "an unknown format is refused with qemu-img's words" {
    same_error info -f foo ok.qcow2
    same_error create -f foo x.qcow2 1M
    same_error convert -O foo ok.qcow2 out.qcow2
    same_error amend -f raw -o size=2M raw.img
}

@test "a bad or missing size says which suffixes work" {
    same_error create -f qcow2 x.qcow2 abc
    same_error create -f qcow2 x.qcow2 1Z
    same_error create -f qcow2 x.qcow2 99999999999T
    same_error create -f qcow2 x.qcow2
    same_error convert -S foo ok.qcow2 out.raw
    same_error convert -m 0 ok.qcow2 out.raw
}

@test "bad -o options name the file and the option" {
    same_error create -f qcow2 -o foo=bar x.qcow2 1M
    same_error create -f qcow2 -o cluster_size=3 x.qcow2 1M
    same_error create -f qcow2 -o compat=2 x.qcow2 1M
    same_error create -f qcow2 -o refcount_bits=3 x.qcow2 1M
    same_error create -f qcow2 -o preallocation=foo x.qcow2 1M
    same_error create -f qcow2 -o lazy_refcounts=on,compat=0.10 x.qcow2 1M
    same_error create -f qcow2 -o refcount_bits=8,compat=0.10 x.qcow2 1M
    same_error create -f qcow2 -o cluster_size=1k,extended_l2=on x.qcow2 1M
    same_error convert -O qcow2 -o foo=bar ok.qcow2 out.qcow2
    same_error convert -O qcow2 -c -o compression_type=foo ok.qcow2 out.qcow2
    same_error amend -o foo=bar ok.qcow2
    same_error amend -o cluster_size=4096 ok.qcow2
}

@test "options after the file names are read as qemu-img reads them" {
    same_error convert -O qcow2 ok.qcow2 out.qcow2 -o compression_type=foo
    same_error create -f qcow2 x.qcow2 1M -o cluster_size=3
    run -0 qimg info ok.qcow2 --output=json
}

@test "backing files: a missing one, and one without its format" {
    same_error create -f qcow2 -b nothere.qcow2 -F qcow2 x.qcow2
    same_error create -f qcow2 -b ok.qcow2 x.qcow2
    same_error convert -f raw -O qcow2 -B ok.qcow2 raw.img out.qcow2
    same_error create -f qcow2 /nonexistent/x.qcow2 1M
}

@test "check, snapshot and convert name what they could not find or do" {
    same_error check -f raw raw.img
    same_error check --output=xml ok.qcow2
    same_error info --output=xml ok.qcow2
    same_error snapshot -a nosuch ok.qcow2
    same_error snapshot -d nosuch ok.qcow2
    same_error convert -O qcow2 -l nosuch ok.qcow2 out.qcow2
    same_error convert -O qcow2 ok.qcow2
    same_error check -U -r all ok.qcow2
    same_error snapshot -U -c s1 ok.qcow2
}

@test "a locked image is refused as qemu-img refuses it, naming the image" {
    hold_lock ok.qcow2
    same_error info ok.qcow2
    same_error check ok.qcow2
    same_error check -r all ok.qcow2
    same_error snapshot -l ok.qcow2
    same_error snapshot -c s1 ok.qcow2
    same_error amend -o lazy_refcounts=on ok.qcow2
    same_error convert -O raw ok.qcow2 out.raw
    same_error convert -n -O qcow2 raw.img ok.qcow2
    same_error create -f qcow2 ok.qcow2 1M
    # repair has no qemu-img twin: it says what check -r all says.
    qimg_error "Could not open 'ok.qcow2': Failed to get \"write\" lock
Is another process using the image [ok.qcow2]?" repair ok.qcow2
}

@test "a corrupt image is refused for writing in qemu-img's words, and told to run repair" {
    qemu-img create -q -f qcow2 bad.qcow2 4M
    poke bad.qcow2 79 02      # incompatible feature bit 1: corrupt
    for args in "snapshot -c s1" "snapshot -a s1" "amend -o lazy_refcounts=on"; do
        errtext qemu-img qemu-img $args bad.qcow2
        qimg_error "$TEXT; run 'qimg repair bad.qcow2' to repair it" $args bad.qcow2
    done
    # Reading is fine, as with qemu-img; and the advice is right.
    run -0 qimg info bad.qcow2
    run -0 qimg repair -q bad.qcow2
    run -0 qimg snapshot -c s1 bad.qcow2
}

@test "metadata that cannot be opened points to repair, which fixes it" {
    qemu-img create -q -f qcow2 bad.qcow2 1M
    poke_be64 bad.qcow2 40 0x10000000      # the L1 table, past the end
    qimg_error "Could not open 'bad.qcow2': Active L1 table at offset 0x10000000 (8 bytes) lies past the end of the file; run 'qimg repair bad.qcow2' to repair it" \
        info bad.qcow2
    run -2 qimg check bad.qcow2
    run -0 qimg repair bad.qcow2
    run -0 qimg info bad.qcow2
    run -0 qemu-img check bad.qcow2
}

@test "checking a dirty image says why its refcounts look wrong, and what to run" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 4M
    # A writer that dies: the dirty bit stays, the refcounts lag behind.
    (ulimit -c 0; qemu-io -c 'write 0 1M' -c abort lazy.qcow2) >/dev/null 2>&1 || true
    run -2 --separate-stderr qemu-img check lazy.qcow2
    local want=$output
    run -2 --separate-stderr qimg check lazy.qcow2
    assert_equal "$output" "$want"
    assert_equal "${stderr##*$'\n'}" "Note: 'lazy.qcow2' is marked dirty (it was not closed cleanly, and its refcounts may lag behind): run 'qimg repair lazy.qcow2' to bring them up to date."
    run -0 qimg repair -q lazy.qcow2
    run -0 --separate-stderr qimg check lazy.qcow2
    assert_equal "$stderr" ""
}

@test "qimg's own refusals say what to do" {
    qemu-img snapshot -c s1 ok.qcow2
    qimg_error "Could not create snapshot 's1': a snapshot named 's1' already exists (id 1); add --force to use the name anyway" \
        snapshot -c s1 ok.qcow2
    qimg_error "Could not create snapshot '': a snapshot name must not be empty" snapshot -c "" ok.qcow2
    qimg_error "Could not create snapshot 's2': Operation not supported (format 'raw' has no internal snapshots)" \
        snapshot -c s2 -f raw raw.img
    qimg_error "Expecting one image file name
Try 'qimg check --help' for more information." check
    qimg_error "Expecting one image file name
Try 'qimg repair --help' for more information." repair
    qimg_error "unrecognized option '--nope'
Try 'qimg info --help' for more information." info --nope ok.qcow2
    qimg_error "Must specify options (-o)
Try 'qimg amend --help' for more information." amend ok.qcow2
}

@test "encrypted images: a missing secret, a wrong one, no key at all" {
    qimg convert --help 2>/dev/null | grep -q -- '--object' || skip "this build has no --object"
    qcreate --object secret,id=s0,data=pw \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 enc.qcow2 4M
    # info needs no key, so an undefined secret is no error (qemu-img 7.2).
    run -0 qemu-img info --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0
    run -0 qimg info --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0
    same_error convert -O raw --object secret,id=s0,data=bad \
        --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0 out.raw
    same_error convert -O raw enc.qcow2 out.raw
    same_error create -f qcow2 -o encrypt.format=luks x.qcow2 1M
    same_error create -f qcow2 -o encrypt.format=luks,encrypt.key-secret=nos x.qcow2 1M
    same_error info -f qcow2 --image-opts driver=qcow2,file.filename=ok.qcow2
    same_error info --image-opts driver=qcow2,file.filename=missing.qcow2
    same_error check --image-opts driver=qcow2,file.filename=missing.qcow2
}
