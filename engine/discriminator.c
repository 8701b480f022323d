/* discriminator.c — the pix2pix 70×70 PatchGAN (ARCHITECTURE.md §2) on the
 * CPU, for training: five 4×4 conv blocks over concat(source, target),
 * LeakyReLU 0.2 between them, instance norm on c2..c4, one logit per patch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "model.h"
#include "ops.h"

enum { D_C1, D_C2, D_C3, D_C4, D_OUT, D_NCONV };

static conv_spec disc_conv_spec(int ndf, int id) {
    static const int cin_mult[D_NCONV] = {0, 1, 2, 4, 8}, cout_mult[D_NCONV] = {1, 2, 4, 8, 0};
    conv_spec s = {.conv = {id == D_C1 ? 6 : ndf * cin_mult[id], id == D_OUT ? 1 : ndf * cout_mult[id],
                            4, id <= D_C3 ? 2 : 1, 1, E2G_PAD_ZERO},
                   .bias = 1, .norm = id != D_C1 && id != D_OUT,
                   .act = id == D_OUT ? ACT_NONE : ACT_LRELU, .crucial = -1};
    return s;
}

static e2g_conv_params *disc_params(const e2g_disc_params *p, int id) {
    e2g_disc_params *m = (e2g_disc_params *)p;
    e2g_conv_params *table[D_NCONV] = {&m->c1, &m->c2, &m->c3, &m->c4, &m->out};
    return table[id];
}

int e2g_disc_tensors(int ndf, e2g_disc_params *p, e2g_tensor_entry *out) {
    static const char *const names[D_NCONV] = {"c1", "c2", "c3", "c4", "out"};
    int n = 0;
    for (int id = 0; id < D_NCONV; id++) {
        conv_spec s = disc_conv_spec(ndf, id);
        e2g_conv_params *cp = disc_params(p, id);
        e2g_tensor_entry *e = &out[n];
        snprintf(e[0].name, sizeof e[0].name, "%s.weight", names[id]);
        e[0].ndim = 4;
        e[0].shape[0] = s.conv.cout, e[0].shape[1] = s.conv.cin, e[0].shape[2] = e[0].shape[3] = 4;
        e[0].numel = (size_t)s.conv.cout * s.conv.cin * 16;
        e[0].slot = &cp->w, e[0].init = E2G_INIT_WEIGHT;
        snprintf(e[1].name, sizeof e[1].name, "%s.bias", names[id]);
        e[1].ndim = 1, e[1].shape[0] = s.conv.cout, e[1].numel = s.conv.cout, e[1].slot = &cp->b;
        e[1].init = E2G_INIT_BIAS;
        n += 2;
        if (!s.norm) continue;
        for (int j = 0; j < 2; j++) {
            e = &out[n++];
            snprintf(e->name, sizeof e->name, "n%d.%s", id + 1, j ? "bias" : "weight");
            e->ndim = 1, e->shape[0] = s.conv.cout, e->numel = s.conv.cout;
            e->slot = j ? &cp->norm_b : &cp->norm_w;
            e->init = j ? E2G_INIT_ZEROS : E2G_INIT_ONES;
        }
    }
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
    int ndf, N, H, W;
    float *input, *dinput; /* concat(src, tgt): (N, H, W, 6) */
    block_acts act[D_NCONV], grad[D_NCONV];
    float *tmp, *grad_memory;
    size_t grad_floats;
    float *memory;
};

void e2g_disc_out_size(int H, int W, int *Ho, int *Wo) {
    for (int id = 0; id < D_NCONV; id++) {
        conv_spec s = disc_conv_spec(1, id);
        H = conv2d_out_size(H, &s.conv), W = conv2d_out_size(W, &s.conv);
    }
    *Ho = H, *Wo = W;
}

static void disc_plan(block_acts *b, arena *ar, int ndf, int N, int H, int W) {
    for (int id = 0; id < D_NCONV; id++) {
        conv_spec s = disc_conv_spec(ndf, id);
        block_plan(&b[id], ar, &s, N, H, W);
        H = b[id].Ho, W = b[id].Wo;
    }
}

