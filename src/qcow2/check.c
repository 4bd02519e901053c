/*
 * check.c - THE refcount checker: the table of passes and the order they
 * run in, the one array of expected refcounts, reading and writing stored
 * refcounts, the comparison of the two, and the repair loop:
 *
 *   count (the passes below; structural repairs happen as they are found)
 *   -> repairs that need free clusters (copies, a new snapshot table),
 *      then count again
 *   -> compare stored and expected refcounts (fix in place, or rebuild the
 *      whole refcount structure and count again)
 *   -> OFLAG_COPIED -> flush -> clear the dirty and corrupt bits.
 *
 * Memory: one uint16_t per host cluster (plus a side table for counts that
 * do not fit), a cluster or two of buffers, and the engine's caches.
 *
 * Must not: print (problem.c reports through the callback); write anything
 * unless repairing; read a table through the cache at an offset it has not
 * validated.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

/*
 * The counting passes, in order. Each names what it checks and what it
 * hands on to the next.
 */
static const struct pass {
    const char *name;
    int (*run)(struct chk *c);
} count_passes[] = {
    /* Snapshot table entries and their L1 offsets and sizes; entries that
     * cannot be used are dropped. Hands on q->snapshots. */
    { "snapshot table", pass_snapshots },
    /* Header, encryption header, refcount table, snapshot table, L1 tables,
     * bitmap directory, tables and data: counted, overlaps found. */
    { "fixed metadata", pass_fixed },
    /* Refcount table entries: bad ones found; good blocks marked (not yet
     * counted) so an L2 table on one shows in the next pass. */
    { "refcount table", pass_mark_refblocks },
    /* L1 entries: every L2 table counted; entries that cannot be followed
     * are dropped. Hands on L1 tables that point at real L2 tables. */
    { "L2 tables", pass_l2_tables },
    /* L2 entries: data and compressed clusters counted, bad entries fixed,
     * data on metadata queued for copying; allocation statistics. */
    { "data clusters", pass_data },
    /* Refcount blocks counted last, as qemu does, so a shared one shows. */
    { "refcount blocks", pass_refblocks },
};

/* ---- the expected refcount array ---------------------------------- */

static struct rc_big *big_find(struct chk *c, uint64_t i, size_t *pos)
{
    size_t lo = 0, hi = c->nbig;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->big[mid].cluster < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return lo < c->nbig && c->big[lo].cluster == i ? &c->big[lo] : NULL;
}

int rc_grow(struct chk *c, uint64_t n)
{
    if (n <= c->nb)
        return 0;
    if (n > c->cap) {
        uint64_t cap = MAX(n, c->cap + c->cap / 8 + 64);
        uint16_t *nr;
        if (cap > (SIZE_MAX / sizeof(*nr)))
            return -ENOMEM;
        nr = realloc(c->rc, (size_t)cap * sizeof(*nr));
        if (!nr)
            return err_set(-ENOMEM, "out of memory for the refcounts of %llu clusters",
                           (unsigned long long)cap);
        memset(nr + c->cap, 0, (size_t)(cap - c->cap) * sizeof(*nr));
        c->rc = nr;
        c->cap = cap;
    }
    c->nb = n;
    return 0;
}

uint64_t rc_get(struct chk *c, uint64_t i)
{
    size_t pos;
    uint64_t v;

    if (i >= c->nb)
        return 0;
    v = c->rc[i] & RC_COUNT_MAX;
    if (v < RC_COUNT_MAX)
        return v;
    {
        struct rc_big *b = big_find(c, i, &pos);
        return b ? b->count : RC_COUNT_MAX;
    }
}

int rc_set(struct chk *c, uint64_t i, uint64_t v)
{
    size_t pos;
    int ret;

    ret = rc_grow(c, i + 1);
    if (ret < 0)
        return ret;
    {
        struct rc_big *b = big_find(c, i, &pos);
        if (v < RC_COUNT_MAX) {
            if (b) {
                memmove(&c->big[pos], &c->big[pos + 1], (c->nbig - pos - 1) * sizeof(*c->big));
                c->nbig--;
            }
            c->rc[i] = (uint16_t)((c->rc[i] & ~RC_COUNT_MAX) | v);
            return 0;
        }
        c->rc[i] |= RC_COUNT_MAX;
        if (b) {
            b->count = v;
            return 0;
        }
        if (c->nbig == c->capbig) {
            size_t cap = c->capbig ? c->capbig * 2 : 64;
            void *nb = realloc(c->big, cap * sizeof(*c->big));
            if (!nb)
                return -ENOMEM;
            c->big = nb;
            c->capbig = cap;
        }
        memmove(&c->big[pos + 1], &c->big[pos], (c->nbig - pos) * sizeof(*c->big));
        c->big[pos].cluster = i;
        c->big[pos].count = v;
        c->nbig++;
    }
    return 0;
}

