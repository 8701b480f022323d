/* cuda_bodies.cuh — the per-element work of the engine's and the trainer's
 * grid-stride kernels, as __host__ __device__ inline functions of the
 * element's index, with the tensor views and argument structs they read.
 *
 * The kernels (cuda_kernels.cu, cuda_train_kernels.cu) are thin loops
 * around these bodies, and tests/test_cuda_bodies.cpp runs the very same
 * bodies on the CPU (g++, CUDA include path, no GPU) against the engine's
 * fp32 ops: index arithmetic, phase gathers, reflect padding, weight
 * packing, LoRA, FiLM (norms and the output's gate), the backward folds
 * and Adam are checked on every build that has nvcc.  What stays in the
 * kernels only is the cooperation of threads (shared-memory and warp
 * reductions, atomics), which the host versions here replace by a
 * sequential sum (atomic_addf).
 *
 * This header includes only cuda_bf16.h (and libc headers): no CUDA
 * runtime, no cuDNN. */
#ifndef E2G_CUDA_BODIES_CUH
#define E2G_CUDA_BODIES_CUH

#include <cuda_bf16.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <vector_types.h>

namespace e2g {

typedef __nv_bfloat16 bf16;

#define E2G_HD __host__ __device__ __forceinline__
/* #pragma unroll for the device pass only (the host compiler has none). */
#ifdef __CUDA_ARCH__
#define E2G_UNROLL _Pragma("unroll")
#else
#define E2G_UNROLL
#endif

/* ---- scalar helpers ----------------------------------------------------------- */

E2G_HD float rsqrt_hd(float x) {
#ifdef __CUDA_ARCH__
    return rsqrtf(x);
#else
    return 1.0f / sqrtf(x);
#endif
}

/* atomicAdd on the device; a plain add in the sequential host version. */
E2G_HD void atomic_addf(float *p, float v) {
#ifdef __CUDA_ARCH__
    atomicAdd(p, v);
#else
    *p += v;
#endif
}

/* PyTorch 'reflect' for |i| < n (the pads here are at most 3 < n). */
E2G_HD int reflect_dev(int i, int n) {
    if (n == 1) return 0;
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

E2G_HD float gelu_tanh(float v) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}

E2G_HD float gelu_tanh_grad(float v) {
    const float k = 0.7978845608028654f;
    float u = k * (v + 0.044715f * v * v * v), th = tanhf(u);
    return 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k * (1.0f + 3.0f * 0.044715f * v * v);
}

/* engine/conv.c's TAP_GROUP[a][k]: the 2×2 tap that 3×3 tap k joins in
 * upsample phase a ({0, 1, 1} for a = 0, {0, 0, 1} for a = 1). */
E2G_HD int tap_group(int a, int k) { return a ? k == 2 : k > 0; }

/* ---- eight bf16 values as one 16-byte word --------------------------------------- */

struct bf16x8 {
    uint4 u;
};

/* p must be 16-byte aligned (8 channels of a tensor whose channel count is
 * a multiple of 8). */
E2G_HD bf16x8 load8(const bf16 *p) {
    bf16x8 v;
#ifdef __CUDA_ARCH__
    v.u = *(const uint4 *)p;
#else
    memcpy(&v.u, (const void *)p, sizeof v.u);
#endif
    return v;
}

E2G_HD void store8(bf16 *p, const bf16x8 &v) {
#ifdef __CUDA_ARCH__
    *(uint4 *)p = v.u;
#else
    memcpy((void *)p, &v.u, sizeof v.u);
#endif
}

E2G_HD void bf16x8_to_float(const bf16x8 &v, float *f) {
#ifdef __CUDA_ARCH__
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v.u);
    E2G_UNROLL
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
#else
    bf16 h[8];
    memcpy((void *)h, &v.u, sizeof h);
    for (int i = 0; i < 8; i++) f[i] = __bfloat162float(h[i]);
#endif
}

E2G_HD bf16x8 float_to_bf16x8(const float *f) {
    bf16x8 v;
#ifdef __CUDA_ARCH__
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&v.u);
    E2G_UNROLL
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
#else
    bf16 h[8];
    for (int i = 0; i < 8; i++) h[i] = __float2bfloat16(f[i]);
    memcpy(&v.u, (const void *)h, sizeof h);
