/* generator.c — E²GAN-G (ARCHITECTURE.md §1) on the CPU: the parameter
 * table, planned activations, and the forward and backward passes with
 * unmerged LoRA applied per run of samples that ask for the same adapters.
 *
 * The network is a chain of "conv blocks" (optional nearest ×2 upsample →
 * conv → optional LoRA → optional instance norm → optional ReLU) around
 * one transformer block at 1/8 resolution; residual and skip additions join
 * them.  Every activation the backward needs is kept in one allocation
 * planned from the batch size and image size; gradients of activations use
 * a second struct of the same layout. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "common.h"
#include "model.h"
#include "layers.h"
#include "ops.h"

/* The configuration, conv specs, crucial layers and the parameter table
 * are in model_desc.c (library e2gan_common, shared with kernels/). */

/* Which residual block a block id closes (its `b` conv), or -1. */
static int residual_index(int id) {
    return id == G_RB1B ? 0 : id == G_RB2B ? 1 : id == G_RB3B ? 2 : -1;
}

/* ---- initialisation ----------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

void e2g_init_tensors(const e2g_tensor_entry *t, int n, unsigned long long seed) {
    uint64_t state = seed;
    int fan_in = 1;
    for (int i = 0; i < n; i++) {
        float *x = *t[i].slot;
        switch (t[i].init) {
        case E2G_INIT_NORMAL:
            for (size_t j = 0; j < t[i].numel; j += 2) { /* Box–Muller */
                double u1 = uniform01(&state), u2 = uniform01(&state);
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
                x[j] = (float)((2 * uniform01(&state) - 1) / sqrt((double)fan_in));
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

/* Weight and size of crucial layer `layer` inside params. */
static float *crucial_weight(const e2g_gen_params *p, int layer) {
    switch (layer) {
    case E2G_L_ENC1: return p->enc1.w;
    case E2G_L_ENC2: return p->enc2.w;
    case E2G_L_ENC3: return p->enc3.w;
    case E2G_L_DS: return p->ds.w;
    case E2G_L_FC1: return p->fc1.w;
    case E2G_L_FC2: return p->fc2.w;
    case E2G_L_US: return p->us.w;
    case E2G_L_DEC2: return p->dec2.w;
    case E2G_L_DEC1: return p->dec1.w;
    case E2G_L_OUT: return p->out.w;
    default:
        return layer <= E2G_L_SA_O ? p->self_attn[layer - E2G_L_SA_Q].w
                                   : p->cross_attn[layer - E2G_L_CA_Q].w;
    }
}

static float **crucial_weight_slot(e2g_gen_params *p, int layer) {
    float *w = crucial_weight(p, layer);
    e2g_conv_params *convs[] = {&p->enc1, &p->enc2, &p->enc3, &p->ds, &p->us, &p->dec2, &p->dec1, &p->out};
    for (size_t i = 0; i < sizeof convs / sizeof *convs; i++)
        if (convs[i]->w == w) return &convs[i]->w;
    if (p->fc1.w == w) return &p->fc1.w;
    if (p->fc2.w == w) return &p->fc2.w;
    for (int j = 0; j < 4; j++) {
        if (p->self_attn[j].w == w) return &p->self_attn[j].w;
        if (p->cross_attn[j].w == w) return &p->cross_attn[j].w;
    }
    E2G_ASSERT(0);
    return NULL;
}

float *e2g_gen_merge(const e2g_gen_config *cfg, e2g_gen_params *dst, const e2g_gen_params *base,
                     const e2g_lora_term *terms, int n_terms) {
    *dst = *base;
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
        memcpy(m, crucial_weight(base, layer), (size_t)s.cout * fan * sizeof(float));
        for (int t = 0; t < n_terms; t++) {
            const e2g_lora *l = terms[t].lora;
            if (!l->rank[layer]) continue;
            /* W (cout × fan) += coef·scale · B (cout × r) · A (r × fan) */
            gemm('N', 'N', s.cout, fan, l->rank[layer], terms[t].coef * l->scale[layer], l->B[layer],
                 l->rank[layer], l->A[layer], fan, 1.0f, m, fan);
        }
        *crucial_weight_slot(dst, layer) = m;
        m += (size_t)s.cout * fan;
    }
    return memory;
}

