/*
 * amend.c - qimg amend's engine: change a qcow2 image's compat level, lazy
 * refcounts and virtual size in place (the refcount width is rewritten by
 * amend_refcount.c).
 *
 * Everything that can be refused is checked first, by validate(), which
 * only reads. The steps then run in qemu's order (upgrade, refcount width,
 * lazy refcounts, size, downgrade); each writes data, then refcounts, then
 * tables, then the header, flushing in between, and frees what it replaced
 * last, so a crash leaves the old image, the new one, or one whose only
 * defects are leaked clusters.
 *
 * Must not: print, parse option strings (src/cmd/amend.c does), or write
 * guest data other than the zeros that stand for zero clusters.
 */
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "amend.h"
#include "bitmap.h"
#include "datapath.h"

void amend_progress(struct amend_progress *p, uint64_t done, uint64_t total)
{
    double pct;

    if (!p || !p->o->progress || !total || !p->nsteps)
        return;
    pct = 100.0 * (p->step + (double)MIN(done, total) / (double)total) / p->nsteps;
    if (pct > p->last) {
        p->last = pct;
        p->o->progress(p->o->opaque, pct);
    }
}

/* What the run will do, decided by validate() before anything is written. */
struct plan {
    uint32_t old_version, version;
    uint32_t order;             /* refcount order after the width step */
    int lazy;                   /* -1 keep */
    uint64_t old_size, size;
    uint64_t zero_start, zero_end;      /* grow over a longer backing file */
    uint64_t zero_head;         /* bytes from old_size to write as zeros */
    bool rewrite_snapshots;     /* upgrade: entries lack the v3 extra data */
};

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- walking every L1 table (active, then each snapshot's) ---------- */

typedef int (*l2_fn)(struct qcow2 *q, uint64_t l2_off, void *ctx);

static int read_snapshot_l1(struct qcow2 *q, const struct qcow2_snapshot *sn, uint64_t **out)
{
    uint64_t fsize, bytes = (uint64_t)sn->l1_size * 8;
    uint64_t *t;
    int ret;

    *out = NULL;
    if (!sn->l1_size)
        return 0;
    ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        return ret;
    if (bytes > QCOW2_MAX_L1_BYTES || (sn->l1_table_offset & (q->cluster_size - 1)) ||
        sn->l1_table_offset > fsize || bytes > fsize - sn->l1_table_offset)
        return qcow2_signal_corruption(q, "Snapshot %s: L1 table at %#llx (%u entries) is "
                                       "invalid", sn->id,
                                       (unsigned long long)sn->l1_table_offset, sn->l1_size);
    t = malloc(bytes);
    if (!t)
        return -ENOMEM;
    ret = qfile_pread(q->file, t, bytes, sn->l1_table_offset);
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        t[i] = be64(&t[i]);
    *out = t;
    return 0;
}

static int walk_l1(struct qcow2 *q, const uint64_t *l1, uint32_t n, l2_fn fn, void *ctx,
                   struct amend_progress *p, uint64_t *done, uint64_t total)
{
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;

        if (l1[i] & L1E_RESERVED_MASK)
            return qcow2_signal_corruption(q, "L1 entry %u has reserved bits set (%#llx)", i,
                                           (unsigned long long)l1[i]);
        if (off) {
            ret = qcow2_check_table_offset(q, off, "L2 table");
            if (ret == 0)
                ret = fn(q, off, ctx);
            if (ret != 0)
                return ret;
        }
        amend_progress(p, ++*done, total);
    }
    return 0;
}

/* fn on every L2 table every L1 table names; stops at a nonzero return. */
static int for_each_l2(struct qcow2 *q, l2_fn fn, void *ctx, struct amend_progress *p)
{
    uint64_t total = q->l1_size, done = 0;
    int ret;

    for (uint32_t s = 0; s < q->nb_snapshots; s++)
        total += q->snapshots[s].l1_size;
    ret = walk_l1(q, q->l1, q->l1_size, fn, ctx, p, &done, total);
    for (uint32_t s = 0; s < q->nb_snapshots && ret == 0; s++) {
        uint64_t *l1;
        ret = read_snapshot_l1(q, &q->snapshots[s], &l1);
        if (ret < 0)
            break;
        ret = walk_l1(q, l1, q->snapshots[s].l1_size, fn, ctx, p, &done, total);
        free(l1);
    }
    return ret;
}