e2g_disc_acts *e2g_disc_acts_new(int ndf, int N, int H, int W) {
    e2g_disc_acts *a = e2g_xcalloc(1, sizeof *a);
    a->ndf = ndf, a->N = N, a->H = H, a->W = W;
    size_t in_n = (size_t)N * H * W * 6;
    arena count = {0};
    disc_plan(a->act, &count, ndf, N, H, W);
    size_t one = count.used, tmp = 0;
    for (int id = 0; id < D_NCONV; id++) {
        conv_spec s = disc_conv_spec(ndf, id);
        size_t n = block_out_size(&a->act[id], &s, N);
        if (n > tmp) tmp = n;
    }
    a->memory = e2g_xmalloc((2 * one + 2 * in_n + tmp + 64) * sizeof(float));
    arena ar = {a->memory, 0};
    a->input = arena_take(&ar, in_n);
    disc_plan(a->act, &ar, ndf, N, H, W);
    a->tmp = arena_take(&ar, tmp);
    a->grad_memory = a->memory + ar.used;
    a->dinput = arena_take(&ar, in_n);
    disc_plan(a->grad, &ar, ndf, N, H, W);
    a->grad_floats = (size_t)(a->memory + ar.used - a->grad_memory);
    return a;
}

void e2g_disc_acts_free(e2g_disc_acts *a) {
    if (!a) return;
    free(a->memory);
    free(a);
}

void e2g_disc_forward(e2g_disc_acts *a, float *logits, const e2g_disc_params *p, const float *src,
                      const float *tgt) {
    size_t pixels = (size_t)a->N * a->H * a->W;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < pixels; i++) {
        memcpy(a->input + i * 6, src + i * 3, 3 * sizeof(float));
        memcpy(a->input + i * 6 + 3, tgt + i * 3, 3 * sizeof(float));
    }
    const float *in = a->input;
    for (int id = 0; id < D_NCONV; id++) {
        conv_spec s = disc_conv_spec(a->ndf, id);
        block_forward(&a->act[id], &s, disc_params(p, id), in, a->N, NULL);
        in = a->act[id].out;
    }
    conv_spec s = disc_conv_spec(a->ndf, D_OUT);
    memcpy(logits, in, block_out_size(&a->act[D_OUT], &s, a->N) * sizeof(float));
}

void e2g_disc_backward(e2g_disc_acts *a, e2g_disc_params *grads, float *dsrc, float *dtgt,
                       const float *dlogits, const e2g_disc_params *p, const float *src,
                       const float *tgt) {
    (void)src, (void)tgt; /* the forward kept their concatenation */
    memset(a->grad_memory, 0, a->grad_floats * sizeof(float));
    conv_spec s = disc_conv_spec(a->ndf, D_OUT);
    memcpy(a->grad[D_OUT].out, dlogits, block_out_size(&a->act[D_OUT], &s, a->N) * sizeof(float));
    for (int id = D_NCONV - 1; id >= 0; id--) {
        s = disc_conv_spec(a->ndf, id);
        const float *in = id ? a->act[id - 1].out : a->input;
        float *din = id ? a->grad[id - 1].out : ((dsrc || dtgt) ? a->dinput : NULL);
        block_backward(&a->act[id], &a->grad[id], a->tmp, din, &s, disc_params(p, id),
                       grads ? disc_params(grads, id) : NULL, NULL, NULL, in, a->N, NULL);
    }
    if (!dsrc && !dtgt) return;
    size_t pixels = (size_t)a->N * a->H * a->W;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < pixels; i++)
        for (int c = 0; c < 3; c++) {
            if (dsrc) dsrc[i * 3 + c] += a->dinput[i * 6 + c];
            if (dtgt) dtgt[i * 3 + c] += a->dinput[i * 6 + 3 + c];
        }
}
