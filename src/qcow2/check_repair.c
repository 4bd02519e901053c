/*
 * check_repair.c - the checker's repairs that need free clusters, which
 * only exist once every cluster has been counted: copying a data cluster
 * off metadata (or off a cluster with more owners than refcount_bits can
 * count), writing a new snapshot table, and rebuilding the refcount table
 * and blocks from the counted array.
 *
 * Free means: no reference counted, not marked as a refcount block, no
 * metadata there by the overlap check, and no stored refcount (a leaked
 * cluster is left for the leak repair). Past the end of the file is free.
 *
 * Write order, so that a crash anywhere leaves an image a second repair
 * completes: new clusters and their refcounts first, then the entry that
 * points at them; new refcount blocks, then the new table, then the header.
 * The dirty bit (v3) is set before the first write and cleared last.
 *
 * Must not: be called before the counting passes completed, or when the
 * counts are incomplete (c->unsafe).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

static int fresh_add(struct chk *c, uint64_t k)
{
    if (c->nfresh == c->capfresh) {
        size_t cap = c->capfresh ? c->capfresh * 2 : 64;
        uint64_t *n = realloc(c->fresh, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        c->fresh = n;
        c->capfresh = cap;
    }
    c->fresh[c->nfresh++] = k;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int olx_add(struct chk *c, size_t *cap, uint64_t off)
{
    uint64_t cb = c->q->cluster_bits;

    if (!off)
        return 0;
    for (uint64_t k = off >> cb; k <= (off + c->q->cluster_size - 1) >> cb; k++) {
        if (c->nolx == *cap) {
            size_t ncap = *cap ? *cap * 2 : 256;
            uint64_t *n = realloc(c->olx, ncap * sizeof(*n));
            if (!n)
                return -ENOMEM;
            c->olx = n;
            *cap = ncap;
        }
        c->olx[c->nolx++] = k;
    }
    return 0;
}

/*
 * qcow2_overlap_check walks every L1 and refcount table entry: once per
 * candidate cluster that is O(clusters x table size), minutes for an L1
 * table that claims millions of entries. Index those two tables once.
 */
static int olx_build(struct chk *c)
{
    struct qcow2 *q = c->q;
    size_t cap = 0;
    int ret = 0;

    for (uint32_t i = 0; i < q->l1_size && ret == 0; i++)
        ret = olx_add(c, &cap, q->l1[i] & L1E_OFFSET_MASK);
    for (uint64_t i = 0; i < q->reftable_size && ret == 0; i++)
        ret = olx_add(c, &cap, q->reftable[i] & REFT_OFFSET_MASK);
    if (ret < 0)
        return ret;
    if (c->nolx)
        qsort(c->olx, c->nolx, sizeof(*c->olx), cmp_u64);
    c->olx_built = true;
    return 0;
}

