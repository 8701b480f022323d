/* layers.h — building blocks shared by the generator and the
 * discriminator (engine-internal): planned activation slices, the "conv
 * block" (optional ×2 upsample → conv → optional LoRA → optional instance
 * norm → optional ReLU/LeakyReLU) and the unmerged LoRA paths. */
#ifndef E2G_LAYERS_H
#define E2G_LAYERS_H

#include <stddef.h>

#include "model.h"

/* Bump allocation of activations: a first pass with base NULL counts the
 * floats, a second one hands out slices of the real allocation. */
typedef struct {
    float *base;
    size_t used;
} arena;
float *arena_take(arena *a, size_t n);

typedef enum { ACT_NONE, ACT_RELU, ACT_LRELU } block_activation;
#define LRELU_SLOPE 0.2f

typedef struct {
    e2g_conv_shape conv;
    int bias, norm, upsample;
    block_activation act;
    int crucial; /* crucial layer id for LoRA, or -1 */
} conv_spec;

typedef struct {
    int H, W, Ho, Wo; /* H, W: the conv's input size (after any upsample) */
    float *up;        /* upsampled input, when the block upsamples */
    float *pre;       /* conv (+ LoRA) output */
    float *mean, *rstd;
    float *out; /* after norm / activation; aliases pre when it has neither */
} block_acts;

/* Plans one block's activations for an input of H×W (before upsampling). */
void block_plan(block_acts *b, arena *ar, const conv_spec *s, int N, int H, int W);
/* Output element count of a planned block. */
size_t block_out_size(const block_acts *b, const conv_spec *s, int N);

void block_forward(block_acts *b, const conv_spec *s, const e2g_conv_params *cp, const float *in,
                   int N, const e2g_edit *edits);
/* Backward of one block given d(out) in db->out; accumulates into din
 * (may be NULL), the parameter grads gp (may be NULL) and the trained
 * adapter's grads.  tmp holds block_out_size floats. */
void block_backward(block_acts *b, block_acts *db, float *tmp, float *din, const conv_spec *s,
                    const e2g_conv_params *cp, e2g_conv_params *gp, e2g_lora *dlora,
                    const e2g_lora *train, const float *in, int N, const e2g_edit *edits);

/* Unmerged LoRA: out += Σ coef·scale·B(A(in)) over each sample's terms,
 * batched over runs of samples that share their terms.  edits may be NULL
 * (no LoRA). */
void lora_conv_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                       const e2g_conv_shape *cs, int N, int H, int W);
void lora_conv_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                        const float *in, const e2g_edit *edits, int layer,
                        const e2g_conv_shape *cs, int N, int H, int W);
void lora_linear_forward(float *out, const float *in, const e2g_edit *edits, int layer,
                         int rows_per_sample, int cin, int cout, int N);
void lora_linear_backward(float *din, e2g_lora *dlora, const e2g_lora *train, const float *dout,
                          const float *in, const e2g_edit *edits, int layer, int rows_per_sample,
                          int cin, int cout, int N);

#endif
