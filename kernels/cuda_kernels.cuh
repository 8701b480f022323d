/* cuda_kernels.cuh — the engine's own fused kernels (cuda_kernels.cu,
 * cuda_attention.cu) around cuDNN's convolutions: their tensor views and
 * host launchers.  All launchers enqueue on `stream`, check the launch and
 * return 0 or -1 with err filled. */
#ifndef E2G_CUDA_KERNELS_CUH
#define E2G_CUDA_KERNELS_CUH

#include "cuda_util.cuh"

/* An NHWC bf16 tensor stored with `pad` extra rows/columns on each side
 * (N, H + 2·pad, W + 2·pad, C); logical pixel (y, x) lies at (y + pad,
 * x + pad).  A padded tensor is written with reflected borders, so a
 * following reflect-padded convolution reads it with cuDNN's pad 0.
 * Sample n starts at n·ns elements; ns 0 means packed, (H + 2·pad)·(W +
 * 2·pad)·C (a larger ns keeps every sample's start aligned). */
struct tview {
    bf16 *p;
    int N, H, W, C, pad;
    size_t ns;
};

/* A convolution's raw output as a conv block's epilogue reads it: plain
 * (N, H, W, Cs) with the block's C ≤ Cs channels first, or — for a ×2
 * upsample folded into the conv — the phase grid (N, H/2 + 1, W/2 + 1,
 * Cs = 4·C) whose channels [p·C, (p+1)·C) hold output phase p = 2a + b:
 * output pixel (2i + a, 2j + b) is grid pixel (i + a, j + b). */
struct conv_out {
    const bf16 *p;
    int N, H, W, C, Cs, phase; /* H, W: the block's output size */
};

/* Element (n, y, x, c) of a conv output, and pixel (n, y, x) of a view. */
__device__ __forceinline__ size_t conv_out_index(const conv_out &s, int n, int y, int x, int c) {
    if (!s.phase) return (((size_t)n * s.H + y) * s.W + x) * s.Cs + c;
    int a = y & 1, b = x & 1, Hg = s.H / 2 + 1, Wg = s.W / 2 + 1;
    return (((size_t)n * Hg + (y >> 1) + a) * Wg + (x >> 1) + b) * s.Cs + (2 * a + b) * s.C + c;
}

/* Elements from one sample of a view to the next. */
__host__ __device__ __forceinline__ size_t view_stride(const tview &v) {
    return v.ns ? v.ns : (size_t)(v.H + 2 * v.pad) * (v.W + 2 * v.pad) * v.C;
}

/* Pixel (y, x) of sample n, in stored coordinates (py, px) = (y + pad,
 * x + pad) for view_at. */
__device__ __forceinline__ size_t view_at(const tview &v, int n, int py, int px) {
    return (size_t)n * view_stride(v) + ((size_t)py * (v.W + 2 * v.pad) + px) * v.C;
}

__device__ __forceinline__ size_t view_index(const tview &v, int n, int y, int x) {
    return view_at(v, n, y + v.pad, x + v.pad);
}

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

__device__ __forceinline__ float gelu_tanh(float v) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}


/* The conv block epilogue, one pass over the conv output:
 * v = conv (+ bias); instance norm (stats from block_stats); ReLU; + add.
 * bias, norm (sums) and add.p may each be NULL/absent; with a norm the
 * bias is skipped (the norm cancels it exactly; block_stats leaves it out). */
struct epilogue_args {
    conv_out src;
    const float *bias;
    const float *sums; /* (N, 2, C): mean and variance from block_stats, or NULL: no norm */
    const float *gamma, *beta;
    int relu;
    tview add; /* add.p NULL: no addition */
    tview dst; /* written interior and reflected border */
};

/* Per (sample, channel) mean and (biased) variance of a raw conv output
 * into sums (N, 2, C).  Shifted sums, numerically stable: Σ(v − K) and
 * Σ(v − K)² with K the channel's value at pixel (0, 0), then
 * mean = K + Σ(v − K)/HW, var = Σ(v − K)²/HW − (Σ(v − K)/HW)². */
int block_stats(float *sums, const conv_out &src, cudaStream_t stream, char *err);
int block_epilogue(const epilogue_args &a, cudaStream_t stream, char *err);

/* x (N, H, W, 3) fp32 → dst (pad 3, C 8) bf16 with channels 3..7 zero. */
int prep_input(const tview &dst, const float *x, cudaStream_t stream, char *err);

/* y (N, H, W, 3) = tanh(o + bias (+ atanh(clamp(x)))), o the conv output
 * (N, H, W, Cs ≥ 3). */
int output_layer(float *y, const bf16 *o, int Cs, const float *bias, const float *x, int residual,
                 size_t pixels, cudaStream_t stream, char *err);

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

/* Weights for cuDNN (filter layout KRSC = (cout, k, k, cin)) from fp32
 * OIHW, optionally merged with up to 4 LoRA terms:
 * W = base + Σ s·B·A.  Plain: dst (cout_pad, k, k, cin_pad), zero beyond
 * cout/cin.  Phase (×2 upsample fold, k = 3): dst (4·cout_pad, 2, 2, cin)
 * whose phase p = 2a + b holds the 2×2 kernel of engine/conv.c's
 * TAP_GROUP. */
struct merge_term {
    const float *A, *B; /* (r, cin, k, k), (cout, r) fp32 on the device */
    int r;
    float s; /* coef · scale */
};
struct pack_args {
    bf16 *dst;
    const float *base;
    int cout, cin, k, cout_pad, cin_pad, phase, n_terms;
    merge_term terms[4];
};
int pack_weights(const pack_args &a, cudaStream_t stream, char *err);

/* Unmerged LoRA, one term slot over the whole batch.  Each sample n has a
 * table entry (B NULL: no term for n).  Convolutions: out (rows P per
 * sample, Cs channels, groups·cout used) += s·h·Bᵀ with h the per-sample
 * A-conv output at h + h_off (P, groups·R).  Linear: rows per sample L,
 * h computed here from x (ld ldx) and A (r, cin) fp32, added into out at
 * column col0 (ld ldo). */
struct lora_entry {
    const float *A, *B;
    float s;
    int r, R;
    size_t h_off;
};
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

#endif
