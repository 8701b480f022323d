/* net.h — the network description: the generator and the discriminator as
 * tables of nodes, the one place where their layer sequence is written.
 *
 * A node is one layer: its op, the nodes it reads, its shape, where its
 * parameters lie in the parameter struct, its tensor names and, for the
 * crucial layers of the generator, its LoRA layer id.  Everything else is
 * derived from the table: the safetensors names and shapes of the
 * parameters (e2g_net_tensors), the crucial layers' names and shapes, the
 * activation sizes at a given image size (e2g_net_shapes).  Every executor
 * walks the table: the CPU's planned forward/backward (planned.c), the
 * CPU's memory-lean inference (lean.c), the CUDA inference engine and the
 * CUDA trainer (kernels/).  docs/engine.md shows how to add a layer.
 *
 * Nodes are listed in execution order; a node reads only nodes before it.
 * Tensors are NHWC; a token sequence of L = h·w tokens is the same memory
 * as an (h, w) image, so linear layers, layer norms and attention read and
 * write conv outputs without reshaping. */
#ifndef E2G_NET_H
#define E2G_NET_H

#include <stddef.h>

#include "model.h"

typedef enum {
    E2G_OP_INPUT,     /* the network's image input (N, H, W, cout) */
    E2G_OP_CONTEXT,   /* each sample's context (N, T, C4): the concept embedding or a blend */
    E2G_OP_CONV,      /* conv block: [nearest ×2] → conv [+ bias] [+ LoRA] → [IN [FiLM]] → [act];
                       * with FiLM, in[1] is the context */
    E2G_OP_LAYERNORM, /* layer norm over the channels */
    E2G_OP_LINEAR,    /* x·Wᵀ + b [+ LoRA] → [act], per token */
    E2G_OP_ATTENTION, /* softmax(q·kᵀ/√d)·v per head; in = q, k, v; no parameters */
    E2G_OP_OUTPUT     /* y = tanh(o + atanh(clamp(x))) or tanh(o); in = o, the image; with
                       * FiLM y = tanh(o + g_n·atanh(clamp(x))), in[2] the context */
} e2g_op;

typedef enum { E2G_ACT_NONE, E2G_ACT_RELU, E2G_ACT_LRELU, E2G_ACT_GELU } e2g_act;
#define E2G_LRELU_SLOPE 0.2f

#define E2G_NO_PARAMS ((size_t)-1)

typedef struct {
    char name[24];   /* module path: "enc1", "rb1.a", "tb.self_attn.q", "tb.attn" */
    e2g_op op;
    int in[3];       /* inputs (node ids), -1 when unused */
    int add;         /* node added to the output after the activation (residual, skip), or -1 */
    int add_gate;    /* CONV: the added node is scaled per sample and channel,
                      * s_n = 1 + W·c̄_n + b, c̄_n the mean of the context (in[1]);
                      * parameters `<name>.skip_gate.*` */
    /* CONV */
    e2g_conv_shape conv;
    int upsample;    /* nearest ×2 before the conv (fused, never materialised) */
    int bias, norm;  /* a conv bias; an instance norm (affine) after the conv */
    int film;        /* the norm's affine is per sample: γ_n = norm.weight + W_γ·c̄_n + b_γ,
                      * β_n = norm.bias + W_β·c̄_n + b_β, c̄_n the mean of sample n's
                      * context tokens (in[1]); parameters `<nname>.film.*`.
                      * OUTPUT: the photo's gain per sample and channel,
                      * g_n = 1 + W·c̄_n + b, parameters `<wname>.*` */
    e2g_act act;
    /* LINEAR: cin → cout; LAYERNORM, ATTENTION, INPUT, CONTEXT, OUTPUT: cout channels */
    int cin, cout;
    int heads;       /* ATTENTION */
    int residual;    /* OUTPUT: the logit-space residual */
    int crucial;     /* LoRA layer id (E2G_L_*), or -1 */
    /* Parameters: offset of the node's e2g_conv_params (CONV) or
     * e2g_linear_params (LINEAR, LAYERNORM: weight and bias) inside the
     * network's parameter struct, or E2G_NO_PARAMS; their tensor names are
     * `<wname>.weight`, `<wname>.bias`, and `<nname>.weight/.bias` for an
     * instance norm. */
    size_t params;
    char wname[24], nname[24];
} e2g_node;

#define E2G_NET_MAX_NODES 40

typedef struct {
    int n;
    e2g_node node[E2G_NET_MAX_NODES];
    int input;    /* the image input node */
    int context;  /* the context node, or -1 (discriminator) */
    int output;   /* the node whose output is the network's */
    int features; /* G: the node whose mean token is a sample's feature (data reduction), or -1 */
} e2g_net;

/* The generator of cfg, and the discriminator (6-channel input: source and
 * target concatenated). */
void e2g_gen_net(e2g_net *net, const e2g_gen_config *cfg);
void e2g_disc_net(e2g_net *net, int ndf);

/* The node with LoRA layer id `layer`, or -1. */
int e2g_net_crucial_node(const e2g_net *net, int layer);

/* Per-sample output shape of every node for an H×W input: h×w positions
 * (tokens) of c channels; the context is T×1. */
typedef struct {
    int h, w, c;
} e2g_node_shape;
void e2g_net_shapes(const e2g_net *net, int H, int W, int ctx_tokens, e2g_node_shape *out);

/* Input channels of a node's first input (its fan-in per position). */
int e2g_node_cin(const e2g_net *net, const e2g_node *nd);

/* A node's parameters inside a parameter struct (e.g. e2g_gen_params). */
static inline e2g_conv_params *e2g_node_conv(const e2g_node *nd, const void *params) {
    return (e2g_conv_params *)((char *)params + nd->params);
}
static inline e2g_linear_params *e2g_node_linear(const e2g_node *nd, const void *params) {
    return (e2g_linear_params *)((char *)params + nd->params);
}
/* The weight slot of a CONV or LINEAR node. */
float **e2g_node_weight_slot(const e2g_node *nd, const void *params);

/* Appends the parameter tensors of every node, in node order, with slots
 * inside *params; returns the count appended after `n`. */
int e2g_net_tensors(const e2g_net *net, void *params, e2g_tensor_entry *out, int n);

#endif
