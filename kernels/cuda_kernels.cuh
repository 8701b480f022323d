/* cuda_kernels.cuh — the engine's own fused kernels (cuda_kernels.cu,
 * cuda_attention.cu) around cuDNN's convolutions: their tensor views and
 * host launchers.  All launchers enqueue on `stream`, check the launch and
 * return 0 or -1 with err filled. */
#ifndef E2G_CUDA_KERNELS_CUH
#define E2G_CUDA_KERNELS_CUH

#include "cuda_util.cuh"

namespace e2g {

/* tview, conv_out and their index functions, epilogue_args, film_args,
 * output_args, pack_args, lora_entry: cuda_bodies.cuh (through
 * cuda_util.cuh). */

/* The end of a per-(n, channel) reduction over pixels by a block of
 * `threads` threads laid out as lanes × C/8 channel groups (thread t: group
 * t % G, lane t / G), each holding acc[0..7] and acc[8..15] for its 8
 * channels: reduces them in shared memory red[threads][16] and adds them
 * into out[n·2C + c] and out[n·2C + C + c]. */
__device__ __forceinline__ void reduce_channel_pairs(float (*red)[16], float *acc, float *out, int C, int n,
                                                     int G, int lanes, int g, int lane) {
#pragma unroll
    for (int i = 0; i < 16; i++) red[threadIdx.x][i] = acc[i];
    __syncthreads();
    if (lane == 0) {
        for (int l = 1; l < lanes; l++)
#pragma unroll
            for (int i = 0; i < 16; i++) acc[i] += red[l * G + g][i];
        for (int i = 0; i < 8; i++) {
            atomicAdd(&out[(size_t)n * 2 * C + g * 8 + i], acc[i]);
            atomicAdd(&out[(size_t)n * 2 * C + C + g * 8 + i], acc[8 + i]);
        }
    }
}

/* Per (sample, channel) mean and (biased) variance of a raw conv output
 * into sums (N, 2, C).  Shifted sums, numerically stable: Σ(v − K) and
 * Σ(v − K)² with K the channel's value at pixel (0, 0), then
 * mean = K + Σ(v − K)/HW, var = Σ(v − K)²/HW − (Σ(v − K)/HW)². */
int block_stats(float *sums, const conv_out &src, cudaStream_t stream, char *err);
int block_epilogue(const epilogue_args &a, cudaStream_t stream, char *err);
/* FiLM's context mean, then a norm's per-sample gamma and beta or the
 * output gate's gains (film_args: cuda_bodies.cuh). */
int film_affine(const film_args &a, cudaStream_t stream, char *err);

/* x (N, H, W, 3) fp32 → dst (pad 3, C 8) bf16 with channels 3..7 zero. */
int prep_input(const tview &dst, const float *x, cudaStream_t stream, char *err);

/* y (N, H, W, 3) = tanh(o + bias (+ g·atanh(clamp(x)))), o the conv
 * output (N, H, W, Cs ≥ 3); output_args: cuda_bodies.cuh. */
int output_layer(const output_args &a, cudaStream_t stream, char *err);

/* x (M, C) bf16 in place: x + bias, then GELU (tanh form) when gelu. */
int bias_act(bf16 *x, const float *bias, int gelu, size_t M, int C, cudaStream_t stream, char *err);

/* Per row of C ≤ 1024: t = base + delta + bias (delta, bias may be NULL);
 * writes t (fp32 t_f32 and/or bf16 t_bf16, either may be NULL) and LN(t)
 * with gamma/beta into ln (may be NULL).  base is bf16 or fp32. */
int residual_layernorm(float *t_f32, bf16 *t_bf16, bf16 *ln, const bf16 *base_bf16,
                       const float *base_f32, const bf16 *delta, const float *bias,
                       const float *gamma, const float *beta, size_t M, int C,
                       cudaStream_t stream, char *err);

int f32_to_bf16(bf16 *dst, const float *src, size_t n, cudaStream_t stream, char *err);
int bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t stream, char *err);

/* Weights for cuDNN from fp32 OIHW merged with up to 4 LoRA terms
 * (pack_args, merge_term: cuda_bodies.cuh). */
int pack_weights(const pack_args &a, cudaStream_t stream, char *err);

/* Unmerged LoRA, one term slot over the whole batch (lora_entry:
 * cuda_bodies.cuh).  Convolutions: out += s·h·Bᵀ per sample.  Linear: rows
 * per sample L, h computed here from x (ld ldx) and A (r, cin) fp32, added
 * into out at column col0 (ld ldo). */
int lora_conv_expand(bf16 *out, int Cs, int cout, int groups, const bf16 *h,
                     const lora_entry *table, int N, size_t P, cudaStream_t stream, char *err);
int lora_linear(bf16 *out, int ldo, int col0, const bf16 *x, int ldx, int cin, int cout,
                const lora_entry *table, int N, int L, cudaStream_t stream, char *err);

/* softmax(q·kᵀ/√d)·v per head, flash style on tensor cores (d = C/heads ∈
 * {32, 64, 96, 128}): q (N, Lq) rows of ld ldq, k/v (N, Lk) rows, head h
 * in columns [h·d, (h+1)·d); out (N, Lq, C) dense. */
int attention(bf16 *out, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, int N,
              int Lq, int Lk, int C, int heads, cudaStream_t stream, char *err);
int attention_supported(int C, int heads);

}  // namespace e2g

#endif
