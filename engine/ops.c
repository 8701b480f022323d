/* ops.c — CPU forward/backward of the norms, linear layers, activations,
 * upsampling, the generator's output and the losses.  Heavy products go to
 * oneDNN's sgemm, or in bf16 precision (precision.h) the big linear layers
 * to oneDNN's bf16 matmul with f32 accumulation; the rest are OpenMP loops.
 * Statistics are accumulated in double so results match PyTorch to fp32
 * rounding at any image size. */
#include "ops.h"

#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dnnl.h"
#include "fastmath.h"
#include "precision.h"

#define NORM_EPS 1e-5

/* ---- instance norm ---------------------------------------------------------- */

#define SUM_BLOCK 256 /* pixels summed in float before joining the double total */

/* Per (sample, channel): s1 = Σ a, s2 = Σ a·b over the HW pixels of NHWC
 * tensors.  Rows are read contiguously (vectorised over channels) in blocks
 * of SUM_BLOCK pixels spread over the threads; block sums meet in double. */
static void channel_sums(double *s1, double *s2, const float *a, const float *b, int N, int HW,
                         int C) {
    int nb = (HW + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part = e2g_xmalloc((size_t)N * nb * 2 * C * sizeof(double));
#pragma omp parallel
    {
        float *acc = e2g_xmalloc(2 * (size_t)C * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < N; n++)
            for (int blk = 0; blk < nb; blk++) {
                memset(acc, 0, 2 * (size_t)C * sizeof(float));
                int end = (blk + 1) * SUM_BLOCK < HW ? (blk + 1) * SUM_BLOCK : HW;
                for (int i = blk * SUM_BLOCK; i < end; i++) {
                    const float *x = a + ((size_t)n * HW + i) * C, *y = b + ((size_t)n * HW + i) * C;
#pragma omp simd
                    for (int c = 0; c < C; c++) {
                        acc[c] += x[c];
                        acc[C + c] += x[c] * y[c];
                    }
                }
                double *dst = part + ((size_t)n * nb + blk) * 2 * C;
                for (int c = 0; c < 2 * C; c++) dst[c] = acc[c];
            }
        free(acc);
    }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double t1 = 0, t2 = 0;
            for (int blk = 0; blk < nb; blk++) {
                t1 += part[((size_t)n * nb + blk) * 2 * C + c];
                t2 += part[((size_t)n * nb + blk) * 2 * C + C + c];
            }
            s1[n * C + c] = t1;
            s2[n * C + c] = t2;
        }
    free(part);
}

/* out = inp·scale[n,c] + shift[n,c], then ReLU when asked. */
static void channel_affine(float *out, const float *inp, const float *scale, const float *shift,
                           int relu, int N, int HW, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            const float *x = inp + ((size_t)n * HW + i) * C, *sc = scale + n * C, *sh = shift + n * C;
            float *y = out + ((size_t)n * HW + i) * C;
            if (relu) {
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    const float v = x[c] * sc[c] + sh[c];
                    y[c] = v > 0.0f ? v : 0.0f;
                }
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) y[c] = x[c] * sc[c] + sh[c];
            }
        }
}

void e2g_instancenorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int per_sample, int relu, int N,
                          int HW, int C) {
    double *s1 = e2g_xmalloc((size_t)N * C * sizeof(double)), *s2 = e2g_xmalloc((size_t)N * C * sizeof(double));
    float *scale = e2g_xmalloc((size_t)N * C * sizeof(float)), *shift = e2g_xmalloc((size_t)N * C * sizeof(float));
    channel_sums(s1, s2, inp, inp, N, HW, C);
    for (int k = 0; k < N * C; k++) {
        double m = s1[k] / HW, var = fmax(s2[k] / HW - m * m, 0.0), r = 1.0 / sqrt(var + NORM_EPS);
        mean[k] = (float)m;
        rstd[k] = (float)r;
        int j = per_sample ? k : k % C;
        scale[k] = (float)(r * weight[j]);
        shift[k] = (float)(bias[j] - m * r * weight[j]);
    }
    channel_affine(out, inp, scale, shift, relu, N, HW, C);
    free(s1), free(s2), free(scale), free(shift);
}

