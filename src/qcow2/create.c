/*
 * create.c - a new qcow2 image, laid out exactly as qemu-img 7.2 lays it out
 * for the same options.
 *
 * qemu builds a new image by writing a header, a one-cluster refcount table
 * and an empty refcount block, then growing the image with its ordinary
 * allocator (L1 table, refcount blocks, refcount table growth, and with
 * preallocation the L2 tables and data clusters). Where each structure lands
 * follows from that allocator's rules, so this file replays them on a model
 * of the image: which clusters are in use (as runs, so a terabyte costs a
 * few entries), the refcount table and the L1 table. Structures whose final
 * contents are known only at the end (refcount blocks, the header) are
 * written then; everything else is written in qemu's order as it happens,
 * so a freed cluster keeps what qemu left there.
 *
 * The replay runs twice: dry (no file; finds -EFBIG and other refusals
 * before anything is written), then for real.
 *
 * Owns: the layout of fresh images. Must not: open existing images; there
 * is no struct qcow2 (and so no cache) for an image that does not exist yet.
 */
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "create.h"
#include "qcow2.h"

#define INV_OFFSET UINT64_MAX
/* qemu compares refcount table entry counts against this byte limit. */
#define QEMU_MAX_REFTABLE_SIZE (8ULL * 1024 * 1024)
/* BDRV_REQUEST_MAX_BYTES: the largest single request qemu's block layer makes. */
#define REQUEST_MAX_BYTES ((uint64_t)(INT32_MAX >> 9) << 9)
#define MAX_RETRIES 10000

/* Used clusters as sorted, disjoint, non-touching runs [s, e). */
struct runs {
    uint64_t (*r)[2];
    size_t n, cap;
};

struct sim {
    const struct qcow2_create_opts *o;
    struct qfile *f;            /* NULL: dry run */
    unsigned cb;                /* cluster bits */
    uint64_t cs;
    unsigned order;             /* refcount order */
    unsigned rb_bits;           /* log2 of refcount entries per block */
    unsigned l2_bits;           /* log2 of L2 entries per table */
    unsigned l2_esize;          /* 8, or 16 with extended L2 entries */
    struct runs used;
    uint64_t fci;               /* qemu's free_cluster_index */
    uint64_t *rt;               /* refcount table, host order */
    uint64_t rt_size, rt_off, rt_max;
    uint64_t *l1;               /* only with preallocation */
    uint64_t l1_size, l1_off;
    uint64_t file_len;          /* the file's length as qemu's writes leave it */
    uint64_t crypto_off;        /* LUKS header area, 0: none */
    uint8_t *buf;               /* one cluster of scratch */
};

/* ---- the run set ------------------------------------------------------ */

