/* net.c — the generator's and the discriminator's node tables, and what
 * is derived from them (see net.h). */
#include "net.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* ---- building a table ------------------------------------------------------------ */

static int add_node(e2g_net *net, const char *name, e2g_op op, int in0, int in1, int in2) {
    E2G_ASSERT(net->n < E2G_NET_MAX_NODES);
    int id = net->n++;
    e2g_node *nd = &net->node[id];
    memset(nd, 0, sizeof *nd);
    snprintf(nd->name, sizeof nd->name, "%s", name);
    nd->op = op;
    nd->in[0] = in0, nd->in[1] = in1, nd->in[2] = in2;
    nd->add = -1, nd->crucial = -1, nd->params = E2G_NO_PARAMS;
    return id;
}

/* A conv block reading `in`; its weights are `<wname>.*`, its norm's
 * `<nname>.*`. */
static int add_conv_named(e2g_net *net, const char *name, const char *wname, const char *nname, int in,
                    e2g_conv_shape cs, int upsample, int bias, int norm, e2g_act act, int crucial,
                    size_t params) {
    int id = add_node(net, name, E2G_OP_CONV, in, -1, -1);
    e2g_node *nd = &net->node[id];
    nd->conv = cs, nd->upsample = upsample, nd->bias = bias, nd->norm = norm, nd->act = act;
    nd->cin = cs.cin, nd->cout = cs.cout, nd->crucial = crucial, nd->params = params;
    snprintf(nd->wname, sizeof nd->wname, "%s", wname);
    snprintf(nd->nname, sizeof nd->nname, "%s", nname);
    return id;
}

/* A generator conv block: weights `<name>.conv.*`, norm `<name>.norm.*`. */
static int add_conv(e2g_net *net, const char *name, int in, e2g_conv_shape cs, int upsample, int bias,
                    int norm, e2g_act act, int crucial, size_t params) {
    char wname[24], nname[24];
    snprintf(wname, sizeof wname, "%.18s.conv", name);
    snprintf(nname, sizeof nname, "%.18s.norm", name);
    return add_conv_named(net, name, wname, nname, in, cs, upsample, bias, norm, act, crucial, params);
}

/* Conditions a conv node's instance norm on the context (FiLM). */
static void use_film(e2g_net *net, int id) {
    e2g_node *nd = &net->node[id];
    E2G_ASSERT(nd->op == E2G_OP_CONV && nd->norm);
    nd->film = 1, nd->in[1] = net->context;
}

static int add_linear(e2g_net *net, const char *name, int in, int cin, int cout, e2g_act act,
                      int crucial, size_t params) {
    int id = add_node(net, name, E2G_OP_LINEAR, in, -1, -1);
    e2g_node *nd = &net->node[id];
    nd->cin = cin, nd->cout = cout, nd->act = act, nd->bias = 1, nd->crucial = crucial;
    nd->params = params;
    snprintf(nd->wname, sizeof nd->wname, "%s", name);
    return id;
}

static int add_layernorm(e2g_net *net, const char *name, int in, int c, size_t params) {
    int id = add_node(net, name, E2G_OP_LAYERNORM, in, -1, -1);
    net->node[id].cout = c, net->node[id].params = params;
    snprintf(net->node[id].wname, sizeof net->node[id].wname, "%s", name);
    return id;
}

static int add_attention(e2g_net *net, const char *name, int q, int k, int v, int c, int heads) {
    int id = add_node(net, name, E2G_OP_ATTENTION, q, k, v);
    net->node[id].cout = c, net->node[id].heads = heads;
    return id;
}

/* ---- the generator (docs/architecture.md §1) ----------------------------------- */

#define GP(field) offsetof(e2g_gen_params, field)

/* q, k, v projections of `query` and `kv`, their attention and the output
 * projection added to `residual`; returns the output node.  first_layer is
 * the crucial id of q (k, v, o follow). */
static int add_attention_block(e2g_net *net, const char *prefix, int query, int kv, int residual,
                               int c4, int heads, int first_layer, size_t params) {
    static const char qkvo[] = "qkvo";
    int proj[3];
    char name[24];
    for (int j = 0; j < 3; j++) {
        snprintf(name, sizeof name, "%s.%c", prefix, qkvo[j]);
        proj[j] = add_linear(net, name, j == 0 ? query : kv, c4, c4, E2G_ACT_NONE, first_layer + j,
                             params + j * sizeof(e2g_linear_params));
    }
    snprintf(name, sizeof name, "%s", prefix);
    int att = add_attention(net, name, proj[0], proj[1], proj[2], c4, heads);
    snprintf(name, sizeof name, "%s.o", prefix);
    int o = add_linear(net, name, att, c4, c4, E2G_ACT_NONE, first_layer + 3,
                       params + 3 * sizeof(e2g_linear_params));
    net->node[o].add = residual;
    return o;
}

