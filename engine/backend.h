/* backend.h — where the generator runs, ggml-style: each backend is a
 * constant table of function pointers over an opaque instance state, and
 * a registry lists the backends of this build (the CPU always, first; the
 * CUDA one when nvcc and cuDNN were found).  Callers own the instances
 * (infer.h's e2g_runtime for inference; train.c for training): the model
 * holds no backend state.  One parser reads the device mode (auto, cpu,
 * cuda; $E2GAN_DEVICE) for inference and training alike.  Every function
 * that can fail returns -1 with a message in err (E2G_ERR_LEN bytes). */
#ifndef E2G_BACKEND_H
#define E2G_BACKEND_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "model.h"

/* ---- device mode ---------------------------------------------------------------- */

typedef enum { E2G_DEVICE_AUTO, E2G_DEVICE_CPU, E2G_DEVICE_CUDA } e2g_device_mode;

/* "auto", "cpu" or "cuda"; s NULL or "" reads $E2GAN_DEVICE, unset or ""
 * meaning auto.  Returns 0, or -1 for any other name (err says so; may be
 * NULL). */
int e2g_device_mode_parse(const char *s, e2g_device_mode *out, char *err);
/* "auto", "cpu", "cuda". */
const char *e2g_device_mode_name(e2g_device_mode mode);

/* ---- training backend ----------------------------------------------------------- */

/* Loss terms of a run beyond λ·L1 (train.h's options), as flags. */
enum {
    E2G_LOSS_GAN = 1 << 0,  /* gan_weight > 0: the PatchGAN term */
    E2G_LOSS_EDGE = 1 << 1, /* edge_weight > 0: the gradient-domain L1 term */
    E2G_LOSS_DARK = 1 << 2  /* dark_weight > 0: the dark-pixel-weighted L1 */
};

/* A trainer of the generator on a device, driven by engine/train.c in
 * place of its CPU forward/backward: one step is the forward, λ·L1, the
 * backward into the trained vector (all of G, or one adapter) and Adam.
 * Batches are staged in two host slots and uploaded while the previous
 * step runs.  kernels/cuda_trainer.h documents the CUDA one. */
typedef struct {
    /* 1 when it trains generator cfg with the loss terms loss_terms
     * (E2G_LOSS_* flags; 0: λ·L1 alone), else 0 with the reason in err. */
    int (*supports)(const e2g_gen_config *cfg, unsigned loss_terms, char *err);
    /* A trainer for batches of N crops of S×S: gen holds every G parameter
     * (e2g_gen_bind's layout), trained when lora is NULL, frozen otherwise;
     * the trained vector starts as gen or lora->memory, Adam state zero. */
    int (*create)(void **state, const e2g_gen_config *cfg, const float *gen, const e2g_lora *lora,
                  int N, int S, char *err);
    void (*destroy)(void *state);
    /* Host staging of batch slot s (0 or 1): x, tgt (N, S, S, 3) in [-1, 1]
     * and, training all of G, each sample's row of `concepts`. */
    void (*slot)(void *state, int s, float **x, float **tgt, int **rows);
    /* Starts copying slot s to the device (returns at once). */
    int (*upload)(void *state, int s, char *err);
    /* Enqueues one step on slot s: L1 weight lambda_l1, and when update,
     * Adam step adam_t (1-based) with lr, beta1, beta2, eps. */
    int (*step)(void *state, int s, float lambda_l1, int update, long adam_t, float lr, float beta1,
                float beta2, float eps, char *err);
    /* Waits for the step; *l1 = mean |y − tgt| of its batch. */
    int (*finish)(void *state, double *l1, char *err);
    /* Downloads / uploads the trained vector, its last gradient (get only)
     * and the Adam state; any pointer may be NULL (set: zero state). */
    int (*get)(void *state, float *params, float *grads, float *m, float *v, char *err);
    int (*set)(void *state, const float *params, const float *m, const float *v, char *err);
    /* Floats in the trained vector. */
    size_t (*size)(const void *state);
    /* Median device ms of a step on slot 0's batch over iters. */
    int (*time)(void *state, int iters, double *ms, char *err);
} e2g_train_backend;

/* ---- inference backend ---------------------------------------------------------- */

typedef struct {
    const char *name;   /* "cpu", "cuda": what logs, reports and metrics show */
    const char *device; /* where it runs, for messages: "the CPU", "CUDA device 0" */
    /* 1 when its device answers, else 0 with the reason in err. */
    int (*available)(char *err);
    /* One line about its devices into msg (len bytes); returns how many
     * there are, -1 on a device error. */
    int (*describe)(char *msg, size_t len);
    /* 1 when it runs generator cfg, else 0 with the reason in err. */
    int (*supports)(const e2g_gen_config *cfg, char *err);
    /* An instance for the weights p of cfg.  cfg and p must outlive it; a
     * device copies the weights once, so from then on they and any adapter
     * it has seen (keyed by e2g_lora.id) must not change.  cache_bytes
     * bounds the device memory of cached adapters and merged weights. */
    int (*create)(void **state, const e2g_gen_config *cfg, const e2g_gen_params *p,
                  size_t cache_bytes, char *err);
    void (*destroy)(void *state);
    /* y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1] (H, W multiples of 8),
     * one edit per sample; merged folds edits[0]'s terms, which every
     * sample shares, into the weights, else each sample's terms run as the
     * low-rank path.  Safe to call from several threads. */
    int (*run)(void *state, float *y, const float *x, const e2g_edit *edits, int N, int H, int W,
               int merged, char *err);

    /* Optional (NULL when the backend has nothing to do there): */
    /* Makes the adapters of edits ready (uploaded, merged when merged) and
     * waits: what an adapter switch costs before the forward. */
    int (*prepare)(void *state, const e2g_edit *edits, int N, int merged, char *err);
    /* Device time of the forward with inputs in place: median ms over
     * iters after a warm-up. */
    int (*time)(void *state, const e2g_edit *edits, int N, int H, int W, int merged, int iters,
                double *ms, char *err);
    /* Drops every cached adapter and merged weight set. */
    void (*drop_adapters)(void *state);
    /* Bytes and count of cached adapters and merged sets. */
    void (*cache_stats)(const void *state, size_t *bytes, int *entries);
    /* 1 while the device can still run batches; 0 once a failure left it
     * unusable for the rest of the process (CUDA's sticky errors: an
     * illegal address, a launch failure, ... make every later call fail
     * too), with the reason in why (E2G_ERR_LEN).  The runtime asks after a
     * failed run and then serves on the CPU for good.  NULL: never dead. */
    int (*healthy)(void *state, char *why);

    /* Its trainer; NULL when it has none (the CPU trains in train.c). */
    const e2g_train_backend *train;
} e2g_backend;

/* ---- registry ------------------------------------------------------------------- */

/* The backends of this build: index 0 is the CPU, then the devices. */
int e2g_backend_count(void);
const e2g_backend *e2g_backend_get(int i);
/* By name; NULL when this build has none of that name. */
const e2g_backend *e2g_backend_find(const char *name);
/* The device backends (not the CPU) that mode may use, in registry order,
 * into out (at most max): every one for auto, the one it names for cuda,
 * none for cpu.  Returns the count; when 0, why says so (E2G_ERR_LEN). */
int e2g_backend_candidates(e2g_device_mode mode, const e2g_backend **out, int max, char *why);

/* The providers backend_registry.c lists. */
const e2g_backend *e2g_cpu_backend(void);  /* backend_cpu.c */
const e2g_backend *e2g_cuda_backend(void); /* kernels/cuda_backend.cu: CUDA builds only */

#ifdef __cplusplus
}
#endif

#endif
