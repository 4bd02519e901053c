/*
 * repair.c - `qimg repair`: `qimg check -r all` under its own name, with
 * --leaks-only (-r leaks) and --dry-run (decide every repair, write
 * nothing). The work is check.c's runner.
 *
 * Owns: repair's options only.
 */
#include "../qcow2/check.h"
#include "check_run.h"
#include "cmd.h"

enum { OPT_QUIET = 1, OPT_FORMAT, OPT_OUTPUT, OPT_LEAKS, OPT_DRY, OPT_PROGRESS };

static int on_opt(int val, const char *arg, void *ctx)
{
    struct check_args *a = ctx;

    switch (val) {
    case OPT_QUIET: a->quiet = true; break;
    case OPT_FORMAT: a->fmt = arg; break;
    case OPT_OUTPUT: {
        int j = cmd_output_format(arg);
        if (j < 0)
            return -1;
        a->json = j;
        break;
    }
    case OPT_LEAKS: a->fix = QCOW2_FIX_LEAKS; break;
    case OPT_DRY: a->dry_run = true; break;
    case OPT_PROGRESS: a->progress = true; break;
    }
    return 0;
}

int cmd_repair(int argc, const char **argv)
{
    struct check_args a = { .fix = QCOW2_FIX_ALL };
    const struct poptOption opts[] = {
        { "quiet", 'q', POPT_ARG_NONE, NULL, OPT_QUIET, "print nothing but errors", NULL },
        { "format", 'f', POPT_ARG_STRING, NULL, OPT_FORMAT,
          "image format (guessed from the file when left out)", "fmt" },
        { "output", 0, POPT_ARG_STRING, NULL, OPT_OUTPUT, "output format", "human|json" },
        { "leaks-only", 0, POPT_ARG_NONE, NULL, OPT_LEAKS,
          "repair only leaked clusters (check -r leaks)", NULL },
        { "dry-run", 0, POPT_ARG_NONE, NULL, OPT_DRY,
          "report what would be repaired, write nothing", NULL },
        { "progress", 'p', POPT_ARG_NONE, NULL, OPT_PROGRESS,
          "show a progress bar on stderr (when it is a terminal)", NULL },
        QIMG_POPT_HELP,
        POPT_TABLEEND
    };
    const struct cmd_spec spec = {
        .name = "repair",
        .synopsis = "[-q] [-f fmt] [--output=human|json] [--leaks-only] [--dry-run] FILE",
        .summary = "Repair a qcow2 image (check -r all), then check it again. Guest data "
                   "still reachable is kept; what cannot be saved is named by guest offset.",
        .opts = opts, .on_opt = on_opt, .ctx = &a, .min_args = 0, .max_args = -1,
    };
    poptContext pc;
    const char **args;
    int nargs, ret;

    ret = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (ret)
        return ret > 0 ? 0 : 1;
    if (nargs != 1) {
        cmd_done(pc);
        error("Expecting one image file name");
        fprintf(stderr, "Try '%s repair --help' for more information.\n", qimg_progname);
        return 1;
    }
    a.file = args[0];
    ret = check_run(&a);
    cmd_done(pc);
    return ret;
}
