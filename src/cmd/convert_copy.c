/*
 * convert_copy.c - convert's copy loop: the output in chunks of 2 MiB or
 * more; in each, the sources' block status marks what reads as zeros
 * without reading it, the rest is read (compressed inputs by all workers
 * at once, each through its own handles) and scanned for zero granules;
 * with -B, granules equal to what the new backing file reads are skipped;
 * then each run is written with one call. With -c the workers compress
 * one chunk while the main thread writes the one before, in guest order.
 *
 * Owns: the chunks and the workers. Must not: write to an input; print
 * anything but the error that ends the copy.
 */
#include <stdlib.h>
#include <string.h>

#include "convert.h"

/* What happens to one granule of a chunk. */
enum { G_DATA, G_ZERO, G_SKIP };

struct chunk {
    struct convert *c;
    uint64_t o, n;              /* output range */
    uint8_t *buf;               /* source bytes (zero-padded to whole granules) */
    uint8_t *bbuf;              /* -B: what the output's backing file reads */
    uint8_t *cls;               /* G_* per granule */
    uint8_t *zst;               /* per granule: the source's status says zeros */
    struct pool_job rjob;       /* reading pieces in parallel */
    struct pool_job zjob;       /* -c: compressing granules */
    bool zqueued;
    uint8_t *zout;
    struct qcow2_zcluster *z;
    /* The first failure in a worker thread, with its message. */
    int err;
    bool read_err;
    uint64_t err_at;
    char errmsg[300];
};

/* ---- sources ------------------------------------------------------------- */

/*
 * Does [off, off+n) of b's chain read as zeros? *pnum: how far that holds.
 * *compressed: the layer that decides stores it compressed.
 */
static int chain_status(struct blk *b, uint64_t off, uint64_t n, uint64_t *pnum, bool *zero,
                        bool *compressed)
{
    *compressed = false;
    for (;;) {
        uint64_t map;
        int flags, ret = blk_block_status(b, off, n, pnum, &map, &flags);

        if (ret < 0)
            return ret;
        if (!*pnum || *pnum > n)
            *pnum = n;
        if (flags & BLK_STATUS_ZERO) {
            *zero = true;
            return 0;
        }
        if (flags & (BLK_STATUS_DATA | BLK_STATUS_ALLOCATED)) {
            *zero = false;
            *compressed = flags & BLK_STATUS_COMPRESSED;
            return 0;
        }
        /* Unallocated here: the backing file decides, or it reads zeros. */
        if (!b->backing || off >= b->backing->size) {
            *zero = true;
            return 0;
        }
        n = MIN(*pnum, b->backing->size - off);
        b = b->backing;
    }
}

/* Which input holds output offset o. */
static int input_at(const struct convert *c, uint64_t o)
{
    int i = 0;

    while (i + 1 < c->nin && o >= c->start[i + 1])
        i++;
    return i;
}

static int src_status(struct convert *c, uint64_t o, uint64_t n, uint64_t *pnum, bool *zero,
                      bool *compressed)
{
    int i = input_at(c, o);
    uint64_t off = o - c->start[i];

    n = MIN(n, c->in[i]->size - off);
    return chain_status(c->in[i], off, n, pnum, zero, compressed);
}

/* Read output range [o, o+n) from the inputs, through handles in[]. */
static int src_read(struct convert *c, struct blk **in, uint64_t o, uint8_t *buf, uint64_t n,
                    uint64_t *at)
{
    while (n) {
        int i = input_at(c, o);
        uint64_t off = o - c->start[i], len = MIN(n, in[i]->size - off);
        int ret = blk_read(in[i], off, buf, len);

        if (ret < 0) {
            *at = o;
            return ret;
        }
        o += len;
        buf += len;
        n -= len;
    }
    return 0;
}

