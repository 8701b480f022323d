/* generator.c — E²GAN-G (docs/architecture.md §1) on the CPU: parameter
 * initialisation, LoRA adapters (allocation and merging), and the planned
 * forward and backward, which walk the generator's node table (net.c)
 * through planned.c.  The description without compute (widths, crucial
 * layers, the parameter table) is model_desc.c; the memory-lean inference
 * that serves requests is lean.c. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model.h"
#include "net.h"
#include "ops.h"
#include "planned.h"

/* ---- initialisation ----------------------------------------------------------- */

void e2g_init_tensors(const e2g_tensor_entry *t, int n, unsigned long long seed) {
    uint64_t state = seed;
    int fan_in = 1;
    for (int i = 0; i < n; i++) {
        float *x = *t[i].slot;
        switch (t[i].init) {
        case E2G_INIT_NORMAL:
            for (size_t j = 0; j < t[i].numel; j += 2) { /* Box–Muller */
                double u1 = e2g_uniform01(&state), u2 = e2g_uniform01(&state);
                double r = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300));
                x[j] = (float)(r * cos(2 * M_PI * u2));
                if (j + 1 < t[i].numel) x[j + 1] = (float)(r * sin(2 * M_PI * u2));
            }
            break;
        case E2G_INIT_ONES:
        case E2G_INIT_ZEROS:
            for (size_t j = 0; j < t[i].numel; j++) x[j] = t[i].init == E2G_INIT_ONES;
            break;
        case E2G_INIT_WEIGHT:
        case E2G_INIT_BIAS:
            if (t[i].init == E2G_INIT_WEIGHT) fan_in = (int)(t[i].numel / t[i].shape[0]);
            for (size_t j = 0; j < t[i].numel; j++)
                x[j] = (float)((2 * e2g_uniform01(&state) - 1) / sqrt((double)fan_in));
            break;
        }
    }
}

void e2g_gen_init(const e2g_gen_config *cfg, e2g_gen_params *p, unsigned long long seed) {
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    int n = e2g_gen_tensors(cfg, p, t);
    e2g_init_tensors(t, n, seed);
}

/* ---- LoRA adapters ------------------------------------------------------------- */

e2g_lora *e2g_lora_new(const e2g_gen_config *cfg, const int *rank, const float *scale) {
    static atomic_ullong next_id;
    e2g_lora *l = e2g_xcalloc(1, sizeof *l);
    l->id = atomic_fetch_add(&next_id, 1) + 1;
    size_t total = (size_t)cfg->ctx_tokens * e2g_gen_c4(cfg);
    for (int i = 0; i < E2G_N_CRUCIAL; i++) {
        e2g_layer_shape s;
        e2g_crucial_shape(cfg, i, &s);
        int kk = s.k ? s.k * s.k : 1;
        total += (size_t)rank[i] * s.cin * kk + (size_t)s.cout * rank[i];
    }
    l->memory = e2g_xcalloc(total, sizeof(float));
    l->numel = total;
    float *m = l->memory;
    for (int i = 0; i < E2G_N_CRUCIAL; i++) {
        e2g_layer_shape s;
        e2g_crucial_shape(cfg, i, &s);
        int kk = s.k ? s.k * s.k : 1;
        l->rank[i] = rank[i];
        l->scale[i] = scale[i];
        if (!rank[i]) continue;
        l->A[i] = m, m += (size_t)rank[i] * s.cin * kk;
        l->B[i] = m, m += (size_t)s.cout * rank[i];
    }
    l->concept = m;
    return l;
}

void e2g_lora_free(e2g_lora *l) {
    if (!l) return;
    free(l->memory);
    free(l);
}

