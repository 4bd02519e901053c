/*
 * bitmap_copy.h - convert --bitmaps: the checks before the copy and the
 * copy of the persistent bitmaps after it (in src/cmd/bitmap.c).
 *
 * Owns: these two declarations. Must not: be included but by convert.c.
 */
#ifndef QIMG_BITMAP_COPY_H
#define QIMG_BITMAP_COPY_H

#include <stdbool.h>

struct blk;

/*
 * Before anything is created: one input, a qcow2 input and output, and no
 * inconsistent bitmap unless skip_broken (then each is warned about).
 * 0, or 1 after printing qemu-img's message.
 */
int cmd_bitmaps_convert_check(struct blk *const *in, int nin, const char *out_fmt,
                              bool skip_broken);
/* After the data: copy in's bitmaps (not the inconsistent ones) into the
 * qcow2 image out, closed by then. 0, or 1 after printing why not. */
int cmd_bitmaps_convert_copy(struct blk *in, const char *out);

#endif
