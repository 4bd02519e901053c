/*
 * info.c - `qimg info`: what an image is, in qemu-img 7.2's human and JSON
 * layouts, field for field and line for line.
 *
 * The facts about an image are gathered once into a small tree of values,
 * the way qemu turns its ImageInfo into a QDict; both outputs are printed
 * from that tree. qemu prints a QDict's members in the order of its hash
 * table (not alphabetically, not in insertion order), so the printer sorts
 * members the same way: by qemu's bucket for the key, and within a bucket
 * newest first.
 *
 * Read-only: images are opened without write access and without their
 * backing files (each image of --backing-chain is opened on its own).
 *
 * Owns: the info command. Must not: write to any image.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../block/block.h"
#include "../qcow2/crypto.h"
#include "../util/secret.h"
#include "../qcow2/qcow2.h"
#include "cmd.h"
#include "image_args.h"

/* ---- a tree of values --------------------------------------------------- */

enum vtype { V_OBJ, V_ARR, V_STR, V_INT, V_BOOL };

struct val {
    enum vtype t;
    char *key;                  /* member name in the parent object */
    char *s;
    int64_t i;
    bool b;
    struct val **kid;
    size_t n, cap;
};

static struct val *val_new(enum vtype t)
{
    struct val *v = xzalloc(sizeof(*v));

    if (v)
        v->t = t;
    return v;
}

static void val_free(struct val *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        val_free(v->kid[i]);
    free(v->kid);
    free(v->key);
    free(v->s);
    free(v);
}

/* Add kid to an object (key) or array (key NULL); NULL when out of memory. */
static struct val *val_add(struct val *parent, const char *key, struct val *kid)
{
    if (!parent || !kid)
        goto fail;
    if (parent->n == parent->cap) {
        size_t cap = parent->cap * 2 + 8;
        struct val **k = realloc(parent->kid, cap * sizeof(*k));
        if (!k)
            goto fail;
        parent->kid = k;
        parent->cap = cap;
    }
    if (key && !(kid->key = strdup(key)))
        goto fail;
    parent->kid[parent->n++] = kid;
    return kid;
fail:
    val_free(kid);
    return NULL;
}

static struct val *add_str(struct val *o, const char *key, const char *s)
{
    struct val *v = val_new(V_STR);

    if (v && !(v->s = strdup(s))) {
        free(v);
        v = NULL;
    }
    return val_add(o, key, v);
}

static struct val *add_int(struct val *o, const char *key, int64_t i)
{
    struct val *v = val_new(V_INT);

    if (v)
        v->i = i;
    return val_add(o, key, v);
}

static struct val *add_bool(struct val *o, const char *key, bool b)
{
    struct val *v = val_new(V_BOOL);

    if (v)
        v->b = b;
    return val_add(o, key, v);
}

static struct val *add_node(struct val *o, const char *key, enum vtype t)
{
    return val_add(o, key, val_new(t));
}

/* qemu's QDict bucket for a key (its tdb_hash, modulo 512 buckets). */
static unsigned qdict_bucket(const char *key)
{
    uint32_t h = 0x238F13AFu * (uint32_t)strlen(key);

    for (unsigned i = 0; key[i]; i++)
        h += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243u * h + 12345u) % 512;
}

struct ordered {
    const struct val *v;
    unsigned bucket;
    size_t index;
};

static int cmp_qdict(const void *a, const void *b)
{
    const struct ordered *x = a, *y = b;

    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->index > y->index ? -1 : 1;        /* newest first */
}

/* The members of an object in qemu's printing order (caller frees). */
static struct ordered *members(const struct val *o)
{
    struct ordered *m = xzalloc(o->n * sizeof(*m));

    if (!m)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        m[i] = (struct ordered){ o->kid[i], qdict_bucket(o->kid[i]->key), i };
    qsort(m, o->n, sizeof(*m), cmp_qdict);
    return m;
}

