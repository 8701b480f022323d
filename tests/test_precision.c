/* test_precision.c — bf16 serves requests only if it edits like fp32: each
 * real photo's 8-bit edit in bf16 must be within 40 dB PSNR of the fp32
 * edit, for every base concept of the shipped model and each shipped
 * adapter, through the same path a request takes (e2g_infer_image: pad,
 * lean inference, crop, quantise).  Also: the precision switch and its
 * parser as the CLI and the server use them. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "common.h"
#include "image.h"
#include "infer.h"
#include "model_io.h"
#include "precision.h"
#include "testutil.h"

#define MIN_PSNR 40.0

static const char *const photos[] = {"chelsea.png", "coffee.png", "astronaut.png", "rocket.png"};
#define N_PHOTOS (int)(sizeof photos / sizeof photos[0])

/* PSNR of two 8-bit images of one size; INFINITY when equal. */
static double psnr8(const e2g_image *a, const e2g_image *b) {
    size_t n = (size_t)a->width * a->height * 3;
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a->rgb[i] - b->rgb[i];
        se += d * d;
    }
    return se == 0 ? INFINITY : 10 * log10(255.0 * 255.0 / (se / n));
}

static e2g_image read_photo(const char *name) {
    char path[1024], err[E2G_ERR_LEN];
    snprintf(path, sizeof path, "%s/tests/data/%s", test_source(), name);
    e2g_image im = {0};
    ck_assert_msg(e2g_image_read_file(&im, path, 1L << 24, err) == 0, "%s: %s", path, err);
    return im;
}

/* Edits every photo with `spec` in fp32 and in bf16; returns the lowest
 * PSNR between the two and counts the edits that differ at all. */
static double worst_psnr(const e2g_runtime *rt, e2g_model *m, e2g_adapter **ad, int n_ad, const char *spec,
                         int *differing) {
    char err[E2G_ERR_LEN];
    e2g_request req;
    ck_assert_msg(e2g_request_resolve(&req, m, ad, n_ad, spec, 1.0f, err) == 0, "%s: %s", spec, err);
    double worst = INFINITY;
    for (int p = 0; p < N_PHOTOS; p++) {
        e2g_image out[2];
        for (int prec = 0; prec < 2; prec++) {
            ck_assert_int_eq(e2g_set_precision(prec ? E2G_PRECISION_BF16 : E2G_PRECISION_FP32), 0);
            out[prec] = read_photo(photos[p]);
            ck_assert_msg(e2g_infer_image(&out[prec], rt, &req.edit, 0, err) == 0, "%s", err);
        }
        double db = psnr8(&out[0], &out[1]);
        if (isfinite(db)) (*differing)++;
        ck_assert_msg(db >= MIN_PSNR, "%s on %s: bf16 edit only %.2f dB from fp32", spec, photos[p], db);
        worst = db < worst ? db : worst;
        e2g_image_free(&out[0]), e2g_image_free(&out[1]);
    }
    e2g_request_free(&req);
    return worst;
}

START_TEST(test_shipped_models_bf16_vs_fp32) {
    char path[1024], err[E2G_ERR_LEN];
    snprintf(path, sizeof path, "%s/models/e2gan-s.safetensors", test_source());
    e2g_model *m;
    ck_assert_msg(e2g_model_load(&m, path, err) == 0, "%s", err);
    e2g_runtime *rt;
    ck_assert_msg(e2g_runtime_new(&rt, m, "cpu", err) == 0, "%s", err);

    e2g_adapter *ad[8];
    int n_ad = 0;
    snprintf(path, sizeof path, "%s/models/adapters", test_source());
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char file[2048];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        ck_assert_int_lt(n_ad, 8);
        ck_assert_msg(e2g_adapter_load(&ad[n_ad], m, file, err) == 0, "%s: %s", file, err);
        n_ad++;
    }
    closedir(d);
    ck_assert_int_ge(n_ad, 1);

    int differing = 0, edits = 0;
    for (int c = 0; c < m->cfg.n_concepts; c++, edits += N_PHOTOS)
        fprintf(stderr, "  %-10s worst %.2f dB\n", m->concept_names[c],
                worst_psnr(rt, m, ad, n_ad, m->concept_names[c], &differing));
    for (int a = 0; a < n_ad; a++, edits += N_PHOTOS)
        fprintf(stderr, "  %-10s worst %.2f dB (adapter)\n", ad[a]->concept,
                worst_psnr(rt, m, ad, n_ad, ad[a]->concept, &differing));
    /* bf16 really ran: most edits differ from fp32 somewhere */
    ck_assert_msg(differing * 2 > edits, "only %d of %d bf16 edits differ from fp32", differing, edits);

    e2g_set_precision(E2G_PRECISION_FP32);
    for (int a = 0; a < n_ad; a++) e2g_adapter_free(ad[a]);
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

/* The CLI's and the server's entry: names, $E2GAN_PRECISION, errors. */
START_TEST(test_precision_setup) {
    char err[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_precision_setup("fp32", err), 0);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_FP32);
    ck_assert_int_eq(e2g_precision_setup("BF16", err), 0);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_BF16);
    ck_assert_int_eq(e2g_precision_setup("fp16", err), -1);
    ck_assert_msg(strstr(err, "fp16") != NULL, "%s", err);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_BF16); /* unchanged by a bad name */
    setenv("E2GAN_PRECISION", "fp32", 1);
    ck_assert_int_eq(e2g_precision_setup(NULL, err), 0);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_FP32);
    ck_assert_int_eq(e2g_precision_setup("", err), 0);
    ck_assert_int_eq(e2g_get_precision(), E2G_PRECISION_FP32);
    unsetenv("E2GAN_PRECISION");
    ck_assert_int_eq(e2g_precision_setup(NULL, err), 0); /* auto */
    ck_assert_int_eq(e2g_get_precision(), e2g_precision_native());
    e2g_set_precision(E2G_PRECISION_FP32);
}
END_TEST

int main(void) {
    Suite *s = suite_create("precision");
    TCase *tc = tcase_create("precision");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_precision_setup);
    tcase_add_test(tc, test_shipped_models_bf16_vs_fp32);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
