/* layers.c — the conv block and the unmerged LoRA paths (see layers.h). */
#include "layers.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"

float *arena_take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(size_t)15; /* 64-byte aligned slices */
    return p;
}

void block_plan(block_acts *b, arena *ar, const conv_spec *s, int N, int H, int W) {
    if (s->upsample) H *= 2, W *= 2;
    b->H = H, b->W = W;
    b->Ho = conv2d_out_size(H, &s->conv), b->Wo = conv2d_out_size(W, &s->conv);
    size_t in_n = (size_t)N * H * W * s->conv.cin, out_n = block_out_size(b, s, N);
    b->up = s->upsample ? arena_take(ar, in_n) : NULL;
    b->pre = arena_take(ar, out_n);
    b->mean = s->norm ? arena_take(ar, (size_t)N * s->conv.cout) : NULL;
    b->rstd = s->norm ? arena_take(ar, (size_t)N * s->conv.cout) : NULL;
    b->out = (s->norm || s->act != ACT_NONE) ? arena_take(ar, out_n) : b->pre;
}

size_t block_out_size(const block_acts *b, const conv_spec *s, int N) {
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

/* out (N, Ho, Wo, cout) += Σ coef·scale·B(A(in)) for conv crucial layer
 * `layer`; in is the conv's input (N, H, W, cin). */
void lora_conv_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                              const e2g_conv_shape *cs, int N, int H, int W) {
    int Ho = conv2d_out_size(H, cs), Wo = conv2d_out_size(W, cs);
    size_t in_stride = (size_t)H * W * cs->cin, out_stride = (size_t)Ho * Wo * cs->cout;
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer];
            if (!r) continue;
            e2g_conv_shape a_shape = *cs;
            a_shape.cout = r;
            size_t M = (size_t)cnt * Ho * Wo;
            float *h = e2g_xmalloc(M * r * sizeof(float));
            conv2d_forward(h, in + n0 * in_stride, l->A[layer], NULL, cnt, H, W, &a_shape);
            gemm('N', 'T', (int)M, cs->cout, r, edits[n0].terms[t].coef * l->scale[layer], h, r,
                 l->B[layer], r, 1.0f, out + n0 * out_stride, cs->cout);
            free(h);
        }
        n0 += cnt;
    }
}

void lora_conv_backward(float *din, e2g_lora *dlora, const e2g_lora *train,
                               const float *dout, const float *in, const e2g_edit *edits,
                               int layer, const e2g_conv_shape *cs, int N, int H, int W) {
    int Ho = conv2d_out_size(H, cs), Wo = conv2d_out_size(W, cs);
    size_t in_stride = (size_t)H * W * cs->cin, out_stride = (size_t)Ho * Wo * cs->cout;
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer];
            if (!r) continue;
            int trained = dlora && l == train;
            float s = edits[n0].terms[t].coef * l->scale[layer];
            e2g_conv_shape a_shape = *cs;
            a_shape.cout = r;
            size_t M = (size_t)cnt * Ho * Wo;
            float *dh = e2g_xcalloc(M * r, sizeof(float));
            const float *g = dout + n0 * out_stride, *x = in + n0 * in_stride;
            gemm('N', 'N', (int)M, r, cs->cout, s, g, cs->cout, l->B[layer], r, 0.0f, dh, r);
            if (trained) {
                float *h = e2g_xmalloc(M * r * sizeof(float));
                conv2d_forward(h, x, l->A[layer], NULL, cnt, H, W, &a_shape);
                gemm('T', 'N', cs->cout, r, (int)M, s, g, cs->cout, h, r, 1.0f, dlora->B[layer], r);
                free(h);
            }
            conv2d_backward(din ? din + n0 * in_stride : NULL, trained ? dlora->A[layer] : NULL,
                            NULL, dh, x, l->A[layer], cnt, H, W, &a_shape);
            free(dh);
        }
        n0 += cnt;
    }
}

/* The linear counterpart: rows rows_per_sample per sample. */
void lora_linear_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                                int rows_per_sample, int cin, int cout, int N) {
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer], M = cnt * rows_per_sample;
            if (!r) continue;
            float *h = e2g_xmalloc((size_t)M * r * sizeof(float));
            size_t row0 = (size_t)n0 * rows_per_sample;
            linear_forward(h, in + row0 * cin, l->A[layer], NULL, M, cin, r, 0);
            gemm('N', 'T', M, cout, r, edits[n0].terms[t].coef * l->scale[layer], h, r, l->B[layer],
                 r, 1.0f, out + row0 * cout, cout);
            free(h);
        }
        n0 += cnt;
    }
}

