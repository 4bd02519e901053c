/*
 * write.c - the write side of the data path: guest writes (in place, or
 * into newly allocated clusters with copy-on-write of the untouched parts),
 * zero writes (zero flags, or deallocation on version 2 images), and
 * compressed clusters. Allocation goes through refcount.c, every L2 change
 * through the metadata cache, every L1 change through qcow2_write_l1().
 *
 * Write order (qcow2.h): guest data -> refcount blocks -> L2 tables -> L1.
 * New references follow that order through the cache's dependency; dropped
 * references are applied only after the L2 tables that no longer hold them
 * are on disk (struct drops below), so a crash leaves at worst a leak.
 *
 * The dirty bit: with lazy_refcounts=on qemu marks the image dirty while it
 * writes, because it lets refcounts lag behind. qimg keeps refcounts exact
 * on every write (in the same order as without lazy refcounts), so there is
 * nothing for a later check to rebuild and the bit is never set here.
 *
 * Encrypted images: guest data goes through qcow2_crypto_write() (the COW
 * head and tail first, so the data's edge sectors merge with them);
 * compressed writes are refused, as qemu refuses them.
 *
 * Must not: read guest data other than for copy-on-write (cluster.c), touch
 * the header, or write metadata without the overlap check.
 */
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "bitmap.h"
#include "crypto.h"
#include "datapath.h"
#include "qcow2.h"

#define EXT_ALL_ALLOC 0x00000000ffffffffULL     /* every subcluster allocated */
#define EXT_ALL_ZERO  0xffffffff00000000ULL     /* every subcluster reads zeros */

/* References to drop once the L2 entries that held them are on disk. */
struct drops {
    struct { uint64_t off, len; } *v;
    size_t n, cap;
};

static int drops_add(struct drops *d, uint64_t off, uint64_t len)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        void *nv = realloc(d->v, cap * sizeof(*d->v));
        if (!nv)
            return -ENOMEM;
        d->v = nv;
        d->cap = cap;
    }
    d->v[d->n].off = off;
    d->v[d->n].len = len;
    d->n++;
    return 0;
}

/* Flush the L2 tables (refcounts and data first), then drop the references. */
static int drops_apply(struct qcow2 *q, struct drops *d)
{
    int ret = 0;

    if (d->n)
        ret = qcow2_cache_flush(q, q->l2_cache);
    for (size_t i = 0; i < d->n && ret == 0; i++)
        ret = qcow2_refcount_update(q, d->v[i].off, d->v[i].len, -1);
    d->n = 0;
    return ret;
}

static void drops_free(struct drops *d)
{
    free(d->v);
}

