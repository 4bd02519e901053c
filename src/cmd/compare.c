/*
 * compare.c - `qimg compare`: do two images (through their backing chains)
 * read the same? Messages and exit codes are qemu-img 7.2's: 0 identical,
 * 1 different, 2 an image cannot be opened (or an --object was refused), 3
 * block status failed, 4 a read failed. With --image-opts both images are
 * option strings, opened with the secrets of --object.
 *
 * Fast on sparse images: the allocation status of both images is asked
 * first, range by range; ranges that read as zeros in both are skipped
 * without a read, a range allocated in one image only is read from that one
 * alone (it must be zeros), and only ranges allocated in both are read
 * twice, in large pieces. A difference is reported at the start of the
 * first 512-byte sector that differs, as qemu-img reports it.
 *
 * Owns: the compare command. Must not: write to either image.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/qcow2.h"
#include "cmd.h"
#include "image_args.h"

#define CMP_BUF (4u << 20)      /* bytes read from each image at a time */
#define SECTOR 512u

enum { ST_EOF = 1 << 8 };       /* the range reaches the end of the image */

struct compare_args {
    char *fmt1, *fmt2;
    bool progress, quiet, strict, force_share;
    bool bad_object;            /* a --object was refused: exit 2, as qemu-img */
    struct image_args ia;       /* --object; --image-opts names both images */
};

/*
 * Status of [off, off+len) through the chain of b, as qemu's
 * block_status_above answers it: the flags of the layer that decides the
 * range; a range no layer allocates reads as zeros (not allocated), and
 * one past the end of a shorter backing file as allocated zeros.
 */
static int chain_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, int *flags)
{
    struct blk *cur = b;
    uint64_t map;
    int fl, ret;

    for (;;) {
        ret = blk_block_status(cur, off, len, pnum, &map, &fl);
        if (ret < 0)
            return ret;
        if (*pnum == 0) {
            if (cur == b)
                return -EIO;
            *pnum = len;
            fl = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
            break;
        }
        len = *pnum;
        if (fl & (BLK_STATUS_DATA | BLK_STATUS_ZERO))
            break;
        if (!cur->backing) {
            fl |= BLK_STATUS_ZERO;
            break;
        }
        cur = cur->backing;
    }
    fl &= ~BLK_STATUS_COMPRESSED;
    /* qemu gives no host offset for encrypted clusters. */
    if (cur->drv == &blk_qcow2_driver && ((const struct qcow2 *)cur->priv)->meta.h.crypt_method)
        fl &= ~BLK_STATUS_OFFSET;
    if (off + *pnum == b->size)
        fl |= ST_EOF;
    *flags = fl;
    return 0;
}

/* First differing 512-byte sector of a and b (n bytes), or n. */
static uint64_t first_difference(const uint8_t *a, const uint8_t *b, uint64_t n)
{
    for (uint64_t i = 0; i < n; i += SECTOR) {
        uint64_t k = MIN(SECTOR, n - i);
        if (memcmp(a + i, b + i, k))
            return i;
    }
    return n;
}

/* First 512-byte sector of buf (n bytes) that is not all zeros, or n. */
static uint64_t first_nonzero(const uint8_t *buf, uint64_t n)
{
    static const uint8_t zero[SECTOR];

    for (uint64_t i = 0; i < n; i += SECTOR)
        if (memcmp(buf + i, zero, MIN(SECTOR, n - i)))
            return i;
    return n;
}

static int read_at(struct blk *b, const char *name, uint64_t off, uint8_t *buf, size_t n)
{
    int ret = blk_read(b, off, buf, n);

    if (ret < 0) {
        error("Error while reading offset %" PRIu64 " of %s: %s", off, name, err_msg(ret));
        return 4;
    }
    return 0;
}

/* [off, off+len) of b must read as zeros: 0 if so, 1 (after saying so), 4. */
static int check_empty(struct blk *b, const char *name, uint64_t off, uint64_t len,
                       uint8_t *buf, bool quiet)
{
    while (len) {
        size_t n = (size_t)MIN(len, CMP_BUF);
        uint64_t i;
        int ret = read_at(b, name, off, buf, n);

        if (ret)
            return ret;
        i = first_nonzero(buf, n);
        if (i < n) {
            if (!quiet)
                printf("Content mismatch at offset %" PRIu64 "!\n", off + i);
            return 1;
        }
        off += n;
        len -= n;
    }
    return 0;
}

/* Both images allocate [off, off+len): read both and compare. */
static int check_same(struct blk *b1, const char *n1, struct blk *b2, const char *n2,
                      uint64_t off, uint64_t len, uint8_t *buf1, uint8_t *buf2, bool quiet)
{
    while (len) {
        size_t n = (size_t)MIN(len, CMP_BUF);
        uint64_t i;
        int ret = read_at(b1, n1, off, buf1, n);

        if (!ret)
            ret = read_at(b2, n2, off, buf2, n);
        if (ret)
            return ret;
        i = first_difference(buf1, buf2, n);
        if (i < n) {
            if (!quiet)
                printf("Content mismatch at offset %" PRIu64 "!\n", off + i);
            return 1;
        }
        off += n;
        len -= n;
    }
    return 0;
}

