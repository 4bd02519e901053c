/*
 * convert.c - qimg convert: copy one or more images (concatenated) into a
 * new raw or qcow2 image, flattening backing chains, leaving zeros sparse,
 * optionally compressing on every core, or reading an internal snapshot.
 *
 * The copy itself (chunks, zero detection, -B comparison, the worker
 * threads) is in convert_copy.c.
 *
 * Like qemu-img convert (cache=unsafe) the output is never fsynced unless
 * -t asks for it: until convert returns nobody can use it, and a crash
 * leaves a half-copied image either way. Write errors, ENOSPC included,
 * still fail the command.
 *
 * The output is made by create_make() (create_opts.c), with every -o option
 * `qimg create` takes; an encrypted input or output is opened with its key
 * (--object, --image-opts, --target-image-opts, as qemu-img takes them).
 *
 * Owns: the convert command line, opening the inputs, creating the output.
 * Must not: write to an input, or leave behind an output it created when
 * it fails.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap_copy.h"
#include "convert.h"
#include "image_args.h"
#include "create.h"

enum {
    OPT_QUIET = 1, OPT_PROGRESS, OPT_COMPRESS, OPT_FMT, OPT_OUT_FMT, OPT_OPTIONS,
    OPT_BACKING, OPT_BACKING_FMT, OPT_SPARSE, OPT_SNAPSHOT, OPT_NO_CREATE, OPT_THREADS,
    OPT_SHARE, OPT_CACHE, OPT_SRC_CACHE, OPT_TARGET_ZERO, OPT_BITMAPS, OPT_SKIP_BROKEN,
    OPT_OBJECT, OPT_IMAGE_OPTS, OPT_TARGET_IMAGE_OPTS,
};

/* ---- options ----------------------------------------------------------- */

static int on_opt(int val, const char *arg, void *ctx)
{
    struct convert *c = ctx;

    switch (val) {
    case OPT_QUIET: c->quiet = true; break;
    case OPT_PROGRESS: c->progress = true; break;
    case OPT_COMPRESS: c->compress = true; break;
    case OPT_NO_CREATE: c->no_create = true; break;
    case OPT_SHARE: c->force_share = true; break;
    case OPT_TARGET_ZERO: c->target_zero = true; break;
    case OPT_BITMAPS: c->bitmaps = true; break;
    case OPT_SKIP_BROKEN: c->skip_broken_bitmaps = true; break;
    case OPT_IMAGE_OPTS: c->image_opts = true; break;
    case OPT_TARGET_IMAGE_OPTS: c->target_image_opts = true; break;
    case OPT_OBJECT: {
        /* --object help ends the command, as in qemu-img */
        return cmd_secret_object(&c->secrets, arg);
    }
    case OPT_FMT: c->fmt = arg; break;
    case OPT_OUT_FMT: c->out_fmt = arg; break;
    case OPT_BACKING: c->backing = arg; break;
    case OPT_BACKING_FMT: c->backing_fmt = arg; break;
    case OPT_SNAPSHOT: c->snapshot = arg; break;
    case OPT_CACHE:
        /* As qemu-img convert: the output is not synced unless asked for. */
        if (strcmp(arg, "unsafe") && strcmp(arg, "writeback") && strcmp(arg, "none") &&
            strcmp(arg, "directsync") && strcmp(arg, "writethrough"))
            return error("Invalid cache option: %s", arg), -1;
        c->safe = strcmp(arg, "unsafe") != 0;
        break;
    case OPT_SRC_CACHE:         /* inputs are only read: nothing to choose */
        break;
    case OPT_OPTIONS: {
        /* Several -o add up, as in qemu-img. */
        size_t a = c->optstr ? strlen(c->optstr) : 0;
        char *s;
        if (!opts_valid_list(arg))
            return error("Invalid option list: %s", arg), -1;
        s = realloc(c->optstr, a + strlen(arg) + 2);
        if (!s)
            return error("out of memory"), -1;
        if (a)
            s[a++] = ',';
        strcpy(s + a, arg);
        c->optstr = s;
        break;
    }
    case OPT_SPARSE: {
        uint64_t v;
        if (parse_size(arg, &v) < 0) {
            error("Invalid buffer size for sparse output specified. You may use k, M, G, "
                  "T, P or E suffixes for");
            error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            return -1;
        }
        if (v % 512 || v > 16 * 1024 * 1024) {
            error("Invalid buffer size for sparse output specified. Valid sizes are "
                  "multiples of 512 up to 16777216. Select 0 to disable sparse detection "
                  "(fully allocates output).");
            return -1;
        }
        c->sparse = v;
        break;
    }
    case OPT_THREADS: {
        uint64_t v;
        if (parse_uint(arg, &v) < 0 || v < 1 || v > MAX_THREADS) {
            error("Invalid number of coroutines. Allowed number of coroutines is between "
                  "1 and %d", MAX_THREADS);
            return -1;
        }
        c->threads = (long)v;
        break;
    }
    }
    return 0;
}

