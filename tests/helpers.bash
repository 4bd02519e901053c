# helpers.bash - shared by every .bats file: paths, a temp directory per
# test, byte poking for hand-made corruption, and JSON field extraction.
bats_require_minimum_version 1.5.0
source "$BATS_TEST_DIRNAME/bats-libs.bash"

TOP="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
QIMG_BIN="${QIMG_BIN:-$TOP/qimg}"

# qimg runs through $QIMG_WRAPPER when set (for example "valgrind -q").
qimg() {
    ${QIMG_WRAPPER:-} "$QIMG_BIN" "$@"
}

common_setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
}

# poke FILE OFFSET HEXBYTES: overwrite bytes at OFFSET (decimal or 0x..).
poke() {
    printf '%s' "$3" | xxd -r -p | dd of="$1" bs=1 seek="$(($2))" conv=notrunc status=none
}
poke_be16() { poke "$1" "$2" "$(printf '%04x' "$(($3))")"; }
poke_be32() { poke "$1" "$2" "$(printf '%08x' "$(($3))")"; }
poke_be64() { poke "$1" "$2" "$(printf '%016x' "$(($3))")"; }

# peek_be64 FILE OFFSET / peek_be32 FILE OFFSET: print the value in decimal.
peek_be64() { printf '%d\n' "0x$(xxd -p -s "$(($2))" -l 8 "$1")"; }
peek_be32() { printf '%d\n' "0x$(xxd -p -s "$(($2))" -l 4 "$1")"; }
peek_be16() { printf '%d\n' "0x$(xxd -p -s "$(($2))" -l 2 "$1")"; }

# json_get JSONFILE JQ-EXPR
json_get() { jq -r "$2" "$1"; }

# A file of N MiB of non-repeating data (deterministic per seed).
make_pattern() {
    local file=$1 mib=$2 seed=${3:-1}
    openssl enc -aes-128-ctr -pass pass:"qimg$seed" -nosalt -pbkdf2 \
        </dev/zero 2>/dev/null | head -c "$((mib * 1048576))" >"$file"
}

# sha of a file, for "read-only commands never write" checks.
file_sum() { sha256sum "$1" | cut -d' ' -f1; }

# hold_image FILE [FMT]: keep FILE open for writing in qemu-io, as a running
# VM does, until release_image. qemu-io's sleep counts milliseconds: two
# minutes outlast the slowest (sanitized) test; waits until qemu's byte
# locks on the file show in /proc/locks.
hold_image() {
    qemu-io ${2:+-f "$2"} -c 'sleep 120000' "$1" 3>&- >/dev/null 2>&1 &
    HOLD_PID=$!
    local ino
    ino=$(stat -c %i "$1")
    for _ in $(seq 100); do
        grep -q "OFDLCK.*:$ino " /proc/locks && return 0
        sleep 0.1
    done
    echo "qemu-io did not take the lock on $1"
    return 1
}
release_image() {
    if [ -n "${HOLD_PID:-}" ]; then
        kill "$HOLD_PID" 2>/dev/null || true
        wait "$HOLD_PID" 2>/dev/null || true
    fi
    HOLD_PID=
}

# qemu-img times its LUKS key derivation with getrusage() and, on a busy
# machine, now and then gives up with "Unable to get accurate CPU usage".
# That is qemu-img's flake, not a finding: every qemu-img call in the tests
# goes through this function, which tries such a call again.  Only calls
# that may derive a key (they name a secret or encryption) are retried;
# their output is held back until the call is final (stdout, then stderr),
# so a failed try leaves nothing behind.  Other calls run as they are.
qemu-img() {
    local i rc out err
    [[ "$*" == *secret* || "$*" == *encrypt* ]] || { command qemu-img "$@"; return; }
    out=$(mktemp "${BATS_TEST_TMPDIR:-/tmp}/qemu-img.out.XXXXXX")
    err=$(mktemp "${BATS_TEST_TMPDIR:-/tmp}/qemu-img.err.XXXXXX")
    for i in 1 2 3 4 5 6; do
        command qemu-img "$@" >"$out" 2>"$err" && rc=0 || rc=$?
        [ "$rc" -ne 0 ] && grep -q 'accurate CPU usage' "$err" || break
    done
    cat "$out"
    cat "$err" >&2
    rm -f "$out" "$err"
    return "$rc"
}

# plain FUNC ARGS...: run FUNC ARGS in a plain bash that knows every
# function defined so far.  Bats traces each command a test runs itself,
# which makes long loops many times slower; run them through plain().
# Only exported variables (and QIMG_BIN) reach FUNC.
plain() {
    local defs="$BATS_TEST_TMPDIR/.plain-functions.sh"
    declare -f >"$defs"
    QIMG_BIN=$QIMG_BIN /bin/bash -c '. "$0" && "$@"' "$defs" "$@"
}

# qcreate ARGS...: qemu-img create -q -f qcow2 ARGS.
qcreate() {
    qemu-img create -q -f qcow2 "$@"
}
