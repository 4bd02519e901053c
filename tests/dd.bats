#!/usr/bin/env bats
# dd.bats - qimg dd against qemu-img dd 7.2: the same operands give the same
# messages and exit status (program name aside), and outputs of the same
# size whose contents (qemu-img convert -O raw) are byte-identical; a qcow2
# output checks clean with qemu-img check.
load helpers

setup() {
    common_setup
    make_pattern in.raw 3
    truncate -s 3000000 in.raw
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -c 'write -P 1 0 2M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 in.qcow2 5M
    qemu-io -c 'write -P 2 1M 512k' -c 'write -z 0 256k' -c 'write -c -P 3 3M 64k' \
        in.qcow2 >/dev/null
}

# same OPERANDS...: run both with of=A... and of=B... in place of of=...
same() {
    local a b ra=0 rb=0 x o=""
    local -a aa=() ba=()
    for x in "$@"; do
        if [[ $x == of=* ]]; then
            o=${x#of=}
            aa+=("of=A$o")
            ba+=("of=B$o")
        else
            aa+=("$x")
            ba+=("$x")
        fi
    done
    a=$(qemu-img dd "${aa[@]}" 2>&1) || ra=$?
    b=$(qimg dd "${ba[@]}" 2>&1) || rb=$?
    [ "$ra" = "$rb" ] || fail "exit $ra vs $rb for '$*': $a / $b"
    [ "${a//qemu-img/qimg}" = "${b//B$o/A$o}" ] || fail "for '$*': $a / $b"
    [ -n "$o" ] && [ -e "A$o" ] || return 0
    [ -e "B$o" ] || fail "qimg made no B$o"
    if [ "$(qemu-img info --output=json "B$o" | jq -r .format)" = qcow2 ]; then
        run qemu-img check "B$o"
        assert_success
    fi
    [ "$(qemu-img info --output=json "A$o" | jq '."virtual-size"')" = \
      "$(qemu-img info --output=json "B$o" | jq '."virtual-size"')" ] || fail "sizes differ"
    qemu-img convert -O raw "A$o" a.raw
    qemu-img convert -O raw "B$o" b.raw
    cmp a.raw b.raw || fail "contents differ for '$*'"
}

@test "bs, count and skip as qemu-img counts them (count includes skip)" {
    same if=in.raw of=o1
    same bs=1M if=in.raw of=o2
    same bs=1M count=2 if=in.raw of=o3
    same bs=1M skip=1 if=in.raw of=o4
    same bs=1M skip=1 count=2 if=in.raw of=o5
    same bs=1k count=3 skip=2 if=in.raw of=o6
    same bs=1M count=0 if=in.raw of=o7
    same count=1k if=in.raw of=o8
    same bs=1000 count=7 skip=3 if=in.raw of=o9
}

@test "a skip past the end makes an empty output after a message" {
    same bs=1M skip=5 if=in.raw of=s1
    same skip=1G if=in.raw of=s2
}

@test "qcow2 in and out: backing chain, zero and compressed clusters" {
    same -O qcow2 if=in.qcow2 of=q1.qcow2
    same -O qcow2 bs=64k skip=8 count=40 if=in.qcow2 of=q2.qcow2
    same -O qcow2 bs=1000 count=3 skip=1 if=in.raw of=q3.qcow2
    same -f qcow2 bs=4k skip=100 if=in.qcow2 of=q4.raw
    same -O raw if=base.qcow2 of=q5.raw
}

@test "bad operands get qemu-img's messages" {
    same bs=0 if=in.raw of=e1
    same bs=1x if=in.raw of=e1
    same bs=3G if=in.raw of=e1
    same count=-1 if=in.raw of=e1
    same count=9E if=in.raw of=e1
    same skip=x if=in.raw of=e1
    same foo=1 if=in.raw of=e1
    same bar if=in.raw of=e1
    same if=in.raw
    same of=e1
    same if=nope of=e1
    same -O foo if=in.raw of=e1
    same -f qcow2 if=in.raw of=e1
}

@test "the last if= and of= count, and an encrypted input opens with its key" {
    same if=in.raw of=x1 if=in.qcow2
    qcreate --object secret,id=s0,data=pw \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 c.qcow2 1M
    qemu-io --object secret,id=s0,data=pw --image-opts -c 'write -P 9 0 1M' \
        driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=s0 >/dev/null
    same --object secret,id=s0,data=pw --image-opts \
        if=driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=s0 of=x2
}

@test "dd never writes to its input, and --help comes from the option table" {
    local before
    before=$(file_sum in.qcow2)
    run qimg dd -O qcow2 if=in.qcow2 of=out.qcow2
    assert_success
    [ "$(file_sum in.qcow2)" = "$before" ]
    run qimg dd --help
    assert_success
    assert_line --index 0 --partial "usage: qimg dd "
}