/* -l: read the input's internal snapshot instead of its active state. */
int load_snapshot(struct convert *c, struct blk *b)
{
    struct qcow2 *q = b->priv;
    struct opts so = { 0 };
    const char *id = NULL, *name = c->snapshot;
    int idx;

    if (b->drv != &blk_qcow2_driver)
        return error("Failed to load snapshot: Block format '%s' used by device '' "
                     "does not support temporarily loading internal snapshots",
                     b->drv->name);
    if (!strncmp(c->snapshot, "snapshot.", 9)) {
        if (opts_parse(&so, c->snapshot) < 0)
            return error("Invalid snapshot option '%s'", c->snapshot);
        id = opts_get(&so, "snapshot.id");
        name = opts_get(&so, "snapshot.name");
        if (opts_unused(&so)) {
            error("Invalid parameter '%s'", opts_unused(&so));
            opts_free(&so);
            return 1;
        }
    }
    /* A plain NAME matches an id first, then a name, as qemu-img does. */
    idx = qcow2_snapshot_find(q->snapshots, q->nb_snapshots,
                              id || name != c->snapshot ? id : name, name);
    if (idx >= 0 && id && name && strcmp(q->snapshots[idx].name, name))
        idx = -ENOENT;
    if (idx == -ENOENT) {
        opts_free(&so);
        return error("Failed to load snapshot: Can't find snapshot");
    }
    if (idx >= 0)
        idx = qcow2_snapshot_load_ro(q, (uint32_t)idx);
    opts_free(&so);
    if (idx < 0)
        return error("Failed to load snapshot: %s", err_msg(idx));
    b->size = q->meta.h.size;
    return 0;
}

/* ---- opening ------------------------------------------------------------- */

int open_input(struct convert *c, int i, struct blk **b)
{
    int flags = (c->force_share ? BLK_NOLOCK : 0) | BLK_NEED_KEY;
    const char *file = c->in_names[i], *fmt = c->in[i] ? c->in[i]->drv->name : c->fmt;
    struct blk_key key = { &c->secrets, NULL, NULL };
    int ret;

    if (c->image_opts) {
        imageopts_free(&c->in_io[i]);
        ret = imageopts_parse(c->in_names[i], &c->in_io[i]);
        if (ret < 0)
            return cmd_open_error(c->in_names[i], ret);
        file = c->in_io[i].filename;
        fmt = c->in_io[i].driver;
        key.key_secret = c->in_io[i].key_secret;
        key.format = c->in_io[i].encrypt_format;
    }
    ret = blk_open_key(b, file, fmt, flags, &key);
    if (ret < 0)
        return cmd_open_error(c->in_names[i], ret);
    return 0;
}