#endif
    return v;
}

/* ---- tensor views ------------------------------------------------------------------ */

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
E2G_HD size_t conv_out_index(const conv_out &s, int n, int y, int x, int c) {
    if (!s.phase) return (((size_t)n * s.H + y) * s.W + x) * s.Cs + c;
    int a = y & 1, b = x & 1, Hg = s.H / 2 + 1, Wg = s.W / 2 + 1;
    return (((size_t)n * Hg + (y >> 1) + a) * Wg + (x >> 1) + b) * s.Cs + (2 * a + b) * s.C + c;
}

/* Elements from one sample of a view to the next. */
E2G_HD size_t view_stride(const tview &v) {
    return v.ns ? v.ns : (size_t)(v.H + 2 * v.pad) * (v.W + 2 * v.pad) * v.C;
}

/* Pixel (y, x) of sample n, in stored coordinates (py, px) = (y + pad,
 * x + pad) for view_at. */
E2G_HD size_t view_at(const tview &v, int n, int py, int px) {
    return (size_t)n * view_stride(v) + ((size_t)py * (v.W + 2 * v.pad) + px) * v.C;
}

E2G_HD size_t view_index(const tview &v, int n, int y, int x) { return view_at(v, n, y + v.pad, x + v.pad); }

/* ---- conv block: statistics and the fused epilogue ------------------------------------ */

/* block_stats, per thread: the shift K (channels g·8 .. g·8+7 of pixel
 * (0, 0) of sample n), then for each pixel p it visits Σ(v − K) into
 * acc[0..7] and Σ(v − K)² into acc[8..15]. */
E2G_HD void stats_shift(const conv_out &s, int n, int g, float *K) {
    bf16x8_to_float(load8(s.p + conv_out_index(s, n, 0, 0, g * 8)), K);
}

E2G_HD void stats_accumulate(const conv_out &s, int n, int g, int p, const float *K, float *acc) {
    float f[8];
    bf16x8_to_float(load8(s.p + conv_out_index(s, n, p / s.W, p % s.W, g * 8)), f);
    E2G_UNROLL
    for (int i = 0; i < 8; i++) {
        float d = f[i] - K[i];
        acc[i] += d, acc[8 + i] += d * d;
    }
}

/* The shifted sums of (n, c) = (i / C, i % C) → its mean and variance, in
 * place in sums (N, 2, C). */
E2G_HD void stats_final_body(float *sums, const conv_out &s, int i) {
    int n = i / s.C, c = i % s.C;
    float inv_hw = 1.0f / (s.H * s.W), K = __bfloat162float(s.p[conv_out_index(s, n, 0, 0, c)]);
    float *at = sums + (size_t)n * 2 * s.C + c;
    float m1 = at[0] * inv_hw;
    at[0] = K + m1;
    at[s.C] = fmaxf(at[s.C] * inv_hw - m1 * m1, 0.0f);
}

/* The conv block epilogue, one pass over the conv output:
 * v = conv (+ bias); instance norm (stats from block_stats); ReLU; + add.
 * bias, norm (sums) and add.p may each be NULL/absent; with a norm the
 * bias is skipped (the norm cancels it exactly; block_stats leaves it out).
 * The norm's affine of sample n is gamma/beta + n·gamma_ns: shared by the
 * batch (gamma_ns 0) or per sample (FiLM: gamma_ns = C, film_affine); a
 * skip gate scales the add per sample and channel (add_gain). */
struct epilogue_args {
    conv_out src;
    const float *bias;
    const float *sums; /* (N, 2, C): mean and variance from block_stats, or NULL: no norm */
    const float *gamma, *beta;
    int gamma_ns;
    int relu;
    tview add; /* add.p NULL: no addition */
    const float *add_gain; /* (N, C): the add's scale per sample and channel (skip gate), or NULL: 1 */
    tview dst; /* written interior and reflected border */
};

