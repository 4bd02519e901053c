/*
 * check_meta.c - the checker's passes over the fixed metadata (their order
 * and what each hands on is in check.c's table): the snapshot table, the
 * header, encryption header, refcount table, snapshot table and L1 tables,
 * bitmaps, and the refcount table's entries and blocks. Every finding is
 * raised through problem(); the repair sits right after the detection.
 *
 * Must not: allocate clusters (check_repair.c does, once all are counted);
 * write anything when c->write is false.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define BME_RESERVED_MASK       0xff000000000001feULL
#define BME_OFFSET_MASK         0x00fffffffffffe00ULL
#define MAX_BITMAP_DIR_BYTES    (64u * 1024 * 1024)
#define MAX_BITMAP_TABLE_ENTRIES 0x8000000u

static bool hits(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* What metadata [off, off+len) lies on, for messages. */
const char *metadata_name(struct chk *c, uint64_t off, uint64_t len)
{
    const struct qcow2 *q = c->q;
    const struct qcow2_header *h = &q->meta.h;
    uint64_t cs = q->cluster_size;

    off = ALIGN_DOWN(off, cs);
    len = ALIGN_UP(len, cs);
    if (hits(off, len, 0, cs))
        return "the image header";
    if (hits(off, len, ALIGN_DOWN(h->l1_table_offset, cs), (uint64_t)q->l1_size * 8))
        return "the active L1 table";
    if (hits(off, len, h->refcount_table_offset, q->reftable_size * 8))
        return "the refcount table";
    if (h->nb_snapshots && hits(off, len, h->snapshots_offset, c->sn_disk_size))
        return "the snapshot table";
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (hits(off, len, ALIGN_DOWN(q->snapshots[i].l1_table_offset, cs),
                 (uint64_t)q->snapshots[i].l1_size * 8))
            return "a snapshot's L1 table";
    if (q->meta.crypto_length && hits(off, len, q->meta.crypto_offset, q->meta.crypto_length))
        return "the encryption header";
    if (q->meta.has_bitmaps_ext &&
        hits(off, len, q->meta.bitmap_dir_offset, q->meta.bitmap_dir_size))
        return "the bitmap directory";
    for (uint64_t i = 0; i < q->reftable_size; i++)
        if (hits(off, len, q->reftable[i] & REFT_OFFSET_MASK & ~(cs - 1),
                 (q->reftable[i] & REFT_OFFSET_MASK) ? cs : 0))
            return "a refcount block";
    for (uint32_t i = 0; i < q->l1_size; i++)
        if (hits(off, len, q->l1[i] & L1E_OFFSET_MASK & ~(cs - 1),
                 (q->l1[i] & L1E_OFFSET_MASK) ? cs : 0))
            return "an L2 table";
    return "other metadata";
}

/* ---- pass: snapshot table ----------------------------------------- */

static void drop_snapshot(struct chk *c, uint32_t i)
{
    struct qcow2 *q = c->q;

    free(q->snapshots[i].id);
    free(q->snapshots[i].name);
    free(q->snapshots[i].extra);
    memmove(&q->snapshots[i], &q->snapshots[i + 1],
            (q->nb_snapshots - i - 1) * sizeof(*q->snapshots));
    if (c->sn_skip)
        memmove(&c->sn_skip[i], &c->sn_skip[i + 1], (q->nb_snapshots - i - 1) * sizeof(bool));
    q->nb_snapshots--;
    c->sn_dirty = true;
}

static void sn_pctx(struct chk *c, struct pctx *p, uint32_t i)
{
    const struct qcow2_snapshot *s = &c->q->snapshots[i];

    *p = (struct pctx){ .gsn = -1, .index = i, .id = s->id, .name = s->name,
                        .offset = s->l1_table_offset, .size = (uint64_t)s->l1_size * 8,
                        .entry = s->l1_size };
}

