/* test_bf16.c — the bf16 compute precision (precision.h): parsing and the
 * setting, the float32 → bfloat16 conversion, and every convolution entry
 * point and the linear layers in bf16 against fp32 and against exact
 * references.
 *
 * Tolerances.  bf16 keeps 8 significant bits, so rounding an operand costs
 * at most u = 2^-8 of it (round-to-nearest-even) and a product of two
 * rounded operands at most 2u + u² = 2^-7 + 2^-16.  Three checks follow:
 *
 *  - exact: the engine's bf16 result against a double-precision reference
 *    computed from the same bf16-rounded operands.  Only the f32
 *    accumulation differs, so per element |got − ref| ≤ K·2^-24·S, with K
 *    the number of summed terms and S = Σ|terms| (computed alongside).
 *  - bound: bf16 against fp32 per element, |bf16 − fp32| ≤ (2^-7 + 2^-16 +
 *    2K·2^-24)·S·1.01 (the 1.01 covers S being computed from unrounded
 *    operands).  Rigorous, data-independent, and loose for long sums.
 *  - typical: max|bf16 − fp32| / max|fp32| ≤ TOL_BF16 = 1e-2.  With random
 *    signs the rounding errors add like a random walk: a term's relative
 *    error has a standard deviation of ≈ u·√(2/3) ≈ 3.2e-3, an output's the
 *    same relative to its own RMS, and the largest of a few thousand errors
 *    (≈ 4σ) over the largest output (≈ 3.5 RMS) gives ≈ 4e-3; observed
 *    0.6e-3 .. 3.0e-3 over these shapes (AVX512-BF16, oneDNN 2.6), so
 *    1e-2 leaves 3× margin while a dropped 3×3 tap shows as ≈ 0.3.
 *
 * Each check must be able to fail: every bf16 result must also DIFFER from
 * fp32 (max rel diff > 1e-6), or the "bf16" path silently ran fp32.
 * fp32 must stay bit-identical after bf16 ran in the same thread (the plan
 * caches key on the precision). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "conv.h"
#include "ops.h"
#include "precision.h"
#include "testutil.h"

#define TOL_BF16 1e-2    /* typical: max|bf16 − fp32| / max|fp32| */
#define MIN_DIFF 1e-6    /* bf16 must differ from fp32 by more than this */
#define TOL_SAME_BF16 1e-5 /* two bf16 runs of the same operands (band vs whole) */
#define U32 (1.0 / 16777216.0)          /* 2^-24, f32 unit roundoff */
#define BF16_PRODUCT (1.0 / 128 + 1.0 / 65536) /* 2u + u², u = 2^-8 */

/* bf16 compute tests pass with a message on CPUs where oneDNN has no
 * optimised bf16 (e2g_set_precision refuses it there). */
static int bf16_available(void) {
    if (e2g_set_precision(E2G_PRECISION_BF16) != 0) {
        fprintf(stderr, "bf16 unavailable on this CPU (%s): skipped\n", e2g_precision_describe());
        return 0;
    }
    e2g_set_precision(E2G_PRECISION_FP32);
    return 1;
}

static void set_prec(e2g_precision p) {
    ck_assert_int_eq(e2g_set_precision(p), 0);
    ck_assert_int_eq(e2g_get_precision(), p);
}

/* A result in double with the sum of its terms' magnitudes and term count. */
typedef struct {
    double *v, *s;
    size_t n;
    double k;
} ref_t;

static ref_t ref_new(size_t n, double k) {
    return (ref_t){test_alloc(n * sizeof(double)), test_alloc(n * sizeof(double)), n, k};
}

static float *to_float(const ref_t *r) {
    float *f = test_alloc(r->n * sizeof(float));
    for (size_t i = 0; i < r->n; i++) f[i] = (float)r->v[i];
    return f;
}

static float *rounded(const float *x, size_t n) {
    float *r = test_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) r[i] = e2g_bf16_to_f32(e2g_bf16_round(x[i]));
    return r;
}

static float *random_tensor(size_t n, unsigned seed, float scale) {
    float *x = test_alloc(n * sizeof(float));
    fill_random(x, n, seed);
    for (size_t i = 0; i < n; i++) x[i] *= scale;
    return x;
}

/* Per element: |got − ref| ≤ factor·S + 1e-30.  Prints the worst ratio;
 * returns the number of violations. */
static size_t bound_check(const char *what, const float *got, const ref_t *ref, double factor) {
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < ref->n; i++) {
        double d = fabs((double)got[i] - ref->v[i]), lim = factor * ref->s[i] + 1e-30;
        if (!(d <= lim)) {
            if (bad < 3) fprintf(stderr, "  %s[%zu]: got %.8g ref %.8g bound %.3g\n", what, i, got[i], ref->v[i], lim);
            bad++;
        }
        if (lim > 0 && d / lim > worst) worst = d / lim;
    }
    fprintf(stderr, "%-40s worst |diff|/bound %.3g (K %.0f)%s\n", what, worst, ref->k, bad ? "  FAIL" : "");
    return bad;
}

