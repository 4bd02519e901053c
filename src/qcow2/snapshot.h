/*
 * snapshot.h - internal snapshots: create, apply (revert to), delete and
 * rename, on an image opened read-write; and resolving the string a user
 * typed to snapshot entries. The table's bytes are snapshot_table.c's.
 *
 * Every operation orders its writes (refcounts -> tables -> header, with
 * fsyncs between; an old table is freed only once the header no longer
 * points at it), so that a crash leaves at worst leaked clusters.
 */
#ifndef QIMG_QCOW2_SNAPSHOT_H
#define QIMG_QCOW2_SNAPSHOT_H

#include "qcow2.h"

/* qemu keeps at most this many bytes of a name (longer ones it truncates,
 * and then cannot list or address them); qimg refuses longer names. */
#define QCOW2_SN_NAME_MAX 255

/*
 * Is name acceptable for a new snapshot (or as the new name of snapshot
 * `self`, -1 for none)? Refuses empty and over-long names, a table that
 * would exceed qemu's limits, and, unless allow_dup, a name that another
 * snapshot already has as its name or id. Returns 0 or -errno with a
 * message.
 */
int qcow2_snapshot_check_name(const struct qcow2 *q, const char *name, int self,
                              bool allow_dup);

/*
 * The snapshots that key designates, by id or by name: their indexes in
 * out[] (at most max), the one qemu-img would take first. qemu-img looks
 * up -a by id first, then by name; -d by name only (qimg falls back to
 * the id). Returns the number of distinct snapshots that match (which may
 * exceed max); 0 when none does.
 */
enum qcow2_sn_order {
    QCOW2_SN_ID_FIRST,
    QCOW2_SN_NAME_FIRST,
};
unsigned qcow2_snapshot_lookup(const struct qcow2 *q, const char *key,
                               enum qcow2_sn_order order, uint32_t *out, unsigned max);

/* Create a snapshot of the active state named name (checked by the caller
 * with qcow2_snapshot_check_name). Its id is max numeric id + 1, as qemu. */
int qcow2_snapshot_create(struct qcow2 *q, const char *name);
/* Make snapshot idx the active state (its disk size becomes the image's). */
int qcow2_snapshot_apply(struct qcow2 *q, uint32_t idx);
/* Delete snapshot idx, freeing what nothing else references. */
int qcow2_snapshot_delete(struct qcow2 *q, uint32_t idx);
/* Give snapshot idx a new name (checked by the caller). */
int qcow2_snapshot_rename(struct qcow2 *q, uint32_t idx, const char *name);

#endif