/* ---- activations ------------------------------------------------------------------ */

typedef struct {
    block_acts conv[G_NCONV];
    float *rb_sum[3];      /* x + b(a(x)) of rb1..rb3 */
    float *skip2, *skip1;  /* dec2 + enc2, dec1 + enc1 (unet_skips) */
    float *ln_mean[3], *ln_rstd[3], *u[3];
    float *q, *k, *v, *att, *lse, *t1;
    float *q2, *k2, *v2, *att2, *lse2, *t2;
    float *h, *g, *t3;
    float *ctx;
    float *y;
} gen_tensors;

struct e2g_gen_acts {
    e2g_gen_config cfg;
    int N, H, W;
    gen_tensors act, grad; /* grad: same layout, planned only with_grads */
    float *tmp;            /* one block-sized gradient scratch */
    float *grad_memory;    /* where `grad` lies, zeroed by each backward */
    size_t grad_floats;
    int has_grads;
    float *memory;
    size_t floats;
};

/* Lays out the transformer block's activations for N samples of L tokens. */
static void plan_tb(gen_tensors *t, arena *ar, const e2g_gen_config *cfg, int N, int L) {
    int c4 = e2g_gen_c4(cfg), heads = e2g_gen_heads(cfg);
    size_t M = (size_t)N * L, tok = M * c4, ctx = (size_t)N * cfg->ctx_tokens * c4;
    for (int i = 0; i < 3; i++) {
        t->ln_mean[i] = arena_take(ar, M), t->ln_rstd[i] = arena_take(ar, M);
        t->u[i] = arena_take(ar, tok);
    }
    t->q = arena_take(ar, tok), t->k = arena_take(ar, tok), t->v = arena_take(ar, tok);
    t->att = arena_take(ar, tok), t->lse = arena_take(ar, M * heads), t->t1 = arena_take(ar, tok);
    t->q2 = arena_take(ar, tok), t->k2 = arena_take(ar, ctx), t->v2 = arena_take(ar, ctx);
    t->att2 = arena_take(ar, tok), t->lse2 = arena_take(ar, M * heads), t->t2 = arena_take(ar, tok);
    t->h = arena_take(ar, 4 * tok), t->g = arena_take(ar, 4 * tok), t->t3 = arena_take(ar, tok);
    t->ctx = arena_take(ar, ctx);
}

/* Lays out every activation; with a->base NULL it only counts. */
static void plan_tensors(gen_tensors *t, arena *ar, const e2g_gen_config *cfg, int N, int H,
                         int W) {
    int h = H, w = W;
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        block_acts *b = &t->conv[id];
        block_plan(b, ar, &s, N, h, w);
        size_t out_n = block_out_size(b, &s, N);
        h = b->Ho, w = b->Wo;
        if (residual_index(id) >= 0) t->rb_sum[residual_index(id)] = arena_take(ar, out_n);
        if (id == G_DEC2 && cfg->unet_skips) t->skip2 = arena_take(ar, out_n);
        if (id == G_DEC1 && cfg->unet_skips) t->skip1 = arena_take(ar, out_n);
        if (id == G_DS) plan_tb(t, ar, cfg, N, h * w);
    }
    t->y = arena_take(ar, (size_t)N * H * W * 3);
}

static size_t largest_block(const gen_tensors *t, const e2g_gen_config *cfg, int N) {
    size_t m = 0;
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        size_t n = block_out_size(&t->conv[id], &s, N);
        if (n > m) m = n;
    }
    return m;
}

e2g_gen_acts *e2g_gen_acts_new(const e2g_gen_config *cfg, int N, int H, int W, int with_grads) {
    E2G_ASSERT(N > 0 && H > 0 && W > 0 && H % 8 == 0 && W % 8 == 0);
    e2g_gen_acts *a = e2g_xcalloc(1, sizeof *a);
    a->cfg = *cfg, a->N = N, a->H = H, a->W = W, a->has_grads = with_grads;
    arena count = {0};
    plan_tensors(&a->act, &count, cfg, N, H, W);
    size_t one = count.used, tmp = largest_block(&a->act, cfg, N);
    a->floats = one + (with_grads ? one + tmp : 0);
    a->memory = e2g_xmalloc(a->floats * sizeof(float));
    arena ar = {a->memory, 0};
    plan_tensors(&a->act, &ar, cfg, N, H, W);
    if (with_grads) {
        a->grad_memory = a->memory + ar.used;
        a->grad_floats = one;
        plan_tensors(&a->grad, &ar, cfg, N, H, W);
        a->tmp = arena_take(&ar, tmp);
    }
    return a;
}

