/* testutil.c — reference loading and comparison for the Check suites. */
#include "testutil.h"
#include "common.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

e2g_st_file *ref_open(const char *name) {
    const char *dir = getenv("E2G_REFS");
    ck_assert_msg(dir != NULL, "E2G_REFS is not set (run the tests through ctest)");
    char path[1024], err[E2G_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    e2g_st_file *f = NULL;
    ck_assert_msg(e2g_st_open(&f, path, err) == 0, "reference %s: %s", path, err);
    return f;
}

/* Test arena: every test_alloc block, freed at exit.  Tests call it from
 * several threads at once (one runtime shared by threads). */
static void **kept;
static size_t n_kept, cap_kept;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static void release_kept(void) {
    for (size_t i = 0; i < n_kept; i++) free(kept[i]);
    free(kept);
    kept = NULL, n_kept = cap_kept = 0;
}

void *test_alloc(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    ck_assert_ptr_nonnull(p);
    pthread_mutex_lock(&kept_lock);
    if (n_kept == cap_kept) {
        if (!kept) atexit(release_kept);
        cap_kept = cap_kept ? 2 * cap_kept : 64;
        void **grown = realloc(kept, cap_kept * sizeof *kept);
        if (!grown) abort();
        kept = grown;
    }
    kept[n_kept++] = p;
    pthread_mutex_unlock(&kept_lock);
    return p;
}

float *ref_tensor(const e2g_st_file *f, const char *name, size_t *numel) {
    const e2g_st_tensor *t = e2g_st_find(f, name);
    ck_assert_msg(t != NULL, "reference tensor %s is missing", name);
    float *x = test_alloc(t->numel * sizeof(float));
    e2g_st_to_f32(t, x);
    if (numel) *numel = t->numel;
    return x;
}

int ref_meta_int(const e2g_st_file *f, const char *key) {
    const char *v = e2g_st_meta(f, key);
    ck_assert_msg(v != NULL, "reference metadata %s is missing", key);
    return atoi(v);
}

double ref_meta_double(const e2g_st_file *f, const char *key) {
    const char *v = e2g_st_meta(f, key);
    ck_assert_msg(v != NULL, "reference metadata %s is missing", key);
    return atof(v);
}

float *nchw_to_nhwc(const float *x, int n, int c, int h, int w) {
    float *y = test_alloc((size_t)n * c * h * w * sizeof(float));
    for (int in = 0; in < n; in++)
        for (int ic = 0; ic < c; ic++)
            for (int ih = 0; ih < h; ih++)
                for (int iw = 0; iw < w; iw++)
                    y[(((size_t)in * h + ih) * w + iw) * c + ic] =
                        x[(((size_t)in * c + ic) * h + ih) * w + iw];
    return y;
}

float *nhwc_to_nchw(const float *x, int n, int c, int h, int w) {
    float *y = test_alloc((size_t)n * c * h * w * sizeof(float));
    for (int in = 0; in < n; in++)
        for (int ic = 0; ic < c; ic++)
            for (int ih = 0; ih < h; ih++)
                for (int iw = 0; iw < w; iw++)
                    y[(((size_t)in * c + ic) * h + ih) * w + iw] =
                        x[(((size_t)in * h + ih) * w + iw) * c + ic];
    return y;
}

double rel_error(const char *what, const float *got, const float *want, size_t n, double tol) {
    double scale = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    if (scale == 0) scale = 1; /* an all-zero reference is compared absolutely */
    int shown = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= maxdiff)) maxdiff = isnan(d) ? INFINITY : fmax(maxdiff, d);
        if (!(d / scale <= tol) && shown < 5) {
            fprintf(stderr, "  %s[%zu]: got %.8g want %.8g\n", what, i, got[i], want[i]);
            shown++;
        }
    }
    double rel = maxdiff / scale;
    fprintf(stderr, "%-40s max rel err %.3g (tol %.1g, scale %.3g)%s\n", what, rel, tol, scale,
            rel <= tol ? "" : "  FAIL");
    return rel;
}

const char *test_bin(void) {
    const char *p = getenv("E2G_BIN");
    ck_assert_msg(p != NULL, "E2G_BIN is not set (run the tests through ctest)");
    return p;
}

const char *test_source(void) {
    const char *p = getenv("E2G_SOURCE");
    ck_assert_msg(p != NULL, "E2G_SOURCE is not set (run the tests through ctest)");
    return p;
}

void fill_random(float *x, size_t n, unsigned seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = (float)((s >> 8) * (1.0 / 8388608.0)) - 1.0f;
    }
}

int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

uint32_t png_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}
