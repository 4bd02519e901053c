/*
 * util.h - small helpers every layer shares: error reporting, size parsing,
 * whole-buffer file I/O, the JSON writer and the "-o key=value" parser.
 *
 * Owns: nothing about image formats.
 * Must not: exit, or print anything except through err_* / json_*.
 */
#ifndef QIMG_UTIL_H
#define QIMG_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define QIMG_VERSION "0.1.0"

/* A corrupt image is its own error code (EUCLEAN: "structure needs cleaning"). */
#define QIMG_ECORRUPT EUCLEAN

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ALIGN_UP(n, a) (((n) + (a) - 1) & ~((uint64_t)(a) - 1))
#define ALIGN_DOWN(n, a) ((n) & ~((uint64_t)(a) - 1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- err.c ---------------------------------------------------------- */
/* The program name as invoked (argv[0]), prefixed to every message. */
extern const char *qimg_progname;

/*
 * Engine functions that fail record why with err_set() and return the
 * negative errno it returns; the command adds the context it has (usually
 * the file name) and prints once with error(). err_msg(code) gives the
 * recorded message, or strerror(-code) when none was recorded.
 */
int err_set(int code, const char *fmt, ...) PRINTF(2, 3);
const char *err_msg(int code);
/* Was a message recorded for this code (rather than plain strerror)? */
bool err_has_msg(int code);
void err_clear(void);
/* Print "prog: message" on stderr; returns 1 so "return error(...)" works. */
int error(const char *fmt, ...) PRINTF(1, 2);
void warn(const char *fmt, ...) PRINTF(1, 2);

/* ---- size.c --------------------------------------------------------- */
/* qemu's size syntax: number, optional fraction, suffix b k K M G T P E. */
int parse_size(const char *s, uint64_t *out);
/* A plain non-negative integer (no suffix). */
int parse_uint(const char *s, uint64_t *out);
/* "64 MiB", "1.5 GiB" as qemu's size_to_str(). buf at least 32 bytes. */
char *size_to_str(uint64_t v, char *buf, size_t len);

/* ---- file.c --------------------------------------------------------- */
struct qfile {
    int fd;
    char *name;
    bool writable;
    bool unsafe;    /* QF_UNSAFE: flushes are no-ops */
};

enum {
    QF_RDONLY = 0,
    QF_RDWR = 1 << 0,
    QF_CREATE = 1 << 1,     /* create if missing */
    QF_TRUNC = 1 << 2,      /* truncate to zero */
    QF_EXCL = 1 << 3,       /* must not exist */
    QF_NOLOCK = 1 << 4,     /* -U: do not take or honour the image lock */
    /* Never fsync: for an output nobody can use before the command ends
     * (convert's, as qemu-img convert's cache=unsafe). */
    QF_UNSAFE = 1 << 5,
};

int qfile_open(struct qfile **out, const char *name, int flags);
int qfile_close(struct qfile *f);          /* flushes a writable file */
/* Read exactly len bytes; a short read is -EIO "unexpected end of file". */
int qfile_pread(struct qfile *f, void *buf, size_t len, uint64_t off);
/* Read len bytes, zero-filling anything past the end of the file. */
int qfile_pread_pad(struct qfile *f, void *buf, size_t len, uint64_t off);
int qfile_pwrite(struct qfile *f, const void *buf, size_t len, uint64_t off);
int qfile_size(struct qfile *f, uint64_t *size);
int qfile_truncate(struct qfile *f, uint64_t size);
int qfile_flush(struct qfile *f);
/* Deallocate a range (punch a hole); -ENOTSUP when the file system can't. */
int qfile_discard(struct qfile *f, uint64_t off, uint64_t len);
int qfile_allocate(struct qfile *f, uint64_t off, uint64_t len);
/* Bytes the file really occupies on disk (st_blocks * 512). */
int qfile_actual_size(struct qfile *f, uint64_t *size);
/* SEEK_DATA/SEEK_HOLE: is off in data? *pnum = bytes of the same kind. */
int qfile_extent(struct qfile *f, uint64_t off, uint64_t len, bool *data, uint64_t *pnum);

/* ---- json.c --------------------------------------------------------- */
/* Writes JSON as qemu does: 4-space indent, one member per line. */
struct json {
    FILE *f;
    int depth;
    bool first[64];
};
void json_init(struct json *j, FILE *f);
void json_begin_object(struct json *j, const char *key);   /* key NULL in arrays */
void json_end_object(struct json *j);
void json_begin_array(struct json *j, const char *key);
void json_end_array(struct json *j);
void json_str(struct json *j, const char *key, const char *val);
void json_int(struct json *j, const char *key, int64_t val);
void json_uint(struct json *j, const char *key, uint64_t val);
void json_bool(struct json *j, const char *key, bool val);
void json_finish(struct json *j);   /* final newline */

/* ---- opts.c --------------------------------------------------------- */
/* "key=value,key2=value2" lists as -o takes them (",," is a literal comma). */
struct opt_kv {
    char *key;
    char *val;      /* NULL for a bare key such as "help" */
    bool used;
};
struct opts {
    struct opt_kv *v;
    size_t n;
};
int opts_parse(struct opts *o, const char *s);      /* appends; later wins */
const char *opts_get(struct opts *o, const char *key);
bool opts_has(struct opts *o, const char *key);
/* First key nobody asked for, or NULL. */
const char *opts_unused(const struct opts *o);
void opts_free(struct opts *o);
/* qemu-img's is_valid_option_list(): no empty list, no leading or lone
 * trailing comma (",," is a comma). */
bool opts_valid_list(const char *s);
/* on/off/true/false/yes/no; -EINVAL otherwise. */
int parse_bool(const char *s, bool *out);

/* ---- progress.c ---------------------------------------------------- */
/* qemu-img's "    (12.34/100%)" line on stderr, with the rate and the time
 * left, only when stderr is a terminal (or QIMG_PROGRESS=always). */
struct progress {
    bool on;
    double shown;       /* last percentage printed */
    bool bytes;         /* done/total count bytes: show a rate */
    double start, drawn_at;
    uint64_t done, total;
    int width;          /* length of the line on screen */
};
/* done/total are bytes (the rate is shown in B/s). */
void progress_init(struct progress *p, bool enabled);
/* done/total are any fraction (no rate, only the time left). */
void progress_init_percent(struct progress *p, bool enabled);
void progress_update(struct progress *p, uint64_t done, uint64_t total);
/* Blank the line, so that a message can take it; the next update redraws. */
void progress_clear(struct progress *p);
void progress_end(struct progress *p);      /* prints 100% and the newline */

/* ---- misc ----------------------------------------------------------- */
void *xzalloc(size_t n);        /* calloc that returns NULL on n == 0 too */
char *xstrdup(const char *s);

#endif
