/* layers.h — building blocks of the CPU executors (engine-internal):
 * planned activation slices, the conv block of a CONV node (net.h: conv,
 * optionally fused with a ×2 upsample → optional LoRA → optional instance
 * norm → optional ReLU/LeakyReLU) and the unmerged LoRA paths. */
#ifndef E2G_LAYERS_H
#define E2G_LAYERS_H

#include <stddef.h>

#include "model.h"
#include "net.h"

/* Bump allocation of activations: a first pass with base NULL counts the
 * floats, a second one hands out slices of the real allocation. */
typedef struct {
    float *base;
    size_t used;
} arena;
float *e2g_arena_take(arena *a, size_t n);

typedef struct {
    int H, W, Ho, Wo; /* input and output sizes */
    float *pre;       /* conv (+ LoRA) output */
    float *mean, *rstd;
    float *out; /* after norm / activation; aliases pre when it has neither */
    float *affine; /* FiLM: the norm's per-sample scales (N, cout), then shifts (N, cout) */
} block_acts;

/* Plans one block's activations for an input of H×W. */
void e2g_block_plan(block_acts *b, arena *ar, const e2g_node *s, int N, int H, int W);
/* Output element count of a planned block. */
size_t e2g_block_out_size(const block_acts *b, const e2g_node *s, int N);

void e2g_block_forward(block_acts *b, const e2g_node *s, const e2g_conv_params *cp, const float *in,
                   int N, const e2g_edit *edits);
/* The norm and activation of a block whose b->pre holds conv (+ LoRA) and,
 * with FiLM, b->affine the norm's affine (e2g_film_forward). */
void e2g_block_finish(block_acts *b, const e2g_node *s, const e2g_conv_params *cp, int N);
/* Backward of one block given d(out) in db->out; accumulates into din
 * (may be NULL), the parameter grads gp (may be NULL), the trained
 * adapter's grads and, with FiLM, d(affine) into db->affine (instead of the
 * norm's gradients: e2g_film_backward carries them on).  tmp holds
 * block_out_size floats. */
void e2g_block_backward(block_acts *b, block_acts *db, float *tmp, float *din, const e2g_node *s,
                    const e2g_conv_params *cp, e2g_conv_params *gp, e2g_lora *dlora,
                    const e2g_lora *train, const float *in, int N, const e2g_edit *edits);

/* FiLM of a block's norm (net.h): affine (N, cout) scales then (N, cout)
 * shifts from the mean c̄ of each sample's T context tokens (C4 each); the
 * backward takes d(affine) and accumulates into the norm's and the FiLM's
 * parameter gradients (gp may be NULL) and into dctx (may be NULL). */
void e2g_film_forward(float *affine, const e2g_conv_params *cp, const float *ctx, int N, int T, int C4,
                      int cout);
void e2g_film_backward(e2g_conv_params *gp, float *dctx, const float *daffine, const e2g_conv_params *cp,
                       const float *ctx, int N, int T, int C4, int cout);

/* FiLM of the output (net.h): gain (N, 3) = 1 + W·c̄_n + b, the weight of
 * the photo in each sample's residual output (e2g_output_gated_forward). */
void e2g_output_gain_forward(float *gain, const e2g_linear_params *gate, const float *ctx, int N, int T,
                             int C4);
void e2g_output_gain_backward(e2g_linear_params *ggate, float *dctx, const float *dgain,
                              const e2g_linear_params *gate, const float *ctx, int N, int T, int C4);

/* The skip gate of a block (net.h add_gate): gain (N, cout) = 1 + W·c̄_n + b,
 * the weight of the added skip in each sample (e2g_add_gated_forward). */
void e2g_skip_gain_forward(float *gain, const e2g_conv_params *cp, const float *ctx, int N, int T, int C4,
                           int cout);
void e2g_skip_gain_backward(e2g_conv_params *gp, float *dctx, const float *dgain, const e2g_conv_params *cp,
                            const float *ctx, int N, int T, int C4, int cout);

/* A block's conv: conv2d, or upconv2x (×2 upsample fused) when upsample. */
void e2g_layer_conv_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, const e2g_conv_shape *cs, int upsample);
void e2g_layer_conv_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, int N, int H, int W, const e2g_conv_shape *cs,
                         int upsample);

/* Band counterparts for one image (see conv.h): rows of gathered input
 * in, layer_band_out_rows rows out; LoRA as lora_conv_forward's. */
void e2g_layer_conv_forward_band(float *out, const float *band, const float *w, const float *bias,
                             int rows, int W, const e2g_conv_shape *cs, int upsample);
int e2g_layer_band_out_rows(int rows, const e2g_conv_shape *cs, int upsample);
void e2g_lora_conv_forward_band(float *out, const float *band, const e2g_edit *edit, int layer,
                            const e2g_conv_shape *cs, int rows, int W, int upsample);

/* Unmerged LoRA: out += Σ coef·scale·B(A(in)) over each sample's terms,
 * batched over runs of samples that share their terms; A has the layer's
 * conv shape (and upsample) or is linear.  The backward accumulates into
 * din (may be NULL) and, for the adapter `train`, into dlora. */
void e2g_lora_conv_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                       const e2g_conv_shape *cs, int N, int H, int W, int upsample);
void e2g_lora_conv_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                        const float *in, const e2g_edit *edits, int layer,
                        const e2g_conv_shape *cs, int N, int H, int W, int upsample);
void e2g_lora_linear_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                         int rows_per_sample, int cin, int cout, int N);
void e2g_lora_linear_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                          const float *in, const e2g_edit *edits, int layer, int rows_per_sample,
                          int cin, int cout, int N);

#endif