void e2g_gen_acts_free(e2g_gen_acts *a) {
    if (!a) return;
    free(a->memory);
    free(a);
}

size_t e2g_gen_acts_bytes(const e2g_gen_acts *a) { return a->floats * sizeof(float); }

/* ---- transformer block ---------------------------------------------------------------- */

static void tb_forward(gen_tensors *t, const e2g_gen_params *p, const e2g_gen_config *cfg,
                       const float *t0, int N, int L, const e2g_edit *edits) {
    int c4 = e2g_gen_c4(cfg), T = cfg->ctx_tokens, heads = e2g_gen_heads(cfg), M = N * L;
    size_t tok = (size_t)M * c4;
    const e2g_linear_params *sa = p->self_attn, *ca = p->cross_attn;
    float *proj[3] = {t->q, t->k, t->v};

    layernorm_forward(t->u[0], t->ln_mean[0], t->ln_rstd[0], t0, p->ln_w[0], p->ln_b[0], M, c4);
    for (int j = 0; j < 3; j++) {
        linear_forward(proj[j], t->u[0], sa[j].w, sa[j].b, M, c4, c4, 0);
        lora_linear_forward(proj[j], t->u[0], edits, E2G_L_SA_Q + j, L, c4, c4, N);
    }
    attention_forward(t->att, t->lse, t->q, t->k, t->v, N, L, L, c4, heads);
    memcpy(t->t1, t0, tok * sizeof(float));
    linear_forward(t->t1, t->att, sa[E2G_O].w, sa[E2G_O].b, M, c4, c4, 1);
    lora_linear_forward(t->t1, t->att, edits, E2G_L_SA_O, L, c4, c4, N);

    layernorm_forward(t->u[1], t->ln_mean[1], t->ln_rstd[1], t->t1, p->ln_w[1], p->ln_b[1], M, c4);
    linear_forward(t->q2, t->u[1], ca[E2G_Q].w, ca[E2G_Q].b, M, c4, c4, 0);
    lora_linear_forward(t->q2, t->u[1], edits, E2G_L_CA_Q, L, c4, c4, N);
    float *kv[2] = {t->k2, t->v2};
    for (int j = 0; j < 2; j++) {
        linear_forward(kv[j], t->ctx, ca[E2G_K + j].w, ca[E2G_K + j].b, N * T, c4, c4, 0);
        lora_linear_forward(kv[j], t->ctx, edits, E2G_L_CA_K + j, T, c4, c4, N);
    }
    attention_forward(t->att2, t->lse2, t->q2, t->k2, t->v2, N, L, T, c4, heads);
    memcpy(t->t2, t->t1, tok * sizeof(float));
    linear_forward(t->t2, t->att2, ca[E2G_O].w, ca[E2G_O].b, M, c4, c4, 1);
    lora_linear_forward(t->t2, t->att2, edits, E2G_L_CA_O, L, c4, c4, N);

    layernorm_forward(t->u[2], t->ln_mean[2], t->ln_rstd[2], t->t2, p->ln_w[2], p->ln_b[2], M, c4);
    linear_forward(t->h, t->u[2], p->fc1.w, p->fc1.b, M, c4, 4 * c4, 0);
    lora_linear_forward(t->h, t->u[2], edits, E2G_L_FC1, L, c4, 4 * c4, N);
    gelu_forward(t->g, t->h, 4 * tok);
    memcpy(t->t3, t->t2, tok * sizeof(float));
    linear_forward(t->t3, t->g, p->fc2.w, p->fc2.b, M, 4 * c4, c4, 1);
    lora_linear_forward(t->t3, t->g, edits, E2G_L_FC2, L, 4 * c4, c4, N);
}