/* Work items: one per 8 channels of every stored (padded) output pixel. */
E2G_HD size_t epilogue_items(const tview &d) { return (size_t)d.N * (d.H + 2 * d.pad) * (d.W + 2 * d.pad) * (d.C / 8); }

E2G_HD void epilogue_body(const epilogue_args &a, size_t i) {
    const tview &d = a.dst;
    int G = d.C / 8, Hp = d.H + 2 * d.pad, Wp = d.W + 2 * d.pad;
    int g = (int)(i % G);
    size_t pix = i / G;
    int px = (int)(pix % Wp), py = (int)(pix / Wp % Hp), n = (int)(pix / ((size_t)Wp * Hp));
    int y = d.pad ? reflect_dev(py - d.pad, d.H) : py, x = d.pad ? reflect_dev(px - d.pad, d.W) : px;
    int c0 = g * 8;
    float f[8];
    bf16x8_to_float(load8(a.src.p + conv_out_index(a.src, n, y, x, c0)), f);
    E2G_UNROLL
    for (int j = 0; j < 8; j++) {
        int c = c0 + j;
        if (a.sums) { /* a bias before the norm cancels: skipped */
            float mean = a.sums[(size_t)n * 2 * d.C + c], var = a.sums[(size_t)n * 2 * d.C + d.C + c];
            size_t k = (size_t)n * a.gamma_ns + c;
            f[j] = (f[j] - mean) * rsqrt_hd(var + 1e-5f) * a.gamma[k] + a.beta[k];
        } else if (a.bias) {
            f[j] += a.bias[c];
        }
        if (a.relu) f[j] = fmaxf(f[j], 0.0f);
    }
    if (a.add.p) {
        float fr[8];
        bf16x8_to_float(load8(a.add.p + view_index(a.add, n, y, x) + c0), fr);
        E2G_UNROLL
        for (int j = 0; j < 8; j++) f[j] += (a.add_gain ? a.add_gain[(size_t)n * d.C + c0 + j] : 1.0f) * fr[j];
    }
    store8(d.p + view_at(d, n, py, px) + c0, float_to_bf16x8(f));
}

/* ---- input and output layers --------------------------------------------------------- */

/* x (N, H, W, 3) fp32 → d (C 8, reflect-padded by d.pad) bf16, channels
 * 3..7 zero; one item per stored pixel. */
E2G_HD size_t prep_input_items(const tview &d) { return (size_t)d.N * (d.H + 2 * d.pad) * (d.W + 2 * d.pad); }

E2G_HD void prep_input_body(const tview &d, const float *x, size_t i) {
    int Hp = d.H + 2 * d.pad, Wp = d.W + 2 * d.pad;
    int px = (int)(i % Wp), py = (int)(i / Wp % Hp), n = (int)(i / ((size_t)Wp * Hp));
    int y = reflect_dev(py - d.pad, d.H), xx = reflect_dev(px - d.pad, d.W);
    const float *src = x + (((size_t)n * d.H + y) * d.W + xx) * 3;
    float f[8] = {src[0], src[1], src[2], 0, 0, 0, 0, 0};
    store8(d.p + view_at(d, n, py, px), float_to_bf16x8(f));
}

/* The photo's term in the residual output: atanh(clamp(x)). */
E2G_HD float output_photo(float x) { return atanhf(fminf(fmaxf(x, -0.999f), 0.999f)); }

/* The output layer: y (N, hw, 3) = tanh(o + bias (+ g·atanh(clamp(x)))),
 * o the conv output (N·hw pixels, Cs ≥ 3 channels), g the gain of the
 * photo's channel in its sample (FiLM's gate: gain (N, 3)) or 1 (gain
 * NULL). */
struct output_args {
    float *y;
    const bf16 *o;
    int Cs;
    const float *bias, *x;
    int residual;
    const float *gain;
    int N;
    size_t hw;
};

/* Item i over N·hw·3. */
E2G_HD void output_body(const output_args &a, size_t i) {
    int c = (int)(i % 3);
    float v = __bfloat162float(a.o[i / 3 * a.Cs + c]) + a.bias[c];
    if (a.residual) v += (a.gain ? a.gain[i / (3 * a.hw) * 3 + c] : 1.0f) * output_photo(a.x[i]);
    a.y[i] = tanhf(v);
}

