/* adam.c — Adam as torch.optim.Adam computes it (no weight decay). */
#include "adam.h"

#include <math.h>
#include <stdlib.h>

#include "common.h"

void e2g_adam_init(e2g_adam *a, size_t n) {
    a->n = n;
    a->m = e2g_xcalloc(n, sizeof(float));
    a->v = e2g_xcalloc(n, sizeof(float));
    a->t = 0;
}

void e2g_adam_free(e2g_adam *a) {
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

void e2g_adam_step(e2g_adam *a, float *params, const float *grads, float lr, float beta1,
                   float beta2, float eps) {
    a->t++;
    float bc1 = 1.0f - powf(beta1, (float)a->t), bc2 = 1.0f - powf(beta2, (float)a->t);
    float step = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float g = grads[i];
        a->m[i] = beta1 * a->m[i] + (1.0f - beta1) * g;
        a->v[i] = beta2 * a->v[i] + (1.0f - beta2) * g * g;
        params[i] -= step * a->m[i] / (sqrtf(a->v[i]) * inv_sqrt_bc2 + eps);
    }
}