/* What a downgrade finds in the L2 tables. */
struct census {
    uint64_t compressed;        /* compressed clusters */
    uint64_t zero_writes;       /* zero clusters that need zeros on disk */
};

static int count_l2(struct qcow2 *q, uint64_t l2_off, void *ctx)
{
    struct census *c = ctx;
    bool backing = q->meta.backing_file != NULL;
    uint8_t *l2;
    int ret = qcow2_cache_get(q, q->l2_cache, l2_off, (void **)&l2);

    if (ret < 0)
        return ret;
    for (uint64_t j = 0; j < q->l2_entries; j++) {
        uint64_t e = be64(l2 + j * q->l2_entry_size);
        if (e & QCOW_OFLAG_COMPRESSED)
            c->compressed++;
        else if ((e & QCOW_OFLAG_ZERO) && !q->extl2 && ((e & L2E_OFFSET_MASK) || backing))
            c->zero_writes++;
    }
    qcow2_cache_put(q->l2_cache, (void **)&l2);
    return 0;
}

/* ---- validation: everything that can be refused, before any write --- */

static int validate_grow(struct qcow2 *q, struct plan *p, uint32_t version)
{
    const uint64_t cs = q->cluster_size;
    uint64_t l1 = qcow2_l1_entries_for(q->cluster_bits, q->extl2, p->size), bsize;
    int ret;

    if (l1 * 8 > QCOW2_MAX_L1_BYTES)
        return err_set(-EFBIG, "Failed to grow the L1 table: File too large");
    if (!q->backing || q->backing->size <= p->old_size)
        return 0;
    /* As qemu: the new area must not show the longer backing file's data. */
    if (version < 3)
        return err_set(-ENOTSUP, "Failed to zero out new clusters: Operation not supported");
    bsize = q->backing->size;
    if (p->old_size & (cs - 1)) {
        uint64_t len = MIN(ALIGN_UP(p->old_size, cs), p->size) - p->old_size;
        uint8_t *buf = malloc(len);
        if (!buf)
            return -ENOMEM;
        ret = qcow2_read(q, p->old_size, buf, len);
        /* The rest of the old last cluster gets explicit zeros (grow). */
        if (ret == 0 && !all_zero(buf, len))
            p->zero_head = len;
        free(buf);
        if (ret < 0)
            return ret;
    }
    p->zero_start = ALIGN_UP(p->old_size, cs);
    p->zero_end = MIN(ALIGN_UP(p->size, cs), ALIGN_UP(bsize, cs));
    if (p->zero_start >= p->zero_end)
        return 0;
    /* Past the old end there may be zero clusters, nothing else. */
    for (uint64_t off = p->zero_start; off < p->zero_end;) {
        struct qcow2_mapping m;
        ret = qcow2_get_mapping(q, off, p->zero_end - off, &m);
        if (ret < 0)
            return ret;
        if (m.type != QCOW2_C_UNALLOCATED && m.type != QCOW2_C_ZERO_PLAIN)
            return err_set(-EEXIST, "Cannot grow the image: guest offset %#llx past its "
                           "old end is allocated", (unsigned long long)off);
        off += m.bytes;
    }
    return 0;
}

static int validate_shrink(struct qcow2 *q, const struct qcow2_amend_opts *o, struct plan *p)
{
    const uint64_t cs = q->cluster_size;
    uint64_t off;
    int ret;

    if (!o->force)
        return err_set(-EPERM, "Use the --force option to perform a shrink operation.");
    if (o->discard)
        return 0;
    /* The cluster the new end falls in: what lies past the end must be zeros. */
    if (p->size & (cs - 1)) {
        struct qcow2_mapping m;
        ret = qcow2_get_mapping(q, p->size, 1, &m);
        if (ret < 0)
            return ret;
        if (m.type == QCOW2_C_NORMAL || m.type == QCOW2_C_COMPRESSED) {
            uint64_t len = MIN(ALIGN_UP(p->size, cs), p->old_size) - p->size;
            uint8_t *buf = malloc(len);
            if (!buf)
                return -ENOMEM;
            ret = qcow2_read(q, p->size, buf, len);
            for (uint64_t i = 0; ret == 0 && i < len; i++)
                if (buf[i])
                    ret = err_set(-EEXIST, "Cannot shrink the image to %llu bytes: guest "
                                  "offset %#llx past the new end holds data",
                                  (unsigned long long)p->size,
                                  (unsigned long long)(p->size + i));
            free(buf);
            if (ret < 0)
                return ret;
        }
    }
    for (off = ALIGN_UP(p->size, cs); off < p->old_size;) {
        struct qcow2_mapping m;
        ret = qcow2_get_mapping(q, off, p->old_size - off, &m);
        if (ret < 0)
            return ret;
        if (m.type == QCOW2_C_NORMAL || m.type == QCOW2_C_COMPRESSED ||
            m.type == QCOW2_C_ZERO_ALLOC)
            return err_set(-EEXIST, "Cannot shrink the image to %llu bytes: guest offset "
                           "%#llx past the new end is allocated",
                           (unsigned long long)p->size, (unsigned long long)off);
        off += m.bytes;
    }
    return 0;
}