/* x (M, C) in place, item i = 8 channels: x + bias, then GELU when gelu. */
E2G_HD void bias_act_body(bf16 *x, const float *bias, int gelu, int C, size_t i) {
    int c0 = (int)(i % (C / 8)) * 8;
    float f[8];
    bf16x8_to_float(load8(x + i * 8), f);
    E2G_UNROLL
    for (int j = 0; j < 8; j++) {
        f[j] += bias[c0 + j];
        if (gelu) f[j] = gelu_tanh(f[j]);
    }
    store8(x + i * 8, float_to_bf16x8(f));
}

/* ---- weights ------------------------------------------------------------------------- */

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
    const float *base; /* NULL: zero */
    int cout, cin, k, cout_pad, cin_pad, phase, n_terms;
    merge_term terms[4];
};

E2G_HD size_t pack_items(const pack_args &a) {
    return a.phase ? 4 * (size_t)a.cout_pad * 4 * a.cin : (size_t)a.cout_pad * a.k * a.k * a.cin_pad;
}

E2G_HD float merged_weight(const pack_args &a, int o, int ci, int ky, int kx) {
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

E2G_HD void pack_body(const pack_args &a, size_t i) {
    int kk = a.phase ? 2 : a.k, cin = a.phase ? a.cin : a.cin_pad;
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
                    if (tap_group(pa, ky) == ty && tap_group(pb, kx) == tx) w += merged_weight(a, o, ci, ky, kx);
        }
    }
    a.dst[i] = __float2bfloat16(w);
}

/* ---- unmerged LoRA ------------------------------------------------------------------- */

/* One term slot over the whole batch: each sample n has a table entry (B
 * NULL: no term for n).  Convolutions: out (rows P per sample, Cs
 * channels, groups·cout used) += s·h·Bᵀ with h the per-sample A-conv
 * output at h + h_off (P, groups·R). */
struct lora_entry {
    const float *A, *B;
    float s;
    int r, R;
    size_t h_off;
};

/* Item i over N·P·groups·cout outputs. */
E2G_HD void lora_conv_expand_body(bf16 *out, int Cs, int cout, int groups, const bf16 *h, const lora_entry *table,
                                  size_t P, size_t i) {
    size_t per = P * groups * cout;
    int n = (int)(i / per);
    const lora_entry &e = table[n];
    if (!e.B) return;
    size_t j = i % per, p = j / ((size_t)groups * cout);
    int g = (int)(j / cout % groups), c = (int)(j % cout);
    const bf16 *hp = h + e.h_off + (p * groups + g) * e.R;
    float acc = 0;
    for (int r = 0; r < e.r; r++) acc += __bfloat162float(hp[r]) * e.B[(size_t)c * e.r + r];
    bf16 *o = out + ((size_t)n * P + p) * Cs + g * cout + c;
    *o = __float2bfloat16(__bfloat162float(*o) + e.s * acc);
}

/* ---- backward of the conv block epilogue (the trainer) ----------------------------------- */

/* Backward of block_epilogue (without its add, which the caller passes
 * through): from dout (N, H, W, C) and the forward's raw conv output,
 * statistics (sums NULL: no norm), gamma/beta (sample stride gamma_ns as
 * in epilogue_args), bias and ReLU, writes draw in the raw layout of src
 * (zero elsewhere: the caller clears it), and accumulates dgamma, dbeta,
 * dbias (each may be NULL).  dsums (N, 2, C) is scratch that ends holding
 * each sample's d(beta) (Σ dv), then d(gamma) (Σ dv·xhat): what a FiLM
 * backward (film_args) reads, its dgamma/dbeta left NULL here. */
/* Backward of a skip gate's add, out = … + gain[n, c]·add (epilogue_args
 * add_gain): d(add) += gain·dout, one item per element of the dense
 * (N, H, W, C) gradients (skip_dadd_body); dgain (N, C) = Σ over the
 * pixels of dout·add, one item per (n, c) (skip_dgain_body). */
