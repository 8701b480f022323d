/* conv.c — convolutions through oneDNN (direct brgconv kernels on AVX-512).
 *
 * Each distinct shape gets a plan: the forward primitive plus, created on the
 * first backward, the backward-data and backward-weights primitives and the
 * weight reorders between PyTorch's OIHW and the blocked layouts oneDNN
 * picks.  Plans live in a small per-thread LRU cache, so building a primitive
 * (hundreds of µs) happens once per shape, and threads never share one.
 * Weights are reordered on every call: it costs well under 1% of the
 * convolution and keeps training (weights change every step) correct without
 * any invalidation protocol.
 *
 * Precision (precision.h): in bf16 the primitives take bf16 source, weights
 * and diff_dst and produce f32 destination, diff_src, diff_weights and
 * bias gradients (fp32 accumulation inside oneDNN).  The source and diff_dst
 * are converted here (e2g_bf16_from_f32, fused with the reflect padding when
 * there is one), the weights by the same oneDNN reorder that blocks them.
 * The precision is part of the plan key; fp32 plans are exactly those of a
 * build without bf16. */
#include "conv.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dnnl.h"
#include "precision.h"

/* ---- per-thread scratch buffers ------------------------------------------ */

enum {
    SCRATCH_PAD, SCRATCH_W, SCRATCH_DSRC, SCRATCH_DW, SCRATCH_DW_USER, SCRATCH_DB,
    SCRATCH_PHASE_W, SCRATCH_PHASES, SCRATCH_SRC16, SCRATCH_DOUT16, SCRATCH_N
};
static _Thread_local struct {
    void *ptr;
    size_t bytes;
} t_scratch[SCRATCH_N];

static void *scratch(int slot, size_t bytes) {
    if (t_scratch[slot].bytes < bytes) {
        e2g_dnnl_thread_hold();
        free(t_scratch[slot].ptr);
        t_scratch[slot].ptr = e2g_xmalloc(bytes);
        t_scratch[slot].bytes = bytes;
    }
    return t_scratch[slot].ptr;
}

/* ---- plans ----------------------------------------------------------------- */

/* One oneDNN convolution: sizes of its (already reflect-padded) input, its
 * zero padding on each side, top, left, bottom, right, and the precision
 * (e2g_precision) of its source, weights and diff_dst. */
typedef struct {
    int N, H, W, cin, cout, k, stride, pad_t, pad_l, pad_b, pad_r, has_bias, prec;
} plan_key;

/* src_md and ddst_md (source, diff_dst) are bf16 in a bf16 plan; dst_md,
 * dsrc_md (diff_src), bias_md and user_w_md are f32 in every plan. */
typedef struct {
    plan_key key;
    int Ho, Wo;
    dnnl_memory_desc_t src_md, dsrc_md, dst_md, ddst_md, bias_md, user_w_md;
    dnnl_primitive_desc_t fwd_pd;
    dnnl_primitive_t fwd, w_to_fwd; /* w_to_fwd NULL when OIHW is already right */
    dnnl_primitive_t bwd_data, w_to_bwd;
    dnnl_primitive_t bwd_weights, dw_to_user;
    size_t fwd_w_bytes, bwd_w_bytes, dw_bytes;
    unsigned long last_used;
} conv_plan;

#define PLAN_CACHE_SIZE 1024
static _Thread_local conv_plan *t_plans[PLAN_CACHE_SIZE];
static _Thread_local unsigned long t_clock;

static void destroy_prim(dnnl_primitive_t p) {
    if (p) dnnl_primitive_destroy(p);
}

static void plan_free(conv_plan *p) {
    if (!p) return;
    dnnl_primitive_desc_destroy(p->fwd_pd);
    destroy_prim(p->fwd);
    destroy_prim(p->w_to_fwd);
    destroy_prim(p->bwd_data);
    destroy_prim(p->w_to_bwd);
    destroy_prim(p->bwd_weights);
    destroy_prim(p->dw_to_user);
    free(p);
}