static bool on_metadata(struct chk *c, uint64_t k)
{
    size_t lo = 0, hi = c->nolx;

    if (qcow2_overlap_check(c->q, QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFBLOCK,
                            k << c->q->cluster_bits, c->q->cluster_size))
        return true;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->olx[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nolx && c->olx[lo] == k;
}

static bool cluster_free(struct chk *c, uint64_t k, bool need_stored_zero)
{
    uint64_t v;

    if (rc_get(c, k) || rc_kind(c, k) != K_DATA)
        return false;
    if (on_metadata(c, k))
        return false;
    if (need_stored_zero && stored_get(c, k, &v) == 0 && v)
        return false;
    return true;
}

/*
 * A run of n free clusters, first fit; counted as used (refcount 1) in the
 * array. set_stored: also set the stored refcount where a usable block
 * covers it (else a rebuild will). Returns the first cluster index.
 */
static int64_t alloc_run(struct chk *c, uint64_t n, bool set_stored)
{
    struct qcow2 *q = c->q;
    uint64_t x = MAX(1, c->alloc_hint), run = 0;
    uint64_t limit = QCOW2_MAX_HOST_OFFSET >> q->cluster_bits;
    int ret;

    if (!c->olx_built) {
        ret = olx_build(c);
        if (ret < 0)
            return ret;
    }
    while (run < n) {
        if (x + n > limit)
            return err_set(-ENOSPC, "no free clusters left for the repair");
        if (cluster_free(c, x + run, set_stored)) {
            run++;
        } else {
            x += run + 1;
            run = 0;
        }
    }
    for (uint64_t k = x; k < x + n; k++) {
        ret = rc_set(c, k, 1);
        if (ret == 0)
            ret = fresh_add(c, k);
        if (ret == 0 && set_stored) {
            if (refblock_usable(c, k >> q->rb_bits))
                ret = stored_set(c, k, 1);
            else
                c->rebuild = true;
        }
        if (ret < 0)
            return ret;
    }
    if (n == 1)
        c->alloc_hint = x + 1;
    return (int64_t)x;
}

static int64_t alloc_clusters(struct chk *c, uint64_t n)
{
    return alloc_run(c, n, true);
}

int defer(struct chk *c, const struct deferred *d)
{
    if (c->ndef >= CHECK_MAX_DEFERRED)
        return -ENOSPC;     /* the next round finds it again */
    c->def[c->ndef++] = *d;
    return 0;
}

/* Copy len bytes at src to n fresh clusters; their first byte's offset. */
static int64_t copy_out(struct chk *c, uint64_t src, uint64_t len, uint64_t n)
{
    struct qcow2 *q = c->q;
    uint64_t cs = q->cluster_size;
    int64_t x;
    int ret;

    x = alloc_clusters(c, n);
    if (x < 0)
        return x;
    memset(c->buf2, 0, n * cs);
    ret = qfile_pread_pad(q->file, c->buf2, (size_t)len, src);
    if (ret == 0)
        ret = begin_writes(c);
    if (ret == 0)
        ret = qcow2_write_metadata(q, 0, (uint64_t)x << q->cluster_bits, c->buf2,
                                   (size_t)(n * cs));
    if (ret == 0)
        ret = qfile_flush(q->file);
    return ret < 0 ? ret : (int64_t)((uint64_t)x << q->cluster_bits);
}

/*
 * The queued copies: each entry still as recorded gets its own copy of the
 * bytes it points at (what a guest reads there stays the same), then the
 * entry is pointed at the copy.
 */
int run_deferred(struct chk *c)
{
    struct qcow2 *q = c->q;
    uint64_t cs = q->cluster_size;
    int ret = 0;

    for (size_t k = 0; k < c->ndef; k++) {
        struct deferred *d = &c->def[k];
        uint8_t *t = NULL;
        uint64_t cur, src, len, n, ne;
        int64_t dst;

        ret = qcow2_cache_get(q, q->l2_cache, d->table, (void **)&t);
        if (ret < 0)
            break;
        cur = be64(t + d->index * q->l2_entry_size);
        qcow2_cache_put(q->l2_cache, (void **)&t);
        if (cur != d->old)
            continue;       /* a shared table, already done */
        if (cur & QCOW_OFLAG_COMPRESSED) {
            unsigned shift = qcow2_csize_shift(q->cluster_bits);
            uint64_t sectors = ((cur >> shift) & ((1ULL << (q->cluster_bits - 8)) - 1)) + 1;
            qcow2_compressed_extent(q, cur, &src, &len);
            n = DIV_ROUND_UP(sectors * 512, cs);
            dst = copy_out(c, src, len, n);
            ne = (cur & ~((1ULL << shift) - 1)) | (uint64_t)dst;
        } else {
            src = cur & L2E_OFFSET_MASK;
            dst = copy_out(c, src, cs, 1);
            ne = (cur & ~L2E_OFFSET_MASK) | (uint64_t)dst;
        }
        if (dst < 0) {
            ret = (int)dst;
            break;
        }
        /* The copy's refcount reaches the disk before the entry. */
        ret = qcow2_cache_get(q, q->l2_cache, d->table, (void **)&t);
        if (ret < 0)
            break;
        put_be64(t + d->index * q->l2_entry_size, ne);
        qcow2_cache_mark_dirty(q->l2_cache, t);
        qcow2_cache_put(q->l2_cache, (void **)&t);
    }
    if (ret == 0)
        ret = qcow2_flush(q);
    return ret;
}

/*
 * Write the snapshot table as q->snapshots now says into fresh clusters,
 * then point the header at it. The old table becomes a leak the next
 * count finds and frees.
 */
int write_snapshot_table(struct chk *c)
{
    struct qcow2 *q = c->q;
    uint64_t cs = q->cluster_size, size, off = 0;
    uint8_t hdr[12], *buf = NULL;
    int ret;

    ret = begin_writes(c);
    if (ret < 0)
        return ret;
    size = qcow2_snapshots_size(q->snapshots, q->nb_snapshots);
    if (q->nb_snapshots) {
        uint64_t n = DIV_ROUND_UP(size, cs);
        int64_t x = alloc_clusters(c, n);
        if (x < 0)
            return (int)x;
        off = (uint64_t)x << q->cluster_bits;
        buf = xzalloc(n * cs);
        if (!buf)
            return -ENOMEM;
        qcow2_snapshots_build(q->snapshots, q->nb_snapshots, buf);
        ret = qcow2_cache_flush(q, q->rc_cache);
        if (ret == 0)
            ret = qcow2_write_metadata(q, QCOW2_OL_SNAPTABLE, off, buf, (size_t)(n * cs));
        free(buf);
        if (ret == 0)
            ret = qfile_flush(q->file);
        if (ret < 0)
            return ret;
    }
    put_be32(hdr, q->nb_snapshots);
    put_be64(hdr + 4, off);
    ret = qfile_pwrite(q->file, hdr, sizeof(hdr), QCOW2_HDR_NB_SNAPSHOTS);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    q->meta.h.nb_snapshots = q->nb_snapshots;
    q->meta.h.snapshots_offset = off;
    c->sn_dirty = false;
    return 0;
}

/*
 * A new, empty active L1 table (the old one lies past the end of the file
 * and reads as zeros), then the header points at it.
 */
int write_new_l1(struct chk *c)
{
    struct qcow2 *q = c->q;
    uint64_t n = DIV_ROUND_UP((uint64_t)q->l1_size * 8, q->cluster_size), off;
    uint8_t be[8], *zero;
    int64_t x;
    int ret;

    ret = begin_writes(c);
    if (ret < 0)
        return ret;
    x = alloc_clusters(c, n);
    if (x < 0)
        return (int)x;
    off = (uint64_t)x << q->cluster_bits;
    zero = xzalloc(n * q->cluster_size);
    if (!zero)
        return -ENOMEM;
    ret = qcow2_cache_flush(q, q->rc_cache);
    if (ret == 0)
        ret = qcow2_write_metadata(q, 0, off, zero, (size_t)(n * q->cluster_size));
    free(zero);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    put_be64(be, off);
    ret = qfile_pwrite(q->file, be, 8, QCOW2_HDR_L1_OFFSET);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    q->meta.h.l1_table_offset = off;
    memset(q->l1, 0, (size_t)q->l1_size * 8);
    c->l1_new = false;
    return 0;
}

/* Does any cluster of refcount block bi's range have a reference? */
static bool block_needed(struct chk *c, uint64_t bi)
{
    uint64_t per = 1ULL << c->q->rb_bits;

    for (uint64_t k = bi * per; k < MIN(c->nb, (bi + 1) * per); k++)
        if (rc_get(c, k))
            return true;
    return false;
}

/* Take back the count of every cluster the old refcount structure used. */
static int forget_old_structure(struct chk *c)
{
    struct qcow2 *q = c->q;
    const struct qcow2_header *h = &q->meta.h;
    uint64_t cs = q->cluster_size;
    int ret;

    for (uint64_t bi = 0; bi < q->reftable_size; bi++) {
        uint64_t e = q->reftable[bi], off = e & REFT_OFFSET_MASK, k = off >> q->cluster_bits;
        if (!off || (e & REFT_RESERVED_MASK) || (off & (cs - 1)) || is_detached(c, bi) ||
            k >= DIV_ROUND_UP(c->file_size, cs) || !rc_get(c, k))
            continue;
        ret = rc_set(c, k, rc_get(c, k) - 1);
        if (ret < 0)
            return ret;
        if (!rc_get(c, k))
            rc_set_kind(c, k, K_DATA);
    }
    if (!past_eof(c, h->refcount_table_offset, q->reftable_size * 8)) {
        uint64_t first = h->refcount_table_offset >> q->cluster_bits;
        uint64_t last = (h->refcount_table_offset + q->reftable_size * 8 - 1) >> q->cluster_bits;
        for (uint64_t k = first; k <= last; k++) {
            if (!rc_get(c, k))
                continue;
            ret = rc_set(c, k, rc_get(c, k) - 1);
            if (ret < 0)
                return ret;
            if (!rc_get(c, k))
                rc_set_kind(c, k, K_DATA);
        }
    }
    return 0;
}

/*
 * A new refcount structure from the counted array, in free clusters: every
 * block a referenced cluster needs (the new blocks and table included),
 * then the table, then the header. The old structure is not reused, so
 * until the header changes it still describes the image.
 */
int rebuild_refcounts(struct chk *c)
{
    struct qcow2 *q = c->q;
    uint64_t cs = q->cluster_size, per_rt = cs / 8, per_rb = 1ULL << q->rb_bits;
    uint64_t *rt = NULL, nrt = 0, tc = 0, toff = 0;
    int64_t x;
    bool changed;
    uint8_t hdr[12];
    int ret;

    ret = begin_writes(c);
    if (ret < 0)
        return ret;
    /* Settle the layout: blocks for every referenced range, and a table. */
    do {
        uint64_t top = c->nb, nblocks, need_tc;

        changed = false;
        while (top && !rc_get(c, top - 1))
            top--;
        nblocks = DIV_ROUND_UP(top, per_rb);
        if (nblocks > nrt) {
            uint64_t *n = realloc(rt, nblocks * sizeof(*rt));
            if (!n) {
                ret = -ENOMEM;
                goto out;
            }
            memset(n + nrt, 0, (nblocks - nrt) * sizeof(*rt));
            rt = n;
            nrt = nblocks;
        }
        for (uint64_t bi = 0; bi < nrt; bi++) {
            if (rt[bi] || !block_needed(c, bi))
                continue;
            x = alloc_run(c, 1, false);
            if (x < 0) {
                ret = (int)x;
                goto out;
            }
            rc_set_kind(c, (uint64_t)x, K_REFBLOCK);
            rt[bi] = (uint64_t)x << q->cluster_bits;
            changed = true;
        }
        need_tc = MAX(1, DIV_ROUND_UP(nrt, per_rt));
        if (need_tc != tc) {
            if (tc)
                for (uint64_t k = toff >> q->cluster_bits; k < (toff >> q->cluster_bits) + tc; k++)
                    rc_set(c, k, 0);
            x = alloc_run(c, need_tc, false);
            if (x < 0) {
                ret = (int)x;
                goto out;
            }
            for (uint64_t k = (uint64_t)x; k < (uint64_t)x + need_tc; k++)
                rc_set_kind(c, k, K_FIXED);
            tc = need_tc;
            toff = (uint64_t)x << q->cluster_bits;
            changed = true;
        }
    } while (changed);
    if (tc * cs > QCOW2_MAX_REFTABLE_BYTES) {
        ret = err_set(-EFBIG, "the rebuilt refcount table would exceed %u bytes",
                      QCOW2_MAX_REFTABLE_BYTES);
        goto out;
    }
    ret = forget_old_structure(c);
    if (ret < 0)
        goto out;

    /* The blocks, from the array; then the table; then the header. */
    for (uint64_t bi = 0; bi < nrt; bi++) {
        if (!rt[bi])
            continue;
        memset(c->buf, 0, cs);
        for (uint64_t k = bi * per_rb; k < MIN(c->nb, (bi + 1) * per_rb); k++)
            qcow2_rb_set(q, c->buf, k - bi * per_rb, MIN(rc_get(c, k), q->refcount_max));
        ret = qcow2_write_metadata(q, 0, rt[bi], c->buf, cs);
        if (ret < 0)
            goto out;
    }
    ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;
    {
        uint8_t *tb = xzalloc(tc * cs);
        if (!tb) {
            ret = -ENOMEM;
            goto out;
        }
        for (uint64_t bi = 0; bi < nrt; bi++)
            put_be64(tb + bi * 8, rt[bi]);
        ret = qcow2_write_metadata(q, 0, toff, tb, (size_t)(tc * cs));
        free(tb);
    }
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;
    put_be64(hdr, toff);
    put_be32(hdr + 8, (uint32_t)tc);
    ret = qfile_pwrite(q->file, hdr, sizeof(hdr), QCOW2_HDR_REFTABLE_OFFSET);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;

    /* Now the engine follows the new structure. */
    for (uint64_t bi = 0; bi < q->reftable_size; bi++)
        if (q->reftable[bi] & REFT_OFFSET_MASK)
            qcow2_cache_discard(q->rc_cache, q->reftable[bi] & REFT_OFFSET_MASK & ~(cs - 1));
    for (uint64_t bi = 0; bi < nrt; bi++)
        if (rt[bi])
            qcow2_cache_discard(q->rc_cache, rt[bi]);
    {
        uint64_t *nt = xzalloc(tc * cs);
        if (!nt) {
            ret = -ENOMEM;
            goto out;
        }
        memcpy(nt, rt, nrt * sizeof(*rt));
        free(q->reftable);
        q->reftable = nt;
    }
    q->reftable_size = tc * per_rt;
    q->meta.h.refcount_table_offset = toff;
    q->meta.h.refcount_table_clusters = (uint32_t)tc;
    q->free_cluster_hint = 0;
    c->nfresh = 0;
out:
    free(rt);
    return ret;
}
