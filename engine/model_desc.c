/* model_desc.c — the generator described, without compute: widths, the
 * conv blocks' specs (convspec.h), the crucial layers' names and shapes,
 * and the parameter table with its binding, and conv output sizes.  Both
 * the CPU engine and the CUDA kernels use it, so it lives in the base
 * library e2gan_common with common.c (moved here unchanged from
 * generator.c and conv.c). */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "conv.h"
#include "convspec.h"
#include "model.h"

/* ---- conv shapes (conv.h) ---------------------------------------------------- */

int conv2d_out_size(int n, const e2g_conv_shape *cs) {
    return (n + 2 * cs->pad - cs->k) / cs->stride + 1;
}

/* ---- configuration and layer specs ------------------------------------------- */

int e2g_gen_c4(const e2g_gen_config *cfg) { return 4 * cfg->ngf; }

int e2g_gen_heads(const e2g_gen_config *cfg) {
    int h = e2g_gen_c4(cfg) / 64;
    return h > 0 ? h : 1;
}

static const char *const conv_names[G_NCONV] = {"enc1", "enc2", "enc3", "rb1.a", "rb1.b",
                                                "rb2.a", "rb2.b", "ds", "us", "rb3.a",
                                                "rb3.b", "dec2", "dec1", "out"};

conv_spec gen_conv_spec(const e2g_gen_config *cfg, int id) {
    int ngf = cfg->ngf, c4 = e2g_gen_c4(cfg), ends_norm = cfg->norm_ends;
    conv_spec s = {.conv = {c4, c4, 3, 1, 1, E2G_PAD_REFLECT}, .norm = 1, .act = ACT_RELU, .crucial = -1};
    switch (id) {
    case G_ENC1:
        s.conv = (e2g_conv_shape){3, ngf, 7, 1, 3, E2G_PAD_REFLECT};
        s.bias = !ends_norm, s.norm = ends_norm, s.crucial = E2G_L_ENC1;
        break;
    case G_ENC2: s.conv = (e2g_conv_shape){ngf, 2 * ngf, 3, 2, 1, E2G_PAD_ZERO}, s.crucial = E2G_L_ENC2; break;
    case G_ENC3: s.conv = (e2g_conv_shape){2 * ngf, c4, 3, 2, 1, E2G_PAD_ZERO}, s.crucial = E2G_L_ENC3; break;
    case G_RB1B: case G_RB2B: case G_RB3B: s.act = ACT_NONE; break;
    case G_DS: s.conv = (e2g_conv_shape){c4, c4, 3, 2, 1, E2G_PAD_ZERO}, s.crucial = E2G_L_DS; break;
    case G_US:
        s.conv = (e2g_conv_shape){c4, c4, 3, 1, 1, E2G_PAD_ZERO}, s.upsample = 1, s.crucial = E2G_L_US;
        break;
    case G_DEC2:
        s.conv = (e2g_conv_shape){c4, 2 * ngf, 3, 1, 1, E2G_PAD_ZERO}, s.upsample = 1;
        s.crucial = E2G_L_DEC2;
        break;
    case G_DEC1:
        s.conv = (e2g_conv_shape){2 * ngf, ngf, 3, 1, 1, E2G_PAD_ZERO}, s.upsample = 1;
        s.bias = !ends_norm, s.norm = ends_norm, s.crucial = E2G_L_DEC1;
        break;
    case G_OUT:
        s.conv = (e2g_conv_shape){ngf, 3, 7, 1, 3, E2G_PAD_REFLECT};
        s.bias = 1, s.norm = 0, s.act = ACT_NONE, s.crucial = E2G_L_OUT;
        break;
    default: break; /* rb*.a: the defaults */
    }
    return s;
}

e2g_conv_params *gen_conv_params(const e2g_gen_params *p, int id) {
    e2g_gen_params *m = (e2g_gen_params *)p;
    e2g_conv_params *table[G_NCONV] = {&m->enc1, &m->enc2, &m->enc3, &m->rb_a[0], &m->rb_b[0],
                                       &m->rb_a[1], &m->rb_b[1], &m->ds, &m->us, &m->rb_a[2],
                                       &m->rb_b[2], &m->dec2, &m->dec1, &m->out};
    return table[id];
}

static const char *const crucial_names[E2G_N_CRUCIAL] = {
    "enc1.conv", "enc2.conv", "enc3.conv", "ds.conv",
    "tb.self_attn.q", "tb.self_attn.k", "tb.self_attn.v", "tb.self_attn.o",
    "tb.cross_attn.q", "tb.cross_attn.k", "tb.cross_attn.v", "tb.cross_attn.o",
    "tb.fc1", "tb.fc2", "us.conv", "dec2.conv", "dec1.conv", "out"};

const char *e2g_crucial_name(int layer) { return crucial_names[layer]; }

void e2g_crucial_shape(const e2g_gen_config *cfg, int layer, e2g_layer_shape *out) {
    static const int conv_of[E2G_N_CRUCIAL] = {G_ENC1, G_ENC2, G_ENC3, G_DS, -1, -1, -1, -1, -1,
                                               -1,     -1,     -1,     -1,   -1, G_US, G_DEC2,
                                               G_DEC1, G_OUT};
    int c4 = e2g_gen_c4(cfg);
    memset(out, 0, sizeof *out);
    if (conv_of[layer] >= 0) {
        out->conv = gen_conv_spec(cfg, conv_of[layer]).conv;
        out->cin = out->conv.cin, out->cout = out->conv.cout, out->k = out->conv.k;
    } else {
        out->cin = layer == E2G_L_FC2 ? 4 * c4 : c4;
        out->cout = layer == E2G_L_FC1 ? 4 * c4 : c4;
    }
}

