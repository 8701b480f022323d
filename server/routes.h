/* routes.h — the service's state and its HTTP routes (openapi.yaml is the
 * contract).  http.c calls e2g_routes_begin with a request's headers, reads
 * the body if the route wants it, then calls e2g_routes_finish. */
#ifndef E2G_ROUTES_H
#define E2G_ROUTES_H

#include <limits.h>
#include <stdatomic.h>

#include "batcher.h"
#include "config.h"
#include "http.h"
#include "jobs.h"
#include "metrics.h"
#include "model_io.h"
#include "registry.h"

typedef enum { E2G_STATE_LOADING, E2G_STATE_READY, E2G_STATE_STOPPING } e2g_service_state;

struct e2g_service {
    const e2g_server_config *cfg;
    e2g_model *model;       /* NULL while loading */
    e2g_runtime *runtime;   /* the model on its backend; NULL while loading */
    e2g_registry *registry; /* NULL while loading */
    e2g_batcher *batcher;   /* NULL while loading */
    e2g_jobs *jobs;         /* NULL while loading, or when fine-tuning is off */
    e2g_metrics *metrics;
    atomic_int state;     /* e2g_service_state */
    atomic_int in_flight; /* requests between their headers and their completion */
    char static_root[PATH_MAX]; /* realpath of cfg->static_dir; "" when missing */
};

/* Sees the request line and headers before any body byte is read.  Either
 * answers at once (unknown route, 405, auth, a wrong Content-Type, not
 * ready; rq->resp.status set) or sets rq->route and rq->body_wanted and
 * returns with rq->resp.status 0, so the body is read. */
void e2g_routes_begin(e2g_service *svc, e2g_http_request *rq);
/* Answers a request whose body (if wanted) is complete in rq->body. */
void e2g_routes_finish(e2g_service *svc, e2g_http_request *rq);
/* Adds the headers every response carries (CORS). */
void e2g_routes_decorate(e2g_service *svc, e2g_http_request *rq);

#endif
