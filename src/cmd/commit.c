/*
 * commit.c - `qimg commit`: write what an overlay holds into its backing
 * file, as qemu-img 7.2's commit does.
 *
 * Every range that the top image or an image between it and the base
 * decides (data, zeros, or the zeros past the end of a shorter image) is
 * written into the base: data read through the top, zeros as zero writes.
 * The base grows first when it is smaller than the top. Then, unless -d (or
 * -b, which implies it), the top is emptied: all its clusters become
 * unallocated, so it reads as the base does.
 *
 * Crash-safe order: the base's new data and metadata are flushed before the
 * top is emptied; a crash in between leaves the top still holding its data,
 * so the guest sees the same disk.
 *
 * The chain is opened here layer by layer: the base read-write (with its
 * own backing chain, read-only), the images above it read-only, linked
 * together so reads through the top fall through them as usual.
 *
 * Owns: the commit command. Must not: write to the images between the top
 * and the base.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/amend.h"
#include "../qcow2/datapath.h"
#include "../qcow2/qcow2.h"
#include "cmd.h"
#include "image_args.h"

#define COMMIT_BUF (4u << 20)

struct commit_args {
    char *fmt, *base;
    bool drop, progress, quiet;
    struct image_args ia;       /* --object, --image-opts (FILE only, as qemu-img) */
};

static int on_opt(int val, const char *arg, void *ctx)
{
    struct commit_args *a = ctx;

    switch (val) {
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'b': free(a->base); a->base = (char *)arg; break;
    case 'd': a->drop = true; break;
    case 'p': a->progress = true; break;
    case 'q': a->quiet = true; break;
    case 'O': return image_args_object(&a->ia, arg);
    case 'i': a->ia.image_opts = 1; break;
    }
    return 0;
}

