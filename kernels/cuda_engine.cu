/* cuda_engine.cu — E²GAN-G inference on the GPU (cuda_engine.h).
 *
 * Weights live on the device as bf16 in cuDNN's KRSC filter layout (the ×2
 * upsample of us/dec2/dec1 folded into four 2×2 phase kernels stacked as
 * output channels, engine/conv.c's trick), plus fp32 masters of the crucial
 * layers for merging.  Each (batch, height, width) bucket has one device
 * allocation holding every activation — each written once by the fused
 * epilogue of its producer, already reflect-padded when its consumer pads
 * by reflection — and a small cache of CUDA graphs, one per adapter
 * signature seen twice.  cuDNN algorithms are found once per convolution
 * shape (cudnnFindConvolutionForwardAlgorithmEx) on the first, eager run.
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
#include "cuda_slots.cuh"

extern "C" {
#include "convspec.h"
}

#define MAX_BUCKETS 4
#define MAX_GRAPHS 8 /* per bucket */
#define MAX_TERMS E2G_MAX_TERMS

struct slot {
    int cin, cin_pad, cout, cout_pad, k, stride, pad, reflect, phase, relu, skip;
    bf16 *w;                     /* packed: (rows, k, k, cin_pad) or phase (4·cout, 2, 2, cin) */
    size_t w_elems;
    float *bias, *gamma, *beta;  /* NULL when absent */
};

/* Where crucial layer l lives: a slot, the first output row inside it, and
 * its fp32 OIHW master for merging. */
