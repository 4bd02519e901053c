/*
 * check_walk.c - the checker's passes over the guest mapping (their order
 * and what each hands on is in check.c's table): L1 entries, L2 entries,
 * the OFLAG_COPIED pass, and the walk that names the guest owners of a
 * cluster.
 * Every finding is raised through problem(); the repair sits right after
 * the detection. Counting follows qemu-img's rules, so a plain check
 * reports qemu-img's numbers; repairs go further.
 *
 * Must not: allocate clusters (check_repair.c does, once all are counted);
 * write anything when c->write is false.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

enum { T_UNALLOC, T_ZERO_PLAIN, T_ZERO_ALLOC, T_NORMAL, T_COMPRESSED };

/* qemu's cluster types, from the entry alone. */
static int ctype(const struct qcow2 *q, uint64_t e)
{
    if (e & QCOW_OFLAG_COMPRESSED)
        return T_COMPRESSED;
    if ((e & QCOW_OFLAG_ZERO) && !q->extl2)
        return (e & L2E_OFFSET_MASK) ? T_ZERO_ALLOC : T_ZERO_PLAIN;
    return (e & L2E_OFFSET_MASK) ? T_NORMAL : T_UNALLOC;
}

/* ---- L1 tables ---------------------------------------------------- */

int load_l1(struct chk *c, int64_t sn, uint64_t **l1, uint32_t *n)
{
    struct qcow2 *q = c->q;
    const struct qcow2_snapshot *s;
    uint64_t *t, fs, want;
    int ret;

    if (sn < 0) {
        *l1 = q->l1;
        *n = q->l1_size;
        return 0;
    }
    s = &q->snapshots[sn];
    *l1 = NULL;
    *n = 0;
    /* Entries past the end of the file read as zeros (unused): load only
     * the part inside it, so a lying l1_size costs nothing. */
    ret = qfile_size(q->file, &fs);
    if (ret < 0)
        return check_io_error(c, ret, "image file", 0);
    if (s->l1_table_offset >= fs)
        return 0;
    want = MIN((uint64_t)s->l1_size, DIV_ROUND_UP(fs - s->l1_table_offset, 8));
    if (!want)
        return 0;
    t = malloc(want * 8);
    if (!t)
        return -ENOMEM;
    ret = qfile_pread_pad(q->file, t, want * 8, s->l1_table_offset);
    if (ret < 0) {
        free(t);
        return check_io_error(c, ret, "snapshot L1 table", s->l1_table_offset);
    }
    for (uint64_t i = 0; i < want; i++)
        t[i] = be64(&t[i]);
    *l1 = t;
    *n = (uint32_t)want;
    return 0;
}

static void free_l1(int64_t sn, uint64_t *l1)
{
    if (sn >= 0)
        free(l1);
}

int write_l1_entry(struct chk *c, int64_t sn, uint32_t i, uint64_t v)
{
    struct qcow2 *q = c->q;
    uint8_t be[8];
    int ret = begin_writes(c);

    if (ret < 0)
        return ret;
    if (sn < 0) {
        q->l1[i] = v;
        return qcow2_write_l1(q, i, i + 1);
    }
    put_be64(be, v);
    return qcow2_write_metadata(q, QCOW2_OL_INACTIVE_L1,
                                q->snapshots[sn].l1_table_offset + (uint64_t)i * 8, be, 8);
}

/* Change entry i of a loaded L1 table (l1 is q->l1 for the active one). */
static int set_l1(struct chk *c, int64_t sn, uint64_t *l1, uint32_t i, uint64_t v)
{
    l1[i] = v;
    return write_l1_entry(c, sn, i, v);
}

/* Run fn over the active L1 table, then every snapshot's. */
static int for_each_l1(struct chk *c, int (*fn)(struct chk *, int64_t, uint64_t *, uint32_t))
{
    int ret = fn(c, -1, c->q->l1, c->q->l1_size);

    for (uint32_t s = 0; ret >= 0 && s < c->q->nb_snapshots; s++) {
        uint64_t *l1;
        uint32_t n;

        if (c->sn_skip && c->sn_skip[s])
            continue;
        ret = load_l1(c, s, &l1, &n);
        if (ret < 0) {
            if (c->unsafe)
                ret = 0;    /* reported; go on with the others */
            continue;
        }
        ret = fn(c, s, l1, n);
        free_l1(s, l1);
    }
    return ret;
}