void e2g_gen_net(e2g_net *net, const e2g_gen_config *cfg) {
    int ngf = cfg->ngf, c4 = e2g_gen_c4(cfg), ends_norm = cfg->norm_ends;
    e2g_conv_shape body = {c4, c4, 3, 1, 1, E2G_PAD_REFLECT};
    memset(net, 0, sizeof *net);
    net->input = add_node(net, "x", E2G_OP_INPUT, -1, -1, -1);
    net->node[net->input].cout = 3;
    net->context = add_node(net, "ctx", E2G_OP_CONTEXT, -1, -1, -1);
    net->node[net->context].cout = c4;

    int enc1 = add_conv(net, "enc1", net->input, (e2g_conv_shape){3, ngf, 7, 1, 3, E2G_PAD_REFLECT},
                        0, !ends_norm, ends_norm, E2G_ACT_RELU, E2G_L_ENC1, GP(enc1));
    int enc2 = add_conv(net, "enc2", enc1, (e2g_conv_shape){ngf, 2 * ngf, 3, 2, 1, E2G_PAD_ZERO},
                        0, 0, 1, E2G_ACT_RELU, E2G_L_ENC2, GP(enc2));
    int h = add_conv(net, "enc3", enc2, (e2g_conv_shape){2 * ngf, c4, 3, 2, 1, E2G_PAD_ZERO},
                     0, 0, 1, E2G_ACT_RELU, E2G_L_ENC3, GP(enc3));
    static const char *const rb_names[3][2] = {{"rb1.a", "rb1.b"}, {"rb2.a", "rb2.b"}, {"rb3.a", "rb3.b"}};
    for (int r = 0; r < 2; r++) { /* x + b(a(x)) */
        int a = add_conv(net, rb_names[r][0], h, body, 0, 0, 1, E2G_ACT_RELU, -1, GP(rb_a[r]));
        int b = add_conv(net, rb_names[r][1], a, body, 0, 0, 1, E2G_ACT_NONE, -1, GP(rb_b[r]));
        net->node[b].add = h;
        h = b;
    }
    int t0 = add_conv(net, "ds", h, (e2g_conv_shape){c4, c4, 3, 2, 1, E2G_PAD_ZERO}, 0, 0, 1,
                      E2G_ACT_RELU, E2G_L_DS, GP(ds));
    net->features = t0;

    /* the transformer block on the H/8·W/8 tokens of t0 */
    int heads = e2g_gen_heads(cfg);
    int u1 = add_layernorm(net, "tb.ln1", t0, c4, GP(ln[0]));
    int t1 = add_attention_block(net, "tb.self_attn", u1, u1, t0, c4, heads, E2G_L_SA_Q, GP(self_attn));
    int u2 = add_layernorm(net, "tb.ln2", t1, c4, GP(ln[1]));
    int t2 = add_attention_block(net, "tb.cross_attn", u2, net->context, t1, c4, heads, E2G_L_CA_Q,
                                 GP(cross_attn));
    int u3 = add_layernorm(net, "tb.ln3", t2, c4, GP(ln[2]));
    int hid = add_linear(net, "tb.fc1", u3, c4, 4 * c4, E2G_ACT_GELU, E2G_L_FC1, GP(fc1));
    int t3 = add_linear(net, "tb.fc2", hid, 4 * c4, c4, E2G_ACT_NONE, E2G_L_FC2, GP(fc2));
    net->node[t3].add = t2;

    h = add_conv(net, "us", t3, (e2g_conv_shape){c4, c4, 3, 1, 1, E2G_PAD_ZERO}, 1, 0, 1,
                 E2G_ACT_RELU, E2G_L_US, GP(us));
    int a = add_conv(net, rb_names[2][0], h, body, 0, 0, 1, E2G_ACT_RELU, -1, GP(rb_a[2]));
    int b = add_conv(net, rb_names[2][1], a, body, 0, 0, 1, E2G_ACT_NONE, -1, GP(rb_b[2]));
    net->node[b].add = h;
    int dec2 = add_conv(net, "dec2", b, (e2g_conv_shape){c4, 2 * ngf, 3, 1, 1, E2G_PAD_ZERO}, 1,
                        0, 1, E2G_ACT_RELU, E2G_L_DEC2, GP(dec2));
    if (cfg->unet_skips) net->node[dec2].add = enc2;
    int dec1 = add_conv(net, "dec1", dec2, (e2g_conv_shape){2 * ngf, ngf, 3, 1, 1, E2G_PAD_ZERO},
                        1, !ends_norm, ends_norm, E2G_ACT_RELU, E2G_L_DEC1, GP(dec1));
    if (cfg->unet_skips) net->node[dec1].add = enc1;
    if (cfg->skip_gate && cfg->unet_skips) { /* how much of the encoder's detail each concept keeps */
        int skips[2] = {dec2, dec1};
        for (int j = 0; j < 2; j++) net->node[skips[j]].add_gate = 1, net->node[skips[j]].in[1] = net->context;
    }
    if (cfg->film) /* every norm after the transformer block: the concept reaches full resolution */
        for (int i = t3 + 1; i <= dec1; i++)
            if (net->node[i].norm) use_film(net, i);
    int o = add_conv_named(net, "out", "out", "out.norm", dec1, (e2g_conv_shape){ngf, 3, 7, 1, 3, E2G_PAD_REFLECT},
                     0, 1, 0, E2G_ACT_NONE, E2G_L_OUT, GP(out));
    net->output = add_node(net, "y", E2G_OP_OUTPUT, o, net->input, -1);
    e2g_node *y = &net->node[net->output];
    y->cout = 3, y->residual = cfg->residual_out;
    if (cfg->film && cfg->residual_out) { /* how much of the photo each concept keeps */
        y->film = 1, y->in[2] = net->context, y->params = GP(out_gate);
        snprintf(y->wname, sizeof y->wname, "out_gate");
    }
}

