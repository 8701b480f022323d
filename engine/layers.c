/* layers.c — the conv block and the unmerged LoRA paths (see layers.h). */
#include "layers.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"

float *e2g_arena_take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(size_t)15; /* 64-byte aligned slices */
    return p;
}

void e2g_block_plan(block_acts *b, arena *ar, const e2g_node *s, int N, int H, int W) {
    b->H = H, b->W = W;
    b->Ho = s->upsample ? 2 * H : e2g_conv2d_out_size(H, &s->conv);
    b->Wo = s->upsample ? 2 * W : e2g_conv2d_out_size(W, &s->conv);
    size_t out_n = e2g_block_out_size(b, s, N);
    b->pre = e2g_arena_take(ar, out_n);
    b->mean = s->norm ? e2g_arena_take(ar, (size_t)N * s->conv.cout) : NULL;
    b->rstd = s->norm ? e2g_arena_take(ar, (size_t)N * s->conv.cout) : NULL;
    b->out = (s->norm || s->act != E2G_ACT_NONE) ? e2g_arena_take(ar, out_n) : b->pre;
    b->affine = s->film ? e2g_arena_take(ar, 2 * (size_t)N * s->conv.cout) : NULL;
}

size_t e2g_block_out_size(const block_acts *b, const e2g_node *s, int N) {
    return (size_t)N * b->Ho * b->Wo * s->conv.cout;
}

static int same_terms(const e2g_edit *a, const e2g_edit *b) {
    if (a->n_terms != b->n_terms) return 0;
    for (int t = 0; t < a->n_terms; t++)
        if (a->terms[t].lora != b->terms[t].lora || a->terms[t].coef != b->terms[t].coef) return 0;
    return 1;
}

/* Length of the run of samples starting at n0 that share n0's terms. */
static int run_length(const e2g_edit *edits, int n0, int N) {
    int n1 = n0 + 1;
    while (n1 < N && same_terms(&edits[n0], &edits[n1])) n1++;
    return n1 - n0;
}

/* ---- the conv of a block: plain, or fused with a ×2 upsample ---------------- */

void e2g_layer_conv_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, const e2g_conv_shape *cs, int upsample) {
    if (upsample)
        e2g_upconv2x_forward(out, in, w, bias, N, H, W, cs->cin, cs->cout);
    else
        e2g_conv2d_forward(out, in, w, bias, N, H, W, cs);
}

void e2g_layer_conv_forward_band(float *out, const float *band, const float *w, const float *bias,
                             int rows, int W, const e2g_conv_shape *cs, int upsample) {
    if (upsample)
        e2g_upconv2x_forward_band(out, band, w, bias, rows, W, cs->cin, cs->cout);
    else
        e2g_conv2d_forward_band(out, band, w, bias, rows, W, cs);
}

int e2g_layer_band_out_rows(int rows, const e2g_conv_shape *cs, int upsample) {
    return upsample ? 2 * (rows - 2) : (rows - cs->k) / cs->stride + 1;
}

void e2g_layer_conv_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, int N, int H, int W, const e2g_conv_shape *cs,
                         int upsample) {
    if (upsample)
        e2g_upconv2x_backward(din, dw, db, dout, in, w, N, H, W, cs->cin, cs->cout);
    else
        e2g_conv2d_backward(din, dw, db, dout, in, w, N, H, W, cs);
}

/* ---- unmerged LoRA ------------------------------------------------------------ */

/* Where a LoRA sits: a conv layer (A is a conv of the layer's shape, fused
 * with the layer's upsample when it has one) or a linear one (A is linear). */
typedef struct {
    int is_conv, upsample, band, H, W; /* band: H rows of one image, gathered */
    e2g_conv_shape conv; /* conv: the layer's shape with cout = r */
    int rows, cin, cout; /* per sample: rows of input/output (pixels or tokens) */
    int out_rows;
} lora_site;

static void site_a_forward(const lora_site *st, float *h, const float *x, const float *A, int cnt,
                           int r) {
    if (st->is_conv) {
        e2g_conv_shape a_shape = st->conv;
        a_shape.cout = r;
        if (st->band)
            e2g_layer_conv_forward_band(h, x, A, NULL, st->H, st->W, &a_shape, st->upsample);
        else
            e2g_layer_conv_forward(h, x, A, NULL, cnt, st->H, st->W, &a_shape, st->upsample);
    } else {
        e2g_linear_forward(h, x, A, NULL, cnt * st->rows, st->cin, r, 0);
    }
}

