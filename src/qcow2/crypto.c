/*
 * crypto.c - sector ciphers for encrypted qcow2 images (AES in ECB, CBC,
 * XTS and CTR modes, IV generators plain, plain64 and essiv), the names
 * qemu gives them, PBKDF2 and digests, all on OpenSSL's EVP API; and the
 * glue between the engine and an image's encryption: the LUKS header read
 * at open, the key set by the block layer, and the read/write helpers that
 * cluster.c and write.c call for guest data.
 *
 * Owns: struct crypt_cipher, struct qcow2_crypto (q->crypto).
 * Must not: parse LUKS bytes (luks.c); touch metadata; print.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../block/block.h"
#include "crypto.h"
#include "qcow2.h"

/* ---- names ------------------------------------------------------------ */

static const char *const alg_names[] = { "aes-128", "aes-192", "aes-256" };
static const char *const mode_names[] = { "ecb", "cbc", "xts", "ctr" };
static const char *const ivgen_names[] = { "plain", "plain64", "essiv" };
static const char *const hash_names[] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160",
};
static const size_t hash_lens[] = { 16, 20, 28, 32, 48, 64, 20 };

static int lookup(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return (int)i;
    return -1;
}

int crypt_alg_parse(const char *name) { return lookup(alg_names, ARRAY_SIZE(alg_names), name); }
int crypt_mode_parse(const char *name) { return lookup(mode_names, ARRAY_SIZE(mode_names), name); }
int crypt_ivgen_parse(const char *name) { return lookup(ivgen_names, ARRAY_SIZE(ivgen_names), name); }
int crypt_hash_parse(const char *name) { return lookup(hash_names, ARRAY_SIZE(hash_names), name); }
const char *crypt_alg_name(enum crypt_alg a) { return alg_names[a]; }
const char *crypt_mode_name(enum crypt_mode m) { return mode_names[m]; }
const char *crypt_ivgen_name(enum crypt_ivgen g) { return ivgen_names[g]; }
const char *crypt_hash_name(enum crypt_hash h) { return hash_names[h]; }
size_t crypt_alg_key_len(enum crypt_alg a) { return 16 + 8 * (size_t)a; }
size_t crypt_hash_len(enum crypt_hash h) { return hash_lens[h]; }

size_t crypt_spec_key_len(const struct crypt_spec *s)
{
    return crypt_alg_key_len(s->alg) * (s->mode == CRYPT_MODE_XTS ? 2 : 1);
}

static const EVP_MD *md_of(enum crypt_hash h)
{
    switch (h) {
    case CRYPT_HASH_MD5: return EVP_md5();
    case CRYPT_HASH_SHA1: return EVP_sha1();
    case CRYPT_HASH_SHA224: return EVP_sha224();
    case CRYPT_HASH_SHA256: return EVP_sha256();
    case CRYPT_HASH_SHA384: return EVP_sha384();
    case CRYPT_HASH_SHA512: return EVP_sha512();
    case CRYPT_HASH_RIPEMD160: return EVP_ripemd160();
    }
    return NULL;
}

/* The OpenSSL cipher for alg in mode; NULL for AES-192-XTS (done here). */
static const EVP_CIPHER *evp_of(enum crypt_alg a, enum crypt_mode m)
{
    static const EVP_CIPHER *(*const t[3][4])(void) = {
        { EVP_aes_128_ecb, EVP_aes_128_cbc, EVP_aes_128_xts, EVP_aes_128_ctr },
        { EVP_aes_192_ecb, EVP_aes_192_cbc, NULL, EVP_aes_192_ctr },
        { EVP_aes_256_ecb, EVP_aes_256_cbc, EVP_aes_256_xts, EVP_aes_256_ctr },
    };
    return t[a][m] ? t[a][m]() : NULL;
}

