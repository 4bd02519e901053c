#!/usr/bin/env bats
# crypto.bats - encrypted qcow2 images (qemu's legacy AES and LUKS) through
# the unit driver build/unit/crypt: what it decrypts must equal what
# qemu-img convert decrypts, LUKS headers it makes must open in qemu-io,
# data it encrypts must read back in qemu-io, and damaged headers must be
# refused with a message (qemu's where qemu has one), never a crash.
# Every image uses encrypt.iter-time=10 so unlocking is fast.
load helpers
load crypto_helpers

setup_file() {
    cd "$BATS_FILE_TMPDIR" || return 1
    # One qemu-made image of each kind, copied by the tests that need one.
    qcreate --object secret,id=sec0,data=abc \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 luks.qcow2 4M
    qcreate --object secret,id=sec0,data=abc \
        -o encrypt.format=aes,encrypt.key-secret=sec0 aes.qcow2 4M
}

setup() {
    common_setup
    CRYPT="$TOP/${BUILD:-build}/unit/crypt"
    [ -x "$CRYPT" ] || skip "unit drivers not built (make units)"
}

# same_as_qemu IMAGE PASS: the driver decrypts what qemu-img convert does.
same_as_qemu() {
    qconvert "$1" "$2" ref.raw
    run -0 "$CRYPT" "$1" "$2" mine.raw
    cmp ref.raw mine.raw
}

# qemu_msg ARGS...: qemu-img's error text for an open, without "prog: ".
qemu_msg() {
    qemu-img info "$@" 2>&1 >/dev/null | head -1 | sed 's/^qemu-img: //'
}

@test "a LUKS image with the default cipher decrypts exactly as qemu-img convert does" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    fill x.qcow2 abc
    same_as_qemu x.qcow2 abc
    # reads that start and end inside sectors (and clusters) see the same
    run -0 "$CRYPT" x.qcow2 abc odd.raw 99999
    cmp ref.raw odd.raw
    # preallocated clusters read as the decryption of what is on disk (zeros
    # here), as in qemu: a resize with preallocation=metadata makes some
    qemu-img resize -q --object secret,id=sec0,data=abc --preallocation=metadata \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=sec0 5M
    same_as_qemu x.qcow2 abc
    # and the default really is aes-256-xts-plain64 with sha256
    run -0 "$CRYPT" info x.qcow2
    [ "$(jq -r '[."cipher-alg", ."cipher-mode", ."ivgen-alg", ."hash-alg"] | join(" ")' \
        <<<"$output")" = "aes-256 xts plain64 sha256" ]
}

@test "qemu-made LUKS images with other ciphers, IV generators and hashes decrypt as qemu's" {
    # (each qemu-img create costs seconds of PBKDF2 benchmarking: ctr, ecb,
    # aes-128-xts and the other hashes are in the luks_create test, where
    # qemu-io writes the data too)
    local specs=(
        "cipher-alg=aes-192,cipher-mode=xts,ivgen-alg=plain,hash-alg=sha1"
        "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha512"
    )
    for s in "${specs[@]}"; do
        rm -f c.qcow2
        luks_image c.qcow2 'p w' "$(sed 's/\([a-z-]*=\)/encrypt.\1/g' <<<"$s")"
        qio c.qcow2 'p w' 'write -P 0x5a 512 65536' 'write -P 0xa5 1000000 3333' >/dev/null
        echo "# $s" >&3
        same_as_qemu c.qcow2 'p w'
        # and the header fields are those qemu-img info reports
        run -0 "$CRYPT" info c.qcow2
        jq -S . <<<"$output" >mine.json
        qemu-img info --output=json c.qcow2 | jq -S '."format-specific".data.encrypt' >ref.json
        diff mine.json ref.json
    done
}

@test "small clusters with extended L2 decrypt at subcluster granularity" {
    # 16 KiB clusters: 512-byte subclusters, a LUKS area of 127 clusters
    luks_image e.qcow2 abc "cluster_size=16384,extended_l2=on"
    qio e.qcow2 abc 'write -P 0x5a 2048 2048' 'write -P 0x66 100000 40000' \
        'write -P 0x77 1048064 1024' >/dev/null
    same_as_qemu e.qcow2 abc
}