/*
 * Read the snapshot table entry by entry as the header describes it;
 * entries that run past the end of the file, or too many of them, are
 * dropped; oversized extra data is cut to 1024 bytes. Then every L1 table
 * offset and size is checked. Hands on q->snapshots, c->sn_skip.
 */
int pass_snapshots(struct chk *c)
{
    struct qcow2 *q = c->q;
    const struct qcow2_header *h = &q->meta.h;
    uint64_t off = h->snapshots_offset;
    uint32_t n = h->nb_snapshots, kept = 0;
    uint8_t *buf = NULL, fixed[QCOW2_SN_FIXED_LEN];
    size_t len = 0;
    struct pctx p = { .gsn = -1 };
    int ret = 0;

    qcow2_snapshots_free(q->snapshots, q->nb_snapshots);
    q->snapshots = NULL;
    q->nb_snapshots = 0;
    free(c->sn_skip);
    c->sn_skip = NULL;
    c->sn_disk_size = 0;
    if (!n) {
        /* qemu rejects such an offset even when no snapshot uses it. */
        if ((off & (q->cluster_size - 1)) || off > INT64_MAX) {
            p.offset = off;
            if (problem(c, PR_SN_TABLE_OFFSET, &p))
                c->sn_dirty = true;
        }
        return 0;
    }
    if ((off & (q->cluster_size - 1)) || off > INT64_MAX) {
        /* The entries may still be there: read them, write them aligned. */
        p.offset = off;
        if (problem(c, PR_SN_TABLE_OFFSET, &p))
            c->sn_dirty = true;
        if (off > INT64_MAX) {
            if (c->sn_dirty)
                return 0;   /* no table: written anew without snapshots */
            n = 0;
        }
    }
    if (n > QCOW2_MAX_SNAPSHOTS) {
        p.index = n;
        if (problem(c, PR_SN_TOO_MANY, &p))
            c->sn_dirty = true;
        n = QCOW2_MAX_SNAPSHOTS;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t extra, keep;
        uint16_t id_len, name_len;
        uint64_t elen;
        uint8_t *nb;

        p = (struct pctx){ .gsn = -1, .index = i };
        if (off + QCOW2_SN_FIXED_LEN > c->file_size)
            goto incomplete;
        ret = qfile_pread(q->file, fixed, sizeof(fixed), off);
        if (ret < 0) {
            ret = check_io_error(c, ret, "snapshot table", off);
            goto out;
        }
        extra = be32(fixed + QCOW2_SN_EXTRA_SIZE);
        id_len = be16(fixed + QCOW2_SN_ID_SIZE);
        name_len = be16(fixed + QCOW2_SN_NAME_SIZE);
        elen = QCOW2_SN_FIXED_LEN + (uint64_t)extra + id_len + name_len;
        if (off + elen > c->file_size) {
            /* As qemu, what is missing reads as zeros; written back whole. */
            p.offset = off;
            p.size = elen;
            if (problem(c, PR_SN_TRUNCATED, &p))
                c->sn_dirty = true;
        }
        if (!id_len && !be32(fixed + QCOW2_SN_L1_SIZE)) {
            /* Nothing to keep: no name to find it by, no L1 table. */
            if (problem(c, PR_SN_EMPTY, &p)) {
                c->sn_dirty = true;
                off += ALIGN_UP(elen, 8);
                continue;
            }
        }
        keep = extra;
        if (extra > QCOW2_MAX_SN_EXTRA) {
            p.refcount = extra;
            if (problem(c, PR_SN_EXTRA_TOO_LARGE, &p))
                c->sn_dirty = true;
            keep = QCOW2_MAX_SN_EXTRA;
        }
        /* The entry as it should be: extra data cut to what is kept. */
        {
            size_t want = (size_t)ALIGN_UP(QCOW2_SN_FIXED_LEN + (uint64_t)keep + id_len + name_len, 8);
            nb = realloc(buf, len + want);
            if (!nb) {
                ret = -ENOMEM;
                goto out;
            }
            buf = nb;
            memset(buf + len, 0, want);
            memcpy(buf + len, fixed, sizeof(fixed));
            put_be32(buf + len + QCOW2_SN_EXTRA_SIZE, keep);
            ret = qfile_pread_pad(q->file, buf + len + QCOW2_SN_FIXED_LEN, keep,
                                  off + QCOW2_SN_FIXED_LEN);
            if (ret == 0)
                ret = qfile_pread_pad(q->file, buf + len + QCOW2_SN_FIXED_LEN + keep,
                                      (size_t)id_len + name_len,
                                      off + QCOW2_SN_FIXED_LEN + extra);
            if (ret < 0) {
                ret = check_io_error(c, ret, "snapshot table", off);
                goto out;
            }
            len += want;
        }
        off += ALIGN_UP(elen, 8);
        kept++;
        if (off - h->snapshots_offset > QCOW2_MAX_SN_TABLE_BYTES)
            goto incomplete;
        continue;
incomplete:
        if (problem(c, PR_SN_INCOMPLETE, &p))
            c->sn_dirty = true;
        break;
    }
    c->sn_disk_size = off - h->snapshots_offset;
    ret = qcow2_snapshots_parse(buf, len, kept, &q->snapshots);
    if (ret < 0) {
        ret = check_io_error(c, ret, "snapshot table", h->snapshots_offset);
        goto out;
    }
    q->nb_snapshots = kept;
    c->sn_skip = xzalloc(kept * sizeof(bool));
    if (!c->sn_skip) {
        ret = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < q->nb_snapshots;) {
        const struct qcow2_snapshot *s = &q->snapshots[i];
        enum qcow2_problem code = PR_COUNT;

        sn_pctx(c, &p, i);
        if (s->l1_table_offset & (q->cluster_size - 1))
            code = PR_SN_L1_UNALIGNED;
        else if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
            code = PR_SN_L1_TOO_LARGE;
        if (code != PR_COUNT) {
            if (problem(c, code, &p)) {
                drop_snapshot(c, i);
                continue;
            }
            c->sn_skip[i] = true;       /* qemu does not walk it either */
        }
        i++;
    }
out:
    free(buf);
    return ret;
}

