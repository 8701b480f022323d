/* infer.c — runtimes, inference plans and whole-image edits (see infer.h). */
#include "infer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Device memory for adapters and merged weight sets. */
#define DEVICE_ADAPTER_CACHE_BYTES ((size_t)512 << 20)

/* A device's health as the runtime sees it: alive, being marked dead by
 * the one thread that saw it die, or dead with the reason written.  Kept
 * apart from the runtime, which e2g_infer_run reads through a const
 * pointer from several threads. */
enum { DEVICE_ALIVE, DEVICE_MARKING, DEVICE_DEAD };
typedef struct {
    atomic_int state;
    char why[E2G_ERR_LEN];
} device_health;

struct e2g_runtime {
    const e2g_model *model;
    const e2g_backend *backend;
    void *state;
    void *cpu; /* the CPU instance: the backend's own, or the fallback of a device */
    device_health *health;
};

/* A runtime on chosen (NULL: the CPU) with its instance state. */
static e2g_runtime *runtime_make(const e2g_model *m, const e2g_backend *chosen, void *state) {
    e2g_runtime *rt = e2g_xcalloc(1, sizeof *rt);
    const e2g_backend *cpu = e2g_cpu_backend();
    rt->model = m;
    cpu->create(&rt->cpu, &m->cfg, &m->params, 0, NULL); /* no device: cannot fail */
    rt->backend = chosen ? chosen : cpu;
    rt->state = chosen ? state : rt->cpu;
    rt->health = e2g_xcalloc(1, sizeof *rt->health);
    atomic_init(&rt->health->state, DEVICE_ALIVE);
    return rt;
}

/* b's instance for m, or -1 with msg. */
static int device_create(const e2g_backend *b, const e2g_model *m, void **state, char *msg) {
    if (b->available(msg) != 1 || b->supports(&m->cfg, msg) != 1) return -1;
    return b->create(state, &m->cfg, &m->params, DEVICE_ADAPTER_CACHE_BYTES, msg) ? -1 : 0;
}

int e2g_runtime_new(e2g_runtime **out, const e2g_model *m, const char *mode, char *msg) {
    *out = NULL;
    e2g_device_mode dm;
    if (e2g_device_mode_parse(mode, &dm, msg)) return -1;
    const e2g_backend *cand[8], *chosen = NULL;
    void *state = NULL;
    int n = e2g_backend_candidates(dm, cand, 8, msg);
    for (int i = 0; i < n && !chosen; i++)
        if (device_create(cand[i], m, &state, msg) == 0) chosen = cand[i];
    if (!chosen && dm != E2G_DEVICE_AUTO && dm != E2G_DEVICE_CPU) return -1;
    if (chosen) snprintf(msg, E2G_ERR_LEN, "%s", chosen->device);
    *out = runtime_make(m, chosen, state);
    return chosen != NULL;
}

int e2g_runtime_new_on(e2g_runtime **out, const e2g_model *m, const e2g_backend *b, char *msg) {
    *out = NULL;
    void *state = NULL;
    if (device_create(b, m, &state, msg)) return -1;
    snprintf(msg, E2G_ERR_LEN, "%s", b->device);
    *out = runtime_make(m, b, state);
    return 1;
}

void e2g_runtime_free(e2g_runtime *rt) {
    if (!rt) return;
    if (rt->state != rt->cpu) rt->backend->destroy(rt->state);
    e2g_cpu_backend()->destroy(rt->cpu);
    free(rt->health);
    free(rt);
}

/* Whether batches still go to the device. */
static int on_device(const e2g_runtime *rt) {
    return rt->state != rt->cpu && atomic_load(&rt->health->state) == DEVICE_ALIVE;
}

const char *e2g_runtime_name(const e2g_runtime *rt) {
    return rt->state == rt->cpu || on_device(rt) ? rt->backend->name : e2g_cpu_backend()->name;
}

int e2g_runtime_device_dead(const e2g_runtime *rt, char *why, size_t len) {
    int st = atomic_load(&rt->health->state);
    if (why && len) snprintf(why, len, "%s", st == DEVICE_DEAD ? rt->health->why : "");
    return st != DEVICE_ALIVE;
}

/* After a failed device batch: when the backend says its device is gone,
 * the first thread to see it marks the runtime dead and logs it once. */
static void check_device(const e2g_runtime *rt) {
    char why[E2G_ERR_LEN] = "";
    if (!rt->backend->healthy || rt->backend->healthy(rt->state, why)) return;
    int alive = DEVICE_ALIVE;
    if (!atomic_compare_exchange_strong(&rt->health->state, &alive, DEVICE_MARKING)) return;
    snprintf(rt->health->why, sizeof rt->health->why, "%s", why[0] ? why : "the device stopped answering");
    atomic_store(&rt->health->state, DEVICE_DEAD);
    fprintf(stderr, "e2gan: %s is unusable (%s): every batch runs on the CPU from now on\n", rt->backend->device,
            rt->health->why);
}

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
    if (on_device(rt)) {
        if (rt->backend->run(rt->state, y, x, edits, inf->N, inf->H, inf->W, merged, err) == 0) return;
        fprintf(stderr, "e2gan: %s batch failed, running it on the CPU: %s\n", rt->backend->name, err);
        check_device(rt);
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