static int check_writable(struct qcow2 *q)
{
    if (q->meta.h.incompatible_features & QCOW2_INCOMPAT_CORRUPT)
        return err_set(-EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
    if (!q->writable)
        return err_set(-EBADF, "The image is opened read-only");
    return 0;
}

/* L2 entry (first half) and, for extended entries, the subcluster bitmap. */
static uint64_t l2_get(const struct qcow2 *q, const uint8_t *l2, uint64_t j, uint64_t *bitmap)
{
    if (q->extl2) {
        *bitmap = be64(l2 + j * 16 + 8);
        return be64(l2 + j * 16);
    }
    *bitmap = 0;
    return be64(l2 + j * 8);
}

static void l2_set(const struct qcow2 *q, uint8_t *l2, uint64_t j, uint64_t e, uint64_t bitmap)
{
    if (q->extl2) {
        put_be64(l2 + j * 16, e);
        put_be64(l2 + j * 16 + 8, bitmap);
    } else {
        put_be64(l2 + j * 8, e);
    }
}

/* The host clusters an L2 entry holds a reference to (none: *len = 0). */
static void entry_ref(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
    if (e & QCOW_OFLAG_COMPRESSED) {
        /* The sectors it spans, as qemu counts them when it frees them. */
        qcow2_compressed_extent(q, e, off, len);
        return;
    }
    *off = e & L2E_OFFSET_MASK;
    *len = *off ? q->cluster_size : 0;
}

/* Drop the reference entry e holds (after the L2 change is on disk). */
static int drop_entry(struct qcow2 *q, struct drops *d, uint64_t e)
{
    uint64_t off, len;

    entry_ref(q, e, &off, &len);
    return len ? drops_add(d, off, len) : 0;
}

/* Check an L1 entry before following it; *l2_off = 0 when unallocated. */
static int l1_entry(struct qcow2 *q, uint32_t i, uint64_t *l2_off)
{
    uint64_t e;

    *l2_off = 0;
    if (i >= q->l1_size)
        return qcow2_signal_corruption(q, "L1 index %u is outside the L1 table (%u entries)",
                                       i, q->l1_size);
    e = q->l1[i];
    if (e & L1E_RESERVED_MASK & ~QCOW_OFLAG_COPIED)
        return qcow2_signal_corruption(q, "L1 entry %u has reserved bits set (%#llx)", i,
                                       (unsigned long long)e);
    *l2_off = e & L1E_OFFSET_MASK;
    return *l2_off ? qcow2_check_table_offset(q, *l2_off, "L2 table") : 0;
}

/*
 * The L2 table mapping guest offset off, ready to be changed: allocated when
 * the L1 entry is empty, copied when shared with a snapshot. The new table
 * reaches the disk (after the refcounts) before the L1 entry points at it;
 * the old table's reference is dropped only after that.
 */
static int l2_for_write(struct qcow2 *q, uint64_t off, uint8_t **l2)
{
    uint32_t i = qcow2_l1_index(q, off);
    uint64_t old, old_e, nt;
    uint8_t *src = NULL, *t;
    int64_t a;
    int ret;

    ret = l1_entry(q, i, &old);
    if (ret < 0)
        return ret;
    old_e = q->l1[i];
    if (old && (old_e & QCOW_OFLAG_COPIED))
        return qcow2_cache_get(q, q->l2_cache, old, (void **)l2);

    a = qcow2_alloc_clusters(q, 1);
    if (a < 0)
        return (int)a;
    nt = (uint64_t)a;
    if (old) {
        ret = qcow2_cache_get(q, q->l2_cache, old, (void **)&src);
        if (ret < 0)
            goto undo;
    }
    ret = qcow2_cache_get_empty(q, q->l2_cache, nt, (void **)&t);
    if (ret < 0) {
        if (src)
            qcow2_cache_put(q->l2_cache, (void **)&src);
        goto undo;
    }
    if (src) {
        /* The copy refers to the same clusters; their counts already
         * include this L1 (a snapshot's table is counted per L1). */
        memcpy(t, src, q->cluster_size);
        qcow2_cache_put(q->l2_cache, (void **)&src);
    }
    qcow2_cache_mark_dirty(q->l2_cache, t);
    ret = qcow2_cache_flush(q, q->l2_cache);
    if (ret < 0)
        goto fail;
    q->l1[i] = nt | QCOW_OFLAG_COPIED;
    ret = qcow2_write_l1(q, i, i + 1);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0) {
        q->l1[i] = old_e;
        goto fail;
    }
    if (old) {
        /* The active L1 no longer reaches the old table. */
        ret = qcow2_refcount_update(q, old, q->cluster_size, -1);
        if (ret < 0)
            goto fail;
    }
    *l2 = t;
    return 0;

fail:
    qcow2_cache_put(q->l2_cache, (void **)&t);
    return ret;
undo:
    qcow2_free_clusters(q, nt, q->cluster_size);
    return ret;
}

/* How one cluster is written. */
enum wkind {
    W_INPLACE,      /* allocated, ours alone, fully allocated: write in place */
    W_REUSE,        /* ours alone, but parts read as zero/backing: rewrite it whole */
    W_NEW,          /* needs a new cluster (unallocated, shared, compressed, zero) */
};

static int classify(struct qcow2 *q, const uint8_t *l2, uint64_t j, enum wkind *k,
                    uint64_t *host)
{
    uint64_t b, e = l2_get(q, l2, j, &b);

    *host = 0;
    *k = W_NEW;
    if (e & QCOW_OFLAG_COMPRESSED)
        return 0;
    *host = e & L2E_OFFSET_MASK;
    if (*host & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "Cluster allocation offset %#llx unaligned (L2 "
                                       "index: %#llx)", (unsigned long long)*host,
                                       (unsigned long long)j);
    if (!*host || !(e & QCOW_OFLAG_COPIED))
        return 0;
    if (q->extl2)
        *k = (b & EXT_ALL_ALLOC) == EXT_ALL_ALLOC ? W_INPLACE : W_REUSE;
    else
        *k = (e & QCOW_OFLAG_ZERO) ? W_REUSE : W_INPLACE;
    return 0;
}