/* ---- parameter table ---------------------------------------------------------- */

static void add_tensor(e2g_tensor_entry *t, int *n, const char *name, float **slot, int ndim,
                       int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    e2g_tensor_entry *e = &t[(*n)++];
    snprintf(e->name, sizeof e->name, "%s", name);
    int is_weight = strcmp(name + strlen(name) - 6, "weight") == 0;
    if (strcmp(name, "concepts") == 0)
        e->init = E2G_INIT_NORMAL;
    else if (strstr(name, ".norm.") || strncmp(name, "tb.ln", 5) == 0)
        e->init = is_weight ? E2G_INIT_ONES : E2G_INIT_ZEROS;
    else
        e->init = is_weight ? E2G_INIT_WEIGHT : E2G_INIT_BIAS;
    e->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    e->numel = 1;
    for (int i = 0; i < 4; i++) {
        e->shape[i] = i < ndim ? dims[i] : 0;
        if (i < ndim) e->numel *= (size_t)dims[i];
    }
    e->slot = slot;
}

static void add_linear(e2g_tensor_entry *t, int *n, const char *name, e2g_linear_params *lp,
                       int in, int out) {
    char buf[48];
    snprintf(buf, sizeof buf, "%.40s.weight", name);
    add_tensor(t, n, buf, &lp->w, 2, out, in, 0, 0);
    snprintf(buf, sizeof buf, "%.40s.bias", name);
    add_tensor(t, n, buf, &lp->b, 1, out, 0, 0, 0);
}

/* Appends one conv layer's tensors: `<prefix>.weight`, `.bias`, and
 * `<norm_prefix>.weight/.bias` when it has an instance norm. */
static void add_conv(e2g_tensor_entry *t, int *n, const char *prefix, const char *norm_prefix,
                     e2g_conv_params *cp, const e2g_conv_shape *cs, int bias, int norm) {
    char buf[48];
    snprintf(buf, sizeof buf, "%s.weight", prefix);
    add_tensor(t, n, buf, &cp->w, 4, cs->cout, cs->cin, cs->k, cs->k);
    if (bias) {
        snprintf(buf, sizeof buf, "%s.bias", prefix);
        add_tensor(t, n, buf, &cp->b, 1, cs->cout, 0, 0, 0);
    }
    if (norm) {
        snprintf(buf, sizeof buf, "%s.weight", norm_prefix);
        add_tensor(t, n, buf, &cp->norm_w, 1, cs->cout, 0, 0, 0);
        snprintf(buf, sizeof buf, "%s.bias", norm_prefix);
        add_tensor(t, n, buf, &cp->norm_b, 1, cs->cout, 0, 0, 0);
    }
}

int e2g_gen_tensors(const e2g_gen_config *cfg, e2g_gen_params *p, e2g_tensor_entry *out) {
    int n = 0, c4 = e2g_gen_c4(cfg);
    static const char *const qkvo = "qkvo";
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        char prefix[40], norm_prefix[40];
        if (id == G_OUT)
            snprintf(prefix, sizeof prefix, "out");
        else
            snprintf(prefix, sizeof prefix, "%s.conv", conv_names[id]);
        snprintf(norm_prefix, sizeof norm_prefix, "%s.norm", conv_names[id]);
        add_conv(out, &n, prefix, norm_prefix, gen_conv_params(p, id), &s.conv, s.bias, s.norm);
        if (id != G_DS) continue;
        for (int i = 0; i < 3; i++) {
            char buf[48];
            snprintf(buf, sizeof buf, "tb.ln%d.weight", i + 1);
            add_tensor(out, &n, buf, &p->ln_w[i], 1, c4, 0, 0, 0);
            snprintf(buf, sizeof buf, "tb.ln%d.bias", i + 1);
            add_tensor(out, &n, buf, &p->ln_b[i], 1, c4, 0, 0, 0);
        }
        for (int j = 0; j < 4; j++) {
            char buf[48];
            snprintf(buf, sizeof buf, "tb.self_attn.%c", qkvo[j]);
            add_linear(out, &n, buf, &p->self_attn[j], c4, c4);
        }
        for (int j = 0; j < 4; j++) {
            char buf[48];
            snprintf(buf, sizeof buf, "tb.cross_attn.%c", qkvo[j]);
            add_linear(out, &n, buf, &p->cross_attn[j], c4, c4);
        }
        add_linear(out, &n, "tb.fc1", &p->fc1, c4, 4 * c4);
        add_linear(out, &n, "tb.fc2", &p->fc2, 4 * c4, c4);
    }
    add_tensor(out, &n, "concepts", &p->concepts, 3, cfg->n_concepts, cfg->ctx_tokens, c4, 0);
    E2G_ASSERT(n <= E2G_GEN_MAX_TENSORS);
    return n;
}

size_t e2g_tensors_numel(const e2g_tensor_entry *t, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += t[i].numel;
    return total;
}

void e2g_tensors_bind(const e2g_tensor_entry *t, int n, float *memory) {
    for (int i = 0; i < n; i++) {
        *t[i].slot = memory;
        memory += t[i].numel;
    }
}

size_t e2g_gen_param_count(const e2g_gen_config *cfg) {
    e2g_gen_params p;
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    return e2g_tensors_numel(t, e2g_gen_tensors(cfg, &p, t));
}

void e2g_gen_bind(const e2g_gen_config *cfg, e2g_gen_params *p, float *memory) {
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    memset(p, 0, sizeof *p); /* tensors a config lacks stay NULL */
    e2g_tensors_bind(t, e2g_gen_tensors(cfg, p, t), memory);
}
