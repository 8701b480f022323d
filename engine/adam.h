/* adam.h — the Adam optimiser over one flat array of parameters (the
 * engine keeps each model's parameters in one allocation). */
#ifndef E2G_ADAM_H
#define E2G_ADAM_H

#include <stddef.h>

typedef struct {
    size_t n;
    float *m, *v; /* first and second moments, n each */
    long t;       /* steps taken (bias correction) */
} e2g_adam;

void e2g_adam_init(e2g_adam *a, size_t n);
void e2g_adam_free(e2g_adam *a);
/* One step: params -= lr·m̂/(√v̂ + eps) with PyTorch's Adam update. */
void e2g_adam_step(e2g_adam *a, float *params, const float *grads, float lr, float beta1,
                   float beta2, float eps);

#endif