/* ---- the discriminator (docs/architecture.md §2) -------------------------------- */

void e2g_disc_net(e2g_net *net, int ndf) {
    static const char *const names[5] = {"c1", "c2", "c3", "c4", "out"};
    static const char *const norms[5] = {"", "n2", "n3", "n4", ""};
    static const int cout_mult[5] = {1, 2, 4, 8, 0};
    memset(net, 0, sizeof *net);
    net->input = add_node(net, "src+tgt", E2G_OP_INPUT, -1, -1, -1);
    net->node[net->input].cout = 6;
    net->context = net->features = -1;
    size_t params[5] = {offsetof(e2g_disc_params, c1), offsetof(e2g_disc_params, c2),
                        offsetof(e2g_disc_params, c3), offsetof(e2g_disc_params, c4),
                        offsetof(e2g_disc_params, out)};
    int h = net->input, cin = 6;
    for (int i = 0; i < 5; i++) {
        int cout = i == 4 ? 1 : ndf * cout_mult[i];
        e2g_conv_shape cs = {cin, cout, 4, i <= 2 ? 2 : 1, 1, E2G_PAD_ZERO};
        h = add_conv_named(net, names[i], names[i], norms[i], h, cs, 0, 1, i != 0 && i != 4,
                     i == 4 ? E2G_ACT_NONE : E2G_ACT_LRELU, -1, params[i]);
        cin = cout;
    }
    net->output = h;
}

/* ---- derived facts ----------------------------------------------------------------- */

int e2g_net_crucial_node(const e2g_net *net, int layer) {
    for (int i = 0; i < net->n; i++)
        if (net->node[i].crucial == layer) return i;
    return -1;
}

int e2g_node_cin(const e2g_net *net, const e2g_node *nd) {
    if (nd->op == E2G_OP_CONV || nd->op == E2G_OP_LINEAR) return nd->cin;
    return nd->in[0] >= 0 ? net->node[nd->in[0]].cout : 0;
}

void e2g_net_shapes(const e2g_net *net, int H, int W, int ctx_tokens, e2g_node_shape *out) {
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        e2g_node_shape s = {H, W, nd->cout};
        switch (nd->op) {
        case E2G_OP_INPUT: break;
        case E2G_OP_CONTEXT: s.h = ctx_tokens, s.w = 1; break;
        case E2G_OP_CONV: {
            e2g_node_shape in = out[nd->in[0]];
            s.h = nd->upsample ? 2 * in.h : e2g_conv2d_out_size(in.h, &nd->conv);
            s.w = nd->upsample ? 2 * in.w : e2g_conv2d_out_size(in.w, &nd->conv);
            break;
        }
        default: /* per-token ops keep their (first) input's positions */
            s.h = out[nd->in[0]].h, s.w = out[nd->in[0]].w;
            break;
        }
        out[i] = s;
    }
}

