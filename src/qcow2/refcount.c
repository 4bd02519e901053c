/*
 * refcount.c - reference counts: reading and changing them at every width
 * (1 to 64 bits), allocating and freeing clusters, adding refcount blocks
 * and growing the refcount table.
 *
 * Ordering: a new refcount block reaches the disk before the refcount table
 * entry that points at it; a new refcount table (with the blocks covering
 * it) before the header that points at it; the old table is freed last.
 * A crash between any two steps leaves only leaked clusters.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

uint64_t qcow2_rb_get(const struct qcow2 *q, const void *block, uint64_t index)
{
    const uint8_t *b = block;

    switch (q->refcount_order) {
    case 0: return (b[index / 8] >> (index % 8)) & 1;
    case 1: return (b[index / 4] >> (2 * (index % 4))) & 3;
    case 2: return (b[index / 2] >> (4 * (index % 2))) & 15;
    case 3: return b[index];
    case 4: return be16(b + 2 * index);
    case 5: return be32(b + 4 * index);
    default: return be64(b + 8 * index);
    }
}

void qcow2_rb_set(const struct qcow2 *q, void *block, uint64_t index, uint64_t v)
{
    uint8_t *b = block;
    unsigned shift;

    switch (q->refcount_order) {
    case 0:
        shift = index % 8;
        b[index / 8] = (uint8_t)((b[index / 8] & ~(1u << shift)) | (v & 1) << shift);
        break;
    case 1:
        shift = 2 * (index % 4);
        b[index / 4] = (uint8_t)((b[index / 4] & ~(3u << shift)) | (v & 3) << shift);
        break;
    case 2:
        shift = 4 * (index % 2);
        b[index / 2] = (uint8_t)((b[index / 2] & ~(15u << shift)) | (v & 15) << shift);
        break;
    case 3: b[index] = (uint8_t)v; break;
    case 4: put_be16(b + 2 * index, (uint16_t)v); break;
    case 5: put_be32(b + 4 * index, (uint32_t)v); break;
    default: put_be64(b + 8 * index, v); break;
    }
}

static uint64_t rt_index(const struct qcow2 *q, uint64_t cluster)
{
    return cluster >> q->rb_bits;
}

static uint64_t rb_index(const struct qcow2 *q, uint64_t cluster)
{
    return cluster & ((1ULL << q->rb_bits) - 1);
}

/* The refcount block for reftable index i: 0 when there is none. */
static int block_offset(struct qcow2 *q, uint64_t i, uint64_t *off)
{
    uint64_t e;

    *off = 0;
    if (i >= q->reftable_size)
        return 0;
    e = q->reftable[i];
    if (e & REFT_RESERVED_MASK)
        return qcow2_signal_corruption(q, "Refcount table entry %llu has reserved bits set",
                                       (unsigned long long)i);
    *off = e & REFT_OFFSET_MASK;
    if (*off)
        return qcow2_check_table_offset(q, *off, "Refcount block");
    return 0;
}

int qcow2_refcount_get(struct qcow2 *q, uint64_t cluster, uint64_t *rc)
{
    uint64_t off;
    void *block;
    int ret;

    *rc = 0;
    ret = block_offset(q, rt_index(q, cluster), &off);
    if (ret < 0 || !off)
        return ret;
    ret = qcow2_cache_get(q, q->rc_cache, off, &block);
    if (ret < 0)
        return ret;
    *rc = qcow2_rb_get(q, block, rb_index(q, cluster));
    qcow2_cache_put(q->rc_cache, &block);
    return 0;
}

/*
 * First run of n free clusters at or after start. Clusters that no refcount
 * block covers are free. Reads each block once.
 */
static int find_free(struct qcow2 *q, uint64_t start, uint64_t n, uint64_t *found)
{
    uint64_t i = start, run = 0;
    const uint64_t per_block = 1ULL << q->rb_bits;

    while (run < n) {
        uint64_t bi = rt_index(q, i), off, end = (bi + 1) * per_block;

        if (i >> (62 - q->cluster_bits))
            return err_set(-ENOSPC, "no free clusters left in the image");
        void *block;
        int ret = block_offset(q, bi, &off);

        if (ret < 0)
            return ret;
        if (!off) {
            run += end - i;
            i = end;
            continue;
        }
        ret = qcow2_cache_get(q, q->rc_cache, off, &block);
        if (ret < 0)
            return ret;
        for (; i < end && run < n; i++) {
            if (qcow2_rb_get(q, block, rb_index(q, i)))
                run = 0;
            else
                run++;
        }
        qcow2_cache_put(q->rc_cache, &block);
    }
    *found = i - run;   /* the run started there, however far it reaches */
    return 0;
}