static int validate_size(struct qcow2 *q, const struct qcow2_amend_opts *o, struct plan *p)
{
    /* The version the image has when the size changes (before a downgrade). */
    uint32_t version = MAX(p->old_version, p->version);

    if (p->size % 512)
        return err_set(-EINVAL, "The new size must be a multiple of 512");
    if (p->size > INT64_MAX)
        return err_set(-EINVAL, "Image size cannot be negative");
    if (version < 3 && q->nb_snapshots)
        return err_set(-ENOTSUP, "Can't resize a v2 image which has snapshots");
    return p->size > p->old_size ? validate_grow(q, p, version) : validate_shrink(q, o, p);
}

static int validate_downgrade(struct qcow2 *q, struct plan *p)
{
    const struct qcow2_header *h = &q->meta.h;
    uint64_t incompat = h->incompatible_features & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
    struct census c = { 0, 0 };
    int ret;

    if (p->order != 4)
        return err_set(-ENOTSUP, "compat=0.10 requires refcount_bits=16");
    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
        return err_set(-ENOTSUP, "Cannot downgrade an image with a data file");
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &q->snapshots[i];
        uint64_t disk = sn->has_disk_size ? sn->disk_size : p->old_size;
        if (disk != p->size || sn->vm_state_size > UINT32_MAX)
            return err_set(-ENOTSUP, "Internal snapshots prevent downgrade of image");
    }
    if (incompat) {
        char names[200] = "", name[80];
        size_t n = 0;
        for (unsigned bit = 0; bit < 64; bit++)
            if ((incompat & (1ULL << bit)) && n < sizeof(names))
                n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "",
                                      qcow2_feature_name(&q->meta, 0, (uint8_t)bit, name,
                                                         sizeof(name)));
        return err_set(-ENOTSUP, "Cannot downgrade an image with incompatible features "
                       "%#llx set (%s)", (unsigned long long)incompat, names);
    }
    if (q->meta.has_bitmaps_ext || (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return err_set(-ENOTSUP, "Cannot downgrade an image with persistent bitmaps");
    ret = for_each_l2(q, count_l2, &c, NULL);
    if (ret < 0)
        return ret;
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB && c.compressed)
        return err_set(-ENOTSUP, "Cannot downgrade an image with zstd compression type and "
                       "existing compressed clusters");
    if (h->crypt_method != QCOW_CRYPT_NONE && c.zero_writes)
        return err_set(-ENOTSUP, "Cannot downgrade an encrypted image with zero clusters: "
                       "they would have to be written encrypted");
    return 0;
}

