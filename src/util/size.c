/*
 * size.c - sizes as qemu-img writes and reads them: "64M", "1.5G", "512b";
 * and "64 MiB" for human output.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end)
        return -EINVAL;
    *out = v;
    return 0;
}

static int suffix_shift(char c)
{
    switch (tolower((unsigned char)c)) {
    case 'b': return 0;
    case 'k': return 10;
    case 'm': return 20;
    case 'g': return 30;
    case 't': return 40;
    case 'p': return 50;
    case 'e': return 60;
    }
    return -1;
}

int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    char *end;
    unsigned long long ival;
    double frac = 0;
    int shift = 0;
    bool hex;

    if (!s)
        return -EINVAL;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    /* As qemu_strtosz: decimal ("010" is ten), or hexadecimal after 0x. */
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    errno = 0;
    ival = strtoull(p, &end, hex ? 16 : 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end == '.' && !hex) {
        /* "1.5k"; "1.k" is 1k; an exponent is not a size */
        const char *f = end + 1;
        while (isdigit((unsigned char)*f))
            f++;
        if (f > end + 1) {
            char *fend;
            frac = strtod(end, &fend);
            if (fend != f)
                return -EINVAL;
        }
        end = (char *)f;
    }
    if (*end) {
        shift = suffix_shift(*end);
        if (shift < 0 || end[1])
            return -EINVAL;
        if (hex && (tolower((unsigned char)*end) == 'b' || tolower((unsigned char)*end) == 'e'))
            return -EINVAL;  /* hex digits, ambiguous */
    }
    if (frac > 0 && shift == 0)
        return -EINVAL;     /* a fraction of a byte */
    if (shift && ival > (UINT64_MAX >> shift))
        return -ERANGE;
    {
        uint64_t whole = (uint64_t)ival << shift;
        uint64_t part = (uint64_t)(frac * (double)(1ULL << shift));
        if (whole + part < whole || whole + part > INT64_MAX)
            return -ERANGE;
        *out = whole + part;
    }
    return 0;
}

char *size_to_str(uint64_t v, char *buf, size_t len)
{
    static const char *const sfx[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    int e, i;

    frexp((double)v / (1000.0 / 1024.0), &e);
    i = (e - 1) / 10;
    if (i < 0)
        i = 0;
    if (i >= (int)ARRAY_SIZE(sfx))
        i = ARRAY_SIZE(sfx) - 1;
    snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ULL << (i * 10)), sfx[i]);
    return buf;
}
