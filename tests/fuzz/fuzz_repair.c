/*
 * fuzz_repair.c - libFuzzer target: the input is an image file. Copy it to
 * a memfd, repair it as `qimg repair` does (check -r all, then the double
 * check), close it, open it again and check it once more. Nothing may
 * crash; and when the repair completed, the last check must find no
 * corruption and no leak (CLI.md: "afterwards a second check finds
 * nothing") - abort() if it does, so libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/block/block.h"
#include "../../src/qcow2/check.h"

static void discard(void *opaque, const char *line)
{
    (void)opaque;
    (void)line;
}

/* Set FUZZ_VERBOSE=1 to see the findings of each step (replaying). */
static void print(void *opaque, const char *line)
{
    fprintf(stderr, "%s: %s\n", (const char *)opaque, line);
}

static void finding(const char *what, const struct qcow2_check_result *r)
{
    fprintf(stderr, "fuzz_repair: %s: %llu corruptions, %llu leaks, %llu check errors\n",
            what, (unsigned long long)r->corruptions, (unsigned long long)r->leaks,
            (unsigned long long)r->check_errors);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool verbose = getenv("FUZZ_VERBOSE") != NULL;
    struct qcow2_check_opts o = { .fix = QCOW2_FIX_ALL, .report = verbose ? print : discard,
                                  .opaque = "repair" };
    struct qcow2_check_result r, again;
    char path[64];
    struct blk *b;
    int fd = memfd_create("fuzz", 0), ret;
    bool repaired = false;

    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (blk_open(&b, path, NULL, BLK_RDWR | BLK_CHECK | BLK_NO_BACKING | BLK_NOLOCK) < 0)
        goto out;
    if (b->drv != &blk_qcow2_driver) {
        blk_close(b);
        goto out;
    }
    ret = qcow2_check(b->priv, &o, &r);
    if (ret == 0 && !r.check_errors) {
        repaired = true;
        if (r.leaks_fixed || r.corruptions_fixed) {
            o.fix = 0;
            o.opaque = "double check";
            ret = qcow2_check(b->priv, &o, &again);
            if (ret < 0 || again.check_errors)
                repaired = false;
            else
                r = again;
        }
    }
    if (blk_close(b) < 0)
        repaired = false;
    if (!repaired)
        goto out;
    /* The repair said it finished: what it left must hold on disk too. */
    o.fix = 0;
    o.opaque = "check after reopen";
    ret = blk_open(&b, path, NULL, BLK_CHECK | BLK_NO_BACKING | BLK_NOLOCK);
    if (ret < 0) {
        fprintf(stderr, "fuzz_repair: repaired image does not open: %s\n", err_msg(ret));
        abort();
    }
    ret = qcow2_check(b->priv, &o, &again);
    blk_close(b);
    if (ret < 0 || again.corruptions || again.leaks || again.check_errors)
        finding("check after repair", &again);
    if (r.corruptions || r.leaks)
        finding("repair left", &r);
out:
    err_clear();
    close(fd);
    return 0;
}

#include "fuzz_main.h"
