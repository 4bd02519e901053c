/*
 * create.c - `qimg create`: a new raw or qcow2 image, with qemu-img's
 * command line, option syntax, "Formatting ..." line and error texts.
 *
 * The work happens in the order qemu-img does it (so the same mistake gets
 * the same message): the option list, the size argument, the -o values
 * (by type), the backing file (opened, unless -u, to check it and to take
 * its size), then the "Formatting" line, then the format's own checks, and
 * only then is the file touched. Unlike qemu-img, a refused creation never
 * truncates or removes a file that was already there.
 *
 * Owns: the create command line. The -o options, their checks and the
 * making of the image are create_opts.c (shared with convert); the qcow2
 * layout is src/qcow2/create.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../block/block.h"
#include "cmd.h"
#include "image_args.h"
#include "create.h"

/* popt hands each option argument over to us: the strings are ours to free. */
struct create_args {
    bool quiet, unsafe;
    char *fmt, *backing, *backing_fmt;
    char *options;              /* every -o, joined with commas */
    bool bad_list;
    struct secret_store secrets;        /* --object secret,... */
};

static const struct poptOption create_popt[] = {
    { NULL, 'q', POPT_ARG_NONE, NULL, 'q', "quiet: print no \"Formatting\" line", NULL },
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "image format: raw (default) or qcow2", "fmt" },
    { NULL, 'b', POPT_ARG_STRING, NULL, 'b', "backing file of the new image", "backing_file" },
    { NULL, 'F', POPT_ARG_STRING, NULL, 'F', "format of the backing file", "backing_fmt" },
    { NULL, 'u', POPT_ARG_NONE, NULL, 'u',
      "unsafe: do not open the backing file (SIZE is then required)", NULL },
    { NULL, 'o', POPT_ARG_STRING, NULL, 'o',
      "format options, key=value,... ('-o help' lists them)", "options" },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret: secret,id=ID,data=STRING or secret,id=ID,file=PATH", "objectdef" },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int on_opt(int val, const char *arg, void *ctx)
{
    struct create_args *a = ctx;

    switch (val) {
    case 'O': {
        /* --object help ends the command, as in qemu-img */
        return cmd_secret_object(&a->secrets, arg);
    }
    case 'q': a->quiet = true; break;
    case 'u': a->unsafe = true; break;
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'b': free(a->backing); a->backing = (char *)arg; break;
    case 'F': free(a->backing_fmt); a->backing_fmt = (char *)arg; break;
    case 'o': {
        char *n;
        if (!opts_valid_list(arg)) {
            error("Invalid option list: %s", arg);
            free((char *)arg);
            return -1;
        }
        if (a->options) {
            n = malloc(strlen(a->options) + strlen(arg) + 2);
            if (n)
                sprintf(n, "%s,%s", a->options, arg);
        } else {
            n = strdup(arg);
        }
        free(a->options);
        free((char *)arg);
        a->options = n;
        if (!n)
            return -1;
        break;
    }
    }
    return 0;
}

static int check_backing(const char *filename, const char *backing, const char *bfmt,
                         uint64_t *size)
{
    struct blk *b;
    char *path = blk_backing_path(filename, backing);
    int ret;

    if (!path)
        return error("%s: %s", filename, strerror(ENOMEM));
    ret = blk_open(&b, path, bfmt, BLK_NOLOCK);
    if (ret < 0) {
        if (err_has_msg(ret))
            error("%s: %s", filename, err_msg(ret));
        else
            error("%s: Could not open '%s': %s", filename, path, strerror(-ret));
        fprintf(stderr, "Could not open backing image.\n");
        free(path);
        return 1;
    }
    free(path);
    if (!bfmt) {
        error("%s: Backing file specified without backing format", filename);
        fprintf(stderr, "Detected format of %s.\n", b->drv->name);
        blk_close(b);
        return 1;
    }
    /* qemu sees sizes in 512-byte sectors */
    *size = ALIGN_UP(b->size, 512);
    blk_close(b);
    return 0;
}