float **e2g_node_weight_slot(const e2g_node *nd, const void *params) {
    E2G_ASSERT(nd->params != E2G_NO_PARAMS);
    return nd->op == E2G_OP_CONV ? &e2g_node_conv(nd, params)->w : &e2g_node_linear(nd, params)->w;
}

/* ---- parameter tensors ---------------------------------------------------------------- */

static void add_tensor(e2g_tensor_entry *e, const char *prefix, const char *suffix, e2g_init_kind init,
                       float **slot, int ndim, int d0, int d1, int d2, int d3) {
    snprintf(e->name, sizeof e->name, "%s.%s", prefix, suffix);
    e->init = init;
    e->ndim = ndim;
    int dims[4] = {d0, d1, d2, d3};
    e->numel = 1;
    for (int i = 0; i < 4; i++) {
        e->shape[i] = i < ndim ? dims[i] : 0;
        if (i < ndim) e->numel *= (size_t)dims[i];
    }
    e->slot = slot;
}

int e2g_net_tensors(const e2g_net *net, void *params, e2g_tensor_entry *out, int n) {
    int n0 = n;
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        if (nd->params == E2G_NO_PARAMS) continue;
        if (nd->op == E2G_OP_CONV) {
            e2g_conv_params *cp = e2g_node_conv(nd, params);
            const e2g_conv_shape *cs = &nd->conv;
            add_tensor(&out[n++], nd->wname, "weight", E2G_INIT_WEIGHT, &cp->w, 4, cs->cout, cs->cin, cs->k, cs->k);
            if (nd->bias) add_tensor(&out[n++], nd->wname, "bias", E2G_INIT_BIAS, &cp->b, 1, cs->cout, 0, 0, 0);
            if (nd->norm) {
                add_tensor(&out[n++], nd->nname, "weight", E2G_INIT_ONES, &cp->norm_w, 1, cs->cout, 0, 0, 0);
                add_tensor(&out[n++], nd->nname, "bias", E2G_INIT_ZEROS, &cp->norm_b, 1, cs->cout, 0, 0, 0);
            }
            if (nd->film) { /* zero: a new FiLM starts as the plain norm */
                int c4 = net->node[nd->in[1]].cout;
                add_tensor(&out[n++], nd->nname, "film.weight", E2G_INIT_ZEROS, &cp->film_w, 2, 2 * cs->cout, c4, 0, 0);
                add_tensor(&out[n++], nd->nname, "film.bias", E2G_INIT_ZEROS, &cp->film_b, 1, 2 * cs->cout, 0, 0, 0);
            }
            if (nd->add_gate) { /* zero: gain 1, the plain skip */
                int c4 = net->node[nd->in[1]].cout;
                add_tensor(&out[n++], nd->name, "skip_gate.weight", E2G_INIT_ZEROS, &cp->gate_w, 2, cs->cout, c4, 0, 0);
                add_tensor(&out[n++], nd->name, "skip_gate.bias", E2G_INIT_ZEROS, &cp->gate_b, 1, cs->cout, 0, 0, 0);
            }
        } else if (nd->op == E2G_OP_LINEAR) {
            e2g_linear_params *lp = e2g_node_linear(nd, params);
            add_tensor(&out[n++], nd->wname, "weight", E2G_INIT_WEIGHT, &lp->w, 2, nd->cout, nd->cin, 0, 0);
            add_tensor(&out[n++], nd->wname, "bias", E2G_INIT_BIAS, &lp->b, 1, nd->cout, 0, 0, 0);
        } else if (nd->op == E2G_OP_OUTPUT) { /* the FiLM gate, zero: gain 1 */
            e2g_linear_params *lp = e2g_node_linear(nd, params);
            int c4 = net->node[nd->in[2]].cout;
            add_tensor(&out[n++], nd->wname, "weight", E2G_INIT_ZEROS, &lp->w, 2, nd->cout, c4, 0, 0);
            add_tensor(&out[n++], nd->wname, "bias", E2G_INIT_ZEROS, &lp->b, 1, nd->cout, 0, 0, 0);
        } else if (nd->op == E2G_OP_LAYERNORM) {
            e2g_linear_params *lp = e2g_node_linear(nd, params);
            add_tensor(&out[n++], nd->wname, "weight", E2G_INIT_ONES, &lp->w, 1, nd->cout, 0, 0, 0);
            add_tensor(&out[n++], nd->wname, "bias", E2G_INIT_ZEROS, &lp->b, 1, nd->cout, 0, 0, 0);
        }
    }
    return n - n0;
}
