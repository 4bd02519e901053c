#!/usr/bin/env bats
# man.bats - the manual pages in man/: they render without warnings, every
# subcommand has one, and each page's SYNOPSIS is the synopsis of the
# command line contract (shared/CLI.md) and of "qimg CMD --help".

source "$BATS_TEST_DIRNAME/bats-libs.bash"
bats_require_minimum_version 1.5.0

COMMANDS="create info check repair snapshot convert amend bitmap map compare rebase commit resize measure dd"

# man takes a quarter of a second a page: render each page once for the
# whole file, as plain text one paragraph a line, with its warnings.
setup_file() {
    cd "$BATS_TEST_DIRNAME/.." || return 1
    export MANPAGER=cat PAGER=cat LC_ALL=C.UTF-8
    local f
    mkdir -p "$BATS_FILE_TMPDIR/pages"
    for f in man/*.1; do
        f=${f#man/}
        MANWIDTH=1000 man --warnings -l "man/$f" >"$BATS_FILE_TMPDIR/pages/$f.txt" \
            2>"$BATS_FILE_TMPDIR/pages/$f.warn" || echo "man exits $?" >>"$BATS_FILE_TMPDIR/pages/$f.warn"
    done
}

setup() {
    cd "$BATS_TEST_DIRNAME/.."
    export MANPAGER=cat PAGER=cat LC_ALL=C.UTF-8
}

# The contract, wherever this checkout finds it: $QIMG_CLI_MD, or the
# shared/ folder that sits beside the repository (CI) or above a worktree.
cli_md() {
    local f
    for f in "${QIMG_CLI_MD:-}" ../shared/CLI.md ../../shared/CLI.md /work/shared/CLI.md; do
        [ -n "$f" ] && [ -r "$f" ] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

# Collapse runs of blanks to one space and trim the ends.
squeeze() {
    tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//'
}

# The page rendered as plain text, one paragraph a line (see setup_file).
render() {
    cat "$BATS_FILE_TMPDIR/pages/${1#man/}.txt"
}

# The text of section $2 of the rendered page $1, whitespace squeezed.
section() {
    render "$1" | awk -v s="$2" '$0 == s { f = 1; next } /^[A-Z]/ { f = 0 } f' | squeeze
}

# The synopsis of command $1 in CLI.md: its line in the first code block,
# with the indented lines that continue it.
cli_synopsis() {
    awk -v cmd="$1" '
        /^```/ { if (done) exit; inblock = !inblock; next }
        !inblock { next }
        $1 == "qimg" { if (grab) exit; grab = ($2 == cmd); if (grab) print; next }
        grab && /^[[:space:]]/ { print; next }
        grab { exit }
    ' "$2" | squeeze
}

# The synopsis in the usage line of the built binary, with "qimg CMD" put
# back in front of it.
binary_synopsis() {
    ./qimg "$1" --help 2>/dev/null | sed -n "s/^usage: qimg $1 //p" | head -n 1 |
        { read -r rest && printf 'qimg %s %s\n' "$1" "$rest"; } | squeeze
}

check_cli_synopsis() {
    local md
    md=$(cli_md) || skip "shared/CLI.md not found"
    local want got
    want=$(cli_synopsis "$1" "$md")
    [ -n "$want" ] || fail "no synopsis of '$1' in $md"
    got=$(section "man/qimg-$1.1" SYNOPSIS)
    assert_equal "$got" "$want"
}

check_binary_synopsis() {
    [ -x ./qimg ] || skip "binary not built"
    ./qimg "$1" --help >/dev/null 2>&1 || skip "qimg $1 is not built yet"
    local want got
    want=$(binary_synopsis "$1")
    [ -n "$want" ] || fail "qimg $1 --help prints no 'usage: qimg $1' line"
    got=$(section "man/qimg-$1.1" SYNOPSIS)
    assert_equal "$got" "$want"
}

@test "every manual page renders with no warning" {
    local f out
    for f in man/*.1; do
        out=$(cat "$BATS_FILE_TMPDIR/pages/${f#man/}.warn")
        [ -z "$out" ] || fail "$f: $out"
        out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
            man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null)
        [ -z "$out" ] || fail "$f (utf8, 80 columns): $out"
    done
}

@test "every subcommand has a manual page and the overview names it" {
    local cmd overview
    overview=$(render man/qimg.1)
    for cmd in $COMMANDS; do
        [ -f "man/qimg-$cmd.1" ] || fail "man/qimg-$cmd.1 is missing"
        [[ $overview == *"qimg-$cmd(1)"* ]] || fail "qimg(1) does not refer to qimg-$cmd(1)"
    done
}

@test "every subcommand of the contract is in the list of pages" {
    local md cmd
    md=$(cli_md) || skip "shared/CLI.md not found"
    for cmd in $(awk '/^```/ { n++; next } n == 1 && $1 == "qimg" { print $2 }' "$md"); do
        [[ " $COMMANDS " == *" $cmd "* ]] || fail "CLI.md has '$cmd', which has no page here"
    done
}

@test "every subcommand page has the usual sections" {
    local cmd s text
    for cmd in $COMMANDS; do
        text=$(render "man/qimg-$cmd.1")
        for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
            [[ $'\n'$text$'\n' == *$'\n'"$s"$'\n'* ]] || fail "qimg-$cmd.1 has no $s section"
        done
    done
}

@test "every option of a synopsis is described under OPTIONS" {
    local cmd opt text synopsis options
    for cmd in $COMMANDS; do
        text=$(render "man/qimg-$cmd.1")
        synopsis=$(awk '$0 == "SYNOPSIS" { f = 1; next } /^[A-Z]/ { f = 0 } f' <<<"$text" | squeeze)
        options=$(awk '/^OPTIONS$/ { f = 1; next } /^[A-Z]/ { f = 0 } f' <<<"$text")
        for opt in $(grep -oE '(^|[[ ])--?[a-z][a-z-]*' <<<"$synopsis" | tr -d '[ '); do
            [[ $options =~ (^|$'\n')\ +([^$'\n']*,\ )?$opt([\ ,=]|$'\n'|$) ]] ||
                fail "qimg-$cmd.1: $opt is in the synopsis but has no entry under OPTIONS"
        done
    done
}

@test "qimg-create(1) gives every qcow2 option with its default" {
    local text key
    text=$(section man/qimg-create.1 "FORMAT OPTIONS")
    for key in compat cluster_size refcount_bits lazy_refcounts preallocation \
        backing_file backing_fmt compression_type extended_l2 data_file \
        data_file_raw encrypt.format encrypt.key-secret encrypt.cipher-alg \
        encrypt.iter-time; do
        [[ $text == *"$key="* ]] || fail "$key is not documented"
    done
    for key in "Default: 1.1" "Default: 65536" "Default: 16" "Default: zlib"; do
        [[ $text == *"$key"* ]] || fail "'$key' is missing"
    done
}

@test "qimg(1) gives the exit codes of check and the test hook" {
    local text
    text=$(render man/qimg.1 | squeeze)
    for word in "EXIT STATUS" " 63 " " 2 Corruptions" " 3 Only leaked" \
        QIMG_DEBUG_KILL_AFTER_WRITES "force-share" "--image-opts" "--object secret"; do
        [[ $text == *"$word"* ]] || fail "qimg(1) does not mention '$word'"
    done
}

@test "the SYNOPSIS of qimg-create(1) is that of CLI.md" { check_cli_synopsis create; }
@test "the SYNOPSIS of qimg-info(1) is that of CLI.md" { check_cli_synopsis info; }
@test "the SYNOPSIS of qimg-check(1) is that of CLI.md" { check_cli_synopsis check; }
@test "the SYNOPSIS of qimg-repair(1) is that of CLI.md" { check_cli_synopsis repair; }
@test "the SYNOPSIS of qimg-snapshot(1) is that of CLI.md" { check_cli_synopsis snapshot; }
@test "the SYNOPSIS of qimg-convert(1) is that of CLI.md" { check_cli_synopsis convert; }
@test "the SYNOPSIS of qimg-amend(1) is that of CLI.md" { check_cli_synopsis amend; }

@test "the SYNOPSIS of qimg-create(1) is the usage of qimg create --help" { check_binary_synopsis create; }
@test "the SYNOPSIS of qimg-info(1) is the usage of qimg info --help" { check_binary_synopsis info; }
@test "the SYNOPSIS of qimg-check(1) is the usage of qimg check --help" { check_binary_synopsis check; }
@test "the SYNOPSIS of qimg-repair(1) is the usage of qimg repair --help" { check_binary_synopsis repair; }
@test "the SYNOPSIS of qimg-snapshot(1) is the usage of qimg snapshot --help" { check_binary_synopsis snapshot; }
@test "the SYNOPSIS of qimg-convert(1) is the usage of qimg convert --help" { check_binary_synopsis convert; }
@test "the SYNOPSIS of qimg-amend(1) is the usage of qimg amend --help" { check_binary_synopsis amend; }
@test "the SYNOPSIS of qimg-map(1) is the usage of qimg map --help" { check_binary_synopsis map; }
@test "the SYNOPSIS of qimg-compare(1) is the usage of qimg compare --help" { check_binary_synopsis compare; }
@test "the SYNOPSIS of qimg-rebase(1) is the usage of qimg rebase --help" { check_binary_synopsis rebase; }
@test "the SYNOPSIS of qimg-commit(1) is the usage of qimg commit --help" { check_binary_synopsis commit; }
@test "the SYNOPSIS of qimg-resize(1) is the usage of qimg resize --help" { check_binary_synopsis resize; }
@test "the SYNOPSIS of qimg-measure(1) is the usage of qimg measure --help" { check_binary_synopsis measure; }
@test "the SYNOPSIS of qimg-dd(1) is the usage of qimg dd --help" { check_binary_synopsis dd; }
