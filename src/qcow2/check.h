/*
 * check.h - THE refcount checker of the qcow2 engine: one call checks an
 * image and, when asked, repairs it (check.c drives the passes, check_walk.c
 * walks the tables, check_repair.c rebuilds and relocates, problem.c is the
 * table of every problem the checker can report).
 *
 * The upper half is the interface (commands, image.c's dirty-bit repair).
 * The lower half is shared by the checker's own files only.
 *
 * Must not: print (findings go to the report callback) or exit.
 */
#ifndef QIMG_QCOW2_CHECK_H
#define QIMG_QCOW2_CHECK_H

#include "qcow2.h"

enum {
    QCOW2_FIX_LEAKS = 1 << 0,   /* lower refcounts nothing needs */
    QCOW2_FIX_ERRORS = 1 << 1,  /* everything else */
    QCOW2_FIX_ALL = QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS,
};

/* The counters qemu-img reports, plus what a dry run would have fixed. */
struct qcow2_check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t corruptions_fixable, leaks_fixable;    /* dry run only */
    uint64_t image_end_offset;
    uint64_t total_clusters, allocated_clusters;
    uint64_t fragmented_clusters, compressed_clusters;
};

/* One finding, as one line of text without the newline. */
typedef void qcow2_check_report_fn(void *opaque, const char *line);

struct qcow2_check_opts {
    int fix;                    /* QCOW2_FIX_* (0: only check) */
    bool dry_run;               /* decide the repairs, write nothing */
    bool deep;                  /* read and decompress every data cluster */
    qcow2_check_report_fn *report;      /* NULL: silent */
    void *opaque;
    /* How far the check is: done of total bytes of metadata to go through
     * (tables walked, refcount blocks compared). The total grows when a
     * repair needs another pass; done never goes back. NULL: not asked. */
    void (*progress)(void *opaque, uint64_t done, uint64_t total);
    void *progress_opaque;
};

/*
 * Check q (opened with QCOW2_OPEN_CHECK; writable when o->fix and not a dry
 * run) and fill r. Returns 0 when the check completed (r says what it
 * found), or a negative errno when it could not (r->check_errors counts).
 */
int qcow2_check(struct qcow2 *q, const struct qcow2_check_opts *o,
                struct qcow2_check_result *r);

/* What qemu does when a dirty image is opened read-write: repair all. */
int qcow2_check_repair_dirty(struct qcow2 *q);

/* ===== shared by check.c, check_walk.c, check_repair.c, problem.c ===== */

/* Every kind of finding; problem.c holds one row for each. */
enum qcow2_problem {
    PR_REFCOUNT_LEAK,           /* stored refcount above the references */
    PR_REFCOUNT_LOW,            /* stored refcount below the references */
    PR_REFCOUNT_ZERO,           /* referenced cluster with refcount 0 */
    PR_REF_PAST_EOF,            /* metadata a cluster or more past the end */
    PR_REF_OVERFLOW,            /* more references than refcount_bits hold */
    PR_DATA_OVERFLOW,           /* ... for a data cluster (copied away) */
    PR_L1_RESERVED,
    PR_L1_UNALIGNED,
    PR_L1_PAST_EOF,
    PR_L1_ALIAS,                /* L2 table on the header/L1/refcount/snapshot table */
    PR_L2_OVER_REFBLOCK,        /* L2 table and refcount block share a cluster */
    PR_L2_RESERVED,
    PR_L2_UNALIGNED_ZERO,       /* preallocated zero cluster, unaligned */
    PR_L2_UNALIGNED_DATA,
    PR_L2_PAST_EOF,
    PR_DATA_ALIAS,              /* data cluster on metadata (copied away) */
    PR_COMPRESSED_COPIED,
    PR_COMPRESSED_BITMAP,
    PR_COMPRESSED_PAST_EOF,
    PR_EXTL2_ALLOC_ZERO,
    PR_EXTL2_UNALLOC_BITMAP,
    PR_COPIED_L1,
    PR_COPIED_DATA,
    PR_REFTABLE_RESERVED,
    PR_REFBLOCK_UNALIGNED,
    PR_REFBLOCK_PAST_EOF,
    PR_REFBLOCK_SHARED,
    PR_REFTABLE_ALIAS,          /* refcount table on other metadata */
    PR_REFTABLE_PAST_EOF,
    PR_L1_TABLE_PAST_EOF,       /* the active L1 table */
    PR_SN_TABLE_OFFSET,
    PR_SN_TABLE_ALIAS,
    PR_SN_EMPTY,
    PR_SN_TRUNCATED,
    PR_SN_TOO_MANY,
    PR_SN_INCOMPLETE,
    PR_SN_EXTRA_TOO_LARGE,
    PR_SN_L1_UNALIGNED,
    PR_SN_L1_TOO_LARGE,
    PR_SN_L1_PAST_EOF,
    PR_SN_L1_ALIAS,
    PR_BITMAP_DIR,
    PR_BITMAP_ENTRY,
    PR_DEEP_UNREADABLE,
    PR_DEEP_DECOMPRESS,
    PR_REBUILD,                 /* note: the refcount structure is rebuilt */
    PR_NEED_REBUILD,            /* note: -r leaks cannot rebuild */
    PR_IO,                      /* could not read or write: check error */
    PR_COUNT
};