/* bf16 against fp32: typical tolerance, rigorous bound (ref's S and K), and
 * must differ. */
static void check_bf16_vs_fp32(const char *what, const float *bf, const float *fp, const ref_t *ref,
                               size_t n) {
    char label[96];
    snprintf(label, sizeof label, "%s bf16 vs fp32", what);
    double rel = rel_error(label, bf, fp, n, TOL_BF16);
    ck_assert_msg(rel <= TOL_BF16, "%s: bf16 off by %.3g of max|fp32| (tol %g)", what, rel, TOL_BF16);
    ck_assert_msg(rel > MIN_DIFF, "%s: bf16 equals fp32 (%.3g): the bf16 path did not run", what, rel);
    if (ref) {
        ref_t fr = *ref;
        fr.v = test_alloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) fr.v[i] = fp[i];
        snprintf(label, sizeof label, "%s bf16 vs fp32 bound", what);
        ck_assert_msg(bound_check(label, bf, &fr, (BF16_PRODUCT + 2 * ref->k * U32) * 1.01) == 0,
                      "%s: bf16 outside the rounding bound", what);
    }
}

/* bf16 against the double reference of the rounded operands. */
static void check_exact(const char *what, const float *bf, const ref_t *ref) {
    char label[96];
    snprintf(label, sizeof label, "%s bf16 vs exact", what);
    ck_assert_msg(bound_check(label, bf, ref, (ref->k + 8) * U32) == 0,
                  "%s: bf16 differs from the exact result of its rounded operands", what);
}

/* ---- precision setting ------------------------------------------------------- */

START_TEST(test_parse) {
    e2g_precision p = E2G_PRECISION_BF16;
    ck_assert_int_eq(e2g_precision_parse("fp32", &p), 0);
    ck_assert_int_eq(p, E2G_PRECISION_FP32);
    ck_assert_int_eq(e2g_precision_parse("bf16", &p), 0);
    ck_assert_int_eq(p, E2G_PRECISION_BF16);
    ck_assert_int_eq(e2g_precision_parse("BF16", &p), 0);
    ck_assert_int_eq(p, E2G_PRECISION_BF16);
    ck_assert_int_eq(e2g_precision_parse("auto", &p), 0);
    ck_assert_int_eq(p, e2g_precision_native());
    p = E2G_PRECISION_BF16;
    const char *bad[] = {"", "fp16", "bf16 ", " fp32", "float32", "bf", "autox"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(e2g_precision_parse(bad[i], &p), -1);
        ck_assert_int_eq(p, E2G_PRECISION_BF16); /* untouched */
    }
    ck_assert_int_eq(e2g_precision_parse(NULL, &p), -1);
    ck_assert_str_eq(e2g_precision_name(E2G_PRECISION_FP32), "fp32");
    ck_assert_str_eq(e2g_precision_name(E2G_PRECISION_BF16), "bf16");
}
END_TEST

START_TEST(test_setting) {
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_FP32); /* the default */
    const char *d = e2g_precision_describe();
    fprintf(stderr, "precision: %s; native: %s; avx512_bf16: %d\n", d,
            e2g_precision_name(e2g_precision_native()), e2g_cpu_has_avx512_bf16());
    ck_assert(strncmp(d, "fp32", 4) == 0);
    /* native bf16 implies the CPU feature the conversion uses, or AMX */
    if (e2g_precision_native() == E2G_PRECISION_BF16) ck_assert_str_eq(d, "fp32");
    else ck_assert_str_eq(d, "fp32 (no native bf16)");
    ck_assert_int_eq(e2g_set_precision((e2g_precision)7), -1);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_FP32);
    if (e2g_set_precision(E2G_PRECISION_BF16) == 0) {
        d = e2g_precision_describe();
        ck_assert(strncmp(d, "bf16 (", 6) == 0);
        if (e2g_precision_native() == E2G_PRECISION_BF16)
            ck_assert(!strcmp(d, "bf16 (avx512_bf16)") || !strcmp(d, "bf16 (amx)"));
        set_prec(E2G_PRECISION_FP32);
    }
}
END_TEST

/* ---- conversion ------------------------------------------------------------- */

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

