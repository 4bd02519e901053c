/*
 * problem.c - the table of everything the checker can find: one row per
 * problem code with its message (in qemu-img's words where it has them),
 * whether it is a leak or a corruption, and which repair mode fixes it.
 * problem() is the only way a finding is counted and reported, so check and
 * repair share one code path: the caller detects, asks problem(), and fixes
 * right there when told to.
 *
 * Must not: look at the image; it only formats, counts and decides.
 */
#include <string.h>

#include "check.h"

enum { P_LEAK, P_CORRUPT, P_ERROR, P_NOTE };
/* A finding qemu-img does not count itself (it counts what follows from
 * it, e.g. a refcount mismatch): counted here only when it is repaired,
 * so a plain check reports the same numbers as qemu-img. */
#define PF_QIMG 1

struct problem_row {
    unsigned char kind, fix, flags;
    const char *msg;            /* %V verb, see expand() for the rest */
    const char *fixed;          /* what the repair does, when it does */
    const char *hint;           /* a line printed when it is not repaired */
};

#define EOF_MSG "%V: counting reference for region exceeding the end of the file " \
                "by one cluster or more: offset 0x%o size 0x%s"

static const struct problem_row rows[PR_COUNT] = {
    [PR_REFCOUNT_LEAK] = { P_LEAK, QCOW2_FIX_LEAKS, 0,
        "%V cluster %c refcount=%r reference=%R", NULL, NULL },
    [PR_REFCOUNT_LOW] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V cluster %c refcount=%r reference=%R", NULL, NULL },
    [PR_REFCOUNT_ZERO] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V cluster %c refcount=%r reference=%R", NULL, NULL },
    [PR_REF_PAST_EOF] = { P_CORRUPT, 0, 0, EOF_MSG, NULL, NULL },
    [PR_REF_OVERFLOW] = { P_CORRUPT, 0, 0, "%V: overflow cluster offset=0x%o", NULL,
        "Use qimg amend to increase the refcount entry width or qimg convert to "
        "create a clean copy if the image cannot be opened for writing" },
    [PR_DATA_OVERFLOW] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V: overflow cluster offset=0x%o", "the data is copied to a new cluster",
        "Use qimg amend to increase the refcount entry width or qimg convert to "
        "create a clean copy if the image cannot be opened for writing" },
    [PR_L1_RESERVED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V found L1 entry with reserved bits set: %e", "the reserved bits are cleared", NULL },
    [PR_L1_UNALIGNED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V l2_offset=%o: Table is not cluster aligned; L1 entry corrupted",
        "the L1 entry is dropped and its guest range lost", NULL },
    [PR_L1_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "the L1 entry is dropped and its guest range lost", NULL },
    [PR_L1_ALIAS] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V L1 entry %i: l2_offset=%o points into %m; L1 entry corrupted",
        "the L1 entry is dropped and its guest range lost", NULL },
    [PR_L2_OVER_REFBLOCK] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V L2 table at offset 0x%o is also refcount block %i",
        "the L2 table is kept and the refcount structure rebuilt", NULL },
    [PR_L2_RESERVED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V found l2 entry with reserved bits set: %e", "the reserved bits are cleared", NULL },
    [PR_L2_UNALIGNED_ZERO] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V offset=%o: Preallocated cluster is not properly aligned; L2 entry corrupted.",
        "the entry is made a plain zero cluster", NULL },
    [PR_L2_UNALIGNED_DATA] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V offset=%o: Data cluster is not properly aligned; L2 entry corrupted.",
        "the entry is dropped, its data is lost", NULL },
    [PR_L2_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "the entry is dropped, its data is lost", NULL },
    [PR_DATA_ALIAS] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V data cluster at offset 0x%o lies on %m",
        "the cluster is copied so the metadata stays its own", NULL },
    [PR_COMPRESSED_COPIED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V: coffset=0x%o: copied flag must never be set for compressed clusters",
        "the flag is cleared", NULL },
    [PR_COMPRESSED_BITMAP] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V compressed cluster %i with non-zero subcluster allocation bitmap, entry=0x%e",
        "the bitmap is cleared", NULL },
    [PR_COMPRESSED_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "the entry is dropped, its data is lost", NULL },
    [PR_EXTL2_ALLOC_ZERO] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V offset=%o: Allocated cluster has corrupted subcluster allocation bitmap",
        "the zero bits of allocated subclusters are cleared", NULL },
    [PR_EXTL2_UNALLOC_BITMAP] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V: Unallocated cluster has non-zero subcluster allocation map",
        "the allocation bits are cleared", NULL },
    [PR_COPIED_L1] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V OFLAG_COPIED L2 cluster: l1_index=%i l1_entry=%e refcount=%r", NULL, NULL },
    [PR_COPIED_DATA] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V OFLAG_COPIED data cluster: l2_entry=%e refcount=%r", NULL, NULL },
    [PR_REFTABLE_RESERVED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V refcount table entry %i has reserved bits set",
        "the refcount structure is rebuilt", NULL },
    [PR_REFBLOCK_UNALIGNED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V refcount block %i is not cluster aligned; refcount table entry corrupted",
        "the refcount structure is rebuilt", NULL },
    [PR_REFBLOCK_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V refcount block %i is outside image", "the refcount structure is rebuilt", NULL },
    [PR_REFBLOCK_SHARED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V refcount block %i refcount=%r", "the refcount structure is rebuilt", NULL },
    [PR_REFTABLE_ALIAS] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V refcount table at offset 0x%o overlaps %m", "the refcount structure is rebuilt",
        NULL },
    [PR_REFTABLE_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "the refcount structure is rebuilt", NULL },
    [PR_L1_TABLE_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "the active L1 table reads as zeros and is replaced by an empty one", NULL },
    [PR_SN_TABLE_OFFSET] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V snapshot table offset invalid: 0x%o", "the snapshot table is written anew", NULL },
    [PR_SN_EMPTY] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V snapshot table entry %i is empty (no id, no L1 table)",
        "the entry is dropped", NULL },
    [PR_SN_TABLE_ALIAS] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V snapshot table at offset 0x%o lies on %m",
        "its entries are not snapshots; they are dropped", NULL },
    [PR_SN_TRUNCATED] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V snapshot table entry %i (0x%s bytes at offset 0x%o) runs past the end of the file",
        "the missing bytes read as zeros and the entry is written back whole", NULL },
    [PR_SN_TOO_MANY] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V snapshot table too large: %i snapshots, more than 65536",
        "the overhanging snapshots are discarded", NULL },
    [PR_SN_INCOMPLETE] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V snapshot table entry %i is incomplete",
        "the file ends in it; this entry and those after it are dropped", NULL },
    [PR_SN_EXTRA_TOO_LARGE] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V too much extra metadata in snapshot table entry %i (%r > 1024)",
        "the excess is discarded", NULL },
    [PR_SN_L1_UNALIGNED] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V snapshot %I (%N) l1_offset=0x%o: L1 table is not cluster aligned; "
        "snapshot table entry corrupted", "the snapshot is deleted", NULL },
    [PR_SN_L1_TOO_LARGE] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V snapshot %I (%N) l1_size=0x%e: L1 table is too large; "
        "snapshot table entry corrupted", "the snapshot is deleted", NULL },
    [PR_SN_L1_PAST_EOF] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0, EOF_MSG,
        "snapshot %I (%N) is deleted", NULL },
    [PR_SN_L1_ALIAS] = { P_CORRUPT, QCOW2_FIX_ERRORS, PF_QIMG,
        "%V snapshot %I (%N) has its L1 table at offset 0x%o on %m",
        "the snapshot is deleted", NULL },
    [PR_BITMAP_DIR] = { P_CORRUPT, QCOW2_FIX_ERRORS, 0,
        "%V bitmap directory at offset 0x%o is invalid: %m",
        "the bitmaps are dropped (they hold no guest data)", NULL },
    [PR_BITMAP_ENTRY] = { P_CORRUPT, 0, 0,
        "%V bitmap table entry %i is invalid: %e", NULL, NULL },
    [PR_DEEP_UNREADABLE] = { P_CORRUPT, 0, 0,
        "%V data cluster at offset 0x%o cannot be read: %m", NULL, NULL },
    [PR_DEEP_DECOMPRESS] = { P_CORRUPT, 0, 0,
        "%V compressed cluster at offset 0x%o (0x%s bytes) cannot be decompressed",
        NULL, NULL },
    [PR_REBUILD] = { P_NOTE, 0, 0, "Rebuilding refcount structure", NULL, NULL },
    [PR_NEED_REBUILD] = { P_NOTE, 0, 0,
        "ERROR need to rebuild refcount structures (repair with -r all)", NULL, NULL },
    [PR_IO] = { P_ERROR, 0, 0, "ERROR %m", NULL, NULL },
};