@test "legacy AES images read identically to qemu's view, whatever the passphrase length" {
    for pass in a 'a much longer passphrase than sixteen bytes'; do
        rm -f a.qcow2
        qemu-img create -q -f qcow2 --object "secret,id=sec0,data=$pass" \
            -o encrypt.format=aes,encrypt.key-secret=sec0 a.qcow2 4M
        fill a.qcow2 "$pass"
        same_as_qemu a.qcow2 "$pass"
        run -0 "$CRYPT" a.qcow2 "$pass" odd.raw 77777
        cmp ref.raw odd.raw
    done
    # Only the first 16 bytes of the passphrase count, as in qemu.
    run -0 "$CRYPT" a.qcow2 'a much longer pa' mine.raw
    cmp ref.raw mine.raw
}

@test "a wrong passphrase fails with qemu's one-line message and writes nothing" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    want=$(qemu-img convert --object secret,id=sec0,data=abd -O raw \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=sec0 o.raw 2>&1 |
        sed 's/^qemu-img: //')
    [ "$want" = "Could not open 'driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=sec0': Invalid password, cannot unlock any keyslot" ]
    run -1 --separate-stderr "$CRYPT" read --object secret,id=sec0,data=abd \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=sec0 out.raw
    [ "$stderr" = "crypt: $want" ]
    [ -z "$output" ]
    [ ! -e out.raw ]
    run -1 --separate-stderr "$CRYPT" x.qcow2 '' out.raw
    [ "$stderr" = "crypt: Could not open 'x.qcow2': Invalid password, cannot unlock any keyslot" ]
}

@test "opening an encrypted image for reading without a key fails as qemu-img does" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    want=$(qemu-img convert -O raw x.qcow2 o.raw 2>&1 | sed 's/^qemu-img: //')
    run -1 --separate-stderr "$CRYPT" read x.qcow2 out.raw
    [ "$stderr" = "crypt: $want" ]
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    want=$(qemu-img convert -O raw a.qcow2 o.raw 2>&1 | sed 's/^qemu-img: //')
    run -1 --separate-stderr "$CRYPT" read a.qcow2 out.raw
    [ "$stderr" = "crypt: $want" ]
}

@test "secrets from a file keep their trailing newline, and base64 secrets decode, as in qemu" {
    printf 'abc\n' >nl.txt
    qemu-img create -q -f qcow2 n.qcow2 1M
    run -0 "$CRYPT" make-luks n.qcow2 $'abc\n' encrypt.iter-time=10
    # file= with the newline opens it; data=abc does not (qemu agrees)
    run -0 "$CRYPT" read --object secret,id=k,file=nl.txt \
        --image-opts driver=qcow2,file.filename=n.qcow2,encrypt.key-secret=k out.raw
    run -1 "$CRYPT" read --object secret,id=k,data=abc \
        --image-opts driver=qcow2,file.filename=n.qcow2,encrypt.key-secret=k out.raw
    qemu-io --object secret,id=k,file=nl.txt \
        --image-opts driver=qcow2,file.filename=n.qcow2,encrypt.key-secret=k -c 'read 0 512' >/dev/null
    # base64, and a secret encrypted with another one (keyid=, iv=)
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    run -0 "$CRYPT" read --object secret,id=k,data=YWJj,format=base64 \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=k out.raw
    key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    iv=f0e0d0c0b0a090807060504030201000
    ct=$(printf abc | openssl enc -aes-256-cbc -K $key -iv $iv | base64)
    obj1="secret,id=mk,data=$(xxd -r -p <<<"$key" | base64 -w0),format=base64"
    obj2="secret,id=k,data=$ct,format=base64,keyid=mk,iv=$(xxd -r -p <<<"$iv" | base64)"
    qemu-io --object "$obj1" --object "$obj2" \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=k -c 'read 0 512' >/dev/null
    run -0 "$CRYPT" read --object "$obj1" --object "$obj2" \
        --image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=k out.raw
}

