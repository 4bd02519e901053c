/*
 * create_opts.c - the creation options `qimg create` and `qimg convert`
 * share (create.h): qemu's option table for qcow2 and raw, the -o parser
 * (types, "nofoo", help), the "Formatting" line, and making the image:
 * raw by file-posix's rules, qcow2 through src/qcow2/create.c, with a LUKS
 * header or legacy AES when encrypt.* asks for one.
 *
 * Owns: which options exist and how their values are checked, before and
 * after the "Formatting" line, in qemu's order and words.
 * Must not: open existing images (create.c checks backing files).
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../qcow2/create.h"
#include "../qcow2/crypto.h"
#include "../qcow2/format.h"
#include "cmd.h"
#include "create.h"

enum otype { T_STR, T_BOOL, T_NUM, T_SIZE };

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

/* qemu's block drivers: what -F accepts without opening the file (-u). */
static const char *const qemu_drivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps", "gluster",
    "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "luks", "nbd", "nfs",
    "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed",
    "quorum", "raw", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vdi",
    "vhdx", "vmdk", "vpc", "vvfat",
};

int create_format_bits(const char *fmt)
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
int create_print_help(const char *filename, const char *fmt)
{
    static const char *const tname[] = { "str", "bool (on/off)", "num", "size" };
    int bits = create_format_bits(fmt);
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


bool create_wants_help(const char *list)
{
    struct opts o = { 0 };
    bool help = false;

    if (list && opts_parse(&o, list) == 0)
        help = opts_has(&o, "help") || opts_has(&o, "?");
    opts_free(&o);
    return help;
}

static void put_str(struct oval *v, const char *s)
{
    free(v->str);
    v->str = s ? strdup(s) : NULL;
}

int create_set(struct create_req *r, enum create_opt i, const char *str, uint64_t num)
{
    r->v[i].set = true;
    r->v[i].num = num;
    put_str(&r->v[i], str);
    return str && !r->v[i].str ? -ENOMEM : 0;
}

/* Parse the -o list into r->v by type, as qemu-opts does; errors printed. */
int create_parse(struct create_req *r, const char *fmt, const char *list, const char *prefix)
{
    struct opts o = { 0 };
    int ret = 0;

    r->fmt = fmt;
    r->bits = create_format_bits(fmt);
    if (!list)
        return 0;
    r->list = strdup(list);
    if (!r->list || opts_parse(&o, list) < 0) {
        opts_free(&o);
        return error("%sInvalid option list: %s", prefix, list);
    }
    for (size_t k = 0; k < o.n && !ret; k++) {
        const char *key = o.v[k].key, *val = o.v[k].val;
        struct oval *v;
        int i;

        if (!val) {             /* "foo" is foo=on, "nofoo" is foo=off */
            if (!strncmp(key, "no", 2) && find_opt(key + 2, r->bits | F_PROTO) >= 0) {
                key += 2;
                val = "off";
            } else {
                val = "on";
            }
        }
        i = find_opt(key, r->bits | F_PROTO);
        if (i < 0) {
            ret = error("%sInvalid parameter '%s'", prefix, key);
            break;
        }
        v = &r->v[i];
        v->set = true;
        put_str(v, val);
        switch (copts[i].type) {
        case T_STR:
            break;
        case T_BOOL:
            if (strcmp(val, "on") && strcmp(val, "yes") && strcmp(val, "true") &&
                strcmp(val, "y") && strcmp(val, "off") && strcmp(val, "no") &&
                strcmp(val, "false") && strcmp(val, "n"))
                ret = error("%sParameter '%s' expects 'on' or 'off'", prefix, key);
            v->num = !strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true") ||
                     !strcmp(val, "y");
            break;
        case T_NUM:
            if (parse_number(val, &v->num) < 0)
                ret = error("%sParameter '%s' expects a number", prefix, key);
            break;
        case T_SIZE: {
            int e = parse_size(val, &v->num);
            if (e == -ERANGE) {
                ret = error("%sValue '%s' is out of range for parameter '%s'", prefix, val,
                            key);
            } else if (e < 0) {
                ret = error("%sParameter '%s' expects a non-negative number below 2^64",
                            prefix, key);
                size_hint();
            }
            break;
        }
        }
    }
    opts_free(&o);
    return ret ? 1 : 0;
}

bool create_encrypted(const struct create_req *r)
{
    return (r->v[O_ENCRYPTION].set && r->v[O_ENCRYPTION].num) || r->v[O_ENC_FORMAT].set;
}

void create_req_free(struct create_req *r)
{
    for (size_t i = 0; i < O_COUNT; i++)
        free(r->v[i].str);
    free(r->list);
    memset(r, 0, sizeof(*r));
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

void create_print_formatting(const struct create_req *r, const char *filename)
{
    /* raw's list is the file protocol's own order */
    static const int raw_order[] = { O_SIZE, O_NOCOW, O_PREALLOC, O_EXTENT_HINT };
    const struct oval *v = r->v;
    const char *sep = "";
    size_t n = (r->bits & F_RAW) ? ARRAY_SIZE(raw_order) : ARRAY_SIZE(copts);

    printf("Formatting '%s', fmt=%s ", filename, r->fmt);
    for (size_t k = 0; k < n; k++) {
        size_t i = (r->bits & F_RAW) ? (size_t)raw_order[k] : k;
        const struct copt *c = &copts[i];

        if (!(c->formats & (r->bits | F_PROTO)) || (!v[i].set && !c->def))
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
            return err_set(-EINVAL, "Unsupported preallocation mode: %s", p);
        return err_set(-EINVAL, "invalid parameter value: %s", p);
    }
    if (v[O_EXTENT_HINT].set && v[O_EXTENT_HINT].num > UINT32_MAX)
        return err_set(-EINVAL, "Extent size hint is too large");
    size = ALIGN_UP(size, 512);
    ret = qfile_open(&f, filename, QF_RDWR | QF_CREATE);
    if (ret < 0) {
        if (err_has_msg(ret))
            return ret;
        return err_set(ret, "Could not create '%s': %s", filename, strerror(-ret));
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
        return err_set(ret, "The image size is too large for file format 'raw'");
    if (ret < 0)
        return err_set(ret, "%s: %s", what, strerror(-ret));
    return 0;
}

/*
 * The encryption options as qemu's QAPI reads them: the alias, the format
 * enum, keys that belong to the other format, the LUKS enums. *method is
 * 0, QCOW_CRYPT_AES or QCOW_CRYPT_LUKS.
 */
static int encrypt_opts(const struct create_req *r, unsigned *method,
                        struct luks_create_opts *lo)
{
    const struct oval *v = r->v;
    const char *fmt = NULL;
    struct opts o = { 0 };
    int ret = 0;

    *method = 0;
    if (v[O_ENCRYPTION].set && v[O_ENC_FORMAT].set)
        return err_set(-EINVAL, "'encrypt.format' and its alias 'encryption' can't be used "
                       "at the same time");
    if (v[O_ENCRYPTION].set && v[O_ENCRYPTION].num)
        fmt = "aes";
    else if (v[O_ENC_FORMAT].set)
        fmt = v[O_ENC_FORMAT].str;
    if (!fmt) {
        for (int i = O_ENC_SECRET; i <= O_ENC_ITER; i++)
            if (v[i].set)
                return err_set(-EINVAL, "Parameter 'encrypt.format' is missing");
        return 0;
    }
    if (!strcmp(fmt, "aes")) {
        for (int i = O_ENC_CIPHER; i <= O_ENC_ITER; i++)
            if (v[i].set)
                return err_set(-EINVAL, "Parameter '%s' is unexpected", copts[i].name);
        *method = QCOW_CRYPT_AES;
        return 0;
    }
    if (strcmp(fmt, "luks"))
        return err_set(-EINVAL, "Parameter 'format' does not accept value '%s'", fmt);
    *method = QCOW_CRYPT_LUKS;
    if (r->list && opts_parse(&o, r->list) < 0)
        ret = err_set(-EINVAL, "Invalid option list: %s", r->list);
    if (ret == 0)
        ret = luks_create_opts_parse(&o, lo);
    opts_free(&o);
    return ret;
}

/* The QAPI enum checks and qcow2_co_create's, after the "Formatting" line. */
static int create_qcow2(const char *filename, const struct oval *v, uint64_t size,
                        const struct create_req *r, const struct secret_store *secrets)
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
    struct luks_create_opts lo;
    const uint8_t *pass;
    uint8_t *hdr = NULL;
    size_t pass_len, hdr_len = 0;
    unsigned method;
    int ret;

    /* qemu resolves the alias before it reads any option */
    if (v[O_ENCRYPTION].set && v[O_ENC_FORMAT].set)
        return err_set(-EINVAL, "'encrypt.format' and its alias 'encryption' can't be used "
                       "at the same time");
    if (v[O_COMPAT].set) {
        const char *c = v[O_COMPAT].str;
        if (!strcmp(c, "0.10") || !strcmp(c, "v2"))
            o.version = 2;
        else if (strcmp(c, "1.1") && strcmp(c, "v3"))
            return err_set(-EINVAL, "Parameter 'version' does not accept value '%s'", c);
    }
    if (o.backing_fmt && !is_driver(o.backing_fmt))
        return err_set(-EINVAL, "Parameter 'backing-fmt' does not accept value '%s'",
                       o.backing_fmt);
    ret = encrypt_opts(r, &method, &lo);
    if (ret < 0)
        return ret;
    if (v[O_PREALLOC].set) {
        static const char *const modes[] = { "off", "metadata", "falloc", "full" };
        size_t i;
        for (i = 0; i < ARRAY_SIZE(modes); i++)
            if (!strcmp(v[O_PREALLOC].str, modes[i]))
                break;
        if (i == ARRAY_SIZE(modes))
            return err_set(-EINVAL, "Parameter 'preallocation' does not accept value '%s'",
                           v[O_PREALLOC].str);
        o.prealloc = (enum qcow2_prealloc)i;
    }
    if (v[O_COMPRESSION].set) {
        if (!strcmp(v[O_COMPRESSION].str, "zstd"))
            o.compression_type = QCOW2_COMPRESSION_ZSTD;
        else if (strcmp(v[O_COMPRESSION].str, "zlib"))
            return err_set(-EINVAL, "Parameter 'compression-type' does not accept value '%s'",
                           v[O_COMPRESSION].str);
    }
    ret = qcow2_create_check(&o);
    if (ret < 0)
        return ret;
    if (v[O_DATA_FILE_RAW].set && v[O_DATA_FILE_RAW].num && !v[O_DATA_FILE].set)
        return err_set(-EINVAL, "data-file-raw requires data-file");
    if (v[O_DATA_FILE].set)
        return err_set(-ENOTSUP, "External data files are not supported yet");
    if (v[O_EXTENT_HINT].set && v[O_EXTENT_HINT].num > UINT32_MAX)
        return err_set(-EINVAL, "Extent size hint is too large");

    if (method) {
        const char *id = v[O_ENC_SECRET].set ? v[O_ENC_SECRET].str : NULL;
        if (!id)
            return err_set(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
        ret = secret_lookup_passphrase(secrets, id, &pass, &pass_len);
        if (ret < 0)
            return ret;
        o.crypt_method = method;
        if (method == QCOW_CRYPT_LUKS) {
            ret = luks_create(&lo, pass, pass_len, &hdr, &hdr_len);
            if (ret < 0)
                return ret;
            o.crypto_hdr = hdr;
            o.crypto_len = hdr_len;
        }
    }
    ret = qcow2_create(filename, &o);
    if (hdr)
        luks_free_buf(hdr, hdr_len);
    if (ret == -EFBIG)
        return err_set(ret, "The image size is too large for file format 'qcow2' (try using "
                       "a larger cluster size)");
    return ret;
}

int create_make(const struct create_req *r, const char *filename,
                const struct secret_store *secrets)
{
    static const struct secret_store none = { 0 };

    if (r->bits & F_QCOW2)
        return create_qcow2(filename, r->v, r->v[O_SIZE].num, r, secrets ? secrets : &none);
    return create_raw(filename, r->v, r->v[O_SIZE].num);
}
