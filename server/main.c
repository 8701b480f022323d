/* main.c — e2gan-server: reads the configuration, starts HTTP at once (so
 * /healthz answers and /readyz says "loading"), loads the base model, the
 * adapter registry and the batcher, then serves until SIGINT or SIGTERM.
 * Shutdown stops accepting connections, lets the requests in progress
 * finish (drain_timeout_s, then connections are closed), and exits 0. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batcher.h"
#include "common.h"
#include "config.h"
#include "http.h"
#include "infer.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "model_io.h"
#include "precision.h"
#include "registry.h"
#include "routes.h"

extern char **environ;

/* Fine-tuning jobs, when the admin routes and finetune are on and the
 * trainer is there; otherwise the server serves without them (POST
 * /v1/finetunes answers 503). */
static void open_jobs(e2g_service *svc, const e2g_server_config *cfg) {
    char trainer[PATH_MAX], err[E2G_ERR_LEN];
    if (!cfg->admin_token[0] || !cfg->finetune) return;
    if (cfg->trainer[0]) {
        snprintf(trainer, sizeof trainer, "%s", cfg->trainer);
    } else { /* e2gan beside this executable */
        ssize_t n = readlink("/proc/self/exe", trainer, sizeof trainer - 8);
        trainer[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(trainer, '/');
        snprintf(slash ? slash + 1 : trainer, 8, "e2gan");
    }
    e2g_jobs_config jc = {cfg->jobs_dir, trainer, cfg->model, (int)cfg->finetune_threads,
                          (int)cfg->finetune_nice, (int)cfg->finetune_attempts};
    if (e2g_jobs_open(&svc->jobs, &jc, svc->registry, err) != 0)
        E2G_LOG(E2G_LOG_WARN, "fine-tuning jobs are off: %s", err);
}

/* Loads what the edits need; the service turns ready only when all of it
 * is there. */
static int load_service(e2g_service *svc, const e2g_server_config *cfg, char *err) {
    double t0 = e2g_now();
    if (e2g_model_load(&svc->model, cfg->model, err) != 0) return -1;
    char device[E2G_ERR_LEN];
    if (e2g_precision_setup(cfg->precision, err)) return -1;
    if (e2g_runtime_new(&svc->runtime, svc->model, NULL, device) < 0) return e2g_fail(err, "GPU: %s", device);
    E2G_LOG(E2G_LOG_INFO, "inference on the %s: %s; CPU precision %s", e2g_runtime_name(svc->runtime), device,
            e2g_precision_describe());
    if (e2g_registry_open(&svc->registry, svc->model, cfg->adapters, (size_t)cfg->adapter_cache, err) != 0)
        return -1;
    if (e2g_registry_watch(svc->registry, (int)cfg->adapter_rescan_s, err) != 0)
        E2G_LOG(E2G_LOG_WARN, "%s", err);
    e2g_batcher_config bc = {(int)cfg->max_batch, (long)cfg->batch_delay_us, (int)cfg->queue_capacity};
    svc->batcher = e2g_batcher_new(svc->runtime, &bc);
    if (!svc->batcher) return e2g_fail(err, "cannot start the batcher");
    open_jobs(svc, cfg);
    e2g_registry_stats rs;
    e2g_registry_stats_get(svc->registry, &rs);
    E2G_LOG(E2G_LOG_INFO, "ready: model %s (ngf %d, %d base concepts), %d adapters in %s, %.0f ms",
            cfg->model, svc->model->cfg.ngf, svc->model->cfg.n_concepts, rs.adapters, cfg->adapters,
            (e2g_now() - t0) * 1e3);
    return 0;
}

static void unload_service(e2g_service *svc) {
    e2g_jobs_close(svc->jobs);
    e2g_batcher_free(svc->batcher);
    e2g_registry_close(svc->registry);
    e2g_runtime_free(svc->runtime);
    e2g_model_free(svc->model);
    svc->jobs = NULL;
    svc->batcher = NULL;
    svc->registry = NULL;
    svc->runtime = NULL;
    svc->model = NULL;
}

int main(int argc, char **argv) {
    e2g_server_config cfg;
    char cfg_err[512];
    int action = e2g_config_load(&cfg, argc, argv, environ, cfg_err, sizeof cfg_err);
    if (action < 0) {
        fprintf(stderr, "e2gan-server: %s\n", cfg_err);
        e2g_config_free(&cfg);
        return 2;
    }
    if (action == E2G_CONFIG_HELP || action == E2G_CONFIG_CHECK) {
        if (action == E2G_CONFIG_HELP) e2g_config_help(stdout, "e2gan-server");
        else e2g_config_print(stdout, &cfg);
        e2g_config_free(&cfg);
        return 0;
    }
    e2g_log_threshold = (e2g_log_level)cfg.log_level;

    /* Every thread started from here on (MHD, OpenMP, the batcher) inherits
     * this mask, so the two signals reach sigwait below and nothing else. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    e2g_set_threads((int)cfg.threads);

    e2g_service svc = {0};
    svc.cfg = &cfg;
    svc.metrics = e2g_metrics_new();
    atomic_init(&svc.state, E2G_STATE_LOADING);
    atomic_init(&svc.in_flight, 0);
    if (!realpath(cfg.static_dir, svc.static_root)) {
        E2G_LOG(E2G_LOG_WARN, "static folder %s not found: / and static files answer 404", cfg.static_dir);
        svc.static_root[0] = '\0';
    }

    char err[E2G_ERR_LEN];
    e2g_http *http = NULL;
    int status = 1;
    if (e2g_http_start(&http, &svc, &cfg, err) != 0) {
        E2G_LOG(E2G_LOG_ERROR, "%s", err);
        goto out;
    }
    char host[256];
    int port;
    e2g_config_split_listen(cfg.listen, host, sizeof host, &port);
    E2G_LOG(E2G_LOG_INFO, "listening on %s%s%s:%d (admin routes %s, CORS %s)",
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", e2g_http_port(http),
            cfg.admin_token[0] ? "enabled" : "disabled", cfg.cors_origins[0] ? cfg.cors_origins : "off");

    if (load_service(&svc, &cfg, err) != 0) {
        E2G_LOG(E2G_LOG_ERROR, "cannot load: %s", err);
        e2g_http_stop(http);
        unload_service(&svc);
        goto out;
    }
    atomic_store(&svc.state, E2G_STATE_READY);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    E2G_LOG(E2G_LOG_INFO, "%s: shutting down, %d requests in progress", strsignal(sig),
            atomic_load(&svc.in_flight));
    atomic_store(&svc.state, E2G_STATE_STOPPING);
    e2g_http_quiesce(http);
    double deadline = e2g_now() + (double)cfg.drain_timeout_s;
    while (atomic_load(&svc.in_flight) > 0 && e2g_now() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&svc.in_flight);
    if (left) E2G_LOG(E2G_LOG_WARN, "drain timeout: %d requests still in progress", left);
    /* Closes every connection; a handler still in the engine finishes
     * first (the batcher bounds it by request_timeout_ms), so nothing the
     * handlers use is freed under them. */
    e2g_http_stop(http);
    unload_service(&svc);
    E2G_LOG(E2G_LOG_INFO, "stopped");
    status = 0;
out:
    e2g_metrics_free(svc.metrics);
    e2g_config_free(&cfg);
    return status;
}
