/* reduce.c — k-means data reduction over encoder features (see reduce.h). */
#include "reduce.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define FEATURE_BATCH 16
#define MAX_ITERATIONS 50

/* Encoder features (n, C4) of every pair's source image. */
static float *source_features(const e2g_dataset *d, const e2g_model *m) {
    int S = d->crop, c4 = e2g_gen_c4(&m->cfg);
    float *feat = e2g_xmalloc((size_t)d->n_pairs * c4 * sizeof(float));
    float *x = e2g_xmalloc((size_t)FEATURE_BATCH * S * S * 3 * sizeof(float));
    e2g_gen_acts *acts = NULL;
    int acts_n = 0;
    for (int p0 = 0; p0 < d->n_pairs; p0 += FEATURE_BATCH) {
        int n = d->n_pairs - p0 < FEATURE_BATCH ? d->n_pairs - p0 : FEATURE_BATCH, idx[FEATURE_BATCH];
        e2g_edit edits[FEATURE_BATCH] = {{0}};
        for (int j = 0; j < n; j++) idx[j] = p0 + j, edits[j].context = e2g_model_context(m, 0);
        if (n != acts_n) {
            e2g_gen_acts_free(acts);
            acts = e2g_gen_acts_new(&m->cfg, acts_n = n, S, S, 0);
        }
        e2g_pairs_to_tensors(d, idx, n, x, NULL);
        e2g_gen_forward(acts, NULL, &m->params, x, edits);
        e2g_gen_features(acts, feat + (size_t)p0 * c4);
    }
    e2g_gen_acts_free(acts);
    free(x);
    return feat;
}

static double dist2(const float *a, const float *b, int dim) {
    double s = 0;
    for (int i = 0; i < dim; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s;
}

/* k-means++: each next centre drawn with probability ∝ squared distance. */
static void init_centres(float *centres, const float *feat, int n, int dim, int k, uint64_t *rng) {
    double *d2 = e2g_xmalloc(n * sizeof(double));
    int first = (int)(e2g_splitmix64(rng) % (uint64_t)n);
    memcpy(centres, feat + (size_t)first * dim, dim * sizeof(float));
    for (int i = 0; i < n; i++) d2[i] = dist2(feat + (size_t)i * dim, centres, dim);
    for (int c = 1; c < k; c++) {
        double total = 0;
        for (int i = 0; i < n; i++) total += d2[i];
        double target = e2g_uniform01(rng) * total;
        int pick = n - 1;
        for (int i = 0; i < n; i++) {
            target -= d2[i];
            if (target <= 0) {
                pick = i;
                break;
            }
        }
        memcpy(centres + (size_t)c * dim, feat + (size_t)pick * dim, dim * sizeof(float));
        for (int i = 0; i < n; i++) {
            double d = dist2(feat + (size_t)i * dim, centres + (size_t)c * dim, dim);
            if (d < d2[i]) d2[i] = d;
        }
    }
    free(d2);
}

json_t *e2g_reduce_pairs(e2g_dataset *d, const e2g_model *m, double fraction, unsigned long long seed) {
    int n = d->n_pairs, dim = e2g_gen_c4(&m->cfg);
    int k = (int)lround(fraction * n);
    if (k < 1) k = 1;
    if (k >= n) return json_pack("{s:i,s:i,s:f}", "pairs", n, "kept", n, "fraction", 1.0);
    float *feat = source_features(d, m);
    float *centres = e2g_xmalloc((size_t)k * dim * sizeof(float));
    int *assign = e2g_xmalloc(n * sizeof(int)), *count = e2g_xmalloc(k * sizeof(int));
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 7;
    init_centres(centres, feat, n, dim, k, &rng);
    int iterations = 0, changed = 1;
    double inertia = 0;
    for (int i = 0; i < n; i++) assign[i] = -1;
    while (changed && iterations < MAX_ITERATIONS) {
        iterations++, changed = 0, inertia = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed, inertia)
        for (int i = 0; i < n; i++) {
            int best = 0;
            double bd = DBL_MAX;
            for (int c = 0; c < k; c++) {
                double dd = dist2(feat + (size_t)i * dim, centres + (size_t)c * dim, dim);
                if (dd < bd) bd = dd, best = c;
            }
            changed += assign[i] != best;
            assign[i] = best;
            inertia += bd;
        }
        memset(centres, 0, (size_t)k * dim * sizeof(float));
        memset(count, 0, k * sizeof(int));
        for (int i = 0; i < n; i++) {
            count[assign[i]]++;
            for (int j = 0; j < dim; j++) centres[(size_t)assign[i] * dim + j] += feat[(size_t)i * dim + j];
        }
        for (int c = 0; c < k; c++)
            for (int j = 0; j < dim; j++) centres[(size_t)c * dim + j] /= count[c] ? count[c] : 1;
    }
    /* per cluster, the pair nearest its centre */
    int *nearest = e2g_xmalloc(k * sizeof(int));
    double *nd = e2g_xmalloc(k * sizeof(double));
    for (int c = 0; c < k; c++) nearest[c] = -1, nd[c] = DBL_MAX;
    for (int i = 0; i < n; i++) {
        double dd = dist2(feat + (size_t)i * dim, centres + (size_t)assign[i] * dim, dim);
        if (dd < nd[assign[i]]) nd[assign[i]] = dd, nearest[assign[i]] = i;
    }
    unsigned char *keep = e2g_xcalloc(n, 1);
    int kept = 0;
    for (int c = 0; c < k; c++)
        if (nearest[c] >= 0 && !keep[nearest[c]]) keep[nearest[c]] = 1, kept++;
    e2g_dataset_select(d, keep);
    json_t *evidence = json_pack("{s:i,s:i,s:f,s:i,s:i,s:f,s:s}", "pairs", n, "kept", kept, "fraction",
                                 fraction, "clusters", k, "kmeans_iterations", iterations,
                                 "inertia_per_pair", inertia / n, "features",
                                 "mean of the tokens entering the transformer block of the base");
    free(feat), free(centres), free(assign), free(count), free(nearest), free(nd), free(keep);
    return evidence;
}