static void site_a_backward(const lora_site *st, float *dx, float *dA, const float *dh,
                            const float *x, const float *A, int cnt, int r) {
    if (st->is_conv) {
        e2g_conv_shape a_shape = st->conv;
        a_shape.cout = r;
        e2g_layer_conv_backward(dx, dA, NULL, dh, x, A, cnt, st->H, st->W, &a_shape, st->upsample);
    } else {
        e2g_linear_backward(dx, dA, NULL, dh, x, A, cnt * st->rows, st->cin, r);
    }
}

/* out += Σ coef·scale·(A(in))·Bᵀ over runs of samples sharing their terms. */
static void lora_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                         const lora_site *st, int N) {
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer], M = cnt * st->out_rows;
            if (!r) continue;
            float *h = e2g_xmalloc((size_t)M * r * sizeof(float));
            site_a_forward(st, h, in + (size_t)n0 * st->rows * st->cin, l->A[layer], cnt, r);
            e2g_gemm('N', 'T', M, st->cout, r, edits[n0].terms[t].coef * l->scale[layer], h, r,
                 l->B[layer], r, 1.0f, out + (size_t)n0 * st->out_rows * st->cout, st->cout);
            free(h);
        }
        n0 += cnt;
    }
}

/* Gradients of lora_forward: into din always, into dlora for the adapter
 * being trained. */
static void lora_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                          const float *in, const e2g_edit *edits, int layer, const lora_site *st,
                          int N) {
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer], M = cnt * st->out_rows;
            if (!r) continue;
            int trained = dlora && l == train;
            float s = edits[n0].terms[t].coef * l->scale[layer];
            const float *g = dout + (size_t)n0 * st->out_rows * st->cout;
            const float *x = in + (size_t)n0 * st->rows * st->cin;
            float *dh = e2g_xmalloc((size_t)M * r * sizeof(float));
            e2g_gemm('N', 'N', M, r, st->cout, s, g, st->cout, l->B[layer], r, 0.0f, dh, r);
            if (trained) { /* dB needs A(x) again: recomputing beats keeping it */
                float *h = e2g_xmalloc((size_t)M * r * sizeof(float));
                site_a_forward(st, h, x, l->A[layer], cnt, r);
                e2g_gemm('T', 'N', st->cout, r, M, s, g, st->cout, h, r, 1.0f, dlora->B[layer], r);
                free(h);
            }
            site_a_backward(st, din ? din + (size_t)n0 * st->rows * st->cin : NULL,
                            trained ? dlora->A[layer] : NULL, dh, x, l->A[layer], cnt, r);
            free(dh);
        }
        n0 += cnt;
    }
}

static lora_site conv_site(const e2g_conv_shape *cs, int H, int W, int upsample) {
    int Ho = upsample ? 2 * H : e2g_conv2d_out_size(H, cs), Wo = upsample ? 2 * W : e2g_conv2d_out_size(W, cs);
    return (lora_site){1, upsample, 0, H, W, *cs, H * W, cs->cin, cs->cout, Ho * Wo};
}

static lora_site linear_site(int rows, int cin, int cout) {
    return (lora_site){0, 0, 0, 0, 0, {0}, rows, cin, cout, rows};
}

void e2g_lora_conv_forward_band(float *out, const float *band, const e2g_edit *edit, int layer,
                            const e2g_conv_shape *cs, int rows, int W, int upsample) {
    int Wo = upsample ? 2 * W : e2g_conv2d_out_size(W, cs);
    lora_site st = {1, upsample, 1, rows, W, *cs, rows * W, cs->cin, cs->cout,
                    e2g_layer_band_out_rows(rows, cs, upsample) * Wo};
    lora_forward(out, band, edit, layer, &st, 1);
}

void e2g_lora_conv_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                       const e2g_conv_shape *cs, int N, int H, int W, int upsample) {
    lora_site st = conv_site(cs, H, W, upsample);
    lora_forward(out, in, edits, layer, &st, N);
}

void e2g_lora_conv_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                        const float *in, const e2g_edit *edits, int layer,
                        const e2g_conv_shape *cs, int N, int H, int W, int upsample) {
    lora_site st = conv_site(cs, H, W, upsample);
    lora_backward(din, dlora, train, dout, in, edits, layer, &st, N);
}

