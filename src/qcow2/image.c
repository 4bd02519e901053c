/*
 * image.c - opening and closing a qcow2 image: the header, the active L1
 * table, the refcount table and the snapshot table are read and checked
 * here; the caches are set up; the backing file is opened through the
 * block layer. qcow2_flush() is where the write order is declared.
 *
 * Must not: interpret L2 tables or refcount blocks (cluster.c, refcount.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "check.h"
#include "bitmap.h"
#include "crypto.h"
#include "qcow2.h"

#define L2_CACHE_MAX_BYTES (1024 * 1024)
#define CACHE_MIN_TABLES 4

int qcow2_signal_corruption(struct qcow2 *q, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (q->writable && q->meta.h.version >= 3 &&
        !(q->meta.h.incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        /* As qemu: stop trusting the image, and say so on disk. */
        qcow2_set_incompat(q, QCOW2_INCOMPAT_CORRUPT, true);
        q->writable = false;
        return err_set(-QIMG_ECORRUPT, "Marking image as corrupt: %s; further corruption "
                       "events will be suppressed", msg);
    }
    return err_set(-QIMG_ECORRUPT, "%s", msg);
}

int qcow2_check_table_offset(struct qcow2 *q, uint64_t offset, const char *what)
{
    if (offset & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "%s offset %#llx is not cluster aligned",
                                       what, (unsigned long long)offset);
    if (offset == 0)
        return qcow2_signal_corruption(q, "%s offset %#llx points into the image header",
                                       what, (unsigned long long)offset);
    if (offset >= QCOW2_MAX_HOST_OFFSET)
        return qcow2_signal_corruption(q, "%s offset %#llx is out of range",
                                       what, (unsigned long long)offset);
    return 0;
}

/* Read a table of n 64-bit entries at offset into host order. */
static int read_table(struct qcow2 *q, uint64_t offset, uint64_t n, uint64_t **out,
                      uint64_t file_size, bool pad, const char *what)
{
    uint64_t bytes = n * 8;
    uint64_t *t;
    int ret;

    *out = NULL;
    if (!n)
        return 0;
    if (offset > file_size || bytes > file_size - offset) {
        if (!pad)
            return err_set(-QIMG_ECORRUPT, "%s at offset %#llx (%llu bytes) lies past "
                           "the end of the file", what, (unsigned long long)offset,
                           (unsigned long long)bytes);
    }
    t = malloc(ALIGN_UP(bytes, q->cluster_size));
    if (!t)
        return -ENOMEM;
    memset(t, 0, ALIGN_UP(bytes, q->cluster_size));
    ret = pad ? qfile_pread_pad(q->file, t, bytes, offset)
              : qfile_pread(q->file, t, bytes, offset);
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint64_t i = 0; i < n; i++)
        t[i] = be64(&t[i]);
    *out = t;
    return 0;
}

static int load_snapshots(struct qcow2 *q, uint64_t file_size, bool check)
{
    const struct qcow2_header *h = &q->meta.h;
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t off = h->snapshots_offset;
    int ret;

    if (!h->nb_snapshots)
        return 0;
    /* Read entry by entry: the table's size is only known by walking it. */
    for (uint32_t i = 0; i < h->nb_snapshots; i++) {
        uint8_t fixed[QCOW2_SN_FIXED_LEN];
        uint64_t elen;
        uint8_t *nb;

        ret = qfile_pread(q->file, fixed, sizeof(fixed), off);
        if (ret < 0) {
            ret = err_set(-QIMG_ECORRUPT, "Snapshot table entry %u at offset %#llx lies "
                          "past the end of the file", i, (unsigned long long)off);
            goto out;
        }
        elen = QCOW2_SN_FIXED_LEN + (uint64_t)be32(fixed + QCOW2_SN_EXTRA_SIZE) +
               be16(fixed + QCOW2_SN_ID_SIZE) + be16(fixed + QCOW2_SN_NAME_SIZE);
        if (be32(fixed + QCOW2_SN_EXTRA_SIZE) > QCOW2_MAX_SN_EXTRA) {
            ret = err_set(-EFBIG, "Too much extra metadata in snapshot table entry %u", i);
            goto out;
        }
        /* The entry itself must be in the file; its padding may be cut off. */
        if (off + elen > file_size) {
            ret = err_set(-QIMG_ECORRUPT, "Snapshot table entry %u lies past the end "
                          "of the file", i);
            goto out;
        }
        elen = ALIGN_UP(elen, 8);
        if (len + elen > QCOW2_MAX_SN_TABLE_BYTES) {
            ret = err_set(-EFBIG, "Snapshot table too large");
            goto out;
        }
        nb = realloc(buf, len + elen);
        if (!nb) {
            ret = -ENOMEM;
            goto out;
        }
        buf = nb;
        ret = qfile_pread_pad(q->file, buf + len, elen, off);
        if (ret < 0)
            goto out;
        len += elen;
        off += elen;
    }
    ret = qcow2_snapshots_parse(buf, len, h->nb_snapshots, &q->snapshots);
    if (ret == 0)
        q->nb_snapshots = h->nb_snapshots;
out:
    free(buf);
    (void)check;
    return ret;
}

