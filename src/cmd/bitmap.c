/*
 * bitmap.c - `qimg bitmap`: add, remove, clear, enable, disable and merge
 * the persistent dirty bitmaps of a qcow2 image, as `qemu-img bitmap` does
 * (actions applied in order; what succeeded before a failure is kept), and
 * --list (human or JSON), which qemu-img does not have. Also the `convert
 * --bitmaps` copy (cmd_bitmaps_copy, called from convert.c).
 *
 * Owns: the command line and the printing. Must not: write the image other
 * than through src/qcow2/bitmap.h; --list never opens for writing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/bitmap.h"
#include "bitmap_copy.h"
#include "cmd.h"
#include "image_args.h"

enum act { A_ADD, A_REMOVE, A_CLEAR, A_ENABLE, A_DISABLE, A_MERGE };
static const char *const act_names[] = { "add", "remove", "clear", "enable", "disable", "merge" };

struct action {
    enum act act;
    char *src;                  /* --merge SOURCE */
};

struct bm_ctx {
    struct action *acts;
    size_t nacts;
    bool list;
    char *gran, *src_file, *src_fmt, *fmt, *output;
    bool force_share;
    struct image_args ia;       /* --object, --image-opts (FILE only, as qemu-img) */
};

/* The bitmaps being edited: the directory plus each one's data once loaded. */
struct work {
    struct qcow2 *q;
    const char *file;
    struct qcow2_bitmap *bm;
    uint8_t **data;             /* NULL: unchanged on disk */
    uint32_t n;
};

static void take(char **dst, const char *arg)
{
    free(*dst);
    *dst = (char *)arg;
}

