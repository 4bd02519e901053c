/*
 * progress.c - the progress line of long commands, as qemu-img -p prints
 * it ("    (12.34/100%)"), rewritten in place with a carriage return. It is
 * shown on stderr, and only when stderr is a terminal.
 *
 * Owns: nothing but its own line on stderr.
 */
#include <unistd.h>

#include "util.h"

void progress_init(struct progress *p, bool enabled)
{
    p->on = enabled && isatty(STDERR_FILENO);
    p->shown = -1;
    if (p->on) {
        fprintf(stderr, "    (%3.2f/100%%)\r", 0.0);
        fflush(stderr);
        p->shown = 0;
    }
}

void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
    double pct;

    if (!p->on)
        return;
    pct = total ? (double)MIN(done, total) * 100.0 / (double)total : 100.0;
    /* Redraw in steps of at least 1%, and at the end, as qemu-img does. */
    if (pct < 100.0 && pct - p->shown < 1.0)
        return;
    if (pct == p->shown)
        return;
    fprintf(stderr, "    (%3.2f/100%%)\r", pct);
    fflush(stderr);
    p->shown = pct;
}

void progress_end(struct progress *p)
{
    if (!p->on)
        return;
    progress_update(p, 1, 1);
    fputc('\n', stderr);
    fflush(stderr);
    p->on = false;
}
