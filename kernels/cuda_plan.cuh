/* cuda_plan.cuh — how the GPU executors read the generator's node table
 * (engine/net.h), shared by the inference engine (cuda_engine.cu) and the
 * trainer (cuda_train.cu), so that the layer sequence exists only in
 * engine/net.c:
 *
 *  - weight slots: one cuDNN filter per CONV node, and one per run of
 *    consecutive LINEAR nodes that read the same input and have neither an
 *    `add` nor an activation (self-attention q/k/v, cross-attention k/v),
 *    their output rows concatenated so that the run is one GEMM; where each
 *    crucial (LoRA) layer lies: (slot, row block);
 *  - per node, how its output is stored — a bf16 view, reflect-padded when
 *    its conv consumers pad by reflection; token rows, possibly a column
 *    block of a slot's concatenated output; the fp32 residual stream — and
 *    the fusions found by peephole: a LINEAR with an `add` followed by the
 *    LAYERNORM of its output is one residual_layernorm; the conv that feeds
 *    OUTPUT ends in output_layer instead of an epilogue (with FiLM, after
 *    the gate's gains);
 *  - for the trainer, how each node's gradient is stored;
 *  - the device layout of every activation for a batch of N images of H×W.
 *
 * gen_plan_build refuses a table that uses something the kernels cannot do
 * (saying what), so e2g_cuda_check_config refuses such a configuration up
 * front instead of failing mid-run. */
#ifndef E2G_CUDA_PLAN_CUH
#define E2G_CUDA_PLAN_CUH

#include "cuda_kernels.cuh"

extern "C" {
#include "net.h"
}

