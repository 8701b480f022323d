/* reduce.h — data reduction (E²GAN): keep the most representative pairs,
 * the ones nearest the centres of a k-means clustering of the source
 * images' features from the base model's encoder. */
#ifndef E2G_REDUCE_H
#define E2G_REDUCE_H

#include <jansson.h>

#include "dataset.h"
#include "model_io.h"

/* Keeps round(fraction·n) pairs of d (at least 1): k-means++ seeded by
 * seed, Lloyd iterations to convergence (at most 50), then per cluster the
 * pair nearest its centre.  Returns what it did as a JSON object. */
json_t *e2g_reduce_pairs(e2g_dataset *d, const e2g_model *m, double fraction, unsigned long long seed);

#endif
