/* test_cuda_bodies.cpp — the CUDA kernels' per-element bodies
 * (kernels/cuda_bodies.cuh) run on the CPU, without a GPU, against the
 * engine's fp32 ops: the conv block epilogue (instance norm + ReLU + add,
 * bias, reflect padding into a padded view, the ×2-upsample phase gather),
 * the statistics behind it (shifted sums, |mean| ≫ std), the input and
 * output layers, bias + GELU, weight packing (plain, padded channels,
 * phase kernels, merged LoRA terms) with cuDNN's convolution emulated by a
 * plain loop, the unmerged LoRA expand, and the trainer's bodies: epilogue
 * backward, reflect-pad fold, output + L1, GELU backward, the packing's
 * adjoint (exact, on integers), LoRA factor gradients, context rows, Adam;
 * FiLM: the per-sample norm affine (forward and backward) and the
 * epilogue reading it, the output gate's gains, the output layer reading
 * them and their backward; the skip gates' gains, the epilogue scaling its
 * add by them and their backward.
 * Built when nvcc was found (C++, CUDA include path; no CUDA runtime
 * call). Tolerances: bf16 keeps 8 significant bits (2⁻⁹ ≈ 2e-3 per
 * rounding); a result stored as bf16 after a few roundings is held to
 * 1e-2 of the reference's largest value, fp32-only paths to 1e-5. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "adam.h"
#include "common.h"
#include "conv.h"
#include "layers.h"
#include "ops.h"
#include "testutil.h"
}

#include "cuda_bodies.cuh"

using namespace e2g;

typedef std::vector<bf16> bvec;
typedef std::vector<float> fvec;

static fvec rnd(size_t n, unsigned seed, float lo = -1, float hi = 1) {
    fvec v(n);
    fill_random(v.data(), n, seed);
    for (float &x : v) x = lo + (hi - lo) * (x + 1) * 0.5f;
    return v;
}

/* Rounds through bf16 in place: what the device holds. */
static void round_bf16(fvec &v) {
    for (float &x : v) x = __bfloat162float(__float2bfloat16(x));
}

static bvec to_bf16(const fvec &v) {
    bvec b(v.size());
    for (size_t i = 0; i < v.size(); i++) b[i] = __float2bfloat16(v[i]);
    return b;
}

static fvec to_f32(const bvec &b) {
    fvec v(b.size());
    for (size_t i = 0; i < b.size(); i++) v[i] = __bfloat162float(b[i]);
    return v;
}

static void expect(const char *what, const float *got, const float *want, size_t n, double tol) {
    double e = rel_error(what, got, want, n, tol);
    ck_assert_msg(e <= tol, "%s: max rel err %.3g > %.1g", what, e, tol);
}

/* block_stats on the host: every thread's work done by one loop, the
 * block's reduction a sequential sum, then the final kernel's body. */
static fvec host_stats(const conv_out &s) {
    fvec sums((size_t)s.N * 2 * s.C, 0.0f);
    for (int n = 0; n < s.N; n++)
        for (int g = 0; g < s.C / 8; g++) {
            float K[8], acc[16] = {0};
            stats_shift(s, n, g, K);
            for (int p = 0; p < s.H * s.W; p++) stats_accumulate(s, n, g, p, K, acc);
            for (int i = 0; i < 8; i++) {
                atomic_addf(&sums[(size_t)n * 2 * s.C + g * 8 + i], acc[i]);
                atomic_addf(&sums[(size_t)n * 2 * s.C + s.C + g * 8 + i], acc[8 + i]);
            }
        }
    for (int i = 0; i < s.N * s.C; i++) stats_final_body(sums.data(), s, i);
    return sums;
}

static void host_epilogue(const epilogue_args &a) {
    for (size_t i = 0; i < epilogue_items(a.dst); i++) epilogue_body(a, i);
}

/* block_epilogue_backward on the host: the per-thread sums pass (its
 * block reduction a sequential sum), the parameter pass, the apply pass. */
static void host_epilogue_bwd(const epilogue_bwd_args &a) {
    const conv_out &s = a.src;
    for (int n = 0; n < s.N; n++)
        for (int g = 0; g < s.C / 8; g++) {
            float acc[16] = {0};
            for (int p = 0; p < s.H * s.W; p++) epilogue_bwd_accumulate(a, n, g, p, acc);
            for (int i = 0; i < 8; i++) {
                a.dsums[(size_t)n * 2 * s.C + g * 8 + i] += acc[i];
                a.dsums[(size_t)n * 2 * s.C + s.C + g * 8 + i] += acc[8 + i];
            }
        }
    for (int c = 0; c < s.C; c++) epilogue_bwd_params_body(a, s.N, c);
    for (size_t i = 0; i < epilogue_bwd_items(s); i++) epilogue_bwd_apply_body(a, i);
}

static void host_pack(const pack_args &a) {
    for (size_t i = 0; i < pack_items(a); i++) pack_body(a, i);
}

/* cuDNN's cross-correlation emulated: x (N, Hi, Wi, Ci) with zero padding
 * p, filter KRSC (K, R, R, Ci), stride s → (N, Ho, Wo, K), bf16 output with
 * fp32 accumulation as CUDNN_TENSOR_OP_MATH gives. */
static bvec conv_krsc(const fvec &x, int N, int Hi, int Wi, int Ci, const bvec &w, int K, int R, int s, int p,
                      int *Ho, int *Wo) {
    *Ho = (Hi + 2 * p - R) / s + 1, *Wo = (Wi + 2 * p - R) / s + 1;
    fvec wf = to_f32(w);
    bvec y((size_t)N * *Ho * *Wo * K);
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < *Ho; oy++)
            for (int ox = 0; ox < *Wo; ox++)
                for (int k = 0; k < K; k++) {
                    float acc = 0;
                    for (int ry = 0; ry < R; ry++)
                        for (int rx = 0; rx < R; rx++) {
                            int iy = oy * s + ry - p, ix = ox * s + rx - p;
                            if (iy < 0 || iy >= Hi || ix < 0 || ix >= Wi) continue;
                            const float *xp = &x[(((size_t)n * Hi + iy) * Wi + ix) * Ci];
                            const float *wp = &wf[(((size_t)k * R + ry) * R + rx) * Ci];
                            for (int c = 0; c < Ci; c++) acc += xp[c] * wp[c];
                        }
                    y[(((size_t)n * *Ho + oy) * *Wo + ox) * K + k] = __float2bfloat16(acc);
                }
    return y;
}

/* ---- the conv block epilogue ------------------------------------------------------------ */

/* Instance norm + ReLU + a skip add read from a padded view, on a raw
 * output with more stored channels than the block uses (Cs > C). */