float *e2g_gen_merge(const e2g_gen_config *cfg, e2g_gen_params *dst, const e2g_gen_params *base,
                     const e2g_lora_term *terms, int n_terms) {
    *dst = *base;
    e2g_net net;
    e2g_gen_net(&net, cfg);
    size_t total = 0;
    int touched[E2G_N_CRUCIAL] = {0};
    for (int layer = 0; layer < E2G_N_CRUCIAL; layer++) {
        for (int t = 0; t < n_terms; t++) touched[layer] |= terms[t].lora->rank[layer] > 0;
        if (!touched[layer]) continue;
        e2g_layer_shape s;
        e2g_crucial_shape(cfg, layer, &s);
        total += (size_t)s.cout * s.cin * (s.k ? s.k * s.k : 1);
    }
    if (!total) return NULL;
    float *memory = e2g_xmalloc(total * sizeof(float)), *m = memory;
    for (int layer = 0; layer < E2G_N_CRUCIAL; layer++) {
        if (!touched[layer]) continue;
        e2g_layer_shape s;
        e2g_crucial_shape(cfg, layer, &s);
        int fan = s.cin * (s.k ? s.k * s.k : 1);
        memcpy(m, *e2g_node_weight_slot(&net.node[e2g_net_crucial_node(&net, layer)], base), (size_t)s.cout * fan * sizeof(float));
        for (int t = 0; t < n_terms; t++) {
            const e2g_lora *l = terms[t].lora;
            if (!l->rank[layer]) continue;
            /* W (cout × fan) += coef·scale · B (cout × r) · A (r × fan) */
            e2g_gemm('N', 'N', s.cout, fan, l->rank[layer], terms[t].coef * l->scale[layer], l->B[layer],
                 l->rank[layer], l->A[layer], fan, 1.0f, m, fan);
        }
        *e2g_node_weight_slot(&net.node[e2g_net_crucial_node(&net, layer)], dst) = m;
        m += (size_t)s.cout * fan;
    }
    return memory;
}


/* ---- planned forward / backward ------------------------------------------------------ */

struct e2g_gen_acts {
    e2g_net net;
    int N, H, W;
    e2g_planned *plan;
};

e2g_gen_acts *e2g_gen_acts_new(const e2g_gen_config *cfg, int N, int H, int W, int with_grads) {
    E2G_ASSERT(N > 0 && H > 0 && W > 0 && H % 8 == 0 && W % 8 == 0);
    e2g_gen_acts *a = e2g_xcalloc(1, sizeof *a);
    e2g_gen_net(&a->net, cfg);
    a->N = N, a->H = H, a->W = W;
    a->plan = e2g_planned_new(&a->net, N, H, W, cfg->ctx_tokens, with_grads);
    return a;
}

void e2g_gen_acts_free(e2g_gen_acts *a) {
    if (!a) return;
    e2g_planned_free(a->plan);
    free(a);
}

size_t e2g_gen_acts_bytes(const e2g_gen_acts *a) { return e2g_planned_bytes(a->plan); }

void e2g_gen_forward(e2g_gen_acts *a, float *y, const e2g_gen_params *p, const float *x,
                     const e2g_edit *edits) {
    e2g_planned_forward(a->plan, p, x, edits);
    if (y)
        memcpy(y, e2g_planned_out(a->plan, a->net.output), (size_t)a->N * a->H * a->W * 3 * sizeof(float));
}

void e2g_gen_backward(e2g_gen_acts *a, e2g_gen_params *grads, e2g_lora *dlora,
                      const e2g_lora *train, float *dctx, float *dx, const float *dy,
                      const e2g_gen_params *p, const float *x, const e2g_edit *edits) {
    (void)x; /* the forward kept it */
    e2g_planned_backward(a->plan, grads, dlora, train, dctx, dx, dy, p, edits);
}

void e2g_gen_features(const e2g_gen_acts *a, float *out) {
    const float *t0 = e2g_planned_out(a->plan, a->net.features);
    e2g_node_shape s = e2g_planned_shape(a->plan, a->net.features);
    int L = s.h * s.w, C = s.c;
    for (int n = 0; n < a->N; n++)
        for (int c = 0; c < C; c++) {
            double sum = 0;
            for (int i = 0; i < L; i++) sum += t0[((size_t)n * L + i) * C + c];
            out[(size_t)n * C + c] = (float)(sum / L);
        }
}
