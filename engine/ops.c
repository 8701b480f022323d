/* ops.c — CPU forward/backward of the norms, linear layers, activations,
 * upsampling, the generator's output and the losses.  Heavy products go to
 * oneDNN's sgemm; the rest are OpenMP loops.  Statistics are accumulated in
 * double so results match PyTorch to fp32 rounding at any image size. */
#include "ops.h"

#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fastmath.h"

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

void instancenorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int relu, int N, int HW, int C) {
    double *s1 = e2g_xmalloc((size_t)N * C * sizeof(double)), *s2 = e2g_xmalloc((size_t)N * C * sizeof(double));
    float *scale = e2g_xmalloc((size_t)N * C * sizeof(float)), *shift = e2g_xmalloc((size_t)N * C * sizeof(float));
    channel_sums(s1, s2, inp, inp, N, HW, C);
    for (int k = 0; k < N * C; k++) {
        double m = s1[k] / HW, var = fmax(s2[k] / HW - m * m, 0.0), r = 1.0 / sqrt(var + NORM_EPS);
        mean[k] = (float)m;
        rstd[k] = (float)r;
        scale[k] = (float)(r * weight[k % C]);
        shift[k] = (float)(bias[k % C] - m * r * weight[k % C]);
    }
    channel_affine(out, inp, scale, shift, relu, N, HW, C);
    free(s1), free(s2), free(scale), free(shift);
}

void instancenorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *weight, int N, int HW, int C) {
    /* Σ dy and Σ dy·x̂ per (n, c) give every gradient; Σ dy·x̂ = r(Σ dy·x − m Σ dy). */
    double *sum_dy = e2g_xmalloc((size_t)N * C * sizeof(double)), *sum_dyx = e2g_xmalloc((size_t)N * C * sizeof(double));
    channel_sums(sum_dy, sum_dyx, dout, inp, N, HW, C);
    for (int k = 0; k < N * C; k++) {
        sum_dyx[k] = rstd[k] * (sum_dyx[k] - mean[k] * sum_dy[k]);
        if (dbias) dbias[k % C] += (float)sum_dy[k];
        if (dweight) dweight[k % C] += (float)sum_dyx[k];
    }
    if (dinp) {
        /* dx = r·w·(dy − mean(dy) − x̂·mean(dy·x̂)) = a·dy + b·x + c per (n, c) */
        float *ka = e2g_xmalloc(3 * (size_t)N * C * sizeof(float)), *kb = ka + N * C, *kc = kb + N * C;
        for (int k = 0; k < N * C; k++) {
            double r = rstd[k], w = weight[k % C], mdy = sum_dy[k] / HW, mdyx = sum_dyx[k] / HW;
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

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
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

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
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

void gemm(char trans_a, char trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    dnnl_status_t s = dnnl_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    E2G_ASSERT(s == dnnl_success);
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M,
                    int in, int outf, int accumulate) {
    gemm('N', 'T', M, outf, in, 1.0f, inp, in, weight, in, accumulate ? 1.0f : 0.0f, out, outf);
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((size_t)M * outf > 32768)
    for (int i = 0; i < M; i++)
        for (int o = 0; o < outf; o++) out[(size_t)i * outf + o] += bias[o];
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int M, int in, int outf) {
    if (dinp) gemm('N', 'N', M, in, outf, 1.0f, dout, outf, weight, in, 1.0f, dinp, in);
    if (dweight) gemm('T', 'N', outf, in, M, 1.0f, dout, outf, inp, in, 1.0f, dweight, in);
    if (dbias) {
        for (int o = 0; o < outf; o++) {
            double s = 0;
            for (int i = 0; i < M; i++) s += dout[(size_t)i * outf + o];
            dbias[o] += (float)s;
        }
    }
}

/* ---- activations ------------------------------------------------------------- */

void relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

void relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        if (out[i] > 0) dinp[i] += dout[i];
}

void leakyrelu_forward(float *out, const float *inp, float slope, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : slope * inp[i];
}

void leakyrelu_backward(float *dinp, const float *dout, const float *inp, float slope, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dinp[i] += inp[i] > 0 ? dout[i] : slope * dout[i];
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + fast_tanh(GELU_K * (x + GELU_C * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], t = fast_tanh(GELU_K * (x + GELU_C * x * x * x));
        float dt = GELU_K * (1.0f + 3.0f * GELU_C * x * x) * (1.0f - t * t);
        dinp[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * dt);
    }
}

/* ---- output ------------------------------------------------------------------ */

#define OUT_CLAMP 0.999f

void output_forward(float *y, const float *o, const float *x, int residual, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float logit = o[i];
        if (residual) logit += atanhf(fminf(fmaxf(x[i], -OUT_CLAMP), OUT_CLAMP));
        y[i] = fast_tanh(logit);
    }
}

void output_backward(float *d_o, float *dx, const float *dy, const float *y, const float *x,
                     int residual, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float g = dy[i] * (1.0f - y[i] * y[i]);
        if (d_o) d_o[i] += g;
        /* clamp passes the gradient where -0.999 <= x <= 0.999, as in PyTorch */
        if (dx && residual && x[i] >= -OUT_CLAMP && x[i] <= OUT_CLAMP) dx[i] += g / (1.0f - x[i] * x[i]);
    }
}

void add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void accumulate(float *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* ---- losses ------------------------------------------------------------------ */

float mse_const_loss(float *grad, const float *pred, float target, size_t n, float scale) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = pred[i] - target;
        s += d * d;
        if (grad) grad[i] += scale * 2.0f * (float)d / (float)n;
    }
    return (float)(s / n);
}

float l1_loss(float *grad, const float *a, const float *b, size_t n, float scale) {
    double s = 0;
    float g = scale / (float)n;
    for (size_t i = 0; i < n; i++) {
        float d = a[i] - b[i];
        s += fabsf(d);
        if (grad) grad[i] += d > 0 ? g : (d < 0 ? -g : 0.0f);
    }
    return (float)(s / n);
}