START_TEST(test_epilogue_norm_relu_add) {
    const int N = 2, H = 6, W = 10, C = 16, Cs = 24, HW = H * W;
    fvec raw = rnd((size_t)N * HW * Cs, 1, -2, 4);
    round_bf16(raw);
    bvec raw16 = to_bf16(raw);
    fvec gamma = rnd(C, 2, 0.5f, 1.5f), beta = rnd(C, 3, -0.5f, 0.5f);
    /* the skip: stored with pad 1, border garbage the epilogue must not read */
    fvec addp = rnd((size_t)N * (H + 2) * (W + 2) * C, 4);
    round_bf16(addp);
    bvec add16 = to_bf16(addp);
    conv_out src = {raw16.data(), N, H, W, C, Cs, 0};
    fvec sums = host_stats(src);

    fvec x((size_t)N * HW * C), ref(x.size()), mean((size_t)N * C), rstd((size_t)N * C);
    for (size_t p = 0; p < (size_t)N * HW; p++)
        for (int c = 0; c < C; c++) x[p * C + c] = raw[p * Cs + c];
    e2g_instancenorm_forward(ref.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(), 0, 1, N, HW, C);
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++)
                for (int c = 0; c < C; c++)
                    ref[(((size_t)n * H + y) * W + xx) * C + c] +=
                        addp[(((size_t)n * (H + 2) + y + 1) * (W + 2) + xx + 1) * C + c];
    fvec var((size_t)N * C), our_mean((size_t)N * C), our_var((size_t)N * C);
    for (int k = 0; k < N * C; k++) {
        var[k] = 1.0f / (rstd[k] * rstd[k]) - 1e-5f;
        our_mean[k] = sums[(size_t)(k / C) * 2 * C + k % C], our_var[k] = sums[(size_t)(k / C) * 2 * C + C + k % C];
    }
    expect("stats mean", our_mean.data(), mean.data(), mean.size(), 1e-5);
    expect("stats variance", our_var.data(), var.data(), var.size(), 1e-4);

    bvec out((size_t)N * HW * C);
    epilogue_args a = {};
    a.src = src, a.sums = sums.data(), a.gamma = gamma.data(), a.beta = beta.data(), a.relu = 1;
    a.bias = gamma.data(); /* ignored under a norm */
    a.add = {add16.data(), N, H, W, C, 1, 0};
    a.dst = {out.data(), N, H, W, C, 0, 0};
    host_epilogue(a);
    fvec got = to_f32(out);
    expect("epilogue norm+relu+add", got.data(), ref.data(), ref.size(), 1e-2);
}
END_TEST

/* Shifted sums keep the variance when |mean| ≫ std. */
START_TEST(test_stats_large_mean) {
    const int N = 1, H = 32, W = 32, C = 8, HW = H * W;
    fvec x = rnd((size_t)N * HW * C, 5, 296, 304);
    round_bf16(x);
    bvec x16 = to_bf16(x);
    conv_out src = {x16.data(), N, H, W, C, C, 0};
    fvec sums = host_stats(src), want(C), got(C);
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int p = 0; p < HW; p++) s1 += x[(size_t)p * C + c];
        double m = s1 / HW;
        for (int p = 0; p < HW; p++) s2 += (x[(size_t)p * C + c] - m) * (x[(size_t)p * C + c] - m);
        want[c] = (float)(s2 / HW), got[c] = sums[C + c];
    }
    expect("variance at mean 300", got.data(), want.data(), C, 1e-4);
}
END_TEST

/* Bias, no norm, no ReLU, written reflect-padded by 3 into a view whose
 * samples are further apart than packed (ns): pad_reflect_forward. */
START_TEST(test_epilogue_reflect_pad) {
    const int N = 2, H = 9, W = 7, C = 8, P = 3;
    const size_t packed = (size_t)(H + 2 * P) * (W + 2 * P) * C, ns = packed + 64;
    fvec x = rnd((size_t)N * H * W * C, 6);
    round_bf16(x);
    bvec x16 = to_bf16(x);
    fvec bias = rnd(C, 7);
    bvec out(N * ns, __float2bfloat16(7.0f));
    epilogue_args a = {};
    a.src = {x16.data(), N, H, W, C, C, 0};
    a.bias = bias.data();
    a.dst = {out.data(), N, H, W, C, P, ns};
    host_epilogue(a);
    fvec biased(x.size()), ref((size_t)N * packed), got((size_t)N * packed);
    for (size_t i = 0; i < x.size(); i++) biased[i] = x[i] + bias[i % C];
    e2g_pad_reflect_forward(ref.data(), biased.data(), N, H, W, C, P);
    for (int n = 0; n < N; n++) {
        for (size_t i = 0; i < packed; i++) got[n * packed + i] = __bfloat162float(out[n * ns + i]);
        for (size_t i = packed; i < ns; i++)
            ck_assert_msg(__bfloat162float(out[n * ns + i]) == 7.0f, "wrote between samples at %zu", i);
    }
    expect("epilogue bias + reflect pad 3", got.data(), ref.data(), ref.size(), 1e-2);
}
END_TEST

/* The ×2 upsample fold: phase kernels packed from the 3×3 weights, one 2×2
 * convolution with pad 1 (emulated), the epilogue's phase gather + bias:
 * upconv2x_forward. */
START_TEST(test_upsample_phase) {
    const int N = 2, H = 5, W = 4, cin = 16, cout = 8;
    fvec x = rnd((size_t)N * H * W * cin, 8);
    round_bf16(x);
    fvec w = rnd((size_t)cout * cin * 9, 9, -0.2f, 0.2f), b = rnd(cout, 10);
    pack_args pa = {};
    bvec wp(16 * (size_t)cout * cin);
    pa.dst = wp.data(), pa.base = w.data(), pa.cout = cout, pa.cin = cin, pa.k = 3, pa.cout_pad = cout;
    pa.cin_pad = cin, pa.phase = 1;
    ck_assert_uint_eq(pack_items(pa), wp.size());
    host_pack(pa);
    int Hg, Wg;
    bvec grid = conv_krsc(x, N, H, W, cin, wp, 4 * cout, 2, 1, 1, &Hg, &Wg);
    ck_assert_int_eq(Hg, H + 1);
    ck_assert_int_eq(Wg, W + 1);
    bvec out((size_t)N * 4 * H * W * cout);
    epilogue_args a = {};
    a.src = {grid.data(), N, 2 * H, 2 * W, cout, 4 * cout, 1};
    a.bias = b.data();
    a.dst = {out.data(), N, 2 * H, 2 * W, cout, 0, 0};
    host_epilogue(a);
    fvec ref(out.size()), got = to_f32(out);
    e2g_upconv2x_forward(ref.data(), x.data(), w.data(), b.data(), N, H, W, cin, cout);
    expect("upsample+conv by phases", got.data(), ref.data(), ref.size(), 2e-2);
}
END_TEST

/* The input layer (prep_input: 3 → 8 channels, reflect pad 3), a 7×7 conv
 * with cin padded 3 → 8 as packed, norm + ReLU: conv2d_forward + norm. */
