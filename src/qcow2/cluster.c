/*
 * cluster.c - the read side of the data path: mapping guest offsets through
 * the L1 and L2 tables (standard and extended entries), and reading normal,
 * zero, compressed and unallocated clusters (the last from the backing
 * chain). Every pointer read from an L1 or L2 table is checked before use.
 *
 * Writes live in write.c.
 */
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "crypto.h"
#include "qcow2.h"

/* The L2 table for guest offset off: offset 0 when unallocated. */
static int l2_table_for(struct qcow2 *q, uint64_t off, uint64_t *l2_off)
{
    uint32_t i = qcow2_l1_index(q, off);
    uint64_t e;

    *l2_off = 0;
    if (i >= q->l1_size)
        return 0;
    e = q->l1[i];
    if (e & L1E_RESERVED_MASK & ~QCOW_OFLAG_COPIED)
        return qcow2_signal_corruption(q, "L1 entry %u has reserved bits set (%#llx)", i,
                                       (unsigned long long)e);
    *l2_off = e & L1E_OFFSET_MASK;
    if (*l2_off && (*l2_off & (q->cluster_size - 1)))
        return qcow2_signal_corruption(q, "L2 table offset %#llx unaligned (L1 index: %#x)",
                                       (unsigned long long)*l2_off, i);
    return 0;
}

/* Classify subcluster-free entry e (standard L2, or the first half). */
static int classify(struct qcow2 *q, uint64_t e, uint64_t l2_off, uint64_t idx,
                    enum qcow2_ctype *t, uint64_t *host)
{
    if (e & QCOW_OFLAG_COMPRESSED) {
        *t = QCOW2_C_COMPRESSED;
        *host = e;
        return 0;
    }
    *host = e & L2E_OFFSET_MASK;
    if (*host & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "Cluster allocation offset %#llx unaligned "
                                       "(L2 offset: %#llx, L2 index: %#llx)",
                                       (unsigned long long)*host, (unsigned long long)l2_off,
                                       (unsigned long long)idx);
    if (!q->extl2 && (e & QCOW_OFLAG_ZERO))
        *t = *host ? QCOW2_C_ZERO_ALLOC : QCOW2_C_ZERO_PLAIN;
    else
        *t = *host ? QCOW2_C_NORMAL : QCOW2_C_UNALLOCATED;
    return 0;
}

/* A run stops before an entry that classify() would reject, so the error
 * is raised (and the image marked corrupt) only by a request that needs it. */
static bool bad_host(const struct qcow2 *q, uint64_t e)
{
    return !(e & QCOW_OFLAG_COMPRESSED) && (e & L2E_OFFSET_MASK & (q->cluster_size - 1));
}

/* Type of subcluster sc of an extended entry (first half e, bitmap b). */
static enum qcow2_ctype ext_type(enum qcow2_ctype t, uint64_t b, unsigned sc)
{
    bool alloc = b & (1ULL << sc), zero = b & (1ULL << (32 + sc));

    if (t == QCOW2_C_COMPRESSED)
        return t;
    if (alloc)
        return t == QCOW2_C_NORMAL ? QCOW2_C_NORMAL : QCOW2_C_UNALLOCATED;
    if (zero)
        return QCOW2_C_ZERO_PLAIN;
    return QCOW2_C_UNALLOCATED;
}

int qcow2_get_mapping(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_mapping *m)
{
    uint64_t l2_off, idx, in_cluster = qcow2_offset_in_cluster(q, off);
    uint64_t l2_end = ALIGN_DOWN(off, q->cluster_size * q->l2_entries) +
                      q->cluster_size * q->l2_entries;
    uint8_t *l2;
    int ret;

    if (len > l2_end - off)
        len = l2_end - off;
    ret = l2_table_for(q, off, &l2_off);
    if (ret < 0)
        return ret;
    if (!l2_off) {
        m->type = QCOW2_C_UNALLOCATED;
        m->host = 0;
        m->bytes = len;
        return 0;
    }
    ret = qcow2_cache_get(q, q->l2_cache, l2_off, (void **)&l2);
    if (ret < 0)
        return ret;
    idx = qcow2_l2_index(q, off);

    if (!q->extl2) {
        enum qcow2_ctype t, t2;
        uint64_t host, host2, n;

        ret = classify(q, be64(l2 + idx * 8), l2_off, idx, &t, &host);
        if (ret < 0)
            goto out;
        m->type = t;
        m->host = t == QCOW2_C_COMPRESSED ? host : (host ? host + in_cluster : 0);
        n = q->cluster_size - in_cluster;
        /* Extend the run over following entries of the same kind. */
        while (n < len && t != QCOW2_C_COMPRESSED) {
            uint64_t j = idx + (in_cluster + n) / q->cluster_size;
            if (bad_host(q, be64(l2 + j * 8)))
                break;
            ret = classify(q, be64(l2 + j * 8), l2_off, j, &t2, &host2);
            if (ret < 0)
                goto out;
            if (t2 != t)
                break;
            if ((t == QCOW2_C_NORMAL || t == QCOW2_C_ZERO_ALLOC) &&
                host2 != host + (j - idx) * q->cluster_size)
                break;
            n += q->cluster_size;
        }
        m->bytes = MIN(n, len);
    } else {
        uint64_t sc_size = 1ULL << q->subcluster_bits, n = 0;
        uint64_t pos = off;
        enum qcow2_ctype first = QCOW2_C_UNALLOCATED;
        uint64_t first_host = 0;
        bool started = false;

        while (n < len) {
            uint64_t j = qcow2_l2_index(q, pos), e = be64(l2 + j * 16), b = be64(l2 + j * 16 + 8);
            unsigned sc = (unsigned)(qcow2_offset_in_cluster(q, pos) >> q->subcluster_bits);
            enum qcow2_ctype t;
            uint64_t host, step;

            if ((j < idx || bad_host(q, e)) && started)
                break;          /* wrapped past the table, or a bad entry next */
            ret = classify(q, e & ~QCOW_OFLAG_ZERO, l2_off, j, &t, &host);
            if (ret < 0)
                goto out;
            if (t != QCOW2_C_COMPRESSED && !host && (b & 0xffffffffULL)) {
                ret = qcow2_signal_corruption(q, "Extended L2 entry %#llx of table %#llx has "
                                              "allocated subclusters but no cluster",
                                              (unsigned long long)j, (unsigned long long)l2_off);
                goto out;
            }
            t = ext_type(t, b, sc);
            step = t == QCOW2_C_COMPRESSED ? q->cluster_size - qcow2_offset_in_cluster(q, pos)
                                           : sc_size - (pos & (sc_size - 1));
            if (!started) {
                first = t;
                first_host = t == QCOW2_C_COMPRESSED ? e
                             : t == QCOW2_C_NORMAL ? host + qcow2_offset_in_cluster(q, pos) : 0;
                started = true;
            } else {
                if (t != first || t == QCOW2_C_COMPRESSED)
                    break;
                if (t == QCOW2_C_NORMAL && host + qcow2_offset_in_cluster(q, pos) != first_host + n)
                    break;
            }
            n += step;
            pos += step;
            if (qcow2_l2_index(q, pos) == 0 && qcow2_offset_in_cluster(q, pos) == 0)
                break;          /* end of this L2 table */
        }
        m->type = first;
        m->host = first_host;
        m->bytes = MIN(n, len);
    }
    ret = 0;
out:
    qcow2_cache_put(q->l2_cache, (void **)&l2);
    return ret;
}

