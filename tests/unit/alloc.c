/*
 * alloc.c - unit test driver for refcount.c: opens a qcow2 image read-write
 * and allocates clusters in the ways the engine does, so a Bats test can
 * compare the result with `qemu-img check` (every allocated cluster must
 * show up as exactly one leak, and nothing may be corrupt).
 *
 * usage: alloc IMAGE clusters N     allocate N clusters one at a time
 *        alloc IMAGE runs N LEN     allocate N runs of LEN clusters
 *        alloc IMAGE bytes N LEN    allocate N compressed-style byte ranges
 *        alloc IMAGE free OFF LEN   free a range allocated before
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/qcow2/qcow2.h"

int main(int argc, char **argv)
{
    struct qfile *f;
    struct qcow2 *q;
    int ret;

    if (argc < 4)
        return 2;
    ret = qfile_open(&f, argv[1], QF_RDWR);
    if (ret == 0)
        ret = qcow2_open(&q, f, QCOW2_OPEN_RDWR);
    if (ret < 0) {
        fprintf(stderr, "open: %s\n", err_msg(ret));
        return 1;
    }
    long n = atol(argv[3]);
    long len = argc > 4 ? atol(argv[4]) : 1;
    for (long i = 0; i < n && ret >= 0; i++) {
        int64_t off = 0;
        if (!strcmp(argv[2], "clusters"))
            off = qcow2_alloc_clusters(q, 1);
        else if (!strcmp(argv[2], "runs"))
            off = qcow2_alloc_clusters(q, (uint64_t)len);
        else if (!strcmp(argv[2], "bytes"))
            off = qcow2_alloc_bytes(q, (uint64_t)len);
        else if (!strcmp(argv[2], "free")) {
            off = qcow2_free_clusters(q, (uint64_t)n, (uint64_t)len);
            n = 0;
        }
        if (off < 0)
            ret = (int)off;
    }
    if (ret < 0)
        fprintf(stderr, "alloc: %s\n", err_msg(ret));
    else {
        /* Data would be written there: make the file cover what was allocated. */
        uint64_t size;
        if (qfile_size(q->file, &size) == 0 && size < q->alloc_end * q->cluster_size)
            ret = qfile_truncate(q->file, q->alloc_end * q->cluster_size);
    }
    int r = qcow2_close(q);
    if (r < 0 && ret >= 0) {
        fprintf(stderr, "close: %s\n", err_msg(r));
        ret = r;
    }
    return ret < 0;
}
