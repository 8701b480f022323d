/* metrics.c — counters and fixed-bucket histograms under one mutex (each
 * update is a few additions; contention is negligible next to an edit),
 * and their rendering as Prometheus text. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metrics.h"

static const char *const route_names[E2G_ROUTE_COUNT] = {
    "edits", "concepts", "concept", "finetunes", "healthz", "readyz", "metrics", "openapi", "static",
    "preflight", "other"};

/* Upper bounds in seconds; +Inf is implicit. */
static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                0.5,   1,      2.5,   5,    10,    30,    60};
#define N_BOUNDS (int)(sizeof bounds / sizeof bounds[0])

typedef struct {
    long counts[N_BOUNDS + 1]; /* per bucket, not cumulative; last is +Inf */
    long count;
    double sum;
} histogram;

#define STATUS_MIN 100
#define STATUS_N 500

struct e2g_metrics {
    pthread_mutex_t lock;
    long requests[E2G_ROUTE_COUNT][STATUS_N];
    histogram duration[E2G_ROUTE_COUNT];
    histogram queue, compute;
};

e2g_metrics *e2g_metrics_new(void) {
    e2g_metrics *m = e2g_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void e2g_metrics_free(e2g_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void observe(histogram *h, double v) {
    int i = 0;
    while (i < N_BOUNDS && v > bounds[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void e2g_metrics_request(e2g_metrics *m, e2g_route_label route, int status, double seconds) {
    if (route < 0 || route >= E2G_ROUTE_COUNT) route = E2G_ROUTE_OTHER;
    pthread_mutex_lock(&m->lock);
    if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_N) m->requests[route][status - STATUS_MIN]++;
    observe(&m->duration[route], seconds);
    pthread_mutex_unlock(&m->lock);
}

void e2g_metrics_edit(e2g_metrics *m, double queue_seconds, double compute_seconds) {
    pthread_mutex_lock(&m->lock);
    observe(&m->queue, queue_seconds);
    observe(&m->compute, compute_seconds);
    pthread_mutex_unlock(&m->lock);
}

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *sb, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
        va_end(ap);
        E2G_ASSERT(n >= 0);
        if ((size_t)n < sb->cap - sb->len) {
            sb->len += (size_t)n;
            return;
        }
        sb->cap = 2 * sb->cap + (size_t)n;
        char *grown = realloc(sb->buf, sb->cap);
        E2G_ASSERT(grown);
        sb->buf = grown;
    }
}

static void meta(strbuf *sb, const char *name, const char *type, const char *help) {
    sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One scalar metric: its HELP/TYPE lines and its value. */
static void metric(strbuf *sb, const char *name, const char *type, const char *help, long long value) {
    meta(sb, name, type, help);
    sb_printf(sb, "%s %lld\n", name, value);
}

/* One histogram's series; labels is "" or `route="edits",` (with the
 * trailing comma). */
static void render_histogram(strbuf *sb, const char *name, const char *labels, const histogram *h) {
    long cumulative = 0;
    for (int i = 0; i <= N_BOUNDS; i++) {
        cumulative += h->counts[i];
        if (i < N_BOUNDS)
            sb_printf(sb, "%s_bucket{%sle=\"%g\"} %ld\n", name, labels, bounds[i], cumulative);
        else
            sb_printf(sb, "%s_bucket{%sle=\"+Inf\"} %ld\n", name, labels, cumulative);
    }
    char braces[128] = "";
    size_t ll = strlen(labels);
    if (ll) snprintf(braces, sizeof braces, "{%.*s}", (int)(ll - 1), labels);
    sb_printf(sb, "%s_sum%s %.6f\n%s_count%s %ld\n", name, braces, h->sum, name, braces, h->count);
}

char *e2g_metrics_render(e2g_metrics *m, const e2g_metrics_gauges *g, size_t *len) {
    strbuf sb = {e2g_xmalloc(16384), 0, 16384};
    sb.buf[0] = '\0';
    pthread_mutex_lock(&m->lock);
    meta(&sb, "e2gan_http_requests_total", "counter", "HTTP requests by route and status.");
    for (int r = 0; r < E2G_ROUTE_COUNT; r++)
        for (int s = 0; s < STATUS_N; s++)
            if (m->requests[r][s])
                sb_printf(&sb, "e2gan_http_requests_total{route=\"%s\",code=\"%d\"} %ld\n",
                          route_names[r], s + STATUS_MIN, m->requests[r][s]);
    meta(&sb, "e2gan_http_request_duration_seconds", "histogram",
         "Time from the request's headers to its response, by route.");
    for (int r = 0; r < E2G_ROUTE_COUNT; r++) {
        if (!m->duration[r].count) continue;
        char labels[64];
        snprintf(labels, sizeof labels, "route=\"%s\",", route_names[r]);
        render_histogram(&sb, "e2gan_http_request_duration_seconds", labels, &m->duration[r]);
    }
    meta(&sb, "e2gan_queue_wait_seconds", "histogram", "Time an edit waited for its batch.");
    render_histogram(&sb, "e2gan_queue_wait_seconds", "", &m->queue);
    meta(&sb, "e2gan_compute_seconds", "histogram", "Time of the engine call an edit ran in.");
    render_histogram(&sb, "e2gan_compute_seconds", "", &m->compute);
    pthread_mutex_unlock(&m->lock);

    metric(&sb, "e2gan_ready", "gauge", "1 once the model is loaded and the server takes edits.", (long long)(g->ready));
    metric(&sb, "e2gan_requests_in_flight", "gauge", "Requests being received or answered.", (long long)(g->in_flight));
    if (g->backend) {
        meta(&sb, "e2gan_engine_info", "gauge", "Where edits run: the backend and the CPU's compute precision.");
        sb_printf(&sb, "e2gan_engine_info{backend=\"%s\",precision=\"%s\"} 1\n", g->backend, g->precision);
    }
    metric(&sb, "e2gan_device_dead", "gauge",
           "1 once the GPU failed for good (a sticky CUDA error) and every edit runs on the CPU.",
           (long long)(g->device_dead));

    if (g->batcher) {
        const e2g_batcher_stats *b = g->batcher;
        static const char *const le[] = {"1", "2", "4", "8", "16", "32", "64", "128", "+Inf"};
        meta(&sb, "e2gan_batch_size", "histogram", "Images per engine call.");
        long cumulative = 0;
        for (int i = 0; i < 9; i++) {
            cumulative += b->batch_size_hist[i];
            sb_printf(&sb, "e2gan_batch_size_bucket{le=\"%s\"} %ld\n", le[i], cumulative);
        }
        sb_printf(&sb, "e2gan_batch_size_sum %ld\ne2gan_batch_size_count %ld\n", b->images, b->batches);
        metric(&sb, "e2gan_batches_total", "counter", "Engine calls.", (long long)(b->batches));
        metric(&sb, "e2gan_batched_images_total", "counter", "Images edited by the engine.", (long long)(b->images));
        metric(&sb, "e2gan_queue_refused_total", "counter", "Edits refused because the queue was full.", (long long)(b->refused));
        metric(&sb, "e2gan_queue_timeouts_total", "counter", "Edits that did not finish in time.", (long long)(b->timeouts));
        metric(&sb, "e2gan_queue_depth", "gauge", "Edits waiting for the engine.", (long long)(b->queue_depth));
    }
    if (g->registry) {
        const e2g_registry_stats *r = g->registry;
        metric(&sb, "e2gan_adapter_cache_hits_total", "counter", "Adapter look-ups served from memory.", (long long)(r->hits));
        metric(&sb, "e2gan_adapter_cache_misses_total", "counter", "Adapter look-ups that loaded the file.", (long long)(r->misses));
        metric(&sb, "e2gan_adapter_cache_evictions_total", "counter", "Adapters dropped from memory.", (long long)(r->evictions));
        metric(&sb, "e2gan_adapter_cache_bytes", "gauge", "Bytes of adapters in memory.", (long long)(r->cached_bytes));
        metric(&sb, "e2gan_adapter_cache_limit_bytes", "gauge", "The cache's bound.", (long long)(r->cache_limit));
        metric(&sb, "e2gan_adapters", "gauge", "Adapters in the adapter directory.", (long long)(r->adapters));
        metric(&sb, "e2gan_adapters_cached", "gauge", "Adapters in memory.", (long long)(r->cached));
    }
    if (g->jobs) {
        meta(&sb, "e2gan_finetune_jobs", "gauge", "Fine-tuning jobs by state.");
        for (int s = 0; s < E2G_JOB_STATES; s++)
            sb_printf(&sb, "e2gan_finetune_jobs{state=\"%s\"} %d\n", e2g_job_state_names[s], g->jobs[s]);
    }
    *len = sb.len;
    return sb.buf;
}
