/*
 * luks.c - the LUKS1 header inside qcow2 images (crypt_method 2): parsing
 * and validating its 592 bytes (pure, on a buffer), unlocking a key slot
 * (PBKDF2, decrypting the key material, anti-forensic merge, master key
 * digest), and laying out a new header area with one active slot.
 *
 * The on-disk format is LUKS1 (cryptsetup's "LUKS On-Disk Format
 * Specification" 1.2); qemu's choices on top of it are followed: exactly
 * 4000 stripes, key material of each slot padded to 4 KiB, the first slot
 * at 4 KiB, iteration counts measured as qemu measures them.
 *
 * Owns: the header layout, AF split/merge, PBKDF2 iteration measurement.
 * Must not: do I/O other than through the caller's read callback; keep
 * key material beyond a call (everything secret is cleansed before free).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "format.h"

/* Field offsets in the 592-byte header. */
#define H_MAGIC         0
#define H_VERSION       6
#define H_CIPHER_NAME   8
#define H_CIPHER_MODE   40
#define H_HASH_SPEC     72
#define H_PAYLOAD       104
#define H_KEY_BYTES     108
#define H_MK_DIGEST     112
#define H_MK_SALT       132
#define H_MK_ITERS      164
#define H_UUID          168
#define H_SLOTS         208
#define SLOT_LEN        48

/*
 * Our bound on PBKDF2 iterations read from an image: 2^26 is about 30 s of
 * SHA-256 per output block on a 2020s core, 250 times what qemu picks for
 * its default 2 s. A hostile header cannot make qimg spin much longer.
 */
#define LUKS_MAX_ITERS (1u << 26)
#define SECTOR CRYPT_SECTOR_SIZE
#define HEADER_SECTORS (LUKS_KEY_SLOT_OFFSET / SECTOR)

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

uint64_t luks_slot_area_len(const struct luks_header *h)
{
    uint64_t sectors = DIV_ROUND_UP((uint64_t)h->key_bytes * LUKS_STRIPES, SECTOR);
    return ALIGN_UP(sectors, HEADER_SECTORS) * SECTOR;
}

/* Material of slot s in sectors, as qemu sizes it (4 KiB aligned). */
static uint64_t slot_sectors(const struct luks_header *h, uint32_t stripes)
{
    uint64_t sectors = DIV_ROUND_UP((uint64_t)h->key_bytes * stripes, SECTOR);
    return ALIGN_UP(sectors, HEADER_SECTORS);
}

