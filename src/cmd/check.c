/*
 * check.c - `qimg check`: check an image's consistency, and repair it with
 * -r leaks|all; also the runner `qimg repair` uses. Parse, validate, open
 * (read-only unless repairing), check, double-check after a repair, print
 * as qemu-img 7.2 does (human or JSON), close.
 *
 * Owns: the output of check and repair. Must not: look inside the image
 * (the engine's qcow2_check does), or write without -r.
 */
#include <stdlib.h>
#include <string.h>

#include "../block/block.h"
#include "../qcow2/check.h"
#include "check_run.h"
#include "cmd.h"
#include "image_args.h"

/*
 * One progress line for the whole command. A repair is followed by a
 * second check, which costs about what the first pass did: the first pass
 * fills the first half of the line, and the second the rest.
 */
struct bar {
    struct progress p;
    uint64_t base;              /* bytes of the passes before this one */
    uint64_t last;              /* the total of this pass, so far */
    bool halve;                 /* a second check will follow */
};

/* The checker counts bytes of metadata; util's progress line draws them. */
static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct bar *b = opaque;

    b->last = total;
    progress_update(&b->p, b->base + done, b->base + total * (b->halve ? 2 : 1));
}

/* A finding; opaque is the progress line, which it takes the place of. */
static void report_line(void *opaque, const char *line)
{
    if (opaque)
        progress_clear(&((struct bar *)opaque)->p);
    fputs(line, stderr);
    fputc('\n', stderr);
}

/* One pass of the checker, drawing the progress line when it is on. */
static int run_checker(struct qcow2 *q, const struct qcow2_check_opts *o,
                       struct qcow2_check_result *r, struct bar *b)
{
    struct qcow2_check_opts po = *o;
    int ret;

    if (b->p.on) {
        po.progress = show_progress;
        po.progress_opaque = b;
        po.opaque = b;
    }
    b->last = 0;
    ret = qcow2_check(q, &po, r);
    fflush(stderr);     /* the findings, before anything on stdout */
    b->base += b->last;
    b->halve = false;
    return ret;
}

