/* model.h — the E²GAN generator and the PatchGAN discriminator
 * (docs/architecture.md §1–§3): configuration, parameter structs bound over one
 * allocation, planned activations, forward and backward, and LoRA (merged
 * or unmerged, per-sample in a batch).  Tensors inside the engine are NHWC;
 * token sequences are (N, L, C) with L = H/8·W/8 row-major, which is the
 * same memory as NHWC. */
#ifndef E2G_MODEL_H
#define E2G_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "conv.h"

/* ---- configuration ----------------------------------------------------------- */

typedef struct {
    int ngf;          /* base width */
    int ctx_tokens;   /* T, tokens of a concept embedding */
    int n_concepts;   /* K, rows of the `concepts` tensor */
    int unet_skips;   /* 1: dec2 += enc2, dec1 += enc1 */
    int residual_out; /* 1: y = tanh(o + atanh(x)) */
    int norm_ends;    /* 1: enc1/dec1 have IN and no bias (paper-like) */
    int film;         /* 1: the decoder's instance norms take a per-sample scale and
                       * shift, and the residual output a per-sample gain of the
                       * photo, from the context (FiLM, docs/architecture.md §1) */
    int skip_gate;    /* 1: each U-Net skip is scaled per sample and channel by
                       * s_n = 1 + W·c̄_n + b (docs/architecture.md §1) */
} e2g_gen_config;

int e2g_gen_c4(const e2g_gen_config *cfg);
int e2g_gen_heads(const e2g_gen_config *cfg);

/* ---- parameters -------------------------------------------------------------- */

/* A conv layer with its optional bias, instance norm and FiLM of that norm
 * (NULL when absent). */
typedef struct {
    float *w, *b, *norm_w, *norm_b;
    float *film_w, *film_b; /* (2·cout, C4), (2·cout): scale rows, then shift rows */
    float *gate_w, *gate_b; /* the skip gate added to the block: (cout, C4), (cout) */
} e2g_conv_params;

typedef struct {
    float *w, *b;
} e2g_linear_params;

enum { E2G_Q, E2G_K, E2G_V, E2G_O };

typedef struct {
    e2g_conv_params enc1, enc2, enc3, rb_a[3], rb_b[3], ds, us, dec2, dec1, out;
    e2g_linear_params ln[3]; /* the transformer block's layer norms (weight, bias) */
    e2g_linear_params self_attn[4], cross_attn[4], fc1, fc2;
    e2g_linear_params out_gate; /* FiLM of the output: (3, C4), (3); absent without film */
    float *concepts; /* (K, T, C4) */
} e2g_gen_params;

/* One tensor of a model: its safetensors name, shape and where it is bound. */
typedef enum { E2G_INIT_WEIGHT, E2G_INIT_BIAS, E2G_INIT_ONES, E2G_INIT_ZEROS, E2G_INIT_NORMAL } e2g_init_kind;

typedef struct {
    char name[48];
    e2g_init_kind init;
    int ndim;
    int64_t shape[4];
    size_t numel;
    float **slot;
} e2g_tensor_entry;

/* Total elements of a tensor table; pointing its slots into one block. */
size_t e2g_tensors_numel(const e2g_tensor_entry *t, int n);
void e2g_tensors_bind(const e2g_tensor_entry *t, int n, float *memory);

#define E2G_GEN_MAX_TENSORS 96
/* Lists G's tensors (net.h's node order, then `concepts`) with slots
 * inside *p; returns the count. */
int e2g_gen_tensors(const e2g_gen_config *cfg, e2g_gen_params *p, e2g_tensor_entry *out);
/* Total floats of all G parameters. */
size_t e2g_gen_param_count(const e2g_gen_config *cfg);
/* Points every tensor of *p into memory (e2g_gen_param_count floats). */
void e2g_gen_bind(const e2g_gen_config *cfg, e2g_gen_params *p, float *memory);

/* PyTorch-default initialisation of bound tensors: kaiming-uniform(a=√5)
 * weights, uniform ±1/√fan_in biases (fan_in of the weight listed just
 * before), norms 1 and 0, embeddings N(0, 1); deterministic for a seed. */
void e2g_init_tensors(const e2g_tensor_entry *t, int n, unsigned long long seed);
void e2g_gen_init(const e2g_gen_config *cfg, e2g_gen_params *p, unsigned long long seed);

/* ---- LoRA -------------------------------------------------------------------- */

/* The crucial layers of docs/architecture.md §3, in a fixed order. */
enum {
    E2G_L_ENC1, E2G_L_ENC2, E2G_L_ENC3, E2G_L_DS,
    E2G_L_SA_Q, E2G_L_SA_K, E2G_L_SA_V, E2G_L_SA_O,
    E2G_L_CA_Q, E2G_L_CA_K, E2G_L_CA_V, E2G_L_CA_O,
    E2G_L_FC1, E2G_L_FC2, E2G_L_US, E2G_L_DEC2, E2G_L_DEC1, E2G_L_OUT,
    E2G_N_CRUCIAL
};

/* Module path of a crucial layer, as in PEFT keys (`enc1.conv`,
 * `tb.self_attn.q`, `out`). */
const char *e2g_crucial_name(int layer);

/* Shape of a crucial layer: conv (k > 0) or linear (k == 0, cin = in,
 * cout = out). */
typedef struct {
    int cin, cout, k;
    e2g_conv_shape conv;
} e2g_layer_shape;
void e2g_crucial_shape(const e2g_gen_config *cfg, int layer, e2g_layer_shape *out);

/* One adapter's low-rank weights: per crucial layer a rank (0 = absent),
 * a scale alpha/r, A (r, cin, k, k) or (r, in) and B (cout, r); plus the
 * concept's own embedding (T, C4).  All tensors live in `memory`. */
