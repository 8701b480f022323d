/* planned.h — the CPU's planned executor (engine-internal): runs any
 * network description (net.h) forward and backward with every activation
 * the backward needs kept in one allocation, planned from the batch size
 * and image size.  The generator's and the discriminator's training and
 * their PyTorch comparisons run on it. */
#ifndef E2G_PLANNED_H
#define E2G_PLANNED_H

#include <stddef.h>

#include "model.h"
#include "net.h"

typedef struct e2g_planned e2g_planned;

/* Plans every node's activations for N samples of H×W (contexts of
 * ctx_tokens tokens); with_grads also plans their gradients.  The net is
 * copied. */
e2g_planned *e2g_planned_new(const e2g_net *net, int N, int H, int W, int ctx_tokens, int with_grads);
void e2g_planned_free(e2g_planned *pl);
size_t e2g_planned_bytes(const e2g_planned *pl);
/* A node's output after a forward, and its per-sample shape. */
const float *e2g_planned_out(const e2g_planned *pl, int node);
e2g_node_shape e2g_planned_shape(const e2g_planned *pl, int node);

/* Runs every node on input x (N, H, W, C_in), which must stay alive and
 * unchanged until the backward; params is the net's parameter struct;
 * edits (one per sample: context and LoRA terms) may be NULL for a net
 * without context or crucial layers. */
void e2g_planned_forward(e2g_planned *pl, const void *params, const float *x, const e2g_edit *edits);

/* Backward of the last forward for dout, the gradient of the output node.
 * Accumulates into the non-NULL outputs: grads (a parameter struct like
 * params), dlora (the LoRA gradients of the adapter `train`, which must be
 * among the edits' terms), dctx (N, T, C4), dx (N, H, W, C_in). */
void e2g_planned_backward(e2g_planned *pl, void *grads, e2g_lora *dlora, const e2g_lora *train,
                          float *dctx, float *dx, const float *dout, const void *params,
                          const e2g_edit *edits);

#endif
