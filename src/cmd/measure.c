/*
 * measure.c - qimg measure: how large a new image would be, as qemu-img
 * measure 7.2 computes it, for a given size or for the contents of an
 * image (what its backing chain holds, cluster by cluster).
 *
 * The qcow2 figures follow the layout qemu-img create would write: one
 * header cluster, L2 tables for every cluster of the disk, the L1 table,
 * and refcount blocks and table for all of it (a fixed point, since they
 * count themselves); "required" leaves out the data clusters the input
 * does not use. "bitmaps" sizes the persistent dirty bitmaps of a qcow2
 * v3 input, each as if fully allocated.
 *
 * Must not: write anything (the input is opened read-only).
 */
#include <stdlib.h>
#include <string.h>

#include "../qcow2/create.h"
#include "../qcow2/qcow2.h"
#include "../util/secret.h"
#include "convert.h"
#include "image_args.h"

enum { OPT_OBJECT = 1, OPT_SIZE };

struct measure_ctx {
    struct image_args ia;
    int64_t size;               /* --size, or -1 */
};

static int on_opt(int val, const char *arg, void *opaque)
{
    struct measure_ctx *c = opaque;
    uint64_t n;

    switch (val) {
    case OPT_OBJECT:
        return image_args_object(&c->ia, arg);     /* help ends the command */
    case OPT_SIZE:
        if (parse_size(arg, &n) < 0) {
            error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
            error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            return -1;
        }
        c->size = (int64_t)n;
        return 0;
    }
    return 0;
}

/* ---- the qcow2 layout ------------------------------------------------ */

/* Refcount blocks and table clusters that count clusters of data and
 * metadata, themselves included: the smallest fixed point. */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cs, unsigned order)
{
    uint64_t per_table = cs / 8, per_block = cs * 8 >> order;
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DIV_ROUND_UP(blocks, per_table);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

/* A fully allocated image of total bytes: header, L2s, L1, refcounts, data. */
static uint64_t prealloc_size(uint64_t total, uint64_t cs, unsigned order, bool extl2)
{
    uint64_t l2e = extl2 ? 16 : 8, aligned = ALIGN_UP(total, cs), meta = cs, nl2e, nl1e;

    nl2e = ALIGN_UP(aligned / cs, cs / l2e);
    meta += nl2e * l2e;
    nl1e = ALIGN_UP(nl2e * l2e / cs, cs / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cs, cs, order);
    return meta + aligned;
}

/* Bytes the persistent bitmaps take in a qcow2 image with clusters of cs. */
static int bitmaps_size(struct qcow2 *q, uint64_t vsize, uint64_t cs, uint64_t *out)
{
    uint64_t fsize, dir = 0, total = 0, len = q->meta.bitmap_dir_size;
    uint8_t *buf;
    size_t pos = 0;
    int ret;

    *out = 0;
    if (!q->meta.has_bitmaps_ext || !q->meta.nb_bitmaps)
        return 0;
    ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        return ret;
    if (len > (1u << 26) || q->meta.bitmap_dir_offset > fsize ||
        len > fsize - q->meta.bitmap_dir_offset)
        return err_set(-QIMG_ECORRUPT, "the bitmap directory (%#llx, %llu bytes) is not "
                       "inside the file", (unsigned long long)q->meta.bitmap_dir_offset,
                       (unsigned long long)len);
    buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    ret = qfile_pread(q->file, buf, len, q->meta.bitmap_dir_offset);
    for (uint32_t i = 0; ret == 0 && i < q->meta.nb_bitmaps; i++) {
        uint32_t extra, gbits, name;
        uint64_t bytes, clusters, ent;

        if (len - pos < 24) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory entry %u is cut off", i);
            break;
        }
        gbits = buf[pos + 17];
        name = be16(buf + pos + 18);
        extra = be32(buf + pos + 20);
        ent = ALIGN_UP(24 + (uint64_t)extra + name, 8);
        if (gbits > 63 || ent > len - pos) {
            ret = err_set(-QIMG_ECORRUPT, "bitmap directory entry %u is invalid", i);
            break;
        }
        bytes = DIV_ROUND_UP(DIV_ROUND_UP(vsize, 1ULL << gbits), 8);
        clusters = DIV_ROUND_UP(bytes, cs);
        total += clusters * cs + ALIGN_UP(clusters * 8, cs);
        /* The directory entry the new image needs (no extra data). */
        dir += ALIGN_UP(24 + (uint64_t)name, 8);
        pos += ent;
    }
    free(buf);
    *out = total + ALIGN_UP(dir, cs);
    return ret;
}