unsigned rc_kind(struct chk *c, uint64_t i)
{
    return i < c->nb ? c->rc[i] >> RC_KIND_SHIFT : K_DATA;
}

void rc_set_kind(struct chk *c, uint64_t i, unsigned kind)
{
    if (i < c->nb)
        c->rc[i] = (uint16_t)((c->rc[i] & RC_COUNT_MAX) | kind << RC_KIND_SHIFT);
}

bool past_eof(struct chk *c, uint64_t off, uint64_t len)
{
    uint64_t fs = c->file_size, cs = c->q->cluster_size;

    /* qemu: offset + size - file_length >= cluster_size */
    if (off >= fs)
        return off - fs >= cs || len >= cs - (off - fs);
    return len > fs - off && len - (fs - off) >= cs;
}

int count_ref(struct chk *c, uint64_t off, uint64_t len, unsigned kind,
              enum qcow2_problem ovf, const struct pctx *p)
{
    const struct qcow2 *q = c->q;
    uint64_t first, last;
    int flags = 0, ret;

    if (!len)
        return 0;
    if (past_eof(c, off, len))
        return REF_EOF;
    first = off >> q->cluster_bits;
    last = (off + len - 1) >> q->cluster_bits;
    for (uint64_t k = first; k <= last; k++) {
        uint64_t v = rc_get(c, k);

        if (v == q->refcount_max) {
            struct pctx pp = *p;
            pp.offset = k << q->cluster_bits;
            flags |= REF_OVERFLOW;
            if (problem(c, ovf, &pp))
                flags |= REF_FIX;
            continue;
        }
        ret = rc_set(c, k, v + 1);
        if (ret < 0)
            return ret;
        if (v == 0 && rc_kind(c, k) == K_DATA)
            rc_set_kind(c, k, kind);
    }
    return flags;
}

unsigned range_kinds(struct chk *c, uint64_t off, uint64_t len)
{
    const struct qcow2 *q = c->q;
    unsigned mask = 0;

    if (!len)
        return 0;
    for (uint64_t k = off >> q->cluster_bits; k <= (off + len - 1) >> q->cluster_bits; k++) {
        if (k >= c->nb)
            break;
        if (rc_get(c, k) || rc_kind(c, k) != K_DATA)
            mask |= 1u << rc_kind(c, k);
    }
    return mask;
}

/* ---- stored refcounts --------------------------------------------- */

bool is_detached(struct chk *c, uint64_t bi)
{
    return c->detached && (c->detached[bi / 8] & (1u << (bi % 8)));
}

void detach_refblock(struct chk *c, uint64_t bi)
{
    struct qcow2 *q = c->q;

    if (!c->write || !(c->fix & QCOW2_FIX_ERRORS) || bi >= q->reftable_size)
        return;
    if (!c->detached) {
        c->detached = xzalloc((size_t)DIV_ROUND_UP(q->reftable_size, 8));
        if (!c->detached)
            return;     /* the rebuild still happens; writes may be refused */
    }
    /* Forgotten in memory only, so no write is checked against it; the
     * rebuilt structure replaces it on disk. */
    if (q->reftable[bi] & REFT_OFFSET_MASK)
        qcow2_cache_discard(q->rc_cache, q->reftable[bi] & REFT_OFFSET_MASK);
    q->reftable[bi] = 0;
    c->detached[bi / 8] |= (uint8_t)(1u << (bi % 8));
    c->rebuild = true;
}

/* Where the refcount block of table index bi can be read: 0 none (all
 * zeros), 1 usable offset in *off, -1 unknown. */
static int block_state(struct chk *c, uint64_t bi, uint64_t *off)
{
    const struct qcow2 *q = c->q;

    *off = 0;
    if (bi >= q->reftable_size)
        return 0;
    if (is_detached(c, bi))
        return -1;
    *off = q->reftable[bi] & REFT_OFFSET_MASK;
    if (!*off)
        return 0;
    if (*off & (q->cluster_size - 1))
        return -1;
    return 1;
}