/* The guest view of [off, off+len) as it is now; zeros past the end. */
static int cow_read(struct qcow2 *q, uint64_t off, uint8_t *buf, uint64_t len)
{
    uint64_t size = q->meta.h.size, n = 0;

    if (off < size)
        n = MIN(len, size - off);
    memset(buf + n, 0, len - n);
    return n ? qcow2_read(q, off, buf, n) : 0;
}

/* Guest bytes at guest go to host: encrypted when the image is (crypto.h). */
static int data_write(struct qcow2 *q, uint64_t guest, uint64_t host, const void *buf,
                      uint64_t len)
{
    int hit = qcow2_overlap_check(q, 0, host, len);

    if (hit)
        return qcow2_signal_corruption(q, "Preventing invalid write of guest data on "
                                       "metadata at host offset %#llx",
                                       (unsigned long long)host);
    if (q->meta.h.crypt_method)
        return qcow2_crypto_write(q, guest, host, buf, len);
    return qfile_pwrite(q->data_file, buf, len, host);
}

/*
 * Write guest [pos, end) to the clusters at host (the host offset of the
 * cluster holding pos). With cow, the untouched head of the first cluster
 * and tail of the last are filled from their current contents first.
 */
static int write_run(struct qcow2 *q, uint64_t pos, uint64_t end, const uint8_t *data,
                     uint64_t host, bool cow, uint8_t **bounce)
{
    const uint64_t cs = q->cluster_size;
    uint64_t c0 = ALIGN_DOWN(pos, cs), cend = ALIGN_UP(end, cs);
    int ret;

    if (cow && (pos > c0 || cend > end)) {
        if (!*bounce && !(*bounce = malloc(cs)))
            return -ENOMEM;
        if (pos > c0) {
            ret = cow_read(q, c0, *bounce, pos - c0);
            if (ret == 0)
                ret = data_write(q, c0, host, *bounce, pos - c0);
            if (ret < 0)
                return ret;
        }
        if (cend > end) {
            ret = cow_read(q, end, *bounce, cend - end);
            if (ret == 0)
                ret = data_write(q, end, host + (end - c0), *bounce, cend - end);
            if (ret < 0)
                return ret;
        }
    }
    return data_write(q, pos, host + (pos - c0), data, end - pos);
}

/* Write [off, off+n), which lies inside one L2 table's range. */
static int write_in_table(struct qcow2 *q, uint64_t off, const uint8_t *buf, uint64_t n,
                          struct drops *d)
{
    const uint64_t cs = q->cluster_size, end = off + n;
    uint8_t *l2, *bounce = NULL;
    uint64_t pos = off;
    int ret;

    ret = l2_for_write(q, off, &l2);
    if (ret < 0)
        return ret;
    while (pos < end) {
        uint64_t c0 = ALIGN_DOWN(pos, cs), run_end = MIN(end, c0 + cs), host, nc = 1;
        uint64_t j0 = qcow2_l2_index(q, c0);
        enum wkind kind, k2;

        ret = classify(q, l2, j0, &kind, &host);
        if (ret < 0)
            goto out;
        /* Extend the run over clusters written the same way. */
        while (kind != W_REUSE && run_end < end) {
            uint64_t h2;
            ret = classify(q, l2, j0 + nc, &k2, &h2);
            if (ret < 0)
                goto out;
            if (k2 != kind || (kind == W_INPLACE && h2 != host + nc * cs))
                break;
            nc++;
            run_end = MIN(end, run_end + cs);
        }
        if (kind == W_NEW) {
            int64_t a = qcow2_alloc_clusters(q, nc);
            if (a < 0) {
                ret = (int)a;
                goto out;
            }
            host = (uint64_t)a;
        }
        ret = write_run(q, pos, run_end, buf + (pos - off), host, kind != W_INPLACE, &bounce);
        if (ret < 0) {
            if (kind == W_NEW)
                qcow2_free_clusters(q, host, nc * cs);
            goto out;
        }
        if (kind != W_INPLACE) {
            for (uint64_t k = 0; k < nc; k++) {
                uint64_t b, e = l2_get(q, l2, j0 + k, &b);
                if (kind == W_NEW) {
                    ret = drop_entry(q, d, e);
                    if (ret < 0)
                        goto out;
                }
                l2_set(q, l2, j0 + k, (host + k * cs) | QCOW_OFLAG_COPIED, EXT_ALL_ALLOC);
            }
            qcow2_cache_mark_dirty(q->l2_cache, l2);
        }
        pos = run_end;
    }
    ret = 0;
out:
    free(bounce);
    qcow2_cache_put(q->l2_cache, (void **)&l2);
    return ret;
}

