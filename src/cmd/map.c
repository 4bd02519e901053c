/*
 * map.c - `qimg map`: where every guest byte of an image comes from,
 * through its backing chain, in qemu-img 7.2's human and JSON layouts
 * (the same ranges, merged the same way, printed character for character).
 *
 * Each range is asked of the top image's block status; where the top does
 * not decide it, of its backing file, and so on down (depth counts the
 * layers gone through). Adjacent ranges merge when they agree on every
 * field and, when mapped, are contiguous in the same file.
 *
 * For an image that looks preallocated (far more clusters in use than the
 * file occupies), holes in the host file under data clusters show as zeros,
 * as qemu guesses them.
 *
 * Unlike qemu-img, the human form does not give up on compressed or
 * encrypted clusters (they have no host offset to print): their ranges are
 * listed with "-" in the "Mapped to" column.
 *
 * Owns: the map command. Must not: write to any image.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/qcow2.h"
#include "cmd.h"
#include "image_args.h"

struct map_entry {
    uint64_t start, length, offset;
    int depth;
    bool present, zero, data, has_offset;
    const struct blk *file;     /* the layer that decided the range */
};

/*
 * qemu's guess that a qcow2 image was preallocated (metadata
 * preallocation): far more clusters are in use than the file really
 * occupies on disk. For such an image qemu asks the host file whether a
 * data cluster is a hole, and reports holes as zeros; so does map.
 */
struct prealloc_cache {
    const struct blk *b[BLK_MAX_CHAIN + 2];
    bool yes[BLK_MAX_CHAIN + 2];
    unsigned n;
};

static bool looks_preallocated(struct prealloc_cache *pc, const struct blk *b)
{
    struct qcow2 *q = b->priv;
    uint64_t fsize, actual, real, threshold, end, count = 0;
    bool yes;

    for (unsigned i = 0; i < pc->n; i++)
        if (pc->b[i] == b)
            return pc->yes[i];
    yes = false;
    if (qfile_size(q->file, &fsize) == 0 && qfile_actual_size(q->file, &actual) == 0) {
        real = actual / q->cluster_size;
        threshold = MAX(real * 10 / 9, real + 2);
        end = (fsize + q->cluster_size - 1) / q->cluster_size;
        for (uint64_t i = 0; i < end && count < threshold; i++) {
            uint64_t rc;
            if (qcow2_refcount_get(q, i, &rc) < 0)
                break;
            count += rc != 0;
        }
        yes = count >= threshold;
    }
    if (pc->n < ARRAY_SIZE(pc->b)) {
        pc->b[pc->n] = b;
        pc->yes[pc->n++] = yes;
    }
    return yes;
}

struct map_args {
    char *fmt, *output, *start, *max_len;
    bool force_share;
    struct image_args ia;       /* --object, --image-opts */
};

/* The file an offset of layer b points into: b's own, or its data file. */
static char *layer_file(const struct blk *b)
{
    if (b->drv == &blk_qcow2_driver) {
        const struct qcow2 *q = b->priv;
        if (q->data_file != q->file && q->meta.data_file)
            return blk_backing_path(b->filename, q->meta.data_file);
    }
    return strdup(b->filename);
}

/* Status of [off, off+len) through the chain: one entry, length <= len. */
static int chain_status(struct blk *b, uint64_t off, uint64_t len, struct map_entry *e,
                        struct prealloc_cache *pc)
{
    uint64_t pnum = 0, map = 0;
    int flags = 0, depth = 0, ret;

    for (;;) {
        ret = blk_block_status(b, off, len, &pnum, &map, &flags);
        if (ret < 0)
            return ret;
        if (pnum == 0)
            return err_set(-EIO, "no status for offset %" PRIu64, off);
        len = pnum;
        if (flags & (BLK_STATUS_DATA | BLK_STATUS_ZERO))
            break;
        /* Not decided here: zeros when there is nothing below, or past the
         * end of the backing file; else ask the backing file. */
        if (!b->backing || off >= b->backing->size) {
            flags |= BLK_STATUS_ZERO;
            break;
        }
        b = b->backing;
        depth++;
    }
    /* qemu gives no offset for encrypted clusters: they cannot be read there. */
    if (b->drv == &blk_qcow2_driver && ((const struct qcow2 *)b->priv)->meta.h.crypt_method)
        flags &= ~BLK_STATUS_OFFSET;
    if (b->drv == &blk_qcow2_driver && (flags & BLK_STATUS_DATA) &&
        (flags & BLK_STATUS_OFFSET) && !(flags & BLK_STATUS_ZERO) && looks_preallocated(pc, b)) {
        bool data;
        uint64_t n;

        if (qfile_extent(((struct qcow2 *)b->priv)->data_file, map, len, &data, &n) == 0 && n) {
            len = n;
            if (!data)
                flags |= BLK_STATUS_ZERO;
        }
    }
    *e = (struct map_entry){
        .start = off,
        .length = len,
        .offset = map,
        .depth = depth,
        .present = flags & BLK_STATUS_ALLOCATED,
        .zero = flags & BLK_STATUS_ZERO,
        .data = flags & BLK_STATUS_DATA,
        .has_offset = flags & BLK_STATUS_OFFSET,
        .file = b,
    };
    return 0;
}