void e2g_conv2d_cache_clear(void) {
    for (int i = 0; i < PLAN_CACHE_SIZE; i++) {
        plan_free(t_plans[i]);
        t_plans[i] = NULL;
    }
    for (int i = 0; i < SCRATCH_N; i++) {
        free(t_scratch[i].ptr);
        t_scratch[i].ptr = NULL;
        t_scratch[i].bytes = 0;
    }
    e2g_dnnl_stream_release();
}

/* A reorder from one layout to another, or NULL when they are the same. */
static dnnl_primitive_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                     size_t *to_bytes) {
    *to_bytes = dnnl_memory_desc_get_size(to);
    if (dnnl_memory_desc_equal(from, to)) return NULL;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    E2G_DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, e2g_dnnl_engine(), to, e2g_dnnl_engine(), NULL));
    E2G_DNNL_CHECK(dnnl_primitive_create(&prim, pd));
    dnnl_primitive_desc_destroy(pd);
    return prim;
}

/* The oneDNN type of a plan's source, weights and diff_dst. */
static dnnl_data_type_t key_type(const plan_key *k) {
    return k->prec == E2G_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
}

static void conv_dims(const plan_key *k, dnnl_dims_t strides, dnnl_dims_t pad_l, dnnl_dims_t pad_r) {
    strides[0] = strides[1] = k->stride;
    pad_l[0] = k->pad_t, pad_l[1] = k->pad_l;
    pad_r[0] = k->pad_b, pad_r[1] = k->pad_r;
}

static conv_plan *plan_create(const plan_key *key) {
    conv_plan *p = e2g_xcalloc(1, sizeof *p);
    p->key = *key;
    p->Ho = (key->H + key->pad_t + key->pad_b - key->k) / key->stride + 1;
    p->Wo = (key->W + key->pad_l + key->pad_r - key->k) / key->stride + 1;
    dnnl_dims_t src_dims = {key->N, key->cin, key->H, key->W};
    dnnl_dims_t dst_dims = {key->N, key->cout, p->Ho, p->Wo};
    dnnl_dims_t w_dims = {key->cout, key->cin, key->k, key->k};
    dnnl_dims_t b_dims = {key->cout};
    dnnl_data_type_t in_t = key_type(key);
    dnnl_memory_desc_t w_any;
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->src_md, 4, src_dims, in_t, dnnl_nhwc));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->dsrc_md, 4, src_dims, dnnl_f32, dnnl_nhwc));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->dst_md, 4, dst_dims, dnnl_f32, dnnl_nhwc));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->ddst_md, 4, dst_dims, in_t, dnnl_nhwc));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->user_w_md, 4, w_dims, dnnl_f32, dnnl_oihw));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&w_any, 4, w_dims, in_t, dnnl_format_tag_any));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->bias_md, 1, b_dims, dnnl_f32, dnnl_x));

    dnnl_dims_t strides, pad_l, pad_r;
    conv_dims(key, strides, pad_l, pad_r);
    dnnl_convolution_desc_t desc;
    E2G_DNNL_CHECK(dnnl_convolution_forward_desc_init(
        &desc, dnnl_forward_training, dnnl_convolution_direct, &p->src_md, &w_any,
        key->has_bias ? &p->bias_md : NULL, &p->dst_md, strides, pad_l, pad_r));
    E2G_DNNL_CHECK(dnnl_primitive_desc_create(&p->fwd_pd, &desc, NULL, e2g_dnnl_engine(), NULL));
    E2G_DNNL_CHECK(dnnl_primitive_create(&p->fwd, p->fwd_pd));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(p->fwd_pd, dnnl_query_weights_md, 0);
    p->w_to_fwd = make_reorder(&p->user_w_md, w_md, &p->fwd_w_bytes);
    return p;
}

