/* metrics.h — the server's counters and histograms, rendered in the
 * Prometheus text format (version 0.0.4) for GET /metrics.  Request
 * counts are kept per route label and status; the batcher's and the
 * registry's own statistics are read at render time.  Thread-safe. */
#ifndef E2G_METRICS_H
#define E2G_METRICS_H

#include "batcher.h"
#include "jobs.h"
#include "registry.h"

/* Route labels: a fixed, small set, so label cardinality stays bounded
 * whatever paths clients send. */
typedef enum {
    E2G_ROUTE_EDITS,
    E2G_ROUTE_CONCEPTS,
    E2G_ROUTE_CONCEPT,
    E2G_ROUTE_FINETUNES,
    E2G_ROUTE_HEALTHZ,
    E2G_ROUTE_READYZ,
    E2G_ROUTE_METRICS,
    E2G_ROUTE_OPENAPI,
    E2G_ROUTE_STATIC,
    E2G_ROUTE_PREFLIGHT,
    E2G_ROUTE_OTHER,
    E2G_ROUTE_COUNT
} e2g_route_label;

typedef struct e2g_metrics e2g_metrics;

e2g_metrics *e2g_metrics_new(void);
void e2g_metrics_free(e2g_metrics *m);

/* One finished request. */
void e2g_metrics_request(e2g_metrics *m, e2g_route_label route, int status, double seconds);
/* One finished edit's time waiting for its batch and in the engine. */
void e2g_metrics_edit(e2g_metrics *m, double queue_seconds, double compute_seconds);

/* Gauges and component statistics read when rendering; batcher and
 * registry are NULL while the model is loading. */
typedef struct {
    int ready;
    int in_flight;
    const e2g_batcher_stats *batcher;
    const e2g_registry_stats *registry;
    const int *jobs; /* fine-tuning jobs per e2g_job_state, or NULL */
    const char *backend;   /* where edits run ("cpu", "cuda"), or NULL while loading */
    const char *precision; /* the CPU's compute precision ("fp32", "bf16") */
    int device_dead; /* 1 once the GPU failed for good and edits run on the CPU */
} e2g_metrics_gauges;

/* The exposition text, malloc'd (caller frees); *len gets its length. */
char *e2g_metrics_render(e2g_metrics *m, const e2g_metrics_gauges *g, size_t *len);

#endif
