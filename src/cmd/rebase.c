/*
 * rebase.c - `qimg rebase`: give a qcow2 image another backing file.
 *
 * Safe mode (the default) keeps what the guest sees: every range the image
 * does not allocate itself is read through the old backing chain and
 * through the new backing file, and the clusters where they differ are
 * written into the image (with the old content) before the header names
 * the new backing file. `-b ""` flattens: the new "backing" reads as zeros,
 * so everything the old chain shows is copied in, and the backing file is
 * removed. `-u` (unsafe) only rewrites the name and format.
 *
 * Crash-safe order: the copied data and its metadata are flushed before the
 * header changes (qcow2_change_backing in src/qcow2/backing.c); a crash
 * leaves the old backing file named, with the same guest content.
 *
 * Unlike qemu-img 7.2, which copies first and fails at the end, a missing
 * -F or a format that cannot name a backing file is refused before
 * anything is written (same message, same exit code). And with
 * --image-opts naming a key secret, a relative -b is taken relative to the
 * image's file, where qemu-img 7.2 refuses it ("Cannot use relative
 * backing file names for 'json:{...}'") and only an absolute one works.
 *
 * Owns: the rebase command. Must not: write to the backing files.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/backing.h"
#include "../qcow2/qcow2.h"
#include "cmd.h"
#include "image_args.h"

#define REBASE_CHUNK (2u << 20)

struct rebase_args {
    char *fmt, *backing, *backing_fmt;
    bool progress, unsafe, quiet, force_share;
    struct image_args ia;       /* --object, --image-opts (FILE only, as qemu-img) */
};

static int on_opt(int val, const char *arg, void *ctx)
{
    struct rebase_args *a = ctx;

    switch (val) {
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'b': free(a->backing); a->backing = (char *)arg; break;
    case 'F': free(a->backing_fmt); a->backing_fmt = (char *)arg; break;
    case 'p': a->progress = true; break;
    case 'u': a->unsafe = true; break;
    case 'q': a->quiet = true; break;
    case 'U': a->force_share = true; break;
    case 'O': return image_args_object(&a->ia, arg);
    case 'i': a->ia.image_opts = 1; break;
    }
    return 0;
}

static const struct poptOption rebase_popt[] = {
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "format of FILE (guessed when left out)", "fmt" },
    { NULL, 'p', POPT_ARG_NONE, NULL, 'p', "show a progress bar (on a terminal)", NULL },
    { NULL, 'u', POPT_ARG_NONE, NULL, 'u',
      "unsafe: only rewrite the backing file name and format", NULL },
    { NULL, 'q', POPT_ARG_NONE, NULL, 'q', "quiet mode", NULL },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U',
      "open the backing files even if another process holds them locked "
      "(FILE itself never)", NULL },
    { NULL, 'b', POPT_ARG_STRING, NULL, 'b',
      "the new backing file (\"\" for none: flatten the image)", "backing" },
    { NULL, 'F', POPT_ARG_STRING, NULL, 'F', "format of the new backing file", "fmt" },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string (driver=...,file.filename=...); -b stays a file name",
      NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

/* Clusters [off, off+n) where old and new differ get old's content. */
static int copy_differences(struct blk *b, uint64_t off, uint64_t n, const uint8_t *old,
                            const uint8_t *new, const uint8_t *zero)
{
    uint64_t g = b->cluster_size ? b->cluster_size : 512, i = 0;

    while (i < n) {
        uint64_t start, end, piece;
        bool all_zero = true;

        /* Skip clusters that read the same through both backing files. */
        piece = MIN(n - i, g - (off + i) % g);
        if (!memcmp(old + i, new + i, piece)) {
            i += piece;
            continue;
        }
        /* A run of differing clusters, written at once. */
        start = i;
        end = i + piece;
        while (end < n) {
            uint64_t p = MIN(n - end, g);
            if (!memcmp(old + end, new + end, p))
                break;
            end += p;
        }
        for (uint64_t k = start; k < end && all_zero; k += g)
            all_zero = !memcmp(old + k, zero, MIN(g, end - k));
        {
            int ret = all_zero ? blk_write_zeroes(b, off + start, end - start)
                               : blk_write(b, off + start, old + start, end - start);
            if (ret < 0)
                return error("Error while writing to COW image: %s", err_msg(ret));
        }
        i = end;
    }
    return 0;
}

/* Copy into b what differs between its old backing chain and nb. */
static int copy_safe(struct blk *b, struct blk *nb, bool show_progress)
{
    uint8_t *old = malloc(REBASE_CHUNK), *new = malloc(REBASE_CHUNK);
    uint8_t *zero = calloc(1, MAX(b->cluster_size, 512));
    struct progress p;
    int rc = 1, ret;

    if (!old || !new || !zero) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    progress_init(&p, show_progress);
    progress_update(&p, 0, b->size ? b->size : 1);
    for (uint64_t off = 0; off < b->size;) {
        uint64_t n = MIN(REBASE_CHUNK, b->size - off), pnum, map;
        int flags;

        ret = blk_block_status(b, off, n, &pnum, &map, &flags);
        if (ret < 0) {
            error("error while reading image metadata: %s", err_msg(ret));
            goto out;
        }
        if (!(flags & (BLK_STATUS_DATA | BLK_STATUS_ZERO))) {
            /* Not allocated here: what the guest sees comes from the old chain. */
            ret = blk_read_backing(b->backing, off, old, (size_t)pnum);
            if (ret == 0)
                ret = blk_read_backing(nb, off, new, (size_t)pnum);
            if (ret < 0) {
                error("error while reading from the backing files: %s", err_msg(ret));
                goto out;
            }
            if (copy_differences(b, off, pnum, old, new, zero))
                goto out;
        }
        off += pnum;
        progress_update(&p, off, b->size);
    }
    progress_end(&p);
    rc = 0;
out:
    free(old);
    free(new);
    free(zero);
    return rc;
}