START_TEST(test_round) {
    struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000, 0x3f80}, /* 1 */
        {0x3f808000, 0x3f80}, /* 1 + 2^-8: a tie, to even (down) */
        {0x3f818000, 0x3f82}, /* 1 + 3·2^-8: a tie, to even (up) */
        {0x3f808001, 0x3f81}, /* just above the tie */
        {0x3f807fff, 0x3f80}, /* just below */
        {0xc0000000, 0xc000}, /* −2 */
        {0x7f800000, 0x7f80}, /* +inf */
        {0xff800000, 0xff80}, /* −inf */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to +inf */
        {0x00000001, 0x0000}, /* denormals flush to signed zero */
        {0x807fffff, 0x8000},
        {0x00800000, 0x0080}, /* FLT_MIN is kept */
        {0x00000000, 0x0000},
        {0x80000000, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ck_assert_msg(e2g_bf16_round(from_bits(cases[i].in)) == cases[i].out, "0x%08x → 0x%04x, want 0x%04x",
                      cases[i].in, e2g_bf16_round(from_bits(cases[i].in)), cases[i].out);
    uint16_t nan = e2g_bf16_round(from_bits(0x7f800001)); /* a signalling NaN stays NaN, quiet */
    ck_assert((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0 && (nan & 0x40));
    ck_assert_float_eq(e2g_bf16_to_f32(0x3f82), 1.015625f);
}
END_TEST

/* The vector conversion (AVX512-BF16 hardware where present) equals the
 * portable one on every class of value and at every tail length. */
START_TEST(test_convert) {
    size_t n = 100003;
    uint32_t *bits = test_alloc(n * sizeof *bits);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        bits[i] = (uint32_t)(s >> 11);
        if (i % 7 == 0) bits[i] = (bits[i] & 0xffff0000u) | 0x8000u; /* exact ties */
        if (i % 11 == 0) bits[i] &= 0x807fffffu;                      /* denormals */
        if (i % 13 == 0) bits[i] |= 0x7f800000u;                      /* inf/NaN */
    }
    float *x = (float *)bits;
    uint16_t *a = test_alloc(n * sizeof *a), *b = test_alloc(n * sizeof *b);
    e2g_bf16_from_f32(a, x, n);
    e2g_bf16_from_f32_generic(b, x, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(a[i] == b[i], "value %zu (0x%08x): vector 0x%04x, generic 0x%04x", i, bits[i], a[i], b[i]);
    for (size_t len = 0; len <= 70; len++) { /* tails, with guards past the end */
        memset(a, 0xab, 80 * sizeof *a);
        e2g_bf16_from_f32(a, x + 3, len);
        for (size_t i = 0; i < len; i++) ck_assert_uint_eq(a[i], e2g_bf16_round(x[3 + i]));
        for (size_t i = len; i < 80; i++) ck_assert_uint_eq(a[i], 0xabab);
    }
}
END_TEST

/* ---- convolutions ----------------------------------------------------------- */

typedef struct {
    const char *name;
    int N, H, W;
    e2g_conv_shape cs;
    int bias;
} conv_case;

/* The generator's and the discriminator's shapes, small. */
static const conv_case conv_cases[] = {
    {"enc1 7x7 reflect 3->16 bias", 2, 20, 18, {3, 16, 7, 1, 3, E2G_PAD_REFLECT}, 1},
    {"out 7x7 reflect 16->3 bias", 1, 20, 20, {16, 3, 7, 1, 3, E2G_PAD_REFLECT}, 1},
    {"enc2 3x3 s2 zero 16->32", 2, 20, 20, {16, 32, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"3x3 s2 zero odd 32->32", 1, 15, 13, {32, 32, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"rb 3x3 s1 reflect 64->64", 2, 12, 12, {64, 64, 3, 1, 1, E2G_PAD_REFLECT}, 0},
    {"3x3 s1 zero 32->48 bias", 1, 14, 10, {32, 48, 3, 1, 1, E2G_PAD_ZERO}, 1},
    {"disc c1 4x4 s2 zero 6->32 bias", 2, 24, 24, {6, 32, 4, 2, 1, E2G_PAD_ZERO}, 1},
    {"7x7 reflect 4->16 (bf16 from cin 4)", 1, 16, 16, {4, 16, 7, 1, 3, E2G_PAD_REFLECT}, 0},
    {"disc 4x4 s1 zero 64->1 bias", 1, 10, 10, {64, 1, 4, 1, 1, E2G_PAD_ZERO}, 1},
};

/* The double-precision conv of x (N, H, W, cin) with w, plus the backward
 * for dout: out, dx, dw, db with their magnitude sums. */
typedef struct {
    ref_t out, dx, dw, db;
} conv_ref;

static conv_ref naive_conv(const float *x, const float *w, const float *b, const float *dout, int N,
                           int H, int W, const e2g_conv_shape *cs) {
    int Ho = e2g_conv2d_out_size(H, cs), Wo = e2g_conv2d_out_size(W, cs), k = cs->k;
    conv_ref r = {ref_new((size_t)N * Ho * Wo * cs->cout, (double)cs->cin * k * k + 1),
                  ref_new((size_t)N * H * W * cs->cin, (double)cs->cout * k * k * 4),
                  ref_new((size_t)cs->cout * cs->cin * k * k, (double)N * Ho * Wo),
                  ref_new(cs->cout, (double)N * Ho * Wo)};
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int co = 0; co < cs->cout; co++) {
                    size_t o = (((size_t)n * Ho + oy) * Wo + ox) * cs->cout + co;
                    double acc = b ? b[co] : 0, acc_s = b ? fabs(b[co]) : 0, g = dout[o];
                    r.db.v[co] += g, r.db.s[co] += fabs(g);
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * cs->stride + ky - cs->pad, ix = ox * cs->stride + kx - cs->pad;
                            if (cs->pad_mode == E2G_PAD_REFLECT) {
                                iy = e2g_reflect_index(iy, H), ix = e2g_reflect_index(ix, W);
                            } else if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                                continue;
                            }
                            size_t xi = (((size_t)n * H + iy) * W + ix) * cs->cin;
                            for (int ci = 0; ci < cs->cin; ci++) {
                                size_t wi = (((size_t)co * cs->cin + ci) * k + ky) * k + kx;
                                double xv = x[xi + ci], wv = w[wi];
                                acc += xv * wv, acc_s += fabs(xv * wv);
                                r.dx.v[xi + ci] += g * wv, r.dx.s[xi + ci] += fabs(g * wv);
                                r.dw.v[wi] += g * xv, r.dw.s[wi] += fabs(g * xv);
                            }
                        }
                    r.out.v[o] = acc, r.out.s[o] = acc_s;
                }
    return r;
}

