/* planned.c — the planned executor (planned.h): one walk of the node
 * table forward, one in reverse for the gradients.  Each op is a pair of
 * free functions from ops.h, attention.h and layers.h; backward functions
 * accumulate, so every gradient buffer is zeroed once per backward. */
#include "planned.h"

#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "common.h"
#include "layers.h"
#include "ops.h"

/* One node's activations: `out` is what consumers read. */
typedef struct {
    float *out;
    block_acts blk;    /* CONV: conv (+ LoRA), statistics, activation (before any add) */
    float *pre;        /* LINEAR with an activation: its input */
    float *mean, *rstd; /* LAYERNORM statistics; ATTENTION: lse in mean; OUTPUT: FiLM gains in mean */
    float *gain;        /* CONV with a skip gate: its gains (N, cout), or their gradient */
} node_acts;

struct e2g_planned {
    e2g_net net;
    int N, H, W;
    e2g_node_shape shape[E2G_NET_MAX_NODES];
    node_acts act[E2G_NET_MAX_NODES], grad[E2G_NET_MAX_NODES];
    float *tmp;         /* one conv-block-sized gradient scratch */
    float *grad_memory; /* where the gradients lie, zeroed by each backward */
    size_t grad_floats;
    int has_grads;
    float *memory;
    size_t floats;
};

static size_t numel(const e2g_planned *pl, int i) {
    const e2g_node_shape *s = &pl->shape[i];
    return (size_t)pl->N * s->h * s->w * s->c;
}

static int rows(const e2g_planned *pl, int i) { return pl->shape[i].h * pl->shape[i].w; }

/* Lays out the activations (grads = 0) or their gradients (grads = 1);
 * with ar->base NULL it only counts. */
static void plan(e2g_planned *pl, arena *ar, int grads) {
    const e2g_net *net = &pl->net;
    node_acts *A = grads ? pl->grad : pl->act;
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        node_acts *a = &A[i];
        size_t n = numel(pl, i), M = (size_t)pl->N * rows(pl, i);
        memset(a, 0, sizeof *a);
        switch (nd->op) {
        case E2G_OP_INPUT: break; /* the caller's x, or dx */
        case E2G_OP_CONV: {
            const e2g_node_shape *in = &pl->shape[nd->in[0]];
            if (!grads) {
                e2g_block_plan(&a->blk, ar, nd, pl->N, in->h, in->w);
                a->out = nd->add >= 0 ? e2g_arena_take(ar, n) : a->blk.out;
            } else { /* d(out) is also d(block output); d(pre) apart when an op lies between */
                a->out = e2g_arena_take(ar, n);
                a->blk = pl->act[i].blk;
                a->blk.out = a->out;
                a->blk.pre = (nd->norm || nd->act != E2G_ACT_NONE) ? e2g_arena_take(ar, n) : a->out;
                a->blk.mean = a->blk.rstd = NULL;
                a->blk.affine = nd->film ? e2g_arena_take(ar, 2 * (size_t)pl->N * nd->cout) : NULL;
            }
            if (nd->add_gate) a->gain = e2g_arena_take(ar, (size_t)pl->N * nd->cout);
            break;
        }
        case E2G_OP_LAYERNORM:
            a->out = e2g_arena_take(ar, n);
            if (!grads) a->mean = e2g_arena_take(ar, M), a->rstd = e2g_arena_take(ar, M);
            break;
        case E2G_OP_LINEAR:
            a->out = e2g_arena_take(ar, n);
            if (nd->act != E2G_ACT_NONE) a->pre = e2g_arena_take(ar, n);
            break;
        case E2G_OP_ATTENTION:
            a->out = e2g_arena_take(ar, n);
            if (!grads) a->mean = e2g_arena_take(ar, M * nd->heads);
            break;
        case E2G_OP_OUTPUT:
            a->out = e2g_arena_take(ar, n);
            if (nd->film) a->mean = e2g_arena_take(ar, 3 * (size_t)pl->N); /* the gains, or their gradient */
            break;
        default: /* CONTEXT */
            a->out = e2g_arena_take(ar, n);
            break;
        }
    }
}

e2g_planned *e2g_planned_new(const e2g_net *net, int N, int H, int W, int ctx_tokens, int with_grads) {
    E2G_ASSERT(N > 0 && H > 0 && W > 0);
    e2g_planned *pl = e2g_xcalloc(1, sizeof *pl);
    pl->net = *net, pl->N = N, pl->H = H, pl->W = W, pl->has_grads = with_grads;
    e2g_net_shapes(net, H, W, ctx_tokens, pl->shape);
    arena count = {0};
    plan(pl, &count, 0);
    size_t acts = count.used, grads = 0, tmp = 0;
    if (with_grads) {
        arena gcount = {0};
        plan(pl, &gcount, 1);
        grads = gcount.used;
        for (int i = 0; i < net->n; i++)
            if (net->node[i].op == E2G_OP_CONV && numel(pl, i) > tmp) tmp = numel(pl, i);
    }
    pl->floats = acts + grads + tmp;
    pl->memory = e2g_xmalloc(pl->floats * sizeof(float));
    arena ar = {pl->memory, 0};
    plan(pl, &ar, 0);
    if (with_grads) {
        pl->grad_memory = pl->memory + ar.used;
        pl->grad_floats = grads;
        plan(pl, &ar, 1);
        pl->tmp = e2g_arena_take(&ar, tmp);
    }
    return pl;
}

