#!/usr/bin/env bats
# fuzz.bats - the libFuzzer targets of tests/fuzz, built as plain replay
# programs (make units: build/fuzz/fuzz_*; under make check SANITIZE=1 the
# sanitized ones), replay every input the fuzzers ever found a bug with
# (tests/fuzz/regress/TARGET/) and the seed corpus. A crash, a sanitizer
# report, an abort (fuzz_repair: a repair that completed but left
# corruptions or leaks) or an input running past the time limit fails.
load helpers

setup() {
    common_setup
    FUZZ="$TOP/${BUILD:-build}/fuzz"
    [ -x "$FUZZ/fuzz_check" ] || skip "fuzz replay drivers not built (make units)"
}

# replay TARGET FILE...: run the target over the files, one process for all.
replay() {
    local t=$1; shift
    [ $# -gt 0 ] || return 0
    run timeout 120 "$FUZZ/$t" "$@"
    [ "$status" -eq 0 ] || { echo "$t exits $status"; echo "$output" | tail -30; return 1; }
}

# Every saved finding of TARGET, each on its own with a time limit (a few
# of them were inputs that took too long).
replay_regress() {
    local t=$1 f
    for f in "$TOP"/tests/fuzz/regress/"$t"/*; do
        [ -e "$f" ] || continue
        run timeout 20 "$FUZZ/$t" "$f"
        [ "$status" -eq 0 ] || { echo "$t $(basename "$f"): exit $status"; echo "$output" | tail -30; return 1; }
    done
}

@test "the saved findings of fuzz_read replay cleanly" {
    replay_regress fuzz_read
}

@test "the saved findings of fuzz_check replay cleanly" {
    replay_regress fuzz_check
}

@test "the saved findings of fuzz_repair replay cleanly" {
    replay_regress fuzz_repair
}

@test "the seed corpus goes through read, check and repair cleanly" {
    replay fuzz_read "$TOP"/tests/fuzz/seeds/*
    replay fuzz_check "$TOP"/tests/fuzz/seeds/*
    replay fuzz_repair "$TOP"/tests/fuzz/seeds/*
}

@test "the hostile images of make-bad-images go through check and repair cleanly" {
    "$TOP/tests/bad-images/make-bad-images" corpus >/dev/null 2>&1
    replay fuzz_check corpus/*.qcow2
    replay fuzz_repair corpus/*.qcow2
}
