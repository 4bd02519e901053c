/*
 * bitmap.c - persistent dirty bitmaps: parsing and validating the bitmap
 * directory (pure, on bytes), reading bitmap tables and data, storing them
 * copy-on-write (new data, tables and directory first, the header
 * extension last, old clusters freed after), and keeping enabled bitmaps
 * right when guest data is written.
 *
 * Owns: everything under the bitmaps header extension. Must not: touch
 * guest data, L1/L2 tables or the snapshot table; print anything.
 */
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"

/* Tracking state of a writable image whose guest data changes. */
struct qcow2_bm_track {
    struct qcow2_bitmap *bm;
    uint32_t n;
    uint8_t **data;             /* per bitmap: loaded when tracked, else NULL */
    bool active;                /* some bitmap is tracked (in_use on disk) */
};

static bool known_ok(uint8_t gran_bits)
{
    return gran_bits >= QCOW2_MIN_GRAN_BITS && gran_bits <= QCOW2_MAX_GRAN_BITS;
}

uint64_t qcow2_bitmap_bytes(uint64_t virtual_size, uint8_t gran_bits)
{
    uint64_t bits;

    if (gran_bits >= 64)
        return virtual_size ? 1 : 0;
    bits = (virtual_size >> gran_bits) + ((virtual_size & ((1ULL << gran_bits) - 1)) != 0);
    return DIV_ROUND_UP(bits, 8);
}

const char *qcow2_bitmap_unusable(const struct qcow2_bitmap *b)
{
    if (b->flags & QCOW2_BME_IN_USE)
        return "it is inconsistent (in use)";
    if (b->extra_size && !(b->flags & QCOW2_BME_EXTRA_COMPAT))
        return "it has extra data this program does not know";
    return NULL;
}

void qcow2_bitmaps_free(struct qcow2_bitmap *bm, uint32_t n)
{
    for (uint32_t i = 0; bm && i < n; i++) {
        free(bm[i].name);
        free(bm[i].extra);
    }
    free(bm);
}

static uint64_t entry_len(uint32_t extra, uint32_t name)
{
    return ALIGN_UP(24 + (uint64_t)extra + name, 8);
}