static uint64_t file_clusters(struct qcow2 *q)
{
    uint64_t size = 0;

    qfile_size(q->file, &size);
    return MAX(DIV_ROUND_UP(size, q->cluster_size), q->alloc_end);
}

static int write_reftable_entries(struct qcow2 *q, uint64_t from, uint64_t to)
{
    uint64_t *be;
    int ret;

    if (to <= from)
        return 0;
    be = malloc((size_t)(to - from) * 8);
    if (!be)
        return -ENOMEM;
    for (uint64_t i = from; i < to; i++)
        put_be64(&be[i - from], q->reftable[i]);
    ret = qcow2_write_metadata(q, QCOW2_OL_REFTABLE,
                               q->meta.h.refcount_table_offset + from * 8, be,
                               (size_t)(to - from) * 8);
    free(be);
    if (ret == 0)
        ret = qfile_flush(q->file);
    return ret;
}

/*
 * Grow the refcount table to at least min_entries. The new table and any
 * refcount blocks needed to describe it go to the end of the image, in an
 * area that describes itself.
 */
static int grow_reftable(struct qcow2 *q, uint64_t min_entries)
{
    const uint64_t cs = q->cluster_size, per_cluster = cs / 8;
    const uint64_t start = file_clusters(q);
    const uint64_t old_off = q->meta.h.refcount_table_offset;
    const uint64_t old_clusters = q->meta.h.refcount_table_clusters;
    uint64_t tc, nb = 0, entries, area_end, *nt;
    uint8_t hdr[12];
    void *block;
    int ret;

    entries = MAX(min_entries, q->reftable_size + q->reftable_size / 2);
    for (;;) {
        uint64_t need = 0;
        tc = DIV_ROUND_UP(entries, per_cluster);
        area_end = start + tc + nb;
        if (rt_index(q, area_end - 1) + 1 > entries) {
            entries = rt_index(q, area_end - 1) + 1;
            continue;
        }
        for (uint64_t bi = rt_index(q, start); bi <= rt_index(q, area_end - 1); bi++)
            if (bi >= q->reftable_size || !(q->reftable[bi] & REFT_OFFSET_MASK))
                need++;
        if (need == nb)
            break;
        nb = need;
    }
    if ((tc << q->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES)
        return err_set(-EFBIG, "the refcount table would exceed %u bytes",
                       QCOW2_MAX_REFTABLE_BYTES);
    nt = xzalloc(tc * cs);
    if (!nt)
        return -ENOMEM;
    memcpy(nt, q->reftable, q->reftable_size * 8);

    /* New, empty blocks at [start + tc, area_end), one per uncovered index. */
    {
        uint64_t next = start + tc;
        for (uint64_t bi = rt_index(q, start); bi <= rt_index(q, area_end - 1); bi++) {
            if (nt[bi] & REFT_OFFSET_MASK)
                continue;
            nt[bi] = next << q->cluster_bits;
            ret = qcow2_cache_get_empty(q, q->rc_cache, nt[bi], &block);
            if (ret < 0)
                goto out;
            qcow2_cache_mark_dirty(q->rc_cache, block);
            qcow2_cache_put(q->rc_cache, &block);
            next++;
        }
    }
    /* The area's own clusters, counted in new and existing blocks alike. */
    for (uint64_t c = start; c < area_end; c++) {
        ret = qcow2_cache_get(q, q->rc_cache, nt[rt_index(q, c)] & REFT_OFFSET_MASK, &block);
        if (ret < 0)
            goto out;
        qcow2_rb_set(q, block, rb_index(q, c), 1);
        qcow2_cache_mark_dirty(q->rc_cache, block);
        qcow2_cache_put(q->rc_cache, &block);
    }
    ret = qcow2_cache_flush(q, q->rc_cache);
    if (ret < 0)
        goto out;
    /* The new table, then the header that points at it. */
    for (uint64_t i = 0; i < tc * per_cluster; i++)
        put_be64(&nt[i], nt[i]);
    ret = qfile_pwrite(q->file, nt, tc * cs, start * cs);
    for (uint64_t i = 0; i < tc * per_cluster; i++)
        nt[i] = be64(&nt[i]);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;
    put_be64(hdr, start * cs);
    put_be32(hdr + 8, (uint32_t)tc);
    ret = qfile_pwrite(q->file, hdr, sizeof(hdr), QCOW2_HDR_REFTABLE_OFFSET);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;
    free(q->reftable);
    q->reftable = nt;
    nt = NULL;
    q->reftable_size = tc * per_cluster;
    q->meta.h.refcount_table_offset = start * cs;
    q->meta.h.refcount_table_clusters = (uint32_t)tc;
    q->alloc_end = MAX(q->alloc_end, area_end);
    /* Last: the old table is no longer referenced; free it. */
    ret = qcow2_refcount_update(q, old_off, old_clusters * cs, -1);
out:
    free(nt);
    return ret;
}

/* Make sure reftable index bi has a refcount block. */
static int ensure_block(struct qcow2 *q, uint64_t bi, int depth)
{
    uint64_t off, x;
    void *block;
    int ret;

    if (depth > 8)
        return err_set(-ELOOP, "refcount block allocation does not converge");
    if (bi >= q->reftable_size) {
        ret = grow_reftable(q, bi + 1);
        if (ret < 0)
            return ret;
    }
    ret = block_offset(q, bi, &off);
    if (ret < 0 || off)
        return ret;
    /* Where the new block goes: the first free cluster, counted somewhere. */
    for (;;) {
        uint64_t xo;
        ret = find_free(q, q->free_cluster_hint, 1, &x);
        if (ret < 0)
            return ret;
        if (rt_index(q, x) == bi)
            break;
        ret = block_offset(q, rt_index(q, x), &xo);
        if (ret < 0)
            return ret;
        if (xo)
            break;
        ret = ensure_block(q, rt_index(q, x), depth + 1);
        if (ret < 0)
            return ret;
        if (bi < q->reftable_size && (q->reftable[bi] & REFT_OFFSET_MASK))
            return 0;
    }
    if ((x << q->cluster_bits) >= QCOW2_MAX_HOST_OFFSET)
        return err_set(-EFBIG, "image would grow past the largest host offset");
    ret = qcow2_cache_get_empty(q, q->rc_cache, x << q->cluster_bits, &block);
    if (ret < 0)
        return ret;
    qcow2_cache_mark_dirty(q->rc_cache, block);
    if (rt_index(q, x) == bi) {
        qcow2_rb_set(q, block, rb_index(q, x), 1);     /* describes itself */
        qcow2_cache_put(q->rc_cache, &block);
    } else {
        void *other;
        qcow2_cache_put(q->rc_cache, &block);
        ret = qcow2_cache_get(q, q->rc_cache, q->reftable[rt_index(q, x)] & REFT_OFFSET_MASK,
                              &other);
        if (ret < 0)
            return ret;
        qcow2_rb_set(q, other, rb_index(q, x), 1);
        qcow2_cache_mark_dirty(q->rc_cache, other);
        qcow2_cache_put(q->rc_cache, &other);
    }
    q->alloc_end = MAX(q->alloc_end, x + 1);
    /* Block (and its own count) on disk before the table points at it. */
    ret = qcow2_cache_flush(q, q->rc_cache);
    if (ret < 0)
        return ret;
    q->reftable[bi] = x << q->cluster_bits;
    return write_reftable_entries(q, bi, bi + 1);
}

int qcow2_refcount_update(struct qcow2 *q, uint64_t offset, uint64_t length, int64_t addend)
{
    uint64_t first, last, c;
    int ret;

    if (!length || !addend)
        return 0;
    if (!q->writable)
        return -EBADF;
    first = offset >> q->cluster_bits;
    last = (offset + length - 1) >> q->cluster_bits;
    /* Pass 1: blocks exist, and every new value fits. */
    for (c = first; c <= last; c++) {
        uint64_t rc, off;
        if (addend > 0) {
            ret = ensure_block(q, rt_index(q, c), 0);
            if (ret < 0)
                return ret;
        } else {
            ret = block_offset(q, rt_index(q, c), &off);
            if (ret < 0)
                return ret;
            if (!off)
                return qcow2_signal_corruption(q, "Freeing cluster %#llx, which no refcount "
                                               "block covers", (unsigned long long)(c << q->cluster_bits));
        }
        ret = qcow2_refcount_get(q, c, &rc);
        if (ret < 0)
            return ret;
        if (addend < 0 && rc < (uint64_t)-addend)
            return qcow2_signal_corruption(q, "Refcount of cluster %#llx would drop below 0",
                                           (unsigned long long)(c << q->cluster_bits));
        if (addend > 0 && q->refcount_max - rc < (uint64_t)addend)
            return err_set(-ERANGE, "Refcount of cluster %#llx would exceed %llu "
                           "(refcount_bits=%u)", (unsigned long long)(c << q->cluster_bits),
                           (unsigned long long)q->refcount_max, q->refcount_bits);
    }
    /* Pass 2: apply, a block at a time. */
    for (c = first; c <= last;) {
        uint64_t off = q->reftable[rt_index(q, c)] & REFT_OFFSET_MASK;
        uint64_t end = MIN(last + 1, (rt_index(q, c) + 1) << q->rb_bits);
        void *block;

        ret = qcow2_cache_get(q, q->rc_cache, off, &block);
        if (ret < 0)
            return ret;
        for (; c < end; c++) {
            uint64_t v = qcow2_rb_get(q, block, rb_index(q, c)) + (uint64_t)addend;
            qcow2_rb_set(q, block, rb_index(q, c), v);
            if (v == 0) {
                if (c < q->free_cluster_hint)
                    q->free_cluster_hint = c;
                /* A freed cluster may be reused for anything: stop packing
                 * compressed data into it. */
                if (q->free_byte_offset >> q->cluster_bits == c)
                    q->free_byte_offset = 0;
                qcow2_cache_discard(q->l2_cache, c << q->cluster_bits);
                if ((c << q->cluster_bits) != off)
                    qcow2_cache_discard(q->rc_cache, c << q->cluster_bits);
            }
        }
        qcow2_cache_mark_dirty(q->rc_cache, block);
        qcow2_cache_put(q->rc_cache, &block);
    }
    return 0;
}

int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t n)
{
    uint64_t start;
    int ret;

    if (!q->writable)
        return -EBADF;
    if (!n)
        return err_set(-EINVAL, "allocation of zero clusters");
    for (int tries = 0; tries < 16; tries++) {
        bool changed = false;
        ret = find_free(q, q->free_cluster_hint, n, &start);
        if (ret < 0)
            return ret;
        if (((start + n) << q->cluster_bits) > QCOW2_MAX_HOST_OFFSET)
            return err_set(-EFBIG, "image would grow past the largest host offset");
        /* Blocks first: making one may take a cluster of this run. */
        for (uint64_t bi = rt_index(q, start); bi <= rt_index(q, start + n - 1); bi++) {
            uint64_t off;
            ret = block_offset(q, bi, &off);
            if (ret < 0)
                return ret;
            if (!off) {
                ret = ensure_block(q, bi, 0);
                if (ret < 0)
                    return ret;
                changed = true;
            }
        }
        if (changed)
            continue;
        ret = qcow2_refcount_update(q, start << q->cluster_bits, n << q->cluster_bits, 1);
        if (ret < 0)
            return ret;
        if (n == 1 || start == q->free_cluster_hint)
            q->free_cluster_hint = start + n;
        q->alloc_end = MAX(q->alloc_end, start + n);
        return (int64_t)(start << q->cluster_bits);
    }
    return err_set(-EIO, "cluster allocation does not converge");
}

