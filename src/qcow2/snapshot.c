/*
 * snapshot.c - internal snapshots: create, apply, delete, rename.
 *
 * A snapshot is a copy of the active L1 table plus one more reference on
 * every cluster that table reaches (each L2 table once, each data cluster
 * once per L2 entry, each host cluster a compressed stream touches), as
 * qemu counts them. COPIED flags in the active tables say "refcount is
 * exactly one"; they are recomputed after every change of references.
 *
 * Ordering, so that a crash leaves at worst leaked clusters:
 *   create: refcounts up (fsync) -> L1 copy -> COPIED cleared -> new table
 *           -> header (nb_snapshots and offset in one write) -> old table freed
 *   apply:  refcounts up for the snapshot's tables (fsync) -> new active L1
 *           (fsync) -> header -> refcounts down for the old active tables
 *   delete: table without it -> header -> refcounts down -> COPIED set
 * Raising refcounts is undone when it fails half way (refcount_bits=1 and
 * 2 overflow), so a refused snapshot leaves the file as it was.
 *
 * Owns: the snapshot operations. Must not: print, or touch guest data;
 * the table's bytes are snapshot_table.c's, refcounts refcount.c's.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snapshot.h"

/* ---- looking up and checking names ---------------------------------- */

static bool matches(const struct qcow2_snapshot *s, const char *key)
{
    return !strcmp(s->id, key) || !strcmp(s->name, key);
}

static int first_match(const struct qcow2 *q, const char *key, bool by_id)
{
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (!strcmp(by_id ? q->snapshots[i].id : q->snapshots[i].name, key))
            return (int)i;
    return -1;
}

unsigned qcow2_snapshot_lookup(const struct qcow2 *q, const char *key,
                               enum qcow2_sn_order order, uint32_t *out, unsigned max)
{
    bool id_first = order == QCOW2_SN_ID_FIRST;
    int choice = first_match(q, key, id_first);
    unsigned n = 0;

    if (choice < 0)
        choice = first_match(q, key, !id_first);
    if (choice < 0)
        return 0;
    if (max)
        out[n] = (uint32_t)choice;
    n++;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        if ((int)i == choice || !matches(&q->snapshots[i], key))
            continue;
        if (n < max)
            out[n] = i;
        n++;
    }
    return n;
}

int qcow2_snapshot_check_name(const struct qcow2 *q, const char *name, int self,
                              bool allow_dup)
{
    size_t len = strlen(name);

    if (!len)
        return err_set(-EINVAL, "a snapshot name must not be empty");
    if (len > QCOW2_SN_NAME_MAX)
        return err_set(-ENAMETOOLONG, "the name is %zu bytes long; qemu keeps at most %d "
                       "bytes of a snapshot name", len, QCOW2_SN_NAME_MAX);
    if (self < 0) {
        uint64_t size = qcow2_snapshots_size(q->snapshots, q->nb_snapshots);

        if (q->nb_snapshots >= QCOW2_MAX_SNAPSHOTS)
            return err_set(-EFBIG, "the image already has %u snapshots, the most qcow2 "
                           "allows", q->nb_snapshots);
        /* the new entry: fixed part, 24 bytes of extra data, id, name */
        if (size + ALIGN_UP(QCOW2_SN_FIXED_LEN + QCOW2_SN_EXTRA_ICOUNT_LEN + 20 + len, 8) >
            QCOW2_MAX_SN_TABLE_BYTES)
            return err_set(-EFBIG, "the snapshot table would exceed %u bytes",
                           QCOW2_MAX_SN_TABLE_BYTES);
    }
    if (allow_dup)
        return 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        const struct qcow2_snapshot *s = &q->snapshots[i];

        if ((int)i == self)
            continue;
        if (!strcmp(s->name, name))
            return err_set(-EEXIST, "a snapshot named '%s' already exists (id %s)",
                           name, s->id);
        if (!strcmp(s->id, name))
            return err_set(-EEXIST, "'%s' is the id of snapshot '%s', so the name would be "
                           "ambiguous", name, s->name);
    }
    return 0;
}

