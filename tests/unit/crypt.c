/*
 * crypt.c - unit driver for the encryption engine (src/qcow2/crypto.c,
 * luks.c, src/util/secret.c), so tests/crypto.bats can compare what it
 * decrypts and writes with qemu-img and qemu-io.
 *
 * usage:
 *   crypt IMAGE SECRET OUT.raw [CHUNK]
 *       open IMAGE with passphrase SECRET, write the whole guest disk to OUT,
 *       reading CHUNK bytes at a time (default 1 MiB; odd sizes make every
 *       read start and end inside a sector)
 *   crypt read [--object OBJ]... [--image-opts] NAME OUT.raw
 *       the same, the way a command opens images: secrets from --object,
 *       NAME a file name or an --image-opts string
 *   crypt make-luks IMAGE SECRET [OPTS]
 *       turn a fresh unencrypted qcow2 IMAGE into a LUKS one: luks_create()
 *       with the encrypt.* options OPTS ("encrypt.cipher-alg=aes-128,...")
 *       written to newly allocated clusters, header extension set
 *   crypt write IMAGE SECRET OFFSET BYTE LEN
 *       write LEN bytes of BYTE at guest OFFSET through qcow2_crypto_write;
 *       the clusters must already be allocated (by qemu-io)
 *   crypt pwrite IMAGE SECRET OFFSET BYTE LEN
 *       the same through the block layer's write path (qcow2_write): new
 *       clusters are allocated, their untouched parts copied on write
 *   crypt info IMAGE
 *       the LUKS header as JSON, with qemu-img info's key names
 *   crypt fuzz IMAGE SECRET ROUNDS SEED
 *       in-process: damage 1-4 random bytes of the LUKS header of IMAGE
 *       ROUNDS times, parse, and unlock whatever parses; prints counts.
 *       Made for images whose iteration counts are small (iter-time=0).
 * Errors: one line on stderr, exit status 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/block/block.h"
#include "../../src/cmd/cmd.h"
#include "../../src/qcow2/crypto.h"
#include "../../src/qcow2/qcow2.h"
#include "../../src/util/secret.h"

static int dump(struct blk *b, const char *out, size_t chunk)
{
    uint8_t *buf = malloc(chunk);
    FILE *f = fopen(out, "wb");
    int ret = 0;

    if (!buf || !f) {
        free(buf);
        if (f)
            fclose(f);
        return error("cannot write '%s'", out);
    }
    for (uint64_t off = 0; off < b->size && ret == 0; off += chunk) {
        size_t n = (size_t)MIN(chunk, b->size - off);
        int r = blk_read(b, off, buf, n);
        if (r < 0)
            ret = error("error while reading at byte %llu: %s", (unsigned long long)off,
                        err_msg(r));
        else if (fwrite(buf, 1, n, f) != n)
            ret = error("cannot write '%s'", out);
    }
    if (fclose(f) != 0 && ret == 0)
        ret = error("cannot write '%s'", out);
    free(buf);
    return ret;
}

static int do_simple(const char *image, const char *secret, const char *out, size_t chunk)
{
    struct secret one = { "k", (uint8_t *)secret, strlen(secret) };
    struct secret_store ss = { &one, 1 };
    struct blk_key key = { &ss, "k", NULL };
    struct blk *b;
    int ret = blk_open_key(&b, image, NULL, BLK_NEED_KEY, &key);

    if (ret < 0)
        return cmd_open_error(image, ret);
    ret = dump(b, out, chunk);
    if (blk_close(b) < 0 && !ret)
        ret = 1;
    return ret;
}

static int do_read(int argc, char **argv)
{
    struct secret_store ss = { 0 };
    struct imageopts io = { 0 };
    struct blk_key key = { 0 };
    const char *name = NULL, *out = NULL, *file, *fmt = NULL;
    bool image_opts = false;
    struct blk *b;
    int ret = 1;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--object") && i + 1 < argc) {
            const char *help;
            if (secret_object_help(argv[i + 1], &help)) {
                fputs(help, stdout);
                ret = 0;
                goto out;
            }
            ret = secret_object_add(&ss, argv[++i]);
            if (ret < 0) {
                ret = error("%s", err_msg(ret));
                goto out;
            }
        } else if (!strcmp(argv[i], "--image-opts")) {
            image_opts = true;
        } else if (!name) {
            name = argv[i];
        } else {
            out = argv[i];
        }
    }
    ret = 1;
    if (!name || !out)
        goto out;
    file = name;
    if (image_opts) {
        ret = imageopts_parse(name, &io);
        if (ret < 0) {
            ret = error("Could not open '%s': %s", name, err_msg(ret));
            goto out;
        }
        file = io.filename;
        fmt = io.driver;
        key = (struct blk_key){ &ss, io.key_secret, io.encrypt_format };
    }
    ret = blk_open_key(&b, file, fmt, BLK_NEED_KEY, &key);
    if (ret < 0) {
        ret = cmd_open_error(name, ret);
        goto out;
    }
    ret = dump(b, out, 1024 * 1024);
    if (blk_close(b) < 0 && !ret)
        ret = 1;
out:
    imageopts_free(&io);
    secret_store_free(&ss);
    return ret;
}

static int open_rw(const char *image, struct qcow2 **q)
{
    struct qfile *f;
    int ret = qfile_open(&f, image, QF_RDWR);

    if (ret == 0) {
        ret = qcow2_open(q, f, QCOW2_OPEN_RDWR);
        if (ret < 0)
            qfile_close(f);
    }
    if (ret < 0)
        return cmd_open_error(image, ret);
    return 0;
}

static int do_make_luks(const char *image, const char *secret, const char *optstr)
{
    struct opts o = { 0 };
    struct luks_create_opts lo;
    struct qcow2 *q;
    uint8_t *hdr = NULL, *zero = NULL;
    size_t len = 0;
    int64_t off;
    int ret;

    if (open_rw(image, &q))
        return 1;
    ret = opts_parse(&o, optstr ? optstr : "");
    if (ret == 0)
        ret = luks_create_opts_parse(&o, &lo);
    if (ret == 0 && opts_unused(&o))
        ret = err_set(-EINVAL, "Invalid parameter '%s'", opts_unused(&o));
    if (ret == 0)
        ret = luks_create(&lo, (const uint8_t *)secret, strlen(secret), &hdr, &len);
    if (ret < 0)
        goto out;
    off = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, len));
    if (off < 0) {
        ret = (int)off;
        goto out;
    }
    zero = xzalloc(q->cluster_size);
    ret = zero ? 0 : -ENOMEM;
    if (ret == 0)
        ret = qfile_pwrite(q->file, hdr, len, (uint64_t)off);
    if (ret == 0 && len % q->cluster_size)
        ret = qfile_pwrite(q->file, zero, q->cluster_size - len % q->cluster_size,
                           (uint64_t)off + len);
    if (ret == 0)
        ret = qcow2_flush(q);
    if (ret == 0) {
        q->meta.has_crypto_ext = true;
        q->meta.crypto_offset = (uint64_t)off;
        q->meta.crypto_length = len;
        q->meta.h.crypt_method = QCOW_CRYPT_LUKS;
        ret = qcow2_write_header(q);
    }
out:
    if (ret < 0)
        error("make-luks: %s", err_msg(ret));
    luks_free_buf(hdr, len);
    free(zero);
    opts_free(&o);
    if (qcow2_close(q) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0;
}

static int do_write(const char *image, const char *secret, uint64_t off, int byte,
                     size_t len)
{
    struct qcow2 *q;
    uint8_t *buf = malloc(len ? len : 1);
    int ret;

    if (!buf || open_rw(image, &q)) {
        free(buf);
        return 1;
    }
    memset(buf, byte, len);
    ret = qcow2_set_key(q, (const uint8_t *)secret, strlen(secret), true);
    while (ret == 0 && len) {
        struct qcow2_mapping m;
        ret = qcow2_get_mapping(q, off, len, &m);
        if (ret == 0 && m.type != QCOW2_C_NORMAL)
            ret = err_set(-EINVAL, "guest offset %llu is not allocated",
                          (unsigned long long)off);
        if (ret == 0)
            ret = qcow2_crypto_write(q, off, m.host, buf, (size_t)m.bytes);
        off += m.bytes;
        len -= (size_t)m.bytes;
    }
    if (ret < 0)
        error("write: %s", err_msg(ret));
    free(buf);
    if (qcow2_close(q) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0;
}

static int do_info(const char *image)
{
    struct qfile *f;
    struct qcow2 *q;
    const struct luks_header *h;
    struct json j;
    int ret = qfile_open(&f, image, QF_RDONLY);

    if (ret == 0) {
        ret = qcow2_open(&q, f, 0);
        if (ret < 0)
            qfile_close(f);
    }
    if (ret < 0)
        return cmd_open_error(image, ret);
    h = qcow2_crypto_luks(q);
    if (!h) {
        qcow2_close(q);
        return error("'%s' is not a LUKS image", image);
    }
    json_init(&j, stdout);
    json_begin_object(&j, NULL);
    json_str(&j, "ivgen-alg", crypt_ivgen_name(h->spec.ivgen));
    json_str(&j, "hash-alg", crypt_hash_name(h->hash));
    json_str(&j, "cipher-alg", crypt_alg_name(h->spec.alg));
    json_str(&j, "uuid", h->uuid);
    if (h->spec.ivgen == CRYPT_IV_ESSIV)
        json_str(&j, "ivgen-hash-alg", crypt_hash_name(h->spec.ivgen_hash));
    json_str(&j, "format", "luks");
    json_str(&j, "cipher-mode", crypt_mode_name(h->spec.mode));
    json_begin_array(&j, "slots");
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        bool on = h->slots[i].active == LUKS_SLOT_ACTIVE;
        json_begin_object(&j, NULL);
        json_bool(&j, "active", on);
        if (on)
            json_uint(&j, "iters", h->slots[i].iterations);
        json_uint(&j, "key-offset", (uint64_t)h->slots[i].key_offset * 512);
        if (on)
            json_uint(&j, "stripes", h->slots[i].stripes);
        json_end_object(&j);
    }
    json_end_array(&j);
    json_uint(&j, "payload-offset", (uint64_t)h->payload_offset * 512);
    json_uint(&j, "master-key-iters", h->mk_iterations);
    json_end_object(&j);
    json_finish(&j);
    return qcow2_close(q) < 0;
}

struct area { const uint8_t *buf; size_t len; };

static int area_read(void *opaque, uint64_t off, void *buf, size_t len)
{
    const struct area *a = opaque;

    if (off > a->len || len > a->len - off)
        return err_set(-EINVAL, "Request for data outside of extension header");
    memcpy(buf, a->buf + off, len);
    return 0;
}

static int do_fuzz(const char *image, const char *secret, long rounds, unsigned seed)
{
    struct qfile *f;
    struct qcow2 *q;
    struct area a;
    uint8_t *buf, hdr[LUKS_HEADER_LEN], mk[64];
    long parsed = 0, refused = 0, unlocked = 0, wrong = 0;
    int ret = qfile_open(&f, image, QF_RDONLY);

    if (ret == 0) {
        ret = qcow2_open(&q, f, 0);
        if (ret < 0)
            qfile_close(f);
    }
    if (ret < 0)
        return cmd_open_error(image, ret);
    a.len = q->meta.crypto_length;
    buf = malloc(a.len);
    if (!buf || qfile_pread(q->file, buf, a.len, q->meta.crypto_offset) < 0)
        return error("cannot read the LUKS area");
    a.buf = buf;
    memcpy(hdr, buf, sizeof(hdr));
    srand(seed);
    for (long r = 0; r < rounds; r++) {
        struct luks_header h;
        int n = 1 + rand() % 4;

        memcpy(buf, hdr, sizeof(hdr));
        for (int k = 0; k < n; k++)
            buf[rand() % LUKS_HEADER_LEN] = (uint8_t)rand();
        if (luks_header_parse(buf, LUKS_HEADER_LEN, a.len, &h) < 0) {
            refused++;
            continue;
        }
        parsed++;
        /* damaged iteration counts are slow, not interesting: keep them small */
        if (h.mk_iterations > 5000)
            h.mk_iterations = 5000;
        for (int i = 0; i < LUKS_NUM_SLOTS; i++)
            if (h.slots[i].iterations > 5000)
                h.slots[i].iterations = 5000;
        ret = luks_unlock(&h, (const uint8_t *)secret, strlen(secret), area_read, &a, mk);
        if (ret == 0)
            unlocked++;
        else if (ret == -EACCES)
            wrong++;
    }
    printf("%ld refused, %ld parsed, %ld unlocked, %ld wrong key\n", refused, parsed,
           unlocked, wrong);
    free(buf);
    qcow2_close(q);
    return 0;
}