int64_t qcow2_alloc_bytes(struct qcow2 *q, uint64_t len)
{
    uint64_t cs = q->cluster_size, fbo = q->free_byte_offset;
    int64_t off;
    int ret;

    if (!len || len > cs)
        return err_set(-EINVAL, "compressed allocation of %llu bytes", (unsigned long long)len);
    if (fbo && (fbo & (cs - 1))) {
        uint64_t cluster = fbo >> q->cluster_bits, frc;
        /* A cluster packed full of references (refcount_bits=1 allows one)
         * takes no more: start a new one, as qemu does. */
        ret = qcow2_refcount_get(q, cluster, &frc);
        if (ret < 0)
            return ret;
        if (frc >= q->refcount_max)
            goto new_cluster;
        if ((fbo & (cs - 1)) + len <= cs) {
            ret = qcow2_refcount_update(q, fbo, 1, 1);
            if (ret < 0)
                return ret;
            q->free_byte_offset = fbo + len;
            return (int64_t)fbo;
        }
        /* Spills into the next cluster: only if that one is free. */
        {
            uint64_t rc;
            ret = ensure_block(q, rt_index(q, cluster + 1), 0);
            if (ret < 0)
                return ret;
            ret = qcow2_refcount_get(q, cluster + 1, &rc);
            if (ret < 0)
                return ret;
            if (rc == 0) {
                ret = qcow2_refcount_update(q, (cluster + 1) << q->cluster_bits, 1, 1);
                if (ret == 0)
                    ret = qcow2_refcount_update(q, fbo, 1, 1);
                if (ret < 0)
                    return ret;
                q->alloc_end = MAX(q->alloc_end, cluster + 2);
                q->free_byte_offset = fbo + len;
                return (int64_t)fbo;
            }
        }
    }
new_cluster:
    off = qcow2_alloc_clusters(q, 1);
    if (off < 0)
        return off;
    q->free_byte_offset = (uint64_t)off + len;
    return off;
}

int qcow2_free_clusters(struct qcow2 *q, uint64_t offset, uint64_t length)
{
    return qcow2_refcount_update(q, offset, length, -1);
}
