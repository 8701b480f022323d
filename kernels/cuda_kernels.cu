/* cuda_kernels.cu — the engine's fused elementwise and normalisation
 * kernels (see cuda_kernels.cuh): instance-norm statistics and the conv
 * block epilogue (bias, norm, ReLU, residual/skip add, upsample phase
 * gather and reflect padding of the next layer's input in one pass), the
 * input and output layers, bias + GELU, residual + layer norm, weight
 * packing with LoRA merging, and the unmerged LoRA paths.  bf16 in memory,
 * fp32 arithmetic. */
#include "cuda_kernels.cuh"

#define THREADS 256

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
        bf16x8 k;
        k.u = *(const uint4 *)(s.p + conv_out_index(s, n, 0, 0, g * 8));
        float K[8];
        bf16x8_to_float(k, K);
        for (int p = blockIdx.x * lanes + lane; p < HW; p += gridDim.x * lanes) {
            bf16x8 v;
            v.u = *(const uint4 *)(s.p + conv_out_index(s, n, p / s.W, p % s.W, g * 8));
            float f[8];
            bf16x8_to_float(v, f);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float d = f[i] - K[i];
                acc[i] += d, acc[8 + i] += d * d;
            }
        }
    }
    reduce_channel_pairs(red, acc, sums, s.C, n, G, lanes, g, lane);
}

/* The shifted sums of (n, c) → its mean and variance, in place. */
__global__ void block_stats_final_kernel(float *sums, conv_out s) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= s.N * s.C) return;
    int n = i / s.C, c = i % s.C;
    float inv_hw = 1.0f / (s.H * s.W), K = __bfloat162float(s.p[conv_out_index(s, n, 0, 0, c)]);
    float *at = sums + (size_t)n * 2 * s.C + c;
    float m1 = at[0] * inv_hw;
    at[0] = K + m1;
    at[s.C] = fmaxf(at[s.C] * inv_hw - m1 * m1, 0.0f);
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
    const tview &d = a.dst;
    int G = d.C / 8, Hp = d.H + 2 * d.pad, Wp = d.W + 2 * d.pad;
    size_t total = (size_t)d.N * Hp * Wp * G;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int g = (int)(i % G);
        size_t pix = i / G;
        int px = (int)(pix % Wp), py = (int)(pix / Wp % Hp), n = (int)(pix / ((size_t)Wp * Hp));
        int y = d.pad ? reflect_dev(py - d.pad, d.H) : py, x = d.pad ? reflect_dev(px - d.pad, d.W) : px;
        int c0 = g * 8;
        bf16x8 v;
        v.u = *(const uint4 *)(a.src.p + conv_out_index(a.src, n, y, x, c0));
        float f[8];
        bf16x8_to_float(v, f);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int c = c0 + j;
            if (a.sums) { /* a bias before the norm cancels: skipped */
                float mean = a.sums[(size_t)n * 2 * d.C + c], var = a.sums[(size_t)n * 2 * d.C + d.C + c];
                f[j] = (f[j] - mean) * rsqrtf(var + 1e-5f) * a.gamma[c] + a.beta[c];
            } else if (a.bias) {
                f[j] += a.bias[c];
            }
            if (a.relu) f[j] = fmaxf(f[j], 0.0f);
        }
        if (a.add.p) {
            bf16x8 r;
            r.u = *(const uint4 *)(a.add.p + view_index(a.add, n, y, x) + c0);
            float fr[8];
            bf16x8_to_float(r, fr);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] += fr[j];
        }
        bf16x8 o = float_to_bf16x8(f);
        *(uint4 *)(d.p + view_at(d, n, py, px) + c0) = o.u;
    }
}

int block_epilogue(const epilogue_args &a, cudaStream_t stream, char *err) {
    if (a.dst.C % 8) return e2g_fail(err, "CUDA: %d channels unsupported", a.dst.C);
    size_t total = (size_t)a.dst.N * (a.dst.H + 2 * a.dst.pad) * (a.dst.W + 2 * a.dst.pad) * (a.dst.C / 8);
    block_epilogue_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- input and output layers --------------------------------------------------- */

__global__ void prep_input_kernel(tview d, const float *x) {
    int Hp = d.H + 2 * d.pad, Wp = d.W + 2 * d.pad;
    size_t total = (size_t)d.N * Hp * Wp;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int px = (int)(i % Wp), py = (int)(i / Wp % Hp), n = (int)(i / ((size_t)Wp * Hp));
        int y = reflect_dev(py - d.pad, d.H), xx = reflect_dev(px - d.pad, d.W);
        const float *src = x + (((size_t)n * d.H + y) * d.W + xx) * 3;
        float f[8] = {src[0], src[1], src[2], 0, 0, 0, 0, 0};
        *(uint4 *)(d.p + view_at(d, n, py, px)) = float_to_bf16x8(f).u;
    }
}