static const struct poptOption options[] = {
    { "add", 0, POPT_ARG_NONE, NULL, 'a', "create the bitmap (enabled; granularity -g)", NULL },
    { "remove", 0, POPT_ARG_NONE, NULL, 'r', "delete the bitmap", NULL },
    { "clear", 0, POPT_ARG_NONE, NULL, 'c', "clear every bit of the bitmap", NULL },
    { "enable", 0, POPT_ARG_NONE, NULL, 'e', "let the bitmap record writes (auto flag)", NULL },
    { "disable", 0, POPT_ARG_NONE, NULL, 'd', "stop the bitmap recording writes", NULL },
    { "merge", 0, POPT_ARG_STRING, NULL, 'm',
      "add the bits of bitmap SOURCE (of this image, or of -b's) to the bitmap", "SOURCE" },
    { "list", 0, POPT_ARG_NONE, NULL, 'l',
      "list the bitmaps (all, or those named) with their dirty bytes (read-only)", NULL },
    { "granularity", 'g', POPT_ARG_STRING, NULL, 'g',
      "bytes per bit for --add (power of two, 512 to 2G)", "granularity" },
    { "source-file", 'b', POPT_ARG_STRING, NULL, 'b', "image that holds --merge's SOURCE",
      "source_file" },
    { "source-format", 'F', POPT_ARG_STRING, NULL, 'F', "format of -b's image", "fmt" },
    { "format", 'f', POPT_ARG_STRING, NULL, 'f', "image format (guessed when left out)", "fmt" },
    { "output", 0, POPT_ARG_STRING, NULL, 'o', "output format of --list: human or json", "FMT" },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U', "open an image another process holds "
      "(only with --list)", NULL },
    { "quiet", 'q', POPT_ARG_NONE, NULL, 'q', "quiet mode (there is nothing else to say)", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string (driver=...,file.filename=...); -b stays a file name",
      NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int on_opt(int val, const char *arg, void *p)
{
    struct bm_ctx *c = p;
    enum act a;

    switch (val) {
    case 'a': a = A_ADD; break;
    case 'r': a = A_REMOVE; break;
    case 'c': a = A_CLEAR; break;
    case 'e': a = A_ENABLE; break;
    case 'd': a = A_DISABLE; break;
    case 'm': a = A_MERGE; break;
    case 'l': c->list = true; return 0;
    case 'g': take(&c->gran, arg); return 0;
    case 'b': take(&c->src_file, arg); return 0;
    case 'F': take(&c->src_fmt, arg); return 0;
    case 'f': take(&c->fmt, arg); return 0;
    case 'o': take(&c->output, arg); return 0;
    case 'U': c->force_share = true; return 0;
    case 'O': return image_args_object(&c->ia, arg);
    case 'i': c->ia.image_opts = 1; return 0;
    default: return 0;
    }
    {
        struct action *n = realloc(c->acts, (c->nacts + 1) * sizeof(*n));
        if (!n) {
            free((char *)arg);
            return error("%s", strerror(ENOMEM)), -1;
        }
        c->acts = n;
        c->acts[c->nacts].act = a;
        c->acts[c->nacts].src = (char *)arg;
        c->nacts++;
    }
    return 0;
}

/* ---- --list ------------------------------------------------------------ */

static void flag_names(uint32_t flags, const char **out, int *n)
{
    *n = 0;
    if (flags & QCOW2_BME_IN_USE)
        out[(*n)++] = "in-use";
    if (flags & QCOW2_BME_AUTO)
        out[(*n)++] = "auto";
    if (flags & QCOW2_BME_EXTRA_COMPAT)
        out[(*n)++] = "extra-data-compatible";
}

static bool wanted(const char *name, const char **names, int nnames)
{
    if (!nnames)
        return true;
    for (int i = 0; i < nnames; i++)
        if (!strcmp(names[i], name))
            return true;
    return false;
}

/* Dirty bytes as qemu counts them: set bits times the granularity. */
static int dirty_count(struct qcow2 *q, const struct qcow2_bitmap *b, uint64_t *count)
{
    uint8_t *d;
    int ret = qcow2_bitmap_read(q, b, &d);

    if (ret < 0)
        return ret;
    *count = qcow2_bitmap_count(d, qcow2_bitmap_bytes(q->meta.h.size, b->gran_bits))
             << b->gran_bits;
    free(d);
    return 0;
}

static int do_list(struct qcow2 *q, const char *file, bool json, const char **names,
                   int nnames)
{
    struct qcow2_bitmap *bm = NULL;
    uint64_t *counts = NULL;
    uint32_t n = 0;
    bool stale;
    int ret, rc = 0;

    ret = q ? qcow2_bitmaps_load(q, &bm, &n, &stale) : 0;
    if (ret < 0)
        return error("Could not read the bitmaps of '%s': %s", file, err_msg(ret));
    if (q && stale)
        warn("a program lacking bitmap support modified this file, so all bitmaps are now "
             "considered inconsistent");
    for (int i = 0; i < nnames; i++) {
        bool found = false;
        for (uint32_t k = 0; k < n && !found; k++)
            found = !strcmp(bm[k].name, names[i]);
        if (!found)
            rc = error("Dirty bitmap '%s' not found", names[i]);
    }
    counts = xzalloc((n + 1) * sizeof(*counts));
    if (!counts) {
        qcow2_bitmaps_free(bm, n);
        return error("%s", strerror(ENOMEM));
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!wanted(bm[i].name, names, nnames))
            continue;
        ret = dirty_count(q, &bm[i], &counts[i]);
        if (ret < 0) {
            rc = error("Could not read bitmap '%s' of '%s': %s", bm[i].name, file,
                       err_msg(ret));
            goto out;
        }
    }
    if (json) {
        struct json j;
        json_init(&j, stdout);
        json_begin_array(&j, NULL);
        for (uint32_t i = 0; i < n; i++) {
            const char *fl[3];
            int nf;
            if (!wanted(bm[i].name, names, nnames))
                continue;
            flag_names(bm[i].flags, fl, &nf);
            json_begin_object(&j, NULL);
            json_str(&j, "name", bm[i].name);
            json_uint(&j, "granularity", 1ULL << bm[i].gran_bits);
            json_begin_array(&j, "flags");
            for (int k = 0; k < nf; k++)
                json_str(&j, NULL, fl[k]);
            json_end_array(&j);
            json_uint(&j, "count", counts[i]);
            json_end_object(&j);
        }
        json_end_array(&j);
        json_finish(&j);
    } else if (n) {
        printf("%-20s %12s %-16s %s\n", "NAME", "GRANULARITY", "FLAGS", "DIRTY BYTES");
        for (uint32_t i = 0; i < n; i++) {
            const char *fl[3];
            char flags[64] = "";
            int nf;
            if (!wanted(bm[i].name, names, nnames))
                continue;
            flag_names(bm[i].flags, fl, &nf);
            for (int k = 0; k < nf; k++)
                snprintf(flags + strlen(flags), sizeof(flags) - strlen(flags), "%s%s",
                         k ? "," : "", fl[k]);
            printf("%-20s %12" PRIu64 " %-16s %" PRIu64 "\n", bm[i].name,
                   (uint64_t)1 << bm[i].gran_bits, nf ? flags : "-", counts[i]);
        }
    }
out:
    free(counts);
    qcow2_bitmaps_free(bm, n);
    return rc;
}

