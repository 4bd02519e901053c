#!/usr/bin/env bats
# commit.bats - `qimg commit` runs side by side with `qemu-img commit` on
# two copies of the same chain: the same messages and exit codes, the same
# guest content in every image afterwards (convert -O raw, cmp), the same
# allocation map of the emptied overlay, and images `qemu-img check` finds
# clean. A commit killed at any write leaves the guest content as it was.
load helpers
load crypto_helpers

setup() { common_setup; }

# base <- mid <- top in $1/, with data, zero and compressed clusters at
# every level; the top is larger than the others. $2 is the compat level.
make_chain() {
    local d=$1 c=${2:-1.1}
    mkdir -p "$d"
    qemu-img create -q -f qcow2 -o compat=$c "$d/base.qcow2" 2M
    qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 6 1536k 64k' "$d/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -o compat=$c -b base.qcow2 -F qcow2 "$d/mid.qcow2"
    qemu-io -c 'write -P 2 512k 128k' -c 'write -z 1536k 64k' "$d/mid.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -o compat=$c -b mid.qcow2 -F qcow2 "$d/top.qcow2" 4M
    qemu-io -c 'write -P 3 600k 64k' -c 'write -z 0 64k' -c 'write -P 4 3M 64k' \
        -c 'write -c -P 5 1M 64k' "$d/top.qcow2" >/dev/null
}