typedef struct {
    float *out, *dx, *dw, *db;
} conv_result;

static conv_result run_conv(e2g_precision prec, const conv_case *c, const float *x, const float *w,
                            const float *b, const float *dout) {
    set_prec(prec);
    const e2g_conv_shape *cs = &c->cs;
    size_t ny = (size_t)c->N * e2g_conv2d_out_size(c->H, cs) * e2g_conv2d_out_size(c->W, cs) * cs->cout;
    conv_result r = {test_alloc(ny * sizeof(float)),
                     test_alloc((size_t)c->N * c->H * c->W * cs->cin * sizeof(float)),
                     test_alloc((size_t)cs->cout * cs->cin * cs->k * cs->k * sizeof(float)),
                     test_alloc(cs->cout * sizeof(float))};
    e2g_conv2d_forward(r.out, x, w, b, c->N, c->H, c->W, cs);
    e2g_conv2d_backward(r.dx, r.dw, c->bias ? r.db : NULL, dout, x, w, c->N, c->H, c->W, cs);
    set_prec(E2G_PRECISION_FP32);
    return r;
}

START_TEST(test_conv_bf16) {
    if (!bf16_available()) return;
    const conv_case *c = &conv_cases[_i];
    const e2g_conv_shape *cs = &c->cs;
    fprintf(stderr, "-- %s\n", c->name);
    size_t nx = (size_t)c->N * c->H * c->W * cs->cin, nw = (size_t)cs->cout * cs->cin * cs->k * cs->k;
    size_t ny = (size_t)c->N * e2g_conv2d_out_size(c->H, cs) * e2g_conv2d_out_size(c->W, cs) * cs->cout;
    float *x = random_tensor(nx, 1 + _i, 1.0f), *w = random_tensor(nw, 100 + _i, 0.2f);
    float *b = c->bias ? random_tensor(cs->cout, 200 + _i, 0.5f) : NULL;
    float *dout = random_tensor(ny, 300 + _i, 1.0f);

    conv_result fp = run_conv(E2G_PRECISION_FP32, c, x, w, b, dout);
    conv_result bf = run_conv(E2G_PRECISION_BF16, c, x, w, b, dout);
    conv_result fp2 = run_conv(E2G_PRECISION_FP32, c, x, w, b, dout);
    ck_assert_msg(!memcmp(fp.out, fp2.out, ny * sizeof(float)) && !memcmp(fp.dx, fp2.dx, nx * sizeof(float)) &&
                      !memcmp(fp.dw, fp2.dw, nw * sizeof(float)) && !memcmp(fp.db, fp2.db, cs->cout * sizeof(float)),
                  "fp32 changed after a bf16 run");

    conv_ref exact = naive_conv(rounded(x, nx), rounded(w, nw), b, rounded(dout, ny), c->N, c->H, c->W, cs);
    /* forwards with cin < 4 and backwards with cout < 32 stay fp32 (conv.h):
     * there, bf16's results must be fp32's bit for bit */
    set_prec(E2G_PRECISION_BF16);
    int fwd_bf16 = e2g_conv_precision(cs->cin, cs->cout, 0) == E2G_PRECISION_BF16;
    int bwd_bf16 = e2g_conv_precision(cs->cin, cs->cout, 1) == E2G_PRECISION_BF16;
    set_prec(E2G_PRECISION_FP32);
    ck_assert_int_eq(fwd_bf16, cs->cin >= 4);
    ck_assert_int_eq(bwd_bf16, cs->cout >= 32);
    if (fwd_bf16) check_exact("out", bf.out, &exact.out);
    else ck_assert_msg(!memcmp(bf.out, fp.out, ny * sizeof(float)), "cin < 4: the forward must stay fp32");
    if (bwd_bf16) {
        check_exact("dx", bf.dx, &exact.dx);
        check_exact("dweight", bf.dw, &exact.dw);
        if (c->bias) check_exact("dbias", bf.db, &exact.db);
    } else {
        ck_assert_msg(!memcmp(bf.dx, fp.dx, nx * sizeof(float)) && !memcmp(bf.dw, fp.dw, nw * sizeof(float)) &&
                          !memcmp(bf.db, fp.db, cs->cout * sizeof(float)),
                      "cout < 32: the backward must stay fp32");
    }

    conv_ref plain = naive_conv(x, w, b, dout, c->N, c->H, c->W, cs);
    if (fwd_bf16) check_bf16_vs_fp32("out", bf.out, fp.out, &plain.out, ny);
    if (bwd_bf16) {
        check_bf16_vs_fp32("dx", bf.dx, fp.dx, &plain.dx, nx);
        check_bf16_vs_fp32("dweight", bf.dw, fp.dw, &plain.dw, nw);
        if (c->bias) check_bf16_vs_fp32("dbias", bf.db, fp.db, &plain.db, cs->cout);
    }

    /* input gradient alone (frozen weights, LoRA) equals the full backward's */
    float *dx_only = test_alloc(nx * sizeof(float));
    set_prec(E2G_PRECISION_BF16);
    e2g_conv2d_backward(dx_only, NULL, NULL, dout, x, w, c->N, c->H, c->W, cs);
    set_prec(E2G_PRECISION_FP32);
    ck_assert(rel_error("dx alone bf16", dx_only, bf.dx, nx, TOL_SAME_BF16) <= TOL_SAME_BF16);
}
END_TEST