/* Backward primitives are built on first use: inference never pays for them. */
static void plan_add_backward(conv_plan *p) {
    const plan_key *key = &p->key;
    dnnl_dims_t w_dims = {key->cout, key->cin, key->k, key->k};
    dnnl_memory_desc_t w_any;
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&w_any, 4, w_dims, key_type(key), dnnl_format_tag_any));
    dnnl_dims_t strides, pad_l, pad_r;
    conv_dims(key, strides, pad_l, pad_r);

    /* diff_src f32 from bf16 diff_dst and weights; diff_weights and
     * diff_bias f32 from bf16 src and diff_dst (fp32: all f32). */
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd;
    E2G_DNNL_CHECK(dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &p->dsrc_md,
                                                        &w_any, &p->ddst_md, strides, pad_l, pad_r));
    E2G_DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, e2g_dnnl_engine(), p->fwd_pd));
    E2G_DNNL_CHECK(dnnl_primitive_create(&p->bwd_data, pd));
    p->w_to_bwd = make_reorder(&p->user_w_md, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                               &p->bwd_w_bytes);
    dnnl_primitive_desc_destroy(pd);

    dnnl_memory_desc_t dw_any;
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&dw_any, 4, w_dims, dnnl_f32, dnnl_format_tag_any));
    E2G_DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(
        &desc, dnnl_convolution_direct, &p->src_md, &dw_any, key->has_bias ? &p->bias_md : NULL,
        &p->ddst_md, strides, pad_l, pad_r));
    E2G_DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, e2g_dnnl_engine(), p->fwd_pd));
    E2G_DNNL_CHECK(dnnl_primitive_create(&p->bwd_weights, pd));
    const dnnl_memory_desc_t *dw_md = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
    size_t user_bytes;
    p->dw_to_user = make_reorder(dw_md, &p->user_w_md, &user_bytes);
    p->dw_bytes = dnnl_memory_desc_get_size(dw_md);
    dnnl_primitive_desc_destroy(pd);
}

static conv_plan *plan_get(const plan_key *key) {
    int victim = 0;
    for (int i = 0; i < PLAN_CACHE_SIZE; i++) {
        conv_plan *p = t_plans[i];
        if (p && memcmp(&p->key, key, sizeof *key) == 0) {
            p->last_used = ++t_clock;
            return p;
        }
        if (!p || (t_plans[victim] && p->last_used < t_plans[victim]->last_used)) victim = i;
    }
    e2g_dnnl_thread_hold();
    plan_free(t_plans[victim]);
    t_plans[victim] = plan_create(key);
    t_plans[victim]->last_used = ++t_clock;
    return t_plans[victim];
}

/* ---- execution ------------------------------------------------------------- */

typedef struct {
    int n;
    dnnl_exec_arg_t args[6];
    dnnl_memory_t mems[6];
} exec_args;

static void arg_add(exec_args *a, int kind, const dnnl_memory_desc_t *md, const void *ptr) {
    dnnl_memory_t m;
    E2G_DNNL_CHECK(dnnl_memory_create(&m, md, e2g_dnnl_engine(), (void *)ptr));
    a->mems[a->n] = m;
    a->args[a->n].arg = kind;
    a->args[a->n].memory = m;
    a->n++;
}

static void exec_and_release(dnnl_primitive_t prim, exec_args *a) {
    E2G_DNNL_CHECK(dnnl_primitive_execute(prim, e2g_dnnl_stream(), a->n, a->args));
    E2G_DNNL_CHECK(dnnl_stream_wait(e2g_dnnl_stream()));
    for (int i = 0; i < a->n; i++) dnnl_memory_destroy(a->mems[i]);
    a->n = 0;
}