static const struct poptOption commit_popt[] = {
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "format of FILE (guessed when left out)", "fmt" },
    { NULL, 'b', POPT_ARG_STRING, NULL, 'b',
      "commit into this image of the backing chain (implies -d)", "base" },
    { NULL, 'd', POPT_ARG_NONE, NULL, 'd', "do not empty FILE afterwards", NULL },
    { NULL, 'p', POPT_ARG_NONE, NULL, 'p', "show a progress bar (on a terminal)", NULL },
    { NULL, 'q', POPT_ARG_NONE, NULL, 'q', "quiet mode", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string (driver=...,file.filename=...); -b stays a file name",
      NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

/* The backing file name and format an image gives (NULL: none). */
static void backing_of(const struct blk *b, const char **name, const char **fmt)
{
    *name = *fmt = NULL;
    if (b->drv == &blk_qcow2_driver) {
        const struct qcow2 *q = b->priv;
        *name = q->meta.backing_file;
        *fmt = q->meta.backing_fmt;
    }
}

/*
 * Does the user's name for the base designate the image at path (named
 * `stored` in the header of `upper`)? As qemu matches it: an absolute name
 * is compared as a string; a relative one is taken relative to upper's
 * directory and compared as a canonical path.
 */
static bool names_image(const char *want, const struct blk *upper, const char *stored,
                        const char *path)
{
    char *rel, *a, *b;
    bool same;

    if (want[0] == '/')
        return !strcmp(want, stored) || !strcmp(want, path);
    rel = blk_backing_path(upper->filename, want);
    a = rel ? realpath(rel, NULL) : NULL;
    b = realpath(path, NULL);
    same = a && b && !strcmp(a, b);
    free(rel);
    free(a);
    free(b);
    return same;
}

/* Make lower the backing image of upper (the block layer closes it). */
static void link_layer(struct blk *upper, struct blk *lower)
{
    upper->backing = lower;
    if (upper->drv == &blk_qcow2_driver)
        ((struct qcow2 *)upper->priv)->backing = lower;
}

/*
 * Open the chain below top down to the base (the immediate backing file,
 * or the one named base_name), linking each image to the one above. The
 * base is opened read-write and returned in *base.
 */
static int open_chain(struct blk *top, const char *top_name, const char *base_name,
                      struct blk **base)
{
    struct blk *cur = top;
    const char *name, *fmt;

    backing_of(top, &name, &fmt);
    if (!name)
        return error("Image does not have a backing file");
    for (int depth = 1; name; depth++) {
        char *path = blk_backing_path(cur->filename, name);
        bool is_base;
        struct blk *next;
        int ret;

        if (!path)
            return error("%s", strerror(ENOMEM));
        if (depth > BLK_MAX_CHAIN) {
            free(path);
            return error("Backing chain is too long (more than %d images); is there a loop?",
                         BLK_MAX_CHAIN);
        }
        is_base = !base_name || names_image(base_name, cur, name, path);
        /* The base keeps its own backing chain: zero writes must know
         * whether something shows through from below. */
        ret = blk_open(&next, path, fmt, is_base ? BLK_RDWR : BLK_NO_BACKING);
        if (ret < 0) {
            error("Could not open backing file: Could not open '%s': %s", path, err_msg(ret));
            free(path);
            return 1;
        }
        free(path);
        link_layer(cur, next);
        if (is_base) {
            *base = next;
            return 0;
        }
        cur = next;
        backing_of(cur, &name, &fmt);
    }
    return error("Did not find '%s' in the backing chain of '%s'", base_name, top_name);
}

/*
 * Status of [off, off+len) in the images above base: *decided when one of
 * them decides it (ZERO: reads as zeros), else the base shows through.
 */
static int above_status(struct blk *top, struct blk *base, uint64_t off, uint64_t len,
                        uint64_t *pnum, bool *decided, bool *zero)
{
    uint64_t map;
    int flags, ret;

    *decided = *zero = false;
    for (struct blk *cur = top; cur != base; cur = cur->backing) {
        if (off >= cur->size) {
            /* past the end of a shorter image: zeros, whatever is below */
            *pnum = len;
            *decided = *zero = true;
            return 0;
        }
        ret = blk_block_status(cur, off, len, pnum, &map, &flags);
        if (ret < 0)
            return ret;
        len = *pnum;
        if (flags & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) {
            *decided = true;
            *zero = (flags & BLK_STATUS_ZERO) && !(flags & BLK_STATUS_DATA);
            return 0;
        }
    }
    *pnum = len;
    return 0;
}

static int grow_base(struct blk *base, uint64_t size)
{
    int ret;

    if (base->drv == &blk_qcow2_driver) {
        struct qcow2_amend_opts o = { .lazy_refcounts = -1, .size = size };
        ret = qcow2_amend(base->priv, &o);
    } else if (base->drv == &blk_raw_driver) {
        ret = qfile_truncate(base->priv, size);
    } else {
        ret = err_set(-ENOTSUP, "Cannot grow image '%s'", base->filename);
    }
    if (ret == 0)
        base->size = size;
    return ret;
}

static int copy_down(struct blk *top, struct blk *base, bool show_progress)
{
    uint8_t *buf = malloc(COMMIT_BUF);
    struct progress p;
    int ret = 0;

    if (!buf)
        return -ENOMEM;
    progress_init(&p, show_progress);
    progress_update(&p, 0, top->size ? top->size : 1);
    for (uint64_t off = 0; off < top->size && ret == 0;) {
        uint64_t pnum;
        bool decided, zero;

        ret = above_status(top, base, off, MIN(top->size - off, COMMIT_BUF), &pnum,
                           &decided, &zero);
        if (ret < 0)
            break;
        if (decided && zero) {
            ret = blk_write_zeroes(base, off, pnum);
        } else if (decided) {
            ret = blk_read(top, off, buf, (size_t)pnum);
            if (ret == 0)
                ret = blk_write(base, off, buf, (size_t)pnum);
        }
        off += pnum;
        progress_update(&p, off, top->size);
    }
    if (ret == 0)
        progress_end(&p);
    free(buf);
    return ret;
}

/*
 * After emptying: give the freed clusters back to the file system, as
 * qemu's emptying does (its file shrinks to a few clusters). Everything is
 * flushed first; then the free clusters at the end are cut off and the
 * free ones before them punched out (best effort where holes are not
 * supported).
 */
static int shrink_top(struct qcow2 *q)
{
    uint64_t size, end, rc;
    int ret = qcow2_flush(q);

    if (ret == 0)
        ret = qfile_size(q->file, &size);
    if (ret < 0 || q->data_file != q->file)
        return ret;
    end = (size + q->cluster_size - 1) >> q->cluster_bits;
    for (; end > 0; end--) {
        ret = qcow2_refcount_get(q, end - 1, &rc);
        if (ret < 0)
            return ret;
        if (rc)
            break;
    }
    if (end << q->cluster_bits < size) {
        ret = qfile_truncate(q->file, end << q->cluster_bits);
        if (ret < 0)
            return ret;
    }
    for (uint64_t i = 1; i < end; i++) {
        ret = qcow2_refcount_get(q, i, &rc);
        if (ret < 0)
            return ret;
        if (!rc)
            qfile_discard(q->file, i << q->cluster_bits, q->cluster_size);
    }
    return 0;
}

int cmd_commit(int argc, const char **argv)
{
    struct commit_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "commit",
        .synopsis = "[--object objectdef] [--image-opts] [-f fmt] [-b base] [-d] [-p] [-q] FILE",
        .summary = "Write the data of FILE into its backing file, then empty FILE unless -d.",
        .opts = commit_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 1,
        .max_args = -1,
    };
    struct blk *top = NULL, *base = NULL;
    char *base_path = NULL, *top_path = NULL;
    poptContext pc;
    const char **args;
    int nargs, ret, rc;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? 1 : 0;
        goto out;
    }
    rc = 1;
    if (nargs > 1) {
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s commit --help' for more information.\n", qimg_progname);
        goto out;
    }
    /* The copy reads FILE's guest data: an encrypted FILE needs its key. */
    if (image_args_open(&a.ia, &top, args[0], a.fmt, BLK_RDWR | BLK_NO_BACKING | BLK_NEED_KEY,
                        NULL) < 0)
        goto out;
    if (open_chain(top, args[0], a.base, &base))
        goto out;
    base_path = strdup(base->filename);
    top_path = strdup(top->filename);
    if (!base_path || !top_path) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    if (base->size < top->size) {
        ret = grow_base(base, top->size);
        if (ret < 0) {
            error("Could not resize '%s' to the size of '%s': %s", base->filename, args[0],
                  err_msg(ret));
            goto out;
        }
    }
    ret = copy_down(top, base, a.progress && !a.quiet);
    if (ret == 0)
        ret = blk_flush(base);
    if (ret < 0) {
        error("Block job failed: %s", err_msg(ret));
        goto out;
    }
    /* The base holds everything now: only then may the top let go. */
    if (!a.drop && !a.base && top->drv == &blk_qcow2_driver) {
        ret = qcow2_discard(top->priv, 0, top->size);
        if (ret == 0)
            ret = shrink_top(top->priv);
        if (ret < 0) {
            error("Could not empty %s: %s", args[0], err_msg(ret));
            goto out;
        }
    }
    ret = blk_close(top);       /* closes the chain, base included */
    top = NULL;
    if (ret < 0) {
        error("Block job failed: %s", err_msg(ret));
        goto out;
    }
    if (!a.quiet)
        printf("Image committed.\n");
    rc = cmd_verify_image(base_path) || cmd_verify_image(top_path);
out:
    blk_close(top);
    free(base_path);
    free(top_path);
    image_args_free(&a.ia);
    free(a.fmt);
    free(a.base);
    cmd_done(pc);
    return rc;
}
