/* cuda_engine.cu — E²GAN-G inference on the GPU (cuda_engine.h).
 *
 * The layer sequence is the generator's node table (engine/net.c), read
 * through cuda_plan.cuh: forward() walks it node by node.  Weights live on
 * the device as bf16 in cuDNN's KRSC filter layout, one weight slot per
 * conv node and per run of linear layers sharing their input (q/k/v,
 * cross k/v: one GEMM each); the ×2 upsample of a conv is folded into
 * four 2×2 phase kernels stacked as output channels (engine/conv.c's
 * trick); fp32 masters of the crucial layers are kept for merging.  Each
 * (batch, height, width) bucket has one device allocation holding every
 * node's output — each written once by the fused epilogue of its producer,
 * already reflect-padded when its consumer pads by reflection — and a
 * small cache of CUDA graphs, one per adapter signature seen twice.  cuDNN
 * algorithms are found once per convolution shape
 * (cudnnFindConvolutionForwardAlgorithmEx) on the first, eager run.  A
 * FiLM norm's affine is per sample: film_affine computes it on the device
 * from the batch's context rows just before its conv's epilogue, which
 * reads it with a per-sample stride; so are the FiLM output gate's gains
 * of the image, just before the output layer, and a skip gate's gains of
 * its add, just before its conv's epilogue.
 *
 * Adapters: an LRU cache bounded in bytes holds each adapter's A/B (fp32)
 * and its conv A packed for cuDNN, and merged weight sets (private copies
 * of the touched weight slots).  Unmerged LoRA runs per term slot: the A
 * convolution once per run of consecutive samples sharing an adapter
 * (cuDNN, batch = the run), then one grouped kernel adds s·h·Bᵀ for every
 * sample of the batch (Punica's SGMV idea); linear layers do both steps in
 * one grouped kernel. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <vector>

#include "cuda_engine.h"
#include "cuda_conv.cuh"
#include "cuda_kernels.cuh"
#include "cuda_plan.cuh"

namespace e2g {

#define MAX_BUCKETS 4
#define MAX_GRAPHS 8 /* per bucket */
#define MAX_TERMS E2G_MAX_TERMS
/* Per-sample strides of the views convolutions read are multiples of this
 * (bytes), so a LoRA segment starting at any sample is aligned for cuDNN. */
#define SAMPLE_ALIGN 256

/* A weight slot's device memory (geometry in the plan's wslot). */
struct slot {
    bf16 *w;                    /* packed: (rows, k, k, cin_pad) or phase (4·cout, 2, 2, cin) */
    float *bias, *gamma, *beta; /* NULL when absent; bias concatenated over the parts */
    float *film_w, *film_b;     /* a FiLM norm's (2·cout, C4), (2·cout); NULL when absent */
    float *gate_w, *gate_b;     /* a skip gate's (cout, C4), (cout); NULL when absent */
};

/* Where crucial layer l lives: its node, slot, the first output row inside
 * the slot, and its fp32 OIHW master for merging. */
struct site {
    int node, slot, row0, cout, cin, k, is_conv, phase, cin_pad;
    float *master;
};

struct dev_adapter {
    unsigned long long id, serial, last_used;
    float *mem; /* the host e2g_lora's memory, fp32 */
    bf16 *packed; /* conv A for cuDNN, per layer at packed_at[l] */
    const float *A[E2G_N_CRUCIAL], *B[E2G_N_CRUCIAL];
    bf16 *convA[E2G_N_CRUCIAL];
    int rank[E2G_N_CRUCIAL], R[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL];
    size_t bytes;
    dev_adapter *next;
};

struct dev_merged {
    int n_terms;
    unsigned long long ids[MAX_TERMS];
    float coefs[MAX_TERMS];
    unsigned long long serial, last_used;
    bf16 *mem;
    bf16 *w[PLAN_MAX]; /* per slot; NULL: the base slot */
    size_t bytes;
    dev_merged *next;
};

struct graph_rec {
    std::vector<unsigned long long> sig;
    cudaGraphExec_t exec; /* NULL until the signature is seen a second time */
    unsigned long long last_used;
};

struct bucket {
    int N, H, W;
    unsigned long long last_used;
    void *mem;
    float *x32, *y32, *ctx32;
    act_layout A; /* every node's output, and the scratch */
    lora_entry *table_dev, *table_host;
    float *x_host, *y_host, *ctx_host; /* pinned staging */
    bf16 *hbuf;
    size_t hbuf_elems;
    std::vector<graph_rec> graphs;
    bucket *next;
};

/* One run's adapter picture: merged weights, or per crucial layer and
 * term slot the runs of samples sharing an adapter. */
struct segment {
    int n0, cnt;
    const dev_adapter *a;
};

struct run_plan {
    const dev_merged *merged;
    std::vector<segment> seg[E2G_N_CRUCIAL][MAX_TERMS];
    size_t h_need;
    std::vector<unsigned long long> sig;
};

}  // namespace e2g

/* The public opaque type (declared in the C header) lives outside the
 * namespace; its members are the namespace's types. */
using namespace e2g;

struct e2g_cuda_engine {
    e2g_gen_config cfg;
    gen_plan plan; /* the node table and what the GPU makes of it */
    int c4, heads, T;
    const e2g_gen_params *host;
    pthread_mutex_t mu;
    dnn_ctx dc; /* stream, cuDNN handle, workspace, conv plans */
    slot slots[PLAN_MAX];
    site sites[E2G_N_CRUCIAL];
    void *weights;                    /* one allocation: packed slots, biases, norms, masters */
    float *ln_w[PLAN_MAX], *ln_b[PLAN_MAX]; /* LAYERNORM nodes' weight and bias */
    e2g_linear_params gate;          /* the OUTPUT's FiLM gate (3, C4), (3); NULL without FiLM */
    bucket *buckets;
    dev_adapter *adapters;
    dev_merged *merges;
    size_t cache_budget, cache_bytes;
    unsigned long long tick, serial;
    int graphs_off;                  /* E2GAN_CUDA_GRAPHS=0, or a capture failed */
    char graphs_off_why[E2G_ERR_LEN];
    long n_eager, n_captured, n_replayed;
    int dead; /* a sticky CUDA error: the context is unusable for good */
    char dead_why[E2G_ERR_LEN];
};

namespace e2g {

/* ---- device presence ------------------------------------------------------------------ */

extern "C" int e2g_cuda_device_present(char *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        e2g_fail(err, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        cudaGetLastError();
        return 0;
    }
    return 1;
}

/* ---- engine creation -------------------------------------------------------------------- */

/* Host → device on the engine's stream: the kernels that read dst run on
 * that (non-blocking) stream, which a plain cudaMemcpy does not order. */
static int upload(e2g_cuda_engine *E, void *dst, const void *src, size_t bytes, char *err) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, E->dc.stream));
    return 0;
}

/* The crucial layers' sites, from the plan. */
static void describe(e2g_cuda_engine *E) {
    const gen_plan &P = E->plan;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int i = P.site_node[l];
        const e2g_node &nd = P.net.node[i];
        const wslot &sl = P.slot[P.np[i].slot];
        site *st = &E->sites[l];
        st->node = i, st->slot = P.np[i].slot, st->row0 = P.np[i].part * sl.rows;
        st->cout = nd.cout, st->cin = nd.cin, st->is_conv = nd.op == E2G_OP_CONV;
        st->k = st->is_conv ? nd.conv.k : 1;
        st->phase = sl.phase, st->cin_pad = sl.cin_pad;
    }
}

