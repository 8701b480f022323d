/* cuda_backend.cu — the CUDA engine and trainer as the "cuda" backend of
 * engine/backend.h: constant tables whose entries forward to
 * cuda_engine.h, cuda_trainer.h and cuda_info.h.  engine/backend_registry.c
 * lists e2g_cuda_backend() when the build has CUDA; nothing else in the
 * engine names the CUDA API. */
#include "backend.h"
#include "cuda_engine.h"
extern "C" {
#include "common.h"
}
#include "cuda_info.h"
#include "cuda_trainer.h"

namespace e2g {

/* ---- inference ------------------------------------------------------------------------------ */

static int available(char *err) { return e2g_cuda_device_present(err); }

static int describe(char *msg, size_t len) { return e2g_cuda_describe(msg, len); }

static int supports(const e2g_gen_config *cfg, char *err) { return e2g_cuda_check_config(cfg, err) == 0; }

static int create(void **state, const e2g_gen_config *cfg, const e2g_gen_params *p, size_t cache_bytes,
                  char *err) {
    e2g_cuda_engine *e = NULL;
    if (e2g_cuda_engine_new(&e, cfg, p, cache_bytes, err)) return -1;
    *state = e;
    return 0;
}

static void destroy(void *state) { e2g_cuda_engine_free((e2g_cuda_engine *)state); }

static int run(void *state, float *y, const float *x, const e2g_edit *edits, int N, int H, int W, int merged,
               char *err) {
    return e2g_cuda_engine_run((e2g_cuda_engine *)state, y, x, edits, N, H, W, merged, err);
}

static int prepare(void *state, const e2g_edit *edits, int N, int merged, char *err) {
    return e2g_cuda_engine_prepare((e2g_cuda_engine *)state, edits, N, merged, err);
}

static int time_forward(void *state, const e2g_edit *edits, int N, int H, int W, int merged, int iters,
                        double *ms, char *err) {
    return e2g_cuda_engine_time((e2g_cuda_engine *)state, edits, N, H, W, merged, iters, ms, err);
}

static void drop_adapters(void *state) { e2g_cuda_engine_drop_adapters((e2g_cuda_engine *)state); }

static void cache_stats(const void *state, size_t *bytes, int *entries) {
    e2g_cuda_engine_cache_stats((const e2g_cuda_engine *)state, bytes, entries);
}

static int healthy(void *state, char *why) { return e2g_cuda_engine_healthy((e2g_cuda_engine *)state, why); }

/* ---- training ------------------------------------------------------------------------------- */

/* The GPU trainer runs λ·L1 alone; each other term keeps a run on the CPU. */
static const struct {
    unsigned term;
    const char *why;
} cpu_only_losses[] = {
    {E2G_LOSS_GAN, "the GAN term (PatchGAN D) does not run on the GPU yet; use --gan-weight 0"},
    {E2G_LOSS_EDGE, "the edge loss term does not run on the GPU yet; use --edge-weight 0"},
    {E2G_LOSS_DARK, "the dark-pixel L1 weighting does not run on the GPU yet; use --dark-weight 0"},
};

static int train_supports(const e2g_gen_config *cfg, unsigned loss_terms, char *err) {
    for (const auto &l : cpu_only_losses)
        if (loss_terms & l.term) {
            e2g_fail(err, "%s", l.why);
            return 0;
        }
    return e2g_cuda_check_config(cfg, err) == 0;
}

static int train_create(void **state, const e2g_gen_config *cfg, const float *gen, const e2g_lora *lora, int N,
                        int S, char *err) {
    e2g_cuda_trainer *t = NULL;
    if (e2g_cuda_trainer_new(&t, cfg, gen, lora, N, S, err)) return -1;
    *state = t;
    return 0;
}

static e2g_cuda_trainer *T(void *state) { return (e2g_cuda_trainer *)state; }

static void train_destroy(void *state) { e2g_cuda_trainer_free(T(state)); }

static void train_slot(void *state, int s, float **x, float **tgt, int **rows) {
    e2g_cuda_trainer_slot(T(state), s, x, tgt, rows);
}

static int train_upload(void *state, int s, char *err) { return e2g_cuda_trainer_upload(T(state), s, err); }

static int train_step(void *state, int s, float lambda_l1, int update, long adam_t, float lr, float beta1,
                      float beta2, float eps, char *err) {
    return e2g_cuda_trainer_step(T(state), s, lambda_l1, update, adam_t, lr, beta1, beta2, eps, err);
}

static int train_finish(void *state, double *l1, char *err) { return e2g_cuda_trainer_finish(T(state), l1, err); }

static int train_get(void *state, float *params, float *grads, float *m, float *v, char *err) {
    return e2g_cuda_trainer_get(T(state), params, grads, m, v, err);
}

static int train_set(void *state, const float *params, const float *m, const float *v, char *err) {
    return e2g_cuda_trainer_set(T(state), params, m, v, err);
}

static size_t train_size(const void *state) {
    return e2g_cuda_trainer_size((const e2g_cuda_trainer *)state);
}

static int train_time(void *state, int iters, double *ms, char *err) {
    return e2g_cuda_trainer_time(T(state), iters, ms, err);
}

/* ---- the tables ----------------------------------------------------------------------------- */

/* Filled member by member: C++17 has no designated initializers. */
static e2g_train_backend make_trainer(void) {
    e2g_train_backend t = {};
    t.supports = train_supports, t.create = train_create, t.destroy = train_destroy;
    t.slot = train_slot, t.upload = train_upload, t.step = train_step, t.finish = train_finish;
    t.get = train_get, t.set = train_set, t.size = train_size, t.time = train_time;
    return t;
}

static const e2g_train_backend trainer = make_trainer();

static e2g_backend make_backend(void) {
    e2g_backend b = {};
    b.name = "cuda", b.device = "CUDA device 0";
    b.available = available, b.describe = describe, b.supports = supports;
    b.create = create, b.destroy = destroy, b.run = run;
    b.prepare = prepare, b.time = time_forward, b.drop_adapters = drop_adapters, b.cache_stats = cache_stats;
    b.healthy = healthy;
    b.train = &trainer;
    return b;
}

static const e2g_backend backend = make_backend();

extern "C" const e2g_backend *e2g_cuda_backend(void) { return &backend; }

}  // namespace e2g
