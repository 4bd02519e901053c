/*
 * backing.c - rewrite the backing file name and format of an open image,
 * after everything else it holds is on disk (see backing.h).
 *
 * Owns: q->meta.backing_file / backing_fmt changes. Must not: touch the
 * open backing chain (q->backing) or any cluster but the header.
 */
#include <stdlib.h>
#include <string.h>

#include "backing.h"

int qcow2_change_backing(struct qcow2 *q, const char *name, const char *fmt)
{
    struct qcow2_meta m;
    char *new_name = NULL, *new_fmt = NULL, *old_name, *old_fmt;
    uint8_t *buf;
    int ret;

    if (!q->writable)
        return err_set(-EBADF, "The image is opened read-only");
    if (name && strlen(name) > QCOW2_MAX_BACKING_NAME)
        return -EINVAL;
    if ((name && !(new_name = strdup(name))) || (fmt && !(new_fmt = strdup(fmt)))) {
        free(new_name);
        return -ENOMEM;
    }
    /* Does the new header fit? Try it on a copy before changing anything. */
    buf = xzalloc(q->cluster_size);
    if (!buf) {
        free(new_name);
        free(new_fmt);
        return -ENOMEM;
    }
    m = q->meta;
    m.backing_file = new_name;
    m.backing_fmt = new_fmt;
    ret = qcow2_header_build(&m, buf, q->cluster_size);
    free(buf);
    if (ret < 0) {
        free(new_name);
        free(new_fmt);
        return -ENOSPC;
    }
    /* Data, refcounts and L2 tables first: the new name goes last. */
    ret = qcow2_flush(q);
    if (ret < 0) {
        free(new_name);
        free(new_fmt);
        return ret;
    }
    old_name = q->meta.backing_file;
    old_fmt = q->meta.backing_fmt;
    q->meta.backing_file = new_name;
    q->meta.backing_fmt = new_fmt;
    free(old_name);
    free(old_fmt);
    ret = qcow2_write_header(q);
    if (ret == 0)
        ret = qfile_flush(q->file);
    return ret;
}