static void copy_str(char *dst, const uint8_t *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* "xts-plain64", "cbc-essiv:sha256": mode, IV generator, IV hash. */
static int parse_names(struct luks_header *h)
{
    char mode[33], *ivgen, *ivhash;
    int m, g, hash, hh = 0, a = -1;
    size_t kb = h->key_bytes;

    memcpy(mode, h->cipher_mode, sizeof(mode));
    ivgen = strchr(mode, '-');
    if (!ivgen)
        return err_set(-EINVAL, "Unexpected cipher mode string format '%s'", h->cipher_mode);
    *ivgen++ = 0;
    ivhash = strchr(ivgen, ':');
    if (ivhash) {
        *ivhash++ = 0;
        hh = crypt_hash_parse(ivhash);
        if (hh < 0)
            return err_set(-ENOTSUP, "Hash algorithm '%s' not supported", ivhash);
    }
    m = crypt_mode_parse(mode);
    if (m < 0)
        return err_set(-ENOTSUP, "Cipher mode '%s' not supported", mode);
    if (m == CRYPT_MODE_XTS)
        kb /= 2;
    if (!strcmp(h->cipher_name, "aes") && (kb == 16 || kb == 24 || kb == 32) &&
        (m != CRYPT_MODE_XTS || h->key_bytes % 2 == 0))
        a = (int)(kb - 16) / 8;
    if (a < 0)
        return err_set(-ENOTSUP, "Algorithm '%s' with key size %zu bytes not supported",
                       h->cipher_name, kb);
    hash = crypt_hash_parse(h->hash_spec);
    if (hash < 0)
        return err_set(-ENOTSUP, "Hash algorithm '%s' not supported", h->hash_spec);
    g = crypt_ivgen_parse(ivgen);
    if (g < 0)
        return err_set(-ENOTSUP, "IV generator '%s' not supported", ivgen);
    if (g == CRYPT_IV_ESSIV && !ivhash)
        return err_set(-EINVAL, "Missing IV generator hash specification");
    h->spec = (struct crypt_spec){ (enum crypt_alg)a, (enum crypt_mode)m,
                                   (enum crypt_ivgen)g, (enum crypt_hash)hh, ivhash != NULL };
    h->hash = (enum crypt_hash)hash;
    return crypt_spec_check(&h->spec);
}

int luks_header_parse(const uint8_t *buf, size_t len, uint64_t area_len, struct luks_header *h)
{
    memset(h, 0, sizeof(*h));
    if (len < LUKS_HEADER_LEN)
        return err_set(-EINVAL, "LUKS header is truncated (%zu of %d bytes)", len,
                       LUKS_HEADER_LEN);
    if (memcmp(buf + H_MAGIC, luks_magic, sizeof(luks_magic)))
        return err_set(-EINVAL, "Volume is not in LUKS format");
    if (be16(buf + H_VERSION) != 1)
        return err_set(-ENOTSUP, "LUKS version %u is not supported", be16(buf + H_VERSION));
    if (!memchr(buf + H_CIPHER_NAME, 0, 32))
        return err_set(-EINVAL, "LUKS header cipher name is not NUL terminated");
    if (!memchr(buf + H_CIPHER_MODE, 0, 32))
        return err_set(-EINVAL, "LUKS header cipher mode is not NUL terminated");
    if (!memchr(buf + H_HASH_SPEC, 0, 32))
        return err_set(-EINVAL, "LUKS header hash spec is not NUL terminated");
    copy_str(h->cipher_name, buf + H_CIPHER_NAME, 32);
    copy_str(h->cipher_mode, buf + H_CIPHER_MODE, 32);
    copy_str(h->hash_spec, buf + H_HASH_SPEC, 32);
    h->payload_offset = be32(buf + H_PAYLOAD);
    h->key_bytes = be32(buf + H_KEY_BYTES);
    memcpy(h->mk_digest, buf + H_MK_DIGEST, LUKS_DIGEST_LEN);
    memcpy(h->mk_salt, buf + H_MK_SALT, LUKS_SALT_LEN);
    h->mk_iterations = be32(buf + H_MK_ITERS);
    copy_str(h->uuid, buf + H_UUID, 40);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        const uint8_t *s = buf + H_SLOTS + i * SLOT_LEN;
        h->slots[i].active = be32(s);
        h->slots[i].iterations = be32(s + 4);
        memcpy(h->slots[i].salt, s + 8, LUKS_SALT_LEN);
        h->slots[i].key_offset = be32(s + 40);
        h->slots[i].stripes = be32(s + 44);
    }

    if (h->payload_offset < HEADER_SECTORS)
        return err_set(-EINVAL, "LUKS payload is overlapping with the header");
    if (h->mk_iterations == 0)
        return err_set(-EINVAL, "LUKS key iteration count is zero");
    if (h->mk_iterations > LUKS_MAX_ITERS)
        return err_set(-EINVAL, "LUKS key iteration count %u is larger than %u",
                       h->mk_iterations, LUKS_MAX_ITERS);
    if (h->key_bytes == 0 || h->key_bytes > 64)
        return err_set(-EINVAL, "LUKS master key length %u is not supported", h->key_bytes);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        const struct luks_slot *s = &h->slots[i];
        uint64_t len1 = slot_sectors(h, s->stripes);

        if (s->stripes != LUKS_STRIPES)
            return err_set(-EINVAL, "Keyslot %d is corrupted (stripes %d != %d)", i,
                           (int)s->stripes, LUKS_STRIPES);     /* signed, as qemu */
        if (s->active != LUKS_SLOT_ACTIVE && s->active != LUKS_SLOT_INACTIVE)
            return err_set(-EINVAL, "Keyslot %d state (active/disable) is corrupted", i);
        if (s->active == LUKS_SLOT_ACTIVE && s->iterations == 0)
            return err_set(-EINVAL, "Keyslot %d iteration count is zero", i);
        if (s->active == LUKS_SLOT_ACTIVE && s->iterations > LUKS_MAX_ITERS)
            return err_set(-EINVAL, "Keyslot %d iteration count %u is larger than %u", i,
                           s->iterations, LUKS_MAX_ITERS);
        if (s->key_offset < HEADER_SECTORS)
            return err_set(-EINVAL, "Keyslot %d is overlapping with the LUKS header", i);
        if ((uint64_t)s->key_offset + len1 > h->payload_offset)
            return err_set(-EINVAL, "Keyslot %d is overlapping with the encrypted payload", i);
        for (int j = i + 1; j < LUKS_NUM_SLOTS; j++) {
            uint64_t start2 = h->slots[j].key_offset;
            uint64_t len2 = slot_sectors(h, h->slots[j].stripes);
            if (s->key_offset < start2 + len2 && start2 < s->key_offset + len1)
                return err_set(-EINVAL, "Keyslots %d and %d are overlapping in the header",
                               i, j);
        }
        /* qcow2: the material must lie in the header area the image has. */
        if (s->active == LUKS_SLOT_ACTIVE &&
            (uint64_t)s->key_offset * SECTOR + (uint64_t)h->key_bytes * s->stripes > area_len)
            return err_set(-EINVAL, "Keyslot %d key material lies past the end of the "
                           "encryption header (%llu bytes)", i, (unsigned long long)area_len);
    }
    /* payload_offset itself is informative only inside qcow2 (qcow2.txt). */
    return parse_names(h);
}