/* ESSIV encrypts with the AES whose key is as long as the hash digest. */
static int essiv_alg(const struct crypt_spec *s, enum crypt_alg *out)
{
    size_t dl = crypt_hash_len(s->ivgen_hash);

    if (dl == 16 || dl == 24 || dl == 32) {
        *out = (enum crypt_alg)((dl - 16) / 8);
        return 0;
    }
    return err_set(-ENOTSUP, "No AES cipher with key size %zu available", dl);
}

int crypt_spec_check(const struct crypt_spec *s)
{
    enum crypt_alg ea = CRYPT_AES_256;

    if (s->ivgen == CRYPT_IV_ESSIV) {
        int ret = essiv_alg(s, &ea);
        if (ret < 0)
            return ret;
    }
    if (s->ivgen == CRYPT_IV_ESSIV || s->has_ivgen_hash) {
        if (!md_of(s->ivgen_hash))
            return err_set(-ENOTSUP, "Hash algorithm '%s' not supported",
                           crypt_hash_name(s->ivgen_hash));
    }
    return 0;
}

/* ---- digests and PBKDF2 ----------------------------------------------- */

int crypt_hash(enum crypt_hash h, const uint8_t *in1, size_t len1,
               const uint8_t *in2, size_t len2, uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned olen = 0;
    int ok;

    if (!ctx)
        return -ENOMEM;
    ok = EVP_DigestInit_ex(ctx, md_of(h), NULL) == 1 &&
         (!len1 || EVP_DigestUpdate(ctx, in1, len1) == 1) &&
         (!len2 || EVP_DigestUpdate(ctx, in2, len2) == 1) &&
         EVP_DigestFinal_ex(ctx, out, &olen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return err_set(-ENOTSUP, "Hash algorithm '%s' not supported", crypt_hash_name(h));
    return 0;
}

int crypt_pbkdf2(enum crypt_hash h, const uint8_t *pass, size_t pass_len,
                 const uint8_t *salt, size_t salt_len, uint32_t iterations,
                 uint8_t *out, size_t out_len)
{
    if (iterations == 0 || iterations > INT32_MAX || pass_len > INT32_MAX)
        return err_set(-EINVAL, "PBKDF2 iteration count %u out of range", iterations);
    if (PKCS5_PBKDF2_HMAC(pass_len ? (const char *)pass : "", (int)pass_len, salt,
                          (int)salt_len, (int)iterations, md_of(h), (int)out_len, out) != 1)
        return err_set(-EIO, "PBKDF2 with %s failed", crypt_hash_name(h));
    return 0;
}

/* ---- sector ciphers --------------------------------------------------- */

struct crypt_cipher {
    struct crypt_spec spec;
    EVP_CIPHER_CTX *enc, *dec;      /* keyed once; the IV is set per sector */
    EVP_CIPHER_CTX *essiv;          /* ECB under hash(key), for ESSIV */
    EVP_CIPHER_CTX *tweak;          /* AES-192-XTS: ECB under the second half */
    size_t niv;
};

static EVP_CIPHER_CTX *keyed(const EVP_CIPHER *c, const uint8_t *key, int enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    if (!ctx)
        return NULL;
    if (EVP_CipherInit_ex(ctx, c, NULL, key, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int crypt_cipher_new(struct crypt_cipher **out, const struct crypt_spec *s,
                     const uint8_t *key, size_t key_len)
{
    struct crypt_cipher *c;
    size_t klen = crypt_alg_key_len(s->alg);
    const EVP_CIPHER *ev = evp_of(s->alg, s->mode);
    int ret;

    *out = NULL;
    if (key_len != crypt_spec_key_len(s))
        return err_set(-EINVAL, "Cipher key length %zu does not match %s-%s", key_len,
                       crypt_alg_name(s->alg), crypt_mode_name(s->mode));
    ret = crypt_spec_check(s);
    if (ret < 0)
        return ret;
    c = xzalloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->spec = *s;
    c->niv = s->mode == CRYPT_MODE_ECB ? 0 : 16;
    if (ev) {
        c->enc = keyed(ev, key, 1);
        c->dec = keyed(ev, key, 0);
    } else {
        /* AES-192-XTS: the data key in ECB both ways, the tweak key. */
        ev = evp_of(s->alg, CRYPT_MODE_ECB);
        c->enc = keyed(ev, key, 1);
        c->dec = keyed(ev, key, 0);
        c->tweak = keyed(ev, key + klen, 1);
        if (!c->tweak)
            goto fail;
    }
    if (!c->enc || !c->dec)
        goto fail;
    if (s->ivgen == CRYPT_IV_ESSIV) {
        uint8_t salt[64];
        enum crypt_alg ea = CRYPT_AES_256;

        ret = essiv_alg(s, &ea);
        if (ret == 0)
            ret = crypt_hash(s->ivgen_hash, key, key_len, NULL, 0, salt);
        if (ret < 0) {
            crypt_cipher_free(c);
            return ret;
        }
        c->essiv = keyed(evp_of(ea, CRYPT_MODE_ECB), salt, 1);
        OPENSSL_cleanse(salt, sizeof(salt));
        if (!c->essiv)
            goto fail;
    }
    *out = c;
    return 0;
fail:
    crypt_cipher_free(c);
    return err_set(-EIO, "Could not set up cipher %s-%s", crypt_alg_name(s->alg),
                   crypt_mode_name(s->mode));
}

void crypt_cipher_free(struct crypt_cipher *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->enc);    /* the contexts cleanse their keys */
    EVP_CIPHER_CTX_free(c->dec);
    EVP_CIPHER_CTX_free(c->essiv);
    EVP_CIPHER_CTX_free(c->tweak);
    free(c);
}

static int ecb(EVP_CIPHER_CTX *ctx, uint8_t *buf, size_t len)
{
    int outl = 0;

    return EVP_CipherUpdate(ctx, buf, &outl, buf, (int)len) == 1 && (size_t)outl == len;
}

static int make_iv(struct crypt_cipher *c, uint64_t sector, uint8_t iv[16])
{
    /* plain: the low 32 bits; plain64 and essiv: all 64, little-endian. */
    if (c->spec.ivgen == CRYPT_IV_PLAIN)
        sector &= 0xffffffffu;
    memset(iv, 0, 16);
    for (int i = 0; i < 8; i++)
        iv[i] = (uint8_t)(sector >> (8 * i));
    if (c->spec.ivgen == CRYPT_IV_ESSIV && !ecb(c->essiv, iv, 16))
        return -EIO;
    return 0;
}

/* Multiply the XTS tweak by x in GF(2^128) (little-endian convention). */
static void xts_next(uint8_t t[16])
{
    uint8_t carry = t[15] >> 7;

    for (int i = 15; i > 0; i--)
        t[i] = (uint8_t)(t[i] << 1 | t[i - 1] >> 7);
    t[0] = (uint8_t)(t[0] << 1) ^ (carry ? 0x87 : 0);
}

/* XTS by hand over ECB (OpenSSL has no AES-192-XTS); len % 16 == 0. */
static int xts_sector(struct crypt_cipher *c, bool enc, const uint8_t iv[16],
                      uint8_t *buf, size_t len)
{
    uint8_t t[16], tweaks[CRYPT_SECTOR_SIZE];

    memcpy(t, iv, 16);
    if (!ecb(c->tweak, t, 16))
        return -EIO;
    for (size_t off = 0; off < len; off += 16) {
        memcpy(tweaks + off, t, 16);
        for (int i = 0; i < 16; i++)
            buf[off + i] ^= t[i];
        xts_next(t);
    }
    if (!ecb(enc ? c->enc : c->dec, buf, len))
        return -EIO;
    for (size_t i = 0; i < len; i++)
        buf[i] ^= tweaks[i];
    OPENSSL_cleanse(t, sizeof(t));
    return 0;
}

int crypt_cipher_run(struct crypt_cipher *c, bool encrypt, uint64_t sector,
                     uint8_t *buf, size_t len)
{
    EVP_CIPHER_CTX *ctx = encrypt ? c->enc : c->dec;

    if (len % 16)
        return err_set(-EINVAL, "Length %zu must be a multiple of block size 16", len);
    while (len) {
        size_t n = MIN(len, (size_t)CRYPT_SECTOR_SIZE);
        uint8_t iv[16];
        int outl = 0, ret = 0;

        if (c->niv)
            ret = make_iv(c, sector, iv);
        if (ret == 0 && c->tweak) {
            ret = xts_sector(c, encrypt, iv, buf, n);
        } else if (ret == 0) {
            /* A fresh IV per sector; with padding off, Update returns it all. */
            if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, c->niv ? iv : NULL, -1) != 1 ||
                EVP_CipherUpdate(ctx, buf, &outl, buf, (int)n) != 1 || (size_t)outl != n)
                ret = -EIO;
        }
        if (ret < 0)
            return err_set(-EIO, "Could not %s sector %llu", encrypt ? "encrypt" : "decrypt",
                           (unsigned long long)sector);
        buf += n;
        len -= n;
        sector++;
    }
    return 0;
}

/* ---- qcow2 glue ------------------------------------------------------- */

struct qcow2_crypto {
    int method;                     /* QCOW_CRYPT_AES or QCOW_CRYPT_LUKS */
    bool has_luks;
    struct luks_header luks;        /* LUKS: valid without the key */
    struct crypt_cipher *cipher;    /* set once unlocked */
    uint8_t *bounce;                /* BOUNCE_MAX bytes, allocated on first use */
};

#define BOUNCE_MAX (1024 * 1024)

static const char *method_name(int m)
{
    return m == QCOW_CRYPT_AES ? "aes" : m == QCOW_CRYPT_LUKS ? "luks" : "none";
}

/* The header area: reads must stay inside [0, crypto_length). */
static int read_area(void *opaque, uint64_t off, void *buf, size_t len)
{
    struct qcow2 *q = opaque;

    if (off > q->meta.crypto_length || len > q->meta.crypto_length - off)
        return err_set(-EINVAL, "Request for data outside of extension header");
    if (qfile_pread(q->file, buf, len, q->meta.crypto_offset + off) < 0)
        return err_set(-EIO, "Could not read encryption header");
    return 0;
}

int qcow2_crypto_open(struct qcow2 *q, bool check)
{
    const struct qcow2_meta *m = &q->meta;
    struct qcow2_crypto *c;
    uint8_t hdr[LUKS_HEADER_LEN];
    uint64_t fsize;
    int ret;

    if (m->has_crypto_ext && m->h.crypt_method != QCOW_CRYPT_LUKS && !check)
        return err_set(-EINVAL, "CRYPTO header extension only expected with LUKS "
                       "encryption method");
    if (!m->h.crypt_method)
        return 0;
    c = xzalloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->method = (int)m->h.crypt_method;
    q->crypto = c;
    if (c->method != QCOW_CRYPT_LUKS)
        return 0;

    if (m->crypto_offset & (q->cluster_size - 1)) {
        ret = err_set(-EINVAL, "Encryption header offset '%llu' is not a multiple of "
                      "cluster size '%llu'", (unsigned long long)m->crypto_offset,
                      (unsigned long long)q->cluster_size);
        goto out;
    }
    ret = qfile_size(q->file, &fsize);
    if (ret < 0)
        goto out;
    if (m->crypto_offset < q->cluster_size || m->crypto_offset >= fsize ||
        m->crypto_length > fsize - m->crypto_offset) {
        ret = err_set(-QIMG_ECORRUPT, "Encryption header at %#llx (%llu bytes) lies outside "
                      "the image", (unsigned long long)m->crypto_offset,
                      (unsigned long long)m->crypto_length);
        goto out;
    }
    ret = read_area(q, 0, hdr, sizeof(hdr));
    if (ret == 0)
        ret = luks_header_parse(hdr, sizeof(hdr), m->crypto_length, &c->luks);
    if (ret == 0)
        c->has_luks = true;
out:
    /* The checker must still open an image whose LUKS header is damaged. */
    return check ? 0 : ret;
}

int qcow2_crypto_check_format(struct qcow2 *q, const char *format)
{
    int hm = (int)q->meta.h.crypt_method;

    if (!format)
        return 0;
    if (!hm)
        return err_set(-EINVAL, "No encryption in image header, but options specified "
                       "format '%s'", format);
    if (strcmp(format, method_name(hm)))
        return err_set(-EINVAL, "Header reported '%s' encryption format but options "
                       "specify '%s'", method_name(hm), format);
    return 0;
}

int qcow2_set_key(struct qcow2 *q, const uint8_t *secret, size_t len, bool need)
{
    struct qcow2_crypto *c = q->crypto;
    uint8_t key[64];
    size_t klen;
    int ret;

    if (!c)
        return 0;                   /* qemu ignores a key for a plain image */
    if (!secret)
        return need ? err_set(-EACCES, "Parameter 'encrypt.key-secret' is required for "
                              "cipher") : 0;
    crypt_cipher_free(c->cipher);
    c->cipher = NULL;

    if (c->method == QCOW_CRYPT_AES) {
        static const struct crypt_spec aes = { CRYPT_AES_128, CRYPT_MODE_CBC,
                                               CRYPT_IV_PLAIN64, 0, false };
        memset(key, 0, 16);
        memcpy(key, secret, MIN(len, (size_t)16));
        ret = crypt_cipher_new(&c->cipher, &aes, key, 16);
        OPENSSL_cleanse(key, sizeof(key));
        return ret;
    }
    if (!c->has_luks)
        return err_set(-QIMG_ECORRUPT, "The LUKS header of this image is damaged");
    klen = c->luks.key_bytes;
    ret = luks_unlock(&c->luks, secret, len, read_area, q, key);
    if (ret == 0)
        ret = crypt_cipher_new(&c->cipher, &c->luks.spec, key, klen);
    OPENSSL_cleanse(key, sizeof(key));
    return ret;
}

bool qcow2_crypto_ready(const struct qcow2 *q)
{
    return !q->meta.h.crypt_method || (q->crypto && q->crypto->cipher);
}

const struct luks_header *qcow2_crypto_luks(const struct qcow2 *q)
{
    return q->crypto && q->crypto->has_luks ? &q->crypto->luks : NULL;
}

void qcow2_crypto_free(struct qcow2_crypto *c)
{
    if (!c)
        return;
    crypt_cipher_free(c->cipher);
    free(c->bounce);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

static int need_cipher(struct qcow2 *q)
{
    if (!q->crypto)
        return err_set(-EINVAL, "The image is not encrypted");
    if (!q->crypto->cipher)
        return err_set(-EACCES, "Parameter 'encrypt.key-secret' is required for cipher");
    return 0;
}

/* IV sector of the sector at guest/host: LUKS counts host sectors. */
static uint64_t iv_sector(const struct qcow2 *q, uint64_t guest, uint64_t host)
{
    return (q->crypto->method == QCOW_CRYPT_LUKS ? host : guest) / CRYPT_SECTOR_SIZE;
}

static int encdec(struct qcow2 *q, bool enc, uint64_t guest, uint64_t host, uint8_t *buf,
                  size_t len)
{
    int ret = need_cipher(q);

    if (ret < 0)
        return ret;
    if ((guest | host | len) & (CRYPT_SECTOR_SIZE - 1))
        return err_set(-EINVAL, "Encrypted I/O at %#llx (%zu bytes) is not sector aligned",
                       (unsigned long long)host, len);
    return crypt_cipher_run(q->crypto->cipher, enc, iv_sector(q, guest, host), buf, len);
}

int qcow2_crypto_encrypt(struct qcow2 *q, uint64_t guest, uint64_t host, uint8_t *buf,
                         size_t len)
{
    return encdec(q, true, guest, host, buf, len);
}

int qcow2_crypto_decrypt(struct qcow2 *q, uint64_t guest, uint64_t host, uint8_t *buf,
                         size_t len)
{
    return encdec(q, false, guest, host, buf, len);
}

/*
 * Walk [guest, guest+len) in bounce-buffer sized pieces of whole sectors.
 * For writes, the partial sectors at either end are read and decrypted
 * first, so the bytes around the span keep their value.
 */
static int bounce(struct qcow2 *q, bool write, uint64_t guest, uint64_t host,
                  uint8_t *data, size_t len)
{
    uint8_t *b;
    int ret = need_cipher(q);

    if (ret < 0)
        return ret;
    if ((guest ^ host) & (CRYPT_SECTOR_SIZE - 1))
        return err_set(-EINVAL, "Guest offset %#llx and host offset %#llx differ within "
                       "a sector", (unsigned long long)guest, (unsigned long long)host);
    if (!q->crypto->bounce) {
        q->crypto->bounce = malloc(BOUNCE_MAX);
        if (!q->crypto->bounce)
            return -ENOMEM;
    }
    b = q->crypto->bounce;
    while (len) {
        uint64_t head = host & (CRYPT_SECTOR_SIZE - 1);
        size_t n = MIN(len, (size_t)(BOUNCE_MAX - head));
        size_t span = ALIGN_UP(head + n, CRYPT_SECTOR_SIZE);
        uint64_t h0 = host - head, g0 = guest - head;

        if (!write) {
            ret = qfile_pread_pad(q->data_file, b, span, h0);
            if (ret == 0)
                ret = crypt_cipher_run(q->crypto->cipher, false, iv_sector(q, g0, h0), b, span);
            if (ret == 0)
                memcpy(data, b + head, n);
        } else {
            ret = 0;
            if (head) {
                ret = qfile_pread_pad(q->data_file, b, CRYPT_SECTOR_SIZE, h0);
                if (ret == 0)
                    ret = crypt_cipher_run(q->crypto->cipher, false, iv_sector(q, g0, h0),
                                           b, CRYPT_SECTOR_SIZE);
            }
            if (ret == 0 && (head + n) % CRYPT_SECTOR_SIZE &&
                (span > CRYPT_SECTOR_SIZE || !head)) {
                uint64_t off = span - CRYPT_SECTOR_SIZE;
                ret = qfile_pread_pad(q->data_file, b + off, CRYPT_SECTOR_SIZE, h0 + off);
                if (ret == 0)
                    ret = crypt_cipher_run(q->crypto->cipher, false,
                                           iv_sector(q, g0 + off, h0 + off),
                                           b + off, CRYPT_SECTOR_SIZE);
            }
            if (ret == 0) {
                memcpy(b + head, data, n);
                ret = crypt_cipher_run(q->crypto->cipher, true, iv_sector(q, g0, h0), b, span);
            }
            if (ret == 0)
                ret = qfile_pwrite(q->data_file, b, span, h0);
        }
        if (ret < 0)
            break;
        data += n;
        guest += n;
        host += n;
        len -= n;
    }
    return ret;
}

int qcow2_crypto_read(struct qcow2 *q, uint64_t guest, uint64_t host, void *buf, size_t len)
{
    return bounce(q, false, guest, host, buf, len);
}

int qcow2_crypto_write(struct qcow2 *q, uint64_t guest, uint64_t host, const void *buf,
                       size_t len)
{
    return bounce(q, true, guest, host, (uint8_t *)buf, len);
}