static int validate(struct qcow2 *q, const struct qcow2_amend_opts *o, struct plan *p)
{
    const struct qcow2_header *h = &q->meta.h;
    int ret;

    memset(p, 0, sizeof(*p));
    if (h->incompatible_features & QCOW2_INCOMPAT_DIRTY)
        return err_set(-EBUSY, "The image is dirty (its refcounts may be stale); "
                       "repair it before amending it");
    p->old_version = h->version;
    p->version = o->version ? o->version : h->version;
    p->order = q->refcount_order;
    if (o->refcount_bits) {
        if (p->version < 3 && o->refcount_bits != 16)
            return err_set(-EINVAL, "Refcount widths other than 16 bits require "
                           "compatibility level 1.1 or above (use compat=1.1 or greater)");
        p->order = (uint32_t)__builtin_ctz(o->refcount_bits);
    }
    p->lazy = o->lazy_refcounts;
    if (p->lazy == 1 && p->version < 3)
        return err_set(-EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                       "and above (use compat=1.1 or greater)");
    if (p->version > p->old_version) {
        struct qcow2_meta m = q->meta;
        uint8_t *buf = xzalloc(q->cluster_size);
        if (!buf)
            return -ENOMEM;
        m.h.version = 3;
        ret = qcow2_header_build(&m, buf, q->cluster_size);
        free(buf);
        if (ret < 0)
            return err_set(-ENOSPC, "The version 3 header does not fit in the image's first "
                           "cluster (%llu bytes)", (unsigned long long)q->cluster_size);
        for (uint32_t i = 0; i < q->nb_snapshots; i++)
            if (q->snapshots[i].extra_size < QCOW2_SN_EXTRA_V3_LEN)
                p->rewrite_snapshots = true;
    }
    if (p->order != q->refcount_order) {
        ret = qcow2_amend_refcount_check(q, p->order);
        if (ret < 0)
            return ret;
    }
    p->old_size = h->size;
    p->size = o->size ? o->size : h->size;
    if (p->size != p->old_size) {
        ret = validate_size(q, o, p);
        if (ret < 0)
            return ret;
    }
    if (p->version < p->old_version) {
        ret = validate_downgrade(q, p);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* ---- upgrade: v2 -> v3 ----------------------------------------------- */

static uint64_t snapshot_table_bytes_on_disk(const struct qcow2 *q)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        n += ALIGN_UP(QCOW2_SN_FIXED_LEN + (uint64_t)q->snapshots[i].extra_size +
                      strlen(q->snapshots[i].id) + strlen(q->snapshots[i].name), 8);
    return n;
}

/* Write the snapshot table anew (with v3 extra data) into new clusters. */
static int write_snapshot_table(struct qcow2 *q, uint64_t *off_out)
{
    uint64_t len, cs = q->cluster_size;
    struct qcow2_snapshot *sn = NULL;
    uint8_t *buf;
    int64_t off;
    int ret;

    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (!q->snapshots[i].has_disk_size) {
            /* v2 cannot resize with snapshots: the snapshot had this size. */
            q->snapshots[i].disk_size = q->meta.h.size;
            q->snapshots[i].has_disk_size = true;
        }
    len = qcow2_snapshots_size(q->snapshots, q->nb_snapshots);
    buf = xzalloc(ALIGN_UP(len, cs));
    if (!buf)
        return -ENOMEM;
    qcow2_snapshots_build(q->snapshots, q->nb_snapshots, buf);
    off = qcow2_alloc_clusters(q, DIV_ROUND_UP(len, cs));
    if (off < 0) {
        free(buf);
        return (int)off;
    }
    /* The overlap check sizes the old table by its rebuilt length, which
     * may reach into the clusters just allocated: skip that one kind. */
    ret = qcow2_write_metadata(q, QCOW2_OL_SNAPTABLE, (uint64_t)off, buf, len);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0)
        ret = qcow2_snapshots_parse(buf, len, q->nb_snapshots, &sn);
    free(buf);
    if (ret < 0)
        return ret;
    qcow2_snapshots_free(q->snapshots, q->nb_snapshots);
    q->snapshots = sn;
    *off_out = (uint64_t)off;
    return 0;
}

static int upgrade(struct qcow2 *q, const struct plan *p)
{
    struct qcow2_header *h = &q->meta.h, saved = *h;
    uint64_t old_sn_off = h->snapshots_offset, old_sn_len = snapshot_table_bytes_on_disk(q);
    uint64_t new_sn_off = old_sn_off;
    int ret;

    if (p->rewrite_snapshots) {
        ret = write_snapshot_table(q, &new_sn_off);
        if (ret < 0)
            return ret;
    }
    h->version = 3;
    h->refcount_order = 4;
    h->header_length = QCOW2_V3_HEADER_LEN;
    h->incompatible_features = 0;
    h->compatible_features = 0;
    h->autoclear_features = 0;
    h->compression_type = QCOW2_COMPRESSION_ZLIB;
    h->snapshots_offset = new_sn_off;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0) {
        *h = saved;
        return ret;
    }
    if (new_sn_off != old_sn_off && old_sn_len)
        ret = qcow2_free_clusters(q, old_sn_off, old_sn_len);
    if (ret == 0)
        ret = qcow2_flush(q);
    return ret;
}

/* ---- lazy refcounts ------------------------------------------------- */

static int set_lazy(struct qcow2 *q, bool on)
{
    struct qcow2_header *h = &q->meta.h;
    uint64_t saved = h->compatible_features;
    int ret;

    if (!!(h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) == on)
        return 0;
    if (on)
        h->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    else
        h->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
    ret = qcow2_flush(q);
    if (ret == 0)
        ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        h->compatible_features = saved;
    return ret;
}