void luks_header_build(const struct luks_header *h, uint8_t *buf)
{
    memset(buf, 0, LUKS_HEADER_LEN);
    memcpy(buf + H_MAGIC, luks_magic, sizeof(luks_magic));
    put_be16(buf + H_VERSION, 1);
    memcpy(buf + H_CIPHER_NAME, h->cipher_name, strnlen(h->cipher_name, 31));
    memcpy(buf + H_CIPHER_MODE, h->cipher_mode, strnlen(h->cipher_mode, 31));
    memcpy(buf + H_HASH_SPEC, h->hash_spec, strnlen(h->hash_spec, 31));
    put_be32(buf + H_PAYLOAD, h->payload_offset);
    put_be32(buf + H_KEY_BYTES, h->key_bytes);
    memcpy(buf + H_MK_DIGEST, h->mk_digest, LUKS_DIGEST_LEN);
    memcpy(buf + H_MK_SALT, h->mk_salt, LUKS_SALT_LEN);
    put_be32(buf + H_MK_ITERS, h->mk_iterations);
    memcpy(buf + H_UUID, h->uuid, strnlen(h->uuid, 40));
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        uint8_t *s = buf + H_SLOTS + i * SLOT_LEN;
        put_be32(s, h->slots[i].active);
        put_be32(s + 4, h->slots[i].iterations);
        memcpy(s + 8, h->slots[i].salt, LUKS_SALT_LEN);
        put_be32(s + 40, h->slots[i].key_offset);
        put_be32(s + 44, h->slots[i].stripes);
    }
}

/* ---- anti-forensic split and merge ------------------------------------ */

/* LUKS's diffuse: each digest-sized piece i becomes H(be32(i) || piece). */
static int diffuse(enum crypt_hash hash, uint8_t *block, size_t len)
{
    size_t dl = crypt_hash_len(hash);
    uint8_t out[64];
    int ret = 0;

    for (uint32_t i = 0; (size_t)i * dl < len; i++) {
        size_t n = MIN(dl, len - (size_t)i * dl);
        uint8_t iv[4];

        put_be32(iv, i);
        ret = crypt_hash(hash, iv, 4, block + (size_t)i * dl, n, out);
        if (ret < 0)
            break;
        memcpy(block + (size_t)i * dl, out, n);
    }
    OPENSSL_cleanse(out, sizeof(out));
    return ret;
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] ^= src[i];
}

/* in: stripes blocks of len bytes; out: len bytes. */
static int af_merge(enum crypt_hash hash, const uint8_t *in, size_t len, uint32_t stripes,
                    uint8_t *out)
{
    uint8_t d[64] = { 0 };
    int ret = 0;

    for (uint32_t i = 0; i + 1 < stripes && ret == 0; i++) {
        xor_into(d, in + (size_t)i * len, len);
        ret = diffuse(hash, d, len);
    }
    if (ret == 0) {
        memcpy(out, d, len);
        xor_into(out, in + (size_t)(stripes - 1) * len, len);
    }
    OPENSSL_cleanse(d, sizeof(d));
    return ret;
}