struct skip_bwd_args {
    const float *dout; /* (N, H, W, C) fp32 */
    float *dadd;       /* (N, H, W, C) fp32, += */
    tview add;         /* the add as stored (bf16) */
    const float *gain; /* (N, C) */
    float *dgain;      /* (N, C), = */
    int N, H, W, C;
};

E2G_HD void skip_dadd_body(const skip_bwd_args &a, size_t i) {
    size_t c = i % a.C, n = i / ((size_t)a.H * a.W * a.C);
    a.dadd[i] += a.gain[n * a.C + c] * a.dout[i];
}

E2G_HD void skip_dgain_body(const skip_bwd_args &a, size_t i) {
    int n = (int)(i / a.C), c = (int)(i % a.C);
    float acc = 0;
    for (int y = 0; y < a.H; y++)
        for (int x = 0; x < a.W; x++)
            acc += a.dout[(((size_t)n * a.H + y) * a.W + x) * a.C + c] *
                   __bfloat162float(a.add.p[view_index(a.add, n, y, x) + c]);
    a.dgain[i] = acc;
}

struct epilogue_bwd_args {
    conv_out src;
    const float *sums, *gamma, *beta, *bias;
    int gamma_ns;
    int relu;
    const float *dout;
    bf16 *draw;
    float *dsums, *dgamma, *dbeta, *dbias;
};

/* What the forward computed at one element: the normalised value xhat
 * (or the biased conv output without a norm) and v, the value ReLU saw. */
E2G_HD void epilogue_value(const epilogue_bwd_args &a, int n, int c, float raw, float *xhat, float *v, float *rstd) {
    if (a.sums) { /* mean and variance from block_stats; a bias before the norm cancels */
        float mean = a.sums[(size_t)n * 2 * a.src.C + c], var = a.sums[(size_t)n * 2 * a.src.C + a.src.C + c];
        *rstd = rsqrt_hd(var + 1e-5f);
        *xhat = (raw - mean) * *rstd;
        *v = *xhat * a.gamma[(size_t)n * a.gamma_ns + c] + a.beta[(size_t)n * a.gamma_ns + c];
    } else {
        *rstd = 1.0f;
        *xhat = *v = raw + (a.bias ? a.bias[c] : 0.0f);
    }
}

/* Pass 1, per thread as stats_accumulate: Σ dv and Σ dv·xhat of pixel p
 * into acc, dv = dout masked by the ReLU. */
E2G_HD void epilogue_bwd_accumulate(const epilogue_bwd_args &a, int n, int g, int p, float *acc) {
    const conv_out &s = a.src;
    int HW = s.H * s.W;
    float f[8];
    bf16x8_to_float(load8(s.p + conv_out_index(s, n, p / s.W, p % s.W, g * 8)), f);
    const float *d = a.dout + ((size_t)n * HW + p) * s.C + g * 8;
    E2G_UNROLL
    for (int i = 0; i < 8; i++) {
        float xhat, v, rstd;
        epilogue_value(a, n, g * 8 + i, f[i], &xhat, &v, &rstd);
        float dv = a.relu && v <= 0.0f ? 0.0f : d[i];
        acc[i] += dv, acc[8 + i] += dv * xhat;
    }
}

/* dgamma, dbeta (with a norm) or dbias (without) of channel c from the
 * per-sample sums. */
E2G_HD void epilogue_bwd_params_body(const epilogue_bwd_args &a, int N, int c) {
    int C = a.src.C;
    float sdv = 0, sdx = 0;
    for (int n = 0; n < N; n++) sdv += a.dsums[(size_t)n * 2 * C + c], sdx += a.dsums[(size_t)n * 2 * C + C + c];
    if (a.sums) {
        if (a.dgamma) a.dgamma[c] += sdx;
        if (a.dbeta) a.dbeta[c] += sdv;
    } else if (a.dbias) {
        a.dbias[c] += sdv;
    }
}

/* Pass 2, item i = 8 channels of one output pixel: the gradient of the raw
 * conv output, in its own layout. */
E2G_HD size_t epilogue_bwd_items(const conv_out &s) { return (size_t)s.N * s.H * s.W * (s.C / 8); }

