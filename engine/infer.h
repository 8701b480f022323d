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

/* An inference plan for batches of N images of H×W (multiples of 8). */
e2g_infer *e2g_infer_new(const e2g_model *m, int N, int H, int W);
void e2g_infer_free(e2g_infer *inf);

/* y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1], one edit per sample.  With
 * merged set, the LoRA terms of edits[0] — which every sample must share —
 * are folded into a private copy of the affected weights for this call;
 * otherwise each sample's terms run as the low-rank path. */
void e2g_infer_run(e2g_infer *inf, float *y, const float *x, const e2g_edit *edits, int merged);

/* Edits im in place: any size, padded by reflection to a multiple of 8. */
int e2g_infer_image(e2g_image *im, const e2g_model *m, const e2g_edit *edit, int merged, char *err);

#endif