/* ---- L2 tables ---------------------------------------------------- */

int l2_get(struct chk *c, uint64_t off, uint8_t **t, bool *cached)
{
    struct qcow2 *q = c->q;
    int ret;

    if (off && !(off & (q->cluster_size - 1)) && off + q->cluster_size <= c->file_size) {
        ret = qcow2_cache_get(q, q->l2_cache, off, (void **)t);
        if (ret < 0)
            return check_io_error(c, ret, "L2 table", off);
        *cached = true;
        return 0;
    }
    /* As qemu reads it: unaligned, or zeros past the end of the file. */
    ret = qfile_pread_pad(q->file, c->buf, q->cluster_size, off);
    if (ret < 0)
        return check_io_error(c, ret, "L2 table", off);
    *t = c->buf;
    *cached = false;
    return 0;
}

void l2_put(struct chk *c, uint8_t **t, bool cached)
{
    if (cached)
        qcow2_cache_put(c->q->l2_cache, (void **)t);
    *t = NULL;
}

static uint64_t l2e(const struct qcow2 *q, const uint8_t *t, uint64_t j)
{
    return be64(t + j * q->l2_entry_size);
}

static uint64_t l2b(const struct qcow2 *q, const uint8_t *t, uint64_t j)
{
    return q->extl2 ? be64(t + j * 16 + 8) : 0;
}

/*
 * The first entry at or after j that is not all zeros (q->l2_entries if
 * none). Most entries of a sparse image's tables are empty: skipping them
 * four words at a time keeps the walks at memory speed.
 */
static uint64_t next_used(const struct qcow2 *q, const uint8_t *t, uint64_t j)
{
    uint64_t words = q->l2_entries * q->l2_entry_size / 8;
    uint64_t k = j * q->l2_entry_size / 8, w[4];

    for (; k + 4 <= words; k += 4) {
        memcpy(w, t + k * 8, sizeof(w));
        if (w[0] | w[1] | w[2] | w[3])
            break;
    }
    for (; k < words; k++) {
        memcpy(w, t + k * 8, 8);
        if (w[0])
            break;
    }
    return k * 8 / q->l2_entry_size;
}

/* ---- pass: L1 entries --------------------------------------------- */

/* The refcount table index whose block is at off, or -1. */
static int64_t refblock_at(struct chk *c, uint64_t off)
{
    for (uint64_t i = 0; i < c->q->reftable_size; i++)
        if ((c->q->reftable[i] & REFT_OFFSET_MASK) == off)
            return (int64_t)i;
    return -1;
}