static int open_inputs(struct convert *c, const char **names)
{
    c->in_names = names;
    c->in = xzalloc(c->nin * sizeof(*c->in));
    c->start = xzalloc(c->nin * sizeof(*c->start));
    c->in_io = xzalloc(c->nin * sizeof(*c->in_io));
    if (!c->in || !c->start || !c->in_io)
        return error("out of memory");
    for (int i = 0; i < c->nin; i++) {
        if (open_input(c, i, &c->in[i]))
            return 1;
        c->start[i] = c->total;
        c->total += c->in[i]->size;
    }
    if (c->snapshot) {
        if (load_snapshot(c, c->in[0]))
            return 1;
        c->total = c->in[0]->size;
    }
    return 0;
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Open the output for writing, with its key when it is encrypted. */
static int open_target(struct convert *c, const char *key_secret)
{
    struct blk_key key = { &c->secrets, key_secret, NULL };
    int flags = BLK_RDWR | BLK_NEED_KEY | (c->safe ? 0 : BLK_UNSAFE), ret;

    if (c->target_image_opts) {
        key.key_secret = c->out_io.key_secret;
        key.format = c->out_io.encrypt_format;
    }
    ret = blk_open_key(&c->out, c->out_file, c->out_fmt, flags, &key);
    if (ret < 0)
        return cmd_open_error(c->out_name, ret);
    return 0;
}

static bool is_encrypted(const struct blk *b)
{
    return b->drv == &blk_qcow2_driver && ((struct qcow2 *)b->priv)->meta.h.crypt_method;
}

/* Create (or reuse with -n) and open the output. */
static int open_output(struct convert *c)
{
    struct create_req r = { 0 };
    const char *p;
    int ret;

    for (int i = 0; i < c->nin; i++)
        if (same_file(c->in[i]->filename, c->out_file))
            return error("Output file '%s' is also an input", c->out_name);
    if (c->no_create) {
        if (open_target(c, NULL))
            return 1;
        if (c->out->size < c->total)
            return error("output file is smaller than input file");
        /* qemu-img writes such a target uncompressed, and succeeds */
        if (c->compress && is_encrypted(c->out))
            c->compress = false;
        c->zero_init = c->target_zero;
        goto opened;
    }

    /* qemu-img convert: option types first (no file name), then -B/-F. */
    if (create_parse(&r, c->out_fmt, c->optstr, "")) {
        create_req_free(&r);
        return 1;
    }
    if (create_set(&r, O_SIZE, NULL, c->total) < 0)
        goto nomem;
    if (c->backing && !r.v[O_BACKING_FILE].set &&
        create_set(&r, O_BACKING_FILE, c->backing, 0) < 0)
        goto nomem;
    if (c->backing_fmt && !r.v[O_BACKING_FMT].set &&
        create_set(&r, O_BACKING_FMT, c->backing_fmt, 0) < 0)
        goto nomem;
    if (r.v[O_BACKING_FILE].set && !r.v[O_BACKING_FMT].set) {
        create_req_free(&r);
        return error("Use of backing file requires explicit backing format");
    }
    p = r.v[O_PREALLOC].set ? r.v[O_PREALLOC].str : "off";
    if (c->compress && create_encrypted(&r)) {
        create_req_free(&r);
        return error("Compression and encryption not supported at the same time");
    }
    if (c->compress && strcmp(p, "off")) {
        create_req_free(&r);
        return error("Compression and preallocation not supported at the same time");
    }

    /* Lock first, then truncate: never empty a file someone else is using. */
    {
        struct qfile *f;
        ret = qfile_open(&f, c->out_file, QF_RDWR | QF_CREATE | (c->safe ? 0 : QF_UNSAFE));
        if (ret == 0)
            ret = qfile_close(f);
        else if (!err_has_msg(ret))
            err_set(ret, "Could not create '%s': %s", c->out_file, strerror(-ret));
    }
    if (ret == 0) {
        c->created = true;
        ret = create_make(&r, c->out_file, &c->secrets);
    }
    if (ret < 0) {
        create_req_free(&r);
        return error("%s: error while converting %s: %s", c->out_name, c->out_fmt,
                     err_msg(ret));
    }
    /*
     * A new image reads as zeros, unless a backing file shows through or
     * preallocated clusters of an encrypted image decrypt to noise (qemu's
     * qcow2_has_zero_init).
     */
    c->zero_init = !r.v[O_BACKING_FILE].set && !(create_encrypted(&r) && strcmp(p, "off"));
    ret = open_target(c, r.v[O_ENC_SECRET].set ? r.v[O_ENC_SECRET].str : NULL);
    create_req_free(&r);
    if (ret)
        return 1;
    c->cmp = c->out->backing;
opened:
    if (c->out->drv == &blk_qcow2_driver)
        c->oq = c->out->priv;
    c->g = c->oq ? c->out->cluster_size : (c->sparse && c->sparse % 4096 == 0) || !c->sparse
                                              ? 4096 : 512;
    c->chunk = MAX(CHUNK, c->g);
    if (c->compress)
        c->chunk = MAX(c->chunk * 2, 2 * (uint64_t)c->threads * c->g);
    return 0;
nomem:
    create_req_free(&r);
    return error("%s", strerror(ENOMEM));
}
static const struct poptOption options[] = {
    { NULL, 'q', POPT_ARG_NONE, NULL, OPT_QUIET, "quiet mode", NULL },
    { NULL, 'p', POPT_ARG_NONE, NULL, OPT_PROGRESS, "show a progress bar (on a terminal)", NULL },
    { NULL, 'c', POPT_ARG_NONE, NULL, OPT_COMPRESS, "compress the output (qcow2)", NULL },
    { NULL, 'f', POPT_ARG_STRING, NULL, OPT_FMT, "format of the inputs (guessed if left out)",
      "fmt" },
    { NULL, 'O', POPT_ARG_STRING, NULL, OPT_OUT_FMT, "output format: raw (default) or qcow2",
      "fmt" },
    { NULL, 'o', POPT_ARG_STRING, NULL, OPT_OPTIONS, "creation options of the output format "
      "('-o help' lists them)", "options" },
    { NULL, 'B', POPT_ARG_STRING, NULL, OPT_BACKING, "backing file of the output; only what "
      "differs from it is written", "backing" },
    { NULL, 'F', POPT_ARG_STRING, NULL, OPT_BACKING_FMT, "format of the backing file", "fmt" },
    { NULL, 'S', POPT_ARG_STRING, NULL, OPT_SPARSE, "zero runs this long stay sparse "
      "(default 4k; 0: fully allocate)", "sparse_size" },
    { NULL, 'l', POPT_ARG_STRING, NULL, OPT_SNAPSHOT, "read this internal snapshot: NAME, "
      "snapshot.name=NAME or snapshot.id=ID", "snapshot" },
    { NULL, 'n', POPT_ARG_NONE, NULL, OPT_NO_CREATE, "the output exists: do not create it",
      NULL },
    { NULL, 'm', POPT_ARG_STRING, NULL, OPT_THREADS, "compression threads (default: online "
      "CPUs, at most 16)", "threads" },
    { "force-share", 'U', POPT_ARG_NONE, NULL, OPT_SHARE, "open the inputs even when another "
      "process holds them locked", NULL },
    { "target-is-zero", 0, POPT_ARG_NONE, NULL, OPT_TARGET_ZERO, "with -n: the output reads "
      "as zeros already", NULL },
    { NULL, 't', POPT_ARG_STRING, NULL, OPT_CACHE, "output cache mode: unsafe (default: no "
      "fsync) or writeback, none... (fsync)", "cache" },
    { NULL, 'T', POPT_ARG_STRING, NULL, OPT_SRC_CACHE, "cache mode of the inputs (accepted, "
      "ignored)", "src_cache" },
    { "bitmaps", 0, POPT_ARG_NONE, NULL, OPT_BITMAPS, "copy the persistent bitmaps (qcow2 to "
      "qcow2, one input)", NULL },
    { "skip-broken-bitmaps", 0, POPT_ARG_NONE, NULL, OPT_SKIP_BROKEN, "with --bitmaps: leave "
      "out inconsistent bitmaps (with a warning)", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT, "define a secret: secret,id=ID,data=STRING "
      "or secret,id=ID,file=PATH", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, OPT_IMAGE_OPTS, "the inputs are option strings: "
      "driver=qcow2,file.filename=PATH,encrypt.key-secret=ID", NULL },
    { "target-image-opts", 0, POPT_ARG_NONE, NULL, OPT_TARGET_IMAGE_OPTS, "the output (with "
      "-n) is such an option string", NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int validate(struct convert *c, int nargs)
{
    if (c->target_image_opts && !c->no_create)
        return error("--target-image-opts requires use of -n flag");
    if ((c->image_opts && c->fmt) || (c->target_image_opts && c->out_fmt))
        return error("--image-opts and --format are mutually exclusive");
    if (nargs < 2)
        return error("Must specify image file name");
    if (c->target_image_opts && !c->out_fmt && c->out_name) {
        int ret = imageopts_parse(c->out_name, &c->out_io);
        if (ret < 0)
            return cmd_open_error(c->out_name, ret);
        c->out_file = c->out_io.filename;
        c->out_fmt = c->out_io.driver;
        if (!c->out_fmt || !c->out_file)
            return error("Could not open '%s': Must specify either driver or file", c->out_name);
    }
    if (!c->out_fmt)
        c->out_fmt = "raw";
    if (!blk_find_driver(c->out_fmt))
        return error("Unknown file format '%s'", c->out_fmt);
    if (strcmp(c->out_fmt, "raw") && strcmp(c->out_fmt, "qcow2"))
        return error("Output format '%s' is not supported (qimg writes raw and qcow2)",
                     c->out_fmt);
    if (create_wants_help(c->optstr))
        return 0;
    if (c->snapshot && nargs > 2)
        return error("No support for concatenating multiple snapshot");
    if (c->compress && strcmp(c->out_fmt, "qcow2"))
        return error("Compression not supported for this file format");
    if (c->backing && strcmp(c->out_fmt, "qcow2"))
        return error("Backing file not supported for file format '%s'", c->out_fmt);
    if (c->no_create && c->optstr)
        return error("-o has no effect when skipping image creation");
    if (c->target_zero && !c->no_create)
        return error("--target-is-zero requires use of -n flag");
    if (c->skip_broken_bitmaps && !c->bitmaps)
        return error("Use of --skip-broken-bitmaps requires --bitmaps");
    return 0;
}

int cmd_convert(int argc, const char **argv)
{
    struct convert c = { .sparse = 4096 };
    struct cmd_spec spec = {
        .name = "convert",
        .synopsis = "[-q] [-p] [-c] [-f fmt] [-O fmt] [-o options] [-B backing [-F fmt]] "
                    "[-S sparse_size] [-l snapshot] [-n] [-m threads] INPUT... OUTPUT",
        .summary = "Convert one or more images (concatenated) into OUTPUT, in the output "
                   "format (raw by default).",
        .opts = options,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 0,
        .max_args = -1,
    };
    poptContext pc;
    const char **args;
    int nargs, ret, rc = 1;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret != 0) {
        free(c.optstr);
        secret_store_free(&c.secrets);
        return ret < 0 ? 1 : 0;
    }
    if (!c.threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.threads = n < 1 ? 1 : MIN(n, MAX_THREADS);
    }
    if (create_wants_help(c.optstr)) {
        if (nargs > 0)
            c.out_name = c.out_file = args[nargs - 1];
        if (validate(&c, 2) == 0)
            rc = create_print_help(nargs > 0 ? args[nargs - 1] : NULL, c.out_fmt);
        goto done;
    }
    if (nargs > 0)
        c.out_name = c.out_file = args[nargs - 1];
    if (validate(&c, nargs))
        goto done;
    c.nin = nargs - 1;
    if (open_inputs(&c, args))
        goto close;
    if (c.bitmaps && cmd_bitmaps_convert_check(c.in, c.nin, c.out_fmt, c.skip_broken_bitmaps))
        goto close;
    if (open_output(&c))
        goto close;
    if (start_workers(&c))
        goto close;
    if (copy(&c) < 0)
        goto close;
    stop_workers(&c);
    ret = blk_close(c.out);
    c.out = NULL;
    if (ret < 0) {
        error("%s: error while closing the output: %s", c.out_name, err_msg(ret));
        goto close;
    }
    if (c.bitmaps && cmd_bitmaps_convert_copy(c.in[0], c.out_file))
        goto close;
    rc = 0;
close:
    stop_workers(&c);
    if (c.out)
        blk_close(c.out);
    for (int i = 0; i < c.nin && c.in; i++)
        blk_close(c.in[i]);
    if (rc && c.created)
        unlink(c.out_file);
    /* The shared checker proves the qcow2 that was written. */
    if (rc == 0 && c.out_fmt && !strcmp(c.out_fmt, "qcow2"))
        rc = cmd_verify_image(c.out_file);
    for (int i = 0; i < c.nin && c.in_io; i++)
        imageopts_free(&c.in_io[i]);
    free(c.in_io);
    free(c.in);
    free(c.start);
done:
    imageopts_free(&c.out_io);
    secret_store_free(&c.secrets);
    free(c.optstr);
    cmd_done(pc);
    return rc;
}
