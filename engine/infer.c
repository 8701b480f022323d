/* infer.c — runtimes, inference plans and whole-image edits (see infer.h). */
#include "infer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Device memory for adapters and merged weight sets. */
#define DEVICE_ADAPTER_CACHE_BYTES ((size_t)512 << 20)

struct e2g_runtime {
    const e2g_model *model;
    const e2g_backend *backend;
    void *state;
    void *cpu; /* the CPU instance: the backend's own, or the fallback of a device */
};

int e2g_runtime_new(e2g_runtime **out, const e2g_model *m, const char *mode, char *msg) {
    *out = NULL;
    e2g_device_mode dm;
    if (e2g_device_mode_parse(mode, &dm, msg)) return -1;
    const e2g_backend *cand[8], *chosen = NULL;
    void *state = NULL;
    int n = e2g_backend_candidates(dm, cand, 8, msg);
    for (int i = 0; i < n && !chosen; i++) {
        if (cand[i]->available(msg) != 1 || cand[i]->supports(&m->cfg, msg) != 1) continue;
        if (cand[i]->create(&state, &m->cfg, &m->params, DEVICE_ADAPTER_CACHE_BYTES, msg) == 0) chosen = cand[i];
    }
    if (!chosen && dm != E2G_DEVICE_AUTO && dm != E2G_DEVICE_CPU) return -1;
    e2g_runtime *rt = e2g_xcalloc(1, sizeof *rt);
    const e2g_backend *cpu = e2g_cpu_backend();
    rt->model = m;
    cpu->create(&rt->cpu, &m->cfg, &m->params, 0, NULL); /* no device: cannot fail */
    rt->backend = chosen ? chosen : cpu;
    rt->state = chosen ? state : rt->cpu;
    if (chosen) snprintf(msg, E2G_ERR_LEN, "%s", chosen->device);
    *out = rt;
    return chosen != NULL;
}

void e2g_runtime_free(e2g_runtime *rt) {
    if (!rt) return;
    if (rt->state != rt->cpu) rt->backend->destroy(rt->state);
    e2g_cpu_backend()->destroy(rt->cpu);
    free(rt);
}

const char *e2g_runtime_name(const e2g_runtime *rt) { return rt->backend->name; }
const e2g_model *e2g_runtime_model(const e2g_runtime *rt) { return rt->model; }
const e2g_backend *e2g_runtime_backend(const e2g_runtime *rt) { return rt->backend; }
void *e2g_runtime_state(const e2g_runtime *rt) { return rt->state; }

struct e2g_infer {
    const e2g_runtime *rt;
    int N, H, W;
};

e2g_infer *e2g_infer_new(const e2g_runtime *rt, int N, int H, int W) {
    e2g_infer *inf = e2g_xcalloc(1, sizeof *inf);
    inf->rt = rt, inf->N = N, inf->H = H, inf->W = W;
    return inf;
}

void e2g_infer_free(e2g_infer *inf) { free(inf); }

void e2g_infer_run(e2g_infer *inf, float *y, const float *x, const e2g_edit *edits, int merged) {
    const e2g_runtime *rt = inf->rt;
    char err[E2G_ERR_LEN];
    if (rt->state != rt->cpu) {
        if (rt->backend->run(rt->state, y, x, edits, inf->N, inf->H, inf->W, merged, err) == 0) return;
        fprintf(stderr, "e2gan: %s batch failed, running it on the CPU: %s\n", rt->backend->name, err);
    }
    /* the CPU backend does not fail */
    e2g_cpu_backend()->run(rt->cpu, y, x, edits, inf->N, inf->H, inf->W, merged, err);
}

int e2g_infer_image(e2g_image *im, const e2g_runtime *rt, const e2g_edit *edit, int merged, char *err) {
    e2g_image_padded p;
    if (e2g_image_pad(&p, im, 8, err)) return -1;
    e2g_infer *inf = e2g_infer_new(rt, 1, p.ph, p.pw);
    e2g_infer_run(inf, p.y, p.x, edit, merged);
    e2g_infer_free(inf);
    e2g_image_unpad(im, &p);
    e2g_image_padded_free(&p);
    return 0;
}
