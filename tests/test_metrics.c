/* test_metrics.c — PSNR and SSIM (engine/metrics.c) against the numpy
 * float64 reference of tests/refs/metrics_refs.py (random pairs, a smooth
 * image against a noisy copy, a photo against a blurred and quantised copy,
 * flat images, exactly one SSIM window, the PSNR cap), plus closed-form
 * values, symmetry, too-small images and independence from the thread
 * count. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metrics.h"
#include "testutil.h"

#define SSIM_TOL 1e-6 /* absolute */
#define PSNR_TOL 1e-9 /* relative */

/* A reference image (H, W, 3) of float 0..255 integers as RGB8 (malloc'd). */
static uint8_t *ref_image(const e2g_st_file *f, const char *name, int *w, int *h) {
    const e2g_st_tensor *t = e2g_st_find(f, name);
    ck_assert_msg(t != NULL && t->ndim == 3 && t->shape[2] == 3, "%s: want (H, W, 3)", name);
    *h = (int)t->shape[0];
    *w = (int)t->shape[1];
    float *x = ref_tensor(f, name, NULL);
    uint8_t *rgb = malloc(t->numel);
    for (size_t i = 0; i < t->numel; i++) {
        ck_assert_msg(x[i] >= 0 && x[i] <= 255 && x[i] == floorf(x[i]), "%s[%zu] = %g", name, i, x[i]);
        rgb[i] = (uint8_t)x[i];
    }
    return rgb;
}

static uint8_t *random_rgb(int w, int h, unsigned seed) {
    size_t n = (size_t)w * h * 3;
    float *x = malloc(n * sizeof(float));
    fill_random(x, n, seed);
    uint8_t *rgb = malloc(n);
    for (size_t i = 0; i < n; i++) rgb[i] = (uint8_t)((x[i] + 1) * 127.99f);
    free(x);
    return rgb;
}

START_TEST(test_reference) {
    e2g_st_file *f = ref_open("metrics");
    const char *list = e2g_st_meta(f, "cases");
    ck_assert_ptr_nonnull(list);
    char *cases = strdup(list), *save = NULL;
    int n_cases = 0, failed = 0;
    for (char *name = strtok_r(cases, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        char key[128];
        int w, h, wb, hb;
        snprintf(key, sizeof key, "%s.a", name);
        uint8_t *a = ref_image(f, key, &w, &h);
        snprintf(key, sizeof key, "%s.b", name);
        uint8_t *b = ref_image(f, key, &wb, &hb);
        ck_assert(w == wb && h == hb);
        snprintf(key, sizeof key, "%s.psnr", name);
        double want_psnr = ref_meta_double(f, key);
        snprintf(key, sizeof key, "%s.ssim", name);
        double want_ssim = ref_meta_double(f, key);

        double psnr = e2g_psnr(a, b, w, h), ssim = e2g_ssim(a, b, w, h);
        double psnr_err = fabs(psnr - want_psnr) / want_psnr, ssim_err = fabs(ssim - want_ssim);
        int ok = psnr_err <= PSNR_TOL && ssim_err <= SSIM_TOL;
        fprintf(stderr, "%-22s %3dx%-3d PSNR %9.5f (rel err %.2g)  SSIM %+.8f (abs err %.2g)%s\n", name,
                w, h, psnr, psnr_err, ssim, ssim_err, ok ? "" : "  FAIL");
        failed += !ok;
        n_cases++;
        free(a);
        free(b);
    }
    free(cases);
    e2g_st_close(f);
    ck_assert_int_ge(n_cases, 8);
    ck_assert_msg(failed == 0, "%d of %d reference cases out of tolerance", failed, n_cases);
}
END_TEST

START_TEST(test_closed_forms) {
    const int w = 37, h = 23;
    uint8_t *a = random_rgb(w, h, 7), *b = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) b[i] = a[i] < 255 ? a[i] + 1 : 254;
    /* Every sample off by exactly one: MSE = 1. */
    ck_assert_double_eq_tol(e2g_psnr(a, b, w, h), 20 * log10(255.0), 1e-12);
    ck_assert_double_eq(e2g_psnr(a, a, w, h), E2G_PSNR_CAP);
    ck_assert_double_eq(e2g_ssim(a, a, w, h), 1.0);
    ck_assert_double_lt(e2g_ssim(a, b, w, h), 1.0);
    /* Black against white: MSE = 255², 0 dB. */
    memset(a, 0, (size_t)w * h * 3);
    memset(b, 255, (size_t)w * h * 3);
    ck_assert_double_eq_tol(e2g_psnr(a, b, w, h), 0.0, 1e-12);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_symmetric) {
    const int w = 40, h = 31;
    uint8_t *a = random_rgb(w, h, 1), *b = random_rgb(w, h, 2);
    ck_assert_double_eq(e2g_ssim(a, b, w, h), e2g_ssim(b, a, w, h));
    ck_assert_double_eq(e2g_psnr(a, b, w, h), e2g_psnr(b, a, w, h));
    free(a);
    free(b);
}
END_TEST

START_TEST(test_too_small) {
    uint8_t *a = random_rgb(30, 30, 3), *b = random_rgb(30, 30, 4);
    ck_assert(isnan(e2g_ssim(a, b, E2G_SSIM_WIN - 1, 30)));
    ck_assert(isnan(e2g_ssim(a, b, 30, E2G_SSIM_WIN - 1)));
    ck_assert(isfinite(e2g_ssim(a, b, E2G_SSIM_WIN, E2G_SSIM_WIN)));
    ck_assert(isfinite(e2g_psnr(a, b, 1, 1)));
    free(a);
    free(b);
}
END_TEST

START_TEST(test_thread_count) {
    const int w = 301, h = 97;
    uint8_t *a = random_rgb(w, h, 5), *b = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) b[i] = (uint8_t)(a[i] / 2 + (i % 7) * 9);
    int threads = e2g_get_threads();
    e2g_set_threads(1);
    double ssim1 = e2g_ssim(a, b, w, h), psnr1 = e2g_psnr(a, b, w, h);
    e2g_set_threads(3);
    double ssim3 = e2g_ssim(a, b, w, h), psnr3 = e2g_psnr(a, b, w, h);
    e2g_set_threads(threads);
    ck_assert_double_eq(ssim1, ssim3);
    ck_assert_double_eq(psnr1, psnr3);
    free(a);
    free(b);
}
END_TEST

int main(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_reference);
    tcase_add_test(tc, test_closed_forms);
    tcase_add_test(tc, test_symmetric);
    tcase_add_test(tc, test_too_small);
    tcase_add_test(tc, test_thread_count);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