void e2g_planned_free(e2g_planned *pl) {
    if (!pl) return;
    free(pl->memory);
    free(pl);
}

size_t e2g_planned_bytes(const e2g_planned *pl) { return pl->floats * sizeof(float); }

const float *e2g_planned_out(const e2g_planned *pl, int node) { return pl->act[node].out; }

e2g_node_shape e2g_planned_shape(const e2g_planned *pl, int node) { return pl->shape[node]; }

/* ---- forward --------------------------------------------------------------------------- */

void e2g_planned_forward(e2g_planned *pl, const void *params, const float *x, const e2g_edit *edits) {
    const e2g_net *net = &pl->net;
    int N = pl->N;
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        node_acts *a = &pl->act[i];
        const float *in = nd->in[0] >= 0 ? pl->act[nd->in[0]].out : NULL;
        const float *add = nd->add >= 0 ? pl->act[nd->add].out : NULL;
        size_t n = numel(pl, i);
        int L = rows(pl, i);
        switch (nd->op) {
        case E2G_OP_INPUT: a->out = (float *)x; break;
        case E2G_OP_CONTEXT: {
            size_t one = (size_t)L * nd->cout;
            for (int s = 0; s < N; s++) memcpy(a->out + s * one, edits[s].context, one * sizeof(float));
            break;
        }
        case E2G_OP_CONV:
            if (nd->film)
                e2g_film_forward(a->blk.affine, e2g_node_conv(nd, params), pl->act[nd->in[1]].out, N,
                                 rows(pl, nd->in[1]), pl->shape[nd->in[1]].c, nd->cout);
            e2g_block_forward(&a->blk, nd, e2g_node_conv(nd, params), in, N, edits);
            if (nd->add_gate) {
                e2g_skip_gain_forward(a->gain, e2g_node_conv(nd, params), pl->act[nd->in[1]].out, N,
                                      rows(pl, nd->in[1]), pl->shape[nd->in[1]].c, nd->cout);
                e2g_add_gated_forward(a->out, a->blk.out, add, a->gain, N, (size_t)L, nd->cout);
            } else if (add) {
                e2g_add_forward(a->out, a->blk.out, add, n);
            }
            break;
        case E2G_OP_LAYERNORM: {
            const e2g_linear_params *lp = e2g_node_linear(nd, params);
            e2g_layernorm_forward(a->out, a->mean, a->rstd, in, lp->w, lp->b, N * L, nd->cout);
            break;
        }
        case E2G_OP_LINEAR: {
            const e2g_linear_params *lp = e2g_node_linear(nd, params);
            float *dst = nd->act != E2G_ACT_NONE ? a->pre : a->out;
            int accumulate = add && nd->act == E2G_ACT_NONE;
            if (accumulate) memcpy(dst, add, n * sizeof(float));
            e2g_linear_forward(dst, in, lp->w, lp->b, N * L, nd->cin, nd->cout, accumulate);
            if (nd->crucial >= 0) e2g_lora_linear_forward(dst, in, edits, nd->crucial, L, nd->cin, nd->cout, N);
            if (nd->act == E2G_ACT_GELU) e2g_gelu_forward(a->out, a->pre, n);
            if (add && !accumulate) e2g_add_forward(a->out, a->out, add, n);
            break;
        }
        case E2G_OP_ATTENTION:
            e2g_attention_forward(a->out, a->mean, in, pl->act[nd->in[1]].out, pl->act[nd->in[2]].out, N, L,
                              rows(pl, nd->in[1]), nd->cout, nd->heads);
            break;
        case E2G_OP_OUTPUT:
            if (nd->film) {
                size_t one = n / N;
                e2g_output_gain_forward(a->mean, e2g_node_linear(nd, params), pl->act[nd->in[2]].out, N,
                                        rows(pl, nd->in[2]), pl->shape[nd->in[2]].c);
                for (int s = 0; s < N; s++)
                    e2g_output_gated_forward(a->out + s * one, in + s * one, pl->act[nd->in[1]].out + s * one,
                                             a->mean + 3 * s, one);
            } else {
                e2g_output_forward(a->out, in, pl->act[nd->in[1]].out, nd->residual, n);
            }
            break;
        }
    }
}

/* ---- backward --------------------------------------------------------------------------- */

