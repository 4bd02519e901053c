/*
 * create.h - the -o creation options of `qimg create` and `qimg convert`
 * (create_opts.c): one option table, one parser, one way to make the image,
 * so both commands accept the same options with the same messages.
 *
 * A command: create_parse() the joined -o list (type errors printed, with
 * the prefix the command's qemu-img counterpart uses), set what its own
 * flags imply (create_set: size, -b/-B, -F), optionally
 * create_print_formatting(), then create_make() (which returns a negative
 * errno with an err_set message; the command prints it in its words).
 *
 * Owns: the option table and its parsing. Must not: include block layer
 * state of an existing image (create.c opens backing files).
 */
#ifndef QIMG_CMD_CREATE_H
#define QIMG_CMD_CREATE_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/secret.h"

/* The options, in the order qemu prints them on the "Formatting" line. */
enum create_opt {
    O_ENCRYPTION, O_ENC_FORMAT, O_ENC_SECRET, O_ENC_CIPHER, O_ENC_MODE, O_ENC_IVGEN,
    O_ENC_IVHASH, O_ENC_HASH, O_ENC_ITER, O_CLUSTER_SIZE, O_EXTL2, O_PREALLOC,
    O_COMPRESSION, O_SIZE, O_COMPAT, O_BACKING_FILE, O_BACKING_FMT, O_DATA_FILE,
    O_DATA_FILE_RAW, O_LAZY, O_REFCOUNT_BITS, O_NOCOW, O_EXTENT_HINT, O_COUNT
};

/* Which formats take an option. */
enum { F_QCOW2 = 1, F_RAW = 2, F_PROTO = 4 };

struct oval {
    bool set;
    char *str;                  /* as given (bools, strings); owned */
    uint64_t num;               /* sizes, numbers, bools */
};

struct create_req {
    const char *fmt;
    int bits;                   /* F_QCOW2 or F_RAW */
    char *list;                 /* the -o list as given (encrypt.* are read again) */
    struct oval v[O_COUNT];
};

/* F_QCOW2, F_RAW, or 0 for a format qimg cannot create. */
int create_format_bits(const char *fmt);
/* qemu-img's "-o help" (filename NULL: without the protocol's options). */
int create_print_help(const char *filename, const char *fmt);
/* Does the list ask for help ("help" or "?")? */
bool create_wants_help(const char *list);
/*
 * Parse the -o list (NULL: none) for format fmt, by type, as qemu-opts
 * does. Errors are printed, each prefixed with prefix ("FILE: " for create,
 * "" for convert); returns 0 or 1.
 */
int create_parse(struct create_req *r, const char *fmt, const char *list, const char *prefix);
/* Set an option as a command-line flag would (str copied; NULL: a number). */
int create_set(struct create_req *r, enum create_opt i, const char *str, uint64_t num);
/* Is the new image to be encrypted (encrypt.format or encryption=on)? */
bool create_encrypted(const struct create_req *r);
/* "Formatting 'FILE', fmt=... " as qemu-img prints it. */
void create_print_formatting(const struct create_req *r, const char *filename);
/*
 * Make the image of size r->v[O_SIZE] (which must be set). Every refusal
 * that is not an I/O error comes before the file is touched. Returns 0 or a
 * negative errno with the message recorded (err_msg), without the file
 * name. secrets: where encrypt.key-secret is looked up.
 */
int create_make(const struct create_req *r, const char *filename,
                const struct secret_store *secrets);
void create_req_free(struct create_req *r);

#endif