/* ---- pass: fixed metadata ----------------------------------------- */

static int count_fixed(struct chk *c, uint64_t off, uint64_t len, struct pctx *p)
{
    int f;

    p->offset = off;
    p->size = len;
    f = count_ref(c, off, len, K_FIXED, PR_REF_OVERFLOW, p);
    if (f > 0 && (f & REF_EOF))
        problem(c, PR_REF_PAST_EOF, p);
    return f < 0 ? f : 0;
}

/*
 * Walk the bitmap directory and tables. count: count every cluster they use
 * and report what is wrong. !count: only validate (nothing counted or
 * reported); returns 1 at the first problem, with p->str saying what.
 */
static int walk_bitmaps(struct chk *c, bool count, struct pctx *p)
{
    struct qcow2 *q = c->q;
    const struct qcow2_meta *m = &q->meta;
    uint64_t cs = q->cluster_size, dsize = m->bitmap_dir_size, doff = m->bitmap_dir_offset;
    uint8_t *dir;
    size_t pos = 0;
    int ret;

    if ((doff & (cs - 1)) || dsize > MAX_BITMAP_DIR_BYTES || !dsize) {
        p->str = "bad offset or size";
        goto bad;
    }
    if (!count && (past_eof(c, doff, dsize) || range_kinds(c, doff, dsize))) {
        p->str = "past the end of the file or on other metadata";
        return 1;
    }
    ret = count ? count_fixed(c, doff, dsize, p) : 0;
    if (ret < 0)
        return ret;
    dir = malloc(dsize);
    if (!dir)
        return -ENOMEM;
    ret = qfile_pread_pad(q->file, dir, dsize, doff);
    if (ret < 0) {
        free(dir);
        return check_io_error(c, ret, "bitmap directory", doff);
    }
    for (uint32_t b = 0; b < m->nb_bitmaps; b++) {
        uint64_t toff, tsize, elen;

        if (dsize - pos < 24) {
            p->str = "entries run past its end";
            free(dir);
            goto bad;
        }
        toff = be64(dir + pos);
        tsize = be32(dir + pos + 8);
        elen = ALIGN_UP(24 + (uint64_t)be32(dir + pos + 20) + be16(dir + pos + 18), 8);
        if (elen > dsize - pos || (toff & (cs - 1)) || tsize > MAX_BITMAP_TABLE_ENTRIES ||
            (!count && tsize && (past_eof(c, toff, tsize * 8) ||
                                 range_kinds(c, toff, tsize * 8)))) {
            p->str = "invalid bitmap entry";
            free(dir);
            goto bad;
        }
        pos += elen;
        ret = count ? count_fixed(c, toff, tsize * 8, p) : 0;
        if (ret < 0)
            break;
        /* The table a cluster at a time: memory stays bounded. */
        for (uint64_t i = 0; i < tsize && ret == 0; i++) {
            uint64_t e, boff;
            if (i % (cs / 8) == 0) {
                ret = qfile_pread_pad(q->file, c->buf, cs, toff + i * 8);
                if (ret < 0) {
                    ret = check_io_error(c, ret, "bitmap table", toff + i * 8);
                    break;
                }
            }
            e = be64(c->buf + (i % (cs / 8)) * 8);
            boff = e & BME_OFFSET_MASK;
            if ((e & BME_RESERVED_MASK) || (boff & (cs - 1)) ||
                (!count && boff && past_eof(c, boff, cs))) {
                struct pctx pe = { .gsn = -1, .index = (int64_t)i, .entry = e };
                if (!count) {
                    p->str = "invalid bitmap table entry";
                    ret = 1;
                    break;
                }
                problem(c, PR_BITMAP_ENTRY, &pe);
                continue;
            }
            if (boff && count) {
                struct pctx pd = { .gsn = -1, .offset = boff, .size = cs };
                int f = count_ref(c, boff, cs, K_DATA, PR_REF_OVERFLOW, &pd);
                if (f < 0)
                    ret = f;
                else if (f & REF_EOF)
                    problem(c, PR_REF_PAST_EOF, &pd);
            }
        }
        if (ret != 0)
            break;
    }
    free(dir);
    return ret;
bad:
    if (!count)
        return 1;
    problem(c, PR_BITMAP_DIR, p);
    c->unsafe = true;       /* bitmap clusters are not all counted */
    return 0;
}