void e2g_lora_linear_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                         int rows_per_sample, int cin, int cout, int N) {
    lora_site st = linear_site(rows_per_sample, cin, cout);
    lora_forward(out, in, edits, layer, &st, N);
}

void e2g_lora_linear_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                          const float *in, const e2g_edit *edits, int layer, int rows_per_sample,
                          int cin, int cout, int N) {
    lora_site st = linear_site(rows_per_sample, cin, cout);
    lora_backward(din, dlora, train, dout, in, edits, layer, &st, N);
}

/* ---- FiLM ------------------------------------------------------------------------ */

/* c̄ (N, C4): the mean of each sample's T context tokens. */
static float *context_mean(const float *ctx, int N, int T, int C4) {
    float *mean = e2g_xcalloc((size_t)N * C4, sizeof(float));
    for (int n = 0; n < N; n++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C4; c++) mean[(size_t)n * C4 + c] += ctx[((size_t)n * T + t) * C4 + c] / T;
    return mean;
}

/* out (N, cout) = W·c̄_n + b. */
static void context_linear_forward(float *out, const float *W, const float *b, const float *ctx, int N,
                                   int T, int C4, int cout) {
    float *mean = context_mean(ctx, N, T, C4);
    e2g_linear_forward(out, mean, W, b, N, C4, cout, 0);
    free(mean);
}

/* Its backward for dout (N, cout): into dW, db and dctx (any may be NULL). */
static void context_linear_backward(float *dW, float *db, float *dctx, const float *dout, const float *W,
                                    const float *ctx, int N, int T, int C4, int cout) {
    float *mean = context_mean(ctx, N, T, C4), *dmean = e2g_xcalloc((size_t)N * C4, sizeof(float));
    e2g_linear_backward(dctx ? dmean : NULL, dW, db, dout, mean, W, N, C4, cout);
    if (dctx)
        for (int n = 0; n < N; n++)
            for (int t = 0; t < T; t++)
                for (int c = 0; c < C4; c++) dctx[((size_t)n * T + t) * C4 + c] += dmean[(size_t)n * C4 + c] / T;
    free(dmean), free(mean);
}

void e2g_film_forward(float *affine, const e2g_conv_params *cp, const float *ctx, int N, int T, int C4,
                      int cout) {
    float *gb = e2g_xmalloc((size_t)N * 2 * cout * sizeof(float));
    context_linear_forward(gb, cp->film_w, cp->film_b, ctx, N, T, C4, 2 * cout);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < cout; c++) {
            affine[(size_t)n * cout + c] = cp->norm_w[c] + gb[(size_t)n * 2 * cout + c];
            affine[(size_t)(N + n) * cout + c] = cp->norm_b[c] + gb[(size_t)n * 2 * cout + cout + c];
        }
    free(gb);
}

void e2g_film_backward(e2g_conv_params *gp, float *dctx, const float *daffine, const e2g_conv_params *cp,
                       const float *ctx, int N, int T, int C4, int cout) {
    float *dgb = e2g_xmalloc((size_t)N * 2 * cout * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < cout; c++) {
            float dg = daffine[(size_t)n * cout + c], db = daffine[(size_t)(N + n) * cout + c];
            dgb[(size_t)n * 2 * cout + c] = dg, dgb[(size_t)n * 2 * cout + cout + c] = db;
            if (gp) gp->norm_w[c] += dg, gp->norm_b[c] += db;
        }
    context_linear_backward(gp ? gp->film_w : NULL, gp ? gp->film_b : NULL, dctx, dgb, cp->film_w, ctx, N, T,
                            C4, 2 * cout);
    free(dgb);
}

/* gain (N, C) = 1 + W·c̄_n + b: the output's gate and the skip gates. */
static void context_gain_forward(float *gain, const float *W, const float *b, const float *ctx, int N, int T,
                                 int C4, int C) {
    context_linear_forward(gain, W, b, ctx, N, T, C4, C);
    for (int i = 0; i < C * N; i++) gain[i] += 1.0f;
}

void e2g_output_gain_forward(float *gain, const e2g_linear_params *gate, const float *ctx, int N, int T,
                             int C4) {
    context_gain_forward(gain, gate->w, gate->b, ctx, N, T, C4, 3);
}

