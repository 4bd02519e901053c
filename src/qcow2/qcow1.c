/*
 * qcow1.c - reading the original qcow format (version 1): the header, the
 * L1 and L2 tables (L2 tables are 512-byte aligned, entries are host
 * cluster offsets, bit 63 marks a compressed cluster whose byte count sits
 * just below it), raw-deflate compressed clusters and the backing file.
 *
 * Must not: write. qimg converts qcow images; it does not update them.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../block/block.h"
#include "format.h"
#include "qcow1.h"

#define QCOW1_OFLAG_COMPRESSED (1ULL << 63)
#define L2_CACHE_SLOTS 16

int qcow1_header_parse(const uint8_t *buf, size_t len, struct qcow1_header *h)
{
    uint64_t shift;

    memset(h, 0, sizeof(*h));
    if (len < QCOW1_HEADER_LEN || be32(buf) != QCOW_MAGIC)
        return err_set(-EINVAL, "Image is not in qcow format");
    if (be32(buf + 4) != 1)
        return err_set(-ENOTSUP, "Unsupported qcow version %u", be32(buf + 4));
    h->backing_file_offset = be64(buf + 8);
    h->backing_file_size = be32(buf + 16);
    h->mtime = be32(buf + 20);
    h->size = be64(buf + 24);
    h->cluster_bits = buf[32];
    h->l2_bits = buf[33];
    h->crypt_method = be32(buf + 36);
    h->l1_table_offset = be64(buf + 40);

    if (h->size <= 1)
        return err_set(-EINVAL, "Image size is too small (must be at least 2 bytes)");
    if (h->cluster_bits < 9 || h->cluster_bits > 16)
        return err_set(-EINVAL, "Cluster size must be between 512 and 64k");
    if (h->l2_bits < 9 - 3 || h->l2_bits > 16 - 3)
        return err_set(-EINVAL, "L2 table size must be between 512 and 64k");
    if (h->crypt_method > 1)
        return err_set(-EINVAL, "invalid encryption method in qcow header");
    if (h->crypt_method)
        return err_set(-ENOTSUP, "Encrypted qcow images are not supported");
    shift = (uint64_t)h->cluster_bits + h->l2_bits;
    if (h->size > (1ULL << 62) || h->size > UINT64_MAX - (1ULL << shift))
        return err_set(-EINVAL, "Image too large");
    if (h->backing_file_offset && h->backing_file_size > 1023)
        return err_set(-EINVAL, "Backing file name too long");
    return 0;
}

static int read_header(struct qcow1 *s, uint64_t fsize)
{
    uint8_t hb[QCOW1_HEADER_LEN];
    struct qcow1_header *h = &s->h;
    uint64_t shift, l1_bytes;
    int ret;

    ret = qfile_pread(s->file, hb, sizeof(hb), 0);
    if (ret < 0)
        return err_set(-EINVAL, "Image is not in qcow format");
    ret = qcow1_header_parse(hb, sizeof(hb), h);
    if (ret < 0)
        return ret;
    s->cluster_size = 1ULL << h->cluster_bits;
    s->l2_size = 1ULL << h->l2_bits;
    shift = (uint64_t)h->cluster_bits + h->l2_bits;
    l1_bytes = ((h->size + (1ULL << shift) - 1) >> shift) * 8;
    if (l1_bytes > 32u * 1024 * 1024)
        return err_set(-EFBIG, "Image too large");
    s->l1_size = (uint32_t)(l1_bytes / 8);
    if (h->l1_table_offset > fsize || l1_bytes > fsize - h->l1_table_offset)
        return err_set(-QIMG_ECORRUPT, "L1 table at offset %#llx lies past the end of "
                       "the file", (unsigned long long)h->l1_table_offset);
    if (h->backing_file_offset && h->backing_file_size) {
        if (h->backing_file_offset > fsize ||
            h->backing_file_size > fsize - h->backing_file_offset)
            return err_set(-QIMG_ECORRUPT, "Backing file name lies past the end of the file");
        s->backing_file = malloc(h->backing_file_size + 1);
        if (!s->backing_file)
            return -ENOMEM;
        ret = qfile_pread(s->file, s->backing_file, h->backing_file_size,
                          h->backing_file_offset);
        if (ret < 0)
            return ret;
        s->backing_file[h->backing_file_size] = 0;
        if (strlen(s->backing_file) != h->backing_file_size)
            return err_set(-EINVAL, "Backing file name contains a NUL byte");
    }
    s->l1 = malloc(MAX(l1_bytes, 8));
    if (!s->l1)
        return -ENOMEM;
    ret = qfile_pread(s->file, s->l1, l1_bytes, h->l1_table_offset);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = be64(&s->l1[i]);
    return 0;
}

int qcow1_open(struct qcow1 **out, struct qfile *f)
{
    struct qcow1 *s;
    uint64_t fsize;
    int ret;

    *out = NULL;
    ret = qfile_size(f, &fsize);
    if (ret < 0)
        return ret;
    s = xzalloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->file = f;
    ret = read_header(s, fsize);
    if (ret == 0) {
        s->l2_mem = malloc(L2_CACHE_SLOTS * s->l2_size * 8);
        s->zbuf = malloc(s->cluster_size);
        if (!s->l2_mem || !s->zbuf)
            ret = -ENOMEM;
    }
    if (ret < 0) {
        s->file = NULL;     /* the caller keeps f on failure */
        qcow1_close(s);
        return ret;
    }
    *out = s;
    return 0;
}

