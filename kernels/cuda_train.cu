/* cuda_train.cu — the generator's training step on the GPU (cuda_trainer.h).
 *
 * The forward is the inference engine's (cuDNN convs into the fused
 * epilogue, residual + layer norm, flash attention), with every activation
 * kept: each block's raw conv output and statistics, the transformer's
 * inputs of each op.  The backward walks it in reverse: per conv block the
 * epilogue backward (cuda_train_kernels.cu) gives the raw gradient, cuDNN's
 * backward-filter the packed weight gradient (unpacked through the adjoint
 * of the packing, the ×2 upsample phases summed back onto the 3×3 taps) and
 * backward-data the input gradient (reflect padding folded back).  Linear
 * layers are 1×1 convolutions as in the forward.  LoRA runs merged: the
 * weights are repacked each step as W + s·B·A and the factor gradients come
 * from dW.  Activation gradients are fp32; bf16 has fp32's exponent range,
 * so no loss scaling is needed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <vector>

#include "cuda_conv.cuh"
#include "cuda_engine.h"
#include "cuda_slots.cuh"
#include "cuda_train.cuh"
#include "cuda_trainer.h"

struct tslot {
    int cin, cin_pad, cout, cout_pad, k, stride, pad, reflect, phase, relu, parts;
    bf16 *w;
    size_t w_elems;
    const float *bias; /* forward bias (concatenated for q/k/v and cross k/v), NULL when absent */
};

struct e2g_cuda_trainer {
    e2g_gen_config cfg;
    int N, S, c4, heads, T, L;
    dnn_ctx dc;
    cudaStream_t up;
    cudaEvent_t uploaded[2];
    tslot slots[N_SLOTS];
    /* parameters: P binds the base on the device; G the gradient of all of
     * G (full training) */
    float *base32, *train32, *grad32, *m32, *v32;
    size_t n_train;
    e2g_gen_params P, G;
    int lora;
    int rank[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL];
    float *A[E2G_N_CRUCIAL], *B[E2G_N_CRUCIAL], *dA[E2G_N_CRUCIAL], *dB[E2G_N_CRUCIAL];
    float *concept, *dconcept; /* (K or 1, T, C4) */
    void *wmem, *amem, *wpacked; /* fp32 masters/grads/Adam; activations; packed bf16 weights */
    float *bias_qkv, *bias_kv;
    /* batch */
    float *x32[2], *t32[2], *y32, *loss;
    int *rows[2];
    float *x_host[2], *t_host[2], *loss_host;
    int *rows_host[2];
    /* activations */
    tview xin, e1, e2, r0, r1, r2, r1b, r3, t0, t3, s0, s1, s2, d2, d1;
    bf16 *raw[G_NCONV];
    float *sums[G_NCONV];
    bf16 *ctx16, *u1, *u2, *u3, *qkv, *att1, *att2, *q2, *kv2, *hpre, *hid, *proj;
    float *t1, *t2;
    /* gradients (one zeroed range) */
    char *grad_lo, *grad_hi;
    float *g_e1, *g_e2, *g_r0, *g_r1, *g_r2, *g_r1b, *g_r3, *g_t0, *g_t3, *g_s0, *g_s1, *g_s2, *g_d2, *g_d1;
    float *dscratch; /* the frozen output bias's gradient lands here */
    bf16 *dproj, *datt, *dqkv, *du, *dhid, *dq2, *dkv2, *dctx16, *draw, *dxp, *dw16;
    float *dw32, *dsums, *att_stats;
};

/* ---- layout ------------------------------------------------------------------------ */

static void describe(e2g_cuda_trainer *T) {
    const e2g_gen_config *cfg = &T->cfg;
    int c4 = T->c4;
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        tslot *sl = &T->slots[id];
        sl->cin = s.conv.cin, sl->cout = s.conv.cout, sl->k = s.conv.k, sl->parts = 1;
        sl->cin_pad = (sl->cin + 7) / 8 * 8, sl->cout_pad = (sl->cout + 7) / 8 * 8;
        sl->stride = s.conv.stride, sl->pad = s.conv.pad;
        sl->reflect = s.conv.pad_mode == E2G_PAD_REFLECT, sl->phase = s.upsample, sl->relu = s.act == ACT_RELU;
        sl->bias = s.bias ? gen_conv_params(&T->P, id)->b : NULL;
    }
    int lin[][2] = {{3 * c4, c4}, {c4, c4}, {c4, c4}, {2 * c4, c4}, {c4, c4}, {4 * c4, c4}, {c4, 4 * c4}};
    for (int i = S_SA_QKV; i < N_SLOTS; i++) {
        tslot *sl = &T->slots[i];
        sl->cout = sl->cout_pad = lin[i - S_SA_QKV][0], sl->cin = sl->cin_pad = lin[i - S_SA_QKV][1];
        sl->k = 1, sl->stride = 1, sl->parts = slot_parts(i);
        sl->bias = sl->parts > 1 ? NULL : slot_bias_part(&T->P, i, 0);
    }
    for (int id = 0; id < N_SLOTS; id++) {
        tslot *sl = &T->slots[id];
        sl->w_elems = sl->phase ? (size_t)4 * sl->cout_pad * 4 * sl->cin
                                : (size_t)sl->cout_pad * sl->k * sl->k * sl->cin_pad;
    }
}