#define LIN_GRAD(gp, field) ((gp) ? (gp)->field.w : NULL), ((gp) ? (gp)->field.b : NULL)

/* A linear layer's backward plus its LoRA's. */
static void linear_with_lora_backward(float *din, float *dw, float *db, e2g_lora *dlora,
                                      const e2g_lora *train, const float *dout, const float *in,
                                      const float *w, const e2g_edit *edits, int layer,
                                      int rows_per_sample, int cin, int cout, int N) {
    linear_backward(din, dw, db, dout, in, w, N * rows_per_sample, cin, cout);
    lora_linear_backward(din, dlora, train, dout, in, edits, layer, rows_per_sample, cin, cout, N);
}

static void tb_backward(gen_tensors *t, gen_tensors *d, e2g_gen_params *gp, e2g_lora *dlora,
                        const e2g_lora *train, const e2g_gen_params *p, const e2g_gen_config *cfg,
                        const float *t0, float *dt0, int N, int L, const e2g_edit *edits) {
    int c4 = e2g_gen_c4(cfg), T = cfg->ctx_tokens, heads = e2g_gen_heads(cfg), M = N * L;
    size_t tok = (size_t)M * c4;
    const e2g_linear_params *sa = p->self_attn, *ca = p->cross_attn;

    /* t3 = t2 + fc2(gelu(fc1(LN3(t2)))) */
    accumulate(d->t2, d->t3, tok);
    linear_with_lora_backward(d->g, LIN_GRAD(gp, fc2), dlora, train, d->t3, t->g, p->fc2.w, edits,
                              E2G_L_FC2, L, 4 * c4, c4, N);
    gelu_backward(d->h, d->g, t->h, 4 * tok);
    linear_with_lora_backward(d->u[2], LIN_GRAD(gp, fc1), dlora, train, d->h, t->u[2], p->fc1.w,
                              edits, E2G_L_FC1, L, c4, 4 * c4, N);
    layernorm_backward(d->t2, gp ? gp->ln_w[2] : NULL, gp ? gp->ln_b[2] : NULL, d->u[2], t->t2,
                       t->ln_mean[2], t->ln_rstd[2], p->ln_w[2], M, c4);

    /* t2 = t1 + o(attn(q(LN2(t1)), k(ctx), v(ctx))) */
    accumulate(d->t1, d->t2, tok);
    linear_with_lora_backward(d->att2, LIN_GRAD(gp, cross_attn[E2G_O]), dlora, train, d->t2,
                              t->att2, ca[E2G_O].w, edits, E2G_L_CA_O, L, c4, c4, N);
    attention_backward(d->q2, d->k2, d->v2, d->att2, t->q2, t->k2, t->v2, t->att2, t->lse2, N, L,
                       T, c4, heads);
    float *dkv[2] = {d->k2, d->v2};
    for (int j = 0; j < 2; j++)
        linear_with_lora_backward(d->ctx, LIN_GRAD(gp, cross_attn[E2G_K + j]), dlora, train, dkv[j],
                                  t->ctx, ca[E2G_K + j].w, edits, E2G_L_CA_K + j, T, c4, c4, N);
    linear_with_lora_backward(d->u[1], LIN_GRAD(gp, cross_attn[E2G_Q]), dlora, train, d->q2,
                              t->u[1], ca[E2G_Q].w, edits, E2G_L_CA_Q, L, c4, c4, N);
    layernorm_backward(d->t1, gp ? gp->ln_w[1] : NULL, gp ? gp->ln_b[1] : NULL, d->u[1], t->t1,
                       t->ln_mean[1], t->ln_rstd[1], p->ln_w[1], M, c4);

    /* t1 = t0 + o(attn(q(u), k(u), v(u))), u = LN1(t0) */
    accumulate(dt0, d->t1, tok);
    linear_with_lora_backward(d->att, LIN_GRAD(gp, self_attn[E2G_O]), dlora, train, d->t1, t->att,
                              sa[E2G_O].w, edits, E2G_L_SA_O, L, c4, c4, N);
    attention_backward(d->q, d->k, d->v, d->att, t->q, t->k, t->v, t->att, t->lse, N, L, L, c4,
                       heads);
    float *dproj[3] = {d->q, d->k, d->v};
    for (int j = 0; j < 3; j++)
        linear_with_lora_backward(d->u[0], LIN_GRAD(gp, self_attn[j]), dlora, train, dproj[j],
                                  t->u[0], sa[j].w, edits, E2G_L_SA_Q + j, L, c4, c4, N);
    layernorm_backward(dt0, gp ? gp->ln_w[0] : NULL, gp ? gp->ln_b[0] : NULL, d->u[0], t0,
                       t->ln_mean[0], t->ln_rstd[0], p->ln_w[0], M, c4);
}