/* ---- options of the output format ------------------------------------ */

struct target {
    bool qcow2;
    uint64_t size;              /* -o size= (0: none) */
    uint64_t cs;
    unsigned version, order;
    bool extl2, backing, luks;
    int prealloc;
    uint64_t luks_payload;
};

static const char *const qcow2_keys[] = {
    "size", "compat", "backing_file", "backing_fmt", "encryption", "encrypt.format",
    "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "encrypt.iter-time", "cluster_size",
    "data_file", "data_file_raw", "preallocation", "lazy_refcounts", "refcount_bits",
    "compression_type", "extended_l2", "nocow", "extent_size_hint", NULL
};
static const char *const raw_keys[] = {
    "size", "preallocation", "nocow", "extent_size_hint", NULL
};
enum ktype { K_STR, K_SIZE, K_NUM, K_BOOL };

static enum ktype key_type(const char *k)
{
    if (!strcmp(k, "size") || !strcmp(k, "cluster_size") || !strcmp(k, "extent_size_hint"))
        return K_SIZE;
    if (!strcmp(k, "refcount_bits") || !strcmp(k, "encrypt.iter-time"))
        return K_NUM;
    if (!strcmp(k, "encryption") || !strcmp(k, "data_file_raw") ||
        !strcmp(k, "lazy_refcounts") || !strcmp(k, "extended_l2") || !strcmp(k, "nocow"))
        return K_BOOL;
    return K_STR;
}

/* Syntax: every key known to the format, every value of its type. */
static int parse_syntax(struct opts *o, const char *fmt)
{
    const char *const *keys = strcmp(fmt, "raw") ? qcow2_keys : raw_keys;

    for (size_t i = 0; i < o->n; i++) {
        const char *k = o->v[i].key, *v = o->v[i].val ? o->v[i].val : "on";
        bool known = false, b;
        uint64_t n;
        char *end;

        for (const char *const *p = keys; *p && !known; p++)
            known = !strcmp(*p, k);
        if (!known)
            return error("Invalid parameter '%s'", k);
        switch (key_type(k)) {
        case K_SIZE:
            if (parse_size(v, &n) < 0)
                return error("Parameter '%s' expects a non-negative number below 2^64\n"
                             "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                             "tera-, peta-\nand exabytes, respectively.", k);
            break;
        case K_NUM:
            errno = 0;
            n = strtoull(v, &end, 0);
            if (!*v || *end || errno)
                return error("Parameter '%s' expects a number", k);
            break;
        case K_BOOL:
            if (parse_bool(v, &b) < 0 || (strcmp(v, "on") && strcmp(v, "off")))
                return error("Parameter '%s' expects 'on' or 'off'", k);
            break;
        default:
            break;
        }
    }
    return 0;
}

/* The last value given for key, or NULL. */
static const char *last(struct opts *o, const char *key)
{
    const char *v = NULL;

    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->v[i].key, key))
            v = o->v[i].val ? o->v[i].val : "on";
    return v;
}

/* LUKS header and key material, rounded to clusters (qemu's defaults:
 * 8 key slots of 4000 stripes, each padded to 4 KiB, after a 4 KiB header). */