START_TEST(test_input_layer) {
    const int N = 2, H = 16, W = 8, cout = 16, P = 3, HW = H * W;
    fvec x = rnd((size_t)N * HW * 3, 11);
    tview in = {NULL, N, H, W, 8, P, 0};
    bvec in16(prep_input_items(in) * 8);
    in.p = in16.data();
    for (size_t i = 0; i < prep_input_items(in); i++) prep_input_body(in, x.data(), i);
    fvec inf = to_f32(in16), padref((size_t)N * (H + 2 * P) * (W + 2 * P) * 3);
    e2g_pad_reflect_forward(padref.data(), x.data(), N, H, W, 3, P);
    for (size_t p = 0; p < padref.size() / 3; p++)
        for (int c = 0; c < 8; c++) {
            float want = c < 3 ? __bfloat162float(__float2bfloat16(padref[p * 3 + c])) : 0.0f;
            ck_assert_msg(inf[p * 8 + c] == want, "prep_input pixel %zu channel %d: %g, want %g", p, c, inf[p * 8 + c], want);
        }
    fvec w = rnd((size_t)cout * 3 * 49, 12, -0.3f, 0.3f), gamma = rnd(cout, 13, 0.5f, 1.5f), beta = rnd(cout, 14);
    pack_args pa = {};
    bvec wp((size_t)cout * 49 * 8);
    pa.dst = wp.data(), pa.base = w.data(), pa.cout = cout, pa.cin = 3, pa.k = 7, pa.cout_pad = cout, pa.cin_pad = 8;
    host_pack(pa);
    int Ho, Wo;
    bvec raw = conv_krsc(inf, N, H + 2 * P, W + 2 * P, 8, wp, cout, 7, 1, 0, &Ho, &Wo);
    ck_assert_int_eq(Ho, H);
    ck_assert_int_eq(Wo, W);
    conv_out src = {raw.data(), N, H, W, cout, cout, 0};
    fvec sums = host_stats(src);
    bvec out((size_t)N * HW * cout);
    epilogue_args a = {};
    a.src = src, a.sums = sums.data(), a.gamma = gamma.data(), a.beta = beta.data(), a.relu = 1;
    a.dst = {out.data(), N, H, W, cout, 0, 0};
    host_epilogue(a);
    e2g_conv_shape cs = {3, cout, 7, 1, 3, E2G_PAD_REFLECT};
    fvec conv((size_t)N * HW * cout), ref(conv.size()), mean((size_t)N * cout), rstd((size_t)N * cout);
    e2g_conv2d_forward(conv.data(), x.data(), w.data(), NULL, N, H, W, &cs);
    e2g_instancenorm_forward(ref.data(), mean.data(), rstd.data(), conv.data(), gamma.data(), beta.data(), 0, 1, N, HW, cout);
    fvec got = to_f32(out);
    expect("input layer: prep + 7x7 + norm + relu", got.data(), ref.data(), ref.size(), 2e-2);
}
END_TEST

/* The output layer: reflect pad through an epilogue with nothing else to
 * do (as the engine pads), a 7×7 conv whose 3 outputs are padded to 8 rows,
 * then tanh(o + b + atanh(x)): conv2d_forward + output_forward. */
START_TEST(test_output_layer) {
    const int N = 1, H = 8, W = 12, cin = 16, P = 3, HW = H * W;
    fvec x = rnd((size_t)N * HW * cin, 15);
    round_bf16(x);
    bvec x16 = to_bf16(x), xp((size_t)N * (H + 2 * P) * (W + 2 * P) * cin);
    epilogue_args pad = {};
    pad.src = {x16.data(), N, H, W, cin, cin, 0};
    pad.dst = {xp.data(), N, H, W, cin, P, 0};
    host_epilogue(pad);
    fvec w = rnd((size_t)3 * cin * 49, 16, -0.1f, 0.1f), b = rnd(3, 17), img = rnd((size_t)N * HW * 3, 18);
    bvec wp((size_t)8 * 49 * cin);
    pack_args pa = {};
    pa.dst = wp.data(), pa.base = w.data(), pa.cout = 3, pa.cin = cin, pa.k = 7, pa.cout_pad = 8, pa.cin_pad = cin;
    host_pack(pa);
    for (size_t i = (size_t)3 * 49 * cin; i < wp.size(); i++)
        ck_assert_msg(__bfloat162float(wp[i]) == 0.0f, "padded output row not zero at %zu", i);
    int Ho, Wo;
    bvec raw = conv_krsc(to_f32(xp), N, H + 2 * P, W + 2 * P, cin, wp, 8, 7, 1, 0, &Ho, &Wo);
    e2g_conv_shape cs = {cin, 3, 7, 1, 3, E2G_PAD_REFLECT};
    fvec o((size_t)N * HW * 3), ref(o.size()), got(o.size());
    e2g_conv2d_forward(o.data(), x.data(), w.data(), b.data(), N, H, W, &cs);
    for (int residual = 0; residual < 2; residual++) {
        e2g_output_forward(ref.data(), o.data(), img.data(), residual, o.size());
        output_args oa = {got.data(), raw.data(), 8, b.data(), img.data(), residual, NULL, N, (size_t)HW};
        for (size_t i = 0; i < o.size(); i++) output_body(oa, i);
        expect(residual ? "output layer, residual" : "output layer, plain", got.data(), ref.data(), ref.size(), 1e-2);
    }
}
END_TEST

/* A stride-2, zero-padded 3×3 conv with bias and no norm. */
START_TEST(test_stride2_conv) {
    const int N = 2, H = 12, W = 10, cin = 16, cout = 24;
    fvec x = rnd((size_t)N * H * W * cin, 19);
    round_bf16(x);
    fvec w = rnd((size_t)cout * cin * 9, 20, -0.2f, 0.2f), b = rnd(cout, 21);
    bvec wp((size_t)cout * 9 * cin);
    pack_args pa = {};
    pa.dst = wp.data(), pa.base = w.data(), pa.cout = cout, pa.cin = cin, pa.k = 3, pa.cout_pad = cout, pa.cin_pad = cin;
    host_pack(pa);
    int Ho, Wo;
    bvec raw = conv_krsc(x, N, H, W, cin, wp, cout, 3, 2, 1, &Ho, &Wo);
    bvec out((size_t)N * Ho * Wo * cout);
    epilogue_args a = {};
    a.src = {raw.data(), N, Ho, Wo, cout, cout, 0};
    a.bias = b.data(), a.relu = 1;
    a.dst = {out.data(), N, Ho, Wo, cout, 0, 0};
    host_epilogue(a);
    e2g_conv_shape cs = {cin, cout, 3, 2, 1, E2G_PAD_ZERO};
    ck_assert_int_eq(e2g_conv2d_out_size(H, &cs), Ho);
    fvec ref((size_t)N * Ho * Wo * cout), got = to_f32(out);
    e2g_conv2d_forward(ref.data(), x.data(), w.data(), b.data(), N, H, W, &cs);
    e2g_relu_forward(ref.data(), ref.data(), ref.size());
    expect("3x3 stride 2 + bias + relu", got.data(), ref.data(), ref.size(), 1e-2);
}
END_TEST

/* ---- LoRA ------------------------------------------------------------------------------------- */

/* W + Σ s·B·A packed by the kernel equals W merged in fp32 then packed:
 * plain and phase. */