static int l2_tables_of(struct chk *c, int64_t sn, uint64_t *l1, uint32_t n)
{
    struct qcow2 *q = c->q;
    uint64_t cs = q->cluster_size;
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = l1[i], l2;
        struct pctx p = { .gsn = -1 };
        unsigned kinds;
        int64_t bi = -1;
        int f;

        if (!e)
            continue;
        p.index = i;
        p.entry = e;
        guest_l1(c, &p, sn, i);
        if (e & L1E_RESERVED_MASK) {
            if (problem(c, PR_L1_RESERVED, &p)) {
                e &= ~L1E_RESERVED_MASK;
                ret = set_l1(c, sn, l1, i, e);
                if (ret < 0)
                    return ret;
            }
        }
        l2 = e & L1E_OFFSET_MASK;
        p.offset = l2;
        p.size = cs;
        if ((l2 & (cs - 1)) && problem(c, PR_L1_UNALIGNED, &p)) {
            ret = set_l1(c, sn, l1, i, 0);
            if (ret < 0)
                return ret;
            continue;
        }
        if (past_eof(c, l2, cs)) {
            /* qemu counts nothing and reads zeros: nothing to walk. */
            if (problem(c, PR_L1_PAST_EOF, &p)) {
                ret = set_l1(c, sn, l1, i, 0);
                if (ret < 0)
                    return ret;
            }
            continue;
        }
        kinds = range_kinds(c, l2, cs);
        if (kinds & (1u << K_FIXED)) {
            p.str = metadata_name(c, l2, cs);
            if (problem(c, PR_L1_ALIAS, &p)) {
                ret = set_l1(c, sn, l1, i, 0);
                if (ret < 0)
                    return ret;
                continue;
            }
        } else if ((kinds & (1u << K_REFBLOCK)) && (bi = refblock_at(c, l2)) >= 0) {
            p.index = bi;
            if (problem(c, PR_L2_OVER_REFBLOCK, &p))
                detach_refblock(c, (uint64_t)bi);
            else
                bi = -1;
            p.index = i;
        }
        if (c->write && (c->fix & QCOW2_FIX_ERRORS) && l2 + cs > c->file_size) {
            /* The table's tail lies past the end: make it readable zeros. */
            ret = begin_writes(c);
            if (ret == 0)
                ret = qfile_truncate(q->file, l2 + cs);
            if (ret < 0)
                return ret;
            c->file_size = l2 + cs;
            ret = rc_grow(c, DIV_ROUND_UP(c->file_size, q->cluster_size));
            if (ret < 0)
                return ret;
        }
        f = count_ref(c, l2, cs, K_L2, PR_REF_OVERFLOW, &p);
        if (f < 0)
            return f;
        if (bi >= 0)
            rc_set_kind(c, l2 >> q->cluster_bits, K_L2);
    }
    return 0;
}

/* Every L1 entry: its L2 table counted; entries that cannot be followed dropped. */
int pass_l2_tables(struct chk *c)
{
    return for_each_l1(c, l2_tables_of);
}

/* ---- pass: L2 entries --------------------------------------------- */

/* A dropped entry reads as zeros (v3) or falls through (v2, no zero flag). */
static void zero_entry(const struct qcow2 *q, uint64_t *e, uint64_t *b)
{
    if (q->extl2) {
        *e = 0;
        *b = 0xffffffff00000000ULL;
    } else {
        *e = q->meta.h.version >= 3 ? QCOW_OFLAG_ZERO : 0;
        *b = 0;
    }
}

static void deep_read(struct chk *c, uint64_t off, uint64_t len, bool compressed,
                      const struct pctx *p)
{
    struct qcow2 *q = c->q;
    struct pctx pp = *p;
    int ret;

    if (!c->dbuf) {
        c->dbuf = malloc(3 * q->cluster_size + 512);
        if (!c->dbuf)
            return;
    }
    pp.offset = off;
    pp.size = len;
    ret = qfile_pread_pad(q->data_file, c->dbuf, (size_t)len, off);
    if (ret < 0) {
        pp.str = err_msg(ret);
        problem(c, PR_DEEP_UNREADABLE, &pp);
        return;
    }
    if (compressed &&
        qcow2_decompress(q, c->dbuf, (size_t)len, c->dbuf + 2 * q->cluster_size + 512) < 0)
        problem(c, PR_DEEP_DECOMPRESS, &pp);
}

/* Data on metadata, or one reference too many: copied once all is counted.
 * (A full queue is no loss: the next round finds the rest again.) */
static void defer_copy(struct chk *c, uint64_t l2, uint64_t j, uint64_t e)
{
    struct deferred d = { .table = l2, .index = j, .old = e };

    defer(c, &d);
}

