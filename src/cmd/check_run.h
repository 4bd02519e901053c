/*
 * check_run.h - what `qimg check` and `qimg repair` share: one runner that
 * opens, checks (or repairs), double-checks and prints as qemu-img does.
 * Owned by check.c; repair.c only maps its options onto these.
 */
#ifndef QIMG_CMD_CHECK_RUN_H
#define QIMG_CMD_CHECK_RUN_H

#include <stdbool.h>

struct image_args;

struct check_args {
    const char *file;           /* as given: a file, or an --image-opts string */
    struct image_args *ia;      /* --object, --image-opts; NULL: neither (repair) */
    const char *fmt;            /* NULL: guess */
    bool quiet;
    bool json;
    int fix;                    /* QCOW2_FIX_* */
    bool dry_run;
    bool deep;
    bool force_share;
    bool progress;              /* -p: the progress line on stderr */
};

/* Exit code as qemu-img check: 0, 1, 2, 3 or 63. */
int check_run(const struct check_args *a);

#endif