/* ---- checked reads of what the tables point at ----------------------- */

static uint64_t file_end(struct qcow2 *q)
{
    uint64_t size = 0;

    qfile_size(q->file, &size);
    return MAX(size, q->alloc_end << q->cluster_bits);
}

/* The L2 table an L1 entry points at, 0 for none; checked before use. */
static int l1_entry_l2(struct qcow2 *q, uint64_t e, uint32_t i, uint64_t end, uint64_t *l2)
{
    *l2 = e & L1E_OFFSET_MASK;
    if (e & L1E_RESERVED_MASK)
        return qcow2_signal_corruption(q, "L1 entry %u has reserved bits set (%#llx)", i,
                                       (unsigned long long)e);
    if (!*l2)
        return 0;
    if (*l2 & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "L2 table offset %#llx unaligned (L1 index: %#x)",
                                       (unsigned long long)*l2, i);
    if (*l2 >= end)
        return qcow2_signal_corruption(q, "L2 table offset %#llx lies past the end of the "
                                       "file (L1 index: %#x)", (unsigned long long)*l2, i);
    return 0;
}

/* The host clusters one L2 entry holds: n clusters from first (n 0: none). */
static int l2_entry_clusters(struct qcow2 *q, uint64_t e, uint64_t l2, uint64_t j,
                             uint64_t end, uint64_t *first, uint64_t *n)
{
    uint64_t host, len;

    *n = 0;
    if (e & QCOW_OFLAG_COMPRESSED) {
        qcow2_compressed_extent(q, e, &host, &len);
        if (host < q->cluster_size || host >= end)
            return qcow2_signal_corruption(q, "Compressed cluster at host offset %#llx lies "
                                           "outside the image (L2 offset: %#llx, L2 index: "
                                           "%#llx)", (unsigned long long)host,
                                           (unsigned long long)l2, (unsigned long long)j);
        *first = host >> q->cluster_bits;
        *n = ((host + len - 1) >> q->cluster_bits) - *first + 1;
        return 0;
    }
    host = e & L2E_OFFSET_MASK;
    if (!host)
        return 0;
    if (host & (q->cluster_size - 1))
        return qcow2_signal_corruption(q, "Cluster allocation offset %#llx unaligned "
                                       "(L2 offset: %#llx, L2 index: %#llx)",
                                       (unsigned long long)host, (unsigned long long)l2,
                                       (unsigned long long)j);
    if (host >= end)
        return qcow2_signal_corruption(q, "Cluster allocation offset %#llx lies past the end "
                                       "of the file (L2 offset: %#llx, L2 index: %#llx)",
                                       (unsigned long long)host, (unsigned long long)l2,
                                       (unsigned long long)j);
    *first = host >> q->cluster_bits;
    *n = 1;
    return 0;
}

/* Read a snapshot's L1 table (host byte order, COPIED flags as on disk). */
static int read_sn_l1(struct qcow2 *q, const struct qcow2_snapshot *sn, uint64_t **out)
{
    uint64_t bytes = (uint64_t)sn->l1_size * 8, *t;
    int ret;

    *out = NULL;
    if (!sn->l1_size)
        return 0;
    if (bytes > QCOW2_MAX_L1_BYTES)
        return qcow2_signal_corruption(q, "Snapshot %s has an L1 table of %u entries, more "
                                       "than qcow2 allows", sn->id, sn->l1_size);
    ret = qcow2_check_table_offset(q, sn->l1_table_offset, "Snapshot L1 table");
    if (ret < 0)
        return ret;
    if (sn->l1_table_offset + bytes > file_end(q))
        return qcow2_signal_corruption(q, "Snapshot %s L1 table at %#llx lies past the end of "
                                       "the file", sn->id,
                                       (unsigned long long)sn->l1_table_offset);
    t = malloc(bytes);
    if (!t)
        return -ENOMEM;
    ret = qfile_pread(q->file, t, bytes, sn->l1_table_offset);
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        t[i] = be64(&t[i]);
    *out = t;
    return 0;
}

/* ---- changing the references an L1 table holds ----------------------- */

