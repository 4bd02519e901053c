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