/*
 * Persistent dirty bitmaps. A repair that finds them broken drops them all
 * (they only track writes; no guest data is lost): the autoclear bit goes
 * first, so the extension is ignored (the spec: its data is then
 * inconsistent), then the extension itself; the clusters the bitmaps used
 * are leaks the same run frees.
 */
static int count_bitmaps(struct chk *c)
{
    struct qcow2 *q = c->q;
    const struct qcow2_meta *m = &q->meta;
    struct pctx p = { .gsn = -1, .offset = m->bitmap_dir_offset };
    uint8_t be[8];
    int ret;

    if (!m->has_bitmaps_ext || !(m->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) ||
        !m->nb_bitmaps)
        return 0;
    if (c->fix & QCOW2_FIX_ERRORS) {
        ret = walk_bitmaps(c, false, &p);
        if (ret < 0)
            return ret;
        if (ret == 1) {
            if (!problem(c, PR_BITMAP_DIR, &p))
                return 0;       /* a dry run: as if dropped */
            ret = begin_writes(c);
            if (ret < 0)
                return ret;
            put_be64(be, m->h.autoclear_features & ~QCOW2_AUTOCLEAR_BITMAPS);
            ret = qfile_pwrite(q->file, be, 8, QCOW2_HDR_AUTOCLEAR);
            if (ret == 0)
                ret = qfile_flush(q->file);
            if (ret < 0)
                return ret;
            q->meta.h.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
            /* Then the extension goes too, as qemu drops it on its first
             * write: left in place, it makes qemu warn on every open. A
             * crash before this write leaves it ignored, which is safe. */
            q->meta.has_bitmaps_ext = false;
            q->meta.nb_bitmaps = 0;
            q->meta.bitmap_dir_size = q->meta.bitmap_dir_offset = 0;
            ret = qcow2_write_header(q);
            if (ret == 0)
                ret = qfile_flush(q->file);
            return ret;
        }
        p.str = NULL;
    }
    return walk_bitmaps(c, true, &p);
}