/* ---- the actions -------------------------------------------------------- */

static int find(const struct work *w, const char *name)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (!strcmp(w->bm[i].name, name))
            return (int)i;
    return -1;
}

static int op_fail(enum act a, const char *name, const char *fmt, ...) PRINTF(3, 4);
static int op_fail(enum act a, const char *name, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return error("Operation %s on bitmap %s failed: %s", act_names[a], name, msg);
}

static int inconsistent(enum act a, const char *name, const char *bad)
{
    op_fail(a, name, "Bitmap '%s' is inconsistent and cannot be used", bad);
    fprintf(stderr, "Try block-dirty-bitmap-remove to delete this bitmap from disk\n");
    return 1;
}

/* The bitmap's data in memory, loaded from disk on first use. */
static int load_data(struct work *w, uint32_t i)
{
    int ret;

    if (w->data[i])
        return 0;
    ret = qcow2_bitmap_read(w->q, &w->bm[i], &w->data[i]);
    return ret;
}

static int add(struct work *w, const char *name, uint64_t gran)
{
    uint64_t bytes;
    struct qcow2_bitmap *nb;
    uint8_t **nd;
    uint8_t bits = 0;

    if (!*name)
        return op_fail(A_ADD, name, "Bitmap name cannot be empty");
    if (find(w, name) >= 0)
        return op_fail(A_ADD, name, "Bitmap already exists: %s", name);
    if (strlen(name) > QCOW2_MAX_BITMAP_NAME)
        return op_fail(A_ADD, name, "Can't make bitmap '%s' persistent in '%s': Name length "
                       "exceeds maximum (%u characters)", name, w->file, QCOW2_MAX_BITMAP_NAME);
    if (w->q->meta.h.version < 3)
        return op_fail(A_ADD, name, "Can't make bitmap '%s' persistent in '%s': Cannot store "
                       "dirty bitmaps in qcow2 v2 files", name, w->file);
    if (w->n >= QCOW2_MAX_BITMAPS)
        return op_fail(A_ADD, name, "Can't make bitmap '%s' persistent in '%s': Too many "
                       "persistent bitmaps", name, w->file);
    if (gran && (gran < 512 || (gran & (gran - 1)) || gran > (1ULL << QCOW2_MAX_GRAN_BITS)))
        return op_fail(A_ADD, name, "Granularity must be power of 2 and at least 512");
    if (!gran)
        gran = MIN(65536, MAX(4096, w->q->cluster_size));
    while ((1ULL << bits) < gran)
        bits++;
    bytes = qcow2_bitmap_bytes(w->q->meta.h.size, bits);
    if (bytes > QCOW2_MAX_BITMAP_BYTES)
        return op_fail(A_ADD, name, "Can't make bitmap '%s' persistent in '%s': Too large "
                       "bitmap", name, w->file);
    nb = realloc(w->bm, (w->n + 1) * sizeof(*nb));
    if (nb)
        w->bm = nb;
    nd = nb ? realloc(w->data, (w->n + 1) * sizeof(*nd)) : NULL;
    if (nd)
        w->data = nd;
    if (!nb || !nd)
        return error("%s", strerror(ENOMEM));
    memset(&w->bm[w->n], 0, sizeof(*nb));
    w->bm[w->n].name = xstrdup(name);
    w->bm[w->n].flags = QCOW2_BME_AUTO;
    w->bm[w->n].type = QCOW2_BME_TYPE_DIRTY;
    w->bm[w->n].gran_bits = bits;
    w->data[w->n] = xzalloc(bytes + 1);
    if (!w->bm[w->n].name || !w->data[w->n]) {
        free(w->bm[w->n].name);
        free(w->data[w->n]);
        return error("%s", strerror(ENOMEM));
    }
    w->n++;
    return 0;
}

