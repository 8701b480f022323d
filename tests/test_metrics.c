/* test_metrics.c — PSNR, SSIM, edge F1 and paper share (engine/metrics.c)
 * against the numpy reference of tests/refs/metrics_refs.py (random pairs, a
 * smooth image against a noisy copy, a photo against a blurred and quantised
 * copy, flat images, exactly one SSIM window, the PSNR cap; for edges also a
 * photo shifted, blurred, faded, against white and against its mean colour,
 * and a line drawing against a shifted copy and a photo: edge maps bit for
 * bit), plus closed-form values, symmetry, too-small images, independence
 * from the thread count, and what the edge F1 must say: identical → 1,
 * blank or constant → 0, a 1-px shift → high, a blur → lower, a flat
 * reference → undefined. */
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
#define EDGE_TOL 1e-12 /* absolute, on F1, precision and recall; relative on the threshold */

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

        e2g_edge_score es;
        double f1 = e2g_edge_f1(b, a, w, h, &es);
        const char *keys[3] = {"edge_f1", "edge_p", "edge_r"};
        double got[3] = {f1, es.precision, es.recall}, edge_err = 0;
        for (int k = 0; k < 3; k++) {
            snprintf(key, sizeof key, "%s.%s", name, keys[k]);
            double want = ref_meta_double(f, key);
            double e = isnan(want) || isnan(got[k]) ? (isnan(want) && isnan(got[k]) ? 0 : INFINITY)
                                                    : fabs(got[k] - want);
            edge_err = fmax(edge_err, e);
        }
        snprintf(key, sizeof key, "%s.edge_t", name);
        double want_t = ref_meta_double(f, key), t_err = fabs(es.threshold - want_t) / want_t;
        long map_diff = 0, n_edges = 0;
        uint8_t *map = malloc((size_t)w * h);
        for (int side = 0; side < 2; side++) {
            snprintf(key, sizeof key, "%s.edges_%c", name, side ? 'b' : 'a');
            float *want_map = ref_tensor(f, key, NULL);
            n_edges += e2g_edge_map(side ? b : a, w, h, es.threshold, map);
            for (size_t i = 0; i < (size_t)w * h; i++) map_diff += map[i] != (want_map[i] != 0);
        }
        free(map);
        snprintf(key, sizeof key, "%s.paper", name);
        double paper_err = fabs(e2g_paper_share(a, w, h) - ref_meta_double(f, key));
        ok = edge_err <= EDGE_TOL && t_err <= EDGE_TOL && map_diff == 0 && paper_err <= 1e-15;
        fprintf(stderr, "%-22s edge F1 %.6f P %.6f R %.6f (err %.2g)  T %8.3f (rel err %.2g)  "
                        "%ld edge pixels, %ld differ%s\n",
                "", f1, es.precision, es.recall, edge_err, es.threshold, t_err, n_edges, map_diff,
                ok ? "" : "  FAIL");
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

/* An image of random 8×8 blocks of random colours: straight edges at every
 * block boundary. */
static uint8_t *blocks_rgb(int w, int h, unsigned seed) {
    uint8_t *rgb = malloc((size_t)w * h * 3), *colours = random_rgb(w / 8 + 1, h / 8 + 1, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(rgb + ((size_t)y * w + x) * 3, colours + ((size_t)(y / 8) * (w / 8 + 1) + x / 8) * 3, 3);
    free(colours);
    return rgb;
}

/* a moved right by dx and down by dy, the uncovered pixels copied from the
 * nearest ones. */
static uint8_t *shifted(const uint8_t *a, int w, int h, int dx, int dy) {
    uint8_t *b = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sx = x - dx < 0 ? 0 : x - dx >= w ? w - 1 : x - dx;
            int sy = y - dy < 0 ? 0 : y - dy >= h ? h - 1 : y - dy;
            memcpy(b + ((size_t)y * w + x) * 3, a + ((size_t)sy * w + sx) * 3, 3);
        }
    return b;
}

/* a under a (2r+1)² box blur, clamped at the border, rounded. */
static uint8_t *blurred(const uint8_t *a, int w, int h, int r) {
    uint8_t *b = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int j = -r; j <= r; j++)
                    for (int i = -r; i <= r; i++) {
                        int sx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i;
                        int sy = y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j;
                        sum += a[((size_t)sy * w + sx) * 3 + c];
                    }
                int n = (2 * r + 1) * (2 * r + 1);
                b[((size_t)y * w + x) * 3 + c] = (uint8_t)((sum + n / 2) / n);
            }
    return b;
}

