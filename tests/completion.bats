#!/usr/bin/env bats
# completion.bats - the shell completions in completions/: the bash
# function _qimg is called as bash calls it (COMP_WORDS, COMP_CWORD,
# COMP_LINE, COMP_POINT) and its COMPREPLY checked; options and snapshot
# names come from fake qimg binaries written here.  The zsh completion is
# run with the completion builtins replaced by functions that print.

source "$BATS_TEST_DIRNAME/bats-libs.bash"

setup() {
    cd "$BATS_TEST_DIRNAME/.."
    source completions/qimg.bash
    FAKE=$BATS_TEST_TMPDIR/fakeqimg
}

# Split a piece of command line as bash does for completion: at blanks,
# and around runs of the word-break characters '=' and ':'.  Sets $words.
split_like_bash() {
    local w re='^([^=:]*)([=:]+)(.*)$'
    local -a blank_split=()
    words=()
    read -ra blank_split <<<"$1"
    for w in "${blank_split[@]}"; do
        while [[ $w =~ $re ]]; do
            [[ -n ${BASH_REMATCH[1]} ]] && words+=("${BASH_REMATCH[1]}")
            words+=("${BASH_REMATCH[2]}")
            w=${BASH_REMATCH[3]}
        done
        [[ -z $w ]] || words+=("$w")
    done
}

