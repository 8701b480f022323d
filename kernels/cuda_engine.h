/* cuda_engine.h — the generator on an NVIDIA GPU (the C API of the .cu files in kernels/,
 * which cuda_backend.cu presents as the "cuda" backend of engine/backend.h):
 * bf16 NHWC activations with fp32 accumulation, cuDNN tensor-core
 * convolutions with our fused kernels around them, one buffer plan and CUDA
 * graphs per (batch, height, width) bucket, and a byte-bounded LRU cache of
 * adapters on the device (unmerged low-rank path grouped by adapter, or
 * merged weights for a batch of one adapter set).  docs/cuda.md has the
 * design.  Every function reports a failing CUDA/cuDNN call as a -1 return
 * and a message in err (E2G_ERR_LEN bytes), never by exiting. */
#ifndef E2G_CUDA_ENGINE_H
#define E2G_CUDA_ENGINE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "model.h"

typedef struct e2g_cuda_engine e2g_cuda_engine;

/* Whether device 0 is usable: 1 yes, 0 no device (err says why). */
int e2g_cuda_device_present(char *err);

/* 0 when the GPU code (inference and training) supports the generator
 * configuration cfg, else -1 with the reason in err. */
int e2g_cuda_check_config(const e2g_gen_config *cfg, char *err);

/* Uploads the weights p of a generator cfg to device 0 and prepares the
 * engine; the caller must keep p unchanged while the engine lives.
 * adapter_cache_bytes bounds the device memory of cached adapters and
 * merged weight sets.  Returns 0, or -1 when there is no usable device, the
 * configuration is not supported on the GPU (err says which), or a CUDA
 * call failed. */
int e2g_cuda_engine_new(e2g_cuda_engine **out, const e2g_gen_config *cfg, const e2g_gen_params *p,
                        size_t adapter_cache_bytes, char *err);
void e2g_cuda_engine_free(e2g_cuda_engine *e);

/* As e2g_infer_run: y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1], one edit
 * per sample; merged folds edits[0]'s terms (shared by every sample) into
 * cached merged weights, else each sample's terms run unmerged.  Adapters
 * are recognised by e2g_lora.id and must not change after their first use.
 * Thread-safe (one run at a time per engine). */
int e2g_cuda_engine_run(e2g_cuda_engine *e, float *y, const float *x, const e2g_edit *edits, int N,
                        int H, int W, int merged, char *err);

/* Benchmark helpers: the forward with its inputs already on the device,
 * timed with CUDA events; *ms is the median over iters after a warm-up
 * (which builds the plan and the CUDA graph). */
int e2g_cuda_engine_time(e2g_cuda_engine *e, const e2g_edit *edits, int N, int H, int W,
                         int merged, int iters, double *ms, char *err);

/* Makes the adapters of edits ready on the device (uploading those not
 * cached and, when merged, building the merged weights) and waits for the
 * device: what a switch of adapters costs before the forward. */
int e2g_cuda_engine_prepare(e2g_cuda_engine *e, const e2g_edit *edits, int N, int merged,
                            char *err);

/* Drops every cached adapter and merged weight set (benchmarks of cold
 * switches; tests). */
void e2g_cuda_engine_drop_adapters(e2g_cuda_engine *e);

/* Device bytes held by cached adapters and merged sets, and their count. */
void e2g_cuda_engine_cache_stats(const e2g_cuda_engine *e, size_t *bytes, int *entries);

/* 1 while the engine's device is usable; 0 once a sticky CUDA error
 * (illegal address, launch failure, ...) left the context dead, with the
 * error in why (E2G_ERR_LEN; may be NULL).  A dead engine refuses every
 * call with that reason. */
int e2g_cuda_engine_healthy(e2g_cuda_engine *e, char *why);

/* CUDA graphs: a batch signature runs eagerly when first seen, is captured
 * the second time and replayed from then on.  enabled is 0 when graphs are
 * off (E2GAN_CUDA_GRAPHS=0 at creation, or a capture failed: why_off); the
 * counts are forwards run eagerly, captured (and launched), replayed. */
typedef struct {
    int enabled;
    char why_off[256];
    long eager, captured, replayed;
} e2g_cuda_graph_stats;
void e2g_cuda_engine_graph_stats(e2g_cuda_engine *e, e2g_cuda_graph_stats *out);

/* Test hook (bench/gpu_check.c sticky): enqueues a kernel writing to an
 * invalid address, so the next call meets the sticky fault a buggy kernel
 * would raise. */
void e2g_cuda_engine_inject_fault(e2g_cuda_engine *e);

/* ---- single fused ops on host arrays, for checks against the CPU engine ---- */
/* Each uploads fp32 inputs as bf16, runs the op as the engine does and
 * downloads fp32 output; shapes and layouts as the CPU op of the same name
 * (engine/ops.h, conv.h, attention.h). */

/* conv block epilogue: e2g_instancenorm_forward (+ ReLU) then + residual
 * (may be NULL); x (N, HW, C) is the conv output. */
int e2g_cuda_check_instancenorm(float *out, const float *x, const float *gamma, const float *beta,
                                int relu, const float *residual, int N, int HW, int C, char *err);
int e2g_cuda_check_layernorm(float *out, const float *x, const float *gamma, const float *beta,
                             int M, int C, char *err);
/* out = gelu(x + bias), x (M, C). */
int e2g_cuda_check_gelu(float *out, const float *x, const float *bias, int M, int C, char *err);
int e2g_cuda_check_attention(float *out, const float *q, const float *k, const float *v, int N,
                             int Lq, int Lk, int C, int heads, char *err);
/* conv2d_forward / e2g_upconv2x_forward (upsample set) through cuDNN, reflect
 * padding done as the engine does it. */
int e2g_cuda_check_conv(float *out, const float *x, const float *w, const float *bias, int N,
                        int H, int W, const e2g_conv_shape *cs, int upsample, char *err);
int e2g_cuda_check_output(float *y, const float *o, const float *x, int residual, size_t n,
                          char *err);

#ifdef __cplusplus
}
#endif

#endif