START_TEST(test_pack_merged) {
    const int cout = 16, cin = 8, k = 3, r1 = 4, r2 = 2, K = cin * k * k;
    fvec w = rnd((size_t)cout * K, 22, -0.3f, 0.3f);
    fvec A1 = rnd((size_t)r1 * K, 23, -0.3f, 0.3f), B1 = rnd((size_t)cout * r1, 24, -0.3f, 0.3f);
    fvec A2 = rnd((size_t)r2 * K, 25, -0.3f, 0.3f), B2 = rnd((size_t)cout * r2, 26, -0.3f, 0.3f);
    const float s1 = 0.75f, s2 = -1.5f;
    fvec merged(w);
    for (int o = 0; o < cout; o++)
        for (int q = 0; q < K; q++) {
            double d1 = 0, d2 = 0;
            for (int r = 0; r < r1; r++) d1 += B1[o * r1 + r] * A1[(size_t)r * K + q];
            for (int r = 0; r < r2; r++) d2 += B2[o * r2 + r] * A2[(size_t)r * K + q];
            merged[(size_t)o * K + q] += (float)(s1 * d1 + s2 * d2);
        }
    for (int phase = 0; phase < 2; phase++) {
        pack_args a = {}, m = {};
        a.cout = cout, a.cin = cin, a.k = k, a.cout_pad = cout, a.cin_pad = phase ? cin : 16, a.phase = phase;
        m = a;
        bvec got(pack_items(a)), want(pack_items(a));
        a.dst = got.data(), a.base = w.data(), a.n_terms = 2;
        a.terms[0] = {A1.data(), B1.data(), r1, s1};
        a.terms[1] = {A2.data(), B2.data(), r2, s2};
        m.dst = want.data(), m.base = merged.data();
        host_pack(a);
        host_pack(m);
        fvec g = to_f32(got), wt = to_f32(want);
        expect(phase ? "merged pack, phase" : "merged pack, plain (cin padded)", g.data(), wt.data(), g.size(), 8e-3);
    }
}
END_TEST

/* The grouped expand: out += s·h·Bᵀ per sample from its table entry, phase
 * groups, a sample without a term, channels beyond groups·cout left alone. */
START_TEST(test_lora_expand) {
    const int N = 3, cout = 8, groups = 4, Cs = 40, R = 8, r = 5;
    const size_t P = 10, per = P * groups * R;
    fvec h = rnd(3 * per, 27);
    round_bf16(h);
    bvec h16 = to_bf16(h);
    fvec B0 = rnd((size_t)cout * r, 28), B2 = rnd((size_t)cout * r, 29);
    lora_entry table[N] = {};
    table[0] = {NULL, B0.data(), 0.7f, r, R, per};     /* h of sample 0 at per */
    table[1] = {NULL, NULL, 0.0f, 0, 0, 0};            /* no term */
    table[2] = {NULL, B2.data(), -1.2f, r, R, 2 * per}; /* at 2·per */
    fvec out = rnd((size_t)N * P * Cs, 30);
    round_bf16(out);
    bvec out16 = to_bf16(out);
    for (size_t i = 0; i < (size_t)N * P * groups * cout; i++)
        lora_conv_expand_body(out16.data(), Cs, cout, groups, h16.data(), table, P, i);
    fvec ref(out);
    for (int n = 0; n < N; n++) {
        const lora_entry &e = table[n];
        if (!e.B) continue;
        for (size_t p = 0; p < P; p++)
            for (int g = 0; g < groups; g++)
                for (int c = 0; c < cout; c++) {
                    double acc = 0;
                    for (int k = 0; k < e.r; k++) acc += h[e.h_off + (p * groups + g) * R + k] * e.B[c * e.r + k];
                    ref[((size_t)n * P + p) * Cs + g * cout + c] += (float)(e.s * acc);
                }
    }
    fvec got = to_f32(out16);
    expect("lora conv expand", got.data(), ref.data(), ref.size(), 1e-2);
    for (size_t p = 0; p < (size_t)N * P; p++)
        for (int c = groups * cout; c < Cs; c++) ck_assert(got[p * Cs + c] == out[p * Cs + c]);
    for (size_t i = P * Cs; i < 2 * P * Cs; i++) ck_assert(got[i] == out[i]); /* sample 1 */
}
END_TEST

/* ---- transformer pieces -------------------------------------------------------------------- */

START_TEST(test_bias_gelu) {
    const size_t M = 10;
    const int C = 24;
    fvec x = rnd(M * C, 31, -4, 4), b = rnd(C, 32);
    round_bf16(x);
    bvec x16 = to_bf16(x);
    for (size_t i = 0; i < M * C / 8; i++) bias_act_body(x16.data(), b.data(), 1, C, i);
    fvec ref(x.size()), got = to_f32(x16);
    for (size_t i = 0; i < x.size(); i++) ref[i] = x[i] + b[i % C];
    e2g_gelu_forward(ref.data(), ref.data(), ref.size());
    expect("bias + gelu", got.data(), ref.data(), ref.size(), 1e-2);
    bvec g16 = to_bf16(x), o16(x.size());
    for (size_t i = 0; i < M * C / 8; i++) gelu_forward_body(o16.data(), g16.data(), i);
    fvec ref2(x.size()), got2 = to_f32(o16);
    e2g_gelu_forward(ref2.data(), x.data(), x.size());
    expect("gelu (trainer)", got2.data(), ref2.data(), ref2.size(), 1e-2);
}
END_TEST

/* ---- the trainer's bodies ------------------------------------------------------------------- */

/* Epilogue backward, norm + ReLU and bias-only: instancenorm_backward
 * through relu_backward. */
START_TEST(test_epilogue_backward) {
    const int N = 2, H = 6, W = 8, C = 16, HW = H * W;
    fvec raw = rnd((size_t)N * HW * C, 33, -2, 3);
    round_bf16(raw);
    bvec raw16 = to_bf16(raw);
    fvec gamma = rnd(C, 34, 0.5f, 1.5f), beta = rnd(C, 35), bias = rnd(C, 36), dout = rnd(raw.size(), 37);
    conv_out src = {raw16.data(), N, H, W, C, C, 0};
    fvec sums = host_stats(src);
    for (int norm = 1; norm >= 0; norm--) {
        fvec dsums((size_t)N * 2 * C, 0.0f), dg(C, 0.0f), db(C, 0.0f), dbias(C, 0.0f);
        bvec draw(raw.size());
        epilogue_bwd_args a = {};
        a.src = src, a.relu = 1, a.dout = dout.data(), a.draw = draw.data(), a.dsums = dsums.data();
        if (norm)
            a.sums = sums.data(), a.gamma = gamma.data(), a.beta = beta.data(), a.dgamma = dg.data(), a.dbeta = db.data();
        else
            a.bias = bias.data(), a.dbias = dbias.data();
        host_epilogue_bwd(a);
        fvec out(raw.size()), dv(raw.size(), 0.0f), dx(raw.size(), 0.0f), rdg(C, 0.0f), rdb(C, 0.0f);
        fvec mean((size_t)N * C), rstd((size_t)N * C), got = to_f32(draw);
        if (norm) {
            e2g_instancenorm_forward(out.data(), mean.data(), rstd.data(), raw.data(), gamma.data(), beta.data(), 0, 1, N, HW, C);
            e2g_relu_backward(dv.data(), dout.data(), out.data(), out.size());
            e2g_instancenorm_backward(dx.data(), rdg.data(), rdb.data(), dv.data(), raw.data(), mean.data(), rstd.data(),
                                  gamma.data(), 0, N, HW, C);
            expect("epilogue backward: draw (norm)", got.data(), dx.data(), dx.size(), 2e-2);
            expect("epilogue backward: dgamma", dg.data(), rdg.data(), C, 1e-3);
            expect("epilogue backward: dbeta", db.data(), rdb.data(), C, 1e-3);
        } else {
            for (size_t i = 0; i < raw.size(); i++) out[i] = fmaxf(raw[i] + bias[i % C], 0.0f);
            e2g_relu_backward(dv.data(), dout.data(), out.data(), out.size());
            for (size_t i = 0; i < raw.size(); i++) rdb[i % C] += dv[i];
            expect("epilogue backward: draw (bias)", got.data(), dv.data(), dv.size(), 1e-2);
            expect("epilogue backward: dbias", dbias.data(), rdb.data(), C, 1e-4);
        }
    }
}
END_TEST