static bool same_file(const struct blk *a, const struct blk *b)
{
    char *fa, *fb;
    bool same;

    if (a == b)
        return true;
    fa = layer_file(a);
    fb = layer_file(b);
    same = fa && fb && !strcmp(fa, fb);
    free(fa);
    free(fb);
    return same;
}

static bool mergeable(const struct map_entry *c, const struct map_entry *n)
{
    if (c->length == 0)
        return false;
    if (c->zero != n->zero || c->data != n->data || c->depth != n->depth ||
        c->present != n->present || c->has_offset != n->has_offset)
        return false;
    if (c->has_offset && (!same_file(c->file, n->file) || c->offset + c->length != n->offset))
        return false;
    return true;
}

/* qemu's "%#-16" PRIx64: 0 prints without the 0x. */
static void print_hex16(uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%#" PRIx64, v);
    printf("%-16s", buf);
}

/* Print e; n (the entry that follows, or NULL) may be adjusted for merging. */
static int dump_entry(bool json, const struct map_entry *e, struct map_entry *n)
{
    if (json) {
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d,"
               " \"present\": %s, \"zero\": %s, \"data\": %s", e->start, e->length, e->depth,
               e->present ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        putchar('}');
        if (n)
            puts(",");
        return 0;
    }
    if (e->data && !e->zero) {
        char *file = e->file ? layer_file(e->file) : NULL;
        print_hex16(e->start);
        print_hex16(e->length);
        if (e->has_offset)
            print_hex16(e->offset);
        else
            printf("%-16s", "-");
        printf("%s\n", file ? file : "-");
        free(file);
    }
    /* The human form does not tell zeros from unallocated ranges: let
     * them merge. */
    if (n && (!n->data || n->zero)) {
        n->data = false;
        n->zero = true;
    }
    return 0;
}

static int on_opt(int val, const char *arg, void *ctx)
{
    struct map_args *a = ctx;

    switch (val) {
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'o': free(a->output); a->output = (char *)arg; break;
    case 's': free(a->start); a->start = (char *)arg; break;
    case 'l': free(a->max_len); a->max_len = (char *)arg; break;
    case 'U': a->force_share = true; break;
    case 'O': return image_args_object(&a->ia, arg);
    case 'i': a->ia.image_opts = 1; break;
    }
    return 0;
}

static const struct poptOption map_popt[] = {
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "image format (guessed when left out)", "fmt" },
    { "start-offset", 's', POPT_ARG_STRING, NULL, 's',
      "first guest byte to map (default 0)", "N" },
    { "max-length", 'l', POPT_ARG_STRING, NULL, 'l',
      "map at most this many bytes", "N" },
    { "output", 0, POPT_ARG_STRING, NULL, 'o', "output format: human (default) or json",
      "human|json" },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U',
      "open the image even if another process holds it locked", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string (driver=...,file.filename=...)", NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int parse_offset(const char *s, const char *what, uint64_t *out)
{
    if (s[0] == '-' || parse_size(s, out) < 0 || *out > INT64_MAX) {
        error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    return 0;
}

int cmd_map(int argc, const char **argv)
{
    struct map_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "map",
        .synopsis = "[--object objectdef] [--image-opts] [-f fmt] [--start-offset=N] "
                    "[--max-length=N] [--output=human|json] [-U] FILE",
        .summary = "Show where the data of FILE lives, through its backing chain (read-only).",
        .opts = map_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 1,
        .max_args = -1,
    };
    struct map_entry curr = { 0 }, next;
    struct prealloc_cache prealloc = { .n = 0 };
    struct blk *b = NULL;
    uint64_t start = 0, max_len = UINT64_MAX, end;
    poptContext pc;
    const char **args;
    int nargs, json, ret, rc;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? 1 : 0;
        goto out;
    }
    rc = 1;
    if (nargs > 1) {
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s map --help' for more information.\n", qimg_progname);
        goto out;
    }
    if (a.start && parse_offset(a.start, "start offset", &start) < 0)
        goto out;
    if (a.max_len && parse_offset(a.max_len, "max length", &max_len) < 0)
        goto out;
    json = cmd_output_format(a.output);
    if (json < 0)
        goto out;
    /* Metadata only: no key needed, but one given must unlock the image. */
    if (image_args_open(&a.ia, &b, args[0], a.fmt, a.force_share ? BLK_NOLOCK : 0, NULL) < 0)
        goto out;
    end = b->size;
    if (max_len != UINT64_MAX && start + max_len < end)
        end = start + max_len;

    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    curr.start = start;
    while (curr.start + curr.length < end) {
        uint64_t off = curr.start + curr.length;

        ret = chain_status(b, off, end - off, &next, &prealloc);
        if (ret < 0) {
            error("Could not read file metadata: %s", err_msg(ret));
            goto out;
        }
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0)
            dump_entry(json, &curr, &next);
        curr = next;
    }
    dump_entry(json, &curr, NULL);
    if (json)
        puts("]");
    rc = 0;
out:
    blk_close(b);           /* read-only: nothing to flush */
    free(a.fmt);
    free(a.output);
    free(a.start);
    free(a.max_len);
    image_args_free(&a.ia);
    cmd_done(pc);
    return rc;
}
