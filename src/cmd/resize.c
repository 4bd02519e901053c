/*
 * resize.c - qimg resize: change an image's virtual size, as qemu-img
 * resize 7.2 does (the same checks, messages and order).
 *
 * raw: the file is truncated or extended (--preallocation=falloc|full
 * allocates the new part). qcow2: the amend engine (src/qcow2/amend.c)
 * grows the L1 table or, with --shrink, deallocates everything past the
 * new end (internal snapshots keep what they reference) and cuts the
 * file's unused tail; --preallocation writes the new part as zeros through
 * the data path. The result goes through the shared checker.
 *
 * Must not: touch qcow2 metadata itself.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../qcow2/amend.h"
#include "../qcow2/create.h"
#include "cmd.h"
#include "image_args.h"

enum { OPT_OBJECT = 1, OPT_PREALLOC };

struct resize_ctx {
    struct image_args ia;
    int prealloc;               /* enum qcow2_prealloc */
};

static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full" };

static int on_opt(int val, const char *arg, void *opaque)
{
    struct resize_ctx *c = opaque;

    switch (val) {
    case OPT_OBJECT:
        return image_args_object(&c->ia, arg);     /* help ends the command */
    case OPT_PREALLOC:
        for (unsigned i = 0; i < ARRAY_SIZE(prealloc_names); i++)
            if (!strcmp(arg, prealloc_names[i])) {
                c->prealloc = (int)i;
                return 0;
            }
        error("Invalid preallocation mode '%s'", arg);
        return -1;
    }
    return 0;
}

/*
 * A size as qemu's option parser reads it: anything below 2^64 (parse_size
 * stops at 2^63, which qemu-img resize then calls "not positive").
 */
static int parse_size_u64(const char *s, uint64_t *out)
{
    int ret = parse_size(s, out);
    const char *sfx = "kmgtpe";
    long double v;
    char *end;

    if (ret != -ERANGE)
        return ret;
    v = strtold(s, &end);
    if (*end) {
        const char *k = strchr(sfx, tolower((unsigned char)*end));
        for (int i = 0; k && i <= k - sfx; i++)
            v *= 1024;
    }
    if (v >= 18446744073709551616.0L)
        return -ERANGE;
    *out = (uint64_t)v;
    return 0;
}

/* raw: the file is the disk. */
static int resize_raw(struct blk *b, uint64_t size, int prealloc)
{
    struct qfile *f = b->priv;
    uint64_t cur;
    int ret = qfile_size(f, &cur);

    if (ret < 0)
        return ret;
    switch (prealloc) {
    case QCOW2_PREALLOC_METADATA:
        return err_set(-ENOTSUP, "Unsupported preallocation mode: metadata");
    case QCOW2_PREALLOC_FALLOC:
        if (size > cur && (ret = qfile_allocate(f, cur, size - cur)) < 0)
            return err_set(ret, "Could not preallocate new data: %s", strerror(-ret));
        return 0;
    case QCOW2_PREALLOC_FULL: {
        static const uint8_t zeros[65536];
        ret = qfile_truncate(f, cur);
        for (uint64_t off = cur; ret == 0 && off < size;) {
            size_t n = (size_t)MIN(size - off, sizeof(zeros));
            ret = qfile_pwrite(f, zeros, n, off);
            off += n;
        }
        if (ret < 0)
            return err_set(ret, "Could not write zeros for preallocation: %s", strerror(-ret));
        return 0;
    }
    default:
        ret = qfile_truncate(f, size);
        if (ret < 0)
            return err_set(ret, "Could not resize file: %s", strerror(-ret));
        return 0;
    }
}

/* qcow2: the amend engine's size step; preallocation writes zeros. */
static int resize_qcow2(struct blk *b, uint64_t size, int prealloc)
{
    struct qcow2 *q = b->priv;
    struct qcow2_amend_opts o = { .lazy_refcounts = -1, .size = size, .force = true,
                                  .discard = true };
    uint64_t old = q->meta.h.size;
    int ret;

    if (size == old)
        return size % 512 ? err_set(-EINVAL, "The new size must be a multiple of 512") : 0;
    ret = qcow2_amend(q, &o);
    if (ret < 0 || prealloc == QCOW2_PREALLOC_OFF)
        return ret;
    b->size = size;
    {
        size_t bsz = 1 << 20;
        uint8_t *z = calloc(1, bsz);
        if (!z)
            return -ENOMEM;
        for (uint64_t off = old; ret == 0 && off < size;) {
            size_t n = (size_t)MIN(size - off, bsz);
            ret = qcow2_write(q, off, z, n);
            off += n;
        }
        free(z);
    }
    return ret < 0 ? ret : qcow2_flush(q);
}