/* FiLM: the epilogue with a per-sample affine (gamma_ns = C), forward and
 * backward, against instancenorm with per_sample; the per-sample
 * d(gamma), d(beta) are the backward's dsums. */
START_TEST(test_epilogue_per_sample) {
    const int N = 3, H = 4, W = 6, C = 16, HW = H * W;
    fvec raw = rnd((size_t)N * HW * C, 60, -2, 3);
    round_bf16(raw);
    bvec raw16 = to_bf16(raw), out16(raw.size());
    fvec gamma = rnd((size_t)N * C, 61, -1.5f, 1.5f), beta = rnd((size_t)N * C, 62), dout = rnd(raw.size(), 63);
    conv_out src = {raw16.data(), N, H, W, C, C, 0};
    fvec sums = host_stats(src);
    epilogue_args f = {};
    f.src = src, f.sums = sums.data(), f.gamma = gamma.data(), f.beta = beta.data(), f.gamma_ns = C, f.relu = 1;
    f.dst = {out16.data(), N, H, W, C, 0, 0};
    host_epilogue(f);
    fvec ref(raw.size()), mean((size_t)N * C), rstd((size_t)N * C), got = to_f32(out16);
    e2g_instancenorm_forward(ref.data(), mean.data(), rstd.data(), raw.data(), gamma.data(), beta.data(), 1, 1, N, HW, C);
    expect("per-sample epilogue", got.data(), ref.data(), ref.size(), 1e-2);

    fvec dsums((size_t)N * 2 * C, 0.0f);
    bvec draw(raw.size());
    epilogue_bwd_args a = {};
    a.src = src, a.sums = sums.data(), a.gamma = gamma.data(), a.beta = beta.data(), a.gamma_ns = C, a.relu = 1;
    a.dout = dout.data(), a.draw = draw.data(), a.dsums = dsums.data();
    host_epilogue_bwd(a);
    fvec dv(raw.size(), 0.0f), dx(raw.size(), 0.0f), rdg((size_t)N * C, 0.0f), rdb((size_t)N * C, 0.0f);
    e2g_relu_backward(dv.data(), dout.data(), ref.data(), ref.size());
    e2g_instancenorm_backward(dx.data(), rdg.data(), rdb.data(), dv.data(), raw.data(), mean.data(), rstd.data(),
                              gamma.data(), 1, N, HW, C);
    fvec dg((size_t)N * C), db((size_t)N * C), gdraw = to_f32(draw);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            db[(size_t)n * C + c] = dsums[(size_t)n * 2 * C + c], dg[(size_t)n * C + c] = dsums[(size_t)n * 2 * C + C + c];
    expect("per-sample epilogue backward: draw", gdraw.data(), dx.data(), dx.size(), 2e-2);
    expect("per-sample epilogue backward: dgamma", dg.data(), rdg.data(), dg.size(), 1e-3);
    expect("per-sample epilogue backward: dbeta", db.data(), rdb.data(), db.size(), 1e-3);
}
END_TEST

/* film_affine and film_backward's bodies against e2g_film_forward and
 * e2g_film_backward, the context in bf16 as the device holds it; the
 * per-sample gradients read with the epilogue backward's dsums layout. */
START_TEST(test_film) {
    const int N = 3, T = 4, C4 = 24, C = 8;
    fvec ctx = rnd((size_t)N * T * C4, 64, -2, 2);
    round_bf16(ctx);
    bvec ctx16 = to_bf16(ctx);
    fvec w = rnd((size_t)2 * C * C4, 65, -0.3f, 0.3f), b = rnd(2 * C, 66), nw = rnd(C, 67, 0.5f, 1.5f), nb = rnd(C, 68);
    e2g_conv_params cp = {NULL, NULL, nw.data(), nb.data(), w.data(), b.data(), NULL, NULL};
    fvec ref((size_t)2 * N * C), got((size_t)2 * N * C), mean((size_t)N * C4);
    e2g_film_forward(ref.data(), &cp, ctx.data(), N, T, C4, C);
    film_args a = {};
    a.ctx = ctx16.data(), a.N = N, a.T = T, a.C4 = C4, a.C = C;
    a.w = w.data(), a.b = b.data(), a.norm_w = nw.data(), a.norm_b = nb.data(), a.mean = mean.data();
    a.gamma = got.data(), a.beta = got.data() + (size_t)N * C;
    for (size_t i = 0; i < (size_t)N * C4; i++) film_mean_body(a, i);
    for (size_t i = 0; i < (size_t)N * 2 * C; i++) film_affine_body(a, i);
    expect("film affine", got.data(), ref.data(), ref.size(), 1e-5);

    fvec daffine = rnd((size_t)2 * N * C, 69), dsums((size_t)N * 2 * C); /* CPU: (2, N, C); device: (N, 2, C) */
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            dsums[(size_t)n * 2 * C + C + c] = daffine[(size_t)n * C + c];
            dsums[(size_t)n * 2 * C + c] = daffine[(size_t)(N + n) * C + c];
        }
    fvec mem_ref((size_t)2 * C * C4 + 4 * C, 0.0f), mem_got(mem_ref), dctx_ref = rnd(ctx.size(), 70), dctx_got(dctx_ref);
    e2g_conv_params gr = {NULL, NULL, &mem_ref[0], &mem_ref[C], &mem_ref[2 * C], &mem_ref[2 * C + 2 * C * C4], NULL, NULL};
    e2g_film_backward(&gr, dctx_ref.data(), daffine.data(), &cp, ctx.data(), N, T, C4, C);
    a.dgamma = dsums.data() + C, a.dbeta = dsums.data(), a.dns = 2 * C;
    a.dnorm_w = &mem_got[0], a.dnorm_b = &mem_got[C], a.dw = &mem_got[2 * C], a.db = &mem_got[2 * C + 2 * C * C4];
    a.dctx = dctx_got.data();
    for (size_t i = 0; i < (size_t)2 * C * (C4 + 1); i++) film_param_grad_body(a, i);
    for (size_t i = 0; i < (size_t)N * T * C4; i++) film_context_grad_body(a, i);
    expect("film backward: norm and FiLM parameters", mem_got.data(), mem_ref.data(), mem_ref.size(), 1e-5);
    expect("film backward: context", dctx_got.data(), dctx_ref.data(), dctx_ref.size(), 1e-5);
}
END_TEST