/* First run that ends after c (or touches it when touch). */
static size_t runs_find(const struct runs *u, uint64_t c, bool touch)
{
    size_t lo = 0, hi = u->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (u->r[mid][1] > c || (touch && u->r[mid][1] == c))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* First used cluster >= c, or UINT64_MAX. */
static uint64_t runs_next_used(const struct runs *u, uint64_t c)
{
    size_t i = runs_find(u, c, false);
    return i == u->n ? UINT64_MAX : MAX(u->r[i][0], c);
}

/* First free cluster >= c. */
static uint64_t runs_next_free(const struct runs *u, uint64_t c)
{
    size_t i = runs_find(u, c, false);
    return i < u->n && u->r[i][0] <= c ? u->r[i][1] : c;
}

/* Replace runs [i, j) by the k runs in nr. */
static int runs_splice(struct runs *u, size_t i, size_t j, uint64_t nr[][2], size_t k)
{
    size_t n = u->n - (j - i) + k;

    if (n > u->cap) {
        size_t cap = MAX(n, u->cap * 2 + 16);
        void *p = realloc(u->r, cap * sizeof(*u->r));
        if (!p)
            return -ENOMEM;
        u->r = p;
        u->cap = cap;
    }
    memmove(u->r + i + k, u->r + j, (u->n - j) * sizeof(*u->r));
    memcpy(u->r + i, nr, k * sizeof(*u->r));
    u->n = n;
    return 0;
}

static int runs_add(struct runs *u, uint64_t s, uint64_t e)
{
    size_t i = runs_find(u, s, true), j = i;
    uint64_t nr[1][2] = { { s, e } };

    while (j < u->n && u->r[j][0] <= e)
        j++;
    if (j > i) {
        nr[0][0] = MIN(s, u->r[i][0]);
        nr[0][1] = MAX(e, u->r[j - 1][1]);
    }
    return runs_splice(u, i, j, nr, 1);
}

static int runs_del(struct runs *u, uint64_t s, uint64_t e)
{
    size_t i = runs_find(u, s, false), j = i, k = 0;
    uint64_t nr[2][2];

    while (j < u->n && u->r[j][0] < e)
        j++;
    if (j == i)
        return 0;
    if (u->r[i][0] < s) {
        nr[k][0] = u->r[i][0];
        nr[k++][1] = s;
    }
    if (u->r[j - 1][1] > e) {
        nr[k][0] = e;
        nr[k++][1] = u->r[j - 1][1];
    }
    return runs_splice(u, i, j, nr, k);
}

/* ---- file writes ------------------------------------------------------ */

static void extend(struct sim *s, uint64_t end)
{
    if (end > s->file_len)
        s->file_len = end;
}

static int sim_write(struct sim *s, uint64_t off, const void *buf, size_t len)
{
    extend(s, off + len);
    return s->f ? qfile_pwrite(s->f, buf, len, off) : 0;
}

static int write_zeroes(struct sim *s, uint64_t off, uint64_t len)
{
    memset(s->buf, 0, s->cs);
    while (len) {
        size_t n = (size_t)MIN(len, s->cs);
        int ret = sim_write(s, off, s->buf, n);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

/* Write n table entries (host order) as big-endian, a cluster at a time. */
static int write_table(struct sim *s, uint64_t off, const uint64_t *t, uint64_t n)
{
    uint64_t per = s->cs / 8;

    for (uint64_t i = 0; i < n; i += per) {
        uint64_t k = MIN(per, n - i);
        for (uint64_t j = 0; j < k; j++)
            put_be64(s->buf + j * 8, t[i + j]);
        int ret = sim_write(s, off + i * 8, s->buf, (size_t)(k * 8));
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int write_entry(struct sim *s, uint64_t off, uint64_t v)
{
    uint8_t b[8];

    put_be64(b, v);
    return sim_write(s, off, b, 8);
}

/* ---- qemu's refcount allocator, replayed ------------------------------ */

static int update_refcount(struct sim *s, uint64_t off, uint64_t len, bool decrease);

static uint64_t refblock_clusters(const struct sim *s)
{
    return 1ULL << s->rb_bits;
}

/* qemu's qcow2_refcount_metadata_size(): refcount blocks needed, fixed point. */
static uint64_t refcount_blocks_for(const struct sim *s, uint64_t clusters, bool generous)
{
    uint64_t per_table = s->cs / 8, per_block = refblock_clusters(s);
    uint64_t table = 0, blocks = 0, last, n = 0;

    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DIV_ROUND_UP(blocks, per_table);
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += DIV_ROUND_UP(table, 2);
            n = 0;
            generous = false;
        }
    } while (n != last);
    return blocks;
}

static void update_rt_max(struct sim *s)
{
    uint64_t i = s->rt_size - 1;

    while (i > 0 && !s->rt[i])
        i--;
    s->rt_max = i;
}

/*
 * qemu's qcow2_refcount_area(): a new refcount table and the blocks that
 * cover it (and additional clusters beyond it), starting at start; the old
 * table is freed. Returns the offset after the new structures.
 */
static int64_t refcount_area(struct sim *s, uint64_t start, uint64_t additional, bool exact,
                             uint64_t new_index, uint64_t new_block)
{
    uint64_t total, table_size, table_clusters, area_index, nadd = 0;
    uint64_t table_off, end, block_off, old_off, old_size, *nt;
    int ret;

    total = refcount_blocks_for(s, start / s->cs + additional, !exact);
    if (total > QEMU_MAX_REFTABLE_SIZE)
        return -EFBIG;
    area_index = (start / s->cs) >> s->rb_bits;
    table_size = exact ? total : total + DIV_ROUND_UP(total, 2);
    table_size = ALIGN_UP(table_size, s->cs / 8);
    table_clusters = table_size * 8 / s->cs;
    if (table_size > QEMU_MAX_REFTABLE_SIZE)
        return -EFBIG;
    nt = calloc(table_size, 8);
    if (!nt)
        return -ENOMEM;
    if (table_size > s->rt_max)
        memcpy(nt, s->rt, (s->rt_max + 1) * 8);
    else
        memcpy(nt, s->rt, table_size * 8);
    if (new_block)
        nt[new_index] = new_block;
    for (uint64_t i = area_index; i < total; i++)
        if (!nt[i])
            nadd++;
    table_off = start + nadd * s->cs;
    end = table_off + table_clusters * s->cs;

    block_off = start;
    for (uint64_t i = area_index; i < total; i++) {
        uint64_t first = i * refblock_clusters(s) * s->cs;

        if (!nt[i]) {
            nt[i] = block_off;
            block_off += s->cs;
            extend(s, block_off);       /* the new block is written */
        }
        if (first < end) {
            uint64_t from = MAX(first, start) / s->cs;
            uint64_t to = MIN(end, first + refblock_clusters(s) * s->cs) / s->cs;
            if (runs_next_used(&s->used, from) < to) {
                free(nt);
                return err_set(-EIO, "refcount area at %#llx is not free",
                               (unsigned long long)start);
            }
            ret = runs_add(&s->used, from, to);
            if (ret < 0) {
                free(nt);
                return ret;
            }
        }
    }
    ret = write_table(s, table_off, nt, table_size);
    if (ret < 0) {
        free(nt);
        return ret;
    }
    old_off = s->rt_off;
    old_size = s->rt_size;
    free(s->rt);
    s->rt = nt;
    s->rt_size = table_size;
    s->rt_off = table_off;
    update_rt_max(s);
    /* The old table keeps its bytes on disk until something reuses them. */
    ret = update_refcount(s, old_off, old_size * 8, true);
    return ret < 0 ? ret : (int64_t)end;
}

/* qemu's alloc_clusters_noref(): the first free run at or after the hint. */
static int64_t alloc_noref(struct sim *s, uint64_t size)
{
    uint64_t n = DIV_ROUND_UP(size, s->cs), p = s->fci;

    for (;;) {
        uint64_t u = runs_next_used(&s->used, p);
        if (u == UINT64_MAX || u - p >= n)
            break;
        p = runs_next_free(&s->used, u);
    }
    s->fci = p + n;
    if (s->fci > 0 && s->fci - 1 > ((uint64_t)INT64_MAX >> s->cb))
        return -EFBIG;
    return (int64_t)(p << s->cb);
}

/*
 * qemu's alloc_refcount_block(): make sure the block covering cluster c
 * exists. Returns 0 when it did, -EAGAIN after adding one (the caller
 * restarts its search), or an error.
 */
static int alloc_refcount_block(struct sim *s, uint64_t c)
{
    uint64_t ti = c >> s->rb_bits, nbc, blocks_used;
    int64_t nb, end;
    int ret;

    if (ti < s->rt_size && s->rt[ti])
        return 0;
    nb = alloc_noref(s, s->cs);
    if (nb < 0)
        return (int)nb;
    nbc = (uint64_t)nb >> s->cb;
    if ((nbc >> s->rb_bits) == ti) {
        ret = runs_add(&s->used, nbc, nbc + 1);         /* describes itself */
    } else {
        ret = update_refcount(s, (uint64_t)nb, s->cs, false);
    }
    if (ret < 0)
        return ret;
    extend(s, (uint64_t)nb + s->cs);                    /* the block is written */
    if (ti < s->rt_size) {
        s->rt[ti] = (uint64_t)nb;
        s->rt_max = MAX(s->rt_max, ti);
        ret = write_entry(s, s->rt_off + ti * 8, (uint64_t)nb);
        return ret < 0 ? ret : -EAGAIN;
    }
    /* The table is full: a new one, with self-describing blocks, past it all. */
    blocks_used = DIV_ROUND_UP(MAX(c + 1, nbc + 1), refblock_clusters(s));
    if (blocks_used > (UINT64_MAX >> s->cb) / refblock_clusters(s))
        return -EFBIG;
    end = refcount_area(s, blocks_used * refblock_clusters(s) * s->cs, 0, false, ti,
                        (uint64_t)nb);
    if (end < 0)
        return (int)end;
    return -EAGAIN;
}

/* qemu's update_refcount() for addend 1, with its undo on failure. */
static int update_refcount(struct sim *s, uint64_t off, uint64_t len, bool decrease)
{
    uint64_t c, last;
    int ret = 0;

    if (!len)
        return 0;
    c = off >> s->cb;
    last = (off + len - 1) >> s->cb;
    while (c <= last) {
        uint64_t seg_end = MIN(last + 1, ((c >> s->rb_bits) + 1) << s->rb_bits);
        uint64_t stop;

        ret = alloc_refcount_block(s, c);
        /* qemu retries the same clusters first after adding a block */
        if (ret == -EAGAIN && s->fci > (off >> s->cb))
            s->fci = off >> s->cb;
        if (ret < 0)
            break;
        /* Every refcount in a new image is 0 or 1. */
        stop = decrease ? runs_next_free(&s->used, c) : runs_next_used(&s->used, c);
        stop = MIN(stop, seg_end);
        ret = decrease ? runs_del(&s->used, c, stop) : runs_add(&s->used, c, stop);
        if (ret == 0 && decrease && c < s->fci)
            s->fci = c;
        if (ret < 0)
            break;
        c = stop;
        if (stop < seg_end) {
            ret = err_set(-EINVAL, "refcount of cluster %#llx out of range",
                          (unsigned long long)stop);
            break;
        }
    }
    if (ret < 0 && (c << s->cb) > off)
        update_refcount(s, off, (c << s->cb) - off, !decrease);
    return ret;
}

/* qemu's qcow2_alloc_clusters(). */
static int64_t alloc_clusters(struct sim *s, uint64_t size)
{
    for (int tries = 0; tries < MAX_RETRIES; tries++) {
        int64_t off = alloc_noref(s, size);
        int ret;

        if (off < 0)
            return off;
        ret = update_refcount(s, (uint64_t)off, size, false);
        if (ret != -EAGAIN)
            return ret < 0 ? ret : off;
    }
    return err_set(-EIO, "cluster allocation does not converge");
}

/* qemu's qcow2_alloc_clusters_at(): as many free clusters as start at off. */
static int64_t alloc_clusters_at(struct sim *s, uint64_t off, uint64_t n)
{
    for (int tries = 0; tries < MAX_RETRIES; tries++) {
        uint64_t c = off >> s->cb, u = runs_next_used(&s->used, c);
        uint64_t i = MIN(n, u - c);
        int ret = update_refcount(s, off, i << s->cb, false);

        if (ret != -EAGAIN)
            return ret < 0 ? ret : (int64_t)i;
    }
    return err_set(-EIO, "cluster allocation does not converge");
}

/* ---- L1 and L2 tables --------------------------------------------------- */

static int grow_l1(struct sim *s)
{
    int64_t off;
    int ret;

    s->l1_size = qcow2_l1_entries_for(s->cb, s->o->extended_l2, s->o->size);
    if (!s->l1_size)
        return 0;
    if (s->l1_size > INT32_MAX / 8 || s->l1_size > QCOW2_MAX_L1_BYTES / 8)
        return -EFBIG;
    off = alloc_clusters(s, s->l1_size * 8);
    if (off < 0)
        return (int)off;
    s->l1_off = (uint64_t)off;
    ret = write_zeroes(s, s->l1_off, s->l1_size * 8);
    if (ret < 0 || s->o->prealloc == QCOW2_PREALLOC_OFF)
        return ret;
    s->l1 = calloc(s->l1_size, 8);
    return s->l1 ? 0 : -ENOMEM;
}

/* qemu's get_cluster_table(): the L2 table for guest, allocated if needed. */
static int cluster_table(struct sim *s, uint64_t guest, uint64_t *l2)
{
    uint64_t i = guest >> (s->l2_bits + s->cb);
    int64_t off;
    int ret;

    if (i >= s->l1_size)
        return err_set(-EIO, "guest offset %#llx beyond the L1 table",
                       (unsigned long long)guest);
    if (!(s->l1[i] & QCOW_OFLAG_COPIED)) {
        off = alloc_clusters(s, s->cs);
        if (off <= 0)
            return off < 0 ? (int)off : err_set(-EIO, "L2 table allocated at offset 0");
        ret = write_zeroes(s, (uint64_t)off, s->cs);
        if (ret < 0)
            return ret;
        s->l1[i] = (uint64_t)off | QCOW_OFLAG_COPIED;
        ret = write_entry(s, s->l1_off + i * 8, s->l1[i]);
        if (ret < 0)
            return ret;
    }
    *l2 = s->l1[i] & L1E_OFFSET_MASK;
    return 0;
}

/* qemu's qcow2_alloc_cluster_link_l2() for a preallocation: n clusters from
 * guest map to host onwards; extended L2 bitmaps stay 0 (allocated, unwritten). */
static int link_l2(struct sim *s, uint64_t guest, uint64_t host, uint64_t n)
{
    uint64_t l2, idx = (guest >> s->cb) & ((1ULL << s->l2_bits) - 1);
    uint64_t per = s->cs / s->l2_esize;
    int ret = cluster_table(s, guest, &l2);

    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < n; i += per) {
        uint64_t k = MIN(per, n - i);
        memset(s->buf, 0, s->cs);
        for (uint64_t j = 0; j < k; j++)
            put_be64(s->buf + j * s->l2_esize, (host + (i + j) * s->cs) | QCOW_OFLAG_COPIED);
        ret = sim_write(s, l2 + (idx + i) * s->l2_esize, s->buf, (size_t)(k * s->l2_esize));
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* ---- preallocation ------------------------------------------------------ */

struct meta {
    uint64_t guest, host, n;
};

/*
 * qemu's qcow2_alloc_host_offset() on a new image: no cluster is allocated
 * yet, so each step makes sure the L2 table exists, then allocates the rest
 * of that table's range, contiguously after the previous run if it can.
 */
static int alloc_host_offset(struct sim *s, uint64_t offset, uint64_t *bytes, uint64_t *host,
                             struct meta *m, int *nm)
{
    uint64_t start = offset, remaining = *bytes, cluster_offset = INV_OFFSET, cur = 0;
    uint64_t l2_entries = 1ULL << s->l2_bits;

    *host = INV_OFFSET;
    *nm = 0;
    for (;;) {
        uint64_t oic, nb, l2, alloc_off;
        int ret;

        if (*host == INV_OFFSET && cluster_offset != INV_OFFSET)
            *host = cluster_offset;
        start += cur;
        remaining -= cur;
        if (cluster_offset != INV_OFFSET)
            cluster_offset += cur;
        if (!remaining)
            break;
        cur = remaining;
        ret = cluster_table(s, start, &l2);             /* handle_copied */
        if (ret < 0)
            return ret;
        oic = start & (s->cs - 1);                      /* handle_alloc */
        nb = DIV_ROUND_UP(oic + cur, s->cs);
        nb = MIN(nb, l2_entries - ((start >> s->cb) & (l2_entries - 1)));
        nb = MIN(nb, REQUEST_MAX_BYTES >> s->cb);
        if (cluster_offset == INV_OFFSET) {
            int64_t a = alloc_clusters(s, nb * s->cs);
            if (a < 0)
                return (int)a;
            alloc_off = (uint64_t)a;
        } else {
            int64_t n;
            alloc_off = ALIGN_DOWN(cluster_offset, s->cs);
            n = alloc_clusters_at(s, alloc_off, nb);
            if (n < 0)
                return (int)n;
            nb = (uint64_t)n;
        }
        if (!nb)
            break;
        cluster_offset = alloc_off + oic;
        cur = MIN(cur, MIN(cur + oic, nb << s->cb) - oic);
        if (*nm == 8)
            return err_set(-EIO, "too many allocations in one request");
        m[(*nm)++] = (struct meta){ start - oic, alloc_off, DIV_ROUND_UP(oic + cur, s->cs) };
    }
    *bytes -= remaining;
    return 0;
}

/* qemu's preallocate_co() from 0 to the image size. */
static int prealloc_metadata(struct sim *s)
{
    uint64_t offset = 0, bytes = s->o->size, host = 0, cur = 0;

    while (bytes) {
        struct meta m[8];
        int nm, ret;

        cur = MIN(bytes, ALIGN_DOWN((uint64_t)INT32_MAX, s->cs));
        ret = alloc_host_offset(s, offset, &cur, &host, m, &nm);
        if (ret < 0)
            return ret;
        for (int i = nm - 1; i >= 0; i--) {             /* qemu links newest first */
            ret = link_l2(s, m[i].guest, m[i].host, m[i].n);
            if (ret < 0)
                return ret;
        }
        bytes -= cur;
        offset += cur;
    }
    if (s->o->size)
        /* the file ends with the last data (sub)cluster */
        extend(s, ALIGN_UP(host + cur, s->o->extended_l2 ? s->cs / 32 : s->cs));
    return 0;
}

/* The falloc/full branch of qemu's qcow2_co_truncate() on a new image. */
static int prealloc_data(struct sim *s)
{
    uint64_t old = s->file_len, last, nb_data, nb_l2, guest = 0, host;
    int64_t start, n;
    size_t i;
    int ret;

    /* qcow2_get_last_cluster(): the last cluster in the file still in use */
    i = s->used.n;
    while (i > 0 && s->used.r[i - 1][0] >= DIV_ROUND_UP(old, s->cs))
        i--;
    if (i == 0)
        return err_set(-EIO, "There are no references in the refcount table.");
    last = MIN(s->used.r[i - 1][1], DIV_ROUND_UP(old, s->cs)) - 1;
    old = (last + 1) * s->cs;

    nb_data = DIV_ROUND_UP(s->o->size, s->cs);
    nb_l2 = DIV_ROUND_UP(nb_data, s->cs / s->l2_esize) + 1;
    start = refcount_area(s, old, nb_data + nb_l2, true, 0, 0);
    if (start < 0)
        return (int)start;
    n = alloc_clusters_at(s, (uint64_t)start, nb_data);
    if (n < 0)
        return (int)n;
    if ((uint64_t)n != nb_data)
        return err_set(-EIO, "data area at %#llx is not free", (unsigned long long)start);

    /* The data area: allocated by the file system (falloc) or written (full). */
    extend(s, (uint64_t)start + nb_data * s->cs);
    if (s->f && nb_data) {
        if (s->o->prealloc == QCOW2_PREALLOC_FALLOC)
            ret = qfile_allocate(s->f, (uint64_t)start, nb_data * s->cs);
        else
            ret = write_zeroes(s, (uint64_t)start, nb_data * s->cs);
        if (ret < 0)
            return ret;
    }
    host = (uint64_t)start;
    while (nb_data) {
        uint64_t l2_entries = 1ULL << s->l2_bits;
        uint64_t k = MIN(nb_data, l2_entries - ((guest >> s->cb) & (l2_entries - 1)));
        ret = link_l2(s, guest, host, k);
        if (ret < 0)
            return ret;
        guest += k * s->cs;
        host += k * s->cs;
        nb_data -= k;
    }
    return 0;
}

/* ---- the image ---------------------------------------------------------- */

static void rb_put(uint8_t *b, unsigned order, uint64_t i)
{
    switch (order) {
    case 0: b[i / 8] |= (uint8_t)(1u << (i % 8)); break;
    case 1: b[i / 4] |= (uint8_t)(1u << (2 * (i % 4))); break;
    case 2: b[i / 2] |= (uint8_t)(1u << (4 * (i % 2))); break;
    default: b[(i + 1) * (1u << (order - 3)) - 1] = 1; break;  /* big-endian 1 */
    }
}

/* Refcount blocks, from the model: every block is alive to the end. */
static int write_refblocks(struct sim *s)
{
    uint64_t per = refblock_clusters(s);

    for (uint64_t ti = 0; ti < s->rt_size; ti++) {
        uint64_t first = ti * per, end = first + per;
        size_t i;
        int ret;

        if (!s->rt[ti])
            continue;
        memset(s->buf, 0, s->cs);
        for (i = runs_find(&s->used, first, false); i < s->used.n && s->used.r[i][0] < end; i++)
            for (uint64_t c = MAX(first, s->used.r[i][0]); c < MIN(end, s->used.r[i][1]); c++)
                rb_put(s->buf, s->order, c - first);
        ret = sim_write(s, s->rt[ti], s->buf, s->cs);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int build_header(struct sim *s, uint8_t *buf)
{
    const struct qcow2_create_opts *o = s->o;
    struct qcow2_meta m;
    int ret;

    memset(&m, 0, sizeof(m));
    m.h.version = o->version;
    m.h.cluster_bits = s->cb;
    m.h.size = o->size;
    m.h.l1_size = (uint32_t)s->l1_size;
    m.h.l1_table_offset = s->l1_off;
    m.h.refcount_table_offset = s->rt_off;
    m.h.refcount_table_clusters = (uint32_t)(s->rt_size * 8 / s->cs);
    m.h.refcount_order = s->order;
    m.h.compression_type = o->compression_type;
    if (o->lazy_refcounts)
        m.h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB)
        m.h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    if (o->extended_l2)
        m.h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
    m.backing_file = (char *)o->backing_file;
    m.backing_fmt = (char *)o->backing_fmt;
    m.h.crypt_method = o->crypt_method;
    if (o->crypt_method == QCOW_CRYPT_LUKS) {
        m.has_crypto_ext = true;
        m.crypto_offset = s->crypto_off;
        m.crypto_length = o->crypto_len;
    }
    ret = qcow2_header_build(&m, buf, s->cs);
    if (ret < 0)
        return err_set(ret, "Could not assign backing file '%s' with format '%s': %s",
                       o->backing_file, o->backing_fmt ? o->backing_fmt : "(null)",
                       strerror(-ret));
    return 0;
}

/* qemu's qcow2_crypto_hdr_init_func(): the LUKS header area, zero-padded
 * to whole clusters, allocated after the L1 table. */
static int luks_area(struct sim *s)
{
    const struct qcow2_create_opts *o = s->o;
    int64_t off;
    int ret;

    if (!o->crypto_len || !o->crypto_hdr)
        return err_set(-EINVAL, "a LUKS image needs a header");
    off = alloc_clusters(s, o->crypto_len);
    if (off < 0)
        return (int)off;
    s->crypto_off = (uint64_t)off;
    ret = sim_write(s, s->crypto_off, o->crypto_hdr, o->crypto_len);
    if (ret == 0 && o->crypto_len % s->cs)
        ret = write_zeroes(s, s->crypto_off + o->crypto_len, s->cs - o->crypto_len % s->cs);
    return ret;
}

static int sim_run(struct sim *s)
{
    const struct qcow2_create_opts *o = s->o;
    int64_t off;
    int ret;

    /* What qemu writes first: a header, a refcount table pointing at an
     * empty block in cluster 2. The header is written last here. */
    s->rt_size = s->cs / 8;
    s->rt = calloc(s->rt_size, 8);
    if (!s->rt)
        return -ENOMEM;
    s->rt[0] = 2 * s->cs;
    s->rt_off = s->cs;
    s->rt_max = 0;
    extend(s, s->cs);
    ret = write_table(s, s->cs, s->rt, s->rt_size);
    if (ret == 0)
        ret = write_zeroes(s, 2 * s->cs, s->cs);
    if (ret < 0)
        return ret;
    off = alloc_clusters(s, 3 * s->cs);
    if (off != 0)
        return off < 0 ? (int)off : err_set(-EIO, "first cluster of a new image is in use");
    /* The header must hold the backing file name (found in the dry run). */
    ret = build_header(s, s->buf);
    if (ret < 0)
        return ret;

    ret = grow_l1(s);
    if (ret == 0 && o->crypt_method == QCOW_CRYPT_LUKS)
        ret = luks_area(s);
    if (ret == 0 && o->size) {
        if (o->prealloc == QCOW2_PREALLOC_METADATA)
            ret = prealloc_metadata(s);
    }
    if (ret == 0 && (o->prealloc == QCOW2_PREALLOC_FALLOC || o->prealloc == QCOW2_PREALLOC_FULL))
        ret = prealloc_data(s);
    if (ret == 0)
        ret = write_refblocks(s);
    if (ret == 0)
        ret = build_header(s, s->buf);
    if (ret == 0)
        ret = sim_write(s, 0, s->buf, s->cs);
    if (ret == 0 && s->f) {
        uint64_t size;
        ret = qfile_size(s->f, &size);
        if (ret == 0 && size < s->file_len)
            ret = qfile_truncate(s->f, s->file_len);
    }
    return ret;
}

static int sim_init(struct sim *s, const struct qcow2_create_opts *o, struct qfile *f)
{
    memset(s, 0, sizeof(*s));
    s->o = o;
    s->f = f;
    s->cb = (unsigned)__builtin_ctzll(o->cluster_size);
    s->cs = o->cluster_size;
    s->order = (unsigned)__builtin_ctzll(o->refcount_bits);
    s->rb_bits = s->cb + 3 - s->order;
    s->l2_esize = o->extended_l2 ? 16 : 8;
    s->l2_bits = s->cb - (o->extended_l2 ? 4 : 3);
    s->buf = malloc(s->cs);
    return s->buf ? 0 : -ENOMEM;
}

static void sim_free(struct sim *s)
{
    free(s->used.r);
    free(s->rt);
    free(s->l1);
    free(s->buf);
}

int qcow2_create_check(const struct qcow2_create_opts *o)
{
    uint64_t cs = o->cluster_size;

    if (o->extended_l2 && o->version < 3)
        return err_set(-EINVAL, "Extended L2 entries are only supported with compatibility "
                       "level 1.1 and above (use version=v3 or greater)");
    if (cs < 512 || cs > 2 * 1024 * 1024 || (cs & (cs - 1)))
        return err_set(-EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    if (o->extended_l2 && cs < 16384)
        return err_set(-EINVAL, "Extended L2 entries are only supported with cluster sizes "
                       "of at least 16384 bytes");
    if (o->backing_file && o->prealloc != QCOW2_PREALLOC_OFF && !o->extended_l2)
        return err_set(-EINVAL, "Backing file and preallocation can only be used at the "
                       "same time if extended_l2 is on");
    if (o->backing_fmt && !o->backing_file)
        return err_set(-EINVAL, "Backing format cannot be used without backing file");
    if (o->version < 3 && o->lazy_refcounts)
        return err_set(-EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                       "and above (use version=v3 or greater)");
    if (o->refcount_bits > 64 || !o->refcount_bits ||
        (o->refcount_bits & (o->refcount_bits - 1)))
        return err_set(-EINVAL, "Refcount width must be a power of two and may not exceed "
                       "64 bits");
    if (o->version < 3 && o->refcount_bits != 16)
        return err_set(-EINVAL, "Different refcount widths than 16 bits require compatibility "
                       "level 1.1 or above (use version=v3 or greater)");
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB && o->version < 3)
        return err_set(-EINVAL, "Non-zlib compression type is only supported with "
                       "compatibility level 1.1 and above (use version=v3 or greater)");
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME)
        return err_set(-EINVAL, "Could not assign backing file '%s' with format '%s': %s",
                       o->backing_file, o->backing_fmt ? o->backing_fmt : "(null)",
                       strerror(EINVAL));
    return 0;
}

int qcow2_create(const char *filename, const struct qcow2_create_opts *o)
{
    struct qfile *f;
    struct sim s;
    int ret;

    ret = qcow2_create_check(o);
    if (ret < 0)
        return ret;
    if (o->size & 511)
        return err_set(-EINVAL, "Image size must be a multiple of 512 bytes");

    /* Dry run: everything but I/O errors shows up here. */
    ret = sim_init(&s, o, NULL);
    if (ret == 0)
        ret = sim_run(&s);
    sim_free(&s);
    if (ret < 0)
        return ret;

    ret = qfile_open(&f, filename, QF_RDWR | QF_CREATE);
    if (ret < 0) {
        if (!err_has_msg(ret))
            ret = err_set(ret, "Could not create '%s': %s", filename, strerror(-ret));
        return ret;
    }
    ret = qfile_truncate(f, 0);
    if (ret == 0 && o->nocow) {
        /* As qemu: a hint, set while the file is empty; btrfs alone takes it. */
        int attr;
        if (ioctl(f->fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            (void)ioctl(f->fd, FS_IOC_SETFLAGS, &attr);
        }
    }
    if (ret == 0)
        ret = sim_init(&s, o, f);
    if (ret == 0)
        ret = sim_run(&s);
    sim_free(&s);
    if (ret == 0)
        ret = qfile_flush(f);
    {
        int r = qfile_close(f);
        if (ret == 0)
            ret = r;
    }
    if (ret < 0) {
        char msg[512];
        /* As qemu-img: a failed creation leaves no file behind. */
        snprintf(msg, sizeof(msg), "%s", err_msg(ret));
        unlink(filename);
        ret = err_set(ret, "%s", msg);
    }
    return ret;
}