# same_commit ARGS...: commit q/top.qcow2 with qemu-img and i/top.qcow2
# with qimg (fresh chains), then compare everything.
same_commit() {
    local q i qrc irc f
    rm -rf q i
    make_chain q "${COMPAT:-1.1}"
    cp -r q i
    q=$(cd q && qemu-img commit "$@" top.qcow2 2>&1) && qrc=0 || qrc=$?
    i=$(cd i && qimg commit "$@" top.qcow2 2>&1) && irc=0 || irc=$?
    q=${q//qemu-img:/qimg:}
    [ "$q" = "$i" ] && [ "$qrc" = "$irc" ] || {
        echo "commit $* differs (qemu-img exit $qrc, qimg exit $irc):" >&2
        diff <(echo "$q") <(echo "$i") >&2
        return 1
    }
    for f in base mid top; do
        qemu-img check -q i/$f.qcow2 || { echo "commit $*: $f does not check clean" >&2; return 1; }
        qemu-img convert -O raw q/$f.qcow2 q/$f.raw
        qemu-img convert -O raw i/$f.qcow2 i/$f.raw
        cmp q/$f.raw i/$f.raw || { echo "commit $*: $f reads differently" >&2; return 1; }
        diff <(cd q && qemu-img info $f.qcow2 | grep -E '^(virtual size|backing)') \
            <(cd i && qemu-img info $f.qcow2 | grep -E '^(virtual size|backing)') ||
            { echo "commit $*: info of $f differs" >&2; return 1; }
    done
}

# The map cluster by cluster, without host offsets (not where, but whether).
# ("zero" of a data cluster is qemu's guess from holes in the host file,
# which depends on how much of the file is allocated: left out.)
per_cluster() {
    jq -c '.[] | . as $e | range($e.start; $e.start + $e.length; 65536) |
        [., $e.depth, $e.present, ($e.zero and ($e.data | not)), $e.data, ($e.offset != null)]'
}

@test "commit writes the top into its backing file and empties it, v3 and v2" {
    for c in 1.1 0.10; do
        COMPAT=$c same_commit
        # the emptied overlay maps as qemu-img's: nothing of its own (the
        # base's clusters may lie elsewhere: qemu-img copies in another order)
        diff <(qemu-img map --output=json q/top.qcow2 | per_cluster) \
            <(qemu-img map --output=json i/top.qcow2 | per_cluster)
        [ "$(qemu-img map --output=json i/top.qcow2 |
            jq '[.[] | select(.depth == 0 and .present)] | length')" = 0 ]
        # and its file shrinks to its metadata, as qemu-img's does
        [ "$(stat -c %s i/top.qcow2)" -le $((6 * 65536)) ]
    done
}

@test "the messages: Image committed., and nothing with -q" {
    make_chain c
    run -0 qimg commit c/top.qcow2
    assert_output "Image committed."
    make_chain d
    run -0 qimg commit -q d/top.qcow2
    assert_output ""
}

@test "-d leaves the top as it was" {
    same_commit -d
    make_chain x
    s=$(file_sum x/top.qcow2)
    qimg commit -d x/top.qcow2
    [ "$(file_sum x/top.qcow2)" = "$s" ]
}

@test "-b commits a deeper chain into the named base, and implies -d" {
    same_commit -b base.qcow2
    same_commit -b mid.qcow2
    make_chain x
    s1=$(file_sum x/top.qcow2) s2=$(file_sum x/mid.qcow2)
    qemu-img convert -O raw x/top.qcow2 before.raw
    qimg commit -q -b base.qcow2 x/top.qcow2
    [ "$(file_sum x/top.qcow2)" = "$s1" ]
    [ "$(file_sum x/mid.qcow2)" = "$s2" ]
    qemu-img convert -O raw x/base.qcow2 after.raw
    cmp before.raw after.raw
}

@test "a base smaller than the top grows to its size" {
    same_commit -b base.qcow2
    run -0 qemu-img info i/base.qcow2
    assert_line "virtual size: 4 MiB (4194304 bytes)"
}

@test "a top with internal snapshots keeps them; a raw base is written too" {
    make_chain s
    qemu-img snapshot -c snap s/top.qcow2
    qemu-img convert -O raw -l snap s/top.qcow2 snap.raw
    qemu-img convert -O raw s/top.qcow2 before.raw
    qimg commit -q s/top.qcow2
    qemu-img check -q s/top.qcow2
    qemu-img convert -O raw s/mid.qcow2 mid.raw
    cmp before.raw <(head -c 4M mid.raw)
    qemu-img convert -O raw -l snap s/top.qcow2 snap2.raw
    cmp snap.raw snap2.raw
    # raw base
    make_pattern r.raw 2
    qemu-img create -q -f qcow2 -b r.raw -F raw over.qcow2
    qemu-io -c 'write -P 9 100k 300k' -c 'write -z 1M 64k' over.qcow2 >/dev/null
    qemu-img convert -O raw over.qcow2 want.raw
    run -0 qimg commit over.qcow2
    cmp want.raw r.raw
}

@test "errors: no backing file, a base not in the chain, a missing file" {
    make_chain e
    qemu-img create -q -f qcow2 lone.qcow2 1M
    for args in "lone.qcow2" "-b nothere e/top.qcow2" "-b e/top.qcow2 e/top.qcow2" \
        "-b e/base.qcow2 e/top.qcow2" "missing.qcow2"; do
        q=$(qemu-img commit $args 2>&1) && qrc=0 || qrc=$?
        i=$(qimg commit $args 2>&1) && irc=0 || irc=$?
        [ "${q//qemu-img:/qimg:}" = "$i" ] && [ "$qrc" = "$irc" ] ||
            fail "commit $args: '$q' ($qrc) vs '$i' ($irc)"
    done
    run -1 qimg commit a.qcow2 b.qcow2
    assert_output --partial "Expecting one image file name"
}

@test "a commit killed at any write leaves the guest content as it was" {
    qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 128k
    qemu-io -c 'write -P 1 0 64k' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 top.qcow2 192k
    qemu-io -c 'write -P 3 8k 8k' -c 'write -z 32k 4k' -c 'write -P 4 150k 8k' top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
    cp top.qcow2 ptop.qcow2
    cp base.qcow2 pbase.qcow2
    n=0 kills=0
    while [ $n -lt 300 ]; do
        cp ptop.qcow2 top.qcow2
        cp pbase.qcow2 base.qcow2
        rc=0
        QIMG_DEBUG_KILL_AFTER_WRITES=$n "$QIMG_BIN" commit top.qcow2 >/dev/null 2>&1 || rc=$?
        [ $rc -eq 137 ] || break
        kills=$((kills + 1))
        for f in base top; do
            run qimg repair $f.qcow2
            [ "$status" -eq 0 ] || fail "kill at write $n: repair of $f exits $status: $output"
            qemu-img check -q $f.qcow2 || fail "kill at write $n: $f does not check clean"
        done
        qemu-img convert -O raw top.qcow2 now.raw
        cmp now.raw before.raw || fail "kill at write $n: the guest content changed"
        n=$((n + 1))
    done
    [ $rc -eq 0 ] || fail "the uninterrupted commit failed with $rc"
    [ $kills -gt 0 ] || fail "the commit never wrote"
    qemu-img convert -O raw top.qcow2 now.raw
    cmp now.raw before.raw
}

@test "an encrypted overlay named by --image-opts is committed as qemu-img commits it" {
    local d
    luks_chain fx
    same_cmd commit "${SEC[@]}" --image-opts "$(io top.qcow2)"
    for d in a b; do
        qemu-img convert -O raw $d/base.qcow2 $d-base.raw
        qconvert $d/top.qcow2 pw $d-top.raw
    done
    cmp a-base.raw b-base.raw
    cmp a-top.raw b-top.raw
    qemu-img check -q "${SEC[@]}" --image-opts "$(io b/top.qcow2)"
    same_cmd commit "${SEC[@]}" -d -b base.qcow2 --image-opts "$(io top.qcow2)"
    cmp fx/top.qcow2 b/top.qcow2
}

@test "--image-opts: the key is needed, -f refused, FILE named by its option string" {
    local o
    luks_chain fx
    o=$(io top.qcow2)
    same_cmd commit --image-opts "$o"
    same_cmd commit "${SEC[@]}" -f qcow2 --image-opts "$o"
    same_cmd commit "${SEC[@]}" -b none.qcow2 --image-opts "$o"
    same_cmd commit "${SEC[@]}" --image-opts driver=qcow2,file.filename=base.qcow2
    object_help commit
}
