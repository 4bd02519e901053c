/*
 * backing.h - changing the backing file an image names (rebase, commit):
 * the name in the header and the backing format extension.
 *
 * Owns: these declarations. The header layout itself is header.c's.
 */
#ifndef QIMG_QCOW2_BACKING_H
#define QIMG_QCOW2_BACKING_H

#include "qcow2.h"

/*
 * Name backing file `name` of format `fmt` (either may be NULL: no backing
 * file / no format extension) in q's header. Crash-safe: everything the
 * image holds (guest data, refcounts, L2 tables) is flushed first, the new
 * header is built in memory and checked to fit before anything changes,
 * and written last in one write, then synced. -EINVAL for a name longer
 * than qcow2 allows, -ENOSPC when it does not fit in the header cluster.
 * q->backing (the open backing image) is left as it is.
 */
int qcow2_change_backing(struct qcow2 *q, const char *name, const char *fmt);

#endif