static const dnnl_memory_desc_t *prim_md(dnnl_primitive_t prim, dnnl_query_t what) {
    const_dnnl_primitive_desc_t pd;
    E2G_DNNL_CHECK(dnnl_primitive_get_primitive_desc(prim, &pd));
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

/* Runs `reorder` from src into a scratch slot and returns the result, or
 * returns src unchanged when no reorder is needed. */
static const void *reordered(dnnl_primitive_t reorder, const void *src, int slot, size_t bytes) {
    if (!reorder) return src;
    void *dst = scratch(slot, bytes);
    exec_args a = {0};
    arg_add(&a, DNNL_ARG_FROM, prim_md(reorder, dnnl_query_src_md), src);
    arg_add(&a, DNNL_ARG_TO, prim_md(reorder, dnnl_query_dst_md), dst);
    exec_and_release(reorder, &a);
    return dst;
}

/* conv2d_out_size is in model_desc.c (e2gan_common: the kernels use it). */

static void add_into(float *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* Bytes per value of a plan's source and diff_dst. */
static size_t key_esize(const plan_key *k) {
    return k->prec == E2G_PRECISION_BF16 ? sizeof(uint16_t) : sizeof(float);
}

/* The n values of x as a plan of precision prec reads them: x itself in
 * fp32, its bf16 copy in scratch slot `slot` in bf16. */
static const void *as_input(int prec, const float *x, size_t n, int slot) {
    if (prec != E2G_PRECISION_BF16) return x;
    uint16_t *h = scratch(slot, n * sizeof(uint16_t));
    e2g_bf16_from_f32(h, x, n);
    return h;
}

/* Reflect padding (by py rows, px columns) and the conversion to bf16 in
 * one pass: inp (N, H, W, C) f32 → out (N, H + 2py, W + 2px, C) bf16. */
static void pad_reflect_bf16(uint16_t *out, const float *inp, int N, int H, int W, int C, int py,
                             int px) {
    int Hp = H + 2 * py, Wp = W + 2 * px;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < Hp; y++) {
            const float *row = inp + ((size_t)n * H + e2g_reflect_index(y - py, H)) * W * C;
            uint16_t *o = out + ((size_t)n * Hp + y) * Wp * C;
            for (int x = 0; x < px; x++) {
                e2g_bf16_from_f32(o + (size_t)x * C, row + (size_t)e2g_reflect_index(x - px, W) * C, C);
                e2g_bf16_from_f32(o + (size_t)(W + px + x) * C, row + (size_t)e2g_reflect_index(W + x, W) * C, C);
            }
            e2g_bf16_from_f32(o + (size_t)px * C, row, (size_t)W * C);
        }
}

/* out = conv(src) for one plan key; src is in the key's precision. */
static void run_forward(const plan_key *key, float *out, const void *src, const float *weight,
                        const float *bias) {
    conv_plan *p = plan_get(key);
    const void *w = reordered(p->w_to_fwd, weight, SCRATCH_W, p->fwd_w_bytes);
    exec_args a = {0};
    arg_add(&a, DNNL_ARG_SRC, &p->src_md, src);
    arg_add(&a, DNNL_ARG_WEIGHTS, dnnl_primitive_desc_query_md(p->fwd_pd, dnnl_query_weights_md, 0), w);
    if (bias) arg_add(&a, DNNL_ARG_BIAS, &p->bias_md, bias);
    arg_add(&a, DNNL_ARG_DST, &p->dst_md, out);
    exec_and_release(p->fwd, &a);
}

/* Gradients of one plan key's conv; dout and src are in the key's
 * precision (src is read only for the weight gradient and may be NULL
 * without it).  Returns the f32 input gradient in a scratch buffer (or NULL
 * when want_dsrc is 0); the f32 weight gradient, in OIHW, and the bias
 * gradient are also left in scratch (*dw, *db; NULL when not wanted).
 * Callers fold these into their own accumulators. */
static float *run_backward(const plan_key *key, int want_dsrc, const float **dw, const float **db,
                           const void *dout, const void *src, const float *weight) {
    conv_plan *p = plan_get(key);
    if (!p->bwd_data) plan_add_backward(p);
    float *dsrc = NULL;
    if (want_dsrc) {
        dsrc = scratch(SCRATCH_DSRC, (size_t)key->N * key->H * key->W * key->cin * sizeof(float));
        const void *w = reordered(p->w_to_bwd, weight, SCRATCH_W, p->bwd_w_bytes);
        exec_args a = {0};
        arg_add(&a, DNNL_ARG_DIFF_DST, &p->ddst_md, dout);
        arg_add(&a, DNNL_ARG_WEIGHTS, prim_md(p->bwd_data, dnnl_query_weights_md), w);
        arg_add(&a, DNNL_ARG_DIFF_SRC, &p->dsrc_md, dsrc);
        exec_and_release(p->bwd_data, &a);
    }
    if (dw) {
        size_t w_n = (size_t)key->cout * key->cin * key->k * key->k;
        float *dw_blocked = scratch(SCRATCH_DW, p->dw_bytes);
        float *dbias = key->has_bias ? scratch(SCRATCH_DB, (size_t)key->cout * sizeof(float)) : NULL;
        exec_args a = {0};
        arg_add(&a, DNNL_ARG_SRC, &p->src_md, src);
        arg_add(&a, DNNL_ARG_DIFF_DST, &p->ddst_md, dout);
        arg_add(&a, DNNL_ARG_DIFF_WEIGHTS, prim_md(p->bwd_weights, dnnl_query_diff_weights_md), dw_blocked);
        if (dbias) arg_add(&a, DNNL_ARG_DIFF_BIAS, &p->bias_md, dbias);
        exec_and_release(p->bwd_weights, &a);
        *dw = reordered(p->dw_to_user, dw_blocked, SCRATCH_DW_USER, w_n * sizeof(float));
        if (db) *db = dbias;
    }
    return dsrc;
}

/* The precision of a convolution: the setting, except where oneDNN 2.6's
 * bf16 kernels lose to fp32 (AVX512-BF16, bench/cpu_bf16_ops.sh):
 *  - forward with fewer than 4 input channels (the generator's RGB input
 *    layer): the kernels pad the channels to pairs, 2× slower than fp32;
 *  - backward with fewer than 32 output channels: the weight-gradient
 *    kernel runs 50–80 ms for a LoRA A convolution of rank 4 (oc 4) where
 *    fp32 takes well under 1 ms, and the `out` layer (oc 3) gained nothing. */
int e2g_conv_precision(int cin, int cout, int backward) {
    if (backward ? cout < 32 : cin < 4) return E2G_PRECISION_FP32;
    return (int)e2g_get_precision();
}

/* The plan key of a layer (in precision prec) and, when need_src is set,
 * the input oneDNN sees: the reflect-padded copy in scratch, or inp itself,
 * converted to bf16 in bf16 (NULL when need_src is 0). */
static const void *conv_source(const float *inp, int N, int H, int W, const e2g_conv_shape *cs,
                               int has_bias, int need_src, int prec, plan_key *key) {
    int reflect = cs->pad_mode == E2G_PAD_REFLECT && cs->pad > 0;
    int p = reflect ? cs->pad : 0, zp = reflect ? 0 : cs->pad;
    int Ho = e2g_conv2d_out_size(H, cs), Wo = e2g_conv2d_out_size(W, cs);
    *key = (plan_key){N, H + 2 * p, W + 2 * p, cs->cin, cs->cout, cs->k, cs->stride, zp, zp, 0, 0,
                      has_bias, prec};
    /* PyTorch pads symmetrically and floors; oneDNN wants the bottom/right
     * pad that makes the output size exact. */
    key->pad_b = (Ho - 1) * cs->stride + cs->k - key->H - zp;
    key->pad_r = (Wo - 1) * cs->stride + cs->k - key->W - zp;
    if (!need_src) return NULL;
    size_t padded_n = (size_t)N * key->H * key->W * cs->cin;
    if (!reflect) return as_input(key->prec, inp, padded_n, SCRATCH_SRC16);
    if (key->prec == E2G_PRECISION_BF16) {
        uint16_t *padded = scratch(SCRATCH_SRC16, padded_n * sizeof(uint16_t));
        pad_reflect_bf16(padded, inp, N, H, W, cs->cin, p, p);
        return padded;
    }
    float *padded = scratch(SCRATCH_PAD, padded_n * sizeof(float));
    e2g_pad_reflect_forward(padded, inp, N, H, W, cs->cin, p);
    return padded;
}

void e2g_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int H, int W, const e2g_conv_shape *cs) {
    plan_key key;
    const void *src = conv_source(inp, N, H, W, cs, bias != NULL, 1, e2g_conv_precision(cs->cin, cs->cout, 0), &key);
    run_forward(&key, out, src, weight, bias);
}