START_TEST(test_edge_f1_properties) {
    const int w = 96, h = 80;
    uint8_t *a = blocks_rgb(w, h, 11), *flat = malloc((size_t)w * h * 3);
    e2g_edge_score s;
    /* identical → 1 */
    ck_assert_double_eq(e2g_edge_f1(a, a, w, h, &s), 1.0);
    ck_assert_int_gt(s.ref_edges, 500);
    ck_assert_int_eq(s.edges, s.ref_edges);
    /* blank (white) and the best constant (the mean colour) → 0: no edges */
    memset(flat, 255, (size_t)w * h * 3);
    ck_assert_double_eq(e2g_edge_f1(flat, a, w, h, &s), 0.0);
    ck_assert_int_eq(s.edges, 0);
    ck_assert_double_eq(s.recall, 0.0);
    for (int c = 0; c < 3; c++) {
        long sum = 0;
        for (int i = 0; i < w * h; i++) sum += a[3 * i + c];
        for (int i = 0; i < w * h; i++) flat[3 * i + c] = (uint8_t)((sum + w * h / 2) / (w * h));
    }
    ck_assert_double_eq(e2g_edge_f1(flat, a, w, h, NULL), 0.0);
    /* a flat reference has nothing to find: undefined, whatever the image */
    ck_assert(isnan(e2g_edge_f1(a, flat, w, h, &s)));
    ck_assert_int_eq(s.ref_edges, 0);
    ck_assert_double_eq(s.threshold, E2G_EDGE_FLOOR);
    /* a copy moved by one pixel is within the tolerance → high; by two
     * are not; a blur fades and spreads the edges → lower */
    uint8_t *s1 = shifted(a, w, h, 1, 0), *s11 = shifted(a, w, h, 1, 1), *s2 = shifted(a, w, h, 2, 2);
    uint8_t *b1 = blurred(a, w, h, 1), *b2 = blurred(a, w, h, 2);
    double f_s1 = e2g_edge_f1(s1, a, w, h, NULL), f_s11 = e2g_edge_f1(s11, a, w, h, NULL);
    double f_s2 = e2g_edge_f1(s2, a, w, h, NULL), f_b1 = e2g_edge_f1(b1, a, w, h, NULL);
    double f_b2 = e2g_edge_f1(b2, a, w, h, NULL);
    fprintf(stderr, "blocks: shift 1 px %.3f, (1, 1) px %.3f, (2, 2) px %.3f; blur r1 %.3f, r2 %.3f\n", f_s1, f_s11,
            f_s2, f_b1, f_b2);
    ck_assert_double_ge(f_s1, 0.95);
    ck_assert_double_ge(f_s11, 0.9);
    ck_assert_double_lt(f_s2, 0.5);
    ck_assert_double_lt(f_b1, f_s1 - 0.1);
    ck_assert_double_lt(f_b2, f_b1);
    /* polarity is ignored; precision and recall swap with the roles when
     * the threshold is the same (a copy of a, a's threshold either way) */
    uint8_t *inv = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) inv[i] = (uint8_t)(255 - a[i]);
    ck_assert_double_eq(e2g_edge_f1(inv, a, w, h, NULL), 1.0);
    free(s1), free(s11), free(s2), free(b1), free(b2), free(inv), free(a), free(flat);
}
END_TEST

START_TEST(test_edge_small_and_lines) {
    uint8_t px[5 * 5 * 3];
    memset(px, 255, sizeof px);
    /* below 3×3 there is no pixel with all 8 neighbours */
    ck_assert(isnan(e2g_edge_threshold(px, 2, 5)));
    ck_assert(isnan(e2g_edge_f1(px, px, 5, 2, NULL)));
    /* a vertical step edge: Sobel 4·255 on the two columns beside the
     * step, thinned to one: the column left of the step (the plateau's
     * first pixel) */
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++) memset(px + (y * 5 + x) * 3, x < 3 ? 0 : 255, 3);
    uint8_t map[25];
    ck_assert_int_eq(e2g_edge_map(px, 5, 5, E2G_EDGE_FLOOR, map), 3);
    for (int y = 1; y < 4; y++) ck_assert_int_eq(map[y * 5 + 2], 1);
    /* a thin dark line is two edges (one each side), and the threshold
     * decides: 4·40 = 160 is an edge at T 159, not at T 160 */
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++) memset(px + (y * 5 + x) * 3, x == 2 ? 215 : 255, 3);
    ck_assert_int_eq(e2g_edge_map(px, 5, 5, 159.0, map), 6);
    ck_assert_int_eq(e2g_edge_map(px, 5, 5, 160.0, map), 0);
    /* paper: light grey pixels */
    uint8_t paper[4 * 3] = {255, 255, 255, 200, 208, 204, 199, 199, 199, 230, 250, 230};
    ck_assert_double_eq(e2g_paper_share(paper, 4, 1), 0.5);
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
    tcase_add_test(tc, test_edge_f1_properties);
    tcase_add_test(tc, test_edge_small_and_lines);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
