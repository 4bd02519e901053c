/*
 * engine_io.c - a tiny qemu-io for qimg's engine, so tests can drive the
 * qcow2 write path with exactly the requests they give qemu-io and compare
 * the results. Built by the tests themselves from the objects in build/.
 *
 *   engine_io [-f fmt] IMAGE -c 'write -P 0xNN OFF LEN' -c 'write -z OFF LEN'
 *             -c 'write -c -P 0xNN OFF LEN' ...
 *
 * OFF and LEN take qemu's size suffixes. Exit status 0 when every request
 * succeeded; the first failure is printed and ends the run (status 1).
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/block/block.h"
#include "../../src/util/util.h"

static int run(struct blk *b, const char *cmd)
{
    char op[16], a[32], p[32], o[32], l[32];
    uint64_t off, len;
    unsigned pat = 0;
    bool zero = false, comp = false;
    uint8_t *buf;
    int n, ret;

    n = sscanf(cmd, "%15s %31s %31s %31s %31s", op, a, p, o, l);
    if (n < 4 || strcmp(op, "write"))
        return error("bad request '%s'", cmd);
    if (!strcmp(a, "-z") && n == 4) {
        zero = true;
        strcpy(l, o);
        strcpy(o, p);
    } else if (!strcmp(a, "-P") && n == 5) {
        pat = (unsigned)strtoul(p, NULL, 0);
    } else if (!strcmp(a, "-c") && n == 5 && !strcmp(p, "-P")) {
        comp = true;
        if (sscanf(cmd, "%*s %*s %*s %31s %31s %31s", p, o, l) != 3)
            return error("bad request '%s'", cmd);
        pat = (unsigned)strtoul(p, NULL, 0);
    } else {
        return error("bad request '%s'", cmd);
    }
    if (parse_size(o, &off) < 0 || parse_size(l, &len) < 0)
        return error("bad offset or length in '%s'", cmd);
    if (zero) {
        ret = blk_write_zeroes(b, off, len);
    } else {
        buf = malloc(len ? len : 1);
        if (!buf)
            return error("out of memory");
        memset(buf, (int)pat, len);
        if (comp)
            ret = b->drv->write_compressed ? b->drv->write_compressed(b, off, buf, len)
                                           : -ENOTSUP;
        else
            ret = blk_write(b, off, buf, len);
        free(buf);
    }
    if (ret < 0)
        return error("'%s' failed: %s", cmd, err_msg(ret));
    return 0;
}

int main(int argc, char **argv)
{
    const char *fmt = NULL;
    struct blk *b;
    int i = 1, ret, rc = 0;

    qimg_progname = "engine_io";
    if (argc > 2 && !strcmp(argv[1], "-f")) {
        fmt = argv[2];
        i = 3;
    }
    if (i >= argc)
        return error("usage: engine_io [-f fmt] IMAGE -c REQUEST...");
    ret = blk_open(&b, argv[i], fmt, BLK_RDWR);
    if (ret < 0)
        return error("could not open '%s': %s", argv[i], err_msg(ret));
    for (i++; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "-c") || i + 1 >= argc) {
            rc = error("expected -c REQUEST");
            break;
        }
        rc = run(b, argv[++i]);
    }
    ret = blk_close(b);
    if (ret < 0 && !rc)
        rc = error("close failed: %s", err_msg(ret));
    return rc;
}
