#!/usr/bin/env bats
# rebase.bats - `qimg rebase` runs side by side with `qemu-img rebase` on
# copies of the same images: the same messages and exit codes, the same
# backing file named afterwards, the same guest content (convert -O raw,
# cmp), and a result `qemu-img check` finds clean. A rebase killed at any
# write leaves the guest content as it was.
load helpers
load crypto_helpers

setup() { common_setup; }

# base <- top, and new (another base): data, zeros, compressed and
# unallocated ranges; $1 is the compat level.
make_images() {
    local c=$1
    qemu-img create -q -f qcow2 -o compat=$c base.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -z 1536k 64k' -c 'write -c -P 4 3M 64k' \
        -c 'write -P 5 3200k 100k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=$c new.qcow2 4M
    qemu-io -c 'write -P 1 0 512k' -c 'write -P 2 2M 64k' -c 'write -P 4 3M 64k' \
        -c 'write -P 1 600k 4k' new.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o compat=$c -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 3 64k 64k' -c 'write -z 3200k 64k' top.qcow2 >/dev/null
}

# same_rebase ARGS...: run qemu-img rebase ARGS on a copy q.qcow2 of
# top.qcow2 and qimg rebase ARGS on another, i.qcow2; compare output, exit
# code, backing file lines of info, guest content, and check i.qcow2.
same_rebase() {
    local q i qrc irc
    cp top.qcow2 q.qcow2
    cp top.qcow2 i.qcow2
    q=$(qemu-img rebase "$@" q.qcow2 2>&1) && qrc=0 || qrc=$?
    i=$(qimg rebase "$@" i.qcow2 2>&1) && irc=0 || irc=$?
    q=${q//qemu-img:/qimg:}
    q=${q//q.qcow2/i.qcow2}
    # (qimg points at "qimg rebase --help", qemu-img at "qemu-img --help")
    q=$(grep -v '^Try ' <<<"$q" || true)
    i=$(grep -v '^Try ' <<<"$i" || true)
    [ "$q" = "$i" ] && [ "$qrc" = "$irc" ] || {
        echo "rebase $* differs (qemu-img exit $qrc, qimg exit $irc):" >&2
        diff <(echo "$q") <(echo "$i") >&2
        return 1
    }
    [ "$irc" = 0 ] && [ -n "${NO_OPEN:-}" ] && return 0
    qemu-img check -q i.qcow2 || { echo "rebase $*: i.qcow2 does not check clean" >&2; return 1; }
    diff <(qemu-img info q.qcow2 | grep '^backing') <(qemu-img info i.qcow2 | grep '^backing') ||
        { echo "rebase $*: another backing file is named" >&2; return 1; }
    qemu-img convert -O raw q.qcow2 q.raw
    qemu-img convert -O raw i.qcow2 i.raw
    cmp q.raw i.raw || { echo "rebase $*: the guest content differs" >&2; return 1; }
}

@test "a safe rebase keeps the guest content and names the new backing file, v2 and v3" {
    for c in 0.10 1.1; do
        rm -f ./*.qcow2 ./*.raw
        make_images $c
        qemu-img convert -O raw top.qcow2 before.raw
        same_rebase -b new.qcow2 -F qcow2
        cmp before.raw i.raw
        run -0 qimg rebase -b new.qcow2 -F qcow2 top.qcow2
        assert_output ""
        run -0 qemu-img info top.qcow2
        assert_line "backing file: new.qcow2"
        assert_line "backing file format: qcow2"
    done
}

@test "only clusters that differ are copied" {
    make_images 1.1
    # new holds what base holds: nothing needs copying
    cp base.qcow2 same.qcow2
    cp top.qcow2 t.qcow2
    qimg rebase -b same.qcow2 -F qcow2 t.qcow2
    local_ranges() {
        qemu-img map --output=json "$1" | jq -c '.[] | select(.depth == 0 and .present)'
    }
    diff <(local_ranges top.qcow2) <(local_ranges t.qcow2)
    # new differs from base in some clusters: those, and only those, are copied
    cp top.qcow2 t.qcow2
    qimg rebase -b new.qcow2 -F qcow2 t.qcow2
    [ "$(local_ranges t.qcow2 | wc -l)" -gt "$(local_ranges top.qcow2 | wc -l)" ]
    [ "$(stat -c %s t.qcow2)" -lt $((4 * 1048576)) ]
}

@test "-b \"\" flattens: the image stands alone with the same content" {
    make_images 1.1
    qemu-img convert -O raw top.qcow2 before.raw
    same_rebase -b ""
    cmp before.raw i.raw
    run -0 qemu-img info i.qcow2
    refute_line --partial "backing file"
    same_rebase -b "" -F qcow2
}

@test "-u only rewrites the name and format" {
    make_images 1.1
    same_rebase -u -b new.qcow2 -F qcow2
    same_rebase -u -b new.qcow2 -F raw
    NO_OPEN=1 same_rebase -u -b nothere.qcow2 -F qcow2
    run -0 qemu-img info i.qcow2
    assert_line "backing file: nothere.qcow2"
    same_rebase -u
    same_rebase -u -b ""
    cp top.qcow2 t.qcow2
    qimg rebase -u -b new.qcow2 -F qcow2 t.qcow2
    # only the header cluster changed
    cmp <(tail -c +65537 top.qcow2) <(tail -c +65537 t.qcow2)
}

@test "a deeper chain, a new backing in another chain, and a raw backing file" {
    make_images 1.1
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -P 7 1M 128k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 8 1088k 4k' top.qcow2 >/dev/null
    same_rebase -b base.qcow2 -F qcow2
    same_rebase -b new.qcow2 -F qcow2
    qemu-img convert -O raw new.qcow2 new.raw
    same_rebase -b new.raw -F raw
}

@test "backing files shorter than the overlay read as zeros past their end" {
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-io -c 'write -P 1 0 1M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 new.qcow2 2M
    qemu-io -c 'write -P 2 0 2M' new.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 3M
    qemu-io -c 'write -P 3 2560k 64k' top.qcow2 >/dev/null
    same_rebase -b new.qcow2 -F qcow2
    cp top.qcow2 t2.qcow2
    qemu-img create -q -f qcow2 -b new.qcow2 -F qcow2 top.qcow2 3M
    same_rebase -b base.qcow2 -F qcow2
}

@test "errors: the messages and exit codes of qemu-img, and nothing written" {
    make_images 1.1
    same_rebase -F qcow2
    same_rebase -b new.qcow2
    same_rebase -b nothere.qcow2 -F qcow2
    same_rebase -u -b "$(printf 'x%.0s' {1..1100})" -F qcow2
    s=$(file_sum top.qcow2)
    run -1 qimg rebase -b new.qcow2 top.qcow2
    assert_output "qimg: Could not change the backing file to 'new.qcow2': backing format must be specified"
    [ "$(file_sum top.qcow2)" = "$s" ]
    truncate -s 1M r.raw
    run -1 qimg rebase -f raw -b base.qcow2 -F qcow2 r.raw
    assert_output "qimg: Could not change the backing file to 'base.qcow2': Operation not supported"
    [ "$(file_sum r.raw)" = "$(truncate -s 1M z.raw; file_sum z.raw)" ]
    run -1 qimg rebase -b base.qcow2 -F qcow2 missing.qcow2
    assert_output "qimg: Could not open 'missing.qcow2': Could not open 'missing.qcow2': No such file or directory"
    run -1 qimg rebase -b base.qcow2 -F qcow2
    assert_output --partial "Expecting one image file name"
}

@test "the backing files are never written" {
    make_images 1.1
    s1=$(file_sum base.qcow2) s2=$(file_sum new.qcow2)
    qimg rebase -b new.qcow2 -F qcow2 top.qcow2
    qimg rebase -b "" top.qcow2
    [ "$(file_sum base.qcow2)" = "$s1" ]
    [ "$(file_sum new.qcow2)" = "$s2" ]
}

@test "a rebase killed at any write leaves the guest content as it was" {
    qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 256k
    qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 128k 32k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 new.qcow2 256k
    qemu-io -c 'write -P 1 0 16k' -c 'write -P 9 200k 8k' new.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 3 8k 8k' top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
    cp top.qcow2 pristine.qcow2
    n=0 kills=0
    while [ $n -lt 200 ]; do
        cp pristine.qcow2 top.qcow2
        rc=0
        QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" rebase -b new.qcow2 -F qcow2 top.qcow2 \
            >/dev/null 2>&1 || rc=$?
        [ $rc -eq 137 ] || break
        kills=$((kills + 1))
        run qimg repair top.qcow2
        [ "$status" -eq 0 ] || fail "kill at write $n: repair exits $status: $output"
        qemu-img check -q top.qcow2 || fail "kill at write $n: qemu-img check fails"
        qemu-img convert -O raw top.qcow2 now.raw
        cmp now.raw before.raw || fail "kill at write $n: the guest content changed"
        n=$((n + 1))
    done
    [ $rc -eq 0 ] || fail "the uninterrupted rebase failed with $rc"
    [ $kills -gt 0 ] || fail "the rebase never wrote"
    qemu-img convert -O raw top.qcow2 now.raw
    cmp now.raw before.raw
}

@test "-U shares the backing files, never the image itself" {
    make_images 1.1
    qemu-io -c 'sleep 3000' base.qcow2 3>&- &
    sleep 0.5
    run -1 qimg rebase -b new.qcow2 -F qcow2 top.qcow2
    assert_output --partial "lock"
    run -0 qimg rebase -U -b new.qcow2 -F qcow2 top.qcow2
    kill %1 2>/dev/null || true
    wait || true
    qemu-io -c 'sleep 3000' top.qcow2 3>&- &
    sleep 0.5
    run -1 qimg rebase -U -u -b base.qcow2 -F qcow2 top.qcow2
    assert_output --partial "lock"
    run -1 qimg rebase -U -b base.qcow2 -F qcow2 top.qcow2
    assert_output --partial "lock"
    kill %1 2>/dev/null || true
    wait || true
}

@test "an encrypted overlay named by --image-opts is rebased as qemu-img rebases it" {
    luks_chain fx
    qemu-img create -q -f qcow2 other.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -P 6 2M 64k' other.qcow2 >/dev/null
    same_cmd rebase "${SEC[@]}" -b "$PWD/other.qcow2" -F qcow2 --image-opts "$(io top.qcow2)"
    diff <(qemu-img info a/top.qcow2 | grep '^backing') <(qemu-img info b/top.qcow2 | grep '^backing')
    qconvert a/top.qcow2 pw a.raw
    qconvert b/top.qcow2 pw b.raw
    cmp a.raw b.raw
    same_cmd rebase "${SEC[@]}" -b "" --image-opts "$(io top.qcow2)"
    qconvert a/top.qcow2 pw a.raw
    qconvert b/top.qcow2 pw b.raw
    cmp a.raw b.raw
    qemu-img check -q "${SEC[@]}" --image-opts "$(io b/top.qcow2)"
}

@test "--image-opts: the key is needed, -f refused, and a relative -b taken from FILE's directory" {
    local o
    luks_chain fx
    o=$(io top.qcow2)
    same_cmd rebase -u -b base.qcow2 -F qcow2 --image-opts "$o"
    same_cmd rebase --object secret,id=sec0,data=bad -u -b x -F qcow2 --image-opts "$o"
    same_cmd rebase "${SEC[@]}" -f qcow2 -u -b x -F qcow2 --image-opts "$o"
    object_help rebase
    # qemu-img 7.2 wants an absolute -b here (its name for the image is a
    # json: pseudo-filename); qimg takes it relative to the image's file.
    cp fx/base.qcow2 fx/other.qcow2
    qemu-io -c 'write -P 5 0 64k' fx/other.qcow2 >/dev/null
    run -1 qemu-img rebase "${SEC[@]}" -b other.qcow2 -F qcow2 --image-opts "$(io fx/top.qcow2)"
    assert_output --partial "Cannot use relative backing file names"
    cp fx/top.qcow2 fx/ref.qcow2
    qemu-img rebase "${SEC[@]}" -b "$PWD/fx/other.qcow2" -F qcow2 --image-opts "$(io fx/ref.qcow2)"
    run -0 qimg rebase "${SEC[@]}" -b other.qcow2 -F qcow2 --image-opts "$(io fx/top.qcow2)"
    assert_output ""
    qconvert fx/ref.qcow2 pw ref.raw
    qconvert fx/top.qcow2 pw top.raw
    cmp ref.raw top.raw
    [ "$(qemu-img info --output=json fx/top.qcow2 | jq -r '."backing-filename"')" = other.qcow2 ]
}
