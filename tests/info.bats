#!/usr/bin/env bats
# info.bats - `qimg info` prints what `qemu-img info` prints, in both
# layouts, for images qemu-img and qemu-io made; and it never writes.
load helpers

setup() { common_setup; }
teardown() { release_image; }

# same_info ARGS...: qimg info ARGS matches qemu-img info ARGS, human and
# JSON; only the disk size (it depends on the file system) is left out.
same_info() {
    local q i
    q=$(qemu-img info "$@" | grep -v '^disk size:')
    i=$(qimg info "$@" | grep -v '^disk size:')
    [ "$q" = "$i" ] || {
        echo "human output differs for: $*" >&2
        diff <(echo "$q") <(echo "$i") >&2
        return 1
    }
    q=$(qemu-img info --output=json "$@" | jq 'if type == "array" then
        map(del(.["actual-size"])) else del(.["actual-size"]) end')
    i=$(qimg info --output=json "$@" | jq 'if type == "array" then
        map(del(.["actual-size"])) else del(.["actual-size"]) end')
    [ "$q" = "$i" ] || {
        echo "JSON output differs for: $*" >&2
        diff <(echo "$q") <(echo "$i") >&2
        return 1
    }
}

# The raw JSON text too: key order and layout, not only the values.
same_json_text() {
    diff <(qemu-img info --output=json "$@" | grep -v '"actual-size"') \
        <(qimg info --output=json "$@" | grep -v '"actual-size"')
}

@test "qcow2 images of every kind read as qemu-img reads them" {
    qemu-img create -q -f qcow2 default.qcow2 64M
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 1G
    qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 1M
    qemu-img create -q -f qcow2 -o extended_l2=on extl2.qcow2 1M
    qemu-img create -q -f qcow2 -o refcount_bits=1 rb1.qcow2 1M
    qemu-img create -q -f qcow2 -o refcount_bits=64,cluster_size=512 rb64.qcow2 1G
    for f in default v2 lazy zstd extl2 rb1 rb64; do
        same_info $f.qcow2
    done
    same_json_text lazy.qcow2
}

@test "images with compressed data and internal snapshots read as qemu-img reads them" {
    qemu-img create -q -f qcow2 c.qcow2 64M
    qemu-io -c 'write -c 0 64k' -c 'write 1M 64k' c.qcow2 >/dev/null
    qemu-img snapshot -c first c.qcow2
    qemu-img snapshot -c "a longer snapshot name" c.qcow2
    qemu-img snapshot -c abcdefghijklmnopq c.qcow2
    same_info c.qcow2
    same_json_text c.qcow2
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
    qemu-io -c 'write -c 0 64k' v2.qcow2 >/dev/null
    qemu-img snapshot -c s1 v2.qcow2
    same_info v2.qcow2
    # the human table matches `qemu-img snapshot -l` too
    diff <(qemu-img snapshot -l c.qcow2 | tail -n +2) \
        <(qimg info c.qcow2 | sed -n '/^Snapshot list:/,/^Format/p' | sed '1d;$d')
}

@test "snapshots with a VM state, a VM clock and no icount show as in qemu-img" {
    qemu-img create -q -f qcow2 s.qcow2 1M
    qemu-img snapshot -c one s.qcow2
    qemu-img snapshot -c two s.qcow2
    off=$(peek_be64 s.qcow2 64)
    # first entry: 101 h 2 min 3.456 s of VM clock and a 1.5 MiB VM state
    poke_be64 s.qcow2 $((off + 24)) 363723456000000
    poke_be32 s.qcow2 $((off + 32)) 1572864
    poke_be64 s.qcow2 $((off + 40)) 1572864
    # and no icount: -1 in its extra data
    poke_be64 s.qcow2 $((off + 56)) -1
    same_info s.qcow2
}

@test "a backing chain of three shows as qemu-img shows it, with --backing-chain too" {
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-img snapshot -c snap base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 128M
    same_info top.qcow2
    same_info --backing-chain top.qcow2
    same_json_text --backing-chain top.qcow2
    mkdir sub
    qemu-img create -q -f raw sub/base.raw 1M
    qemu-img create -q -f qcow2 -b base.raw -F raw sub/top.qcow2
    qemu-img create -q -f qcow2 -b "$PWD/sub/top.qcow2" -F qcow2 abs.qcow2
    same_info sub/top.qcow2
    same_info --backing-chain ./sub/../sub/top.qcow2
    same_info --backing-chain abs.qcow2
}

@test "raw images read as qemu-img reads them" {
    qemu-img create -q -f raw r.raw 1M
    head -c 1000 /dev/urandom >odd.raw
    same_info r.raw
    same_info odd.raw
    same_info -f raw r.raw
    qemu-img create -q -f qcow2 q.qcow2 1M
    same_info -f raw q.qcow2
    same_json_text r.raw
}

@test "the dirty and corrupt bits show as qemu-img shows them" {
    qemu-img create -q -f qcow2 d.qcow2 1M
    poke d.qcow2 72 0000000000000001
    same_info d.qcow2
    run -0 qimg info d.qcow2
    assert_line "cleanly shut down: no"
    [ "$(qimg info --output=json d.qcow2 | jq '.["dirty-flag"]')" = true ]
    qemu-img create -q -f qcow2 -o lazy_refcounts=on l.qcow2 1M
    poke l.qcow2 72 0000000000000001
    same_info l.qcow2
    qemu-img create -q -f qcow2 c.qcow2 1M
    poke c.qcow2 72 0000000000000002
    same_info c.qcow2
}

@test "bitmaps, encryption and odd file names show as qemu-img shows them" {
    qemu-img create -q -f qcow2 bm.qcow2 1M
    qemu-img bitmap --add bm.qcow2 b0
    qemu-img bitmap --add -g 128k --disable bm.qcow2 "b 1"
    same_info bm.qcow2
    qemu-img create -q -f qcow2 --object secret,id=s,data=x \
        -o encrypt.format=aes,encrypt.key-secret=s aes.qcow2 1M 2>/dev/null
    same_info aes.qcow2
    name=$'we\'ird "x"\\\xc3\xa9\t.img'
    qemu-img create -q -f raw "$name" 1M
    same_info "$name"
}

@test "info never writes, and never opens the backing file unless asked" {
    qemu-img create -q -f qcow2 -b missing.qcow2 -F qcow2 -u t.qcow2 1M
    poke t.qcow2 72 0000000000000001
    sum=$(file_sum t.qcow2)
    same_info t.qcow2
    run -0 qimg info t.qcow2
    assert_line "backing file: missing.qcow2"
    [ "$(file_sum t.qcow2)" = "$sum" ]
    run -1 qimg info --backing-chain t.qcow2
    assert_output "qimg: Could not open 'missing.qcow2': Could not open 'missing.qcow2': No such file or directory"
    [ "$(file_sum t.qcow2)" = "$sum" ]
    # a read-only file is enough
    chmod 444 t.qcow2
    run -0 qimg info t.qcow2
}

@test "a backing loop is reported, and errors are worded as in qemu-img" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
    qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2
    run -1 qimg info --backing-chain b.qcow2
    assert_output "qimg: Backing file 'b.qcow2' creates an infinite loop."
    run -1 qimg info missing.qcow2
    assert_output "qimg: Could not open 'missing.qcow2': Could not open 'missing.qcow2': No such file or directory"
    run -1 qimg info --output=xml a.qcow2
    assert_output "qimg: --output must be used with human or json as argument."
    qemu-img create -q -f raw r.raw 1M
    run -1 qimg info -f qcow2 r.raw
    assert_output "qimg: Could not open 'r.raw': Image is not in qcow2 format"
    run -1 qimg info
    assert_line --index 0 "qimg: Expecting one image file name"
    run -1 qimg info a.qcow2 b.qcow2
    assert_line --index 0 "qimg: Expecting one image file name"
}

@test "a locked image needs -U (force-share)" {
    qemu-img create -q -f qcow2 l.qcow2 1M
    # A writer holding qemu's image lock (as a running VM would).
    hold_image l.qcow2
    run -1 qimg info l.qcow2
    assert_line --index 0 --partial "Failed to get shared \"write\" lock"
    qemu-img info l.qcow2 2>&1 | grep -q 'Failed to get shared "write" lock'
    run -0 qimg info -U l.qcow2
    run -0 qimg info --force-share --output=json l.qcow2
    release_image
}

@test "--object help lists the object types and needs no file, as qemu-img" {
    run -0 qimg info --object help
    assert_line --index 0 "$(qemu-img info --object help | head -1)"
    assert_line --index 1 "  secret"
    run -1 qimg info
    assert_line --index 0 "qimg: Expecting one image file name"
}