/* The fused upsample-conv: against a naive upsample + 3×3 conv. */
START_TEST(test_upconv_bf16) {
    if (!bf16_available()) return;
    int N = 2, H = 9, W = 11, cin = _i ? 64 : 16, cout = _i ? 32 : 16, bias = _i == 0;
    fprintf(stderr, "-- upconv %d->%d%s\n", cin, cout, bias ? " bias" : "");
    size_t nx = (size_t)N * H * W * cin, ny = (size_t)N * 4 * H * W * cout, nw = (size_t)cout * cin * 9;
    float *x = random_tensor(nx, 11 + _i, 1.0f), *w = random_tensor(nw, 12 + _i, 0.2f);
    float *b = bias ? random_tensor(cout, 13, 0.5f) : NULL, *dout = random_tensor(ny, 14 + _i, 1.0f);
    float *out[3], *dx[3], *dw[3], *db[3];
    e2g_precision order[3] = {E2G_PRECISION_FP32, E2G_PRECISION_BF16, E2G_PRECISION_FP32};
    for (int r = 0; r < 3; r++) {
        set_prec(order[r]);
        out[r] = test_alloc(ny * sizeof(float)), dx[r] = test_alloc(nx * sizeof(float));
        dw[r] = test_alloc(nw * sizeof(float)), db[r] = test_alloc(cout * sizeof(float));
        e2g_upconv2x_forward(out[r], x, w, b, N, H, W, cin, cout);
        e2g_upconv2x_backward(dx[r], dw[r], bias ? db[r] : NULL, dout, x, w, N, H, W, cin, cout);
    }
    set_prec(E2G_PRECISION_FP32);
    ck_assert(!memcmp(out[0], out[2], ny * sizeof(float)) && !memcmp(dx[0], dx[2], nx * sizeof(float)) &&
              !memcmp(dw[0], dw[2], nw * sizeof(float)));

    /* naive: the upsampled copy, a 3×3 zero-pad conv, the gradient folded back */
    float *up = test_alloc(4 * nx * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int y = 0; y < 2 * H; y++)
            for (int xx = 0; xx < 2 * W; xx++)
                memcpy(up + (((size_t)n * 2 * H + y) * 2 * W + xx) * cin, x + (((size_t)n * H + y / 2) * W + xx / 2) * cin,
                       cin * sizeof(float));
    e2g_conv_shape cs = {cin, cout, 3, 1, 1, E2G_PAD_ZERO};
    conv_ref r = naive_conv(up, w, b, dout, N, 2 * H, 2 * W, &cs);
    ref_t rdx = ref_new(nx, r.dx.k * 4);
    for (int n = 0; n < N; n++)
        for (int y = 0; y < 2 * H; y++)
            for (int xx = 0; xx < 2 * W; xx++)
                for (int c = 0; c < cin; c++) {
                    size_t s = (((size_t)n * 2 * H + y) * 2 * W + xx) * cin + c, d = (((size_t)n * H + y / 2) * W + xx / 2) * cin + c;
                    rdx.v[d] += r.dx.v[s], rdx.s[d] += r.dx.s[s];
                }
    /* fp32 itself against the naive result, so the references are right */
    ck_assert(rel_error("out fp32 vs naive", out[0], to_float(&r.out), ny, 1e-5) <= 1e-5);
    ck_assert(rel_error("dx fp32 vs naive", dx[0], to_float(&rdx), nx, 1e-5) <= 1e-5);
    ck_assert(rel_error("dw fp32 vs naive", dw[0], to_float(&r.dw), nw, 1e-5) <= 1e-5);
    check_bf16_vs_fp32("upconv out", out[1], out[0], &r.out, ny);
    if (cout >= 32) { /* narrower backwards stay fp32 (conv.h) */
        check_bf16_vs_fp32("upconv dx", dx[1], dx[0], &rdx, nx);
        check_bf16_vs_fp32("upconv dweight", dw[1], dw[0], &r.dw, nw);
        if (bias) check_bf16_vs_fp32("upconv dbias", db[1], db[0], &r.db, cout);
    } else {
        ck_assert_msg(!memcmp(dx[1], dx[0], nx * sizeof(float)) && !memcmp(dw[1], dw[0], nw * sizeof(float)),
                      "upconv cout < 32: the backward must stay fp32");
    }
}
END_TEST