static int read_compressed(struct qcow2 *q, uint64_t l2e, uint64_t in_cluster, void *buf,
                           size_t len)
{
    uint64_t host, clen, fsize;
    uint8_t *in;
    int ret;

    if (!q->zcache) {
        q->zcache = malloc(q->cluster_size);
        if (!q->zcache)
            return -ENOMEM;
    }
    if (q->zcache_entry != l2e) {
        qcow2_compressed_extent(q, l2e, &host, &clen);
        ret = qfile_size(q->file, &fsize);
        if (ret < 0)
            return ret;
        if (host >= fsize || host < q->cluster_size)
            return qcow2_signal_corruption(q, "Compressed cluster at host offset %#llx lies "
                                           "outside the image", (unsigned long long)host);
        in = malloc(clen);
        if (!in)
            return -ENOMEM;
        ret = qfile_pread_pad(q->file, in, clen, host);
        if (ret == 0)
            ret = qcow2_decompress(q, in, clen, q->zcache);
        free(in);
        if (ret < 0) {
            q->zcache_entry = 0;
            return err_set(-EIO, "Could not decompress the cluster at host offset %#llx",
                           (unsigned long long)host);
        }
        q->zcache_entry = l2e;
    }
    memcpy(buf, q->zcache + in_cluster, len);
    return 0;
}

int qcow2_read(struct qcow2 *q, uint64_t off, void *buf, size_t len)
{
    uint8_t *p = buf;
    int ret;

    while (len) {
        struct qcow2_mapping m;
        size_t n;

        ret = qcow2_get_mapping(q, off, len, &m);
        if (ret < 0)
            return ret;
        n = (size_t)m.bytes;
        switch (m.type) {
        case QCOW2_C_UNALLOCATED:
            ret = blk_read_backing(q->backing, off, p, n);
            break;
        case QCOW2_C_ZERO_PLAIN:
        case QCOW2_C_ZERO_ALLOC:
            memset(p, 0, n);
            ret = 0;
            break;
        case QCOW2_C_NORMAL:
            if (q->meta.h.crypt_method)
                ret = qcow2_crypto_read(q, off, m.host, p, n);
            else
                ret = qfile_pread_pad(q->data_file, p, n, m.host);
            break;
        case QCOW2_C_COMPRESSED:
            if (q->meta.h.crypt_method)
                ret = err_set(-ENOTSUP, "Compressed cluster at guest offset %#llx in an "
                              "encrypted image: qcow2 does not allow compression with "
                              "encryption", (unsigned long long)off);
            else
                ret = read_compressed(q, m.host, qcow2_offset_in_cluster(q, off), p, n);
            break;
        }
        if (ret < 0)
            return ret;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

int qcow2_block_status(struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *pnum,
                       uint64_t *map, int *flags)
{
    struct qcow2_mapping m;
    int ret = qcow2_get_mapping(q, off, len, &m);

    if (ret < 0)
        return ret;
    *pnum = m.bytes;
    *map = 0;
    switch (m.type) {
    case QCOW2_C_UNALLOCATED:
        *flags = 0;
        break;
    case QCOW2_C_ZERO_PLAIN:
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO;
        break;
    case QCOW2_C_ZERO_ALLOC:
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO | BLK_STATUS_OFFSET;
        *map = m.host;
        break;
    case QCOW2_C_NORMAL:
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET;
        *map = m.host;
        break;
    case QCOW2_C_COMPRESSED:
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_COMPRESSED;
        break;
    }
    return 0;
}