/* Where a finding is: the fields a message names. */
struct pctx {
    uint64_t cluster;           /* host cluster index */
    uint64_t refcount, reference;
    uint64_t offset, size;      /* host bytes */
    uint64_t entry;             /* the table entry as found */
    int64_t index;              /* L1, L2, refcount table or snapshot index */
    const char *id, *name;      /* snapshot */
    const char *str;            /* free text (an errno message) */
    /* The guest bytes the finding affects (in snapshot gsn, or active). */
    bool has_guest;
    uint64_t gstart, glen;
    int64_t gsn;                /* -1: the active image */
    uint64_t gmore;             /* other guest ranges the finding affects */
};

/* Expected refcounts: one uint16_t per host cluster. Bits 15-14 say what
 * the first reference was (so a data cluster on metadata shows), bits 13-0
 * count; a full count field sends the real count to a small side table. */
enum { K_DATA = 0, K_L2 = 1, K_FIXED = 2, K_REFBLOCK = 3 };
#define RC_KIND_SHIFT 14
#define RC_COUNT_MAX 0x3fff

/* A data cluster to copy: waits until every cluster is counted. */
struct deferred {
    uint64_t table;             /* the L2 table's offset */
    uint64_t index;             /* entry index */
    uint64_t old;               /* the entry when recorded */
};
#define CHECK_MAX_DEFERRED 4096
#define CHECK_MAX_ROUNDS 8

struct chk {
    struct qcow2 *q;
    const struct qcow2_check_opts *o;
    struct qcow2_check_result *r;
    int fix;                    /* QCOW2_FIX_* the findings may be repaired by */
    bool write;                 /* repairs really happen (not a dry run) */
    int round;                  /* > 0: recounting after repairs */
    bool quiet_unfixed;         /* do not print unfixed findings again */
    bool began_writes;
    bool set_dirty;             /* the dirty bit is this repair's */

    uint64_t file_size;
    uint64_t nb;                /* clusters rc[] describes */
    uint64_t cap;               /* entries allocated */
    uint16_t *rc;
    struct rc_big { uint64_t cluster, count; } *big;   /* sorted by cluster */
    size_t nbig, capbig;
    uint64_t alloc_hint;

    bool rebuild;               /* the refcount structure must be rebuilt */
    bool unsafe;                /* counts incomplete: free nothing, allocate nothing */
    uint8_t *detached;          /* refcount table indexes dropped (bitmap) */
    bool sn_dirty;              /* the snapshot table must be rewritten */
    bool l1_new;                /* the active L1 table must be replaced */
    bool *sn_skip;              /* snapshots not walked (unusable L1 table) */
    uint8_t *copied_ok;         /* active L1 indexes whose L2 table's COPIED
                                   flags agreed with the stored refcounts when
                                   walked (bitmap; see pass_copied) */
    uint64_t sn_disk_size;      /* bytes the snapshot table takes on disk */

    struct deferred *def;
    size_t ndef;
    /* The clusters the in-memory L1 and refcount tables name, sorted: the
     * repair's own overlap check for the clusters it allocates (stale
     * entries only make it more careful). Built at the first allocation. */
    uint64_t *olx;
    size_t nolx;
    bool olx_built;
    uint64_t *fresh;            /* clusters this repair allocated */
    size_t nfresh, capfresh;