/* Lays out (base NULL: counts) the weights allocation. */
static void layout_weights(e2g_cuda_engine *E, dev_arena *ar) {
    const gen_plan &P = E->plan;
    for (int s = 0; s < P.n_slots; s++) {
        const wslot &sl = P.slot[s];
        slot *d = &E->slots[s];
        d->w = ar->take<bf16>(sl.w_elems);
        d->bias = sl.bias ? ar->take<float>(sl.cout_pad) : NULL;
        d->gamma = sl.norm ? ar->take<float>(sl.cout) : NULL;
        d->beta = sl.norm ? ar->take<float>(sl.cout) : NULL;
        d->film_w = sl.film ? ar->take<float>((size_t)2 * sl.cout * E->c4) : NULL;
        d->film_b = sl.film ? ar->take<float>((size_t)2 * sl.cout) : NULL;
        d->gate_w = sl.skip_gate ? ar->take<float>((size_t)sl.cout * E->c4) : NULL;
        d->gate_b = sl.skip_gate ? ar->take<float>(sl.cout) : NULL;
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        site *st = &E->sites[l];
        st->master = ar->take<float>((size_t)st->cout * st->cin * st->k * st->k);
    }
    for (int i = 0; i < P.net.n; i++)
        if (P.net.node[i].op == E2G_OP_LAYERNORM) {
            E->ln_w[i] = ar->take<float>(P.net.node[i].cout);
            E->ln_b[i] = ar->take<float>(P.net.node[i].cout);
        }
    if (P.net.node[P.net.output].film) E->gate = {ar->take<float>((size_t)3 * E->c4), ar->take<float>(3)};
}

/* Packs slot s from fp32 OIHW parts (NULL: leave that row block alone),
 * row block by row block, merging the given terms into crucial row blocks
 * (dst: the slot's buffer, which may be a merged copy). */
static int pack_slot(e2g_cuda_engine *E, bf16 *dst, int s, const float *const *oihw_parts,
                     const merge_term (*terms)[MAX_TERMS], const int *n_terms, char *err) {
    const wslot &sl = E->plan.slot[s];
    for (int part = 0; part < sl.parts; part++) {
        if (!oihw_parts[part]) continue; /* a row block the caller keeps as it is */
        pack_args a = {};
        a.dst = dst + slot_part_offset(sl, part);
        a.base = oihw_parts[part];
        a.cout = sl.rows, a.cin = sl.cin, a.k = sl.k;
        a.cout_pad = slot_part_rows_pad(sl), a.cin_pad = sl.cin_pad, a.phase = sl.phase;
        a.n_terms = terms ? n_terms[part] : 0;
        for (int t = 0; t < a.n_terms; t++) a.terms[t] = terms[part][t];
        TRY(pack_weights(a, E->dc.stream, err));
    }
    return 0;
}

/* A CONV's or LINEAR's bias in a parameter struct, or NULL. */
static const float *node_bias(const e2g_node &nd, const void *params) {
    return nd.op == E2G_OP_CONV ? e2g_node_conv(&nd, params)->b : e2g_node_linear(&nd, params)->b;
}

static int upload_weights(e2g_cuda_engine *E, char *err) {
    const gen_plan &P = E->plan;
    const e2g_gen_params *p = E->host;
    size_t staged = 0;
    for (int s = 0; s < P.n_slots; s++)
        staged = std::max(staged, (size_t)P.slot[s].cout * P.slot[s].cin * P.slot[s].k * P.slot[s].k);
    float *tmp = NULL;
    CUDA_TRY(cudaMalloc(&tmp, staged * sizeof(float)));
    int rc = 0;
    for (int s = 0; s < P.n_slots && !rc; s++) {
        const wslot &sl = P.slot[s];
        slot *d = &E->slots[s];
        const float *dev_parts[PLAN_MAX_PARTS];
        for (int part = 0; part < sl.parts && !rc; part++) {
            const e2g_node &nd = P.net.node[sl.part_node[part]];
            size_t n = (size_t)sl.rows * sl.cin * sl.k * sl.k;
            float *dst = nd.crucial >= 0 ? E->sites[nd.crucial].master : tmp + part * n;
            rc = upload(E, dst, *e2g_node_weight_slot(&nd, p), n * sizeof(float), err);
            dev_parts[part] = dst;
            if (!rc && d->bias) rc = upload(E, d->bias + part * sl.rows, node_bias(nd, p), sl.rows * sizeof(float), err);
        }
        if (!rc && d->bias && sl.cout_pad > sl.cout)
            rc = cudaMemsetAsync(d->bias + sl.cout, 0, (sl.cout_pad - sl.cout) * sizeof(float), E->dc.stream)
                     ? e2g_fail(err, "CUDA: clearing a bias failed") : 0;
        if (!rc && d->gamma) {
            const e2g_conv_params *cp = e2g_node_conv(&P.net.node[sl.part_node[0]], p);
            rc = upload(E, d->gamma, cp->norm_w, sl.cout * sizeof(float), err);
            if (!rc) rc = upload(E, d->beta, cp->norm_b, sl.cout * sizeof(float), err);
            if (!rc && d->film_w) rc = upload(E, d->film_w, cp->film_w, (size_t)2 * sl.cout * E->c4 * sizeof(float), err);
            if (!rc && d->film_b) rc = upload(E, d->film_b, cp->film_b, (size_t)2 * sl.cout * sizeof(float), err);
        }
        if (!rc && d->gate_w) {
            const e2g_conv_params *cp = e2g_node_conv(&P.net.node[sl.part_node[0]], p);
            rc = upload(E, d->gate_w, cp->gate_w, (size_t)sl.cout * E->c4 * sizeof(float), err);
            if (!rc) rc = upload(E, d->gate_b, cp->gate_b, sl.cout * sizeof(float), err);
        }
        if (!rc) rc = pack_slot(E, d->w, s, dev_parts, NULL, NULL, err);
        if (!rc) rc = cudaStreamSynchronize(E->dc.stream) ? e2g_fail(err, "CUDA: packing weights failed") : 0;
    }
    for (int i = 0; i < P.net.n && !rc; i++) {
        const e2g_node &nd = P.net.node[i];
        if (nd.op != E2G_OP_LAYERNORM) continue;
        const e2g_linear_params *lp = e2g_node_linear(&nd, p);
        rc = upload(E, E->ln_w[i], lp->w, nd.cout * sizeof(float), err);
        if (!rc) rc = upload(E, E->ln_b[i], lp->b, nd.cout * sizeof(float), err);
    }
    if (!rc && E->gate.w) {
        const e2g_linear_params *gate = e2g_node_linear(&P.net.node[P.net.output], p);
        rc = upload(E, E->gate.w, gate->w, (size_t)3 * E->c4 * sizeof(float), err);
        if (!rc) rc = upload(E, E->gate.b, gate->b, 3 * sizeof(float), err);
    }
    if (!rc) rc = cudaStreamSynchronize(E->dc.stream) ? e2g_fail(err, "CUDA: uploading weights failed") : 0;
    cudaFree(tmp);
    return rc;
}

