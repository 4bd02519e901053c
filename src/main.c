/*
 * main.c - global options, the table of subcommands, dispatch, and the
 * final check that standard output really reached its destination.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"

const struct qimg_cmd qimg_commands[] = {
    { "amend", cmd_amend, "change the format-specific options of an image in place" },
    { "bitmap", cmd_bitmap, "add, remove, clear, enable, disable, merge or list persistent bitmaps" },
    { "check", cmd_check, "check an image for consistency (and repair it with -r)" },
    { "commit", cmd_commit, "write an overlay's data into its backing file" },
    { "compare", cmd_compare, "check whether two images have the same content" },
    { "convert", cmd_convert, "convert images between formats, or copy them" },
    { "create", cmd_create, "create a new disk image" },
    { "dd", cmd_dd, "copy part of an image into a new image, as dd does" },
    { "info", cmd_info, "show information about an image" },
    { "map", cmd_map, "show where the data of an image lives, through its backing chain" },
    { "measure", cmd_measure, "compute the size a new image needs for some data" },
    { "rebase", cmd_rebase, "change the backing file of an image" },
    { "repair", cmd_repair, "repair an image (check -r all, with a dry run)" },
    { "resize", cmd_resize, "change the virtual size of an image" },
    { "snapshot", cmd_snapshot, "list, create, apply and delete internal snapshots" },
    { NULL, NULL, NULL },
};

static const struct qimg_cmd *find_cmd(const char *name)
{
    for (const struct qimg_cmd *c = qimg_commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: %s [--help | --version] COMMAND [command options]\n"
               "qimg disk image utility, qemu-img compatible\n\n"
               "Commands:\n", qimg_progname);
    for (const struct qimg_cmd *c = qimg_commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\n'%s help COMMAND' or '%s COMMAND --help' shows a command's options.\n",
            qimg_progname, qimg_progname);
}

/* A failed write to stdout (a full disk, a closed pipe) is a failed run. */
static int finish_stdout(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
        error("write error on standard output: %s", strerror(errno));
        return rc ? rc : 1;
    }
    return rc;
}

static int run(int argc, const char **argv)
{
    const struct qimg_cmd *c;

    if (argc < 2) {
        error("Not enough arguments");
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        return 1;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("%s version %s\n", qimg_progname, QIMG_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "help")) {
        const char *hargv[] = { NULL, "--help", NULL };
        if (argc < 3) {
            usage(stdout);
            return 0;
        }
        c = find_cmd(argv[2]);
        if (!c)
            return error("Command not found: %s", argv[2]);
        hargv[0] = c->name;
        return c->fn(2, hargv);
    }
    if (argv[1][0] == '-') {
        error("unrecognized option '%s'", argv[1]);
        fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
        return 1;
    }
    c = find_cmd(argv[1]);
    if (!c)
        return error("Command not found: %s", argv[1]);
    return c->fn(argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    const char *slash = argv[0] ? strrchr(argv[0], '/') : NULL;

    if (argv[0])
        qimg_progname = slash ? slash + 1 : argv[0];
    return finish_stdout(run(argc, (const char **)argv));
}