    /* Guest owners of clusters with too low refcounts (for messages). */
    uint64_t *want;
    struct pctx *owner;
    size_t nwant;

    uint8_t *buf;               /* one cluster */
    uint8_t *buf2;              /* two more (refcount blocks, copies) */
    uint8_t *dbuf;              /* --deep reads */
    char line[1024];
    uint64_t pdone, ptotal;     /* progress, in clusters of metadata */
};

/* ---- problem.c ---- */
/* Count and report a finding; true when the caller must repair it now. */
bool problem(struct chk *c, enum qcow2_problem code, const struct pctx *p);
/* The repair problem() asked for failed: count the finding as remaining. */
void problem_not_fixed(struct chk *c, enum qcow2_problem code);

/* ---- check.c: the expected refcount array and stored refcounts ---- */
uint64_t rc_get(struct chk *c, uint64_t i);
int rc_set(struct chk *c, uint64_t i, uint64_t v);
unsigned rc_kind(struct chk *c, uint64_t i);
void rc_set_kind(struct chk *c, uint64_t i, unsigned kind);
int rc_grow(struct chk *c, uint64_t n);
/* Is [off, off+len) a cluster or more past the end of the file (qemu's rule)? */
bool past_eof(struct chk *c, uint64_t off, uint64_t len);
enum { REF_EOF = 1, REF_OVERFLOW = 2, REF_FIX = 4, REF_ERR = 8 };
/* Count one reference of kind to every cluster [off, off+len) touches. */
int count_ref(struct chk *c, uint64_t off, uint64_t len, unsigned kind,
              enum qcow2_problem ovf, const struct pctx *p);
/* Bitmask (1 << kind) of what [off, off+len) holds already (count > 0). */
unsigned range_kinds(struct chk *c, uint64_t off, uint64_t len);
/* Stored refcount; 1 when unknown (its refcount block is unusable). */
int stored_get(struct chk *c, uint64_t cluster, uint64_t *v);
/* Set a stored refcount through the cache (refcount block must be usable). */
int stored_set(struct chk *c, uint64_t cluster, uint64_t v);
/* Is the refcount block for table index bi usable for writes? */
bool refblock_usable(struct chk *c, uint64_t bi);
bool is_detached(struct chk *c, uint64_t bi);
void detach_refblock(struct chk *c, uint64_t bi);
/* Before the first write of a repair: set the dirty bit (v3). */
int begin_writes(struct chk *c);
/* Guest range of L1 index i / L2 entry j (of sn, -1 active) into p. */
void guest_l1(struct chk *c, struct pctx *p, int64_t sn, uint64_t i);
void guest_l2(struct chk *c, struct pctx *p, int64_t sn, uint64_t i, uint64_t j);
int check_io_error(struct chk *c, int ret, const char *what, uint64_t off);
/* Progress: done clusters more are gone through, total more are to come. */
void check_progress(struct chk *c, uint64_t done, uint64_t total);

/* ---- check_meta.c: the passes over fixed metadata ---- */
int pass_snapshots(struct chk *c);
int pass_fixed(struct chk *c);
int pass_mark_refblocks(struct chk *c);
int pass_refblocks(struct chk *c);
/* What metadata [off, off+len) lies on, for messages. */
const char *metadata_name(struct chk *c, uint64_t off, uint64_t len);

/* ---- check_walk.c: the passes over the guest mapping ---- */
int pass_l2_tables(struct chk *c);
int pass_data(struct chk *c);
int pass_copied(struct chk *c);
/* Find the guest owners of the clusters in c->want (sorted). */
int find_owners(struct chk *c);
/* Read the L1 table of snapshot sn (or -1: active, from memory). */
int load_l1(struct chk *c, int64_t sn, uint64_t **l1, uint32_t *n);
int write_l1_entry(struct chk *c, int64_t sn, uint32_t i, uint64_t v);
/* An L2 table: through the cache when it can be, else into c->buf. */
int l2_get(struct chk *c, uint64_t off, uint8_t **t, bool *cached);
void l2_put(struct chk *c, uint8_t **t, bool cached);

/* ---- check_repair.c: repairs that allocate ---- */
int defer(struct chk *c, const struct deferred *d);
int run_deferred(struct chk *c);
int write_snapshot_table(struct chk *c);
int write_new_l1(struct chk *c);
int rebuild_refcounts(struct chk *c);

#endif
