/*
 * secret.c - the secret registry behind --object secret,..., and the parser
 * of --image-opts strings. Messages follow qemu-img 7.2's wording.
 *
 * Owns: secret bytes (cleansed with OPENSSL_cleanse when dropped).
 * Must not: print or log a secret's bytes; name secrets by id only.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "secret.h"
#include "util.h"

/* ---- small helpers ---------------------------------------------------- */

static void cleanse_free(void *p, size_t len)
{
    if (p) {
        OPENSSL_cleanse(p, len);
        free(p);
    }
}

/* Free an opts list whose values may be secrets. */
static void opts_free_cleanse(struct opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i].val)
            OPENSSL_cleanse(o->v[i].val, strlen(o->v[i].val));
    opts_free(o);
}

/* qemu's identifiers: letters, digits, '-', '.', '_', starting with a letter. */
static bool valid_id(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_'))
            return false;
    return true;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decode base64 as qemu accepts it: only the base64 alphabet, '=' and
 * newlines; decoding stops at the first '='. out holds len bytes (enough).
 */
static int b64_decode(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
    uint8_t *o;
    uint32_t acc = 0;
    size_t n = 0;
    int bits = 0;

    if (memchr(in, 0, len))
        return err_set(-EINVAL, "Base64 data contains embedded NUL characters");
    for (size_t i = 0; i < len; i++)
        if (b64_value((char)in[i]) < 0 && in[i] != '=' && in[i] != '\n')
            return err_set(-EINVAL, "Base64 data contains invalid characters");
    o = malloc(len + 1);
    if (!o)
        return -ENOMEM;
    for (size_t i = 0; i < len && in[i] != '='; i++) {
        int v = b64_value((char)in[i]);
        if (v < 0)
            continue;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (uint8_t)(acc >> bits);
        }
    }
    acc = 0;
    o[n] = 0;
    *out = o;
    *out_len = n;
    return 0;
}