static uint64_t table_span(const struct qcow2 *q)
{
    return q->cluster_size << q->l2_bits;
}

int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    struct drops d = { 0 };
    int ret, r;

    ret = check_writable(q);
    if (ret == 0)
        ret = qcow2_bitmaps_note_write(q, off, len);
    if (ret < 0)
        return ret;
    while (len) {
        uint64_t n = MIN(len, ALIGN_DOWN(off, table_span(q)) + table_span(q) - off);
        ret = write_in_table(q, off, p, n, &d);
        if (ret < 0)
            break;
        off += n;
        p += n;
        len -= n;
    }
    r = drops_apply(q, &d);
    drops_free(&d);
    return ret < 0 ? ret : r;
}

/* ---- zeroes ----------------------------------------------------------- */

/* Does [off, off+len) already read as zeros? */
static int reads_zero(struct qcow2 *q, uint64_t off, uint64_t len, bool *zero)
{
    *zero = true;
    while (len) {
        struct qcow2_mapping m;
        int ret = qcow2_get_mapping(q, off, len, &m);

        if (ret < 0)
            return ret;
        if (!(m.type == QCOW2_C_ZERO_PLAIN || m.type == QCOW2_C_ZERO_ALLOC ||
              (m.type == QCOW2_C_UNALLOCATED && !q->backing))) {
            *zero = false;
            return 0;
        }
        off += m.bytes;
        len -= m.bytes;
    }
    return 0;
}

/* Zeros through the normal write path (partial clusters, v2 with backing). */
static int write_real_zeroes(struct qcow2 *q, uint64_t off, uint64_t len)
{
    size_t bsz = (size_t)MIN(len, MAX(q->cluster_size, 1u << 20));
    uint8_t *z;
    int ret = 0;

    if (!len)
        return 0;
    z = calloc(1, bsz);
    if (!z)
        return -ENOMEM;
    while (len && ret == 0) {
        size_t n = (size_t)MIN(len, bsz);
        bool zero;
        ret = reads_zero(q, off, n, &zero);
        if (ret == 0 && !zero)
            ret = qcow2_write(q, off, z, n);
        off += n;
        len -= n;
    }
    free(z);
    return ret;
}

/* Whole clusters [off, off+n) inside one L2 table: zero flags or holes;
 * with unmap, always unallocated (the backing file shows through). */
static int zero_in_table(struct qcow2 *q, uint64_t off, uint64_t n, struct drops *d,
                         bool unmap)
{
    const bool v3 = q->meta.h.version >= 3;
    uint64_t l2_off, j0 = qcow2_l2_index(q, off), nc = n >> q->cluster_bits;
    uint8_t *l2;
    bool dirty = false;
    int ret;

    if (!v3 && q->backing && !unmap)
        return write_real_zeroes(q, off, n);
    ret = l1_entry(q, qcow2_l1_index(q, off), &l2_off);
    if (ret < 0)
        return ret;
    if (!l2_off && (!q->backing || unmap))
        return 0;               /* unallocated, and nothing shows through */
    ret = l2_for_write(q, off, &l2);
    if (ret < 0)
        return ret;
    for (uint64_t k = 0; k < nc; k++) {
        uint64_t b, e = l2_get(q, l2, j0 + k, &b), ne, nb;
        bool unalloc = !(e & QCOW_OFLAG_COMPRESSED) && !(e & L2E_OFFSET_MASK) &&
                       (q->extl2 ? !(b & EXT_ALL_ALLOC) && !(b & EXT_ALL_ZERO)
                                 : !(e & QCOW_OFLAG_ZERO));

        if (unalloc && (!q->backing || unmap))
            continue;
        if (!v3 || unmap) {
            ne = 0;             /* version 2: a hole reads as zeros */
            nb = 0;
        } else if (q->extl2) {
            ne = 0;
            nb = EXT_ALL_ZERO;
        } else {
            ne = QCOW_OFLAG_ZERO;
            nb = 0;
        }
        if (ne == e && nb == b)
            continue;
        if (!(e & QCOW_OFLAG_COMPRESSED) && (e & L2E_OFFSET_MASK) &&
            ((e & L2E_OFFSET_MASK) & (q->cluster_size - 1))) {
            ret = qcow2_signal_corruption(q, "Cluster allocation offset %#llx unaligned",
                                          (unsigned long long)(e & L2E_OFFSET_MASK));
            break;
        }
        ret = drop_entry(q, d, e);
        if (ret < 0)
            break;
        l2_set(q, l2, j0 + k, ne, nb);
        dirty = true;
    }
    if (dirty)
        qcow2_cache_mark_dirty(q->l2_cache, l2);
    qcow2_cache_put(q->l2_cache, (void **)&l2);
    return ret;
}