extern "C" int e2g_cuda_check_config(const e2g_gen_config *cfg, char *err) {
    int c4 = e2g_gen_c4(cfg);
    if (cfg->norm_ends) return e2g_fail(err, "the paper-like form (norm_ends) runs on the CPU only");
    if (cfg->ngf % 8) return e2g_fail(err, "ngf %d is not a multiple of 8 (bf16 vector width)", cfg->ngf);
    if (4 * c4 > 2048 || c4 > 1024) return e2g_fail(err, "ngf %d is too wide for the CUDA kernels", cfg->ngf);
    if (!attention_supported(c4, e2g_gen_heads(cfg)))
        return e2g_fail(err, "attention head size %d unsupported on the GPU", c4 / e2g_gen_heads(cfg));
    gen_plan *plan = new (std::nothrow) gen_plan;
    if (!plan) return e2g_fail(err, "out of host memory");
    int rc = gen_plan_build(plan, cfg, err);
    delete plan;
    return rc;
}

/* The mutex and the cuDNN context. */
static int core_init(e2g_cuda_engine *E, char *err) {
    pthread_mutex_init(&E->mu, NULL);
    return dnn_init(&E->dc, err);
}

extern "C" int e2g_cuda_engine_new(e2g_cuda_engine **out, const e2g_gen_config *cfg,
                                   const e2g_gen_params *p, size_t adapter_cache_bytes, char *err) {
    *out = NULL;
    if (!e2g_cuda_device_present(err)) return -1;
    TRY(e2g_cuda_check_config(cfg, err));
    e2g_cuda_engine *E = new (std::nothrow) e2g_cuda_engine();
    if (!E) return e2g_fail(err, "out of host memory");
    E->cfg = *cfg, E->host = p, E->c4 = e2g_gen_c4(cfg), E->heads = e2g_gen_heads(cfg);
    E->T = cfg->ctx_tokens, E->cache_budget = adapter_cache_bytes;
    const char *graphs = getenv("E2GAN_CUDA_GRAPHS");
    if (graphs && strcmp(graphs, "0") == 0) {
        E->graphs_off = 1;
        snprintf(E->graphs_off_why, sizeof E->graphs_off_why, "E2GAN_CUDA_GRAPHS=0");
    }
    int rc = -1;
    dev_arena count = {NULL, 0}, ar;
    if (core_init(E, err) || gen_plan_build(&E->plan, cfg, err)) goto out;
    describe(E);
    layout_weights(E, &count);
    if (cudaMalloc(&E->weights, count.used) != cudaSuccess) {
        e2g_fail(err, "CUDA: out of memory for %zu bytes of weights", count.used);
        goto out;
    }
    ar = {(char *)E->weights, 0};
    layout_weights(E, &ar);
    rc = upload_weights(E, err);
out:
    if (rc) {
        cudaGetLastError();
        e2g_cuda_engine_free(E);
        return -1;
    }
    *out = E;
    return 0;
}

/* ---- adapters on the device ------------------------------------------------------------- */

/* Cache entries come from the stream-ordered pool, which keeps freed
 * memory (release threshold: never), so a switch-in allocates in
 * microseconds instead of cudaMalloc's hundreds. */
static void adapter_free(e2g_cuda_engine *E, dev_adapter *a) {
    if (a->mem) cudaFreeAsync(a->mem, E->dc.stream);
    if (a->packed) cudaFreeAsync(a->packed, E->dc.stream);
    delete a;
}

static void merged_free(e2g_cuda_engine *E, dev_merged *m) {
    if (m->mem) cudaFreeAsync(m->mem, E->dc.stream);
    delete m;
}

/* Evicts least-recently-used entries not used by the current run until the
 * cache fits its budget. */
static void evict(e2g_cuda_engine *E) {
    while (E->cache_bytes > E->cache_budget) {
        dev_adapter **oa = NULL;
        dev_merged **om = NULL;
        unsigned long long oldest = E->tick;
        for (dev_adapter **a = &E->adapters; *a; a = &(*a)->next)
            if ((*a)->last_used < oldest) oldest = (*a)->last_used, oa = a, om = NULL;
        for (dev_merged **m = &E->merges; *m; m = &(*m)->next)
            if ((*m)->last_used < oldest) oldest = (*m)->last_used, om = m, oa = NULL;
        if (oa) {
            dev_adapter *a = *oa;
            *oa = a->next, E->cache_bytes -= a->bytes;
            adapter_free(E, a);
        } else if (om) {
            dev_merged *m = *om;
            *om = m->next, E->cache_bytes -= m->bytes;
            merged_free(E, m);
        } else {
            return; /* everything left is in use by this run */
        }
    }
}

/* The device copy of adapter l, uploaded (and its conv A packed) when it
 * is not cached. */
static int adapter_get(e2g_cuda_engine *E, const e2g_lora *l, dev_adapter **out, char *err) {
    for (dev_adapter *a = E->adapters; a; a = a->next)
        if (a->id == l->id) {
            a->last_used = E->tick;
            *out = a;
            return 0;
        }
    dev_adapter *a = new (std::nothrow) dev_adapter();
    if (!a) return e2g_fail(err, "out of host memory");
    size_t packed = 0;
    for (int i = 0; i < E2G_N_CRUCIAL; i++) {
        const site *st = &E->sites[i];
        a->rank[i] = l->rank[i], a->scale[i] = l->scale[i];
        if (!l->rank[i]) continue;
        if (!st->is_conv && l->rank[i] > 64) {
            delete a;
            return e2g_fail(err, "adapter rank %d on %s: the GPU path takes ranks up to 64", l->rank[i], e2g_crucial_name(i));
        }
        a->R[i] = (l->rank[i] + 7) / 8 * 8;
        if (st->is_conv) packed += st->phase ? (size_t)4 * a->R[i] * 4 * st->cin : (size_t)a->R[i] * st->k * st->k * st->cin_pad;
    }
    int rc = 0;
    if (cudaMallocAsync((void **)&a->mem, l->numel * sizeof(float), E->dc.stream) != cudaSuccess ||
        (packed && cudaMallocAsync((void **)&a->packed, packed * sizeof(bf16), E->dc.stream) != cudaSuccess)) {
        cudaGetLastError();
        rc = e2g_fail(err, "CUDA: out of memory for an adapter of %zu bytes", l->numel * sizeof(float));
    }
    if (!rc && cudaMemcpyAsync(a->mem, l->memory, l->numel * sizeof(float), cudaMemcpyHostToDevice, E->dc.stream) != cudaSuccess)
        rc = e2g_fail(err, "CUDA: adapter upload failed");
    bf16 *pk = a->packed;
    for (int i = 0; i < E2G_N_CRUCIAL && !rc; i++) {
        if (!l->rank[i]) continue;
        const site *st = &E->sites[i];
        a->A[i] = a->mem + (l->A[i] - l->memory), a->B[i] = a->mem + (l->B[i] - l->memory);
        if (!st->is_conv) continue;
        pack_args pa = {};
        pa.dst = a->convA[i] = pk, pa.base = a->A[i];
        pa.cout = l->rank[i], pa.cin = st->cin, pa.k = st->k, pa.cout_pad = a->R[i];
        pa.cin_pad = st->cin_pad, pa.phase = st->phase;
        rc = pack_weights(pa, E->dc.stream, err);
        pk += st->phase ? (size_t)4 * a->R[i] * 4 * st->cin : (size_t)a->R[i] * st->k * st->k * st->cin_pad;
    }
    if (rc) {
        adapter_free(E, a);
        return -1;
    }
    a->id = l->id, a->serial = ++E->serial, a->last_used = E->tick;
    a->bytes = l->numel * sizeof(float) + packed * sizeof(bf16);
    a->next = E->adapters, E->adapters = a;
    E->cache_bytes += a->bytes;
    *out = a;
    return 0;
}

