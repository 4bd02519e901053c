/*
 * snapshot.c - `qimg snapshot`: list, create, apply, delete and rename the
 * internal snapshots of a qcow2 image, as `qemu-img snapshot` does (same
 * options, same listing to the character, same messages), plus --rename,
 * --output=json for the listing, and refusals where qemu-img would guess:
 * an empty name, a duplicate name, an ambiguous name (unless --force).
 *
 * Owns: the command line and the printing. Must not: change the image
 * other than through src/qcow2/snapshot.h; -l never opens for writing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../block/block.h"
#include "../qcow2/snapshot.h"
#include "cmd.h"
#include "image_args.h"

enum action { ACT_NONE, ACT_LIST, ACT_CREATE, ACT_APPLY, ACT_DELETE, ACT_RENAME };

struct snap_ctx {
    enum action action;
    char *arg;                  /* the snapshot named with the action */
    char *fmt;
    char *output;
    bool force, force_share;
    struct image_args ia;       /* --object, --image-opts */
};

/* popt hands over option arguments in malloc'd memory: keep the last. */
static void take(char **dst, const char *arg)
{
    free(*dst);
    *dst = (char *)arg;
}

static const struct poptOption options[] = {
    { "list", 'l', POPT_ARG_NONE, NULL, 'l', "list the snapshots (read-only)", NULL },
    { "create", 'c', POPT_ARG_STRING, NULL, 'c', "create a snapshot of the current state", "NAME" },
    { "apply", 'a', POPT_ARG_STRING, NULL, 'a',
      "revert the image to a snapshot (id or name)", "NAME" },
    { "delete", 'd', POPT_ARG_STRING, NULL, 'd', "delete a snapshot (name or id)", "NAME" },
    { "rename", 0, POPT_ARG_STRING, NULL, 'r',
      "rename snapshot OLD (id or name) to NEW; NEW comes before FILE", "OLD NEW" },
    { "force", 0, POPT_ARG_NONE, NULL, 'F',
      "accept a name that is already used or matches several snapshots (as qemu-img)",
      NULL },
    { "force-share", 'U', POPT_ARG_NONE, NULL, 'U',
      "open an image another process holds (only with -l)", NULL },
    { "quiet", 'q', POPT_ARG_NONE, NULL, 'q', "quiet mode (there is nothing else to say)", NULL },
    { "format", 'f', POPT_ARG_STRING, NULL, 'f', "image format (guessed when left out)", "fmt" },
    { "output", 0, POPT_ARG_STRING, NULL, 'o', "output format of -l: human or json", "FMT" },
    { "object", 0, POPT_ARG_STRING, NULL, 'O',
      "define a secret (secret,id=ID,data=STRING or file=PATH)", "objectdef" },
    { "image-opts", 0, POPT_ARG_NONE, NULL, 'i',
      "FILE is an option string (driver=...,file.filename=...)", NULL },
    QIMG_POPT_HELP,
    POPT_TABLEEND
};

static int try_help(void)
{
    fprintf(stderr, "Try '%s snapshot --help' for more information.\n", qimg_progname);
    return -1;
}

static int on_opt(int val, const char *arg, void *p)
{
    struct snap_ctx *c = p;
    enum action a;

    switch (val) {
    case 'l': a = ACT_LIST; break;
    case 'c': a = ACT_CREATE; break;
    case 'a': a = ACT_APPLY; break;
    case 'd': a = ACT_DELETE; break;
    case 'r': a = ACT_RENAME; break;
    case 'F': c->force = true; return 0;
    case 'U': c->force_share = true; return 0;
    case 'q': return 0;
    case 'f': take(&c->fmt, arg); return 0;
    case 'o': take(&c->output, arg); return 0;
    case 'O': return image_args_object(&c->ia, arg);
    case 'i': c->ia.image_opts = 1; return 0;
    default: return 0;
    }
    if (c->action) {
        if (a == ACT_RENAME || c->action == ACT_RENAME)
            error("Cannot mix '-l', '-a', '-c', '-d', '--rename'");
        else
            error("Cannot mix '-l', '-a', '-c', '-d'");
        free((char *)arg);
        return try_help();
    }
    c->action = a;
    take(&c->arg, arg);
    return 0;
}

/* ---- listing, in qemu-img's layout ---------------------------------- */

