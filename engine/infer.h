/* infer.h — the generator for serving and the CLI: a runtime binds a
 * loaded model to the backend it runs on (backend.h: the CPU, or a device
 * such as CUDA, chosen by a device mode); inference plans per (batch,
 * height, width) run on it, merged or unmerged LoRA; whole-image edits of
 * any size are reflection-padded to a multiple of 8 and cropped back. */
#ifndef E2G_INFER_H
#define E2G_INFER_H

#include "backend.h"
#include "image.h"
#include "model.h"
#include "model_io.h"

/* ---- runtime: a model and the backend instance it runs on ---------------------- */

typedef struct e2g_runtime e2g_runtime;

/* Binds m to the backend mode picks (e2g_device_mode_parse: NULL reads
 * $E2GAN_DEVICE, default auto): "cpu" the CPU; "auto" the first device
 * backend of this build (CUDA) whose device answers and that supports the
 * model, else the CPU; "cuda" that device or an error.  A device copies
 * the weights once: from then on m's weights and any adapter used with it
 * must not change (serving and the CLI; training runs on the CPU's).  m
 * must outlive the runtime.  Returns 1 on a device, 0 on the CPU (msg,
 * E2G_ERR_LEN bytes, says why or which), -1 when the mode is unknown or
 * "cuda" cannot be had (msg says why, *out is NULL). */
int e2g_runtime_new(e2g_runtime **out, const e2g_model *m, const char *mode, char *msg);
/* Binds m to device backend b itself (tests, tools): 1 on b, -1 when b is
 * unavailable, does not support the model or fails to start (msg says
 * why, *out is NULL). */
int e2g_runtime_new_on(e2g_runtime **out, const e2g_model *m, const e2g_backend *b, char *msg);
void e2g_runtime_free(e2g_runtime *rt);
/* Where e2g_infer_run runs: the backend's name, "cuda" or "cpu" — "cpu"
 * also once the device is dead (below). */
const char *e2g_runtime_name(const e2g_runtime *rt);
/* 1 once the runtime's device failed in a way that leaves it unusable (the
 * backend's healthy hook said so after a failed batch): from then on every
 * batch runs on the CPU, and why (len bytes, may be NULL) gets the reason;
 * 0 while the device serves or when there is none. */
int e2g_runtime_device_dead(const e2g_runtime *rt, char *why, size_t len);
const e2g_model *e2g_runtime_model(const e2g_runtime *rt);
/* Its backend and instance state, for a backend's optional hooks
 * (prepare, time, drop_adapters, cache_stats: benchmarks). */
const e2g_backend *e2g_runtime_backend(const e2g_runtime *rt);
void *e2g_runtime_state(const e2g_runtime *rt);

/* ---- plans and edits ------------------------------------------------------------ */

typedef struct e2g_infer e2g_infer;

/* An inference plan on rt for batches of N images of H×W (multiples of 8). */
e2g_infer *e2g_infer_new(const e2g_runtime *rt, int N, int H, int W);
void e2g_infer_free(e2g_infer *inf);

/* y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1], one edit per sample.  With
 * merged set, the LoRA terms of edits[0] — which every sample must share —
 * are folded into the weights for this call; otherwise each sample's terms
 * run as the low-rank path.  On a device a failing call (out of memory, a
 * driver error) is logged to stderr and the batch runs on the CPU instead;
 * when the device is left unusable (a sticky CUDA error), one more line
 * says so and every later batch runs on the CPU without trying it. */
void e2g_infer_run(e2g_infer *inf, float *y, const float *x, const e2g_edit *edits, int merged);

/* Edits im in place: any size, padded by reflection to a multiple of 8. */
int e2g_infer_image(e2g_image *im, const e2g_runtime *rt, const e2g_edit *edit, int merged, char *err);

#endif