E2G_HD void epilogue_bwd_apply_body(const epilogue_bwd_args &a, size_t i) {
    const conv_out &s = a.src;
    int G = s.C / 8, HW = s.H * s.W;
    float inv_hw = 1.0f / HW;
    int g = (int)(i % G);
    size_t pix = i / G;
    int p = (int)(pix % HW), n = (int)(pix / HW), y = p / s.W, x = p % s.W;
    size_t at = conv_out_index(s, n, y, x, g * 8);
    float f[8], o[8];
    bf16x8_to_float(load8(s.p + at), f);
    const float *d = a.dout + pix * s.C + g * 8;
    E2G_UNROLL
    for (int j = 0; j < 8; j++) {
        int c = g * 8 + j;
        float xhat, v, rstd;
        epilogue_value(a, n, c, f[j], &xhat, &v, &rstd);
        float dv = a.relu && v <= 0.0f ? 0.0f : d[j];
        if (a.sums) {
            float sdv = a.dsums[(size_t)n * 2 * s.C + c] * inv_hw;
            float sdx = a.dsums[(size_t)n * 2 * s.C + s.C + c] * inv_hw;
            o[j] = a.gamma[(size_t)n * a.gamma_ns + c] * rstd * (dv - sdv - xhat * sdx);
        } else {
            o[j] = dv;
        }
    }
    store8(a.draw + at, float_to_bf16x8(o));
}

/* ---- FiLM (engine/net.h) ------------------------------------------------------------------ */

/* Rows W·c̄_n + b from the context, c̄_n the mean of sample n's T context
 * tokens, as engine/layers.c computes them:
 *  - a FiLM norm (e2g_film_forward/backward): 2C rows, [γ_n; β_n] =
 *    [norm_w; norm_b] + W·c̄_n + b;
 *  - the output's gate (gate 1; e2g_output_gain_forward/backward): C = 3
 *    rows, the photo's gain g_n = 1 + W·c̄_n + b, written to gamma;
 *  - a skip gate (gate 1; e2g_skip_gain_forward/backward): C = the conv's
 *    channels, the gains of its add, written to gamma.
 * Forward: mean (N, C4) = c̄ (film_mean_body), then gamma, beta (N, C)
 * each, sample stride C (film_affine_body).  Backward, from c̄ and each
 * sample's d(gamma), d(beta) (sample stride dns): dw, db += (both or
 * neither), dnorm_w, dnorm_b += (with dw, for a norm), dctx (N, T, C4) +=
 * Wᵀ·d(rows) / T for each token (NULL: no context gradient). */
struct film_args {
    const bf16 *ctx; /* the context rows (N, T, C4), dense */
    int N, T, C4, C; /* C: the norm's channels, or the output's 3 */
    int gate;        /* the output's gate: C rows, no norm, no beta */
    const float *w, *b, *norm_w, *norm_b; /* W (rows, C4): γ rows then β rows; b (rows); the norm's (C) */
    float *mean;                          /* c̄ (N, C4) */
    float *gamma, *beta;                  /* forward */
    const float *dgamma, *dbeta;          /* backward */
    int dns;
    float *dw, *db, *dnorm_w, *dnorm_b, *dctx;
};

/* The rows of W: 2C for a norm, C for the gate. */
E2G_HD int film_rows(const film_args &a) { return a.gate ? a.C : 2 * a.C; }

/* Item i over N·C4: c̄ of sample i / C4, component i % C4. */
E2G_HD void film_mean_body(const film_args &a, size_t i) {
    size_t n = i / a.C4, k = i % a.C4;
    float s = 0;
    for (int t = 0; t < a.T; t++) s += __bfloat162float(a.ctx[(n * a.T + t) * a.C4 + k]);
    a.mean[i] = s / a.T;
}

/* Item i over N·rows: row r = i % rows of sample n = i / rows. */
E2G_HD void film_affine_body(const film_args &a, size_t i) {
    int R = film_rows(a), n = (int)(i / R), r = (int)(i % R);
    const float *m = a.mean + (size_t)n * a.C4, *w = a.w + (size_t)r * a.C4;
    float acc = a.b[r];
    for (int k = 0; k < a.C4; k++) acc += w[k] * m[k];
    if (r < a.C) a.gamma[(size_t)n * a.C + r] = (a.gate ? 1.0f : a.norm_w[r]) + acc;
    else a.beta[(size_t)n * a.C + r - a.C] = a.norm_b[r - a.C] + acc;
}