int qcow2_bitmap_dir_parse(const uint8_t *buf, size_t len, uint32_t nb, uint32_t cluster_bits,
                           uint64_t virtual_size, uint64_t file_size, struct qcow2_bitmap **out)
{
    uint64_t cs = 1ULL << cluster_bits, pos = 0;
    struct qcow2_bitmap *bm;
    int ret = 0;

    *out = NULL;
    if (nb == 0 || nb > QCOW2_MAX_BITMAPS)
        return err_set(-QIMG_ECORRUPT, "bitmap directory: %u bitmaps (at least 1, at most %u)",
                       nb, QCOW2_MAX_BITMAPS);
    bm = xzalloc((size_t)nb * sizeof(*bm));
    if (!bm)
        return -ENOMEM;
    for (uint32_t i = 0; i < nb; i++) {
        struct qcow2_bitmap *b = &bm[i];
        const uint8_t *e = buf + pos;
        uint64_t elen, want, tbytes;
        uint16_t name_len;

        if (len - pos < 24) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory: entry %u at byte %#llx runs "
                          "past its end", i, (unsigned long long)pos);
            break;
        }
        b->table_offset = be64(e);
        b->table_size = be32(e + 8);
        b->flags = be32(e + 12);
        b->type = e[16];
        b->gran_bits = e[17];
        name_len = be16(e + 18);
        b->extra_size = be32(e + 20);
        elen = entry_len(b->extra_size, name_len);
        if (elen > len - pos) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory: entry %u at byte %#llx runs "
                          "past its end", i, (unsigned long long)pos);
            break;
        }
        if (name_len == 0 || name_len > QCOW2_MAX_BITMAP_NAME) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory: entry %u has a name of %u bytes "
                          "(1 to %u)", i, name_len, QCOW2_MAX_BITMAP_NAME);
            break;
        }
        if (memchr(e + 24 + b->extra_size, 0, name_len)) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory: entry %u has a NUL in its name", i);
            break;
        }
        b->name = strndup((const char *)e + 24 + b->extra_size, name_len);
        if (!b->name) {
            ret = -ENOMEM;
            break;
        }
        if (b->extra_size) {
            b->extra = malloc(b->extra_size);
            if (!b->extra) {
                ret = -ENOMEM;
                break;
            }
            memcpy(b->extra, e + 24, b->extra_size);
        }
        for (uint64_t k = 24 + (uint64_t)b->extra_size + name_len; k < elen; k++)
            if (e[k]) {
                ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': padding is not zero", b->name);
                break;
            }
        if (ret < 0)
            break;
        if (b->flags & ~QCOW2_BME_FLAGS_KNOWN) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': reserved flags %#x are set", b->name,
                          b->flags & ~QCOW2_BME_FLAGS_KNOWN);
            break;
        }
        if (b->type != QCOW2_BME_TYPE_DIRTY) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': type %u is not a dirty tracking "
                          "bitmap", b->name, b->type);
            break;
        }
        if (!known_ok(b->gran_bits)) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': granularity bits %u (%d to %d)",
                          b->name, b->gran_bits, QCOW2_MIN_GRAN_BITS, QCOW2_MAX_GRAN_BITS);
            break;
        }
        /* As qemu: the table fits the image exactly, but an in-use bitmap
         * (whose data is not used) may have any table up to the limit. */
        tbytes = qcow2_bitmap_bytes(virtual_size, b->gran_bits);
        want = DIV_ROUND_UP(tbytes, cs);
        if (tbytes > QCOW2_MAX_BITMAP_BYTES || want > QCOW2_MAX_BITMAP_TABLE ||
            b->table_size > QCOW2_MAX_BITMAP_TABLE ||
            (!(b->flags & QCOW2_BME_IN_USE) && b->table_size != want)) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': table of %u entries, but the image "
                          "size and granularity need %llu", b->name, b->table_size,
                          (unsigned long long)want);
            break;
        }
        if (!b->table_offset || (b->table_offset & (cs - 1)) ||
            b->table_offset > file_size || (uint64_t)b->table_size * 8 > file_size - b->table_offset) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': table offset %#llx is not aligned "
                          "or not inside the file", b->name,
                          (unsigned long long)b->table_offset);
            break;
        }
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(bm[k].name, b->name)) {
                ret = err_set(-QIMG_ECORRUPT, "bitmap directory: name '%s' is used twice",
                              b->name);
                break;
            }
        if (ret < 0)
            break;
        pos += elen;
    }
    if (ret == 0 && pos != len)
        ret = err_set(-QIMG_ECORRUPT, "bitmap directory: %zu bytes, but its %u entries take "
                      "%llu", len, nb, (unsigned long long)pos);
    if (ret < 0) {
        qcow2_bitmaps_free(bm, nb);
        return ret;
    }
    *out = bm;
    return 0;
}

uint64_t qcow2_bitmap_dir_size(const struct qcow2_bitmap *bm, uint32_t n)
{
    uint64_t s = 0;

    for (uint32_t i = 0; i < n; i++)
        s += entry_len(bm[i].extra_size, (uint32_t)strlen(bm[i].name));
    return s;
}

void qcow2_bitmap_dir_build(const struct qcow2_bitmap *bm, uint32_t n, uint8_t *buf)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct qcow2_bitmap *b = &bm[i];
        size_t nl = strlen(b->name);
        uint64_t elen = entry_len(b->extra_size, (uint32_t)nl);

        memset(buf, 0, elen);
        put_be64(buf, b->table_offset);
        put_be32(buf + 8, b->table_size);
        put_be32(buf + 12, b->flags);
        buf[16] = b->type;
        buf[17] = b->gran_bits;
        put_be16(buf + 18, (uint16_t)nl);
        put_be32(buf + 20, b->extra_size);
        if (b->extra_size)
            memcpy(buf + 24, b->extra, b->extra_size);
        memcpy(buf + 24 + b->extra_size, b->name, nl);
        buf += elen;
    }
}

