/* test_attention.c — attention_forward/backward against the float64 PyTorch
 * reference (tests/refs/attention_refs.py), and a 16384-token self-attention
 * that must run in memory linear in the token count. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "attention.h"
#include "common.h"
#include "testutil.h"

static const char *const CASES[] = {"self_37",    "self_200",       "self_5_d32",
                                     "cross_91x8", "cross_300x8_h1", "large_1100"};
enum { NCASES = sizeof CASES / sizeof CASES[0] };
/* Each case runs on one thread and on three: with three, self_200 and
 * cross_300x8_h1 have fewer key-block tasks than threads, so the backward
 * splits their queries over private dk/dv copies (cross_300x8_h1 unevenly:
 * 5 query blocks in 3). */
static const int THREADS[] = {1, 3};

/* A gradient buffer pre-filled with random values, so the backward's
 * accumulation (+=) is checked: after the call, subtract_prefill() leaves
 * only what the backward added. */
static float *prefilled(size_t n, unsigned seed) {
    float *g = malloc(n * sizeof(float));
    fill_random(g, n, seed);
    return g;
}

static void subtract_prefill(float *g, size_t n, unsigned seed) {
    float *base = prefilled(n, seed);
    for (size_t i = 0; i < n; i++) g[i] -= base[i];
    free(base);
}

START_TEST(test_reference) {
    const char *const cname = CASES[_i / 2];
    const int threads = THREADS[_i % 2], saved_threads = e2g_get_threads();
    e2g_set_threads(threads);
    char name[64];
    snprintf(name, sizeof name, "attention_%s", cname);
    e2g_st_file *f = ref_open(name);
    const int N = ref_meta_int(f, "N"), Lq = ref_meta_int(f, "Lq"), Lk = ref_meta_int(f, "Lk");
    const int C = ref_meta_int(f, "C"), heads = ref_meta_int(f, "heads");
    size_t nq, nk, nout;
    float *q = ref_tensor(f, "q", &nq), *k = ref_tensor(f, "k", &nk), *v = ref_tensor(f, "v", NULL);
    float *dout = ref_tensor(f, "dout", NULL), *want_out = ref_tensor(f, "out", &nout);
    float *want_dq = ref_tensor(f, "dq", NULL), *want_dk = ref_tensor(f, "dk", NULL);
    float *want_dv = ref_tensor(f, "dv", NULL);
    size_t nlse;
    float *want_lse = ref_tensor(f, "lse", &nlse);
    ck_assert_uint_eq(nq, (size_t)N * Lq * C);
    ck_assert_uint_eq(nk, (size_t)N * Lk * C);
    ck_assert_uint_eq(nout, nq);
    ck_assert_uint_eq(nlse, (size_t)N * heads * Lq);

    float *out = malloc(nq * sizeof(float)), *lse = malloc(nlse * sizeof(float));
    e2g_attention_forward(out, lse, q, k, v, N, Lq, Lk, C, heads);
    char what[128];
    snprintf(what, sizeof what, "%s out (%d threads)", cname, threads);
    const double err_out = rel_error(what, out, want_out, nq, 1e-5);
    snprintf(what, sizeof what, "%s lse (%d threads)", cname, threads);
    const double err_lse = rel_error(what, lse, want_lse, nlse, 1e-5);
    ck_assert(err_out <= 1e-5 && err_lse <= 1e-5);

    float *dq = prefilled(nq, 1), *dk = prefilled(nk, 2), *dv = prefilled(nk, 3);
    e2g_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, N, Lq, Lk, C, heads);
    subtract_prefill(dq, nq, 1);
    subtract_prefill(dk, nk, 2);
    subtract_prefill(dv, nk, 3);
    snprintf(what, sizeof what, "%s dq (%d threads)", cname, threads);
    const double err_dq = rel_error(what, dq, want_dq, nq, 1e-4);
    snprintf(what, sizeof what, "%s dk (%d threads)", cname, threads);
    const double err_dk = rel_error(what, dk, want_dk, nk, 1e-4);
    snprintf(what, sizeof what, "%s dv (%d threads)", cname, threads);
    const double err_dv = rel_error(what, dv, want_dv, nk, 1e-4);
    ck_assert(err_dq <= 1e-4 && err_dk <= 1e-4 && err_dv <= 1e-4);

    free(out), free(lse), free(dq), free(dk), free(dv);
    e2g_st_close(f);
    e2g_set_threads(saved_threads);
}
END_TEST