static int do_pwrite(const char *image, const char *secret, uint64_t off, int byte,
                     size_t len)
{
    struct secret one = { "k", (uint8_t *)secret, strlen(secret) };
    struct secret_store ss = { &one, 1 };
    struct blk_key key = { &ss, "k", NULL };
    uint8_t *buf = malloc(len ? len : 1);
    struct blk *b;
    int ret;

    if (!buf)
        return 1;
    memset(buf, byte, len);
    ret = blk_open_key(&b, image, NULL, BLK_RDWR | BLK_NEED_KEY, &key);
    if (ret < 0) {
        free(buf);
        return cmd_open_error(image, ret);
    }
    ret = blk_write(b, off, buf, len);
    if (ret < 0)
        error("pwrite: %s", err_msg(ret));
    free(buf);
    if (blk_close(b) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0;
}

int main(int argc, char **argv)
{
    qimg_progname = "crypt";
    if (argc >= 2 && !strcmp(argv[1], "read"))
        return do_read(argc - 2, argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "make-luks"))
        return do_make_luks(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
    if (argc == 7 && !strcmp(argv[1], "write"))
        return do_write(argv[2], argv[3], strtoull(argv[4], NULL, 0),
                         (int)strtol(argv[5], NULL, 0), strtoul(argv[6], NULL, 0));
    if (argc == 7 && !strcmp(argv[1], "pwrite"))
        return do_pwrite(argv[2], argv[3], strtoull(argv[4], NULL, 0),
                         (int)strtol(argv[5], NULL, 0), strtoul(argv[6], NULL, 0));
    if (argc == 6 && !strcmp(argv[1], "fuzz"))
        return do_fuzz(argv[2], argv[3], strtol(argv[4], NULL, 0),
                       (unsigned)strtoul(argv[5], NULL, 0));
    if (argc == 3 && !strcmp(argv[1], "info"))
        return do_info(argv[2]);
    if (argc == 4 || argc == 5) {
        size_t chunk = argc == 5 ? strtoul(argv[4], NULL, 0) : 1024 * 1024;
        return do_simple(argv[1], argv[2], argv[3], chunk ? chunk : 1);
    }
    fprintf(stderr, "usage: crypt IMAGE SECRET OUT.raw | read [--object O]... "
            "[--image-opts] NAME OUT | make-luks IMAGE SECRET [OPTS] | "
            "write|pwrite IMAGE SECRET OFF BYTE LEN | info IMAGE | fuzz IMAGE SECRET N SEED\n");
    return 2;
}