void e2g_instancenorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *weight, int per_sample, int N, int HW, int C) {
    /* Σ dy and Σ dy·x̂ per (n, c) give every gradient; Σ dy·x̂ = r(Σ dy·x − m Σ dy). */
    double *sum_dy = e2g_xmalloc((size_t)N * C * sizeof(double)), *sum_dyx = e2g_xmalloc((size_t)N * C * sizeof(double));
    channel_sums(sum_dy, sum_dyx, dout, inp, N, HW, C);
    for (int k = 0; k < N * C; k++) {
        sum_dyx[k] = rstd[k] * (sum_dyx[k] - mean[k] * sum_dy[k]);
        int j = per_sample ? k : k % C;
        if (dbias) dbias[j] += (float)sum_dy[k];
        if (dweight) dweight[j] += (float)sum_dyx[k];
    }
    if (dinp) {
        /* dx = r·w·(dy − mean(dy) − x̂·mean(dy·x̂)) = a·dy + b·x + c per (n, c) */
        float *ka = e2g_xmalloc(3 * (size_t)N * C * sizeof(float)), *kb = ka + N * C, *kc = kb + N * C;
        for (int k = 0; k < N * C; k++) {
            double r = rstd[k], w = weight[per_sample ? k : k % C], mdy = sum_dy[k] / HW, mdyx = sum_dyx[k] / HW;
            ka[k] = (float)(r * w);
            kb[k] = (float)(-r * w * mdyx * r);
            kc[k] = (float)(r * w * (-mdy + mdyx * r * mean[k]));
        }
#pragma omp parallel for collapse(2) schedule(static)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t row = ((size_t)n * HW + i) * C;
                const float *a = ka + n * C, *b = kb + n * C, *c0 = kc + n * C;
#pragma omp simd
                for (int c = 0; c < C; c++)
                    dinp[row + c] += a[c] * dout[row + c] + b[c] * inp[row + c] + c0[c];
            }
        free(ka);
    }
    free(sum_dy), free(sum_dyx);
}

/* ---- layer norm -------------------------------------------------------------- */

void e2g_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int M, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) {
            s += x[c];
            ss += (double)x[c] * x[c];
        }
        double m = s / C, var = fmax(ss / C - m * m, 0.0);
        float fm = (float)m, r = (float)(1.0 / sqrt(var + NORM_EPS));
        mean[i] = fm;
        rstd[i] = r;
        for (int c = 0; c < C; c++) y[c] = (x[c] - fm) * r * weight[c] + bias[c];
    }
}

void e2g_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *mean, const float *rstd,
                        const float *weight, int M, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < M; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            float m = mean[i], r = rstd[i];
            double a = 0, b = 0;
            for (int c = 0; c < C; c++) {
                double g = (double)dy[c] * weight[c];
                a += g;
                b += g * ((x[c] - m) * r);
            }
            float ma = (float)(a / C), mb = (float)(b / C);
            for (int c = 0; c < C; c++)
                dinp[(size_t)i * C + c] += r * (dy[c] * weight[c] - ma - (x[c] - m) * r * mb);
        }
    }
    if (dweight || dbias) {
#pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            double dw = 0, db = 0;
            for (int i = 0; i < M; i++) {
                float g = dout[(size_t)i * C + c];
                db += g;
                dw += (double)g * ((inp[(size_t)i * C + c] - mean[i]) * rstd[i]);
            }
            if (dweight) dweight[c] += (float)dw;
            if (dbias) dbias[c] += (float)db;
        }
    }
}

/* ---- linear ------------------------------------------------------------------ */

void e2g_gemm(char trans_a, char trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    dnnl_status_t s = dnnl_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    E2G_ASSERT(s == dnnl_success);
}

/* ---- bf16 matmul ------------------------------------------------------------ */

/* One matmul primitive: the sizes, the operands' stored orientation, C's
 * row stride, whether alpha (a runtime output scale) and beta (a sum
 * post-op, fixed at creation) take part. */
typedef struct {
    int M, N, K, trans_a, trans_b, ldc, has_alpha;
    float beta;
} mm_key;

typedef struct {
    mm_key key;
    dnnl_memory_desc_t a_md, b_md, c_md, scale_md;
    dnnl_primitive_t prim;
    unsigned long last_used;
} mm_plan;