static void emit_json(struct json *j, const char *key, const struct val *v)
{
    switch (v->t) {
    case V_OBJ: {
        struct ordered *m = members(v);
        json_begin_object(j, key);
        for (size_t i = 0; m && i < v->n; i++)
            emit_json(j, m[i].v->key, m[i].v);
        json_end_object(j);
        free(m);
        break;
    }
    case V_ARR:
        json_begin_array(j, key);
        for (size_t i = 0; i < v->n; i++)
            emit_json(j, NULL, v->kid[i]);
        json_end_array(j);
        break;
    case V_STR: json_str(j, key, v->s); break;
    case V_INT: json_int(j, key, v->i); break;
    case V_BOOL: json_bool(j, key, v->b); break;
    }
}

/* qemu's dump_qobject(): the "Format specific information" block. */
static void dump_val(int indent, const struct val *v)
{
    switch (v->t) {
    case V_OBJ: {
        struct ordered *m = members(v);
        for (size_t i = 0; m && i < v->n; i++) {
            const struct val *k = m[i].v;
            bool composite = k->t == V_OBJ || k->t == V_ARR;
            printf("%*s", indent * 4, "");
            for (const char *c = k->key; *c; c++)
                putchar(*c == '-' ? ' ' : *c);
            printf(":%c", composite ? '\n' : ' ');
            dump_val(indent + 1, k);
            if (!composite)
                putchar('\n');
        }
        free(m);
        break;
    }
    case V_ARR:
        for (size_t i = 0; i < v->n; i++) {
            bool composite = v->kid[i]->t == V_OBJ || v->kid[i]->t == V_ARR;
            printf("%*s[%zu]:%c", indent * 4, "", i, composite ? '\n' : ' ');
            dump_val(indent + 1, v->kid[i]);
            if (!composite)
                putchar('\n');
        }
        break;
    case V_STR: fputs(v->s, stdout); break;
    case V_INT: printf("%" PRId64, v->i); break;
    case V_BOOL: fputs(v->b ? "true" : "false", stdout); break;
    }
}

static const struct val *member(const struct val *o, const char *key)
{
    for (size_t i = 0; o && i < o->n; i++)
        if (!strcmp(o->kid[i]->key, key))
            return o->kid[i];
    return NULL;
}

/* ---- what an image says ------------------------------------------------- */

#define BME_FLAG_IN_USE (1u << 0)
#define BME_FLAG_AUTO   (1u << 1)
#define BME_MAX_DIR_SIZE (64u * 1024 * 1024)