void e2g_planned_backward(e2g_planned *pl, void *grads, e2g_lora *dlora, const e2g_lora *train,
                          float *dctx, float *dx, const float *dout, const void *params,
                          const e2g_edit *edits) {
    E2G_ASSERT(pl->has_grads);
    const e2g_net *net = &pl->net;
    int N = pl->N;
    memset(pl->grad_memory, 0, pl->grad_floats * sizeof(float));
    pl->grad[net->input].out = dx;
    memcpy(pl->grad[net->output].out, dout, numel(pl, net->output) * sizeof(float));
    for (int i = net->n - 1; i >= 0; i--) {
        const e2g_node *nd = &net->node[i];
        node_acts *a = &pl->act[i], *d = &pl->grad[i];
        int i0 = nd->in[0];
        const float *in = i0 >= 0 ? pl->act[i0].out : NULL;
        float *din = i0 >= 0 ? pl->grad[i0].out : NULL;
        size_t n = numel(pl, i);
        int L = rows(pl, i);
        if (nd->add_gate) {
            e2g_add_gated_backward(pl->grad[nd->add].out, d->gain, d->out, pl->act[nd->add].out, a->gain, N,
                                   (size_t)L, nd->cout);
            e2g_skip_gain_backward(grads ? e2g_node_conv(nd, grads) : NULL, pl->grad[nd->in[1]].out, d->gain,
                                   e2g_node_conv(nd, params), pl->act[nd->in[1]].out, N, rows(pl, nd->in[1]),
                                   pl->shape[nd->in[1]].c, nd->cout);
        } else if (nd->add >= 0 && pl->grad[nd->add].out) {
            e2g_accumulate(pl->grad[nd->add].out, d->out, n);
        }
        switch (nd->op) {
        case E2G_OP_INPUT: break;
        case E2G_OP_CONTEXT:
            if (dctx) e2g_accumulate(dctx, d->out, n);
            break;
        case E2G_OP_CONV:
            e2g_block_backward(&a->blk, &d->blk, pl->tmp, din, nd, e2g_node_conv(nd, params),
                           grads ? e2g_node_conv(nd, grads) : NULL, dlora, train, in, N, edits);
            if (nd->film)
                e2g_film_backward(grads ? e2g_node_conv(nd, grads) : NULL, pl->grad[nd->in[1]].out,
                                  d->blk.affine, e2g_node_conv(nd, params), pl->act[nd->in[1]].out, N,
                                  rows(pl, nd->in[1]), pl->shape[nd->in[1]].c, nd->cout);
            break;
        case E2G_OP_LAYERNORM: {
            e2g_linear_params *gp = grads ? e2g_node_linear(nd, grads) : NULL;
            e2g_layernorm_backward(din, gp ? gp->w : NULL, gp ? gp->b : NULL, d->out, in, a->mean, a->rstd,
                               e2g_node_linear(nd, params)->w, N * L, nd->cout);
            break;
        }
        case E2G_OP_LINEAR: {
            e2g_linear_params *gp = grads ? e2g_node_linear(nd, grads) : NULL;
            const float *dpre = d->out;
            if (nd->act == E2G_ACT_GELU) {
                e2g_gelu_backward(d->pre, d->out, a->pre, n);
                dpre = d->pre;
            }
            e2g_linear_backward(din, gp ? gp->w : NULL, gp ? gp->b : NULL, dpre, in, e2g_node_linear(nd, params)->w,
                            N * L, nd->cin, nd->cout);
            if (nd->crucial >= 0)
                e2g_lora_linear_backward(din, dlora, train, dpre, in, edits, nd->crucial, L, nd->cin, nd->cout, N);
            break;
        }
        case E2G_OP_ATTENTION: {
            int k = nd->in[1], v = nd->in[2];
            e2g_attention_backward(din, pl->grad[k].out, pl->grad[v].out, d->out, in, pl->act[k].out,
                               pl->act[v].out, a->out, a->mean, N, L, rows(pl, k), nd->cout, nd->heads);
            break;
        }
        case E2G_OP_OUTPUT:
            if (nd->film) {
                size_t one = n / N;
                float *dx_all = pl->grad[nd->in[1]].out;
                for (int s = 0; s < N; s++)
                    e2g_output_gated_backward(din + s * one, dx_all ? dx_all + s * one : NULL, d->mean + 3 * s,
                                              d->out + s * one, a->out + s * one,
                                              pl->act[nd->in[1]].out + s * one, a->mean + 3 * s, one);
                e2g_output_gain_backward(grads ? e2g_node_linear(nd, grads) : NULL, pl->grad[nd->in[2]].out,
                                         d->mean, e2g_node_linear(nd, params), pl->act[nd->in[2]].out, N,
                                         rows(pl, nd->in[2]), pl->shape[nd->in[2]].c);
            } else {
                e2g_output_backward(din, pl->grad[nd->in[1]].out, d->out, a->out, pl->act[nd->in[1]].out,
                                nd->residual, n);
            }
            break;
        }
    }
}
