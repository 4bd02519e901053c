/*
 * block.h - the driver interface every command uses to read and write
 * images: open (with format probing), read, write, zeroes, status, flush,
 * close. Drivers: raw (raw.c), qcow2 (qcow2drv.c, over the engine in
 * src/qcow2/) and qcow v1 (qcow1drv.c, read-only). Backing chains are
 * opened here, with a depth guard.
 *
 * Must not: print anything; errors come back as negative errno with the
 * message recorded by err_set().
 */
#ifndef QIMG_BLOCK_H
#define QIMG_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/util.h"

#define BLK_MAX_CHAIN 64        /* backing chain depth guard */

enum {
    BLK_RDWR = 1 << 0,
    BLK_NO_BACKING = 1 << 1,    /* do not open backing files */
    BLK_CHECK = 1 << 2,         /* opened for check/repair: tolerate damage */
    BLK_NOLOCK = 1 << 3,        /* -U */
    /* The caller will read or write guest data: opening an encrypted image
     * without its key fails now, as qemu-img's open does, rather than at
     * the first read (info and check leave it out). */
    BLK_NEED_KEY = 1 << 4,
    BLK_UNSAFE = 1 << 5,        /* no fsyncs (QF_UNSAFE): convert's new output */
};

/*
 * The key of an encrypted image, from --object secret + --image-opts (see
 * src/util/secret.h). The secret is looked up only when the image turns
 * out to be encrypted, as qemu does (a plain image ignores key-secret, even
 * one naming no secret). Borrowed: nothing keeps a pointer to it after
 * blk_open_key returns.
 */
struct secret_store;
struct blk_key {
    const struct secret_store *secrets;
    const char *key_secret;     /* encrypt.key-secret: a secret id, or NULL */
    const char *format;         /* encrypt.format ("luks"/"aes"), or NULL */
};

/* block_status answers */
enum {
    BLK_STATUS_DATA = 1 << 0,       /* reads come from this layer's data */
    BLK_STATUS_ZERO = 1 << 1,       /* reads as zeros */
    BLK_STATUS_ALLOCATED = 1 << 2,  /* decided by this layer (not backing) */
    BLK_STATUS_OFFSET = 1 << 3,     /* *map is the host offset */
    BLK_STATUS_COMPRESSED = 1 << 4,
};

struct blk;

struct blk_driver {
    const char *name;
    /* Score 0..100 for the first bytes of a file; 0 = not this format. */
    int (*probe)(const uint8_t *buf, size_t len);
    int (*open)(struct blk *b, int flags, int depth);
    int (*read)(struct blk *b, uint64_t off, void *buf, size_t len);
    int (*write)(struct blk *b, uint64_t off, const void *buf, size_t len);
    /* May unmap: leave unallocated when the backing reads as zero too. */
    int (*write_zeroes)(struct blk *b, uint64_t off, uint64_t len);
    /* Write one whole cluster compressed (qcow2 only); NULL otherwise. */
    int (*write_compressed)(struct blk *b, uint64_t off, const void *buf, size_t len);
    /*
     * Status of [off, off+len) in this layer: BLK_STATUS_* flags for the
     * first *pnum bytes (>= 1 unless len == 0). *map is the host offset
     * when BLK_STATUS_OFFSET. *depth_out: 0 here, 1.. in the backing chain.
     */
    int (*block_status)(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                        uint64_t *map, int *flags);
    int (*flush)(struct blk *b);
    int (*close)(struct blk *b);
    /* Unlock an encrypted image (key may be NULL: then fail only if need);
     * NULL for formats without encryption. */
    int (*set_key)(struct blk *b, const struct blk_key *key, bool need);
};

struct blk {
    const struct blk_driver *drv;
    char *filename;
    uint64_t size;              /* virtual size in bytes */
    int flags;
    void *priv;                 /* driver state (struct qcow2 *, struct qfile *) */
    struct blk *backing;        /* opened backing image, or NULL */
    uint64_t cluster_size;      /* allocation unit; 0 for raw */
};

extern const struct blk_driver blk_raw_driver;
extern const struct blk_driver blk_qcow2_driver;
extern const struct blk_driver blk_qcow1_driver;    /* qcow v1, read-only */

const struct blk_driver *blk_find_driver(const char *name);
/* Guess the format from the file's first bytes; NULL on error (message set). */
int blk_probe(const char *filename, const struct blk_driver **drv);
/*
 * Open filename as fmt (NULL: probe). depth counts backing levels; pass 0.
 */
int blk_open(struct blk **out, const char *filename, const char *fmt, int flags);
int blk_open_depth(struct blk **out, const char *filename, const char *fmt, int flags, int depth);
/* blk_open, then unlock the image with key (may be NULL; see BLK_NEED_KEY). */
int blk_open_key(struct blk **out, const char *filename, const char *fmt, int flags,
                 const struct blk_key *key);
int blk_close(struct blk *b);
int blk_read(struct blk *b, uint64_t off, void *buf, size_t len);
int blk_write(struct blk *b, uint64_t off, const void *buf, size_t len);
int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len);
int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                     uint64_t *map, int *flags);
int blk_flush(struct blk *b);
/* Read what an overlay sees of its backing image b (NULL: no backing file):
 * zeros where there is none, or past its end when it is shorter. */
int blk_read_backing(struct blk *b, uint64_t off, void *buf, size_t len);
/* Resolve a backing file name relative to the image that names it. */
char *blk_backing_path(const char *image, const char *backing);

#endif
