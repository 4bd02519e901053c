#!/usr/bin/env bats
# cli.bats - the dispatcher: help, version, unknown commands and options.
load helpers

setup() { common_setup; }

@test "qimg --version prints the version and exits 0" {
    run -0 qimg --version
    assert_output --regexp '^qimg version [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "qimg --help lists every subcommand" {
    run -0 qimg --help
    for c in create info check repair snapshot convert amend; do
        assert_output --partial "  $c "
    done
}

@test "qimg with no arguments is an error" {
    run -1 qimg
    assert_output --partial "qimg: Not enough arguments"
}

@test "an unknown subcommand is an error with exit 1" {
    run -1 qimg frobnicate
    assert_output "qimg: Command not found: frobnicate"
}

@test "an unknown global option is an error with exit 1" {
    run -1 qimg --frob
    assert_line --index 0 "qimg: unrecognized option '--frob'"
}

@test "the binary is statically linked" {
    [ "${QIMG_SANITIZED:-0}" = 0 ] || skip "the sanitizer build is dynamic"
    run ldd "$QIMG_BIN"
    assert_output --partial "not a dynamic executable"
}

@test "options may follow the file name, as qemu-img's getopt allows" {
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-io -c 'write -P 7 0 1M' a.qcow2 >/dev/null
    run -0 qemu-img info a.qcow2 --output=json
    local want=$output
    run -0 qimg info a.qcow2 --output=json
    assert_equal "$(jq -S 'del(."actual-size")' <<<"$output")" \
                 "$(jq -S 'del(."actual-size")' <<<"$want")"
    run -0 qimg check a.qcow2 --output=json
    assert_equal "$(jq -r .format <<<"$output")" qcow2
    run -0 qimg check a.qcow2 -q
    assert_output ""
    run -0 qimg convert a.qcow2 a.raw -O raw
    qemu-img convert -O raw a.qcow2 want.raw
    cmp a.raw want.raw
}

@test "after -- every word is a file name" {
    qemu-img create -q -f qcow2 ./--output=json 1M
    run -0 qimg info -- --output=json
    assert_line --index 0 "image: --output=json"
}