static int open_backing(struct qcow2 *q, struct blk *self, int flags, int depth)
{
    char *path;
    int ret;

    if (!q->meta.backing_file || (flags & QCOW2_OPEN_NO_BACKING))
        return 0;
    path = blk_backing_path(self->filename, q->meta.backing_file);
    if (!path)
        return -ENOMEM;
    ret = blk_open_depth(&q->backing, path, q->meta.backing_fmt,
                         (flags & QCOW2_OPEN_NOLOCK) ? BLK_NOLOCK : 0, depth + 1);
    if (ret < 0) {
        char inner[400];
        snprintf(inner, sizeof(inner), "%s", err_msg(ret));
        ret = err_set(ret, "Could not open backing file: Could not open '%s': %s",
                      path, inner);
    }
    free(path);
    return ret;
}

int qcow2_open_blk(struct qcow2 **out, struct blk *self, struct qfile *f, int flags, int depth)
{
    struct qcow2 *q;
    uint64_t file_size;
    uint8_t *buf;
    size_t len;
    bool check = flags & QCOW2_OPEN_CHECK;
    int ret;

    *out = NULL;
    ret = qfile_size(f, &file_size);
    if (ret < 0)
        return ret;
    q = xzalloc(sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->file = f;
    q->data_file = f;
    q->writable = flags & QCOW2_OPEN_RDWR;

    /* First the fixed header, to learn the cluster size; then the cluster.
     * No more than the file holds: opening a small file stays cheap. */
    len = (size_t)MIN(file_size, 1u << QCOW2_MAX_CLUSTER_BITS);
    buf = xzalloc(len ? len : 1);
    if (!buf) {
        ret = -ENOMEM;
        goto fail;
    }
    ret = qfile_pread(f, buf, len, 0);
    if (ret < 0)
        goto fail_buf;
    ret = qcow2_header_parse(buf, len, file_size, &q->meta);
    if (ret < 0)
        goto fail_buf;
    free(buf);
    buf = NULL;

    {
        const struct qcow2_header *h = &q->meta.h;
        q->cluster_bits = h->cluster_bits;
        q->cluster_size = 1ULL << h->cluster_bits;
        q->extl2 = h->incompatible_features & QCOW2_INCOMPAT_EXTL2;
        q->l2_entry_size = q->extl2 ? 16 : 8;
        q->l2_bits = q->cluster_bits - (q->extl2 ? 4 : 3);
        q->l2_entries = 1ULL << q->l2_bits;
        q->subcluster_bits = q->extl2 ? q->cluster_bits - 5 : q->cluster_bits;
        q->refcount_order = h->refcount_order;
        q->refcount_bits = 1u << h->refcount_order;
        q->refcount_max = q->refcount_bits == 64 ? UINT64_MAX
                                                 : (1ULL << q->refcount_bits) - 1;
        q->rb_bits = q->cluster_bits + 3 - h->refcount_order;
        q->l1_size = h->l1_size;
        q->reftable_size = ((uint64_t)h->refcount_table_clusters << q->cluster_bits) / 8;

        if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
            ret = err_set(-ENOTSUP, "External data files are not supported yet ('%s')",
                          q->meta.data_file);
            goto fail;
        }
        if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && q->writable && !check) {
            ret = err_set(-EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
            goto fail;
        }
        ret = read_table(q, h->l1_table_offset, q->l1_size, &q->l1, file_size, check,
                         "Active L1 table");
        if (ret < 0)
            goto fail;
        ret = read_table(q, h->refcount_table_offset, q->reftable_size, &q->reftable,
                         file_size, check, "Reference count table");
        if (ret < 0)
            goto fail;
        if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS ||
            (h->nb_snapshots && (h->snapshots_offset & (q->cluster_size - 1)))) {
            if (!check) {
                ret = err_set(h->nb_snapshots > QCOW2_MAX_SNAPSHOTS ? -EFBIG : -EINVAL,
                              h->nb_snapshots > QCOW2_MAX_SNAPSHOTS ? "Too many snapshots"
                              : "Snapshot table offset invalid");
                goto fail;
            }
            ret = 0;    /* left to the checker */
        } else {
            ret = load_snapshots(q, file_size, check);
        }
        if (ret < 0 && check) {
            /* The checker reads the snapshot table itself, and repairs it. */
            err_clear();
            ret = 0;
        }
        if (ret < 0)
            goto fail;
        /* The LUKS header is plaintext: read and check it without a key. */
        ret = qcow2_crypto_open(q, check);
        if (ret < 0)
            goto fail;
    }

    {
        uint64_t l2_tables = MAX(1, DIV_ROUND_UP(q->meta.h.size,
                                                 q->cluster_size * q->l2_entries));
        uint64_t nb = MIN(l2_tables, L2_CACHE_MAX_BYTES / q->cluster_size);
        if (nb < CACHE_MIN_TABLES)
            nb = CACHE_MIN_TABLES;
        q->l2_cache = qcow2_cache_new(q, (unsigned)nb, QCOW2_OL_ACTIVE_L2);
        q->rc_cache = qcow2_cache_new(q, (unsigned)MAX(CACHE_MIN_TABLES, nb / 4),
                                      QCOW2_OL_REFBLOCK);
        if (!q->l2_cache || !q->rc_cache) {
            ret = -ENOMEM;
            goto fail;
        }
        /* Declared once: refcount blocks reach the disk before L2 tables. */
        qcow2_cache_set_dependency(q->l2_cache, q->rc_cache);
    }
    q->free_cluster_hint = 0;

    /* As qemu: a dirty image opened read-write is repaired first. */
    if (q->writable && !check && (q->meta.h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_check_repair_dirty(q);
        if (ret < 0)
            goto fail;
    }

    if (self) {
        ret = open_backing(q, self, flags, depth);
        if (ret < 0)
            goto fail;
    }
    *out = q;
    return 0;

fail_buf:
    free(buf);
fail:
    q->file = NULL;     /* the caller still owns f on failure */
    q->writable = false;
    qcow2_close(q);
    return ret;
}

