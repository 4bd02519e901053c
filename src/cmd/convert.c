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

enum {
    OPT_QUIET = 1, OPT_PROGRESS, OPT_COMPRESS, OPT_FMT, OPT_OUT_FMT, OPT_OPTIONS,
    OPT_BACKING, OPT_BACKING_FMT, OPT_SPARSE, OPT_SNAPSHOT, OPT_NO_CREATE, OPT_THREADS,
    OPT_SHARE, OPT_CACHE, OPT_SRC_CACHE, OPT_TARGET_ZERO, OPT_BITMAPS, OPT_SKIP_BROKEN,
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
        char *s = realloc(c->optstr, a + strlen(arg) + 2);
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

/* ---- create: TEMPORARY ------------------------------------------------- */
/*
 * TEMPORARY: a minimal qcow2 creator until `qimg create` lands; at merge
 * time the lead swaps qcow2_create_simple() for the create helper's
 * qcow2_create(). Same layout as qemu-img: header (with the feature table)
 * in cluster 0, refcount table in cluster 1, refcount block in cluster 2,
 * then the L1 table, allocated through the engine.
 */
struct create_opts {
    uint32_t cluster_bits, refcount_order, version;
    uint8_t compression_type;
    bool extl2, lazy;
    const char *backing_file, *backing_fmt;
};

/* Messages of qemu-img's create; the caller prefixes "FILE: error while converting qcow2: ". */
static int create_opts_parse(struct opts *o, struct create_opts *co)
{
    const char *v;
    uint64_t n;
    bool b;

    memset(co, 0, sizeof(*co));
    co->cluster_bits = 16;
    co->refcount_order = 4;
    co->version = 3;
    if ((v = opts_get(o, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            co->version = 2;
        else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            co->version = 3;
        else
            return err_set(-EINVAL, "Parameter 'version' does not accept value '%s'", v);
    }
    if ((v = opts_get(o, "cluster_size"))) {
        if (parse_size(v, &n) < 0)
            return err_set(-EINVAL, "Parameter 'cluster_size' expects a non-negative number "
                           "below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, "
                           "mega-, giga-, tera-, peta-\nand exabytes, respectively.");
        if (n < 512 || n > (2u << 20) || (n & (n - 1)))
            return err_set(-EINVAL, "Cluster size must be a power of two between 512 and "
                           "2048k");
        co->cluster_bits = (uint32_t)__builtin_ctzll(n);
    }
    if ((v = opts_get(o, "refcount_bits"))) {
        if (parse_uint(v, &n) < 0 || !n || n > 64 || (n & (n - 1)))
            return err_set(-EINVAL, "Refcount width must be a power of two and may not "
                           "exceed 64 bits");
        co->refcount_order = (uint32_t)__builtin_ctzll(n);
        if (co->version < 3 && n != 16)
            return err_set(-EINVAL, "Different refcount widths than 16 bits require "
                           "compatibility level 1.1 or above (use version=v3 or greater)");
    }
    if ((v = opts_get(o, "compression_type"))) {
        if (!strcmp(v, "zstd"))
            co->compression_type = QCOW2_COMPRESSION_ZSTD;
        else if (strcmp(v, "zlib"))
            return err_set(-EINVAL, "Parameter 'compression-type' does not accept value "
                           "'%s'", v);
        if (co->compression_type && co->version < 3)
            return err_set(-EINVAL, "Non-zlib compression type is only supported with "
                           "compatibility level 1.1 and above (use version=v3 or greater)");
    }
    if ((v = opts_get(o, "extended_l2"))) {
        if (parse_bool(v, &b) < 0)
            return err_set(-EINVAL, "Parameter 'extended_l2' expects 'on' or 'off'");
        co->extl2 = b;
        if (b && co->version < 3)
            return err_set(-EINVAL, "Extended L2 entries are only supported with "
                           "compatibility level 1.1 and above (use version=v3 or greater)");
        if (b && co->cluster_bits < 14)
            return err_set(-EINVAL, "Extended L2 entries are only supported with cluster "
                           "sizes of at least 16384 bytes");
    }
    if ((v = opts_get(o, "lazy_refcounts"))) {
        if (parse_bool(v, &b) < 0)
            return err_set(-EINVAL, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
        co->lazy = b;
        if (b && co->version < 3)
            return err_set(-EINVAL, "Lazy refcounts only supported with compatibility "
                           "level 1.1 and above (use version=v3 or greater)");
    }
    if ((v = opts_get(o, "preallocation"))) {
        if (strcmp(v, "off") && strcmp(v, "metadata") && strcmp(v, "falloc") &&
            strcmp(v, "full"))
            return err_set(-EINVAL, "Parameter 'preallocation' does not accept value '%s'", v);
        if (strcmp(v, "off"))
            return err_set(-ENOTSUP, "preallocation=%s is not supported by convert yet", v);
    }
    co->backing_file = opts_get(o, "backing_file");
    co->backing_fmt = opts_get(o, "backing_fmt");
    return 0;
}

static int qcow2_create_simple(struct qfile *f, uint64_t size, const struct create_opts *co)
{
    const uint64_t cs = 1ULL << co->cluster_bits;
    struct qcow2_meta m;
    struct qcow2 *q;
    uint8_t *buf = xzalloc(cs);
    uint64_t l1_entries, rb_bytes;
    size_t hlen;
    int64_t l1;
    int ret;

    if (!buf)
        return -ENOMEM;
    memset(&m, 0, sizeof(m));
    m.h.version = co->version;
    m.h.cluster_bits = co->cluster_bits;
    m.h.refcount_table_offset = cs;
    m.h.refcount_table_clusters = 1;
    m.h.refcount_order = co->refcount_order;
    m.h.compression_type = co->compression_type;
    if (co->extl2)
        m.h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
    if (co->compression_type != QCOW2_COMPRESSION_ZLIB)
        m.h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    if (co->lazy)
        m.h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    m.backing_file = (char *)co->backing_file;
    m.backing_fmt = (char *)co->backing_fmt;
    ret = qcow2_header_build(&m, buf, cs);
    if (ret < 0) {
        free(buf);
        return err_set(ret, "The header does not fit in one cluster");
    }
    /* The file is empty: write the bytes in use, let the rest be a hole. */
    hlen = (size_t)ret;
    ret = qfile_truncate(f, 3 * cs);
    if (ret == 0)
        ret = qfile_pwrite(f, buf, hlen, 0);
    put_be64(buf, 2 * cs);                      /* refcount block at cluster 2 */
    if (ret == 0)
        ret = qfile_pwrite(f, buf, 8, cs);
    memset(buf, 0, 8);
    for (unsigned i = 0; i < 3; i++)            /* counts clusters 0, 1 and 2 */
        qcow2_rb_set(&(struct qcow2){ .refcount_order = co->refcount_order }, buf, i, 1);
    rb_bytes = ALIGN_UP(3ULL << co->refcount_order, 64) / 8;
    if (ret == 0)
        ret = qfile_pwrite(f, buf, rb_bytes, 2 * cs);
    free(buf);
    if (ret < 0)
        return ret;

    /* The L1 table, through the allocator, then the header pointing at it. */
    ret = qcow2_open(&q, f, QCOW2_OPEN_RDWR);
    if (ret < 0)
        return ret;
    l1_entries = qcow2_l1_entries_for(co->cluster_bits, co->extl2, size);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        ret = err_set(-EFBIG, "Image size is too large for this cluster size");
        goto out;
    }
    if (l1_entries) {
        uint64_t bytes = ALIGN_UP(l1_entries * 8, cs), fsize;
        l1 = qcow2_alloc_clusters(q, bytes / cs);
        if (l1 < 0) {
            ret = (int)l1;
            goto out;
        }
        /* A new image's L1 table lies at its end: zeros by extending it. */
        ret = qfile_size(f, &fsize);
        if (ret == 0 && fsize > (uint64_t)l1)
            ret = err_set(-EIO, "the new L1 table at %#llx is not at the end of the file",
                          (unsigned long long)l1);
        if (ret == 0)
            ret = qfile_truncate(f, (uint64_t)l1 + bytes);
        if (ret < 0)
            goto out;
        q->meta.h.l1_table_offset = (uint64_t)l1;
        q->meta.h.l1_size = (uint32_t)l1_entries;
    }
    q->meta.h.size = size;
    ret = qcow2_flush(q);
    if (ret == 0)
        ret = qcow2_write_header(q);
out:
    q->file = NULL;             /* the caller closes f */
    {
        int r = qcow2_close(q);
        if (ret == 0)
            ret = r;
    }
    return ret;
}
/* ---- end of TEMPORARY ---------------------------------------------------- */

static void print_create_help(const char *fmt)
{
    printf("Supported options:\n");
    if (!strcmp(fmt, "qcow2")) {
        printf("  backing_file=<str>     - File name of a base image\n"
               "  backing_fmt=<str>      - Image format of the base image\n"
               "  cluster_size=<size>    - qcow2 cluster size\n"
               "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
               "  compression_type=<str> - Compression method used for image cluster "
               "compression\n"
               "  extended_l2=<bool (on/off)> - Extended L2 tables\n"
               "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
               "  preallocation=<str>    - Preallocation mode (allowed values: off, "
               "metadata, falloc, full)\n"
               "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
               "  size=<size>            - Virtual disk size\n");
    } else {
        printf("  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, "
               "full)\n"
               "  size=<size>            - Virtual disk size\n");
    }
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

static int open_inputs(struct convert *c, const char **names)
{
    int flags = c->force_share ? BLK_NOLOCK : 0;

    c->in_names = names;
    c->in = xzalloc(c->nin * sizeof(*c->in));
    c->start = xzalloc(c->nin * sizeof(*c->start));
    if (!c->in || !c->start)
        return error("out of memory");
    for (int i = 0; i < c->nin; i++) {
        int ret = blk_open(&c->in[i], names[i], c->fmt, flags);
        if (ret < 0)
            return cmd_open_error(names[i], ret);
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

/* Create (or reuse with -n) and open the output. */
static int open_output(struct convert *c, const char **inputs)
{
    const bool qcow2 = !strcmp(c->out_fmt, "qcow2");
    struct opts o = { 0 };
    struct create_opts co;
    struct qfile *f;
    int ret;

    for (int i = 0; i < c->nin; i++)
        if (same_file(inputs[i], c->out_name))
            return error("Output file '%s' is also an input", c->out_name);
    if (c->no_create) {
        ret = blk_open(&c->out, c->out_name, c->out_fmt,
                       BLK_RDWR | (c->safe ? 0 : BLK_UNSAFE));
        if (ret < 0)
            return cmd_open_error(c->out_name, ret);
        if (c->out->size < c->total)
            return error("output file is smaller than input file");
        c->zero_init = c->target_zero;
        goto opened;
    }

    ret = c->optstr ? opts_parse(&o, c->optstr) : 0;
    if (ret < 0) {
        opts_free(&o);
        return error("%s", err_msg(ret));
    }
    if (qcow2) {
        ret = create_opts_parse(&o, &co);
        if (ret == 0 && c->backing) {
            if (co.backing_file && strcmp(co.backing_file, c->backing))
                ret = err_set(-EINVAL, "backing_file and -B name different backing files");
            co.backing_file = c->backing;
            if (c->backing_fmt)
                co.backing_fmt = c->backing_fmt;
        }
        if (ret == 0 && co.backing_file && !co.backing_fmt)
            ret = err_set(-EINVAL, "Use of backing file requires explicit backing format");
    } else {
        const char *p = opts_get(&o, "preallocation");
        opts_get(&o, "size");
        ret = 0;
        if (p && strcmp(p, "off") && strcmp(p, "falloc") && strcmp(p, "full"))
            ret = err_set(-EINVAL, "Parameter 'preallocation' does not accept value '%s'", p);
    }
    opts_get(&o, "size");
    if (ret == 0 && opts_unused(&o)) {
        error("Invalid parameter '%s'", opts_unused(&o));
        opts_free(&o);
        return 1;
    }
    if (ret < 0) {
        opts_free(&o);
        if (!strcmp(err_msg(ret), "Use of backing file requires explicit backing format"))
            return error("%s", err_msg(ret));
        return error("%s: error while converting %s: %s", c->out_name, c->out_fmt,
                     err_msg(ret));
    }

    /* Lock first, then truncate: never empty a file someone else is using. */
    ret = qfile_open(&f, c->out_name, QF_RDWR | QF_CREATE | (c->safe ? 0 : QF_UNSAFE));
    if (ret < 0) {
        opts_free(&o);
        if (!err_has_msg(ret))
            err_set(ret, "Could not create '%s': %s", c->out_name, strerror(-ret));
        return error("%s: error while converting %s: %s", c->out_name, c->out_fmt,
                     err_msg(ret));
    }
    c->created = true;
    ret = qfile_truncate(f, 0);
    if (ret == 0) {
        if (qcow2) {
            ret = qcow2_create_simple(f, c->total, &co);
        } else {
            const char *p = opts_get(&o, "preallocation");
            ret = qfile_truncate(f, c->total);
            if (ret == 0 && p && strcmp(p, "off") && c->total)
                ret = qfile_allocate(f, 0, c->total);
        }
    }
    opts_free(&o);
    {
        int r = qfile_close(f);
        if (ret == 0)
            ret = r;
    }
    if (ret < 0)
        return error("%s: error while converting %s: %s", c->out_name, c->out_fmt,
                     err_msg(ret));
    /* A new image reads as zeros, unless a backing file shows through. */
    c->zero_init = !(qcow2 && co.backing_file);
    ret = blk_open(&c->out, c->out_name, c->out_fmt, BLK_RDWR | (c->safe ? 0 : BLK_UNSAFE));
    if (ret < 0)
        return cmd_open_error(c->out_name, ret);
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
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int validate(struct convert *c, int nargs)
{
    if (nargs < 2)
        return error("Must specify image file name");
    if (!blk_find_driver(c->out_fmt))
        return error("Unknown file format '%s'", c->out_fmt);
    if (strcmp(c->out_fmt, "raw") && strcmp(c->out_fmt, "qcow2"))
        return error("Output format '%s' is not supported (qimg writes raw and qcow2)",
                     c->out_fmt);
    if (c->optstr && !strcmp(c->optstr, "help"))
        return 0;
    if (c->snapshot && nargs > 2)
        return error("No support for concatenating multiple snapshot");
    if (c->compress && strcmp(c->out_fmt, "qcow2"))
        return error("Compression not supported for this file format");
    if (c->backing && strcmp(c->out_fmt, "qcow2"))
        return error("Backing file not supported for file format '%s'", c->out_fmt);
    if (c->backing && !c->backing_fmt && !c->no_create)
        return error("Use of backing file requires explicit backing format");
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
    struct convert c = { .sparse = 4096, .out_fmt = "raw" };
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
        return ret > 0 ? 0 : 1;
    }
    if (!c.threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.threads = n < 1 ? 1 : MIN(n, MAX_THREADS);
    }
    if (c.optstr && !strcmp(c.optstr, "help")) {
        if (validate(&c, 2) == 0) {
            print_create_help(c.out_fmt);
            rc = 0;
        }
        goto done;
    }
    if (validate(&c, nargs))
        goto done;
    c.nin = nargs - 1;
    c.out_name = args[nargs - 1];
    if (open_inputs(&c, args))
        goto close;
    if (c.bitmaps && cmd_bitmaps_convert_check(c.in, c.nin, c.out_fmt, c.skip_broken_bitmaps))
        goto close;
    if (open_output(&c, args))
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
    if (c.bitmaps && cmd_bitmaps_convert_copy(c.in[0], c.out_name))
        goto close;
    rc = 0;
close:
    stop_workers(&c);
    if (c.out)
        blk_close(c.out);
    for (int i = 0; i < c.nin && c.in; i++)
        blk_close(c.in[i]);
    if (rc && c.created)
        unlink(c.out_name);
    /* The shared checker proves the qcow2 that was written. */
    if (rc == 0 && c.out_fmt && !strcmp(c.out_fmt, "qcow2"))
        rc = cmd_verify_image(c.out_name);
    free(c.in);
    free(c.start);
done:
    free(c.optstr);
    cmd_done(pc);
    return rc;
}