/*
 * A refcount table that cannot be trusted is dropped in memory, blocks and
 * all, so that no repair write is refused for landing where it claims to
 * be; the rebuild writes a new one.
 */
static void abandon_reftable(struct chk *c)
{
    struct qcow2 *q = c->q;

    if (!c->write || !(c->fix & QCOW2_FIX_ERRORS))
        return;
    for (uint64_t bi = 0; bi < q->reftable_size; bi++)
        detach_refblock(c, bi);
    q->meta.h.refcount_table_clusters = 0;      /* for the overlap check only */
    c->rebuild = true;
}

/*
 * Header, encryption header, refcount table, snapshot table, active L1
 * table, bitmaps, then the snapshots' L1 tables (dropped when they lie on
 * other metadata or past the end of the file).
 */
int pass_fixed(struct chk *c)
{
    struct qcow2 *q = c->q;
    const struct qcow2_header *h = &q->meta.h;
    uint64_t cs = q->cluster_size;
    struct pctx p = { .gsn = -1 };
    int ret, f;

    ret = count_fixed(c, 0, cs, &p);
    if (ret < 0)
        return ret;
    if (q->l1_size) {
        p.offset = h->l1_table_offset;
        p.size = (uint64_t)q->l1_size * 8;
        f = count_ref(c, p.offset, p.size, K_FIXED, PR_REF_OVERFLOW, &p);
        if (f < 0)
            return f;
        /* It reads as zeros: whatever it mapped is gone already. */
        if ((f & REF_EOF) && problem(c, PR_L1_TABLE_PAST_EOF, &p))
            c->l1_new = true;
    }

    p.offset = h->refcount_table_offset;
    p.size = q->reftable_size * 8;
    if (range_kinds(c, p.offset, p.size) & (1u << K_FIXED)) {
        p.str = metadata_name(c, p.offset, p.size);
        if (problem(c, PR_REFTABLE_ALIAS, &p))
            abandon_reftable(c);
    }
    f = count_ref(c, p.offset, p.size, K_FIXED, PR_REF_OVERFLOW, &p);
    if (f < 0)
        return f;
    if ((f & REF_EOF) && problem(c, PR_REFTABLE_PAST_EOF, &p))
        abandon_reftable(c);

    if (h->nb_snapshots) {
        p.offset = h->snapshots_offset;
        p.size = c->sn_disk_size;
        if (range_kinds(c, p.offset, p.size) & (1u << K_FIXED)) {
            /* Its entries are someone else's bytes: no snapshot to keep. */
            p.str = metadata_name(c, p.offset, p.size);
            if (problem(c, PR_SN_TABLE_ALIAS, &p)) {
                while (q->nb_snapshots)
                    drop_snapshot(c, q->nb_snapshots - 1);
                c->sn_dirty = true;
            }
        }
        ret = count_fixed(c, h->snapshots_offset, c->sn_disk_size, &p);
        if (ret < 0)
            return ret;
    }
    if (h->crypt_method == QCOW_CRYPT_LUKS && q->meta.has_crypto_ext &&
        q->meta.crypto_length) {
        ret = count_fixed(c, q->meta.crypto_offset, q->meta.crypto_length, &p);
        if (ret < 0)
            return ret;
    }
    ret = count_bitmaps(c);
    if (ret < 0)
        return ret;

    for (uint32_t i = 0; i < q->nb_snapshots;) {
        const struct qcow2_snapshot *s = &q->snapshots[i];
        uint64_t size = (uint64_t)s->l1_size * 8;

        if (c->sn_skip[i] || !size) {
            i++;
            continue;
        }
        sn_pctx(c, &p, i);
        if (past_eof(c, s->l1_table_offset, size)) {
            if (problem(c, PR_SN_L1_PAST_EOF, &p)) {
                drop_snapshot(c, i);
                continue;
            }
            i++;
            continue;
        }
        if (range_kinds(c, s->l1_table_offset, size) & (1u << K_FIXED)) {
            p.str = metadata_name(c, s->l1_table_offset, size);
            if (problem(c, PR_SN_L1_ALIAS, &p)) {
                drop_snapshot(c, i);
                continue;
            }
        }
        f = count_ref(c, s->l1_table_offset, size, K_FIXED, PR_REF_OVERFLOW, &p);
        if (f < 0)
            return f;
        i++;
    }
    return 0;
}