/* ---- the whole generator --------------------------------------------------------------- */

/* The input of conv block id: the previous block's output, a residual sum
 * or a skip sum. */
static const float *block_input(const gen_tensors *t, const float *x, int id) {
    switch (id) {
    case G_ENC1: return x;
    case G_RB1A: return t->conv[G_ENC3].out;
    case G_RB2A: return t->rb_sum[0];
    case G_DS: return t->rb_sum[1];
    case G_US: return t->t3;
    case G_RB3A: return t->conv[G_US].out;
    case G_DEC2: return t->rb_sum[2];
    case G_DEC1: return t->skip2 ? t->skip2 : t->conv[G_DEC2].out;
    case G_OUT: return t->skip1 ? t->skip1 : t->conv[G_DEC1].out;
    default: return t->conv[id - 1].out;
    }
}

/* The gradient buffer of that input (NULL for the image itself). */
static float *block_input_grad(gen_tensors *d, float *dx, int id) {
    return id == G_ENC1 ? dx : (float *)block_input(d, NULL, id);
}

/* Gathers each sample's context (T, C4) into ctx (N, T, C4). */
static void gather_contexts(float *ctx, const e2g_gen_config *cfg, const e2g_edit *edits, int N) {
    size_t one = (size_t)cfg->ctx_tokens * e2g_gen_c4(cfg);
    for (int n = 0; n < N; n++) memcpy(ctx + n * one, edits[n].context, one * sizeof(float));
}

void e2g_gen_forward(e2g_gen_acts *a, float *y, const e2g_gen_params *p, const float *x,
                     const e2g_edit *edits) {
    const e2g_gen_config *cfg = &a->cfg;
    gen_tensors *t = &a->act;
    int N = a->N;
    gather_contexts(t->ctx, cfg, edits, N);
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        block_acts *b = &t->conv[id];
        block_forward(b, &s, gen_conv_params(p, id), block_input(t, x, id), N, edits);
        size_t n = block_out_size(b, &s, N);
        int r = residual_index(id);
        if (r >= 0) {
            add_forward(t->rb_sum[r], block_input(t, x, id - 1), b->out, n);
        }
        if (id == G_DEC2 && t->skip2) add_forward(t->skip2, b->out, t->conv[G_ENC2].out, n);
        if (id == G_DEC1 && t->skip1) add_forward(t->skip1, b->out, t->conv[G_ENC1].out, n);
        if (id == G_DS) tb_forward(t, p, cfg, b->out, N, b->Ho * b->Wo, edits);
    }
    output_forward(t->y, t->conv[G_OUT].pre, x, cfg->residual_out, (size_t)N * a->H * a->W * 3);
    if (y) memcpy(y, t->y, (size_t)N * a->H * a->W * 3 * sizeof(float));
}