/*
 * Contiguous clusters are gathered into one run and changed by one call
 * (refcount.c works a refcount block at a time, through the cache). Runs
 * come out in a fixed order, so a failed raise can be undone exactly by
 * lowering the first `done` runs again.
 */
struct walk {
    struct qcow2 *q;
    int64_t addend;
    uint64_t start, n;          /* the pending run, in clusters */
    uint64_t done, limit;       /* runs applied; stop after limit */
    uint64_t end;               /* file end, for checking offsets */
    bool dry;                   /* only check every offset on the way */
};

#define WALK_STOP 1

static int walk_flush(struct walk *w)
{
    int ret;

    if (!w->n)
        return 0;
    if (w->done == w->limit)
        return WALK_STOP;
    if (w->dry) {
        w->n = 0;
        return 0;
    }
    ret = qcow2_refcount_update(w->q, w->start << w->q->cluster_bits,
                                w->n << w->q->cluster_bits, w->addend);
    if (ret < 0)
        return ret;
    w->done++;
    w->n = 0;
    return 0;
}

static int walk_add(struct walk *w, uint64_t first, uint64_t n)
{
    int ret;

    if (w->n && first == w->start + w->n) {
        w->n += n;
        return 0;
    }
    ret = walk_flush(w);
    if (ret)
        return ret;
    w->start = first;
    w->n = n;
    return 0;
}

static int walk_l1(struct walk *w, const uint64_t *l1, uint32_t l1_size)
{
    struct qcow2 *q = w->q;
    int ret;

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2, first, n;
        uint8_t *t;

        ret = l1_entry_l2(q, l1[i], i, w->end, &l2);
        if (ret < 0)
            return ret;
        if (!l2)
            continue;
        ret = qcow2_cache_get(q, q->l2_cache, l2, (void **)&t);
        if (ret < 0)
            return ret;
        for (uint64_t j = 0; j < q->l2_entries && ret == 0; j++) {
            ret = l2_entry_clusters(q, be64(t + j * q->l2_entry_size), l2, j, w->end,
                                    &first, &n);
            if (ret == 0 && n)
                ret = walk_add(w, first, n);
        }
        qcow2_cache_put(q->l2_cache, (void **)&t);
        /* the table itself, after its entries (it may drop to zero) */
        if (ret == 0)
            ret = walk_add(w, l2 >> q->cluster_bits, 1);
        if (ret)
            return ret;
    }
    return walk_flush(w);
}

/* Add addend to every reference l1 holds; a failed raise is undone. */
static int change_refs(struct qcow2 *q, const uint64_t *l1, uint32_t l1_size, int64_t addend)
{
    struct walk w = { .q = q, .addend = addend, .limit = UINT64_MAX, .end = file_end(q) };
    char msg[400];
    int ret, r;

    ret = walk_l1(&w, l1, l1_size);
    if (ret >= 0 || addend < 0 || !w.done)
        return ret < 0 ? ret : 0;
    snprintf(msg, sizeof(msg), "%s", err_msg(ret));
    {
        struct walk u = { .q = q, .addend = -addend, .limit = w.done, .end = w.end };
        r = walk_l1(&u, l1, l1_size);
    }
    if (r < 0)
        return err_set(ret, "%s (and undoing the raised refcounts failed too, so some "
                       "clusters are leaked)", msg);
    return err_set(ret, "%s", msg);
}

/*
 * COPIED in the active L1 and L2 tables: set exactly where the refcount is
 * one. Only entries that change are written (L2 through the cache).
 */