/* Bands: a band holding the whole image with its halo rows equals the
 * whole-image call in bf16, and bf16 bands are within tolerance of fp32. */
START_TEST(test_band_bf16) {
    if (!bf16_available()) return;
    int H = 16, W = 20;
    static const e2g_conv_shape shapes[] = {{8, 16, 7, 1, 3, E2G_PAD_REFLECT},
                                            {16, 32, 3, 2, 1, E2G_PAD_ZERO},
                                            {32, 32, 3, 1, 1, E2G_PAD_REFLECT}};
    for (int s = 0; s < 3; s++) {
        const e2g_conv_shape *cs = &shapes[s];
        int p = cs->pad, rows = H + 2 * p, Ho = e2g_conv2d_out_size(H, cs), Wo = e2g_conv2d_out_size(W, cs);
        fprintf(stderr, "-- band %dx%d s%d %s %d->%d\n", cs->k, cs->k, cs->stride,
                cs->pad_mode == E2G_PAD_REFLECT ? "reflect" : "zero", cs->cin, cs->cout);
        size_t nx = (size_t)H * W * cs->cin, ny = (size_t)Ho * Wo * cs->cout;
        float *x = random_tensor(nx, 40 + s, 1.0f), *w = random_tensor((size_t)cs->cout * cs->cin * cs->k * cs->k, 50 + s, 0.2f);
        float *b = random_tensor(cs->cout, 60 + s, 0.5f);
        float *band = test_alloc((size_t)rows * W * cs->cin * sizeof(float)); /* halo rows: reflected or zero */
        for (int y = 0; y < rows; y++) {
            int sy = cs->pad_mode == E2G_PAD_REFLECT ? e2g_reflect_index(y - p, H) : y - p;
            if (sy >= 0 && sy < H) memcpy(band + (size_t)y * W * cs->cin, x + (size_t)sy * W * cs->cin, (size_t)W * cs->cin * sizeof(float));
        }
        float *whole = test_alloc(ny * sizeof(float)), *bb = test_alloc(ny * sizeof(float)), *bf = test_alloc(ny * sizeof(float));
        set_prec(E2G_PRECISION_FP32);
        e2g_conv2d_forward_band(bf, band, w, b, rows, W, cs);
        set_prec(E2G_PRECISION_BF16);
        e2g_conv2d_forward(whole, x, w, b, 1, H, W, cs);
        e2g_conv2d_forward_band(bb, band, w, b, rows, W, cs);
        set_prec(E2G_PRECISION_FP32);
        ck_assert(rel_error("band vs whole bf16", bb, whole, ny, TOL_SAME_BF16) <= TOL_SAME_BF16);
        check_bf16_vs_fp32("band", bb, bf, NULL, ny);
    }
    /* the fused upsample on a band: rows −1 .. H with zero halo rows */
    int cin = 32, cout = 16;
    size_t nx = (size_t)H * W * cin, ny = (size_t)4 * H * W * cout;
    float *x = random_tensor(nx, 70, 1.0f), *w = random_tensor((size_t)cout * cin * 9, 71, 0.2f), *b = random_tensor(cout, 72, 0.5f);
    float *band = test_alloc((size_t)(H + 2) * W * cin * sizeof(float));
    memcpy(band + (size_t)W * cin, x, nx * sizeof(float));
    float *whole = test_alloc(ny * sizeof(float)), *bb = test_alloc(ny * sizeof(float)), *bf = test_alloc(ny * sizeof(float));
    e2g_upconv2x_forward_band(bf, band, w, b, H + 2, W, cin, cout);
    set_prec(E2G_PRECISION_BF16);
    e2g_upconv2x_forward(whole, x, w, b, 1, H, W, cin, cout);
    e2g_upconv2x_forward_band(bb, band, w, b, H + 2, W, cin, cout);
    set_prec(E2G_PRECISION_FP32);
    fprintf(stderr, "-- upconv band %d->%d\n", cin, cout);
    ck_assert(rel_error("upconv band vs whole bf16", bb, whole, ny, TOL_SAME_BF16) <= TOL_SAME_BF16);
    check_bf16_vs_fp32("upconv band", bb, bf, NULL, ny);
}
END_TEST