struct site {
    int slot, row0, cout, cin, k, is_conv, phase, cin_pad;
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
    bf16 *w[N_SLOTS]; /* NULL: the base slot */
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
    float *x32, *y32, *ctx32, *sums, *t1, *t2;
    bf16 *ctx16, *cbuf, *u, *qkv, *att, *proj, *q2, *kv2, *hid;
    tview xin, e1, e2, r0, r1, r2, r3, t0, t3, s0, s1, s2, d2, d1;
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

struct e2g_cuda_engine {
    e2g_gen_config cfg;
    int c4, heads, T;
    const e2g_gen_params *host;
    pthread_mutex_t mu;
    dnn_ctx dc; /* stream, cuDNN handle, workspace, conv plans */
    slot slots[N_SLOTS];
    site sites[E2G_N_CRUCIAL];
    void *weights;      /* one allocation: packed slots, biases, norms, masters */
    float *ln_w[3], *ln_b[3];
    bucket *buckets;
    dev_adapter *adapters;
    dev_merged *merges;
    size_t cache_budget, cache_bytes;
    unsigned long long tick, serial;
    int graphs_off;
};

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

static int upload(void *dst, const void *src, size_t bytes, char *err) {
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return 0;
}

/* Describes the slots and sites from the generator's specs. */
static void describe(e2g_cuda_engine *E) {
    const e2g_gen_config *cfg = &E->cfg;
    for (int id = 0; id < G_NCONV; id++) {
        conv_spec s = gen_conv_spec(cfg, id);
        slot *sl = &E->slots[id];
        sl->cin = s.conv.cin, sl->cout = s.conv.cout, sl->k = s.conv.k;
        sl->cin_pad = (sl->cin + 7) / 8 * 8, sl->cout_pad = (sl->cout + 7) / 8 * 8;
        sl->stride = s.conv.stride, sl->pad = s.conv.pad;
        sl->reflect = s.conv.pad_mode == E2G_PAD_REFLECT, sl->phase = s.upsample;
        sl->relu = s.act == ACT_RELU;
    }
    int c4 = E->c4;
    int lin[][2] = {{3 * c4, c4}, {c4, c4}, {c4, c4}, {2 * c4, c4}, {c4, c4}, {4 * c4, c4}, {c4, 4 * c4}};
    for (int i = S_SA_QKV; i < N_SLOTS; i++) {
        slot *sl = &E->slots[i];
        sl->cout = sl->cout_pad = lin[i - S_SA_QKV][0], sl->cin = sl->cin_pad = lin[i - S_SA_QKV][1];
        sl->k = 1, sl->stride = 1;
    }
    for (int id = 0; id < N_SLOTS; id++) {
        slot *sl = &E->slots[id];
        sl->w_elems = sl->phase ? (size_t)4 * sl->cout_pad * 4 * sl->cin
                                : (size_t)sl->cout_pad * sl->k * sl->k * sl->cin_pad;
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        e2g_layer_shape ls;
        e2g_crucial_shape(cfg, l, &ls);
        site *st = &E->sites[l];
        int part;
        st->cout = ls.cout, st->cin = ls.cin, st->k = ls.k ? ls.k : 1, st->is_conv = ls.k > 0;
        crucial_slot(l, &st->slot, &part);
        st->row0 = part * c4;
        st->phase = E->slots[st->slot].phase, st->cin_pad = E->slots[st->slot].cin_pad;
    }
}

/* Lays out (base NULL: counts) the weights allocation. */
static void layout_weights(e2g_cuda_engine *E, dev_arena *ar) {
    for (int id = 0; id < N_SLOTS; id++) {
        slot *sl = &E->slots[id];
        sl->w = ar->take<bf16>(sl->w_elems);
        int has_bias = id >= G_NCONV || gen_conv_spec(&E->cfg, id).bias;
        sl->bias = has_bias ? ar->take<float>(sl->cout_pad) : NULL;
        int norm = id < G_NCONV && gen_conv_spec(&E->cfg, id).norm;
        sl->gamma = norm ? ar->take<float>(sl->cout) : NULL;
        sl->beta = norm ? ar->take<float>(sl->cout) : NULL;
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        site *st = &E->sites[l];
        E->sites[l].master = ar->take<float>((size_t)st->cout * st->cin * st->k * st->k);
    }
    for (int i = 0; i < 3; i++) E->ln_w[i] = ar->take<float>(E->c4), E->ln_b[i] = ar->take<float>(E->c4);
}

/* Packs one slot from fp32 OIHW staged at tmp, row block by row block,
 * merging the given terms into crucial row blocks (dst: the slot's
 * buffer, which may be a merged copy). */
static int pack_slot(e2g_cuda_engine *E, bf16 *dst, int id, const float *const *oihw_parts,
                     const merge_term (*terms)[MAX_TERMS], const int *n_terms, char *err) {
    const slot *sl = &E->slots[id];
    int parts = slot_parts(id), rows = sl->cout / parts;
    for (int part = 0; part < parts; part++) {
        pack_args a = {};
        a.dst = dst + (size_t)part * rows * sl->k * sl->k * sl->cin_pad;
        a.base = oihw_parts[part];
        a.cout = rows, a.cin = sl->cin, a.k = sl->k;
        a.cout_pad = parts > 1 ? rows : sl->cout_pad, a.cin_pad = sl->cin_pad, a.phase = sl->phase;
        a.n_terms = terms ? n_terms[part] : 0;
        for (int t = 0; t < a.n_terms; t++) a.terms[t] = terms[part][t];
        TRY(pack_weights(a, E->dc.stream, err));
    }
    return 0;
}

/* The crucial layer of slot id's row block `part`, or -1. */
static int site_of(const e2g_cuda_engine *E, int id, int part) {
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        if (E->sites[l].slot == id && E->sites[l].row0 == part * (E->slots[id].cout / slot_parts(id))) return l;
    return -1;
}

static int upload_weights(e2g_cuda_engine *E, char *err) {
    const e2g_gen_params *p = E->host;
    size_t staged = 0;
    for (int id = 0; id < N_SLOTS; id++) staged = std::max(staged, (size_t)E->slots[id].cout * E->slots[id].cin * E->slots[id].k * E->slots[id].k);
    float *tmp = NULL;
    CUDA_TRY(cudaMalloc(&tmp, staged * sizeof(float)));
    int rc = 0;
    for (int id = 0; id < N_SLOTS && !rc; id++) {
        slot *sl = &E->slots[id];
        int parts = slot_parts(id), rows = sl->cout / parts;
        const float *dev_parts[3];
        for (int part = 0; part < parts && !rc; part++) {
            size_t n = (size_t)rows * sl->cin * sl->k * sl->k;
            int l = site_of(E, id, part);
            float *d = l >= 0 ? E->sites[l].master : tmp + part * n;
            rc = upload(d, slot_weight_part(p, id, part), n * sizeof(float), err);
            dev_parts[part] = d;
            if (!rc && sl->bias) {
                const float *b = id < G_NCONV ? gen_conv_params(p, id)->b : slot_bias_part(p, id, part);
                rc = upload(sl->bias + part * rows, b, rows * sizeof(float), err);
            }
        }
        if (!rc && sl->bias && sl->cout_pad > sl->cout) {
            float zeros[8] = {0};
            rc = upload(sl->bias + sl->cout, zeros, (sl->cout_pad - sl->cout) * sizeof(float), err);
        }
        if (!rc && sl->gamma) {
            rc = upload(sl->gamma, gen_conv_params(p, id)->norm_w, sl->cout * sizeof(float), err);
            if (!rc) rc = upload(sl->beta, gen_conv_params(p, id)->norm_b, sl->cout * sizeof(float), err);
        }
        if (!rc) rc = pack_slot(E, sl->w, id, dev_parts, NULL, NULL, err);
        if (!rc) rc = cudaStreamSynchronize(E->dc.stream) ? e2g_fail(err, "CUDA: packing weights failed") : 0;
    }
    for (int i = 0; i < 3 && !rc; i++) {
        rc = upload(E->ln_w[i], p->ln_w[i], E->c4 * sizeof(float), err);
        if (!rc) rc = upload(E->ln_b[i], p->ln_b[i], E->c4 * sizeof(float), err);
    }
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
    return 0;
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
    describe(E);
    int rc = -1;
    dev_arena count = {NULL, 0}, ar;
    if (core_init(E, err)) goto out;
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
    int touched[N_SLOTS] = {0};
    size_t elems = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        for (int t = 0; t < n_terms; t++)
            if (terms[t].lora->rank[l]) touched[E->sites[l].slot] = 1;
    for (int s = 0; s < N_SLOTS; s++)
        if (touched[s]) elems += align256(E->slots[s].w_elems * sizeof(bf16)) / sizeof(bf16);
    if (elems && cudaMallocAsync((void **)&m->mem, elems * sizeof(bf16), E->dc.stream) != cudaSuccess) {
        cudaGetLastError();
        delete m;
        return e2g_fail(err, "CUDA: out of memory for merged weights");
    }
    bf16 *dst = m->mem;
    int rc = 0;
    for (int s = 0; s < N_SLOTS && !rc; s++) {
        if (!touched[s]) continue;
        m->w[s] = dst;
        dst += align256(E->slots[s].w_elems * sizeof(bf16)) / sizeof(bf16);
        int parts = slot_parts(s), n_part[3] = {0};
        const float *masters[3];
        merge_term mt[3][MAX_TERMS];
        for (int part = 0; part < parts; part++) {
            int l = site_of(E, s, part);
            masters[part] = E->sites[l].master;
            for (int t = 0; t < n_terms; t++) {
                const dev_adapter *a = devs[t];
                if (!a->rank[l]) continue;
                mt[part][n_part[part]++] = {a->A[l], a->B[l], a->rank[l], terms[t].coef * a->scale[l]};
            }
        }
        rc = pack_slot(E, m->w[s], s, masters, mt, n_part, err);
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

static tview take_view(dev_arena *ar, int N, int H, int W, int C, int pad) {
    tview v = {NULL, N, H, W, C, pad};
    v.p = ar->take<bf16>((size_t)N * (H + 2 * pad) * (W + 2 * pad) * C);
    return v;
}

/* Input size of conv block id as a divisor of the image's. */
static int block_in_div(int id) {
    static const int div[G_NCONV] = {1, 1, 2, 4, 4, 4, 4, 4, 8, 4, 4, 4, 2, 1};
    return div[id];
}

/* Pixels per sample of block id's raw conv output (the phase grid for an
 * upsample); a reflect pad done in the input gives the zero-pad size. */
static size_t raw_pixels(const e2g_cuda_engine *E, int id, int H, int W) {
    const slot *sl = &E->slots[id];
    int h = H / block_in_div(id), w = W / block_in_div(id);
    if (sl->phase) return (size_t)(h + 1) * (w + 1);
    return (size_t)((h + 2 * sl->pad - sl->k) / sl->stride + 1) * ((w + 2 * sl->pad - sl->k) / sl->stride + 1);
}

/* Largest raw conv output of any block. */
static size_t conv_out_elems(const e2g_cuda_engine *E, int N, int H, int W) {
    size_t m = 0;
    for (int id = 0; id < G_NCONV; id++) {
        const slot *sl = &E->slots[id];
        m = std::max(m, (size_t)N * raw_pixels(E, id, H, W) * (sl->phase ? 4 : 1) * sl->cout_pad);
    }
    return m;
}

static void layout_bucket(e2g_cuda_engine *E, bucket *B, dev_arena *ar) {
    int N = B->N, H = B->H, W = B->W, ngf = E->cfg.ngf, c4 = E->c4, T = E->T;
    size_t M = (size_t)N * (H / 8) * (W / 8);
    B->x32 = ar->take<float>((size_t)N * H * W * 3), B->y32 = ar->take<float>((size_t)N * H * W * 3);
    B->ctx32 = ar->take<float>((size_t)N * T * c4), B->ctx16 = ar->take<bf16>((size_t)N * T * c4);
    B->sums = ar->take<float>((size_t)N * 2 * c4);
    B->cbuf = ar->take<bf16>(conv_out_elems(E, N, H, W));
    B->xin = take_view(ar, N, H, W, 8, 3);
    B->e1 = take_view(ar, N, H, W, ngf, 0);
    B->e2 = take_view(ar, N, H / 2, W / 2, 2 * ngf, 0);
    B->r0 = take_view(ar, N, H / 4, W / 4, c4, 1), B->r1 = take_view(ar, N, H / 4, W / 4, c4, 1);
    B->r2 = take_view(ar, N, H / 4, W / 4, c4, 1), B->r3 = take_view(ar, N, H / 4, W / 4, c4, 0);
    B->t0 = take_view(ar, N, H / 8, W / 8, c4, 0), B->t3 = take_view(ar, N, H / 8, W / 8, c4, 0);
    B->u = ar->take<bf16>(M * c4), B->qkv = ar->take<bf16>(M * 3 * c4), B->att = ar->take<bf16>(M * c4);
    B->proj = ar->take<bf16>(M * c4), B->q2 = ar->take<bf16>(M * c4);
    B->kv2 = ar->take<bf16>((size_t)N * T * 2 * c4), B->hid = ar->take<bf16>(M * 4 * c4);
    B->t1 = ar->take<float>(M * c4), B->t2 = ar->take<float>(M * c4);
    B->s0 = take_view(ar, N, H / 4, W / 4, c4, 1), B->s1 = take_view(ar, N, H / 4, W / 4, c4, 1);
    B->s2 = take_view(ar, N, H / 4, W / 4, c4, 0);
    B->d2 = take_view(ar, N, H / 2, W / 2, 2 * ngf, 0);
    B->d1 = take_view(ar, N, H, W, ngf, 3);
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
 * scratch (dropping its graphs, which point at the old one) if needed. */
static int fill_tables(e2g_cuda_engine *E, bucket *B, run_plan *rp, const e2g_edit *edits, char *err) {
    int N = B->N;
    memset(B->table_host, 0, (size_t)E2G_N_CRUCIAL * MAX_TERMS * N * sizeof(lora_entry));
    rp->h_need = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        const site *st = &E->sites[l];
        size_t P = st->is_conv ? raw_pixels(E, st->slot, B->H, B->W) : 0; /* h only for convs */
        for (int t = 0; t < MAX_TERMS; t++) {
            size_t off = 0;
            for (const segment &sg : rp->seg[l][t])
                for (int n = sg.n0; n < sg.n0 + sg.cnt; n++) {
                    lora_entry *e = &B->table_host[((size_t)l * MAX_TERMS + t) * N + n];
                    e->A = sg.a->A[l], e->B = sg.a->B[l], e->r = sg.a->rank[l], e->R = sg.a->R[l];
                    e->s = edits[n].terms[t].coef * sg.a->scale[l];
                    e->h_off = off;
                    off += P * (st->phase ? 4 : 1) * e->R;
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

/* ---- the forward -------------------------------------------------------------------------- */

static const bf16 *slot_w(const e2g_cuda_engine *E, const run_plan *rp, int id) {
    return rp->merged && rp->merged->w[id] ? rp->merged->w[id] : E->slots[id].w;
}

static const lora_entry *table_of(const bucket *B, int l, int t) {
    return B->table_dev + ((size_t)l * MAX_TERMS + t) * B->N;
}

/* Unmerged LoRA of conv site l: A per segment into h, then the grouped
 * expand into the raw conv output. */
static int lora_conv(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int l, const tview &in,
                     bf16 *raw, int Cs, size_t P, char *err) {
    const slot *sl = &E->slots[E->sites[l].slot];
    int Hp = in.H + 2 * in.pad, Wp = in.W + 2 * in.pad;
    size_t per_in = (size_t)Hp * Wp * in.C;
    for (int t = 0; t < MAX_TERMS; t++) {
        if (rp->seg[l][t].empty()) continue;
        for (const segment &sg : rp->seg[l][t]) {
            const lora_entry &e = B->table_host[((size_t)l * MAX_TERMS + t) * B->N + sg.n0];
            bf16 *h = B->hbuf + e.h_off;
            if (sl->phase)
                TRY(conv_fwd(&E->dc, h, in.p + sg.n0 * per_in, sg.a->convA[l], sg.cnt, Hp, Wp, in.C, 4 * e.R, 2, 1, 1, err));
            else
                TRY(conv_fwd(&E->dc, h, in.p + sg.n0 * per_in, sg.a->convA[l], sg.cnt, Hp, Wp, in.C, e.R, sl->k,
                         sl->stride, sl->reflect ? 0 : sl->pad, err));
        }
        TRY(lora_conv_expand(raw, Cs, sl->cout, sl->phase ? 4 : 1, B->hbuf, table_of(B, l, t), B->N, P,
                             E->dc.stream, err));
    }
    return 0;
}

/* One conv block: cuDNN conv of `in` (padded as the layer needs), its
 * LoRA, then statistics and the fused epilogue into dst (+ add). */
static int conv_block(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int id, const tview &in,
                      const tview &dst, const tview *add, char *err) {
    const slot *sl = &E->slots[id];
    int N = B->N, Hp = in.H + 2 * in.pad, Wp = in.W + 2 * in.pad, Ho, Wo, Cs;
    size_t P;
    if (sl->phase) {
        TRY(conv_fwd(&E->dc, B->cbuf, in.p, slot_w(E, rp, id), N, Hp, Wp, in.C, 4 * sl->cout_pad, 2, 1, 1, err));
        Ho = 2 * in.H, Wo = 2 * in.W, Cs = 4 * sl->cout_pad, P = (size_t)(in.H + 1) * (in.W + 1);
    } else {
        int pad = sl->reflect ? 0 : sl->pad;
        TRY(conv_fwd(&E->dc, B->cbuf, in.p, slot_w(E, rp, id), N, Hp, Wp, in.C, sl->cout_pad, sl->k, sl->stride, pad, err));
        Ho = (Hp + 2 * pad - sl->k) / sl->stride + 1, Wo = (Wp + 2 * pad - sl->k) / sl->stride + 1;
        Cs = sl->cout_pad, P = (size_t)Ho * Wo;
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        if (E->sites[l].is_conv && E->sites[l].slot == id && !rp->merged)
            TRY(lora_conv(E, B, rp, l, in, B->cbuf, Cs, P, err));
    if (id == G_OUT)
        return output_layer(B->y32, B->cbuf, Cs, sl->bias, B->x32, E->cfg.residual_out, (size_t)N * Ho * Wo,
                            E->dc.stream, err);
    conv_out src = {B->cbuf, N, Ho, Wo, sl->cout, Cs, sl->phase};
    epilogue_args a = {};
    a.src = src, a.bias = sl->bias, a.relu = sl->relu, a.dst = dst;
    if (sl->gamma) {
        TRY(block_stats(B->sums, src, E->dc.stream, err));
        a.sums = B->sums, a.gamma = sl->gamma, a.beta = sl->beta;
    }
    if (add) a.add = *add;
    return block_epilogue(a, E->dc.stream, err);
}

/* A linear layer as a 1×1 convolution over M rows, plus its LoRA for the
 * crucial layers in the slot. */
static int linear(e2g_cuda_engine *E, bucket *B, const run_plan *rp, int id, bf16 *out, const bf16 *in,
                  int rows_per_sample, char *err) {
    const slot *sl = &E->slots[id];
    int N = B->N;
    TRY(conv_fwd(&E->dc, out, in, slot_w(E, rp, id), 1, N * rows_per_sample, 1, sl->cin, sl->cout, 1, 1, 0, err));
    if (rp->merged) return 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        const site *st = &E->sites[l];
        if (st->is_conv || st->slot != id) continue;
        for (int t = 0; t < MAX_TERMS; t++)
            if (!rp->seg[l][t].empty())
                TRY(lora_linear(out, sl->cout, st->row0, in, sl->cin, st->cin, st->cout, table_of(B, l, t), N,
                                rows_per_sample, E->dc.stream, err));
    }
    return 0;
}

static int transformer(e2g_cuda_engine *E, bucket *B, const run_plan *rp, char *err) {
    int N = B->N, L = (B->H / 8) * (B->W / 8), c4 = E->c4, T = E->T;
    size_t M = (size_t)N * L;
    cudaStream_t s = E->dc.stream;
    const slot *S = E->slots;
    TRY(residual_layernorm(NULL, NULL, B->u, B->t0.p, NULL, NULL, NULL, E->ln_w[0], E->ln_b[0], M, c4, s, err));
    TRY(linear(E, B, rp, S_SA_QKV, B->qkv, B->u, L, err));
    TRY(bias_act(B->qkv, S[S_SA_QKV].bias, 0, M, 3 * c4, s, err));
    TRY(attention(B->att, B->qkv, 3 * c4, B->qkv + c4, B->qkv + 2 * c4, 3 * c4, N, L, L, c4, E->heads, s, err));
    TRY(linear(E, B, rp, S_SA_O, B->proj, B->att, L, err));
    TRY(residual_layernorm(B->t1, NULL, B->u, B->t0.p, NULL, B->proj, S[S_SA_O].bias, E->ln_w[1], E->ln_b[1], M,
                           c4, s, err));
    TRY(linear(E, B, rp, S_CA_Q, B->q2, B->u, L, err));
    TRY(bias_act(B->q2, S[S_CA_Q].bias, 0, M, c4, s, err));
    TRY(f32_to_bf16(B->ctx16, B->ctx32, (size_t)N * T * c4, s, err));
    TRY(linear(E, B, rp, S_CA_KV, B->kv2, B->ctx16, T, err));
    TRY(bias_act(B->kv2, S[S_CA_KV].bias, 0, (size_t)N * T, 2 * c4, s, err));
    TRY(attention(B->att, B->q2, c4, B->kv2, B->kv2 + c4, 2 * c4, N, L, T, c4, E->heads, s, err));
    TRY(linear(E, B, rp, S_CA_O, B->proj, B->att, L, err));
    TRY(residual_layernorm(B->t2, NULL, B->u, NULL, B->t1, B->proj, S[S_CA_O].bias, E->ln_w[2], E->ln_b[2], M,
                           c4, s, err));
    TRY(linear(E, B, rp, S_FC1, B->hid, B->u, L, err));
    TRY(bias_act(B->hid, S[S_FC1].bias, 1, M, 4 * c4, s, err));
    TRY(linear(E, B, rp, S_FC2, B->proj, B->hid, L, err));
    return residual_layernorm(NULL, B->t3.p, NULL, NULL, B->t2, B->proj, S[S_FC2].bias, NULL, NULL, M, c4, s,
                              err);
}

/* The whole generator from B->x32 and B->ctx32 into B->y32, enqueued. */
static int forward(e2g_cuda_engine *E, bucket *B, const run_plan *rp, char *err) {
    int skips = E->cfg.unet_skips;
    TRY(prep_input(B->xin, B->x32, E->dc.stream, err));
    TRY(conv_block(E, B, rp, G_ENC1, B->xin, B->e1, NULL, err));
    TRY(conv_block(E, B, rp, G_ENC2, B->e1, B->e2, NULL, err));
    TRY(conv_block(E, B, rp, G_ENC3, B->e2, B->r0, NULL, err));
    TRY(conv_block(E, B, rp, G_RB1A, B->r0, B->r1, NULL, err));
    TRY(conv_block(E, B, rp, G_RB1B, B->r1, B->r2, &B->r0, err));
    TRY(conv_block(E, B, rp, G_RB2A, B->r2, B->r1, NULL, err));
    TRY(conv_block(E, B, rp, G_RB2B, B->r1, B->r3, &B->r2, err));
    TRY(conv_block(E, B, rp, G_DS, B->r3, B->t0, NULL, err));
    TRY(transformer(E, B, rp, err));
    TRY(conv_block(E, B, rp, G_US, B->t3, B->s0, NULL, err));
    TRY(conv_block(E, B, rp, G_RB3A, B->s0, B->s1, NULL, err));
    TRY(conv_block(E, B, rp, G_RB3B, B->s1, B->s2, &B->s0, err));
    TRY(conv_block(E, B, rp, G_DEC2, B->s2, B->d2, skips ? &B->e2 : NULL, err));
    TRY(conv_block(E, B, rp, G_DEC1, B->d2, B->d1, skips ? &B->e1 : NULL, err));
    tview none = {};
    return conv_block(E, B, rp, G_OUT, B->d1, none, NULL, err);
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
            fprintf(stderr, "e2gan: CUDA graph capture failed (%s); running without graphs\n",
                    rc ? err : cudaGetErrorString(end));
            return forward(E, B, rp, err);
        }
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

/* After a failure: wait for what was queued and clear non-sticky errors. */
static void recover(e2g_cuda_engine *E) {
    cudaStreamSynchronize(E->dc.stream);
    cudaGetLastError();
}

extern "C" int e2g_cuda_engine_run(e2g_cuda_engine *E, float *y, const float *x, const e2g_edit *edits, int N,
                                   int H, int W, int merged, char *err) {
    pthread_mutex_lock(&E->mu);
    run_plan rp;
    bucket *B = NULL;
    size_t img = (size_t)N * H * W * 3 * sizeof(float);
    int rc = prepare_batch(E, &B, &rp, edits, N, H, W, merged, err);
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
    int rc = prepare_batch(E, &B, &rp, edits, N, H, W, merged, err);
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
    int rc = plan_run(E, &rp, edits, N, merged, err);
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
    int p = reflect ? cs->pad : 0, Ho = upsample ? 2 * H : conv2d_out_size(H, cs), Wo = upsample ? 2 * W : conv2d_out_size(W, cs);
    size_t nx = (size_t)N * H * W * cin, nw = (size_t)cout * cin * k * k;
    size_t npad = (size_t)N * (H + 2 * p) * (W + 2 * p) * cin, npk = upsample ? (size_t)16 * cout * cin : nw;
    size_t nraw = upsample ? (size_t)N * (H + 1) * (W + 1) * 4 * cout : (size_t)N * Ho * Wo * cout, ny = (size_t)N * Ho * Wo * cout;
    float *x32 = (float *)alloc(nx * 4), *w32 = (float *)alloc(nw * 4), *b32 = (float *)alloc(cout * 4), *y32 = (float *)alloc(ny * 4);
    bf16 *x16 = (bf16 *)alloc(nx * 2), *xp = (bf16 *)alloc(npad * 2), *wpk = (bf16 *)alloc(npk * 2);
    bf16 *raw = (bf16 *)alloc(nraw * 2), *y16 = (bf16 *)alloc(ny * 2);
    if (bufs.size() != 9) return e2g_fail(err, "CUDA: out of memory for a conv check");
    CUDA_TRY(cudaMemcpy(x32, x, nx * 4, cudaMemcpyHostToDevice));
    CUDA_TRY(cudaMemcpy(w32, w, nw * 4, cudaMemcpyHostToDevice));
    CUDA_TRY(cudaMemset(b32, 0, cout * 4));
    if (bias) CUDA_TRY(cudaMemcpy(b32, bias, cout * 4, cudaMemcpyHostToDevice));
    TRY(f32_to_bf16(x16, x32, nx, E->dc.stream, err));
    epilogue_args pad = {}; /* the engine's way to reflect-pad: an epilogue with nothing to do */
    pad.src = {x16, N, H, W, cin, cin, 0};
    pad.dst = {xp, N, H, W, cin, p};
    TRY(block_epilogue(pad, E->dc.stream, err));
    pack_args pa = {};
    pa.dst = wpk, pa.base = w32, pa.cout = cout, pa.cin = cin, pa.k = k, pa.cout_pad = cout, pa.cin_pad = cin;
    pa.phase = upsample;
    TRY(pack_weights(pa, E->dc.stream, err));
    if (upsample)
        TRY(conv_fwd(&E->dc, raw, xp, wpk, N, H, W, cin, 4 * cout, 2, 1, 1, err));
    else
        TRY(conv_fwd(&E->dc, raw, xp, wpk, N, H + 2 * p, W + 2 * p, cin, cout, k, cs->stride, reflect ? 0 : cs->pad, err));
    epilogue_args ep = {};
    ep.src = {raw, N, Ho, Wo, cout, upsample ? 4 * cout : cout, upsample};
    ep.bias = b32;
    ep.dst = {y16, N, Ho, Wo, cout, 0};
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
