/*
 * compress.c - compressed clusters: zlib raw deflate (window 2^12, as qemu
 * writes it) and zstd, one cluster at a time. Pure buffer functions, safe
 * to call from several threads at once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

void qcow2_compressed_extent(const struct qcow2 *q, uint64_t l2e, uint64_t *host, uint64_t *len)
{
    unsigned shift = qcow2_csize_shift(q->cluster_bits);
    uint64_t off = l2e & ((1ULL << shift) - 1);
    uint64_t sectors = ((l2e >> shift) & ((1ULL << (q->cluster_bits - 8)) - 1)) + 1;

    *host = off;
    *len = sectors * 512 - (off & 511);
}

static int inflate_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    z_stream z;
    int ret;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return -ENOMEM;
    z.next_in = (uint8_t *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    ret = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    /* The stream may end early only if it filled the cluster. */
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && z.avail_out == 0)
        return 0;
    return -EIO;
}

static int zstd_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };
    int ret = 0;

    if (!d)
        return -ENOMEM;
    while (ob.pos < ob.size) {
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            ret = -EIO;
            break;
        }
        if (r == 0 || ib.pos == ib.size) {
            if (ob.pos < ob.size)
                ret = -EIO;
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return ret;
}

int qcow2_decompress(struct qcow2 *q, const uint8_t *in, size_t in_len, uint8_t *out)
{
    if (q->meta.h.compression_type == QCOW2_COMPRESSION_ZSTD)
        return zstd_cluster(in, in_len, out, q->cluster_size);
    return inflate_cluster(in, in_len, out, q->cluster_size);
}

/* A compressor kept across clusters: setting up deflate's tables costs
 * about as much as compressing a 64 KiB cluster, a reset almost nothing. */
struct qcow2_zctx {
    uint8_t type;
    bool ready;
    z_stream z;
    ZSTD_CCtx *zstd;
};

struct qcow2_zctx *qcow2_zctx_new(uint8_t type)
{
    struct qcow2_zctx *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->type = type;
    if (type == QCOW2_COMPRESSION_ZSTD) {
        c->zstd = ZSTD_createCCtx();
        if (!c->zstd) {
            free(c);
            return NULL;
        }
    } else {
        if (deflateInit2(&c->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            free(c);
            return NULL;
        }
    }
    c->ready = true;
    return c;
}

void qcow2_zctx_free(struct qcow2_zctx *c)
{
    if (!c)
        return;
    if (c->zstd)
        ZSTD_freeCCtx(c->zstd);
    else if (c->ready)
        deflateEnd(&c->z);
    free(c);
}

ssize_t qcow2_compress_ctx(struct qcow2_zctx *c, const uint8_t *in, size_t len, uint8_t *out,
                           size_t out_len)
{
    if (c->type == QCOW2_COMPRESSION_ZSTD) {
        size_t r = ZSTD_compressCCtx(c->zstd, out, out_len, in, len, ZSTD_CLEVEL_DEFAULT);
        if (ZSTD_isError(r) || r >= len)
            return 0;
        return (ssize_t)r;
    } else {
        z_stream *z = &c->z;
        ssize_t n;
        int ret;

        if (deflateReset(z) != Z_OK)
            return -EIO;
        z->next_in = (uint8_t *)in;
        z->avail_in = (uInt)len;
        z->next_out = out;
        z->avail_out = (uInt)out_len;
        ret = deflate(z, Z_FINISH);
        n = (ssize_t)(out_len - z->avail_out);
        if (ret != Z_STREAM_END || (size_t)n >= len)
            return 0;
        return n;
    }
}

/* Bytes of [from, to) that deflate could code as matches (4 KiB window). */
static size_t repeats(const uint8_t *in, size_t from, size_t to, size_t enough)
{
    uint32_t last[4096];        /* position + 1 of a 4-byte string, by hash */
    size_t matched = 0;

    memset(last, 0, sizeof(last));
    for (size_t i = from; i + 4 <= to;) {
        uint32_t v, w, j;
        unsigned hs;

        memcpy(&v, in + i, 4);
        hs = (v * 2654435761u) >> 20;
        j = last[hs];
        last[hs] = (uint32_t)i + 1;
        if (j && i - (j - 1) <= 4096) {
            memcpy(&w, in + j - 1, 4);
            if (w == v) {
                size_t m = 4;
                while (i + m < to && m < 258 && in[j - 1 + m] == in[i + m])
                    m++;
                matched += m;
                if (matched > enough)
                    break;
                i += m;
                continue;
            }
        }
        i++;
    }
    return matched;
}

/*
 * Is the cluster random-looking, so that deflate (or zstd) cannot shrink
 * it? Both gain only from a skewed byte distribution (Huffman/FSE codes)
 * or from repeated strings (matches). No skew beyond what chance gives a
 * sample of this size, and almost no repeated strings within the 4 KiB
 * window qemu's deflate uses (looked for in two 8 KiB stretches), and
 * compressing would only prove that it does not shrink, at about ten
 * times the cost of this test. Wrong only for random data repeated at
 * short distances in some parts of the cluster but not in the two
 * stretches: then the cluster is stored plainly, which is still correct.
 */
bool qcow2_compress_hopeless(const uint8_t *in, size_t len)
{
    uint32_t hist[4][256];      /* four, so runs of one byte do not stall */
    double h = 0, bias;
    size_t span = MIN(len, 8192), i;

    if (len < 4096)
        return false;
    memset(hist, 0, sizeof(hist));
    for (i = 0; i + 4 <= len; i += 4) {
        hist[0][in[i]]++;
        hist[1][in[i + 1]]++;
        hist[2][in[i + 2]]++;
        hist[3][in[i + 3]]++;
    }
    for (; i < len; i++)
        hist[0][in[i]]++;
    for (int b = 0; b < 256; b++) {
        uint32_t n = hist[0][b] + hist[1][b] + hist[2][b] + hist[3][b];
        if (n) {
            double p = (double)n / (double)len;
            h -= p * log2(p);
        }
    }
    /* A uniform source's sample entropy falls short of 8 bits by about
     * 255 / (2 n ln 2); allow three times that. */
    bias = 255.0 / (2.0 * (double)len * M_LN2);
    if (h < 8.0 - 3.0 * bias)
        return false;
    if (repeats(in, 0, span, span / 64) > span / 64)
        return false;
    if (len > 2 * span && repeats(in, len / 2, len / 2 + span, span / 64) > span / 64)
        return false;
    return true;
}

ssize_t qcow2_compress(uint8_t type, const uint8_t *in, size_t len, uint8_t *out, size_t out_len)
{
    struct qcow2_zctx *c = qcow2_zctx_new(type);
    ssize_t n;

    if (!c)
        return -ENOMEM;
    n = qcow2_compress_ctx(c, in, len, out, out_len);
    qcow2_zctx_free(c);
    return n;
}