/* The inverse: random stripes, the last one chosen so they merge to in. */
static int af_split(enum crypt_hash hash, const uint8_t *in, size_t len, uint32_t stripes,
                    uint8_t *out)
{
    uint8_t d[64] = { 0 };
    int ret = 0;

    if (RAND_bytes(out, (int)(len * (stripes - 1))) != 1)
        return err_set(-EIO, "Could not get random bytes");
    for (uint32_t i = 0; i + 1 < stripes && ret == 0; i++) {
        xor_into(d, out + (size_t)i * len, len);
        ret = diffuse(hash, d, len);
    }
    if (ret == 0) {
        uint8_t *last = out + (size_t)(stripes - 1) * len;
        memcpy(last, d, len);
        xor_into(last, in, len);
    }
    OPENSSL_cleanse(d, sizeof(d));
    return ret;
}

/* ---- unlock ----------------------------------------------------------- */

/* 1 when pass opens slot i (mk filled), 0 when not, < 0 on error. */
static int try_slot(const struct luks_header *h, int i, const uint8_t *pass, size_t pass_len,
                    luks_read_fn rd, void *opaque, uint8_t *mk)
{
    const struct luks_slot *s = &h->slots[i];
    size_t kb = h->key_bytes, mlen = kb * s->stripes;
    uint8_t slotkey[64], digest[LUKS_DIGEST_LEN];
    struct crypt_cipher *c = NULL;
    uint8_t *mat = malloc(mlen);
    int ret;

    if (!mat)
        return -ENOMEM;
    ret = crypt_pbkdf2(h->hash, pass, pass_len, s->salt, LUKS_SALT_LEN, s->iterations,
                       slotkey, kb);
    if (ret == 0)
        ret = rd(opaque, (uint64_t)s->key_offset * SECTOR, mat, mlen);
    if (ret == 0)
        ret = crypt_cipher_new(&c, &h->spec, slotkey, kb);
    if (ret == 0)
        ret = crypt_cipher_run(c, false, 0, mat, mlen);
    if (ret == 0)
        ret = af_merge(h->hash, mat, kb, s->stripes, mk);
    if (ret == 0)
        ret = crypt_pbkdf2(h->hash, mk, kb, h->mk_salt, LUKS_SALT_LEN, h->mk_iterations,
                           digest, LUKS_DIGEST_LEN);
    if (ret == 0)
        ret = CRYPTO_memcmp(digest, h->mk_digest, LUKS_DIGEST_LEN) == 0;
    if (ret != 1)
        OPENSSL_cleanse(mk, kb);
    crypt_cipher_free(c);
    OPENSSL_cleanse(slotkey, sizeof(slotkey));
    OPENSSL_cleanse(mat, mlen);
    free(mat);
    return ret;
}

int luks_unlock(const struct luks_header *h, const uint8_t *pass, size_t pass_len,
                luks_read_fn rd, void *opaque, uint8_t *mk)
{
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        int ret;

        if (h->slots[i].active != LUKS_SLOT_ACTIVE)
            continue;
        ret = try_slot(h, i, pass, pass_len, rd, opaque, mk);
        if (ret < 0)
            return ret;
        if (ret == 1)
            return 0;
    }
    return err_set(-EACCES, "Invalid password, cannot unlock any keyslot");
}

/* ---- create ----------------------------------------------------------- */

static const char *const qemu_other_algs[] = {
    "des", "3des", "cast5-128", "serpent-128", "serpent-192", "serpent-256",
    "twofish-128", "twofish-192", "twofish-256", "sm4",
};

static int opt_enum(struct opts *o, const char *key, const char *name,
                    int (*parse)(const char *), int def, int *out)
{
    const char *v = opts_get(o, key);

    *out = def;
    if (!v)
        return 0;
    *out = parse(v);
    if (*out < 0) {
        if (parse == crypt_alg_parse) {
            for (size_t i = 0; i < ARRAY_SIZE(qemu_other_algs); i++)
                if (!strcmp(v, qemu_other_algs[i]))
                    return err_set(-ENOTSUP, "Algorithm '%s' not supported", v);
        }
        return err_set(-EINVAL, "Parameter '%s' does not accept value '%s'", name, v);
    }
    return 0;
}

