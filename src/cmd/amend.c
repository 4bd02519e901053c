/*
 * amend.c - qimg amend: change a qcow2 image's options in place.
 *
 * Parses -o as qemu-img 7.2 does (the same option names, the same messages,
 * the same order: syntax before semantics, both after opening the image),
 * then hands the change to the engine (src/qcow2/amend.c), which refuses
 * before writing whatever it cannot do.
 *
 * Must not: touch image bytes itself.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../block/block.h"
#include "../qcow2/amend.h"
#include "cmd.h"
#include "image_args.h"

enum otype { T_STR, T_NUM, T_BOOL, T_SIZE };
enum { AMEND = 1, CREATE = 2 };

/* qcow2's options: those amend takes (listed by -o help), and those only
 * create takes (refused with qemu's hint). */
static const struct {
    const char *name;
    enum otype type;
    int use;
    const char *help;
} amend_table[] = {
    { "backing_file", T_STR, AMEND | CREATE, "File name of a base image" },
    { "backing_fmt", T_STR, AMEND | CREATE, "Image format of the base image" },
    { "cluster_size", T_SIZE, CREATE, NULL },
    { "compat", T_STR, AMEND | CREATE, "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "compression_type", T_STR, CREATE, NULL },
    { "data_file", T_STR, AMEND | CREATE, "File name of an external data file" },
    { "data_file_raw", T_BOOL, AMEND | CREATE,
      "The external data file must stay valid as a raw image" },
    { "encrypt.cipher-alg", T_STR, CREATE, NULL },
    { "encrypt.cipher-mode", T_STR, CREATE, NULL },
    { "encrypt.format", T_STR, CREATE, NULL },
    { "encrypt.hash-alg", T_STR, CREATE, NULL },
    { "encrypt.iter-time", T_NUM, AMEND | CREATE, "Time to spend in PBKDF in milliseconds" },
    { "encrypt.ivgen-alg", T_STR, CREATE, NULL },
    { "encrypt.ivgen-hash-alg", T_STR, CREATE, NULL },
    { "encrypt.key-secret", T_STR, CREATE, NULL },
    { "encrypt.keyslot", T_NUM, AMEND, "Select a single keyslot to modify explicitly" },
    { "encrypt.new-secret", T_STR, AMEND,
      "New secret to set in the matching keyslots. Empty string to erase" },
    { "encrypt.old-secret", T_STR, AMEND, "Select all keyslots that match this password" },
    { "encrypt.state", T_STR, AMEND, "Select new state of affected keyslots (active/inactive)" },
    { "encryption", T_BOOL, CREATE, NULL },
    { "extended_l2", T_BOOL, CREATE, NULL },
    { "lazy_refcounts", T_BOOL, AMEND | CREATE, "Postpone refcount updates" },
    { "preallocation", T_STR, CREATE, NULL },
    { "refcount_bits", T_NUM, AMEND | CREATE, "Width of a reference count entry in bits" },
    { "size", T_SIZE, AMEND | CREATE, "Virtual disk size" },
};

static const char *const type_names[] = { "str", "num", "bool (on/off)", "size" };

static int find_option(const char *name)
{
    for (unsigned i = 0; i < ARRAY_SIZE(amend_table); i++)
        if (!strcmp(amend_table[i].name, name))
            return (int)i;
    return -1;
}

static void print_amend_help(void)
{
    printf("Amend options for 'qcow2':\n");
    for (unsigned i = 0; i < ARRAY_SIZE(amend_table); i++) {
        char left[64];
        if (!(amend_table[i].use & AMEND))
            continue;
        snprintf(left, sizeof(left), "%s=<%s>", amend_table[i].name, type_names[amend_table[i].type]);
        printf("  %-22s - %s\n", left, amend_table[i].help);
    }
}

/* A number as qemu's option parser reads one (any base, as strtoull). */
static int parse_number(const char *s, uint64_t *out)
{
    char *end;

    if (!*s)
        return -EINVAL;
    errno = 0;
    *out = strtoull(s, &end, 0);
    return (errno || *end) ? -EINVAL : 0;
}

static bool value_ok(enum otype t, const char *v)
{
    uint64_t n;
    bool b;

    switch (t) {
    case T_NUM: return parse_number(v, &n) == 0;
    case T_BOOL: return parse_bool(v, &b) == 0;
    case T_SIZE: return parse_size(v, &n) == 0;
    default: return true;
    }
}

/* A key without "=value" means "on", as in qemu. */
static const char *value_of(const struct opt_kv *kv)
{
    return kv->val ? kv->val : "on";
}

/* Syntax: every key an amend option, every value of its type (in order). */
static int check_syntax(const struct opts *o)
{
    for (size_t i = 0; i < o->n; i++) {
        int k = find_option(o->v[i].key);
        const char *v = value_of(&o->v[i]);

        if (k < 0 || !(amend_table[k].use & AMEND)) {
            /* qemu's hint when the whole list would have done for create */
            bool create = true;
            for (size_t j = 0; j < o->n && create; j++) {
                int c = find_option(o->v[j].key);
                create = c >= 0 && (amend_table[c].use & CREATE) &&
                         value_ok(amend_table[c].type, value_of(&o->v[j]));
            }
            return error("Invalid parameter '%s'%s", o->v[i].key,
                         create ? "\nThis option is only supported for image creation" : "");
        }
        if (value_ok(amend_table[k].type, v))
            continue;
        switch (amend_table[k].type) {
        case T_NUM:
            return error("Parameter '%s' expects a number", o->v[i].key);
        case T_BOOL:
            return error("Parameter '%s' expects 'on' or 'off'", o->v[i].key);
        default:
            return error("Parameter '%s' expects a non-negative number below 2^64\n"
                         "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                         "tera-, peta-\nand exabytes, respectively.", o->v[i].key);
        }
    }
    return 0;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Semantics: what the values mean for this image (in order). */
static int check_values(struct opts *o, const struct qcow2 *q, struct qcow2_amend_opts *a)
{
    bool encrypt = false;

    for (size_t i = 0; i < o->n; i++) {
        const char *k = o->v[i].key, *v = value_of(&o->v[i]);
        uint64_t n = 0;
        bool b = false;

        if (!strcmp(k, "compat")) {
            if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
                a->version = 2;
            else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
                a->version = 3;
            else
                return error("Unknown compatibility level %s", v);
        } else if (!strcmp(k, "backing_file") || !strcmp(k, "backing_fmt")) {
            /* Naming the backing file it already has is no change. */
            const char *bf = opts_has(o, "backing_file") ? opts_get(o, "backing_file") : NULL;
            const char *bfmt = opts_has(o, "backing_fmt") ? opts_get(o, "backing_fmt") : NULL;
            if (!same(bf, q->meta.backing_file) || !same(bfmt, q->meta.backing_fmt))
                return error("Cannot amend the backing file\n"
                             "You can use '%s rebase' instead.", qimg_progname);
        } else if (!strcmp(k, "lazy_refcounts")) {
            parse_bool(v, &b);
            a->lazy_refcounts = b;
        } else if (!strcmp(k, "refcount_bits")) {
            parse_number(v, &n);
            if (n == 0 || n > 64 || (n & (n - 1)))
                return error("Refcount width must be a power of two and may not exceed 64 bits");
            a->refcount_bits = (uint32_t)n;
        } else if (!strcmp(k, "size")) {
            parse_size(v, &a->size);
        } else if (!strcmp(k, "data_file")) {
            /* qimg opens no image with an external data file */
            return error("data-file can only be set for images that use an external data file");
        } else if (!strcmp(k, "data_file_raw")) {
            return error("data-file-raw cannot be set on existing images");
        } else if (!strncmp(k, "encrypt.", 8)) {
            encrypt = true;
        }
    }
    if (encrypt) {
        if (q->meta.h.crypt_method == QCOW_CRYPT_NONE)
            return error("Can't amend encryption options - encryption not present");
        if (q->meta.h.crypt_method != QCOW_CRYPT_LUKS)
            return error("Only LUKS encryption options can be amended");
        return error("Amending LUKS keyslots is not supported yet");
    }
    return 0;
}

static bool wants_help(const struct opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (!o->v[i].val && (!strcmp(o->v[i].key, "help") || !strcmp(o->v[i].key, "?")))
            return true;
    return false;
}

/* The engine reports a percentage; util's progress line draws it. */
static void show_progress(void *opaque, double pct)
{
    progress_update(opaque, (uint64_t)(pct * 100.0), 10000);
}

/* Every -o (popt's own copies), checked and joined with commas as qemu-img does. */
static int join_options(char **list, char **out)
{
    size_t n = 1;
    char *s;

    *out = NULL;
    for (char **p = list; p && *p; p++) {
        if (!opts_valid_list(*p))
            return error("Invalid option list: %s", *p);
        n += strlen(*p) + 1;
    }
    if (!list || !*list)
        return 0;
    s = xzalloc(n);
    if (!s)
        return error("%s", strerror(ENOMEM));
    for (char **p = list; *p; p++) {
        if (p != list)
            strcat(s, ",");
        strcat(s, *p);
    }
    *out = s;
    return 0;
}

enum { OPT_OBJECT = 1 };

static int on_opt(int val, const char *arg, void *ctx)
{
    return val == OPT_OBJECT ? image_args_object(ctx, arg) : 0;
}

static void free_list(char **list)
{
    for (char **p = list; p && *p; p++)
        free(*p);
    free(list);
}

int cmd_amend(int argc, const char **argv)
{
    int quiet = 0, progress = 0, force = 0, share = 0;
    struct image_args ia = { 0 };
    char *fmt = NULL, *path = NULL;
    char **olist = NULL, *options = NULL;
    struct poptOption table[] = {
        { "quiet", 'q', POPT_ARG_NONE, &quiet, 0, "quiet mode: print no progress", NULL },
        { "progress", 'p', POPT_ARG_NONE, &progress, 0,
          "show progress on stderr (when it is a terminal)", NULL },
        { "format", 'f', POPT_ARG_STRING, &fmt, 0, "image format (guessed when left out)", "fmt" },
        { "force", 0, POPT_ARG_NONE, &force, 0, "allow shrinking the virtual size", NULL },
        { "force-share", 'U', POPT_ARG_NONE, &share, 0,
          "open the image even when another process holds it", NULL },
        { "options", 'o', POPT_ARG_ARGV, &olist, 0,
          "options to change (-o help lists them)", "options" },
        { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT,
          "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
        { "image-opts", 0, POPT_ARG_NONE, &ia.image_opts, 0,
          "FILE is an option string (driver=...,file.filename=...)", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    struct cmd_spec spec = {
        .name = "amend",
        .synopsis = "[-q] [-p] [-f fmt] [--force] -o options FILE",
        .summary = "Change the format-specific options of an image in place.",
        .opts = table,
        .on_opt = on_opt,
        .ctx = &ia,
        .min_args = 0,
        .max_args = -1,         /* more than one: qemu-img's message below */
    };
    struct qcow2_amend_opts ao = { .lazy_refcounts = -1 };
    struct progress prog = { false, -1.0 };   /* set up by progress_init */
    struct opts o = { NULL, 0 };
    poptContext pc;
    const char **args;
    const char *file;
    struct blk *b = NULL;
    struct qcow2 *q;
    int nargs, ret, rc = 1;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret != 0) {
        free_list(olist);
        free(fmt);
        image_args_free(&ia);
        return ret < 0 ? 1 : 0;
    }
    file = nargs == 1 ? args[0] : NULL;
    if (join_options(olist, &options))
        goto out;
    if (!options) {
        error("Must specify options (-o)");
        fprintf(stderr, "Try '%s amend --help' for more information.\n", qimg_progname);
        goto out;
    }
    ret = opts_parse(&o, options);
    if (ret < 0) {
        error("%s", err_msg(ret));
        goto out;
    }
    if (wants_help(&o)) {
        const struct blk_driver *drv = NULL;
        if (fmt) {
            drv = blk_find_driver(fmt);
            if (!drv) {
                error("Unknown file format '%s'", fmt);
                goto out;
            }
        } else if (!file) {
            error("Expecting one image file name");
            goto out;
        } else if (ia.image_opts) {
            /* as qemu-img: the image is opened, with its key if it has one */
            if (image_args_open(&ia, &b, file, NULL, BLK_RDWR | (share ? BLK_NOLOCK : 0),
                                NULL) < 0)
                goto out;
            drv = b->drv;
        } else if ((ret = blk_probe(file, &drv)) < 0) {
            cmd_open_error(file, ret);
            goto out;
        }
        if (drv != &blk_qcow2_driver) {
            error("Format driver '%s' does not support option amendment", drv->name);
            goto out;
        }
        print_amend_help();
        rc = 0;
        goto out;
    }
    if (!file) {
        error("Expecting one image file name");
        goto out;
    }

    /* Metadata only: no key needed, but one given must unlock the image. */
    if (image_args_open(&ia, &b, file, fmt, BLK_RDWR | (share ? BLK_NOLOCK : 0), NULL) < 0)
        goto out;
    if (b->drv != &blk_qcow2_driver) {
        error("Format driver '%s' does not support option amendment", b->drv->name);
        goto out;
    }
    q = b->priv;
    path = strdup(b->filename);
    if (!path) {
        error("%s", strerror(ENOMEM));
        goto out;
    }
    if (check_syntax(&o) || check_values(&o, q, &ao))
        goto out;
    ao.force = force;
    progress_init_percent(&prog, progress && !quiet);
    ao.progress = show_progress;
    ao.opaque = &prog;
    ret = qcow2_amend(q, &ao);
    if (ret == 0)
        progress_end(&prog);
    else if (prog.on)
        fputc('\n', stderr);   /* no false 100% on failure */
    if (ret < 0) {
        /* A bare errno (a write that failed: full disk) needs the file. */
        if (err_has_msg(ret))
            error("%s", err_msg(ret));
        else
            error("Error while amending options of '%s': %s", file, err_msg(ret));
        goto out;
    }
    ret = blk_close(b);
    b = NULL;
    if (ret < 0) {
        error("Could not close '%s': %s", file, err_msg(ret));
        goto out;
    }
    /* A dirty image was repaired by the open; the result must check clean. */
    rc = cmd_verify_image(path);
out:
    if (b)
        blk_close(b);
    opts_free(&o);
    free(options);
    free(fmt);
    free(path);
    image_args_free(&ia);
    free_list(olist);
    cmd_done(pc);
    return rc;
}