typedef struct {
    /* Identity keying device caches: for an adapter loaded from bytes the
     * SHA-256 of those bytes (top bit set), for one made in memory a
     * process-unique counter from e2g_lora_new. */
    unsigned long long id;
    int rank[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL];
    float *A[E2G_N_CRUCIAL], *B[E2G_N_CRUCIAL];
    float *concept;
    float *memory;
    size_t numel;
} e2g_lora;

/* Allocates an adapter with the given ranks and scales (zeroed). */
e2g_lora *e2g_lora_new(const e2g_gen_config *cfg, const int *rank, const float *scale);
void e2g_lora_free(e2g_lora *l);

/* What one sample of a batch asks for: its context (T, C4) — a concept's
 * embedding or a weighted blend — and the LoRA terms (adapter, coefficient
 * = blend weight × strength) to apply unmerged. */
#define E2G_MAX_TERMS 4
typedef struct {
    const e2g_lora *lora;
    float coef;
} e2g_lora_term;

typedef struct {
    const float *context;
    int n_terms;
    e2g_lora_term terms[E2G_MAX_TERMS];
} e2g_edit;

/* Merged LoRA: *dst is *base with each crucial layer that the terms touch
 * replaced by a private copy W + Σ coef·scale·B·A.  Returns the private
 * memory (free it after use), NULL when no layer was touched. */
float *e2g_gen_merge(const e2g_gen_config *cfg, e2g_gen_params *dst, const e2g_gen_params *base,
                     const e2g_lora_term *terms, int n_terms);

/* ---- generator forward / backward --------------------------------------------- */

typedef struct e2g_gen_acts e2g_gen_acts;

/* Plans and allocates every activation of a forward/backward at this batch
 * and size (H, W multiples of 8).  with_grads also plans their gradients. */
e2g_gen_acts *e2g_gen_acts_new(const e2g_gen_config *cfg, int N, int H, int W, int with_grads);
void e2g_gen_acts_free(e2g_gen_acts *a);
size_t e2g_gen_acts_bytes(const e2g_gen_acts *a);

/* y (N, H, W, 3) from x (N, H, W, 3) in [-1, 1]; edits: one per sample.
 * x must stay alive and unchanged until the backward. */
void e2g_gen_forward(e2g_gen_acts *a, float *y, const e2g_gen_params *p, const float *x,
                     const e2g_edit *edits);

/* Backward of the last forward for dy (N, H, W, 3).  Accumulates into the
 * non-NULL outputs: grads (all base parameters), dlora (the LoRA gradients
 * of the adapter `train`, which must appear in the edits' terms), dctx
 * (N, T, C4: each sample's context gradient), dx (N, H, W, 3). */
void e2g_gen_backward(e2g_gen_acts *a, e2g_gen_params *grads, e2g_lora *dlora,
                      const e2g_lora *train, float *dctx, float *dx, const float *dy,
                      const e2g_gen_params *p, const float *x, const e2g_edit *edits);

/* After a forward: each sample's encoder features, the mean of the C4
 * tokens entering the transformer block (N, C4) — what data reduction
 * clusters.  They do not depend on the concept. */
void e2g_gen_features(const e2g_gen_acts *a, float *out);

/* Inference with the least memory: no activation is kept for a backward,
 * each is freed after its last use, and the full-resolution layers (enc1,
 * dec1, out) run on bands of rows, so no full-resolution activation ever
 * exists.  Same output as e2g_gen_forward.  Needs norm-free ends
 * (cfg->norm_ends == 0): a norm there needs the whole image at once.
 * A batch is walked in passes of as many images as make
 * E2G_INFER_PASS_PIXELS together (at least one): walked whole, a batch keeps
 * every image's activations alive at once, they fall out of the caches, and
 * a batch of 8 at 256² ran at 0.6× the per-image speed of single images. */
#define E2G_INFER_PASS_PIXELS ((size_t)256 * 256)
void e2g_gen_infer(const e2g_gen_config *cfg, float *y, const e2g_gen_params *p, const float *x,
                   const e2g_edit *edits, int N, int H, int W);

/* ---- discriminator ------------------------------------------------------------ */

typedef struct {
    e2g_conv_params c1, c2, c3, c4, out; /* c2..c4 carry the norms n2..n4 */
} e2g_disc_params;

#define E2G_DISC_MAX_TENSORS 16
int e2g_disc_tensors(int ndf, e2g_disc_params *p, e2g_tensor_entry *out);
size_t e2g_disc_param_count(int ndf);
void e2g_disc_bind(int ndf, e2g_disc_params *p, float *memory);
void e2g_disc_init(int ndf, e2g_disc_params *p, unsigned long long seed);

typedef struct e2g_disc_acts e2g_disc_acts;
e2g_disc_acts *e2g_disc_acts_new(int ndf, int N, int H, int W);
void e2g_disc_acts_free(e2g_disc_acts *a);
/* Logit map size for an H×W input. */
void e2g_disc_out_size(int H, int W, int *Ho, int *Wo);
/* logits (N, Ho, Wo, 1) from concat(src, tgt), each (N, H, W, 3). */
void e2g_disc_forward(e2g_disc_acts *a, float *logits, const e2g_disc_params *p, const float *src,
                      const float *tgt);
/* Accumulates parameter gradients (grads may be NULL) and dsrc / dtgt
 * (either may be NULL). */
void e2g_disc_backward(e2g_disc_acts *a, e2g_disc_params *grads, float *dsrc, float *dtgt,
                       const float *dlogits, const e2g_disc_params *p, const float *src,
                       const float *tgt);

#endif