int luks_create_opts_parse(struct opts *o, struct luks_create_opts *out)
{
    int alg, mode, ivgen, ivhash, hash, ret;
    const char *it;

    memset(out, 0, sizeof(*out));
    ret = opt_enum(o, "encrypt.cipher-alg", "cipher-alg", crypt_alg_parse, CRYPT_AES_256, &alg);
    if (ret == 0)
        ret = opt_enum(o, "encrypt.cipher-mode", "cipher-mode", crypt_mode_parse,
                       CRYPT_MODE_XTS, &mode);
    if (ret == 0)
        ret = opt_enum(o, "encrypt.ivgen-alg", "ivgen-alg", crypt_ivgen_parse,
                       CRYPT_IV_PLAIN64, &ivgen);
    if (ret == 0)
        ret = opt_enum(o, "encrypt.ivgen-hash-alg", "ivgen-hash-alg", crypt_hash_parse, -1,
                       &ivhash);
    if (ret == 0)
        ret = opt_enum(o, "encrypt.hash-alg", "hash-alg", crypt_hash_parse, CRYPT_HASH_SHA256,
                       &hash);
    if (ret < 0)
        return ret;
    out->iter_time_ms = 2000;
    it = opts_get(o, "encrypt.iter-time");
    if (it && parse_uint(it, &out->iter_time_ms) < 0)
        return err_set(-EINVAL, "Parameter 'encrypt.iter-time' expects a number");
    /* ESSIV defaults its hash to sha256; other generators only carry one. */
    if (ivgen == CRYPT_IV_ESSIV && ivhash < 0)
        ivhash = CRYPT_HASH_SHA256;
    out->spec = (struct crypt_spec){ (enum crypt_alg)alg, (enum crypt_mode)mode,
                                     (enum crypt_ivgen)ivgen,
                                     ivhash < 0 ? CRYPT_HASH_SHA256 : (enum crypt_hash)ivhash,
                                     ivhash >= 0 };
    out->hash = (enum crypt_hash)hash;
    return crypt_spec_check(&out->spec);
}

void luks_free_buf(uint8_t *buf, size_t len)
{
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * PBKDF2 iterations per second for this input and output size, measured
 * on this thread's CPU time over at least 100 ms (qemu measures 500 ms;
 * the shorter run is as accurate to a few percent and keeps create fast).
 */
static int pbkdf2_rate(enum crypt_hash hash, const uint8_t *in, size_t in_len,
                       const uint8_t *salt, size_t out_len, uint64_t *rate)
{
    uint8_t out[64];
    uint64_t iters = 1 << 10, dt = 0;
    int ret;

    for (;;) {
        uint64_t t0 = cpu_ns();
        ret = crypt_pbkdf2(hash, in, in_len, salt, LUKS_SALT_LEN, (uint32_t)iters, out,
                           out_len);
        if (ret < 0)
            return ret;
        dt = cpu_ns() - t0;
        if (dt >= 100000000u || iters >= (1u << 30))
            break;
        if (dt < 10000000u)
            iters *= 10;
        else
            iters = iters * 120000000u / dt;
    }
    OPENSSL_cleanse(out, sizeof(out));
    *rate = iters * 1000000000u / (dt ? dt : 1);
    return 0;
}

/* rate * iter_time / 1000 / div, as qemu scales it, with its messages. */
static int scale_iters(uint64_t rate, uint64_t iter_time, unsigned div, uint32_t *out)
{
    uint64_t iters;

    if (iter_time && rate > UINT64_MAX / iter_time)
        return err_set(-ERANGE, "PBKDF iterations %llu too large to scale: %s",
                       (unsigned long long)rate, strerror(ERANGE));
    iters = rate * iter_time / 1000 / div;
    if (iters > LUKS_MAX_ITERS)
        return err_set(-ERANGE, "PBKDF iterations %llu larger than %u: %s",
                       (unsigned long long)iters, LUKS_MAX_ITERS, strerror(ERANGE));
    *out = (uint32_t)MAX(iters, (uint64_t)LUKS_MIN_ITERS);
    return 0;
}

static void make_uuid(const uint8_t r[16], char *out)
{
    uint8_t u[16];

    memcpy(u, r, 16);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);     /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);     /* RFC 4122 variant */
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
            u[12], u[13], u[14], u[15]);
}