void e2g_output_gain_backward(e2g_linear_params *ggate, float *dctx, const float *dgain,
                              const e2g_linear_params *gate, const float *ctx, int N, int T, int C4) {
    context_linear_backward(ggate ? ggate->w : NULL, ggate ? ggate->b : NULL, dctx, dgain, gate->w, ctx, N, T,
                            C4, 3);
}

void e2g_skip_gain_forward(float *gain, const e2g_conv_params *cp, const float *ctx, int N, int T, int C4,
                           int cout) {
    context_gain_forward(gain, cp->gate_w, cp->gate_b, ctx, N, T, C4, cout);
}

void e2g_skip_gain_backward(e2g_conv_params *gp, float *dctx, const float *dgain, const e2g_conv_params *cp,
                            const float *ctx, int N, int T, int C4, int cout) {
    context_linear_backward(gp ? gp->gate_w : NULL, gp ? gp->gate_b : NULL, dctx, dgain, cp->gate_w, ctx, N, T,
                            C4, cout);
}

/* ---- conv blocks ----------------------------------------------------------------- */

void e2g_block_forward(block_acts *b, const e2g_node *s, const e2g_conv_params *cp, const float *in,
                   int N, const e2g_edit *edits) {
    e2g_layer_conv_forward(b->pre, in, cp->w, s->bias ? cp->b : NULL, N, b->H, b->W, &s->conv,
                       s->upsample);
    if (s->crucial >= 0)
        e2g_lora_conv_forward(b->pre, in, edits, s->crucial, &s->conv, N, b->H, b->W, s->upsample);
    e2g_block_finish(b, s, cp, N);
}

void e2g_block_finish(block_acts *b, const e2g_node *s, const e2g_conv_params *cp, int N) {
    size_t n = e2g_block_out_size(b, s, N);
    if (s->norm) {
        const float *w = s->film ? b->affine : cp->norm_w;
        const float *bias = s->film ? b->affine + (size_t)N * s->conv.cout : cp->norm_b;
        e2g_instancenorm_forward(b->out, b->mean, b->rstd, b->pre, w, bias, s->film, s->act == E2G_ACT_RELU,
                                 N, b->Ho * b->Wo, s->conv.cout);
    }
    const float *act_in = s->norm ? b->out : b->pre;
    if (s->act == E2G_ACT_RELU && !s->norm) e2g_relu_forward(b->out, act_in, n);
    if (s->act == E2G_ACT_LRELU) e2g_leakyrelu_forward(b->out, act_in, E2G_LRELU_SLOPE, n);
}

void e2g_block_backward(block_acts *b, block_acts *db, float *tmp, float *din, const e2g_node *s,
                    const e2g_conv_params *cp, e2g_conv_params *gp, e2g_lora *dlora,
                    const e2g_lora *train, const float *in, int N, const e2g_edit *edits) {
    size_t n = e2g_block_out_size(b, s, N);
    /* The activation's gradient lands in tmp before a norm, else in d(pre).
     * Both activations keep the sign, so their backward can read `out`. */
    const float *dnorm_out = db->out;
    if (s->act != E2G_ACT_NONE) {
        float *dact_in = s->norm ? tmp : db->pre;
        if (s->norm) memset(tmp, 0, n * sizeof(float));
        if (s->act == E2G_ACT_RELU)
            e2g_relu_backward(dact_in, db->out, b->out, n);
        else
            e2g_leakyrelu_backward(dact_in, db->out, b->out, E2G_LRELU_SLOPE, n);
        dnorm_out = dact_in;
    }
    if (s->norm && s->film)
        e2g_instancenorm_backward(db->pre, db->affine, db->affine + (size_t)N * s->conv.cout, dnorm_out,
                                  b->pre, b->mean, b->rstd, b->affine, 1, N, b->Ho * b->Wo, s->conv.cout);
    else if (s->norm)
        e2g_instancenorm_backward(db->pre, gp ? gp->norm_w : NULL, gp ? gp->norm_b : NULL, dnorm_out,
                                  b->pre, b->mean, b->rstd, cp->norm_w, 0, N, b->Ho * b->Wo, s->conv.cout);
    e2g_layer_conv_backward(din, gp ? gp->w : NULL, gp && s->bias ? gp->b : NULL, db->pre, in, cp->w,
                        N, b->H, b->W, &s->conv, s->upsample);
    if (s->crucial >= 0)
        e2g_lora_conv_backward(din, dlora, train, db->pre, in, edits, s->crucial, &s->conv, N, b->H,
                           b->W, s->upsample);
}
