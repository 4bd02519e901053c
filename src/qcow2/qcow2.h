/*
 * qcow2.h - the qcow2 engine's state and its internal interfaces.
 *
 * Layers, bottom up (each file owns one):
 *   header.c    parse/validate/serialize the header cluster (pure, on bytes)
 *   image.c     open/close: header, L1, refcount table, snapshot table
 *   overlap.c   the overlap check run before every metadata write
 *   cache.c     THE metadata cache: L2 tables and refcount blocks
 *   refcount.c  refcount get/update, cluster allocation and freeing
 *   snapshot_table.c  parse/serialize the snapshot table (pure, on bytes)
 *   create.c    laying out a new image
 *
 * Write ordering, declared once (qcow2_flush in image.c):
 *   guest data -> fsync -> refcount blocks -> fsync -> L2 tables -> fsync
 *   -> L1 table / refcount table / header.
 * A crash anywhere leaves at worst leaked clusters, never a reference to a
 * cluster whose refcount is zero.
 */
#ifndef QIMG_QCOW2_H
#define QIMG_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/util.h"
#include "format.h"

struct blk;

/* Decoded header fields (host byte order). */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

/* A header extension qimg does not interpret: kept byte for byte. */
struct qcow2_ext {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};

/* Everything the header cluster says. */
struct qcow2_meta {
    struct qcow2_header h;
    char *backing_file;         /* NULL when none */
    char *backing_fmt;          /* from the backing format extension */
    char *data_file;            /* external data file name */
    bool has_crypto_ext;
    uint64_t crypto_offset, crypto_length;
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_size, bitmap_dir_offset;
    /* Feature names from the feature table, for messages about unknown bits. */
    struct { uint8_t type, bit; char name[47]; } *features;
    unsigned nb_features;
    struct qcow2_ext *unknown;  /* extensions kept as they are */
    unsigned nb_unknown;
};

struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;     /* the large field when extra data has it */
    uint64_t disk_size;         /* from extra data; else the image size */
    bool has_disk_size;
    uint64_t icount;
    bool has_icount;            /* false: icount is -1 / absent */
    uint32_t extra_size;
    uint8_t *extra;             /* all extra data, kept byte for byte */
};

struct qcow2_cache;
struct qcow2_crypto;

struct qcow2 {
    struct qfile *file;
    struct qfile *data_file;    /* == file unless an external data file */
    struct qcow2_meta meta;
    bool writable;

    uint32_t cluster_bits;
    uint64_t cluster_size;
    bool extl2;                 /* extended L2 entries (16 bytes, 32 subclusters) */
    uint32_t l2_entry_size;     /* 8 or 16 */
    uint32_t l2_bits;           /* log2 of entries per L2 table */
    uint64_t l2_entries;
    uint32_t subcluster_bits;   /* cluster_bits - 5 with extended L2 */

    uint32_t refcount_order;
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint32_t rb_bits;           /* log2 of refcount entries per block */

    uint64_t *l1;               /* host byte order */
    uint32_t l1_size;
    uint64_t *reftable;         /* host byte order */
    uint64_t reftable_size;     /* entries */

    struct qcow2_snapshot *snapshots;
    uint32_t nb_snapshots;

    struct qcow2_cache *l2_cache;
    struct qcow2_cache *rc_cache;

    uint64_t free_cluster_hint; /* first cluster index that may be free */
    uint64_t free_byte_offset;  /* for compressed allocations; 0 = none */
    uint64_t alloc_end;         /* clusters allocated this session end here */

    /* The last decompressed cluster, so piecewise reads decompress once. */
    uint8_t *zcache;
    uint64_t zcache_entry;      /* its L2 entry; 0 = empty */

    struct blk *backing;        /* opened backing file, or NULL */
    bool header_dirty;

    /* Encrypted images (crypto.h): the LUKS header, and the cipher once a
     * key is set; NULL when crypt_method is 0. */
    struct qcow2_crypto *crypto;

    /* Enabled persistent bitmaps being updated by guest writes (bitmap.c). */
    struct qcow2_bm_track *bm_track;
};

/* ---- header.c ------------------------------------------------------- */
/*
 * Parse and validate the header cluster in buf (len bytes, the file's first
 * min(cluster_size, file_size) bytes). file_size bounds every offset.
 * Sets err_set() messages in qemu's wording where it has one.
 */
int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                       struct qcow2_meta *m);
/* Serialize into buf (cluster_size bytes, zeroed by the caller); -ENOSPC
 * when it does not fit. Writes the feature table for v3 (left out, as qemu
 * does, when the cluster has no room for it), and the extensions. */
int qcow2_header_build(const struct qcow2_meta *m, uint8_t *buf, size_t len);
void qcow2_meta_free(struct qcow2_meta *m);
/* "dirty bit", or "bit 7" when the table does not name it. */
const char *qcow2_feature_name(const struct qcow2_meta *m, uint8_t type, uint8_t bit,
                               char *buf, size_t len);

/* ---- snapshot_table.c ----------------------------------------------- */
int qcow2_snapshots_parse(const uint8_t *buf, size_t len, uint32_t count,
                          struct qcow2_snapshot **out);