/* ---- size ------------------------------------------------------------- */

/* Point the active L1 at a new, larger table; free the old one last. */
static int grow_l1(struct qcow2 *q, uint32_t entries)
{
    const uint64_t cs = q->cluster_size;
    uint64_t bytes = ALIGN_UP((uint64_t)entries * 8, cs);
    uint64_t old_off = q->meta.h.l1_table_offset, old_bytes = ALIGN_UP((uint64_t)q->l1_size * 8, cs);
    uint32_t old_size = q->l1_size;
    uint64_t *nl1 = xzalloc(bytes), *be = xzalloc(bytes);
    int64_t off;
    int ret;

    if (!nl1 || !be) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(nl1, q->l1, (size_t)q->l1_size * 8);
    for (uint32_t i = 0; i < entries; i++)
        put_be64(&be[i], nl1[i]);
    off = qcow2_alloc_clusters(q, bytes / cs);
    if (off < 0) {
        ret = (int)off;
        goto out;
    }
    ret = qcow2_write_metadata(q, 0, (uint64_t)off, be, bytes);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret < 0)
        goto out;
    q->meta.h.l1_table_offset = (uint64_t)off;
    q->meta.h.l1_size = entries;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0) {
        q->meta.h.l1_table_offset = old_off;
        q->meta.h.l1_size = old_size;
        goto out;
    }
    free(q->l1);
    q->l1 = nl1;
    nl1 = NULL;
    q->l1_size = entries;
    if (old_size)
        ret = qcow2_free_clusters(q, old_off, old_bytes);
    if (ret == 0)
        ret = qcow2_flush(q);
out:
    free(nl1);
    free(be);
    return ret;
}

/* Give the active L1 entry i its own copy of a shared L2 table. */
static int cow_l2(struct qcow2 *q, uint32_t i, uint64_t *l2_out)
{
    const uint64_t cs = q->cluster_size, old = q->l1[i] & L1E_OFFSET_MASK;
    uint8_t *buf = malloc(cs), *t;
    int64_t n;
    int ret;

    if (!buf)
        return -ENOMEM;
    ret = qcow2_cache_get(q, q->l2_cache, old, (void **)&t);
    if (ret < 0)
        goto out;
    memcpy(buf, t, cs);
    qcow2_cache_put(q->l2_cache, (void **)&t);
    n = qcow2_alloc_clusters(q, 1);
    if (n < 0) {
        ret = (int)n;
        goto out;
    }
    /* The clusters it names keep their refcounts: they lose the old
     * table's reference from this L1 and gain the copy's. */
    ret = qcow2_cache_get_empty(q, q->l2_cache, (uint64_t)n, (void **)&t);
    if (ret < 0)
        goto out;
    memcpy(t, buf, cs);
    qcow2_cache_mark_dirty(q->l2_cache, t);
    qcow2_cache_put(q->l2_cache, (void **)&t);
    ret = qcow2_flush(q);
    if (ret < 0)
        goto out;
    q->l1[i] = (uint64_t)n | QCOW_OFLAG_COPIED;
    ret = qcow2_write_l1(q, i, i + 1);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret == 0)
        ret = qcow2_free_clusters(q, old, cs);
    *l2_out = (uint64_t)n;
out:
    free(buf);
    return ret;
}

