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
 * Owns: the create command. The qcow2 layout is src/qcow2/create.c.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../block/block.h"
#include "../qcow2/create.h"
#include "../qcow2/format.h"
#include "cmd.h"

enum otype { T_STR, T_BOOL, T_NUM, T_SIZE };

/* Which formats take an option. */
enum { F_QCOW2 = 1, F_RAW = 2, F_PROTO = 4 };

/*
 * Every option in the order qemu prints them on the "Formatting" line (the
 * format's list, then the file protocol's), with the default it prints.
 */
static const struct copt {
    const char *name;
    enum otype type;
    int formats;
    const char *def;
    const char *help;
} copts[] = {
    { "encryption", T_BOOL, F_QCOW2, NULL,
      "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
    { "encrypt.format", T_STR, F_QCOW2, NULL, "Encrypt the image, format choices: 'aes', 'luks'" },
    { "encrypt.key-secret", T_STR, F_QCOW2, NULL,
      "ID of secret providing qcow AES key or LUKS passphrase" },
    { "encrypt.cipher-alg", T_STR, F_QCOW2, NULL, "Name of encryption cipher algorithm" },
    { "encrypt.cipher-mode", T_STR, F_QCOW2, NULL, "Name of encryption cipher mode" },
    { "encrypt.ivgen-alg", T_STR, F_QCOW2, NULL, "Name of IV generator algorithm" },
    { "encrypt.ivgen-hash-alg", T_STR, F_QCOW2, NULL, "Name of IV generator hash algorithm" },
    { "encrypt.hash-alg", T_STR, F_QCOW2, NULL, "Name of encryption hash algorithm" },
    { "encrypt.iter-time", T_NUM, F_QCOW2, NULL, "Time to spend in PBKDF in milliseconds" },
    { "cluster_size", T_SIZE, F_QCOW2, "65536", "qcow2 cluster size" },
    { "extended_l2", T_BOOL, F_QCOW2, "off", "Extended L2 tables" },
    { "preallocation", T_STR, F_QCOW2 | F_RAW, NULL, NULL },
    { "compression_type", T_STR, F_QCOW2, "zlib",
      "Compression method used for image cluster compression" },
    { "size", T_SIZE, F_QCOW2 | F_RAW, NULL, "Virtual disk size" },
    { "compat", T_STR, F_QCOW2, NULL, "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "backing_file", T_STR, F_QCOW2, NULL, "File name of a base image" },
    { "backing_fmt", T_STR, F_QCOW2, NULL, "Image format of the base image" },
    { "data_file", T_STR, F_QCOW2, NULL, "File name of an external data file" },
    { "data_file_raw", T_BOOL, F_QCOW2, NULL,
      "The external data file must stay valid as a raw image" },
    { "lazy_refcounts", T_BOOL, F_QCOW2, "off", "Postpone refcount updates" },
    { "refcount_bits", T_NUM, F_QCOW2, "16", "Width of a reference count entry in bits" },
    { "nocow", T_BOOL, F_PROTO, NULL, "Turn off copy-on-write (valid only on btrfs)" },
    { "extent_size_hint", T_SIZE, F_PROTO, NULL,
      "Extent size hint for the image file, 0 to disable" },
};

enum {
    O_ENCRYPTION, O_ENC_FORMAT, O_ENC_SECRET, O_ENC_CIPHER, O_ENC_MODE, O_ENC_IVGEN,
    O_ENC_IVHASH, O_ENC_HASH, O_ENC_ITER, O_CLUSTER_SIZE, O_EXTL2, O_PREALLOC,
    O_COMPRESSION, O_SIZE, O_COMPAT, O_BACKING_FILE, O_BACKING_FMT, O_DATA_FILE,
    O_DATA_FILE_RAW, O_LAZY, O_REFCOUNT_BITS, O_NOCOW, O_EXTENT_HINT, O_COUNT
};

/* qemu's block drivers: what -F accepts without opening the file (-u). */
static const char *const qemu_drivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps", "gluster",
    "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "luks", "nbd", "nfs",
    "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed",
    "quorum", "raw", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vdi",
    "vhdx", "vmdk", "vpc", "vvfat",
};

/* popt hands each option argument over to us: the strings are ours to free. */
struct create_args {
    bool quiet, unsafe;
    char *fmt, *backing, *backing_fmt;
    char *options;              /* every -o, joined with commas */
    bool bad_list;
};

struct oval {
    bool set;
    const char *str;            /* as given (bools, strings) */
    uint64_t num;               /* sizes and numbers */
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
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

/* qemu-img's is_valid_option_list(). */
static bool valid_option_list(const char *s)
{
    size_t n = strlen(s);

    if (!n || s[0] == ',')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ',') {
            if (s[i + 1] == ',')
                i++;
            else if (!s[i + 1])
                return false;
        }
    return true;
}

static int on_opt(int val, const char *arg, void *ctx)
{
    struct create_args *a = ctx;

    switch (val) {
    case 'q': a->quiet = true; break;
    case 'u': a->unsafe = true; break;
    case 'f': free(a->fmt); a->fmt = (char *)arg; break;
    case 'b': free(a->backing); a->backing = (char *)arg; break;
    case 'F': free(a->backing_fmt); a->backing_fmt = (char *)arg; break;
    case 'o': {
        char *n;
        if (!valid_option_list(arg)) {
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

static int format_bits(const char *fmt)
{
    if (!strcmp(fmt, "qcow2"))
        return F_QCOW2;
    if (!strcmp(fmt, "raw"))
        return F_RAW;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qemu-img's print_block_option_help(): sorted "  name=<type>  - help". */
static int print_option_help(const char *filename, const char *fmt)
{
    static const char *const tname[] = { "str", "bool (on/off)", "num", "size" };
    int bits = format_bits(fmt);
    char *lines[ARRAY_SIZE(copts)];
    size_t n = 0;

    if (!bits)
        return error("Unknown file format '%s'", fmt);
    if (filename)
        bits |= F_PROTO;
    for (size_t i = 0; i < ARRAY_SIZE(copts); i++) {
        const struct copt *c = &copts[i];
        const char *help = c->help;
        char left[128];
        int len;

        if (!(c->formats & bits))
            continue;
        if (i == O_PREALLOC)
            help = (bits & F_QCOW2) ? "Preallocation mode (allowed values: off, metadata, "
                                      "falloc, full)"
                                    : "Preallocation mode (allowed values: off, falloc, full)";
        if (i == O_PREALLOC && !(bits & F_QCOW2) && !filename)
            continue;       /* raw takes it from the file protocol */
        len = snprintf(left, sizeof(left), "  %s=<%s>", c->name, tname[c->type]);
        lines[n] = malloc(256);
        if (!lines[n])
            break;
        snprintf(lines[n], 256, "%s%*s - %s", left, len < 24 ? 24 - len : 0, "", help);
        n++;
    }
    qsort(lines, n, sizeof(lines[0]), cmp_str);
    if (filename)
        printf("Supported options:\n");
    else
        printf("Supported %s options:\n", fmt);
    for (size_t i = 0; i < n; i++) {
        printf("%s\n", lines[i]);
        free(lines[i]);
    }
    if (!filename)
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    return 0;
}

static int find_opt(const char *name, int bits)
{
    for (size_t i = 0; i < ARRAY_SIZE(copts); i++)
        if ((copts[i].formats & bits) && !strcmp(copts[i].name, name))
            return (int)i;
    return -1;
}

/* qemu_strtou64(s, base 0): what -o number options accept ("-16" wraps). */
static int parse_number(const char *s, uint64_t *out)
{
    char *end;
    bool neg = false;

    while (*s == ' ' || *s == '\t' || *s == '\n')
        s++;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return -EINVAL;
    errno = 0;
    *out = strtoull(s, &end, 0);
    if (errno || *end || end == s)
        return -EINVAL;
    if (neg)
        *out = -*out;
    return 0;
}

static void size_hint(void)
{
    fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                    "and exabytes, respectively.\n");
}

/* Parse the -o list into v[] by type, as qemu-opts does; errors printed. */
static int parse_options(const char *filename, const char *list, int bits, struct oval *v)
{
    struct opts o = { 0 };
    int ret = 0;

    if (!list)
        return 0;
    if (opts_parse(&o, list) < 0) {
        opts_free(&o);
        return error("%s: Invalid option list: %s", filename, list);
    }
    for (size_t k = 0; k < o.n && !ret; k++) {
        const char *key = o.v[k].key, *val = o.v[k].val;
        int i;

        if (!val) {             /* "foo" is foo=on, "nofoo" is foo=off */
            if (!strncmp(key, "no", 2) && find_opt(key + 2, bits | F_PROTO) >= 0) {
                key += 2;
                val = "off";
            } else {
                val = "on";
            }
        }
        i = find_opt(key, bits | F_PROTO);
        if (i < 0) {
            ret = error("%s: Invalid parameter '%s'", filename, key);
            break;
        }
        v[i].set = true;
        v[i].str = val;
        switch (copts[i].type) {
        case T_STR:
            break;
        case T_BOOL:
            if (strcmp(val, "on") && strcmp(val, "yes") && strcmp(val, "true") &&
                strcmp(val, "y") && strcmp(val, "off") && strcmp(val, "no") &&
                strcmp(val, "false") && strcmp(val, "n"))
                ret = error("%s: Parameter '%s' expects 'on' or 'off'", filename, key);
            v[i].num = !strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true") ||
                       !strcmp(val, "y");
            break;
        case T_NUM:
            if (parse_number(val, &v[i].num) < 0)
                ret = error("%s: Parameter '%s' expects a number", filename, key);
            break;
        case T_SIZE: {
            int r = parse_size(val, &v[i].num);
            if (r == -ERANGE) {
                ret = error("%s: Value '%s' is out of range for parameter '%s'", filename,
                            val, key);
            } else if (r < 0) {
                ret = error("%s: Parameter '%s' expects a non-negative number below 2^64",
                            filename, key);
                size_hint();
            }
            break;
        }
        }
    }
    /* The strings must outlive o: keep them in v by duplicating the list. */
    for (size_t i = 0; i < O_COUNT; i++)
        if (v[i].set && v[i].str)
            v[i].str = strdup(v[i].str);
    opts_free(&o);
    return ret;
}

/* qemu's escaped_print(): commas doubled. */
static void print_escaped(const char *s)
{
    for (; *s; s++) {
        if (*s == ',')
            putchar(',');
        putchar(*s);
    }
}

static void print_formatting(const char *filename, const char *fmt, int bits,
                             const struct oval *v)
{
    /* raw's list is the file protocol's own order */
    static const int raw_order[] = { O_SIZE, O_NOCOW, O_PREALLOC, O_EXTENT_HINT };
    const char *sep = "";
    size_t n = (bits & F_RAW) ? ARRAY_SIZE(raw_order) : ARRAY_SIZE(copts);

    printf("Formatting '%s', fmt=%s ", filename, fmt);
    for (size_t k = 0; k < n; k++) {
        size_t i = (bits & F_RAW) ? (size_t)raw_order[k] : k;
        const struct copt *c = &copts[i];

        if (!(c->formats & (bits | F_PROTO)) || (!v[i].set && !c->def))
            continue;
        printf("%s%s=", sep, c->name);
        if (!v[i].set)
            fputs(c->def, stdout);
        else if (c->type == T_STR)
            print_escaped(v[i].str);
        else if (c->type == T_BOOL)
            fputs(v[i].str, stdout);
        else
            printf("%lld", (long long)v[i].num);
        sep = " ";
    }
    putchar('\n');
    fflush(stdout);
}

static bool is_driver(const char *s)
{
    for (size_t i = 0; i < ARRAY_SIZE(qemu_drivers); i++)
        if (!strcmp(qemu_drivers[i], s))
            return true;
    return false;
}

/* Open the backing file as qemu-img does: to check it and learn its size. */
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

static void set_nocow(const char *filename)
{
#ifdef FS_NOCOW_FL
    int fd = open(filename, O_RDONLY | O_CLOEXEC), attr;

    /* As qemu: only a hint; file systems without copy-on-write say no. */
    if (fd < 0)
        return;
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
    close(fd);
#else
    (void)filename;
#endif
}

static int create_raw(const char *filename, const struct oval *v, uint64_t size)
{
    const char *p = v[O_PREALLOC].set ? v[O_PREALLOC].str : "off", *what;
    struct qfile *f;
    int ret;

    if (strcmp(p, "off") && strcmp(p, "falloc") && strcmp(p, "full")) {
        if (!strcmp(p, "metadata"))
            return error("%s: Unsupported preallocation mode: %s", filename, p);
        return error("%s: invalid parameter value: %s", filename, p);
    }
    if (v[O_EXTENT_HINT].set && v[O_EXTENT_HINT].num > UINT32_MAX)
        return error("%s: Extent size hint is too large", filename);
    size = ALIGN_UP(size, 512);
    ret = qfile_open(&f, filename, QF_RDWR | QF_CREATE);
    if (ret < 0) {
        if (err_has_msg(ret))
            return error("%s: %s", filename, err_msg(ret));
        return error("%s: Could not create '%s': %s", filename, filename, strerror(-ret));
    }
    ret = qfile_truncate(f, 0);
    if (ret == 0 && v[O_NOCOW].set && v[O_NOCOW].num)
        set_nocow(filename);
    /* file-posix's raw_regular_truncate(), with its messages */
    what = "Could not resize file";
    if (ret == 0 && !strcmp(p, "falloc") && size) {
        what = "Could not preallocate new data";
        ret = qfile_allocate(f, 0, size);
    }
    if (ret == 0 && !strcmp(p, "full")) {
        static const uint8_t zeros[65536];
        what = "Could not write zeros for preallocation";
        for (uint64_t off = 0; off < size && ret == 0; off += sizeof(zeros))
            ret = qfile_pwrite(f, zeros, (size_t)MIN(sizeof(zeros), size - off), off);
    }
    if (ret == 0) {
        what = "Could not resize file";
        ret = qfile_truncate(f, size);
    }
    {
        int r = qfile_close(f);
        if (ret == 0)
            ret = r;
    }
    if (ret == -EFBIG)
        return error("%s: The image size is too large for file format 'raw'", filename);
    if (ret < 0)
        return error("%s: %s: %s", filename, what, strerror(-ret));
    return 0;
}

/* The QAPI enum checks and qcow2_co_create's, after the "Formatting" line. */
static int create_qcow2(const char *filename, const struct oval *v, uint64_t size)
{
    struct qcow2_create_opts o = {
        .size = ALIGN_UP(size, 512),
        .version = 3,
        .cluster_size = v[O_CLUSTER_SIZE].set ? v[O_CLUSTER_SIZE].num : 65536,
        .refcount_bits = v[O_REFCOUNT_BITS].set ? v[O_REFCOUNT_BITS].num : 16,
        .lazy_refcounts = v[O_LAZY].set && v[O_LAZY].num,
        .extended_l2 = v[O_EXTL2].set && v[O_EXTL2].num,
        .compression_type = QCOW2_COMPRESSION_ZLIB,
        .prealloc = QCOW2_PREALLOC_OFF,
        .backing_file = v[O_BACKING_FILE].set ? v[O_BACKING_FILE].str : NULL,
        .backing_fmt = v[O_BACKING_FMT].set ? v[O_BACKING_FMT].str : NULL,
        .nocow = v[O_NOCOW].set && v[O_NOCOW].num,
    };
    int ret;

    if (v[O_COMPAT].set) {
        const char *c = v[O_COMPAT].str;
        if (!strcmp(c, "0.10") || !strcmp(c, "v2"))
            o.version = 2;
        else if (strcmp(c, "1.1") && strcmp(c, "v3"))
            return error("%s: Parameter 'version' does not accept value '%s'", filename, c);
    }
    if (o.backing_fmt && !is_driver(o.backing_fmt))
        return error("%s: Parameter 'backing-fmt' does not accept value '%s'", filename,
                     o.backing_fmt);
    if ((v[O_ENCRYPTION].set && v[O_ENCRYPTION].num) || v[O_ENC_FORMAT].set)
        return error("%s: Encryption is not supported yet", filename);
    if (v[O_PREALLOC].set) {
        static const char *const modes[] = { "off", "metadata", "falloc", "full" };
        size_t i;
        for (i = 0; i < ARRAY_SIZE(modes); i++)
            if (!strcmp(v[O_PREALLOC].str, modes[i]))
                break;
        if (i == ARRAY_SIZE(modes))
            return error("%s: Parameter 'preallocation' does not accept value '%s'",
                         filename, v[O_PREALLOC].str);
        o.prealloc = (enum qcow2_prealloc)i;
    }
    if (v[O_COMPRESSION].set) {
        if (!strcmp(v[O_COMPRESSION].str, "zstd"))
            o.compression_type = QCOW2_COMPRESSION_ZSTD;
        else if (strcmp(v[O_COMPRESSION].str, "zlib"))
            return error("%s: Parameter 'compression-type' does not accept value '%s'",
                         filename, v[O_COMPRESSION].str);
    }
    ret = qcow2_create_check(&o);
    if (ret < 0)
        return error("%s: %s", filename, err_msg(ret));
    if (v[O_DATA_FILE_RAW].set && v[O_DATA_FILE_RAW].num && !v[O_DATA_FILE].set)
        return error("%s: data-file-raw requires data-file", filename);
    if (v[O_DATA_FILE].set)
        return error("%s: External data files are not supported yet", filename);
    if (v[O_EXTENT_HINT].set && v[O_EXTENT_HINT].num > UINT32_MAX)
        return error("%s: Extent size hint is too large", filename);

    ret = qcow2_create(filename, &o);
    if (ret == -EFBIG)
        return error("%s: The image size is too large for file format 'qcow2' (try using "
                     "a larger cluster size)", filename);
    if (ret < 0)
        return error("%s: %s", filename, err_msg(ret));
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
    struct oval v[O_COUNT];
    poptContext pc;
    const char **args, *filename;
    uint64_t size = UINT64_MAX;
    int nargs, bits, rc = 1;

    memset(v, 0, sizeof(v));
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

    if (a.options) {
        struct opts o = { 0 };
        if (opts_parse(&o, a.options) == 0 && (opts_has(&o, "help") || opts_has(&o, "?"))) {
            opts_free(&o);
            rc = print_option_help(filename, a.fmt);
            goto out;
        }
        opts_free(&o);
    }
    if (!filename) {
        error("Expecting image file name");
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        goto out;
    }
    if (nargs > 1) {
        int r = parse_size(args[1], &size);
        if (r == -ERANGE) {
            error("Invalid image size specified. Must be between 0 and %lld.",
                  (long long)INT64_MAX);
            goto out;
        }
        if (r < 0) {
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
    bits = format_bits(a.fmt);
    if (!bits) {
        error("%s: Unknown file format '%s'", filename, a.fmt);
        goto out;
    }
    if (parse_options(filename, a.options, bits, v))
        goto out;
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
        v[O_BACKING_FILE].set = true;
        free((char *)v[O_BACKING_FILE].str);
        v[O_BACKING_FILE].str = strdup(a.backing);
    }
    if (a.backing_fmt) {
        if (!(bits & F_QCOW2)) {
            error("%s: Backing file format not supported for file format '%s'", filename,
                  a.fmt);
            goto out;
        }
        v[O_BACKING_FMT].set = true;
        free((char *)v[O_BACKING_FMT].str);
        v[O_BACKING_FMT].str = strdup(a.backing_fmt);
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
        print_formatting(filename, a.fmt, bits, v);
    if (bits & F_QCOW2)
        rc = create_qcow2(filename, v, v[O_SIZE].num);
    else
        rc = create_raw(filename, v, v[O_SIZE].num);
out:
    for (size_t i = 0; i < O_COUNT; i++)
        free((char *)v[i].str);
    free(a.options);
    free(a.fmt);
    free(a.backing);
    free(a.backing_fmt);
    cmd_done(pc);
    return rc;
}