/* Bytes the table takes when written. */
uint64_t qcow2_snapshots_size(const struct qcow2_snapshot *sn, uint32_t count);
void qcow2_snapshots_build(const struct qcow2_snapshot *sn, uint32_t count, uint8_t *buf);
void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t count);
/*
 * Find a snapshot as qemu does: by id first, then by name. id or name may be
 * NULL to match only the other (convert's snapshot.id= / snapshot.name=).
 * Returns its index, -ENOENT when none matches, or -EEXIST when a name
 * (not an id) matches more than one snapshot (qimg refuses to guess).
 */
int qcow2_snapshot_find(const struct qcow2_snapshot *sn, uint32_t count,
                        const char *id, const char *name);

/* ---- image.c -------------------------------------------------------- */
enum {
    QCOW2_OPEN_RDWR = 1 << 0,
    QCOW2_OPEN_NO_BACKING = 1 << 1,     /* do not open the backing file */
    QCOW2_OPEN_CHECK = 1 << 2,          /* for check/repair: tolerate corrupt/dirty */
    QCOW2_OPEN_NOLOCK = 1 << 3,         /* -U */
};
/* Takes ownership of f on success. */
int qcow2_open(struct qcow2 **out, struct qfile *f, int flags);
/* The same, for the block driver: self names the image, so its backing
 * file can be found and opened (depth guards loops). */
int qcow2_open_blk(struct qcow2 **out, struct blk *self, struct qfile *f, int flags, int depth);
/* Flushes (see ordering above) and frees; returns the first error. */
int qcow2_close(struct qcow2 *q);
/* Flush everything in the declared order. */
int qcow2_flush(struct qcow2 *q);
/* Rewrite the header cluster from q->meta. */
int qcow2_write_header(struct qcow2 *q);
/* Write the in-memory L1 table (entries [from, to)) back to disk. */
int qcow2_write_l1(struct qcow2 *q, uint32_t from, uint32_t to);
/* Set or clear the dirty / corrupt incompatible bits on disk (v3 only). */
int qcow2_set_incompat(struct qcow2 *q, uint64_t bits, bool on);
/* Mark the image corrupt (v3) and return -QIMG_ECORRUPT with a message. */
int qcow2_signal_corruption(struct qcow2 *q, const char *fmt, ...) PRINTF(2, 3);

/* Offset helpers. */
static inline uint64_t qcow2_offset_in_cluster(const struct qcow2 *q, uint64_t off)
{
    return off & (q->cluster_size - 1);
}
static inline uint64_t qcow2_size_to_clusters(const struct qcow2 *q, uint64_t size)
{
    return (size + q->cluster_size - 1) >> q->cluster_bits;
}
static inline uint32_t qcow2_l1_index(const struct qcow2 *q, uint64_t guest)
{
    return (uint32_t)(guest >> (q->cluster_bits + q->l2_bits));
}
static inline uint64_t qcow2_l2_index(const struct qcow2 *q, uint64_t guest)
{
    return (guest >> q->cluster_bits) & (q->l2_entries - 1);
}
/* L1 entries needed to map size bytes. */
static inline uint64_t qcow2_l1_entries_for(uint32_t cluster_bits, bool extl2, uint64_t size)
{
    uint32_t l2_bits = cluster_bits - (extl2 ? 4 : 3);
    uint64_t shift = cluster_bits + l2_bits;
    return shift >= 64 ? 1 : (size + (1ULL << shift) - 1) >> shift;
}

/* ---- cluster.c: the data path --------------------------------------- */
/*
 * Guest reads and writes. Reads fall through to q->backing (or zeros) for
 * unallocated clusters; writes allocate, copy on write from the backing
 * file, and keep refcounts right; all metadata goes through the cache.
 * Flags for block_status are the BLK_STATUS_* values of block.h.
 */
int qcow2_read(struct qcow2 *q, uint64_t off, void *buf, size_t len);
int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len);
int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len);
/* One whole cluster (or the image's last, partial one) at a cluster boundary. */
int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf, size_t len);
int qcow2_block_status(struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *pnum,
                       uint64_t *map, int *flags);

/* How one guest range is stored (cluster.c); the checker and map use it too. */
enum qcow2_ctype {
    QCOW2_C_UNALLOCATED,        /* falls through to the backing file */
    QCOW2_C_ZERO_PLAIN,         /* reads as zeros, no host cluster */
    QCOW2_C_ZERO_ALLOC,         /* reads as zeros, host cluster kept */
    QCOW2_C_NORMAL,             /* data at host offset */
    QCOW2_C_COMPRESSED,         /* whole cluster, compressed at host */
};
struct qcow2_mapping {
    enum qcow2_ctype type;
    uint64_t host;              /* NORMAL/ZERO_ALLOC: host offset of off;
                                   COMPRESSED: the raw L2 entry */
    uint64_t bytes;             /* length of the run from off */
};
/* The run of guest bytes starting at off (at most len) stored the same way
 * (and, for NORMAL, contiguously on the host), within one L2 table. */