/* The bitmap directory, as qemu lists it under format-specific "bitmaps". */
static int add_bitmaps(struct val *data, struct qcow2 *q)
{
    const struct qcow2_meta *m = &q->meta;
    uint64_t file_size, off = 0, len = m->bitmap_dir_size;
    struct val *list;
    uint8_t *dir;
    int ret;

    if (!m->has_bitmaps_ext || !m->nb_bitmaps)
        return 0;
    if (!(m->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        warn("a program lacking bitmap support modified this file, so all bitmaps "
             "are now considered inconsistent");
        return 0;
    }
    ret = qfile_size(q->file, &file_size);
    if (ret < 0)
        return ret;
    if (len > BME_MAX_DIR_SIZE || (m->bitmap_dir_offset & (q->cluster_size - 1)) ||
        m->bitmap_dir_offset > file_size || len > file_size - m->bitmap_dir_offset)
        return err_set(-QIMG_ECORRUPT, "Bitmap directory at %#llx (%llu bytes) is invalid",
                       (unsigned long long)m->bitmap_dir_offset, (unsigned long long)len);
    dir = malloc(len ? len : 1);
    if (!dir)
        return -ENOMEM;
    ret = qfile_pread(q->file, dir, len, m->bitmap_dir_offset);
    list = ret < 0 ? NULL : add_node(data, "bitmaps", V_ARR);
    if (ret == 0 && !list)
        ret = -ENOMEM;
    for (uint32_t i = 0; ret == 0 && i < m->nb_bitmaps; i++) {
        uint8_t *e = dir + off;
        uint32_t flags, extra;
        uint16_t name_len;
        struct val *bm, *fl;
        char *name;

        if (len - off < 24) {
            ret = err_set(-QIMG_ECORRUPT, "Bitmap directory entry %u is truncated", i);
            break;
        }
        flags = be32(e + 12);
        name_len = be16(e + 18);
        extra = be32(e + 20);
        if (e[17] > 63 || extra > len - off - 24 || name_len > len - off - 24 - extra) {
            ret = err_set(-QIMG_ECORRUPT, "Bitmap directory entry %u is invalid", i);
            break;
        }
        name = strndup((const char *)e + 24 + extra, name_len);
        bm = add_node(list, NULL, V_OBJ);
        if (!name || !bm || !add_str(bm, "name", name) ||
            !add_int(bm, "granularity", (int64_t)(1ULL << e[17])) ||
            !(fl = add_node(bm, "flags", V_ARR)) ||
            ((flags & BME_FLAG_IN_USE) && !add_str(fl, NULL, "in-use")) ||
            ((flags & BME_FLAG_AUTO) && !add_str(fl, NULL, "auto")))
            ret = -ENOMEM;
        free(name);
        off += ALIGN_UP(24 + (uint64_t)extra + name_len, 8);
        if (off > len && i + 1 < m->nb_bitmaps)
            ret = err_set(-QIMG_ECORRUPT, "Bitmap directory is truncated");
    }
    free(dir);
    return ret;
}

static int add_snapshots(struct val *info, struct qcow2 *q)
{
    struct val *list;

    if (!q->nb_snapshots)
        return 0;
    list = add_node(info, "snapshots", V_ARR);
    if (!list)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        const struct qcow2_snapshot *s = &q->snapshots[i];
        struct val *o = add_node(list, NULL, V_OBJ);

        if (!o || !add_str(o, "id", s->id) || !add_str(o, "name", s->name) ||
            !add_int(o, "vm-state-size", (int64_t)s->vm_state_size) ||
            !add_int(o, "date-sec", s->date_sec) || !add_int(o, "date-nsec", s->date_nsec) ||
            !add_int(o, "vm-clock-sec", (int64_t)(s->vm_clock_nsec / 1000000000)) ||
            !add_int(o, "vm-clock-nsec", (int64_t)(s->vm_clock_nsec % 1000000000)) ||
            (s->has_icount && !add_int(o, "icount", (int64_t)s->icount)))
            return -ENOMEM;
    }
    return 0;
}

/* qemu's QCryptoBlockInfo: "aes", or the LUKS header's fields (crypto.h). */
static int add_encrypt(struct val *data, struct qcow2 *q)
{
    const struct luks_header *h = qcow2_crypto_luks(q);
    struct val *enc = add_node(data, "encrypt", V_OBJ), *slots;

    if (!enc)
        return -ENOMEM;
    if (q->meta.h.crypt_method == QCOW_CRYPT_AES || !h)
        return add_str(enc, "format", q->meta.h.crypt_method == QCOW_CRYPT_AES ? "aes" : "luks")
                   ? 0 : -ENOMEM;
    if (!add_str(enc, "format", "luks") ||
        !add_str(enc, "cipher-alg", crypt_alg_name(h->spec.alg)) ||
        !add_str(enc, "cipher-mode", crypt_mode_name(h->spec.mode)) ||
        !add_str(enc, "ivgen-alg", crypt_ivgen_name(h->spec.ivgen)) ||
        (h->spec.ivgen == CRYPT_IV_ESSIV &&
         !add_str(enc, "ivgen-hash-alg", crypt_hash_name(h->spec.ivgen_hash))) ||
        !add_str(enc, "hash-alg", crypt_hash_name(h->hash)) ||
        !add_int(enc, "payload-offset", (int64_t)h->payload_offset * 512) ||
        !add_int(enc, "master-key-iters", h->mk_iterations) ||
        !add_str(enc, "uuid", h->uuid) || !(slots = add_node(enc, "slots", V_ARR)))
        return -ENOMEM;
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        const struct luks_slot *sl = &h->slots[i];
        bool on = sl->active == LUKS_SLOT_ACTIVE;
        struct val *o = add_node(slots, NULL, V_OBJ);

        if (!o || !add_bool(o, "active", on) || (on && !add_int(o, "iters", sl->iterations)) ||
            (on && !add_int(o, "stripes", sl->stripes)) ||
            !add_int(o, "key-offset", (int64_t)sl->key_offset * 512))
            return -ENOMEM;
    }
    return 0;
}

