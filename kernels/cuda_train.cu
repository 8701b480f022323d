/* cuda_train.cu — the generator's training step on the GPU (cuda_trainer.h).
 *
 * The forward walks the generator's node table (engine/net.c, read through
 * cuda_plan.cuh) as the inference engine does — cuDNN convs into the fused
 * epilogue, residual + layer norm, flash attention — with every activation
 * kept: each conv's raw output and statistics, every token op's output,
 * each GELU's input.  The backward walks the table in reverse: per conv
 * node the epilogue backward (cuda_train_kernels.cu) gives the raw
 * gradient, cuDNN's backward-filter the packed weight gradient (unpacked
 * through the adjoint of the packing, the ×2 upsample phases summed back
 * onto the 3×3 taps) and backward-data the input gradient (reflect padding
 * folded back).  Linear slots are 1×1 convolutions as in the forward.  A
 * node's gradient is fp32, zeroed per step and accumulated by each of its
 * consumers (a node with an `add` passes its gradient on to that input
 * too); a node read only by one linear slot or one attention has a bf16
 * gradient that this consumer writes (cuda_plan.cuh, node_plan.grad).
 * LoRA runs merged: the weights are repacked each step as W + s·B·A and
 * the factor gradients come from dW.  A FiLM norm's per-sample affine is
 * kept from the forward; its backward carries the per-sample d(gamma),
 * d(beta) of the epilogue backward on into the norm's and FiLM's
 * gradients and the context's; likewise the FiLM output gate's d(gain),
 * which the output layer's L1 backward sums per sample.  bf16 has fp32's
 * exponent range, so no loss scaling is needed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <vector>

#include "cuda_conv.cuh"
#include "cuda_engine.h"
#include "cuda_plan.cuh"
#include "cuda_train.cuh"
#include "cuda_trainer.h"

namespace e2g {

/* A weight slot's device memory (geometry in the plan's wslot). */
struct tslot {
    bf16 *w;           /* packed each step from the fp32 masters (+ the adapter) */
    const float *bias; /* forward bias (concatenated over the parts), NULL when absent */
};

}  // namespace e2g

/* The public opaque type (declared in the C header) lives outside the
 * namespace; its members are the namespace's types. */
using namespace e2g;

struct e2g_cuda_trainer {
    e2g_gen_config cfg;
    gen_plan plan;
    int N, S;
    dnn_ctx dc;
    cudaStream_t up;
    cudaEvent_t uploaded[2];
    tslot slots[PLAN_MAX];
    float *bias_cat[PLAN_MAX]; /* multi-part slots: their parts' biases side by side */
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
    /* batch */
    float *x32[2], *t32[2], *y32, *loss;
    int *rows[2];
    float *x_host[2], *t_host[2], *loss_host;
    int *rows_host[2];
    /* activations, every node's kept */
    act_layout acts;
    /* gradients: g (GRAD_F32, one range zeroed per step), gb (GRAD_BF16,
     * row stride plan.np[i].ld) */
    float *g[PLAN_MAX];
    bf16 *gb[PLAN_MAX];
    char *grad_lo, *grad_hi;
    float *dscratch; /* the frozen output bias's gradient lands here */
    float *dgain;    /* FiLM: the output gate's gradient (N, 3) */
    float *dskip;    /* a skip gate's gradient (N, C) */
    bf16 *dy16, *dx16, *draw, *dxp, *dw16;
    float *dw32, *dsums, *att_stats;
};