/* Record a worker's failure (the first one wins) with its message. */
static void chunk_fail(struct chunk *ch, uint64_t at, int ret, bool reading)
{
    int none = 0;

    if (!__atomic_compare_exchange_n(&ch->err, &none, ret, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    ch->err_at = at;
    ch->read_err = reading;
    snprintf(ch->errmsg, sizeof(ch->errmsg), "%s", err_msg(ret));
}

/* Worker: read the piece k of the chunk (the granules not known to be zero). */
static void read_piece(void *arg, int tid, uint64_t k)
{
    struct chunk *ch = arg;
    struct convert *c = ch->c;
    const uint64_t g = c->g, ng = DIV_ROUND_UP(ch->n, g), per = c->piece / g;
    uint64_t a = k * per, end = MIN(ng, a + per), at;

    while (a < end) {
        uint64_t b = a;
        int ret;

        if (ch->zst[a]) {
            a++;
            continue;
        }
        while (b < end && !ch->zst[b])
            b++;
        ret = src_read(c, c->rin[tid], ch->o + a * g, ch->buf + a * g,
                       MIN(b * g, ch->n) - a * g, &at);
        if (ret < 0) {
            chunk_fail(ch, at, ret, true);
            return;
        }
        a = b;
    }
}

/* What the output's backing file reads at [o, o+n) (zeros past its end). */
static int cmp_read(struct convert *c, uint64_t o, uint8_t *buf, uint64_t n)
{
    uint64_t bs = c->cmp->size, len = o < bs ? MIN(n, bs - o) : 0;
    int ret;

    memset(buf + len, 0, n - len);
    ret = len ? blk_read(c->cmp, o, buf, len) : 0;
    if (ret < 0)
        error("error while reading the backing file at byte %llu: %s",
              (unsigned long long)o, err_msg(ret));
    return ret;
}

static bool is_zero(const uint8_t *p, uint64_t n)
{
    if (n < 16) {
        for (uint64_t i = 0; i < n; i++)
            if (p[i])
                return false;
        return true;
    }
    for (int i = 0; i < 16; i++)
        if (p[i])
            return false;
    return !memcmp(p, p + 16, n - 16);
}

/* ---- one chunk: classify, then write ------------------------------------- */

static int prepare_chunk(struct convert *c, struct chunk *ch)
{
    const uint64_t g = c->g, ng = DIV_ROUND_UP(ch->n, g);
    uint64_t pos = 0;
    bool compressed = false;
    int ret;

    memset(ch->zst, 0, ng);
    /* Status first: what reads as zeros needs no reading. */
    while (c->sparse && pos < ch->n) {
        uint64_t pnum;
        bool zero, z;
        ret = src_status(c, ch->o + pos, ch->n - pos, &pnum, &zero, &z);
        if (ret < 0)
            return error("error while reading block status at offset %llu: %s",
                         (unsigned long long)(ch->o + pos), err_msg(ret)), ret;
        if (zero) {
            uint64_t k0 = DIV_ROUND_UP(pos, g);
            uint64_t k1 = pos + pnum >= ch->n ? ng : (pos + pnum) / g;
            if (k1 > k0)
                memset(ch->zst + k0, 1, k1 - k0);
        }
        compressed |= z;
        pos += pnum;
    }
    /* Compressed clusters are decompressed by all the workers at once, each
     * reading through its own handles; the rest is read here, one call per
     * run of granules. With -S 0 nothing is known: read in parallel if we can. */
    if (c->rin && (compressed || !c->sparse)) {
        ch->err = 0;
        ch->rjob = (struct pool_job){ .fn = read_piece, .arg = ch,
                                      .total = DIV_ROUND_UP(ch->n, c->piece) };
        pool_submit(c->pool, &ch->rjob);
        pool_wait(c->pool, &ch->rjob);
        if (ch->err)
            return error("error while reading at byte %llu: %s",
                         (unsigned long long)ch->err_at, ch->errmsg), ch->err;
    } else {
        for (uint64_t k = 0; k < ng;) {
            uint64_t k1 = k, at;
            if (ch->zst[k]) {
                k++;
                continue;
            }
            while (k1 < ng && !ch->zst[k1])
                k1++;
            ret = src_read(c, c->in, ch->o + k * g, ch->buf + k * g,
                           MIN(k1 * g, ch->n) - k * g, &at);
            if (ret < 0)
                return error("error while reading at byte %llu: %s",
                             (unsigned long long)at, err_msg(ret)), ret;
            k = k1;
        }
    }
    if (ng * g > ch->n)
        memset(ch->buf + ch->n, 0, ng * g - ch->n);

    /* Zero granules: from the status, or by content in runs of -S bytes. */
    for (uint64_t k = 0; k < ng; k++)
        ch->cls[k] = ch->zst[k] || (c->sparse && is_zero(ch->buf + k * g, g)) ? G_ZERO : G_DATA;
    for (uint64_t k = 0; k < ng;) {
        uint64_t k1 = k;
        bool status = false;
        if (ch->cls[k] != G_ZERO) {
            k++;
            continue;
        }
        while (k1 < ng && ch->cls[k1] == G_ZERO)
            status |= ch->zst[k1++];
        if (!status && MIN(k1 * g, ch->n) - k * g < c->sparse)
            memset(ch->cls + k, G_DATA, k1 - k);
        k = k1;
    }

    /* -B: leave alone what the new backing file already reads. */
    for (uint64_t k = 0; c->cmp && k < ng;) {
        uint64_t o = ch->o + k * g, rest = ch->n - k * g, pnum = rest, kn;
        bool bzero = true;

        if (o < c->cmp->size) {
            bool cz;
            ret = chain_status(c->cmp, o, MIN(rest, c->cmp->size - o), &pnum, &bzero, &cz);
            if (ret < 0)
                return error("error while reading block status of the backing file at "
                             "byte %llu: %s", (unsigned long long)o, err_msg(ret)), ret;
        }
        kn = pnum >= rest ? ng - k : pnum / g;      /* whole granules */
        if (bzero && kn) {
            for (uint64_t j = k; j < k + kn; j++)
                if (ch->cls[j] == G_ZERO)
                    ch->cls[j] = G_SKIP;
        } else {
            /* The backing file has data here: compare granule by granule. */
            kn = MAX(kn, 1);
            ret = cmp_read(c, o, ch->bbuf + k * g, kn * g);
            if (ret < 0)
                return ret;
            for (uint64_t j = k; j < k + kn; j++) {
                uint64_t len = MIN(g, ch->n - j * g);
                if (ch->cls[j] == G_ZERO ? is_zero(ch->bbuf + j * g, len)
                                         : !memcmp(ch->buf + j * g, ch->bbuf + j * g, len))
                    ch->cls[j] = G_SKIP;
            }
        }
        k += kn;
    }
    if (!c->cmp && c->zero_init) {
        for (uint64_t k = 0; k < ng; k++)
            if (ch->cls[k] == G_ZERO)
                ch->cls[k] = G_SKIP;
    }
    ch->err = 0;
    return 0;
}

static int write_error(uint64_t o, int ret)
{
    error("error while writing at byte %llu: %s", (unsigned long long)o, err_msg(ret));
    return ret;
}

static int commit_chunk(struct convert *c, struct chunk *ch)
{
    const uint64_t g = c->g, ng = DIV_ROUND_UP(ch->n, g);
    int ret = 0;

    if (ch->err)
        return error("error while compressing: %s", ch->errmsg), ch->err;
    for (uint64_t k = 0; k < ng && ret == 0;) {
        uint64_t k1 = k, o = ch->o + k * g, len;
        while (k1 < ng && ch->cls[k1] == ch->cls[k])
            k1++;
        len = MIN(k1 * g, ch->n) - k * g;
        if (ch->cls[k] == G_ZERO) {
            ret = blk_write_zeroes(c->out, o, len);
        } else if (ch->cls[k] == G_DATA) {
            if (c->compress)
                ret = qcow2_write_compressed_run(c->oq, o, ch->z + k, k1 - k);
            else
                ret = blk_write(c->out, o, ch->buf + k * g, len);
        }
        if (ret < 0)
            return write_error(o, ret);
        k = k1;
    }
    return 0;
}

/* ---- compression workers ------------------------------------------------ */

/* Worker: compress granule (cluster) k of the chunk, if it is to be written. */
static void compress_item(void *arg, int tid, uint64_t k)
{
    struct chunk *ch = arg;
    struct convert *c = ch->c;
    struct qcow2_zcluster *z = &ch->z[k];
    uint8_t *in = ch->buf + k * c->g, *out = ch->zout + k * c->g;
    ssize_t n;

    memset(z, 0, sizeof(*z));
    if (ch->cls[k] != G_DATA)
        return;
    if (qcow2_compress_hopeless(in, c->g))
        n = 0;
    else
        n = c->zc[tid] ? qcow2_compress_ctx(c->zc[tid], in, c->g, out, c->g) : -ENOMEM;
    if (n < 0) {
        chunk_fail(ch, ch->o + k * c->g, (int)n, false);
    } else if (n > 0) {
        z->cdata = out;
        z->clen = (size_t)n;
    } else {
        z->raw = in;
        z->raw_len = MIN(c->g, ch->n - k * c->g);
    }
}

/* ---- the copy ------------------------------------------------------------ */

static int chunk_alloc(struct convert *c, struct chunk *ch)
{
    uint64_t ng = c->chunk / c->g;

    memset(ch, 0, sizeof(*ch));
    ch->c = c;
    ch->buf = malloc(c->chunk);
    ch->cls = malloc(ng);
    ch->zst = malloc(ng);
    if (c->cmp)
        ch->bbuf = malloc(c->chunk);
    if (c->compress) {
        ch->zout = malloc(c->chunk);
        ch->z = calloc(ng, sizeof(*ch->z));
    }
    if (!ch->buf || !ch->cls || !ch->zst || (c->cmp && !ch->bbuf) ||
        (c->compress && (!ch->zout || !ch->z)))
        return -ENOMEM;
    return 0;
}

static void chunk_free(struct chunk *ch)
{
    free(ch->buf);
    free(ch->bbuf);
    free(ch->cls);
    free(ch->zst);
    free(ch->zout);
    free(ch->z);
}

int copy(struct convert *c)
{
    struct chunk ch[2] = { 0 };
    struct chunk *prev = NULL;
    uint64_t o = 0;
    int ret, i = 0;

    progress_init(&c->prog, c->progress && !c->quiet);
    ret = chunk_alloc(c, &ch[0]);
    if (ret == 0 && c->compress)
        ret = chunk_alloc(c, &ch[1]);
    if (ret < 0) {
        error("out of memory");
        goto out;
    }
    while (o < c->total) {
        struct chunk *cur = &ch[i];
        cur->o = o;
        cur->n = MIN(c->total - o, ALIGN_DOWN(o, c->chunk) + c->chunk - o);
        ret = prepare_chunk(c, cur);
        if (ret < 0)
            break;
        if (c->compress) {
            /* Workers compress cur while the main thread writes prev. */
            cur->zjob = (struct pool_job){ .fn = compress_item, .arg = cur,
                                           .total = DIV_ROUND_UP(cur->n, c->g) };
            pool_submit(c->pool, &cur->zjob);
            cur->zqueued = true;
            if (prev) {
                pool_wait(c->pool, &prev->zjob);
                prev->zqueued = false;
                ret = commit_chunk(c, prev);
                if (ret < 0)
                    break;
                progress_update(&c->prog, prev->o + prev->n, c->total);
            }
            prev = cur;
            i ^= 1;
        } else {
            ret = commit_chunk(c, cur);
            if (ret < 0)
                break;
            progress_update(&c->prog, o + cur->n, c->total);
        }
        o += cur->n;
    }
    if (ret == 0 && prev) {
        pool_wait(c->pool, &prev->zjob);
        prev->zqueued = false;
        ret = commit_chunk(c, prev);
    }
out:
    /* Nothing may still run on the buffers when they go. */
    for (int k = 0; k < 2; k++)
        if (ch[k].zqueued)
            pool_wait(c->pool, &ch[k].zjob);
    chunk_free(&ch[0]);
    if (c->compress)
        chunk_free(&ch[1]);
    if (ret == 0)
        progress_end(&c->prog);
    else if (c->prog.on)
        fputc('\n', stderr);
    return ret;
}

/* Workers for -c, and for reading compressed inputs on every core. */
int start_workers(struct convert *c)
{
    bool plain = true;
    int n = (int)c->threads;

    for (int i = 0; i < c->nin; i++)
        plain &= c->in[i]->drv == &blk_raw_driver;
    if (!c->compress && (plain || n < 2))
        return 0;
    c->pool = pool_new(n);
    if (!c->pool)
        return error("could not start %d threads", n);
    c->nthreads = pool_threads(c->pool);
    if (c->compress) {
        c->zc = xzalloc(c->nthreads * sizeof(*c->zc));
        if (!c->zc)
            return error("out of memory");
        for (int t = 0; t < c->nthreads; t++)
            c->zc[t] = qcow2_zctx_new(c->oq->meta.h.compression_type);
    }
    /* An encrypted input is read by one handle: every open would run the
     * (deliberately slow) key derivation again. */
    for (int i = 0; i < c->nin; i++)
        if (c->in[i]->drv == &blk_qcow2_driver &&
            ((struct qcow2 *)c->in[i]->priv)->meta.h.crypt_method)
            plain = true;
    if (plain || c->nthreads < 2)
        return 0;
    c->rin = xzalloc(c->nthreads * sizeof(*c->rin));
    if (!c->rin)
        return error("out of memory");
    for (int t = 0; t < c->nthreads; t++) {
        c->rin[t] = xzalloc(c->nin * sizeof(**c->rin));
        if (!c->rin[t])
            return error("out of memory");
        for (int i = 0; i < c->nin; i++) {
            int ret = open_input(c, i, &c->rin[t][i]);
            if (ret < 0)
                return cmd_open_error(c->in_names[i], ret);
            if (c->snapshot && load_snapshot(c, c->rin[t][i]))
                return 1;
        }
    }
    c->piece = MAX(c->g, 256 * 1024);
    c->chunk = MAX(c->chunk, ALIGN_UP(2 * c->nthreads * c->piece, c->chunk));
    return 0;
}

void stop_workers(struct convert *c)
{
    pool_free(c->pool);
    c->pool = NULL;
    for (int t = 0; c->zc && t < c->nthreads; t++)
        qcow2_zctx_free(c->zc[t]);
    free(c->zc);
    for (int t = 0; c->rin && t < c->nthreads; t++) {
        for (int i = 0; c->rin[t] && i < c->nin; i++)
            blk_close(c->rin[t][i]);
        free(c->rin[t]);
    }
    free(c->rin);
    c->zc = NULL;
    c->rin = NULL;
    c->nthreads = 0;
}