namespace e2g {

#define PLAN_MAX E2G_NET_MAX_NODES
#define PLAN_MAX_PARTS 4

/* A weight slot.  Part p's packed filter starts at slot_part_offset(s, p)
 * and has slot_part_rows_pad(s) output rows (a plain slot: cout_pad). */
struct wslot {
    int parts, part_node[PLAN_MAX_PARTS]; /* the nodes of the row blocks, in order */
    int rows;                             /* output channels per part */
    int cin, cin_pad, cout, cout_pad;     /* cout = parts·rows; pads to 8 (convs only) */
    int k, stride, pad, reflect, phase, is_conv;
    int bias; /* a bias is applied (not before an instance norm, which cancels it) */
    int norm, film, relu, gelu; /* film: the norm's affine is per sample (net.h) */
    int skip_gate;              /* the add is scaled per sample and channel (net.h add_gate) */
    size_t w_elems; /* packed bf16 filter: (cout_pad, k, k, cin_pad) or phase (4·cout_pad, 2, 2, cin) */
};

static inline size_t slot_part_offset(const wslot &s, int part) {
    return (size_t)part * s.rows * s.k * s.k * s.cin_pad;
}
static inline int slot_part_rows_pad(const wslot &s) { return s.parts > 1 ? s.rows : s.cout_pad; }

enum { GRAD_NONE, GRAD_F32, GRAD_BF16 };

struct node_plan {
    int slot, part;  /* CONV, LINEAR: weight slot and row block; else -1 */
    int has_bf16;    /* output kept in bf16: a view (CONV, INPUT) or token rows */
    int has_f32;     /* LINEAR with add: output (the residual stream) also kept in fp32 */
    int pad;         /* bf16 view: the reflect pad stored around it (what its conv consumers want) */
    int C;           /* bf16: stored channels (the input's padded to 8) */
    int ld;          /* bf16 token rows: elements from one position to the next (C, or the slot's cout) */
    int dense;       /* read or written as token rows: no pad, packed samples */
    int fused_ln;    /* LINEAR with add: the LAYERNORM of its output, computed in the same pass, or -1 */
    int fused_into;  /* LAYERNORM: the LINEAR computing it; OUTPUT: the CONV computing it; else -1 */
    int to_output;   /* CONV: its epilogue is the OUTPUT node's output_layer */
    /* Trainer: GRAD_F32, an fp32 gradient zeroed per step that every
     * consumer accumulates into; GRAD_BF16, a bf16 gradient that its one
     * consumer (a LINEAR slot's backward-data or an attention backward)
     * overwrites; GRAD_NONE for the input, OUTPUT and OUTPUT's conv. */
    int grad;
};

struct gen_plan {
    e2g_net net;
    int T; /* context tokens */
    int n_slots;
    wslot slot[PLAN_MAX];
    node_plan np[PLAN_MAX];
    int site_node[E2G_N_CRUCIAL]; /* the node of each crucial layer */
};

/* The generator of cfg read as above; -1 with the reason in err when it
 * needs something the GPU code lacks. */
int gen_plan_build(gen_plan *p, const e2g_gen_config *cfg, char *err);

/* The crucial layer of slot s's row block `part`, or -1. */
static inline int slot_crucial(const gen_plan &p, int s, int part) {
    return p.net.node[p.slot[s].part_node[part]].crucial;
}

/* A CONV node's convolution as cuDNN runs it, over its input as stored. */
struct conv_geom {
    int Hp, Wp, C;         /* the input as stored, padding included */
    int K, R, stride, pad; /* filters, filter size, stride, zero padding */
    int Ho, Wo;            /* the block's output */
    int Hg, Wg, Cs;        /* the raw output as stored: the phase grid (Ho/2 + 1, Wo/2 + 1) and
                            * 4·cout_pad channels for a ×2 upsample, else (Ho, Wo, cout_pad) */
};

/* One node's activations on the device (pointers NULL when absent). */
struct node_buf {
    size_t M;    /* positions of the batch: N·h·w */
    tview v;     /* bf16 output as a view (N, h, w, C, pad, ns); token rows when dense */
    bf16 *rows;  /* bf16 token rows (v.p, or a column block of the slot's output), ld np.ld */
    float *f32;  /* the fp32 residual stream */
    bf16 *raw;   /* CONV: raw conv output (geometry g) */
    float *stats;/* CONV with a norm: (N, 2, C) mean and variance */
    float *affine;/* CONV with FiLM: the norm's gamma (N, C), beta (N, C), then the context mean (N, C4);
                   * OUTPUT with FiLM: the gains (N, 3), then the context mean */
    float *skip;  /* CONV with a skip gate: the add's gains (N, C), then the context mean (N, C4) */
    bf16 *pre;   /* LINEAR with GELU when kept: before the activation */
    conv_geom g; /* CONV */
};

struct act_layout {
    int N, H, W;
    e2g_node_shape sh[PLAN_MAX];
    node_buf b[PLAN_MAX];
    bf16 *proj; /* a LINEAR-with-add's GEMM output before the residual (scratch) */
    /* largest per-node sizes (elements), for the trainer's scratch */
    size_t raw_max, conv_in_max, rows_max, stats_max, affine_max;
};

/* The raw conv output of CONV node i as the epilogue reads it. */
static inline conv_out plan_raw(const gen_plan &p, const act_layout &L, int i) {
    const conv_geom &g = L.b[i].g;
    conv_out o = {L.b[i].raw, L.N, g.Ho, g.Wo, p.net.node[i].cout, g.Cs, p.slot[p.np[i].slot].phase};
    return o;
}

/* The context node a FiLM node reads: a CONV's in[1], the OUTPUT's in[2]. */
static inline int plan_film_context(const e2g_node &nd) { return nd.op == E2G_OP_OUTPUT ? nd.in[2] : nd.in[1]; }

/* The floats of FiLM node i's node_buf.affine: its rows (film_rows) and
 * the context mean, per sample. */
static inline size_t plan_film_floats(const e2g_net &net, int N, int i) {
    const e2g_node &nd = net.node[i];
    int rows = nd.op == E2G_OP_OUTPUT ? nd.cout : 2 * nd.cout;
    return (size_t)N * (rows + net.node[plan_film_context(nd)].cout);
}

/* FiLM node i — a CONV's norm or the OUTPUT's gate — the film_args of its
 * per-sample rows, into L.b[i].affine from its context's rows, with the
 * device parameters w, b (and the norm's norm_w, norm_b; NULL for the
 * gate); backward fields unset. */
static inline film_args plan_film(const gen_plan &p, const act_layout &L, int i, const float *w, const float *b,
                                  const float *norm_w, const float *norm_b) {
    const e2g_node &nd = p.net.node[i];
    int ctx = plan_film_context(nd);
    film_args a = {};
    a.ctx = L.b[ctx].rows, a.N = L.N, a.T = L.sh[ctx].h * L.sh[ctx].w, a.C4 = p.net.node[ctx].cout, a.C = nd.cout;
    a.gate = nd.op == E2G_OP_OUTPUT;
    a.w = w, a.b = b, a.norm_w = norm_w, a.norm_b = norm_b;
    a.gamma = L.b[i].affine, a.beta = a.gate ? NULL : a.gamma + (size_t)L.N * a.C;
    a.mean = a.gamma + (size_t)L.N * film_rows(a);
    return a;
}

/* The floats of node_buf.skip: the gains and the context mean, per sample. */
static inline size_t plan_skip_floats(const e2g_net &net, int N, int i) {
    const e2g_node &nd = net.node[i];
    return (size_t)N * (nd.cout + net.node[nd.in[1]].cout);
}

/* CONV node i's skip gate as film_args in gate mode (gains 1 + W·c̄ + b)
 * into L.b[i].skip, from the device parameters w, b; backward fields
 * unset. */
static inline film_args plan_skip_gate(const gen_plan &p, const act_layout &L, int i, const float *w,
                                       const float *b) {
    const e2g_node &nd = p.net.node[i];
    int ctx = nd.in[1];
    film_args a = {};
    a.ctx = L.b[ctx].rows, a.N = L.N, a.T = L.sh[ctx].h * L.sh[ctx].w, a.C4 = p.net.node[ctx].cout, a.C = nd.cout;
    a.gate = 1, a.w = w, a.b = b;
    a.gamma = L.b[i].skip, a.mean = a.gamma + (size_t)L.N * a.C;
    return a;
}

/* Elements between consecutive samples of a view. */
static inline size_t view_sample(const tview &v) {
    return v.ns ? v.ns : (size_t)(v.H + 2 * v.pad) * (v.W + 2 * v.pad) * v.C;
}

/* Lays out (base NULL: counts) every node's activations for N images of
 * H×W.  keep (the trainer): each conv's raw output, statistics and FiLM
 * affine and each GELU's input have memory of their own, kept for the
 * backward; otherwise they share one scratch each.  sample_align (bytes,
 * 0: none): views read only by convolutions get per-sample strides that
 * are multiples of it, so a run of samples starting at any n0 stays
 * aligned for cuDNN. */
void plan_layout(const gen_plan *p, int N, int H, int W, int keep, size_t sample_align, dev_arena *ar,
                 act_layout *L);

/* An ATTENTION node, from the rows of its q, k, v nodes into its own. */
int plan_attention(const gen_plan &P, const act_layout &L, int i, cudaStream_t stream, char *err);

/* The OUTPUT node, from its conv's raw output: y = tanh(o + bias (+ the
 * image's term)), x the image (fp32); with FiLM the gains first, from the
 * gate's device parameters gate (NULL without FiLM). */
int plan_output_layer(const gen_plan &P, const act_layout &L, float *y, const float *bias, const float *x,
                      const e2g_linear_params *gate, cudaStream_t stream, char *err);

}  // namespace e2g

#endif