void e2g_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int H, int W, const e2g_conv_shape *cs) {
    plan_key key;
    /* The bias gradient is a by-product of the weights primitive; a plan
     * with a bias is only needed when that gradient is wanted. */
    int want_dw = dweight || dbias;
    const void *src = conv_source(inp, N, H, W, cs, dbias != NULL, want_dw, e2g_conv_precision(cs->cin, cs->cout, 1), &key);
    size_t dout_n = (size_t)N * e2g_conv2d_out_size(H, cs) * e2g_conv2d_out_size(W, cs) * cs->cout;
    const void *d = as_input(key.prec, dout, dout_n, SCRATCH_DOUT16);
    const float *dw = NULL, *db = NULL;
    float *dsrc = run_backward(&key, dinp != NULL, want_dw ? &dw : NULL, &db, d, src, weight);
    if (dinp && key.H != H)
        e2g_pad_reflect_backward(dinp, dsrc, N, H, W, cs->cin, (key.H - H) / 2);
    else if (dinp)
        add_into(dinp, dsrc, (size_t)N * H * W * cs->cin);
    if (dweight) add_into(dweight, dw, (size_t)cs->cout * cs->cin * cs->k * cs->k);
    if (dbias) add_into(dbias, db, cs->cout);
}

/* ---- nearest ×2 upsample fused into a 3×3 conv ---------------------------------- */

