#!/usr/bin/env bats
# compare.bats - `qimg compare` answers as `qemu-img compare` does: the same
# messages, the same offsets, the same exit codes, over chains, zero and
# compressed clusters, v2 and v3 images and raw files; it never writes, and
# it does not read what allocation says cannot differ.
load helpers
load crypto_helpers

setup() { common_setup; }

# same_compare ARGS...: qimg compare ARGS prints what qemu-img compare
# ARGS prints (stdout and stderr) and exits with the same code.
same_compare() {
    local q i qrc irc
    q=$(qemu-img compare "$@" 2>&1) && qrc=0 || qrc=$?
    i=$(qimg compare "$@" 2>&1) && irc=0 || irc=$?
    q=${q//qemu-img:/qimg:}
    [ "$q" = "$i" ] && [ "$qrc" = "$irc" ] || {
        echo "compare $* differs (qemu-img exit $qrc, qimg exit $irc):" >&2
        diff <(echo "$q") <(echo "$i") >&2
        return 1
    }
}

# base <- top, data, zeros and holes at both levels ($1: compat)
make_chain() {
    qemu-img create -q -f qcow2 -o compat=$1 base.qcow2 8M
    qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 64k' -c 'write -P 3 3M 192k' \
        base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=$1 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 5 512k 128k' -c 'write -z 3M 64k' -c 'write -P 6 5M 64k' \
        top.qcow2 >/dev/null
}

@test "a chain and its flattened copies are identical, v2 and v3" {
    for compat in 0.10 1.1; do
        rm -f ./*.qcow2 ./*.raw
        make_chain $compat
        qemu-img convert -O raw top.qcow2 flat.raw
        qemu-img convert -O qcow2 top.qcow2 flat.qcow2
        qemu-img convert -c -O qcow2 top.qcow2 comp.qcow2
        run -0 qimg compare top.qcow2 flat.raw
        assert_output "Images are identical."
        same_compare top.qcow2 flat.raw
        same_compare flat.raw top.qcow2
        same_compare top.qcow2 flat.qcow2
        same_compare comp.qcow2 top.qcow2
        same_compare -f qcow2 -F raw top.qcow2 flat.raw
    done
}

@test "a difference is found at the offset qemu-img gives" {
    make_chain 1.1
    qemu-img convert -O raw top.qcow2 flat.raw
    for off in 1234 700000 3146000 5242880 8388607; do
        cp flat.raw d.raw
        printf '\x5a' | dd of=d.raw bs=1 seek=$off conv=notrunc status=none
        run -1 qimg compare top.qcow2 d.raw
        assert_output --partial "Content mismatch at offset"
        same_compare top.qcow2 d.raw
        same_compare d.raw top.qcow2
    done
}

@test "a difference in the backing file, or in a compressed cluster, is found" {
    make_chain 1.1
    qemu-img convert -c -O qcow2 top.qcow2 comp.qcow2
    cp top.qcow2 top2.qcow2
    qemu-io -c 'write -P 9 100k 512' base.qcow2 >/dev/null
    same_compare top.qcow2 comp.qcow2
    qemu-io -c 'write -P 0 3M 1k' comp.qcow2 >/dev/null
    same_compare top.qcow2 comp.qcow2
    run -1 qimg compare top.qcow2 comp.qcow2
}

@test "zero clusters, unallocated ranges and zeroed data compare equal" {
    qemu-img create -q -f qcow2 a.qcow2 4M
    qemu-img create -q -f qcow2 -o compat=0.10 b.qcow2 4M
    qemu-io -c 'write -P 0 0 1M' -c 'write -z 2M 1M' b.qcow2 >/dev/null
    truncate -s 4M c.raw
    same_compare a.qcow2 b.qcow2
    same_compare b.qcow2 c.raw
    run -0 qimg compare a.qcow2 c.raw
}

@test "images of different sizes: a warning, and the tail must read as zeros" {
    qemu-img create -q -f qcow2 small.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' small.qcow2 >/dev/null
    qemu-img create -q -f qcow2 big.qcow2 8M
    qemu-io -c 'write -P 1 0 1M' -c 'write -z 6M 64k' big.qcow2 >/dev/null
    same_compare small.qcow2 big.qcow2
    same_compare big.qcow2 small.qcow2
    qemu-io -c 'write -P 1 6M 1k' big.qcow2 >/dev/null
    same_compare small.qcow2 big.qcow2
    run -1 qimg compare small.qcow2 big.qcow2
    assert_line --index 0 "Warning: Image size mismatch!"
    # a backing file shorter than its overlay reads as zeros past its end
    qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 over.qcow2 8M
    same_compare over.qcow2 small.qcow2
}

@test "strict mode: sizes and allocation must match too" {
    make_chain 1.1
    qemu-img convert -O raw top.qcow2 flat.raw
    cp top.qcow2 copy.qcow2
    cp base.qcow2 copybase.qcow2
    same_compare -s top.qcow2 flat.raw
    same_compare -s flat.raw top.qcow2
    same_compare -s top.qcow2 copy.qcow2
    same_compare -s base.qcow2 copybase.qcow2
    qemu-img create -q -f qcow2 big.qcow2 16M
    same_compare -s top.qcow2 big.qcow2
    same_compare -s -q top.qcow2 big.qcow2
}

@test "-q prints nothing and answers by the exit code" {
    make_chain 1.1
    qemu-img convert -O raw top.qcow2 flat.raw
    run -0 qimg compare -q top.qcow2 flat.raw
    assert_output ""
    printf '\x5a' | dd of=flat.raw bs=1 seek=9999 conv=notrunc status=none
    run -1 qimg compare -q top.qcow2 flat.raw
    assert_output ""
}

@test "errors: exit 2 when an image cannot be opened, 1 on bad usage" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    same_compare a.qcow2 missing.qcow2
    same_compare missing.qcow2 a.qcow2
    same_compare -f raw -F qcow2 a.qcow2 a.qcow2
    run -2 qimg compare -F vmdk a.qcow2 a.qcow2
    run -1 qimg compare a.qcow2
    assert_output --partial "Expecting two image file names"
    run -1 qimg compare a.qcow2 a.qcow2 a.qcow2
    run -1 qimg compare --bogus a.qcow2 a.qcow2
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
    same_compare orphan.qcow2 a.qcow2
}

@test "compare never writes; -U opens images another process holds" {
    make_chain 1.1
    qemu-img convert -O raw top.qcow2 flat.raw
    s1=$(file_sum top.qcow2) s2=$(file_sum base.qcow2) s3=$(file_sum flat.raw)
    qemu-io -c 'sleep 3000' top.qcow2 3>&- &
    sleep 0.5
    run -2 qimg compare top.qcow2 flat.raw
    assert_output --partial "lock"
    run -0 qimg compare -U top.qcow2 flat.raw
    kill %1 2>/dev/null || true
    wait || true
    [ "$(file_sum top.qcow2)" = "$s1" ]
    [ "$(file_sum base.qcow2)" = "$s2" ]
    [ "$(file_sum flat.raw)" = "$s3" ]
}

@test "sparse terabyte images compare in a moment, reading only their data" {
    qemu-img create -q -f qcow2 a.qcow2 1T
    qemu-img create -q -f qcow2 b.qcow2 1T
    qemu-io -c 'write -P 1 100G 1M' -c 'write -z 500G 1M' a.qcow2 >/dev/null
    qemu-io -c 'write -P 1 100G 1M' -c 'write -P 0 700G 64k' b.qcow2 >/dev/null
    truncate -s 1T c.raw
    start=$(date +%s%N)
    run -0 qimg compare a.qcow2 b.qcow2
    assert_output "Images are identical."
    run -1 qimg compare a.qcow2 c.raw
    assert_output "Content mismatch at offset 107374182400!"
    qemu-io -c 'write -P 0 100G 1M' b.qcow2 >/dev/null
    run -0 qimg compare -q b.qcow2 c.raw
    elapsed=$((($(date +%s%N) - start) / 1000000))
    [ "$elapsed" -lt 10000 ] || fail "took ${elapsed} ms"
}

@test "encrypted images named by --image-opts compare as in qemu-img compare" {
    mkdir fx
    luks_fixture fx/e.qcow2
    qio fx/e.qcow2 pw 'write -P 1 0 1M' >/dev/null
    cp fx/e.qcow2 fx/f.qcow2
    same_cmd compare "${SEC[@]}" --image-opts "$(io e.qcow2)" "$(io f.qcow2)"
    qio fx/f.qcow2 pw 'write -P 2 700k 1k' >/dev/null
    same_cmd compare "${SEC[@]}" --image-opts "$(io e.qcow2)" "$(io f.qcow2)"
    same_cmd compare "${SEC[@]}" -s --image-opts "$(io e.qcow2)" "$(io e.qcow2)"
    qconvert fx/e.qcow2 pw fx/e.raw
    same_cmd compare "${SEC[@]}" --image-opts "$(io e.qcow2)" driver=raw,file.filename=e.raw
}

@test "a missing or wrong secret, -F with --image-opts, a bad --object: qemu-img compare's exit codes" {
    local o
    mkdir fx
    luks_fixture fx/e.qcow2
    o=$(io e.qcow2)
    same_cmd compare --image-opts "$o" "$o"
    same_cmd compare --object secret,id=sec0,data=bad --image-opts "$o" "$o"
    same_cmd compare "${SEC[@]}" -F qcow2 --image-opts "$o" "$o"
    same_cmd compare "${SEC[@]}" --image-opts "$o" e.qcow2
    same_cmd compare --object secret,id=sec0 --image-opts "$o" "$o"
    same_cmd compare "${SEC[@]}" e.qcow2 e.qcow2
    object_help compare
}
