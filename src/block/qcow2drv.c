/*
 * qcow2drv.c - the qcow2 block driver: the glue between the block layer's
 * calls and the engine in src/qcow2/. Holds no format logic of its own.
 */
#include <stdlib.h>
#include <string.h>

#include "../qcow2/crypto.h"
#include "../qcow2/qcow2.h"
#include "../util/secret.h"
#include "block.h"

static int qcow2_probe(const uint8_t *buf, size_t len)
{
    if (len >= 8 && be32(buf) == QCOW_MAGIC && be32(buf + 4) >= 2)
        return 100;
    return 0;
}

static int drv_open(struct blk *b, int flags, int depth)
{
    struct qfile *f;
    struct qcow2 *q;
    int qflags = 0, ret;

    if (flags & BLK_RDWR)
        qflags |= QCOW2_OPEN_RDWR;
    if (flags & BLK_NO_BACKING)
        qflags |= QCOW2_OPEN_NO_BACKING;
    if (flags & BLK_CHECK)
        qflags |= QCOW2_OPEN_CHECK;
    if (flags & BLK_NOLOCK)
        qflags |= QCOW2_OPEN_NOLOCK;
    ret = qfile_open(&f, b->filename, ((flags & BLK_RDWR) ? QF_RDWR : QF_RDONLY) |
                                      ((flags & BLK_NOLOCK) ? QF_NOLOCK : 0) |
                                      ((flags & BLK_UNSAFE) ? QF_UNSAFE : 0));
    if (ret < 0)
        return ret;
    ret = qcow2_open_blk(&q, b, f, qflags, depth);
    if (ret < 0) {
        qfile_close(f);
        return ret;
    }
    b->priv = q;
    b->size = q->meta.h.size;
    b->cluster_size = q->cluster_size;
    b->backing = q->backing;
    return 0;
}

static int drv_read(struct blk *b, uint64_t off, void *buf, size_t len)
{
    return qcow2_read(b->priv, off, buf, len);
}

static int drv_write(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    return qcow2_write(b->priv, off, buf, len);
}

static int drv_write_zeroes(struct blk *b, uint64_t off, uint64_t len)
{
    return qcow2_write_zeroes(b->priv, off, len);
}

static int drv_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    return qcow2_write_compressed(b->priv, off, buf, len);
}

static int drv_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                            uint64_t *map, int *flags)
{
    return qcow2_block_status(b->priv, off, len, pnum, map, flags);
}

static int drv_flush(struct blk *b)
{
    return qcow2_flush(b->priv);
}

static int drv_close(struct blk *b)
{
    struct qcow2 *q = b->priv;

    q->backing = NULL;          /* the block layer closes the chain */
    return qcow2_close(q);
}

static int drv_set_key(struct blk *b, const struct blk_key *key, bool need)
{
    struct qcow2 *q = b->priv;
    const uint8_t *pass = NULL;
    size_t len = 0;
    int ret;

    ret = qcow2_crypto_check_format(q, key ? key->format : NULL);
    if (ret == 0 && q->meta.h.crypt_method && key && key->key_secret)
        ret = secret_lookup_passphrase(key->secrets, key->key_secret, &pass, &len);
    if (ret == 0)
        ret = qcow2_set_key(q, pass, len, need);
    return ret;
}

const struct blk_driver blk_qcow2_driver = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = drv_open,
    .read = drv_read,
    .write = drv_write,
    .write_zeroes = drv_write_zeroes,
    .write_compressed = drv_write_compressed,
    .block_status = drv_block_status,
    .flush = drv_flush,
    .close = drv_close,
    .set_key = drv_set_key,
};
