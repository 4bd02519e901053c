/*
 * common.c - option parsing and help for every subcommand, from the popt
 * tables, plus the few messages all commands share.
 */
#include <stdlib.h>
#include <string.h>

#include "../qcow2/check.h"
#include "cmd.h"

void cmd_print_help(const struct cmd_spec *spec, FILE *f)
{
    fprintf(f, "usage: %s %s %s\n\n%s\n\nOptions:\n", qimg_progname, spec->name,
            spec->synopsis, spec->summary);
    for (const struct poptOption *o = spec->opts; o->longName || o->shortName; o++) {
        char left[64];
        int n = 0;

        if (!o->descrip)
            continue;
        if (o->shortName)
            n += snprintf(left + n, sizeof(left) - (size_t)n, "-%c", o->shortName);
        if (o->longName)
            n += snprintf(left + n, sizeof(left) - (size_t)n, "%s--%s",
                          o->shortName ? ", " : "    ", o->longName);
        if (o->argDescrip && n < (int)sizeof(left))
            snprintf(left + n, sizeof(left) - (size_t)n, "%s%s",
                     o->longName ? "=" : " ", o->argDescrip);
        fprintf(f, "  %-30s %s\n", left, o->descrip);
    }
}

int cmd_parse(const struct cmd_spec *spec, int argc, const char **argv,
              poptContext *pc, const char ***args, int *nargs)
{
    poptContext ctx = poptGetContext(spec->name, argc, argv, spec->opts, 0);
    const char **left;
    int rc, n = 0;

    *pc = NULL;
    while ((rc = poptGetNextOpt(ctx)) > 0) {
        if (rc == QIMG_OPT_HELP) {
            cmd_print_help(spec, stdout);
            poptFreeContext(ctx);
            return 1;
        }
        if (spec->on_opt) {
            int r = spec->on_opt(rc, poptGetOptArg(ctx), spec->ctx);
            if (r != 0) {
                /* an error, or an option that did the whole job (--object help) */
                poptFreeContext(ctx);
                return r < 0 ? -1 : 1;
            }
        }
    }
    if (rc < -1) {
        const char *opt = poptBadOption(ctx, 0);
        if (rc == POPT_ERROR_NOARG)
            error("option '%s' requires an argument", opt);
        else if (rc == POPT_ERROR_BADOPT)
            error("unrecognized option '%s'", opt);
        else
            error("%s: %s", opt, poptStrerror(rc));
        fprintf(stderr, "Try '%s %s --help' for more information.\n", qimg_progname, spec->name);
        poptFreeContext(ctx);
        return -1;
    }
    left = poptGetArgs(ctx);
    while (left && left[n])
        n++;
    if (n < spec->min_args) {
        error("Expecting %s", spec->min_args == 1 ? "one image file name" : "more arguments");
        fprintf(stderr, "Try '%s %s --help' for more information.\n", qimg_progname, spec->name);
        poptFreeContext(ctx);
        return -1;
    }
    if (spec->max_args >= 0 && n > spec->max_args) {
        error("Invalid argument '%s'", left[spec->max_args]);
        fprintf(stderr, "Try '%s %s --help' for more information.\n", qimg_progname, spec->name);
        poptFreeContext(ctx);
        return -1;
    }
    *pc = ctx;
    *args = left;
    *nargs = n;
    return 0;
}

void cmd_done(poptContext pc)
{
    if (pc)
        poptFreeContext(pc);
}

/* Would repair help? The corrupt bit, a dirty image that could not be
 * repaired on open, or a table the checker rebuilds (L1, refcount and
 * snapshot tables; not, say, an encryption header). */
static bool repair_helps(int code)
{
    const char *m = err_has_msg(code) ? err_msg(code) : "";

    return strstr(m, "Image is corrupt") || !strncmp(m, "Could not repair dirty image", 28) ||
           (code == -QIMG_ECORRUPT && strstr(m, " table"));
}

int cmd_open_error(const char *file, int code)
{
    return cmd_open_error_as(file, file, code);
}

int cmd_open_error_as(const char *name, const char *file, int code)
{
    if (code == -EISDIR && !err_has_msg(code))
        return error("Could not open '%s': 'file' driver requires '%s' to be a regular file",
                     name, file);
    /* qemu-img names the file again when the system call itself failed. */
    if (!err_has_msg(code))
        return error("Could not open '%s': Could not open '%s': %s", name, file, err_msg(code));
    /* Errors are one line: qemu-img's words, then what to do. */
    if (repair_helps(code))
        return error("Could not open '%s': %s; run '%s repair %s' to repair it", name,
                     err_msg(code), qimg_progname, file);
    return error("Could not open '%s': %s", name, err_msg(code));
}

int cmd_output_format(const char *s)
{
    if (!s || !strcmp(s, "human"))
        return 0;
    if (!strcmp(s, "json"))
        return 1;
    error("--output must be used with human or json as argument.");
    return -1;
}

int cmd_verify_image(const char *file)
{
    struct qcow2_check_opts o = { 0 };
    struct qcow2_check_result r = { 0 };
    struct qfile *f;
    struct qcow2 *q;
    uint8_t magic[4];
    int ret;

    ret = qfile_open(&f, file, QF_RDONLY | QF_NOLOCK);
    if (ret == 0 && (qfile_pread(f, magic, 4, 0) < 0 || be32(magic) != QCOW_MAGIC)) {
        qfile_close(f);
        return 0;       /* not qcow2: nothing to count */
    }
    if (ret == 0) {
        ret = qcow2_open(&q, f, QCOW2_OPEN_CHECK);
        if (ret < 0)
            qfile_close(f);
    }
    if (ret == 0) {
        ret = qcow2_check(q, &o, &r);
        qcow2_close(q);
    }
    if (ret < 0)
        return error("'%s' was written, but could not be checked afterwards: %s", file,
                     err_msg(ret));
    if (r.corruptions || r.leaks || r.check_errors)
        return error("'%s' was written, but does not check clean (%llu corruptions, "
                     "%llu leaked clusters); run '%s check %s'", file,
                     (unsigned long long)r.corruptions, (unsigned long long)r.leaks,
                     qimg_progname, file);
    return 0;
}
