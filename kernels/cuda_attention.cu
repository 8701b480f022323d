/* cuda_attention.cu — multi-head attention as one fused flash-style kernel
 * on tensor cores (bf16 WMMA 16×16×16, fp32 accumulation), for the
 * transformer block's self-attention (Lq = Lk = tokens) and
 * cross-attention (Lk = T context tokens).  Never materialises the
 * Lq×Lk score matrix: each warp keeps 16 query rows, walks the keys in
 * tiles of 64 with an online softmax (running max m and sum l per row),
 * and rescales its fp32 output accumulator in shared memory. */
#include <mma.h>

#include "cuda_kernels.cuh"

namespace e2g {

using namespace nvcuda;

#define WARPS 4
#define QROWS 16               /* query rows per warp */
#define KTILE 64               /* keys per tile */
#define SPAD 4                 /* fp32 row padding (bank spread; keeps 16-byte alignment) */
#define HPAD 8                 /* bf16 row padding */

template <int D>
struct attn_smem {
    static constexpr int kv_ld = D + HPAD, s_ld = KTILE + SPAD, p_ld = KTILE + HPAD, o_ld = D + SPAD;
    static constexpr size_t kv = (size_t)KTILE * kv_ld * sizeof(bf16);      /* one of K, V */
    static constexpr size_t s = (size_t)QROWS * s_ld * sizeof(float);      /* per warp */
    static constexpr size_t p = (size_t)QROWS * p_ld * sizeof(bf16);
    static constexpr size_t o = (size_t)QROWS * o_ld * sizeof(float);
    static constexpr size_t q = (size_t)QROWS * kv_ld * sizeof(bf16);
    static constexpr size_t per_warp = s + p + o + q;
    static constexpr size_t total = 2 * kv + WARPS * per_warp;
};

template <int D>
__global__ void __launch_bounds__(WARPS * 32)
attention_kernel(bf16 *out, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, int Lq,
                 int Lk, int C, float scale_log2) {
    typedef attn_smem<D> S;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = (bf16 *)(smem + S::kv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    unsigned char *mine = smem + 2 * S::kv + warp * S::per_warp;
    float *Ss = (float *)mine;
    bf16 *Ps = (bf16 *)(mine + S::s);
    float *Os = (float *)(mine + S::s + S::p);
    bf16 *Qs = (bf16 *)(mine + S::s + S::p + S::o);

    int n = blockIdx.z, h = blockIdx.y, q0 = (blockIdx.x * WARPS + warp) * QROWS;
    const bf16 *qb = q + (size_t)n * Lq * ldq + h * D;
    const bf16 *kb = k + (size_t)n * Lk * ldkv + h * D, *vb = v + (size_t)n * Lk * ldkv + h * D;

    /* This warp's query rows (zero past Lq) and a zeroed accumulator. */
    for (int i = lane; i < QROWS * D / 8; i += 32) {
        int r = i / (D / 8), c = i % (D / 8) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (q0 + r < Lq) val = *(const uint4 *)(qb + (size_t)(q0 + r) * ldq + c);
        *(uint4 *)(Qs + r * S::kv_ld + c) = val;
    }
    for (int i = lane; i < QROWS * S::o_ld; i += 32) Os[i] = 0;
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qf[D / 16];
#pragma unroll
    for (int d = 0; d < D / 16; d++) wmma::load_matrix_sync(qf[d], Qs + d * 16, S::kv_ld);

    /* Two lanes per query row: lane 2i and 2i+1 own row i's halves. */
    int row = lane / 2, half = lane % 2;
    float m_run = -INFINITY, l_run = 0;

    for (int k0 = 0; k0 < Lk; k0 += KTILE) {
        __syncthreads(); /* the previous tile is no longer read */
        for (int i = threadIdx.x; i < KTILE * D / 8; i += WARPS * 32) {
            int r = i / (D / 8), c = i % (D / 8) * 8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (k0 + r < Lk) {
                kv = *(const uint4 *)(kb + (size_t)(k0 + r) * ldkv + c);
                vv = *(const uint4 *)(vb + (size_t)(k0 + r) * ldkv + c);
            }
            *(uint4 *)(Ks + r * S::kv_ld + c) = kv;
            *(uint4 *)(Vs + r * S::kv_ld + c) = vv;
        }
        __syncthreads();

        /* S = Q·Kᵀ (16 × 64) */
#pragma unroll
        for (int j = 0; j < KTILE / 16; j++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int d = 0; d < D / 16; d++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kf;
                wmma::load_matrix_sync(kf, Ks + j * 16 * S::kv_ld + d * 16, S::kv_ld);
                wmma::mma_sync(acc, qf[d], kf, acc);
            }
            wmma::store_matrix_sync(Ss + j * 16, acc, S::s_ld, wmma::mem_row_major);
        }
        __syncwarp();

        /* Online softmax on the tile, in base 2. */
        int valid = Lk - k0 < KTILE ? Lk - k0 : KTILE;
        float *srow = Ss + row * S::s_ld + half * (KTILE / 2);
        float tmax = -INFINITY;
        for (int c = 0; c < KTILE / 2; c++)
            if (half * (KTILE / 2) + c < valid) tmax = fmaxf(tmax, srow[c] * scale_log2);
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        float m_new = fmaxf(m_run, tmax), alpha = exp2f(m_run - m_new), psum = 0;
        bf16 *prow = Ps + row * S::p_ld + half * (KTILE / 2);
        for (int c = 0; c < KTILE / 2; c++) {
            float p = half * (KTILE / 2) + c < valid ? exp2f(srow[c] * scale_log2 - m_new) : 0.0f;
            bf16 pb = __float2bfloat16(p);
            prow[c] = pb;
            psum += __bfloat162float(pb); /* the sum of what P·V multiplies */
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l_run = l_run * alpha + psum, m_run = m_new;
        float *orow = Os + row * S::o_ld + half * (D / 2);
        for (int c = 0; c < D / 2; c++) orow[c] *= alpha;
        __syncwarp();

        /* O += P·V */
#pragma unroll
        for (int d = 0; d < D / 16; d++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, Os + d * 16, S::o_ld, wmma::mem_row_major);
#pragma unroll
            for (int j = 0; j < KTILE / 16; j++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pf;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vf;
                wmma::load_matrix_sync(pf, Ps + j * 16, S::p_ld);
                wmma::load_matrix_sync(vf, Vs + j * 16 * S::kv_ld + d * 16, S::kv_ld);
                wmma::mma_sync(acc, pf, vf, acc);
            }
            wmma::store_matrix_sync(Os + d * 16, acc, S::o_ld, wmma::mem_row_major);
        }
        __syncwarp();
    }

    if (q0 + row < Lq) {
        float inv = 1.0f / l_run;
        bf16 *orow = out + ((size_t)n * Lq + q0 + row) * C + h * D + half * (D / 2);
        const float *src = Os + row * S::o_ld + half * (D / 2);
        for (int c = 0; c < D / 2; c++) orow[c] = __float2bfloat16(src[c] * inv);
    }
}

template <int D>
static int launch(bf16 *out, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, int N,
                  int Lq, int Lk, int C, int heads, cudaStream_t stream, char *err) {
    size_t bytes = attn_smem<D>::total;
    static int opted_in; /* once, on the first (eager, never captured) run */
    if (!opted_in) {
        CUDA_TRY(cudaFuncSetAttribute(attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        opted_in = 1;
    }
    dim3 grid((Lq + WARPS * QROWS - 1) / (WARPS * QROWS), heads, N);
    float scale_log2 = 1.4426950408889634f / sqrtf((float)D);
    attention_kernel<D><<<grid, WARPS * 32, bytes, stream>>>(out, q, ldq, k, v, ldkv, Lq, Lk, C, scale_log2);
    LAUNCH_TRY();
    return 0;
}

int attention_supported(int C, int heads) {
    int d = C / heads;
    return C % heads == 0 && (d == 32 || d == 64 || d == 96 || d == 128);
}

int attention(bf16 *out, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldkv, int N,
              int Lq, int Lk, int C, int heads, cudaStream_t stream, char *err) {
    switch (attention_supported(C, heads) ? C / heads : 0) {
    case 32: return launch<32>(out, q, ldq, k, v, ldkv, N, Lq, Lk, C, heads, stream, err);
    case 64: return launch<64>(out, q, ldq, k, v, ldkv, N, Lq, Lk, C, heads, stream, err);
    case 96: return launch<96>(out, q, ldq, k, v, ldkv, N, Lq, Lk, C, heads, stream, err);
    case 128: return launch<128>(out, q, ldq, k, v, ldkv, N, Lq, Lk, C, heads, stream, err);
    default: return e2g_fail(err, "CUDA: attention head size %d unsupported", heads ? C / heads : 0);
    }
}

}  // namespace e2g