/* Mark the whole clusters of [start, end) as zero clusters (v3). */
static int mark_zero(struct qcow2 *q, uint64_t start, uint64_t end, struct amend_progress *p)
{
    const uint64_t cs = q->cluster_size, per_l2 = cs * q->l2_entries;
    int ret = 0;

    for (uint64_t off = start; off < end && ret == 0;) {
        uint32_t i = qcow2_l1_index(q, off);
        uint64_t stop = MIN(end, ALIGN_DOWN(off, per_l2) + per_l2);
        uint64_t l2_off = q->l1[i] & L1E_OFFSET_MASK, rc;
        bool fresh = !l2_off;
        uint8_t *l2;

        if (fresh) {
            int64_t n = qcow2_alloc_clusters(q, 1);
            if (n < 0)
                return (int)n;
            l2_off = (uint64_t)n;
            ret = qcow2_cache_get_empty(q, q->l2_cache, l2_off, (void **)&l2);
        } else {
            ret = qcow2_refcount_get(q, l2_off >> q->cluster_bits, &rc);
            if (ret == 0 && rc > 1)
                ret = cow_l2(q, i, &l2_off);
            if (ret == 0)
                ret = qcow2_cache_get(q, q->l2_cache, l2_off, (void **)&l2);
        }
        if (ret < 0)
            return ret;
        for (uint64_t g = off; g < stop; g += cs) {
            uint8_t *ep = l2 + qcow2_l2_index(q, g) * q->l2_entry_size;
            if (q->extl2) {
                if (!(be64(ep) & L2E_OFFSET_MASK)) {
                    put_be64(ep, 0);
                    put_be64(ep + 8, 0xffffffff00000000ULL);  /* every subcluster zero */
                }
            } else if (!(be64(ep) & ~(QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO))) {
                put_be64(ep, QCOW_OFLAG_ZERO);
            }
        }
        qcow2_cache_mark_dirty(q->l2_cache, l2);
        qcow2_cache_put(q->l2_cache, (void **)&l2);
        if (fresh) {
            /* The table (and its refcount) on disk before the L1 names it. */
            ret = qcow2_flush(q);
            if (ret == 0) {
                q->l1[i] = l2_off | QCOW_OFLAG_COPIED;
                ret = qcow2_write_l1(q, i, i + 1);
            }
        }
        amend_progress(p, stop - start, end - start);
        off = stop;
    }
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    return ret;
}

static int write_size(struct qcow2 *q, uint64_t size)
{
    uint64_t saved = q->meta.h.size;
    int ret;

    q->meta.h.size = size;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        q->meta.h.size = saved;
    return ret;
}

static int grow(struct qcow2 *q, const struct plan *p, struct amend_progress *prog)
{
    uint64_t l1 = qcow2_l1_entries_for(q->cluster_bits, q->extl2, p->size);
    int ret = 0;

    if (l1 > q->l1_size)
        ret = grow_l1(q, (uint32_t)l1);
    /* Zeros over the longer backing file before the size makes them visible. */
    if (ret == 0 && p->zero_start < p->zero_end)
        ret = mark_zero(q, p->zero_start, p->zero_end, prog);
    if (ret == 0 && p->zero_head) {
        uint8_t *z = calloc(1, p->zero_head);
        ret = z ? qcow2_write(q, p->old_size, z, p->zero_head) : -ENOMEM;
        free(z);
        if (ret == 0)
            ret = qcow2_flush(q);
    }
    if (ret == 0)
        ret = write_size(q, p->size);
    return ret;
}

/* Cut the file after its last cluster in use (refcounts on disk first). */
static int truncate_tail(struct qcow2 *q)
{
    uint64_t fsize, c, rc = 0;
    int ret = qcow2_flush(q);

    if (ret == 0)
        ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        return ret;
    for (c = ALIGN_UP(fsize, q->cluster_size) >> q->cluster_bits; c > 0 && rc == 0;) {
        ret = qcow2_refcount_get(q, --c, &rc);
        if (ret < 0)
            return ret;
        if (rc)
            c++;
    }
    if (c && (c << q->cluster_bits) < fsize)
        ret = qfile_truncate(q->file, c << q->cluster_bits);
    return ret;
}

static int shrink(struct qcow2 *q, const struct plan *p, bool discard)
{
    const uint64_t cs = q->cluster_size;
    uint64_t first = qcow2_l1_entries_for(q->cluster_bits, q->extl2, p->size);
    uint64_t *dropped = NULL;
    uint32_t n = 0;
    int ret;

    /* The size first: what lies past it is then out of the guest's reach. */
    ret = write_size(q, p->size);
    if (ret == 0 && discard && ALIGN_UP(p->old_size, cs) > ALIGN_UP(p->size, cs))
        ret = qcow2_discard(q, ALIGN_UP(p->size, cs),
                            ALIGN_UP(p->old_size, cs) - ALIGN_UP(p->size, cs));
    if (ret == 0 && discard && first >= q->l1_size)
        ret = truncate_tail(q);
    if (ret < 0 || first >= q->l1_size)
        return ret;
    /* L2 tables wholly past the end hold no data (validate_shrink saw to
     * that): drop them. The one the end falls in stays. */
    dropped = malloc((q->l1_size - first) * sizeof(*dropped));
    if (!dropped)
        return -ENOMEM;
    for (uint64_t i = first; i < q->l1_size; i++) {
        if (q->l1[i] & L1E_OFFSET_MASK)
            dropped[n++] = q->l1[i] & L1E_OFFSET_MASK;
        q->l1[i] = 0;
    }
    ret = qcow2_write_l1(q, (uint32_t)first, q->l1_size);
    if (ret == 0)
        ret = qfile_flush(q->file);
    for (uint32_t k = 0; k < n && ret == 0; k++)
        ret = qcow2_free_clusters(q, dropped[k], q->cluster_size);
    if (ret == 0)
        ret = qcow2_flush(q);
    free(dropped);
    if (ret == 0 && discard)
        ret = truncate_tail(q);
    return ret;
}