int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len)
{
    const uint64_t cs = q->cluster_size;
    uint64_t end = off + len, a, b;
    struct drops d = { 0 };
    int ret, r;

    ret = check_writable(q);
    if (ret == 0)
        ret = qcow2_bitmaps_note_write(q, off, len);
    if (ret < 0 || !len)
        return ret;
    /* The image's last cluster counts as whole when the range reaches the end. */
    if (end == q->meta.h.size)
        end = ALIGN_UP(end, cs);
    a = ALIGN_UP(off, cs);
    b = ALIGN_DOWN(end, cs);
    if (a >= b)
        return write_real_zeroes(q, off, MIN(end, q->meta.h.size) - off);
    ret = write_real_zeroes(q, off, a - off);
    for (uint64_t pos = a; ret == 0 && pos < b;) {
        uint64_t n = MIN(b - pos, ALIGN_DOWN(pos, table_span(q)) + table_span(q) - pos);
        ret = zero_in_table(q, pos, n, &d, false);
        pos += n;
    }
    r = drops_apply(q, &d);
    drops_free(&d);
    if (ret == 0)
        ret = r;
    if (ret == 0 && end > b)
        ret = write_real_zeroes(q, b, MIN(end, q->meta.h.size) - b);
    return ret;
}

int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len)
{
    const uint64_t cs = q->cluster_size;
    uint64_t end = off + len, a, b;
    struct drops d = { 0 };
    int ret, r;

    ret = check_writable(q);
    if (ret < 0 || !len)
        return ret;
    if (end == q->meta.h.size)
        end = ALIGN_UP(end, cs);
    a = ALIGN_UP(off, cs);
    b = ALIGN_DOWN(end, cs);
    for (uint64_t pos = a; ret == 0 && pos < b;) {
        uint64_t n = MIN(b - pos, ALIGN_DOWN(pos, table_span(q)) + table_span(q) - pos);
        /* Nothing to do for a range past the L1 table. */
        if (qcow2_l1_index(q, pos) >= q->l1_size)
            break;
        ret = zero_in_table(q, pos, n, &d, true);
        pos += n;
    }
    r = drops_apply(q, &d);
    drops_free(&d);
    return ret < 0 ? ret : r;
}

/* ---- compressed clusters ---------------------------------------------- */

/* Compressed data of clusters [k0, k1) of z, allocated and written. */
static int write_packed(struct qcow2 *q, uint64_t off, const struct qcow2_zcluster *z,
                        size_t k0, size_t k1, struct drops *d)
{
    const uint64_t cs = q->cluster_size;
    const unsigned shift = qcow2_csize_shift(q->cluster_bits);
    uint64_t *ent, run_host = 0, run_len = 0, total = 0;
    uint8_t *l2, *stage;
    int ret = 0;

    for (size_t k = k0; k < k1; k++)
        total += z[k].clen;
    ent = malloc((k1 - k0) * sizeof(*ent));
    stage = malloc(total);
    if (!ent || !stage) {
        free(ent);
        free(stage);
        return -ENOMEM;
    }
    /* Allocate and write first: the L2 entries may only point at data on disk. */
    for (size_t k = k0; k < k1; k++) {
        int64_t h = qcow2_alloc_bytes(q, z[k].clen);
        uint64_t nsec;

        if (h < 0) {
            ret = (int)h;
            goto out;
        }
        if ((uint64_t)h >> shift) {
            ret = err_set(-EFBIG, "compressed cluster at host offset %#llx is out of range",
                          (unsigned long long)h);
            goto out;
        }
        if (run_len && (uint64_t)h != run_host + run_len) {
            ret = data_write(q, 0, run_host, stage, run_len);
            if (ret < 0)
                goto out;
            run_len = 0;
        }
        if (!run_len)
            run_host = (uint64_t)h;
        memcpy(stage + run_len, z[k].cdata, z[k].clen);
        run_len += z[k].clen;
        nsec = (((uint64_t)h + z[k].clen - 1) >> 9) - ((uint64_t)h >> 9);
        ent[k - k0] = QCOW_OFLAG_COMPRESSED | nsec << shift | (uint64_t)h;
    }
    if (run_len)
        ret = data_write(q, 0, run_host, stage, run_len);
    if (ret < 0)
        goto out;
    ret = l2_for_write(q, off + k0 * cs, &l2);
    if (ret < 0)
        goto out;
    for (size_t k = k0; k < k1; k++) {
        uint64_t j = qcow2_l2_index(q, off + k * cs), b, e = l2_get(q, l2, j, &b);
        ret = drop_entry(q, d, e);
        if (ret < 0)
            break;
        l2_set(q, l2, j, ent[k - k0], 0);
    }
    qcow2_cache_mark_dirty(q->l2_cache, l2);
    qcow2_cache_put(q->l2_cache, (void **)&l2);
out:
    free(ent);
    free(stage);
    return ret;
}