/* Append to the line, never past its end. */
static void add(char *line, size_t *n, size_t cap, const char *fmt, ...) PRINTF(4, 5);
static void add(char *line, size_t *n, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int r;

    if (*n >= cap - 1)
        return;
    va_start(ap, fmt);
    r = vsnprintf(line + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (r > 0)
        *n = MIN(cap - 1, *n + (size_t)r);
}

/*
 * Expand a row's message: %V verb, %c cluster, %r refcount, %R reference,
 * %o offset (hex), %s size (hex), %e entry (hex), %i index, %I snapshot id,
 * %N snapshot name, %m text.
 */
static void expand(char *line, size_t *n, size_t cap, const char *fmt, const char *verb,
                   const struct pctx *p)
{
    for (const char *f = fmt; *f; f++) {
        if (*f != '%' || !f[1]) {
            size_t run = strcspn(f, "%");
            if (!run)
                run = 1;
            add(line, n, cap, "%.*s", (int)run, f);
            f += run - 1;
            continue;
        }
        switch (*++f) {
        case 'V': add(line, n, cap, "%s", verb); break;
        case 'c': add(line, n, cap, "%llu", (unsigned long long)p->cluster); break;
        case 'r': add(line, n, cap, "%llu", (unsigned long long)p->refcount); break;
        case 'R': add(line, n, cap, "%llu", (unsigned long long)p->reference); break;
        case 'o': add(line, n, cap, "%llx", (unsigned long long)p->offset); break;
        case 's': add(line, n, cap, "%llx", (unsigned long long)p->size); break;
        case 'e': add(line, n, cap, "%llx", (unsigned long long)p->entry); break;
        case 'i': add(line, n, cap, "%lld", (long long)p->index); break;
        case 'I': add(line, n, cap, "%s", p->id ? p->id : ""); break;
        case 'N': add(line, n, cap, "%s", p->name ? p->name : ""); break;
        case 'm': add(line, n, cap, "%s", p->str ? p->str : ""); break;
        default: add(line, n, cap, "%%%c", *f); break;
        }
    }
}

static void emit(struct chk *c, const char *line)
{
    if (c->o->report)
        c->o->report(c->o->opaque, line);
}

static void guest(struct chk *c, char *line, size_t *n, size_t cap, const struct pctx *p)
{
    const struct qcow2 *q = c->q;

    if (!p->has_guest || !p->glen)
        return;
    if (p->gsn >= 0 && (uint64_t)p->gsn < q->nb_snapshots)
        add(line, n, cap, " (snapshot %s '%s': guest offset 0x%llx..0x%llx",
            q->snapshots[p->gsn].id, q->snapshots[p->gsn].name,
            (unsigned long long)p->gstart, (unsigned long long)(p->gstart + p->glen - 1));
    else
        add(line, n, cap, " (guest offset 0x%llx..0x%llx", (unsigned long long)p->gstart,
            (unsigned long long)(p->gstart + p->glen - 1));
    if (p->gmore)
        add(line, n, cap, ", and %llu more", (unsigned long long)p->gmore);
    add(line, n, cap, ")");
}

bool problem(struct chk *c, enum qcow2_problem code, const struct pctx *p)
{
    const struct problem_row *row = &rows[code];
    struct qcow2_check_result *r = c->r;
    static const struct pctx none = { .gsn = -1 };
    bool fixable = row->fix && (c->fix & row->fix);
    bool doing = fixable && c->write;
    bool counted = !(row->flags & PF_QIMG);
    const char *verb;
    size_t n = 0;

    if (!p)
        p = &none;
    if (row->kind == P_NOTE) {
        if (!*row->msg || (c->quiet_unfixed && code != PR_REBUILD))
            return false;
        expand(c->line, &n, sizeof(c->line), row->msg, "", p);
        emit(c, c->line);
        return false;
    }
    if (row->kind == P_ERROR) {
        r->check_errors++;
        expand(c->line, &n, sizeof(c->line), row->msg, "ERROR", p);
        emit(c, c->line);
        return false;
    }
    if (doing) {
        verb = "Repairing";
        if (row->kind == P_LEAK)
            r->leaks_fixed++;
        else
            r->corruptions_fixed++;
    } else {
        verb = fixable ? "Would repair" : row->kind == P_LEAK ? "Leaked" : "ERROR";
        if (counted || fixable) {
            uint64_t *found = row->kind == P_LEAK ? &r->leaks : &r->corruptions;
            if (counted)
                (*found)++;
            if (fixable)
                (*(row->kind == P_LEAK ? &r->leaks_fixable : &r->corruptions_fixable))++;
        }
        if (c->quiet_unfixed)
            return false;
    }
    expand(c->line, &n, sizeof(c->line), row->msg, verb, p);
    guest(c, c->line, &n, sizeof(c->line), p);
    if (fixable && row->fixed) {
        add(c->line, &n, sizeof(c->line), "; ");
        expand(c->line, &n, sizeof(c->line), row->fixed, verb, p);
    }
    emit(c, c->line);
    if (!fixable && row->hint)
        emit(c, row->hint);
    return doing;
}

void problem_not_fixed(struct chk *c, enum qcow2_problem code)
{
    const struct problem_row *row = &rows[code];
    struct qcow2_check_result *r = c->r;

    if (row->kind == P_LEAK) {
        if (r->leaks_fixed)
            r->leaks_fixed--;
        r->leaks++;
    } else if (row->kind == P_CORRUPT) {
        if (r->corruptions_fixed)
            r->corruptions_fixed--;
        r->corruptions++;
    }
}