static int add_qcow2_specific(struct val *info, struct qcow2 *q)
{
    const struct qcow2_header *h = &q->meta.h;
    struct val *fs = add_node(info, "format-specific", V_OBJ), *data;
    const char *ctype = h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";

    if (!fs || !add_str(fs, "type", "qcow2") || !(data = add_node(fs, "data", V_OBJ)))
        return -ENOMEM;
    if (h->version < 3) {
        if (!add_str(data, "compat", "0.10") || !add_int(data, "refcount-bits", q->refcount_bits))
            return -ENOMEM;
        if (h->crypt_method) {
            int ret = add_encrypt(data, q);
            if (ret < 0)
                return ret;
        }
        return add_str(data, "compression-type", ctype) ? 0 : -ENOMEM;
    }
    if (!add_str(data, "compat", "1.1") ||
        (q->meta.data_file && !add_str(data, "data-file", q->meta.data_file)) ||
        ((h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) &&
         !add_bool(data, "data-file-raw",
                   h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)) ||
        !add_bool(data, "extended-l2", q->extl2) ||
        !add_bool(data, "lazy-refcounts", h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) ||
        !add_bool(data, "corrupt", h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) ||
        !add_int(data, "refcount-bits", q->refcount_bits))
        return -ENOMEM;
    if (h->crypt_method) {
        int ret = add_encrypt(data, q);
        if (ret < 0)
            return ret;
    }
    {
        int ret = add_bitmaps(data, q);
        if (ret < 0)
            return ret;
    }
    return add_str(data, "compression-type", ctype) ? 0 : -ENOMEM;
}

/*
 * Everything qemu's ImageInfo holds for one image, opened on its own.
 * *next and *next_fmt: the backing file to show next with --backing-chain.
 */
/*
 * The image named by --image-opts (io), shown under the name qemu gives it
 * (*display, malloc'd). Like qemu-img info, which opens images without I/O,
 * the key is not used (a wrong passphrase or an undefined secret still
 * shows the image); only encrypt.format is checked against the header.
 */
static int open_image_opts(const char *arg, const struct imageopts *io,
                           const struct secret_store *secrets, int flags, struct blk **b,
                           char **display)
{
    struct blk_key key = { secrets, NULL, io->encrypt_format };
    int ret = blk_open_key(b, io->filename, io->driver, flags, &key);

    if (ret == 0 && io->key_secret && !(*b)->drv->set_key) {
        ret = err_set(-EINVAL, "Block format '%s' does not support the option "
                      "'encrypt.key-secret'", (*b)->drv->name);
        blk_close(*b);
    }
    if (ret < 0)
        return cmd_open_error_as(arg, io->filename, ret), -1;
    *display = imageopts_display_name(io, (*b)->drv->name);
    if (!*display) {
        blk_close(*b);
        return error("%s", strerror(ENOMEM)), -1;
    }
    return 0;
}