void qcow1_close(struct qcow1 *s)
{
    if (!s)
        return;
    if (s->file)
        qfile_close(s->file);
    free(s->backing_file);
    free(s->l1);
    free(s->l2_mem);
    free(s->zbuf);
    free(s);
}

/* The L2 table at l2_off, through the little direct-mapped cache. */
static int get_l2(struct qcow1 *s, uint64_t l2_off, const uint64_t **table)
{
    unsigned slot = (unsigned)((l2_off >> 9) % L2_CACHE_SLOTS);
    uint64_t *t = s->l2_mem + slot * s->l2_size;
    int ret;

    if (s->l2_off[slot] != l2_off) {
        s->l2_off[slot] = 0;
        ret = qfile_pread(s->file, t, s->l2_size * 8, l2_off);
        if (ret < 0)
            return err_set(ret, "could not read the L2 table at offset %#llx: %s",
                           (unsigned long long)l2_off, err_msg(ret));
        for (uint64_t i = 0; i < s->l2_size; i++)
            t[i] = be64(&t[i]);
        s->l2_off[slot] = l2_off;
    }
    *table = t;
    return 0;
}

/* The L2 entry for the cluster holding off (0: unallocated). */
static int entry_at(struct qcow1 *s, uint64_t off, uint64_t *e)
{
    const unsigned shift = s->h.cluster_bits + s->h.l2_bits;
    uint64_t i = off >> shift, l2_off;
    const uint64_t *t = NULL;
    int ret;

    *e = 0;
    if (i >= s->l1_size)
        return 0;
    l2_off = s->l1[i];
    if (!l2_off)
        return 0;
    if ((l2_off & 511) || l2_off >= (1ULL << 56))
        return err_set(-QIMG_ECORRUPT, "L2 table offset %#llx in L1 entry %llu is invalid",
                       (unsigned long long)l2_off, (unsigned long long)i);
    ret = get_l2(s, l2_off, &t);
    if (ret < 0)
        return ret;
    *e = t[(off >> s->h.cluster_bits) & (s->l2_size - 1)];
    if (!(*e & QCOW1_OFLAG_COMPRESSED) && (*e & (s->cluster_size - 1)))
        return err_set(-QIMG_ECORRUPT, "Cluster offset %#llx is not cluster aligned",
                       (unsigned long long)*e);
    return 0;
}

static int read_compressed(struct qcow1 *s, uint64_t e, uint64_t in_cluster, void *buf,
                           size_t len)
{
    const unsigned shift = 63 - s->h.cluster_bits;
    uint64_t coff = e & ((1ULL << shift) - 1);
    uint64_t csize = (e >> shift) & (s->cluster_size - 1);
    z_stream z;
    uint8_t *in;
    int ret;

    if (s->zbuf_entry != e) {
        s->zbuf_entry = 0;
        in = malloc(csize ? csize : 1);
        if (!in)
            return -ENOMEM;
        ret = qfile_pread_pad(s->file, in, csize, coff);
        if (ret < 0) {
            free(in);
            return ret;
        }
        memset(&z, 0, sizeof(z));
        if (inflateInit2(&z, -12) != Z_OK) {
            free(in);
            return -ENOMEM;
        }
        z.next_in = in;
        z.avail_in = (uInt)csize;
        z.next_out = s->zbuf;
        z.avail_out = (uInt)s->cluster_size;
        ret = inflate(&z, Z_FINISH);
        inflateEnd(&z);
        free(in);
        if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR) || z.avail_out != 0)
            return err_set(-EIO, "Could not decompress the cluster at host offset %#llx",
                           (unsigned long long)coff);
        s->zbuf_entry = e;
    }
    memcpy(buf, s->zbuf + in_cluster, len);
    return 0;
}

/* Run of clusters from off stored alike (contiguous on the host when data). */
static int run_at(struct qcow1 *s, uint64_t off, uint64_t len, uint64_t *e, uint64_t *n)
{
    uint64_t in = off & (s->cluster_size - 1), e2;
    int ret = entry_at(s, off, e);

    if (ret < 0)
        return ret;
    *n = MIN(len, s->cluster_size - in);
    if (*e & QCOW1_OFLAG_COMPRESSED)
        return 0;
    while (*n < len) {
        ret = entry_at(s, off + *n, &e2);
        if (ret < 0)
            return ret;
        if (*e ? e2 != *e + in + *n : e2 != 0)
            break;
        *n = MIN(len, *n + s->cluster_size);
    }
    return 0;
}

int qcow1_read(struct qcow1 *s, uint64_t off, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        uint64_t e, n;
        int ret = run_at(s, off, len, &e, &n);

        if (ret < 0)
            return ret;
        if (!e)
            ret = blk_read_backing(s->backing, off, p, n);
        else if (e & QCOW1_OFLAG_COMPRESSED)
            ret = read_compressed(s, e, off & (s->cluster_size - 1), p, n);
        else
            ret = qfile_pread_pad(s->file, p, n, e + (off & (s->cluster_size - 1)));
        if (ret < 0)
            return ret;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

int qcow1_block_status(struct qcow1 *s, uint64_t off, uint64_t len, uint64_t *pnum,
                       uint64_t *map, int *flags)
{
    uint64_t e;
    int ret = run_at(s, off, len, &e, pnum);

    if (ret < 0)
        return ret;
    *map = 0;
    if (!e) {
        *flags = 0;
    } else if (e & QCOW1_OFLAG_COMPRESSED) {
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_COMPRESSED;
    } else {
        *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET;
        *map = e + (off & (s->cluster_size - 1));
    }
    return 0;
}
