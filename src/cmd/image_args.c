/*
 * image_args.c - --object, --image-opts and the open of one input image,
 * shared by resize, measure and dd (see image_args.h).
 */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "image_args.h"

int image_args_object(struct image_args *a, const char *arg)
{
    const char *text;
    int ret;

    if (secret_object_help(arg, &text)) {
        fputs(text, stdout);
        return 1;
    }
    ret = secret_object_add(&a->secrets, arg);
    if (ret < 0) {
        error("%s", err_msg(ret));
        return -1;
    }
    return 0;
}

int image_args_open(struct image_args *a, struct blk **b, const char *name, const char *fmt,
                    int flags, bool *probed_raw)
{
    struct imageopts io = { 0 };
    struct blk_key key = { &a->secrets, NULL, NULL };
    const char *file = name;
    int ret;

    *b = NULL;
    if (probed_raw)
        *probed_raw = false;
    if (a->image_opts) {
        if (fmt) {
            error("--image-opts and --format are mutually exclusive");
            return -1;
        }
        ret = imageopts_parse(name, &io);
        if (ret < 0) {
            error("Could not open '%s': %s", name, err_msg(ret));
            return -1;
        }
        file = io.filename;
        fmt = io.driver;
        key.key_secret = io.key_secret;
        key.format = io.encrypt_format;
    }
    ret = blk_open_key(b, file, fmt, flags, &key);
    if (ret < 0) {
        cmd_open_error(a->image_opts ? name : file, ret);
        imageopts_free(&io);
        *b = NULL;
        return -1;
    }
    if (probed_raw && !fmt && (*b)->drv == &blk_raw_driver)
        *probed_raw = true;
    imageopts_free(&io);
    return 0;
}

void image_args_free(struct image_args *a)
{
    secret_store_free(&a->secrets);
}