bool refblock_usable(struct chk *c, uint64_t bi)
{
    const struct qcow2 *q = c->q;
    uint64_t off;

    if (block_state(c, bi, &off) != 1 || (q->reftable[bi] & REFT_RESERVED_MASK))
        return false;
    if (off + q->cluster_size > c->file_size)
        return false;
    return rc_get(c, off >> q->cluster_bits) == 1;
}

/*
 * The refcount block of table index bi: *blk points at it (through the
 * cache, or a zeroed or padded private copy) until block_put. Returns 0,
 * 1 when there is no usable block (stored refcounts unknown), or -errno.
 */
static int block_get(struct chk *c, uint64_t bi, void **blk, bool *cached)
{
    struct qcow2 *q = c->q;
    uint64_t off;
    int st = block_state(c, bi, &off), ret;

    *cached = false;
    *blk = NULL;
    if (st < 0)
        return 1;
    if (st == 0 || off >= c->file_size) {
        memset(c->buf2, 0, q->cluster_size);    /* qemu reads zeros there */
        *blk = c->buf2;
        return 0;
    }
    if (off + q->cluster_size > c->file_size) {
        ret = qfile_pread_pad(q->file, c->buf2, q->cluster_size, off);
        if (ret < 0)
            return check_io_error(c, ret, "refcount block", off);
        *blk = c->buf2;
        return 0;
    }
    ret = qcow2_cache_get(q, q->rc_cache, off, blk);
    if (ret < 0)
        return check_io_error(c, ret, "refcount block", off);
    *cached = true;
    return 0;
}

static void block_put(struct chk *c, void **blk, bool cached)
{
    if (cached && *blk)
        qcow2_cache_put(c->q->rc_cache, blk);
    *blk = NULL;
}

int stored_get(struct chk *c, uint64_t cluster, uint64_t *v)
{
    const struct qcow2 *q = c->q;
    void *blk;
    bool cached;
    int ret;

    *v = 0;
    ret = block_get(c, cluster >> q->rb_bits, &blk, &cached);
    if (ret != 0)
        return ret < 0 ? ret : 1;
    *v = qcow2_rb_get(q, blk, cluster & ((1ULL << q->rb_bits) - 1));
    block_put(c, &blk, cached);
    return 0;
}

int stored_set(struct chk *c, uint64_t cluster, uint64_t v)
{
    struct qcow2 *q = c->q;
    uint64_t bi = cluster >> q->rb_bits;
    void *blk;
    int ret;

    if (!refblock_usable(c, bi))
        return -EINVAL;
    ret = begin_writes(c);
    if (ret < 0)
        return ret;
    ret = qcow2_cache_get(q, q->rc_cache, q->reftable[bi] & REFT_OFFSET_MASK, &blk);
    if (ret < 0)
        return ret;
    qcow2_rb_set(q, blk, cluster & ((1ULL << q->rb_bits) - 1), v);
    qcow2_cache_mark_dirty(q->rc_cache, blk);
    qcow2_cache_put(q->rc_cache, &blk);
    return 0;
}

