#!/usr/bin/env bats
# bad-header.bats - `qimg info` on damaged and hostile headers: it refuses
# with one line, "qimg: Could not open 'FILE': why", never crashes, and
# words the reason as qemu-img does wherever qemu-img refuses the same file.
load helpers

setup() {
    common_setup
    qemu-img create -q -f qcow2 t.qcow2 1M
}

# refused [--same] ARGS...: qimg info ARGS fails with one "Could not open"
# line and a status below 128; with --same, qemu-img fails with the same
# words. (Without --same, qemu-img may accept the file: qimg is stricter.)
refused() {
    local same=false file q
    if [ "$1" = --same ]; then
        same=true
        shift
    fi
    file=${*: -1}
    run --separate-stderr qimg info "$@"
    if [ "$status" -eq 0 ] || [ "$status" -ge 128 ]; then
        echo "qimg info $* exited with $status" >&2
        return 1
    fi
    [ -z "$output" ] || { echo "unexpected stdout: $output" >&2; return 1; }
    [ "${#stderr_lines[@]}" -eq 1 ] || { echo "stderr: $stderr" >&2; return 1; }
    [[ "$stderr" == "qimg: Could not open '$file': "* ]] || {
        echo "stderr: $stderr" >&2
        return 1
    }
    if $same; then
        q=$(qemu-img info "$@" 2>&1 >/dev/null) && { echo "qemu-img accepts $*" >&2; return 1; }
        [ "${q#qemu-img: }" = "${stderr#qimg: }" ] || {
            echo "qemu-img: $q" >&2
            echo "qimg:     $stderr" >&2
            return 1
        }
    fi
}

@test "cut and empty files are refused" {
    truncate -s 50 t.qcow2
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    truncate -s 100 t.qcow2
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    truncate -s 4096 t.qcow2
    refused t.qcow2
    : >e.qcow2
    refused --same -f qcow2 e.qcow2
}

@test "a bad magic, version or cluster size is refused in qemu-img's words" {
    echo hello >m.qcow2
    refused --same -f qcow2 m.qcow2
    poke_be32 t.qcow2 4 1
    refused --same -f qcow2 t.qcow2
    poke_be32 t.qcow2 4 4
    refused --same t.qcow2
    poke_be32 t.qcow2 4 3
    poke_be32 t.qcow2 20 8
    refused --same t.qcow2
    poke_be32 t.qcow2 20 22
    refused --same t.qcow2
}

@test "giant or misplaced tables are refused" {
    poke_be32 t.qcow2 36 0x10000000
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 36 0x400000
    refused t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 56 0x10000000
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 56 200
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be64 t.qcow2 40 0x100000000
    refused t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be64 t.qcow2 40 0x30001
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be64 t.qcow2 48 0x100000000
    refused t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be64 t.qcow2 48 0x10001
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 60 1
    poke_be64 t.qcow2 64 0x10001
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 60 1
    poke_be64 t.qcow2 64 0x100000000
    refused t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be64 t.qcow2 24 0x4000000000000000
    refused --same t.qcow2
}

@test "unknown incompatible features are named as qemu-img names them" {
    poke t.qcow2 72 0000000000000020
    refused --same t.qcow2
    assert_equal "$stderr" "qimg: Could not open 't.qcow2': Unsupported qcow2 feature(s): Unknown incompatible feature: 20"
    poke t.qcow2 72 8000000000000120
    refused --same t.qcow2
    # with 4 KiB clusters there is no feature table to name bits from
    qemu-img create -q -f qcow2 -o cluster_size=4k s.qcow2 1M
    poke s.qcow2 72 0000000000000040
    refused --same s.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 32 5
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke_be32 t.qcow2 96 7
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke t.qcow2 104 05
    refused --same t.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    poke t.qcow2 104 01
    refused --same t.qcow2
}

@test "lying header lengths and backing file names are refused" {
    poke_be32 t.qcow2 100 50
    refused --same t.qcow2
    poke_be32 t.qcow2 100 0x20000
    refused --same t.qcow2
    qemu-img create -q -f qcow2 -b /nonexistent -F raw -u b.qcow2 1M
    poke_be64 b.qcow2 8 0x20000
    refused --same b.qcow2
    qemu-img create -q -f qcow2 -b /nonexistent -F raw -u b.qcow2 1M
    poke_be32 b.qcow2 16 2000
    refused --same b.qcow2
    qemu-img create -q -f qcow2 -b /nonexistent -F raw -u b.qcow2 1M
    poke_be32 b.qcow2 16 65000
    refused --same b.qcow2
}

@test "directories and missing files are refused in qemu-img's words" {
    mkdir dir.qcow2
    refused --same dir.qcow2
    refused --same missing.qcow2
}

@test "random damage to the header cluster never crashes info" {
    for seed in $(seq 1 20); do
        qemu-img create -q -f qcow2 f.qcow2 1M
        # four random bytes somewhere in the first 512 bytes
        for k in 1 2 3 4; do
            off=$(((seed * 7919 + k * 104729) % 512))
            poke f.qcow2 "$off" "$(printf '%02x' $(((seed * 31 + k * 17) % 256)))"
        done
        run qimg info f.qcow2
        [ "$status" -lt 128 ] || { echo "seed $seed: status $status" >&2; return 1; }
        run qimg info --output=json f.qcow2
        [ "$status" -lt 128 ]
    done
}