/* ---- downgrade: v3 -> v2 ---------------------------------------------- */

/* A new cluster of zeros, counted once per owner of the L2 table naming it. */
static int64_t zero_cluster(struct qcow2 *q, uint64_t owners, const uint8_t *zeros)
{
    int64_t off = qcow2_alloc_clusters(q, 1);
    int ret;

    if (off < 0)
        return off;
    ret = qfile_pwrite(q->data_file, zeros, q->cluster_size, (uint64_t)off);
    if (ret == 0 && owners > 1)
        ret = qcow2_refcount_update(q, (uint64_t)off, q->cluster_size, (int64_t)owners - 1);
    return ret < 0 ? ret : off;
}

struct expand {
    uint8_t *zeros;             /* one cluster */
    uint64_t *unref;            /* clusters this table stops naming (l2_entries) */
};

/*
 * v2 has no zero flag. A shared L2 table is rewritten in place: the flag
 * means the same to every L1 table naming it, and so does the expansion.
 */
static int expand_l2(struct qcow2 *q, uint64_t l2_off, void *ctx)
{
    struct expand *x = ctx;
    const uint64_t cs = q->cluster_size;
    bool backing = q->meta.backing_file != NULL, dirty = false;
    uint64_t owners, rc, nunref = 0;
    uint8_t *l2;
    int ret;

    ret = qcow2_refcount_get(q, l2_off >> q->cluster_bits, &owners);
    if (ret < 0)
        return ret;
    if (!owners)
        return qcow2_signal_corruption(q, "L2 table at %#llx is in use but its refcount "
                                       "is 0", (unsigned long long)l2_off);
    ret = qcow2_cache_get(q, q->l2_cache, l2_off, (void **)&l2);
    if (ret < 0)
        return ret;
    for (uint64_t j = 0; j < q->l2_entries && ret == 0; j++) {
        uint64_t e = be64(l2 + j * 8), host = e & L2E_OFFSET_MASK, ne;
        int64_t n;

        if ((e & QCOW_OFLAG_COMPRESSED) || !(e & QCOW_OFLAG_ZERO))
            continue;
        if (host & (cs - 1)) {
            ret = qcow2_signal_corruption(q, "Cluster allocation offset %#llx unaligned (L2 "
                                          "offset: %#llx, L2 index: %#llx)",
                                          (unsigned long long)host,
                                          (unsigned long long)l2_off, (unsigned long long)j);
            break;
        }
        if (!host && !backing) {
            ne = 0;     /* unallocated reads as zeros too */
        } else if (!host) {
            n = zero_cluster(q, owners, x->zeros);
            if (n < 0) {
                ret = (int)n;
                break;
            }
            ne = (uint64_t)n | (owners == 1 ? QCOW_OFLAG_COPIED : 0);
        } else {
            ret = qcow2_refcount_get(q, host >> q->cluster_bits, &rc);
            if (ret == 0 && !rc)
                ret = qcow2_signal_corruption(q, "Zero cluster at %#llx has refcount 0",
                                              (unsigned long long)host);
            if (ret < 0)
                break;
            if (rc <= owners) {
                /* Only this table names it: zero it where it is. */
                if (qcow2_overlap_check(q, 0, host, cs)) {
                    ret = qcow2_signal_corruption(q, "Preallocated zero cluster at %#llx "
                                                  "overlaps metadata",
                                                  (unsigned long long)host);
                    break;
                }
                ret = qfile_pwrite(q->data_file, x->zeros, cs, host);
                ne = host | (rc == 1 ? QCOW_OFLAG_COPIED : 0);
            } else {
                /* Another table still reads data from it (a snapshot taken
                 * before the zero write): writing zeros there would change
                 * that snapshot. Give this table its own zeroed cluster. */
                n = zero_cluster(q, owners, x->zeros);
                if (n < 0) {
                    ret = (int)n;
                    break;
                }
                x->unref[nunref++] = host;
                ne = (uint64_t)n | (owners == 1 ? QCOW_OFLAG_COPIED : 0);
            }
            if (ret < 0)
                break;
        }
        put_be64(l2 + j * 8, ne);
        dirty = true;
    }
    if (dirty)
        qcow2_cache_mark_dirty(q->l2_cache, l2);
    qcow2_cache_put(q->l2_cache, (void **)&l2);
    /* References go only once the table without them is on disk. */
    if (ret == 0 && nunref)
        ret = qcow2_flush(q);
    for (uint64_t k = 0; k < nunref && ret == 0; k++)
        ret = qcow2_refcount_update(q, x->unref[k], cs, -(int64_t)owners);
    return ret;
}