int qcow2_bitmaps_load(struct qcow2 *q, struct qcow2_bitmap **out, uint32_t *n, bool *stale)
{
    const struct qcow2_meta *m = &q->meta;
    uint64_t file_size, doff = m->bitmap_dir_offset, dsize = m->bitmap_dir_size;
    uint8_t *dir;
    int ret;

    *out = NULL;
    *n = 0;
    if (stale)
        *stale = false;
    if (!m->has_bitmaps_ext)
        return 0;
    if (!(m->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        if (stale)
            *stale = true;
        return 0;
    }
    ret = qfile_size(q->file, &file_size);
    if (ret < 0)
        return ret;
    if (m->nb_bitmaps == 0 || m->nb_bitmaps > QCOW2_MAX_BITMAPS)
        return err_set(-QIMG_ECORRUPT, "bitmaps extension: %u bitmaps (at least 1, at most %u)",
                       m->nb_bitmaps, QCOW2_MAX_BITMAPS);
    if (dsize < 24ULL * m->nb_bitmaps || dsize > QCOW2_MAX_BITMAP_DIR ||
        (doff & (q->cluster_size - 1)) || doff == 0 || doff > file_size ||
        dsize > file_size - doff)
        return err_set(-QIMG_ECORRUPT, "bitmaps extension: directory at %#llx (%llu bytes) "
                       "is not aligned, too large or not inside the file",
                       (unsigned long long)doff, (unsigned long long)dsize);
    dir = malloc(dsize);
    if (!dir)
        return -ENOMEM;
    ret = qfile_pread(q->file, dir, dsize, doff);
    if (ret == 0)
        ret = qcow2_bitmap_dir_parse(dir, dsize, m->nb_bitmaps, q->cluster_bits, m->h.size,
                                     file_size, out);
    free(dir);
    if (ret == 0)
        *n = m->nb_bitmaps;
    return ret;
}

/* The bitmap table, validated: entries aligned, reserved bits clear, inside the file. */
static int read_table(struct qcow2 *q, const struct qcow2_bitmap *b, uint64_t **out)
{
    uint64_t file_size, *t;
    int ret;

    *out = NULL;
    ret = qfile_size(q->file, &file_size);
    if (ret < 0)
        return ret;
    t = malloc((size_t)b->table_size * 8 + 1);
    if (!t)
        return -ENOMEM;
    ret = qfile_pread(q->file, t, (size_t)b->table_size * 8, b->table_offset);
    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
        uint64_t e = be64(&t[i]), off = e & QCOW2_BMT_OFFSET_MASK;

        t[i] = e;
        if ((e & QCOW2_BMT_RESERVED_MASK) || (off & (q->cluster_size - 1)) ||
            (off && (e & QCOW2_BMT_ALL_ONES)) || off > file_size ||
            (off && q->cluster_size > file_size - off))
            ret = err_set(-QIMG_ECORRUPT, "bitmap '%s': table entry %u (%#llx at %#llx) is "
                          "invalid", b->name, i, (unsigned long long)e,
                          (unsigned long long)(b->table_offset + (uint64_t)i * 8));
    }
    if (ret < 0) {
        free(t);
        return ret;
    }
    *out = t;
    return 0;
}

int qcow2_bitmap_read(struct qcow2 *q, const struct qcow2_bitmap *b, uint8_t **data)
{
    uint64_t bytes = qcow2_bitmap_bytes(q->meta.h.size, b->gran_bits), cs = q->cluster_size;
    uint64_t *t, bits;
    uint8_t *d;
    int ret;

    *data = NULL;
    ret = read_table(q, b, &t);
    if (ret < 0)
        return ret;
    d = xzalloc(bytes + 1);
    if (!d) {
        free(t);
        return -ENOMEM;
    }
    for (uint32_t i = 0; ret == 0 && i < b->table_size && (uint64_t)i * cs < bytes; i++) {
        uint64_t at = (uint64_t)i * cs, n = MIN(cs, bytes - at);
        uint64_t off = t[i] & QCOW2_BMT_OFFSET_MASK;

        if (off)
            ret = qfile_pread(q->file, d + at, n, off);
        else if (t[i] & QCOW2_BMT_ALL_ONES)
            memset(d + at, 0xff, n);
    }
    free(t);
    if (ret < 0) {
        free(d);
        return ret;
    }
    /* Tail bits past the image's end are unused: keep them zero. */
    bits = (q->meta.h.size + (1ULL << b->gran_bits) - 1) >> b->gran_bits;
    if (bits % 8 && bytes)
        d[bytes - 1] &= (uint8_t)((1u << (bits % 8)) - 1);
    *data = d;
    return 0;
}

