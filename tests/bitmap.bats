#!/usr/bin/env bats
# bitmap.bats - persistent dirty bitmaps: qimg bitmap against qemu-img
# bitmap (the same operations on two copies give the same bitmaps, bit for
# bit, read by tests/bitmap-dump.py straight from the file), its messages,
# --list, info and check of images with bitmaps, guest writes that keep
# enabled bitmaps right, convert --bitmaps, and the commands that refuse.
load helpers
load crypto_helpers

setup() { common_setup; }

DUMP="$BATS_TEST_DIRNAME/bitmap-dump.py"
# The system's python: a version manager's shim can take seconds to start.
PY=$(command -v /usr/bin/python3 || command -v python3)

# img FILE [SIZE]: a qcow2 image (8 MiB by default).
img() {
    qemu-img create -q -f qcow2 "$1" "${2:-8M}"
}

# wr FILE OFFSET LEN: a guest write with qemu-io.
wr() {
    qemu-io -c "write $2 $3" "$1" >/dev/null
}

# The image is consistent by qemu-img's own checker.
clean() {
    run qemu-img check "$1"
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

# Both images hold the same bitmaps: names, granularity, flags, data.
same_bitmaps() {
    local a b
    a=$("$PY" "$DUMP" "$1")
    b=$("$PY" "$DUMP" "$2")
    [ "$a" = "$b" ] || { printf 'qemu-img:\n%s\nqimg:\n%s\n' "$a" "$b"; return 1; }
    [ -n "$a" ] || [ -n "${3:-}" ] || { echo "no bitmaps"; return 1; }
}

# both "ARGS...": run qemu-img bitmap on q.qcow2 and qimg bitmap on m.qcow2.
both() {
    # shellcheck disable=SC2086
    qemu-img bitmap $1 q.qcow2 $2
    # shellcheck disable=SC2086
    qimg bitmap $1 m.qcow2 $2
}

# A pair of equal images with written data: q.qcow2 (for qemu-img) and m.qcow2.
pair() {
    img q.qcow2 "${1:-8M}"
    cp q.qcow2 m.qcow2
}

@test "add, disable, enable, clear and remove give the bitmaps qemu-img gives" {
    pair
    both --add a
    both "--add -g 512 --disable" b
    both "--add -g 2M" c
    wr q.qcow2 0 100k; wr m.qcow2 0 100k
    wr q.qcow2 5M 1k; wr m.qcow2 5M 1k
    same_bitmaps q.qcow2 m.qcow2
    both --disable a
    both --enable b
    both --clear c
    both --remove a
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
    both --remove b
    both --remove c
    same_bitmaps q.qcow2 m.qcow2 empty
    clean m.qcow2
    # the last bitmap gone, the extension and its autoclear bit go too
    [ "$(qemu-img info --output=json m.qcow2 | jq '."format-specific".data.bitmaps')" = null ]
    [ $(($(peek_be64 m.qcow2 88) & 1)) -eq 0 ]
}

@test "qemu-img info and check see the bitmaps qimg made as those qemu-img made" {
    pair
    both --add x
    both "--add -g 128k --disable" y
    both "--add -g 1k" z
    wr q.qcow2 1M 3M; wr m.qcow2 1M 3M
    diff <(qemu-img info --output=json q.qcow2 | jq '."format-specific"') \
         <(qemu-img info --output=json m.qcow2 | jq '."format-specific"')
    diff <(qemu-img check --output=json q.qcow2 | jq 'del(."image-end-offset", .filename)') \
         <(qemu-img check --output=json m.qcow2 | jq 'del(."image-end-offset", .filename)')
}

@test "info lists the bitmaps as qemu-img does, human and JSON" {
    img a.qcow2
    qemu-img bitmap --add a.qcow2 first
    qemu-img bitmap --add -g 256k --disable a.qcow2 'second one'
    wr a.qcow2 0 64k
    diff <(qemu-img info a.qcow2) <(qimg info a.qcow2)
    diff <(qemu-img info --output=json a.qcow2) <(qimg info --output=json a.qcow2)
}

@test "check counts the bitmap clusters as qemu-img check does" {
    img a.qcow2 64M
    for g in 512 4k 64k 1M; do qemu-img bitmap --add -g $g a.qcow2 "g$g"; done
    wr a.qcow2 0 32M
    run -0 qimg check --output=json a.qcow2
    diff <(qemu-img check --output=json a.qcow2) <(echo "$output")
    run -0 qimg check a.qcow2
    assert_output "$(qemu-img check a.qcow2)"
}

@test "merge sets the bits qemu-img sets: same image, other image, other granularity" {
    pair
    both "--add -g 4k" a
    both "--add -g 1M --disable" b
    wr q.qcow2 100k 10k; wr m.qcow2 100k 10k
    img src.qcow2
    qemu-img bitmap --add -g 512 src.qcow2 s
    wr src.qcow2 7M 3k
    both "--merge a" b
    same_bitmaps q.qcow2 m.qcow2
    both "--merge s -b src.qcow2 -F qcow2" a
    both "--add --merge b" c
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
}

@test "bits set by qemu-io are counted by --list as qemu's granularity times bits" {
    img a.qcow2
    qemu-img bitmap --add -g 64k a.qcow2 b1
    qemu-img bitmap --add -g 512 a.qcow2 b2
    wr a.qcow2 1000 200k
    before=$(file_sum a.qcow2)
    run -0 qimg bitmap --list --output=json a.qcow2
    [ "$(jq -r '.[0].count' <<<"$output")" -eq $((65536 * 4)) ]
    [ "$(jq -r '.[1].count' <<<"$output")" -eq $((512 * 401)) ]
    [ "$(jq -c '[.[].name]' <<<"$output")" = '["b1","b2"]' ]
    [ "$(jq -c '.[0].flags' <<<"$output")" = '["auto"]' ]
    run -0 qimg bitmap --list a.qcow2
    assert_line --index 0 --regexp '^NAME +GRANULARITY FLAGS +DIRTY BYTES$'
    assert_line --index 1 --regexp '^b1 +65536 auto +262144$'
    run -0 qimg bitmap --list a.qcow2 b2
    assert_equal "${#lines[@]}" 2
    run -1 qimg bitmap --list a.qcow2 nope
    assert_output --partial "Dirty bitmap 'nope' not found"
    [ "$(file_sum a.qcow2)" = "$before" ]
}

@test "errors are qemu-img's, word for word, with its exit code" {
    img q.qcow2
    qemu-img bitmap --add q.qcow2 b1
    cp q.qcow2 m.qcow2
    local cases c args
    mapfile -t cases <<'EOF'
q.qcow2 b1
--add q.qcow2
--add q.qcow2 b1
--remove q.qcow2 nope
--clear q.qcow2 nope
--enable q.qcow2 nope
--disable q.qcow2 nope
--merge nope q.qcow2 b1
-g 64k --clear q.qcow2 b1
--add -g 100 q.qcow2 x
--add -g 256 q.qcow2 x
--add -g 1x q.qcow2 x
--add -b q.qcow2 q.qcow2 x
--merge b1 -F qcow2 q.qcow2 b1
--add nofile.qcow2 x
--merge b1 -b nofile.qcow2 q.qcow2 b1
--add q.qcow2
EOF
    for c in "${cases[@]}"; do
        IFS= read -r args <<<"$c"
        # shellcheck disable=SC2086
        run qemu-img bitmap $args
        local want=$status wout=${output//qemu-img:/P:}
        # shellcheck disable=SC2086
        run qimg bitmap ${args//q.qcow2/m.qcow2}
        [ "$status" -eq "$want" ] || fail "$args: exit $status, qemu-img $want"
        assert_equal "${output//qimg:/P:}" "$wout"
    done
    run -1 qimg bitmap --add m.qcow2 ''
    assert_output "qimg: Operation add on bitmap  failed: Bitmap name cannot be empty"
    [ "$(qemu-img info --output=json q.qcow2 | jq -c '."format-specific".data.bitmaps')" = \
      "$(qemu-img info --output=json m.qcow2 | jq -c '."format-specific".data.bitmaps')" ]
}

@test "granularity: 512 to 2G, the default from the cluster size" {
    for cs in 512 2M; do
        qemu-img create -q -f qcow2 -o cluster_size=$cs q.qcow2 8M
        cp q.qcow2 m.qcow2
        both --add d
        both "--add -g 2G" big
        same_bitmaps q.qcow2 m.qcow2
        rm q.qcow2 m.qcow2
    done
    img m.qcow2
    run -1 qimg bitmap --add -g 4G m.qcow2 x
    assert_output "qimg: Operation add on bitmap x failed: Granularity must be power of 2 and at least 512"
}

@test "a name of 1023 bytes is taken, one of 1024 refused" {
    pair
    name=$(printf 'n%.0s' $(seq 1023))
    both --add "$name"
    same_bitmaps q.qcow2 m.qcow2
    run -1 qimg bitmap --add m.qcow2 "${name}n"
    assert_output --partial "Name length exceeds maximum (1023 characters)"
}

@test "the actions before a failing one are kept, as qemu-img keeps them" {
    pair
    both --add a
    run -1 qemu-img bitmap --remove --remove q.qcow2 a
    run -1 qimg bitmap --remove --remove m.qcow2 a
    assert_output "qimg: Operation remove on bitmap a failed: Dirty bitmap 'a' not found"
    same_bitmaps q.qcow2 m.qcow2 empty
    clean m.qcow2
}

@test "several bitmaps take the same actions in one run (a qimg extension)" {
    img m.qcow2
    run -0 qimg bitmap --add --disable m.qcow2 a b c
    run -0 qimg bitmap --list --output=json m.qcow2
    [ "$(jq -c '[.[] | [.name, .flags]]' <<<"$output")" = '[["a",[]],["b",[]],["c",[]]]' ]
    clean m.qcow2
}

@test "an inconsistent bitmap can only be removed, with qemu-img's message" {
    pair
    both --add a
    both --add b
    # the in_use flag of the first directory entry
    for f in q.qcow2 m.qcow2; do
        dir=$(qemu-img info --output=json "$f" >/dev/null; "$PY" - "$f" <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
pos = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0x23852875:
        print(struct.unpack('>Q', d[pos + 24:pos + 32])[0])
        break
    pos += 8 + ((l + 7) & ~7)
EOF
)
        poke_be32 "$f" $((dir + 12)) 3
    done
    for op in --enable --disable --clear "--merge b"; do
        # shellcheck disable=SC2086
        run -1 qemu-img bitmap $op q.qcow2 a
        local want=${output//qemu-img:/qimg:}
        # shellcheck disable=SC2086
        run -1 qimg bitmap $op m.qcow2 a
        assert_output "$want"
    done
    run -1 qimg bitmap --merge a m.qcow2 b
    assert_output --partial "Bitmap 'a' is inconsistent and cannot be used"
    diff <(qemu-img info m.qcow2) <(qimg info m.qcow2)
    run -0 qimg bitmap --list --output=json m.qcow2
    [ "$(jq -c '.[0].flags' <<<"$output")" = '["in-use","auto"]' ]
    both --remove a
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
}

@test "version 2 and raw images cannot hold bitmaps" {
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
    run -1 qimg bitmap --add v2.qcow2 x
    assert_output "qimg: Operation add on bitmap x failed: Can't make bitmap 'x' persistent in 'v2.qcow2': Cannot store dirty bitmaps in qcow2 v2 files"
    qemu-img create -q -f raw r.img 1M
    run -1 qimg bitmap --add -f raw r.img x
    assert_output --partial "Operation add on bitmap x failed: Can't store persistent bitmaps"
    run -1 qimg bitmap --remove -f raw r.img x
    assert_output "qimg: Operation remove on bitmap x failed: Dirty bitmap 'x' not found"
}

@test "guest writes of qimg set the bits of enabled bitmaps as qemu-img's do" {
    img src.qcow2
    qemu-io -c 'write -P 1 0 100k' -c 'write -P 2 3M 1M' -c 'write -z 6M 1M' src.qcow2 >/dev/null
    pair
    both "--add -g 4k" on
    both "--add --disable" off
    qemu-img convert -n -O qcow2 src.qcow2 q.qcow2
    run -0 qimg convert -n -O qcow2 src.qcow2 m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
    run -0 qemu-img compare q.qcow2 m.qcow2
}

@test "a crash after the first guest write leaves the bitmap in use, never wrong" {
    img src.qcow2
    wr src.qcow2 0 1M
    img m.qcow2
    qimg bitmap --add m.qcow2 b
    QIMG_DEBUG_KILL_AFTER_WRITES=2 run qimg convert -n -O qcow2 src.qcow2 m.qcow2
    [ "$status" -ne 0 ]
    run -0 qemu-img info --output=json m.qcow2
    [ "$(jq -c '."format-specific".data.bitmaps[0].flags' <<<"$output")" = '["in-use","auto"]' ]
    run qemu-img check m.qcow2
    [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
    run -1 qimg bitmap --clear m.qcow2 b
    assert_output --partial "Bitmap 'b' is inconsistent and cannot be used"
}

@test "convert --bitmaps copies the bitmaps as qemu-img convert --bitmaps does" {
    img src.qcow2
    qemu-img bitmap --add -g 512 src.qcow2 a
    qemu-img bitmap --add --disable src.qcow2 b
    wr src.qcow2 1M 300k
    qemu-img bitmap --merge a src.qcow2 b
    qemu-img convert --bitmaps -O qcow2 src.qcow2 q.qcow2
    run -0 qimg convert --bitmaps -O qcow2 src.qcow2 m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
    run -0 qemu-img compare src.qcow2 m.qcow2
    # into an existing image with -n, next to its own bitmaps
    pair
    both --add own
    qemu-img convert -n --bitmaps -O qcow2 src.qcow2 q.qcow2
    run -0 qimg convert -n --bitmaps -O qcow2 src.qcow2 m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    run -1 qimg convert -n --bitmaps -O qcow2 src.qcow2 m.qcow2
    assert_output "qimg: Failed to create bitmap a: Bitmap already exists: a"
}

@test "convert --bitmaps refuses what qemu-img refuses, with its messages" {
    img src.qcow2
    qemu-img bitmap --add src.qcow2 a
    qemu-img create -q -f raw r.img 1M
    local cases c args
    mapfile -t cases <<'EOF'
--bitmaps -O raw src.qcow2 out.raw
--bitmaps -O qcow2 src.qcow2 src.qcow2 out.qcow2
--skip-broken-bitmaps -O qcow2 src.qcow2 out.qcow2
--bitmaps -f raw -O qcow2 r.img out.qcow2
EOF
    for c in "${cases[@]}"; do
        IFS= read -r args <<<"$c"
        # shellcheck disable=SC2086
        run qemu-img convert $args
        local want=$status wout=${output//qemu-img:/P:}
        rm -f out.*
        # shellcheck disable=SC2086
        run qimg convert $args
        [ "$status" -eq "$want" ] || fail "$args: exit $status, qemu-img $want"
        assert_equal "${output//qimg:/P:}" "$wout"
    done
}

@test "convert --bitmaps refuses an inconsistent bitmap unless told to skip it" {
    img src.qcow2
    qemu-img bitmap --add src.qcow2 bad
    qemu-img bitmap --add src.qcow2 good
    wr src.qcow2 0 64k
    dir=$("$PY" - <<'EOF'
import struct
d = open('src.qcow2', 'rb').read()
pos = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0x23852875:
        print(struct.unpack('>Q', d[pos + 24:pos + 32])[0])
        break
    pos += 8 + ((l + 7) & ~7)
EOF
)
    poke_be32 src.qcow2 $((dir + 12)) 3
    run -1 qimg convert --bitmaps -O qcow2 src.qcow2 m.qcow2
    assert_output "qimg: Cannot copy inconsistent bitmap 'bad'
Try --skip-broken-bitmaps, or use 'qimg bitmap --remove' to delete it"
    [ ! -e m.qcow2 ]
    qemu-img convert --bitmaps --skip-broken-bitmaps -O qcow2 src.qcow2 q.qcow2 2>/dev/null
    run -0 qimg convert --bitmaps --skip-broken-bitmaps -O qcow2 src.qcow2 m.qcow2
    assert_output "qimg: warning: Skipping inconsistent bitmap 'bad'"
    same_bitmaps q.qcow2 m.qcow2
}

@test "snapshot -a and amend compat=0.10 refuse an image with bitmaps" {
    img m.qcow2
    qemu-img snapshot -c s m.qcow2
    qemu-img bitmap --add --disable m.qcow2 b
    cp m.qcow2 q.qcow2
    run -1 qemu-img snapshot -a s q.qcow2
    local want=${output//qemu-img:/qimg:}
    before=$(file_sum m.qcow2)
    run -1 qimg snapshot -a s m.qcow2
    assert_output "$want"
    run -1 qimg amend -o compat=0.10 m.qcow2
    assert_output "qimg: Cannot downgrade an image with persistent bitmaps"
    [ "$(file_sum m.qcow2)" = "$before" ]
    # creating and deleting snapshots keeps them
    run -0 qimg snapshot -c t m.qcow2
    run -0 qimg snapshot -d t m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
    # and so does rewriting every refcount
    run -0 qimg amend -o refcount_bits=8 m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
}

@test "repair keeps the bitmaps: a leak and a lost refcount of bitmap data" {
    img m.qcow2
    qemu-img bitmap --add -g 512 m.qcow2 b
    wr m.qcow2 0 1M
    cp m.qcow2 q.qcow2
    # the first data cluster of the bitmap loses its refcount
    read -r data rb < <("$PY" - <<'EOF'
import struct
d = open('m.qcow2', 'rb').read()
pos = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0x23852875:
        doff = struct.unpack('>Q', d[pos + 24:pos + 32])[0]
        break
    pos += 8 + ((l + 7) & ~7)
toff = struct.unpack('>Q', d[doff:doff + 8])[0]
rt = struct.unpack('>Q', d[48:56])[0]
print(struct.unpack('>Q', d[toff:toff + 8])[0] >> 16, struct.unpack('>Q', d[rt:rt + 8])[0])
EOF
)
    poke_be16 m.qcow2 $((rb + 2 * data)) 0
    # and cluster 60 leaks
    poke_be16 m.qcow2 $((rb + 120)) 1
    truncate -s $((61 * 65536)) m.qcow2
    run -2 qimg check m.qcow2
    run -0 qimg repair m.qcow2
    run -0 qimg check m.qcow2
    clean m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    # a refcount table entry lost: the refcounts are rebuilt around the bitmaps
    poke_be64 m.qcow2 "$(peek_be64 m.qcow2 48)" 0
    run -2 qimg check m.qcow2
    run -0 qimg repair m.qcow2
    clean m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    run -0 qemu-img compare q.qcow2 m.qcow2
}

@test "repair drops a broken bitmap directory, extension and all: qemu opens it without a warning" {
    img m.qcow2
    qemu-img bitmap --add m.qcow2 b
    wr m.qcow2 0 1M
    cp m.qcow2 q.qcow2
    # the directory is moved past the end of the file
    "$PY" - <<'EOF'
import struct
d = bytearray(open('m.qcow2', 'rb').read())
pos = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0x23852875:
        struct.pack_into('>Q', d, pos + 24, 0x7000000)
        break
    pos += 8 + ((l + 7) & ~7)
open('m.qcow2', 'wb').write(d)
EOF
    run -2 qimg check m.qcow2
    run -0 qimg repair m.qcow2
    run -0 qimg check m.qcow2
    run --separate-stderr -0 qemu-img info --output=json m.qcow2
    [ -z "$stderr" ] || fail "qemu-img warns: $stderr"
    [ "$(jq '."format-specific".data.bitmaps' <<<"$output")" = null ]
    run --separate-stderr -0 qemu-img check m.qcow2
    [ -z "$stderr" ] || fail "qemu-img warns: $stderr"
    run -0 qemu-img compare q.qcow2 m.qcow2
}

@test "stale bitmaps (autoclear bit clear) are reported as qemu-img reports them" {
    img m.qcow2
    qemu-img bitmap --add m.qcow2 b
    poke_be64 m.qcow2 88 0
    run -0 qimg info m.qcow2
    assert_line --index 0 "qimg: warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent"
    run -3 qimg check m.qcow2
    run -0 qimg bitmap --list --output=json m.qcow2
    assert_line --partial "all bitmaps are now considered inconsistent"
    # after a repair the stale directory points to freed clusters: a new
    # bitmap replaces it without freeing them twice
    run -0 qimg repair m.qcow2
    run -0 qimg bitmap --add m.qcow2 fresh
    clean m.qcow2
    run -0 qimg bitmap --list --output=json m.qcow2
    [ "$(jq -c '[.[].name]' <<<"$output")" = '["fresh"]' ]
}

@test "a corrupt bitmap directory is refused with a message, never a crash" {
    img m.qcow2
    qemu-img bitmap --add m.qcow2 b
    dir=$("$PY" - <<'EOF'
import struct
d = open('m.qcow2', 'rb').read()
pos = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0x23852875:
        print(struct.unpack('>Q', d[pos + 24:pos + 32])[0])
        break
    pos += 8 + ((l + 7) & ~7)
EOF
)
    cp m.qcow2 good.qcow2
    local cases c field want
    # offset:bytes:value:message
    mapfile -t cases <<'EOF'
0:8:0000000000012345:is not aligned or not inside the file
8:4:00000000:table of 0 entries, but the image size and granularity need 1
12:4:00000010:reserved flags 0x10 are set
16:1:02:is not a dirty tracking bitmap
17:1:08:granularity bits 8
18:2:0000:has a name of 0 bytes
18:2:00ff:runs past its end
EOF
    for c in "${cases[@]}"; do
        IFS=: read -r field bytes value want <<<"$c"
        cp good.qcow2 m.qcow2
        poke m.qcow2 $((dir + field)) "$value"
        run -1 qimg bitmap --list m.qcow2
        assert_output --partial "$want"
        run -1 qimg convert -n -O qcow2 good.qcow2 m.qcow2
        assert_output --partial "$want"
    done
}

@test "the SYNOPSIS of qimg-bitmap(1) is the usage of qimg bitmap --help" {
    local want got
    want=$(qimg bitmap --help | sed -n '1s/^usage: qimg //p; 2s/^ *or: qimg //p' | tr -s ' \n' ' ')
    got=$(MANWIDTH=1000 man -l "$TOP/man/qimg-bitmap.1" 2>/dev/null |
        awk '$0 == "SYNOPSIS" { f = 1; next } /^[A-Z]/ { f = 0 } f' |
        sed 's/^ *qimg //' | tr -s ' \n' ' ')
    assert_equal "$(echo $got)" "$(echo $want)"
}

@test "amend -o size grows and shrinks the bitmaps as qemu-img amend does" {
    pair
    both --add b
    both "--add -g 512 --disable" d
    wr q.qcow2 0 1M; wr m.qcow2 0 1M
    both "--merge b" d
    qemu-img amend -o size=16M q.qcow2
    run -0 qimg amend -o size=16M m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
    qemu-img amend -o size=4000k q.qcow2
    run -0 qimg amend --force -o size=4000k m.qcow2
    same_bitmaps q.qcow2 m.qcow2
    clean m.qcow2
}

@test "bitmaps of an encrypted image named by --image-opts, as qemu-img bitmap" {
    mkdir fx
    luks_fixture fx/e.qcow2
    img fx/src.qcow2 4M
    qemu-img bitmap --add fx/src.qcow2 s0
    wr fx/src.qcow2 1M 200k
    same_cmd bitmap "${SEC[@]}" --add -g 128k --image-opts "$(io e.qcow2)" b0
    same_bitmaps a/e.qcow2 b/e.qcow2
    cp b/e.qcow2 fx/e.qcow2
    same_cmd bitmap "${SEC[@]}" --merge s0 -b src.qcow2 --disable --image-opts "$(io e.qcow2)" b0
    same_bitmaps a/e.qcow2 b/e.qcow2
    run -0 qimg bitmap --list "${SEC[@]}" --image-opts "$(io b/e.qcow2)"
    assert_output "$(qimg bitmap --list b/e.qcow2)"
    qemu-img check -q "${SEC[@]}" --image-opts "$(io b/e.qcow2)"
}

@test "a missing or wrong secret, or -f with --image-opts, fail as in qemu-img bitmap" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd bitmap --add --image-opts "$o" b0
    same_cmd bitmap --object secret,id=sec0,data=bad --add --image-opts "$o" b0
    same_cmd bitmap "${SEC[@]}" --add -f qcow2 --image-opts "$o" b0
    cmp fx/e.qcow2 b/e.qcow2
    object_help bitmap
}