/* The merged weight set for terms (their adapters already on the device). */
static int merged_get(e2g_cuda_engine *E, const e2g_lora_term *terms, int n_terms,
                      dev_adapter *const *devs, dev_merged **out, char *err) {
    for (dev_merged *m = E->merges; m; m = m->next) {
        int same = m->n_terms == n_terms;
        for (int t = 0; same && t < n_terms; t++)
            same = m->ids[t] == terms[t].lora->id && m->coefs[t] == terms[t].coef;
        if (same) {
            m->last_used = E->tick;
            *out = m;
            return 0;
        }
    }
    dev_merged *m = new (std::nothrow) dev_merged();
    if (!m) return e2g_fail(err, "out of host memory");
    const gen_plan &P = E->plan;
    int touched[PLAN_MAX] = {0};
    size_t elems = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        for (int t = 0; t < n_terms; t++)
            if (terms[t].lora->rank[l]) touched[E->sites[l].slot] = 1;
    for (int s = 0; s < P.n_slots; s++)
        if (touched[s]) elems += align256(P.slot[s].w_elems * sizeof(bf16)) / sizeof(bf16);
    if (elems && cudaMallocAsync((void **)&m->mem, elems * sizeof(bf16), E->dc.stream) != cudaSuccess) {
        cudaGetLastError();
        delete m;
        return e2g_fail(err, "CUDA: out of memory for merged weights");
    }
    bf16 *dst = m->mem;
    int rc = 0;
    for (int s = 0; s < P.n_slots && !rc; s++) {
        if (!touched[s]) continue;
        m->w[s] = dst;
        dst += align256(P.slot[s].w_elems * sizeof(bf16)) / sizeof(bf16);
        int n_part[PLAN_MAX_PARTS] = {0};
        const float *masters[PLAN_MAX_PARTS];
        merge_term mt[PLAN_MAX_PARTS][MAX_TERMS];
        for (int part = 0; part < P.slot[s].parts; part++) {
            int l = slot_crucial(P, s, part);
            masters[part] = NULL;
            if (l < 0) { /* no LoRA here: the base's packed rows, as they are */
                const wslot &sl = P.slot[s];
                size_t at = slot_part_offset(sl, part), n = (size_t)slot_part_rows_pad(sl) * sl.k * sl.k * sl.cin_pad;
                if (cudaMemcpyAsync(m->w[s] + at, E->slots[s].w + at, n * sizeof(bf16), cudaMemcpyDeviceToDevice,
                                    E->dc.stream) != cudaSuccess)
                    rc = e2g_fail(err, "CUDA: copying base weights failed");
                continue;
            }
            masters[part] = E->sites[l].master;
            for (int t = 0; t < n_terms; t++) {
                const dev_adapter *a = devs[t];
                if (!a->rank[l]) continue;
                mt[part][n_part[part]++] = {a->A[l], a->B[l], a->rank[l], terms[t].coef * a->scale[l]};
            }
        }
        if (!rc) rc = pack_slot(E, m->w[s], s, masters, mt, n_part, err);
    }
    if (rc) {
        merged_free(E, m);
        return -1;
    }
    m->n_terms = n_terms;
    for (int t = 0; t < n_terms; t++) m->ids[t] = terms[t].lora->id, m->coefs[t] = terms[t].coef;
    m->serial = ++E->serial, m->last_used = E->tick, m->bytes = elems * sizeof(bf16);
    m->next = E->merges, E->merges = m;
    E->cache_bytes += m->bytes;
    *out = m;
    return 0;
}