static int downgrade(struct qcow2 *q, struct amend_progress *prog)
{
    struct qcow2_header *h = &q->meta.h, saved = *h;
    struct expand x = { xzalloc(q->cluster_size), malloc(q->l2_entries * 8) };
    uint8_t *buf = NULL;
    int ret, old_len, new_len;

    if (!x.zeros || !x.unref) {
        free(x.zeros);
        free(x.unref);
        return -ENOMEM;
    }
    ret = for_each_l2(q, expand_l2, &x, prog);
    free(x.zeros);
    free(x.unref);
    /* Every expanded table on disk before the header stops meaning v3. */
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret < 0)
        return ret;
    buf = xzalloc(q->cluster_size);
    if (!buf)
        return -ENOMEM;
    old_len = qcow2_header_build(&q->meta, buf, q->cluster_size);
    h->version = 2;
    h->refcount_order = 4;
    h->header_length = QCOW2_V2_HEADER_LEN;
    h->incompatible_features = 0;
    h->compatible_features = 0;
    h->autoclear_features = 0;
    h->compression_type = QCOW2_COMPRESSION_ZLIB;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0) {
        *h = saved;
        goto out;
    }
    /* The v2 header is shorter: clear what the v3 one left behind it. */
    new_len = qcow2_header_build(&q->meta, buf, q->cluster_size);
    if (new_len > 0 && old_len > new_len) {
        memset(buf, 0, (size_t)(old_len - new_len));
        ret = qfile_pwrite(q->file, buf, (size_t)(old_len - new_len), (uint64_t)new_len);
        if (ret == 0)
            ret = qfile_flush(q->file);
    }
out:
    free(buf);
    return ret;
}

/* ---- the whole run ---------------------------------------------------- */

int qcow2_amend(struct qcow2 *q, const struct qcow2_amend_opts *o)
{
    struct amend_progress prog = { .o = o };
    struct plan p;
    bool do_upgrade, do_order, do_lazy, do_size, do_downgrade;
    int ret;

    if (!q->writable)
        return err_set(-EBADF, "the image is not open for writing");
    ret = validate(q, o, &p);
    if (ret < 0)
        return ret;
    do_upgrade = p.version > p.old_version;
    do_order = p.order != q->refcount_order;
    do_lazy = p.lazy >= 0 && p.version >= 3;
    do_size = p.size != p.old_size;
    do_downgrade = p.version < p.old_version;
    prog.nsteps = do_upgrade + do_order + do_lazy + do_size + do_downgrade;
    amend_progress(&prog, 0, 1);

    if (do_upgrade) {
        ret = upgrade(q, &p);
        if (ret < 0)
            return ret;
        amend_progress(&prog, 1, 1);
        prog.step++;
    }
    if (do_order) {
        ret = qcow2_amend_refcount_order(q, p.order, &prog);
        if (ret < 0)
            return ret;
        prog.step++;
    }
    if (do_lazy) {
        ret = set_lazy(q, p.lazy == 1);
        if (ret < 0)
            return ret;
        amend_progress(&prog, 1, 1);
        prog.step++;
    }
    if (do_size) {
        /* Persistent bitmaps follow the size (bitmap.h), as in qemu. */
        ret = qcow2_bitmaps_resize_begin(q);
        if (ret == 0)
            ret = p.size > p.old_size ? grow(q, &p, &prog) : shrink(q, &p, o->discard);
        if (ret == 0)
            ret = qcow2_bitmaps_resize_end(q, p.old_size);
        if (ret < 0)
            return ret;
        amend_progress(&prog, 1, 1);
        prog.step++;
    }
    if (do_downgrade) {
        ret = downgrade(q, &prog);
        if (ret < 0)
            return ret;
        amend_progress(&prog, 1, 1);
    }
    return qcow2_flush(q);
}
