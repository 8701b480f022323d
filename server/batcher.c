/* batcher.c — dynamic batching (see batcher.h).
 *
 * Callers decode and pad in their own threads, queue a job and wait on it.
 * The worker takes the oldest job, gathers up to max_batch queued jobs of
 * the same padded size, waits up to max_delay_us (from the oldest job's
 * arrival) for the batch to fill, then runs the engine once; per-sample
 * edits let one batch mix concepts and adapters.  A caller whose deadline
 * passes while its job is queued takes it out and gets TIMEOUT; a job
 * already running is waited for (its adapters must stay pinned until the
 * engine is done with them) and then reported as TIMEOUT.
 *
 * Inference plans (e2g_infer) are made for a batch shape (N, H, W) and
 * reused: the worker keeps the last PLAN_CACHE shapes' plans, least
 * recently used out first, and frees them when it stops. */
#include "batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "infer.h"

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

/* Plans kept by the worker: a steady load has few batch shapes. */
#define PLAN_CACHE 4

typedef struct {
    int N, H, W;
    unsigned long last_used; /* 0: an empty slot */
    e2g_infer *inf;
} plan_slot;

typedef struct job {
    e2g_image_padded t; /* x and y: ph × pw × 3 */
    e2g_edit edit;
    job_state state;
    double enqueued, started, finished;
    int batch_size;
    struct job *next;
} job;

struct e2g_batcher {
    const e2g_runtime *runtime;
    e2g_batcher_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    job *head, *tail;
    int depth, stopping;
    pthread_t worker;
    e2g_batcher_stats stats;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct timespec abs_deadline(double monotonic_s) {
    struct timespec ts;
    ts.tv_sec = (time_t)monotonic_s;
    ts.tv_nsec = (long)((monotonic_s - ts.tv_sec) * 1e9);
    return ts;
}

static void unlink_job(e2g_batcher *b, job *j) {
    job **pp = &b->head, *prev = NULL;
    while (*pp && *pp != j) prev = *pp, pp = &(*pp)->next;
    if (!*pp) return;
    *pp = j->next;
    if (b->tail == j) b->tail = prev;
    b->depth--;
}

static int hist_bucket(int n) {
    int bucket = 0;
    for (int limit = 1; n > limit && bucket < 8; limit *= 2) bucket++;
    return bucket;
}

/* Takes the next batch out of the queue (mutex held): the oldest job and
 * the queued jobs of its size, waiting for more until the oldest job has
 * waited max_delay_us or the batch is full.  Returns the count. */
static int take_batch(e2g_batcher *b, job **batch) {
    while (!b->head && !b->stopping) pthread_cond_wait(&b->work, &b->mu);
    if (!b->head) return 0;
    int n;
    for (;;) {
        job *first = b->head;
        n = 0;
        for (job *j = first; j && n < b->cfg.max_batch; j = j->next)
            if (j->t.pw == first->t.pw && j->t.ph == first->t.ph) batch[n++] = j;
        double deadline = first->enqueued + b->cfg.max_delay_us * 1e-6;
        if (n == b->cfg.max_batch || b->stopping || now_s() >= deadline) break;
        struct timespec ts = abs_deadline(deadline);
        pthread_cond_timedwait(&b->work, &b->mu, &ts);
        if (!b->head) return take_batch(b, batch); /* its jobs timed out meanwhile */
    }
    double t = now_s();
    for (int i = 0; i < n; i++) {
        unlink_job(b, batch[i]);
        batch[i]->state = JOB_RUNNING, batch[i]->started = t, batch[i]->batch_size = n;
    }
    return n;
}

/* The plan for batches of N images of H×W from the cache, made (in the
 * least recently used slot) on a miss. */
static e2g_infer *plan_for(const e2g_runtime *rt, plan_slot *cache, unsigned long *clock, int N, int H, int W) {
    plan_slot *victim = &cache[0];
    for (int i = 0; i < PLAN_CACHE; i++) {
        plan_slot *s = &cache[i];
        if (s->last_used && s->N == N && s->H == H && s->W == W) {
            s->last_used = ++*clock;
            return s->inf;
        }
        if (s->last_used < victim->last_used) victim = s;
    }
    e2g_infer_free(victim->inf);
    *victim = (plan_slot){N, H, W, ++*clock, e2g_infer_new(rt, N, H, W)};
    return victim->inf;
}

static void *worker_main(void *arg) {
    e2g_batcher *b = arg;
    job **batch = e2g_xmalloc(b->cfg.max_batch * sizeof *batch);
    e2g_edit *edits = e2g_xmalloc(b->cfg.max_batch * sizeof *edits);
    plan_slot plans[PLAN_CACHE] = {{0}};
    unsigned long clock = 0;
    pthread_mutex_lock(&b->mu);
    int n;
    while ((n = take_batch(b, batch)) > 0) {
        pthread_mutex_unlock(&b->mu);
        int pw = batch[0]->t.pw, ph = batch[0]->t.ph;
        size_t img = (size_t)pw * ph * 3;
        float *x = e2g_xmalloc(n * img * sizeof(float)), *y = e2g_xmalloc(n * img * sizeof(float));
        for (int i = 0; i < n; i++) {
            memcpy(x + i * img, batch[i]->t.x, img * sizeof(float));
            edits[i] = batch[i]->edit;
        }
        e2g_infer_run(plan_for(b->runtime, plans, &clock, n, ph, pw), y, x, edits, 0);
        pthread_mutex_lock(&b->mu);
        double t = now_s();
        for (int i = 0; i < n; i++) {
            memcpy(batch[i]->t.y, y + i * img, img * sizeof(float));
            batch[i]->state = JOB_DONE, batch[i]->finished = t;
        }
        b->stats.batches++, b->stats.images += n;
        b->stats.batch_size_hist[hist_bucket(n)]++;
        pthread_cond_broadcast(&b->done);
        free(x), free(y);
    }
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < PLAN_CACHE; i++) e2g_infer_free(plans[i].inf);
    free(batch), free(edits);
    return NULL;
}

