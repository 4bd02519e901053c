/*
 * json.c - a streaming JSON writer that lays out text the way qemu-img
 * does (4-space indent, one member per line, ": " between key and value,
 * empty containers as "{\n}"), so scripts that diff text keep working.
 */
#include <inttypes.h>

#include "util.h"

void json_init(struct json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->first[0] = true;
}

static void indent(struct json *j)
{
    for (int i = 0; i < j->depth; i++)
        fputs("    ", j->f);
}

/*
 * One UTF-8 sequence at *p: its code point, or -1 when it is not valid
 * (overlong, surrogate, beyond U+10FFFF, cut short). Advances *p.
 */
static long utf8_next(const unsigned char **p)
{
    const unsigned char *s = *p;
    long cp, min;
    int n;

    if (s[0] < 0x80) {
        *p = s + 1;
        return s[0];
    }
    if ((s[0] & 0xe0) == 0xc0) { n = 1; cp = s[0] & 0x1f; min = 0x80; }
    else if ((s[0] & 0xf0) == 0xe0) { n = 2; cp = s[0] & 0x0f; min = 0x800; }
    else if ((s[0] & 0xf8) == 0xf0) { n = 3; cp = s[0] & 0x07; min = 0x10000; }
    else { *p = s + 1; return -1; }
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *p = s + i;
            return -1;
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    *p = s + n + 1;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    return cp;
}

/* Strings as qemu's JSON writer escapes them: non-ASCII as \uXXXX. */
static void put_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    fputc('"', f);
    while (*p) {
        long cp = utf8_next(&p);

        switch (cp) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (cp < 0)
                cp = 0xfffd;
            if (cp > 0xffff)
                fprintf(f, "\\u%04lX\\u%04lX", 0xd800 + ((cp - 0x10000) >> 10),
                        0xdc00 + ((cp - 0x10000) & 0x3ff));
            else if (cp < 0x20 || cp >= 0x7f)
                fprintf(f, "\\u%04lX", cp);
            else
                fputc((int)cp, f);
        }
    }
    fputc('"', f);
}

/* Start a member or element: separator, newline, indent, key. */
static void member(struct json *j, const char *key)
{
    if (j->depth > 0) {
        if (!j->first[j->depth])
            fputc(',', j->f);
        fputc('\n', j->f);
        indent(j);
    }
    j->first[j->depth] = false;
    if (key) {
        put_string(j->f, key);
        fputs(": ", j->f);
    }
}

static void open_container(struct json *j, const char *key, char c)
{
    member(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < (int)ARRAY_SIZE(j->first))
        j->depth++;
    j->first[j->depth] = true;
}

static void close_container(struct json *j, char c)
{
    j->depth--;
    fputc('\n', j->f);
    indent(j);
    fputc(c, j->f);
}

void json_begin_object(struct json *j, const char *key) { open_container(j, key, '{'); }
void json_end_object(struct json *j) { close_container(j, '}'); }
void json_begin_array(struct json *j, const char *key) { open_container(j, key, '['); }
void json_end_array(struct json *j) { close_container(j, ']'); }

void json_str(struct json *j, const char *key, const char *val)
{
    member(j, key);
    put_string(j->f, val);
}

void json_int(struct json *j, const char *key, int64_t val)
{
    member(j, key);
    fprintf(j->f, "%" PRId64, val);
}

void json_uint(struct json *j, const char *key, uint64_t val)
{
    member(j, key);
    fprintf(j->f, "%" PRIu64, val);
}

void json_bool(struct json *j, const char *key, bool val)
{
    member(j, key);
    fputs(val ? "true" : "false", j->f);
}

void json_finish(struct json *j)
{
    fputc('\n', j->f);
}