/* Output row 2i+a of "upsample, then 3×3 conv with zero pad 1" reads
 * upsampled rows 2i+a−1 .. 2i+a+1, i.e. input rows i−1, i (a = 0) or i, i+1
 * (a = 1): each output phase (a, b) is a 2×2 conv of the input whose taps
 * sum the 3×3 taps that land on the same input pixel.  TAP_GROUP[a][ky] is
 * the 2×2 tap that 3×3 tap ky joins in phase a.  4·4 instead of 4·9 MACs
 * per input pixel, and no upsampled copy in memory.  In bf16 the taps are
 * summed in f32 and the sums rounded once, by the weight reorder. */
static const int TAP_GROUP[2][3] = {{0, 1, 1}, {0, 0, 1}};

static plan_key phase_key(int N, int H, int W, int cin, int cout, int has_bias, int a, int b,
                          int prec) {
    return (plan_key){N, H, W, cin, cout, 2, 1, a == 0, b == 0, a == 1, b == 1, has_bias, prec};
}

/* The 2×2 kernels of the four phases, (4, cout, cin, 2, 2), from (cout, cin, 3, 3). */
static float *phase_weights(const float *weight, int cin, int cout) {
    size_t per = (size_t)cout * cin;
    float *k = scratch(SCRATCH_PHASE_W, 4 * per * 4 * sizeof(float));
    memset(k, 0, 4 * per * 4 * sizeof(float));
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (size_t oc_ic = 0; oc_ic < per; oc_ic++)
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++)
                        k[((size_t)(a * 2 + b) * per + oc_ic) * 4 + TAP_GROUP[a][ky] * 2 + TAP_GROUP[b][kx]] +=
                            weight[oc_ic * 9 + ky * 3 + kx];
    return k;
}

/* Phase-major (4, N, H, W, C) ↔ interleaved image (N, 2H, 2W, C):
 * to_image 1 copies phases into the image, 0 the image into phases. */