void lora_linear_backward(float *din, e2g_lora *dlora, const e2g_lora *train,
                                 const float *dout, const float *in, const e2g_edit *edits,
                                 int layer, int rows_per_sample, int cin, int cout, int N) {
    for (int n0 = 0; n0 < N;) {
        int cnt = run_length(edits, n0, N);
        for (int t = 0; t < edits[n0].n_terms; t++) {
            const e2g_lora *l = edits[n0].terms[t].lora;
            int r = l->rank[layer], M = cnt * rows_per_sample;
            if (!r) continue;
            int trained = dlora && l == train;
            float s = edits[n0].terms[t].coef * l->scale[layer];
            size_t row0 = (size_t)n0 * rows_per_sample;
            const float *g = dout + row0 * cout, *x = in + row0 * cin;
            float *dh = e2g_xcalloc((size_t)M * r, sizeof(float));
            gemm('N', 'N', M, r, cout, s, g, cout, l->B[layer], r, 0.0f, dh, r);
            if (trained) {
                float *h = e2g_xmalloc((size_t)M * r * sizeof(float));
                linear_forward(h, x, l->A[layer], NULL, M, cin, r, 0);
                gemm('T', 'N', cout, r, M, s, g, cout, h, r, 1.0f, dlora->B[layer], r);
                free(h);
            }
            linear_backward(din ? din + row0 * cin : NULL, trained ? dlora->A[layer] : NULL, NULL,
                            dh, x, l->A[layer], M, cin, r);
            free(dh);
        }
        n0 += cnt;
    }
}


void block_forward(block_acts *b, const conv_spec *s, const e2g_conv_params *cp,
                          const float *in, int N, const e2g_edit *edits) {
    const float *src = in;
    if (s->upsample) {
        upsample2x_forward(b->up, in, N, b->H / 2, b->W / 2, s->conv.cin);
        src = b->up;
    }
    conv2d_forward(b->pre, src, cp->w, s->bias ? cp->b : NULL, N, b->H, b->W, &s->conv);
    if (s->crucial >= 0) lora_conv_forward(b->pre, src, edits, s->crucial, &s->conv, N, b->H, b->W);
    size_t n = block_out_size(b, s, N);
    if (s->norm)
        instancenorm_forward(b->out, b->mean, b->rstd, b->pre, cp->norm_w, cp->norm_b,
                             s->act == ACT_RELU, N,
                             b->Ho * b->Wo, s->conv.cout);
    const float *act_in = s->norm ? b->out : b->pre;
    if (s->act == ACT_RELU && !s->norm) relu_forward(b->out, act_in, n);
    if (s->act == ACT_LRELU) leakyrelu_forward(b->out, act_in, LRELU_SLOPE, n);
}

void block_backward(block_acts *b, block_acts *db, float *tmp, float *din,
                           const conv_spec *s, const e2g_conv_params *cp, e2g_conv_params *gp,
                           e2g_lora *dlora, const e2g_lora *train, const float *in, int N,
                           const e2g_edit *edits) {
    size_t n = block_out_size(b, s, N);
    /* The activation's gradient lands in tmp before a norm, else in d(pre).
     * Both activations keep the sign, so their backward can read `out`. */
    const float *dnorm_out = db->out;
    if (s->act != ACT_NONE) {
        float *dact_in = s->norm ? tmp : db->pre;
        if (s->norm) memset(tmp, 0, n * sizeof(float));
        if (s->act == ACT_RELU)
            relu_backward(dact_in, db->out, b->out, n);
        else
            leakyrelu_backward(dact_in, db->out, b->out, LRELU_SLOPE, n);
        dnorm_out = dact_in;
    }
    if (s->norm)
        instancenorm_backward(db->pre, gp ? gp->norm_w : NULL, gp ? gp->norm_b : NULL, dnorm_out,
                              b->pre, b->mean, b->rstd, cp->norm_w, N, b->Ho * b->Wo, s->conv.cout);
    const float *src = s->upsample ? b->up : in;
    float *dsrc = s->upsample ? db->up : din;
    conv2d_backward(dsrc, gp ? gp->w : NULL, gp && s->bias ? gp->b : NULL, db->pre, src, cp->w, N,
                    b->H, b->W, &s->conv);
    if (s->crucial >= 0)
        lora_conv_backward(dsrc, dlora, train, db->pre, src, edits, s->crucial, &s->conv, N, b->H,
                           b->W);
    if (s->upsample && din) upsample2x_backward(din, db->up, N, b->H / 2, b->W / 2, s->conv.cin);
}