/* Merge bitmap src (its data sd over the same virtual size) into w's bitmap i. */
static void merge_bits(struct work *w, uint32_t i, const uint8_t *sd, uint8_t sbits,
                       uint64_t ssize)
{
    uint64_t size = w->q->meta.h.size, bytes = qcow2_bitmap_bytes(ssize, sbits);

    if (sbits == w->bm[i].gran_bits && ssize == size) {
        for (uint64_t k = 0; k < bytes; k++)
            w->data[i][k] |= sd[k];
        return;
    }
    for (uint64_t k = 0; k < bytes; k++)
        for (unsigned bit = 0; sd[k] && bit < 8; bit++)
            if (sd[k] & (1u << bit))
                qcow2_bitmap_set_range(w->data[i], w->bm[i].gran_bits, size,
                                       ((k * 8 + bit) << sbits), 1ULL << sbits);
}

static int merge(struct work *w, int i, const char *name, const char *srcname,
                 struct qcow2 *sq, const char *sfile)
{
    struct qcow2_bitmap *sbm = NULL;
    uint32_t sn = 0;
    uint8_t *sd = NULL;
    int si, ret, rc = 0;

    if (!sq) {
        /* the same image, in its current (edited) state */
        si = find(w, srcname);
        if (si < 0)
            return op_fail(A_MERGE, name, "Dirty bitmap '%s' not found", srcname);
        if (qcow2_bitmap_unusable(&w->bm[si]))
            return inconsistent(A_MERGE, name, srcname);
        ret = load_data(w, (uint32_t)si);
        if (ret == 0)
            ret = load_data(w, (uint32_t)i);
        if (ret < 0)
            return op_fail(A_MERGE, name, "%s", err_msg(ret));
        if (si != i)
            merge_bits(w, (uint32_t)i, w->data[si], w->bm[si].gran_bits, w->q->meta.h.size);
        return 0;
    }
    ret = qcow2_bitmaps_load(sq, &sbm, &sn, NULL);
    if (ret < 0)
        return op_fail(A_MERGE, name, "%s: %s", sfile, err_msg(ret));
    for (si = 0; si < (int)sn && strcmp(sbm[si].name, srcname); si++)
        ;
    if (si == (int)sn)
        rc = op_fail(A_MERGE, name, "Dirty bitmap '%s' not found", srcname);
    else if (qcow2_bitmap_unusable(&sbm[si]))
        rc = inconsistent(A_MERGE, name, srcname);
    else if (sq->meta.h.size != w->q->meta.h.size)
        rc = op_fail(A_MERGE, name, "Bitmaps are of different sizes (destination size is %"
                     PRIu64 ", source size is %" PRIu64 ") and can't be merged",
                     w->q->meta.h.size, sq->meta.h.size);
    if (rc == 0) {
        ret = qcow2_bitmap_read(sq, &sbm[si], &sd);
        if (ret == 0)
            ret = load_data(w, (uint32_t)i);
        if (ret < 0)
            rc = op_fail(A_MERGE, name, "%s", err_msg(ret));
        else
            merge_bits(w, (uint32_t)i, sd, sbm[si].gran_bits, sq->meta.h.size);
    }
    free(sd);
    qcow2_bitmaps_free(sbm, sn);
    return rc;
}

static int apply(struct work *w, const struct action *a, const char *name, uint64_t gran,
                 struct qcow2 *sq, const char *sfile)
{
    int i;
    uint64_t bytes;

    if (a->act == A_ADD)
        return add(w, name, gran);
    i = find(w, name);
    if (i < 0)
        return op_fail(a->act, name, "Dirty bitmap '%s' not found", name);
    if (a->act == A_REMOVE) {
        free(w->bm[i].name);
        free(w->bm[i].extra);
        free(w->data[i]);
        memmove(&w->bm[i], &w->bm[i + 1], (w->n - (uint32_t)i - 1) * sizeof(*w->bm));
        memmove(&w->data[i], &w->data[i + 1], (w->n - (uint32_t)i - 1) * sizeof(*w->data));
        w->n--;
        return 0;
    }
    if (qcow2_bitmap_unusable(&w->bm[i]))
        return inconsistent(a->act, name, name);
    switch (a->act) {
    case A_CLEAR:
        bytes = qcow2_bitmap_bytes(w->q->meta.h.size, w->bm[i].gran_bits);
        free(w->data[i]);
        w->data[i] = xzalloc(bytes + 1);
        return w->data[i] ? 0 : error("%s", strerror(ENOMEM));
    case A_ENABLE:
        w->bm[i].flags |= QCOW2_BME_AUTO;
        return 0;
    case A_DISABLE:
        w->bm[i].flags &= ~QCOW2_BME_AUTO;
        return 0;
    default:
        return merge(w, i, name, a->src, sq, sfile);
    }
}