static void shuffle_phases(float *dst, const float *src, int N, int H, int W, int C, int to_image) {
    size_t plane = (size_t)N * H * W * C, row = (size_t)C * sizeof(float);
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < 2 * H; y++)
            for (int b = 0; b < 2; b++) {
                size_t ph = (size_t)((y % 2) * 2 + b) * plane + ((size_t)n * H + y / 2) * W * C;
                size_t im = (((size_t)n * 2 * H + y) * 2 * W + b) * C;
                for (int x = 0; x < W; x++) {
                    if (to_image)
                        memcpy(dst + im + (size_t)2 * x * C, src + ph + (size_t)x * C, row);
                    else
                        memcpy(dst + ph + (size_t)x * C, src + im + (size_t)2 * x * C, row);
                }
            }
}

void e2g_upconv2x_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                      int H, int W, int cin, int cout) {
    size_t plane = (size_t)N * H * W * cout;
    int prec = e2g_conv_precision(cin, cout, 0);
    const void *src = as_input(prec, inp, (size_t)N * H * W * cin, SCRATCH_SRC16);
    float *k = phase_weights(weight, cin, cout);
    float *phases = scratch(SCRATCH_PHASES, 4 * plane * sizeof(float));
    for (int ph = 0; ph < 4; ph++) {
        plan_key key = phase_key(N, H, W, cin, cout, bias != NULL, ph / 2, ph % 2, prec);
        run_forward(&key, phases + ph * plane, src, k + (size_t)ph * cout * cin * 4, bias);
    }
    shuffle_phases(out, phases, N, H, W, cout, 1);
}

/* ---- bands of rows (memory-lean inference) --------------------------------------- */

void e2g_conv2d_forward_band(float *out, const float *band, const float *weight, const float *bias,
                         int rows, int W, const e2g_conv_shape *cs) {
    int Wo = e2g_conv2d_out_size(W, cs);
    plan_key key = {1, rows, W, cs->cin, cs->cout, cs->k, cs->stride, 0, cs->pad, 0, 0, bias != NULL,
                    e2g_conv_precision(cs->cin, cs->cout, 0)};
    key.pad_r = (Wo - 1) * cs->stride + cs->k - W - cs->pad;
    const void *src;
    if (cs->pad_mode == E2G_PAD_REFLECT && cs->pad > 0) {
        int p = cs->pad;
        size_t padded_n = (size_t)rows * (W + 2 * p) * cs->cin;
        if (key.prec == E2G_PRECISION_BF16) {
            uint16_t *padded = scratch(SCRATCH_SRC16, padded_n * sizeof(uint16_t));
            pad_reflect_bf16(padded, band, 1, rows, W, cs->cin, 0, p);
            src = padded;
        } else {
            float *padded = scratch(SCRATCH_PAD, padded_n * sizeof(float));
#pragma omp parallel for schedule(static)
            for (int y = 0; y < rows; y++)
                for (int x = 0; x < W + 2 * p; x++)
                    memcpy(padded + ((size_t)y * (W + 2 * p) + x) * cs->cin,
                           band + ((size_t)y * W + e2g_reflect_index(x - p, W)) * cs->cin, cs->cin * sizeof(float));
            src = padded;
        }
        key.W = W + 2 * p, key.pad_l = key.pad_r = 0;
    } else {
        src = as_input(key.prec, band, (size_t)rows * W * cs->cin, SCRATCH_SRC16);
    }
    run_forward(&key, out, src, weight, bias);
}

