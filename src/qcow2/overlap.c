/*
 * overlap.c - the check run before every metadata write: a write of one
 * kind of metadata must never land on another (header, L1 tables, active
 * L2 tables, refcount table and blocks, snapshot table). A hit means the
 * image is corrupt; the write is refused and the image marked corrupt.
 */
#include "qcow2.h"

static bool hits(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

int qcow2_overlap_check(struct qcow2 *q, int ignore, uint64_t offset, uint64_t len)
{
    const struct qcow2_header *h = &q->meta.h;
    uint64_t cs = q->cluster_size;
    int mask = QCOW2_OL_ALL & ~ignore;

    if ((mask & QCOW2_OL_HEADER) && hits(offset, len, 0, cs))
        return QCOW2_OL_HEADER;
    if ((mask & QCOW2_OL_ACTIVE_L1) && hits(offset, len, h->l1_table_offset, (uint64_t)q->l1_size * 8))
        return QCOW2_OL_ACTIVE_L1;
    if ((mask & QCOW2_OL_REFTABLE) &&
        hits(offset, len, h->refcount_table_offset, (uint64_t)h->refcount_table_clusters * cs))
        return QCOW2_OL_REFTABLE;
    if ((mask & QCOW2_OL_SNAPTABLE) && q->nb_snapshots &&
        hits(offset, len, h->snapshots_offset, qcow2_snapshots_size(q->snapshots, q->nb_snapshots)))
        return QCOW2_OL_SNAPTABLE;
    if (mask & QCOW2_OL_INACTIVE_L1)
        for (uint32_t i = 0; i < q->nb_snapshots; i++)
            if (hits(offset, len, q->snapshots[i].l1_table_offset,
                     (uint64_t)q->snapshots[i].l1_size * 8))
                return QCOW2_OL_INACTIVE_L1;
    if (mask & QCOW2_OL_ACTIVE_L2)
        for (uint32_t i = 0; i < q->l1_size; i++) {
            uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK;
            if (l2 && hits(offset, len, l2, cs))
                return QCOW2_OL_ACTIVE_L2;
        }
    if (mask & QCOW2_OL_REFBLOCK)
        for (uint64_t i = 0; i < q->reftable_size; i++) {
            uint64_t rb = q->reftable[i] & REFT_OFFSET_MASK;
            if (rb && hits(offset, len, rb, cs))
                return QCOW2_OL_REFBLOCK;
        }
    return 0;
}

int qcow2_write_metadata(struct qcow2 *q, int ignore, uint64_t offset,
                         const void *buf, size_t len)
{
    static const char *const names[] = {
        "the image header", "the active L1 table", "an active L2 table",
        "the refcount table", "a refcount block", "the snapshot table",
        "an inactive L1 table",
    };
    int hit = qcow2_overlap_check(q, ignore, offset, len);

    if (hit) {
        unsigned i = 0;
        while (!(hit & (1 << i)))
            i++;
        return qcow2_signal_corruption(q, "Preventing invalid write on metadata "
                                       "(overlaps with %s) at offset %#llx",
                                       names[i], (unsigned long long)offset);
    }
    return qfile_pwrite(q->file, buf, len, offset);
}