static int walk_l2(struct chk *c, int64_t sn, uint32_t i, uint64_t l2, uint8_t *t,
                   bool cached, bool *dirty)
{
    struct qcow2 *q = c->q;
    struct qcow2_check_result *r = c->r;
    uint64_t cs = q->cluster_size, next = 0;
    bool active = sn < 0, can_fix = cached;

    for (uint64_t j = next_used(q, t, 0); j < q->l2_entries; j = next_used(q, t, j + 1)) {
        /* e, b as qemu reads them; ne, nb what the table gets back. */
        uint64_t e = l2e(q, t, j), b = l2b(q, t, j), ne = e, nb = b;
        int type = ctype(q, e), f;
        struct pctx p = { .gsn = -1, .index = (int64_t)j };

        guest_l2(c, &p, sn, i, j);
        p.entry = e;
        if (type != T_COMPRESSED && (e & L2E_STD_RESERVED_MASK)) {
            if (problem(c, PR_L2_RESERVED, &p) && can_fix)
                ne &= ~L2E_STD_RESERVED_MASK;
        }
        switch (type) {
        case T_COMPRESSED: {
            uint64_t coff, clen;

            if (e & QCOW_OFLAG_COPIED) {
                p.offset = e & ((1ULL << qcow2_csize_shift(q->cluster_bits)) - 1);
                if (problem(c, PR_COMPRESSED_COPIED, &p) && can_fix)
                    ne &= ~QCOW_OFLAG_COPIED;
                e &= ~QCOW_OFLAG_COPIED;
            }
            if (b) {
                if (!(problem(c, PR_COMPRESSED_BITMAP, &p) && can_fix))
                    break;      /* qemu does not count it */
                nb = 0;
            }
            qcow2_compressed_extent(q, e, &coff, &clen);
            p.offset = coff;
            p.size = clen;
            if (past_eof(c, coff, clen)) {
                if (problem(c, PR_COMPRESSED_PAST_EOF, &p) && can_fix) {
                    zero_entry(q, &ne, &nb);
                    break;
                }
            } else {
                if (range_kinds(c, coff, clen) & ~(1u << K_DATA)) {
                    p.str = metadata_name(c, coff, clen);
                    if (problem(c, PR_DATA_ALIAS, &p) && can_fix)
                        defer_copy(c, l2, j, ne);
                }
                f = count_ref(c, coff, clen, K_DATA, PR_DATA_OVERFLOW, &p);
                if (f < 0)
                    return f;
                if ((f & REF_FIX) && can_fix)
                    defer_copy(c, l2, j, ne);
                if (c->o->deep)
                    deep_read(c, coff, clen, true, &p);
            }
            if (active) {
                r->allocated_clusters++;
                r->compressed_clusters++;
                r->fragmented_clusters++;   /* qemu: compressed clusters are */
            }
            break;
        }
        case T_ZERO_ALLOC:
        case T_NORMAL: {
            uint64_t off = e & L2E_OFFSET_MASK;

            p.offset = off;
            p.size = cs;
            if ((b >> 32) & b) {
                if (problem(c, PR_EXTL2_ALLOC_ZERO, &p) && can_fix)
                    nb &= ~((b & 0xffffffffULL) << 32);
            }
            if (off & (cs - 1)) {
                bool data = q->extl2 ? (b & 0xffffffffULL) : !(e & QCOW_OFLAG_ZERO);
                if (problem(c, data ? PR_L2_UNALIGNED_DATA : PR_L2_UNALIGNED_ZERO, &p) &&
                    can_fix) {
                    zero_entry(q, &ne, &nb);
                    break;
                }
            }
            if (past_eof(c, off, cs)) {
                if (problem(c, PR_L2_PAST_EOF, &p) && can_fix) {
                    zero_entry(q, &ne, &nb);
                    break;
                }
            } else {
                if (range_kinds(c, off, cs) & ~(1u << K_DATA)) {
                    p.str = metadata_name(c, off, cs);
                    if (problem(c, PR_DATA_ALIAS, &p) && can_fix)
                        defer_copy(c, l2, j, ne);
                }
                f = count_ref(c, off, cs, K_DATA, PR_DATA_OVERFLOW, &p);
                if (f < 0)
                    return f;
                if ((f & REF_FIX) && can_fix)
                    defer_copy(c, l2, j, ne);
                if (c->o->deep && type == T_NORMAL)
                    deep_read(c, off, cs, false, &p);
            }
            if (active) {
                r->allocated_clusters++;
                if (next && off != next)
                    r->fragmented_clusters++;
                next = off + cs;
            }
            break;
        }
        case T_ZERO_PLAIN:
            break;
        case T_UNALLOC:
            if (b & 0xffffffffULL) {
                if (problem(c, PR_EXTL2_UNALLOC_BITMAP, &p) && can_fix)
                    nb &= ~0xffffffffULL;
            }
            break;
        }
        if (ne != l2e(q, t, j) || nb != l2b(q, t, j)) {
            put_be64(t + j * q->l2_entry_size, ne);
            if (q->extl2)
                put_be64(t + j * 16 + 8, nb);
            *dirty = true;
        }
    }
    return 0;
}