static int update_copied(struct qcow2 *q)
{
    uint64_t end = file_end(q);
    uint32_t lo = UINT32_MAX, hi = 0;
    int ret;

    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t l2, rc, e;
        uint8_t *t;
        bool dirty = false;

        ret = l1_entry_l2(q, q->l1[i], i, end, &l2);
        if (ret < 0)
            return ret;
        if (!l2) {
            rc = 0;
        } else {
            ret = qcow2_cache_get(q, q->l2_cache, l2, (void **)&t);
            if (ret < 0)
                return ret;
            for (uint64_t j = 0; j < q->l2_entries && ret == 0; j++) {
                uint8_t *p = t + j * q->l2_entry_size;
                uint64_t first, n, erc = 0, ne;

                e = be64(p);
                ret = l2_entry_clusters(q, e, l2, j, end, &first, &n);
                if (ret == 0 && n && !(e & QCOW_OFLAG_COMPRESSED))
                    ret = qcow2_refcount_get(q, first, &erc);
                ne = erc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
                if (ret == 0 && ne != e) {
                    put_be64(p, ne);
                    dirty = true;
                }
            }
            if (dirty)
                qcow2_cache_mark_dirty(q->l2_cache, t);
            qcow2_cache_put(q->l2_cache, (void **)&t);
            if (ret == 0)
                ret = qcow2_refcount_get(q, l2 >> q->cluster_bits, &rc);
            if (ret < 0)
                return ret;
        }
        e = rc == 1 ? q->l1[i] | QCOW_OFLAG_COPIED : q->l1[i] & ~QCOW_OFLAG_COPIED;
        if (e != q->l1[i]) {
            q->l1[i] = e;
            lo = MIN(lo, i);
            hi = i + 1;
        }
    }
    /* L2 tables (after the refcounts they describe), then the L1 table */
    ret = qcow2_flush(q);
    if (ret == 0 && lo < hi) {
        ret = qcow2_write_l1(q, lo, hi);
        if (ret == 0)
            ret = qfile_flush(q->file);
    }
    return ret;
}

/* ---- the snapshot table ----------------------------------------------- */

/* Bytes the table takes on disk now (entries as they are, not rebuilt). */
static int table_disk_len(struct qcow2 *q, uint64_t *len)
{
    *len = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        uint8_t f[QCOW2_SN_FIXED_LEN];
        int ret = qfile_pread(q->file, f, sizeof(f), q->meta.h.snapshots_offset + *len);

        if (ret < 0)
            return ret;
        *len += ALIGN_UP(QCOW2_SN_FIXED_LEN + (uint64_t)be32(f + QCOW2_SN_EXTRA_SIZE) +
                         be16(f + QCOW2_SN_ID_SIZE) + be16(f + QCOW2_SN_NAME_SIZE), 8);
    }
    return 0;
}

/*
 * Make sn[0..count) the snapshot table: written to new clusters, then the
 * header pointed at it (count and offset in one write), then the old
 * table's clusters freed. On success q->snapshots is sn and *old the
 * previous array, whose strings the caller frees as far as sn does not
 * share them.
 */
static int write_table(struct qcow2 *q, struct qcow2_snapshot *sn, uint32_t count,
                       struct qcow2_snapshot **old)
{
    uint64_t old_off = q->meta.h.snapshots_offset, old_len, len = 0;
    uint32_t old_count = q->nb_snapshots;
    int64_t off = 0;
    uint8_t hdr[12], *buf = NULL;
    int ret;

    ret = table_disk_len(q, &old_len);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < count; i++) {
        /* as qemu: an entry without a disk size gets the image's */
        if (!sn[i].has_disk_size) {
            sn[i].disk_size = q->meta.h.size;
            sn[i].has_disk_size = true;
        }
        if (strlen(sn[i].id) > UINT16_MAX || strlen(sn[i].name) > UINT16_MAX)
            return err_set(-ENAMETOOLONG, "snapshot %s: id or name too long", sn[i].id);
    }
    if (count > QCOW2_MAX_SNAPSHOTS)
        return err_set(-EFBIG, "more than %u snapshots", QCOW2_MAX_SNAPSHOTS);
    if (count) {
        len = qcow2_snapshots_size(sn, count);
        if (len > QCOW2_MAX_SN_TABLE_BYTES)
            return err_set(-EFBIG, "the snapshot table would exceed %u bytes",
                           QCOW2_MAX_SN_TABLE_BYTES);
        buf = xzalloc(len);
        if (!buf)
            return -ENOMEM;
        qcow2_snapshots_build(sn, count, buf);
        off = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, len));
        if (off < 0) {
            free(buf);
            return (int)off;
        }
        ret = qcow2_write_metadata(q, 0, (uint64_t)off, buf, len);
        free(buf);
        /* the table and its refcounts on disk before the header names it */
        if (ret == 0)
            ret = qcow2_flush(q);
        if (ret == 0)
            ret = qfile_flush(q->file);
        if (ret < 0) {
            qcow2_free_clusters(q, (uint64_t)off, len);
            return ret;
        }
    }
    put_be32(hdr, count);
    put_be64(hdr + 4, (uint64_t)off);
    ret = qcow2_write_metadata(q, QCOW2_OL_HEADER, QCOW2_HDR_NB_SNAPSHOTS, hdr, sizeof(hdr));
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    q->meta.h.nb_snapshots = count;
    q->meta.h.snapshots_offset = (uint64_t)off;
    *old = q->snapshots;
    q->snapshots = sn;
    q->nb_snapshots = count;
    /* last: nothing points at the old table any more */
    if (old_count && old_len)
        ret = qcow2_free_clusters(q, old_off, old_len);
    return ret;
}

