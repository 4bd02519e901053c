#!/usr/bin/env bats
# bad-images.bats - every command over the hostile-image corpus that
# tests/bad-images/make-bad-images builds: no crash (no signal, no exit code
# >= 128), no hang, bounded memory, a one-line error naming the file when
# the command gives up, read-only commands leave the bytes as they were,
# and a repair that claims success leaves an image that checks clean.
load helpers

setup_file() {
    export CORPUS="$BATS_FILE_TMPDIR/corpus"
    "$BATS_TEST_DIRNAME/bad-images/make-bad-images" "$CORPUS" >/dev/null 2>&1
}

setup() { common_setup; }

# The sweeps run through plain() (helpers.bash), outside Bats' per-command
# trace, and spawn as few processes as they can: starting a process is
# what costs most here.  p_limit caps the sweep's address space at 1 GiB
# (not under ASan, which reserves terabytes up front); every command runs
# under a time limit.
p_limit() {
    [ "${QIMG_SANITIZED:-0}" != 0 ] || ulimit -v 1048576
}

# expect_sane RC STDERR_FILE IMAGE: the promises every command keeps.
expect_sane() {
    local rc=$1 errf=$2 img=$3 line last= n=0
    if [ "$rc" -ge 124 ]; then
        echo "$img: exit $rc (crash, signal or timeout)"; cat "$errf"; return 1
    fi
    # Giving up: exactly one error line, the last one (repair may have
    # reported what it fixed before it).
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
        while IFS= read -r line; do
            [[ $line == "qimg: "* ]] && n=$((n + 1))
            last=$line
        done <"$errf"
        if [ "$n" -ne 1 ] || [[ $last != "qimg: "* ]]; then
            echo "$img: exit $rc without a one-line 'qimg: ' error:"; cat "$errf"; return 1
        fi
    fi
}

# unchanged WHAT: the corpus has the sums it had in corpus.sums.
unchanged() {
    sha256sum "$CORPUS"/*.qcow2 >now.sums
    cmp -s corpus.sums now.sums && return 0
    echo "$1 changed these files:"; diff corpus.sums now.sums; return 1
}

corpus_count() { ls "$CORPUS"/*.qcow2 | wc -l; }

@test "the corpus holds at least 40 hostile images" {
    [ "$(corpus_count)" -ge 40 ]
}

p_info() {
    local img out rc
    p_limit
    sha256sum "$CORPUS"/*.qcow2 >corpus.sums
    for img in "$CORPUS"/*.qcow2; do
        for out in human json; do
            rc=0; timeout 60 "$QIMG_BIN" info --output=$out "$img" >out 2>err || rc=$?
            expect_sane "$rc" err "$img" || return 1
            [ "$rc" -le 1 ] || { echo "$img: info exit $rc"; return 1; }
        done
    done
    unchanged info
}

p_check() {
    local img out rc
    p_limit
    sha256sum "$CORPUS"/*.qcow2 >corpus.sums
    for img in "$CORPUS"/*.qcow2; do
        for out in human json; do
            rc=0; timeout 60 "$QIMG_BIN" check --output=$out "$img" >out 2>err || rc=$?
            expect_sane "$rc" err "$img" || return 1
        done
    done
    unchanged check
}

p_convert() {
    local img rc
    p_limit
    sha256sum "$CORPUS"/*.qcow2 >corpus.sums
    for img in "$CORPUS"/*.qcow2; do
        rm -f out.raw
        rc=0; timeout 60 "$QIMG_BIN" convert -O raw "$img" out.raw >out 2>err || rc=$?
        expect_sane "$rc" err "$img" || return 1
        if [ "$rc" -ne 0 ] && [ -e out.raw ]; then
            echo "$img: convert failed but left out.raw"; return 1
        fi
    done
    unchanged convert
}

p_snapshot_list() {
    local img rc
    p_limit
    sha256sum "$CORPUS"/*.qcow2 >corpus.sums
    for img in "$CORPUS"/*.qcow2; do
        rc=0; timeout 60 "$QIMG_BIN" snapshot -l "$img" >out 2>err || rc=$?
        expect_sane "$rc" err "$img" || return 1
    done
    unchanged "snapshot -l"
}

p_repair() {
    local img rc rc2 rc3 dir=$PWD
    p_limit
    for img in "$CORPUS"/*.qcow2; do
        cp "$img" work.qcow2
        # Backing files are named relative to the image: keep them reachable.
        rc=0; (cd "$CORPUS" && timeout 60 "$QIMG_BIN" repair "$dir/work.qcow2") >out 2>err || rc=$?
        expect_sane "$rc" err "$img" || return 1
        if [ "$rc" -eq 0 ]; then
            rc2=0; timeout 60 "$QIMG_BIN" check work.qcow2 >out 2>err || rc2=$?
            [ "$rc2" -eq 0 ] || { echo "$img: repaired, but qimg check exits $rc2"; cat out err; return 1; }
            # qemu-img judges too, where it can open the image at all (a
            # backing file named relative to the corpus is not found here).
            rc3=0; qemu-img check work.qcow2 >out 2>&1 || rc3=$?
            if [ "$rc3" -ne 0 ] && ! grep -q "Could not open" out; then
                echo "$img: repaired, but qemu-img check exits $rc3"; cat out; return 1
            fi
        fi
    done
}

@test "info and info --output=json survive every hostile image and never write" {
    plain p_info
}

@test "check survives every hostile image, reports or refuses, and never writes" {
    plain p_check
}

@test "convert -O raw survives every hostile image and leaves no output on failure" {
    plain p_convert
}

@test "snapshot -l survives every hostile image and never writes" {
    plain p_snapshot_list
}

@test "a repair that reports success leaves an image that checks clean in qimg and qemu-img" {
    plain p_repair
}