int prep_input(const tview &dst, const float *x, cudaStream_t stream, char *err) {
    if (dst.C != 8) return e2g_fail(err, "CUDA: the input view has %d channels, not 8", dst.C);
    size_t total = (size_t)dst.N * (dst.H + 2 * dst.pad) * (dst.W + 2 * dst.pad);
    prep_input_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(dst, x);
    LAUNCH_TRY();
    return 0;
}

__global__ void output_kernel(float *y, const bf16 *o, int Cs, const float *bias, const float *x,
                              int residual, size_t pixels) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < pixels * 3;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % 3);
        float v = __bfloat162float(o[i / 3 * Cs + c]) + bias[c];
        if (residual) v += atanhf(fminf(fmaxf(x[i], -0.999f), 0.999f));
        y[i] = tanhf(v);
    }
}

int output_layer(float *y, const bf16 *o, int Cs, const float *bias, const float *x, int residual,
                 size_t pixels, cudaStream_t stream, char *err) {
    output_kernel<<<blocks_for(pixels * 3, THREADS), THREADS, 0, stream>>>(y, o, Cs, bias, x, residual, pixels);
    LAUNCH_TRY();
    return 0;
}

/* ---- transformer block pieces --------------------------------------------------- */

__global__ void bias_act_kernel(bf16 *x, const float *bias, int gelu, size_t M, int C) {
    int G = C / 8;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < M * G;
         i += (size_t)gridDim.x * blockDim.x) {
        int c0 = (int)(i % G) * 8;
        bf16x8 v;
        v.u = *(uint4 *)(x + i * 8);
        float f[8];
        bf16x8_to_float(v, f);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            f[j] += bias[c0 + j];
            if (gelu) f[j] = gelu_tanh(f[j]);
        }
        *(uint4 *)(x + i * 8) = float_to_bf16x8(f).u;
    }
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
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(src[i]);
}

__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
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

/* engine/conv.c's TAP_GROUP: the 2×2 tap that 3×3 tap ky joins in phase a. */
__constant__ int TAP_GROUP_DEV[2][3] = {{0, 1, 1}, {0, 0, 1}};

__device__ float merged_weight(const pack_args &a, int o, int ci, int ky, int kx) {
    size_t tap = ((size_t)ci * a.k + ky) * a.k + kx;
    float w = a.base ? a.base[(size_t)o * a.cin * a.k * a.k + tap] : 0.0f;
    for (int t = 0; t < a.n_terms; t++) {
        const merge_term &m = a.terms[t];
        float d = 0;
        for (int r = 0; r < m.r; r++) d += m.B[(size_t)o * m.r + r] * m.A[(size_t)r * a.cin * a.k * a.k + tap];
        w += m.s * d;
    }
    return w;
}

__global__ void pack_weights_kernel(pack_args a) {
    int kk = a.phase ? 2 : a.k, cin = a.phase ? a.cin : a.cin_pad;
    size_t rows = a.phase ? 4 * (size_t)a.cout_pad : (size_t)a.cout_pad;
    size_t total = rows * kk * kk * cin;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int ci = (int)(i % cin), tx = (int)(i / cin % kk), ty = (int)(i / cin / kk % kk);
        int row = (int)(i / ((size_t)cin * kk * kk)), o = row % a.cout_pad;
        float w = 0;
        if (o < a.cout && ci < a.cin) {
            if (!a.phase) {
                w = merged_weight(a, o, ci, ty, tx);
            } else {
                int p = row / a.cout_pad, pa = p >> 1, pb = p & 1;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++)
                        if (TAP_GROUP_DEV[pa][ky] == ty && TAP_GROUP_DEV[pb][kx] == tx)
                            w += merged_weight(a, o, ci, ky, kx);
            }
        }
        a.dst[i] = __float2bfloat16(w);
    }
}

int pack_weights(const pack_args &a, cudaStream_t stream, char *err) {
    size_t total = (a.phase ? 4 * (size_t)a.cout_pad * 4 * a.cin : (size_t)a.cout_pad * a.k * a.k * a.cin_pad);
    pack_weights_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- unmerged LoRA ------------------------------------------------------------------ */

__global__ void lora_conv_expand_kernel(bf16 *out, int Cs, int cout, int groups, const bf16 *h,
                                        const lora_entry *table, int N, size_t P) {
    size_t per = P * groups * cout, total = (size_t)N * per;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int n = (int)(i / per);
        const lora_entry &e = table[n];
        if (!e.B) continue;
        size_t j = i % per, p = j / ((size_t)groups * cout);
        int g = (int)(j / cout % groups), c = (int)(j % cout);
        const bf16 *hp = h + e.h_off + (p * groups + g) * e.R;
        float acc = 0;
        for (int r = 0; r < e.r; r++) acc += __bfloat162float(hp[r]) * e.B[(size_t)c * e.r + r];
        bf16 *o = out + ((size_t)n * P + p) * Cs + g * cout + c;
        *o = __float2bfloat16(__bfloat162float(*o) + e.s * acc);
    }
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
