/*
 * bitmap.h - persistent dirty bitmaps (qcow2.txt "Bitmaps extension" and
 * "Bitmaps"): the bitmap directory, bitmap tables and bitmap data.
 *
 * Owns: the declarations of bitmap.c. Must not: hold state; the engine's
 * open/close and write path only call the two hooks at the end.
 */
#ifndef QIMG_QCOW2_BITMAP_H
#define QIMG_QCOW2_BITMAP_H

#include "qcow2.h"

/* Directory entry flags. */
#define QCOW2_BME_IN_USE        (1u << 0)
#define QCOW2_BME_AUTO          (1u << 1)
#define QCOW2_BME_EXTRA_COMPAT  (1u << 2)
#define QCOW2_BME_FLAGS_KNOWN   0x7u
#define QCOW2_BME_TYPE_DIRTY    1

/* Limits, as qemu enforces them. */
#define QCOW2_MAX_BITMAPS       65535u
#define QCOW2_MAX_BITMAP_DIR    (64u * 1024 * 1024)
#define QCOW2_MAX_BITMAP_NAME   1023u
#define QCOW2_MIN_GRAN_BITS     9
#define QCOW2_MAX_GRAN_BITS     31
#define QCOW2_MAX_BITMAP_TABLE  0x8000000u      /* entries */
#define QCOW2_MAX_BITMAP_BYTES  0x20000000u     /* bitmap data, 512 MiB */

/* Bitmap table entry. */
#define QCOW2_BMT_ALL_ONES      1ULL
#define QCOW2_BMT_OFFSET_MASK   0x00fffffffffffe00ULL
#define QCOW2_BMT_RESERVED_MASK 0xff000000000001feULL

/* One bitmap directory entry, decoded. */
struct qcow2_bitmap {
    uint64_t table_offset;
    uint32_t table_size;        /* entries */
    uint32_t flags;
    uint8_t type;
    uint8_t gran_bits;
    uint32_t extra_size;
    uint8_t *extra;             /* kept byte for byte */
    char *name;
};

/*
 * Parse a bitmap directory of len bytes holding nb entries (pure, on
 * bytes): every field bounds-checked against the cluster size, the virtual
 * size and the file size; names unique. -QIMG_ECORRUPT with a message.
 */
int qcow2_bitmap_dir_parse(const uint8_t *buf, size_t len, uint32_t nb, uint32_t cluster_bits,
                           uint64_t virtual_size, uint64_t file_size, struct qcow2_bitmap **out);
/* Bytes the directory takes when written. */
uint64_t qcow2_bitmap_dir_size(const struct qcow2_bitmap *bm, uint32_t n);
void qcow2_bitmap_dir_build(const struct qcow2_bitmap *bm, uint32_t n, uint8_t *buf);
void qcow2_bitmaps_free(struct qcow2_bitmap *bm, uint32_t n);

/* Bytes of bitmap data for a bitmap of this granularity over the image. */
uint64_t qcow2_bitmap_bytes(uint64_t virtual_size, uint8_t gran_bits);
/* Why a bitmap cannot be used (in use, unknown extra data), or NULL. */
const char *qcow2_bitmap_unusable(const struct qcow2_bitmap *b);

/*
 * The image's bitmaps: *n = 0 without the extension. When the autoclear
 * bit is clear, the bitmaps are stale (a program that does not know them
 * wrote the image): *stale is set and *n is 0.
 */
int qcow2_bitmaps_load(struct qcow2 *q, struct qcow2_bitmap **out, uint32_t *n, bool *stale);
/* Read all of a bitmap's data (qcow2_bitmap_bytes long, malloc'd). */
int qcow2_bitmap_read(struct qcow2 *q, const struct qcow2_bitmap *b, uint8_t **data);
/* Number of set bits in data. */
uint64_t qcow2_bitmap_count(const uint8_t *data, uint64_t bytes);
/* Set the bits covering guest bytes [off, off+len). */
void qcow2_bitmap_set_range(uint8_t *data, uint8_t gran_bits, uint64_t virtual_size,
                            uint64_t off, uint64_t len);

/*
 * Replace the directory: old (nold entries, as on disk) by nw (nnew). An
 * entry of nw with data[i] != NULL gets a new table and data clusters
 * written from data[i]; otherwise it keeps its table_offset. Order: data,
 * tables, directory, flush, header extension, flush; only then are the
 * old directory and the tables (and data) no longer used freed.
 */
int qcow2_bitmaps_store(struct qcow2 *q, const struct qcow2_bitmap *old, uint32_t nold,
                        struct qcow2_bitmap *nw, uint32_t nnew, uint8_t *const *data);

/* ---- the write path's hooks (write.c, image.c) ---------------------- */
/*
 * A guest write to [off, off+len) of an image with bitmaps: the first one
 * marks every enabled ("auto") bitmap in_use on disk and loads it; each one
 * sets its bits in memory. qcow2_bitmaps_close stores them, in_use cleared.
 */
int qcow2_bitmaps_note_write(struct qcow2 *q, uint64_t off, uint64_t len);
int qcow2_bitmaps_close(struct qcow2 *q);
/*
 * Around a change of the virtual size: begin marks every usable bitmap
 * in_use on disk and loads it (a crash then leaves them inconsistent, and
 * qemu accepts an in-use bitmap whose table no longer fits); end, once
 * q->meta.h.size is the new size, stores them cut or zero-extended to it.
 */
int qcow2_bitmaps_resize_begin(struct qcow2 *q);
int qcow2_bitmaps_resize_end(struct qcow2 *q, uint64_t old_size);

#endif