void e2g_gen_backward(e2g_gen_acts *a, e2g_gen_params *grads, e2g_lora *dlora,
                      const e2g_lora *train, float *dctx, float *dx, const float *dy,
                      const e2g_gen_params *p, const float *x, const e2g_edit *edits) {
    E2G_ASSERT(a->has_grads);
    const e2g_gen_config *cfg = &a->cfg;
    gen_tensors *t = &a->act, *d = &a->grad;
    int N = a->N, c4 = e2g_gen_c4(cfg), T = cfg->ctx_tokens;
    memset(a->grad_memory, 0, a->grad_floats * sizeof(float));
    output_backward(d->conv[G_OUT].pre, dx, dy, t->y, x, cfg->residual_out,
                    (size_t)N * a->H * a->W * 3);
    for (int id = G_NCONV - 1; id >= 0; id--) {
        conv_spec s = gen_conv_spec(cfg, id);
        block_acts *b = &t->conv[id], *db = &d->conv[id];
        size_t n = block_out_size(b, &s, N);
        if (id == G_DEC1 && t->skip1) {
            accumulate(db->out, d->skip1, n);
            accumulate(d->conv[G_ENC1].out, d->skip1, n);
        }
        if (id == G_DEC2 && t->skip2) {
            accumulate(db->out, d->skip2, n);
            accumulate(d->conv[G_ENC2].out, d->skip2, n);
        }
        int r = residual_index(id);
        if (r >= 0) {
            accumulate(db->out, d->rb_sum[r], n);
            accumulate(block_input_grad(d, dx, id - 1), d->rb_sum[r], n);
        }
        if (id == G_DS) /* d(t3) is complete once `us` is done */
            tb_backward(t, d, grads, dlora, train, p, cfg, t->conv[G_DS].out, d->conv[G_DS].out, N,
                        t->conv[G_DS].Ho * t->conv[G_DS].Wo, edits);
        block_backward(b, db, a->tmp, block_input_grad(d, dx, id), &s, gen_conv_params(p, id),
                       grads ? gen_conv_params(grads, id) : NULL, dlora, train, block_input(t, x, id),
                       N, edits);
    }
    if (dctx) accumulate(dctx, d->ctx, (size_t)N * T * c4);
}

void e2g_gen_features(const e2g_gen_acts *a, float *out) {
    const block_acts *ds = &a->act.conv[G_DS];
    int c4 = e2g_gen_c4(&a->cfg), L = ds->Ho * ds->Wo;
    for (int n = 0; n < a->N; n++)
        for (int c = 0; c < c4; c++) {
            double s = 0;
            for (int i = 0; i < L; i++) s += ds->out[((size_t)n * L + i) * c4 + c];
            out[(size_t)n * c4 + c] = (float)(s / L);
        }
}

/* ---- memory-lean inference ------------------------------------------------------------ */

/* Full-resolution rows computed per band in the head and tail: enough to
 * keep oneDNN efficient, small enough that no full-resolution activation
 * ever exists. */
#define BAND_ROWS 32

/* Copies rows [r0, r1) of an image of height H into band; src holds the
 * image's rows [src_lo, …).  Rows outside [0, H) are mirrored (reflect)
 * or zero; the caller guarantees the mirrored rows are in src. */
static void gather_rows(float *band, const float *src, int src_lo, int r0, int r1, int H, int W,
                        int C, int reflect) {
    size_t row = (size_t)W * C;
    for (int r = r0; r < r1; r++) {
        float *dst = band + (size_t)(r - r0) * row;
        if (reflect || (r >= 0 && r < H)) {
            int from = reflect ? reflect_index(r, H) : r;
            memcpy(dst, src + (size_t)(from - src_lo) * row, row * sizeof(float));
        } else {
            memset(dst, 0, row * sizeof(float));
        }
    }
}

/* A conv block on a gathered band of one image: conv and LoRA, then the
 * ReLU when the block has no norm (a norm needs the whole image: the
 * caller applies it).  Returns the output rows, malloc'd. */
static float *band_block(const e2g_gen_config *cfg, const e2g_gen_params *p, int id,
                         const float *band, int rows, int W, const e2g_edit *edit, int *out_rows) {
    conv_spec s = gen_conv_spec(cfg, id);
    const e2g_conv_params *cp = gen_conv_params(p, id);
    int Wo = s.upsample ? 2 * W : conv2d_out_size(W, &s.conv);
    *out_rows = layer_band_out_rows(rows, &s.conv, s.upsample);
    size_t n = (size_t)*out_rows * Wo * s.conv.cout;
    float *out = e2g_xmalloc(n * sizeof(float));
    layer_conv_forward_band(out, band, cp->w, s.bias ? cp->b : NULL, rows, W, &s.conv, s.upsample);
    lora_conv_forward_band(out, band, edit, s.crucial, &s.conv, rows, W, s.upsample);
    if (s.act == ACT_RELU && !s.norm) relu_forward(out, out, n);
    return out;
}