uint64_t qcow2_bitmap_count(const uint8_t *data, uint64_t bytes)
{
    uint64_t c = 0;

    for (uint64_t i = 0; i < bytes; i++)
        c += (uint64_t)__builtin_popcount(data[i]);
    return c;
}

void qcow2_bitmap_set_range(uint8_t *data, uint8_t gran_bits, uint64_t virtual_size,
                            uint64_t off, uint64_t len)
{
    uint64_t first, last;

    if (!len || off >= virtual_size)
        return;
    if (len > virtual_size - off)
        len = virtual_size - off;
    first = off >> gran_bits;
    last = (off + len - 1) >> gran_bits;
    while (first <= last && (first & 7)) {
        data[first / 8] |= (uint8_t)(1u << (first & 7));
        first++;
    }
    if (first + 8 <= last + 1) {
        uint64_t nbytes = (last + 1 - first) / 8;
        memset(data + first / 8, 0xff, nbytes);
        first += nbytes * 8;
    }
    for (; first <= last; first++)
        data[first / 8] |= (uint8_t)(1u << (first & 7));
}

/* ---- storing --------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Free a bitmap's data clusters and table (its table is read first). */
static int free_bitmap(struct qcow2 *q, const struct qcow2_bitmap *b)
{
    uint64_t *t;
    int ret = read_table(q, b, &t);

    if (ret < 0)
        return ret;
    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++)
        if (t[i] & QCOW2_BMT_OFFSET_MASK)
            ret = qcow2_free_clusters(q, t[i] & QCOW2_BMT_OFFSET_MASK, q->cluster_size);
    free(t);
    if (ret == 0)
        ret = qcow2_free_clusters(q, b->table_offset,
                                  ALIGN_UP((uint64_t)b->table_size * 8, q->cluster_size));
    return ret;
}

/* Write a new table and data clusters for b from data; sets b->table_offset. */
static int write_bitmap(struct qcow2 *q, struct qcow2_bitmap *b, const uint8_t *data)
{
    uint64_t cs = q->cluster_size, bytes = qcow2_bitmap_bytes(q->meta.h.size, b->gran_bits);
    uint64_t tsize = DIV_ROUND_UP(bytes, cs), tbytes = ALIGN_UP(tsize * 8, cs);
    uint8_t *t, *cl;
    int64_t toff;
    int ret = 0;

    if (bytes > QCOW2_MAX_BITMAP_BYTES || tsize > QCOW2_MAX_BITMAP_TABLE)
        return err_set(-EFBIG, "bitmap '%s' would be too large (%llu bytes)", b->name,
                       (unsigned long long)bytes);
    t = xzalloc(tbytes);
    cl = xzalloc(cs);
    if (!t || !cl) {
        free(t);
        free(cl);
        return -ENOMEM;
    }
    for (uint64_t i = 0; ret == 0 && i < tsize; i++) {
        uint64_t n = MIN(cs, bytes - i * cs);
        int64_t off;

        if (all_zero(data + i * cs, n))
            continue;
        off = qcow2_alloc_clusters(q, 1);
        if (off < 0) {
            ret = (int)off;
            break;
        }
        memset(cl, 0, cs);
        memcpy(cl, data + i * cs, n);
        ret = qcow2_write_metadata(q, 0, (uint64_t)off, cl, cs);
        put_be64(t + i * 8, (uint64_t)off);
    }
    if (ret == 0) {
        toff = qcow2_alloc_clusters(q, tbytes / cs);
        if (toff < 0)
            ret = (int)toff;
        else
            ret = qcow2_write_metadata(q, 0, (uint64_t)toff, t, tbytes);
        if (ret == 0) {
            b->table_offset = (uint64_t)toff;
            b->table_size = (uint32_t)tsize;
        }
    }
    /* On failure the clusters allocated so far leak; nothing points to them. */
    free(t);
    free(cl);
    return ret;
}

