/*
 * raw.c - the raw format: the file is the disk. Zero writes punch holes,
 * status comes from SEEK_DATA/SEEK_HOLE so convert can skip holes.
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"

static int raw_open(struct blk *b, int flags, int depth)
{
    struct qfile *f;
    int ret;

    (void)depth;
    ret = qfile_open(&f, b->filename,
                     ((flags & BLK_RDWR) ? QF_RDWR : QF_RDONLY) |
                     ((flags & BLK_NOLOCK) ? QF_NOLOCK : 0) |
                     ((flags & BLK_UNSAFE) ? QF_UNSAFE : 0));
    if (ret < 0)
        return ret;
    ret = qfile_size(f, &b->size);
    if (ret < 0) {
        qfile_close(f);
        return ret;
    }
    /* qemu counts whole 512-byte sectors: a 70000-byte file is a 70144-byte
     * disk whose tail reads as zeros (info, convert and compare agree). */
    b->size = ALIGN_UP(b->size, 512);
    b->priv = f;
    return 0;
}

static int raw_read(struct blk *b, uint64_t off, void *buf, size_t len)
{
    return qfile_pread_pad(b->priv, buf, len, off);
}

static int raw_write(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    return qfile_pwrite(b->priv, buf, len, off);
}

static int raw_write_zeroes(struct blk *b, uint64_t off, uint64_t len)
{
    static const uint8_t zeros[65536];
    int ret = qfile_discard(b->priv, off, len);

    if (ret != -ENOTSUP && ret != -EOPNOTSUPP)
        return ret;
    while (len) {
        size_t n = (size_t)MIN(len, sizeof(zeros));
        ret = qfile_pwrite(b->priv, zeros, n, off);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

static int raw_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                            uint64_t *map, int *flags)
{
    bool data;
    int ret = qfile_extent(b->priv, off, len, &data, pnum);

    if (ret < 0)
        return ret;
    *map = off;
    *flags = BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET |
             (data ? BLK_STATUS_DATA : BLK_STATUS_ZERO);
    return 0;
}

static int raw_flush(struct blk *b)
{
    return qfile_flush(b->priv);
}

static int raw_close(struct blk *b)
{
    return qfile_close(b->priv);
}

const struct blk_driver blk_raw_driver = {
    .name = "raw",
    .probe = NULL,      /* raw is what is left when nothing else matches */
    .open = raw_open,
    .read = raw_read,
    .write = raw_write,
    .write_zeroes = raw_write_zeroes,
    .block_status = raw_block_status,
    .flush = raw_flush,
    .close = raw_close,
};
