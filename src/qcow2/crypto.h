/*
 * crypto.h - encrypted qcow2 images: legacy AES (crypt_method 1) and LUKS
 * (crypt_method 2), on OpenSSL's libcrypto.
 *
 *   crypto.c   ciphers and IV generators on 512-byte sectors, the names
 *              qemu uses for them, the qcow2 glue (open, key, read, write)
 *   luks.c     the LUKS1 header: parse/validate (pure, on bytes), unlock a
 *              key slot (PBKDF2, AF merge, master key digest), create one
 *
 * Owns: key material. Master keys, slot keys and passphrase copies are
 * cleansed (OPENSSL_cleanse) before their memory is freed.
 * Must not: print; write anything but guest data (metadata is plaintext).
 *
 * How qemu encrypts (what the code here follows, checked against qemu-img
 * 7.2 images by tests/crypto.bats):
 *  - every 512-byte sector is encrypted on its own, with an IV made from a
 *    sector number: AES images use the GUEST offset / 512, LUKS images the
 *    HOST offset / 512 (qemu's crypt_physical_offset);
 *  - AES: AES-128-CBC, key = the passphrase's first 16 bytes zero-padded,
 *    IV plain64 (the sector number, little-endian, zero-padded to 16 bytes);
 *  - LUKS: cipher, mode, IV generator and hash from the LUKS header, which
 *    lives at the crypto header extension's offset (cluster aligned) and
 *    takes crypto_length bytes (= the header's payload offset * 512); key
 *    slot offsets are relative to it. Metadata is never encrypted.
 *  - compressed clusters are not allowed in encrypted images (qemu cannot
 *    write them); qimg refuses to read one.
 *
 * ===== Integration points (what other parts call) ======================
 *
 * open (image.c, done): qcow2_open_blk() calls qcow2_crypto_open(q, check),
 *   which reads and validates the LUKS header (no key needed, as qemu does
 *   for info); qcow2_close() calls qcow2_crypto_free(q->crypto).
 *
 * key (block layer, done): blk_open_key() in block.c passes a struct
 *   blk_key to the qcow2 driver, which checks encrypt.format
 *   (qcow2_crypto_check_format), looks the secret up when the image is
 *   encrypted and calls qcow2_set_key(); BLK_NEED_KEY
 *   makes a keyless open of an encrypted image fail as qemu-img's does
 *   ("Parameter 'encrypt.key-secret' is required for cipher"). A command:
 *     struct secret_store secrets = {0};     (src/util/secret.h)
 *     --object ARG  -> secret_object_add(&secrets, ARG)  (error: print
 *                      err_msg(ret); "--object help" -> secret_object_help)
 *     --image-opts  -> imageopts_parse(NAME, &io); filename = io.filename,
 *                      fmt = io.driver
 *     blk_open_key(&b, filename, fmt, flags | BLK_NEED_KEY,
 *                  &(struct blk_key){ &secrets, io.key_secret,
 *                                     io.encrypt_format });
 *       (the secret is looked up only if the image is encrypted, as qemu)
 *     errors: cmd_open_error(NAME, ret) where NAME is the whole
 *     --image-opts string, as qemu-img names it;
 *     secret_store_free(&secrets) at the end.
 *   convert: --object and --image-opts for the sources; --target-image-opts
 *   names the target the same way (the target is created by create.c's
 *   code with -o encrypt.*, then opened with blk_open_key for writing).
 *
 * read path (cluster.c, done): NORMAL clusters of an encrypted image go
 *   through qcow2_crypto_read(); COMPRESSED ones are refused.
 *
 * write path (write.c, to do at merge): wherever guest data is written to
 *   a host cluster and q->meta.h.crypt_method != 0, write it with
 *     qcow2_crypto_write(q, guest_off, host_off, buf, len)
 *   instead of qfile_pwrite(q->data_file, ...). It encrypts into a bounce
 *   buffer (buf is not changed); spans not on 512-byte boundaries are
 *   merged with the sectors on disk (read, decrypt, patch), so for a newly
 *   allocated cluster pass the COW regions in the same or earlier calls.
 *   qcow2_crypto_encrypt() does the same in place for aligned buffers.
 *   Zero clusters need nothing (zero flags are metadata). Preallocated
 *   clusters of an encrypted image are not encrypted zeros in qemu 7.2:
 *   they read back as the decryption of whatever is on disk (qimg reads
 *   them the same way, see crypto.bats).
 *   write_compressed on an encrypted image: refuse (-ENOTSUP; qemu-io's
 *   'write -c' fails with EIO, and qemu-img convert -c to an encrypted
 *   target says "Compression and encryption not supported at the same
 *   time" before writing anything).
 *
 * create (src/qcow2/create.c, to do at merge): for encrypt.format=luks
 *     struct luks_create_opts lo;
 *     luks_create_opts_parse(opts, &lo)         reads encrypt.cipher-alg,
 *        cipher-mode, ivgen-alg, ivgen-hash-alg, hash-alg, iter-time with
 *        qemu's messages;
 *     luks_create(&lo, pass, pass_len, &hdr, &hdr_len)   hdr_len bytes;
 *     allocate DIV_ROUND_UP(hdr_len, cluster_size) clusters right after the
 *     L1 table (qemu: cluster 4 of a fresh image, whatever the cluster
 *     size: header, reftable, refblock, L1, LUKS), write hdr there (it already
 *     holds the zeros of the unused slots; zero the rest of the last
 *     cluster), set crypt_method = 2 and the crypto header extension
 *     (offset, length = hdr_len); free hdr with luks_free_buf(hdr, hdr_len).
 *   For encrypt.format=aes: crypt_method = 1, nothing else on disk.
 *   "encryption=on" is qemu's deprecated alias of encrypt.format=aes.
 *   A missing key secret: qemu-img prints its Formatting line, then fails
 *   with "FILE: Parameter 'encrypt.key-secret' is required for cipher".
 *   qimg's iteration counts come out lower than qemu's for the same
 *   iter-time: OpenSSL's PBKDF2 is slower than qemu's nettle, and the
 *   count is measured on the code that will unlock the image.
 *
 * info (to do at merge): "encrypted: yes" when crypt_method != 0; the
 *   format-specific "encrypt" object from qcow2_crypto_luks(q) (NULL for
 *   AES: only "format": "aes"). Keys in qemu's order: ivgen-alg, hash-alg,
 *   cipher-alg, uuid, ivgen-hash-alg (essiv only), format, cipher-mode,
 *   slots (each: active; iters if active; key-offset in bytes; stripes if
 *   active), payload-offset (bytes), master-key-iters; tests/unit/crypt.c
 *   "info" prints exactly that. Names: crypt_alg_name(), crypt_mode_name(),
 *   crypt_ivgen_name(), crypt_hash_name(). With --image-opts and a key
 *   secret, qemu names the image imageopts_display_name() (json:{...}).
 *
 * check (to do at merge): the clusters [crypto_offset, crypto_offset +
 *   crypto_length) rounded up to whole clusters are referenced once (qemu
 *   counts them like any metadata); overlap checks should treat them as
 *   metadata too. Note: qemu-img check refuses an encrypted image without
 *   its key ("Parameter 'encrypt.key-secret' is required for cipher");
 *   qimg's engine opens it without one (metadata is plaintext).
 */