@test "bad --object and --image-opts arguments get qemu-img's messages" {
    qemu-img create -q -f qcow2 p.qcow2 1M
    for obj in 'secret,id=x,data=1,file=nl.txt' 'secret,id=x' 'secret,data=1' \
        'secret,id=9x,data=1' 'secret,id=x,data=1,bogus=2' 'secret,id=x,data=@@,format=base64' \
        'secret,id=x,data=1,format=hex' 'secret,id=x,file=/nonexistent' 'foo,id=x' \
        'secret,id=x,data=1,keyid=nope' 'secret,id=x,data'; do
        want=$(qemu-img info --object "$obj" p.qcow2 2>&1 >/dev/null | head -1)
        run -1 --separate-stderr "$CRYPT" read --object "$obj" p.qcow2 out.raw
        echo "# $obj: $stderr" >&3
        [ "$stderr" = "crypt: ${want#qemu-img: }" ]
    done
    run -1 --separate-stderr "$CRYPT" read --object secret,id=x,data=1 \
        --object secret,id=x,data=2 p.qcow2 out.raw
    [ "$stderr" = "crypt: attempt to add duplicate property 'x' to object (type 'container')" ]
    qemu-img create -q -f raw r.raw 1M
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    for io in 'driver=raw,file.filename=r.raw,encrypt.key-secret=x' 'driver=qcow2' \
        'filename=p.qcow2' 'driver=qcow2,file.filename=p.qcow2,foo=bar' \
        'driver=qcow2,file.filename=p.qcow2,file.foo=1' \
        'driver=qcow2,file.filename=p.qcow2,encrypt.format=luks' \
        'driver=qcow2,file.filename=x.qcow2,encrypt.format=aes,encrypt.key-secret=x'; do
        want=$(qemu_msg --object secret,id=x,data=abc --image-opts "$io")
        [ -n "$want" ] || want=$(qemu-img convert --object secret,id=x,data=abc \
            --image-opts "$io" -O raw o.raw 2>&1 | head -1 | sed 's/^qemu-img: //')
        run -1 --separate-stderr "$CRYPT" read --object secret,id=x,data=abc --image-opts "$io" out.raw
        echo "# $io: $stderr" >&3
        [ "$stderr" = "crypt: $want" ]
    done
    # An unencrypted image ignores a key, even one naming no secret, as qemu does.
    run -0 "$CRYPT" read --object secret,id=x,data=abc \
        --image-opts driver=qcow2,file.filename=p.qcow2,encrypt.key-secret=x out.raw
    run -0 "$CRYPT" read --image-opts driver=qcow2,file.filename=p.qcow2,encrypt.key-secret=no out.raw
}

@test "LUKS headers made by luks_create open in qemu-io, and qemu-img check is clean" {
    for o in "" "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=ripemd160" \
        "encrypt.cipher-alg=aes-128,encrypt.ivgen-alg=plain,encrypt.ivgen-hash-alg=sha512,encrypt.hash-alg=md5" \
        "encrypt.cipher-alg=aes-256,encrypt.cipher-mode=ctr,encrypt.hash-alg=sha224" \
        "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=ecb,encrypt.hash-alg=sha384"; do
        rm -f m.qcow2
        qemu-img create -q -f qcow2 m.qcow2 4M
        run -0 "$CRYPT" make-luks m.qcow2 'pass word' "encrypt.iter-time=10${o:+,$o}"
        run -0 qemu-img check --object secret,id=sec0,data='pass word' \
            --image-opts driver=qcow2,file.filename=m.qcow2,encrypt.key-secret=sec0
        qio m.qcow2 'pass word' 'write -P 0x5a 512 65536' 'write -P 0xa5 1000000 3333' >/dev/null
        same_as_qemu m.qcow2 'pass word'
        # the same layout and fields qemu reports
        run -0 "$CRYPT" info m.qcow2
        jq -S . <<<"$output" >mine.json
        qemu-img info --output=json m.qcow2 | jq -S '."format-specific".data.encrypt' >ref.json
        diff mine.json ref.json
        [ "$(jq -r '.slots[0].iters' mine.json)" -ge 1000 ]
    done
    # Like qemu, the passphrase must unlock it and nothing else.
    run -1 "$CRYPT" m.qcow2 'pass wore' out.raw
}

