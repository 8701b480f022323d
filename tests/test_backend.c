/* test_backend.c — the backend interface (engine/backend.h, infer.h's
 * runtime) without a device: the one device-mode parser, the registry
 * (the CPU first, every table complete), the choice a mode makes (cpu and
 * auto land on the CPU with a reason, cuda is refused), and the CPU
 * backend giving exactly the engine's output — lean and planned forms,
 * unmerged and merged LoRA, shapes that change between calls, and calls
 * from several threads at once on one runtime; and, with a fake device
 * backend, what the runtime does when the device fails: a failed batch runs
 * on the CPU, a device its backend declares dead (a sticky CUDA error) is
 * never tried again, logged once, and reported. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "common.h"
#include "infer.h"
#include "model_io.h"
#include "testutil.h"

START_TEST(test_device_mode) {
    e2g_device_mode m;
    char err[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_device_mode_parse("cpu", &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_CPU);
    ck_assert_int_eq(e2g_device_mode_parse("cuda", &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_CUDA);
    ck_assert_int_eq(e2g_device_mode_parse("auto", &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_AUTO);
    ck_assert_int_eq(e2g_device_mode_parse("gpu", &m, err), -1);
    ck_assert_str_eq(err, "unknown device 'gpu' (auto, cpu or cuda)");
    ck_assert_int_eq(e2g_device_mode_parse("CPU", &m, NULL), -1);
    /* NULL or "": $E2GAN_DEVICE, unset or "" meaning auto */
    setenv("E2GAN_DEVICE", "cpu", 1);
    ck_assert_int_eq(e2g_device_mode_parse(NULL, &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_CPU);
    ck_assert_int_eq(e2g_device_mode_parse("", &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_CPU);
    ck_assert_int_eq(e2g_device_mode_parse("cuda", &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_CUDA);
    setenv("E2GAN_DEVICE", "tpu", 1);
    ck_assert_int_eq(e2g_device_mode_parse(NULL, &m, err), -1);
    ck_assert_ptr_nonnull(strstr(err, "'tpu'"));
    setenv("E2GAN_DEVICE", "", 1);
    ck_assert_int_eq(e2g_device_mode_parse(NULL, &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_AUTO);
    unsetenv("E2GAN_DEVICE");
    ck_assert_int_eq(e2g_device_mode_parse(NULL, &m, err), 0); ck_assert_int_eq(m, E2G_DEVICE_AUTO);
    ck_assert_str_eq(e2g_device_mode_name(E2G_DEVICE_CUDA), "cuda");
}
END_TEST

START_TEST(test_registry) {
    ck_assert_int_ge(e2g_backend_count(), 1);
    ck_assert_ptr_eq(e2g_backend_get(0), e2g_cpu_backend());
    ck_assert_ptr_null(e2g_backend_get(-1));
    ck_assert_ptr_null(e2g_backend_get(e2g_backend_count()));
    ck_assert_ptr_eq(e2g_backend_find("cpu"), e2g_cpu_backend());
    ck_assert_ptr_null(e2g_backend_find("metal"));
    ck_assert_ptr_null(e2g_cpu_backend()->train); /* the CPU trains in train.c */
    for (int i = 0; i < e2g_backend_count(); i++) {
        const e2g_backend *b = e2g_backend_get(i);
        ck_assert_ptr_nonnull(b->name); ck_assert_ptr_nonnull(b->device);
        ck_assert(b->available && b->describe && b->supports && b->create && b->destroy && b->run);
        ck_assert_ptr_eq(e2g_backend_find(b->name), b);
        char msg[512];
        ck_assert_int_ge(b->describe(msg, sizeof msg), i == 0 ? 1 : -1);
        const e2g_train_backend *t = b->train;
        if (t)
            ck_assert(t->supports && t->create && t->destroy && t->slot && t->upload && t->step && t->finish &&
                      t->get && t->set && t->size && t->time);
    }
    const e2g_backend *cuda = e2g_backend_find("cuda");
    if (cuda) ck_assert_ptr_nonnull(cuda->train);
    /* candidates: none for cpu, the device backends for auto */
    const e2g_backend *cand[8];
    char why[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_backend_candidates(E2G_DEVICE_CPU, cand, 8, why), 0);
    ck_assert_int_eq(e2g_backend_candidates(E2G_DEVICE_AUTO, cand, 8, why), e2g_backend_count() - 1);
    ck_assert_int_eq(e2g_backend_candidates(E2G_DEVICE_CUDA, cand, 8, why), cuda ? 1 : 0);
    if (!cuda) ck_assert_ptr_nonnull(strstr(why, "this build has no CUDA"));
}
END_TEST

static e2g_model *small_model(int norm_ends) {
    e2g_gen_config cfg = {.ngf = 8, .ctx_tokens = 4, .n_concepts = 2, .unet_skips = !norm_ends,
                          .residual_out = !norm_ends, .norm_ends = norm_ends};
    const char *names[] = {"a", "b"};
    return e2g_model_new(&cfg, names, 0, 3);
}

/* Without a device (CI): cpu and auto give the CPU with a reason, cuda is
 * refused and leaves nothing behind.  With one, auto and cuda agree. */
START_TEST(test_runtime_choice) {
    unsetenv("E2GAN_DEVICE");
    e2g_model *m = small_model(0);
    char msg[E2G_ERR_LEN] = "";
    e2g_runtime *rt = NULL;
    ck_assert_int_eq(e2g_runtime_new(&rt, m, "cpu", msg), 0);
    ck_assert_str_eq(e2g_runtime_name(rt), "cpu");
    ck_assert_str_eq(msg, "the CPU was asked for (device cpu)");
    ck_assert_ptr_eq(e2g_runtime_model(rt), m);
    ck_assert_ptr_eq(e2g_runtime_backend(rt), e2g_cpu_backend());
    ck_assert_ptr_nonnull(e2g_runtime_state(rt));
    e2g_runtime_free(rt);

    const e2g_backend *cuda = e2g_backend_find("cuda");
    char why[E2G_ERR_LEN];
    int device = cuda && cuda->available(why) == 1 && cuda->supports(&m->cfg, why) == 1;
    int got = e2g_runtime_new(&rt, m, NULL, msg); /* $E2GAN_DEVICE unset: auto */
    ck_assert_int_eq(got, device);
    ck_assert_str_eq(e2g_runtime_name(rt), device ? "cuda" : "cpu");
    ck_assert_int_gt(strlen(msg), 0);
    e2g_runtime_free(rt);
    if (!device) {
        rt = (e2g_runtime *)1;
        ck_assert_int_eq(e2g_runtime_new(&rt, m, "cuda", msg), -1);
        ck_assert_ptr_null(rt);
        ck_assert_int_gt(strlen(msg), 0);
    }
    rt = (e2g_runtime *)1;
    ck_assert_int_eq(e2g_runtime_new(&rt, m, "opencl", msg), -1);
    ck_assert_ptr_null(rt);
    ck_assert_ptr_nonnull(strstr(msg, "unknown device"));
    /* a norm_ends model stays on the CPU under auto whatever the build */
    e2g_model *paper = small_model(1);
    ck_assert_int_eq(e2g_runtime_new(&rt, paper, "auto", msg), 0);
    ck_assert_str_eq(e2g_runtime_name(rt), "cpu");
    e2g_runtime_free(rt);
    e2g_model_free(paper);
    e2g_model_free(m);
}
END_TEST

/* The engine's own output for these inputs: the lean forward, or planned
 * activations made for this call; merged through e2g_gen_merge. */
static void reference(const e2g_model *m, float *y, const float *x, const e2g_edit *edits, int N, int H, int W,
                      int merged) {
    e2g_gen_params merged_p;
    const e2g_gen_params *p = &m->params;
    float *priv = NULL;
    e2g_edit *plain = test_alloc(N * sizeof *plain);
    memcpy(plain, edits, N * sizeof *plain);
    if (merged && edits[0].n_terms) {
        priv = e2g_gen_merge(&m->cfg, &merged_p, &m->params, edits[0].terms, edits[0].n_terms);
        p = &merged_p;
        for (int n = 0; n < N; n++) plain[n].n_terms = 0;
    }
    if (m->cfg.norm_ends) {
        e2g_gen_acts *a = e2g_gen_acts_new(&m->cfg, N, H, W, 0);
        e2g_gen_forward(a, y, p, x, plain);
        e2g_gen_acts_free(a);
    } else {
        e2g_gen_infer(&m->cfg, y, p, x, plain, N, H, W);
    }
    free(priv);
}

static e2g_lora *random_lora(const e2g_gen_config *cfg) {
    int rank[E2G_N_CRUCIAL] = {0};
    float scale[E2G_N_CRUCIAL];
    for (int i = 0; i < E2G_N_CRUCIAL; i++) rank[i] = i % 3 ? 2 : 0, scale[i] = 0.5f;
    e2g_lora *l = e2g_lora_new(cfg, rank, scale);
    fill_random(l->memory, l->numel, 11);
    for (size_t i = 0; i < l->numel; i++) l->memory[i] *= 0.1f;
    return l;
}

START_TEST(test_cpu_backend_is_the_engine) {
    int norm_ends = _i;
    e2g_model *m = small_model(norm_ends);
    e2g_lora *lora = random_lora(&m->cfg);
    char msg[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new(&rt, m, "cpu", msg), 0);
    enum { N = 2 };
    const int shapes[][2] = {{16, 24}, {32, 16}, {16, 24}}; /* re-plans, then back */
    for (size_t s = 0; s < 3; s++) {
        int H = shapes[s][0], W = shapes[s][1];
        size_t n = (size_t)N * H * W * 3;
        float *x = test_alloc(n * 4), *y = test_alloc(n * 4), *want = test_alloc(n * 4);
        fill_random(x, n, 5 + (unsigned)s);
        for (int merged = 0; merged < 2; merged++) {
            e2g_edit edits[N] = {{.context = e2g_model_context(m, 0)},
                                 {.context = lora->concept, .n_terms = 1, .terms = {{lora, 0.8f}}}};
            if (merged) edits[0] = edits[1]; /* merged: every sample shares edits[0]'s terms */
            e2g_infer *inf = e2g_infer_new(rt, N, H, W);
            e2g_infer_run(inf, y, x, edits, merged);
            e2g_infer_free(inf);
            reference(m, want, x, edits, N, H, W, merged);
            ck_assert_msg(memcmp(y, want, n * 4) == 0, "norm_ends %d, %dx%d, merged %d: differs from the engine",
                          norm_ends, H, W, merged);
        }
    }
    e2g_runtime_free(rt);
    e2g_lora_free(lora);
    e2g_model_free(m);
}
END_TEST

typedef struct {
    const e2g_runtime *rt;
    const float *x;
    float *y;
    const e2g_edit *edit;
} run_args;

static void *run_thread(void *arg) {
    run_args *a = arg;
    for (int k = 0; k < 3; k++) {
        e2g_infer *inf = e2g_infer_new(a->rt, 1, 24, 16);
        e2g_infer_run(inf, a->y, a->x, a->edit, 0);
        e2g_infer_free(inf);
    }
    return NULL;
}

/* One runtime used by several threads at once (the CLI and tests do this;
 * the server's batcher is one thread): each gets the engine's output,
 * whether it had the kept plan or a private one. */
START_TEST(test_concurrent_runs) {
    e2g_model *m = small_model(1);
    char msg[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new(&rt, m, "cpu", msg), 0);
    enum { T = 4 };
    size_t n = (size_t)24 * 16 * 3;
    float *x = test_alloc(n * 4), *want = test_alloc(n * 4);
    fill_random(x, n, 9);
    e2g_edit edit = {.context = e2g_model_context(m, 1)};
    reference(m, want, x, &edit, 1, 24, 16, 0);
    pthread_t th[T];
    run_args args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (run_args){rt, x, test_alloc(n * 4), &edit};
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_thread, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(memcmp(args[i].y, want, n * 4) == 0, "thread %d differs from the engine", i);
    }
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

/* ---- a fake device: the runtime when the device fails --------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    int calls, fail, sticky, dead;
} fake_device;

static fake_device fake = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};

static int fake_available(char *err) { (void)err; return 1; }
static int fake_describe(char *msg, size_t len) { return snprintf(msg, len, "one fake device"), 1; }
static int fake_supports(const e2g_gen_config *cfg, char *err) { (void)cfg, (void)err; return 1; }
static int fake_create(void **state, const e2g_gen_config *cfg, const e2g_gen_params *p, size_t cache_bytes,
                       char *err) {
    (void)cfg, (void)p, (void)cache_bytes, (void)err;
    *state = &fake;
    return 0;
}
static void fake_destroy(void *state) { (void)state; }

/* Fails as a CUDA engine does after an illegal address (every call once the
 * fault is sticky), else writes 0.25 everywhere. */
static int fake_run(void *state, float *y, const float *x, const e2g_edit *edits, int N, int H, int W, int merged,
                    char *err) {
    (void)x, (void)edits, (void)merged;
    fake_device *f = state;
    pthread_mutex_lock(&f->mu);
    f->calls++;
    int fail = f->fail || f->dead;
    if (f->fail && f->sticky) f->dead = 1;
    pthread_mutex_unlock(&f->mu);
    if (fail) return e2g_fail(err, "CUDA: forward failed: an illegal memory access was encountered");
    for (size_t i = 0; i < (size_t)N * H * W * 3; i++) y[i] = 0.25f;
    return 0;
}

static int fake_healthy(void *state, char *why) {
    fake_device *f = state;
    pthread_mutex_lock(&f->mu);
    int dead = f->dead;
    pthread_mutex_unlock(&f->mu);
    if (dead) snprintf(why, E2G_ERR_LEN, "cudaErrorIllegalAddress: an illegal memory access was encountered");
    return !dead;
}

static const e2g_backend fake_backend = {
    .name = "fake", .device = "fake device 0", .available = fake_available, .describe = fake_describe,
    .supports = fake_supports, .create = fake_create, .destroy = fake_destroy, .run = fake_run,
    .healthy = fake_healthy,
};
/* The same without the hook: its device never counts as dead. */
static const e2g_backend fake_backend_nohook = {
    .name = "fake", .device = "fake device 0", .available = fake_available, .describe = fake_describe,
    .supports = fake_supports, .create = fake_create, .destroy = fake_destroy, .run = fake_run,
};

static int fake_calls(void) {
    pthread_mutex_lock(&fake.mu);
    int c = fake.calls;
    pthread_mutex_unlock(&fake.mu);
    return c;
}

/* One batch of 2 at 16×24 on rt; 1 when it equals the CPU engine's, 0 when
 * it is the fake device's 0.25, -1 otherwise. */
static int batch_source(const e2g_runtime *rt, const e2g_model *m) {
    enum { N = 2, H = 16, W = 24 };
    size_t n = (size_t)N * H * W * 3;
    float *x = test_alloc(n * 4), *y = test_alloc(n * 4), *want = test_alloc(n * 4);
    fill_random(x, n, 21);
    e2g_edit edits[N] = {{.context = e2g_model_context(m, 0)}, {.context = e2g_model_context(m, 1)}};
    e2g_infer *inf = e2g_infer_new(rt, N, H, W);
    e2g_infer_run(inf, y, x, edits, 0);
    e2g_infer_free(inf);
    reference(m, want, x, edits, N, H, W, 0);
    if (memcmp(y, want, n * 4) == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (y[i] != 0.25f) return -1;
    return 0;
}

/* stderr into a file while a test runs; returns what was written. */
typedef struct {
    int saved;
    char path[64];
} captured;

static void capture_start(captured *c) {
    snprintf(c->path, sizeof c->path, "/tmp/e2g_test_stderr_XXXXXX");
    int fd = mkstemp(c->path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    c->saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *capture_end(captured *c) {
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    FILE *f = fopen(c->path, "r");
    char *text = test_alloc(1 << 16);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    text[n] = 0;
    fclose(f);
    unlink(c->path);
    return text;
}

static int count(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* A failure that leaves the device usable: that batch on the CPU, the next
 * on the device again. */
START_TEST(test_device_failure_recovers) {
    e2g_model *m = small_model(0);
    char msg[E2G_ERR_LEN], why[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new_on(&rt, m, &fake_backend, msg), 1);
    ck_assert_str_eq(msg, "fake device 0");
    ck_assert_str_eq(e2g_runtime_name(rt), "fake");
    ck_assert_int_eq(batch_source(rt, m), 0);
    fake.fail = 1;
    captured c;
    capture_start(&c);
    ck_assert_int_eq(batch_source(rt, m), 1);
    ck_assert_int_eq(batch_source(rt, m), 1);
    char *log = capture_end(&c);
    ck_assert_int_eq(fake_calls(), 3);
    ck_assert_int_eq(count(log, "fake batch failed, running it on the CPU: CUDA: forward failed"), 2);
    ck_assert_int_eq(count(log, "unusable"), 0);
    ck_assert_int_eq(e2g_runtime_device_dead(rt, why, sizeof why), 0);
    ck_assert_str_eq(why, "");
    fake.fail = 0;
    ck_assert_int_eq(batch_source(rt, m), 0);
    ck_assert_int_eq(fake_calls(), 4);
    ck_assert_str_eq(e2g_runtime_name(rt), "fake");
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

/* A sticky failure: that batch and every later one on the CPU, the device
 * never called again, one log line, the reason reported. */
START_TEST(test_device_dies) {
    e2g_model *m = small_model(0);
    char msg[E2G_ERR_LEN], why[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new_on(&rt, m, &fake_backend, msg), 1);
    ck_assert_int_eq(batch_source(rt, m), 0);
    ck_assert_int_eq(e2g_runtime_device_dead(rt, why, sizeof why), 0);
    fake.fail = fake.sticky = 1;
    captured c;
    capture_start(&c);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(batch_source(rt, m), 1);
    char *log = capture_end(&c);
    ck_assert_int_eq(fake_calls(), 2);
    ck_assert_int_eq(count(log, "batch failed"), 1);
    ck_assert_int_eq(count(log, "e2gan: fake device 0 is unusable (cudaErrorIllegalAddress: an illegal memory access "
                                "was encountered): every batch runs on the CPU from now on"), 1);
    ck_assert_int_eq(e2g_runtime_device_dead(rt, why, sizeof why), 1);
    ck_assert_str_eq(why, "cudaErrorIllegalAddress: an illegal memory access was encountered");
    ck_assert_int_eq(e2g_runtime_device_dead(rt, NULL, 0), 1);
    ck_assert_str_eq(e2g_runtime_name(rt), "cpu");
    ck_assert_ptr_eq(e2g_runtime_backend(rt), &fake_backend);
    fake.fail = fake.sticky = 0; /* even if it came back: dead for the process */
    ck_assert_int_eq(batch_source(rt, m), 1);
    ck_assert_int_eq(fake_calls(), 2);
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

typedef struct {
    const e2g_runtime *rt;
    const e2g_model *m;
    int bad;
} dies_args;

static void *dies_thread(void *arg) {
    dies_args *a = arg;
    for (int k = 0; k < 3; k++)
        if (batch_source(a->rt, a->m) != 1) a->bad++;
    return NULL;
}

/* Threads meeting the dead device at once: every batch right, one line. */
START_TEST(test_device_dies_under_threads) {
    e2g_model *m = small_model(0);
    char msg[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new_on(&rt, m, &fake_backend, msg), 1);
    fake.fail = fake.sticky = 1;
    enum { T = 4 };
    pthread_t th[T];
    dies_args args[T];
    captured c;
    capture_start(&c);
    for (int i = 0; i < T; i++) {
        args[i] = (dies_args){rt, m, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, dies_thread, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    char *log = capture_end(&c);
    for (int i = 0; i < T; i++) ck_assert_int_eq(args[i].bad, 0);
    ck_assert_int_eq(count(log, "is unusable"), 1);
    ck_assert_int_le(fake_calls(), T);
    ck_assert_int_eq(e2g_runtime_device_dead(rt, NULL, 0), 1);
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

/* A backend without the hook: its failures never kill the device. */
START_TEST(test_device_without_health_hook) {
    e2g_model *m = small_model(0);
    char msg[E2G_ERR_LEN];
    e2g_runtime *rt;
    ck_assert_int_eq(e2g_runtime_new_on(&rt, m, &fake_backend_nohook, msg), 1);
    fake.fail = fake.sticky = 1;
    captured c;
    capture_start(&c);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(batch_source(rt, m), 1);
    capture_end(&c);
    ck_assert_int_eq(fake_calls(), 3);
    ck_assert_int_eq(e2g_runtime_device_dead(rt, NULL, 0), 0);
    e2g_runtime_free(rt);
    e2g_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("backend");
    tcase_add_test(tc, test_device_mode);
    tcase_add_test(tc, test_registry);
    tcase_add_test(tc, test_runtime_choice);
    tcase_add_loop_test(tc, test_cpu_backend_is_the_engine, 0, 2);
    tcase_add_test(tc, test_concurrent_runs);
    tcase_add_test(tc, test_device_failure_recovers);
    tcase_add_test(tc, test_device_dies);
    tcase_add_test(tc, test_device_dies_under_threads);
    tcase_add_test(tc, test_device_without_health_hook);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