namespace e2g {

/* ---- layout ------------------------------------------------------------------------ */

static void layout_acts(e2g_cuda_trainer *T, dev_arena *ar) {
    const gen_plan &P = T->plan;
    const e2g_net &net = P.net;
    int N = T->N, S = T->S;
    size_t img = (size_t)N * S * S * 3, w_max = 0, oihw_max = 0, att_max = 1, sums_max = 1;
    for (int s = 0; s < 2; s++) {
        T->x32[s] = ar->take<float>(img), T->t32[s] = ar->take<float>(img);
        T->rows[s] = ar->take<int>(N);
    }
    T->y32 = ar->take<float>(img), T->loss = ar->take<float>(1);
    plan_layout(&P, N, S, S, 1, 0, ar, &T->acts);
    const act_layout &L = T->acts;
    for (int s = 0; s < P.n_slots; s++) {
        const wslot &sl = P.slot[s];
        T->bias_cat[s] = sl.parts > 1 ? ar->take<float>(sl.cout) : NULL;
        w_max = std::max(w_max, sl.w_elems);
        oihw_max = std::max(oihw_max, (size_t)sl.rows * sl.cin * sl.k * sl.k);
    }
    for (int i = 0; i < net.n; i++) {
        const e2g_node &nd = net.node[i];
        if (nd.op == E2G_OP_ATTENTION) att_max = std::max(att_max, L.b[i].M * nd.heads * 2);
        if (nd.op == E2G_OP_CONV) sums_max = std::max(sums_max, (size_t)N * 2 * nd.cout);
    }
    T->dy16 = ar->take<bf16>(L.rows_max), T->dx16 = ar->take<bf16>(L.rows_max);
    T->draw = ar->take<bf16>(L.raw_max), T->dxp = ar->take<bf16>(L.conv_in_max), T->dw16 = ar->take<bf16>(w_max);
    T->dw32 = ar->take<float>(oihw_max), T->dsums = ar->take<float>(sums_max);
    T->att_stats = ar->take<float>(att_max);
    /* bf16 gradients: each overwritten by its one consumer every step; a
     * slot's parts share one buffer, side by side as in the forward */
    for (int i = 0; i < net.n; i++) {
        const node_plan &np = P.np[i];
        T->gb[i] = NULL;
        if (np.grad != GRAD_BF16) continue;
        if (net.node[i].op == E2G_OP_LINEAR && np.part > 0) {
            const wslot &sl = P.slot[np.slot];
            T->gb[i] = T->gb[sl.part_node[0]] ? T->gb[sl.part_node[0]] + (size_t)np.part * sl.rows : NULL;
        } else {
            T->gb[i] = ar->take<bf16>(L.b[i].M * np.ld);
        }
    }
    /* fp32 gradients: one range, zeroed per step */
    size_t lo = ar->used;
    for (int i = 0; i < net.n; i++)
        T->g[i] = P.np[i].grad == GRAD_F32 ? ar->take<float>(L.b[i].M * net.node[i].cout) : NULL;
    T->dscratch = ar->take<float>(8);
    T->dgain = ar->take<float>((size_t)3 * N);
    T->dskip = ar->take<float>(sums_max); /* N·2·C of the widest conv covers N·C */
    if (ar->base) T->grad_lo = ar->base + lo, T->grad_hi = ar->base + ar->used;
}

/* ---- creation --------------------------------------------------------------------------- */

extern "C" size_t e2g_cuda_trainer_size(const e2g_cuda_trainer *T) { return T->n_train; }

/* Uploads go on the step's stream: its kernels run on that non-blocking
 * stream, which plain cudaMemcpy/cudaMemset do not order. */
static int trainer_alloc(e2g_cuda_trainer *T, const float *gen, const e2g_lora *lora, char *err) {
    const gen_plan &P = T->plan;
    cudaStream_t st = T->dc.stream;
    size_t gn = e2g_gen_param_count(&T->cfg);
    T->n_train = lora ? lora->numel : gn;
    CUDA_TRY(cudaMalloc(&T->wmem, (gn + 4 * T->n_train) * sizeof(float)));
    float *w = (float *)T->wmem;
    T->base32 = w, T->train32 = lora ? w + gn : w;
    T->grad32 = w + gn + T->n_train, T->m32 = T->grad32 + T->n_train, T->v32 = T->m32 + T->n_train;
    CUDA_TRY(cudaMemcpyAsync(T->base32, gen, gn * sizeof(float), cudaMemcpyHostToDevice, st));
    CUDA_TRY(cudaMemsetAsync(T->grad32, 0, 3 * T->n_train * sizeof(float), st));
    e2g_gen_bind(&T->cfg, &T->P, T->base32);
    if (lora) {
        T->lora = 1;
        CUDA_TRY(cudaMemcpyAsync(T->train32, lora->memory, lora->numel * sizeof(float), cudaMemcpyHostToDevice, st));
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
    size_t wbytes = 0;
    for (int s = 0; s < P.n_slots; s++) wbytes += align256(P.slot[s].w_elems * sizeof(bf16));
    CUDA_TRY(cudaMalloc(&T->wpacked, wbytes));
    bf16 *wp = (bf16 *)T->wpacked;
    for (int s = 0; s < P.n_slots; s++) {
        T->slots[s].w = wp;
        wp += align256(P.slot[s].w_elems * sizeof(bf16)) / sizeof(bf16);
    }
    dev_arena count = {NULL, 0};
    layout_acts(T, &count);
    if (cudaMalloc(&T->amem, count.used) != cudaSuccess) {
        cudaGetLastError();
        return e2g_fail(err, "CUDA: out of memory for the training activations (%zu MB, batch %d of %d²)",
                        count.used >> 20, T->N, T->S);
    }
    dev_arena ar = {(char *)T->amem, 0};
    layout_acts(T, &ar);
    for (int s = 0; s < P.n_slots; s++) {
        const wslot &sl = P.slot[s];
        const e2g_node &nd = P.net.node[sl.part_node[0]];
        if (sl.parts > 1)
            T->slots[s].bias = T->bias_cat[s]; /* filled by pack_all */
        else if (!sl.bias)
            T->slots[s].bias = NULL;
        else
            T->slots[s].bias = nd.op == E2G_OP_CONV ? e2g_node_conv(&nd, &T->P)->b : e2g_node_linear(&nd, &T->P)->b;
    }
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
    CUDA_TRY(cudaStreamSynchronize(st)); /* the uploads have landed: report their errors here */
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
    T->cfg = *cfg, T->N = N, T->S = S;
    if (gen_plan_build(&T->plan, cfg, err) || dnn_init(&T->dc, err) || trainer_alloc(T, gen, lora, err)) {
        e2g_cuda_trainer_free(T);
        return -1;
    }
    *out = T;
    return 0;
}

/* ---- weights for the forward ------------------------------------------------------------ */

/* The crucial layer of node i when it trains an adapter rank, or -1. */
static int lora_layer(const e2g_cuda_trainer *T, int i) {
    int l = T->plan.net.node[i].crucial;
    return T->lora && l >= 0 && T->rank[l] ? l : -1;
}

/* The OUTPUT's FiLM gate in params (T->P or T->G), or NULL without FiLM. */
static e2g_linear_params *gate(const e2g_cuda_trainer *T, const e2g_gen_params *params) {
    const e2g_node &out = T->plan.net.node[T->plan.net.output];
    return out.film ? e2g_node_linear(&out, params) : NULL;
}

/* Packs every slot from the fp32 masters (merging the adapter into its
 * crucial layers) and gathers the concatenated biases. */
static int pack_all(e2g_cuda_trainer *T, char *err) {
    const gen_plan &P = T->plan;
    cudaStream_t st = T->dc.stream;
    for (int s = 0; s < P.n_slots; s++) {
        const wslot &sl = P.slot[s];
        for (int part = 0; part < sl.parts; part++) {
            int i = sl.part_node[part], l = lora_layer(T, i);
            const e2g_node &nd = P.net.node[i];
            pack_args a = {};
            a.dst = T->slots[s].w + slot_part_offset(sl, part);
            a.base = *e2g_node_weight_slot(&nd, &T->P);
            a.cout = sl.rows, a.cin = sl.cin, a.k = sl.k;
            a.cout_pad = slot_part_rows_pad(sl), a.cin_pad = sl.cin_pad, a.phase = sl.phase;
            if (l >= 0) a.terms[a.n_terms++] = {T->A[l], T->B[l], T->rank[l], T->scale[l]};
            TRY(pack_weights(a, st, err));
            if (sl.parts > 1)
                CUDA_TRY(cudaMemcpyAsync(T->bias_cat[s] + part * sl.rows, e2g_node_linear(&nd, &T->P)->b,
                                         sl.rows * sizeof(float), cudaMemcpyDeviceToDevice, st));
        }
    }
    return 0;
}

/* ---- forward: the node table in order ----------------------------------------------------- */

static int conv_forward(e2g_cuda_trainer *T, int i, int slot, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    const e2g_node &nd = P.net.node[i];
    const node_plan &np = P.np[i];
    const wslot &sl = P.slot[np.slot];
    const node_buf &b = L.b[i];
    const conv_geom &g = b.g;
    const tview &in = L.b[nd.in[0]].v;
    cudaStream_t s = T->dc.stream;
    TRY(conv_fwd(&T->dc, b.raw, in.p, T->slots[np.slot].w, T->N, g.Hp, g.Wp, g.C, g.K, g.R, g.stride, g.pad, in.ns,
                 err));
    if (np.to_output)
        return plan_output_layer(P, L, T->y32, T->slots[np.slot].bias, T->x32[slot], gate(T, &T->P), s, err);
    epilogue_args a = {};
    a.src = plan_raw(P, L, i), a.bias = T->slots[np.slot].bias, a.relu = sl.relu, a.dst = b.v;
    if (sl.norm) {
        const e2g_conv_params *cp = e2g_node_conv(&nd, &T->P);
        TRY(block_stats(b.stats, a.src, s, err));
        a.sums = b.stats, a.gamma = cp->norm_w, a.beta = cp->norm_b;
        if (sl.film) {
            film_args f = plan_film(P, L, i, cp->film_w, cp->film_b, cp->norm_w, cp->norm_b);
            TRY(film_affine(f, s, err));
            a.gamma = f.gamma, a.beta = f.beta, a.gamma_ns = f.C;
        }
    }
    if (nd.add >= 0) a.add = L.b[nd.add].v;
    if (sl.skip_gate) {
        const e2g_conv_params *cp = e2g_node_conv(&nd, &T->P);
        film_args f = plan_skip_gate(P, L, i, cp->gate_w, cp->gate_b);
        TRY(film_affine(f, s, err));
        a.add_gain = f.gamma;
    }
    return block_epilogue(a, s, err);
}

/* Slot s's LINEAR nodes (see the engine's linear_slot); with GELU the
 * input of the activation is kept. */
static int e2g_linear_forward(e2g_cuda_trainer *T, int s, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    const wslot &sl = P.slot[s];
    int i0 = sl.part_node[0];
    const e2g_node &nd0 = P.net.node[i0];
    const node_plan &np0 = P.np[i0];
    const node_buf &b0 = L.b[i0], &in = L.b[nd0.in[0]];
    const float *bias = T->slots[s].bias;
    int M = (int)b0.M;
    cudaStream_t st = T->dc.stream;
    if (nd0.add >= 0) {
        TRY(conv_fwd(&T->dc, L.proj, in.rows, T->slots[s].w, 1, M, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
        const node_buf &r = L.b[nd0.add];
        int ln = np0.fused_ln;
        const e2g_linear_params *lp = ln >= 0 ? e2g_node_linear(&P.net.node[ln], &T->P) : NULL;
        return residual_layernorm(b0.f32, np0.has_bf16 ? b0.rows : NULL, ln >= 0 ? L.b[ln].rows : NULL,
                                  r.f32 ? NULL : r.rows, r.f32, L.proj, bias, lp ? lp->w : NULL, lp ? lp->b : NULL,
                                  b0.M, nd0.cout, st, err);
    }
    bf16 *out = sl.gelu ? b0.pre : b0.rows;
    TRY(conv_fwd(&T->dc, out, in.rows, T->slots[s].w, 1, M, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
    TRY(bias_act(out, bias, 0, b0.M, sl.cout, st, err));
    if (sl.gelu) TRY(e2g_gelu_forward(b0.rows, b0.pre, b0.M * sl.cout, st, err));
    return 0;
}

static int e2g_layernorm_forward(e2g_cuda_trainer *T, int i, char *err) {
    const e2g_node &nd = T->plan.net.node[i];
    const node_buf &b = T->acts.b[i], &r = T->acts.b[nd.in[0]];
    const e2g_linear_params *lp = e2g_node_linear(&nd, &T->P);
    return residual_layernorm(NULL, NULL, b.rows, r.f32 ? NULL : r.rows, r.f32, NULL, NULL, lp->w, lp->b, b.M,
                              nd.cout, T->dc.stream, err);
}

static int forward(e2g_cuda_trainer *T, int slot, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    cudaStream_t s = T->dc.stream;
    TRY(pack_all(T, err));
    for (int i = 0; i < P.net.n; i++) {
        const e2g_node &nd = P.net.node[i];
        const node_plan &np = P.np[i];
        switch (nd.op) {
        case E2G_OP_INPUT: TRY(prep_input(L.b[i].v, T->x32[slot], s, err)); break;
        case E2G_OP_CONTEXT:
            TRY(gather_rows(L.b[i].rows, T->concept, T->lora ? NULL : T->rows[slot], T->N,
                            L.b[i].M / T->N * nd.cout, s, err));
            break;
        case E2G_OP_CONV: TRY(conv_forward(T, i, slot, err)); break;
        case E2G_OP_LAYERNORM:
            if (np.fused_into < 0) TRY(e2g_layernorm_forward(T, i, err));
            break;
        case E2G_OP_LINEAR:
            if (np.part == 0) TRY(e2g_linear_forward(T, np.slot, err));
            break;
        case E2G_OP_ATTENTION: TRY(plan_attention(P, L, i, s, err)); break;
        case E2G_OP_OUTPUT: break; /* its conv wrote y */
        }
    }
    return 0;
}

/* ---- backward: the node table in reverse --------------------------------------------------- */

static int slot_trained(const e2g_cuda_trainer *T, int s) {
    if (!T->lora) return 1;
    for (int part = 0; part < T->plan.slot[s].parts; part++)
        if (lora_layer(T, T->plan.slot[s].part_node[part]) >= 0) return 1;
    return 0;
}

/* Weight gradient of slot s from its packed gradient in dw16: into G's
 * tensors (full training) or through the merge into the adapter's A/B. */
static int weight_grad(e2g_cuda_trainer *T, int s, char *err) {
    const gen_plan &P = T->plan;
    const wslot &sl = P.slot[s];
    cudaStream_t st = T->dc.stream;
    for (int part = 0; part < sl.parts; part++) {
        int i = sl.part_node[part];
        const bf16 *src = T->dw16 + slot_part_offset(sl, part);
        int cout_pad = slot_part_rows_pad(sl);
        if (!T->lora) {
            TRY(unpack_weight_grad(*e2g_node_weight_slot(&P.net.node[i], &T->G), src, sl.rows, sl.cin, sl.k, cout_pad,
                                   sl.cin_pad, sl.phase, st, err));
            continue;
        }
        int l = lora_layer(T, i);
        if (l < 0) continue;
        TRY(unpack_weight_grad(T->dw32, src, sl.rows, sl.cin, sl.k, cout_pad, sl.cin_pad, sl.phase, st, err));
        TRY(lora_grads(T->dA[l], T->dB[l], T->dw32, T->A[l], T->B[l], T->rank[l], sl.rows, sl.cin * sl.k * sl.k,
                       T->scale[l], st, err));
    }
    return 0;
}

/* Node i's gradient as dense bf16 rows (for nodes stored with ld = cout:
 * not a part of a concatenated slot): its own when it is bf16, else
 * converted into dy16. */
static int grad16(e2g_cuda_trainer *T, int i, bf16 **out, char *err) {
    if (T->plan.np[i].grad == GRAD_BF16) {
        *out = T->gb[i];
        return 0;
    }
    *out = T->dy16;
    return f32_to_bf16(T->dy16, T->g[i], T->acts.b[i].M * T->plan.net.node[i].cout, T->dc.stream, err);
}

/* Backward of FiLM conv node i's affine, whose per-sample gradients the
 * epilogue backward left in dsums (N, 2, C: d(beta), then d(gamma)): into
 * the norm's and FiLM's parameter gradients gp (NULL: frozen) and the
 * context's gradient. */
static int film_bwd(e2g_cuda_trainer *T, int i, const e2g_conv_params *cp, e2g_conv_params *gp, char *err) {
    const gen_plan &P = T->plan;
    int C = P.net.node[i].cout;
    film_args f = plan_film(P, T->acts, i, cp->film_w, cp->film_b, cp->norm_w, cp->norm_b);
    f.dgamma = T->dsums + C, f.dbeta = T->dsums, f.dns = 2 * C;
    if (gp) f.dw = gp->film_w, f.db = gp->film_b, f.dnorm_w = gp->norm_w, f.dnorm_b = gp->norm_b;
    f.dctx = T->g[P.net.node[i].in[1]]; /* fp32: a context read by a conv (cuda_plan.cu, plan_grads) */
    return film_backward(f, T->dc.stream, err);
}

/* Backward of the output gate from dgain (N, 3): into its parameters'
 * gradients (full G) and the context's. */
static int gate_bwd(e2g_cuda_trainer *T, char *err) {
    const gen_plan &P = T->plan;
    int o = P.net.output;
    const e2g_linear_params *cp = gate(T, &T->P), *gp = T->lora ? NULL : gate(T, &T->G);
    film_args f = plan_film(P, T->acts, o, cp->w, cp->b, NULL, NULL);
    f.dgamma = T->dgain, f.dns = 3;
    if (gp) f.dw = gp->w, f.db = gp->b;
    f.dctx = T->g[plan_film_context(P.net.node[o])]; /* fp32, as film_bwd's */
    return film_backward(f, T->dc.stream, err);
}

/* Conv node i's gradient passed on to its add through the skip gate:
 * d(add) and the gate's gains, then its parameters' gradients (full G)
 * and the context's. */
static int skip_gate_bwd(e2g_cuda_trainer *T, int i, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    const e2g_node &nd = P.net.node[i];
    const e2g_node_shape &sh = L.sh[i];
    skip_bwd_args a = {T->g[i], T->g[nd.add], L.b[nd.add].v, L.b[i].skip, T->dskip, T->N, sh.h, sh.w, nd.cout};
    TRY(skip_gate_backward(a, T->dc.stream, err));
    const e2g_conv_params *cp = e2g_node_conv(&nd, &T->P);
    e2g_conv_params *gp = T->lora ? NULL : e2g_node_conv(&nd, &T->G);
    film_args f = plan_skip_gate(P, L, i, cp->gate_w, cp->gate_b);
    f.dgamma = T->dskip, f.dns = nd.cout;
    if (gp) f.dw = gp->gate_w, f.db = gp->gate_b;
    f.dctx = T->g[nd.in[1]]; /* fp32, as film_bwd's */
    return film_backward(f, T->dc.stream, err);
}

/* A CONV node: the raw gradient from its output's (the epilogue backward;
 * for the conv OUTPUT reads, the output layer + L1), then the weight and
 * input gradients. */
static int conv_backward(e2g_cuda_trainer *T, int i, int slot, float lambda, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    const e2g_node &nd = P.net.node[i];
    const node_plan &np = P.np[i];
    const wslot &sl = P.slot[np.slot];
    const node_buf &b = L.b[i];
    const conv_geom &g = b.g;
    int src = nd.in[0], N = T->N;
    const tview &in = L.b[src].v;
    cudaStream_t s = T->dc.stream;
    if (np.to_output) { /* draw (pixels, 8), channels 3..7 zero */
        float *dbias = !T->lora ? e2g_node_conv(&nd, &T->G)->b : T->dscratch;
        int film = P.net.node[P.net.output].film;
        TRY(output_l1_backward(T->draw, dbias, film ? T->dgain : NULL, T->loss, T->y32, T->t32[slot], T->x32[slot],
                               lambda, N, (size_t)g.Ho * g.Wo, s, err));
        if (film) TRY(gate_bwd(T, err));
    } else {
        epilogue_bwd_args a = {};
        a.src = plan_raw(P, L, i);
        CUDA_TRY(cudaMemsetAsync(T->draw, 0, (size_t)N * g.Hg * g.Wg * g.Cs * sizeof(bf16), s));
        const e2g_conv_params *cp = e2g_node_conv(&nd, &T->P);
        e2g_conv_params *gp = T->lora ? NULL : e2g_node_conv(&nd, &T->G);
        a.bias = T->slots[np.slot].bias, a.relu = sl.relu, a.dout = T->g[i], a.draw = T->draw, a.dsums = T->dsums;
        if (sl.film) { /* the per-sample affine: its gradients from dsums, below */
            a.sums = b.stats, a.gamma = b.affine, a.beta = b.affine + (size_t)N * nd.cout, a.gamma_ns = nd.cout;
        } else if (sl.norm) {
            a.sums = b.stats, a.gamma = cp->norm_w, a.beta = cp->norm_b;
            if (gp) a.dgamma = gp->norm_w, a.dbeta = gp->norm_b;
        } else if (gp && sl.bias) {
            a.dbias = gp->b;
        }
        TRY(block_epilogue_backward(a, s, err));
        if (sl.film) TRY(film_bwd(T, i, cp, gp, err));
    }
    if (slot_trained(T, np.slot)) {
        TRY(conv_bwd_filter(&T->dc, T->dw16, in.p, T->draw, N, g.Hp, g.Wp, g.C, g.K, g.R, g.stride, g.pad, in.ns,
                            err));
        TRY(weight_grad(T, np.slot, err));
    }
    if (P.np[src].grad == GRAD_F32) {
        TRY(conv_bwd_data(&T->dc, T->dxp, T->draw, T->slots[np.slot].w, N, g.Hp, g.Wp, g.C, g.K, g.R, g.stride, g.pad,
                          in.ns, err));
        TRY(fold_grad(T->g[src], T->dxp, N, in.H, in.W, in.C, in.pad, s, err));
    }
    return 0;
}

/* Slot s's LINEAR nodes: bias and weight gradients (when trained) and the
 * input's gradient, written (bf16) or accumulated (fp32). */
static int e2g_linear_backward(e2g_cuda_trainer *T, int s, char *err) {
    const gen_plan &P = T->plan;
    const wslot &sl = P.slot[s];
    int i0 = sl.part_node[0], src = P.net.node[i0].in[0], M = (int)T->acts.b[i0].M;
    const bf16 *x = T->acts.b[src].rows;
    cudaStream_t st = T->dc.stream;
    bf16 *dy;
    if (sl.parts > 1)
        dy = T->gb[i0]; /* the parts' gradients side by side */
    else
        TRY(grad16(T, i0, &dy, err));
    if (sl.gelu) TRY(e2g_gelu_backward(dy, T->acts.b[i0].pre, (size_t)M * sl.cout, st, err));
    if (!T->lora)
        for (int part = 0; part < sl.parts; part++)
            TRY(col_sum(e2g_node_linear(&P.net.node[sl.part_node[part]], &T->G)->b, dy, sl.cout, part * sl.rows, M,
                        sl.rows, st, err));
    if (slot_trained(T, s)) {
        TRY(conv_bwd_filter(&T->dc, T->dw16, x, dy, 1, M, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
        TRY(weight_grad(T, s, err));
    }
    if (P.np[src].grad == GRAD_BF16) {
        TRY(conv_bwd_data(&T->dc, T->gb[src], dy, T->slots[s].w, 1, M, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
    } else if (P.np[src].grad == GRAD_F32) {
        TRY(conv_bwd_data(&T->dc, T->dx16, dy, T->slots[s].w, 1, M, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
        TRY(fold_grad(T->g[src], T->dx16, 1, M, 1, sl.cin, 0, st, err)); /* pad 0: a plain add */
    }
    return 0;
}

static int layernorm_bwd(e2g_cuda_trainer *T, int i, char *err) {
    const e2g_node &nd = T->plan.net.node[i];
    int src = nd.in[0];
    const node_buf &r = T->acts.b[src];
    const e2g_linear_params *lp = e2g_node_linear(&nd, &T->P);
    e2g_linear_params *gp = T->lora ? NULL : e2g_node_linear(&nd, &T->G);
    bf16 *dy;
    TRY(grad16(T, i, &dy, err));
    /* d(input) += LN'ᵀ·dy, in place (its other consumers' shares are there) */
    return e2g_layernorm_backward(T->g[src], T->g[src], r.f32, r.f32 ? NULL : r.rows, dy, lp->w, gp ? gp->w : NULL,
                              gp ? gp->b : NULL, T->acts.b[i].M, nd.cout, T->dc.stream, err);
}

static int attention_bwd(e2g_cuda_trainer *T, int i, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    const e2g_node &nd = P.net.node[i];
    int q = nd.in[0], k = nd.in[1], v = nd.in[2];
    int ldq = P.np[q].ld, ldkv = P.np[k].ld;
    bf16 *dout;
    TRY(grad16(T, i, &dout, err));
    return e2g_attention_backward(T->gb[q], ldq, T->gb[k], T->gb[v], ldkv, L.b[q].rows, ldq, L.b[k].rows, L.b[v].rows,
                              ldkv, L.b[i].rows, dout, T->att_stats, T->N, L.sh[i].h * L.sh[i].w,
                              L.sh[k].h * L.sh[k].w, nd.cout, nd.heads, T->dc.stream, err);
}

static int backward(e2g_cuda_trainer *T, int slot, float lambda, char *err) {
    const gen_plan &P = T->plan;
    const act_layout &L = T->acts;
    cudaStream_t s = T->dc.stream;
    CUDA_TRY(cudaMemsetAsync(T->grad_lo, 0, T->grad_hi - T->grad_lo, s));
    CUDA_TRY(cudaMemsetAsync(T->grad32, 0, T->n_train * sizeof(float), s));
    CUDA_TRY(cudaMemsetAsync(T->loss, 0, sizeof(float), s));
    for (int i = P.net.n - 1; i >= 0; i--) {
        const e2g_node &nd = P.net.node[i];
        const node_plan &np = P.np[i];
        /* every consumer of i came later and is done: pass i's gradient on to its add */
        if (nd.add_gate) TRY(skip_gate_bwd(T, i, err));
        else if (nd.add >= 0) TRY(add_f32(T->g[nd.add], T->g[i], L.b[i].M * nd.cout, s, err));
        switch (nd.op) {
        case E2G_OP_INPUT: break;
        case E2G_OP_OUTPUT: break; /* its conv's backward starts from the loss */
        case E2G_OP_CONTEXT: {
            bf16 *dy;
            TRY(grad16(T, i, &dy, err));
            TRY(scatter_add_rows(T->dconcept, dy, T->lora ? NULL : T->rows[slot], T->N, L.b[i].M / T->N * nd.cout,
                                 s, err));
            break;
        }
        case E2G_OP_CONV: TRY(conv_backward(T, i, slot, lambda, err)); break;
        case E2G_OP_LAYERNORM: TRY(layernorm_bwd(T, i, err)); break;
        case E2G_OP_LINEAR: /* the whole slot at its last node, when all its parts' gradients are in */
            if (np.part == P.slot[np.slot].parts - 1) TRY(e2g_linear_backward(T, np.slot, err));
            break;
        case E2G_OP_ATTENTION: TRY(attention_bwd(T, i, err)); break;
        }
    }
    return 0;
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
    cudaStream_t s = T->dc.stream; /* the steps' stream, which plain cudaMemcpy does not order */
    CUDA_TRY(cudaStreamSynchronize(s));
    CUDA_TRY(cudaMemcpyAsync(T->train32, params, b, cudaMemcpyHostToDevice, s));
    if (m) CUDA_TRY(cudaMemcpyAsync(T->m32, m, b, cudaMemcpyHostToDevice, s));
    else CUDA_TRY(cudaMemsetAsync(T->m32, 0, b, s));
    if (v) CUDA_TRY(cudaMemcpyAsync(T->v32, v, b, cudaMemcpyHostToDevice, s));
    else CUDA_TRY(cudaMemsetAsync(T->v32, 0, b, s));
    CUDA_TRY(cudaStreamSynchronize(s));
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

}  // namespace e2g
