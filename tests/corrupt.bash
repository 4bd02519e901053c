# corrupt.bash - for check.bats and repair.bats: build small qcow2 images
# with qemu-img and qemu-io, find their structures by reading the header
# and tables, poke them into a known corruption, and compare qimg's check
# and repair with qemu-img's.

# Byte access (hex in, "0x..." out, so 64-bit values with bit 63 survive).
# Few processes per call: the machine may be busy, and tests stay quick.
rd64() { local h; h=$(xxd -p -s "$(($2))" -l 8 "$1"); echo "0x$h"; }
rd32() { local h; h=$(xxd -p -s "$(($2))" -l 4 "$1"); echo "0x$h"; }
pokex() {   # FILE OFFSET HEX, with one process
    local hex=$3 esc="" i
    for ((i = 0; i < ${#hex}; i += 2)); do esc+="\\x${hex:i:2}"; done
    printf "$esc" | dd of="$1" bs=1 seek="$(($2))" conv=notrunc status=none
}
wr64() { pokex "$1" "$2" "$(printf '%016x' "$(($3))")"; }
wr32() { pokex "$1" "$2" "$(printf '%08x' "$(($3))")"; }

OFFMASK=0x00fffffffffffe00
COPIED=$((1 << 63))

# hdr FILE: the header fields the helpers below use, read once.
hdr() {
    local h
    h=$(xxd -p -c 112 -l 112 "$1")
    VER=$((0x${h:8:8})); CB=$((0x${h:40:8})); CS=$((1 << CB))
    L1OFF=$((0x${h:80:16})); RTOFF=$((0x${h:96:16})); RTCL=$((0x${h:112:8}))
    NBSN=$((0x${h:120:8})); SNOFF=$((0x${h:128:16}))
    if [ "$VER" -ge 3 ]; then
        INCOMPAT=$((0x${h:144:16})); RORDER=$((0x${h:192:8}))
    else
        INCOMPAT=0; RORDER=4
    fi
    ES=$(((INCOMPAT & 16) ? 16 : 8))
    L2BITS=$((CB - (ES == 16 ? 4 : 3)))
}
fsize() { stat -c %s "$1"; }
incompat() { hdr "$1"; echo "$INCOMPAT"; }
rt_off() { hdr "$1"; echo "$RTOFF"; }

# After hdr: where things are.
l1_pos() { echo $((L1OFF + 8 * ($2 >> (CB + L2BITS)))); }
l2_table() { echo $(($(rd64 "$1" "$(l1_pos "$1" "$2")") & OFFMASK)); }
l2_pos() { echo $(($(l2_table "$1" "$2") + (($2 >> CB) & ((1 << L2BITS) - 1)) * ES)); }
l2_entry() { hdr "$1"; rd64 "$1" "$(l2_pos "$1" "$2")"; }
_host_of() { echo $(($(rd64 "$1" "$(l2_pos "$1" "$2")") & OFFMASK)); }
host_of() { hdr "$1"; _host_of "$@"; }
cluster_of() { hdr "$1"; echo $(($2 >> CB)); }

# Refcount of host cluster K, and setting it, at any refcount width.
rc_pos() {  # FILE K -> "bit-offset bits" (after hdr)
    local k=$2 bits=$((1 << RORDER)) rbbits=$((CB + 3 - RORDER)) rb
    rb=$(($(rd64 "$1" $((RTOFF + 8 * (k >> rbbits)))) & ~0x1ff))
    echo "$((rb * 8 + (k & ((1 << rbbits) - 1)) * bits)) $bits"
}
get_refcount() {
    local pos bits h
    hdr "$1"
    read -r pos bits <<<"$(rc_pos "$1" "$2")"
    if [ "$bits" -ge 8 ]; then
        h=$(xxd -p -s $((pos / 8)) -l $((bits / 8)) "$1"); echo $((0x$h))
    else
        h=$(xxd -p -s $((pos / 8)) -l 1 "$1"); echo $(((0x$h >> (pos % 8)) & ((1 << bits) - 1)))
    fi
}
set_refcount() { hdr "$1"; _set_refcount "$@"; }
_set_refcount() {
    local f=$1 pos bits byte mask h
    read -r pos bits <<<"$(rc_pos "$f" "$2")"
    if [ "$bits" -ge 8 ]; then
        pokex "$f" $((pos / 8)) "$(printf "%0$((bits / 4))x" "$3")"
    else
        h=$(xxd -p -s $((pos / 8)) -l 1 "$f"); byte=$((0x$h))
        mask=$((((1 << bits) - 1) << (pos % 8)))
        byte=$(((byte & ~mask) | (($3 << (pos % 8)) & mask)))
        pokex "$f" $((pos / 8)) "$(printf '%02x' "$byte")"
    fi
}

# Images are made once per .bats file and copied into each test.
cached() {  # NAME MAKER ARGS... -> FILE (and FILE.orig.raw) from the cache
    local f=$1 key dir=${BATS_FILE_TMPDIR:-$PWD}
    key=$(printf '%s_' "${@:2}" | tr -c 'A-Za-z0-9_.=-' _)
    if [ ! -e "$dir/$key" ]; then
        "$2" "$dir/$key" "${@:3}" || return 1
    fi
    cp "$dir/$key" "$f" && cp "$dir/$key.orig.raw" "$f.orig.raw"
}

# mk_image FILE [OPTIONS] [SIZE]: data in several clusters (and two L2
# tables' worth of guest space); FILE.orig.raw keeps the guest view.
mk_image() { cached "$1" make_image "${2:-}" "${3:-4M}"; }
make_image() {
    local f=$1 opts=$2 size=$3
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$f" "$size" || return 1
    qemu-io -c "write -P 0x11 0 64k" -c "write -P 0x22 64k 64k" \
        -c "write -P 0x33 1M 128k" -c "write -P 0x44 3M 64k" "$f" >/dev/null || return 1
    qemu-img convert -O raw "$f" "$f.orig.raw"
}
# ... with a compressed cluster at 2 MiB.
mk_compressed() { cached "$1" make_compressed "${2:-}"; }
make_compressed() {
    local f=$1
    qemu-img create -q -f qcow2 ${2:+-o "$2"} "$f" 4M || return 1
    qemu-io -c "write -P 0x11 0 64k" -c "write -P 0x22 64k 64k" -c "write -P 0x33 1M 128k" \
        -c "write -c -P 0x66 2M 64k" "$f" >/dev/null || return 1
    qemu-img convert -O raw "$f" "$f.orig.raw"
}
# ... with a snapshot "snap" of it.
mk_snapshot() { cached "$1" make_snapshot "${2:-}"; }
make_snapshot() {
    make_image "$1" "$2" 4M && qemu-img snapshot -c snap "$1"
}

sum() { local s; s=$(sha256sum "$1"); echo "${s%% *}"; }

# Guest blocks (64 KiB) where two raw images differ, sorted as comm wants.
diff_blocks() {
    cmp -s "$1" "$2" && return 0
    { cmp -l "$1" "$2" 2>/dev/null || true; } | awk '{ print int(($1 - 1) / 65536) }' | sort -u
}

# check_both FILE: qimg check (without -r) leaves FILE byte-identical and
# answers with qemu-img's exit code and JSON leak/corruption counts. Where
# qemu-img cannot check the image at all (exit 1), qimg must still find
# the damage (exit 2 or 3).
check_both() {
    local f=$1 qrc=0 mrc=0 before q m
    before=$(sum "$f")
    qemu-img check --output=json "$f" >q.json 2>q.err || qrc=$?
    qimg check --output=json "$f" >m.json 2>m.err || mrc=$?
    [ "$(sum "$f")" = "$before" ] || { echo "qimg check wrote to $f"; return 1; }
    if [ "$qrc" -eq 1 ]; then
        echo "# qemu-img cannot check this image: $(tail -1 q.err)" >&3
        [ "$mrc" -eq 2 ] || [ "$mrc" -eq 3 ] ||
            { echo "qimg check exit $mrc"; cat m.err m.json; return 1; }
        return 0
    fi
    q=$(jq -cn --slurpfile q q.json --slurpfile m m.json \
        '[$q, $m] | map([.[0].leaks // 0, .[0].corruptions // 0, .[0]."check-errors"])')
    [ "$qrc" -eq "$mrc" ] && [ "$qrc" -ne 0 ] && [ "$(jq -n "$q | .[0] == .[1]")" = true ] ||
        { echo "qemu-img, qimg: exit $qrc, $mrc; [leaks, corruptions, errors] $q"
          cat q.err m.err; return 1; }
}

# repair_and_verify FILE: qimg repair, then qemu-img check and qimg check
# exit 0, and qimg kept every guest block that qemu-img's own repair (of
# a copy, made only when qimg lost something) keeps. The repair's messages
# are left in repair.err.
repair_and_verify() {
    local f=$1 rc=0
    cp "$f" qemu-repaired.qcow2
    qimg repair "$f" >repair.out 2>repair.err || rc=$?
    [ "$rc" -eq 0 ] || { echo "qimg repair exit $rc"; cat repair.out repair.err; return 1; }
    qemu-img check "$f" >qc.out 2>&1 ||
        { echo "qemu-img check after repair:"; cat qc.out repair.err; return 1; }
    qimg check "$f" >mc.out 2>&1 ||
        { echo "qimg check after repair:"; cat mc.out repair.err; return 1; }
    qemu-img convert -O raw "$f" qimg.raw || { cat repair.err; return 1; }
    cmp -s "$f.orig.raw" qimg.raw && return 0
    diff_blocks "$f.orig.raw" qimg.raw >lost.qimg
    qemu-img check -r all qemu-repaired.qcow2 >/dev/null 2>&1 || true
    if qemu-img convert -O raw qemu-repaired.qcow2 qemu.raw 2>/dev/null; then
        diff_blocks "$f.orig.raw" qemu.raw >lost.qemu
    else
        seq 0 $(($(stat -c %s "$f.orig.raw") / 65536 - 1)) | sort >lost.qemu
    fi
    if [ -n "$(comm -23 lost.qimg lost.qemu)" ]; then
        echo "guest blocks qemu-img's repair keeps but qimg's does not:"
        comm -23 lost.qimg lost.qemu
        cat repair.err
        return 1
    fi
}

# ---- corruptions: each takes the image, leaves it damaged ------------

# A cluster past the data, counted but used by nothing.
corrupt_leak_tail() {
    local f=$1 k
    hdr "$f"
    k=$((($(fsize "$f") + CS - 1) / CS))
    truncate -s $(((k + 1) * CS)) "$f"
    _set_refcount "$f" "$k" 1
}
# A used data cluster counted twice.
corrupt_raise_refcount() { hdr "$1"; _set_refcount "$1" $(($(_host_of "$1" 0) >> CB)) 2; }
corrupt_zero_data_refcount() { hdr "$1"; _set_refcount "$1" $(($(_host_of "$1" 1048576) >> CB)) 0; }
corrupt_zero_l2_refcount() { hdr "$1"; _set_refcount "$1" $(($(l2_table "$1" 0) >> CB)) 0; }
# set_l2 FILE GUEST VALUE-EXPR-OF-e: rewrite the L2 entry for GUEST.
set_l2() {
    local pos e
    pos=$(l2_pos "$1" "$2"); e=$(rd64 "$1" "$pos")
    wr64 "$1" "$pos" $(($3))
}
corrupt_l2_past_eof() {
    hdr "$1"; local end; end=$(fsize "$1")
    set_l2 "$1" 65536 "(e & ~OFFMASK) | ((end + 16 * CS) & OFFMASK)"
}
corrupt_l2_into_reftable() { hdr "$1"; set_l2 "$1" 65536 "(e & ~OFFMASK) | RTOFF"; }
corrupt_shared_cluster() { hdr "$1"; set_l2 "$1" 65536 "$(rd64 "$1" "$(l2_pos "$1" 0)")"; }
corrupt_copied_cleared() { hdr "$1"; set_l2 "$1" 1048576 "e & ~COPIED"; }
corrupt_unaligned_l2() { hdr "$1"; set_l2 "$1" 65536 "e + 512"; }
# A snapshot shares the first L2 table; OFLAG_COPIED set on its data.
corrupt_copied_set_on_shared() {
    qemu-img snapshot -c snap "$1"
    qemu-io -c "write -P 0x55 3M 64k" "$1" >/dev/null
    qemu-img convert -O raw "$1" "$1.orig.raw"
    hdr "$1"; set_l2 "$1" 0 "e | COPIED"
}
corrupt_zero_reftable() {
    hdr "$1"
    dd if=/dev/zero of="$1" bs="$CS" seek=$((RTOFF / CS)) count="$RTCL" conv=notrunc status=none
}
corrupt_reftable_past_eof() { hdr "$1"; wr64 "$1" "$RTOFF" $((($(fsize "$1") / CS + 100) * CS)); }
corrupt_reftable_reserved() { hdr "$1"; wr64 "$1" "$RTOFF" $(($(rd64 "$1" "$RTOFF") | 1)); }
corrupt_refblock_unaligned() { hdr "$1"; wr64 "$1" "$RTOFF" $(($(rd64 "$1" "$RTOFF") + 512)); }
corrupt_dirty_stale() {
    hdr "$1"
    wr64 "$1" 72 $((INCOMPAT | 1))
    _set_refcount "$1" $(($(_host_of "$1" 3145728) >> CB)) 0
}
corrupt_set_corrupt_bit() { hdr "$1"; wr64 "$1" 72 $((INCOMPAT | 2)); }
# set_l1 FILE INDEX VALUE-EXPR-OF-e
set_l1() {
    local e
    hdr "$1"; e=$(rd64 "$1" $((L1OFF + 8 * $2)))
    wr64 "$1" $((L1OFF + 8 * $2)) $(($3))
}
corrupt_unaligned_l1() { set_l1 "$1" 0 "e + 512"; }
corrupt_l1_self() { set_l1 "$1" 0 "COPIED | L1OFF"; }
# The first L2 table also maps the second L1 entry's guest range.
corrupt_shared_l2_table() { hdr "$1"; set_l1 "$1" 1 "$(rd64 "$1" "$L1OFF")"; }
corrupt_compressed_past_eof() {
    hdr "$1"
    local mask=$(((1 << (62 - (CB - 8))) - 1)) end
    end=$(fsize "$1")
    set_l2 "$1" 2097152 "(e & ~mask) | (end + 8 * CS)"
}
corrupt_compressed_copied() { hdr "$1"; set_l2 "$1" 2097152 "e | COPIED"; }
# Snapshot table entry fields (the first entry).
corrupt_snapshot_l1_unaligned() { hdr "$1"; wr64 "$1" "$SNOFF" $(($(rd64 "$1" "$SNOFF") + 512)); }
corrupt_snapshot_l1_past_eof() { hdr "$1"; wr64 "$1" "$SNOFF" $((($(fsize "$1") / CS + 64) * CS)); }
corrupt_snapshot_l1_size() { hdr "$1"; wr32 "$1" $((SNOFF + 8)) 0x10000000; }
# 2048 bytes of extra data; the id and name follow them, as the entry says.
corrupt_snapshot_extra() {
    hdr "$1"
    wr32 "$1" $((SNOFF + 36)) 2048
    pokex "$1" $((SNOFF + 40 + 2048)) "$(printf '1snap' | xxd -p)"
}
# A second entry the file ends in the middle of.
corrupt_snapshot_incomplete() {
    hdr "$1"
    wr32 "$1" 60 2
    truncate -s $((SNOFF + 72 + 16)) "$1"
}
corrupt_extl2_alloc_zero() {
    local pos
    hdr "$1"; pos=$(l2_pos "$1" 0)
    wr64 "$1" $((pos + 8)) $(($(rd64 "$1" $((pos + 8))) | (1 << 32)))
}
corrupt_l1_table_past_eof() { hdr "$1"; wr64 "$1" 40 $((($(fsize "$1") / CS + 50) * CS)); }
corrupt_snapshot_offset_invalid() { wr64 "$1" 64 0x10200; }
# The refcount table's size field made to cover the L1 and L2 tables too.
corrupt_reftable_clusters() { wr32 "$1" 56 22; }