@test "guest data encrypted by the write helper reads back in qemu-io, around unaligned edges" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    for img in x.qcow2 a.qcow2; do
        qio $img abc 'write -P 0x5a 0 256k' >/dev/null
        run -0 "$CRYPT" write $img abc 1000 0x77 3000
        run -0 "$CRYPT" write $img abc 65536 0x42 1024
        run -0 "$CRYPT" write $img abc 130000 0x24 70000
        run -0 qio $img abc 'read -P 0x5a 0 1000' 'read -P 0x77 1000 3000' \
            'read -P 0x5a 4000 61536' 'read -P 0x42 65536 1024' 'read -P 0x5a 66560 63440' \
            'read -P 0x24 130000 70000' 'read -P 0x5a 200000 62144'
        refute_output --partial "Pattern verification failed"
        same_as_qemu $img abc
    done
}

@test "truncated and lying LUKS headers are refused with a message, never a crash" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" base.qcow2
    H=$(luks_offset base.qcow2)
    E=$(ext_field base.qcow2)
    # field offset, bytes, q when qemu 7.2 says the same / o when only qimg
    # checks it, and the message
    cases=(
        "0 58 q Volume is not in LUKS format"
        "6 0002 q LUKS version 2 is not supported"
        "8 $(printf '61%.0s' {1..32}) q LUKS header cipher name is not NUL terminated"
        "72 73686132353700 q Hash algorithm 'sha257' not supported"
        "40 78747300 q Unexpected cipher mode string format 'xts'"
        "104 00000002 q LUKS payload is overlapping with the header"
        "108 00000000 o LUKS master key length 0 is not supported"
        "108 ffffffff o LUKS master key length 4294967295 is not supported"
        "164 00000000 q LUKS key iteration count is zero"
        "164 ffffffff o LUKS key iteration count 4294967295 is larger than 67108864"
        "212 00000000 q Keyslot 0 iteration count is zero"
        "212 ffffffff o Keyslot 0 iteration count 4294967295 is larger than 67108864"
        "248 00001000 q Keyslot 0 is overlapping with the encrypted payload"
        "248 fffffff0 o Keyslot 0 is overlapping with the encrypted payload"
        "248 00000001 q Keyslot 0 is overlapping with the LUKS header"
        "248 00000200 q Keyslots 0 and 1 are overlapping in the header"
        "252 ffffffff q Keyslot 0 is corrupted (stripes -1 != 4000)"
        "304 00000001 q Keyslot 2 state (active/disable) is corrupted"
    )
    for c in "${cases[@]}"; do
        read -r off bytes who msg <<<"$c"
        cp base.qcow2 t.qcow2
        poke t.qcow2 $((H + off)) "$bytes"
        run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
        echo "# +$off: $stderr" >&3
        [ "$stderr" = "crypt: Could not open 't.qcow2': $msg" ]
        [ ! -e out.raw ]
        # keyless opens check the header too, as qemu's info does
        if [ "$off" = 0 ] || [ "$off" = 252 ]; then
            run -1 --separate-stderr "$CRYPT" info t.qcow2
            [ "$stderr" = "crypt: Could not open 't.qcow2': $msg" ]
        fi
        if [ "$who" = q ]; then
            [ "$(qemu_msg t.qcow2)" = "Could not open 't.qcow2': $msg" ]
        fi
    done
    # the header area: too short for the key material, too short for the
    # header, not cluster aligned, past the end of the file
    cp base.qcow2 t.qcow2; poke_be64 t.qcow2 $((E + 8)) 8192
    run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
    [ "$stderr" = "crypt: Could not open 't.qcow2': Keyslot 0 key material lies past the end of the encryption header (8192 bytes)" ]
    cp base.qcow2 t.qcow2; poke_be64 t.qcow2 $((E + 8)) 100
    run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
    [ "$stderr" = "crypt: Could not open 't.qcow2': Request for data outside of extension header" ]
    cp base.qcow2 t.qcow2; poke_be64 t.qcow2 "$E" $((H + 512))
    run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
    [ "$stderr" = "crypt: Could not open 't.qcow2': $(qemu_msg t.qcow2 | sed "s/^Could not open 't.qcow2': //")" ]
    cp base.qcow2 t.qcow2; poke_be64 t.qcow2 "$E" $((1 << 40))
    run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
    [[ "$stderr" == *"lies outside the image" ]]
    # an encryption header pointer in an AES image
    cp "$BATS_FILE_TMPDIR/aes.qcow2" t.qcow2
    poke t.qcow2 $(peek_be32 t.qcow2 100) 0537be770000001000000000000400000000000000001000
    run -1 --separate-stderr "$CRYPT" t.qcow2 abc out.raw
    [ "$stderr" = "crypt: $(qemu_msg t.qcow2)" ]
}

