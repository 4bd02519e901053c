#!/usr/bin/env bats
# create.bats - `qimg create`: images byte-identical to qemu-img's, the
# "Formatting" line, qemu-img's refusals (with nothing written), -o help,
# sizes, backing files and raw images.
load helpers

setup() { common_setup; }

# same_image SIZE [create options...]: qemu-img and qimg make the same bytes.
same_image() {
    local size=$1
    shift
    rm -f q.qcow2 i.qcow2
    qemu-img create -q -f qcow2 "$@" q.qcow2 $size
    qimg create -q -f qcow2 "$@" i.qcow2 $size || {
        echo "qimg create failed for: $* $size" >&2
        return 1
    }
    cmp q.qcow2 i.qcow2 || {
        echo "images differ for: $* $size" >&2
        return 1
    }
    # (an image whose backing file is missing cannot be opened for checking)
    [[ " $* " == *" -u "* ]] || qemu-img check -q i.qcow2 || {
        echo "qemu-img check fails for: $* $size" >&2
        return 1
    }
}

# in_dirs CMD...: run "qemu-img CMD" in q/ and "qimg CMD" in i/ (each a
# copy of base/ when make_bases made one) and compare stdout, stderr
# (program name aside), exit status and the files left behind. Written with
# few processes: the machine running the suite is shared.
in_dirs() {
    local qo io qe ie qs=0 is=0
    rm -rf q i
    if [ -d base ]; then cp -a base q && cp -a base i; else mkdir q i; fi
    qo=$(cd q && qemu-img "$@" 2>../q.err) || qs=$?
    io=$(cd i && qimg "$@" 2>../i.err) || is=$?
    qe=$(<q.err) ie=$(<i.err)
    qe=${qe//qemu-img/PROG} ie=${ie//qimg/PROG}
    local ql=(q/*) il=(i/*)
    if [ "$qo" != "$io" ] || [ "$qe" != "$ie" ] || [ "$qs" != "$is" ] ||
        [ "${ql[*]#q/}" != "${il[*]#i/}" ]; then
        printf 'differs from qemu-img: %s\n' "$*" >&2
        diff <(printf '%s\n%s\nstatus %s\n%s\n' "$qo" "$qe" "$qs" "${ql[*]#q/}") \
            <(printf '%s\n%s\nstatus %s\n%s\n' "$io" "$ie" "$is" "${il[*]#i/}") >&2
        return 1
    fi
}

# Backing files for in_dirs: base/base.qcow2 (32M) and base/base.raw (3M).
make_bases() {
    mkdir -p base
    qemu-img create -q -f qcow2 base/base.qcow2 32M
    qemu-img create -q -f raw base/base.raw 3M
}

@test "default qcow2 images are byte-identical to qemu-img's" {
    for size in 0 1000 64M 100T; do
        same_image "$size"
    done
    same_image 1P -o cluster_size=2M
}

@test "every cluster size gives qemu-img's layout, L1 tables spanning clusters included" {
    for cs in 512 2k 16k 256k 2M; do
        same_image 1G -o cluster_size=$cs
    done
    same_image 10G -o cluster_size=512
    same_image 1T -o cluster_size=4k
}

@test "every refcount width gives qemu-img's layout, refcount table growth included" {
    for rb in 1 2 4 8 32 64; do
        same_image 64M -o refcount_bits=$rb
    done
    same_image 1G -o refcount_bits=1,cluster_size=512
    same_image 1G -o refcount_bits=64,cluster_size=512
}

@test "compat, lazy refcounts, extended L2 and zstd give qemu-img's header" {
    same_image 64M -o compat=0.10
    same_image 64M -o lazy_refcounts=on
    same_image 1G -o extended_l2=on,cluster_size=16k
    same_image 64M -o compression_type=zstd
    same_image 64M -o lazy_refcounts=on,extended_l2=on,compression_type=zstd,refcount_bits=1,cluster_size=2M
    # 4 KiB clusters and less: no feature table, as in qemu
    same_image 64M -o cluster_size=4k,lazy_refcounts=on
}

@test "backing files are recorded as qemu-img records them, with and without a format" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    qemu-img create -q -f raw base.raw 3M
    same_image "" -b base.qcow2 -F qcow2
    same_image 1G -b base.qcow2 -F qcow2
    same_image "" -b base.raw -F raw
    same_image 1M -b missing.qcow2 -F qcow2 -u
    same_image 1M -b 'comma,name' -F vmdk -u -o compat=0.10,cluster_size=512
    same_image 1M -b "$PWD/base.qcow2" -F qcow2
    # without -F qemu-img 7.2 refuses; qimg too, with the same words
    make_bases
    in_dirs create -f qcow2 -b base.qcow2 new.qcow2
    in_dirs create -f qcow2 -b missing.qcow2 -F qcow2 -u new.qcow2
}

@test "preallocated images are byte-identical to qemu-img's" {
    for mode in metadata falloc full; do
        same_image 3M -o preallocation=$mode
        same_image 0 -o preallocation=$mode
    done
    # 512-byte blocks of 64-bit refcounts cover 64 clusters: refcount blocks
    # interleave with the data, and the refcount table has to grow
    same_image 3M -o preallocation=metadata,cluster_size=512,refcount_bits=64
    same_image 2M -o preallocation=falloc,cluster_size=512,refcount_bits=64
    same_image 1000 -o preallocation=metadata
    same_image 513 -o preallocation=metadata,extended_l2=on
    same_image 4M -o preallocation=metadata,cluster_size=2M,refcount_bits=1
    same_image 1M -o preallocation=falloc,extended_l2=on,cluster_size=16k
    same_image 1000 -o preallocation=full
}

@test "preallocated images check clean, read as zeros and map as qemu-img's do" {
    qemu-img create -q -f raw base.raw 2M
    for mode in metadata falloc full; do
        qemu-img create -q -f qcow2 -o preallocation=$mode q.qcow2 3M
        qimg create -q -f qcow2 -o preallocation=$mode i.qcow2 3M
        qemu-img check -q i.qcow2
        qemu-img compare -q q.qcow2 i.qcow2
        diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json i.qcow2)
        rm -f q.qcow2 i.qcow2
        # with a backing file, extended L2 entries keep unwritten clusters unallocated
        qemu-img create -q -f qcow2 -o preallocation=$mode,extended_l2=on -b base.raw -F raw q.qcow2 3M
        qimg create -q -f qcow2 -o preallocation=$mode,extended_l2=on -b base.raw -F raw i.qcow2 3M
        qemu-img check -q i.qcow2
        diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json i.qcow2)
        rm -f q.qcow2 i.qcow2
    done
    # falloc and full really allocate the data area
    qimg create -q -f qcow2 -o preallocation=full f.qcow2 8M
    [ "$(stat -c %b f.qcow2)" -ge $((8 * 2048)) ]
}

@test "qemu-img info reports the settings asked for" {
    qimg create -q -f qcow2 -o cluster_size=4k,refcount_bits=8,lazy_refcounts=on,extended_l2=off,compression_type=zstd a.qcow2 5M
    qemu-img info --output=json a.qcow2 >a.json
    [ "$(json_get a.json '.["cluster-size"]')" = 4096 ]
    [ "$(json_get a.json '.["virtual-size"]')" = 5242880 ]
    [ "$(json_get a.json '.["format-specific"].data.compat')" = 1.1 ]
    [ "$(json_get a.json '.["format-specific"].data["refcount-bits"]')" = 8 ]
    [ "$(json_get a.json '.["format-specific"].data["lazy-refcounts"]')" = true ]
    [ "$(json_get a.json '.["format-specific"].data["compression-type"]')" = zstd ]
    qimg create -q -f qcow2 -o compat=0.10 -b a.qcow2 -F qcow2 b.qcow2
    qemu-img info --output=json b.qcow2 >b.json
    [ "$(json_get b.json '.["format-specific"].data.compat')" = 0.10 ]
    [ "$(json_get b.json '.["backing-filename"]')" = a.qcow2 ]
    [ "$(json_get b.json '.["backing-filename-format"]')" = qcow2 ]
    [ "$(json_get b.json '.["virtual-size"]')" = 5242880 ]
    qemu-img create -q -f qcow2 -o extended_l2=on c.qcow2 1M
    qemu-img info --output=json c.qcow2 | jq -e '.["format-specific"].data["extended-l2"]'
}

@test "the Formatting line matches qemu-img's to the character; -q prints nothing" {
    make_bases
    in_dirs create x 1M
    in_dirs create -f raw -o preallocation=falloc,nocow=on,extent_size_hint=1M x 1M
    in_dirs create -f qcow2 x 64M
    in_dirs create -f qcow2 -o compat=0.10 x 64M
    in_dirs create -f qcow2 -o compat=1.1 x 1000
    in_dirs create -f qcow2 -o compat=v3,lazy_refcounts=on,refcount_bits=1,cluster_size=4k,compression_type=zstd,preallocation=metadata x 64M
    in_dirs create -f qcow2 -o lazy_refcounts=yes,extended_l2=true,cluster_size=64k,refcount_bits=0x10,nocow=off,preallocation=off -b 'a,b' -F raw -u x 1M
    in_dirs create -f qcow2 -b base.qcow2 -F qcow2 x
    in_dirs create -f qcow2 -b base.raw -F raw x
    in_dirs create -f qcow2 -o backing_file=z,backing_fmt=qcow2,size=1G -u x
    in_dirs create -f qcow2 -b z -F qcow2 -o backing_file=w -u x 1G
    in_dirs create -f qcow2 -o lazy_refcounts,nolazy_refcounts,noextended_l2 x 1M
    in_dirs create -f qcow2 -o refcount_bits=010 x 1M
    # several -o: the last value of an option wins
    in_dirs create -f qcow2 -o compat=v3,compat=0.10 x 1M
    in_dirs create -f qcow2 -o compat=0.10 -o compat=v3 x 1M
    in_dirs create -f qcow2 -o cluster_size=4k -o refcount_bits=8 x 1M
    run -0 qimg create -q -f qcow2 -o cluster_size=4k -o refcount_bits=8 y.qcow2 1M
    [ "$(peek_be32 y.qcow2 20)" = 12 ]
    [ "$(peek_be32 y.qcow2 96)" = 3 ]
    # -q prints nothing
    run -0 --separate-stderr qimg create -q -f qcow2 x.qcow2 1M
    [ -z "$output" ] && [ -z "$stderr" ]
    run -0 --separate-stderr qimg create -q x.raw 1M
    [ -z "$output" ] && [ -z "$stderr" ]
}

@test "bad values are refused with qemu-img's words and nothing is written" {
    make_bases
    for o in cluster_size=3000 cluster_size=abc cluster_size=16E refcount_bits=3 \
        refcount_bits=abc compat=0.10,refcount_bits=8 compat=0.10,lazy_refcounts=on \
        compat=0.10,extended_l2=on compat=0.11 foo=bar lazy_refcounts=maybe \
        extended_l2=on,cluster_size=4k compression_type=lz4 preallocation=foo \
        backing_fmt=raw size=1.5; do
        in_dirs create -f qcow2 -o "$o" x 1M
        [ ! -e i/x ]
    done
    in_dirs create -f qcow2 -o preallocation=metadata -b y -F raw -u x 1M
    in_dirs create -q -f qcow2 -o cluster_size=3000 x 1M
    in_dirs create -f qcow2 -o cluster_size=512 x 200G
    in_dirs create -f raw -o cluster_size=4k x 1M
    in_dirs create -f raw -o preallocation=foo x 1M
    in_dirs create -f foo x 1M
    in_dirs create -f qcow2 x
    in_dirs create -f qcow2 -o size=2M x 1M
    in_dirs create -f qcow2 -o ",," x 1M
    in_dirs create -f qcow2 -b x -F foo -u x2 1M
    in_dirs create -f qcow2 -b x -F qcow2 x
    in_dirs create -f qcow2 -b "" -u x 1M
    in_dirs create -f raw -b base.raw -F raw x
    in_dirs create -f qcow2 nodir/x 1M
    in_dirs create x 1M 2M
}

@test "a refused creation leaves an existing file untouched; unsupported options are named" {
    echo "precious" >x.qcow2
    sum=$(file_sum x.qcow2)
    for o in refcount_bits=3 cluster_size=3000 compat=0.10,lazy_refcounts=on foo=bar; do
        run -1 qimg create -f qcow2 -o "$o" x.qcow2 1M
        [ "$(file_sum x.qcow2)" = "$sum" ]
    done
    run -1 qimg create -f qcow2 -o cluster_size=512 x.qcow2 200G
    assert_line "qimg: x.qcow2: The image size is too large for file format 'qcow2' (try using a larger cluster size)"
    [ "$(file_sum x.qcow2)" = "$sum" ]
    run -1 qimg create -f raw -o preallocation=metadata x.qcow2 1M
    [ "$(file_sum x.qcow2)" = "$sum" ]
    # encryption without its secret: qemu-img's words, nothing touched
    run -1 qimg create -q -f qcow2 -o encrypt.format=luks x.qcow2 1M
    assert_output "qimg: x.qcow2: Parameter 'encrypt.key-secret' is required for cipher"
    [ "$(file_sum x.qcow2)" = "$sum" ]
    # options qimg does not support yet
    run -1 qimg create -q -f qcow2 -o data_file=d.raw x.qcow2 1M
    assert_output "qimg: x.qcow2: External data files are not supported yet"
    [ "$(file_sum x.qcow2)" = "$sum" ] && [ ! -e d.raw ]
}

@test "-o help lists the options as qemu-img does" {
    in_dirs create -f qcow2 -o help
    in_dirs create -f qcow2 -o help x 1M
    in_dirs create -o '?'
    in_dirs create -f raw -o help,cluster_size=abc x
    in_dirs create -f foo -o help
}

@test "sizes take qemu's suffixes and spellings" {
    for s in 513 1.5k 1.k 1T 0x1b 010 +1 1.0 1e3 1kB 1.25 8E; do
        in_dirs create -f raw z "$s"
    done
    qimg create -q -f raw r.raw 1000
    [ "$(stat -c %s r.raw)" = 1024 ]
    qimg create -q -f qcow2 q.qcow2 1.5k
    [ "$(peek_be64 q.qcow2 24)" = 1536 ]
}

@test "the size comes from the backing file when left out" {
    qemu-img create -q -f qcow2 b.qcow2 48M
    qemu-img create -q -f raw b.raw 3000
    qimg create -q -f qcow2 -b b.qcow2 -F qcow2 t1.qcow2
    [ "$(peek_be64 t1.qcow2 24)" = $((48 * 1048576)) ]
    qimg create -q -f qcow2 -b b.raw -F raw t2.qcow2
    # qemu counts in 512-byte sectors
    [ "$(peek_be64 t2.qcow2 24)" = 3072 ]
    mkdir -p sub
    qimg create -q -f qcow2 -b ../b.qcow2 -F qcow2 sub/t3.qcow2
    [ "$(peek_be64 sub/t3.qcow2 24)" = $((48 * 1048576)) ]
    # -u skips opening it: then SIZE is required
    run -1 qimg create -f qcow2 -b b.qcow2 -F qcow2 -u t4.qcow2
    assert_output "qimg: t4.qcow2: Image creation needs a size parameter"
    run -1 qimg create -f qcow2 -b missing.qcow2 -F qcow2 t5.qcow2
    assert_line --index 0 "qimg: t5.qcow2: Could not open 'missing.qcow2': No such file or directory"
    assert_line --index 1 "Could not open backing image."
}

@test "raw images are created sparse, or allocated with falloc and full" {
    run -0 qimg create -f raw r.raw 64M
    assert_output "Formatting 'r.raw', fmt=raw size=67108864"
    [ "$(stat -c %s r.raw)" = 67108864 ]
    [ "$(stat -c %b r.raw)" -lt 64 ]
    qimg create -q -f raw -o preallocation=falloc f.raw 4M
    [ "$(stat -c %b f.raw)" -ge 8192 ]
    qimg create -q -f raw -o preallocation=full u.raw 4M
    [ "$(stat -c %b u.raw)" -ge 8192 ]
    cmp u.raw <(head -c 4194304 /dev/zero)
    echo "old contents" >o.raw
    qimg create -q -f raw o.raw 1M
    cmp o.raw <(head -c 1048576 /dev/zero)
}

@test "bad encryption options get qemu-img create's messages and touch nothing" {
    local o
    for o in encrypt.format=foo encrypt.key-secret=s encrypt.cipher-alg=aes-128 \
        encryption=off,encrypt.key-secret=s encryption=on,encrypt.format=aes,encrypt.key-secret=s \
        encrypt.format=aes,encrypt.key-secret=s,encrypt.cipher-alg=aes-128 \
        encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-alg=foo \
        encrypt.format=luks,encrypt.key-secret=s,encrypt.hash-alg=md4 \
        encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=abc \
        encrypt.format=luks,encrypt.key-secret=nope encryption=on \
        encrypt.format=luks,encrypt.key-secret=nope,cluster_size=3; do
        run -1 qimg create -q -f qcow2 --object secret,id=s,data=abc -o "$o" x.qcow2 1M
        assert_output "$(qemu-img create -q -f qcow2 --object secret,id=s,data=abc -o "$o" \
            y.qcow2 1M 2>&1 | sed 's/^qemu-img: y.qcow2/qimg: x.qcow2/')"
        [ ! -e x.qcow2 ]
    done
    run -0 qimg create -f qcow2 --object secret,id=s,data=abc \
        -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128 x.qcow2 1M
    local want i
    for i in 1 2 3 4; do    # qemu-img's PBKDF2 timing may fail on a busy machine
        want=$(qemu-img create -f qcow2 --object secret,id=s,data=abc \
            -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128 \
            x.qcow2 1M 2>&1) && break
    done
    assert_output "$want"
    # qimg knows one kind of object, the secret
    run -0 qimg create --object help
    assert_line --index 0 "$(qemu-img create --object help | head -1)"
    assert_line "  secret"
}
