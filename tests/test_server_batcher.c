/* test_server_batcher.c — dynamic batching: concurrent requests for
 * different concepts (base, adapter, blend) share batches and each gets
 * the image a lone edit gives; sizes never mix in a batch; a full queue
 * refuses at once; a request past its deadline while queued times out;
 * plans reused per batch shape give the lone edit's image. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "common.h"
#include "infer.h"
#include "registry.h"
#include "testutil.h"

static e2g_model *base;
static e2g_runtime *runtime; /* base on the CPU */
static e2g_registry *reg;
static char dir[256];

static void setup(void) {
    char err[E2G_ERR_LEN], path[1024], cmd[2300];
    snprintf(path, sizeof path, "%s/g_default_ngf16_base.safetensors", getenv("E2G_REFS"));
    ck_assert_msg(e2g_model_load(&base, path, err) == 0, "%s", err);
    ck_assert_int_eq(e2g_runtime_new(&runtime, base, "cpu", err), 0);
    snprintf(dir, sizeof dir, "/tmp/e2g_batcher_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cp %s/g_lora_default_ngf16_adapter.safetensors %s/lx.safetensors",
             getenv("E2G_REFS"), dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_msg(e2g_registry_open(&reg, base, dir, 1 << 30, err) == 0, "%s", err);
}

static void teardown(void) {
    char cmd[300];
    e2g_registry_close(reg);
    e2g_runtime_free(runtime);
    e2g_model_free(base);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static e2g_image random_image(int w, int h, unsigned seed) {
    e2g_image im = {w, h, malloc((size_t)w * h * 3)};
    uint32_t s = seed * 747796405u + 1;
    for (int i = 0; i < w * h * 3; i++) s = s * 1664525u + 1013904223u, im.rgb[i] = (uint8_t)(s >> 24);
    return im;
}

typedef struct {
    e2g_batcher *b;
    const char *spec;
    e2g_image im;
    e2g_edit_status status;
    e2g_edit_timing timing;
    long timeout_ms;
} call;

static void *edit_thread(void *arg) {
    call *c = arg;
    char err[E2G_ERR_LEN];
    e2g_request req;
    ck_assert_msg(e2g_registry_acquire(reg, &req, c->spec, 1.0f, err) == 0, "%s", err);
    c->status = e2g_batcher_edit(c->b, &c->im, &req, c->timeout_ms, &c->timing);
    e2g_registry_release(reg, &req);
    return NULL;
}

START_TEST(test_mixed_batches_match_lone_edits) {
    e2g_batcher_config cfg = {4, 200000, 32};
    e2g_batcher *b = e2g_batcher_new(runtime, &cfg);
    const char *specs[6] = {"base-a", "base-b", "lx", "lx:0.5,base-a:0.5", "base-a", "lx"};
    call calls[6];
    pthread_t threads[6];
    for (int i = 0; i < 6; i++) {
        calls[i] = (call){b, specs[i], random_image(i < 4 ? 37 : 40, i < 4 ? 29 : 24, i + 1), 0, {0, 0, 0}, 60000};
        pthread_create(&threads[i], NULL, edit_thread, &calls[i]);
    }
    int biggest = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(calls[i].status, E2G_EDIT_OK);
        biggest = calls[i].timing.batch_size > biggest ? calls[i].timing.batch_size : biggest;
    }
    ck_assert_msg(biggest > 1, "no request shared a batch");
    /* each equals the same edit run alone */
    for (int i = 0; i < 6; i++) {
        char err[E2G_ERR_LEN];
        e2g_image lone = random_image(calls[i].im.width, calls[i].im.height, i + 1);
        e2g_request req;
        ck_assert_int_eq(e2g_registry_acquire(reg, &req, specs[i], 1.0f, err), 0);
        ck_assert_int_eq(e2g_infer_image(&lone, runtime, &req.edit, 0, err), 0);
        e2g_registry_release(reg, &req);
        int maxd = 0;
        for (int k = 0; k < lone.width * lone.height * 3; k++) {
            int d = abs((int)lone.rgb[k] - (int)calls[i].im.rgb[k]);
            maxd = d > maxd ? d : maxd;
        }
        ck_assert_msg(maxd <= 1, "request %d (%s) differs from its lone edit by %d", i, specs[i], maxd);
        e2g_image_free(&lone);
        e2g_image_free(&calls[i].im);
    }
    e2g_batcher_stats st;
    e2g_batcher_stats_get(b, &st);
    ck_assert_int_eq(st.images, 6);
    ck_assert_int_lt(st.batches, 6);
    e2g_batcher_free(b);
}
END_TEST

/* The worker waits up to max_delay for a batch of 8 to fill, so queued
 * requests stay queued long enough to observe. */
START_TEST(test_full_queue_and_timeout) {
    e2g_batcher_config cfg = {8, 1500000, 1};
    e2g_batcher *b = e2g_batcher_new(runtime, &cfg);
    call first = {b, "base-a", random_image(16, 16, 9), 0, {0, 0, 0}, 60000};
    pthread_t t;
    pthread_create(&t, NULL, edit_thread, &first);
    e2g_batcher_stats st;
    do {
        usleep(1000);
        e2g_batcher_stats_get(b, &st);
    } while (st.queue_depth < 1);
    call second = {b, "base-b", random_image(16, 16, 10), 0, {0, 0, 0}, 60000};
    edit_thread(&second);
    ck_assert_int_eq(second.status, E2G_EDIT_BUSY); /* capacity 1: refused at once */
    pthread_join(t, NULL);
    ck_assert_int_eq(first.status, E2G_EDIT_OK);
    call late = {b, "base-a", random_image(16, 16, 11), 0, {0, 0, 0}, 50};
    edit_thread(&late); /* queued behind a 1.5 s batching delay, 50 ms deadline */
    ck_assert_int_eq(late.status, E2G_EDIT_TIMEOUT);
    e2g_batcher_stats_get(b, &st);
    ck_assert_int_eq(st.refused, 1);
    ck_assert_int_eq(st.timeouts, 1);
    ck_assert_int_eq(st.queue_depth, 0);
    e2g_image_free(&first.im), e2g_image_free(&second.im), e2g_image_free(&late.im);
    e2g_batcher_free(b);
}
END_TEST

/* Plans are kept per batch shape (a few, least recently used out first):
 * edits through more shapes than the cache holds, with hits and
 * evictions, each equal to the same edit run alone; for the lean model and for the
 * paper-like one, whose plan holds activations. */
static void check_shapes_cycle(e2g_model *m) {
    char err[E2G_ERR_LEN];
    e2g_request req;
    ck_assert_msg(e2g_request_resolve(&req, m, NULL, 0, m->concept_names[0], 1.0f, err) == 0, "%s", err);
    e2g_batcher_config cfg = {4, 0, 8};
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new(&rt, m, "cpu", err), 0);
    e2g_batcher *b = e2g_batcher_new(rt, &cfg);
    const int sizes[6][2] = {{16, 16}, {24, 16}, {16, 24}, {33, 17}, {40, 8}, {8, 40}};
    const int order[12] = {0, 1, 0, 1, 2, 3, 4, 5, 4, 5, 3, 0}; /* hits, evictions, hits, a miss */
    for (int step = 0; step < 12; step++) { /* another image at each step */
        int w = sizes[order[step]][0], h = sizes[order[step]][1];
        e2g_image im = random_image(w, h, 20 + step), lone = random_image(w, h, 20 + step);
        ck_assert_int_eq(e2g_batcher_edit(b, &im, &req, 60000, NULL), E2G_EDIT_OK);
        ck_assert_int_eq(e2g_infer_image(&lone, rt, &req.edit, 0, err), 0);
        int maxd = 0;
        for (int k = 0; k < w * h * 3; k++) {
            int d = abs((int)lone.rgb[k] - (int)im.rgb[k]);
            maxd = d > maxd ? d : maxd;
        }
        ck_assert_msg(maxd <= 1, "step %d, %dx%d differs from its lone edit by %d", step, w, h, maxd);
        e2g_image_free(&im), e2g_image_free(&lone);
    }
    e2g_batcher_stats st;
    e2g_batcher_stats_get(b, &st);
    ck_assert_int_eq(st.batches, 12);
    e2g_batcher_free(b);
    e2g_runtime_free(rt);
    e2g_request_free(&req);
}

START_TEST(test_plans_per_shape) {
    char err[E2G_ERR_LEN], path[1024];
    check_shapes_cycle(base);
    e2g_model *paper;
    snprintf(path, sizeof path, "%s/g_paperlike_ngf16_base.safetensors", getenv("E2G_REFS"));
    ck_assert_msg(e2g_model_load(&paper, path, err) == 0, "%s", err);
    ck_assert(paper->cfg.norm_ends);
    check_shapes_cycle(paper);
    e2g_model_free(paper);
}
END_TEST

int main(void) {
    Suite *s = suite_create("batcher");
    TCase *tc = tcase_create("batcher");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mixed_batches_match_lone_edits);
    tcase_add_test(tc, test_full_queue_and_timeout);
    tcase_add_test(tc, test_plans_per_shape);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
