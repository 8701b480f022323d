/* cuda_train_kernels.cu — the backward kernels of the GPU trainer
 * (cuda_train.cuh): conv block epilogue (bias, instance norm, ReLU, phase
 * scatter), FiLM (norms and the output gate), reflect-pad folding, output
 * layer + L1 (and the gate's per-sample gradient), bias sums, GELU,
 * layer norm, flash-style attention backward, the weight-gradient adjoint
 * of the packing, LoRA factor gradients, context rows and fused Adam.  fp32
 * arithmetic; reductions in shared memory or warps, then one atomic per
 * block.  The per-element work of each grid-stride kernel is a body of
 * cuda_bodies.cuh, which the CPU tests run too. */
#include "cuda_train.cuh"

namespace e2g {

#define THREADS 256

#define GRID_LOOP(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* ---- conv block epilogue ------------------------------------------------------ */

/* Pass 1, blocks (chunk, n) as block_stats: Σ dv and Σ dv·xhat per (n, c),
 * dv = dout masked by the ReLU. */
__global__ void epilogue_bwd_sums_kernel(epilogue_bwd_args a) {
    __shared__ float red[THREADS][16];
    const conv_out &s = a.src;
    int G = s.C / 8, lanes = THREADS / G, g = threadIdx.x % G, lane = threadIdx.x / G;
    int n = blockIdx.y, HW = s.H * s.W;
    float acc[16] = {0};
    if (lane < lanes)
        for (int p = blockIdx.x * lanes + lane; p < HW; p += gridDim.x * lanes) epilogue_bwd_accumulate(a, n, g, p, acc);
    reduce_channel_pairs(red, acc, a.dsums, s.C, n, G, lanes, g, lane);
}

/* dgamma, dbeta (with a norm) or dbias (without) from the per-sample sums. */
__global__ void epilogue_bwd_params_kernel(epilogue_bwd_args a, int N) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < a.src.C) epilogue_bwd_params_body(a, N, c);
}

/* Pass 2: the gradient of the raw conv output, in its own layout. */
__global__ void epilogue_bwd_apply_kernel(epilogue_bwd_args a) {
    GRID_LOOP(i, epilogue_bwd_items(a.src)) epilogue_bwd_apply_body(a, i);
}