# complete BEFORE [AFTER]: call _qimg as bash does with the cursor after
# BEFORE (AFTER, if given, is the rest of the line and starts with a blank).
# Leaves the replies in $reply, sorted, one a line.
complete_line() {
    local before=$1 after=${2-}
    local -a left right
    COMP_WORDBREAKS=$' \t\n"\'><=;|&(:'
    COMP_LINE=$before$after
    COMP_POINT=${#before}
    split_like_bash "$before"
    left=("${words[@]}")
    split_like_bash "$after"
    right=("${words[@]}")
    if [[ -n $before && $before != *[[:blank:]] ]]; then
        COMP_CWORD=$((${#left[@]} - 1)) # at the end of a word
    elif [[ -z $after ]]; then
        left+=("") # after a blank at the end of the line: an empty word
        COMP_CWORD=$((${#left[@]} - 1))
    else
        COMP_CWORD=${#left[@]} # in blanks: bash points at the next word
    fi
    COMP_WORDS=("${left[@]}" "${right[@]}")
    COMPREPLY=()
    _qimg
    reply=$(printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort)
}

# assert_reply WORD...: the replies are exactly these words.
assert_reply() {
    assert_equal "$reply" "$(printf '%s\n' "$@" | LC_ALL=C sort)"
}

# assert_offers WORD...: the replies include these words.
assert_offers() {
    local w
    for w; do
        grep -qxF -- "$w" <<<"$reply" || fail "'$w' is not offered; the replies are: ${reply//$'\n'/ }"
    done
}

# refute_offers WORD...: none of these words is offered.
refute_offers() {
    local w
    for w; do
        ! grep -qxF -- "$w" <<<"$reply" || fail "'$w' is offered; the replies are: ${reply//$'\n'/ }"
    done
}

# A fake qimg whose "create --help" has the format the real one prints.
# "--backing-chain" is not an option of create: it shows that the words
# come from the binary and not from a list in the completion.
make_fake_help() {
    cat >"$FAKE" <<'EOF'
#!/bin/sh
[ "$1 $2" = "create --help" ] || exit 1
cat <<'HELP'
usage: qimg create [-q] [-f fmt] [-b backing [-F backing_fmt]] [-u] [-o options] FILE [SIZE]

create a new disk image

Options:
  -q, --quiet                    quiet mode: print no progress or messages
  -f, --format=fmt               image format (qcow2 or raw)
      --output=ofmt              output format (human or json)
      --backing-chain            made up for this test
  -S sparse_size                 minimum run of zeros to leave sparse
  -h, --help                     show this help and exit
HELP
EOF
    chmod +x "$FAKE"
}

# A fake qimg that lists the snapshots of disk.qcow2 as JSON (as
# "qimg snapshot -l --output=json" does) and logs how it was called.
make_fake_json_snapshots() {
    cat >"$FAKE" <<EOF
#!/bin/sh
echo "\$*" >>"$BATS_TEST_TMPDIR/calls"
[ "\$1 \$2 \$3" = "snapshot -l --output=json" ] || exit 1
[ "\$4" = disk.qcow2 ] || { echo "qimg: Could not open '\$4'" >&2; exit 1; }
cat <<'JSON'
[
    {
        "id": "1",
        "name": "s1",
        "vm-state-size": 0,
        "date-sec": 1700000000,
        "date-nsec": 0,
        "vm-clock-sec": 0,
        "vm-clock-nsec": 0,
        "icount": 0
    },
    {
        "id": "2",
        "name": "before upgrade",
        "vm-state-size": 0,
        "date-sec": 1700000100,
        "date-nsec": 0,
        "vm-clock-sec": 0,
        "vm-clock-nsec": 0,
        "icount": 0
    }
]
JSON
EOF
    chmod +x "$FAKE"
}

# A fake qimg without JSON output: only the table of "qimg snapshot -l".
make_fake_table_snapshots() {
    cat >"$FAKE" <<'EOF'
#!/bin/sh
case "$*" in
"snapshot -l disk.qcow2") ;;
*) echo "qimg: unrecognized option" >&2; exit 1 ;;
esac
cat <<'TABLE'
Snapshot list:
ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT
1         base                  0 B 2023-11-14 22:13:20 00:00:00.000          0
2         patched               0 B 2023-11-14 22:15:00 00:00:00.000          0
TABLE
EOF
    chmod +x "$FAKE"
}

@test "the subcommands are completed at the first position" {
    complete_line "qimg cr"
    assert_reply create
    complete_line "qimg "
    assert_offers amend bitmap check convert create info repair snapshot help
    assert_offers resize measure dd map compare rebase commit
    complete_line "qimg -"
    assert_reply --help --version
}

@test "the commands that qimg --help lists are completed too" {
    cat >"$FAKE" <<'EOF'
#!/bin/sh
[ "$1" = --help ] || exit 1
printf 'usage: qimg [--help | --version] COMMAND [command options]\n\n'
printf 'Commands:\n  create     create a new disk image\n  resize     change the size\n\n'
printf "'qimg help COMMAND' shows a command's options.\n"
EOF
    chmod +x "$FAKE"
    complete_line "$FAKE re"
    assert_offers repair resize
}

@test "qimg help completes a subcommand" {
    complete_line "qimg help sn"
    assert_reply snapshot
}

@test "-o completes the qcow2 keys that start with the typed text" {
    complete_line "qimg create -o comp"
    assert_reply compat= compression_type=
    complete_line "qimg create -f qcow2 -o encrypt."
    assert_reply encrypt.format= encrypt.key-secret= encrypt.cipher-alg= encrypt.cipher-mode= \
        encrypt.ivgen-alg= encrypt.ivgen-hash-alg= encrypt.hash-alg= encrypt.iter-time=
    complete_line "qimg convert -O qcow2 -o data"
    assert_reply data_file= data_file_raw=
}

@test "-o completes the values of compat" {
    complete_line "qimg create -o compat="
    assert_reply 0.10 1.1 v2 v3
}

@test "-o completes 64 among the refcount widths" {
    complete_line "qimg create -o refcount_bits="
    assert_reply 1 2 4 8 16 32 64
    complete_line "qimg create -o refcount_bits=6"
    assert_reply 64
}

@test "-o completes the values of the other keys" {
    complete_line "qimg create -o lazy_refcounts="
    assert_reply on off
    complete_line "qimg create -o preallocation="
    assert_reply off metadata falloc full
    complete_line "qimg create -o compression_type=z"
    assert_reply zlib zstd
    complete_line "qimg create -o extended_l2="
    assert_reply on off
    complete_line "qimg create -o encrypt.format="
    assert_reply luks aes
    complete_line "qimg create -o data_file_raw=o"
    assert_reply on off
}

@test "-o completes the next key after a comma" {
    complete_line "qimg create -o compat=1.1,lazy"
    assert_reply 1.1,lazy_refcounts=
    complete_line "qimg create -o compat=1.1,"
    assert_offers 1.1,cluster_size= 1.1,refcount_bits= 1.1,help
    # a key already given is not offered again
    refute_offers 1.1,compat=
}

@test "-o completes the value of a key after a comma" {
    complete_line "qimg create -o compat=1.1,lazy_refcounts="
    assert_reply on off
}

@test "-o completes whole words when '=' does not split words" {
    # Some setups take '=' out of COMP_WORDBREAKS; then bash neither
    # splits there nor expects the reply to be cut.
    COMP_WORDBREAKS=$' \t\n"\'><;|&('
    COMP_LINE="qimg create -o compat=1.1,lazy"
    COMP_POINT=${#COMP_LINE}
    COMP_WORDS=(qimg create -o compat=1.1,lazy)
    COMP_CWORD=3
    COMPREPLY=()
    _qimg
    assert_equal "${COMPREPLY[*]}" "compat=1.1,lazy_refcounts="
}

@test "-o completes only the raw options for a raw image" {
    complete_line "qimg create -f raw -o "
    assert_reply preallocation= help
    complete_line "qimg create -f raw -o preallocation="
    assert_reply off falloc full
}

@test "resize completes the preallocation modes" {
    complete_line "qimg resize --preallocation="
    assert_reply off metadata falloc full
    complete_line "qimg resize --preallocation f"
    assert_reply falloc full
}

@test "measure completes the output format's -o keys and snapshot names" {
    complete_line "qimg measure -O raw -o "
    assert_reply preallocation= help
    complete_line "qimg measure -O qcow2 -o compat=1.1,ext"
    assert_reply 1.1,extended_l2=
    make_fake_json_snapshots
    complete_line "$FAKE measure disk.qcow2 -l "
    assert_offers s1
}

@test "dd completes its operands, and file names after if= and of=" {
    complete_line "qimg dd "
    assert_reply if= of= bs= count= skip=
    complete_line "qimg dd c"
    assert_reply count=
    touch "$BATS_TEST_TMPDIR/in.raw"
    complete_line "qimg dd if=$BATS_TEST_TMPDIR/in"
    assert_reply "$BATS_TEST_TMPDIR/in.raw"
}

@test "amend -o completes size and the options that can change" {
    complete_line "qimg amend -o "
    assert_reply compat= lazy_refcounts= refcount_bits= size= help
}

@test "-o backing_file= completes file names" {
    cd "$BATS_TEST_TMPDIR"
    touch base.qcow2 other.img
    complete_line "qimg create -o backing_file=ba"
    assert_reply base.qcow2
}

@test "-o encrypt.key-secret= completes the ids of the secrets on the line" {
    complete_line "qimg create --object secret,id=sec0,file=pw -o encrypt.format=luks,encrypt.key-secret="
    assert_reply sec0
}

@test "-f, -F and -O complete the formats" {
    complete_line "qimg info -f "
    assert_reply qcow2 raw
    complete_line "qimg create -f qcow2 -b base -F q"
    assert_reply qcow2
    complete_line "qimg convert -O "
    assert_reply qcow2 raw
    complete_line "qimg info --format="
    assert_reply qcow2 raw
}

@test "--output completes human and json" {
    complete_line "qimg info --output="
    assert_reply human json
    complete_line "qimg check --output=j"
    assert_reply json
    complete_line "qimg info --output "
    assert_reply human json
}

@test "check -r completes leaks and all" {
    complete_line "qimg check -r "
    assert_reply leaks all
    complete_line "qimg check -r l"
    assert_reply leaks
}

@test "the options of a subcommand come from its --help" {
    make_fake_help
    complete_line "$FAKE create -"
    assert_offers -q --quiet -f --format= --output= --backing-chain -S -h --help
    # nothing that the help does not list
    refute_offers --deep -r
    complete_line "$FAKE create --b"
    assert_reply --backing-chain
}

@test "an option value is not taken for an image name" {
    make_fake_help
    # -S takes a value in the fake's help, so "4k" is not a file name
    COMP_WORDS=("$FAKE" create -S 4k -q disk.qcow2 "")
    COMP_CWORD=6
    COMP_LINE="${COMP_WORDS[*]}"
    COMP_POINT=${#COMP_LINE}
    _qimg_glue_words
    qimg_bin=$FAKE # read by _qimg_positionals
    run _qimg_positionals create
    assert_output disk.qcow2
}

@test "snapshot -a completes the names of the image on the line" {
    make_fake_json_snapshots
    complete_line "$FAKE snapshot -a " " disk.qcow2"
    assert_reply s1 'before\ upgrade'
    run cat "$BATS_TEST_TMPDIR/calls"
    assert_line "snapshot -l --output=json disk.qcow2"
}

@test "snapshot -d completes a name from its first letters" {
    make_fake_json_snapshots
    complete_line "$FAKE snapshot -q -d s" " disk.qcow2"
    assert_reply s1
    complete_line "$FAKE snapshot disk.qcow2 -d b"
    assert_reply 'before\ upgrade'
}

@test "snapshot --rename completes the old name but not the new one" {
    make_fake_json_snapshots
    complete_line "$FAKE snapshot --rename " " disk.qcow2"
    assert_reply s1 'before\ upgrade'
    complete_line "$FAKE snapshot --rename s1 " " disk.qcow2"
    assert_reply
}

@test "snapshot names come from the table when there is no JSON" {
    make_fake_table_snapshots
    complete_line "$FAKE snapshot -a " " disk.qcow2"
    assert_reply base patched
}

@test "convert -l completes the snapshots of the input" {
    make_fake_json_snapshots
    complete_line "$FAKE convert -O qcow2 -l " " disk.qcow2 out.qcow2"
    assert_reply s1 'before\ upgrade'
}

@test "snapshot -c offers nothing, since the name is new" {
    make_fake_json_snapshots
    complete_line "$FAKE snapshot -c " " disk.qcow2"
    assert_reply
}

@test "file names are completed for the images" {
    cd "$BATS_TEST_TMPDIR"
    touch disk.qcow2 disk.img notes.txt
    complete_line "qimg info di"
    assert_reply disk.img disk.qcow2
    complete_line "qimg convert -O raw disk.qcow2 no"
    assert_reply notes.txt
}

@test "the built binary's options are completed" {
    [ -x ./qimg ] || skip "binary not built"
    ./qimg create --help >/dev/null 2>&1 || skip "qimg create is not built yet"
    complete_line "./qimg create -"
    assert_offers -q -f -o --help
    complete_line "./qimg check -"
    assert_offers -p --progress -r --deep
    complete_line "./qimg repair --p"
    assert_reply --progress
}

@test "the zsh completion parses" {
    command -v zsh >/dev/null || skip "zsh is not installed"
    run zsh -n completions/_qimg
    assert_success
    assert_output ""
}

# zsh_complete WORD...: run _qimg of completions/_qimg in zsh for the
# command line WORD... (the last word is the one being completed), with
# the completion builtins replaced by functions that print what they get.
zsh_complete() {
    cat >"$BATS_TEST_TMPDIR/harness.zsh" <<'EOF'
compadd() {
  local -a out
  while (( $# )); do
    if [[ $1 == -a ]]; then out+=("${(@P)2}"); shift 2; else out+=("$1"); shift; fi
  done
  print -r -- "compadd $IPREFIX| $out"
}
_describe() { print -r -- "_describe $*"; print -rl -- "${(@P)4}" "${(@P)6}" }
_files() { print -r -- "_files" }
_message() { print -r -- "_message $*" }
compdef() { : }
# compset -P PATTERN: move the longest prefix matching PATTERN to IPREFIX
compset() {
  local m=${(M)PREFIX##$~2}
  [[ $1 == -P && -n $m ]] || return 1
  IPREFIX+=$m PREFIX=${PREFIX#$m}
}
source completions/_qimg
words=("$@") CURRENT=$# PREFIX=$argv[-1] IPREFIX=''
_qimg
EOF
    run zsh -f "$BATS_TEST_TMPDIR/harness.zsh" "$@"
}

@test "the zsh completion completes values, -o lists and options" {
    command -v zsh >/dev/null || skip "zsh is not installed"
    zsh_complete qimg check -r ''
    assert_output "compadd | -- leaks all"
    zsh_complete qimg create -o compat=1.1,lazy
    assert_line --partial "compadd compat=1.1,| -S = -q -- cluster_size refcount_bits lazy_refcounts"
    zsh_complete qimg create -o compat=1.1,lazy_refcounts=
    assert_output "compadd compat=1.1,lazy_refcounts=| -- on off"
    zsh_complete qimg amend -o ''
    assert_line "compadd | -S = -q -- compat refcount_bits lazy_refcounts size"
    zsh_complete qimg info --output=j
    assert_output "compadd --output=| -- human json"
    zsh_complete qimg resize --preallocation=
    assert_output "compadd --preallocation=| -- off metadata falloc full"
    zsh_complete qimg dd ''
    assert_output "compadd | -S  -- if= of= bs= count= skip="
    make_fake_help
    zsh_complete "$FAKE" create --
    assert_line "--backing-chain:made up for this test"
    assert_line "--format=:image format (qcow2 or raw)"
}

@test "the zsh completion completes snapshot names from the image" {
    command -v zsh >/dev/null || skip "zsh is not installed"
    make_fake_json_snapshots
    # (the harness completes the last word, so the image comes first)
    zsh_complete "$FAKE" snapshot disk.qcow2 -d ''
    assert_output "compadd | -X snapshot s1 before upgrade"
    run cat "$BATS_TEST_TMPDIR/calls"
    assert_line "snapshot -l --output=json disk.qcow2"
}

@test "the bash completion parses and registers _qimg for qimg" {
    run bash -n completions/qimg.bash
    assert_success
    run complete -p qimg
    assert_output "complete -F _qimg qimg"
}

@test "bitmap completes its options and the bitmaps of the image" {
    [ -x ./qimg ] || skip "binary not built"
    command -v qemu-img >/dev/null || skip "qemu-img is not installed"
    qemu-img create -q -f qcow2 "$BATS_TEST_TMPDIR/d.qcow2" 1M
    qemu-img bitmap --add "$BATS_TEST_TMPDIR/d.qcow2" backup0
    qemu-img bitmap --add "$BATS_TEST_TMPDIR/d.qcow2" 'week 1'
    complete_line "qimg bi"
    assert_reply bitmap
    complete_line "./qimg bitmap --"
    assert_offers --add --remove --clear --enable --disable --merge= --list --granularity=
    complete_line "./qimg bitmap --remove $BATS_TEST_TMPDIR/d.qcow2 "
    assert_reply backup0 'week\ 1'
    complete_line "./qimg bitmap --merge b" " $BATS_TEST_TMPDIR/d.qcow2 new"
    assert_reply backup0
    complete_line "./qimg bitmap --add -g "
    assert_reply
}

@test "the zsh completion completes the bitmaps of the image" {
    command -v zsh >/dev/null || skip "zsh is not installed"
    [ -x ./qimg ] || skip "binary not built"
    qemu-img create -q -f qcow2 "$BATS_TEST_TMPDIR/d.qcow2" 1M
    qemu-img bitmap --add "$BATS_TEST_TMPDIR/d.qcow2" backup0
    zsh_complete ./qimg bitmap --remove "$BATS_TEST_TMPDIR/d.qcow2" ''
    assert_output "compadd | -X bitmap backup0"
    zsh_complete ./qimg bitmap "$BATS_TEST_TMPDIR/d.qcow2" --merge ''
    assert_output "compadd | -X bitmap backup0"
}

@test "map is completed, and its offsets take a number, not a file" {
    complete_line "qimg ma"
    assert_reply map
    touch "$BATS_TEST_TMPDIR/disk.qcow2"
    cd "$BATS_TEST_TMPDIR"
    complete_line "qimg map --start-offset "
    assert_reply ""
    complete_line "qimg map --max-length="
    assert_reply ""
    complete_line "qimg map -f "
    assert_reply qcow2 raw
}

@test "compare is completed, and both its -f and -F take a format" {
    complete_line "qimg comp"
    assert_reply compare
    complete_line "qimg compare -F "
    assert_reply qcow2 raw
    complete_line "qimg compare -f r"
    assert_reply raw
}

@test "rebase is completed, -F takes a format and -b a file" {
    complete_line "qimg reb"
    assert_reply rebase
    complete_line "qimg rebase -b x.qcow2 -F "
    assert_reply qcow2 raw
    cd "$BATS_TEST_TMPDIR"
    touch base1.qcow2 base2.qcow2
    complete_line "qimg rebase -b base"
    assert_reply base1.qcow2 base2.qcow2
}

@test "commit is completed, and its -b takes a file" {
    complete_line "qimg commi"
    assert_reply commit
    cd "$BATS_TEST_TMPDIR"
    touch base1.qcow2 other
    complete_line "qimg commit -b base"
    assert_reply base1.qcow2
}

@test "check, snapshot, amend, map, compare, rebase, commit and bitmap offer --object and --image-opts" {
    [ -x ./qimg ] || skip "binary not built"
    local c
    for c in check snapshot amend map compare rebase commit bitmap; do
        complete_line "./qimg $c --"
        assert_offers --object= --image-opts
    done
    complete_line "./qimg rebase --object "
    assert_reply secret,id=
}

@test "after --image-opts the image is an option string: keys, values, files, secret ids" {
    [ -x ./qimg ] || skip "binary not built"
    cd "$BATS_TEST_TMPDIR"
    touch disk.qcow2 other.qcow2
    complete_line "$TOP/qimg check --image-opts "
    assert_reply driver= file.filename= encrypt.key-secret= encrypt.format=
    complete_line "$TOP/qimg map --image-opts driver=q"
    assert_reply qcow2
    complete_line "$TOP/qimg compare --image-opts driver=qcow2,file.filename=d"
    assert_reply disk.qcow2
    complete_line "$TOP/qimg commit --object secret,id=k0,data=x --image-opts driver=qcow2,file.filename=disk.qcow2,encrypt.key-secret="
    assert_reply k0
    # -b of rebase stays a file name
    complete_line "$TOP/qimg rebase --image-opts driver=qcow2,file.filename=disk.qcow2 -b o"
    assert_reply other.qcow2
}

@test "snapshot names come from the file of an --image-opts string" {
    make_fake_json_snapshots
    complete_line "$FAKE snapshot --image-opts -a " " driver=qcow2,file.filename=disk.qcow2,encrypt.key-secret=s"
    assert_reply s1 'before\ upgrade'
    run cat "$BATS_TEST_TMPDIR/calls"
    assert_line "snapshot -l --output=json disk.qcow2"
}

@test "the zsh completion completes --image-opts strings and their bitmaps" {
    command -v zsh >/dev/null || skip "zsh is not installed"
    [ -x ./qimg ] || skip "binary not built"
    zsh_complete qimg check --image-opts ''
    assert_output "compadd | -S = -q -- driver file.filename encrypt.key-secret encrypt.format"
    zsh_complete qimg map --object secret,id=k0,data=x --image-opts driver=qcow2,encrypt.key-secret=
    assert_output "compadd driver=qcow2,encrypt.key-secret=| k0"
    zsh_complete qimg rebase --image-opts -b ''
    assert_output "_files"
    qemu-img create -q -f qcow2 "$BATS_TEST_TMPDIR/d.qcow2" 1M
    qemu-img bitmap --add "$BATS_TEST_TMPDIR/d.qcow2" backup0
    zsh_complete ./qimg bitmap --remove --image-opts "driver=qcow2,file.filename=$BATS_TEST_TMPDIR/d.qcow2" ''
    assert_output "compadd | -X bitmap backup0"
}