int qcow2_bitmaps_store(struct qcow2 *q, const struct qcow2_bitmap *old, uint32_t nold,
                        struct qcow2_bitmap *nw, uint32_t nnew, uint8_t *const *data)
{
    struct qcow2_meta *m = &q->meta;
    uint64_t cs = q->cluster_size, odoff = m->bitmap_dir_offset;
    uint64_t odsize = m->has_bitmaps_ext ? m->bitmap_dir_size : 0;
    uint64_t dsize = qcow2_bitmap_dir_size(nw, nnew);
    int64_t doff = 0;
    uint8_t *dir = NULL;
    int ret = 0;

    if (m->h.version < 3)
        return err_set(-ENOTSUP, "Cannot store dirty bitmaps in qcow2 v2 files");
    if (nnew > QCOW2_MAX_BITMAPS || dsize > QCOW2_MAX_BITMAP_DIR)
        return err_set(-EFBIG, "too many bitmaps");
    /* 1. data and tables */
    for (uint32_t i = 0; ret == 0 && i < nnew; i++)
        if (data && data[i])
            ret = write_bitmap(q, &nw[i], data[i]);
    /* 2. the directory */
    if (ret == 0 && nnew) {
        dir = xzalloc(ALIGN_UP(dsize, cs));
        if (!dir)
            return -ENOMEM;
        qcow2_bitmap_dir_build(nw, nnew, dir);
        doff = qcow2_alloc_clusters(q, ALIGN_UP(dsize, cs) / cs);
        if (doff < 0)
            ret = (int)doff;
        else
            ret = qcow2_write_metadata(q, 0, (uint64_t)doff, dir, ALIGN_UP(dsize, cs));
        free(dir);
    }
    /* 3. everything on disk, refcounts included, before the header points to it */
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret < 0)
        return ret;
    /* 4. the header extension */
    m->has_bitmaps_ext = nnew > 0;
    m->nb_bitmaps = nnew;
    m->bitmap_dir_size = nnew ? dsize : 0;
    m->bitmap_dir_offset = nnew ? (uint64_t)doff : 0;
    if (nnew)
        m->h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    else
        m->h.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    q->header_dirty = true;
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    /* 5. what nothing points to any more (a stale directory, never
     * validated, may point anywhere: its clusters are left leaked) */
    if (odsize && odoff && nold)
        ret = qcow2_free_clusters(q, odoff, ALIGN_UP(odsize, cs));
    for (uint32_t i = 0; ret == 0 && i < nold; i++) {
        bool kept = false;
        for (uint32_t k = 0; k < nnew && !kept; k++)
            kept = nw[k].table_offset == old[i].table_offset;
        if (!kept)
            ret = free_bitmap(q, &old[i]);
    }
    if (ret == 0)
        ret = qcow2_flush(q);
    return ret;
}

/* ---- the write path ---------------------------------------------------- */

static void track_free(struct qcow2_bm_track *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; t->data && i < t->n; i++)
        free(t->data[i]);
    free(t->data);
    qcow2_bitmaps_free(t->bm, t->n);
    free(t);
}

/* Mark the tracked bitmaps in_use in the directory, in place (as qemu). */
static int write_in_use(struct qcow2 *q, struct qcow2_bm_track *t)
{
    uint64_t dsize = q->meta.bitmap_dir_size;
    uint8_t *dir = xzalloc(dsize);
    int ret;

    if (!dir)
        return -ENOMEM;
    qcow2_bitmap_dir_build(t->bm, t->n, dir);
    ret = qcow2_write_metadata(q, 0, q->meta.bitmap_dir_offset, dir, dsize);
    if (ret == 0)
        ret = qfile_flush(q->file);
    free(dir);
    return ret;
}

