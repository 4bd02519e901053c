/*
 * datapath.h - engine calls beyond the block driver interface, for commands
 * that drive a qcow2 image directly: convert's multi-threaded compressed
 * writes (write.c) and reading an internal snapshot in place of the active
 * state (snapshot_read.c).
 *
 * Owns: these declarations only. The generic data path is in qcow2.h.
 */
#ifndef QIMG_QCOW2_DATAPATH_H
#define QIMG_QCOW2_DATAPATH_H

#include "qcow2.h"

/*
 * One cluster handed to qcow2_write_compressed_run(). Exactly one of:
 *   clen > 0: cdata holds the cluster compressed by qcow2_compress() with
 *             the image's compression type;
 *   raw != NULL: the cluster did not shrink; raw holds its raw_len plain
 *             bytes (cluster_size, or less for the image's last cluster);
 *   neither:  leave the cluster as it is.
 */
struct qcow2_zcluster {
    const void *cdata;
    size_t clen;
    const void *raw;
    size_t raw_len;
};

/*
 * Write n consecutive clusters starting at the cluster-aligned guest offset
 * off, in guest order. Compressed data of neighbouring clusters is packed
 * and written with one pwrite per contiguous host run. Safe to call only
 * from one thread; compress in as many threads as you like beforehand.
 */
int qcow2_write_compressed_run(struct qcow2 *q, uint64_t off, const struct qcow2_zcluster *z,
                               size_t n);

/*
 * Make the whole clusters of [off, off+len) unallocated, so that reads fall
 * through to the backing file (qemu's full discard; commit empties the top
 * image with it; resize --shrink frees what lies past the new end). Tables
 * shared with a snapshot are copied first. Partial clusters at either end are left alone, except the
 * image's last cluster when the range reaches the end. References are
 * dropped only after the L2 tables no longer hold them.
 */
int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len);

/*
 * Read-only view of internal snapshot number idx (an index into
 * q->snapshots): its L1 table replaces the active one; the virtual size
 * stays the image's (as in qemu-img convert -l). The image must be open
 * read-only.
 */
int qcow2_snapshot_load_ro(struct qcow2 *q, uint32_t idx);

#endif