/* ---- convert --bitmaps ----------------------------------------------------- */

int cmd_bitmaps_convert_check(struct blk *const *in, int nin, const char *out_fmt,
                              bool skip_broken)
{
    struct qcow2_bitmap *bm = NULL;
    struct qcow2 *q;
    uint32_t n = 0;
    int ret, rc = 0;

    if (nin != 1)
        return error("Copying bitmaps only possible with single source");
    q = in[0]->drv == &blk_qcow2_driver ? in[0]->priv : NULL;
    if (!q)
        return error("Source lacks bitmap support");
    if (strcmp(out_fmt, "qcow2"))
        return error("Format driver '%s' does not support bitmaps", out_fmt);
    ret = qcow2_bitmaps_load(q, &bm, &n, NULL);
    if (ret < 0)
        return error("Could not read the bitmaps of the source: %s", err_msg(ret));
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (!qcow2_bitmap_unusable(&bm[i]))
            continue;
        if (skip_broken) {
            warn("Skipping inconsistent bitmap '%s'", bm[i].name);
            continue;
        }
        rc = error("Cannot copy inconsistent bitmap '%s'", bm[i].name);
        fprintf(stderr, "Try --skip-broken-bitmaps, or use '%s bitmap --remove' to delete it\n",
                qimg_progname);
    }
    qcow2_bitmaps_free(bm, n);
    return rc;
}

int cmd_bitmaps_convert_copy(struct blk *in, const char *out)
{
    struct qcow2 *sq = in->priv;
    struct qcow2_bitmap *sbm = NULL, *old = NULL;
    uint32_t sn = 0, nold = 0, first;
    struct work w = { .file = out };
    struct blk *b;
    int ret, rc = 0;

    ret = qcow2_bitmaps_load(sq, &sbm, &sn, NULL);
    if (ret < 0)
        return error("Could not read the bitmaps of the source: %s", err_msg(ret));
    if (!sn)
        return 0;
    ret = blk_open(&b, out, "qcow2", BLK_RDWR | BLK_NO_BACKING);
    if (ret < 0) {
        qcow2_bitmaps_free(sbm, sn);
        return cmd_open_error(out, ret);
    }
    w.q = b->priv;
    if (w.q->meta.h.version < 3) {
        rc = error("Format driver 'qcow2' does not support bitmaps");
        goto out;
    }
    ret = qcow2_bitmaps_load(w.q, &old, &nold, NULL);
    if (ret < 0) {
        rc = error("Could not read the bitmaps of '%s': %s", out, err_msg(ret));
        goto out;
    }
    w.bm = xzalloc((nold + sn + 1) * sizeof(*w.bm));
    w.data = xzalloc((nold + sn + 1) * sizeof(*w.data));
    if (!w.bm || !w.data) {
        rc = error("%s", strerror(ENOMEM));
        goto out;
    }
    for (uint32_t i = 0; i < nold; i++) {
        w.bm[i] = old[i];
        w.bm[i].name = xstrdup(old[i].name);
        w.bm[i].extra = NULL;
        if (old[i].extra_size && (w.bm[i].extra = malloc(old[i].extra_size)))
            memcpy(w.bm[i].extra, old[i].extra, old[i].extra_size);
        w.n++;
        if (!w.bm[i].name || (old[i].extra_size && !w.bm[i].extra)) {
            rc = error("%s", strerror(ENOMEM));
            goto out;
        }
    }
    first = w.n;
    for (uint32_t i = 0; i < sn && rc == 0; i++) {
        uint8_t *sd;

        if (qcow2_bitmap_unusable(&sbm[i]))
            continue;
        if (find(&w, sbm[i].name) >= 0) {
            rc = error("Failed to create bitmap %s: Bitmap already exists: %s", sbm[i].name,
                       sbm[i].name);
            break;
        }
        w.bm[w.n].name = xstrdup(sbm[i].name);
        w.bm[w.n].type = QCOW2_BME_TYPE_DIRTY;
        w.bm[w.n].gran_bits = sbm[i].gran_bits;
        w.bm[w.n].flags = sbm[i].flags & QCOW2_BME_AUTO;
        w.data[w.n] = xzalloc(qcow2_bitmap_bytes(w.q->meta.h.size, sbm[i].gran_bits) + 1);
        w.n++;
        if (!w.bm[w.n - 1].name || !w.data[w.n - 1]) {
            rc = error("%s", strerror(ENOMEM));
            break;
        }
        ret = qcow2_bitmap_read(sq, &sbm[i], &sd);
        if (ret < 0) {
            rc = error("Could not read bitmap '%s': %s", sbm[i].name, err_msg(ret));
            break;
        }
        merge_bits(&w, w.n - 1, sd, sbm[i].gran_bits, sq->meta.h.size);
        free(sd);
    }
    if (rc == 0 && w.n > first) {
        ret = qcow2_bitmaps_store(w.q, old, nold, w.bm, w.n, w.data);
        if (ret < 0)
            rc = error("Could not store the bitmaps of '%s': %s", out, err_msg(ret));
    }
out:
    qcow2_bitmaps_free(w.bm, w.n);
    for (uint32_t i = 0; w.data && i < w.n; i++)
        free(w.data[i]);
    free(w.data);
    qcow2_bitmaps_free(old, nold);
    qcow2_bitmaps_free(sbm, sn);
    ret = blk_close(b);
    if (ret < 0 && rc == 0)
        rc = error("Could not close '%s': %s", out, err_msg(ret));
    return rc ? 1 : 0;
}

