/*
 * err.c - the one error-reporting helper: engine code records a message
 * with err_set(), the command prints it once with error().
 */
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *qimg_progname = "qimg";

static __thread char last_msg[512];
static __thread int last_code;

int err_set(int code, const char *fmt, ...)
{
    char buf[sizeof(last_msg)];
    va_list ap;

    /* Through a copy: the arguments may be err_msg(), i.e. last_msg. */
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    memcpy(last_msg, buf, sizeof(buf));
    last_code = code;
    return code;
}

const char *err_msg(int code)
{
    if (last_code == code && last_msg[0])
        return last_msg;
    if (code == -QIMG_ECORRUPT)
        return "Image is corrupt";
    return strerror(code < 0 ? -code : code);
}

bool err_has_msg(int code)
{
    return last_code == code && last_msg[0];
}

void err_clear(void)
{
    last_msg[0] = 0;
    last_code = 0;
}

int error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "%s: ", qimg_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

void warn(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "%s: warning: ", qimg_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *xzalloc(size_t n)
{
    return calloc(1, n ? n : 1);
}

char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}