/*
 * Does every entry of an active L2 table carry OFLAG_COPIED exactly when
 * its stored refcount is 1? Asked while the table is in hand, so that the
 * COPIED pass need not read it again when nothing was written since.
 */
static bool copied_agree(struct chk *c, const uint8_t *t)
{
    struct qcow2 *q = c->q;

    for (uint64_t j = next_used(q, t, 0); j < q->l2_entries; j = next_used(q, t, j + 1)) {
        uint64_t e = l2e(q, t, j), rc;
        int type = ctype(q, e);

        if (type != T_NORMAL && type != T_ZERO_ALLOC)
            continue;
        if (stored_get(c, (e & L2E_OFFSET_MASK) >> q->cluster_bits, &rc) != 0 ||
            (rc == 1) != !!(e & QCOW_OFLAG_COPIED))
            return false;
    }
    return true;
}

static int data_of(struct chk *c, int64_t sn, uint64_t *l1, uint32_t n)
{
    struct qcow2 *q = c->q;
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        uint8_t *t;
        bool cached, dirty = false;

        check_progress(c, 1, 0);
        if (!l1[i] || past_eof(c, l2, q->cluster_size))
            continue;
        ret = l2_get(c, l2, &t, &cached);
        if (ret < 0)
            continue;       /* reported; counts are incomplete */
        ret = walk_l2(c, sn, i, l2, t, cached, &dirty);
        if (ret == 0 && dirty) {
            ret = begin_writes(c);
            if (ret == 0)
                qcow2_cache_mark_dirty(q->l2_cache, t);
        }
        if (ret == 0 && sn < 0 && i < q->l1_size && copied_agree(c, t))
            c->copied_ok[i / 8] |= 1u << (i % 8);
        l2_put(c, &t, cached);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Every L2 entry: data and compressed clusters counted, entries fixed. */
int pass_data(struct chk *c)
{
    return for_each_l1(c, data_of);
}

/* ---- pass: OFLAG_COPIED ------------------------------------------- */

/*
 * The active image's L1 and L2 entries carry OFLAG_COPIED exactly when the
 * cluster's refcount is 1 (qemu's check_oflag_copied). Runs on the stored
 * refcounts, after they were repaired.
 */
int pass_copied(struct chk *c)
{
    struct qcow2 *q = c->q;
    const struct qcow2_check_result *r = c->r;
    uint64_t cs = q->cluster_size;
    int saved = c->fix, ret = 0;

    /* -r leaks repairs the flags too when nothing else is wrong (qemu). */
    if ((c->fix & QCOW2_FIX_LEAKS) && !r->check_errors && !r->corruptions && !r->leaks)
        c->fix |= QCOW2_FIX_ERRORS;
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t e = q->l1[i], l2 = e & L1E_OFFSET_MASK, rc;
        struct pctx p = { .gsn = -1, .index = i, .entry = e };
        uint8_t *t;
        bool cached, dirty = false;
        int st;

        check_progress(c, 1, 0);
        if (!l2)
            continue;
        st = stored_get(c, l2 >> q->cluster_bits, &rc);
        if (st < 0) {
            ret = st;
            break;
        }
        if (st > 0)
            continue;
        p.refcount = rc;
        guest_l1(c, &p, -1, i);
        if ((rc == 1) != !!(e & QCOW_OFLAG_COPIED) && problem(c, PR_COPIED_L1, &p)) {
            ret = set_l1(c, -1, q->l1, i, rc == 1 ? e | QCOW_OFLAG_COPIED
                                                  : e & ~QCOW_OFLAG_COPIED);
            if (ret < 0)
                break;
        }
        if (past_eof(c, l2, cs))
            continue;
        /* Agreed when counted, and nothing written since. */
        if (!c->began_writes && (c->copied_ok[i / 8] & (1u << (i % 8))))
            continue;
        if (l2_get(c, l2, &t, &cached) < 0)
            continue;
        for (uint64_t j = next_used(q, t, 0); j < q->l2_entries; j = next_used(q, t, j + 1)) {
            uint64_t e2 = l2e(q, t, j);
            int type = ctype(q, e2);
            struct pctx pd = { .gsn = -1, .entry = e2 };

            if (type != T_NORMAL && type != T_ZERO_ALLOC)
                continue;
            st = stored_get(c, (e2 & L2E_OFFSET_MASK) >> q->cluster_bits, &rc);
            if (st < 0) {
                ret = st;
                break;
            }
            if (st > 0 || (rc == 1) == !!(e2 & QCOW_OFLAG_COPIED))
                continue;
            pd.refcount = rc;
            guest_l2(c, &pd, -1, i, j);
            if (problem(c, PR_COPIED_DATA, &pd) && cached) {
                put_be64(t + j * q->l2_entry_size,
                         rc == 1 ? e2 | QCOW_OFLAG_COPIED : e2 & ~QCOW_OFLAG_COPIED);
                dirty = true;
            }
        }
        if (dirty && ret == 0) {
            ret = begin_writes(c);
            if (ret == 0)
                qcow2_cache_mark_dirty(q->l2_cache, t);
        }
        l2_put(c, &t, cached);
        if (ret < 0)
            break;
    }
    c->fix = saved;
    return ret;
}