/* FiLM's output gate: the gains (film_mean_body, film_affine_body as the
 * gate) against e2g_output_gain_forward, the output layer reading them
 * against e2g_output_gated_forward per sample, the gain's gradient that
 * output + L1 sums per sample against e2g_output_gated_backward's, and
 * the gate's backward bodies against e2g_output_gain_backward. */
START_TEST(test_output_gate) {
    const int N = 3, T = 4, C4 = 24, HW = 40;
    const size_t n = (size_t)N * HW * 3, one = (size_t)HW * 3;
    const float lambda = 10.0f;
    fvec ctx = rnd((size_t)N * T * C4, 80, -2, 2);
    round_bf16(ctx);
    bvec ctx16 = to_bf16(ctx);
    fvec w = rnd((size_t)3 * C4, 81, -0.3f, 0.3f), b = rnd(3, 82, -0.25f, 0.25f);
    e2g_linear_params gate = {w.data(), b.data()};
    fvec gain_ref((size_t)N * 3), gain((size_t)N * 3), mean((size_t)N * C4);
    e2g_output_gain_forward(gain_ref.data(), &gate, ctx.data(), N, T, C4);
    film_args a = {};
    a.ctx = ctx16.data(), a.N = N, a.T = T, a.C4 = C4, a.C = 3, a.gate = 1;
    a.w = w.data(), a.b = b.data(), a.mean = mean.data(), a.gamma = gain.data();
    for (size_t i = 0; i < (size_t)N * C4; i++) film_mean_body(a, i);
    for (size_t i = 0; i < (size_t)N * film_rows(a); i++) film_affine_body(a, i);
    expect("gate gains", gain.data(), gain_ref.data(), gain_ref.size(), 1e-5);

    /* the output layer over a conv output of 8 stored channels, zero bias */
    fvec o = rnd(n, 83, -2, 2), x = rnd(n, 84), tgt = rnd(n, 85), zero(3, 0.0f), y_ref(n), y(n);
    round_bf16(o);
    bvec o16((size_t)N * HW * 8, __float2bfloat16(0.0f));
    for (size_t i = 0; i < n; i++) o16[i / 3 * 8 + i % 3] = __float2bfloat16(o[i]);
    for (int s = 0; s < N; s++)
        e2g_output_gated_forward(&y_ref[s * one], &o[s * one], &x[s * one], &gain_ref[3 * s], one);
    output_args oa = {y.data(), o16.data(), 8, zero.data(), x.data(), 1, gain.data(), N, (size_t)HW};
    for (size_t i = 0; i < n; i++) output_body(oa, i);
    expect("gated output layer", y.data(), y_ref.data(), n, 1e-4);

    /* L1 through it: the gain's gradient, per sample as the kernel's blocks sum it */
    fvec dy(n, 0.0f), d_o(n, 0.0f), dgain_ref((size_t)N * 3, 0.0f), dgain((size_t)N * 3);
    e2g_l1_loss(dy.data(), y_ref.data(), tgt.data(), n, lambda);
    for (int s = 0; s < N; s++)
        e2g_output_gated_backward(&d_o[s * one], NULL, &dgain_ref[3 * s], &dy[s * one], &y_ref[s * one],
                                  &x[s * one], &gain_ref[3 * s], one);
    bvec dout((size_t)N * HW * 8);
    for (int s = 0; s < N; s++) {
        float acc[7] = {0};
        for (int q = 0; q < HW; q++)
            output_l1_body(dout.data(), y_ref.data(), tgt.data(), x.data(), lambda / (float)n, (size_t)s * HW + q, acc);
        for (int c = 0; c < 3; c++) dgain[3 * s + c] = acc[4 + c];
    }
    expect("gate gradient", dgain.data(), dgain_ref.data(), dgain.size(), 1e-4);

    fvec mem_ref((size_t)3 * C4 + 3, 0.0f), mem_got(mem_ref), dctx_ref = rnd(ctx.size(), 86), dctx_got(dctx_ref);
    e2g_linear_params gr = {&mem_ref[0], &mem_ref[3 * C4]};
    e2g_output_gain_backward(&gr, dctx_ref.data(), dgain_ref.data(), &gate, ctx.data(), N, T, C4);
    a.dgamma = dgain_ref.data(), a.dns = 3, a.dw = &mem_got[0], a.db = &mem_got[3 * C4], a.dctx = dctx_got.data();
    for (size_t i = 0; i < (size_t)film_rows(a) * (C4 + 1); i++) film_param_grad_body(a, i);
    for (size_t i = 0; i < (size_t)N * T * C4; i++) film_context_grad_body(a, i);
    expect("gate backward: parameters", mem_got.data(), mem_ref.data(), mem_ref.size(), 1e-5);
    expect("gate backward: context", dctx_got.data(), dctx_ref.data(), dctx_ref.size(), 1e-5);
}
END_TEST

/* The skip gate: its gains (film bodies in gate mode) against
 * e2g_skip_gain_forward, the epilogue scaling a padded add by them
 * against e2g_add_gated_forward, and the backward bodies (d(add), d(gain),
 * then the gate's parameters and context) against e2g_add_gated_backward
 * and e2g_skip_gain_backward. */