e2g_batcher *e2g_batcher_new(const e2g_runtime *rt, const e2g_batcher_config *cfg) {
    e2g_batcher *b = e2g_xcalloc(1, sizeof *b);
    b->runtime = rt, b->cfg = *cfg;
    if (b->cfg.max_batch < 1) b->cfg.max_batch = 1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->work, &attr);
    pthread_cond_init(&b->done, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&b->worker, NULL, worker_main, b) != 0) {
        fprintf(stderr, "e2gan: cannot start the batch worker\n");
        abort();
    }
    return b;
}

void e2g_batcher_free(e2g_batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->worker, NULL);
    pthread_cond_destroy(&b->work), pthread_cond_destroy(&b->done);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

e2g_edit_status e2g_batcher_edit(e2g_batcher *b, e2g_image *im, const e2g_request *req,
                                 long timeout_ms, e2g_edit_timing *timing) {
    job j = {0};
    if (e2g_image_pad(&j.t, im, 8, NULL)) return E2G_EDIT_BUSY; /* out of memory */
    j.edit = req->edit;
    e2g_edit_status status = E2G_EDIT_OK;
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        status = E2G_EDIT_STOPPED;
    } else if (b->depth >= b->cfg.queue_capacity) {
        b->stats.refused++;
        status = E2G_EDIT_BUSY;
    } else {
        j.enqueued = now_s();
        if (b->tail) b->tail->next = &j;
        else b->head = &j;
        b->tail = &j;
        b->depth++;
        pthread_cond_signal(&b->work);
        struct timespec deadline = abs_deadline(j.enqueued + timeout_ms * 1e-3);
        while (j.state != JOB_DONE) {
            if (status == E2G_EDIT_TIMEOUT) { /* running past its deadline: wait, then drop */
                pthread_cond_wait(&b->done, &b->mu);
                continue;
            }
            if (pthread_cond_timedwait(&b->done, &b->mu, &deadline) != ETIMEDOUT) continue;
            status = E2G_EDIT_TIMEOUT;
            if (j.state == JOB_QUEUED) {
                unlink_job(b, &j);
                break;
            }
        }
        if (status == E2G_EDIT_TIMEOUT) b->stats.timeouts++;
    }
    pthread_mutex_unlock(&b->mu);
    if (status == E2G_EDIT_OK) {
        e2g_image_unpad(im, &j.t);
        if (timing) {
            timing->queue_ms = (j.started - j.enqueued) * 1e3;
            timing->compute_ms = (j.finished - j.started) * 1e3;
            timing->batch_size = j.batch_size;
        }
    }
    e2g_image_padded_free(&j.t);
    return status;
}

void e2g_batcher_stats_get(e2g_batcher *b, e2g_batcher_stats *s) {
    pthread_mutex_lock(&b->mu);
    *s = b->stats;
    s->queue_depth = b->depth;
    pthread_mutex_unlock(&b->mu);
}