static int prepare(struct qcow2 *q)
{
    if (!q->writable)
        return err_set(-EBADF, "the image is not open for writing");
    if (q->meta.h.incompatible_features & QCOW2_INCOMPAT_DIRTY)
        return err_set(-EBUSY, "the image is dirty (lazy refcounts were not written "
                       "back); run 'qimg check -r all' on it first");
    return 0;
}

/* ---- the operations ---------------------------------------------------- */

int qcow2_snapshot_create(struct qcow2 *q, const char *name)
{
    struct qcow2_snapshot *sn = NULL, *old, *e;
    uint64_t l1_bytes = (uint64_t)q->l1_size * 8, l1_off = 0, *be = NULL;
    unsigned long max_id = 0;
    struct timespec ts;
    char id[24];
    int ret;

    ret = prepare(q);
    if (ret == 0)
        ret = qcow2_snapshot_check_name(q, name, -1, true);
    if (ret < 0)
        return ret;
    /* the id: one more than the largest numeric id, as qemu */
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        unsigned long v = strtoul(q->snapshots[i].id, NULL, 10);
        if (v > max_id)
            max_id = v;
    }
    snprintf(id, sizeof(id), "%lu", max_id + 1);
    if (first_match(q, id, true) >= 0)
        return err_set(-EEXIST, "the new snapshot's id %s is taken", id);

    /* 1. the references the snapshot will hold, on disk first */
    ret = change_refs(q, q->l1, q->l1_size, 1);
    if (ret < 0)
        return ret;
    /* 2. a copy of the active L1 table */
    if (q->l1_size) {
        int64_t r = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, l1_bytes));
        if (r < 0) {
            ret = (int)r;
            goto undo;
        }
        l1_off = (uint64_t)r;
        be = malloc(l1_bytes);
        if (!be) {
            ret = -ENOMEM;
            goto undo;
        }
        for (uint32_t i = 0; i < q->l1_size; i++)
            put_be64(&be[i], q->l1[i] & ~QCOW_OFLAG_COPIED);
        ret = qcow2_write_metadata(q, 0, l1_off, be, l1_bytes);
        free(be);
        if (ret < 0)
            goto undo;
    }
    ret = qcow2_flush(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        return ret;
    /* 3. the active clusters are shared now */
    ret = update_copied(q);
    if (ret < 0)
        return ret;
    /* 4. the new entry, then the table and header */
    sn = xzalloc(((size_t)q->nb_snapshots + 1) * sizeof(*sn));
    if (!sn)
        return -ENOMEM;
    if (q->nb_snapshots)
        memcpy(sn, q->snapshots, q->nb_snapshots * sizeof(*sn));
    e = &sn[q->nb_snapshots];
    e->l1_table_offset = l1_off;
    e->l1_size = q->l1_size;
    e->id = xstrdup(id);
    e->name = xstrdup(name);
    clock_gettime(CLOCK_REALTIME, &ts);
    e->date_sec = (uint32_t)ts.tv_sec;
    e->date_nsec = (uint32_t)(ts.tv_nsec / 1000 * 1000);   /* qemu keeps microseconds */
    e->disk_size = q->meta.h.size;
    e->has_disk_size = true;
    e->icount = 0;                                          /* what qemu-img writes */
    e->has_icount = true;
    if (!e->id || !e->name) {
        ret = -ENOMEM;
    } else {
        ret = write_table(q, sn, q->nb_snapshots + 1, &old);
    }
    if (ret < 0 && q->snapshots != sn) {
        free(e->id);
        free(e->name);
        free(sn);
        return ret;
    }
    free(old);
    if (ret == 0)
        ret = qcow2_flush(q);
    return ret;

undo:
    if (l1_off)
        qcow2_free_clusters(q, l1_off, l1_bytes);
    {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", err_msg(ret));
        change_refs(q, q->l1, q->l1_size, -1);
        return err_set(ret, "%s", msg);
    }
}

