/*
 * amend_refcount.c - rewriting the refcount table and blocks at another
 * width (amend -o refcount_bits=N).
 *
 * The new table and blocks go past the end of the file, into clusters they
 * count themselves (their size is found by iterating, since more blocks can
 * need a larger table and a larger table more blocks). The header switches
 * refcount_order and the table in one write; the old table and blocks are
 * freed last, under the new width. A crash before the switch leaves the old
 * image with unused space past its end; after it, the new image with the
 * old structures leaked.
 *
 * Must not: change a refcount's value (only its width), or any L1/L2 table.
 */
#include <stdlib.h>
#include <string.h>

#include "amend.h"

static uint64_t width_max(uint32_t order)
{
    return order >= 6 ? UINT64_MAX : (1ULL << (1u << order)) - 1;
}

/* The refcount block the old table names at index i, checked; 0 = none. */
static int old_block(struct qcow2 *q, uint64_t i, uint64_t *off)
{
    uint64_t e = q->reftable[i];

    *off = e & REFT_OFFSET_MASK;
    if (e & REFT_RESERVED_MASK)
        return qcow2_signal_corruption(q, "Refcount table entry %llu has reserved bits set",
                                       (unsigned long long)i);
    return *off ? qcow2_check_table_offset(q, *off, "Refcount block") : 0;
}

/*
 * Walk every nonzero refcount under the current width: fn(c, value).
 * Stops at the first negative return.
 */
static int walk_refcounts(struct qcow2 *q, int (*fn)(void *ctx, uint64_t c, uint64_t v),
                          void *ctx)
{
    const uint64_t per_block = 1ULL << q->rb_bits;
    int ret = 0;

    for (uint64_t i = 0; i < q->reftable_size && ret == 0; i++) {
        uint64_t off;
        void *block;

        ret = old_block(q, i, &off);
        if (ret < 0 || !off)
            continue;
        ret = qcow2_cache_get(q, q->rc_cache, off, &block);
        if (ret < 0)
            break;
        for (uint64_t j = 0; j < per_block && ret == 0; j++) {
            uint64_t v = qcow2_rb_get(q, block, j);
            if (v)
                ret = fn(ctx, (i << q->rb_bits) | j, v);
        }
        qcow2_cache_put(q->rc_cache, &block);
    }
    return ret;
}

struct fit {
    struct qcow2 *q;
    uint32_t order;
};

static int check_fit(void *ctx, uint64_t c, uint64_t v)
{
    struct fit *f = ctx;

    if (v <= width_max(f->order))
        return 0;
    /* qemu-img's wording */
    return err_set(-ERANGE, "Cannot decrease refcount entry width to %u bits: Cluster at "
                   "offset %#llx has a refcount of %llu", 1u << f->order,
                   (unsigned long long)(c << f->q->cluster_bits), (unsigned long long)v);
}

int qcow2_amend_refcount_check(struct qcow2 *q, uint32_t order)
{
    struct fit f = { q, order };

    if (order >= q->refcount_order)
        return 0;
    return walk_refcounts(q, check_fit, &f);
}

/* Which new blocks hold a nonzero refcount, and where the counted area ends. */
struct usage {
    uint32_t new_rb_bits;
    uint8_t *need;              /* per new block index */
    uint64_t nneed;             /* entries in need[] */
    uint64_t nk;                /* one past the last block index needed */
    uint64_t used_end;          /* one past the last cluster with a refcount */
};

static int note_use(void *ctx, uint64_t c, uint64_t v)
{
    struct usage *u = ctx;
    uint64_t k = c >> u->new_rb_bits;

    (void)v;
    if (k >= u->nneed) {
        uint64_t n = MAX(k + 1, u->nneed * 2);
        uint8_t *nn = realloc(u->need, n);
        if (!nn)
            return -ENOMEM;
        memset(nn + u->nneed, 0, n - u->nneed);
        u->need = nn;
        u->nneed = n;
    }
    u->need[k] = 1;
    u->nk = MAX(u->nk, k + 1);
    u->used_end = MAX(u->used_end, c + 1);
    return 0;
}

/* Refcount of cluster c under the old width, reading each block once in a run. */
struct reader {
    struct qcow2 *q;
    uint64_t block_index;       /* UINT64_MAX: none held */
    void *block;
};

static int read_old(struct reader *r, uint64_t c, uint64_t *v)
{
    struct qcow2 *q = r->q;
    uint64_t bi = c >> q->rb_bits, off;
    int ret;

    *v = 0;
    if (bi != r->block_index) {
        if (r->block)
            qcow2_cache_put(q->rc_cache, &r->block);
        r->block_index = bi;
        if (bi >= q->reftable_size)
            return 0;
        ret = old_block(q, bi, &off);
        if (ret < 0 || !off)
            return ret;
        ret = qcow2_cache_get(q, q->rc_cache, off, &r->block);
        if (ret < 0)
            return ret;
    }
    if (r->block)
        *v = qcow2_rb_get(q, r->block, c & ((1ULL << q->rb_bits) - 1));
    return 0;
}