#define MM_CACHE_SIZE 64
static _Thread_local mm_plan *t_mm[MM_CACHE_SIZE];
static _Thread_local unsigned long t_mm_clock;
static _Thread_local struct {
    uint16_t *ptr;
    size_t n;
} t_mm_buf[2]; /* the bf16 copies of A and B */

void e2g_gemm_cache_clear(void) {
    for (int i = 0; i < MM_CACHE_SIZE; i++) {
        if (t_mm[i]) dnnl_primitive_destroy(t_mm[i]->prim);
        free(t_mm[i]);
        t_mm[i] = NULL;
    }
    for (int i = 0; i < 2; i++) {
        free(t_mm_buf[i].ptr);
        t_mm_buf[i].ptr = NULL;
        t_mm_buf[i].n = 0;
    }
    e2g_dnnl_stream_release();
}

/* The md of a rows × cols operand stored densely, as is (row stride cols)
 * or transposed (cols × rows, row stride rows). */
static void mm_operand_md(dnnl_memory_desc_t *md, int rows, int cols, int transposed,
                          dnnl_data_type_t t) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {transposed ? 1 : cols, transposed ? rows : 1};
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_strides(md, 2, dims, t, strides));
}

static mm_plan *mm_plan_create(const mm_key *k) {
    mm_plan *p = e2g_xcalloc(1, sizeof *p);
    p->key = *k;
    mm_operand_md(&p->a_md, k->M, k->K, k->trans_a, dnnl_bf16);
    mm_operand_md(&p->b_md, k->K, k->N, k->trans_b, dnnl_bf16);
    dnnl_dims_t c_dims = {k->M, k->N}, c_strides = {k->ldc, 1}, one = {1};
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_strides(&p->c_md, 2, c_dims, dnnl_f32, c_strides));
    E2G_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&p->scale_md, 1, one, dnnl_f32, dnnl_x));
    dnnl_primitive_attr_t attr;
    E2G_DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    if (k->has_alpha) {
        const float runtime = DNNL_RUNTIME_F32_VAL;
        E2G_DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &runtime));
    }
    if (k->beta != 0.0f) {
        dnnl_post_ops_t po;
        E2G_DNNL_CHECK(dnnl_post_ops_create(&po));
        E2G_DNNL_CHECK(dnnl_post_ops_append_sum(po, k->beta));
        E2G_DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    E2G_DNNL_CHECK(dnnl_matmul_desc_init(&desc, &p->a_md, &p->b_md, NULL, &p->c_md));
    E2G_DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, e2g_dnnl_engine(), NULL));
    E2G_DNNL_CHECK(dnnl_primitive_create(&p->prim, pd));
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return p;
}

static mm_plan *mm_plan_get(const mm_key *key) {
    int victim = 0;
    for (int i = 0; i < MM_CACHE_SIZE; i++) {
        mm_plan *p = t_mm[i];
        if (p && memcmp(&p->key, key, sizeof *key) == 0) {
            p->last_used = ++t_mm_clock;
            return p;
        }
        if (!p || (t_mm[victim] && p->last_used < t_mm[victim]->last_used)) victim = i;
    }
    e2g_dnnl_thread_hold();
    if (t_mm[victim]) dnnl_primitive_destroy(t_mm[victim]->prim);
    free(t_mm[victim]);
    t_mm[victim] = mm_plan_create(key);
    t_mm[victim]->last_used = ++t_mm_clock;
    return t_mm[victim];
}

/* The bf16 copy of a stored (rows × cols, row stride ld) f32 operand, dense
 * (row stride cols), in thread-local buffer `slot`. */
static const uint16_t *mm_to_bf16(int slot, const float *x, int rows, int cols, int ld) {
    size_t n = (size_t)rows * cols;
    if (t_mm_buf[slot].n < n) {
        e2g_dnnl_thread_hold();
        free(t_mm_buf[slot].ptr);
        t_mm_buf[slot].ptr = e2g_xmalloc(n * sizeof(uint16_t));
        t_mm_buf[slot].n = n;
    }
    uint16_t *h = t_mm_buf[slot].ptr;
    if (ld == cols) {
        e2g_bf16_from_f32(h, x, n);
    } else {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int r = 0; r < rows; r++) e2g_bf16_from_f32(h + (size_t)r * cols, x + (size_t)r * ld, cols);
    }
    return h;
}