int qcow2_snapshot_apply(struct qcow2 *q, uint32_t idx)
{
    const struct qcow2_snapshot *sn = &q->snapshots[idx];
    uint64_t *sl1 = NULL, *nl1 = NULL, *be = NULL, new_size, need, new_l1_size, l1_off;
    uint64_t old_l1_off = q->meta.h.l1_table_offset, *old_l1;
    uint32_t old_l1_size = q->l1_size;
    bool in_place;
    int ret;

    /* As qemu: persistent bitmaps cannot follow a jump to other guest data. */
    if (q->meta.has_bitmaps_ext && (q->meta.h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return err_set(-EBUSY, "Device has active dirty bitmaps");
    ret = prepare(q);
    if (ret == 0)
        ret = read_sn_l1(q, sn, &sl1);
    if (ret < 0)
        return ret;
    new_size = sn->has_disk_size ? sn->disk_size : q->meta.h.size;
    need = qcow2_l1_entries_for(q->cluster_bits, q->extl2, new_size);
    if (need > QCOW2_MAX_L1_BYTES / 8) {
        free(sl1);
        return qcow2_signal_corruption(q, "Snapshot %s has an invalid disk size %llu",
                                       sn->id, (unsigned long long)new_size);
    }
    new_l1_size = MAX(MAX((uint64_t)old_l1_size, sn->l1_size), need);

    /* 1. the snapshot's references, held by the active tables too */
    ret = change_refs(q, sl1, sn->l1_size, 1);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret < 0)
        goto out;

    /* 2. the new active L1 table: in place when it fits, else new clusters */
    nl1 = xzalloc(ALIGN_UP(new_l1_size * 8, q->cluster_size));
    be = malloc(new_l1_size * 8 + 8);
    if (!nl1 || !be) {
        ret = -ENOMEM;
        goto undo;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        nl1[i] = sl1[i] & ~QCOW_OFLAG_COPIED;
    for (uint64_t i = 0; i < new_l1_size; i++)
        put_be64(&be[i], nl1[i]);
    in_place = !new_l1_size || (old_l1_size && qcow2_size_to_clusters(q, new_l1_size * 8) <=
                                qcow2_size_to_clusters(q, (uint64_t)old_l1_size * 8));
    if (in_place) {
        l1_off = old_l1_off;
    } else {
        int64_t r = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, new_l1_size * 8));
        if (r < 0) {
            ret = (int)r;
            goto undo;
        }
        l1_off = (uint64_t)r;
    }
    if (new_l1_size)
        ret = qcow2_write_metadata(q, in_place ? QCOW2_OL_ACTIVE_L1 : 0, l1_off, be,
                                   new_l1_size * 8);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    if (ret < 0)
        goto out;

    /* 3. the header: size, L1 size and offset in one write */
    if (new_size != q->meta.h.size || new_l1_size != old_l1_size || l1_off != old_l1_off) {
        uint8_t h[24];
        put_be64(h, new_size);
        put_be32(h + 8, q->meta.h.crypt_method);
        put_be32(h + 12, (uint32_t)new_l1_size);
        put_be64(h + 16, l1_off);
        ret = qcow2_write_metadata(q, QCOW2_OL_HEADER, QCOW2_HDR_SIZE, h, sizeof(h));
        if (ret == 0)
            ret = qfile_flush(q->file);
        if (ret < 0)
            goto out;
    }
    old_l1 = q->l1;
    q->l1 = nl1;
    nl1 = NULL;
    q->l1_size = (uint32_t)new_l1_size;
    q->meta.h.l1_size = (uint32_t)new_l1_size;
    q->meta.h.l1_table_offset = l1_off;
    q->meta.h.size = new_size;

    /* 4. what only the old active tables held is free now */
    if (!in_place && old_l1_size)
        ret = qcow2_free_clusters(q, old_l1_off, (uint64_t)old_l1_size * 8);
    if (ret == 0)
        ret = change_refs(q, old_l1, old_l1_size, -1);
    free(old_l1);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0)
        ret = update_copied(q);
