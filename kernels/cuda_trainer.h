/* cuda_trainer.h — training the generator on an NVIDIA GPU: the C API
 * behind the cuda backend's trainer (cuda_backend.cu, engine/backend.h),
 * which engine/train.c drives instead of the CPU forward/backward when it
 * runs on the device.  One step = the forward with every activation kept (bf16
 * NHWC, fp32 residual stream), λ·L1, the backward through cuDNN's
 * backward-data/backward-filter and our kernels, and a fused Adam on fp32
 * master weights and state.  LoRA trains through the merged weight
 * W + s·B·A (exact: dA = s·Bᵀ·dW, dB = s·dW·Aᵀ).  Batches are staged in
 * two pinned slots and uploaded on a second stream while the previous
 * step runs.  Every failing CUDA/cuDNN call is a -1 return with err
 * filled, never an exit.  docs/cuda.md, "Training on the GPU". */
#ifndef E2G_CUDA_TRAINER_H
#define E2G_CUDA_TRAINER_H

#ifdef __cplusplus
extern "C" {
#endif

#include "model.h"

typedef struct e2g_cuda_trainer e2g_cuda_trainer;

/* A trainer for batches of N crops of S×S.  gen: every G parameter (flat,
 * e2g_gen_bind's layout) — the trained vector when lora is NULL, the
 * frozen base otherwise; lora: the adapter trained (ranks and scales are
 * fixed from here on; its values are read by e2g_cuda_trainer_set).
 * The trained vector starts as gen or lora->memory with zero Adam state. */
int e2g_cuda_trainer_new(e2g_cuda_trainer **out, const e2g_gen_config *cfg, const float *gen,
                         const e2g_lora *lora, int N, int S, char *err);
void e2g_cuda_trainer_free(e2g_cuda_trainer *t);

/* Pinned staging of batch slot s (0 or 1): x and tgt (N, S, S, 3) in
 * [-1, 1] and, training all of G, each sample's row of `concepts`. */
void e2g_cuda_trainer_slot(e2g_cuda_trainer *t, int s, float **x, float **tgt, int **rows);
/* Copies slot s to the device on the upload stream (returns at once). */
int e2g_cuda_trainer_upload(e2g_cuda_trainer *t, int s, char *err);
/* Enqueues one step on slot s's batch (after its upload): forward, L1
 * with weight lambda_l1, backward into the trained vector's gradient and,
 * when update, Adam step number adam_t (1-based) with lr, β1, β2, eps.
 * Returns before the device finishes. */
int e2g_cuda_trainer_step(e2g_cuda_trainer *t, int s, float lambda_l1, int update, long adam_t,
                          float lr, float beta1, float beta2, float eps, char *err);
/* Waits for the step; *l1 = mean |y − tgt| of its batch. */
int e2g_cuda_trainer_finish(e2g_cuda_trainer *t, double *l1, char *err);

/* Downloads the trained vector, its last gradient and the Adam state
 * (any pointer may be NULL), n floats each. */
int e2g_cuda_trainer_get(e2g_cuda_trainer *t, float *params, float *grads, float *m, float *v,
                         char *err);
/* Uploads the trained vector and Adam state (resuming; m, v may be NULL:
 * zero). */
int e2g_cuda_trainer_set(e2g_cuda_trainer *t, const float *params, const float *m, const float *v,
                         char *err);
/* Floats in the trained vector. */
size_t e2g_cuda_trainer_size(const e2g_cuda_trainer *t);

/* Device time of steps on the batch in slot 0 (uploaded once): median ms
 * over iters after two warm-ups, with Adam. */
int e2g_cuda_trainer_time(e2g_cuda_trainer *t, int iters, double *ms, char *err);

#ifdef __cplusplus
}
#endif

#endif