/* all: every usable bitmap, enabled or not (a resize changes them all). */
static int track_start(struct qcow2 *q, bool all)
{
    struct qcow2_bm_track *t = xzalloc(sizeof(*t));
    int ret;

    if (!t)
        return -ENOMEM;
    ret = qcow2_bitmaps_load(q, &t->bm, &t->n, NULL);
    if (ret == 0 && t->n) {
        t->data = xzalloc(t->n * sizeof(*t->data));
        if (!t->data)
            ret = -ENOMEM;
    }
    for (uint32_t i = 0; ret == 0 && i < t->n; i++) {
        struct qcow2_bitmap *b = &t->bm[i];
        if ((!all && !(b->flags & QCOW2_BME_AUTO)) || (b->flags & QCOW2_BME_IN_USE))
            continue;
        /* One that cannot be kept right (unknown extra data) stays in use:
         * inconsistent, never silently wrong. */
        if (!qcow2_bitmap_unusable(b))
            ret = qcow2_bitmap_read(q, b, &t->data[i]);
        b->flags |= QCOW2_BME_IN_USE;
        t->active = true;
    }
    if (ret == 0 && t->active)
        ret = write_in_use(q, t);
    if (ret < 0) {
        track_free(t);
        return ret;
    }
    q->bm_track = t;
    return 0;
}

int qcow2_bitmaps_note_write(struct qcow2 *q, uint64_t off, uint64_t len)
{
    struct qcow2_bm_track *t;
    int ret;

    if (!q->meta.has_bitmaps_ext || !(q->meta.h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    if (!q->bm_track) {
        ret = track_start(q, false);
        if (ret < 0)
            return ret;
    }
    t = q->bm_track;
    for (uint32_t i = 0; i < t->n; i++)
        if (t->data[i])
            qcow2_bitmap_set_range(t->data[i], t->bm[i].gran_bits, q->meta.h.size, off, len);
    return 0;
}

int qcow2_bitmaps_close(struct qcow2 *q)
{
    struct qcow2_bm_track *t = q->bm_track;
    struct qcow2_bitmap *old = NULL;
    uint32_t nold = 0;
    int ret = 0;

    if (!t)
        return 0;
    q->bm_track = NULL;
    if (t->active) {
        /* The old tables are those on disk: the same entries without in_use. */
        old = xzalloc(t->n * sizeof(*old));
        if (!old) {
            track_free(t);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < t->n; i++) {
            old[i] = t->bm[i];
            if (t->data[i])
                t->bm[i].flags &= ~QCOW2_BME_IN_USE;
        }
        nold = t->n;
        ret = qcow2_bitmaps_store(q, old, nold, t->bm, t->n, t->data);
        free(old);      /* its strings belong to t->bm */
    }
    track_free(t);
    return ret;
}

/* ---- resizing ------------------------------------------------------------ */

int qcow2_bitmaps_resize_begin(struct qcow2 *q)
{
    int ret;

    if (!q->meta.has_bitmaps_ext || !(q->meta.h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    ret = qcow2_bitmaps_close(q);       /* what earlier writes set, stored first */
    return ret < 0 ? ret : track_start(q, true);
}

int qcow2_bitmaps_resize_end(struct qcow2 *q, uint64_t old_size)
{
    struct qcow2_bm_track *t = q->bm_track;
    uint64_t size = q->meta.h.size;

    for (uint32_t i = 0; t && i < t->n; i++) {
        uint8_t g = t->bm[i].gran_bits, *d;
        uint64_t ob = qcow2_bitmap_bytes(old_size, g), nb = qcow2_bitmap_bytes(size, g);
        uint64_t bits = (size + (1ULL << g) - 1) >> g;

        if (!t->data[i])
            continue;
        d = realloc(t->data[i], nb + 1);
        if (!d)
            return -ENOMEM;
        t->data[i] = d;
        if (nb > ob)
            memset(d + ob, 0, nb - ob);         /* the new area starts clean, as in qemu */
        if (bits % 8 && nb)
            d[nb - 1] &= (uint8_t)((1u << (bits % 8)) - 1);
    }
    return qcow2_bitmaps_close(q);
}
