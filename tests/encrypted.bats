#!/usr/bin/env bats
# encrypted.bats - encrypted images through the commands: qimg create and
# convert make LUKS and AES images qemu-img reads (and lays out as qemu-img
# does), qimg convert and info read qemu's, wrong keys fail in one line,
# compression and encryption do not mix, and check counts the LUKS header.
# The engine's crypto (ciphers, header parsing, unlock) is crypto.bats.
load helpers
load crypto_helpers

setup_file() {
    cd "$BATS_FILE_TMPDIR" || return 1
    qcreate --object secret,id=sec0,data=abc \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 luks.qcow2 4M
    qcreate --object secret,id=sec0,data=abc \
        -o encrypt.format=aes,encrypt.key-secret=sec0 aes.qcow2 4M
}

setup() { common_setup; }

# qimg_create IMAGE PASS SIZE [-o extra]: a LUKS (or -o given) image by qimg.
qimg_luks() {
    qimg create -q -f qcow2 --object "secret,id=sec0,data=$2" \
        -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10${4:+,$4}" "$1" "$3"
}

@test "qimg convert decrypts qemu-made LUKS and AES images exactly as qemu-img convert" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    luks_image c.qcow2 abc "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv"
    for img in x.qcow2 a.qcow2 c.qcow2; do
        fill $img abc
        qconvert $img abc ref.raw
        run -0 qimg convert --object secret,id=sec0,data=abc --image-opts "$(io $img)" out.raw
        cmp ref.raw out.raw
        # and -O qcow2: a plain image with the same guest data
        run -0 qimg convert --object secret,id=sec0,data=abc -O qcow2 --image-opts "$(io $img)" p.qcow2
        qemu-img compare -f raw -F qcow2 ref.raw p.qcow2
    done
}

@test "qimg-made LUKS (several ciphers) and AES images read in qemu-img as their source" {
    make_pattern src.raw 2
    truncate -s 3M src.raw
    local o
    for o in "encrypt.format=luks,encrypt.iter-time=10" \
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha1" \
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-mode=ctr,extended_l2=on,cluster_size=32k" \
        "encrypt.format=aes,cluster_size=4k" "encryption=on,compat=0.10"; do
        rm -f e.qcow2
        echo "# $o" >&3
        run -0 qimg convert --object 'secret,id=sec0,data=p w' -O qcow2 \
            -o "$o,encrypt.key-secret=sec0" src.raw e.qcow2
        qconvert e.qcow2 'p w' back.raw
        cmp src.raw back.raw
        qemu-img check -q --object 'secret,id=sec0,data=p w' --image-opts "$(io e.qcow2)"
        # and qimg reads back its own
        run -0 qimg convert --object 'secret,id=sec0,data=p w' --image-opts "$(io e.qcow2)" mine.raw
        cmp src.raw mine.raw
        # info needs no key; it prints what qemu-img info prints
        run -0 qimg info e.qcow2
        assert_output "$(qemu-img info e.qcow2)"
        run -0 qimg info --output=json e.qcow2
        assert_output "$(qemu-img info --output=json e.qcow2)"
    done
}

@test "writes into an encrypted image (convert -n, unaligned edges) read back in qemu-io" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    qimg_luks q.qcow2 abc 4M cluster_size=4k
    make_pattern pat.raw 4
    truncate -s 4M pat.raw
    for img in x.qcow2 a.qcow2 q.qcow2; do
        qio $img abc 'write -P 0x5a 0 4M' >/dev/null
        run -0 qimg convert -n --object secret,id=sec0,data=abc -f raw --target-image-opts \
            pat.raw "$(io $img)"
        qconvert $img abc back.raw
        cmp pat.raw back.raw
        qemu-img check -q --object secret,id=sec0,data=abc --image-opts "$(io $img)"
    done
}

@test "raw -> encrypted qcow2 -> raw round-trips in qimg, preallocation included" {
    make_pattern src.raw 1
    truncate -s 2M src.raw
    for p in off metadata full; do
        rm -f e.qcow2
        run -0 qimg convert --object secret,id=sec0,data=abc -O qcow2 -o \
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,preallocation=$p" \
            src.raw e.qcow2
        run -0 qimg convert --object secret,id=sec0,data=abc --image-opts "$(io e.qcow2)" back.raw
        cmp src.raw back.raw
        qconvert e.qcow2 abc ref.raw
        cmp src.raw ref.raw
        qemu-img check -q --object secret,id=sec0,data=abc --image-opts "$(io e.qcow2)"
    done
}

@test "qimg create lays a LUKS image out as qemu-img does, at 512-byte and 64 KiB clusters" {
    # 512: the LUKS area needs refcount blocks of its own; 64k: one cluster each
    for cs in 512 65536; do
        rm -f m.qcow2 q.qcow2
        qimg_luks m.qcow2 abc 64M "cluster_size=$cs"
        qcreate --object secret,id=sec0,data=abc \
            -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=$cs" q.qcow2 64M
        # header fields and extensions, the LUKS area, the file's length
        for f in 4 20 24 32 36 40 48 56 60 72 80 96 100; do
            [ "$(peek_be32 m.qcow2 $f)" = "$(peek_be32 q.qcow2 $f)" ] || fail "header +$f differs at $cs"
        done
        [ "$(luks_offset m.qcow2)" = "$(luks_offset q.qcow2)" ]
        E=$(ext_field m.qcow2)
        [ "$(peek_be64 m.qcow2 $((E + 8)))" = "$(peek_be64 q.qcow2 $((E + 8)))" ]
        [ "$(stat -c %s m.qcow2)" = "$(stat -c %s q.qcow2)" ]
        # the LUKS fields qemu-img info reports, but the random and timed ones
        strip='del(.uuid, ."master-key-iters", .slots[0].iters)'
        diff <(qemu-img info --output=json m.qcow2 | jq -S ".\"format-specific\".data.encrypt | $strip") \
            <(qemu-img info --output=json q.qcow2 | jq -S ".\"format-specific\".data.encrypt | $strip")
        qemu-img check -q --object secret,id=sec0,data=abc --image-opts "$(io m.qcow2)"
    done
}