/* ---- guest owners of clusters ------------------------------------- */

static int want_index(struct chk *c, uint64_t k)
{
    size_t lo = 0, hi = c->nwant;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->want[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nwant && c->want[lo] == k ? (int)lo : -1;
}

static void claim(struct chk *c, uint64_t first, uint64_t last, const struct pctx *p)
{
    for (uint64_t k = first; k <= last; k++) {
        int w = want_index(c, k);
        if (w < 0 || !p->has_guest)
            continue;
        if (!c->owner[w].has_guest)
            c->owner[w] = *p;
        else if (c->owner[w].gstart != p->gstart || c->owner[w].gsn != p->gsn)
            c->owner[w].gmore++;
    }
}

static int owners_of(struct chk *c, int64_t sn, uint64_t *l1, uint32_t n)
{
    struct qcow2 *q = c->q;
    unsigned cb = q->cluster_bits;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        struct pctx p = { .gsn = -1 };
        uint8_t *t;
        bool cached;

        if (!l1[i])
            continue;
        guest_l1(c, &p, sn, i);
        claim(c, l2 >> cb, (l2 + q->cluster_size - 1) >> cb, &p);
        if (past_eof(c, l2, q->cluster_size) || l2_get(c, l2, &t, &cached) < 0)
            continue;
        for (uint64_t j = 0; j < q->l2_entries; j++) {
            uint64_t e = l2e(q, t, j), off, len;
            int type = ctype(q, e);

            if (type == T_COMPRESSED) {
                qcow2_compressed_extent(q, e, &off, &len);
            } else if (type == T_NORMAL || type == T_ZERO_ALLOC) {
                off = e & L2E_OFFSET_MASK;
                len = q->cluster_size;
            } else {
                continue;
            }
            guest_l2(c, &p, sn, i, j);
            claim(c, off >> cb, (off + len - 1) >> cb, &p);
        }
        l2_put(c, &t, cached);
    }
    return 0;
}

int find_owners(struct chk *c)
{
    bool quiet = c->quiet_unfixed;
    int ret;

    /* A second walk must not report again what the first one did. */
    c->quiet_unfixed = true;
    ret = for_each_l1(c, owners_of);
    c->quiet_unfixed = quiet;
    return ret;
}
