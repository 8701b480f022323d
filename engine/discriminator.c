/* discriminator.c — the pix2pix 70×70 PatchGAN (docs/architecture.md §2)
 * on the CPU, for training: its node table (net.c: five 4×4 conv blocks
 * over concat(source, target)) run by the planned executor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model.h"
#include "net.h"
#include "planned.h"

int e2g_disc_tensors(int ndf, e2g_disc_params *p, e2g_tensor_entry *out) {
    e2g_net net;
    e2g_disc_net(&net, ndf);
    int n = e2g_net_tensors(&net, p, out, 0);
    E2G_ASSERT(n <= E2G_DISC_MAX_TENSORS);
    return n;
}

size_t e2g_disc_param_count(int ndf) {
    e2g_disc_params p;
    e2g_tensor_entry t[E2G_DISC_MAX_TENSORS];
    return e2g_tensors_numel(t, e2g_disc_tensors(ndf, &p, t));
}

void e2g_disc_bind(int ndf, e2g_disc_params *p, float *memory) {
    e2g_tensor_entry t[E2G_DISC_MAX_TENSORS];
    memset(p, 0, sizeof *p);
    e2g_tensors_bind(t, e2g_disc_tensors(ndf, p, t), memory);
}

void e2g_disc_init(int ndf, e2g_disc_params *p, unsigned long long seed) {
    e2g_tensor_entry t[E2G_DISC_MAX_TENSORS];
    int n = e2g_disc_tensors(ndf, p, t);
    e2g_init_tensors(t, n, seed);
}

struct e2g_disc_acts {
    e2g_net net;
    int N, H, W;
    float *input, *dinput; /* concat(src, tgt): (N, H, W, 6) */
    e2g_planned *plan;
};

void e2g_disc_out_size(int H, int W, int *Ho, int *Wo) {
    e2g_net net;
    e2g_node_shape shape[E2G_NET_MAX_NODES];
    e2g_disc_net(&net, 1);
    e2g_net_shapes(&net, H, W, 0, shape);
    *Ho = shape[net.output].h, *Wo = shape[net.output].w;
}

e2g_disc_acts *e2g_disc_acts_new(int ndf, int N, int H, int W) {
    e2g_disc_acts *a = e2g_xcalloc(1, sizeof *a);
    a->N = N, a->H = H, a->W = W;
    e2g_disc_net(&a->net, ndf);
    a->plan = e2g_planned_new(&a->net, N, H, W, 0, 1);
    size_t in_n = (size_t)N * H * W * 6;
    a->input = e2g_xmalloc(2 * in_n * sizeof(float));
    a->dinput = a->input + in_n;
    return a;
}

void e2g_disc_acts_free(e2g_disc_acts *a) {
    if (!a) return;
    e2g_planned_free(a->plan);
    free(a->input);
    free(a);
}

static size_t logits_numel(const e2g_disc_acts *a) {
    e2g_node_shape s = e2g_planned_shape(a->plan, a->net.output);
    return (size_t)a->N * s.h * s.w;
}

void e2g_disc_forward(e2g_disc_acts *a, float *logits, const e2g_disc_params *p, const float *src,
                      const float *tgt) {
    size_t pixels = (size_t)a->N * a->H * a->W;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < pixels; i++) {
        memcpy(a->input + i * 6, src + i * 3, 3 * sizeof(float));
        memcpy(a->input + i * 6 + 3, tgt + i * 3, 3 * sizeof(float));
    }
    e2g_planned_forward(a->plan, p, a->input, NULL);
    memcpy(logits, e2g_planned_out(a->plan, a->net.output), logits_numel(a) * sizeof(float));
}

void e2g_disc_backward(e2g_disc_acts *a, e2g_disc_params *grads, float *dsrc, float *dtgt,
                       const float *dlogits, const e2g_disc_params *p, const float *src,
                       const float *tgt) {
    (void)src, (void)tgt; /* the forward kept their concatenation */
    size_t pixels = (size_t)a->N * a->H * a->W;
    int want_input = dsrc || dtgt;
    if (want_input) memset(a->dinput, 0, pixels * 6 * sizeof(float));
    e2g_planned_backward(a->plan, grads, NULL, NULL, NULL, want_input ? a->dinput : NULL, dlogits, p, NULL);
    if (!want_input) return;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < pixels; i++)
        for (int c = 0; c < 3; c++) {
            if (dsrc) dsrc[i * 3 + c] += a->dinput[i * 6 + c];
            if (dtgt) dtgt[i * 3 + c] += a->dinput[i * 6 + 3 + c];
        }
}
