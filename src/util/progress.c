/*
 * progress.c - the progress line of long commands (convert, amend, check,
 * repair with -p): qemu-img's "    (12.34/100%)", then the rate and the
 * time left, rewritten in place with a carriage return on stderr and ended
 * with a newline. Drawn only when stderr is a terminal, unless the
 * environment asks for it anyway (QIMG_PROGRESS=always: logs, tests).
 *
 * Owns: nothing but its own line on stderr.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool wanted(bool enabled)
{
    const char *env = getenv("QIMG_PROGRESS");

    if (!enabled)
        return false;
    if (env && !strcmp(env, "always"))
        return true;
    if (env && !strcmp(env, "never"))
        return false;
    return isatty(STDERR_FILENO);
}

/* "1:05:09", "4:07": hours only when needed. */
static void hms(char *buf, size_t len, double secs)
{
    unsigned long s = secs < 0 ? 0 : secs > 359999 ? 359999 : (unsigned long)(secs + 0.5);

    if (s >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, len, "%lu:%02lu", s / 60, s % 60);
}

static void draw(struct progress *p, double pct, uint64_t done, uint64_t total, bool end)
{
    double t = now(), el = t - p->start;
    char line[160], rate[48] = "", left[48] = "", sz[32];
    int n;

    if (el > 0.2 && done) {
        if (p->bytes) {
            size_to_str((uint64_t)(done / el), sz, sizeof(sz));
            snprintf(rate, sizeof(rate), "  %s/s", sz);
        }
        if (end) {
            hms(sz, sizeof(sz), el);
            snprintf(left, sizeof(left), "  %s in all", sz);
        } else {
            hms(sz, sizeof(sz), (double)(total - MIN(done, total)) * el / (double)done);
            snprintf(left, sizeof(left), "  %s left", sz);
        }
    }
    n = snprintf(line, sizeof(line), "    (%3.2f/100%%)%s%s", pct, rate, left);
    /* Blank what a longer previous line left behind. */
    fprintf(stderr, "%s%*s\r", line, p->width > n ? p->width - n : 0, "");
    fflush(stderr);
    p->width = n;
    p->shown = pct;
    p->drawn_at = t;
}

static void init(struct progress *p, bool enabled, bool bytes)
{
    memset(p, 0, sizeof(*p));
    p->on = wanted(enabled);
    p->bytes = bytes;
    p->shown = -1;
    p->start = now();
    if (p->on)
        draw(p, 0.0, 0, 0, false);
}

void progress_init(struct progress *p, bool enabled)
{
    init(p, enabled, true);
}

void progress_init_percent(struct progress *p, bool enabled)
{
    init(p, enabled, false);
}

void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
    double pct;

    if (!p->on)
        return;
    pct = total ? (double)MIN(done, total) * 100.0 / (double)total : 100.0;
    /* The total may grow (a repair adds a pass): never draw a step back. */
    if (pct < p->shown)
        pct = p->shown;
    /* Redraw in steps of 1%, as qemu-img does, or once a second for the
     * rate and the time left; 100% is drawn by progress_end. */
    if (pct >= 100.0 || (pct - p->shown < 1.0 && now() - p->drawn_at < 1.0))
        return;
    p->done = done;
    p->total = total;
    draw(p, pct, done, total, false);
}

void progress_clear(struct progress *p)
{
    if (!p->on || !p->width)
        return;
    fprintf(stderr, "\r%*s\r", p->width, "");
    fflush(stderr);
    p->width = 0;
    p->drawn_at = 0;    /* drawn again at the next update */
}

void progress_end(struct progress *p)
{
    if (!p->on)
        return;
    draw(p, 100.0, p->bytes ? MAX(p->done, p->total) : 1, 1, true);
    fputc('\n', stderr);
    fflush(stderr);
    p->on = false;
}
