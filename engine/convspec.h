/* convspec.h — the generator's conv blocks as data, shared by the CPU
 * engine and the CUDA kernels: each block's conv shape, bias, norm,
 * upsample, activation and crucial (LoRA) layer, in execution order, and
 * where its parameters sit in e2g_gen_params.  Defined in model_desc.c
 * (library e2gan_common, which both engines link). */
#ifndef E2G_CONVSPEC_H
#define E2G_CONVSPEC_H

#include "model.h"

typedef enum { ACT_NONE, ACT_RELU, ACT_LRELU } block_activation;

typedef struct {
    e2g_conv_shape conv;
    int bias, norm, upsample;
    block_activation act;
    int crucial; /* crucial layer id for LoRA, or -1 */
} conv_spec;

/* The generator's conv blocks in execution order; the transformer block
 * runs between G_DS and G_US. */
enum {
    G_ENC1, G_ENC2, G_ENC3, G_RB1A, G_RB1B, G_RB2A, G_RB2B, G_DS,
    G_US, G_RB3A, G_RB3B, G_DEC2, G_DEC1, G_OUT, G_NCONV
};
conv_spec gen_conv_spec(const e2g_gen_config *cfg, int id);
e2g_conv_params *gen_conv_params(const e2g_gen_params *p, int id);

#endif