/* Resolves a batch's adapters into rp (uploading and merging as needed). */
static int plan_run(e2g_cuda_engine *E, run_plan *rp, const e2g_edit *edits, int N, int merged,
                    char *err) {
    E->tick++;
    rp->merged = NULL, rp->h_need = 0;
    rp->sig.clear();
    merged = merged && edits[0].n_terms > 0;
    if (merged) {
        dev_adapter *devs[MAX_TERMS];
        for (int t = 0; t < edits[0].n_terms; t++) TRY(adapter_get(E, edits[0].terms[t].lora, &devs[t], err));
        dev_merged *m = NULL;
        TRY(merged_get(E, edits[0].terms, edits[0].n_terms, devs, &m, err));
        rp->merged = m;
        rp->sig.push_back(m->serial);
    } else {
        rp->sig.push_back(0);
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        for (int t = 0; t < MAX_TERMS; t++) rp->seg[l][t].clear();
    if (merged) return 0;
    /* Term slot t: runs of consecutive samples whose t-th term is the same
     * adapter (coefficients may differ: they are per sample in the table). */
    for (int t = 0; t < MAX_TERMS; t++)
        for (int n0 = 0; n0 < N;) {
            if (t >= edits[n0].n_terms) {
                n0++;
                continue;
            }
            const e2g_lora *lora = edits[n0].terms[t].lora;
            int n1 = n0 + 1;
            while (n1 < N && t < edits[n1].n_terms && edits[n1].terms[t].lora == lora) n1++;
            dev_adapter *a;
            TRY(adapter_get(E, lora, &a, err));
            for (int l = 0; l < E2G_N_CRUCIAL; l++)
                if (a->rank[l]) rp->seg[l][t].push_back({n0, n1 - n0, a});
            for (int n = n0; n < n1; n++) rp->sig.push_back((unsigned long long)t << 56 | (unsigned long long)n << 32 | a->serial);
            n0 = n1;
        }
    return 0;
}

/* ---- buckets ------------------------------------------------------------------------------ */

static void layout_bucket(e2g_cuda_engine *E, bucket *B, dev_arena *ar) {
    int N = B->N, H = B->H, W = B->W;
    B->x32 = ar->take<float>((size_t)N * H * W * 3), B->y32 = ar->take<float>((size_t)N * H * W * 3);
    B->ctx32 = ar->take<float>((size_t)N * E->T * E->c4);
    plan_layout(&E->plan, N, H, W, 0, SAMPLE_ALIGN, ar, &B->A);
    B->table_dev = ar->take<lora_entry>((size_t)E2G_N_CRUCIAL * MAX_TERMS * N);
}

static void graphs_clear(bucket *B) {
    for (graph_rec &g : B->graphs)
        if (g.exec) cudaGraphExecDestroy(g.exec);
    B->graphs.clear();
}

static void bucket_free(bucket *B) {
    graphs_clear(B);
    cudaFree(B->mem);
    cudaFree(B->hbuf);
    cudaFreeHost(B->table_host);
    cudaFreeHost(B->x_host);
    cudaFreeHost(B->y_host);
    cudaFreeHost(B->ctx_host);
    delete B;
}

static int bucket_get(e2g_cuda_engine *E, bucket **out, int N, int H, int W, char *err) {
    int count = 0;
    for (bucket *b = E->buckets; b; b = b->next, count++)
        if (b->N == N && b->H == H && b->W == W) {
            b->last_used = E->tick;
            *out = b;
            return 0;
        }
    if (count >= MAX_BUCKETS) { /* drop the least recently used */
        bucket **old = &E->buckets;
        for (bucket **b = &E->buckets; *b; b = &(*b)->next)
            if ((*b)->last_used < (*old)->last_used) old = b;
        bucket *victim = *old;
        *old = victim->next;
        bucket_free(victim);
    }
    bucket *B = new (std::nothrow) bucket();
    if (!B) return e2g_fail(err, "out of host memory");
    B->N = N, B->H = H, B->W = W, B->last_used = E->tick;
    dev_arena count_ar = {NULL, 0};
    layout_bucket(E, B, &count_ar);
    size_t img = (size_t)N * H * W * 3 * sizeof(float), ctx = (size_t)N * E->T * E->c4 * sizeof(float);
    size_t table = (size_t)E2G_N_CRUCIAL * MAX_TERMS * N * sizeof(lora_entry);
    if (cudaMalloc(&B->mem, count_ar.used) != cudaSuccess || cudaMallocHost(&B->x_host, img) != cudaSuccess ||
        cudaMallocHost(&B->y_host, img) != cudaSuccess || cudaMallocHost(&B->ctx_host, ctx) != cudaSuccess ||
        cudaMallocHost(&B->table_host, table) != cudaSuccess) {
        cudaGetLastError();
        bucket_free(B);
        return e2g_fail(err, "CUDA: out of memory for a %dx%dx%d batch plan (%zu MB)", N, H, W, count_ar.used >> 20);
    }
    dev_arena ar = {(char *)B->mem, 0};
    layout_bucket(E, B, &ar);
    B->next = E->buckets, E->buckets = B;
    *out = B;
    return 0;
}

/* Fills the LoRA tables and h offsets of a run and grows the bucket's h
 * scratch (dropping its graphs, which point at the old one) if needed.
 * Each segment's h starts on a 256-byte boundary (cuDNN writes it). */
static int fill_tables(e2g_cuda_engine *E, bucket *B, run_plan *rp, const e2g_edit *edits, char *err) {
    int N = B->N;
    memset(B->table_host, 0, (size_t)E2G_N_CRUCIAL * MAX_TERMS * N * sizeof(lora_entry));
    rp->h_need = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        const site *st = &E->sites[l];
        const conv_geom &g = B->A.b[st->node].g;
        size_t P = st->is_conv ? (size_t)g.Hg * g.Wg : 0; /* h only for convs: raw output pixels */
        for (int t = 0; t < MAX_TERMS; t++) {
            size_t off = 0;
            for (const segment &sg : rp->seg[l][t]) {
                off = (off + 127) / 128 * 128;
                for (int n = sg.n0; n < sg.n0 + sg.cnt; n++) {
                    lora_entry *e = &B->table_host[((size_t)l * MAX_TERMS + t) * N + n];
                    e->A = sg.a->A[l], e->B = sg.a->B[l], e->r = sg.a->rank[l], e->R = sg.a->R[l];
                    e->s = edits[n].terms[t].coef * sg.a->scale[l];
                    e->h_off = off;
                    off += P * (st->phase ? 4 : 1) * e->R;
                }
            }
            rp->h_need = std::max(rp->h_need, off);
        }
    }
    if (rp->h_need > B->hbuf_elems) {
        graphs_clear(B);
        cudaFree(B->hbuf);
        B->hbuf = NULL, B->hbuf_elems = 0;
        CUDA_TRY(cudaMalloc(&B->hbuf, rp->h_need * sizeof(bf16)));
        B->hbuf_elems = rp->h_need;
    }
    return 0;
}

/* ---- the forward: a walk of the node table ------------------------------------------------ */

static const bf16 *slot_w(const e2g_cuda_engine *E, const run_plan *rp, int s) {
    return rp->merged && rp->merged->w[s] ? rp->merged->w[s] : E->slots[s].w;
}

static const lora_entry *table_of(const bucket *B, int l, int t) {
    return B->table_dev + ((size_t)l * MAX_TERMS + t) * B->N;
}

/* Unmerged LoRA of conv site l: A per segment into h (each segment's
 * input starts at its first sample's stride in the view), then the
 * grouped expand into the raw conv output. */
static int lora_conv(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int l, const tview &in,
                     const conv_geom &g, bf16 *raw, char *err) {
    const site *st = &E->sites[l];
    size_t per_in = view_sample(in);
    for (int t = 0; t < MAX_TERMS; t++) {
        if (rp->seg[l][t].empty()) continue;
        for (const segment &sg : rp->seg[l][t]) {
            const lora_entry &e = B->table_host[((size_t)l * MAX_TERMS + t) * B->N + sg.n0];
            bf16 *h = B->hbuf + e.h_off;
            const bf16 *x = in.p + sg.n0 * per_in;
            if (st->phase)
                TRY(conv_fwd(&E->dc, h, x, sg.a->convA[l], sg.cnt, g.Hp, g.Wp, g.C, 4 * e.R, 2, 1, 1, in.ns, err));
            else
                TRY(conv_fwd(&E->dc, h, x, sg.a->convA[l], sg.cnt, g.Hp, g.Wp, g.C, e.R, g.R, g.stride, g.pad,
                             in.ns, err));
        }
        TRY(lora_conv_expand(raw, g.Cs, st->cout, st->phase ? 4 : 1, B->hbuf, table_of(B, l, t), B->N,
                             (size_t)g.Hg * g.Wg, E->dc.stream, err));
    }
    return 0;
}

/* A CONV node: cuDNN conv of its input's view (stored padded as the layer
 * pads), its LoRA, then statistics and the fused epilogue into its own
 * view (+ its add) — or, for the conv OUTPUT reads, the output layer. */
static int conv_node(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int i, char *err) {
    const gen_plan &P = E->plan;
    const act_layout &A = B->A;
    const e2g_node &nd = P.net.node[i];
    const node_plan &np = P.np[i];
    const wslot &sl = P.slot[np.slot];
    const slot &d = E->slots[np.slot];
    const node_buf &b = A.b[i];
    const conv_geom &g = b.g;
    const tview &in = A.b[nd.in[0]].v;
    cudaStream_t s = E->dc.stream;
    TRY(conv_fwd(&E->dc, b.raw, in.p, slot_w(E, rp, np.slot), B->N, g.Hp, g.Wp, g.C, g.K, g.R, g.stride, g.pad,
                 in.ns, err));
    if (!rp->merged && nd.crucial >= 0) TRY(lora_conv(E, B, rp, nd.crucial, in, g, b.raw, err));
    if (np.to_output) return plan_output_layer(P, A, B->y32, d.bias, B->x32, &E->gate, s, err);
    epilogue_args a = {};
    a.src = plan_raw(P, A, i), a.bias = d.bias, a.relu = sl.relu, a.dst = b.v;
    if (sl.norm) {
        TRY(block_stats(b.stats, a.src, s, err));
        a.sums = b.stats, a.gamma = d.gamma, a.beta = d.beta;
        if (sl.film) { /* the affine per sample, from each sample's context */
            film_args f = plan_film(P, A, i, d.film_w, d.film_b, d.gamma, d.beta);
            TRY(film_affine(f, s, err));
            a.gamma = f.gamma, a.beta = f.beta, a.gamma_ns = f.C;
        }
    }
    if (nd.add >= 0) a.add = A.b[nd.add].v;
    if (sl.skip_gate) { /* the add's gains per sample, from each sample's context */
        film_args f = plan_skip_gate(P, A, i, d.gate_w, d.gate_b);
        TRY(film_affine(f, s, err));
        a.add_gain = f.gamma;
    }
    return block_epilogue(a, s, err);
}