@test "info on encrypted images prints what qemu-img info prints, without a key" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    cp "$BATS_FILE_TMPDIR/aes.qcow2" a.qcow2
    luks_image c.qcow2 abc "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha512"
    for img in x.qcow2 a.qcow2 c.qcow2; do
        run -0 qimg info $img
        assert_output "$(qemu-img info $img)"
        run -0 qimg info --output=json $img
        assert_output "$(qemu-img info --output=json $img)"
    done
}

@test "info --image-opts names the image as qemu-img does and needs no right key" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    local args
    for args in "--object secret,id=sec0,data=abc --image-opts $(io x.qcow2)" \
        "--object secret,id=sec0,data=wrong --image-opts $(io x.qcow2)" \
        "--output=json --image-opts driver=qcow2,file.filename=x.qcow2" \
        "--image-opts driver=qcow2,file.filename=x.qcow2,encrypt.key-secret=nope,encrypt.format=aes"; do
        run qimg info $args
        assert_output "$(qemu-img info $args 2>&1 | sed 's/^qemu-img:/qimg:/')"
    done
}

@test "a wrong passphrase or no key fails in one line naming the image, on every path" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    make_pattern src.raw 1
    truncate -s 4M src.raw
    s=$(file_sum x.qcow2)
    # convert from it
    run -1 --separate-stderr qimg convert --object secret,id=sec0,data=abd --image-opts "$(io x.qcow2)" o.raw
    [ "$stderr" = "qimg: Could not open '$(io x.qcow2)': Invalid password, cannot unlock any keyslot" ]
    [ ! -e o.raw ]
    run -1 --separate-stderr qimg convert x.qcow2 o.raw
    [ "$stderr" = "$(qemu-img convert x.qcow2 o.raw 2>&1 | sed 's/^qemu-img/qimg/')" ]
    [ ! -e o.raw ]
    # convert into it
    run -1 --separate-stderr qimg convert -n --object secret,id=sec0,data=abd -f raw \
        --target-image-opts src.raw "$(io x.qcow2)"
    [ "$stderr" = "qimg: Could not open '$(io x.qcow2)': Invalid password, cannot unlock any keyslot" ]
    run -1 --separate-stderr qimg convert -n -f raw -O qcow2 src.raw x.qcow2
    [ "$stderr" = "$(qemu-img convert -n -f raw -O qcow2 src.raw x.qcow2 2>&1 | sed 's/^qemu-img/qimg/')" ]
    [ "$(file_sum x.qcow2)" = "$s" ]
    # a new image whose secret is not defined
    run -1 --separate-stderr qimg convert -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0 src.raw n.qcow2
    [ "$stderr" = "$(qemu-img convert -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0 src.raw n.qcow2 2>&1 | sed 's/^qemu-img/qimg/')" ]
    [ ! -e n.qcow2 ]
}

@test "compression and encryption together are refused as qemu-img refuses them" {
    make_pattern src.raw 1
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    o=encrypt.format=luks,encrypt.key-secret=sec0
    run -1 --separate-stderr qimg convert -c --object secret,id=sec0,data=abc -O qcow2 -o $o src.raw n.qcow2
    [ "$stderr" = "$(qemu-img convert -c --object secret,id=sec0,data=abc -O qcow2 -o $o src.raw n.qcow2 2>&1 | sed 's/^qemu-img/qimg/')" ]
    [ ! -e n.qcow2 ]
    # into an existing encrypted image, qemu-img writes uncompressed (and so does qimg)
    truncate -s 4M src.raw
    run -0 qimg convert -c -n --object secret,id=sec0,data=abc -f raw --target-image-opts \
        src.raw "$(io x.qcow2)"
    qconvert x.qcow2 abc back.raw
    cmp src.raw back.raw
    run -0 qimg check x.qcow2
    assert_line --partial "0.00% compressed clusters"
}

@test "the checker counts the LUKS header clusters: qimg check agrees with qemu-img check" {
    cp "$BATS_FILE_TMPDIR/luks.qcow2" x.qcow2
    fill x.qcow2 abc
    qimg_luks q.qcow2 abc 4M cluster_size=4k
    for img in x.qcow2 q.qcow2; do
        run -0 qimg check --output=json $img
        jq -S 'del(.filename)' <<<"$output" >mine.json
        qemu-img check --output=json --object secret,id=sec0,data=abc --image-opts "$(io $img)" |
            jq -S 'del(.filename)' >ref.json
        diff mine.json ref.json
        # a leaked cluster is found and repaired; the header stays readable
        qemu-img resize -q --object secret,id=sec0,data=abc --image-opts "$(io $img)" 8M
        qconvert $img abc before.raw
        run -0 qimg repair $img
        qconvert $img abc after.raw
        cmp before.raw after.raw
    done
}
