/*
 * snapshot_read.c - reading an internal snapshot without applying it: the
 * snapshot's L1 table is loaded in place of the active one, so the normal
 * read path (cluster.c) returns the snapshot's contents. For convert -l.
 * The virtual size stays the image's current one, as qemu-img convert -l
 * keeps it: past the snapshot's own disk size its (shorter) L1 table maps
 * nothing, so that part reads from the backing file or as zeros.
 *
 * Must not: write anything; the image has to be open read-only, since the
 * snapshot's tables are not the active ones the writers would update.
 */
#include <stdlib.h>
#include <string.h>

#include "datapath.h"

int qcow2_snapshot_load_ro(struct qcow2 *q, uint32_t idx)
{
    const struct qcow2_snapshot *sn;
    uint64_t fsize, bytes, *t;
    int ret;

    if (q->writable)
        return err_set(-EINVAL, "snapshots can only be loaded into a read-only image");
    if (idx >= q->nb_snapshots)
        return err_set(-ENOENT, "Can't find snapshot");
    sn = &q->snapshots[idx];
    bytes = (uint64_t)sn->l1_size * 8;
    ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        return ret;
    if (bytes > QCOW2_MAX_L1_BYTES)
        return err_set(-EFBIG, "Snapshot L1 table too large");
    if (sn->l1_size && (sn->l1_table_offset & (q->cluster_size - 1)))
        return err_set(-QIMG_ECORRUPT, "Snapshot L1 table offset %#llx is not cluster "
                       "aligned", (unsigned long long)sn->l1_table_offset);
    if (sn->l1_size && (sn->l1_table_offset > fsize || bytes > fsize - sn->l1_table_offset))
        return err_set(-QIMG_ECORRUPT, "Snapshot L1 table at offset %#llx lies past the "
                       "end of the file", (unsigned long long)sn->l1_table_offset);
    if (sn->has_disk_size &&
        qcow2_l1_entries_for(q->cluster_bits, q->extl2, sn->disk_size) > sn->l1_size)
        return err_set(-QIMG_ECORRUPT, "Snapshot L1 table is too small for its disk size");

    t = malloc(MAX(bytes, 8));
    if (!t)
        return -ENOMEM;
    ret = bytes ? qfile_pread(q->file, t, bytes, sn->l1_table_offset) : 0;
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        t[i] = be64(&t[i]);
    free(q->l1);
    q->l1 = t;
    q->l1_size = sn->l1_size;
    q->zcache_entry = 0;
    return 0;
}