static void mm_arg(dnnl_exec_arg_t *args, dnnl_memory_t *mems, int *n, int kind,
                   const dnnl_memory_desc_t *md, const void *ptr) {
    E2G_DNNL_CHECK(dnnl_memory_create(&mems[*n], md, e2g_dnnl_engine(), (void *)ptr));
    args[*n].arg = kind;
    args[*n].memory = mems[*n];
    (*n)++;
}

void e2g_gemm_bf16(char trans_a, char trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) { /* nothing to multiply: C = beta·C, as sgemm leaves it */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    int ta = trans_a == 'T' || trans_a == 't', tb = trans_b == 'T' || trans_b == 't';
    mm_key key = {M, N, K, ta, tb, ldc, alpha != 1.0f, beta};
    mm_plan *p = mm_plan_get(&key);
    const uint16_t *a = ta ? mm_to_bf16(0, A, K, M, lda) : mm_to_bf16(0, A, M, K, lda);
    const uint16_t *b = tb ? mm_to_bf16(1, B, N, K, ldb) : mm_to_bf16(1, B, K, N, ldb);
    dnnl_exec_arg_t args[4];
    dnnl_memory_t mems[4];
    int n = 0;
    mm_arg(args, mems, &n, DNNL_ARG_SRC, &p->a_md, a);
    mm_arg(args, mems, &n, DNNL_ARG_WEIGHTS, &p->b_md, b);
    mm_arg(args, mems, &n, DNNL_ARG_DST, &p->c_md, C);
    if (key.has_alpha) mm_arg(args, mems, &n, DNNL_ARG_ATTR_OUTPUT_SCALES, &p->scale_md, &alpha);
    E2G_DNNL_CHECK(dnnl_primitive_execute(p->prim, e2g_dnnl_stream(), n, args));
    E2G_DNNL_CHECK(dnnl_stream_wait(e2g_dnnl_stream()));
    for (int i = 0; i < n; i++) dnnl_memory_destroy(mems[i]);
}

/* The linear layers' products: bf16 in bf16 precision when every dimension
 * is at least LINEAR_BF16_MIN (the transformer's projections and MLP; LoRA's
 * rank-r factors stay fp32), sgemm otherwise. */
#define LINEAR_BF16_MIN 64

static void linear_gemm(char trans_a, char trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc) {
    if (e2g_get_precision() == E2G_PRECISION_BF16 && M >= LINEAR_BF16_MIN && N >= LINEAR_BF16_MIN &&
        K >= LINEAR_BF16_MIN)
        e2g_gemm_bf16(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        e2g_gemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void e2g_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M,
                    int in, int outf, int accumulate) {
    linear_gemm('N', 'T', M, outf, in, inp, in, weight, in, accumulate ? 1.0f : 0.0f, out, outf);
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((size_t)M * outf > 32768)
    for (int i = 0; i < M; i++)
        for (int o = 0; o < outf; o++) out[(size_t)i * outf + o] += bias[o];
}

void e2g_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int M, int in, int outf) {
    if (dinp) linear_gemm('N', 'N', M, in, outf, dout, outf, weight, in, 1.0f, dinp, in);
    if (dweight) linear_gemm('T', 'N', outf, in, M, dout, outf, inp, in, 1.0f, dweight, in);
    if (dbias) {
        for (int o = 0; o < outf; o++) {
            double s = 0;
            for (int i = 0; i < M; i++) s += dout[(size_t)i * outf + o];
            dbias[o] += (float)s;
        }
    }
}

/* ---- activations ------------------------------------------------------------- */

void e2g_relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

void e2g_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        if (out[i] > 0) dinp[i] += dout[i];
}

void e2g_leakyrelu_forward(float *out, const float *inp, float slope, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : slope * inp[i];
}

void e2g_leakyrelu_backward(float *dinp, const float *dout, const float *inp, float slope, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0 ? dout[i] : slope * dout[i];
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

void e2g_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + fast_tanh(GELU_K * (x + GELU_C * x * x * x)));
    }
}