static int compare(struct blk *b1, const char *n1, struct blk *b2, const char *n2,
                   const struct compare_args *a)
{
    uint64_t size1 = b1->size, size2 = b2->size, total = MIN(size1, size2);
    uint64_t progress_base = MAX(size1, size2), off = 0;
    uint8_t *buf1 = malloc(CMP_BUF), *buf2 = malloc(CMP_BUF);
    struct progress p;
    int ret = 0;

    if (!buf1 || !buf2) {
        free(buf1);
        free(buf2);
        error("%s", strerror(ENOMEM));
        return 4;
    }
    progress_init(&p, a->progress && !a->quiet);
    progress_update(&p, 0, progress_base ? progress_base : 1);
    if (a->strict && size1 != size2) {
        if (!a->quiet)
            printf("Strict mode: Image size mismatch!\n");
        ret = 1;
        goto out;
    }
    while (off < total) {
        uint64_t pnum1, pnum2, chunk;
        int st1, st2;
        bool alloc1, alloc2;

        if (chain_status(b1, off, size1 - off, &pnum1, &st1) < 0) {
            error("Sector allocation test failed for %s", n1);
            ret = 3;
            goto out;
        }
        if (chain_status(b2, off, size2 - off, &pnum2, &st2) < 0) {
            error("Sector allocation test failed for %s", n2);
            ret = 3;
            goto out;
        }
        alloc1 = st1 & BLK_STATUS_ALLOCATED;
        alloc2 = st2 & BLK_STATUS_ALLOCATED;
        chunk = MIN(MIN(pnum1, pnum2), total - off);
        if (a->strict && st1 != st2) {
            if (!a->quiet)
                printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", off);
            ret = 1;
            goto out;
        }
        if ((st1 & BLK_STATUS_ZERO) && (st2 & BLK_STATUS_ZERO))
            ;           /* zeros on both sides: nothing to read */
        else if (alloc1 && alloc2)
            ret = check_same(b1, n1, b2, n2, off, chunk, buf1, buf2, a->quiet);
        else if (alloc1 != alloc2)
            ret = alloc1 ? check_empty(b1, n1, off, chunk, buf1, a->quiet)
                         : check_empty(b2, n2, off, chunk, buf1, a->quiet);
        if (ret)
            goto out;
        off += chunk;
        progress_update(&p, off, progress_base);
    }
    if (size1 != size2) {
        struct blk *over = size1 > size2 ? b1 : b2;
        const char *name = size1 > size2 ? n1 : n2;

        if (!a->quiet)
            printf("Warning: Image size mismatch!\n");
        while (off < progress_base) {
            uint64_t chunk;
            int st;

            if (chain_status(over, off, progress_base - off, &chunk, &st) < 0) {
                error("Sector allocation test failed for %s", name);
                ret = 3;
                goto out;
            }
            if ((st & BLK_STATUS_ALLOCATED) && !(st & BLK_STATUS_ZERO)) {
                ret = check_empty(over, name, off, chunk, buf1, a->quiet);
                if (ret)
                    goto out;
            }
            off += chunk;
            progress_update(&p, off, progress_base);
        }
    }
    if (!a->quiet)
        printf("Images are identical.\n");
out:
    if (ret == 0)
        progress_end(&p);
    free(buf1);
    free(buf2);
    return ret;
}

static int on_opt(int val, const char *arg, void *ctx)
{
    struct compare_args *a = ctx;

    switch (val) {
    case 'f': free(a->fmt1); a->fmt1 = (char *)arg; break;
    case 'F': free(a->fmt2); a->fmt2 = (char *)arg; break;
    case 'p': a->progress = true; break;
    case 'q': a->quiet = true; break;
    case 's': a->strict = true; break;
    case 'U': a->force_share = true; break;
    case 'i': a->ia.image_opts = 1; break;
    case 'O': {
        int ret = image_args_object(&a->ia, arg);
        a->bad_object = ret < 0;
        return ret;
    }
    }
    return 0;
}

static const struct poptOption compare_popt[] = {
    { NULL, 'f', POPT_ARG_STRING, NULL, 'f', "format of FILE1 (guessed when left out)", "fmt" },
    { NULL, 'F', POPT_ARG_STRING, NULL, 'F', "format of FILE2 (guessed when left out)", "fmt" },
    { NULL, 'p', POPT_ARG_NONE, NULL, 'p', "show a progress bar (on a terminal)", NULL },
    { NULL, 'q', POPT_ARG_NONE, NULL, 'q', "quiet: print nothing, answer by the exit code",
      NULL },
    { NULL, 's', POPT_ARG_NONE, NULL, 's',
      "strict: differing sizes or allocation are differences too", NULL },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U',
      "open the images even if another process holds them locked", NULL },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE1 and FILE2 are option strings (driver=...,file.filename=...)", NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

int cmd_compare(int argc, const char **argv)
{
    struct compare_args a = { 0 };
    const struct cmd_spec spec = {
        .name = "compare",
        .synopsis = "[--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] "
                    "FILE1 FILE2",
        .summary = "Check whether FILE1 and FILE2 have the same guest content (read-only).",
        .opts = compare_popt,
        .on_opt = on_opt,
        .ctx = &a,
        .min_args = 0,
        .max_args = -1,
    };
    struct blk *b1 = NULL, *b2 = NULL;
    int flags, nargs, rc;
    poptContext pc;
    const char **args;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        rc = rc < 0 ? (a.bad_object ? 2 : 1) : 0;
        goto out;
    }
    rc = 1;
    if (nargs != 2) {
        error("Expecting two image file names");
        fprintf(stderr, "Try '%s compare --help' for more information.\n", qimg_progname);
        goto out;
    }
    /* Both read guest data: an encrypted image needs its key now. */
    flags = BLK_NEED_KEY | (a.force_share ? BLK_NOLOCK : 0);
    rc = 2;
    if (image_args_open(&a.ia, &b1, args[0], a.fmt1, flags, NULL) < 0 ||
        image_args_open(&a.ia, &b2, args[1], a.fmt2, flags, NULL) < 0)
        goto out;
    rc = compare(b1, args[0], b2, args[1], &a);
out:
    blk_close(b1);
    blk_close(b2);
    free(a.fmt1);
    free(a.fmt2);
    image_args_free(&a.ia);
    cmd_done(pc);
    return rc;
}
