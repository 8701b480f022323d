/* cuda_slots.cuh — how the GPU code groups the generator's weights into
 * cuDNN weight slots (shared by the inference engine and the trainer):
 * the 14 conv blocks, then the linear layers with q/k/v and cross k/v
 * concatenated; where each slot's parts and each crucial layer live. */
#ifndef E2G_CUDA_SLOTS_CUH
#define E2G_CUDA_SLOTS_CUH

extern "C" {
#include "convspec.h"
}

/* Weight slots: the 14 conv blocks (G_* order) then the linear layers,
 * q/k/v and cross k/v concatenated so each is one GEMM. */
enum { S_SA_QKV = G_NCONV, S_SA_O, S_CA_Q, S_CA_KV, S_CA_O, S_FC1, S_FC2, N_SLOTS };


/* Pointers (host or device: they follow the params' binding) of each slot's per-layer weights (row blocks of a
 * concatenated slot in order) and biases. */
static inline float *slot_bias_part(const e2g_gen_params *p, int slot, int part) {
    switch (slot) {
    case S_SA_QKV: return p->self_attn[part].b;
    case S_SA_O: return p->self_attn[E2G_O].b;
    case S_CA_Q: return p->cross_attn[E2G_Q].b;
    case S_CA_KV: return p->cross_attn[E2G_K + part].b;
    case S_CA_O: return p->cross_attn[E2G_O].b;
    case S_FC1: return p->fc1.b;
    default: return p->fc2.b;
    }
}

static inline float *slot_weight_part(const e2g_gen_params *p, int slot, int part) {
    switch (slot) {
    case S_SA_QKV: return p->self_attn[part].w;
    case S_SA_O: return p->self_attn[E2G_O].w;
    case S_CA_Q: return p->cross_attn[E2G_Q].w;
    case S_CA_KV: return p->cross_attn[E2G_K + part].w;
    case S_CA_O: return p->cross_attn[E2G_O].w;
    case S_FC1: return p->fc1.w;
    case S_FC2: return p->fc2.w;
    default: return gen_conv_params(p, slot)->w;
    }
}

static inline int slot_parts(int slot) { return slot == S_SA_QKV ? 3 : slot == S_CA_KV ? 2 : 1; }


/* The slot and row block (part) of crucial layer l. */
static inline void crucial_slot(int l, int *slot, int *part) {
    static const int conv_of[E2G_N_CRUCIAL] = {G_ENC1, G_ENC2, G_ENC3, G_DS, -1, -1, -1, -1, -1, -1,
                                               -1, -1, -1, -1, G_US, G_DEC2, G_DEC1, G_OUT};
    static const int lin_slot[] = {S_SA_QKV, S_SA_QKV, S_SA_QKV, S_SA_O, S_CA_Q, S_CA_KV,
                                   S_CA_KV, S_CA_O, S_FC1, S_FC2};
    static const int lin_part[] = {0, 1, 2, 0, 0, 0, 1, 0, 0, 0};
    if (conv_of[l] >= 0) {
        *slot = conv_of[l], *part = 0;
    } else {
        *slot = lin_slot[l - E2G_L_SA_Q], *part = lin_part[l - E2G_L_SA_Q];
    }
}

#endif
