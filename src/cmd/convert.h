/*
 * convert.h - what convert.c (the command: options, inputs, creating the
 * output) and convert_copy.c (the copy loop and its worker threads) share.
 *
 * Owns: struct convert. Must not: be included by anything but those two.
 */
#ifndef QIMG_CONVERT_H
#define QIMG_CONVERT_H

#include "../block/block.h"
#include "../qcow2/datapath.h"
#include "../util/pool.h"
#include "../util/secret.h"
#include "cmd.h"

#define CHUNK (2u << 20)
#define MAX_THREADS 16

struct convert {
    bool quiet, progress, compress, no_create, force_share, target_zero;
    bool bitmaps, skip_broken_bitmaps;  /* --bitmaps (bitmap_copy.h) */
    bool safe;                  /* -t other than unsafe: fsync the output */
    const char *fmt, *out_fmt, *backing, *backing_fmt, *snapshot;
    char *optstr;
    bool image_opts, target_image_opts;
    struct secret_store secrets;        /* --object secret,... */
    struct imageopts *in_io;            /* per input, with --image-opts */
    struct imageopts out_io;            /* with --target-image-opts */
    const char *out_file;               /* the output's file name */
    uint64_t sparse;
    long threads;

    int nin;
    const char **in_names;
    struct blk **in;
    uint64_t *start;
    uint64_t total;

    const char *out_name;
    struct blk *out;
    struct qcow2 *oq;           /* the output's engine, for -c */
    bool created, zero_init;
    struct blk *cmp;            /* -B: the output's backing file */
    uint64_t g, chunk, piece;   /* granule, chunk and parallel-read sizes */
    struct progress prog;

    struct pool *pool;
    int nthreads;
    struct blk ***rin;          /* per worker: its own handles on the inputs */
    struct qcow2_zctx **zc;     /* per worker: its compressor */
};

/* convert.c: open input i (its name, format and key) for reading. */
int open_input(struct convert *c, int i, struct blk **b);
/* convert.c: -l, on one handle of the (single) input. */
int load_snapshot(struct convert *c, struct blk *b);
/* convert_copy.c: the worker threads (and their handles), then the copy. */
int start_workers(struct convert *c);
void stop_workers(struct convert *c);
int copy(struct convert *c);

#endif