static int read_secret_file(const char *path, uint8_t **out, size_t *out_len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = NULL;
    int fd, ret = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(-errno, "Unable to read %s: Failed to open file \u201c%s\u201d: %s",
                       path, path, strerror(errno));
    buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t r;

        if (n == cap) {
            uint8_t *nb;
            if (cap >= SECRET_MAX_FILE) {
                ret = err_set(-EFBIG, "Unable to read %s: the secret file is larger than "
                              "%d bytes", path, SECRET_MAX_FILE);
                break;
            }
            nb = malloc(cap * 2 + 1);
            if (!nb) {
                ret = -ENOMEM;
                break;
            }
            memcpy(nb, buf, n);
            cleanse_free(buf, n);
            buf = nb;
            cap *= 2;
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ret = err_set(-errno, "Unable to read %s: Failed to read from file \u201c%s\u201d: %s",
                          path, path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (ret < 0) {
        cleanse_free(buf, cap);
        return ret;
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return 0;
}

/* keyid=: the data is AES-256-CBC encrypted with that secret, iv= base64. */
static int decrypt_secret(const struct secret_store *s, const char *keyid, const char *iv_b64,
                          uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len)
{
    const uint8_t *key;
    uint8_t *iv = NULL, *plain = NULL;
    size_t key_len, iv_len = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    int ret, outl = 0, pad;

    ret = secret_lookup(s, keyid, &key, &key_len);
    if (ret < 0)
        return ret;
    if (key_len != 32)
        return err_set(-EINVAL, "Key should be 32 bytes in length");
    if (!iv_b64)
        return err_set(-EINVAL, "IV is required to decrypt secret");
    ret = b64_decode((const uint8_t *)iv_b64, strlen(iv_b64), &iv, &iv_len);
    if (ret < 0)
        return ret;
    if (iv_len != 16) {
        free(iv);
        return err_set(-EINVAL, "IV should be 16 bytes in length not %zu", iv_len);
    }
    if (in_len == 0 || in_len % 16) {
        free(iv);
        return err_set(-EINVAL, "Length %zu must be a multiple of block size 16", in_len);
    }
    plain = malloc(in_len + 1);
    ctx = EVP_CIPHER_CTX_new();
    if (!plain || !ctx) {
        ret = -ENOMEM;
        goto out;
    }
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1 ||
        EVP_DecryptUpdate(ctx, plain, &outl, in, (int)in_len) != 1) {
        ret = err_set(-EIO, "Could not decrypt secret");
        goto out;
    }
    pad = plain[in_len - 1];
    if (pad > 16 || (size_t)pad > in_len) {
        ret = err_set(-EINVAL, "Incorrect number of padding bytes (%d) found on decrypted data",
                      pad);
        goto out;
    }
    *out_len = in_len - (size_t)pad;
    plain[*out_len] = 0;
    *out = plain;
    plain = NULL;
    ret = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    free(iv);
    cleanse_free(plain, in_len + 1);
    return ret;
}

/* ---- the registry ----------------------------------------------------- */

int secret_object_help(const char *arg, const char **text)
{
    if (!strcmp(arg, "help") || !strcmp(arg, "?")) {
        *text = "List of user creatable objects:\n  secret\n";
        return 1;
    }
    if (!strcmp(arg, "secret,help") || !strcmp(arg, "secret,?")) {
        *text = "secret options:\n"
                "  data=<string>\n"
                "  file=<string>\n"
                "  format=<QCryptoSecretFormat>\n"
                "  iv=<string>\n"
                "  keyid=<string>\n"
                "  loaded=<bool>\n";
        return 1;
    }
    return 0;
}

int secret_object_add(struct secret_store *s, const char *arg)
{
    struct opts o = { 0 };
    const char *type = NULL, *id = NULL, *data = NULL, *file = NULL, *format = NULL;
    const char *keyid = NULL, *iv = NULL;
    uint8_t *raw = NULL, *dec = NULL;
    size_t raw_len = 0, dec_len = 0;
    struct secret *nv;
    int ret;

    ret = opts_parse(&o, arg);
    if (ret < 0)
        goto out;
    for (size_t i = 0; i < o.n; i++) {
        const char *k = o.v[i].key, *v = o.v[i].val;

        if (!v) {
            if (i == 0) {
                type = k;
                continue;
            }
            ret = err_set(-EINVAL, "Expected '=' after parameter '%s'", k);
            goto out;
        }
        if (!strcmp(k, "qom-type"))
            type = v;
        else if (!strcmp(k, "id"))
            id = v;
        else if (!strcmp(k, "data"))
            data = v;
        else if (!strcmp(k, "file"))
            file = v;
        else if (!strcmp(k, "format"))
            format = v;
        else if (!strcmp(k, "keyid"))
            keyid = v;
        else if (!strcmp(k, "iv"))
            iv = v;
        else if (!strcmp(k, "loaded")) {
            ret = err_set(-EINVAL, "Property 'secret.loaded' is not writable");
            goto out;
        } else {
            ret = err_set(-EINVAL, "Parameter '%s' is unexpected", k);
            goto out;
        }
    }
    if (!type) {
        ret = err_set(-EINVAL, "Parameter 'qom-type' is missing");
        goto out;
    }
    if (strcmp(type, "secret")) {
        ret = err_set(-EINVAL, "Parameter 'qom-type' does not accept value '%s'", type);
        goto out;
    }
    if (!id) {
        ret = err_set(-EINVAL, "Parameter 'id' is missing");
        goto out;
    }
    if (!valid_id(id)) {
        ret = err_set(-EINVAL, "Parameter 'id' expects an identifier");
        goto out;
    }
    if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
        ret = err_set(-EINVAL, "Parameter 'format' does not accept value '%s'", format);
        goto out;
    }
    if (data && file) {
        ret = err_set(-EINVAL, "'file' and 'data' are mutually exclusive");
        goto out;
    }
    if (!data && !file) {
        ret = err_set(-EINVAL, "Either 'file' or 'data' must be provided");
        goto out;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (!strcmp(s->v[i].id, id)) {
            ret = err_set(-EEXIST, "attempt to add duplicate property '%s' to object "
                          "(type 'container')", id);
            goto out;
        }
    }

    if (file) {
        ret = read_secret_file(file, &raw, &raw_len);
        if (ret < 0)
            goto out;
    } else {
        raw_len = strlen(data);
        raw = malloc(raw_len + 1);
        if (!raw) {
            ret = -ENOMEM;
            goto out;
        }
        memcpy(raw, data, raw_len + 1);
    }
    if (keyid) {
        uint8_t *ct = raw;
        size_t ct_len = raw_len;
        uint8_t *b = NULL;
        size_t b_len = 0;

        if (format && !strcmp(format, "base64")) {
            ret = b64_decode(raw, raw_len, &b, &b_len);
            if (ret < 0)
                goto out;
            ct = b;
            ct_len = b_len;
        }
        ret = decrypt_secret(s, keyid, iv, ct, ct_len, &dec, &dec_len);
        cleanse_free(b, b_len);
        if (ret < 0)
            goto out;
    } else if (format && !strcmp(format, "base64")) {
        ret = b64_decode(raw, raw_len, &dec, &dec_len);
        if (ret < 0)
            goto out;
    } else {
        dec = raw;
        dec_len = raw_len;
        raw = NULL;
    }

    nv = realloc(s->v, (s->n + 1) * sizeof(*nv));
    if (!nv) {
        ret = -ENOMEM;
        goto out;
    }
    s->v = nv;
    nv[s->n].id = strdup(id);
    if (!nv[s->n].id) {
        ret = -ENOMEM;
        goto out;
    }
    nv[s->n].data = dec;
    nv[s->n].len = dec_len;
    s->n++;
    dec = NULL;
    ret = 0;
out:
    cleanse_free(raw, raw_len);
    cleanse_free(dec, dec_len);
    opts_free_cleanse(&o);
    return ret;
}

int secret_lookup(const struct secret_store *s, const char *id, const uint8_t **data,
                  size_t *len)
{
    for (size_t i = 0; s && i < s->n; i++) {
        if (!strcmp(s->v[i].id, id)) {
            *data = s->v[i].data;
            *len = s->v[i].len;
            return 0;
        }
    }
    return err_set(-ENOENT, "No secret with id '%s'", id);
}

/* Strict UTF-8 (g_utf8_validate with a length): no NUL bytes, overlongs,
 * surrogates or code points past U+10FFFF. */
static bool utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        uint32_t cp;
        unsigned n;

        if (c == 0)
            return false;       /* as glib: NUL bytes are not valid here */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (unsigned k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

int secret_lookup_passphrase(const struct secret_store *s, const char *id,
                             const uint8_t **data, size_t *len)
{
    int ret = secret_lookup(s, id, data, len);

    if (ret < 0)
        return ret;
    if (!utf8_valid(*data, *len))
        return err_set(-EINVAL, "Data from secret %s is not valid UTF-8", id);
    *len = strnlen((const char *)*data, *len);
    return 0;
}

void secret_store_free(struct secret_store *s)
{
    for (size_t i = 0; i < s->n; i++) {
        cleanse_free(s->v[i].data, s->v[i].len);
        free(s->v[i].id);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* ---- --image-opts ----------------------------------------------------- */

static int set_str(char **dst, const char *v)
{
    char *n = strdup(v);

    if (!n)
        return -ENOMEM;
    free(*dst);
    *dst = n;
    return 0;
}

int imageopts_parse(const char *s, struct imageopts *out)
{
    struct opts o = { 0 };
    const char *bad = NULL, *bad_file = NULL, *file_driver = NULL, *file_node = NULL;
    int ret;

    memset(out, 0, sizeof(*out));
    ret = opts_parse(&o, s);
    for (size_t i = 0; ret == 0 && i < o.n; i++) {
        const char *k = o.v[i].key, *v = o.v[i].val;

        if (!v && i == 0) {
            file_node = k;      /* qemu's implied key: "NAME,..." is "file=NAME,..." */
            continue;
        }
        if (!v) {
            ret = err_set(-EINVAL, "Expected '=' after parameter '%s'", k);
            break;
        }
        if (!strcmp(k, "driver"))
            ret = set_str(&out->driver, v);
        else if (!strcmp(k, "file.filename"))
            ret = set_str(&out->filename, v);
        else if (!strcmp(k, "encrypt.key-secret"))
            ret = set_str(&out->key_secret, v);
        else if (!strcmp(k, "encrypt.format"))
            ret = set_str(&out->encrypt_format, v);
        else if (!strcmp(k, "file.driver"))
            file_driver = v;
        else if (!strcmp(k, "file"))
            file_node = v;
        else if (!strncmp(k, "file.", 5))
            bad_file = bad_file ? bad_file : k + 5;
        else
            bad = bad ? bad : k;
    }
    if (ret < 0)
        goto fail;
    if (!out->driver && !out->filename && !file_node) {
        ret = err_set(-EINVAL, "Must specify either driver or file");
        goto fail;
    }
    if (out->driver && strcmp(out->driver, "qcow2") && strcmp(out->driver, "raw")) {
        ret = err_set(-EINVAL, "Unknown driver '%s'", out->driver);
        goto fail;
    }
    if (file_node && (out->filename || file_driver || bad_file)) {
        ret = err_set(-EINVAL, "Cannot reference an existing block device with additional "
                      "options or a new filename");
        goto fail;
    }
    if (file_node) {
        ret = err_set(-ENOENT, "Cannot find device='%s' nor node-name='%s'", file_node,
                      file_node);
        goto fail;
    }
    if (!out->filename) {
        ret = err_set(-EINVAL, "A block device must be specified for \"file\"");
        goto fail;
    }
    if (file_driver && strcmp(file_driver, "file")) {
        ret = err_set(-ENOTSUP, "Block protocol '%s' is not supported", file_driver);
        goto fail;
    }
    if (bad_file) {
        ret = err_set(-EINVAL, "Block protocol 'file' doesn't support the option '%s'", bad_file);
        goto fail;
    }
    if (!bad && out->driver && !strcmp(out->driver, "raw"))
        bad = out->key_secret ? "encrypt.key-secret"
              : out->encrypt_format ? "encrypt.format" : NULL;
    if (bad) {
        ret = err_set(-EINVAL, "Block format '%s' does not support the option '%s'",
                      out->driver ? out->driver : "qcow2", bad);
        goto fail;
    }
    opts_free(&o);
    return 0;
fail:
    opts_free(&o);
    imageopts_free(out);
    return ret;
}

void imageopts_free(struct imageopts *o)
{
    free(o->driver);
    free(o->filename);
    free(o->key_secret);
    free(o->encrypt_format);
    memset(o, 0, sizeof(*o));
}

/* Append s as a JSON string body (no quotes) to buf at *n (buf is big enough). */
static void json_escape(char *buf, size_t *n, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char)c;
        } else if (c < 0x20) {
            *n += (size_t)sprintf(buf + *n, "\\u%04x", c);
        } else {
            buf[(*n)++] = (char)c;
        }
    }
    buf[*n] = 0;
}

char *imageopts_display_name(const struct imageopts *o, const char *fmt)
{
    size_t cap, n = 0;
    char *buf;

    if (!o->key_secret)
        return strdup(o->filename);
    cap = 6 * (strlen(o->key_secret) + strlen(o->filename) + strlen(fmt)) + 128;
    buf = malloc(cap);
    if (!buf)
        return NULL;
    n = (size_t)sprintf(buf, "json:{\"encrypt.key-secret\": \"");
    json_escape(buf, &n, o->key_secret);
    n += (size_t)sprintf(buf + n, "\", \"driver\": \"");
    json_escape(buf, &n, fmt);
    n += (size_t)sprintf(buf + n, "\", \"file\": {\"driver\": \"file\", \"filename\": \"");
    json_escape(buf, &n, o->filename);
    strcpy(buf + n, "\"}}");
    return buf;
}
