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

#define NORM_EPS 1e-5

/* ---- instance norm ---------------------------------------------------------- */

void instancenorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int HW, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *x = inp + (size_t)n * HW * C + c;
            double s = 0, ss = 0;
            for (int i = 0; i < HW; i++) {
                double v = x[(size_t)i * C];
                s += v;
                ss += v * v;
            }
            double m = s / HW, var = fmax(ss / HW - m * m, 0.0);
            mean[n * C + c] = (float)m;
            rstd[n * C + c] = (float)(1.0 / sqrt(var + NORM_EPS));
        }
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            const float *x = inp + ((size_t)n * HW + i) * C;
            float *y = out + ((size_t)n * HW + i) * C;
            const float *m = mean + n * C, *r = rstd + n * C;
            for (int c = 0; c < C; c++) y[c] = (x[c] - m[c]) * r[c] * weight[c] + bias[c];
        }
}

void instancenorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *weight, int N, int HW, int C) {
    /* Per (n, c): the sums of dy·w and dy·w·x̂ give the input gradient. */
    double *sum_dy = e2g_xcalloc((size_t)N * C, sizeof(double));
    double *sum_dyx = e2g_xcalloc((size_t)N * C, sizeof(double));
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *x = inp + (size_t)n * HW * C + c, *dy = dout + (size_t)n * HW * C + c;
            float m = mean[n * C + c], r = rstd[n * C + c];
            double a = 0, b = 0;
            for (int i = 0; i < HW; i++) {
                double g = dy[(size_t)i * C];
                a += g;
                b += g * ((x[(size_t)i * C] - m) * r);
            }
            sum_dy[n * C + c] = a;
            sum_dyx[n * C + c] = b;
        }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            if (dbias) dbias[c] += (float)sum_dy[n * C + c];
            if (dweight) dweight[c] += (float)sum_dyx[n * C + c];
        }
    if (dinp) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t row = ((size_t)n * HW + i) * C;
                for (int c = 0; c < C; c++) {
                    float r = rstd[n * C + c], xhat = (inp[row + c] - mean[n * C + c]) * r;
                    float mdy = (float)(sum_dy[n * C + c] / HW) * weight[c];
                    float mdyx = (float)(sum_dyx[n * C + c] / HW) * weight[c];
                    dinp[row + c] += r * (dout[row + c] * weight[c] - mdy - xhat * mdyx);
                }
            }
    }
    free(sum_dy);
    free(sum_dyx);
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
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], t = tanhf(GELU_K * (x + GELU_C * x * x * x));
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
        y[i] = tanhf(logit);
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

/* ---- upsample ---------------------------------------------------------------- */

void upsample2x_forward(float *out, const float *inp, int N, int H, int W, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < 2 * H; y++) {
            const float *src = inp + ((size_t)n * H + y / 2) * W * C;
            float *dst = out + ((size_t)n * 2 * H + y) * 2 * W * C;
            for (int x = 0; x < W; x++) {
                memcpy(dst + (size_t)(2 * x) * C, src + (size_t)x * C, C * sizeof(float));
                memcpy(dst + (size_t)(2 * x + 1) * C, src + (size_t)x * C, C * sizeof(float));
            }
        }
}

void upsample2x_backward(float *dinp, const float *dout, int N, int H, int W, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++) {
            float *dst = dinp + ((size_t)n * H + y) * W * C;
            const float *r0 = dout + ((size_t)n * 2 * H + 2 * y) * 2 * W * C;
            const float *r1 = r0 + (size_t)2 * W * C;
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    size_t a = (size_t)(2 * x) * C + c, b = a + C;
                    dst[(size_t)x * C + c] += (r0[a] + r0[b]) + (r1[a] + r1[b]);
                }
        }
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
