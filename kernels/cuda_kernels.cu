/* cuda_kernels.cu — the engine's fused elementwise and normalisation
 * kernels (see cuda_kernels.cuh): instance-norm statistics and the conv
 * block epilogue (bias, norm, ReLU, residual/skip add, upsample phase
 * gather and reflect padding of the next layer's input in one pass), the
 * FiLM norms' per-sample affine and the output gate's gains, the input and
 * output layers, bias + GELU, residual + layer norm, weight packing with
 * LoRA merging, and the unmerged LoRA paths.  bf16 in memory, fp32
 * arithmetic.  The per-element work of each grid-stride kernel is a body
 * of cuda_bodies.cuh, which the CPU tests run too. */
#include "cuda_kernels.cuh"

namespace e2g {

#define THREADS 256

#define GRID_LOOP(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* ---- conv block: statistics and epilogue ------------------------------------ */

/* Block (chunk, n): 256 threads as lanes × C/8 channel groups; each thread
 * sums 8 channels of v − K over a strided set of pixels (K: the channel's
 * value at pixel (0, 0) of sample n, a shift that keeps Σ(v − K)² free of
 * the cancellation E[v²] − mean² suffers when |mean| ≫ std), the block
 * reduces in shared memory and adds into sums (zeroed by the caller). */
__global__ void block_stats_kernel(float *sums, conv_out s) {
    __shared__ float red[THREADS][16];
    int G = s.C / 8, lanes = THREADS / G, g = threadIdx.x % G, lane = threadIdx.x / G;
    int n = blockIdx.y, HW = s.H * s.W;
    float acc[16] = {0};
    if (lane < lanes) {
        float K[8];
        stats_shift(s, n, g, K);
        for (int p = blockIdx.x * lanes + lane; p < HW; p += gridDim.x * lanes) stats_accumulate(s, n, g, p, K, acc);
    }
    reduce_channel_pairs(red, acc, sums, s.C, n, G, lanes, g, lane);
}

/* The shifted sums of (n, c) → its mean and variance, in place. */
__global__ void block_stats_final_kernel(float *sums, conv_out s) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < s.N * s.C) stats_final_body(sums, s, i);
}

int block_stats(float *sums, const conv_out &src, cudaStream_t stream, char *err) {
    if (src.C % 8 || src.C > 8 * THREADS) return e2g_fail(err, "CUDA: %d channels unsupported", src.C);
    CUDA_TRY(cudaMemsetAsync(sums, 0, (size_t)src.N * 2 * src.C * sizeof(float), stream));
    int lanes = THREADS / (src.C / 8);
    int chunks = (src.H * src.W + lanes * 64 - 1) / (lanes * 64);
    dim3 grid(chunks, src.N);
    block_stats_kernel<<<grid, THREADS, 0, stream>>>(sums, src);
    LAUNCH_TRY();
    block_stats_final_kernel<<<blocks_for((size_t)src.N * src.C, THREADS), THREADS, 0, stream>>>(sums, src);
    LAUNCH_TRY();
    return 0;
}

__global__ void block_epilogue_kernel(epilogue_args a) {
    GRID_LOOP(i, epilogue_items(a.dst)) epilogue_body(a, i);
}

