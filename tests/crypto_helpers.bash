# crypto_helpers.bash - what crypto.bats and encrypted.bats share: qemu-made
# encrypted images, qemu-io and qemu-img convert with a secret, and the
# offsets of the LUKS header inside an image.

# qio IMAGE PASS CMD...: qemu-io on an encrypted image.
qio() {
    local img=$1 pass=$2
    shift 2
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io --object "secret,id=sec0,data=$pass" \
        --image-opts "driver=qcow2,file.filename=$img,encrypt.key-secret=sec0" "${args[@]}"
}

# qconvert IMAGE PASS OUT: qemu-img's view of the guest disk.
qconvert() {
    qemu-img convert --object "secret,id=sec0,data=$2" \
        --image-opts "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0" -O raw "$3"
}

# fill IMAGE PASS: random data from a pattern file, plus qemu-io writes at
# unaligned offsets (qemu does read-modify-write of the sectors around them).
fill() {
    make_pattern pat.raw 1
    qemu-img convert -n --object "secret,id=sec0,data=$2" -f raw pat.raw \
        --target-image-opts "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"
    qio "$1" "$2" 'write -P 0x5a 1234 70000' 'write -P 0x33 2100000 100k' \
        'write -z 3M 64k' 'write -P 0x11 4193792 512' >/dev/null
}

# luks_image NAME PASS [EXTRA -o]: a qemu-made LUKS image of 4 MiB.
luks_image() {
    qcreate --object "secret,id=sec0,data=$2" \
        -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10${3:+,$3}" "$1" 4M
}

# Byte offset of the LUKS header (the crypto header extension's pointer).
luks_offset() {
    local off len type hl
    hl=$(peek_be32 "$1" 100)
    off=$hl
    while :; do
        type=$(peek_be32 "$1" "$off")
        len=$(peek_be32 "$1" $((off + 4)))
        [ "$type" = 0 ] && return 1
        if [ "$type" = $((0x0537be77)) ]; then
            peek_be64 "$1" $((off + 8))
            return 0
        fi
        off=$((off + 8 + (len + 7) / 8 * 8))
    done
}
ext_field() {      # offset of the crypto extension's data (offset, length)
    local hl off type len
    hl=$(peek_be32 "$1" 100)
    off=$hl
    while :; do
        type=$(peek_be32 "$1" "$off")
        len=$(peek_be32 "$1" $((off + 4)))
        [ "$type" = $((0x0537be77)) ] && { echo $((off + 8)); return 0; }
        [ "$type" = 0 ] && return 1
        off=$((off + 8 + (len + 7) / 8 * 8))
    done
}

# IO IMAGE: the --image-opts string that opens IMAGE with secret sec0.
io() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"; }

# ---- --object and --image-opts of the commands ---------------------------

# SEC: the --object that unlocks luks_fixture's images (with $(io FILE)).
SEC=(--object secret,id=sec0,data=pw)

# luks_fixture FILE: a copy of a qemu-made 4 MiB LUKS image, passphrase
# "pw" (secret sec0). Made once per bats run and copied: qemu-img spends
# about two seconds timing its key derivation, whatever iter-time says.
luks_fixture() {
    local cache=${BATS_RUN_TMPDIR:-$BATS_FILE_TMPDIR}/luks-fixture.qcow2 tmp
    if [ ! -e "$cache" ]; then
        tmp=$(mktemp "$cache.XXXXXX") || return 1
        luks_image "$tmp" pw || return 1
        mv "$tmp" "$cache"
    fi
    cp "$cache" "$1"
}

# same_cmd ARGS...: "qemu-img ARGS" run in a/ and "qimg ARGS" in b/, two
# fresh copies of fx/, exit with the same status and print the same stdout
# and stderr (the program's name aside). a/ and b/ stay for the caller.
same_cmd() {
    local qrc=0 irc=0
    rm -rf a b
    cp -a fx a
    cp -a fx b
    (cd a && qemu-img "$@") >a.out 2>a.err || qrc=$?
    (cd b && qimg "$@") >b.out 2>b.err || irc=$?
    sed -i 's/qemu-img/qimg/g' a.err
    [ "$qrc" = "$irc" ] || {
        echo "$* exits $qrc in qemu-img, $irc in qimg:" >&2
        cat a.err b.err >&2
        return 1
    }
    diff a.out b.out >&2 || { echo "$*: stdout differs" >&2; return 1; }
    diff a.err b.err >&2 || { echo "$*: stderr differs" >&2; return 1; }
}

# object_help CMD: "qimg CMD --object help" lists the object types as
# qemu-img does (qimg has only secret), exits 0 at once, needs no file and
# ignores what follows.
object_help() {
    local q i
    q=$(qemu-img "$1" --object help --no-such-option) || return 1
    i=$(qimg "$1" --object help --no-such-option) ||
        { echo "qimg $1 --object help failed" >&2; return 1; }
    [ "$(head -n 1 <<<"$q")" = "$(head -n 1 <<<"$i")" ] ||
        { echo "qimg $1 --object help: first line '$(head -n 1 <<<"$i")'" >&2; return 1; }
    grep -qx '  secret' <<<"$i" || { echo "qimg $1 --object help lists no secret" >&2; return 1; }
    ! comm -13 <(sort <<<"$q") <(sort <<<"$i") | grep . >&2 ||
        { echo "qimg $1 --object help lists what qemu-img does not" >&2; return 1; }
}

# luks_chain DIR: DIR/top.qcow2, a LUKS overlay (luks_fixture) with data of
# its own, over DIR/base.qcow2 (plain, with data).
luks_chain() {
    mkdir -p "$1"
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qemu-io -c 'write -P 1 0 2M' -c 'write -P 4 3M 64k' "$1/base.qcow2" >/dev/null
    luks_fixture "$1/top.qcow2"
    qemu-img rebase -u "${SEC[@]}" -b base.qcow2 -F qcow2 --image-opts "$(io "$1/top.qcow2")"
    qio "$1/top.qcow2" pw 'write -P 3 1M 64k' 'write -z 3M 64k' >/dev/null
}
