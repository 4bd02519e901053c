/*
 * qcow1drv.c - the qcow (version 1) block driver, read-only: the glue
 * between the block layer and src/qcow2/qcow1.c. Holds no format logic.
 */
#include <stdlib.h>
#include <string.h>

#include "../qcow2/format.h"
#include "../qcow2/qcow1.h"
#include "block.h"

static int qcow1_probe(const uint8_t *buf, size_t len)
{
    if (len >= 8 && be32(buf) == QCOW_MAGIC && be32(buf + 4) == 1)
        return 100;
    return 0;
}

static int drv_open(struct blk *b, int flags, int depth)
{
    struct qfile *f;
    struct qcow1 *s;
    int ret;

    if (flags & BLK_RDWR)
        return err_set(-EROFS, "qcow images can only be opened read-only");
    ret = qfile_open(&f, b->filename, QF_RDONLY | ((flags & BLK_NOLOCK) ? QF_NOLOCK : 0));
    if (ret < 0)
        return ret;
    ret = qcow1_open(&s, f);
    if (ret < 0) {
        qfile_close(f);
        return ret;
    }
    if (s->backing_file && !(flags & BLK_NO_BACKING)) {
        char *path = blk_backing_path(b->filename, s->backing_file);
        if (!path) {
            qcow1_close(s);
            return -ENOMEM;
        }
        ret = blk_open_depth(&b->backing, path, NULL, flags & BLK_NOLOCK, depth + 1);
        if (ret < 0) {
            char inner[400];
            snprintf(inner, sizeof(inner), "%s", err_msg(ret));
            ret = err_set(ret, "Could not open backing file: Could not open '%s': %s",
                          path, inner);
            free(path);
            qcow1_close(s);
            return ret;
        }
        free(path);
        s->backing = b->backing;
    }
    b->priv = s;
    b->size = s->h.size;
    b->cluster_size = s->cluster_size;
    return 0;
}

static int drv_read(struct blk *b, uint64_t off, void *buf, size_t len)
{
    return qcow1_read(b->priv, off, buf, len);
}

static int drv_write(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    (void)b; (void)off; (void)buf; (void)len;
    return err_set(-EROFS, "qcow images are read-only in qimg");
}

static int drv_write_zeroes(struct blk *b, uint64_t off, uint64_t len)
{
    (void)b; (void)off; (void)len;
    return err_set(-EROFS, "qcow images are read-only in qimg");
}

static int drv_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                            uint64_t *map, int *flags)
{
    return qcow1_block_status(b->priv, off, len, pnum, map, flags);
}

static int drv_close(struct blk *b)
{
    qcow1_close(b->priv);       /* the block layer closes the backing chain */
    return 0;
}

const struct blk_driver blk_qcow1_driver = {
    .name = "qcow",
    .probe = qcow1_probe,
    .open = drv_open,
    .read = drv_read,
    .write = drv_write,
    .write_zeroes = drv_write_zeroes,
    .block_status = drv_block_status,
    .close = drv_close,
};