int cmd_resize(int argc, const char **argv)
{
    struct resize_ctx c = { .prealloc = QCOW2_PREALLOC_OFF };
    char *fmt = NULL;
    int quiet = 0, shrink = 0;
    struct poptOption table[] = {
        { "format", 'f', POPT_ARG_STRING, &fmt, 0, "image format (guessed when left out)", "fmt" },
        { "preallocation", 0, POPT_ARG_STRING, NULL, OPT_PREALLOC,
          "allocate the new part: off, metadata, falloc or full", "mode" },
        { "quiet", 'q', POPT_ARG_NONE, &quiet, 0, "print nothing on success", NULL },
        { "shrink", 0, POPT_ARG_NONE, &shrink, 0,
          "allow shrinking (what lies past the new end is lost)", NULL },
        { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT,
          "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
        { "image-opts", 0, POPT_ARG_NONE, &c.ia.image_opts, 0,
          "FILE is an option string (driver=...,file.filename=...)", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    struct cmd_spec spec = {
        .name = "resize",
        .synopsis = "[-q] [-f fmt] [--preallocation=off|metadata|falloc|full] [--shrink] "
                    "[--object objectdef] [--image-opts] FILE [+|-]SIZE",
        .summary = "Change the virtual size of an image (SIZE, or grow or shrink it by SIZE).",
        .opts = table,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 0,
        .max_args = -1,
    };
    const char *size_arg, *file, **args;
    char *path = NULL;
    poptContext pc = NULL;
    struct blk *b = NULL;
    bool probed_raw = false, is_qcow2;
    uint64_t n;
    int64_t cur, total;
    int nargs, ret, relative = 0, rc = 1;

    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        cmd_print_help(&spec, stdout);
        return 0;
    }
    /* The size is taken off first, so that "-1G" is no option (as qemu-img). */
    if (argc < 3) {
        error("Not enough arguments");
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        return 1;
    }
    size_arg = argv[--argc];
    /* "FILE -- -1G": popt would keep a final "--" as an argument. */
    if (argc > 1 && !strcmp(argv[argc - 1], "--"))
        argc--;
    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret != 0) {
        rc = ret < 0 ? 1 : 0;
        goto out;
    }
    if (nargs != 1) {
        error("Expecting image file name and size");
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        goto out;
    }
    file = args[0];
    if (*size_arg == '+' || *size_arg == '-')
        relative = *size_arg++ == '+' ? 1 : -1;
    ret = parse_size_u64(size_arg, &n);
    if (ret == -ERANGE) {
        error("Value '%s' is out of range for parameter 'size'", size_arg);
        goto out;
    }
    if (ret < 0) {
        error("Parameter 'size' expects a non-negative number below 2^64\n"
              "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.");
        goto out;
    }

    if (image_args_open(&c.ia, &b, file, fmt, BLK_RDWR | BLK_NEED_KEY, &probed_raw) < 0)
        goto out;
    if (probed_raw)
        fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing "
                "guessed raw.\n         Automatically detecting the format is dangerous "
                "for raw images, write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                file);
    is_qcow2 = b->drv == &blk_qcow2_driver;
    if (!is_qcow2 && b->drv != &blk_raw_driver) {
        error("Image format driver does not support resize");
        goto out;
    }
    cur = (int64_t)b->size;
    /* qemu-img's arithmetic: signed, so a size of 8E or more is negative. */
    total = relative ? (int64_t)((uint64_t)cur + (uint64_t)relative * n) : (int64_t)n;
    if (total <= 0) {
        error("New image size must be positive");
        goto out;
    }
    if (total <= cur && c.prealloc != QCOW2_PREALLOC_OFF) {
        error("Preallocation can only be used for growing images");
        goto out;
    }
    if (total < cur && !shrink) {
        error("Use the --shrink option to perform a shrink operation.");
        warn("Shrinking an image will delete all data beyond the shrunken image's end. "
             "Before performing such an operation, make sure there is no important data "
             "there.");
        goto out;
    }
    ret = is_qcow2 ? resize_qcow2(b, (uint64_t)total, c.prealloc)
                   : resize_raw(b, (uint64_t)total, c.prealloc);
    if (ret < 0) {
        error("%s", err_msg(ret));
        goto out;
    }
    path = strdup(b->filename);
    ret = blk_close(b);
    b = NULL;
    if (ret < 0) {
        error("Could not close '%s': %s", file, err_msg(ret));
        goto out;
    }
    if (is_qcow2 && (!path || cmd_verify_image(path)))
        goto out;
    if (!quiet)
        printf("Image resized.\n");
    rc = 0;
out:
    if (b)
        blk_close(b);
    image_args_free(&c.ia);
    free(path);
    free(fmt);
    cmd_done(pc);
    return rc;
}