int cmd_create(int argc, const char **argv)
{
    struct create_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "create",
        .synopsis = "[-q] [-f fmt] [-b backing [-F backing_fmt]] [-u] [-o options] "
                    "FILE [SIZE]",
        .summary = "Create a new disk image FILE of SIZE bytes (suffixes k, M, G, T, P, E) "
                   "in format fmt.",
        .opts = create_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 0,
        .max_args = -1,
    };
    struct create_req r = { 0 };
    struct oval *v = r.v;
    poptContext pc;
    const char **args, *filename;
    uint64_t size = UINT64_MAX;
    int nargs, bits, rc = 1;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? 1 : 0;
        goto out;
    }
    rc = 1;
    if (!a.fmt && !(a.fmt = strdup("raw"))) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    filename = nargs > 0 ? args[0] : NULL;

    if (create_wants_help(a.options)) {
        rc = create_print_help(filename, a.fmt);
        goto out;
    }
    if (!filename) {
        error("Expecting image file name");
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        goto out;
    }
    if (nargs > 1) {
        int e = parse_size(args[1], &size);
        if (e == -ERANGE) {
            error("Invalid image size specified. Must be between 0 and %lld.",
                  (long long)INT64_MAX);
            goto out;
        }
        if (e < 0) {
            error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
            error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            goto out;
        }
    }
    if (nargs > 2) {
        error("Unexpected argument: %s", args[2]);
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        goto out;
    }

    /* From here on, as qemu's bdrv_img_create(): "FILE: message". */
    bits = create_format_bits(a.fmt);
    if (!bits) {
        error("%s: Unknown file format '%s'", filename, a.fmt);
        goto out;
    }
    {
        char prefix[4096];
        snprintf(prefix, sizeof(prefix), "%s: ", filename);
        if (create_parse(&r, a.fmt, a.options, prefix))
            goto out;
    }
    if (!v[O_SIZE].set) {
        v[O_SIZE].set = size != UINT64_MAX;
        v[O_SIZE].num = size;
    } else if (size != UINT64_MAX) {
        error("%s: The image size must be specified only once", filename);
        goto out;
    }
    if (a.backing) {
        if (!(bits & F_QCOW2)) {
            error("%s: Backing file not supported for file format '%s'", filename, a.fmt);
            goto out;
        }
        if (create_set(&r, O_BACKING_FILE, a.backing, 0) < 0)
            goto out;
    }
    if (a.backing_fmt) {
        if (!(bits & F_QCOW2)) {
            error("%s: Backing file format not supported for file format '%s'", filename,
                  a.fmt);
            goto out;
        }
        if (create_set(&r, O_BACKING_FMT, a.backing_fmt, 0) < 0)
            goto out;
    }
    if (v[O_BACKING_FILE].set) {
        const char *bf = v[O_BACKING_FILE].str;
        if (!bf || !strcmp(bf, filename)) {
            error("%s: Error: Trying to create an image with the same filename as the "
                  "backing file", filename);
            goto out;
        }
        if (!*bf) {
            error("%s: Expected backing file name, got empty string", filename);
            goto out;
        }
        if (!a.unsafe) {
            uint64_t bsize = 0;
            if (check_backing(filename, bf, v[O_BACKING_FMT].set ? v[O_BACKING_FMT].str : NULL,
                              &bsize))
                goto out;
            if (!v[O_SIZE].set) {
                v[O_SIZE].set = true;
                v[O_SIZE].num = bsize;
            }
        } else if (!v[O_BACKING_FMT].set) {
            error("%s: Backing file specified without backing format", filename);
            goto out;
        }
    }
    if (!v[O_SIZE].set) {
        error("%s: Image creation needs a size parameter", filename);
        goto out;
    }
    if (v[O_SIZE].num > INT64_MAX) {
        error("%s: Value '%s' is out of range for parameter 'size'", filename,
              v[O_SIZE].str ? v[O_SIZE].str : "");
        goto out;
    }
    if (!a.quiet)
        create_print_formatting(&r, filename);
    rc = create_make(&r, filename, &a.secrets);
    if (rc < 0)
        rc = error("%s: %s", filename, err_msg(rc));
out:
    create_req_free(&r);
    secret_store_free(&a.secrets);
    free(a.options);
    free(a.fmt);
    free(a.backing);
    free(a.backing_fmt);
    cmd_done(pc);
    return rc;
}
