/* attention.h — multi-head scaled-dot-product attention on the CPU, the
 * softmax(q·kᵀ/√d)·v core of the transformer block's self- and
 * cross-attention (docs/architecture.md §1; the q/k/v/o projections are separate
 * linear layers).  Flash-attention style: the Lq×Lk score matrix is never
 * built, memory stays linear in the token counts, and the backward
 * recomputes the probabilities from the saved per-row log-sum-exp. */
#ifndef E2G_ATTENTION_H
#define E2G_ATTENTION_H

/* q: (N, Lq, C); k, v: (N, Lk, C); out: (N, Lq, C); lse: (N, heads, Lq).
 * C = heads·d and head h reads and writes columns [h·d, (h+1)·d).
 * out = softmax(q·kᵀ/√d)·v per head; lse = the natural log of each row's
 * softmax denominator, log Σ_j exp(q_i·k_j/√d), which the backward needs.
 * Requires N, Lq, Lk ≥ 1 and C a positive multiple of heads. */
void e2g_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int N, int Lq, int Lk, int C, int heads);

/* Gradients of attention_forward, ACCUMULATED (+=) into dq (N, Lq, C),
 * dk and dv (N, Lk, C), given dout (N, Lq, C) and the forward's inputs,
 * out and lse. */
void e2g_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const float *out,
                        const float *lse, int N, int Lq, int Lk, int C, int heads);

#endif
