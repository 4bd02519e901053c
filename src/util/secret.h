/*
 * secret.h - secrets given on the command line and the --image-opts string
 * that names an image and the secret that unlocks it, as qemu-img takes them:
 *
 *   --object secret,id=ID,data=STRING[,format=raw|base64][,keyid=ID,iv=B64]
 *   --object secret,id=ID,file=PATH[,format=...]
 *   --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID
 *
 * A command keeps one struct secret_store (no global state), adds every
 * --object to it in command-line order (keyid= may only name a secret
 * defined before), and looks secrets up by id when it opens an image.
 *
 * Owns: the secret bytes. They are cleansed (OPENSSL_cleanse) when freed and
 * never printed; error messages name secrets by id only.
 * Must not: print anything (messages go through err_set), exit.
 */
#ifndef QIMG_SECRET_H
#define QIMG_SECRET_H

#include <stddef.h>
#include <stdint.h>

struct secret {
    char *id;
    uint8_t *data;      /* len bytes, followed by a NUL not counted in len */
    size_t len;
};

struct secret_store {
    struct secret *v;
    size_t n;
};

/* The largest secret file read (qemu has no bound; we refuse /dev/zero). */
#define SECRET_MAX_FILE (1024 * 1024)

/*
 * Parse one --object argument ("secret,id=ID,data=..." or with
 * qom-type=secret) and add the secret. On error returns a negative errno
 * with qemu's message recorded by err_set ("Parameter 'id' is missing",
 * "'file' and 'data' are mutually exclusive", ...); print it as
 * error("%s", err_msg(ret)).
 */
int secret_object_add(struct secret_store *s, const char *arg);
/*
 * "--object help" and "--object secret,help": *text gets what qemu-img
 * prints for them and 1 is returned; 0 when arg asks for no help.
 */
int secret_object_help(const char *arg, const char **text);
/* The secret's raw bytes; -ENOENT "No secret with id 'ID'". */
int secret_lookup(const struct secret_store *s, const char *id,
                  const uint8_t **data, size_t *len);
/*
 * The secret as a passphrase, the way qemu uses one for qcow2 AES and LUKS:
 * it must be valid UTF-8 without NUL bytes ("Data from secret ID is not
 * valid UTF-8").
 */
int secret_lookup_passphrase(const struct secret_store *s, const char *id,
                             const uint8_t **data, size_t *len);
/* Cleanse and free every secret; the store is empty afterwards. */
void secret_store_free(struct secret_store *s);

/* ---- --image-opts --------------------------------------------------- */
struct imageopts {
    char *driver;           /* "qcow2", "raw", or NULL to probe */
    char *filename;         /* file.filename */
    char *key_secret;       /* encrypt.key-secret, or NULL */
    char *encrypt_format;   /* encrypt.format ("luks"/"aes"), or NULL */
};

/*
 * Parse "driver=qcow2,file.filename=PATH,encrypt.key-secret=ID" (",," is a
 * literal comma; a later key wins). Known keys: driver, file.filename,
 * file.driver (must be "file"), encrypt.key-secret, encrypt.format; file=
 * (or a first word without '=', qemu's implied key) names a block node,
 * which is never found ("Cannot find device='X' nor node-name='X'"). Errors
 * in qemu's words without the "Could not open 'S': " prefix, which the
 * command adds with the whole string s as the name: "Must specify either
 * driver or file", "A block device must be specified for \"file\"",
 * "Block format 'raw' does not support the option 'encrypt.key-secret'".
 */
int imageopts_parse(const char *s, struct imageopts *out);
void imageopts_free(struct imageopts *o);
/*
 * The image's name as qemu-img info shows it: the file name, or
 * json:{"encrypt.key-secret": "ID", "driver": "FMT", "file": {"driver":
 * "file", "filename": "PATH"}} when a key secret was given. fmt is the
 * format the image was opened as. malloc'd; NULL on ENOMEM.
 */
char *imageopts_display_name(const struct imageopts *o, const char *fmt);

#endif