int luks_create(const struct luks_create_opts *o, const uint8_t *pass, size_t pass_len,
                uint8_t **out, size_t *out_len)
{
    struct luks_header h;
    uint8_t mk[64], slotkey[64], rnd[16];
    struct crypt_cipher *c = NULL;
    uint8_t *area = NULL, *mat;
    uint64_t rate, slot_len;
    size_t kb, mlen, total;
    int ret;

    *out = NULL;
    *out_len = 0;
    ret = crypt_spec_check(&o->spec);
    if (ret < 0)
        return ret;
    memset(&h, 0, sizeof(h));
    h.spec = o->spec;
    h.hash = o->hash;
    kb = crypt_spec_key_len(&o->spec);
    h.key_bytes = (uint32_t)kb;
    /* 24-byte keys make 96000 bytes of material: qemu 7.2 aborts on it. */
    if (kb * LUKS_STRIPES % SECTOR)
        return err_set(-ENOTSUP, "Key material of %zu bytes is not a whole number of "
                       "sectors; qemu cannot open such an image (%s needs cipher mode xts)",
                       kb * LUKS_STRIPES, crypt_alg_name(o->spec.alg));
    strcpy(h.cipher_name, "aes");
    if (o->spec.has_ivgen_hash)
        snprintf(h.cipher_mode, sizeof(h.cipher_mode), "%s-%s:%s",
                 crypt_mode_name(o->spec.mode), crypt_ivgen_name(o->spec.ivgen),
                 crypt_hash_name(o->spec.ivgen_hash));
    else
        snprintf(h.cipher_mode, sizeof(h.cipher_mode), "%s-%s",
                 crypt_mode_name(o->spec.mode), crypt_ivgen_name(o->spec.ivgen));
    strcpy(h.hash_spec, crypt_hash_name(o->hash));

    slot_len = slot_sectors(&h, LUKS_STRIPES);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        h.slots[i].active = i == 0 ? LUKS_SLOT_ACTIVE : LUKS_SLOT_INACTIVE;
        h.slots[i].stripes = LUKS_STRIPES;
        h.slots[i].key_offset = (uint32_t)(HEADER_SECTORS + slot_len * (uint64_t)i);
    }
    h.payload_offset = (uint32_t)(HEADER_SECTORS + slot_len * LUKS_NUM_SLOTS);
    total = (size_t)h.payload_offset * SECTOR;
    mlen = kb * LUKS_STRIPES;

    if (RAND_bytes(mk, (int)kb) != 1 || RAND_bytes(h.mk_salt, LUKS_SALT_LEN) != 1 ||
        RAND_bytes(h.slots[0].salt, LUKS_SALT_LEN) != 1 || RAND_bytes(rnd, 16) != 1) {
        ret = err_set(-EIO, "Could not get random bytes");
        goto out;
    }
    make_uuid(rnd, h.uuid);

    /* The master key digest: an eighth of the time, as cryptsetup does. */
    ret = pbkdf2_rate(o->hash, mk, kb, h.mk_salt, LUKS_DIGEST_LEN, &rate);
    if (ret == 0)
        ret = scale_iters(rate, o->iter_time_ms, 8, &h.mk_iterations);
    if (ret == 0)
        ret = crypt_pbkdf2(o->hash, mk, kb, h.mk_salt, LUKS_SALT_LEN, h.mk_iterations,
                           h.mk_digest, LUKS_DIGEST_LEN);
    /* Slot 0: the passphrase, for the whole time asked. */
    if (ret == 0)
        ret = pbkdf2_rate(o->hash, pass, pass_len, h.slots[0].salt, kb, &rate);
    if (ret == 0)
        ret = scale_iters(rate, o->iter_time_ms, 1, &h.slots[0].iterations);
    if (ret == 0)
        ret = crypt_pbkdf2(o->hash, pass, pass_len, h.slots[0].salt, LUKS_SALT_LEN,
                           h.slots[0].iterations, slotkey, kb);
    if (ret < 0)
        goto out;

    area = xzalloc(total);
    if (!area) {
        ret = -ENOMEM;
        goto out;
    }
    luks_header_build(&h, area);
    mat = area + (size_t)h.slots[0].key_offset * SECTOR;
    ret = af_split(o->hash, mk, kb, LUKS_STRIPES, mat);
    if (ret == 0)
        ret = crypt_cipher_new(&c, &o->spec, slotkey, kb);
    if (ret == 0)
        ret = crypt_cipher_run(c, true, 0, mat, mlen);
    if (ret < 0)
        goto out;
    *out = area;
    *out_len = total;
    area = NULL;
out:
    crypt_cipher_free(c);
    luks_free_buf(area, total);
    OPENSSL_cleanse(mk, sizeof(mk));
    OPENSSL_cleanse(slotkey, sizeof(slotkey));
    return ret;
}