/* d(row r) of sample n. */
E2G_HD float film_daffine(const film_args &a, int n, int r) {
    return r < a.C ? a.dgamma[(size_t)n * a.dns + r] : a.dbeta[(size_t)n * a.dns + r - a.C];
}

/* Item i over rows·(C4 + 1): W's entry (r, k) for k < C4, else the biases
 * of row r (b's, and a norm's own, which its rows add to). */
E2G_HD void film_param_grad_body(const film_args &a, size_t i) {
    int r = (int)(i / (a.C4 + 1)), k = (int)(i % (a.C4 + 1));
    float acc = 0;
    for (int n = 0; n < a.N; n++) acc += film_daffine(a, n, r) * (k < a.C4 ? a.mean[(size_t)n * a.C4 + k] : 1.0f);
    if (k < a.C4) {
        a.dw[(size_t)r * a.C4 + k] += acc;
    } else {
        a.db[r] += acc;
        if (a.gate) return;
        if (r < a.C) a.dnorm_w[r] += acc;
        else a.dnorm_b[r - a.C] += acc;
    }
}

/* Item i over N·T·C4: dctx[i] += (Wᵀ·d(rows)_n)_k / T. */
E2G_HD void film_context_grad_body(const film_args &a, size_t i) {
    int k = (int)(i % a.C4), n = (int)(i / ((size_t)a.T * a.C4));
    float acc = 0;
    for (int r = 0; r < film_rows(a); r++) acc += a.w[(size_t)r * a.C4 + k] * film_daffine(a, n, r);
    a.dctx[i] += acc / a.T;
}

/* ---- padding, output layer, GELU --------------------------------------------------------- */

/* g (N, H, W, C) item i += the gradient of the padded dxp (N, H+2p, W+2p,
 * C) folded back through reflect padding. */
E2G_HD void fold_grad_body(float *g, const bf16 *dxp, int H, int W, int C, int pad, size_t i) {
    int Hp = H + 2 * pad, Wp = W + 2 * pad;
    int c = (int)(i % C);
    size_t pix = i / C;
    int x = (int)(pix % W), y = (int)(pix / W % H), n = (int)(pix / ((size_t)W * H));
    /* padded positions whose reflection is (y, x): itself and the mirrors */
    int ys[3] = {y, -y, 2 * (H - 1) - y}, xs[3] = {x, -x, 2 * (W - 1) - x};
    float acc = 0;
    for (int a = 0; a < 3; a++) {
        if (a && (ys[a] == y || ys[a] < -pad || ys[a] >= H + pad || (a == 2 && ys[a] == ys[1]))) continue;
        for (int b = 0; b < 3; b++) {
            if (b && (xs[b] == x || xs[b] < -pad || xs[b] >= W + pad || (b == 2 && xs[b] == xs[1]))) continue;
            acc += __bfloat162float(dxp[(((size_t)n * Hp + ys[a] + pad) * Wp + xs[b] + pad) * C + c]);
        }
    }
    g[i] += acc;
}

/* L1 through the output layer, pixel p: dout (pixels, 8) bf16 with
 * channels 3..7 zero, g = λ/(pixels·3); acc[c] += the bias gradient,
 * acc[3] += Σ|y − t|, and with the image x (FiLM's gate; NULL: none)
 * acc[4 + c] += the gain's gradient, d(logit)·atanh(clamp(x)). */
E2G_HD void output_l1_body(bf16 *dout, const float *y, const float *t, const float *x, float g, size_t p,
                           float *acc) {
    float o[8] = {0};
    for (int c = 0; c < 3; c++) {
        float yv = y[p * 3 + c], d = yv - t[p * 3 + c];
        float dy = d > 0 ? g : (d < 0 ? -g : 0.0f);
        o[c] = dy * (1.0f - yv * yv);
        acc[c] += o[c], acc[3] += fabsf(d);
        if (x) acc[4 + c] += o[c] * output_photo(x[p * 3 + c]);
    }
    store8(dout + p * 8, float_to_bf16x8(o));
}