/* ---- gemm and linear -------------------------------------------------------- */

/* gemm_bf16 in every orientation, with alpha, beta and padded strides,
 * against the exact product of the rounded operands; C's padding columns
 * stay untouched. */
START_TEST(test_gemm_bf16) {
    if (!bf16_available()) return;
    int M = 70, N = 66, K = 80, ld_pad = 5;
    int ta = _i & 1, tb = (_i >> 1) & 1;
    float alpha = (_i & 4) ? 0.5f : 1.0f, beta = (_i & 8) ? 1.0f : 0.0f;
    int lda = (ta ? M : K) + ld_pad, ldb = (tb ? K : N) + ld_pad, ldc = N + ld_pad;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = random_tensor(na, 80 + _i, 1.0f), *B = random_tensor(nb, 90 + _i, 1.0f);
    float *C0 = random_tensor(nc, 100 + _i, 1.0f), *C = test_alloc(nc * sizeof(float)), *C32 = test_alloc(nc * sizeof(float));
    memcpy(C, C0, nc * sizeof(float));
    memcpy(C32, C0, nc * sizeof(float));
    e2g_gemm_bf16(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    e2g_gemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C32, ldc);
    fprintf(stderr, "-- gemm_bf16 %c%c alpha %g beta %g\n", ta ? 'T' : 'N', tb ? 'T' : 'N', alpha, beta);
    ref_t r = ref_new((size_t)M * N, K + 2), r32 = ref_new((size_t)M * N, K + 2);
    float *got = test_alloc((size_t)M * N * sizeof(float)), *got32 = test_alloc((size_t)M * N * sizeof(float));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, acc_s = 0, acc32 = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float bv = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                double p = (double)e2g_bf16_to_f32(e2g_bf16_round(a)) * e2g_bf16_to_f32(e2g_bf16_round(bv));
                acc += p, acc_s += fabs(p), acc32 += (double)a * bv;
            }
            size_t o = (size_t)i * N + j;
            double c0 = C0[(size_t)i * ldc + j];
            r.v[o] = alpha * acc + beta * c0, r.s[o] = fabs(alpha) * acc_s + fabs(beta * c0);
            r32.v[o] = alpha * acc32, r32.s[o] = r.s[o];
            got[o] = C[(size_t)i * ldc + j];
            got32[o] = C32[(size_t)i * ldc + j] - beta * (float)c0;
            for (int pcol = N; pcol < ldc; pcol++)
                ck_assert(C[(size_t)i * ldc + pcol] == C0[(size_t)i * ldc + pcol]);
        }
    check_exact("gemm", got, &r);
    float *diff = test_alloc((size_t)M * N * sizeof(float));
    for (size_t o = 0; o < (size_t)M * N; o++) diff[o] = (float)(got[o] - beta * (double)C0[(o / N) * ldc + o % N]);
    check_bf16_vs_fp32("gemm product", diff, got32, &r32, (size_t)M * N);
}
END_TEST

/* The transformer's linear layers: bf16 above the size rule, bit-identical
 * fp32 below it (LoRA's rank-r factors), fp32 unchanged after bf16. */
