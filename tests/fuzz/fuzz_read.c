/*
 * fuzz_read.c - libFuzzer target: the input is an image file. Open it
 * through the block layer (format probed, backing files not followed) and
 * read every byte of the guest disk. Nothing may crash, read out of
 * bounds or allocate without bound, whatever the bytes say.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../src/block/block.h"

#define READ_CAP (64ULL << 20)   /* read at most this much of the guest disk */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    struct blk *b;
    uint8_t *buf;
    int fd = memfd_create("fuzz", 0);

    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (blk_open(&b, path, NULL, BLK_NO_BACKING | BLK_NOLOCK) == 0) {
        uint64_t end = b->size < READ_CAP ? b->size : READ_CAP;
        buf = malloc(1 << 20);
        for (uint64_t off = 0; buf && off < end; off += 1 << 20) {
            size_t n = end - off < (1 << 20) ? (size_t)(end - off) : (1 << 20);
            if (blk_read(b, off, buf, n) < 0)
                break;
        }
        free(buf);
        blk_close(b);
    }
    err_clear();
    close(fd);
    return 0;
}

#include "fuzz_main.h"