void e2g_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], t = fast_tanh(GELU_K * (x + GELU_C * x * x * x));
        float dt = GELU_K * (1.0f + 3.0f * GELU_C * x * x) * (1.0f - t * t);
        dinp[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * dt);
    }
}

/* ---- output ------------------------------------------------------------------ */

#define OUT_CLAMP 0.999f

static inline float clamped_atanh(float x) {
    return fast_atanh(x < -OUT_CLAMP ? -OUT_CLAMP : x > OUT_CLAMP ? OUT_CLAMP : x);
}

/* y = tanh(o + gain·atanh(clamp(x))), gain per RGB channel (NULL: 1;
 * residual 0: no x).  With a gain, one iteration per pixel, so the three
 * gains are scalars and the loop vectorises over pixels. */
static void output_forward(float *y, const float *o, const float *x, int residual, const float *gain,
                           size_t n) {
    const float *xs = residual ? x : o; /* read but multiplied by 0 when there is no x */
    if (!gain) {
        const float g = residual ? 1.0f : 0.0f;
#pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) y[i] = fast_tanh(o[i] + g * clamped_atanh(xs[i]));
        return;
    }
    E2G_ASSERT(residual && n % 3 == 0);
    const float g0 = gain[0], g1 = gain[1], g2 = gain[2];
    const size_t pixels = n / 3;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t p = 0; p < pixels; p++) {
        y[3 * p] = fast_tanh(o[3 * p] + g0 * clamped_atanh(xs[3 * p]));
        y[3 * p + 1] = fast_tanh(o[3 * p + 1] + g1 * clamped_atanh(xs[3 * p + 1]));
        y[3 * p + 2] = fast_tanh(o[3 * p + 2] + g2 * clamped_atanh(xs[3 * p + 2]));
    }
}

static void output_backward(float *d_o, float *dx, float *dgain, const float *dy, const float *y,
                            const float *x, int residual, const float *gain, size_t n) {
    double dg0 = 0, dg1 = 0, dg2 = 0;
#pragma omp parallel for schedule(static) if (n > 32768) reduction(+ : dg0, dg1, dg2)
    for (size_t i = 0; i < n; i++) {
        float g = dy[i] * (1.0f - y[i] * y[i]), k = gain ? gain[i % 3] : 1.0f;
        if (d_o) d_o[i] += g;
        /* clamp passes the gradient where -0.999 <= x <= 0.999, as in PyTorch */
        if (dx && residual && x[i] >= -OUT_CLAMP && x[i] <= OUT_CLAMP) dx[i] += k * g / (1.0f - x[i] * x[i]);
        if (dgain) {
            double t = (double)g * clamped_atanh(x[i]);
            if (i % 3 == 0) dg0 += t;
            else if (i % 3 == 1) dg1 += t;
            else dg2 += t;
        }
    }
    if (dgain) dgain[0] += (float)dg0, dgain[1] += (float)dg1, dgain[2] += (float)dg2;
}

void e2g_output_forward(float *y, const float *o, const float *x, int residual, size_t n) {
    output_forward(y, o, x, residual, NULL, n);
}

void e2g_output_backward(float *d_o, float *dx, const float *dy, const float *y, const float *x,
                     int residual, size_t n) {
    output_backward(d_o, dx, NULL, dy, y, x, residual, NULL, n);
}

void e2g_output_gated_forward(float *y, const float *o, const float *x, const float *gain, size_t n) {
    output_forward(y, o, x, 1, gain, n);
}

void e2g_output_gated_backward(float *d_o, float *dx, float *dgain, const float *dy, const float *y,
                               const float *x, const float *gain, size_t n) {
    output_backward(d_o, dx, dgain, dy, y, x, 1, gain, n);
}

void e2g_add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void e2g_add_gated_forward(float *out, const float *a, const float *b, const float *gain, int N, size_t pixels,
                           int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * pixels * C > 32768)
    for (size_t p = 0; p < (size_t)N * pixels; p++) {
        const float *g = gain + (p / pixels) * C;
        for (int c = 0; c < C; c++) out[p * C + c] = a[p * C + c] + g[c] * b[p * C + c];
    }
}