/* Input size of conv block id as a divisor of the image's. */
static int in_div(int id) {
    static const int div[G_NCONV] = {1, 1, 2, 4, 4, 4, 4, 4, 8, 4, 4, 4, 2, 1};
    return div[id];
}

/* Raw conv output of block id: its conv_out view (p NULL) and element count. */
static conv_out raw_view(const e2g_cuda_trainer *T, int id, size_t *elems) {
    const tslot *sl = &T->slots[id];
    int h = T->S / in_div(id), Ho, Wo, Cs, Hg, Wg;
    if (sl->phase) {
        Ho = Wo = 2 * h, Cs = 4 * sl->cout_pad, Hg = Wg = h + 1;
    } else {
        Ho = Wo = (h + 2 * sl->pad - sl->k) / sl->stride + 1, Cs = sl->cout_pad, Hg = Wg = Ho;
    }
    *elems = (size_t)T->N * Hg * Wg * Cs;
    conv_out v = {T->raw[id], T->N, Ho, Wo, sl->cout, Cs, sl->phase};
    return v;
}

static tview take_view(dev_arena *ar, int N, int H, int W, int C, int pad) {
    tview v = {NULL, N, H, W, C, pad};
    v.p = ar->take<bf16>((size_t)N * (H + 2 * pad) * (W + 2 * pad) * C);
    return v;
}

static void layout_acts(e2g_cuda_trainer *T, dev_arena *ar) {
    int N = T->N, S = T->S, ngf = T->cfg.ngf, c4 = T->c4, Tk = T->T;
    size_t M = (size_t)N * T->L, img = (size_t)N * S * S * 3, raw_max = 0, in_max = 0, w_max = 0, oihw_max = 0;
    for (int s = 0; s < 2; s++) {
        T->x32[s] = ar->take<float>(img), T->t32[s] = ar->take<float>(img);
        T->rows[s] = ar->take<int>(N);
    }
    T->y32 = ar->take<float>(img), T->loss = ar->take<float>(1);
    T->xin = take_view(ar, N, S, S, 8, 3);
    T->e1 = take_view(ar, N, S, S, ngf, 0), T->e2 = take_view(ar, N, S / 2, S / 2, 2 * ngf, 0);
    T->r0 = take_view(ar, N, S / 4, S / 4, c4, 1), T->r1 = take_view(ar, N, S / 4, S / 4, c4, 1);
    T->r2 = take_view(ar, N, S / 4, S / 4, c4, 1), T->r1b = take_view(ar, N, S / 4, S / 4, c4, 1);
    T->r3 = take_view(ar, N, S / 4, S / 4, c4, 0);
    T->t0 = take_view(ar, N, S / 8, S / 8, c4, 0), T->t3 = take_view(ar, N, S / 8, S / 8, c4, 0);
    T->s0 = take_view(ar, N, S / 4, S / 4, c4, 1), T->s1 = take_view(ar, N, S / 4, S / 4, c4, 1);
    T->s2 = take_view(ar, N, S / 4, S / 4, c4, 0);
    T->d2 = take_view(ar, N, S / 2, S / 2, 2 * ngf, 0), T->d1 = take_view(ar, N, S, S, ngf, 3);
    for (int id = 0; id < G_NCONV; id++) {
        size_t n;
        raw_view(T, id, &n);
        T->raw[id] = ar->take<bf16>(n), T->sums[id] = ar->take<float>((size_t)N * 2 * T->slots[id].cout);
        raw_max = std::max(raw_max, n);
        int h = S / in_div(id), p = T->slots[id].reflect && !T->slots[id].phase ? T->slots[id].pad : 0;
        in_max = std::max(in_max, (size_t)N * (h + 2 * p) * (h + 2 * p) * T->slots[id].cin_pad);
    }
    for (int id = 0; id < N_SLOTS; id++) {
        const tslot *sl = &T->slots[id];
        w_max = std::max(w_max, sl->w_elems);
        oihw_max = std::max(oihw_max, (size_t)sl->cout * sl->cin * sl->k * sl->k);
    }
    T->ctx16 = ar->take<bf16>((size_t)N * Tk * c4);
    T->u1 = ar->take<bf16>(M * c4), T->u2 = ar->take<bf16>(M * c4), T->u3 = ar->take<bf16>(M * c4);
    T->qkv = ar->take<bf16>(M * 3 * c4), T->att1 = ar->take<bf16>(M * c4), T->att2 = ar->take<bf16>(M * c4);
    T->q2 = ar->take<bf16>(M * c4), T->kv2 = ar->take<bf16>((size_t)N * Tk * 2 * c4);
    T->hpre = ar->take<bf16>(M * 4 * c4), T->hid = ar->take<bf16>(M * 4 * c4), T->proj = ar->take<bf16>(M * c4);
    T->t1 = ar->take<float>(M * c4), T->t2 = ar->take<float>(M * c4);
    T->bias_qkv = ar->take<float>(3 * c4), T->bias_kv = ar->take<float>(2 * c4);
    T->dproj = ar->take<bf16>(M * c4), T->datt = ar->take<bf16>(M * c4), T->dqkv = ar->take<bf16>(M * 3 * c4);
    T->du = ar->take<bf16>(M * c4), T->dhid = ar->take<bf16>(M * 4 * c4), T->dq2 = ar->take<bf16>(M * c4);
    T->dkv2 = ar->take<bf16>((size_t)N * Tk * 2 * c4), T->dctx16 = ar->take<bf16>((size_t)N * Tk * c4);
    T->draw = ar->take<bf16>(raw_max), T->dxp = ar->take<bf16>(in_max), T->dw16 = ar->take<bf16>(w_max);
    T->dw32 = ar->take<float>(oihw_max), T->dsums = ar->take<float>((size_t)N * 2 * c4);
    T->att_stats = ar->take<float>((size_t)N * T->heads * T->L * 2);
    /* the activation gradients: one range, zeroed per step */
    size_t lo = ar->used;
    T->g_e1 = ar->take<float>((size_t)N * S * S * ngf), T->g_e2 = ar->take<float>((size_t)N * S * S / 4 * 2 * ngf);
    size_t q = (size_t)N * S * S / 16 * c4;
    T->g_r0 = ar->take<float>(q), T->g_r1 = ar->take<float>(q), T->g_r2 = ar->take<float>(q);
    T->g_r1b = ar->take<float>(q), T->g_r3 = ar->take<float>(q);
    T->g_t0 = ar->take<float>(M * c4), T->g_t3 = ar->take<float>(M * c4);
    T->g_s0 = ar->take<float>(q), T->g_s1 = ar->take<float>(q), T->g_s2 = ar->take<float>(q);
    T->g_d2 = ar->take<float>((size_t)N * S * S / 4 * 2 * ngf), T->g_d1 = ar->take<float>((size_t)N * S * S * ngf);
    T->dscratch = ar->take<float>(8);
    T->grad_lo = ar->base + lo, T->grad_hi = ar->base + ar->used;
}