/* qemu copies ids and names into fixed buffers: 127 and 255 bytes. */
static void clip(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

static void list_human(const struct qcow2 *q)
{
    if (!q || !q->nb_snapshots)
        return;
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        const struct qcow2_snapshot *s = &q->snapshots[i];
        char id[128], name[256], date[64] = "", clock[64], size[32], icount[32] = "";
        uint64_t secs = s->vm_clock_nsec / 1000000000;
        time_t t = s->date_sec;
        struct tm tm;

        clip(id, sizeof(id), s->id);
        clip(name, sizeof(name), s->name);
        if (localtime_r(&t, &tm))
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
                 (int)((secs / 60) % 60), (int)(secs % 60),
                 (int)((s->vm_clock_nsec / 1000000) % 1000));
        size_to_str(s->vm_state_size, size, sizeof(size));
        if (s->has_icount)
            snprintf(icount, sizeof(icount), "%" PRId64, (int64_t)s->icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", id, name, size, date, clock, icount);
    }
}

/* The objects qemu-img info --output=json shows under "snapshots". */
static void list_json(const struct qcow2 *q)
{
    struct json j;

    json_init(&j, stdout);
    json_begin_array(&j, NULL);
    for (uint32_t i = 0; q && i < q->nb_snapshots; i++) {
        const struct qcow2_snapshot *s = &q->snapshots[i];
        char id[128], name[256];

        clip(id, sizeof(id), s->id);
        clip(name, sizeof(name), s->name);
        json_begin_object(&j, NULL);
        if (s->has_icount)
            json_int(&j, "icount", (int64_t)s->icount);
        json_int(&j, "vm-clock-nsec", (int64_t)(s->vm_clock_nsec % 1000000000));
        json_str(&j, "name", name);
        json_int(&j, "date-sec", s->date_sec);
        json_int(&j, "date-nsec", s->date_nsec);
        json_int(&j, "vm-clock-sec", (int64_t)(s->vm_clock_nsec / 1000000000));
        json_str(&j, "id", id);
        json_int(&j, "vm-state-size", (int64_t)s->vm_state_size);
        json_end_object(&j);
    }
    json_end_array(&j);
    json_finish(&j);
}

/* ---- changing ----------------------------------------------------------- */

static const char *verb(enum action a)
{
    switch (a) {
    case ACT_CREATE: return "create";
    case ACT_APPLY: return "apply";
    case ACT_DELETE: return "delete";
    default: return "rename";
    }
}

/*
 * The snapshot key names: qemu-img's choice (-a: id, then name; -d: name;
 * qimg falls back to the id), refused when it could mean several unless
 * --force.
 */
static int resolve(const struct qcow2 *q, const struct snap_ctx *c, uint32_t *idx)
{
    uint32_t m[16];
    unsigned n = qcow2_snapshot_lookup(q, c->arg, c->action == ACT_DELETE ?
                                       QCOW2_SN_NAME_FIRST : QCOW2_SN_ID_FIRST,
                                       m, ARRAY_SIZE(m));
    char ids[200] = "";
    size_t len = 0;

    if (!n)
        return error("Could not %s snapshot '%s': %s", verb(c->action), c->arg,
                     c->action == ACT_APPLY ? "Failed to load snapshot: No such file or directory"
                                            : "snapshot not found");
    if (n > 1 && !c->force) {
        for (unsigned i = 0; i < n && i < ARRAY_SIZE(m) && len < sizeof(ids) - 1; i++)
            len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%s", i ? ", " : "",
                                    q->snapshots[m[i]].id);
        return error("Could not %s snapshot '%s': %u snapshots match '%s' (ids %s%s); "
                     "name the one you mean by its id, or add --force to take id %s "
                     "as qemu-img would", verb(c->action), c->arg, n, c->arg, ids,
                     n > ARRAY_SIZE(m) ? ", ..." : "", q->snapshots[m[0]].id);
    }
    *idx = m[0];
    return 0;
}

