/* model_desc.c — the generator described, without compute: widths, the
 * crucial layers' names and shapes, the parameter table and its binding
 * (all derived from the node table, net.c), and conv output sizes.  The
 * CPU engine and the CUDA kernels both use it, so it lives in the base
 * library e2gan_common with common.c and net.c. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "conv.h"
#include "model.h"
#include "net.h"

int e2g_conv2d_out_size(int n, const e2g_conv_shape *cs) { return (n + 2 * cs->pad - cs->k) / cs->stride + 1; }

/* ---- configuration and the crucial layers -------------------------------------- */

int e2g_gen_c4(const e2g_gen_config *cfg) { return 4 * cfg->ngf; }

int e2g_gen_heads(const e2g_gen_config *cfg) {
    int h = e2g_gen_c4(cfg) / 64;
    return h > 0 ? h : 1;
}

/* The crucial layers' module paths, as in PEFT keys: their nodes' weight
 * names, which do not depend on the configuration. */
static e2g_net names_net;
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void build_names_net(void) {
    static const e2g_gen_config any = {.ngf = 8, .ctx_tokens = 1, .n_concepts = 1, .unet_skips = 1,
                                       .residual_out = 1};
    e2g_gen_net(&names_net, &any);
}

const char *e2g_crucial_name(int layer) {
    pthread_once(&names_once, build_names_net);
    return names_net.node[e2g_net_crucial_node(&names_net, layer)].wname;
}

void e2g_crucial_shape(const e2g_gen_config *cfg, int layer, e2g_layer_shape *out) {
    e2g_net net;
    e2g_gen_net(&net, cfg);
    const e2g_node *nd = &net.node[e2g_net_crucial_node(&net, layer)];
    memset(out, 0, sizeof *out);
    out->cin = nd->cin, out->cout = nd->cout;
    if (nd->op == E2G_OP_CONV) out->conv = nd->conv, out->k = nd->conv.k;
}

/* ---- parameter table ---------------------------------------------------------- */

int e2g_gen_tensors(const e2g_gen_config *cfg, e2g_gen_params *p, e2g_tensor_entry *out) {
    e2g_net net;
    e2g_gen_net(&net, cfg);
    int n = e2g_net_tensors(&net, p, out, 0);
    e2g_tensor_entry *e = &out[n++];
    snprintf(e->name, sizeof e->name, "concepts");
    e->init = E2G_INIT_NORMAL;
    e->ndim = 3;
    e->shape[0] = cfg->n_concepts, e->shape[1] = cfg->ctx_tokens, e->shape[2] = e2g_gen_c4(cfg), e->shape[3] = 0;
    e->numel = (size_t)cfg->n_concepts * cfg->ctx_tokens * e2g_gen_c4(cfg);
    e->slot = &p->concepts;
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