START_TEST(test_skip_gate) {
    const int N = 3, T = 4, C4 = 24, H = 5, W = 6, C = 16, HW = H * W;
    const size_t n = (size_t)N * HW * C;
    fvec ctx = rnd((size_t)N * T * C4, 90, -2, 2);
    round_bf16(ctx);
    bvec ctx16 = to_bf16(ctx);
    fvec w = rnd((size_t)C * C4, 91, -0.3f, 0.3f), b = rnd(C, 92, -0.25f, 0.25f);
    e2g_conv_params cp = {};
    cp.gate_w = w.data(), cp.gate_b = b.data();
    fvec gain_ref((size_t)N * C), gain((size_t)N * C), mean((size_t)N * C4);
    e2g_skip_gain_forward(gain_ref.data(), &cp, ctx.data(), N, T, C4, C);
    film_args a = {};
    a.ctx = ctx16.data(), a.N = N, a.T = T, a.C4 = C4, a.C = C, a.gate = 1;
    a.w = w.data(), a.b = b.data(), a.mean = mean.data(), a.gamma = gain.data();
    for (size_t i = 0; i < (size_t)N * C4; i++) film_mean_body(a, i);
    for (size_t i = 0; i < (size_t)N * film_rows(a); i++) film_affine_body(a, i);
    expect("skip gains", gain.data(), gain_ref.data(), gain_ref.size(), 1e-5);

    /* forward: raw + bias, then + gain·add, the add stored with pad 1 */
    fvec raw = rnd(n, 93, -2, 2), bias = rnd(C, 94), addp = rnd((size_t)N * (H + 2) * (W + 2) * C, 95);
    round_bf16(raw), round_bf16(addp);
    bvec raw16 = to_bf16(raw), add16 = to_bf16(addp), out16(n);
    fvec pre(n), add(n), ref(n);
    for (int q = 0; q < N; q++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    size_t i = (((size_t)q * H + y) * W + x) * C + c;
                    pre[i] = raw[i] + bias[c];
                    add[i] = addp[(((size_t)q * (H + 2) + y + 1) * (W + 2) + x + 1) * C + c];
                }
    e2g_add_gated_forward(ref.data(), pre.data(), add.data(), gain_ref.data(), N, HW, C);
    epilogue_args e = {};
    e.src = {raw16.data(), N, H, W, C, C, 0}, e.bias = bias.data();
    e.add = {add16.data(), N, H, W, C, 1, 0}, e.add_gain = gain.data();
    e.dst = {out16.data(), N, H, W, C, 0, 0};
    host_epilogue(e);
    fvec got = to_f32(out16);
    expect("epilogue with a skip gate", got.data(), ref.data(), n, 1e-2);

    /* backward */
    fvec dout = rnd(n, 96), dadd_ref = rnd(n, 97), dadd(dadd_ref), dgain_ref((size_t)N * C, 0.0f), dgain((size_t)N * C);
    e2g_add_gated_backward(dadd_ref.data(), dgain_ref.data(), dout.data(), add.data(), gain_ref.data(), N, HW, C);
    skip_bwd_args sb = {dout.data(), dadd.data(), e.add, gain.data(), dgain.data(), N, H, W, C};
    for (size_t i = 0; i < n; i++) skip_dadd_body(sb, i);
    for (size_t i = 0; i < (size_t)N * C; i++) skip_dgain_body(sb, i);
    expect("skip gate backward: d(add)", dadd.data(), dadd_ref.data(), n, 1e-5);
    expect("skip gate backward: d(gain)", dgain.data(), dgain_ref.data(), dgain.size(), 1e-4);

    fvec mem_ref((size_t)C * C4 + C, 0.0f), mem_got(mem_ref), dctx_ref = rnd(ctx.size(), 98), dctx_got(dctx_ref);
    e2g_conv_params gr = {};
    gr.gate_w = &mem_ref[0], gr.gate_b = &mem_ref[(size_t)C * C4];
    e2g_skip_gain_backward(&gr, dctx_ref.data(), dgain_ref.data(), &cp, ctx.data(), N, T, C4, C);
    a.dgamma = dgain_ref.data(), a.dns = C, a.dw = &mem_got[0], a.db = &mem_got[(size_t)C * C4];
    a.dctx = dctx_got.data();
    for (size_t i = 0; i < (size_t)film_rows(a) * (C4 + 1); i++) film_param_grad_body(a, i);
    for (size_t i = 0; i < (size_t)N * T * C4; i++) film_context_grad_body(a, i);
    expect("skip gate backward: parameters", mem_got.data(), mem_ref.data(), mem_ref.size(), 1e-5);
    expect("skip gate backward: context", dctx_got.data(), dctx_ref.data(), dctx_ref.size(), 1e-5);
}
END_TEST

START_TEST(test_fold_grad) {
    const int N = 2, H = 7, W = 5, C = 8;
    for (int pad = 1; pad <= 3; pad += 2) {
        fvec dxp = rnd((size_t)N * (H + 2 * pad) * (W + 2 * pad) * C, 38 + pad);
        round_bf16(dxp);
        bvec dxp16 = to_bf16(dxp);
        fvec g((size_t)N * H * W * C, 0.5f), ref(g);
        for (size_t i = 0; i < g.size(); i++) fold_grad_body(g.data(), dxp16.data(), H, W, C, pad, i);
        e2g_pad_reflect_backward(ref.data(), dxp.data(), N, H, W, C, pad);
        expect(pad == 1 ? "reflect fold, pad 1" : "reflect fold, pad 3", g.data(), ref.data(), ref.size(), 1e-5);
    }
}
END_TEST

START_TEST(test_output_l1) {
    const size_t P = 50, n = P * 3;
    const float lambda = 10.0f;
    fvec o = rnd(n, 40, -2, 2), x = rnd(n, 41), t = rnd(n, 42), y(n), dy(n, 0.0f), d_o(n, 0.0f);
    e2g_output_forward(y.data(), o.data(), x.data(), 1, n);
    float l1 = e2g_l1_loss(dy.data(), y.data(), t.data(), n, lambda);
    e2g_output_backward(d_o.data(), NULL, dy.data(), y.data(), x.data(), 1, n);
    bvec dout(P * 8);
    float acc[7] = {0};
    for (size_t p = 0; p < P; p++) output_l1_body(dout.data(), y.data(), t.data(), NULL, lambda / (float)n, p, acc);
    fvec got(n), rb(3, 0.0f);
    for (size_t p = 0; p < P; p++)
        for (int c = 0; c < 8; c++) {
            float v = __bfloat162float(dout[p * 8 + c]);
            if (c < 3) got[p * 3 + c] = v, rb[c] += d_o[p * 3 + c];
            else ck_assert(v == 0.0f);
        }
    expect("output + L1 backward", got.data(), d_o.data(), n, 1e-2);
    expect("output bias gradient", acc, rb.data(), 3, 1e-4);
    float mean = acc[3] / n;
    expect("L1 value", &mean, &l1, 1, 1e-5);
}
END_TEST

START_TEST(test_gelu_backward) {
    const size_t n = 64;
    fvec pre = rnd(n, 43, -4, 4), d = rnd(n, 44);
    round_bf16(pre), round_bf16(d);
    bvec pre16 = to_bf16(pre), d16 = to_bf16(d);
    for (size_t i = 0; i < n / 8; i++) gelu_backward_body(d16.data(), pre16.data(), i);
    fvec ref(n, 0.0f), got = to_f32(d16);
    e2g_gelu_backward(ref.data(), d.data(), pre.data(), n);
    expect("gelu backward", got.data(), ref.data(), n, 1e-2);
}
END_TEST

/* ⟨pack(W), G⟩ = ⟨W, unpack(G)⟩ on small integers (exact in bf16): the
 * unpacking is the packing's adjoint, plain (padded) and phase. */
