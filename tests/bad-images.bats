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

# guarded CMD...: run with a time limit and a 1 GiB address-space limit
# (not under ASan, which reserves terabytes of address space up front).
guarded() {
    local limit=1048576
    [ "${QIMG_SANITIZED:-0}" = 0 ] || limit=unlimited
    timeout 60 bash -c 'ulimit -v "$0"; exec "$@"' "$limit" "$@"
}

# expect_sane RC STDERR_FILE IMAGE: the promises every command keeps.
expect_sane() {
    local rc=$1 errf=$2 img=$3
    if [ "$rc" -ge 124 ]; then
        echo "$img: exit $rc (crash, signal or timeout)"; cat "$errf"; return 1
    fi
    # Giving up: exactly one error line, the last one (repair may have
    # reported what it fixed before it).
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
        if [ "$(grep -c "^qimg: " "$errf")" -ne 1 ] || ! tail -n 1 "$errf" | grep -q "^qimg: "; then
            echo "$img: exit $rc without a one-line 'qimg: ' error:"; cat "$errf"; return 1
        fi
    fi
}

corpus_count() { ls "$CORPUS"/*.qcow2 | wc -l; }

@test "the corpus holds at least 40 hostile images" {
    [ "$(corpus_count)" -ge 40 ]
}

@test "info and info --output=json survive every hostile image and never write" {
    for img in "$CORPUS"/*.qcow2; do
        sum=$(file_sum "$img")
        for out in human json; do
            rc=0; guarded "$QIMG_BIN" info --output=$out "$img" >out 2>err || rc=$?
            expect_sane "$rc" err "$img"
            [ "$rc" -le 1 ] || { echo "$img: info exit $rc"; return 1; }
        done
        [ "$(file_sum "$img")" = "$sum" ] || { echo "$img: info changed the file"; return 1; }
    done
}

@test "check survives every hostile image, reports or refuses, and never writes" {
    for img in "$CORPUS"/*.qcow2; do
        sum=$(file_sum "$img")
        for out in human json; do
            rc=0; guarded "$QIMG_BIN" check --output=$out "$img" >out 2>err || rc=$?
            expect_sane "$rc" err "$img"
        done
        [ "$(file_sum "$img")" = "$sum" ] || { echo "$img: check changed the file"; return 1; }
    done
}

@test "convert -O raw survives every hostile image and leaves no output on failure" {
    for img in "$CORPUS"/*.qcow2; do
        sum=$(file_sum "$img")
        rm -f out.raw
        rc=0; guarded "$QIMG_BIN" convert -O raw "$img" out.raw >out 2>err || rc=$?
        expect_sane "$rc" err "$img"
        if [ "$rc" -ne 0 ] && [ -e out.raw ]; then
            echo "$img: convert failed but left out.raw"; return 1
        fi
        [ "$(file_sum "$img")" = "$sum" ] || { echo "$img: convert changed its input"; return 1; }
    done
}

@test "snapshot -l survives every hostile image and never writes" {
    for img in "$CORPUS"/*.qcow2; do
        sum=$(file_sum "$img")
        rc=0; guarded "$QIMG_BIN" snapshot -l "$img" >out 2>err || rc=$?
        expect_sane "$rc" err "$img"
        [ "$(file_sum "$img")" = "$sum" ] || { echo "$img: snapshot -l changed the file"; return 1; }
    done
}

@test "a repair that reports success leaves an image that checks clean in qimg and qemu-img" {
    for img in "$CORPUS"/*.qcow2; do
        cp "$img" work.qcow2
        # Backing files are named relative to the image: keep them reachable.
        rc=0; (cd "$CORPUS" && guarded "$QIMG_BIN" repair "$BATS_TEST_TMPDIR/work.qcow2") >out 2>err || rc=$?
        expect_sane "$rc" err "$img"
        if [ "$rc" -eq 0 ]; then
            rc2=0; guarded "$QIMG_BIN" check work.qcow2 >out 2>err || rc2=$?
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