int qcow2_amend_refcount_order(struct qcow2 *q, uint32_t order, struct amend_progress *p)
{
    const uint64_t cs = q->cluster_size, per_table_cluster = cs / 8;
    const uint32_t nrb = q->cluster_bits + 3 - order;
    /* qcow2_rb_set() only looks at refcount_order: a stand-in for the new width. */
    struct qcow2 w = { .refcount_order = order };
    struct usage u = { .new_rb_bits = nrb };
    struct reader r = { .q = q, .block_index = UINT64_MAX };
    uint64_t area, tc = 1, nb = 0, end, kmax, next, fsize, nblocks_done = 0;
    uint64_t old_rt_off = q->meta.h.refcount_table_offset;
    uint32_t old_rt_clusters = q->meta.h.refcount_table_clusters, old_order = q->refcount_order;
    uint64_t *rt = NULL, *be = NULL, *old_rt = NULL, old_rt_size = q->reftable_size;
    uint8_t *buf = NULL;
    int ret;

    if (order == q->refcount_order)
        return 0;
    /* The old refcounts on disk, and the cache clean, before anything moves. */
    ret = qcow2_flush(q);
    if (ret < 0)
        return ret;
    ret = walk_refcounts(q, note_use, &u);
    if (ret < 0)
        goto out;
    ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        goto out;
    area = MAX(MAX(DIV_ROUND_UP(fsize, cs), q->alloc_end), u.used_end);

    /* Table [area, area+tc), blocks [area+tc, end): until both sizes settle. */
    for (;;) {
        uint64_t need = 0, ntc;
        end = area + tc + nb;
        kmax = MAX(u.nk, ((end - 1) >> nrb) + 1);
        for (uint64_t k = 0; k < kmax; k++)
            if ((k < u.nk && u.need[k]) || (k >= (area >> nrb) && k <= ((end - 1) >> nrb)))
                need++;
        ntc = DIV_ROUND_UP(kmax, per_table_cluster);
        if (ntc == tc && need == nb)
            break;
        tc = ntc;
        nb = need;
    }
    if ((tc << q->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES) {
        ret = err_set(-EFBIG, "The refcount table at %u bits would exceed %u bytes",
                      1u << order, QCOW2_MAX_REFTABLE_BYTES);
        goto out;
    }
    if ((end << q->cluster_bits) > QCOW2_MAX_HOST_OFFSET) {
        ret = err_set(-EFBIG, "image would grow past the largest host offset");
        goto out;
    }
    rt = xzalloc(tc * cs);
    be = malloc(tc * cs);
    buf = malloc(cs);
    if (!rt || !be || !buf) {
        ret = -ENOMEM;
        goto out;
    }
    next = area + tc;
    for (uint64_t k = 0; k < kmax; k++)
        if ((k < u.nk && u.need[k]) || (k >= (area >> nrb) && k <= ((end - 1) >> nrb)))
            rt[k] = (next++) << q->cluster_bits;

    /* The new blocks: old values, and 1 for the new structures themselves. */
    for (uint64_t k = 0; k < kmax; k++) {
        if (!rt[k])
            continue;
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < (1ULL << nrb); j++) {
            uint64_t c = (k << nrb) | j, v = 0;
            if (c < u.used_end) {
                ret = read_old(&r, c, &v);
                if (ret < 0)
                    goto out;
            } else if (c >= area && c < end) {
                v = 1;
            }
            if (v)
                qcow2_rb_set(&w, buf, j, v);
        }
        ret = qcow2_write_metadata(q, 0, rt[k], buf, cs);
        if (ret < 0)
            goto out;
        amend_progress(p, ++nblocks_done, nb + 1);
    }
    if (r.block)
        qcow2_cache_put(q->rc_cache, &r.block);
    for (uint64_t i = 0; i < tc * per_table_cluster; i++)
        put_be64(&be[i], rt[i]);
    ret = qcow2_write_metadata(q, 0, area << q->cluster_bits, be, tc * cs);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;

    /* The switch: width and table in one header write. */
    q->meta.h.refcount_order = order;
    q->meta.h.refcount_table_offset = area << q->cluster_bits;
    q->meta.h.refcount_table_clusters = (uint32_t)tc;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0) {
        q->meta.h.refcount_order = old_order;
        q->meta.h.refcount_table_offset = old_rt_off;
        q->meta.h.refcount_table_clusters = old_rt_clusters;
        goto out;
    }
    for (uint64_t i = 0; i < q->reftable_size; i++)
        if (q->reftable[i] & REFT_OFFSET_MASK)
            qcow2_cache_discard(q->rc_cache, q->reftable[i] & REFT_OFFSET_MASK);
    old_rt = q->reftable;
    q->reftable = rt;
    rt = NULL;
    q->reftable_size = tc * per_table_cluster;
    q->refcount_order = order;
    q->refcount_bits = 1u << order;
    q->refcount_max = width_max(order);
    q->rb_bits = nrb;
    q->free_cluster_hint = 0;
    q->alloc_end = MAX(q->alloc_end, end);

    /* Last: the old structures are unreferenced now; free them. */
    ret = qcow2_free_clusters(q, old_rt_off, (uint64_t)old_rt_clusters * cs);
    for (uint64_t i = 0; i < old_rt_size && ret == 0; i++)
        if (old_rt[i] & REFT_OFFSET_MASK)
            ret = qcow2_free_clusters(q, old_rt[i] & REFT_OFFSET_MASK, cs);
    if (ret == 0)
        ret = qcow2_flush(q);
    amend_progress(p, 1, 1);
out:
    if (r.block)
        qcow2_cache_put(q->rc_cache, &r.block);
    free(u.need);
    free(rt);
    free(be);
    free(buf);
    free(old_rt);
    return ret;
}
