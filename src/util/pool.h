/*
 * pool.h - a fixed set of worker threads running jobs split into items.
 * Jobs run in the order they were submitted (an item of a later job is
 * taken only when every item of the earlier ones has been taken); the
 * caller waits for each job it submitted. Items of one job run in any
 * order on any thread: fn gets the thread's index for per-thread state.
 *
 * Owns: the threads. Must not: know what the jobs do.
 */
#ifndef QIMG_POOL_H
#define QIMG_POOL_H

#include <stdint.h>

struct pool;

struct pool_job {
    void (*fn)(void *arg, int tid, uint64_t item);
    void *arg;
    uint64_t total;             /* items 0 .. total-1 */
    /* private to pool.c */
    uint64_t next, ndone;
    struct pool_job *qnext;
};

/* Start n threads (1..64); NULL when none could be started. */
struct pool *pool_new(int n);
int pool_threads(const struct pool *p);
/* Queue job (its items are then run by the workers); total may be 0. */
void pool_submit(struct pool *p, struct pool_job *job);
/* Wait until every item of job has finished. */
void pool_wait(struct pool *p, struct pool_job *job);
/* Finish the running items, stop and free the threads. */
void pool_free(struct pool *p);

#endif
