/*
 * fuzz_check.c - libFuzzer target: the input is an image file. Open it
 * read-only for checking, as `qimg check` does (backing files not
 * followed, lock not taken), and run the checker with its findings
 * discarded. Nothing may crash, read out of bounds, loop without end or
 * allocate without bound, whatever the bytes say.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_check_opts o = { .report = discard };
    struct qcow2_check_result r;
    char path[64];
    struct blk *b;
    int fd = memfd_create("fuzz", 0);

    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (blk_open(&b, path, NULL, BLK_CHECK | BLK_NO_BACKING | BLK_NOLOCK) == 0) {
        if (b->drv == &blk_qcow2_driver) {
            qcow2_check(b->priv, &o, &r);
            /* --deep too: every data cluster read and decompressed. */
            o.deep = true;
            qcow2_check(b->priv, &o, &r);
        }
        blk_close(b);
    }
    err_clear();
    close(fd);
    return 0;
}

#include "fuzz_main.h"