static int act(struct qcow2 *q, const struct snap_ctx *c, const char *newname)
{
    uint32_t idx = 0;
    int ret;

    if (c->action != ACT_CREATE && resolve(q, c, &idx))
        return 1;
    switch (c->action) {
    case ACT_CREATE:
        ret = qcow2_snapshot_check_name(q, c->arg, -1, c->force);
        if (ret == 0)
            ret = qcow2_snapshot_create(q, c->arg);
        break;
    case ACT_APPLY:
        ret = qcow2_snapshot_apply(q, idx);
        break;
    case ACT_DELETE:
        ret = qcow2_snapshot_delete(q, idx);
        break;
    default:
        ret = qcow2_snapshot_check_name(q, newname, (int)idx, c->force);
        if (ret == 0)
            ret = qcow2_snapshot_rename(q, idx, newname);
        break;
    }
    if (ret == -EEXIST && c->action != ACT_APPLY && c->action != ACT_DELETE)
        return error("Could not %s snapshot '%s': %s; add --force to use the name anyway",
                     verb(c->action), c->arg, err_msg(ret));
    if (ret == -ERANGE && (c->action == ACT_CREATE || c->action == ACT_APPLY))
        return error("Could not %s snapshot '%s': %s; the image is unchanged (a snapshot "
                     "adds a reference to every cluster in use)", verb(c->action), c->arg,
                     err_msg(ret));
    if (ret < 0)
        return error("Could not %s snapshot '%s': %s", verb(c->action), c->arg, err_msg(ret));
    return 0;
}

int cmd_snapshot(int argc, const char **argv)
{
    struct snap_ctx c = { 0 };
    const struct cmd_spec spec = {
        .name = "snapshot",
        .synopsis = "[-q] [-f fmt] [--output=human|json] [--force] "
                    "[-l | -c NAME | -a NAME | -d NAME | --rename OLD NEW] FILE",
        .summary = "List, create, apply (revert to), delete or rename the internal snapshots "
                   "of a qcow2 image.\nWithout an action, only opens the image (as qemu-img).",
        .opts = options,
        .on_opt = on_opt,
        .ctx = &c,
        .min_args = 1,
        .max_args = 2,
    };
    poptContext pc;
    const char **args, *file, *newname = NULL;
    char *path = NULL;
    int nargs, json, rc, ret, flags = BLK_NO_BACKING;
    struct blk *b = NULL;
    struct qcow2 *q;

    rc = cmd_parse(&spec, argc, argv, &pc, &args, &nargs);
    if (rc) {
        free(c.arg);
        free(c.fmt);
        free(c.output);
        image_args_free(&c.ia);
        return rc > 0 ? 0 : 1;
    }
    rc = 1;
    if (c.action == ACT_RENAME) {
        if (nargs != 2) {
            error("--rename takes the old name, the new name, then the image file");
            try_help();
            goto out;
        }
        newname = args[0];
        file = args[1];
    } else {
        if (nargs != 1) {
            error("Expecting one image file name");
            try_help();
            goto out;
        }
        file = args[0];
    }
    json = cmd_output_format(c.output);
    if (json < 0)
        goto out;
    if (c.output && c.action != ACT_LIST) {
        error("--output is only used with -l");
        goto out;
    }

    /* open: read-only unless the action changes the image */
    if (image_args_check(&c.ia, c.fmt))
        goto out;
    if (c.action != ACT_LIST && c.action != ACT_NONE) {
        if (c.force_share) {
            error("Could not open '%s': force-share=on can only be used with read-only images",
                  file);
            goto out;
        }
        flags |= BLK_RDWR;
    }
    if (c.force_share)
        flags |= BLK_NOLOCK;
    /* Metadata only: no key needed, but one given must unlock the image. */
    if (image_args_open(&c.ia, &b, file, c.fmt, flags, NULL) < 0)
        goto out;
    path = strdup(b->filename);
    if (!path) {
        error("%s", strerror(ENOMEM));
        blk_close(b);
        goto out;
    }
    q = b->drv == &blk_qcow2_driver ? b->priv : NULL;

    switch (c.action) {
    case ACT_NONE:
        rc = 0;
        break;
    case ACT_LIST:
        if (json)
            list_json(q);
        else
            list_human(q);
        rc = 0;
        break;
    default:
        if (!q) {
            error("Could not %s snapshot '%s': Operation not supported (format '%s' has no "
                  "internal snapshots)", verb(c.action), c.arg, b->drv->name);
            break;
        }
        rc = act(q, &c, newname);
        break;
    }
    ret = blk_close(b);
    if (ret < 0 && rc == 0) {
        if (c.action == ACT_LIST || c.action == ACT_NONE)
            rc = error("Could not close '%s': %s", file, err_msg(ret));
        else
            rc = error("Could not %s snapshot '%s': %s", verb(c.action), c.arg, err_msg(ret));
    }
    if (rc == 0 && c.action != ACT_LIST && c.action != ACT_NONE)
        rc = cmd_verify_image(path);
out:
    cmd_done(pc);
    free(c.arg);
    free(c.fmt);
    free(c.output);
    free(path);
    image_args_free(&c.ia);
    return rc;
}
