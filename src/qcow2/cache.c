/*
 * cache.c - THE metadata cache: one type serves L2 tables and refcount
 * blocks. Tables are cluster sized, kept in on-disk byte order, looked up
 * by host offset, evicted least-recently-used, written back lazily.
 *
 * Write ordering lives here and in qcow2_flush(): before a cache writes any
 * dirty table it flushes the cache it depends on (L2 depends on refcount)
 * and syncs the guest data, so an L2 entry never reaches the disk before
 * the data and the refcounts it relies on.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

struct cache_entry {
    uint64_t offset;    /* 0 = empty slot */
    int ref;
    bool dirty;
    uint64_t lru;
};

struct qcow2_cache {
    struct qcow2 *q;
    unsigned n;
    struct cache_entry *e;
    uint8_t *mem;       /* n tables of cluster_size bytes */
    uint64_t tick;
    struct qcow2_cache *dep;
    int ol_kind;
};

struct qcow2_cache *qcow2_cache_new(struct qcow2 *q, unsigned nb_tables, int ol_kind)
{
    struct qcow2_cache *c = xzalloc(sizeof(*c));

    if (!c)
        return NULL;
    c->q = q;
    c->n = nb_tables;
    c->ol_kind = ol_kind;
    c->e = xzalloc(nb_tables * sizeof(*c->e));
    c->mem = malloc((size_t)nb_tables * q->cluster_size);
    if (!c->e || !c->mem) {
        qcow2_cache_free(c);
        return NULL;
    }
    return c;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
    if (!c)
        return;
    free(c->e);
    free(c->mem);
    free(c);
}

unsigned qcow2_cache_capacity(const struct qcow2_cache *c)
{
    return c->n;
}

void qcow2_cache_set_dependency(struct qcow2_cache *c, struct qcow2_cache *dep)
{
    c->dep = dep;
}

static void *table_of(struct qcow2_cache *c, unsigned i)
{
    return c->mem + (size_t)i * c->q->cluster_size;
}

static unsigned index_of(struct qcow2_cache *c, const void *table)
{
    return (unsigned)(((const uint8_t *)table - c->mem) / c->q->cluster_size);
}

static bool any_dirty(const struct qcow2_cache *c)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->e[i].dirty)
            return true;
    return false;
}

/* What must be on disk before this cache writes a table. */
static int prepare_writeback(struct qcow2 *q, struct qcow2_cache *c)
{
    int ret;

    if (!c->dep)
        return 0;
    ret = qcow2_cache_flush(q, c->dep);
    if (ret < 0)
        return ret;
    return qfile_flush(q->data_file);     /* guest data before L2 entries */
}

static int write_entry(struct qcow2 *q, struct qcow2_cache *c, unsigned i)
{
    int ret;

    if (!c->e[i].dirty)
        return 0;
    ret = qcow2_write_metadata(q, c->ol_kind, c->e[i].offset, table_of(c, i), q->cluster_size);
    if (ret < 0)
        return ret;
    c->e[i].dirty = false;
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const struct cache_entry *x = *(const struct cache_entry *const *)a;
    const struct cache_entry *y = *(const struct cache_entry *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int qcow2_cache_flush(struct qcow2 *q, struct qcow2_cache *c)
{
    struct cache_entry **order;
    unsigned nd = 0;
    int ret;

    if (!any_dirty(c))
        return 0;
    ret = prepare_writeback(q, c);
    if (ret < 0)
        return ret;
    /* In offset order, so the writes are as sequential as they can be. */
    order = malloc(c->n * sizeof(*order));
    if (!order)
        return -ENOMEM;
    for (unsigned i = 0; i < c->n; i++)
        if (c->e[i].dirty)
            order[nd++] = &c->e[i];
    qsort(order, nd, sizeof(*order), cmp_offset);
    for (unsigned k = 0; k < nd && ret == 0; k++)
        ret = write_entry(q, c, (unsigned)(order[k] - c->e));
    free(order);
    if (ret < 0)
        return ret;
    return qfile_flush(q->file);
}

static int lookup(struct qcow2 *q, struct qcow2_cache *c, uint64_t offset, void **table,
                  bool read)
{
    unsigned victim = c->n;
    int ret;

    if (!offset || (offset & (q->cluster_size - 1)))
        return qcow2_signal_corruption(q, "Cache lookup of an invalid table offset %#llx",
                                       (unsigned long long)offset);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->e[i].offset == offset) {
            c->e[i].ref++;
            c->e[i].lru = ++c->tick;
            *table = table_of(c, i);
            return 0;
        }
        if (c->e[i].ref == 0 &&
            (victim == c->n || c->e[i].offset == 0 ||
             (c->e[victim].offset != 0 && c->e[i].lru < c->e[victim].lru)))
            victim = i;
    }
    if (victim == c->n)
        return err_set(-ENOSPC, "metadata cache is full (%u tables in use)", c->n);
    if (c->e[victim].dirty) {
        ret = prepare_writeback(q, c);
        if (ret == 0)
            ret = write_entry(q, c, victim);
        if (ret < 0)
            return ret;
    }
    c->e[victim].offset = 0;
    if (read) {
        ret = qfile_pread(q->file, table_of(c, victim), q->cluster_size, offset);
        if (ret < 0)
            return err_set(ret, "could not read metadata table at offset %#llx: %s",
                           (unsigned long long)offset, err_msg(ret));
    } else {
        memset(table_of(c, victim), 0, q->cluster_size);
    }
    c->e[victim].offset = offset;
    c->e[victim].ref = 1;
    c->e[victim].dirty = false;
    c->e[victim].lru = ++c->tick;
    *table = table_of(c, victim);
    return 0;
}

int qcow2_cache_get(struct qcow2 *q, struct qcow2_cache *c, uint64_t offset, void **table)
{
    return lookup(q, c, offset, table, true);
}

int qcow2_cache_get_empty(struct qcow2 *q, struct qcow2_cache *c, uint64_t offset, void **table)
{
    int ret = lookup(q, c, offset, table, false);

    if (ret == 0)
        memset(*table, 0, q->cluster_size);
    return ret;
}

void qcow2_cache_put(struct qcow2_cache *c, void **table)
{
    unsigned i = index_of(c, *table);

    if (c->e[i].ref > 0)
        c->e[i].ref--;
    *table = NULL;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table)
{
    c->e[index_of(c, table)].dirty = true;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->e[i].offset == offset && c->e[i].ref == 0) {
            c->e[i].offset = 0;
            c->e[i].dirty = false;
        }
}