#ifndef QIMG_QCOW2_CRYPTO_H
#define QIMG_QCOW2_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/util.h"

struct qcow2;

#define CRYPT_SECTOR_SIZE 512

/* ---- algorithms (crypto.c) ------------------------------------------- */
enum crypt_alg { CRYPT_AES_128, CRYPT_AES_192, CRYPT_AES_256 };
enum crypt_mode { CRYPT_MODE_ECB, CRYPT_MODE_CBC, CRYPT_MODE_XTS, CRYPT_MODE_CTR };
enum crypt_ivgen { CRYPT_IV_PLAIN, CRYPT_IV_PLAIN64, CRYPT_IV_ESSIV };
enum crypt_hash {
    CRYPT_HASH_MD5, CRYPT_HASH_SHA1, CRYPT_HASH_SHA224, CRYPT_HASH_SHA256,
    CRYPT_HASH_SHA384, CRYPT_HASH_SHA512, CRYPT_HASH_RIPEMD160,
};

/* A sector cipher: algorithm, mode and IV generator. */
struct crypt_spec {
    enum crypt_alg alg;
    enum crypt_mode mode;
    enum crypt_ivgen ivgen;
    enum crypt_hash ivgen_hash;     /* ESSIV's hash */
    bool has_ivgen_hash;            /* named in the mode string */
};