/* Item i = 8 values. */
E2G_HD void gelu_forward_body(bf16 *out, const bf16 *in, size_t i) {
    float f[8];
    bf16x8_to_float(load8(in + i * 8), f);
    E2G_UNROLL
    for (int j = 0; j < 8; j++) f[j] = gelu_tanh(f[j]);
    store8(out + i * 8, float_to_bf16x8(f));
}

E2G_HD void gelu_backward_body(bf16 *dh, const bf16 *pre, size_t i) {
    float f[8], g[8];
    bf16x8_to_float(load8(pre + i * 8), f);
    bf16x8_to_float(load8(dh + i * 8), g);
    E2G_UNROLL
    for (int j = 0; j < 8; j++) g[j] *= gelu_tanh_grad(f[j]);
    store8(dh + i * 8, float_to_bf16x8(g));
}

/* ---- weight gradients -------------------------------------------------------------------- */

/* The adjoint of pack_body without terms, item i over dst (cout, cin, k, k)
 * fp32 OIHW, from src plain (cout_pad, k, k, cin_pad) or phase
 * (4·cout_pad, 2, 2, cin). */
E2G_HD void unpack_weight_grad_body(float *dst, const bf16 *src, int cin, int k, int cout_pad, int cin_pad,
                                    int phase, size_t i) {
    int kx = (int)(i % k), ky = (int)(i / k % k), ci = (int)(i / ((size_t)k * k) % cin);
    int o = (int)(i / ((size_t)k * k * cin));
    float g = 0;
    if (!phase) {
        g = __bfloat162float(src[(((size_t)o * k + ky) * k + kx) * cin_pad + ci]);
    } else {
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                size_t row = (size_t)(2 * a + b) * cout_pad + o;
                g += __bfloat162float(src[((row * 2 + tap_group(a, ky)) * 2 + tap_group(b, kx)) * cin + ci]);
            }
    }
    dst[i] = g;
}

/* LoRA through a merged W + s·B·A, item i over r·K + cout·r:
 * dA (r, K) += s·Bᵀ·dW, then dB (cout, r) += s·dW·Aᵀ. */
E2G_HD void lora_grads_body(float *dA, float *dB, const float *dW, const float *A, const float *B, int r, int cout,
                            int K, float s, size_t i) {
    size_t nA = (size_t)r * K;
    float acc = 0;
    if (i < nA) {
        int q = (int)(i % K), rr = (int)(i / K);
        for (int o = 0; o < cout; o++) acc += B[(size_t)o * r + rr] * dW[(size_t)o * K + q];
        dA[i] += s * acc;
    } else {
        size_t j = i - nA;
        int rr = (int)(j % r), o = (int)(j / r);
        for (int q = 0; q < K; q++) acc += dW[(size_t)o * K + q] * A[(size_t)rr * K + q];
        dB[j] += s * acc;
    }
}

/* ---- context rows, Adam ------------------------------------------------------------------- */

/* dst (N, E) = src[rows[n]] (rows NULL: row 0); and the adjoint. */
E2G_HD void gather_rows_body(bf16 *dst, const float *src, const int *rows, size_t E, size_t i) {
    int n = (int)(i / E);
    dst[i] = __float2bfloat16(src[(size_t)(rows ? rows[n] : 0) * E + i % E]);
}

E2G_HD void scatter_add_rows_body(float *dst, const bf16 *src, const int *rows, size_t E, size_t i) {
    int n = (int)(i / E);
    atomic_addf(&dst[(size_t)(rows ? rows[n] : 0) * E + i % E], __bfloat162float(src[i]));
}

/* Adam as engine/adam.c (torch.optim.Adam): step = lr / bc1, inv_sqrt_bc2
 * = 1/√bc2 from the host. */
E2G_HD void adam_body(float *p, const float *g, float *m, float *v, float step, float b1, float b2,
                      float inv_sqrt_bc2, float eps, size_t i) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi, v[i] = vi;
    p[i] -= step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
}

}  // namespace e2g

#endif