void e2g_add_gated_backward(float *db, float *dgain, const float *dout, const float *b, const float *gain,
                            int N, size_t pixels, int C) {
    for (int n = 0; n < N; n++) {
        const float *g = gain + (size_t)n * C;
        size_t at = (size_t)n * pixels * C;
        if (db)
#pragma omp parallel for schedule(static) if (pixels * C > 32768)
            for (size_t p = 0; p < pixels; p++)
                for (int c = 0; c < C; c++) db[at + p * C + c] += g[c] * dout[at + p * C + c];
        if (!dgain) continue;
        double *sum = e2g_xcalloc((size_t)C, sizeof(double)); /* in order: independent of the thread count */
        for (size_t p = 0; p < pixels; p++)
            for (int c = 0; c < C; c++) sum[c] += (double)dout[at + p * C + c] * b[at + p * C + c];
        for (int c = 0; c < C; c++) dgain[(size_t)n * C + c] += (float)sum[c];
        free(sum);
    }
}

void e2g_accumulate(float *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* ---- losses ------------------------------------------------------------------ */

float e2g_mse_const_loss(float *grad, const float *pred, float target, size_t n, float scale) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = pred[i] - target;
        s += d * d;
        if (grad) grad[i] += scale * 2.0f * (float)d / (float)n;
    }
    return (float)(s / n);
}

/* g·sign(d), 0 at d == 0 (PyTorch's gradient of |d|, scaled). */
static inline float abs_grad(float d, float g) { return d > 0 ? g : (d < 0 ? -g : 0.0f); }

float e2g_l1_loss(float *grad, const float *a, const float *b, size_t n, float scale) {
    double s = 0;
    float g = scale / (float)n;
    for (size_t i = 0; i < n; i++) {
        float d = a[i] - b[i];
        s += fabsf(d);
        if (grad) grad[i] += abs_grad(d, g);
    }
    return (float)(s / n);
}

/* Adds one gradient-domain term between neighbours i and j (j = i + stride)
 * of a and b: its |difference| to *sum and ±g to grad[j], grad[i]. */
static inline void edge_term(float *grad, const float *a, const float *b, size_t i, size_t j, float g,
                             double *sum) {
    float d = (a[j] - a[i]) - (b[j] - b[i]);
    *sum += fabsf(d);
    if (grad) {
        float s = abs_grad(d, g);
        grad[j] += s, grad[i] -= s;
    }
}

float e2g_edge_l1_loss(float *grad, const float *a, const float *b, int N, int H, int W, int C, float scale) {
    size_t terms = (size_t)N * C * ((size_t)H * (W - 1) + (size_t)(H - 1) * W);
    if (terms == 0) return 0.0f;
    float g = scale / (float)terms;
    size_t row = (size_t)W * C;
    double s = 0;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                for (int c = 0; c < C; c++) {
                    size_t i = (((size_t)n * H + h) * W + w) * C + c;
                    if (w + 1 < W) edge_term(grad, a, b, i, i + C, g, &s);
                    if (h + 1 < H) edge_term(grad, a, b, i, i + row, g, &s);
                }
    return (float)(s / terms);
}

/* The weight 1 + dark_weight·d(p) of RGB pixel p (e2g_dark_l1_loss). */
static float dark_pixel_weight(const float *p, float dark_weight) {
    float luma = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
    return 1.0f + dark_weight * fminf(fmaxf(0.5f * (1.0f - luma), 0.0f), 1.0f);
}

float e2g_dark_l1_loss(float *grad, const float *a, const float *b, size_t pixels, float dark_weight,
                       float scale) {
    if (dark_weight == 0.0f) return e2g_l1_loss(grad, a, b, 3 * pixels, scale);
    double wsum = 0;
    for (size_t p = 0; p < pixels; p++) wsum += dark_pixel_weight(b + 3 * p, dark_weight);
    double norm = 1.0 / (3.0 * wsum), s = 0;
    for (size_t p = 0; p < pixels; p++) {
        float w = dark_pixel_weight(b + 3 * p, dark_weight), g = (float)(scale * w * norm);
        for (int c = 0; c < 3; c++) {
            size_t i = 3 * p + c;
            float d = a[i] - b[i];
            s += w * fabsf(d);
            if (grad) grad[i] += abs_grad(d, g);
        }
    }
    return (float)(s * norm);
}