/* Slot s's GEMM over the rows of its input (a 1×1 convolution) into out
 * (row stride: the slot's cout), plus the unmerged LoRA of its crucial
 * row blocks. */
static int e2g_gemm(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int s, bf16 *out, const bf16 *in,
                int rows_per_sample, char *err) {
    const gen_plan &P = E->plan;
    const wslot &sl = P.slot[s];
    int N = B->N;
    TRY(conv_fwd(&E->dc, out, in, slot_w(E, rp, s), 1, N * rows_per_sample, 1, sl.cin, sl.cout, 1, 1, 0, 0, err));
    if (rp->merged) return 0;
    for (int part = 0; part < sl.parts; part++) {
        int l = slot_crucial(P, s, part);
        if (l < 0) continue;
        const site *st = &E->sites[l];
        for (int t = 0; t < MAX_TERMS; t++)
            if (!rp->seg[l][t].empty())
                TRY(lora_linear(out, sl.cout, st->row0, in, sl.cin, st->cin, st->cout, table_of(B, l, t), N,
                                rows_per_sample, E->dc.stream, err));
    }
    return 0;
}

/* The LINEAR nodes of slot s: the GEMM, then bias (+ GELU) in place; or,
 * with an add, bias + residual (+ the layer norm that reads the sum) in
 * one pass, the sum kept in fp32 and/or bf16 as its consumers read it. */
static int linear_slot(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int s, char *err) {
    const gen_plan &P = E->plan;
    const act_layout &A = B->A;
    const wslot &sl = P.slot[s];
    int i0 = sl.part_node[0];
    const e2g_node &nd0 = P.net.node[i0];
    const node_plan &np0 = P.np[i0];
    const node_buf &b0 = A.b[i0], &in = A.b[nd0.in[0]];
    int L = A.sh[i0].h * A.sh[i0].w;
    cudaStream_t st = E->dc.stream;
    if (nd0.add < 0) {
        TRY(e2g_gemm(E, B, rp, s, b0.rows, in.rows, L, err));
        return bias_act(b0.rows, E->slots[s].bias, sl.gelu, b0.M, sl.cout, st, err);
    }
    TRY(e2g_gemm(E, B, rp, s, A.proj, in.rows, L, err));
    const node_buf &r = A.b[nd0.add];
    int ln = np0.fused_ln;
    return residual_layernorm(b0.f32, np0.has_bf16 ? b0.rows : NULL, ln >= 0 ? A.b[ln].rows : NULL,
                              r.f32 ? NULL : r.rows, r.f32, A.proj, E->slots[s].bias, ln >= 0 ? E->ln_w[ln] : NULL,
                              ln >= 0 ? E->ln_b[ln] : NULL, b0.M, nd0.cout, st, err);
}

/* A LAYERNORM node not computed with the residual before it. */
static int layer_norm(e2g_cuda_engine *E, bucket *B, int i, char *err) {
    const e2g_node &nd = E->plan.net.node[i];
    const node_buf &b = B->A.b[i], &r = B->A.b[nd.in[0]];
    return residual_layernorm(NULL, NULL, b.rows, r.f32 ? NULL : r.rows, r.f32, NULL, NULL, E->ln_w[i], E->ln_b[i],
                              b.M, nd.cout, E->dc.stream, err);
}

/* The whole generator from B->x32 and B->ctx32 into B->y32, enqueued. */
static int forward(e2g_cuda_engine *E, bucket *B, const run_plan *rp, char *err) {
    const gen_plan &P = E->plan;
    const act_layout &A = B->A;
    cudaStream_t s = E->dc.stream;
    for (int i = 0; i < P.net.n; i++) {
        const e2g_node &nd = P.net.node[i];
        const node_plan &np = P.np[i];
        switch (nd.op) {
        case E2G_OP_INPUT: TRY(prep_input(A.b[i].v, B->x32, s, err)); break;
        case E2G_OP_CONTEXT: TRY(f32_to_bf16(A.b[i].rows, B->ctx32, A.b[i].M * nd.cout, s, err)); break;
        case E2G_OP_CONV: TRY(conv_node(E, B, rp, i, err)); break;
        case E2G_OP_LAYERNORM:
            if (np.fused_into < 0) TRY(layer_norm(E, B, i, err));
            break;
        case E2G_OP_LINEAR: /* the whole slot at its first node */
            if (np.part == 0) TRY(linear_slot(E, B, rp, np.slot, err));
            break;
        case E2G_OP_ATTENTION: TRY(plan_attention(P, A, i, s, err)); break;
        case E2G_OP_OUTPUT: break; /* written by its conv's epilogue */
        }
    }
    return 0;
}

/* Runs the forward for rp's signature: replays its graph, captures one on
 * the second sight of the signature, or runs eagerly (the first sight
 * finds the cuDNN algorithms, which cannot happen inside a capture). */
