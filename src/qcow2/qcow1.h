/*
 * qcow1.h - the original qcow format (version 1), read-only: header, L1/L2
 * mapping, compressed clusters, backing file. Enough to convert old images.
 *
 * Owns: struct qcow1. Must not: write to the image.
 */
#ifndef QIMG_QCOW1_H
#define QIMG_QCOW1_H

#include <stdint.h>

#include "../util/util.h"

struct blk;

#define QCOW1_HEADER_LEN 48

struct qcow1_header {
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t mtime;
    uint64_t size;
    uint8_t cluster_bits;
    uint8_t l2_bits;
    uint32_t crypt_method;
    uint64_t l1_table_offset;
};

struct qcow1 {
    struct qfile *file;
    struct qcow1_header h;
    char *backing_file;         /* NULL when none */
    struct blk *backing;        /* set by the driver; not owned */
    uint64_t cluster_size;
    uint64_t l2_size;           /* entries per L2 table */
    uint64_t *l1;
    uint32_t l1_size;
    /* A few L2 tables (host byte order), direct-mapped by offset. */
    uint64_t *l2_mem;
    uint64_t l2_off[16];
    /* The last decompressed cluster. */
    uint8_t *zbuf;
    uint64_t zbuf_entry;
};

/* Parse the 48-byte header (pure, on bytes); messages in qemu's wording. */
int qcow1_header_parse(const uint8_t *buf, size_t len, struct qcow1_header *h);
/* Open f (ownership passes on success): header, backing name, L1 table. */
int qcow1_open(struct qcow1 **out, struct qfile *f);
void qcow1_close(struct qcow1 *s);
int qcow1_read(struct qcow1 *s, uint64_t off, void *buf, size_t len);
/* BLK_STATUS_* flags of the run at off (within one L2 table). */
int qcow1_block_status(struct qcow1 *s, uint64_t off, uint64_t len, uint64_t *pnum,
                       uint64_t *map, int *flags);

#endif
