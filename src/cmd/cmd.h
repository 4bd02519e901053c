/*
 * cmd.h - what every subcommand shares: its entry point, option parsing
 * with popt, and help generated from the popt table (so it cannot drift).
 *
 * Adding a new subcommand:
 *  1. src/cmd/NAME.c with `int cmd_NAME(int argc, const char **argv)`,
 *     following parse, validate, open, act, flush, close.
 *  2. Declare it below and add a row to commands[] in src/main.c.
 *  3. Its popt table ends with QIMG_POPT_HELP and POPT_TABLEEND; parse with
 *     cmd_parse(); every option has a one-line description.
 *  4. man/qimg-NAME.1 whose SYNOPSIS matches the command's synopsis string,
 *     the completions (they ask `qimg NAME --help`), README, tests/NAME.bats.
 */
#ifndef QIMG_CMD_H
#define QIMG_CMD_H

#include <popt.h>

#include "../util/util.h"

struct qimg_cmd {
    const char *name;
    int (*fn)(int argc, const char **argv);
    const char *summary;
};

extern const struct qimg_cmd qimg_commands[];

int cmd_create(int argc, const char **argv);
int cmd_info(int argc, const char **argv);
int cmd_check(int argc, const char **argv);
int cmd_repair(int argc, const char **argv);
int cmd_snapshot(int argc, const char **argv);
int cmd_convert(int argc, const char **argv);
int cmd_amend(int argc, const char **argv);
int cmd_bitmap(int argc, const char **argv);
int cmd_map(int argc, const char **argv);
int cmd_compare(int argc, const char **argv);
int cmd_rebase(int argc, const char **argv);
int cmd_commit(int argc, const char **argv);
int cmd_resize(int argc, const char **argv);
int cmd_measure(int argc, const char **argv);
int cmd_dd(int argc, const char **argv);

/* The --help row every table ends with (before POPT_TABLEEND). */
#define QIMG_OPT_HELP 0x7fff0001
#define QIMG_POPT_HELP \
    { "help", 'h', POPT_ARG_NONE, NULL, QIMG_OPT_HELP, "show this help and exit", NULL }

struct cmd_spec {
    const char *name;           /* "create" */
    const char *synopsis;       /* "[-q] [-f fmt] ... FILE [SIZE]" */
    const char *summary;        /* one line */
    const struct poptOption *opts;
    /*
     * Called for options whose val is not 0 and not QIMG_OPT_HELP: returns
     * 0 to go on, -1 after printing an error, 1 when the option did all the
     * command has to do (--object help printed its list): parsing stops and
     * cmd_parse returns 1, as after --help.
     */
    int (*on_opt)(int val, const char *arg, void *ctx);
    void *ctx;
    int min_args, max_args;     /* positional arguments; max -1 = any */
};

/*
 * Parse argv (argv[0] is the command name). Returns 0 with the positional
 * arguments in *args / *nargs (freed with the context by cmd_done), 1 when
 * --help was printed or on_opt returned 1 (the command returns 0), or -1
 * after printing an error (the command returns 1).
 */
int cmd_parse(const struct cmd_spec *spec, int argc, const char **argv,
              poptContext *pc, const char ***args, int *nargs);
void cmd_done(poptContext pc);
void cmd_print_help(const struct cmd_spec *spec, FILE *f);

/* Open-error text as qemu-img prints it: "Could not open 'F': why". */
int cmd_open_error(const char *file, int code);
/*
 * The same for an image named by name (an --image-opts string) whose file
 * is file: name where qemu-img shows what was asked for, file where it
 * shows the file (the system call's own error, the repair hint).
 */
int cmd_open_error_as(const char *name, const char *file, int code);
/*
 * Run the shared refcount checker over a qcow2 image a command has just
 * written (and closed): 0 when it checks clean, else 1 after saying what
 * is wrong and what to run. Raw images pass.
 */
int cmd_verify_image(const char *file);
/* Parse --output=human|json. Returns 0 human, 1 json, -1 after an error. */
int cmd_output_format(const char *s);

#endif
