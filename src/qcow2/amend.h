/*
 * amend.h - changing a qcow2 image's options in place (qimg amend): the
 * compat level, the refcount width, lazy refcounts and the virtual size.
 *
 * amend.c owns the steps and their order, amend_refcount.c the rewrite of
 * the refcount structures at another width. Neither prints nor parses
 * option strings: the command (src/cmd/amend.c) does.
 */
#ifndef QIMG_QCOW2_AMEND_H
#define QIMG_QCOW2_AMEND_H

#include "qcow2.h"

struct qcow2_amend_opts {
    uint32_t version;           /* 0: keep; 2 (compat=0.10) or 3 (compat=1.1) */
    int lazy_refcounts;         /* -1: keep; 0 off; 1 on */
    uint32_t refcount_bits;     /* 0: keep; 1..64, a power of two */
    uint64_t size;              /* 0: keep; a multiple of 512 */
    bool force;                 /* allow shrinking the virtual size */
    /* Shrinking deallocates what lies past the new end (qemu-img resize
     * --shrink) rather than refusing when it holds data; then the file
     * loses its unused tail. */
    bool discard;
    /* Called now and then with 0..100 when set. */
    void (*progress)(void *opaque, double percent);
    void *opaque;
};

/*
 * Apply o to q (opened read-write). Everything that can be refused is
 * checked before the first write; on such a refusal the file is untouched
 * and the message names what stands in the way. Steps run in qemu's order:
 * upgrade, refcount width, lazy refcounts, size, downgrade.
 */
int qcow2_amend(struct qcow2 *q, const struct qcow2_amend_opts *o);

/* ---- shared by amend.c and amend_refcount.c ------------------------- */
struct amend_progress {
    const struct qcow2_amend_opts *o;
    unsigned step, nsteps;      /* this step's share of the whole run */
    double last;
};
void amend_progress(struct amend_progress *p, uint64_t done, uint64_t total);

/* Refuse (-ERANGE, nothing written) when a refcount does not fit 2^order bits. */
int qcow2_amend_refcount_check(struct qcow2 *q, uint32_t order);
/* Rewrite the refcount table and blocks at width 2^order. */
int qcow2_amend_refcount_order(struct qcow2 *q, uint32_t order, struct amend_progress *p);

#endif
