/*
 * create.h - laying out a new qcow2 image (create.c).
 *
 * The layout is the one qemu-img 7.2 writes for the same options, byte for
 * byte: header cluster, refcount table at cluster 1, first refcount block at
 * cluster 2, L1 table from cluster 3, and whatever refcount blocks, tables
 * and (with preallocation) L2 tables qemu's allocator would add after them;
 * a LUKS header area comes right after the L1 table.
 */
#ifndef QIMG_QCOW2_CREATE_H
#define QIMG_QCOW2_CREATE_H

#include <stdbool.h>
#include <stdint.h>

enum qcow2_prealloc {
    QCOW2_PREALLOC_OFF,
    QCOW2_PREALLOC_METADATA,
    QCOW2_PREALLOC_FALLOC,
    QCOW2_PREALLOC_FULL,
};

struct qcow2_create_opts {
    uint64_t size;              /* virtual size; rounded up to 512 bytes */
    unsigned version;           /* 2 or 3 */
    uint64_t cluster_size;      /* checked by qcow2_create_check */
    uint64_t refcount_bits;     /* checked by qcow2_create_check */
    bool lazy_refcounts;
    bool extended_l2;
    uint8_t compression_type;   /* QCOW2_COMPRESSION_* */
    enum qcow2_prealloc prealloc;
    const char *backing_file;   /* NULL: none */
    const char *backing_fmt;    /* NULL: none */
    bool nocow;                 /* ask the file system not to copy on write */
    /* Encryption: QCOW_CRYPT_NONE, _AES (nothing on disk but the header
     * field) or _LUKS: crypto_len bytes of LUKS header area (luks_create)
     * placed after the L1 table, in whole clusters, as qemu places it. */
    unsigned crypt_method;
    const uint8_t *crypto_hdr;
    size_t crypto_len;
};

/*
 * Refuse option combinations qemu-img refuses, with its words (err_set,
 * -EINVAL), before any file is touched.
 */
int qcow2_create_check(const struct qcow2_create_opts *o);

/*
 * Create (or truncate) filename and lay out the image. Everything that can
 * fail for a reason other than I/O (an image too large for the format:
 * -EFBIG) is found before the file is opened; on an I/O failure the file
 * is removed, as qemu-img does.
 */
int qcow2_create(const char *filename, const struct qcow2_create_opts *o);

#endif
