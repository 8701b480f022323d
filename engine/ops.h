/* ops.h — the CPU layers besides convolution and attention, llm.c style:
 * each op is a forward/backward pair of free functions, outputs first, then
 * inputs, then sizes.  Backward functions ACCUMULATE into their gradients
 * (+=), so zeroing all gradients is one memset; a NULL gradient pointer means
 * "not wanted".  Images are NHWC, token sequences (M rows, C columns). */
#ifndef E2G_OPS_H
#define E2G_OPS_H

#include <stddef.h>

/* Instance norm over HW per (sample, channel), affine, eps 1e-5, biased
 * variance, followed by a ReLU when relu is set (fused: one pass).
 * x: (N, HW, C); mean, rstd: (N, C) saved for the backward, which is the
 * norm's alone (the caller handles the ReLU's).  out may alias inp.
 * weight, bias (and dweight, dbias): (C), or (N, C) with per_sample (FiLM). */
void e2g_instancenorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int per_sample, int relu, int N,
                          int HW, int C);
void e2g_instancenorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *mean, const float *rstd,
                           const float *weight, int per_sample, int N, int HW, int C);

/* Layer norm over the last dimension C of M rows, eps 1e-5. */
void e2g_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int M, int C);
void e2g_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *mean, const float *rstd,
                        const float *weight, int M, int C);

/* y = x·Wᵀ + b; x: (M, in), W: (out, in), b: (out) or NULL, y: (M, out).
 * With accumulate set, y += x·Wᵀ (+ b) instead of overwriting.  In bf16
 * precision (precision.h) the products whose sizes are all ≥ 64 run through
 * e2g_gemm_bf16 (forward and both gradients); smaller ones, LoRA's rank-r
 * factors among them, and the bias stay fp32. */
void e2g_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M,
                    int in, int outf, int accumulate);
void e2g_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int M, int in, int outf);

/* C (M×N) = alpha·op(A)·op(B) + beta·C, row-major, through oneDNN's sgemm;
 * trans_a/trans_b are 'N' or 'T'.  Always fp32, whatever the precision
 * setting (LoRA's weight merges rely on it). */
void e2g_gemm(char trans_a, char trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* gemm's contract with A and B rounded to bf16 (round-to-nearest-even) and
 * the products accumulated in f32 by oneDNN's bf16 matmul; C stays f32.
 * Primitives are cached per shape (and beta) in the calling thread; alpha is
 * a runtime scale.  The rounding costs ~2^-8 relative per product: use it
 * for big products only.  Needs a CPU with AVX-512 (see e2g_set_precision). */
void e2g_gemm_bf16(char trans_a, char trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Releases the calling thread's cached bf16 matmul primitives, buffers and
 * stream; runs by itself when a thread that used them exits. */
void e2g_gemm_cache_clear(void);

/* Pointwise activations; the backward of ReLU reads the forward's output,
 * LeakyReLU and GELU read its input.  In-place forward (out == inp) is fine. */
void e2g_relu_forward(float *out, const float *inp, size_t n);
void e2g_relu_backward(float *dinp, const float *dout, const float *out, size_t n);
void e2g_leakyrelu_forward(float *out, const float *inp, float slope, size_t n);
void e2g_leakyrelu_backward(float *dinp, const float *dout, const float *inp, float slope, size_t n);
void e2g_gelu_forward(float *out, const float *inp, size_t n);
void e2g_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* The generator's output (docs/architecture.md §1): residual in logit space,
 * y = tanh(o + atanh(clamp(x, −0.999, 0.999))), or y = tanh(o) when
 * residual is 0.  x is the network input, same layout as o. */
void e2g_output_forward(float *y, const float *o, const float *x, int residual, size_t n);
void e2g_output_backward(float *d_o, float *dx, const float *dy, const float *y, const float *x,
                     int residual, size_t n);
/* The residual output with a per-channel gain of the photo (FiLM of the
 * output, net.h): y = tanh(o + gain[c]·atanh(clamp(x))), c = i mod 3, for
 * the pixels of one sample; the backward also accumulates dgain (3). */
void e2g_output_gated_forward(float *y, const float *o, const float *x, const float *gain, size_t n);
void e2g_output_gated_backward(float *d_o, float *dx, float *dgain, const float *dy, const float *y,
                               const float *x, const float *gain, size_t n);

/* out = a + b, elementwise (out may alias a or b). */
void e2g_add_forward(float *out, const float *a, const float *b, size_t n);
/* out = a + gain[n, c]·b for NHWC tensors of N samples, `pixels` pixels and
 * C channels each (the skip gate, net.h; out may alias a); the backward
 * accumulates db (may be NULL) and dgain (N, C; may be NULL). */
void e2g_add_gated_forward(float *out, const float *a, const float *b, const float *gain, int N, size_t pixels,
                           int C);
void e2g_add_gated_backward(float *db, float *dgain, const float *dout, const float *b, const float *gain,
                            int N, size_t pixels, int C);
/* dst += src */
void e2g_accumulate(float *dst, const float *src, size_t n);

/* Losses return their value and, when grad is non-NULL, accumulate
 * scale·∂loss/∂pred into grad. */
/* mean((pred − target)²): the least-squares GAN terms, target 0 or 1. */
float e2g_mse_const_loss(float *grad, const float *pred, float target, size_t n, float scale);
/* mean(|a − b|), gradient w.r.t. a (sign, 0 at a == b as PyTorch). */
float e2g_l1_loss(float *grad, const float *a, const float *b, size_t n, float scale);
/* Gradient-domain L1 of images a, b (N, H, W, C): the mean over every
 * finite difference between neighbouring pixels, per sample and channel,
 *   E = [Σ |(a[h,w+1] − a[h,w]) − (b[h,w+1] − b[h,w])|
 *      + Σ |(a[h+1,w] − a[h,w]) − (b[h+1,w] − b[h,w])|] / (N·C·(H·(W−1) + (H−1)·W)),
 * the first sum over the N·C·H·(W−1) horizontal, the second over the
 * N·C·(H−1)·W vertical neighbours; gradient w.r.t. a (sign, 0 at a tie as
 * PyTorch).  0 when there are no neighbours (H = W = 1). */
float e2g_edge_l1_loss(float *grad, const float *a, const float *b, int N, int H, int W, int C, float scale);
/* L1 of RGB images a, b (`pixels` pixels of 3 channels) weighted by the
 * darkness of b (the target): each pixel's weight w = 1 + dark_weight·d(b),
 * d = clamp((1 − (0.299 r + 0.587 g + 0.114 b)) / 2, 0, 1) (0 white, 1
 * black for RGB in [−1, 1]), normalised to mean 1,
 *   Σ_p w_p Σ_c |a − b| / (3 Σ_p w_p),
 * so a uniform error costs what it costs in plain L1; gradient w.r.t. a
 * (scale·w_p·sign / (3 Σ w)).  dark_weight 0 is e2g_l1_loss bit for bit. */
float e2g_dark_l1_loss(float *grad, const float *a, const float *b, size_t pixels, float dark_weight,
                       float scale);

#endif