static int launch(e2g_cuda_engine *E, bucket *B, const run_plan *rp, char *err) {
    graph_rec *g = NULL;
    for (graph_rec &r : B->graphs)
        if (r.sig == rp->sig) g = &r;
    if (E->graphs_off || !g) {
        if (!E->graphs_off) {
            if (B->graphs.size() >= MAX_GRAPHS) {
                auto old = std::min_element(B->graphs.begin(), B->graphs.end(),
                                            [](const graph_rec &a, const graph_rec &b) { return a.last_used < b.last_used; });
                if (old->exec) cudaGraphExecDestroy(old->exec);
                B->graphs.erase(old);
            }
            B->graphs.push_back({rp->sig, NULL, E->tick});
        }
        E->n_eager++;
        return forward(E, B, rp, err);
    }
    g->last_used = E->tick;
    if (!g->exec) {
        cudaGraph_t graph = NULL;
        CUDA_TRY(cudaStreamBeginCapture(E->dc.stream, cudaStreamCaptureModeThreadLocal));
        int rc = forward(E, B, rp, err);
        cudaError_t end = cudaStreamEndCapture(E->dc.stream, &graph);
        if (rc == 0 && end == cudaSuccess && graph)
            end = cudaGraphInstantiate(&g->exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (rc || end != cudaSuccess || !g->exec) {
            /* Capture is an optimisation: fall back to eager launches. */
            cudaGetLastError();
            g->exec = NULL;
            E->graphs_off = 1;
            snprintf(E->graphs_off_why, sizeof E->graphs_off_why, "capture failed: %s",
                     rc ? err : cudaGetErrorString(end));
            fprintf(stderr, "e2gan: CUDA graph %s; running without graphs\n", E->graphs_off_why);
            E->n_eager++;
            return forward(E, B, rp, err);
        }
        E->n_captured++;
    } else {
        E->n_replayed++;
    }
    CUDA_TRY(cudaGraphLaunch(g->exec, E->dc.stream));
    return 0;
}

/* Plans the batch, stages its contexts and LoRA tables, and makes sure the
 * bucket exists. */
static int prepare_batch(e2g_cuda_engine *E, bucket **Bout, run_plan *rp, const e2g_edit *edits, int N, int H,
                         int W, int merged, char *err) {
    if (N < 1 || H < 8 || W < 8 || H % 8 || W % 8) return e2g_fail(err, "CUDA: bad batch %dx%dx%d", N, H, W);
    TRY(plan_run(E, rp, edits, N, merged, err));
    bucket *B = NULL;
    TRY(bucket_get(E, &B, N, H, W, err));
    TRY(fill_tables(E, B, rp, edits, err));
    size_t one = (size_t)E->T * E->c4;
    for (int n = 0; n < N; n++) memcpy(B->ctx_host + n * one, edits[n].context, one * sizeof(float));
    CUDA_TRY(cudaMemcpyAsync(B->ctx32, B->ctx_host, N * one * sizeof(float), cudaMemcpyHostToDevice, E->dc.stream));
    CUDA_TRY(cudaMemcpyAsync(B->table_dev, B->table_host, (size_t)E2G_N_CRUCIAL * MAX_TERMS * N * sizeof(lora_entry),
                             cudaMemcpyHostToDevice, E->dc.stream));
    *Bout = B;
    return 0;
}

/* The errors after which the CUDA context is unusable: every later call
 * of this process returns them again (the "sticky" errors of the CUDA
 * runtime's documentation). */
static int sticky_error(cudaError_t e) {
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorContextIsDestroyed:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorExternalDevice:
        return 1;
    default:
        return 0;
    }
}

/* After a failure: wait for what was queued and clear non-sticky errors;
 * a sticky one marks the engine dead (e2g_cuda_engine_healthy). */