int block_epilogue(const epilogue_args &a, cudaStream_t stream, char *err) {
    if (a.dst.C % 8) return e2g_fail(err, "CUDA: %d channels unsupported", a.dst.C);
    size_t total = epilogue_items(a.dst);
    block_epilogue_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

__global__ void film_mean_kernel(film_args a) {
    GRID_LOOP(i, (size_t)a.N * a.C4) film_mean_body(a, i);
}

__global__ void film_affine_kernel(film_args a) {
    GRID_LOOP(i, (size_t)a.N * film_rows(a)) film_affine_body(a, i);
}

int film_affine(const film_args &a, cudaStream_t stream, char *err) {
    film_mean_kernel<<<blocks_for((size_t)a.N * a.C4, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    film_affine_kernel<<<blocks_for((size_t)a.N * film_rows(a), THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- input and output layers --------------------------------------------------- */

__global__ void prep_input_kernel(tview d, const float *x) {
    GRID_LOOP(i, prep_input_items(d)) prep_input_body(d, x, i);
}

int prep_input(const tview &dst, const float *x, cudaStream_t stream, char *err) {
    if (dst.C != 8) return e2g_fail(err, "CUDA: the input view has %d channels, not 8", dst.C);
    size_t total = prep_input_items(dst);
    prep_input_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(dst, x);
    LAUNCH_TRY();
    return 0;
}

__global__ void output_kernel(output_args a) {
    GRID_LOOP(i, a.N * a.hw * 3) output_body(a, i);
}

int output_layer(const output_args &a, cudaStream_t stream, char *err) {
    output_kernel<<<blocks_for(a.N * a.hw * 3, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- transformer block pieces --------------------------------------------------- */

__global__ void bias_act_kernel(bf16 *x, const float *bias, int gelu, size_t M, int C) {
    GRID_LOOP(i, M * (C / 8)) bias_act_body(x, bias, gelu, C, i);
}

int bias_act(bf16 *x, const float *bias, int gelu, size_t M, int C, cudaStream_t stream, char *err) {
    if (C % 8) return e2g_fail(err, "CUDA: %d channels unsupported", C);
    bias_act_kernel<<<blocks_for(M * (C / 8), THREADS), THREADS, 0, stream>>>(x, bias, gelu, M, C);
    LAUNCH_TRY();
    return 0;
}

#define LN_MAX_PER_LANE 32 /* C ≤ 1024 */

/* One warp per row: the row stays in registers between the sum, the
 * centred variance and the normalisation. */
__global__ void residual_layernorm_kernel(float *t_f32, bf16 *t_bf16, bf16 *ln, const bf16 *base_bf16,
                                          const float *base_f32, const bf16 *delta, const float *bias,
                                          const float *gamma, const float *beta, size_t M, int C) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= M) return;
    float v[LN_MAX_PER_LANE], sum = 0;
    size_t off = row * C;
#pragma unroll
    for (int i = 0; i < LN_MAX_PER_LANE; i++) {
        int c = i * 32 + lane;
        v[i] = 0;
        if (c < C) {
            float t = base_f32 ? base_f32[off + c] : __bfloat162float(base_bf16[off + c]);
            if (delta) t += __bfloat162float(delta[off + c]);
            if (bias) t += bias[c];
            v[i] = t, sum += t;
            if (t_f32) t_f32[off + c] = t;
            if (t_bf16) t_bf16[off + c] = __float2bfloat16(t);
        }
    }
    if (!ln) return;
    for (int m = 16; m; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
    float mean = sum / C, var = 0;
#pragma unroll
    for (int i = 0; i < LN_MAX_PER_LANE; i++)
        if (i * 32 + lane < C) var += (v[i] - mean) * (v[i] - mean);
    for (int m = 16; m; m >>= 1) var += __shfl_xor_sync(0xffffffffu, var, m);
    float rstd = rsqrtf(var / C + 1e-5f);
#pragma unroll
    for (int i = 0; i < LN_MAX_PER_LANE; i++) {
        int c = i * 32 + lane;
        if (c < C) ln[off + c] = __float2bfloat16((v[i] - mean) * rstd * gamma[c] + beta[c]);
    }
}

int residual_layernorm(float *t_f32, bf16 *t_bf16, bf16 *ln, const bf16 *base_bf16,
                       const float *base_f32, const bf16 *delta, const float *bias,
                       const float *gamma, const float *beta, size_t M, int C,
                       cudaStream_t stream, char *err) {
    if (C > 32 * LN_MAX_PER_LANE) return e2g_fail(err, "CUDA: layer norm over %d > 1024 channels", C);
    unsigned rows_per_block = THREADS / 32;
    residual_layernorm_kernel<<<blocks_for(M, rows_per_block), THREADS, 0, stream>>>(
        t_f32, t_bf16, ln, base_bf16, base_f32, delta, bias, gamma, beta, M, C);
    LAUNCH_TRY();
    return 0;
}

__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    GRID_LOOP(i, n) dst[i] = __float2bfloat16(src[i]);
}

__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    GRID_LOOP(i, n) dst[i] = __bfloat162float(src[i]);
}

int f32_to_bf16(bf16 *dst, const float *src, size_t n, cudaStream_t stream, char *err) {
    f32_to_bf16_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(dst, src, n);
    LAUNCH_TRY();
    return 0;
}

int bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t stream, char *err) {
    bf16_to_f32_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(dst, src, n);
    LAUNCH_TRY();
    return 0;
}

/* ---- weights ----------------------------------------------------------------------- */

__global__ void pack_weights_kernel(pack_args a) {
    GRID_LOOP(i, pack_items(a)) pack_body(a, i);
}

int pack_weights(const pack_args &a, cudaStream_t stream, char *err) {
    size_t total = pack_items(a);
    pack_weights_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- unmerged LoRA ------------------------------------------------------------------ */

__global__ void lora_conv_expand_kernel(bf16 *out, int Cs, int cout, int groups, const bf16 *h,
                                        const lora_entry *table, int N, size_t P) {
    GRID_LOOP(i, (size_t)N * P * groups * cout) lora_conv_expand_body(out, Cs, cout, groups, h, table, P, i);
}

int lora_conv_expand(bf16 *out, int Cs, int cout, int groups, const bf16 *h,
                     const lora_entry *table, int N, size_t P, cudaStream_t stream, char *err) {
    size_t total = (size_t)N * P * groups * cout;
    lora_conv_expand_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(out, Cs, cout, groups, h,
                                                                               table, N, P);
    LAUNCH_TRY();
    return 0;
}

#define LORA_TILE 16
#define LORA_MAX_RANK 64

/* Block (tile of 16 rows, sample n): h = x·Aᵀ by warps over (row, rank)
 * pairs with lanes along cin, then out += s·h·Bᵀ. */
__global__ void lora_linear_kernel(bf16 *out, int ldo, int col0, const bf16 *x, int ldx, int cin,
                                   int cout, const lora_entry *table, int L) {
    __shared__ float h[LORA_TILE][LORA_MAX_RANK];
    int n = blockIdx.y, row0 = blockIdx.x * LORA_TILE;
    const lora_entry &e = table[n];
    if (!e.B) return;
    int rows = L - row0 < LORA_TILE ? L - row0 : LORA_TILE;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    for (int job = warp; job < rows * e.r; job += warps) {
        int i = job / e.r, r = job % e.r;
        const bf16 *xr = x + ((size_t)n * L + row0 + i) * ldx;
        float acc = 0;
        for (int k = lane; k < cin; k += 32) acc += __bfloat162float(xr[k]) * e.A[(size_t)r * cin + k];
        for (int m = 16; m; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
        if (lane == 0) h[i][r] = acc;
    }
    __syncthreads();
    for (int job = threadIdx.x; job < rows * cout; job += blockDim.x) {
        int i = job / cout, c = job % cout;
        float acc = 0;
        for (int r = 0; r < e.r; r++) acc += h[i][r] * e.B[(size_t)c * e.r + r];
        bf16 *o = out + ((size_t)n * L + row0 + i) * ldo + col0 + c;
        *o = __float2bfloat16(__bfloat162float(*o) + e.s * acc);
    }
}

int lora_linear(bf16 *out, int ldo, int col0, const bf16 *x, int ldx, int cin, int cout,
                const lora_entry *table, int N, int L, cudaStream_t stream, char *err) {
    dim3 grid((L + LORA_TILE - 1) / LORA_TILE, N);
    lora_linear_kernel<<<grid, 128, 0, stream>>>(out, ldo, col0, x, ldx, cin, cout, table, L);
    LAUNCH_TRY();
    return 0;
}

}  // namespace e2g
