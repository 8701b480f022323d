/* backend_cpu.c — the CPU backend (oneDNN, fp32): the memory-lean forward
 * where the model allows it, else planned activations, kept for the last
 * (batch, height, width) and reused; merged LoRA into a private copy of
 * the touched weights for the call.  Always registered, and the fallback
 * when a device call fails (infer.c). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "common.h"

typedef struct {
    const e2g_gen_config *cfg;
    const e2g_gen_params *p; /* read at each call: the model's weights as they are */
    pthread_mutex_t mu;      /* guards the plan below */
    e2g_gen_acts *acts;      /* paper-like form only: its ends need whole images */
    int N, H, W;
} cpu_state;

static int cpu_available(char *err) {
    (void)err;
    return 1;
}

static int cpu_describe(char *msg, size_t len) {
    snprintf(msg, len, "%d threads (oneDNN)", e2g_get_threads());
    return 1;
}

static int cpu_supports(const e2g_gen_config *cfg, char *err) {
    (void)cfg, (void)err;
    return 1;
}

static int cpu_create(void **state, const e2g_gen_config *cfg, const e2g_gen_params *p,
                      size_t cache_bytes, char *err) {
    (void)cache_bytes, (void)err;
    cpu_state *st = e2g_xcalloc(1, sizeof *st);
    st->cfg = cfg, st->p = p;
    pthread_mutex_init(&st->mu, NULL);
    *state = st;
    return 0;
}

static void cpu_destroy(void *state) {
    cpu_state *st = state;
    if (!st) return;
    e2g_gen_acts_free(st->acts);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* The lean path where the model allows it, else planned activations: the
 * kept plan when it is free, a private one while another call holds it. */
static void forward(cpu_state *st, float *y, const e2g_gen_params *p, const float *x,
                    const e2g_edit *edits, int N, int H, int W) {
    if (!st->cfg->norm_ends) {
        e2g_gen_infer(st->cfg, y, p, x, edits, N, H, W);
        return;
    }
    if (pthread_mutex_trylock(&st->mu) == 0) {
        if (!st->acts || st->N != N || st->H != H || st->W != W) {
            e2g_gen_acts_free(st->acts);
            st->acts = e2g_gen_acts_new(st->cfg, N, H, W, 0);
            st->N = N, st->H = H, st->W = W;
        }
        e2g_gen_forward(st->acts, y, p, x, edits);
        pthread_mutex_unlock(&st->mu);
        return;
    }
    e2g_gen_acts *acts = e2g_gen_acts_new(st->cfg, N, H, W, 0);
    e2g_gen_forward(acts, y, p, x, edits);
    e2g_gen_acts_free(acts);
}

static int cpu_run(void *state, float *y, const float *x, const e2g_edit *edits, int N, int H, int W,
                   int merged, char *err) {
    (void)err;
    cpu_state *st = state;
    if (!merged || edits[0].n_terms == 0) {
        forward(st, y, st->p, x, edits, N, H, W);
        return 0;
    }
    e2g_gen_params params;
    float *private_weights = e2g_gen_merge(st->cfg, &params, st->p, edits[0].terms, edits[0].n_terms);
    e2g_edit *plain = e2g_xmalloc(N * sizeof *plain);
    for (int n = 0; n < N; n++) {
        plain[n] = edits[n];
        plain[n].n_terms = 0;
    }
    forward(st, y, &params, x, plain, N, H, W);
    free(plain);
    free(private_weights);
    return 0;
}

static const e2g_backend cpu_backend = {
    .name = "cpu",
    .device = "the CPU",
    .available = cpu_available,
    .describe = cpu_describe,
    .supports = cpu_supports,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .run = cpu_run,
};

const e2g_backend *e2g_cpu_backend(void) { return &cpu_backend; }