int block_epilogue_backward(const epilogue_bwd_args &a, cudaStream_t stream, char *err) {
    const conv_out &s = a.src;
    if (s.C % 8 || s.C > 8 * THREADS) return e2g_fail(err, "CUDA: %d channels unsupported", s.C);
    int need_sums = a.sums || a.dbias;
    if (need_sums) {
        CUDA_TRY(cudaMemsetAsync(a.dsums, 0, (size_t)s.N * 2 * s.C * sizeof(float), stream));
        int lanes = THREADS / (s.C / 8);
        dim3 grid((s.H * s.W + lanes * 64 - 1) / (lanes * 64), s.N);
        epilogue_bwd_sums_kernel<<<grid, THREADS, 0, stream>>>(a);
        LAUNCH_TRY();
        epilogue_bwd_params_kernel<<<(s.C + 127) / 128, 128, 0, stream>>>(a, s.N);
        LAUNCH_TRY();
    }
    epilogue_bwd_apply_kernel<<<blocks_for(epilogue_bwd_items(s), THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

/* ---- FiLM ---------------------------------------------------------------------------- */

__global__ void film_param_grad_kernel(film_args a) {
    GRID_LOOP(i, (size_t)film_rows(a) * (a.C4 + 1)) film_param_grad_body(a, i);
}

__global__ void film_context_grad_kernel(film_args a) {
    GRID_LOOP(i, (size_t)a.N * a.T * a.C4) film_context_grad_body(a, i);
}

int film_backward(const film_args &a, cudaStream_t stream, char *err) {
    if (a.dw) {
        size_t n = (size_t)film_rows(a) * (a.C4 + 1);
        film_param_grad_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(a);
        LAUNCH_TRY();
    }
    if (a.dctx) {
        size_t n = (size_t)a.N * a.T * a.C4;
        film_context_grad_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(a);
        LAUNCH_TRY();
    }
    return 0;
}

/* ---- padding and sums ------------------------------------------------------------- */

__global__ void fold_grad_kernel(float *g, const bf16 *dxp, int N, int H, int W, int C, int pad) {
    GRID_LOOP(i, (size_t)N * H * W * C) fold_grad_body(g, dxp, H, W, C, pad, i);
}

int fold_grad(float *g, const bf16 *dxp, int N, int H, int W, int C, int pad, cudaStream_t stream, char *err) {
    fold_grad_kernel<<<blocks_for((size_t)N * H * W * C, THREADS), THREADS, 0, stream>>>(g, dxp, N, H, W, C, pad);
    LAUNCH_TRY();
    return 0;
}

__global__ void skip_dadd_kernel(skip_bwd_args a) {
    GRID_LOOP(i, (size_t)a.N * a.H * a.W * a.C) skip_dadd_body(a, i);
}

__global__ void skip_dgain_kernel(skip_bwd_args a) {
    GRID_LOOP(i, (size_t)a.N * a.C) skip_dgain_body(a, i);
}

int skip_gate_backward(const skip_bwd_args &a, cudaStream_t stream, char *err) {
    skip_dadd_kernel<<<blocks_for((size_t)a.N * a.H * a.W * a.C, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    skip_dgain_kernel<<<blocks_for((size_t)a.N * a.C, THREADS), THREADS, 0, stream>>>(a);
    LAUNCH_TRY();
    return 0;
}

__global__ void add_f32_kernel(float *dst, const float *src, size_t n) {
    GRID_LOOP(i, n) dst[i] += src[i];
}

int add_f32(float *dst, const float *src, size_t n, cudaStream_t stream, char *err) {
    add_f32_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(dst, src, n);
    LAUNCH_TRY();
    return 0;
}

/* ---- output layer and L1 ------------------------------------------------------------ */

/* Blocks (chunk, n) over sample n's pixels: acc[0..2] the bias gradient,
 * acc[3] Σ|y − t|, acc[4..6] the gate's (x NULL: none). */
__global__ void output_l1_kernel(bf16 *dout, float *dbias, float *dgain, float *loss_sum, const float *y,
                                 const float *t, const float *x, float g, size_t hw) {
    __shared__ float red[THREADS][7];
    float acc[7] = {0};
    size_t n = blockIdx.y;
    for (size_t q = blockIdx.x * (size_t)THREADS + threadIdx.x; q < hw; q += (size_t)gridDim.x * THREADS)
        output_l1_body(dout, y, t, x, g, n * hw + q, acc);
    for (int i = 0; i < 7; i++) red[threadIdx.x][i] = acc[i];
    __syncthreads();
    for (int s = THREADS / 2; s; s >>= 1) {
        if (threadIdx.x < s)
            for (int i = 0; i < 7; i++) red[threadIdx.x][i] += red[threadIdx.x + s][i];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        for (int c = 0; c < 3; c++) atomicAdd(&dbias[c], red[0][c]);
        atomicAdd(loss_sum, red[0][3]);
        if (x)
            for (int c = 0; c < 3; c++) atomicAdd(&dgain[n * 3 + c], red[0][4 + c]);
    }
}

int output_l1_backward(bf16 *dout, float *dbias, float *dgain, float *loss_sum, const float *y, const float *t,
                       const float *x, float lambda, int N, size_t hw, cudaStream_t stream, char *err) {
    unsigned chunks = blocks_for(hw, THREADS), most = std::max(1024 / N, 1);
    dim3 grid(std::min(chunks, most), N);
    output_l1_kernel<<<grid, THREADS, 0, stream>>>(dout, dbias, dgain, loss_sum, y, t, dgain ? x : NULL,
                                                   lambda / (float)(N * hw * 3), hw);
    LAUNCH_TRY();
    return 0;
}

/* Block (column chunk of 32, row chunk): threads 32 columns × 8 row lanes. */
__global__ void col_sum_kernel(float *db, const bf16 *x, int ld, int col0, size_t M, int C) {
    __shared__ float red[8][32];
    int c = blockIdx.x * 32 + threadIdx.x % 32, lane = threadIdx.x / 32;
    float acc = 0;
    if (c < C)
        for (size_t r = blockIdx.y * 8 + lane; r < M; r += (size_t)gridDim.y * 8)
            acc += __bfloat162float(x[r * ld + col0 + c]);
    red[lane][threadIdx.x % 32] = acc;
    __syncthreads();
    if (lane == 0 && c < C) {
        for (int l = 1; l < 8; l++) acc += red[l][threadIdx.x];
        atomicAdd(&db[c], acc);
    }
}

int col_sum(float *db, const bf16 *x, int ld, int col0, size_t M, int C, cudaStream_t stream, char *err) {
    unsigned rows = (unsigned)((M + 255) / 256);
    dim3 grid((C + 31) / 32, rows > 256 ? 256 : rows);
    col_sum_kernel<<<grid, THREADS, 0, stream>>>(db, x, ld, col0, M, C);
    LAUNCH_TRY();
    return 0;
}

/* ---- GELU ------------------------------------------------------------------------------- */

__global__ void gelu_forward_kernel(bf16 *out, const bf16 *in, size_t n) {
    GRID_LOOP(i, n / 8) gelu_forward_body(out, in, i);
}

__global__ void gelu_backward_kernel(bf16 *dh, const bf16 *pre, size_t n) {
    GRID_LOOP(i, n / 8) gelu_backward_body(dh, pre, i);
}

int e2g_gelu_forward(bf16 *out, const bf16 *in, size_t n, cudaStream_t stream, char *err) {
    if (n % 8) return e2g_fail(err, "CUDA: GELU over %zu values", n);
    gelu_forward_kernel<<<blocks_for(n / 8, THREADS), THREADS, 0, stream>>>(out, in, n);
    LAUNCH_TRY();
    return 0;
}

int e2g_gelu_backward(bf16 *dh, const bf16 *pre, size_t n, cudaStream_t stream, char *err) {
    if (n % 8) return e2g_fail(err, "CUDA: GELU over %zu values", n);
    gelu_backward_kernel<<<blocks_for(n / 8, THREADS), THREADS, 0, stream>>>(dh, pre, n);
    LAUNCH_TRY();
    return 0;
}

/* ---- layer norm ------------------------------------------------------------------------- */

#define LN_PER_LANE 32 /* C ≤ 1024 */

/* One warp per row (rows strided over the grid); each lane keeps its
 * channels' dgamma/dbeta in registers and adds them once at the end. */
__global__ void layernorm_bwd_kernel(float *dx_out, const float *dres, const float *x32, const bf16 *x16,
                                     const bf16 *dy, const float *gamma, float *dgamma, float *dbeta, size_t M,
                                     int C) {
    int lane = threadIdx.x % 32, warps = gridDim.x * (blockDim.x / 32);
    float dg[LN_PER_LANE] = {0}, dbt[LN_PER_LANE] = {0};
    for (size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; row < M; row += warps) {
        size_t off = row * C;
        float x[LN_PER_LANE], g[LN_PER_LANE], sum = 0;
#pragma unroll
        for (int i = 0; i < LN_PER_LANE; i++) {
            int c = i * 32 + lane;
            x[i] = g[i] = 0;
            if (c < C) {
                x[i] = x32 ? x32[off + c] : __bfloat162float(x16[off + c]);
                g[i] = __bfloat162float(dy[off + c]);
                sum += x[i];
            }
        }
        for (int m = 16; m; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
        float mean = sum / C, var = 0;
#pragma unroll
        for (int i = 0; i < LN_PER_LANE; i++)
            if (i * 32 + lane < C) var += (x[i] - mean) * (x[i] - mean);
        for (int m = 16; m; m >>= 1) var += __shfl_xor_sync(0xffffffffu, var, m);
        float rstd = rsqrtf(var / C + 1e-5f), s1 = 0, s2 = 0;
#pragma unroll
        for (int i = 0; i < LN_PER_LANE; i++) {
            int c = i * 32 + lane;
            if (c < C) {
                float xh = (x[i] - mean) * rstd, dxh = g[i] * gamma[c];
                dg[i] += g[i] * xh, dbt[i] += g[i];
                x[i] = xh, g[i] = dxh;
                s1 += dxh, s2 += dxh * xh;
            }
        }
        for (int m = 16; m; m >>= 1) {
            s1 += __shfl_xor_sync(0xffffffffu, s1, m);
            s2 += __shfl_xor_sync(0xffffffffu, s2, m);
        }
        s1 /= C, s2 /= C;
#pragma unroll
        for (int i = 0; i < LN_PER_LANE; i++) {
            int c = i * 32 + lane;
            if (c < C) dx_out[off + c] = (dres ? dres[off + c] : 0.0f) + rstd * (g[i] - s1 - x[i] * s2);
        }
    }
    if (dgamma)
#pragma unroll
        for (int i = 0; i < LN_PER_LANE; i++) {
            int c = i * 32 + lane;
            if (c < C) atomicAdd(&dgamma[c], dg[i]), atomicAdd(&dbeta[c], dbt[i]);
        }
}

int e2g_layernorm_backward(float *dx_out, const float *dres, const float *x32, const bf16 *x16, const bf16 *dy,
                       const float *gamma, float *dgamma, float *dbeta, size_t M, int C, cudaStream_t stream,
                       char *err) {
    if (C > 32 * LN_PER_LANE) return e2g_fail(err, "CUDA: layer norm over %d > 1024 channels", C);
    unsigned blocks = blocks_for(M, THREADS / 32);
    if (blocks > 512) blocks = 512;
    layernorm_bwd_kernel<<<blocks, THREADS, 0, stream>>>(dx_out, dres, x32, x16, dy, gamma, dgamma, dbeta, M, C);
    LAUNCH_TRY();
    return 0;
}

/* ---- attention backward ------------------------------------------------------------------ */

#define ATT_PER_LANE 4 /* head size ≤ 128 */

__device__ __forceinline__ float warp_sum(float v) {
    for (int m = 16; m; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

__device__ __forceinline__ void load_head(float *dst, const bf16 *src, int d, int lane) {
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        int c = e * 32 + lane;
        dst[e] = c < d ? __bfloat162float(src[c]) : 0.0f;
    }
}

__device__ __forceinline__ float head_dot(const float *a, const bf16 *b, int d, int lane) {
    float s = 0;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) {
        int c = e * 32 + lane;
        if (c < d) s += a[e] * __bfloat162float(b[c]);
    }
    return warp_sum(s);
}

/* One warp per (n, head, query i): the row's log-sum-exp and D = dO·O,
 * then dq = scale·Σ_j p_ij (dO·v_j − D) k_j. */
__global__ void attention_dq_kernel(bf16 *dq, int lddq, const bf16 *q, int ldq, const bf16 *k, const bf16 *v,
                                    int ldkv, const bf16 *o, const bf16 *dout, float *stats, int N, int Lq,
                                    int Lk, int C, int heads) {
    size_t w = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32, d = C / heads;
    if (w >= (size_t)N * heads * Lq) return;
    int i = (int)(w % Lq), h = (int)(w / Lq % heads), n = (int)(w / ((size_t)Lq * heads));
    float scale = rsqrtf((float)d), qi[ATT_PER_LANE], doi[ATT_PER_LANE], oi[ATT_PER_LANE], acc[ATT_PER_LANE] = {0};
    load_head(qi, q + ((size_t)n * Lq + i) * ldq + h * d, d, lane);
    load_head(doi, dout + ((size_t)n * Lq + i) * C + h * d, d, lane);
    load_head(oi, o + ((size_t)n * Lq + i) * C + h * d, d, lane);
    float D = 0;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++) D += doi[e] * oi[e];
    D = warp_sum(D);
    const bf16 *kb = k + (size_t)n * Lk * ldkv + h * d, *vb = v + (size_t)n * Lk * ldkv + h * d;
    float m = -INFINITY, l = 0;
    for (int j = 0; j < Lk; j++) {
        float s = scale * head_dot(qi, kb + (size_t)j * ldkv, d, lane);
        float mn = fmaxf(m, s);
        l = l * __expf(m - mn) + __expf(s - mn), m = mn;
    }
    float lse = m + __logf(l);
    for (int j = 0; j < Lk; j++) {
        const bf16 *kj = kb + (size_t)j * ldkv;
        float p = __expf(scale * head_dot(qi, kj, d, lane) - lse);
        float ds = p * (head_dot(doi, vb + (size_t)j * ldkv, d, lane) - D);
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) {
            int c = e * 32 + lane;
            if (c < d) acc[e] += ds * __bfloat162float(kj[c]);
        }
    }
    bf16 *dst = dq + ((size_t)n * Lq + i) * lddq + h * d;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++)
        if (e * 32 + lane < d) dst[e * 32 + lane] = __float2bfloat16(scale * acc[e]);
    if (lane == 0) stats[2 * w] = lse, stats[2 * w + 1] = D;
}

/* One warp per (n, head, key j): dv_j = Σ_i p_ij dO_i and
 * dk_j = scale·Σ_i p_ij (dO_i·v_j − D_i) q_i. */
__global__ void attention_dkv_kernel(bf16 *dk, bf16 *dv, int lddkv, const bf16 *q, int ldq, const bf16 *k,
                                     const bf16 *v, int ldkv, const bf16 *dout, const float *stats, int N, int Lq,
                                     int Lk, int C, int heads) {
    size_t w = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32, d = C / heads;
    if (w >= (size_t)N * heads * Lk) return;
    int j = (int)(w % Lk), h = (int)(w / Lk % heads), n = (int)(w / ((size_t)Lk * heads));
    float scale = rsqrtf((float)d), kj[ATT_PER_LANE], vj[ATT_PER_LANE];
    float ak[ATT_PER_LANE] = {0}, av[ATT_PER_LANE] = {0};
    load_head(kj, k + ((size_t)n * Lk + j) * ldkv + h * d, d, lane);
    load_head(vj, v + ((size_t)n * Lk + j) * ldkv + h * d, d, lane);
    const float *st = stats + 2 * ((size_t)n * heads + h) * Lq;
    for (int i = 0; i < Lq; i++) {
        const bf16 *qi = q + ((size_t)n * Lq + i) * ldq + h * d, *doi = dout + ((size_t)n * Lq + i) * C + h * d;
        float p = __expf(scale * head_dot(kj, qi, d, lane) - st[2 * i]);
        float ds = p * (head_dot(vj, doi, d, lane) - st[2 * i + 1]);
#pragma unroll
        for (int e = 0; e < ATT_PER_LANE; e++) {
            int c = e * 32 + lane;
            if (c < d) av[e] += p * __bfloat162float(doi[c]), ak[e] += ds * __bfloat162float(qi[c]);
        }
    }
    bf16 *dkd = dk + ((size_t)n * Lk + j) * lddkv + h * d, *dvd = dv + ((size_t)n * Lk + j) * lddkv + h * d;
#pragma unroll
    for (int e = 0; e < ATT_PER_LANE; e++)
        if (e * 32 + lane < d) {
            dkd[e * 32 + lane] = __float2bfloat16(scale * ak[e]);
            dvd[e * 32 + lane] = __float2bfloat16(av[e]);
        }
}

int e2g_attention_backward(bf16 *dq, int lddq, bf16 *dk, bf16 *dv, int lddkv, const bf16 *q, int ldq, const bf16 *k,
                       const bf16 *v, int ldkv, const bf16 *o, const bf16 *dout, float *stats, int N, int Lq, int Lk,
                       int C, int heads, cudaStream_t stream, char *err) {
    if (C % heads || C / heads > 32 * ATT_PER_LANE)
        return e2g_fail(err, "CUDA: attention backward head size %d unsupported", C / heads);
    unsigned per_block = THREADS / 32;
    attention_dq_kernel<<<blocks_for((size_t)N * heads * Lq, per_block), THREADS, 0, stream>>>(
        dq, lddq, q, ldq, k, v, ldkv, o, dout, stats, N, Lq, Lk, C, heads);
    LAUNCH_TRY();
    attention_dkv_kernel<<<blocks_for((size_t)N * heads * Lk, per_block), THREADS, 0, stream>>>(
        dk, dv, lddkv, q, ldq, k, v, ldkv, dout, stats, N, Lq, Lk, C, heads);
    LAUNCH_TRY();
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

__global__ void unpack_weight_grad_kernel(float *dst, const bf16 *src, int cout, int cin, int k, int cout_pad,
                                          int cin_pad, int phase) {
    GRID_LOOP(i, (size_t)cout * cin * k * k) unpack_weight_grad_body(dst, src, cin, k, cout_pad, cin_pad, phase, i);
}

int unpack_weight_grad(float *dst, const bf16 *src, int cout, int cin, int k, int cout_pad, int cin_pad, int phase,
                       cudaStream_t stream, char *err) {
    size_t n = (size_t)cout * cin * k * k;
    unpack_weight_grad_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(dst, src, cout, cin, k, cout_pad,
                                                                             cin_pad, phase);
    LAUNCH_TRY();
    return 0;
}

__global__ void lora_grads_kernel(float *dA, float *dB, const float *dW, const float *A, const float *B, int r,
                                  int cout, int K, float s) {
    GRID_LOOP(i, (size_t)r * K + (size_t)cout * r) lora_grads_body(dA, dB, dW, A, B, r, cout, K, s, i);
}

int lora_grads(float *dA, float *dB, const float *dW, const float *A, const float *B, int r, int cout, int K,
               float s, cudaStream_t stream, char *err) {
    size_t n = (size_t)r * K + (size_t)cout * r;
    lora_grads_kernel<<<blocks_for(n, 128), 128, 0, stream>>>(dA, dB, dW, A, B, r, cout, K, s);
    LAUNCH_TRY();
    return 0;
}

/* ---- context rows -------------------------------------------------------------------------- */

__global__ void gather_rows_kernel(bf16 *dst, const float *src, const int *rows, int N, size_t E) {
    GRID_LOOP(i, (size_t)N * E) gather_rows_body(dst, src, rows, E, i);
}

__global__ void scatter_add_rows_kernel(float *dst, const bf16 *src, const int *rows, int N, size_t E) {
    GRID_LOOP(i, (size_t)N * E) scatter_add_rows_body(dst, src, rows, E, i);
}

int gather_rows(bf16 *dst, const float *src, const int *rows, int N, size_t E, cudaStream_t stream, char *err) {
    gather_rows_kernel<<<blocks_for((size_t)N * E, THREADS), THREADS, 0, stream>>>(dst, src, rows, N, E);
    LAUNCH_TRY();
    return 0;
}

int scatter_add_rows(float *dst, const bf16 *src, const int *rows, int N, size_t E, cudaStream_t stream, char *err) {
    scatter_add_rows_kernel<<<blocks_for((size_t)N * E, THREADS), THREADS, 0, stream>>>(dst, src, rows, N, E);
    LAUNCH_TRY();
    return 0;
}

/* ---- Adam ------------------------------------------------------------------------------------ */

__global__ void adam_kernel(float *p, const float *g, float *m, float *v, size_t n, float step, float b1, float b2,
                            float inv_sqrt_bc2, float eps) {
    GRID_LOOP(i, n) adam_body(p, g, m, v, step, b1, b2, inv_sqrt_bc2, eps, i);
}

int adam_update(float *p, const float *g, float *m, float *v, size_t n, float step, float beta1, float beta2,
                float inv_sqrt_bc2, float eps, cudaStream_t stream, char *err) {
    adam_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream>>>(p, g, m, v, n, step, beta1, beta2, inv_sqrt_bc2,
                                                                eps);
    LAUNCH_TRY();
    return 0;
}

}  // namespace e2g
