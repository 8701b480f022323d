/* infer.c — inference plans and whole-image edits (see infer.h). */
#include "infer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#ifdef E2G_HAVE_CUDA
#include "cuda_engine.h"
#endif

struct e2g_infer {
    const e2g_model *model;
    int N, H, W;
    e2g_gen_acts *acts; /* only for the paper-like form, whose ends need whole images */
};

e2g_infer *e2g_infer_new(const e2g_model *m, int N, int H, int W) {
    e2g_infer *inf = e2g_xcalloc(1, sizeof *inf);
    inf->model = m, inf->N = N, inf->H = H, inf->W = W;
    if (m->cfg.norm_ends) inf->acts = e2g_gen_acts_new(&m->cfg, N, H, W, 0);
    return inf;
}

/* The lean path where the model allows it, else the planned activations. */
static void forward(e2g_infer *inf, float *y, const e2g_gen_params *p, const float *x,
                    const e2g_edit *edits) {
    if (inf->acts)
        e2g_gen_forward(inf->acts, y, p, x, edits);
    else
        e2g_gen_infer(&inf->model->cfg, y, p, x, edits, inf->N, inf->H, inf->W);
}

void e2g_infer_free(e2g_infer *inf) {
    if (!inf) return;
    e2g_gen_acts_free(inf->acts);
    free(inf);
}

/* Device memory for adapters and merged weight sets on the GPU. */
#define GPU_ADAPTER_CACHE_BYTES ((size_t)512 << 20)

int e2g_infer_use_device(e2g_model *m, const char *mode, char *msg) {
    if (!mode) mode = getenv("E2GAN_DEVICE");
    if (!mode || !*mode) mode = "auto";
    int want_cuda = strcmp(mode, "cuda") == 0;
    if (strcmp(mode, "cpu") == 0) {
        snprintf(msg, E2G_ERR_LEN, "the CPU was asked for (device %s)", mode);
        return 0;
    }
    if (!want_cuda && strcmp(mode, "auto") != 0)
        return e2g_fail(msg, "unknown device '%s' (auto, cpu or cuda)", mode);
#ifdef E2G_HAVE_CUDA
    if (m->device) return 1;
    if (e2g_cuda_engine_new(&m->device, &m->cfg, &m->params, GPU_ADAPTER_CACHE_BYTES, msg))
        return want_cuda ? -1 : 0;
    snprintf(msg, E2G_ERR_LEN, "CUDA device 0");
    return 1;
#else
    (void)m;
    snprintf(msg, E2G_ERR_LEN, "this build has no CUDA (nvcc or cuDNN missing at configure time)");
    return want_cuda ? -1 : 0;
#endif
}

const char *e2g_infer_backend(const e2g_model *m) { return m->device ? "cuda" : "cpu"; }

void e2g_infer_run(e2g_infer *inf, float *y, const float *x, const e2g_edit *edits, int merged) {
    const e2g_model *m = inf->model;
#ifdef E2G_HAVE_CUDA
    if (m->device) {
        char err[E2G_ERR_LEN];
        if (e2g_cuda_engine_run(m->device, y, x, edits, inf->N, inf->H, inf->W, merged, err) == 0) return;
        fprintf(stderr, "e2gan: GPU batch failed, running it on the CPU: %s\n", err);
    }
#endif
    if (!merged || edits[0].n_terms == 0) {
        forward(inf, y, &m->params, x, edits);
        return;
    }
    e2g_gen_params params;
    float *private_weights = e2g_gen_merge(&m->cfg, &params, &m->params, edits[0].terms, edits[0].n_terms);
    e2g_edit *plain = e2g_xmalloc(inf->N * sizeof *plain);
    for (int n = 0; n < inf->N; n++) {
        plain[n] = edits[n];
        plain[n].n_terms = 0;
    }
    forward(inf, y, &params, x, plain);
    free(plain);
    free(private_weights);
}

int e2g_infer_image(e2g_image *im, const e2g_model *m, const e2g_edit *edit, int merged, char *err) {
    int pw, ph;
    e2g_image_pad_dims(im->width, im->height, 8, &pw, &ph);
    size_t n;
    if (e2g_mul_size((size_t)pw * ph, 3 * sizeof(float), &n))
        return e2g_fail(err, "image of %dx%d is too large", im->width, im->height);
    float *x = malloc(n), *y = malloc(n);
    if (!x || !y) {
        free(x), free(y);
        return e2g_fail(err, "not enough memory for a %dx%d image", im->width, im->height);
    }
    e2g_image_to_tensor(x, im, pw, ph);
    e2g_infer *inf = e2g_infer_new(m, 1, ph, pw);
    e2g_infer_run(inf, y, x, edit, merged);
    e2g_infer_free(inf);
    e2g_image_from_tensor(im, y, pw, ph);
    free(x), free(y);
    return 0;
}
