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
 * One code point of (modified) UTF-8 at s, as qemu decodes it before
 * quoting: -1 for a byte sequence that is not a valid character. *len is
 * how many bytes it took.
 */
static int32_t utf8_codepoint(const unsigned char *s, size_t *len)
{
    static const int32_t min_cp[] = { 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
    unsigned n = 0, i;
    int32_t cp;

    *len = 1;
    if (s[0] < 0x80)
        return s[0];
    if (s[0] >= 0xfe || !(s[0] & 0x40))
        return -1;              /* 0xfe, 0xff, or a stray continuation byte */
    for (unsigned mask = 0x80; s[0] & mask; mask >>= 1)
        n++;
    cp = s[0] & ((0x80 >> n) - 1);
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *len = i;
            return -1;          /* continuation byte missing */
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    *len = n;
    if (cp > 0x10ffff || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp < min_cp[n - 2] && !(cp == 0 && n == 2)))
        return -1;              /* out of range, noncharacter, surrogate, overlong */
    return cp;
}

/* Quote s as qemu does: every character outside printable ASCII as \uXXXX. */
static void put_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len;

    fputc('"', f);
    while (*p) {
        int32_t cp = utf8_codepoint(p, &len);

        p += len;
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
                cp = 0xfffd;    /* the replacement character */
            if (cp > 0xffff)
                fprintf(f, "\\u%04X\\u%04X", (unsigned)(0xd800 + ((cp - 0x10000) >> 10)),
                        (unsigned)(0xdc00 + ((cp - 0x10000) & 0x3ff)));
            else if (cp < 0x20 || cp >= 0x7f)
                fprintf(f, "\\u%04X", (unsigned)cp);
            else
                fputc(cp, f);
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
