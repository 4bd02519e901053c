/*
 * image_args.c - --object, --image-opts and the open of an image named by
 * either, shared by the commands that take them (see image_args.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cmd.h"
#include "image_args.h"

int cmd_secret_object(struct secret_store *s, const char *arg)
{
    const char *text;
    int ret = 0;

    if (secret_object_help(arg, &text))
        fputs(text, stdout), ret = 1;
    else if ((ret = secret_object_add(s, arg)) < 0)
        error("%s", err_msg(ret)), ret = -1;
    OPENSSL_cleanse((char *)arg, strlen(arg));
    free((char *)arg);
    return ret;
}

int image_args_object(struct image_args *a, const char *arg)
{
    return cmd_secret_object(&a->secrets, arg);
}

int image_args_check(const struct image_args *a, const char *fmt)
{
    if (a->image_opts && fmt) {
        error("--image-opts and --format are mutually exclusive");
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
    if (image_args_check(a, fmt))
        return -1;
    if (a->image_opts) {
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
        cmd_open_error_as(name, file, ret);
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