static int image_info(const char *filename, const char *fmt, int flags, struct val **out,
                      char **next, char **next_fmt, const struct imageopts *io,
                      const struct secret_store *secrets)
{
    const char *arg = filename;
    char *display = NULL;
    struct blk *b;
    struct qfile *file;
    struct qcow2 *q = NULL;
    struct val *info;
    uint64_t actual;
    int ret;

    *out = NULL;
    if (io) {
        if (open_image_opts(arg, io, secrets, BLK_NO_BACKING | flags, &b, &display) < 0)
            return -1;
        filename = io->filename;
    } else {
        ret = blk_open(&b, filename, fmt, BLK_NO_BACKING | flags);
        if (ret < 0) {
            cmd_open_error(filename, ret);
            return -1;
        }
    }
    if (b->drv == &blk_qcow2_driver) {
        q = b->priv;
        file = q->file;
    } else {
        file = b->priv;
    }
    info = val_new(V_OBJ);
    ret = -ENOMEM;
    /* qemu counts a raw image in 512-byte sectors: a cut last sector is whole */
    if (!info || !add_str(info, "filename", display ? display : filename) || !add_str(info, "format", b->drv->name) ||
        !add_bool(info, "dirty-flag", q && (q->meta.h.incompatible_features & QCOW2_INCOMPAT_DIRTY)))
        goto fail;
    ret = qfile_actual_size(file, &actual);
    if (ret < 0)
        goto fail;
    ret = -ENOMEM;
    if (!add_int(info, "actual-size", (int64_t)actual) ||
        !add_int(info, "virtual-size", (int64_t)(q ? b->size : ALIGN_UP(b->size, 512))))
        goto fail;
    if (q) {
        const char *bf = q->meta.backing_file;
        if (!add_int(info, "cluster-size", (int64_t)q->cluster_size) ||
            (q->meta.h.crypt_method && !add_bool(info, "encrypted", true)))
            goto fail;
        if (bf && *bf) {
            char *full = blk_backing_path(filename, bf);
            if (!full || !add_str(info, "backing-filename", bf) ||
                !add_str(info, "full-backing-filename", full) ||
                (q->meta.backing_fmt && *q->meta.backing_fmt &&
                 !add_str(info, "backing-filename-format", q->meta.backing_fmt))) {
                free(full);
                goto fail;
            }
            *next = full;
            if (q->meta.backing_fmt && *q->meta.backing_fmt)
                *next_fmt = strdup(q->meta.backing_fmt);
        }
        ret = add_snapshots(info, q);
        if (ret == 0)
            ret = add_qcow2_specific(info, q);
        if (ret < 0)
            goto fail;
    }
    blk_close(b);
    free(display);
    *out = info;
    return 0;
fail:
    free(display);
    blk_close(b);
    val_free(info);
    error("%s: %s", filename, err_msg(ret));
    return -1;
}

/* ---- human output ------------------------------------------------------- */

/* qemu's bdrv_snapshot_dump(): one row of the snapshot table. */
static void snapshot_row(const struct val *s)
{
    char id[128], name[256], date[32], clock[64], icount[32] = "", vsize[32];
    const struct val *ic = member(s, "icount");
    int64_t secs = member(s, "vm-clock-sec")->i;
    int64_t nsec = member(s, "vm-clock-nsec")->i;
    time_t t = (time_t)member(s, "date-sec")->i;
    struct tm tm;

    snprintf(id, sizeof(id), "%s", member(s, "id")->s);
    snprintf(name, sizeof(name), "%s", member(s, "name")->s);
    if (localtime_r(&t, &tm))
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    else
        snprintf(date, sizeof(date), "?");
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60), (int)(nsec / 1000000));
    if (ic)
        snprintf(icount, sizeof(icount), "%" PRId64, ic->i);
    size_to_str((uint64_t)member(s, "vm-state-size")->i, vsize, sizeof(vsize));
    printf("%-9s %-16s %8s%20s%13s%11s\n", id, name, vsize, date, clock, icount);
}

/* qemu's bdrv_image_info_dump(). */
static void print_human(const struct val *info)
{
    const struct val *v;
    char vsize[32], dsize[32];

    size_to_str((uint64_t)member(info, "virtual-size")->i, vsize, sizeof(vsize));
    size_to_str((uint64_t)member(info, "actual-size")->i, dsize, sizeof(dsize));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRId64 " bytes)\ndisk size: %s\n",
           member(info, "filename")->s, member(info, "format")->s, vsize,
           member(info, "virtual-size")->i, dsize);
    if ((v = member(info, "encrypted")) && v->b)
        printf("encrypted: yes\n");
    if ((v = member(info, "cluster-size")))
        printf("cluster_size: %" PRId64 "\n", v->i);
    if ((v = member(info, "dirty-flag")) && v->b)
        printf("cleanly shut down: no\n");
    if ((v = member(info, "backing-filename"))) {
        const struct val *full = member(info, "full-backing-filename");
        printf("backing file: %s", v->s);
        if (!full)
            printf(" (cannot determine actual path)");
        else if (strcmp(v->s, full->s))
            printf(" (actual path: %s)", full->s);
        putchar('\n');
    }
    if ((v = member(info, "backing-filename-format")))
        printf("backing file format: %s\n", v->s);
    if ((v = member(info, "snapshots"))) {
        printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE",
               "DATE", "VM CLOCK", "ICOUNT");
        for (size_t i = 0; i < v->n; i++)
            snapshot_row(v->kid[i]);
    }
    if ((v = member(info, "format-specific"))) {
        printf("Format specific information:\n");
        dump_val(1, member(v, "data"));
    }
}

