/* batcher.h — dynamic batching of edit requests: callers queue an image
 * and its resolved edit and block; one worker thread takes up to max_batch
 * queued requests of the same (padded) size — any mix of concepts and
 * adapters — or waits at most max_delay_us for more, runs the engine once
 * for all of them and wakes each caller.  The queue is bounded: a full
 * queue is refused at once (the server answers 503 with Retry-After). */
#ifndef E2G_BATCHER_H
#define E2G_BATCHER_H

#include "adapter.h"
#include "image.h"
#include "infer.h"

typedef struct e2g_batcher e2g_batcher;

typedef struct {
    int max_batch;          /* images per engine call */
    long max_delay_us;      /* longest wait for a batch to fill */
    int queue_capacity;     /* queued requests before refusing */
} e2g_batcher_config;

e2g_batcher *e2g_batcher_new(const e2g_runtime *rt, const e2g_batcher_config *cfg);
/* Stops taking requests, finishes the queued ones, joins the worker. */
void e2g_batcher_free(e2g_batcher *b);

typedef enum {
    E2G_EDIT_OK = 0,
    E2G_EDIT_BUSY,    /* queue full: retry later */
    E2G_EDIT_TIMEOUT, /* not done within timeout_ms (the result is dropped) */
    E2G_EDIT_STOPPED, /* the server is shutting down */
} e2g_edit_status;

typedef struct {
    double queue_ms, compute_ms; /* waiting for a batch; the engine call */
    int batch_size;              /* images in the batch it ran in */
} e2g_edit_timing;

/* Edits im in place with req (whose adapters the caller keeps pinned until
 * this returns).  Blocks until done, refused, timed out or stopped. */
e2g_edit_status e2g_batcher_edit(e2g_batcher *b, e2g_image *im, const e2g_request *req,
                                 long timeout_ms, e2g_edit_timing *timing);

typedef struct {
    long batches, images, refused, timeouts;
    int queue_depth;
    long batch_size_hist[9]; /* batches of 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65-128, more */
} e2g_batcher_stats;
void e2g_batcher_stats_get(e2g_batcher *b, e2g_batcher_stats *s);

#endif