static int parse_gran(const char *s, uint64_t *out)
{
    if (parse_size(s, out) < 0) {
        error("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for");
        error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    return 0;
}

static int edit(struct bm_ctx *c, const char *file, const char **names, int nnames)
{
    struct work w = { .file = file };
    struct qcow2_bitmap *old = NULL;
    uint32_t nold = 0;
    struct blk *b = NULL, *sb = NULL;
    struct qcow2 *sq = NULL;
    uint64_t gran = 0;
    bool stale = false, changed = false;
    char *path;
    int ret, rc = 0;

    if (c->gran && parse_gran(c->gran, &gran) < 0)
        return 1;
    /* Metadata only: no key needed, but one given must unlock the image. */
    if (image_args_open(&c->ia, &b, file, c->fmt, BLK_RDWR | BLK_NO_BACKING, NULL) < 0)
        return 1;
    path = strdup(b->filename);
    if (!path) {
        blk_close(b);
        return error("%s", strerror(ENOMEM));
    }
    if (c->src_file) {
        ret = blk_open(&sb, c->src_file, c->src_fmt, BLK_NO_BACKING);
        if (ret < 0) {
            cmd_open_error(c->src_file, ret);
            blk_close(b);
            free(path);
            return 1;
        }
        sq = sb->drv == &blk_qcow2_driver ? sb->priv : NULL;
    }
    w.q = b->drv == &blk_qcow2_driver ? b->priv : NULL;
    if (w.q) {
        ret = qcow2_bitmaps_load(w.q, &old, &nold, &stale);
        if (ret < 0) {
            rc = error("Could not read the bitmaps of '%s': %s", file, err_msg(ret));
            goto out;
        }
        if (stale)
            warn("a program lacking bitmap support modified this file, so all bitmaps are "
                 "now considered inconsistent");
        /* a working copy: names and extra data duplicated */
        w.n = nold;
        w.bm = xzalloc((nold + 1) * sizeof(*w.bm));
        w.data = xzalloc((nold + 1) * sizeof(*w.data));
        if (!w.bm || !w.data) {
            rc = error("%s", strerror(ENOMEM));
            goto out;
        }
        for (uint32_t i = 0; i < nold; i++) {
            w.bm[i] = old[i];
            w.bm[i].name = xstrdup(old[i].name);
            w.bm[i].extra = NULL;
            if (old[i].extra_size && (w.bm[i].extra = malloc(old[i].extra_size)))
                memcpy(w.bm[i].extra, old[i].extra, old[i].extra_size);
            if (!w.bm[i].name || (old[i].extra_size && !w.bm[i].extra)) {
                rc = error("%s", strerror(ENOMEM));
                goto out;
            }
        }
    }
    for (int k = 0; k < nnames && rc == 0; k++)
        for (size_t i = 0; i < c->nacts && rc == 0; i++) {
            const struct action *a = &c->acts[i];
            if (!w.q) {
                if (a->act == A_ADD)
                    rc = op_fail(a->act, names[k], "Can't store persistent bitmaps to '%s': "
                                 "Operation not supported", file);
                else
                    rc = op_fail(a->act, names[k], "Dirty bitmap '%s' not found", names[k]);
                break;
            }
            rc = apply(&w, a, names[k], gran, sq, c->src_file) ? 1 : 0;
            if (rc == 0)
                changed = true;
        }
    /* As qemu-img: what succeeded before a failure is stored. */
    if (w.q && changed) {
        ret = qcow2_bitmaps_store(w.q, old, nold, w.bm, w.n, w.data);
        if (ret < 0 && rc == 0)
            rc = error("Could not store the bitmaps of '%s': %s", file, err_msg(ret));
    }
out:
    if (w.bm)
        qcow2_bitmaps_free(w.bm, w.n);
    for (uint32_t i = 0; w.data && i < w.n; i++)
        free(w.data[i]);
    free(w.data);
    qcow2_bitmaps_free(old, nold);
    if (sb)
        blk_close(sb);
    ret = blk_close(b);
    if (ret < 0 && rc == 0)
        rc = error("Could not close '%s': %s", file, err_msg(ret));
    if (rc == 0 && changed)
        rc = cmd_verify_image(path);
    free(path);
    return rc ? 1 : 0;
}

int cmd_bitmap(int argc, const char **argv)
{
    struct bm_ctx c = { 0 };
    const struct cmd_spec spec = {
        .name = "bitmap",
        .synopsis = "(--add | --remove | --clear | --enable | --disable | --merge SOURCE)... "
                    "[-g granularity] [-b source_file [-F fmt]] [--object objectdef] "
                    "[--image-opts | -f fmt] [-q] FILE BITMAP...\n"
                    "   or: qimg bitmap --list [--output=human|json] [--object objectdef] "
                    "[--image-opts | -f fmt] [-U] FILE [BITMAP...]",
        .summary = "Change the persistent dirty bitmaps of a qcow2 image, as qemu-img bitmap "
                   "(the actions apply in order, to each BITMAP),\nor list them with the "
                   "bytes they mark dirty.",
        .opts = options,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 0,
        .max_args = -1,
    };
    poptContext pc;
    const char **args;
    int nargs, rc, json;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc > 0 ? 0 : 1;
        goto free;
    }
    rc = 1;
    json = cmd_output_format(c.output);
    if (json < 0)
        goto out;
    if (c.list) {
        struct blk *b;

        if (c.nacts || c.gran || c.src_file || c.src_fmt) {
            error("--list cannot be combined with actions, -g, -b or -F");
            goto out;
        }
        if (nargs < 1) {
            error("Expecting filename");
            goto out;
        }
        if (image_args_open(&c.ia, &b, args[0], c.fmt,
                            BLK_NO_BACKING | (c.force_share ? BLK_NOLOCK : 0), NULL) < 0)
            goto out;
        rc = do_list(b->drv == &blk_qcow2_driver ? b->priv : NULL, args[0], json,
                     args + 1, nargs - 1) ? 1 : 0;
        blk_close(b);
        goto out;
    }
    if (!c.nacts) {
        error("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
        goto out;
    }
    if (c.gran) {
        bool has_add = false;
        for (size_t i = 0; i < c.nacts; i++)
            has_add |= c.acts[i].act == A_ADD;
        if (!has_add) {
            error("granularity only supported with --add");
            goto out;
        }
    }
    if (c.src_file) {
        bool has_merge = false;
        for (size_t i = 0; i < c.nacts; i++)
            has_merge |= c.acts[i].act == A_MERGE;
        if (!has_merge) {
            error("Merge bitmap source file only supported with --merge");
            goto out;
        }
    }
    if (c.src_fmt && !c.src_file) {
        error("-F only supported with -b");
        goto out;
    }
    if (c.output) {
        error("--output is only used with --list");
        goto out;
    }
    if (c.force_share) {
        error("Could not open '%s': force-share=on can only be used with read-only images",
              nargs ? args[0] : "");
        goto out;
    }
    if (nargs < 2) {
        error("Expecting filename and bitmap name");
        goto out;
    }
    rc = edit(&c, args[0], args + 1, nargs - 1);
out:
    cmd_done(pc);
free:
    for (size_t i = 0; i < c.nacts; i++)
        free(c.acts[i].src);
    free(c.acts);
    free(c.gran);
    free(c.src_file);
    free(c.src_fmt);
    free(c.fmt);
    free(c.output);
    image_args_free(&c.ia);
    return rc;
}