START_TEST(test_unpack_is_adjoint) {
    for (int phase = 0; phase < 2; phase++) {
        const int cout = phase ? 8 : 5, cin = phase ? 8 : 6, k = 3;
        pack_args a = {};
        a.cout = cout, a.cin = cin, a.k = k, a.cout_pad = 8, a.cin_pad = phase ? cin : 8, a.phase = phase;
        fvec w = rnd((size_t)cout * cin * k * k, 45 + phase, -2.49f, 2.49f), g = rnd(pack_items(a), 47 + phase, -3.49f, 3.49f);
        for (float &v : w) v = roundf(v);
        for (float &v : g) v = roundf(v);
        bvec pw(pack_items(a)), g16 = to_bf16(g);
        a.dst = pw.data(), a.base = w.data();
        host_pack(a);
        fvec un(w.size());
        for (size_t i = 0; i < w.size(); i++)
            unpack_weight_grad_body(un.data(), g16.data(), cin, k, a.cout_pad, a.cin_pad, phase, i);
        double lhs = 0, rhs = 0;
        for (size_t i = 0; i < pw.size(); i++) lhs += (double)__bfloat162float(pw[i]) * g[i];
        for (size_t i = 0; i < w.size(); i++) rhs += (double)w[i] * un[i];
        ck_assert_msg(lhs == rhs, "phase %d: <pack W, G> %g != <W, unpack G> %g", phase, lhs, rhs);
        ck_assert_msg(lhs != 0, "phase %d: a trivial adjoint test", phase);
    }
}
END_TEST

START_TEST(test_lora_grads) {
    const int r = 3, cout = 5, K = 12;
    const float s = 0.5f;
    fvec dW = rnd((size_t)cout * K, 49), A = rnd((size_t)r * K, 50), B = rnd((size_t)cout * r, 51);
    fvec dA = rnd(A.size(), 52), dB = rnd(B.size(), 53), rA(dA), rB(dB);
    for (size_t i = 0; i < A.size() + B.size(); i++)
        lora_grads_body(dA.data(), dB.data(), dW.data(), A.data(), B.data(), r, cout, K, s, i);
    for (int k = 0; k < r; k++)
        for (int q = 0; q < K; q++) {
            double acc = 0;
            for (int o = 0; o < cout; o++) acc += B[o * r + k] * dW[(size_t)o * K + q];
            rA[(size_t)k * K + q] += (float)(s * acc);
        }
    for (int o = 0; o < cout; o++)
        for (int k = 0; k < r; k++) {
            double acc = 0;
            for (int q = 0; q < K; q++) acc += dW[(size_t)o * K + q] * A[(size_t)k * K + q];
            rB[o * r + k] += (float)(s * acc);
        }
    expect("lora dA", dA.data(), rA.data(), dA.size(), 1e-5);
    expect("lora dB", dB.data(), rB.data(), dB.size(), 1e-5);
}
END_TEST

START_TEST(test_rows) {
    const size_t E = 6;
    const int N = 3, rows[N] = {1, 0, 1};
    fvec table = rnd(2 * E, 54);
    round_bf16(table);
    bvec g16(N * E);
    for (size_t i = 0; i < N * E; i++) gather_rows_body(g16.data(), table.data(), rows, E, i);
    for (int n = 0; n < N; n++)
        for (size_t e = 0; e < E; e++) ck_assert(__bfloat162float(g16[n * E + e]) == table[rows[n] * E + e]);
    fvec acc(2 * E, 0.0f);
    for (size_t i = 0; i < N * E; i++) scatter_add_rows_body(acc.data(), g16.data(), rows, E, i);
    for (size_t e = 0; e < E; e++) {
        ck_assert(acc[e] == table[e]);
        ck_assert(acc[E + e] == 2 * table[E + e]);
    }
    bvec z16(2 * E);
    for (size_t i = 0; i < 2 * E; i++) gather_rows_body(z16.data(), table.data(), NULL, E, i); /* rows NULL: row 0 */
    ck_assert(__bfloat162float(z16[E + 2]) == table[2]);
}
END_TEST

START_TEST(test_adam) {
    const size_t n = 100;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    fvec p = rnd(n, 55), m(n, 0.0f), v(n, 0.0f), ref(p);
    e2g_adam adam;
    e2g_adam_init(&adam, n);
    for (long t = 1; t <= 3; t++) {
        fvec g = rnd(n, 56 + (unsigned)t);
        e2g_adam_step(&adam, ref.data(), g.data(), lr, b1, b2, eps);
        float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
        for (size_t i = 0; i < n; i++) adam_body(p.data(), g.data(), m.data(), v.data(), lr / bc1, b1, b2, 1.0f / sqrtf(bc2), eps, i);
    }
    expect("adam params", p.data(), ref.data(), n, 1e-6);
    expect("adam m", m.data(), adam.m, n, 1e-6);
    expect("adam v", v.data(), adam.v, n, 1e-6);
    e2g_adam_free(&adam);
}
END_TEST

START_TEST(test_small_helpers) {
    /* engine/conv.c's TAP_GROUP */
    const int TG[2][3] = {{0, 1, 1}, {0, 0, 1}};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 3; k++) ck_assert_int_eq(tap_group(a, k), TG[a][k]);
    for (int n = 1; n < 9; n++)
        for (int i = -3; i < n + 3; i++)
            if (n > 3 || n == 1) ck_assert_int_eq(reflect_dev(i, n), e2g_reflect_index(i, n));
    float f[8] = {1, -2, 3.5f, 0.1f, 1e-3f, -7, 100, 0}, g[8];
    bf16x8_to_float(float_to_bf16x8(f), g);
    for (int i = 0; i < 8; i++) ck_assert(g[i] == __bfloat162float(__float2bfloat16(f[i])));
    tview v = {NULL, 2, 4, 6, 8, 1, 0};
    ck_assert_uint_eq(view_stride(v), (size_t)6 * 8 * 8);
    ck_assert_uint_eq(view_index(v, 1, 0, 0), view_stride(v) + (size_t)(8 + 1) * 8);
    conv_out s = {NULL, 1, 4, 6, 8, 32, 1};
    /* output pixel (2i + a, 2j + b) is grid pixel (i + a, j + b), channels of phase 2a + b */
    ck_assert_uint_eq(conv_out_index(s, 0, 3, 4, 5), (((size_t)(1 + 1) * 4 + 2 + 0) * 32) + 2 * 8 + 5);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cuda_bodies");
    TCase *tc = tcase_create("cuda_bodies");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_small_helpers);
    tcase_add_test(tc, test_epilogue_norm_relu_add);
    tcase_add_test(tc, test_stats_large_mean);
    tcase_add_test(tc, test_epilogue_reflect_pad);
    tcase_add_test(tc, test_upsample_phase);
    tcase_add_test(tc, test_input_layer);
    tcase_add_test(tc, test_output_layer);
    tcase_add_test(tc, test_stride2_conv);
    tcase_add_test(tc, test_pack_merged);
    tcase_add_test(tc, test_lora_expand);
    tcase_add_test(tc, test_bias_gelu);
    tcase_add_test(tc, test_epilogue_backward);
    tcase_add_test(tc, test_epilogue_per_sample);
    tcase_add_test(tc, test_film);
    tcase_add_test(tc, test_skip_gate);
    tcase_add_test(tc, test_output_gate);
    tcase_add_test(tc, test_fold_grad);
    tcase_add_test(tc, test_output_l1);
    tcase_add_test(tc, test_gelu_backward);
    tcase_add_test(tc, test_unpack_is_adjoint);
    tcase_add_test(tc, test_lora_grads);
    tcase_add_test(tc, test_rows);
    tcase_add_test(tc, test_adam);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