int begin_writes(struct chk *c)
{
    struct qcow2 *q = c->q;

    if (!c->write)
        return -EROFS;
    if (c->began_writes)
        return 0;
    c->began_writes = true;
    /* A crash in the middle of a repair leaves the dirty bit: whoever opens
     * the image read-write next repairs it first. */
    if (q->meta.h.version >= 3 && !(q->meta.h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        c->set_dirty = true;
        return qcow2_set_incompat(q, QCOW2_INCOMPAT_DIRTY, true);
    }
    return 0;
}

void check_progress(struct chk *c, uint64_t done, uint64_t total)
{
    uint64_t cs = c->q->cluster_size;

    c->pdone += done;
    c->ptotal += total;
    if (c->o->progress)
        c->o->progress(c->o->progress_opaque, c->pdone * cs, MAX(c->pdone, c->ptotal) * cs);
}

int check_io_error(struct chk *c, int ret, const char *what, uint64_t off)
{
    struct pctx p = { .gsn = -1 };
    char msg[600];

    snprintf(msg, sizeof(msg), "could not read %s at offset %#llx: %s", what,
             (unsigned long long)off, err_msg(ret));
    p.str = msg;
    problem(c, PR_IO, &p);
    c->unsafe = true;       /* counts are incomplete now */
    return ret;
}

/* ---- guest ranges ------------------------------------------------- */

static uint64_t disk_size(struct chk *c, int64_t sn)
{
    const struct qcow2 *q = c->q;

    if (sn >= 0 && (uint64_t)sn < q->nb_snapshots && q->snapshots[sn].has_disk_size)
        return q->snapshots[sn].disk_size;
    return q->meta.h.size;
}

static void guest_range(struct chk *c, struct pctx *p, int64_t sn, uint64_t start, uint64_t len)
{
    uint64_t size = disk_size(c, sn);

    p->gsn = sn;
    p->has_guest = start < size;
    p->gstart = start;
    p->glen = p->has_guest ? MIN(len, size - start) : 0;
}

void guest_l1(struct chk *c, struct pctx *p, int64_t sn, uint64_t i)
{
    unsigned shift = c->q->cluster_bits + c->q->l2_bits;

    if (shift >= 64 || i >= (1ULL << (64 - shift)))
        p->has_guest = false;
    else
        guest_range(c, p, sn, i << shift, 1ULL << shift);
}

void guest_l2(struct chk *c, struct pctx *p, int64_t sn, uint64_t i, uint64_t j)
{
    const struct qcow2 *q = c->q;
    unsigned shift = q->cluster_bits + q->l2_bits;

    if (shift >= 64 || i >= (1ULL << (64 - shift)))
        p->has_guest = false;
    else
        guest_range(c, p, sn, (i << shift) + (j << q->cluster_bits), q->cluster_size);
}

/* ---- compare ------------------------------------------------------ */

static bool is_fresh(struct chk *c, uint64_t k)
{
    for (size_t i = 0; i < c->nfresh; i++)
        if (c->fresh[i] == k)
            return true;
    return false;
}

#define CHECK_MAX_OWNERS 4096

/* Clusters whose refcount is too low, so their guest owners can be named. */
static int collect_low(struct chk *c)
{
    const struct qcow2 *q = c->q;
    uint64_t per = 1ULL << q->rb_bits;
    int ret;

    c->nwant = 0;
    if (!c->o->report || c->quiet_unfixed)
        return 0;
    for (uint64_t bi = 0; bi * per < c->nb; bi++) {
        void *blk;
        bool cached;
        uint64_t end = MIN(c->nb, (bi + 1) * per);

        ret = block_get(c, bi, &blk, &cached);
        if (ret < 0)
            return ret;
        if (ret > 0)
            continue;
        for (uint64_t k = bi * per; k < end && c->nwant < CHECK_MAX_OWNERS; k++) {
            uint64_t e = rc_get(c, k);
            if (e && qcow2_rb_get(q, blk, k - bi * per) < e) {
                if (!c->want) {
                    c->want = malloc(CHECK_MAX_OWNERS * sizeof(*c->want));
                    c->owner = malloc(CHECK_MAX_OWNERS * sizeof(*c->owner));
                    if (!c->want || !c->owner) {
                        block_put(c, &blk, cached);
                        return -ENOMEM;
                    }
                }
                c->want[c->nwant++] = k;
            }
        }
        block_put(c, &blk, cached);
    }
    if (!c->nwant)
        return 0;
    for (size_t i = 0; i < c->nwant; i++)
        c->owner[i] = (struct pctx){ .gsn = -1 };
    return find_owners(c);
}

static void owner_of(struct chk *c, uint64_t k, struct pctx *p)
{
    size_t lo = 0, hi = c->nwant;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->want[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < c->nwant && c->want[lo] == k && c->owner[lo].has_guest) {
        p->has_guest = true;
        p->gsn = c->owner[lo].gsn;
        p->gstart = c->owner[lo].gstart;
        p->glen = c->owner[lo].glen;
        p->gmore = c->owner[lo].gmore;
    }
}

/*
 * Stored against expected, cluster by cluster (qemu's compare_refcounts):
 * too high is a leak, too low a corruption. Repairs go into the refcount
 * block in place; a cluster no usable block covers needs a rebuild.
 */
static int pass_compare(struct chk *c, uint64_t *highest)
{
    const struct qcow2 *q = c->q;
    uint64_t per = 1ULL << q->rb_bits;
    int ret;

    *highest = 0;
    ret = collect_low(c);
    if (ret < 0)
        return ret;
    for (uint64_t bi = 0; bi * per < c->nb; bi++) {
        uint64_t end = MIN(c->nb, (bi + 1) * per);
        bool usable = refblock_usable(c, bi), cached;
        void *blk;

        ret = block_get(c, bi, &blk, &cached);
        if (ret < 0)
            return ret;
        check_progress(c, 1, 0);
        for (uint64_t k = bi * per; k < end; k++) {
            uint64_t want = rc_get(c, k), have;
            enum qcow2_problem code;
            struct pctx p = { .gsn = -1 };

            if (!blk) {                     /* unknown: the rebuild decides */
                if (want)
                    *highest = k;
                continue;
            }
            have = qcow2_rb_get(q, blk, k - bi * per);
            if (have || want)
                *highest = k;
            if (have == want)
                continue;
            if (want > have && c->write && is_fresh(c, k)) {
                /* Allocated by this repair: not a finding of the image. */
                if (usable) {
                    block_put(c, &blk, cached);
                    ret = stored_set(c, k, want);
                    if (ret < 0)
                        return ret;
                    ret = block_get(c, bi, &blk, &cached);
                    if (ret != 0)
                        return ret < 0 ? ret : -EIO;
                } else {
                    c->rebuild = true;
                }
                continue;
            }
            code = have > want ? PR_REFCOUNT_LEAK : have ? PR_REFCOUNT_LOW : PR_REFCOUNT_ZERO;
            p.cluster = k;
            p.refcount = have;
            p.reference = want;
            if (code != PR_REFCOUNT_LEAK)
                owner_of(c, k, &p);
            if (code != PR_REFCOUNT_LEAK && !usable && !(c->fix & QCOW2_FIX_ERRORS))
                c->rebuild = true;          /* qemu's rule, for the note */
            if (!problem(c, code, &p))
                continue;
            if (usable && !(c->rebuild && (c->fix & QCOW2_FIX_ERRORS))) {
                block_put(c, &blk, cached);
                ret = stored_set(c, k, want);
                if (ret == 0)
                    ret = block_get(c, bi, &blk, &cached);
                if (ret != 0) {
                    problem_not_fixed(c, code);
                    if (ret < 0)
                        return ret;
                    return -EIO;
                }
            } else if (c->fix & QCOW2_FIX_ERRORS) {
                c->rebuild = true;              /* fixed by the rebuild */
            } else {
                problem_not_fixed(c, code);     /* leaks mode, block unusable */
            }
        }
        block_put(c, &blk, cached);
    }
    return 0;
}

/* ---- the driver --------------------------------------------------- */

/* Progress: the L1 entries one count walks (active and snapshots), and the
 * refcount blocks one comparison reads. */
static uint64_t walk_units(const struct chk *c)
{
    uint64_t n = c->q->l1_size;

    for (uint32_t s = 0; s < c->q->nb_snapshots; s++)
        n += c->q->snapshots[s].l1_size;
    return n;
}

static uint64_t compare_units(const struct chk *c, uint64_t file_size)
{
    const struct qcow2 *q = c->q;

    return DIV_ROUND_UP(DIV_ROUND_UP(file_size, q->cluster_size), 1ULL << q->rb_bits);
}

static int count_all(struct chk *c)
{
    struct qcow2 *q = c->q;
    struct qcow2_check_result *r = c->r;
    int ret;

    ret = qfile_size(q->file, &c->file_size);
    if (ret < 0)
        return ret;
    c->nb = 0;
    if (c->rc)
        memset(c->rc, 0, (size_t)c->cap * sizeof(*c->rc));
    memset(c->copied_ok, 0, c->q->l1_size / 8 + 1);
    c->nbig = 0;
    ret = rc_grow(c, DIV_ROUND_UP(c->file_size, q->cluster_size));
    if (ret < 0)
        return ret;
    c->alloc_hint = 1;
    c->rebuild = c->detached != NULL;
    c->unsafe = false;
    c->ndef = 0;
    c->sn_dirty = false;
    c->l1_new = false;
    r->allocated_clusters = r->fragmented_clusters = r->compressed_clusters = 0;
    for (size_t i = 0; i < ARRAY_SIZE(count_passes); i++) {
        ret = count_passes[i].run(c);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int finish(struct chk *c)
{
    struct qcow2 *q = c->q;
    struct qcow2_check_result *r = c->r;
    uint64_t bits = q->meta.h.incompatible_features &
                    (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
    int ret;

    if (!c->write)
        return 0;
    ret = qcow2_flush(q);
    if (ret < 0)
        return ret;
    /* As qemu: an image with nothing left to repair is clean and consistent.
     * With corruptions left, the dirty bit this repair set goes again. */
    if (r->check_errors)
        return 0;
    if (r->corruptions)
        bits &= c->set_dirty ? QCOW2_INCOMPAT_DIRTY : 0;
    if (bits)
        ret = qcow2_set_incompat(q, bits, false);
    return ret;
}

int qcow2_check(struct qcow2 *q, const struct qcow2_check_opts *o,
                struct qcow2_check_result *r)
{
    struct chk c = { .q = q, .o = o, .r = r };
    uint64_t highest = 0;
    int ret;

    memset(r, 0, sizeof(*r));
    c.fix = o->fix;
    c.write = o->fix && !o->dry_run;
    if (c.write && !q->writable)
        return err_set(-EBADF, "the image is not open for writing");
    r->total_clusters = qcow2_size_to_clusters(q, q->meta.h.size);
    c.buf = malloc(q->cluster_size);
    c.buf2 = malloc(2 * q->cluster_size + 512);
    c.def = malloc(CHECK_MAX_DEFERRED * sizeof(*c.def));
    c.copied_ok = calloc(q->l1_size / 8 + 1, 1);
    if (!c.buf || !c.buf2 || !c.def || !c.copied_ok) {
        ret = -ENOMEM;
        goto out;
    }

    /* Progress: one count, one comparison, the OFLAG_COPIED pass; a repair
     * that needs another round adds its work when it starts. */
    if (o->progress && qfile_size(q->file, &c.file_size) == 0)
        check_progress(&c, 0, walk_units(&c) + compare_units(&c, c.file_size) + q->l1_size);

    /* Count; repairs that need free clusters wait until all are counted. */
    for (c.round = 0;; c.round++) {
        if (c.round > 0)
            check_progress(&c, 0, walk_units(&c));
        ret = count_all(&c);
        if (ret < 0)
            goto out;
        if (!c.write || c.unsafe || (!c.ndef && !c.sn_dirty && !c.l1_new) ||
            c.round + 1 >= CHECK_MAX_ROUNDS)
            break;
        ret = qcow2_flush(q);
        if (ret == 0 && c.sn_dirty)
            ret = write_snapshot_table(&c);
        if (ret == 0 && c.l1_new)
            ret = write_new_l1(&c);
        if (ret == 0)
            ret = run_deferred(&c);
        if (ret < 0)
            goto out;
        c.quiet_unfixed = true;     /* said once already */
    }

    /* Structural repairs reach the disk before any refcount goes down. */
    if (c.write) {
        ret = qcow2_flush(q);
        if (ret < 0)
            goto out;
    }
    ret = pass_compare(&c, &highest);
    if (ret < 0)
        goto out;
    if (c.rebuild && c.write && (c.fix & QCOW2_FIX_ERRORS) && !c.unsafe) {
        problem(&c, PR_REBUILD, NULL);
        ret = rebuild_refcounts(&c);
        if (ret < 0)
            goto out;
        free(c.detached);
        c.detached = NULL;
        c.quiet_unfixed = true;
        c.round++;
        check_progress(&c, 0, walk_units(&c) + compare_units(&c, c.file_size));
        ret = count_all(&c);
        if (ret == 0)
            ret = pass_compare(&c, &highest);
        if (ret < 0)
            goto out;
    } else if (c.rebuild && c.write && !(c.fix & QCOW2_FIX_ERRORS)) {
        problem(&c, PR_NEED_REBUILD, NULL);
    }

    /* COPIED flags follow the refcounts, which are on disk first. */
    if (c.write) {
        ret = qcow2_cache_flush(q, q->rc_cache);
        if (ret < 0)
            goto out;
    }
    ret = pass_copied(&c);
    if (ret < 0)
        goto out;
    r->image_end_offset = (highest + 1) << q->cluster_bits;
    ret = finish(&c);
out:
    free(c.rc);
    free(c.big);
    free(c.detached);
    free(c.def);
    free(c.olx);
    free(c.fresh);
    free(c.want);
    free(c.owner);
    free(c.buf);
    free(c.buf2);
    free(c.dbuf);
    free(c.sn_skip);
    free(c.copied_ok);
    if (ret < 0 && !r->check_errors)
        r->check_errors++;
    return ret;
}

int qcow2_check_repair_dirty(struct qcow2 *q)
{
    struct qcow2_check_opts o = { .fix = QCOW2_FIX_ALL };
    struct qcow2_check_result r;
    int ret = qcow2_check(q, &o, &r);

    if (ret == 0 && r.check_errors)
        ret = -EIO;
    if (ret < 0) {
        char inner[400];
        snprintf(inner, sizeof(inner), "%s", err_msg(ret));
        return err_set(ret, "Could not repair dirty image: %s", inner);
    }
    return 0;
}