/* ---- pass: refcount table ----------------------------------------- */

static uint64_t file_clusters(struct chk *c)
{
    return DIV_ROUND_UP(c->file_size, c->q->cluster_size);
}

/*
 * Refcount table entries that cannot point at a block are found here;
 * good blocks are marked (kind only) so the L1 pass sees L2 tables on them.
 */
int pass_mark_refblocks(struct chk *c)
{
    struct qcow2 *q = c->q;

    for (uint64_t bi = 0; bi < q->reftable_size; bi++) {
        uint64_t e = q->reftable[bi], off = e & REFT_OFFSET_MASK, k;
        struct pctx p = { .gsn = -1, .index = (int64_t)bi, .entry = e, .offset = off };

        if (!e || is_detached(c, bi))
            continue;
        if (e & REFT_RESERVED_MASK) {
            if (problem(c, PR_REFTABLE_RESERVED, &p))
                detach_refblock(c, bi);
            continue;
        }
        if (off & (q->cluster_size - 1)) {
            if (problem(c, PR_REFBLOCK_UNALIGNED, &p))
                detach_refblock(c, bi);
            continue;
        }
        k = off >> q->cluster_bits;
        if (k >= file_clusters(c)) {
            if (problem(c, PR_REFBLOCK_PAST_EOF, &p))
                detach_refblock(c, bi);
            continue;
        }
        if (rc_get(c, k) || rc_kind(c, k) != K_DATA) {
            /* On other metadata, or a second entry for one block: the
             * last pass counts it (as qemu); a repair cannot wait that
             * long, since writes to that metadata would be refused. */
            if (c->write && (c->fix & QCOW2_FIX_ERRORS)) {
                p.refcount = rc_get(c, k) + 1;
                if (problem(c, PR_REFBLOCK_SHARED, &p))
                    detach_refblock(c, bi);
            }
            continue;
        }
        rc_set_kind(c, k, K_REFBLOCK);
    }
    return 0;
}

/* Refcount blocks are counted last, and each must be its own cluster. */
int pass_refblocks(struct chk *c)
{
    struct qcow2 *q = c->q;

    for (uint64_t bi = 0; bi < q->reftable_size; bi++) {
        uint64_t e = q->reftable[bi], off = e & REFT_OFFSET_MASK, v;
        struct pctx p = { .gsn = -1, .index = (int64_t)bi, .offset = off };
        int f;

        if (!off || (e & REFT_RESERVED_MASK) || (off & (q->cluster_size - 1)) ||
            is_detached(c, bi) || (off >> q->cluster_bits) >= file_clusters(c))
            continue;
        f = count_ref(c, off, q->cluster_size, K_REFBLOCK, PR_REF_OVERFLOW, &p);
        if (f < 0)
            return f;
        v = rc_get(c, off >> q->cluster_bits);
        if (v != 1) {
            p.refcount = v;
            if (problem(c, PR_REFBLOCK_SHARED, &p))
                detach_refblock(c, bi);
            c->rebuild = true;
        }
    }
    return 0;
}