int qcow2_open(struct qcow2 **out, struct qfile *f, int flags)
{
    return qcow2_open_blk(out, NULL, f, flags | QCOW2_OPEN_NO_BACKING, 0);
}

int qcow2_flush(struct qcow2 *q)
{
    int ret;

    if (!q->writable)
        return 0;
    /* guest data, refcount blocks, L2 tables: each on disk before the next */
    ret = qfile_flush(q->data_file);
    if (ret == 0)
        ret = qcow2_cache_flush(q, q->rc_cache);
    if (ret == 0)
        ret = qcow2_cache_flush(q, q->l2_cache);
    if (ret == 0 && q->header_dirty) {
        ret = qcow2_write_header(q);
        if (ret == 0)
            ret = qfile_flush(q->file);
    }
    return ret;
}

int qcow2_close(struct qcow2 *q)
{
    int ret = 0, r;

    if (!q)
        return 0;
    if (q->writable && q->file)
        ret = qcow2_bitmaps_close(q);
    if (q->writable && q->file) {
        r = qcow2_flush(q);
        if (!ret)
            ret = r;
    }
    qcow2_cache_free(q->l2_cache);
    qcow2_cache_free(q->rc_cache);
    free(q->zcache);
    free(q->l1);
    free(q->reftable);
    qcow2_snapshots_free(q->snapshots, q->nb_snapshots);
    qcow2_crypto_free(q->crypto);
    qcow2_meta_free(&q->meta);
    if (q->file) {
        r = qfile_close(q->file);
        if (!ret)
            ret = r;
    }
    free(q);
    return ret;
}

int qcow2_write_header(struct qcow2 *q)
{
    uint8_t *buf = xzalloc(q->cluster_size);
    int ret;

    if (!buf)
        return -ENOMEM;
    ret = qcow2_header_build(&q->meta, buf, q->cluster_size);
    if (ret < 0) {
        free(buf);
        return err_set(ret, "The header does not fit in one cluster");
    }
    /* Only the bytes in use: the rest of cluster 0 may hold nothing else. */
    ret = qfile_pwrite(q->file, buf, (size_t)ret, 0);
    free(buf);
    if (ret == 0)
        q->header_dirty = false;
    return ret;
}

int qcow2_write_l1(struct qcow2 *q, uint32_t from, uint32_t to)
{
    uint64_t *be;
    int ret;

    if (to <= from)
        return 0;
    be = malloc((size_t)(to - from) * 8);
    if (!be)
        return -ENOMEM;
    for (uint32_t i = from; i < to; i++)
        put_be64(&be[i - from], q->l1[i]);
    ret = qcow2_write_metadata(q, QCOW2_OL_ACTIVE_L1, q->meta.h.l1_table_offset + (uint64_t)from * 8,
                               be, (size_t)(to - from) * 8);
    free(be);
    return ret;
}

int qcow2_set_incompat(struct qcow2 *q, uint64_t bits, bool on)
{
    uint8_t v[8];
    uint64_t nv;
    int ret;

    if (q->meta.h.version < 3)
        return 0;
    nv = on ? q->meta.h.incompatible_features | bits
            : q->meta.h.incompatible_features & ~bits;
    if (nv == q->meta.h.incompatible_features)
        return 0;
    if (!on) {
        /* Clearing dirty: everything it guarded must be on disk first. */
        ret = qcow2_flush(q);
        if (ret < 0)
            return ret;
    }
    put_be64(v, nv);
    ret = qfile_pwrite(q->file, v, 8, QCOW2_HDR_INCOMPAT);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret == 0)
        q->meta.h.incompatible_features = nv;
    return ret;
}