/* enc1's output rows [r0, r1) of one image x (H, W, 3). */
static float *enc1_rows(const e2g_gen_config *cfg, const e2g_gen_params *p, const float *x, int r0,
                        int r1, int H, int W, const e2g_edit *edit) {
    int pad = gen_conv_spec(cfg, G_ENC1).conv.pad, rows = r1 - r0 + 2 * pad, got;
    float *band = e2g_xmalloc((size_t)rows * W * 3 * sizeof(float));
    gather_rows(band, x, 0, r0 - pad, r1 + pad, H, W, 3, 1);
    float *out = band_block(cfg, p, G_ENC1, band, rows, W, edit, &got);
    free(band);
    return out;
}

/* x → enc2's conv output (1, H/2, W/2, 2ngf) for one image, band by band,
 * recomputing the enc1 rows each band needs. */
static void lean_head(float *enc2_pre, const e2g_gen_config *cfg, const e2g_gen_params *p,
                      const float *x, int H, int W, const e2g_edit *edit) {
    int H2 = H / 2, W2 = W / 2, ngf = cfg->ngf, got;
    for (int s0 = 0; s0 < H2; s0 += BAND_ROWS / 2) {
        int s1 = s0 + BAND_ROWS / 2 < H2 ? s0 + BAND_ROWS / 2 : H2;
        /* output row s reads enc1 rows 2s−1 .. 2s+1 (zero above the image) */
        int lo = 2 * s0 - 1 > 0 ? 2 * s0 - 1 : 0, hi = 2 * s1 < H ? 2 * s1 : H;
        float *e1 = enc1_rows(cfg, p, x, lo, hi, H, W, edit);
        int rows = 2 * (s1 - s0) + 1;
        float *band = e2g_xmalloc((size_t)rows * W * ngf * sizeof(float));
        gather_rows(band, e1, lo, 2 * s0 - 1, 2 * s1, H, W, ngf, 0);
        float *out = band_block(cfg, p, G_ENC2, band, rows, W, edit, &got);
        memcpy(enc2_pre + (size_t)s0 * W2 * 2 * ngf, out, (size_t)got * W2 * 2 * ngf * sizeof(float));
        free(out), free(band), free(e1);
    }
}

/* One conv block over the whole batch with its output in place of its
 * conv result (nothing is kept for a backward).  *h, *w: input size in,
 * output size out.  Returns the malloc'd output. */
static float *lean_block(const e2g_gen_config *cfg, const e2g_gen_params *p, int id,
                         const float *in, int N, int *h, int *w, const e2g_edit *edits) {
    conv_spec s = gen_conv_spec(cfg, id);
    block_acts b;
    arena sizes = {0};
    block_plan(&b, &sizes, &s, N, *h, *w);
    b.pre = b.out = e2g_xmalloc(block_out_size(&b, &s, N) * sizeof(float));
    b.mean = s.norm ? e2g_xmalloc((size_t)N * s.conv.cout * sizeof(float)) : NULL;
    b.rstd = s.norm ? e2g_xmalloc((size_t)N * s.conv.cout * sizeof(float)) : NULL;
    block_forward(&b, &s, gen_conv_params(p, id), in, N, edits);
    free(b.mean), free(b.rstd);
    *h = b.Ho, *w = b.Wo;
    return b.out;
}

/* A residual block x + b(a(x)) over the batch; frees x. */
static float *lean_residual(const e2g_gen_config *cfg, const e2g_gen_params *p, int id_a,
                            float *x, int N, int h, int w, const e2g_edit *edits) {
    int hh = h, ww = w;
    float *a = lean_block(cfg, p, id_a, x, N, &hh, &ww, edits);
    float *b = lean_block(cfg, p, id_a + 1, a, N, &hh, &ww, edits);
    add_forward(b, b, x, (size_t)N * h * w * e2g_gen_c4(cfg));
    free(a), free(x);
    return b;
}

/* dec2's output (skip added) → y for one image, band by band: dec1's
 * rows (and enc1's, for the skip) are computed for each band of output
 * rows with the halo the 7×7 `out` conv needs. */
