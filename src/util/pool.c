/*
 * pool.c - worker threads for jobs split into items (see pool.h). One
 * mutex guards the queue; an item runs outside it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "pool.h"

#define POOL_MAX 64

struct pool {
    pthread_t th[POOL_MAX];
    int n;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct pool_job *head, *tail;   /* jobs with items not yet taken */
    bool quit;
};

struct worker_arg {
    struct pool *p;
    int tid;
};

static void *worker(void *arg)
{
    struct worker_arg *wa = arg;
    struct pool *p = wa->p;
    int tid = wa->tid;

    free(wa);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct pool_job *j;
        uint64_t k;

        while (!p->quit && !p->head)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        j = p->head;
        k = j->next++;
        if (j->next == j->total) {      /* every item taken: dequeue */
            p->head = j->qnext;
            if (!p->head)
                p->tail = NULL;
        }
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg, tid, k);
        pthread_mutex_lock(&p->mu);
        if (++j->ndone == j->total)
            pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct pool *pool_new(int n)
{
    struct pool *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    if (n > POOL_MAX)
        n = POOL_MAX;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (p->n = 0; p->n < n; p->n++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa)
            break;
        wa->p = p;
        wa->tid = p->n;
        if (pthread_create(&p->th[p->n], NULL, worker, wa) != 0) {
            free(wa);
            break;
        }
    }
    if (!p->n) {
        free(p);
        return NULL;
    }
    return p;
}

int pool_threads(const struct pool *p)
{
    return p->n;
}

void pool_submit(struct pool *p, struct pool_job *job)
{
    job->next = 0;
    job->ndone = 0;
    job->qnext = NULL;
    if (!job->total)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->qnext = job;
    else
        p->head = job;
    p->tail = job;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void pool_wait(struct pool *p, struct pool_job *job)
{
    pthread_mutex_lock(&p->mu);
    while (job->ndone < job->total)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}