out:
    free(be);
    free(nl1);
    free(sl1);
    return ret;

undo:
    /* nothing points at the new references yet: take them back */
    {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", err_msg(ret));
        change_refs(q, sl1, sn->l1_size, -1);
        ret = err_set(ret, "%s", msg);
    }
    goto out;
}

int qcow2_snapshot_delete(struct qcow2 *q, uint32_t idx)
{
    struct qcow2_snapshot gone = q->snapshots[idx], *sn = NULL, *old;
    uint32_t n = q->nb_snapshots - 1;
    uint64_t *sl1 = NULL;
    int ret;

    ret = prepare(q);
    if (ret == 0)
        ret = read_sn_l1(q, &gone, &sl1);
    if (ret == 0) {
        /* what it points at must be sound before it leaves the table */
        struct walk w = { .q = q, .limit = UINT64_MAX, .end = file_end(q), .dry = true };
        ret = walk_l1(&w, sl1, gone.l1_size);
    }
    if (ret < 0) {
        free(sl1);
        return ret;
    }
    /* 1. the table without it */
    if (n) {
        sn = xzalloc((size_t)n * sizeof(*sn));
        if (!sn) {
            free(sl1);
            return -ENOMEM;
        }
        memcpy(sn, q->snapshots, idx * sizeof(*sn));
        memcpy(sn + idx, q->snapshots + idx + 1, (n - idx) * sizeof(*sn));
    }
    ret = write_table(q, sn, n, &old);
    if (ret < 0 && q->snapshots != sn) {
        free(sn);
        free(sl1);
        return ret;
    }
    free(old);
    free(gone.id);
    free(gone.name);
    free(gone.extra);
    /* 2. its references, then its L1 table */
    if (ret == 0)
        ret = change_refs(q, sl1, gone.l1_size, -1);
    if (ret == 0 && gone.l1_size)
        ret = qcow2_free_clusters(q, gone.l1_table_offset, (uint64_t)gone.l1_size * 8);
    free(sl1);
    /* 3. the active state may be the only owner of some clusters now */
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0)
        ret = update_copied(q);
    return ret;
}

int qcow2_snapshot_rename(struct qcow2 *q, uint32_t idx, const char *name)
{
    struct qcow2_snapshot *sn, *old;
    char *oldname = q->snapshots[idx].name;
    int ret;

    ret = prepare(q);
    if (ret == 0)
        ret = qcow2_snapshot_check_name(q, name, (int)idx, true);
    if (ret < 0)
        return ret;
    sn = xzalloc((size_t)q->nb_snapshots * sizeof(*sn));
    if (!sn)
        return -ENOMEM;
    memcpy(sn, q->snapshots, q->nb_snapshots * sizeof(*sn));
    sn[idx].name = xstrdup(name);
    if (!sn[idx].name) {
        free(sn);
        return -ENOMEM;
    }
    ret = write_table(q, sn, q->nb_snapshots, &old);
    if (ret < 0 && q->snapshots != sn) {
        free(sn[idx].name);
        free(sn);
        return ret;
    }
    free(old);
    free(oldname);
    if (ret == 0)
        ret = qcow2_flush(q);
    return ret;
}
