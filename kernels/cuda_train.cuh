/* cuda_train.cuh — the trainer's own kernels (cuda_train_kernels.cu): the
 * backward of every op the inference engine runs forward, the L1 loss and
 * a fused Adam.  Layouts as in cuda_kernels.cuh; activation gradients are
 * fp32 (N, H, W, C) without padding, what cuDNN reads is bf16.  Every
 * launcher enqueues on `stream`, checks the launch and returns 0 or -1
 * with err filled; gradients of parameters e2g_accumulate (+=). */
#ifndef E2G_CUDA_TRAIN_CUH
#define E2G_CUDA_TRAIN_CUH

#include "cuda_kernels.cuh"

namespace e2g {

/* Backward of block_epilogue (epilogue_bwd_args: cuda_bodies.cuh). */
int block_epilogue_backward(const epilogue_bwd_args &a, cudaStream_t stream, char *err);

/* Backward of film_affine (a norm's or the output gate's rows): its
 * parameters' gradients when a.dw is set, the context's when a.dctx is. */
int film_backward(const film_args &a, cudaStream_t stream, char *err);

/* g (N, H, W, C) += the gradient of the padded tensor dxp (N, H+2p, W+2p,
 * C) folded back through reflect padding (p = 0: a plain add). */
int fold_grad(float *g, const bf16 *dxp, int N, int H, int W, int C, int pad, cudaStream_t stream,
              char *err);
/* A skip gate's add backward (skip_bwd_args): d(add) and d(gain). */
int skip_gate_backward(const skip_bwd_args &a, cudaStream_t stream, char *err);
/* dst += src, n floats. */
int add_f32(float *dst, const float *src, size_t n, cudaStream_t stream, char *err);

/* L1 loss λ·mean|y − t| through the output layer y = tanh(o + ...) for N
 * images of hw pixels: do (pixels, 8) bf16 with channels 3..7 zero, dbias
 * (3) +=, *loss_sum += Σ|y − t| (fp32), and when dgain is set (FiLM's
 * gate) dgain (N, 3) += Σ d(logit)·atanh(clamp(x)) per sample and channel,
 * x the input image. */
int output_l1_backward(bf16 *dout, float *dbias, float *dgain, float *loss_sum, const float *y, const float *t,
                       const float *x, float lambda, int N, size_t hw, cudaStream_t stream, char *err);

/* db (C) += column sums of x (M rows of ld, C columns from col0). */
int col_sum(float *db, const bf16 *x, int ld, int col0, size_t M, int C, cudaStream_t stream,
            char *err);
/* out = gelu(in), n values (n % 8 == 0). */
int e2g_gelu_forward(bf16 *out, const bf16 *in, size_t n, cudaStream_t stream, char *err);
/* dh (in place) *= gelu'(pre). */
int e2g_gelu_backward(bf16 *dh, const bf16 *pre, size_t n, cudaStream_t stream, char *err);

/* Layer norm over C of x (fp32 x32 or bf16 x16): dx_out = dres + LN'ᵀ·dy
 * (dx_out may alias dres), dgamma/dbeta += (NULL: frozen). */
int e2g_layernorm_backward(float *dx_out, const float *dres, const float *x32, const bf16 *x16,
                       const bf16 *dy, const float *gamma, float *dgamma, float *dbeta, size_t M,
                       int C, cudaStream_t stream, char *err);

/* Backward of attention(): recomputes the scores key by key (never the
 * Lq×Lk matrix), softmax statistics first.  o is the forward output,
 * dout its gradient (both (N, Lq, C) dense).  Overwrites dq (ld lddq),
 * dk and dv (ld lddkv).  stats: N·heads·Lq·2 floats of scratch. */
int e2g_attention_backward(bf16 *dq, int lddq, bf16 *dk, bf16 *dv, int lddkv, const bf16 *q, int ldq,
                       const bf16 *k, const bf16 *v, int ldkv, const bf16 *o, const bf16 *dout,
                       float *stats, int N, int Lq, int Lk, int C, int heads, cudaStream_t stream,
                       char *err);

/* The adjoint of pack_weights without terms: dst (cout, cin, k, k) fp32
 * OIHW from a packed filter gradient src (plain (cout_pad, k, k, cin_pad)
 * or phase (4·cout_pad, 2, 2, cin)); overwrites dst. */
int unpack_weight_grad(float *dst, const bf16 *src, int cout, int cin, int k, int cout_pad,
                       int cin_pad, int phase, cudaStream_t stream, char *err);

/* LoRA through a merged weight W + s·B·A: from dW (cout, K) fp32,
 * dA (r, K) += s·Bᵀ·dW and dB (cout, r) += s·dW·Aᵀ. */
int lora_grads(float *dA, float *dB, const float *dW, const float *A, const float *B, int r,
               int cout, int K, float s, cudaStream_t stream, char *err);

/* Rows of a context table to bf16: dst (N, E) = src[row[n]] (rows NULL:
 * row 0 for every sample); and the adjoint, dst[row[n]] += src (N, E). */
int gather_rows(bf16 *dst, const float *src, const int *rows, int N, size_t E, cudaStream_t stream,
                char *err);
int scatter_add_rows(float *dst, const bf16 *src, const int *rows, int N, size_t E,
                     cudaStream_t stream, char *err);

/* Adam as engine/adam.c (torch.optim.Adam): step = lr / bc1, with
 * inv_sqrt_bc2 = 1/√bc2 from the host. */
int adam_update(float *p, const float *g, float *m, float *v, size_t n, float step, float beta1,
                float beta2, float inv_sqrt_bc2, float eps, cudaStream_t stream, char *err);

}  // namespace e2g

#endif
