/*
 * block.c - opening images by format or by probing, and the calls every
 * command makes through the driver table. Read-only opens never write.
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"

static const struct blk_driver *const drivers[] = {
    &blk_qcow2_driver,
    &blk_qcow1_driver,
    &blk_raw_driver,
};

const struct blk_driver *blk_find_driver(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
        if (!strcmp(drivers[i]->name, name))
            return drivers[i];
    return NULL;
}

int blk_probe(const char *filename, const struct blk_driver **drv)
{
    uint8_t buf[512];
    struct qfile *f;
    uint64_t size;
    int ret, best = 0;

    ret = qfile_open(&f, filename, QF_RDONLY | QF_NOLOCK);
    if (ret < 0)
        return ret;
    ret = qfile_size(f, &size);
    if (ret == 0)
        ret = qfile_pread_pad(f, buf, sizeof(buf), 0);
    qfile_close(f);
    if (ret < 0)
        return ret;
    *drv = &blk_raw_driver;
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++) {
        int score = drivers[i]->probe ? drivers[i]->probe(buf, MIN(size, sizeof(buf))) : 0;
        if (score > best) {
            best = score;
            *drv = drivers[i];
        }
    }
    return 0;
}

int blk_open_depth(struct blk **out, const char *filename, const char *fmt, int flags, int depth)
{
    const struct blk_driver *drv;
    struct blk *b;
    int ret;

    *out = NULL;
    if (depth > BLK_MAX_CHAIN)
        return err_set(-ELOOP, "Backing chain is too long (more than %d images); "
                       "is there a loop?", BLK_MAX_CHAIN);
    if (fmt) {
        drv = blk_find_driver(fmt);
        if (!drv)
            return err_set(-EINVAL, "Unknown driver '%s'", fmt);
    } else {
        ret = blk_probe(filename, &drv);
        if (ret < 0)
            return ret;
    }
    b = xzalloc(sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->drv = drv;
    b->flags = flags;
    b->filename = strdup(filename);
    if (!b->filename) {
        free(b);
        return -ENOMEM;
    }
    ret = drv->open(b, flags, depth);
    if (ret < 0) {
        free(b->filename);
        free(b);
        return ret;
    }
    *out = b;
    return 0;
}

int blk_open(struct blk **out, const char *filename, const char *fmt, int flags)
{
    return blk_open_depth(out, filename, fmt, flags, 0);
}

int blk_open_key(struct blk **out, const char *filename, const char *fmt, int flags,
                 const struct blk_key *key)
{
    bool given = key && (key->key_secret || key->format);
    struct blk *b;
    int ret;

    ret = blk_open_depth(&b, filename, fmt, flags, 0);
    if (ret < 0)
        return ret;
    if (!b->drv->set_key) {
        if (given)
            ret = err_set(-EINVAL, "Block format '%s' does not support the option '%s'",
                          b->drv->name, key->key_secret ? "encrypt.key-secret" : "encrypt.format");
    } else if (given || (flags & BLK_NEED_KEY)) {
        ret = b->drv->set_key(b, key, flags & BLK_NEED_KEY);
    }
    if (ret < 0) {
        blk_close(b);
        return ret;
    }
    *out = b;
    return 0;
}

int blk_close(struct blk *b)
{
    int ret = 0, r;

    if (!b)
        return 0;
    ret = b->drv->close(b);
    r = blk_close(b->backing);
    if (!ret)
        ret = r;
    free(b->filename);
    free(b);
    return ret;
}

int blk_read(struct blk *b, uint64_t off, void *buf, size_t len)
{
    if (off > b->size || len > b->size - off)
        return err_set(-EINVAL, "read of %zu bytes at %llu is past the end of the image",
                       len, (unsigned long long)off);
    return b->drv->read(b, off, buf, len);
}

int blk_write(struct blk *b, uint64_t off, const void *buf, size_t len)
{
    if (!(b->flags & BLK_RDWR))
        return -EBADF;
    if (off > b->size || len > b->size - off)
        return err_set(-EINVAL, "write of %zu bytes at %llu is past the end of the image",
                       len, (unsigned long long)off);
    return b->drv->write(b, off, buf, len);
}

int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len)
{
    if (!(b->flags & BLK_RDWR))
        return -EBADF;
    if (off > b->size || len > b->size - off)
        return -EINVAL;
    return b->drv->write_zeroes(b, off, len);
}

int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
                     uint64_t *map, int *flags)
{
    if (off >= b->size) {
        *pnum = 0;
        *flags = 0;
        return 0;
    }
    if (len > b->size - off)
        len = b->size - off;
    *map = 0;
    return b->drv->block_status(b, off, len, pnum, map, flags);
}

int blk_read_backing(struct blk *b, uint64_t off, void *buf, size_t len)
{
    if (!b || off >= b->size) {
        memset(buf, 0, len);
        return 0;
    }
    if (len > b->size - off) {
        memset((uint8_t *)buf + (b->size - off), 0, len - (size_t)(b->size - off));
        len = (size_t)(b->size - off);
    }
    return blk_read(b, off, buf, len);
}

int blk_flush(struct blk *b)
{
    return b->drv->flush ? b->drv->flush(b) : 0;
}

char *blk_backing_path(const char *image, const char *backing)
{
    const char *slash;
    char *out;
    size_t dlen;

    if (backing[0] == '/' || !(slash = strrchr(image, '/')))
        return strdup(backing);
    dlen = (size_t)(slash - image) + 1;
    out = malloc(dlen + strlen(backing) + 1);
    if (!out)
        return NULL;
    memcpy(out, image, dlen);
    strcpy(out + dlen, backing);
    return out;
}