/* ---- creation --------------------------------------------------------------------------- */

extern "C" size_t e2g_cuda_trainer_size(const e2g_cuda_trainer *T) { return T->n_train; }

static int trainer_alloc(e2g_cuda_trainer *T, const float *gen, const e2g_lora *lora, char *err) {
    size_t gn = e2g_gen_param_count(&T->cfg);
    T->n_train = lora ? lora->numel : gn;
    CUDA_TRY(cudaMalloc(&T->wmem, (gn + 4 * T->n_train) * sizeof(float)));
    float *w = (float *)T->wmem;
    T->base32 = w, T->train32 = lora ? w + gn : w;
    T->grad32 = w + gn + T->n_train, T->m32 = T->grad32 + T->n_train, T->v32 = T->m32 + T->n_train;
    CUDA_TRY(cudaMemcpy(T->base32, gen, gn * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_TRY(cudaMemset(T->grad32, 0, 3 * T->n_train * sizeof(float)));
    e2g_gen_bind(&T->cfg, &T->P, T->base32);
    if (lora) {
        T->lora = 1;
        CUDA_TRY(cudaMemcpy(T->train32, lora->memory, lora->numel * sizeof(float), cudaMemcpyHostToDevice));
        for (int l = 0; l < E2G_N_CRUCIAL; l++) {
            T->rank[l] = lora->rank[l], T->scale[l] = lora->scale[l];
            if (!lora->rank[l]) continue;
            T->A[l] = T->train32 + (lora->A[l] - lora->memory), T->B[l] = T->train32 + (lora->B[l] - lora->memory);
            T->dA[l] = T->grad32 + (lora->A[l] - lora->memory), T->dB[l] = T->grad32 + (lora->B[l] - lora->memory);
        }
        T->concept = T->train32 + (lora->concept - lora->memory);
        T->dconcept = T->grad32 + (lora->concept - lora->memory);
    } else {
        e2g_gen_bind(&T->cfg, &T->G, T->grad32);
        T->concept = T->P.concepts, T->dconcept = T->G.concepts;
    }
    describe(T);
    size_t wbytes = 0;
    for (int id = 0; id < N_SLOTS; id++) wbytes += align256(T->slots[id].w_elems * sizeof(bf16));
    CUDA_TRY(cudaMalloc(&T->wpacked, wbytes));
    T->slots[0].w = (bf16 *)T->wpacked;
    for (int id = 1; id < N_SLOTS; id++)
        T->slots[id].w = T->slots[id - 1].w + align256(T->slots[id - 1].w_elems * sizeof(bf16)) / sizeof(bf16);
    dev_arena count = {NULL, 0};
    layout_acts(T, &count);
    if (cudaMalloc(&T->amem, count.used) != cudaSuccess) {
        cudaGetLastError();
        return e2g_fail(err, "CUDA: out of memory for the training activations (%zu MB, batch %d of %d²)",
                        count.used >> 20, T->N, T->S);
    }
    dev_arena ar = {(char *)T->amem, 0};
    layout_acts(T, &ar);
    T->slots[S_SA_QKV].bias = T->bias_qkv, T->slots[S_CA_KV].bias = T->bias_kv;
    size_t img = (size_t)T->N * T->S * T->S * 3 * sizeof(float);
    for (int s = 0; s < 2; s++) {
        CUDA_TRY(cudaMallocHost(&T->x_host[s], img));
        CUDA_TRY(cudaMallocHost(&T->t_host[s], img));
        CUDA_TRY(cudaMallocHost(&T->rows_host[s], T->N * sizeof(int)));
        memset(T->rows_host[s], 0, T->N * sizeof(int));
        CUDA_TRY(cudaEventCreateWithFlags(&T->uploaded[s], cudaEventDisableTiming));
    }
    CUDA_TRY(cudaMallocHost(&T->loss_host, sizeof(float)));
    CUDA_TRY(cudaStreamCreateWithFlags(&T->up, cudaStreamNonBlocking));
    return 0;
}

extern "C" void e2g_cuda_trainer_free(e2g_cuda_trainer *T) {
    if (!T) return;
    if (T->dc.stream) cudaStreamSynchronize(T->dc.stream);
    if (T->up) cudaStreamSynchronize(T->up), cudaStreamDestroy(T->up);
    for (int s = 0; s < 2; s++) {
        cudaFreeHost(T->x_host[s]), cudaFreeHost(T->t_host[s]), cudaFreeHost(T->rows_host[s]);
        if (T->uploaded[s]) cudaEventDestroy(T->uploaded[s]);
    }
    cudaFreeHost(T->loss_host);
    cudaFree(T->wmem), cudaFree(T->amem), cudaFree(T->wpacked);
    dnn_free(&T->dc);
    cudaGetLastError();
    delete T;
}

extern "C" int e2g_cuda_trainer_new(e2g_cuda_trainer **out, const e2g_gen_config *cfg, const float *gen,
                                    const e2g_lora *lora, int N, int S, char *err) {
    *out = NULL;
    if (!e2g_cuda_device_present(err)) return -1;
    TRY(e2g_cuda_check_config(cfg, err));
    if (N < 1 || S < 8 || S % 8) return e2g_fail(err, "CUDA training: bad batch %d of %d²", N, S);
    if (lora)
        for (int l = 0; l < E2G_N_CRUCIAL; l++)
            if (lora->rank[l] > 64)
                return e2g_fail(err, "CUDA training: rank %d on %s (the GPU path takes ranks up to 64)",
                                lora->rank[l], e2g_crucial_name(l));
    e2g_cuda_trainer *T = new (std::nothrow) e2g_cuda_trainer();
    if (!T) return e2g_fail(err, "out of host memory");
    T->cfg = *cfg, T->N = N, T->S = S, T->c4 = e2g_gen_c4(cfg), T->heads = e2g_gen_heads(cfg);
    T->T = cfg->ctx_tokens, T->L = (S / 8) * (S / 8);
    if (dnn_init(&T->dc, err) || trainer_alloc(T, gen, lora, err)) {
        e2g_cuda_trainer_free(T);
        return -1;
    }
    *out = T;
    return 0;
}

/* ---- weights for the forward ------------------------------------------------------------ */

/* Packs every slot from the fp32 masters (merging the adapter into its
 * crucial layers) and gathers the concatenated biases. */
static int pack_all(e2g_cuda_trainer *T, char *err) {
    cudaStream_t st = T->dc.stream;
    for (int id = 0; id < N_SLOTS; id++) {
        const tslot *sl = &T->slots[id];
        int rows = sl->cout / sl->parts;
        for (int part = 0; part < sl->parts; part++) {
            pack_args a = {};
            a.dst = sl->w + (size_t)part * rows * sl->k * sl->k * sl->cin_pad;
            a.base = slot_weight_part(&T->P, id, part);
            a.cout = rows, a.cin = sl->cin, a.k = sl->k;
            a.cout_pad = sl->parts > 1 ? rows : sl->cout_pad, a.cin_pad = sl->cin_pad, a.phase = sl->phase;
            for (int l = 0; l < E2G_N_CRUCIAL && T->lora; l++) {
                int s_, p_;
                crucial_slot(l, &s_, &p_);
                if (s_ == id && p_ == part && T->rank[l])
                    a.terms[a.n_terms++] = {T->A[l], T->B[l], T->rank[l], T->scale[l]};
            }
            TRY(pack_weights(a, st, err));
            if (sl->parts > 1)
                CUDA_TRY(cudaMemcpyAsync((float *)sl->bias + part * rows, slot_bias_part(&T->P, id, part),
                                         rows * sizeof(float), cudaMemcpyDeviceToDevice, st));
        }
    }
    return 0;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* The cuDNN shape of block id's convolution (its input as stored). */
static void conv_shape(const e2g_cuda_trainer *T, int id, int *K, int *R, int *stride, int *pad) {
    const tslot *sl = &T->slots[id];
    if (sl->phase) {
        *K = 4 * sl->cout_pad, *R = 2, *stride = 1, *pad = 1;
    } else {
        *K = sl->cout_pad, *R = sl->k, *stride = sl->stride, *pad = sl->reflect ? 0 : sl->pad;
    }
}

static int block_fwd(e2g_cuda_trainer *T, int id, const tview &in, const tview &dst, const tview *add, int slot,
                     char *err) {
    const tslot *sl = &T->slots[id];
    int K, R, stride, pad, Hp = in.H + 2 * in.pad, Wp = in.W + 2 * in.pad;
    conv_shape(T, id, &K, &R, &stride, &pad);
    TRY(conv_fwd(&T->dc, T->raw[id], in.p, sl->w, T->N, Hp, Wp, in.C, K, R, stride, pad, err));
    size_t n;
    conv_out src = raw_view(T, id, &n);
    if (id == G_OUT)
        return output_layer(T->y32, T->raw[id], src.Cs, sl->bias, T->x32[slot], T->cfg.residual_out,
                            (size_t)T->N * src.H * src.W, T->dc.stream, err);
    epilogue_args a = {};
    a.src = src, a.bias = sl->bias, a.relu = sl->relu, a.dst = dst;
    const e2g_conv_params *cp = gen_conv_params(&T->P, id);
    if (cp->norm_w) {
        TRY(block_stats(T->sums[id], src, T->dc.stream, err));
        a.sums = T->sums[id], a.gamma = cp->norm_w, a.beta = cp->norm_b;
    }
    if (add) a.add = *add;
    return block_epilogue(a, T->dc.stream, err);
}

static int linear_fwd(e2g_cuda_trainer *T, int id, bf16 *out, const bf16 *in, size_t M, char *err) {
    const tslot *sl = &T->slots[id];
    TRY(conv_fwd(&T->dc, out, in, sl->w, 1, (int)M, 1, sl->cin, sl->cout, 1, 1, 0, err));
    return bias_act(out, sl->bias, 0, M, sl->cout, T->dc.stream, err);
}

static int transformer_fwd(e2g_cuda_trainer *T, char *err) {
    int c4 = T->c4, N = T->N, L = T->L, Tk = T->T;
    size_t M = (size_t)N * L;
    cudaStream_t s = T->dc.stream;
    const e2g_gen_params *P = &T->P;
    TRY(residual_layernorm(NULL, NULL, T->u1, T->t0.p, NULL, NULL, NULL, P->ln_w[0], P->ln_b[0], M, c4, s, err));
    TRY(linear_fwd(T, S_SA_QKV, T->qkv, T->u1, M, err));
    TRY(attention(T->att1, T->qkv, 3 * c4, T->qkv + c4, T->qkv + 2 * c4, 3 * c4, N, L, L, c4, T->heads, s, err));
    TRY(conv_fwd(&T->dc, T->proj, T->att1, T->slots[S_SA_O].w, 1, (int)M, 1, c4, c4, 1, 1, 0, err));
    TRY(residual_layernorm(T->t1, NULL, T->u2, T->t0.p, NULL, T->proj, P->self_attn[E2G_O].b, P->ln_w[1],
                           P->ln_b[1], M, c4, s, err));
    TRY(linear_fwd(T, S_CA_Q, T->q2, T->u2, M, err));
    TRY(linear_fwd(T, S_CA_KV, T->kv2, T->ctx16, (size_t)N * Tk, err));
    TRY(attention(T->att2, T->q2, c4, T->kv2, T->kv2 + c4, 2 * c4, N, L, Tk, c4, T->heads, s, err));
    TRY(conv_fwd(&T->dc, T->proj, T->att2, T->slots[S_CA_O].w, 1, (int)M, 1, c4, c4, 1, 1, 0, err));
    TRY(residual_layernorm(T->t2, NULL, T->u3, NULL, T->t1, T->proj, P->cross_attn[E2G_O].b, P->ln_w[2],
                           P->ln_b[2], M, c4, s, err));
    TRY(linear_fwd(T, S_FC1, T->hpre, T->u3, M, err));
    TRY(gelu_forward(T->hid, T->hpre, M * 4 * c4, s, err));
    TRY(conv_fwd(&T->dc, T->proj, T->hid, T->slots[S_FC2].w, 1, (int)M, 1, 4 * c4, c4, 1, 1, 0, err));
    return residual_layernorm(NULL, T->t3.p, NULL, NULL, T->t2, T->proj, P->fc2.b, NULL, NULL, M, c4, s, err);
}

static int forward(e2g_cuda_trainer *T, int slot, char *err) {
    int skips = T->cfg.unet_skips;
    TRY(pack_all(T, err));
    TRY(gather_rows(T->ctx16, T->concept, T->lora ? NULL : T->rows[slot], T->N, (size_t)T->T * T->c4,
                    T->dc.stream, err));
    TRY(prep_input(T->xin, T->x32[slot], T->dc.stream, err));
    TRY(block_fwd(T, G_ENC1, T->xin, T->e1, NULL, slot, err));
    TRY(block_fwd(T, G_ENC2, T->e1, T->e2, NULL, slot, err));
    TRY(block_fwd(T, G_ENC3, T->e2, T->r0, NULL, slot, err));
    TRY(block_fwd(T, G_RB1A, T->r0, T->r1, NULL, slot, err));
    TRY(block_fwd(T, G_RB1B, T->r1, T->r2, &T->r0, slot, err));
    TRY(block_fwd(T, G_RB2A, T->r2, T->r1b, NULL, slot, err));
    TRY(block_fwd(T, G_RB2B, T->r1b, T->r3, &T->r2, slot, err));
    TRY(block_fwd(T, G_DS, T->r3, T->t0, NULL, slot, err));
    TRY(transformer_fwd(T, err));
    TRY(block_fwd(T, G_US, T->t3, T->s0, NULL, slot, err));
    TRY(block_fwd(T, G_RB3A, T->s0, T->s1, NULL, slot, err));
    TRY(block_fwd(T, G_RB3B, T->s1, T->s2, &T->s0, slot, err));
    TRY(block_fwd(T, G_DEC2, T->s2, T->d2, skips ? &T->e2 : NULL, slot, err));
    TRY(block_fwd(T, G_DEC1, T->d2, T->d1, skips ? &T->e1 : NULL, slot, err));
    tview none = {};
    return block_fwd(T, G_OUT, T->d1, none, NULL, slot, err);
}

/* ---- backward ----------------------------------------------------------------------------- */

/* The crucial layer at (slot id, part) with a nonzero rank, or -1. */
static int lora_site(const e2g_cuda_trainer *T, int id, int part) {
    if (!T->lora) return -1;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int s_, p_;
        crucial_slot(l, &s_, &p_);
        if (s_ == id && p_ == part && T->rank[l]) return l;
    }
    return -1;
}

/* Weight gradient of slot id from its packed gradient in dw16: into G's
 * tensor (full training) or through the merge into the adapter's A/B. */
static int weight_grad(e2g_cuda_trainer *T, int id, char *err) {
    const tslot *sl = &T->slots[id];
    int rows = sl->cout / sl->parts, k = sl->k;
    cudaStream_t s = T->dc.stream;
    for (int part = 0; part < sl->parts; part++) {
        const bf16 *src = T->dw16 + (size_t)part * rows * k * k * sl->cin_pad;
        int cout_pad = sl->parts > 1 ? rows : sl->cout_pad;
        if (!T->lora) {
            TRY(unpack_weight_grad(slot_weight_part(&T->G, id, part), src, rows, sl->cin, k, cout_pad, sl->cin_pad,
                                   sl->phase, s, err));
            continue;
        }
        int l = lora_site(T, id, part);
        if (l < 0) continue;
        TRY(unpack_weight_grad(T->dw32, src, rows, sl->cin, k, cout_pad, sl->cin_pad, sl->phase, s, err));
        TRY(lora_grads(T->dA[l], T->dB[l], T->dw32, T->A[l], T->B[l], T->rank[l], rows, sl->cin * k * k, T->scale[l],
                       s, err));
    }
    return 0;
}

static int slot_trained(const e2g_cuda_trainer *T, int id) {
    if (!T->lora) return 1;
    for (int part = 0; part < T->slots[id].parts; part++)
        if (lora_site(T, id, part) >= 0) return 1;
    return 0;
}

/* One conv block backward: g_out is d(block output) (the add's share
 * already passed on by the caller), g_in (NULL: not needed) receives
 * d(input).  For G_OUT, draw already holds d(raw). */
static int block_bwd(e2g_cuda_trainer *T, int id, const tview &in, const float *g_out, float *g_in, char *err) {
    const tslot *sl = &T->slots[id];
    cudaStream_t s = T->dc.stream;
    int K, R, stride, pad, Hp = in.H + 2 * in.pad, Wp = in.W + 2 * in.pad, N = T->N;
    conv_shape(T, id, &K, &R, &stride, &pad);
    if (id != G_OUT) {
        size_t n;
        epilogue_bwd_args a = {};
        a.src = raw_view(T, id, &n);
        CUDA_TRY(cudaMemsetAsync(T->draw, 0, n * sizeof(bf16), s));
        const e2g_conv_params *cp = gen_conv_params(&T->P, id);
        e2g_conv_params *gp = T->lora ? NULL : gen_conv_params(&T->G, id);
        a.bias = sl->bias, a.relu = sl->relu, a.dout = g_out, a.draw = T->draw, a.dsums = T->dsums;
        if (cp->norm_w) {
            a.sums = T->sums[id], a.gamma = cp->norm_w, a.beta = cp->norm_b;
            if (gp) a.dgamma = gp->norm_w, a.dbeta = gp->norm_b;
        } else if (gp) {
            a.dbias = gp->b;
        }
        TRY(block_epilogue_backward(a, s, err));
    }
    if (slot_trained(T, id)) {
        TRY(conv_bwd_filter(&T->dc, T->dw16, in.p, T->draw, N, Hp, Wp, in.C, K, R, stride, pad, err));
        TRY(weight_grad(T, id, err));
    }
    if (g_in) {
        TRY(conv_bwd_data(&T->dc, T->dxp, T->draw, sl->w, N, Hp, Wp, in.C, K, R, stride, pad, err));
        TRY(fold_grad(g_in, T->dxp, N, in.H, in.W, in.C, in.pad, s, err));
    }
    return 0;
}

/* A linear slot backward over M rows: bias and weight gradients (when
 * trained) and dx (NULL: not needed). */
static int linear_bwd(e2g_cuda_trainer *T, int id, const bf16 *in, size_t M, const bf16 *dy, bf16 *dx, char *err) {
    const tslot *sl = &T->slots[id];
    int rows = sl->cout / sl->parts;
    cudaStream_t s = T->dc.stream;
    if (!T->lora)
        for (int part = 0; part < sl->parts; part++)
            TRY(col_sum(slot_bias_part(&T->G, id, part), dy, sl->cout, part * rows, M, rows, s, err));
    if (slot_trained(T, id)) {
        TRY(conv_bwd_filter(&T->dc, T->dw16, in, dy, 1, (int)M, 1, sl->cin, sl->cout, 1, 1, 0, err));
        TRY(weight_grad(T, id, err));
    }
    if (dx) TRY(conv_bwd_data(&T->dc, dx, dy, sl->w, 1, (int)M, 1, sl->cin, sl->cout, 1, 1, 0, err));
    return 0;
}

/* From d(t3) in g_t3 (used in place as the residual stream's gradient) to
 * d(t0) in g_t0. */
static int transformer_bwd(e2g_cuda_trainer *T, int slot, char *err) {
    int c4 = T->c4, N = T->N, L = T->L, Tk = T->T, H = T->heads;
    size_t M = (size_t)N * L, MC = M * c4;
    cudaStream_t s = T->dc.stream;
    const e2g_gen_params *P = &T->P;
    e2g_gen_params *G = T->lora ? NULL : &T->G;
    float *gt = T->g_t3;
    TRY(f32_to_bf16(T->dproj, gt, MC, s, err));
    TRY(linear_bwd(T, S_FC2, T->hid, M, T->dproj, T->dhid, err));
    TRY(gelu_backward(T->dhid, T->hpre, M * 4 * c4, s, err));
    TRY(linear_bwd(T, S_FC1, T->u3, M, T->dhid, T->du, err));
    TRY(layernorm_backward(gt, gt, T->t2, NULL, T->du, P->ln_w[2], G ? G->ln_w[2] : NULL, G ? G->ln_b[2] : NULL, M,
                           c4, s, err));
    TRY(f32_to_bf16(T->dproj, gt, MC, s, err));
    TRY(linear_bwd(T, S_CA_O, T->att2, M, T->dproj, T->datt, err));
    TRY(attention_backward(T->dq2, c4, T->dkv2, T->dkv2 + c4, 2 * c4, T->q2, c4, T->kv2, T->kv2 + c4, 2 * c4,
                           T->att2, T->datt, T->att_stats, N, L, Tk, c4, H, s, err));
    TRY(linear_bwd(T, S_CA_KV, T->ctx16, (size_t)N * Tk, T->dkv2, T->dctx16, err));
    TRY(scatter_add_rows(T->dconcept, T->dctx16, T->lora ? NULL : T->rows[slot], N, (size_t)Tk * c4, s, err));
    TRY(linear_bwd(T, S_CA_Q, T->u2, M, T->dq2, T->du, err));
    TRY(layernorm_backward(gt, gt, T->t1, NULL, T->du, P->ln_w[1], G ? G->ln_w[1] : NULL, G ? G->ln_b[1] : NULL, M,
                           c4, s, err));
    TRY(f32_to_bf16(T->dproj, gt, MC, s, err));
    TRY(linear_bwd(T, S_SA_O, T->att1, M, T->dproj, T->datt, err));
    TRY(attention_backward(T->dqkv, 3 * c4, T->dqkv + c4, T->dqkv + 2 * c4, 3 * c4, T->qkv, 3 * c4, T->qkv + c4,
                           T->qkv + 2 * c4, 3 * c4, T->att1, T->datt, T->att_stats, N, L, L, c4, H, s, err));
    TRY(linear_bwd(T, S_SA_QKV, T->u1, M, T->dqkv, T->du, err));
    return layernorm_backward(T->g_t0, gt, NULL, T->t0.p, T->du, P->ln_w[0], G ? G->ln_w[0] : NULL,
                              G ? G->ln_b[0] : NULL, M, c4, s, err);
}

static size_t view_elems(const tview &v) { return (size_t)v.N * v.H * v.W * v.C; }

static int backward(e2g_cuda_trainer *T, int slot, float lambda, char *err) {
    cudaStream_t s = T->dc.stream;
    int skips = T->cfg.unet_skips, S = T->S;
    CUDA_TRY(cudaMemsetAsync(T->grad_lo, 0, T->grad_hi - T->grad_lo, s));
    CUDA_TRY(cudaMemsetAsync(T->grad32, 0, T->n_train * sizeof(float), s));
    CUDA_TRY(cudaMemsetAsync(T->loss, 0, sizeof(float), s));
    TRY(output_l1_backward(T->draw, T->lora ? T->dscratch : T->G.out.b, T->loss, T->y32, T->t32[slot], lambda,
                           (size_t)T->N * S * S, s, err));
    TRY(block_bwd(T, G_OUT, T->d1, NULL, T->g_d1, err));
    if (skips) TRY(add_f32(T->g_e1, T->g_d1, view_elems(T->e1), s, err));
    TRY(block_bwd(T, G_DEC1, T->d2, T->g_d1, T->g_d2, err));
    if (skips) TRY(add_f32(T->g_e2, T->g_d2, view_elems(T->e2), s, err));
    TRY(block_bwd(T, G_DEC2, T->s2, T->g_d2, T->g_s2, err));
    TRY(add_f32(T->g_s0, T->g_s2, view_elems(T->s0), s, err));
    TRY(block_bwd(T, G_RB3B, T->s1, T->g_s2, T->g_s1, err));
    TRY(block_bwd(T, G_RB3A, T->s0, T->g_s1, T->g_s0, err));
    TRY(block_bwd(T, G_US, T->t3, T->g_s0, T->g_t3, err));
    TRY(transformer_bwd(T, slot, err));
    TRY(block_bwd(T, G_DS, T->r3, T->g_t0, T->g_r3, err));
    TRY(add_f32(T->g_r2, T->g_r3, view_elems(T->r2), s, err));
    TRY(block_bwd(T, G_RB2B, T->r1b, T->g_r3, T->g_r1b, err));
    TRY(block_bwd(T, G_RB2A, T->r2, T->g_r1b, T->g_r2, err));
    TRY(add_f32(T->g_r0, T->g_r2, view_elems(T->r0), s, err));
    TRY(block_bwd(T, G_RB1B, T->r1, T->g_r2, T->g_r1, err));
    TRY(block_bwd(T, G_RB1A, T->r0, T->g_r1, T->g_r0, err));
    TRY(block_bwd(T, G_ENC3, T->e2, T->g_r0, T->g_e2, err));
    TRY(block_bwd(T, G_ENC2, T->e1, T->g_e2, T->g_e1, err));
    return block_bwd(T, G_ENC1, T->xin, T->g_e1, NULL, err);
}

/* ---- the step ------------------------------------------------------------------------------ */

extern "C" void e2g_cuda_trainer_slot(e2g_cuda_trainer *T, int s, float **x, float **tgt, int **rows) {
    *x = T->x_host[s], *tgt = T->t_host[s];
    if (rows) *rows = T->rows_host[s];
}

extern "C" int e2g_cuda_trainer_upload(e2g_cuda_trainer *T, int s, char *err) {
    size_t img = (size_t)T->N * T->S * T->S * 3 * sizeof(float);
    CUDA_TRY(cudaMemcpyAsync(T->x32[s], T->x_host[s], img, cudaMemcpyHostToDevice, T->up));
    CUDA_TRY(cudaMemcpyAsync(T->t32[s], T->t_host[s], img, cudaMemcpyHostToDevice, T->up));
    CUDA_TRY(cudaMemcpyAsync(T->rows[s], T->rows_host[s], T->N * sizeof(int), cudaMemcpyHostToDevice, T->up));
    CUDA_TRY(cudaEventRecord(T->uploaded[s], T->up));
    return 0;
}

extern "C" int e2g_cuda_trainer_step(e2g_cuda_trainer *T, int s, float lambda_l1, int update, long adam_t, float lr,
                                     float beta1, float beta2, float eps, char *err) {
    CUDA_TRY(cudaStreamWaitEvent(T->dc.stream, T->uploaded[s], 0));
    int rc = forward(T, s, err);
    if (!rc) rc = backward(T, s, lambda_l1, err);
    if (!rc && update) {
        float bc1 = 1.0f - powf(beta1, (float)adam_t), bc2 = 1.0f - powf(beta2, (float)adam_t);
        rc = adam_update(T->train32, T->grad32, T->m32, T->v32, T->n_train, lr / bc1, beta1, beta2,
                         1.0f / sqrtf(bc2), eps, T->dc.stream, err);
    }
    if (!rc && cudaMemcpyAsync(T->loss_host, T->loss, sizeof(float), cudaMemcpyDeviceToHost, T->dc.stream))
        rc = e2g_fail(err, "CUDA: loss readback failed");
    if (rc) {
        cudaStreamSynchronize(T->dc.stream);
        cudaGetLastError();
    }
    return rc;
}

extern "C" int e2g_cuda_trainer_finish(e2g_cuda_trainer *T, double *l1, char *err) {
    cudaError_t e = cudaStreamSynchronize(T->dc.stream);
    if (e != cudaSuccess) return e2g_fail(err, "CUDA: training step failed: %s", cudaGetErrorString(e));
    *l1 = *T->loss_host / ((double)T->N * T->S * T->S * 3);
    return 0;
}

extern "C" int e2g_cuda_trainer_get(e2g_cuda_trainer *T, float *params, float *grads, float *m, float *v, char *err) {
    size_t b = T->n_train * sizeof(float);
    CUDA_TRY(cudaStreamSynchronize(T->dc.stream));
    if (params) CUDA_TRY(cudaMemcpy(params, T->train32, b, cudaMemcpyDeviceToHost));
    if (grads) CUDA_TRY(cudaMemcpy(grads, T->grad32, b, cudaMemcpyDeviceToHost));
    if (m) CUDA_TRY(cudaMemcpy(m, T->m32, b, cudaMemcpyDeviceToHost));
    if (v) CUDA_TRY(cudaMemcpy(v, T->v32, b, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int e2g_cuda_trainer_set(e2g_cuda_trainer *T, const float *params, const float *m, const float *v,
                                    char *err) {
    size_t b = T->n_train * sizeof(float);
    CUDA_TRY(cudaStreamSynchronize(T->dc.stream));
    CUDA_TRY(cudaMemcpy(T->train32, params, b, cudaMemcpyHostToDevice));
    if (m) CUDA_TRY(cudaMemcpy(T->m32, m, b, cudaMemcpyHostToDevice));
    else CUDA_TRY(cudaMemset(T->m32, 0, b));
    if (v) CUDA_TRY(cudaMemcpy(T->v32, v, b, cudaMemcpyHostToDevice));
    else CUDA_TRY(cudaMemset(T->v32, 0, b));
    return 0;
}

extern "C" int e2g_cuda_trainer_time(e2g_cuda_trainer *T, int iters, double *ms, char *err) {
    cudaEvent_t t0 = NULL, t1 = NULL;
    std::vector<double> times;
    double l1;
    int rc = e2g_cuda_trainer_upload(T, 0, err);
    if (!rc && (cudaEventCreate(&t0) || cudaEventCreate(&t1))) rc = e2g_fail(err, "CUDA: event creation failed");
    for (int i = -2; i < iters && !rc; i++) {
        rc = cudaEventRecord(t0, T->dc.stream) ? e2g_fail(err, "CUDA: event failed") : 0;
        if (!rc) rc = e2g_cuda_trainer_step(T, 0, 100.0f, 1, i + 3, 1e-4f, 0.5f, 0.999f, 1e-8f, err);
        if (!rc) rc = cudaEventRecord(t1, T->dc.stream) ? e2g_fail(err, "CUDA: event failed") : 0;
        if (!rc) rc = e2g_cuda_trainer_finish(T, &l1, err);
        float t = 0;
        if (!rc && i >= 0 && cudaEventElapsedTime(&t, t0, t1) == cudaSuccess) times.push_back(t);
    }
    if (!rc) rc = median_ms(times, ms, err);
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    return rc;
}