int qcow2_get_mapping(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_mapping *m);
/* Decode a compressed L2 entry: host offset and byte length of the stream. */
void qcow2_compressed_extent(const struct qcow2 *q, uint64_t l2e, uint64_t *host, uint64_t *len);
/* Decompress one cluster (q->cluster_size bytes into out). */
int qcow2_decompress(struct qcow2 *q, const uint8_t *in, size_t in_len, uint8_t *out);
/* Compress one cluster; returns the compressed length, or 0 when it does
 * not shrink (store it uncompressed then). out holds cluster_size bytes. */
ssize_t qcow2_compress(uint8_t compression_type, const uint8_t *in, size_t len,
                       uint8_t *out, size_t out_len);
/* True when in is so random that compressing it cannot shrink it; a quick
 * test (byte statistics, repeated strings) to skip the attempt. */
bool qcow2_compress_hopeless(const uint8_t *in, size_t len);
/* The same with a compressor reused across clusters (one per thread). */
struct qcow2_zctx;
struct qcow2_zctx *qcow2_zctx_new(uint8_t compression_type);
void qcow2_zctx_free(struct qcow2_zctx *c);
ssize_t qcow2_compress_ctx(struct qcow2_zctx *c, const uint8_t *in, size_t len, uint8_t *out,
                           size_t out_len);

/* ---- overlap.c ------------------------------------------------------ */
enum {
    QCOW2_OL_HEADER = 1 << 0,
    QCOW2_OL_ACTIVE_L1 = 1 << 1,
    QCOW2_OL_ACTIVE_L2 = 1 << 2,
    QCOW2_OL_REFTABLE = 1 << 3,
    QCOW2_OL_REFBLOCK = 1 << 4,
    QCOW2_OL_SNAPTABLE = 1 << 5,
    QCOW2_OL_INACTIVE_L1 = 1 << 6,
    QCOW2_OL_ALL = 0x7f,
};
/*
 * Before every metadata write: does [offset, offset+len) hit metadata of the
 * kinds in mask (minus ignore)? Returns 0, or the QCOW2_OL_* bit it hits.
 */
int qcow2_overlap_check(struct qcow2 *q, int ignore, uint64_t offset, uint64_t len);
/* Checked write of metadata: overlap check, then pwrite. */
int qcow2_write_metadata(struct qcow2 *q, int ignore, uint64_t offset,
                         const void *buf, size_t len);

/* ---- cache.c -------------------------------------------------------- */
/*
 * One cache type for L2 tables and refcount blocks. Tables are cluster
 * sized and kept in on-disk (big-endian) byte order. Use: get, read/modify,
 * mark_dirty, put. A table stays in memory while referenced (get without
 * put). Least-recently-used eviction writes dirty tables back, after first
 * flushing the cache this one depends on.
 */
struct qcow2_cache *qcow2_cache_new(struct qcow2 *q, unsigned nb_tables, int ol_kind);
void qcow2_cache_free(struct qcow2_cache *c);
int qcow2_cache_get(struct qcow2 *q, struct qcow2_cache *c, uint64_t offset, void **table);
/* Like get, but for a freshly allocated table: no read, zero-filled. */
int qcow2_cache_get_empty(struct qcow2 *q, struct qcow2_cache *c, uint64_t offset, void **table);
void qcow2_cache_put(struct qcow2_cache *c, void **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table);
/* Write back every dirty table of c (dependency first), then fsync. */
int qcow2_cache_flush(struct qcow2 *q, struct qcow2_cache *c);
/* c's dirty tables may only be written after dep has been flushed. */
void qcow2_cache_set_dependency(struct qcow2_cache *c, struct qcow2_cache *dep);
/* Forget the table at offset (its cluster was freed); it must not be in use. */
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset);
/* Number of tables the cache holds. */
unsigned qcow2_cache_capacity(const struct qcow2_cache *c);

/* ---- refcount.c ----------------------------------------------------- */
int qcow2_refcount_get(struct qcow2 *q, uint64_t cluster_index, uint64_t *rc);
/*
 * Add addend (may be negative) to the refcount of every cluster touched by
 * [offset, offset+length). Refcounts that would leave [0, refcount_max]
 * fail with -ERANGE before anything changes in that block. A refcount
 * reaching zero frees the cluster (hint moves back, cache entries dropped).
 */
int qcow2_refcount_update(struct qcow2 *q, uint64_t offset, uint64_t length, int64_t addend);
/* Allocate nb_clusters contiguous free clusters (refcount 1); byte offset. */
int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t nb_clusters);
/* Allocate len bytes (<= a cluster) for compressed data, packed like qemu. */
int64_t qcow2_alloc_bytes(struct qcow2 *q, uint64_t len);
int qcow2_free_clusters(struct qcow2 *q, uint64_t offset, uint64_t length);
/* Read/write one entry of a refcount block held in the cache. */
uint64_t qcow2_rb_get(const struct qcow2 *q, const void *block, uint64_t index);
void qcow2_rb_set(const struct qcow2 *q, void *block, uint64_t index, uint64_t value);
/* Validate one refcount table / L1 / L2 pointer before following it. */
int qcow2_check_table_offset(struct qcow2 *q, uint64_t offset, const char *what);

#endif