/* qemu's names ("aes-256", "xts", "plain64", "sha256"); -1 when unknown. */
int crypt_alg_parse(const char *name);
int crypt_mode_parse(const char *name);
int crypt_ivgen_parse(const char *name);
int crypt_hash_parse(const char *name);
const char *crypt_alg_name(enum crypt_alg a);
const char *crypt_mode_name(enum crypt_mode m);
const char *crypt_ivgen_name(enum crypt_ivgen g);
const char *crypt_hash_name(enum crypt_hash h);
size_t crypt_alg_key_len(enum crypt_alg a);     /* 16, 24, 32 */
size_t crypt_hash_len(enum crypt_hash h);       /* digest bytes */
/* Key bytes the spec takes (twice the AES key for XTS). */
size_t crypt_spec_key_len(const struct crypt_spec *s);
/* Can this build run it? -ENOTSUP with a message when not. */
int crypt_spec_check(const struct crypt_spec *s);

/* An instance: spec + key (+ ESSIV's own cipher). */
struct crypt_cipher;
int crypt_cipher_new(struct crypt_cipher **out, const struct crypt_spec *s,
                     const uint8_t *key, size_t key_len);
/*
 * En/decrypt len bytes in place as consecutive 512-byte sectors, the first
 * numbered sector (the last one may be shorter, a multiple of 16 bytes).
 */
int crypt_cipher_run(struct crypt_cipher *c, bool encrypt, uint64_t sector,
                     uint8_t *buf, size_t len);
void crypt_cipher_free(struct crypt_cipher *c);

/* PBKDF2-HMAC with hash h. */
int crypt_pbkdf2(enum crypt_hash h, const uint8_t *pass, size_t pass_len,
                 const uint8_t *salt, size_t salt_len, uint32_t iterations,
                 uint8_t *out, size_t out_len);
/* One digest of len bytes at in; out holds crypt_hash_len(h) bytes. */
int crypt_hash(enum crypt_hash h, const uint8_t *in1, size_t len1,
               const uint8_t *in2, size_t len2, uint8_t *out);

/* ---- LUKS1 (luks.c) -------------------------------------------------- */
#define LUKS_HEADER_LEN 592
#define LUKS_NUM_SLOTS 8
#define LUKS_STRIPES 4000
#define LUKS_SALT_LEN 32
#define LUKS_DIGEST_LEN 20
#define LUKS_KEY_SLOT_OFFSET 4096       /* first key material, bytes */
#define LUKS_MIN_ITERS 1000
#define LUKS_SLOT_ACTIVE 0x00AC71F3u
#define LUKS_SLOT_INACTIVE 0x0000DEADu

struct luks_slot {
    uint32_t active;                /* LUKS_SLOT_ACTIVE or _INACTIVE */
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t key_offset;            /* 512-byte sectors from the header */
    uint32_t stripes;
};

struct luks_header {
    char cipher_name[33], cipher_mode[33], hash_spec[33];
    uint32_t payload_offset;        /* sectors */
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t mk_iterations;
    char uuid[41];
    struct luks_slot slots[LUKS_NUM_SLOTS];
    /* decoded from the strings */
    struct crypt_spec spec;
    enum crypt_hash hash;
};