START_TEST(test_linear_bf16) {
    if (!bf16_available()) return;
    int M = 256, in = 128, outf = 512;
    float *x = random_tensor((size_t)M * in, 21, 1.0f), *w = random_tensor((size_t)outf * in, 22, 0.1f);
    float *b = random_tensor(outf, 23, 0.5f), *dy = random_tensor((size_t)M * outf, 24, 1.0f);
    float *y[3], *dx[3], *dw[3], *db[3];
    e2g_precision order[3] = {E2G_PRECISION_FP32, E2G_PRECISION_BF16, E2G_PRECISION_FP32};
    for (int r = 0; r < 3; r++) {
        set_prec(order[r]);
        y[r] = test_alloc((size_t)M * outf * sizeof(float)), dx[r] = test_alloc((size_t)M * in * sizeof(float));
        dw[r] = test_alloc((size_t)outf * in * sizeof(float)), db[r] = test_alloc(outf * sizeof(float));
        e2g_linear_forward(y[r], x, w, b, M, in, outf, 0);
        e2g_linear_backward(dx[r], dw[r], db[r], dy, x, w, M, in, outf);
    }
    set_prec(E2G_PRECISION_FP32);
    ck_assert(!memcmp(y[0], y[2], (size_t)M * outf * sizeof(float)) && !memcmp(dx[0], dx[2], (size_t)M * in * sizeof(float)) &&
              !memcmp(dw[0], dw[2], (size_t)outf * in * sizeof(float)));
    fprintf(stderr, "-- linear %d x %d -> %d\n", M, in, outf);
    check_bf16_vs_fp32("linear out", y[1], y[0], NULL, (size_t)M * outf);
    check_bf16_vs_fp32("linear dx", dx[1], dx[0], NULL, (size_t)M * in);
    check_bf16_vs_fp32("linear dweight", dw[1], dw[0], NULL, (size_t)outf * in);
    ck_assert(!memcmp(db[1], db[0], outf * sizeof(float))); /* the bias gradient stays fp32 */

    /* a rank-8 LoRA factor (out 8 < 64): fp32 whatever the setting */
    int r8 = 8;
    float *h32 = test_alloc((size_t)M * r8 * sizeof(float)), *h16 = test_alloc((size_t)M * r8 * sizeof(float));
    e2g_linear_forward(h32, x, w, NULL, M, in, r8, 0);
    set_prec(E2G_PRECISION_BF16);
    e2g_linear_forward(h16, x, w, NULL, M, in, r8, 0);
    set_prec(E2G_PRECISION_FP32);
    ck_assert(!memcmp(h32, h16, (size_t)M * r8 * sizeof(float)));
}
END_TEST

static float *truncated(const float *x, size_t n) {
    float *r = test_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        u &= 0xffff0000u;
        memcpy(&r[i], &u, sizeof u);
    }
    return r;
}

/* The checks themselves catch wrong results: the exact check tells
 * round-to-nearest-even from truncation and sees a 2% error in one weight;
 * the typical check sees a kernel that drops a tap. */
START_TEST(test_broken_bf16_is_caught) {
    if (!bf16_available()) return;
    const conv_case *c = &conv_cases[2];
    const e2g_conv_shape *cs = &c->cs;
    size_t nx = (size_t)c->N * c->H * c->W * cs->cin, nw = (size_t)cs->cout * cs->cin * 9;
    size_t ny = (size_t)c->N * e2g_conv2d_out_size(c->H, cs) * e2g_conv2d_out_size(c->W, cs) * cs->cout;
    float *x = random_tensor(nx, 5, 1.0f), *w = random_tensor(nw, 6, 0.2f), *dout = random_tensor(ny, 7, 1.0f);
    conv_result bf = run_conv(E2G_PRECISION_BF16, c, x, w, NULL, dout);
    conv_ref trunc = naive_conv(truncated(x, nx), truncated(w, nw), NULL, dout, c->N, c->H, c->W, cs);
    ck_assert(bound_check("truncating reference (expected to fail)", bf.out, &trunc.out, (trunc.out.k + 8) * U32) > 0);

    float *w2 = test_alloc(nw * sizeof(float));
    memcpy(w2, w, nw * sizeof(float));
    w2[17] *= 1.02f;
    conv_result bad = run_conv(E2G_PRECISION_BF16, c, x, w2, NULL, dout);
    conv_ref exact = naive_conv(rounded(x, nx), rounded(w, nw), NULL, rounded(dout, ny), c->N, c->H, c->W, cs);
    ck_assert(bound_check("perturbed weight (expected to fail)", bad.out, &exact.out, (exact.out.k + 8) * U32) > 0);

    float *w3 = test_alloc(nw * sizeof(float));
    memcpy(w3, w, nw * sizeof(float));
    for (size_t o = 0; o < nw; o += 9) w3[o + 4] = 0; /* the centre tap dropped */
    conv_result fp = run_conv(E2G_PRECISION_FP32, c, x, w, NULL, dout);
    conv_result drop = run_conv(E2G_PRECISION_BF16, c, x, w3, NULL, dout);
    ck_assert(rel_error("dropped tap (expected to fail)", drop.out, fp.out, ny, TOL_BF16) > TOL_BF16);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bf16");
    TCase *tc = tcase_create("bf16");
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_setting);
    tcase_add_test(tc, test_round);
    tcase_add_test(tc, test_convert);
    tcase_add_loop_test(tc, test_conv_bf16, 0, (int)(sizeof conv_cases / sizeof *conv_cases));
    tcase_add_loop_test(tc, test_upconv_bf16, 0, 2);
    tcase_add_test(tc, test_band_bf16);
    tcase_add_loop_test(tc, test_gemm_bf16, 0, 16);
    tcase_add_test(tc, test_linear_bf16);
    tcase_add_test(tc, test_broken_bf16_is_caught);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