static int luks_payload(struct opts *o, const struct secret_store *ss, uint64_t cs, uint64_t *out)
{
    const char *secret = last(o, "encrypt.key-secret");
    const char *alg = last(o, "encrypt.cipher-alg"), *mode = last(o, "encrypt.cipher-mode");
    const uint8_t *d;
    size_t dl;
    uint64_t key;
    int ret;

    if (!secret)
        return error("Parameter 'encrypt.key-secret' is required for cipher");
    ret = secret_lookup(ss, secret, &d, &dl);
    if (ret < 0)
        return error("%s", err_msg(ret));
    if (!alg || !strcmp(alg, "aes-256"))
        key = 32;
    else if (!strcmp(alg, "aes-192"))
        key = 24;
    else if (!strcmp(alg, "aes-128"))
        key = 16;
    else
        return error("Cipher algorithm '%s' is not supported by qimg", alg);
    if (!mode || !strcmp(mode, "xts"))
        key *= 2;
    else if (strcmp(mode, "cbc") && strcmp(mode, "ecb") && strcmp(mode, "ctr"))
        return error("Invalid parameter value: %s", mode);
    *out = ALIGN_UP(4096 + 8 * ALIGN_UP(key * 4000, 4096), cs);
    return 0;
}

/* Semantics, in qcow2_measure()'s order. */
static int parse_qcow2(struct opts *o, const struct secret_store *ss, struct target *t)
{
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    const char *v;
    uint64_t n;
    bool b = false;

    if ((v = last(o, "extended_l2")))
        parse_bool(v, &b);
    t->extl2 = b;
    t->cs = 65536;
    if ((v = last(o, "cluster_size"))) {
        parse_size(v, &t->cs);
        if (t->cs < 512 || t->cs > (2u << 20) || (t->cs & (t->cs - 1)))
            return error("Cluster size must be a power of two between 512 and 2048k");
    }
    if (t->extl2 && t->cs < 16384)
        return error("Extended L2 entries are only supported with cluster sizes of at least "
                     "16384 bytes");
    t->version = 3;
    if ((v = last(o, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            t->version = 2;
        else if (strcmp(v, "1.1") && strcmp(v, "v3"))
            return error("Invalid compatibility level: '%s'", v);
    }
    t->order = 4;
    if ((v = last(o, "refcount_bits"))) {
        n = strtoull(v, NULL, 0);
        if (!n || n > 64 || (n & (n - 1)))
            return error("Refcount width must be a power of two and may not exceed 64 bits");
        if (t->version < 3 && n != 16)
            return error("Different refcount widths than 16 bits require compatibility level "
                         "1.1 or above (use compat=1.1 or greater)");
        t->order = (unsigned)__builtin_ctzll(n);
    }
    t->prealloc = QCOW2_PREALLOC_OFF;
    if ((v = last(o, "preallocation"))) {
        int m = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, modes[i]))
                m = i;
        if (m < 0)
            return error("invalid parameter value: %s", v);
        t->prealloc = m;
    }
    t->backing = last(o, "backing_file") != NULL;
    if ((v = last(o, "encrypt.format")) && !strcmp(v, "luks")) {
        t->luks = true;
        if (luks_payload(o, ss, t->cs, &t->luks_payload))
            return -1;
    }
    return 0;
}

/* ---- what the input holds -------------------------------------------- */

/* Status of [off, off+len) through the whole chain, as qemu's
 * bdrv_block_status_above(): ZERO, or DATA|ALLOCATED in some layer. */
static int status_above(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, int *flags)
{
    for (struct blk *l = b; l; l = l->backing) {
        uint64_t map;
        int ret;

        if (off >= l->size) {
            *pnum = len;
            *flags = BLK_STATUS_ZERO;
            return 0;
        }
        ret = blk_block_status(l, off, MIN(len, l->size - off), pnum, &map, flags);
        if (ret < 0)
            return ret;
        if (*flags & (BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_ZERO))
            return 0;
        len = *pnum;
    }
    *flags = BLK_STATUS_ZERO;       /* the end of the chain reads as zeros */
    return 0;
}