static long max_rss_kib(void) {
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* 16384 tokens: the full score matrix would be 1 GiB of floats.  The peak
 * RSS may grow only by scratch.  The buffers are touched first so they are
 * already counted in the baseline (and exceed the small earlier tests'
 * peaks, should they run in this same process), and a small warm-up call
 * takes oneDNN's one-time initialisation (JIT kernels, ~7 MiB) out of the
 * measurement. */
START_TEST(test_long_sequence_linear_memory) {
    const int L = 16384, C = 64, heads = 1;
    const size_t n = (size_t)L * C;
    float *q = malloc(n * sizeof(float)), *k = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    float *dout = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float)), *lse = malloc(L * sizeof(float));
    float *dq = malloc(n * sizeof(float)), *dk = malloc(n * sizeof(float)), *dv = malloc(n * sizeof(float));
    memset(out, 0, n * sizeof(float));
    memset(lse, 0, L * sizeof(float));
    memset(dq, 0, n * sizeof(float));
    memset(dk, 0, n * sizeof(float));
    memset(dv, 0, n * sizeof(float));
    fill_random(q, n, 11);
    fill_random(k, n, 12);
    fill_random(v, n, 13);
    fill_random(dout, n, 14);
    for (size_t i = 0; i < n; i++) q[i] *= 3.0f, k[i] *= 3.0f; /* logits std ≈ 3: peaked rows */

    e2g_attention_forward(out, lse, q, k, v, 1, 300, 300, C, heads);
    e2g_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, 1, 300, 300, C, heads);
    memset(dq, 0, n * sizeof(float));
    memset(dk, 0, n * sizeof(float));
    memset(dv, 0, n * sizeof(float));

    const long before = max_rss_kib();
    const double t0 = seconds();
    e2g_attention_forward(out, lse, q, k, v, 1, L, L, C, heads);
    const double t1 = seconds();
    e2g_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, 1, L, L, C, heads);
    const double t2 = seconds();
    const long growth = max_rss_kib() - before;
    fprintf(stderr, "attention L=%d C=%d: forward %.3f s, backward %.3f s, peak RSS growth %ld KiB\n", L,
            C, t1 - t0, t2 - t1, growth);
#ifdef __SANITIZE_ADDRESS__
    const long bound = 256 * 1024; /* AddressSanitizer's shadow and quarantine come on top */
#else
    const long bound = 64 * 1024;
#endif
    ck_assert_msg(growth < bound, "peak RSS grew by %ld KiB (L² floats would be 1 GiB)", growth);

    /* Each output row is a convex combination of v's rows. */
    for (int c = 0; c < C; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j < L; j++) lo = fminf(lo, v[(size_t)j * C + c]), hi = fmaxf(hi, v[(size_t)j * C + c]);
        for (int i = 0; i < L; i++) {
            const float o = out[(size_t)i * C + c];
            ck_assert_msg(o >= lo - 1e-5f && o <= hi + 1e-5f, "out[%d,%d] = %g outside [%g, %g]", i, c, o, lo, hi);
        }
    }
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(isfinite(dq[i]) && isfinite(dk[i]) && isfinite(dv[i]), "non-finite gradient at %zu", i);
    for (int i = 0; i < L; i++) ck_assert_msg(isfinite(lse[i]), "non-finite lse[%d]", i);

    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("reference");
    tcase_add_loop_test(tc, test_reference, 0, 2 * NCASES);
    suite_add_tcase(s, tc);
    TCase *big = tcase_create("long_sequence");
    tcase_set_timeout(big, 300);
    tcase_add_test(big, test_long_sequence_linear_memory);
    suite_add_tcase(s, big);
    return s;
}

int main(void) { return run_suite(attention_suite()); }