/* ---- the command -------------------------------------------------------- */

/* popt hands each option argument over to us: the strings are ours to free. */
struct info_args {
    char *fmt;
    char *output;
    bool chain, force_share, image_opts;
    struct secret_store secrets;        /* --object secret,... */
};

static int on_opt(int val, const char *arg, void *ctx)
{
    struct info_args *a = ctx;

    switch (val) {
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'o': free(a->output); a->output = (char *)arg; break;
    case 'c': a->chain = true; break;
    case 'U': a->force_share = true; break;
    case 'i': a->image_opts = true; break;
    case 'O': {
        /* --object help ends the command, as in qemu-img */
        return cmd_secret_object(&a->secrets, arg);
    }
    }
    return 0;
}

static const struct poptOption info_popt[] = {
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "image format (guessed when left out)", "fmt" },
    { "output", 0, POPT_ARG_STRING, NULL, 'o', "output format: human (default) or json",
      "human|json" },
    { "backing-chain", 0, POPT_ARG_NONE, NULL, 'c',
      "show every image of the backing chain, from the top down", NULL },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U',
      "open the image even if another process holds it locked", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret: secret,id=ID,data=STRING or secret,id=ID,file=PATH", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string: driver=qcow2,file.filename=PATH,encrypt.key-secret=ID",
      NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

int cmd_info(int argc, const char **argv)
{
    struct info_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "info",
        .synopsis = "[-f fmt] [--output=human|json] [--backing-chain] FILE",
        .summary = "Show information about the disk image FILE (read-only).",
        .opts = info_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 0,          /* --object help needs no file */
        .max_args = -1,
    };
    struct val *list = NULL;
    struct imageopts io = { 0 };
    char *file = NULL, *fmt = NULL;
    poptContext pc;
    const char **args;
    int nargs, json, rc = 1;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? 1 : 0;
        goto out;
    }
    rc = 1;
    if (a.image_opts && a.fmt) {
        error("--image-opts and --format are mutually exclusive");
        goto out;
    }
    if (nargs != 1) {
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s info --help' for more information.\n", qimg_progname);
        goto out;
    }
    if (a.image_opts) {
        int ret = imageopts_parse(args[0], &io);
        if (ret < 0) {
            cmd_open_error(args[0], ret);
            goto out;
        }
    }
    json = cmd_output_format(a.output);
    if (json < 0)
        goto out;
    list = val_new(V_ARR);
    file = strdup(args[0]);
    fmt = a.fmt ? strdup(a.fmt) : NULL;
    if (!list || !file || (a.fmt && !fmt)) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    while (file) {
        char *next = NULL, *next_fmt = NULL;
        struct val *info;

        for (size_t i = 0; i < list->n; i++)
            if (!strcmp(member(list->kid[i], "filename")->s, file)) {
                error("Backing file '%s' creates an infinite loop.", file);
                goto out;
            }
        if (image_info(file, fmt, a.force_share ? BLK_NOLOCK : 0, &info, &next, &next_fmt,
                       a.image_opts && !list->n ? &io : NULL, &a.secrets) < 0 ||
            !val_add(list, NULL, info)) {
            free(next);
            free(next_fmt);
            goto out;
        }
        free(file);
        free(fmt);
        file = a.chain ? next : NULL;
        fmt = a.chain ? next_fmt : NULL;
        if (!a.chain) {
            free(next);
            free(next_fmt);
        }
    }
    if (json) {
        struct json j;
        json_init(&j, stdout);
        emit_json(&j, NULL, a.chain ? list : list->kid[0]);
        json_finish(&j);
    } else {
        for (size_t i = 0; i < list->n; i++) {
            if (i)
                putchar('\n');
            print_human(list->kid[i]);
        }
    }
    rc = 0;
out:
    imageopts_free(&io);
    secret_store_free(&a.secrets);
    free(file);
    free(fmt);
    free(a.fmt);
    free(a.output);
    val_free(list);
    cmd_done(pc);
    return rc;
}