/* Bytes of whole clusters (of cs) the input's data touches. */
static int data_bytes(struct blk *b, uint64_t cs, uint64_t *out)
{
    uint64_t off, pnum = 0, required = 0, ssize = b->size;

    for (off = 0; off < ssize; off += pnum) {
        int flags, ret = status_above(b, off, ssize - off, &pnum, &flags);

        if (ret < 0)
            return err_set(ret, "Unable to get block status: %s", err_msg(ret));
        if (flags & BLK_STATUS_ZERO)
            continue;
        if (flags & BLK_STATUS_DATA) {
            pnum = ALIGN_UP(off + pnum, cs) - off;
            required += off % cs + pnum;
        }
    }
    *out = required;
    return 0;
}

/* ---- the command ------------------------------------------------------ */

static void print_result(bool json, uint64_t required, uint64_t full, bool has_bitmaps,
                         uint64_t bitmaps)
{
    if (json) {
        struct json j;
        json_init(&j, stdout);
        json_begin_object(&j, NULL);
        if (has_bitmaps)
            json_uint(&j, "bitmaps", bitmaps);
        json_uint(&j, "required", required);
        json_uint(&j, "fully-allocated", full);
        json_end_object(&j);
        json_finish(&j);
        return;
    }
    printf("required size: %llu\nfully allocated size: %llu\n", (unsigned long long)required,
           (unsigned long long)full);
    if (has_bitmaps)
        printf("bitmaps size: %llu\n", (unsigned long long)bitmaps);
}

