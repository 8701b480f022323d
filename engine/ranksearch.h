/* ranksearch.h — the rank search: per crucial layer, the smallest LoRA rank
 * that keeps validation quality, measured on a trained probe adapter. */
#ifndef E2G_RANKSEARCH_H
#define E2G_RANKSEARCH_H

#include <jansson.h>

#include "dataset.h"
#include "model.h"
#include "model_io.h"

/* probe: an adapter trained at one generous rank R on every crucial layer.
 * For each layer alone, its delta is replaced by the best rank-k
 * approximation (k = 0, 1, 2, 4, … < R; SVD) and the validation PSNR
 * measured; the layer gets the smallest k whose PSNR stays within
 * `tolerance` dB of the probe's (R when none does).  Those losses add up,
 * so the layers' truncations are then measured together, and while they
 * lose more than `tolerance` the rank of the layer whose doubling gains the
 * most PSNR per added parameter is doubled (up to R).  Returns a new
 * adapter with those ranks, warm-started from the truncated factors (same
 * scales, the probe's embedding), and the evidence (every measurement,
 * each joint repair) in *evidence. */
e2g_lora *e2g_rank_search(const e2g_model *m, const e2g_lora *probe, const e2g_dataset *val,
                          int eval_pairs, double tolerance, json_t **evidence);

#endif