void e2g_upconv2x_forward_band(float *out, const float *band, const float *weight, const float *bias,
                           int rows, int W, int cin, int cout) {
    int n = rows - 2; /* input rows i0−1 .. i1 give output rows 2·i0 .. 2·i1−1 */
    size_t plane = (size_t)n * W * cout;
    int prec = e2g_conv_precision(cin, cout, 0);
    const char *src = as_input(prec, band, (size_t)rows * W * cin, SCRATCH_SRC16);
    size_t row_bytes = (size_t)W * cin * (prec == E2G_PRECISION_BF16 ? sizeof(uint16_t) : sizeof(float));
    float *k = phase_weights(weight, cin, cout);
    float *phases = scratch(SCRATCH_PHASES, 4 * plane * sizeof(float));
    for (int ph = 0; ph < 4; ph++) {
        int a = ph / 2, b = ph % 2;
        /* phase a reads rows (i−1, i) or (i, i+1): the band from row a */
        plan_key key = {1, n + 1, W, cin, cout, 2, 1, 0, b == 0, 0, b == 1, bias != NULL, prec};
        run_forward(&key, phases + ph * plane, src + a * row_bytes, k + (size_t)ph * cout * cin * 4, bias);
    }
    shuffle_phases(out, phases, 1, n, W, cout, 1);
}

void e2g_upconv2x_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int H, int W, int cin,
                       int cout) {
    size_t plane = (size_t)N * H * W * cout, per = (size_t)cout * cin;
    int prec = e2g_conv_precision(cin, cout, 1), want_dk = dweight || dbias;
    float *dphases = scratch(SCRATCH_PHASES, 4 * plane * sizeof(float));
    shuffle_phases(dphases, dout, N, H, W, cout, 0);
    const char *d = as_input(prec, dphases, 4 * plane, SCRATCH_DOUT16);
    const void *src = want_dk ? as_input(prec, inp, (size_t)N * H * W * cin, SCRATCH_SRC16) : NULL;
    const float *k = phase_weights(weight, cin, cout);
    for (int ph = 0; ph < 4; ph++) {
        int a = ph / 2, b = ph % 2;
        plan_key key = phase_key(N, H, W, cin, cout, dbias != NULL, a, b, prec);
        const float *dk = NULL, *db = NULL;
        float *dsrc = run_backward(&key, dinp != NULL, want_dk ? &dk : NULL, &db,
                                   d + ph * plane * key_esize(&key), src, k + (size_t)ph * per * 4);
        if (dinp) add_into(dinp, dsrc, (size_t)N * H * W * cin);
        if (dbias) add_into(dbias, db, cout);
        if (!dweight) continue;
        for (size_t oc_ic = 0; oc_ic < per; oc_ic++)
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++)
                    dweight[oc_ic * 9 + ky * 3 + kx] += dk[oc_ic * 4 + TAP_GROUP[a][ky] * 2 + TAP_GROUP[b][kx]];
    }
}

/* ---- reflect padding ------------------------------------------------------- */

void e2g_pad_reflect_forward(float *out, const float *inp, int N, int H, int W, int C, int p) {
    int Hp = H + 2 * p, Wp = W + 2 * p;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < Hp; y++) {
            const float *row = inp + ((size_t)n * H + e2g_reflect_index(y - p, H)) * W * C;
            float *o = out + ((size_t)n * Hp + y) * Wp * C;
            for (int x = 0; x < Wp; x++)
                memcpy(o + (size_t)x * C, row + (size_t)e2g_reflect_index(x - p, W) * C, C * sizeof(float));
        }
}

void e2g_pad_reflect_backward(float *dinp, const float *dout, int N, int H, int W, int C, int p) {
    int Hp = H + 2 * p, Wp = W + 2 * p;
    /* Parallel over samples and channels' owners: each padded row folds into
     * one source row, so distinct samples never collide. */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < Hp; y++) {
            float *row = dinp + ((size_t)n * H + e2g_reflect_index(y - p, H)) * W * C;
            const float *d = dout + ((size_t)n * Hp + y) * Wp * C;
            for (int x = 0; x < Wp; x++) {
                float *dst = row + (size_t)e2g_reflect_index(x - p, W) * C;
                const float *g = d + (size_t)x * C;
                for (int c = 0; c < C; c++) dst[c] += g[c];
            }
        }
}