int cmd_measure(int argc, const char **argv)
{
    struct measure_ctx c = { .size = -1 };
    char *fmt = NULL, *out_fmt = NULL, *output = NULL, *snapshot = NULL, **olist = NULL;
    int share = 0;
    struct poptOption table[] = {
        { "output", 0, POPT_ARG_STRING, &output, 0, "output format: human or json", "ofmt" },
        { NULL, 'O', POPT_ARG_STRING, &out_fmt, 0, "format of the image to measure for "
          "(default raw)", "fmt" },
        { "options", 'o', POPT_ARG_ARGV, &olist, 0, "creation options of that format", "options" },
        { "size", 0, POPT_ARG_STRING, NULL, OPT_SIZE, "measure for an empty image of N bytes",
          "N" },
        { "format", 'f', POPT_ARG_STRING, &fmt, 0, "format of FILE (guessed when left out)",
          "fmt" },
        { NULL, 'l', POPT_ARG_STRING, &snapshot, 0, "measure this internal snapshot of FILE: "
          "NAME, snapshot.name=NAME or snapshot.id=ID", "snapshot" },
        { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT,
          "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
        { "image-opts", 0, POPT_ARG_NONE, &c.ia.image_opts, 0,
          "FILE is an option string (driver=...,file.filename=...)", NULL },
        { "force-share", 'U', POPT_ARG_NONE, &share, 0,
          "open FILE even when another process holds it", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    struct cmd_spec spec = {
        .name = "measure",
        .synopsis = "[--output=human|json] [-O fmt] [-o options] [--size N | [-f fmt] "
                    "[-l snapshot] [--object objectdef] [--image-opts] [-U] FILE]",
        .summary = "Compute the size of an image of format -O holding FILE (or --size N "
                   "bytes).",
        .opts = table,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 0,
        .max_args = -1,
    };
    struct opts o = { NULL, 0 };
    struct target t = { 0 };
    struct blk *b = NULL;
    poptContext pc = NULL;
    const char **args, *file = NULL;
    uint64_t vsize, required = 0, full, bitmaps = 0;
    bool has_bitmaps = false;
    int nargs, ret, json, rc = 1;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret != 0) {
        rc = ret < 0 ? 1 : 0;
        goto out;
    }
    if ((json = cmd_output_format(output)) < 0)
        goto out;
    if (nargs > 1) {
        error("At most one filename argument is allowed.");
        goto out;
    }
    file = nargs ? args[0] : NULL;
    for (char **p = olist; p && *p; p++)
        if (!opts_valid_list(*p)) {
            error("Invalid option list: %s", *p);
            goto out;
        }
    if (file && c.size != -1) {
        error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!file && c.size == -1) {
        error("Either --size N or one filename must be specified.");
        goto out;
    }
    if (file) {
        if (image_args_open(&c.ia, &b, file, fmt, BLK_NEED_KEY | (share ? BLK_NOLOCK : 0),
                            NULL) < 0)
            goto out;
        if (snapshot) {
            struct convert cv = { .snapshot = snapshot };
            if (load_snapshot(&cv, b))
                goto out;
        }
    }
    if (!out_fmt)
        out_fmt = strdup("raw");
    if (strcmp(out_fmt, "raw") && strcmp(out_fmt, "qcow2")) {
        if (blk_find_driver(out_fmt) || !strcmp(out_fmt, "vmdk") || !strcmp(out_fmt, "vdi") ||
            !strcmp(out_fmt, "vpc") || !strcmp(out_fmt, "vhdx") || !strcmp(out_fmt, "qcow") ||
            !strcmp(out_fmt, "qed") || !strcmp(out_fmt, "luks") || !strcmp(out_fmt, "parallels"))
            error("Block driver '%s' does not support size measurement", out_fmt);
        else
            error("Unknown file format '%s'", out_fmt);
        goto out;
    }
    t.qcow2 = !strcmp(out_fmt, "qcow2");
    for (char **p = olist; p && *p; p++)
        if ((ret = opts_parse(&o, *p)) < 0) {
            error("%s", err_msg(ret));
            goto out;
        }
    if (parse_syntax(&o, out_fmt)) {
        error("Invalid options for file format '%s'", out_fmt);
        goto out;
    }
    if (last(&o, "size"))
        parse_size(last(&o, "size"), &t.size);
    if (c.size != -1)
        t.size = (uint64_t)c.size;

    if (!t.qcow2) {
        required = b ? b->size : ALIGN_UP(t.size, 512);
        print_result(json, required, required, false, 0);
        rc = 0;
        goto out;
    }
    if (parse_qcow2(&o, &c.ia.secrets, &t))
        goto out;
    vsize = ALIGN_UP(t.size, t.cs);
    if (DIV_ROUND_UP(vsize / t.cs, t.cs / (t.extl2 ? 16 : 8)) * 8 > QCOW2_MAX_L1_BYTES) {
        error("The image size is too large (try using a larger cluster size)");
        goto out;
    }
    if (b) {
        vsize = ALIGN_UP(b->size, t.cs);
        if (t.backing) {
            required = vsize;
        } else if ((ret = data_bytes(b, t.cs, &required)) < 0) {
            error("%s", err_msg(ret));
            goto out;
        }
    }
    if (t.prealloc == QCOW2_PREALLOC_FULL || t.prealloc == QCOW2_PREALLOC_FALLOC)
        required = vsize;
    full = t.luks_payload + prealloc_size(vsize, t.cs, t.order, t.extl2);
    required = full - vsize + required;
    has_bitmaps = t.version >= 3 && b && b->drv == &blk_qcow2_driver &&
                  ((struct qcow2 *)b->priv)->meta.h.version >= 3;
    if (has_bitmaps && (ret = bitmaps_size(b->priv, b->size, t.cs, &bitmaps)) < 0) {
        error("%s", err_msg(ret));
        goto out;
    }
    print_result(json, required, full, has_bitmaps, bitmaps);
    rc = 0;
out:
    if (b)
        blk_close(b);
    image_args_free(&c.ia);
    opts_free(&o);
    for (char **p = olist; p && *p; p++)
        free(*p);
    free(olist);
    free(fmt);
    free(out_fmt);
    free(output);
    free(snapshot);
    cmd_done(pc);
    return rc;
}