/*
 * Parse and validate the 592 header bytes. area_len is the space the
 * header area has (qcow2: crypto_length); every key slot's material must
 * lie inside it. Messages in qemu's words ("Volume is not in LUKS format",
 * "Keyslot 2 is corrupted (stripes 5 != 4000)", ...).
 */
int luks_header_parse(const uint8_t *buf, size_t len, uint64_t area_len,
                      struct luks_header *h);
void luks_header_build(const struct luks_header *h, uint8_t *buf);
/* Bytes of one slot's key material on disk (sectors, 4 KiB aligned). */
uint64_t luks_slot_area_len(const struct luks_header *h);

/* Reads len bytes at off of the header area (key material). */
typedef int (*luks_read_fn)(void *opaque, uint64_t off, void *buf, size_t len);
/*
 * Try pass on every active slot; on success mk (h->key_bytes) holds the
 * master key. -EACCES "Invalid password, cannot unlock any keyslot".
 */
int luks_unlock(const struct luks_header *h, const uint8_t *pass, size_t pass_len,
                luks_read_fn rd, void *opaque, uint8_t *mk);

struct luks_create_opts {
    struct crypt_spec spec;
    enum crypt_hash hash;
    uint64_t iter_time_ms;          /* qemu's default 2000 */
};
/* Read encrypt.* keys of a create/amend -o list (marks them used). */
int luks_create_opts_parse(struct opts *o, struct luks_create_opts *out);
/*
 * A whole new header area: LUKS header, slot 0 holding a fresh random
 * master key under pass, the other slots inactive. *out (malloc'd, free
 * with luks_free_buf) holds *out_len bytes = payload offset * 512, to be
 * written at a cluster-aligned offset; crypto_length = *out_len.
 */
int luks_create(const struct luks_create_opts *o, const uint8_t *pass, size_t pass_len,
                uint8_t **out, size_t *out_len);
void luks_free_buf(uint8_t *buf, size_t len);

/* ---- the qcow2 glue (crypto.c) --------------------------------------- */
struct qcow2_crypto;

/* At open: LUKS header parsed and checked (tolerant when check is set). */
int qcow2_crypto_open(struct qcow2 *q, bool check);
/* encrypt.format given with --image-opts (NULL: none) against the header. */
int qcow2_crypto_check_format(struct qcow2 *q, const char *format);
/*
 * Unlock with a passphrase (qemu's use of a secret, see
 * secret_lookup_passphrase). secret NULL: fails only when need is set.
 * Unencrypted images ignore the key, as qemu does.
 */
int qcow2_set_key(struct qcow2 *q, const uint8_t *secret, size_t len, bool need);
/* Has the image a usable key (or no encryption at all)? */
bool qcow2_crypto_ready(const struct qcow2 *q);
/* The LUKS header of a LUKS image, else NULL (for info). */
const struct luks_header *qcow2_crypto_luks(const struct qcow2 *q);

/* Guest bytes [guest, guest+len) stored at host offset host: read and
 * decrypt (any alignment; whole sectors are read around the span). */
int qcow2_crypto_read(struct qcow2 *q, uint64_t guest, uint64_t host, void *buf, size_t len);
/* Encrypt and write them (any alignment; edge sectors are merged). */
int qcow2_crypto_write(struct qcow2 *q, uint64_t guest, uint64_t host, const void *buf,
                       size_t len);
/* Encrypt in place: guest, host and len multiples of 512. */
int qcow2_crypto_encrypt(struct qcow2 *q, uint64_t guest, uint64_t host, uint8_t *buf,
                         size_t len);
int qcow2_crypto_decrypt(struct qcow2 *q, uint64_t guest, uint64_t host, uint8_t *buf,
                         size_t len);
void qcow2_crypto_free(struct qcow2_crypto *c);

#endif