static void recover(e2g_cuda_engine *E) {
    cudaError_t e = cudaStreamSynchronize(E->dc.stream);
    cudaGetLastError();
    if (!sticky_error(e)) e = cudaDeviceSynchronize(); /* a sticky error answers every call */
    if (sticky_error(e) && !E->dead) {
        E->dead = 1;
        snprintf(E->dead_why, sizeof E->dead_why, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
    }
}

/* Refuses work once the engine is dead. */
static int check_alive(const e2g_cuda_engine *E, char *err) {
    return E->dead ? e2g_fail(err, "CUDA device unusable since an earlier failure (%s)", E->dead_why) : 0;
}

extern "C" int e2g_cuda_engine_run(e2g_cuda_engine *E, float *y, const float *x, const e2g_edit *edits, int N,
                                   int H, int W, int merged, char *err) {
    pthread_mutex_lock(&E->mu);
    run_plan rp;
    bucket *B = NULL;
    size_t img = (size_t)N * H * W * 3 * sizeof(float);
    int rc = check_alive(E, err);
    if (!rc) rc = prepare_batch(E, &B, &rp, edits, N, H, W, merged, err);
    if (!rc) {
        memcpy(B->x_host, x, img);
        rc = cudaMemcpyAsync(B->x32, B->x_host, img, cudaMemcpyHostToDevice, E->dc.stream) != cudaSuccess
                 ? e2g_fail(err, "CUDA: input upload failed") : 0;
    }
    if (!rc) rc = launch(E, B, &rp, err);
    if (!rc) {
        cudaError_t e = cudaMemcpyAsync(B->y_host, B->y32, img, cudaMemcpyDeviceToHost, E->dc.stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(E->dc.stream);
        if (e != cudaSuccess) rc = e2g_fail(err, "CUDA: forward failed: %s", cudaGetErrorString(e));
    }
    if (!rc) memcpy(y, B->y_host, img);
    if (rc) recover(E);
    evict(E);
    pthread_mutex_unlock(&E->mu);
    return rc;
}

extern "C" int e2g_cuda_engine_time(e2g_cuda_engine *E, const e2g_edit *edits, int N, int H, int W, int merged,
                                    int iters, double *ms, char *err) {
    pthread_mutex_lock(&E->mu);
    run_plan rp;
    bucket *B = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    std::vector<double> times;
    int rc = check_alive(E, err);
    if (!rc) rc = prepare_batch(E, &B, &rp, edits, N, H, W, merged, err);
    if (!rc) { /* a fixed pseudo-random image in [-1, 1] */
        size_t n = (size_t)N * H * W * 3;
        uint32_t s = 12345;
        for (size_t i = 0; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            B->x_host[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
        }
        rc = cudaMemcpyAsync(B->x32, B->x_host, n * sizeof(float), cudaMemcpyHostToDevice, E->dc.stream) ||
                     cudaEventCreate(&t0) || cudaEventCreate(&t1)
                 ? e2g_fail(err, "CUDA: benchmark setup failed") : 0;
    }
    for (int i = -3; i < iters && !rc; i++) { /* three warm-ups: algorithms, capture, replay */
        rc = cudaEventRecord(t0, E->dc.stream) ? e2g_fail(err, "CUDA: event failed") : 0;
        if (!rc) rc = launch(E, B, &rp, err);
        if (!rc && (cudaEventRecord(t1, E->dc.stream) || cudaEventSynchronize(t1)))
            rc = e2g_fail(err, "CUDA: forward failed: %s", cudaGetErrorString(cudaGetLastError()));
        float t = 0;
        if (!rc && i >= 0 && cudaEventElapsedTime(&t, t0, t1) == cudaSuccess) times.push_back(t);
    }
    if (!rc) rc = median_ms(times, ms, err);
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    if (rc) recover(E);
    evict(E);
    pthread_mutex_unlock(&E->mu);
    return rc;
}

extern "C" int e2g_cuda_engine_prepare(e2g_cuda_engine *E, const e2g_edit *edits, int N, int merged, char *err) {
    pthread_mutex_lock(&E->mu);
    run_plan rp;
    int rc = check_alive(E, err);
    if (!rc) rc = plan_run(E, &rp, edits, N, merged, err);
    if (!rc && cudaStreamSynchronize(E->dc.stream) != cudaSuccess) rc = e2g_fail(err, "CUDA: adapter switch failed");
    if (rc) recover(E);
    evict(E);
    pthread_mutex_unlock(&E->mu);
    return rc;
}

extern "C" void e2g_cuda_engine_drop_adapters(e2g_cuda_engine *E) {
    pthread_mutex_lock(&E->mu);
    cudaStreamSynchronize(E->dc.stream);
    for (bucket *b = E->buckets; b; b = b->next) graphs_clear(b); /* they point at the weights */
    while (E->adapters) {
        dev_adapter *a = E->adapters;
        E->adapters = a->next;
        adapter_free(E, a);
    }
    while (E->merges) {
        dev_merged *m = E->merges;
        E->merges = m->next;
        merged_free(E, m);
    }
    E->cache_bytes = 0;
    pthread_mutex_unlock(&E->mu);
}

extern "C" int e2g_cuda_engine_healthy(e2g_cuda_engine *E, char *why) {
    pthread_mutex_lock(&E->mu);
    int ok = !E->dead;
    if (!ok && why) snprintf(why, E2G_ERR_LEN, "%s", E->dead_why);
    pthread_mutex_unlock(&E->mu);
    return ok;
}

extern "C" void e2g_cuda_engine_graph_stats(e2g_cuda_engine *E, e2g_cuda_graph_stats *out) {
    pthread_mutex_lock(&E->mu);
    out->enabled = !E->graphs_off;
    snprintf(out->why_off, sizeof out->why_off, "%s", E->graphs_off ? E->graphs_off_why : "");
    out->eager = E->n_eager, out->captured = E->n_captured, out->replayed = E->n_replayed;
    pthread_mutex_unlock(&E->mu);
}

/* A write to an address no allocation covers: the illegal-address fault a
 * buggy kernel would raise. */
__global__ void fault_kernel(int *p) { *p = 1; }

extern "C" void e2g_cuda_engine_inject_fault(e2g_cuda_engine *E) {
    pthread_mutex_lock(&E->mu);
    fault_kernel<<<1, 1, 0, E->dc.stream>>>((int *)(uintptr_t)0x10);
    pthread_mutex_unlock(&E->mu);
}

extern "C" void e2g_cuda_engine_cache_stats(const e2g_cuda_engine *E, size_t *bytes, int *entries) {
    int n = 0;
    for (dev_adapter *a = E->adapters; a; a = a->next) n++;
    for (dev_merged *m = E->merges; m; m = m->next) n++;
    *bytes = E->cache_bytes, *entries = n;
}

extern "C" void e2g_cuda_engine_free(e2g_cuda_engine *E) {
    if (!E) return;
    if (E->dc.stream) cudaStreamSynchronize(E->dc.stream);
    while (E->buckets) {
        bucket *b = E->buckets;
        E->buckets = b->next;
        bucket_free(b);
    }
    E->cache_budget = 0, E->tick++;
    evict(E);
    cudaFree(E->weights);
    dnn_free(&E->dc);
    pthread_mutex_destroy(&E->mu);
    cudaGetLastError();
    delete E;
}

/* ---- one convolution for the op checks ---------------------------------------------------- */

static int check_conv_on(e2g_cuda_engine *E, std::vector<void *> &bufs, float *out, const float *x,
                         const float *w, const float *bias, int N, int H, int W, const e2g_conv_shape *cs,
                         int upsample, char *err) {
    auto alloc = [&](size_t bytes) {
        void *p = NULL;
        if (cudaMalloc(&p, bytes) == cudaSuccess) bufs.push_back(p);
        return p;
    };
    int cin = cs->cin, cout = cs->cout, k = cs->k, reflect = cs->pad_mode == E2G_PAD_REFLECT && !upsample;
    int p = reflect ? cs->pad : 0, Ho = upsample ? 2 * H : e2g_conv2d_out_size(H, cs), Wo = upsample ? 2 * W : e2g_conv2d_out_size(W, cs);
    size_t nx = (size_t)N * H * W * cin, nw = (size_t)cout * cin * k * k;
    size_t npad = (size_t)N * (H + 2 * p) * (W + 2 * p) * cin, npk = upsample ? (size_t)16 * cout * cin : nw;
    size_t nraw = upsample ? (size_t)N * (H + 1) * (W + 1) * 4 * cout : (size_t)N * Ho * Wo * cout, ny = (size_t)N * Ho * Wo * cout;
    float *x32 = (float *)alloc(nx * 4), *w32 = (float *)alloc(nw * 4), *b32 = (float *)alloc(cout * 4), *y32 = (float *)alloc(ny * 4);
    bf16 *x16 = (bf16 *)alloc(nx * 2), *xp = (bf16 *)alloc(npad * 2), *wpk = (bf16 *)alloc(npk * 2);
    bf16 *raw = (bf16 *)alloc(nraw * 2), *y16 = (bf16 *)alloc(ny * 2);
    if (bufs.size() != 9) return e2g_fail(err, "CUDA: out of memory for a conv check");
    /* on the engine's stream, which the kernels below run on (it does not
     * wait for the legacy stream that plain cudaMemcpy/cudaMemset use) */
    CUDA_TRY(cudaMemcpyAsync(x32, x, nx * 4, cudaMemcpyHostToDevice, E->dc.stream));
    CUDA_TRY(cudaMemcpyAsync(w32, w, nw * 4, cudaMemcpyHostToDevice, E->dc.stream));
    CUDA_TRY(cudaMemsetAsync(b32, 0, cout * 4, E->dc.stream));
    if (bias) CUDA_TRY(cudaMemcpyAsync(b32, bias, cout * 4, cudaMemcpyHostToDevice, E->dc.stream));
    TRY(f32_to_bf16(x16, x32, nx, E->dc.stream, err));
    epilogue_args pad = {}; /* the engine's way to reflect-pad: an epilogue with nothing to do */
    pad.src = {x16, N, H, W, cin, cin, 0};
    pad.dst = {xp, N, H, W, cin, p, 0};
    TRY(block_epilogue(pad, E->dc.stream, err));
    pack_args pa = {};
    pa.dst = wpk, pa.base = w32, pa.cout = cout, pa.cin = cin, pa.k = k, pa.cout_pad = cout, pa.cin_pad = cin;
    pa.phase = upsample;
    TRY(pack_weights(pa, E->dc.stream, err));
    if (upsample)
        TRY(conv_fwd(&E->dc, raw, xp, wpk, N, H, W, cin, 4 * cout, 2, 1, 1, 0, err));
    else
        TRY(conv_fwd(&E->dc, raw, xp, wpk, N, H + 2 * p, W + 2 * p, cin, cout, k, cs->stride, reflect ? 0 : cs->pad, 0,
                     err));
    epilogue_args ep = {};
    ep.src = {raw, N, Ho, Wo, cout, upsample ? 4 * cout : cout, upsample};
    ep.bias = b32;
    ep.dst = {y16, N, Ho, Wo, cout, 0, 0};
    TRY(block_epilogue(ep, E->dc.stream, err));
    TRY(bf16_to_f32(y32, y16, ny, E->dc.stream, err));
    CUDA_TRY(cudaStreamSynchronize(E->dc.stream));
    CUDA_TRY(cudaMemcpy(out, y32, ny * 4, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int e2g_cuda_check_conv(float *out, const float *x, const float *w, const float *bias, int N, int H,
                                   int W, const e2g_conv_shape *cs, int upsample, char *err) {
    if (!e2g_cuda_device_present(err)) return -1;
    if (cs->cin % 8 || cs->cout % 8) return e2g_fail(err, "CUDA conv check: channels must be multiples of 8");
    e2g_cuda_engine *E = new (std::nothrow) e2g_cuda_engine();
    if (!E) return e2g_fail(err, "out of host memory");
    std::vector<void *> bufs;
    int rc = core_init(E, err);
    if (!rc) rc = check_conv_on(E, bufs, out, x, w, bias, N, H, W, cs, upsample, err);
    if (E->dc.stream) cudaStreamSynchronize(E->dc.stream);
    for (void *p : bufs) cudaFree(p);
    e2g_cuda_engine_free(E);
    return rc;
}

}  // namespace e2g