static void lean_tail(float *y, const float *d2, const e2g_gen_config *cfg, const e2g_gen_params *p,
                      const float *x, int H, int W, const e2g_edit *edit) {
    int ngf = cfg->ngf, pad = gen_conv_spec(cfg, G_OUT).conv.pad, got;
    for (int y0 = 0; y0 < H; y0 += BAND_ROWS) {
        int y1 = y0 + BAND_ROWS < H ? y0 + BAND_ROWS : H;
        int lo = y0 - pad > 0 ? y0 - pad : 0, hi = y1 + pad < H ? y1 + pad : H;
        int i0 = lo / 2, i1 = (hi + 1) / 2; /* dec1 rows 2·i0 .. 2·i1 − 1 cover lo .. hi − 1 */
        int rows = i1 - i0 + 2;
        float *band = e2g_xmalloc((size_t)rows * (W / 2) * 2 * ngf * sizeof(float));
        gather_rows(band, d2, 0, i0 - 1, i1 + 1, H / 2, W / 2, 2 * ngf, 0);
        float *d1 = band_block(cfg, p, G_DEC1, band, rows, W / 2, edit, &got);
        free(band);
        if (cfg->unet_skips) {
            float *e1 = enc1_rows(cfg, p, x, 2 * i0, 2 * i1, H, W, edit);
            add_forward(d1, d1, e1, (size_t)got * W * ngf);
            free(e1);
        }
        rows = y1 - y0 + 2 * pad;
        band = e2g_xmalloc((size_t)rows * W * ngf * sizeof(float));
        gather_rows(band, d1, 2 * i0, y0 - pad, y1 + pad, H, W, ngf, 1);
        float *o = band_block(cfg, p, G_OUT, band, rows, W, edit, &got);
        output_forward(y + (size_t)y0 * W * 3, o, x + (size_t)y0 * W * 3, cfg->residual_out,
                       (size_t)got * W * 3);
        free(o), free(band), free(d1);
    }
}

void e2g_gen_infer(const e2g_gen_config *cfg, float *y, const e2g_gen_params *p, const float *x,
                   const e2g_edit *edits, int N, int H, int W) {
    E2G_ASSERT(!cfg->norm_ends && H % 8 == 0 && W % 8 == 0);
    int h = H / 2, w = W / 2, c2 = 2 * cfg->ngf;
    size_t img = (size_t)H * W * 3, half = (size_t)h * w * c2;
    float *e2 = e2g_xmalloc(N * half * sizeof(float));
    for (int n = 0; n < N; n++) lean_head(e2 + n * half, cfg, p, x + n * img, H, W, &edits[n]);
    float *mean = e2g_xmalloc((size_t)N * c2 * sizeof(float)), *rstd = e2g_xmalloc((size_t)N * c2 * sizeof(float));
    instancenorm_forward(e2, mean, rstd, e2, p->enc2.norm_w, p->enc2.norm_b, 1, N, h * w, c2);
    free(mean), free(rstd);

    float *cur = lean_block(cfg, p, G_ENC3, e2, N, &h, &w, edits);
    cur = lean_residual(cfg, p, G_RB1A, cur, N, h, w, edits);
    cur = lean_residual(cfg, p, G_RB2A, cur, N, h, w, edits);
    float *t0 = lean_block(cfg, p, G_DS, cur, N, &h, &w, edits);
    free(cur);
    gen_tensors tb;
    arena sizes = {0};
    plan_tb(&tb, &sizes, cfg, N, h * w);
    arena tb_memory = {e2g_xmalloc(sizes.used * sizeof(float)), 0};
    plan_tb(&tb, &tb_memory, cfg, N, h * w);
    gather_contexts(tb.ctx, cfg, edits, N);
    tb_forward(&tb, p, cfg, t0, N, h * w, edits);
    cur = lean_block(cfg, p, G_US, tb.t3, N, &h, &w, edits);
    free(tb_memory.base), free(t0);
    cur = lean_residual(cfg, p, G_RB3A, cur, N, h, w, edits);
    float *d2 = lean_block(cfg, p, G_DEC2, cur, N, &h, &w, edits);
    free(cur);
    if (cfg->unet_skips) add_forward(d2, d2, e2, N * half);
    free(e2);
    for (int n = 0; n < N; n++) lean_tail(y + n * img, d2 + n * half, cfg, p, x + n * img, H, W, &edits[n]);
    free(d2);
}