@test "random damage to the LUKS header never crashes the parser or the unlock" {
    qemu-img create -q -f qcow2 f.qcow2 1M
    run -0 "$CRYPT" make-luks f.qcow2 abc encrypt.iter-time=0
    # in-process: 300 damaged headers, parsed and (when they parse) unlocked
    run -0 "$CRYPT" fuzz f.qcow2 abc 300 1
    echo "# $output" >&3
    [[ "$output" =~ ^[0-9]+\ refused,\ [1-9][0-9]*\ parsed ]]
    # and a few through the whole open path, in a process of their own
    H=$(luks_offset f.qcow2)
    RANDOM=7
    for i in $(seq 1 10); do
        cp f.qcow2 t.qcow2
        poke t.qcow2 $((H + RANDOM % 208)) "$(printf '%02x' $((RANDOM % 256)))"
        run "$CRYPT" t.qcow2 abc out.raw
        [ "$status" -lt 2 ] || { echo "status $status: $output"; false; }
    done
}

@test "a compressed cluster in an encrypted image is refused" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    qio x.qcow2 abc 'write -P 0x5a 0 64k' >/dev/null
    l1=$(peek_be64 x.qcow2 40)
    # the low 56 bits of the entries (bit 63, "copied", is set in both)
    l2=$(( 0x$(xxd -p -s $((l1 + 1)) -l 7 x.qcow2) & ~0x1ff ))
    host=$(( 0x$(xxd -p -s $((l2 + 1)) -l 7 x.qcow2) & ~0x1ff ))
    poke_be64 x.qcow2 "$l2" $(( host | (1 << 62) ))
    run -1 --separate-stderr "$CRYPT" x.qcow2 abc out.raw
    [[ "$stderr" == *"Compressed cluster at guest offset 0 in an encrypted image"* ]]
}

@test "allocating writes at unaligned offsets through the write path read back in qemu" {
    # (copy-on-write of the untouched head and tail of each new cluster
    # goes through the cipher too; LUKS uses host offsets, AES guest ones)
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    luks_image s.qcow2 abc "cluster_size=16384,extended_l2=on"
    local writes=("0x77 1000 3000" "0x42 65000 2000" "0x24 200000 100" "0x11 1500 10"
        "0x99 4193792 512" "0x5a 1048575 70001")
    qemu-img create -q -f raw ref.raw 4M
    for w in "${writes[@]}"; do
        set -- $w
        qemu-io -f raw -c "write -P $1 $2 $3" ref.raw >/dev/null
    done
    for img in x.qcow2 a.qcow2 s.qcow2; do
        for w in "${writes[@]}"; do
            set -- $w
            run -0 "$CRYPT" pwrite $img abc "$2" "$1" "$3"
        done
        qconvert $img abc back.raw
        cmp ref.raw back.raw
        qemu-img check -q --object secret,id=sec0,data=abc --image-opts "$(io $img)"
    done
}
