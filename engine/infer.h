/* infer.h — the generator for serving and the CLI: inference-only
 * activations planned once per (batch, height, width) and reused across
 * calls, merged or unmerged LoRA, and whole-image edits of any size
 * (reflection-padded to a multiple of 8 and cropped back). */
#ifndef E2G_INFER_H
#define E2G_INFER_H

#include "image.h"
#include "model.h"
#include "model_io.h"

typedef struct e2g_infer e2g_infer;

/* Moves m's inference onto CUDA device 0 when mode allows it: "cpu" never,
 * "cuda" or "auto" when this build has CUDA, a device is present and the
 * GPU engine supports the model.  mode NULL reads E2GAN_DEVICE (default
 * "auto").  The weights are uploaded once; from then on m's weights and
 * any adapter used with it must not change (serving and the CLI attach,
 * training never does).  Returns 1 when attached, 0 when inference stays
 * on the CPU (msg, E2G_ERR_LEN bytes, says why), -1 when mode is "cuda"
 * and that failed, or mode is unknown. */
int e2g_infer_use_device(e2g_model *m, const char *mode, char *msg);
/* "cuda" or "cpu": where e2g_infer_run runs for m. */
const char *e2g_infer_backend(const e2g_model *m);

/* An inference plan for batches of N images of H×W (multiples of 8). */
e2g_infer *e2g_infer_new(const e2g_model *m, int N, int H, int W);
void e2g_infer_free(e2g_infer *inf);

/* y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1], one edit per sample.  With
 * merged set, the LoRA terms of edits[0] — which every sample must share —
 * are folded into a private copy of the affected weights for this call;
 * otherwise each sample's terms run as the low-rank path.  On an attached
 * GPU a failing CUDA call (out of memory, a driver error) is logged to
 * stderr and the batch runs on the CPU instead. */
void e2g_infer_run(e2g_infer *inf, float *y, const float *x, const e2g_edit *edits, int merged);

/* Edits im in place: any size, padded by reflection to a multiple of 8. */
int e2g_infer_image(e2g_image *im, const e2g_model *m, const e2g_edit *edit, int merged, char *err);

#endif
