/*
 * dd.c - qimg dd: copy part of an image into a new raw or qcow2 image, as
 * qemu-img dd 7.2 does, with its operands (if= of= bs= count= skip=), its
 * messages and its arithmetic: the output has the input's size, cut to
 * count*bs, less skip*bs (so count counts the skipped blocks too), and a
 * skip past the end gives an empty output after a message, not a failure.
 *
 * The output is created with the format's defaults, then written block by
 * block (zeros included) through the block driver; a qcow2 output is
 * checked afterwards. Must not: write to the input.
 */
#include <stdlib.h>
#include <string.h>

#include "../qcow2/create.h"
#include "../qcow2/format.h"
#include "cmd.h"
#include "image_args.h"

enum { OPT_OBJECT = 1 };
enum { C_BS = 1, C_COUNT = 2, C_IF = 4, C_OF = 8, C_SKIP = 16 };

struct dd_ctx {
    struct image_args ia;
};

static int on_opt(int val, const char *arg, void *opaque)
{
    struct dd_ctx *c = opaque;

    if (val != OPT_OBJECT)
        return 0;
    return image_args_object(&c->ia, arg);     /* help ends the command */
}

/* qemu-img's cvtnum_full(): a size with suffixes, in [min, max]. */
static int cvtnum(const char *name, const char *s, int64_t min, int64_t max, int64_t *out)
{
    uint64_t v;
    int ret = parse_size(s, &v);

    if (ret < 0 && ret != -ERANGE) {
        error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (ret == -ERANGE || v > (uint64_t)max || (int64_t)v < min) {
        error("Invalid %s specified. Must be between %lld and %lld.", name, (long long)min,
              (long long)max);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Create the output, as bdrv_create() with nothing but the size. */
static int create_output(const char *name, const char *fmt, uint64_t size)
{
    struct qfile *f;
    int ret;

    size = ALIGN_UP(size, 512);
    if (!strcmp(fmt, "qcow2")) {
        struct qcow2_create_opts o = {
            .size = size, .version = 3, .cluster_size = 65536, .refcount_bits = 16,
            .compression_type = QCOW2_COMPRESSION_ZLIB, .prealloc = QCOW2_PREALLOC_OFF,
        };
        return qcow2_create(name, &o);
    }
    ret = qfile_open(&f, name, QF_RDWR | QF_CREATE);
    if (ret < 0)
        return err_has_msg(ret) ? ret : err_set(ret, "Could not create '%s': %s", name,
                                                 strerror(-ret));
    ret = qfile_truncate(f, 0);
    if (ret == 0)
        ret = qfile_truncate(f, size);
    if (ret < 0)
        err_set(ret, "Could not resize file: %s", strerror(-ret));
    {
        int r = qfile_close(f);
        if (ret == 0)
            ret = r;
    }
    return ret;
}

int cmd_dd(int argc, const char **argv)
{
    struct dd_ctx c = { 0 };
    char *fmt = NULL, *out_fmt = NULL;
    int share = 0;
    struct poptOption table[] = {
        { "format", 'f', POPT_ARG_STRING, &fmt, 0, "format of the input (guessed when left "
          "out)", "fmt" },
        { NULL, 'O', POPT_ARG_STRING, &out_fmt, 0, "format of the output: raw (the default) "
          "or qcow2", "output_fmt" },
        { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT,
          "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
        { "image-opts", 0, POPT_ARG_NONE, &c.ia.image_opts, 0,
          "the input is an option string (driver=...,file.filename=...)", NULL },
        { "force-share", 'U', POPT_ARG_NONE, &share, 0,
          "open the input even when another process holds it", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    struct cmd_spec spec = {
        .name = "dd",
        .synopsis = "[-f fmt] [-O output_fmt] [--object objectdef] [--image-opts] [-U] "
                    "[bs=block_size] [count=blocks] [skip=blocks] if=input of=output",
        .summary = "Copy the input image (from block skip, count blocks of bs bytes) into a "
                   "new image.",
        .opts = table,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 0,
        .max_args = -1,
    };
    const char **args, *in = NULL, *out = NULL;
    poptContext pc = NULL;
    struct blk *b1 = NULL, *b2 = NULL;
    int64_t bs = 512, count = 0, skip = 0, size, in_pos, out_pos;
    uint8_t *buf = NULL;
    int nargs, ret, flags = 0, rc = 1;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret != 0) {
        rc = ret < 0 ? 1 : 0;
        goto out;
    }
    for (int i = 0; i < nargs; i++) {
        const char *eq = strchr(args[i], '=');
        size_t klen = eq ? (size_t)(eq - args[i]) : 0;
        const char *v = eq ? eq + 1 : NULL;

#define IS(k) (klen == strlen(k) && !strncmp(args[i], k, klen))
        if (!eq) {
            error("unrecognized operand %s", args[i]);
            goto out;
        } else if (IS("bs")) {
            if (cvtnum("bs", v, 1, INT32_MAX, &bs))
                goto out;
            flags |= C_BS;
        } else if (IS("count")) {
            if (cvtnum("count", v, 0, INT64_MAX, &count))
                goto out;
            flags |= C_COUNT;
        } else if (IS("if")) {
            in = v;
            flags |= C_IF;
        } else if (IS("of")) {
            out = v;
            flags |= C_OF;
        } else if (IS("skip")) {
            if (cvtnum("skip", v, 0, INT64_MAX, &skip))
                goto out;
            flags |= C_SKIP;
        } else {
            error("unrecognized operand %.*s", (int)klen, args[i]);
            goto out;
        }
#undef IS
    }
    if (!(flags & C_IF) || !(flags & C_OF)) {
        error("Must specify both input and output files");
        goto out;
    }
    if (image_args_open(&c.ia, &b1, in, fmt, BLK_NEED_KEY | (share ? BLK_NOLOCK : 0),
                        NULL) < 0)
        goto out;
    if (!out_fmt)
        out_fmt = strdup("raw");
    if (strcmp(out_fmt, "raw") && strcmp(out_fmt, "qcow2")) {
        error("Unknown file format");
        goto out;
    }

    size = (int64_t)b1->size;
    if ((flags & C_COUNT) && count <= INT64_MAX / bs && count * bs < size)
        size = count * bs;
    /* A skip past the end: an empty output, after a message (as dd(1)). */
    bool past = (flags & C_SKIP) && (skip > INT64_MAX / bs || size < bs * skip);
    ret = create_output(out, out_fmt, past ? 0 : (uint64_t)(size - bs * skip));
    if (ret < 0) {
        error("%s: error while creating output image: %s", out, err_msg(ret));
        goto out;
    }
    ret = blk_open(&b2, out, out_fmt, BLK_RDWR);
    if (ret < 0) {
        cmd_open_error(out, ret);
        goto out;
    }
    if (past) {
        error("%s: cannot skip to specified offset", in);
        in_pos = size;
    } else {
        in_pos = skip * bs;
    }
    buf = malloc((size_t)bs);
    if (!buf) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    for (out_pos = 0; in_pos < size;) {
        size_t n = (size_t)(in_pos + bs > size ? size - in_pos : bs);

        ret = blk_read(b1, (uint64_t)in_pos, buf, n);
        if (ret < 0) {
            error("error while reading from input image file: %s", err_msg(ret));
            goto out;
        }
        in_pos += (int64_t)n;
        ret = blk_write(b2, (uint64_t)out_pos, buf, n);
        if (ret < 0) {
            error("error while writing to output image file: %s", err_msg(ret));
            goto out;
        }
        out_pos += (int64_t)n;
    }
    ret = blk_close(b2);
    b2 = NULL;
    if (ret < 0) {
        error("Could not close '%s': %s", out, err_msg(ret));
        goto out;
    }
    rc = strcmp(out_fmt, "qcow2") ? 0 : cmd_verify_image(out);
out:
    if (b2)
        blk_close(b2);
    if (b1)
        blk_close(b1);
    free(buf);
    image_args_free(&c.ia);
    free(fmt);
    free(out_fmt);
    cmd_done(pc);
    return rc;
}