/*
 * Open the current backing chain of top (opened without it) and hang it
 * under top. Separately, so that -U lets the backing files be shared while
 * top itself keeps its write lock, as qemu-img does.
 */
static int open_old_backing(struct blk *top, const char *file, bool force_share)
{
    struct qcow2 *q = top->priv;
    struct blk *old;
    char *path, inner[400];
    int ret;

    if (!q->meta.backing_file)
        return 0;
    path = blk_backing_path(top->filename, q->meta.backing_file);
    if (!path)
        return error("%s", strerror(ENOMEM));
    ret = blk_open_depth(&old, path, q->meta.backing_fmt, force_share ? BLK_NOLOCK : 0, 1);
    if (ret < 0) {
        snprintf(inner, sizeof(inner), "%s", err_msg(ret));
        cmd_open_error(file, err_set(ret, "Could not open backing file: Could not open '%s': %s",
                                     path, inner));
        free(path);
        return 1;
    }
    free(path);
    top->backing = old;
    q->backing = old;
    return 0;
}

static int change_error(const char *name, int ret)
{
    if (ret == -ENOSPC)
        return error("Could not change the backing file to '%s': No space left in the "
                     "file header", name);
    return error("Could not change the backing file to '%s': %s", name,
                 ret == -EINVAL ? "Invalid argument" : err_msg(ret));
}

int cmd_rebase(int argc, const char **argv)
{
    struct rebase_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "rebase",
        .synopsis = "[--object objectdef] [--image-opts] [-f fmt] [-p] [-u] [-q] [-U] "
                    "-b BACKING [-F fmt] FILE",
        .summary = "Change the backing file of FILE, keeping what the guest sees unless -u.",
        .opts = rebase_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 0,
        .max_args = -1,
    };
    struct blk *b = NULL, *nb = NULL;
    const char *name;
    char *path = NULL, *file = NULL;  /* the new backing file, FILE's own file */
    poptContext pc;
    const char **args;
    int nargs, ret, rc;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? 1 : 0;
        goto out;
    }
    rc = 1;
    if (!a.unsafe && !a.backing) {
        error("Must specify backing file (-b) or use unsafe mode (-u)");
        fprintf(stderr, "Try '%s rebase --help' for more information.\n", qimg_progname);
        goto out;
    }
    if (nargs != 1) {
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s rebase --help' for more information.\n", qimg_progname);
        goto out;
    }
    name = a.backing ? a.backing : "";
    /* The copy reads and writes guest data: an encrypted image needs its key
     * (qemu-img asks for it even with -u). */
    if (image_args_open(&a.ia, &b, args[0], a.fmt, BLK_RDWR | BLK_NO_BACKING | BLK_NEED_KEY,
                        NULL) < 0)
        goto out;
    file = strdup(b->filename);
    if (!file) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    /* Refuse now what qemu-img refuses only after copying. */
    if (b->drv != &blk_qcow2_driver) {
        error("Could not change the backing file to '%s': Operation not supported", name);
        goto out;
    }
    if (name[0] && !a.backing_fmt) {
        error("Could not change the backing file to '%s': backing format must be specified",
              name);
        goto out;
    }
    if (strlen(name) > QCOW2_MAX_BACKING_NAME) {
        change_error(name, -EINVAL);
        goto out;
    }
    if (!a.unsafe) {
        if (open_old_backing(b, args[0], a.force_share))
            goto out;
        if (name[0]) {
            path = blk_backing_path(file, name);
            ret = path ? blk_open(&nb, path, a.backing_fmt, a.force_share ? BLK_NOLOCK : 0)
                       : -ENOMEM;
            if (ret < 0) {
                if (!err_has_msg(ret))
                    error("Could not open new backing file '%s': Could not open '%s': %s",
                          name, path ? path : name, err_msg(ret));
                else
                    error("Could not open new backing file '%s': %s", name, err_msg(ret));
                goto out;
            }
        }
        if (copy_safe(b, nb, a.progress && !a.quiet))
            goto out;
    }
    ret = qcow2_change_backing(b->priv, name[0] ? name : NULL,
                               name[0] ? a.backing_fmt : NULL);
    if (ret < 0) {
        change_error(name, ret);
        goto out;
    }
    ret = blk_close(b);
    b = NULL;
    if (ret < 0) {
        error("Could not write '%s': %s", args[0], err_msg(ret));
        goto out;
    }
    rc = cmd_verify_image(file);
out:
    blk_close(nb);
    blk_close(b);
    free(path);
    free(file);
    image_args_free(&a.ia);
    free(a.fmt);
    free(a.backing);
    free(a.backing_fmt);
    cmd_done(pc);
    return rc;
}
