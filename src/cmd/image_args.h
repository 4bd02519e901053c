/*
 * image_args.h - what the commands share for naming an image as qemu-img
 * does: --object secret,... (in command-line order), --image-opts, -f, and
 * the open that uses them (resize, measure, dd, check, snapshot, amend,
 * map, compare, rebase, commit, bitmap).
 *
 * Owns: the secret store of one command run. Must not: touch image bytes.
 */
#ifndef QIMG_CMD_IMAGE_ARGS_H
#define QIMG_CMD_IMAGE_ARGS_H

#include <stdbool.h>

#include "../block/block.h"
#include "../util/secret.h"

struct image_args {
    struct secret_store secrets;
    int image_opts;             /* --image-opts (a popt flag) */
};

/*
 * One --object ARG for any command: "help" prints the object types (returns
 * 1); else the secret is added to s, or qemu-img's error printed (-1).
 * Takes ARG (popt's copy): it is wiped, since it may hold data=PASSPHRASE,
 * and freed.
 */
int cmd_secret_object(struct secret_store *s, const char *arg);
/* cmd_secret_object into a's store. */
int image_args_object(struct image_args *a, const char *arg);
/*
 * -1 after qemu-img's error when --image-opts and -f were both given; for
 * a command that must say so before its own checks (image_args_open does
 * it too).
 */
int image_args_check(const struct image_args *a, const char *fmt);
/*
 * Open name (a file name, or with --image-opts an option string) as fmt
 * (NULL: probe) with flags; prints qemu-img's error and returns -1 on
 * failure. *probed_raw (may be NULL) says the format was guessed as raw.
 * Messages name the image by name; (*b)->filename is the file itself, for
 * what needs a path (backing files relative to it, the check afterwards).
 * A key secret given is always checked (a wrong passphrase fails, as in
 * qemu-img); without BLK_NEED_KEY an encrypted image opens without one.
 */
int image_args_open(struct image_args *a, struct blk **b, const char *name, const char *fmt,
                    int flags, bool *probed_raw);
void image_args_free(struct image_args *a);

#endif