int qcow2_write_compressed_run(struct qcow2 *q, uint64_t off, const struct qcow2_zcluster *z,
                               size_t n)
{
    const uint64_t cs = q->cluster_size;
    struct drops d = { 0 };
    size_t k = 0;
    int ret, r;

    ret = check_writable(q);
    if (ret == 0)
        ret = qcow2_bitmaps_note_write(q, off, (uint64_t)n * cs);
    if (ret < 0)
        return ret;
    if (q->meta.h.crypt_method)
        return err_set(-ENOTSUP, "Compression and encryption not supported at the same time");
    if (off & (cs - 1))
        return err_set(-EINVAL, "compressed write at unaligned offset %#llx",
                       (unsigned long long)off);
    while (k < n && ret == 0) {
        uint64_t pos = off + k * cs;
        size_t k1 = k + 1;

        if (z[k].clen) {
            /* Packed runs stay inside one L2 table. */
            uint64_t tend = ALIGN_DOWN(pos, table_span(q)) + table_span(q);
            while (k1 < n && z[k1].clen && off + k1 * cs < tend)
                k1++;
            ret = write_packed(q, off, z, k, k1, &d);
        } else if (z[k].raw) {
            /* Clusters that did not shrink, contiguous in memory: one write. */
            size_t len = z[k].raw_len;
            while (k1 < n && !z[k1].clen && z[k1].raw == (const uint8_t *)z[k].raw + len &&
                   len == (k1 - k) * cs) {
                len += z[k1].raw_len;
                k1++;
            }
            if (pos >= q->meta.h.size || len > q->meta.h.size - pos)
                ret = err_set(-EINVAL, "compressed write past the end of the image");
            else
                ret = qcow2_write(q, pos, z[k].raw, len);
        }
        k = k1;
    }
    r = drops_apply(q, &d);
    drops_free(&d);
    return ret < 0 ? ret : r;
}

int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
    const uint64_t cs = q->cluster_size;
    struct qcow2_zcluster z = { 0 };
    uint8_t *in, *out;
    ssize_t clen;
    int ret;

    ret = check_writable(q);
    if (ret < 0)
        return ret;
    if (q->meta.h.crypt_method)
        return err_set(-ENOTSUP, "Compression and encryption not supported at the same time");
    if ((off & (cs - 1)) || !len || len > cs ||
        (len < cs && off + len != q->meta.h.size) || off + len > q->meta.h.size)
        return err_set(-EINVAL, "a compressed write must cover exactly one cluster "
                       "(offset %#llx, %zu bytes)", (unsigned long long)off, len);
    in = calloc(1, cs);
    out = malloc(cs);
    if (!in || !out) {
        free(in);
        free(out);
        return -ENOMEM;
    }
    memcpy(in, buf, len);
    clen = qcow2_compress(q->meta.h.compression_type, in, cs, out, cs);
    if (clen < 0) {
        ret = (int)clen;
    } else {
        if (clen > 0) {
            z.cdata = out;
            z.clen = (size_t)clen;
        } else {
            z.raw = buf;
            z.raw_len = len;
        }
        ret = qcow2_write_compressed_run(q, off, &z, 1);
    }
    free(in);
    free(out);
    return ret;
}