static void print_human(const struct qcow2_check_result *r, bool quiet)
{
    if (quiet)
        return;
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%llu errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   (unsigned long long)r->corruptions);
        if (r->leaks)
            printf("\n%llu leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   (unsigned long long)r->leaks);
        if (r->check_errors)
            printf("\n%llu internal errors have occurred during the check.\n",
                   (unsigned long long)r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters, (unsigned long long)r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

/* qemu-img's key order (its dictionary's), zero counters left out. */
static void print_json(const struct qcow2_check_result *r, const char *file, bool quiet)
{
    struct json j;

    if (quiet)
        return;
    json_init(&j, stdout);
    json_begin_object(&j, NULL);
    if (r->image_end_offset)
        json_uint(&j, "image-end-offset", r->image_end_offset);
    if (r->compressed_clusters)
        json_uint(&j, "compressed-clusters", r->compressed_clusters);
    if (r->total_clusters)
        json_uint(&j, "total-clusters", r->total_clusters);
    if (r->corruptions)
        json_uint(&j, "corruptions", r->corruptions);
    if (r->corruptions_fixed)
        json_uint(&j, "corruptions-fixed", r->corruptions_fixed);
    json_uint(&j, "check-errors", r->check_errors);
    if (r->leaks)
        json_uint(&j, "leaks", r->leaks);
    if (r->leaks_fixed)
        json_uint(&j, "leaks-fixed", r->leaks_fixed);
    if (r->allocated_clusters)
        json_uint(&j, "allocated-clusters", r->allocated_clusters);
    json_str(&j, "filename", file);
    json_str(&j, "format", "qcow2");
    if (r->fragmented_clusters)
        json_uint(&j, "fragmented-clusters", r->fragmented_clusters);
    json_end_object(&j);
    json_finish(&j);
}

int check_run(const struct check_args *a)
{
    struct qcow2_check_opts o = { .fix = a->fix, .dry_run = a->dry_run, .deep = a->deep,
                                  .report = report_line };
    struct qcow2_check_result r, again;
    struct bar bar = { .base = 0 };
    bool writes = a->fix && !a->dry_run, repaired;
    struct image_args none = { 0 }, *ia = a->ia ? a->ia : &none;
    struct blk *b;
    int flags = BLK_CHECK | BLK_NO_BACKING, ret, rc;

    if (image_args_check(ia, a->fmt))
        return 1;
    if (a->force_share && writes)
        return error("Could not open '%s': force-share=on can only be used with "
                     "read-only images", a->file);
    if (writes)
        flags |= BLK_RDWR;
    if (a->force_share)
        flags |= BLK_NOLOCK;
    /* Metadata only: an encrypted image is checked without its key, but a
     * key given must unlock it (as in qemu-img). */
    if (image_args_open(ia, &b, a->file, a->fmt, flags, NULL) < 0)
        return 1;
    if (b->drv != &blk_qcow2_driver) {
        blk_close(b);
        error("This image format does not support checks");
        return 63;
    }

    /* Findings can be millions of lines: buffer them, flush before the summary. */
    setvbuf(stderr, NULL, _IOFBF, 1 << 16);
    progress_init(&bar.p, a->progress && !a->quiet);
    bar.halve = writes;
    ret = run_checker(b->priv, &o, &r, &bar);
    repaired = ret == 0 && writes && (r.leaks_fixed || r.corruptions_fixed) && !r.check_errors;
    if (repaired) {
        /* As qemu-img: say what was repaired, then check again. */
        progress_clear(&bar.p);
        if (!a->json && !a->quiet) {
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %llu leaked clusters\n    %llu corruptions\n\n"
                   "Double checking the fixed image now...\n",
                   (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
            fflush(stdout);
        }
        o.fix = 0;
        ret = run_checker(b->priv, &o, &again, &bar);
        again.leaks_fixed = r.leaks_fixed;
        again.corruptions_fixed = r.corruptions_fixed;
        r = again;
    }
    progress_end(&bar.p);
    if (!repaired && ret == 0 && a->dry_run && (r.leaks_fixable || r.corruptions_fixable) &&
        !a->json && !a->quiet) {
        printf("The following inconsistencies would be repaired (dry run, nothing was "
               "written):\n\n    %llu leaked clusters\n    %llu corruptions\n",
               (unsigned long long)r.leaks_fixable, (unsigned long long)r.corruptions_fixable);
    }
    if (ret == 0) {
        if (a->json)
            print_json(&r, a->file, a->quiet);
        else
            print_human(&r, a->quiet);
    }
    if (!writes && ret == 0 && (r.corruptions || r.leaks) && !a->quiet && !a->json &&
        (((struct qcow2 *)b->priv)->meta.h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        /* qemu-img says nothing, and the findings look like damage. */
        fflush(stdout);
        fprintf(stderr, "Note: '%s' is marked dirty (it was not closed cleanly, and its "
                "refcounts may lag behind): run '%s repair %s' to bring them up to date.\n",
                a->file, qimg_progname, b->filename);
        fflush(stderr);
    }
    rc = blk_close(b);
    if (ret < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "%s", err_msg(ret));
        return error("Check failed: %s", msg);
    }
    if (rc < 0)
        return error("Could not close '%s': %s", a->file, err_msg(rc));
    if (r.check_errors)
        return error("Check failed");
    if (r.corruptions)
        return 2;
    return r.leaks ? 3 : 0;
}

enum {
    OPT_QUIET = 1, OPT_FORMAT, OPT_OUTPUT, OPT_REPAIR, OPT_DEEP, OPT_SHARE, OPT_PROGRESS,
    OPT_OBJECT, OPT_IMAGE_OPTS,
};

static int on_opt(int val, const char *arg, void *ctx)
{
    struct check_args *a = ctx;

    switch (val) {
    case OPT_QUIET: a->quiet = true; break;
    case OPT_FORMAT:
        free((char *)a->fmt);
        a->fmt = arg;
        break;
    case OPT_OUTPUT: {
        int j = cmd_output_format(arg);
        if (j < 0)
            return -1;
        a->json = j;
        break;
    }
    case OPT_REPAIR:
        if (!strcmp(arg, "leaks")) {
            a->fix = QCOW2_FIX_LEAKS;
        } else if (!strcmp(arg, "all")) {
            a->fix = QCOW2_FIX_ALL;
        } else {
            error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", arg);
            return -1;
        }
        break;
    case OPT_DEEP: a->deep = true; break;
    case OPT_SHARE: a->force_share = true; break;
    case OPT_PROGRESS: a->progress = true; break;
    case OPT_OBJECT: return image_args_object(a->ia, arg);
    case OPT_IMAGE_OPTS: a->ia->image_opts = 1; break;
    }
    return 0;
}

int cmd_check(int argc, const char **argv)
{
    struct image_args ia = { 0 };
    struct check_args a = { .ia = &ia };
    const struct poptOption opts[] = {
        { "quiet", 'q', POPT_ARG_NONE, NULL, OPT_QUIET, "print nothing but errors", NULL },
        { "format", 'f', POPT_ARG_STRING, NULL, OPT_FORMAT,
          "image format (guessed from the file when left out)", "fmt" },
        { "output", 0, POPT_ARG_STRING, NULL, OPT_OUTPUT, "output format", "human|json" },
        { "repair", 'r', POPT_ARG_STRING, NULL, OPT_REPAIR,
          "repair leaked clusters, or all inconsistencies", "leaks|all" },
        { "deep", 0, POPT_ARG_NONE, NULL, OPT_DEEP,
          "also read every data cluster and decompress every compressed one", NULL },
        { "force-share", 'U', POPT_ARG_NONE, NULL, OPT_SHARE,
          "open the image even if another process holds it (read-only)", NULL },
        { "progress", 'p', POPT_ARG_NONE, NULL, OPT_PROGRESS,
          "show a progress bar on stderr (when it is a terminal)", NULL },
        { "object", 0, POPT_ARG_STRING, NULL, OPT_OBJECT,
          "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
        { "image-opts", 0, POPT_ARG_NONE, NULL, OPT_IMAGE_OPTS,
          "FILE is an option string (driver=...,file.filename=...)", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    const struct cmd_spec spec = {
        .name = "check",
        .synopsis = "[-q] [-f fmt] [--output=human|json] [-r leaks|all] [--deep] FILE",
        .summary = "Check a qcow2 image for consistency; repair it with -r. Exit status: "
                   "0 consistent, 1 check not completed, 2 corruptions, 3 only leaks, "
                   "63 the format has no checks.",
        .opts = opts, .on_opt = on_opt, .ctx = &a, .min_args = 0, .max_args = -1,
    };
    poptContext pc;
    const char **args;
    int nargs, ret;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret) {
        ret = ret > 0 ? 0 : 1;
    } else if (nargs != 1) {
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s check --help' for more information.\n", qimg_progname);
        ret = 1;
    } else {
        a.file = args[0];
        ret = check_run(&a);
    }
    cmd_done(pc);
    image_args_free(&ia);
    free((char *)a.fmt);
    return ret;
}
