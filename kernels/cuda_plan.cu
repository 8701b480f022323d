/* cuda_plan.cu — the GPU executors' plan of the generator's node table
 * (cuda_plan.cuh): weight slots, crucial-layer sites, output and gradient
 * storage, fusions, and the activation layout.  Host code only. */
#include <string.h>

#include <algorithm>

#include "cuda_plan.cuh"

namespace e2g {

namespace {

enum { R_IN0, R_IN1, R_IN2, R_ADD };

int round8(int x) { return (x + 7) / 8 * 8; }

/* Calls f(consumer, role) for every use of node j: as input in[r] (role
 * r) or as `add` (role R_ADD) of a later node. */
template <typename F>
void for_each_use(const e2g_net &net, int j, F f) {
    for (int c = j + 1; c < net.n; c++) {
        const e2g_node &nd = net.node[c];
        for (int r = 0; r < 3; r++)
            if (nd.in[r] == j) f(c, r);
        if (nd.add == j) f(c, (int)R_ADD);
    }
}

int count_uses(const e2g_net &net, int j) {
    int n = 0;
    for_each_use(net, j, [&](int, int) { n++; });
    return n;
}

/* A LINEAR that may share a slot with its neighbours: no add, no activation. */
int groupable(const e2g_node &nd) { return nd.op == E2G_OP_LINEAR && nd.add < 0 && nd.act == E2G_ACT_NONE; }

int plan_slots(gen_plan *p, char *err) {
    const e2g_net &net = p->net;
    for (int i = 0; i < net.n; i++) {
        const e2g_node &nd = net.node[i];
        node_plan &np = p->np[i];
        if (nd.op == E2G_OP_CONV) {
            const e2g_conv_shape &c = nd.conv;
            if (nd.act != E2G_ACT_NONE && nd.act != E2G_ACT_RELU)
                return e2g_fail(err, "%s: only ReLU follows a convolution on the GPU", nd.name);
            if (nd.upsample && (c.k != 3 || c.stride != 1 || c.pad != 1 || c.pad_mode != E2G_PAD_ZERO || c.cin % 8))
                return e2g_fail(err, "%s: a ×2 upsample needs a 3×3, stride 1, zero pad 1 conv over 8k channels",
                                nd.name);
            wslot &s = p->slot[p->n_slots];
            s.parts = 1, s.part_node[0] = i, s.rows = s.cout = c.cout, s.cout_pad = round8(c.cout);
            s.cin = c.cin, s.cin_pad = round8(c.cin), s.k = c.k, s.stride = c.stride, s.pad = c.pad;
            s.reflect = c.pad_mode == E2G_PAD_REFLECT, s.phase = nd.upsample, s.is_conv = 1;
            s.bias = nd.bias && !nd.norm, s.norm = nd.norm, s.film = nd.film, s.relu = nd.act == E2G_ACT_RELU;
            s.skip_gate = nd.add_gate;
            s.w_elems = s.phase ? (size_t)4 * s.cout_pad * 4 * s.cin : (size_t)s.cout_pad * s.k * s.k * s.cin_pad;
            np.slot = p->n_slots++, np.part = 0;
        } else if (nd.op == E2G_OP_LINEAR) {
            if (nd.act != E2G_ACT_NONE && nd.act != E2G_ACT_GELU)
                return e2g_fail(err, "%s: only GELU follows a linear layer on the GPU", nd.name);
            if (nd.add >= 0 && nd.act != E2G_ACT_NONE)
                return e2g_fail(err, "%s: a linear layer with both an activation and an add", nd.name);
            if (!nd.bias || nd.cin % 8 || nd.cout % 8)
                return e2g_fail(err, "%s: the GPU's linear layers need a bias and 8k channels", nd.name);
            int prev = i - 1;
            if (groupable(nd) && prev >= 0 && groupable(net.node[prev])) {
                wslot &s = p->slot[p->np[prev].slot];
                const e2g_node &first = net.node[s.part_node[0]];
                if (first.in[0] == nd.in[0] && s.rows == nd.cout && s.cin == nd.cin && s.parts < PLAN_MAX_PARTS) {
                    np.slot = p->np[prev].slot, np.part = s.parts;
                    s.part_node[s.parts++] = i;
                    s.cout = s.cout_pad = s.parts * s.rows;
                    s.w_elems = (size_t)s.cout * s.cin;
                    continue;
                }
            }
            wslot &s = p->slot[p->n_slots];
            s.parts = 1, s.part_node[0] = i, s.rows = s.cout = s.cout_pad = nd.cout;
            s.cin = s.cin_pad = nd.cin, s.k = 1, s.stride = 1;
            s.bias = 1, s.gelu = nd.act == E2G_ACT_GELU;
            s.w_elems = (size_t)s.cout * s.cin;
            np.slot = p->n_slots++, np.part = 0;
        }
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int i = p->site_node[l] = e2g_net_crucial_node(&net, l);
        if (i < 0 || p->np[i].slot < 0)
            return e2g_fail(err, "crucial layer %d is not a conv or linear node of the network", l);
    }
    return 0;
}

/* OUTPUT reads a conv that nothing else reads: that conv's epilogue is the
 * output layer (tanh, the logit residual), from its raw output. */
int plan_output(gen_plan *p, char *err) {
    const e2g_net &net = p->net;
    int o = net.output;
    if (o < 0 || net.node[o].op != E2G_OP_OUTPUT) return e2g_fail(err, "the network must end in an OUTPUT node");
    const e2g_node &out = net.node[o];
    int c = out.in[0];
    const e2g_node *cv = c >= 0 ? &net.node[c] : NULL;
    if (!cv || cv->op != E2G_OP_CONV || cv->norm || cv->act != E2G_ACT_NONE || cv->add >= 0 || !cv->bias ||
        cv->upsample || cv->cout != 3 || out.cout != 3 || count_uses(net, c) != 1)
        return e2g_fail(err, "%s: the GPU needs a biased 3-channel conv read only by the output", out.name);
    if (out.in[1] != net.input || net.node[net.input].cout != 3)
        return e2g_fail(err, "%s: the GPU's output layer reads the 3-channel image input", out.name);
    if (out.film && (!out.residual || out.in[2] != net.context))
        return e2g_fail(err, "%s: the GPU's output gate scales the image's term from the context", out.name);
    p->np[c].to_output = 1;
    p->np[o].fused_into = c;
    return 0;
}

/* How each node's output is stored, and the residual + layer norm fusion. */
int plan_storage(gen_plan *p, char *err) {
    const e2g_net &net = p->net;
    for (int j = 0; j < net.n; j++) {
        const e2g_node &nd = net.node[j];
        node_plan &np = p->np[j];
        np.C = np.ld = nd.cout;
        switch (nd.op) {
        case E2G_OP_INPUT:
            np.has_bf16 = 1, np.C = np.ld = round8(nd.cout);
            break;
        case E2G_OP_CONV:
            np.has_bf16 = !np.to_output;
            if (np.has_bf16 && nd.cout % 8)
                return e2g_fail(err, "%s: the GPU's conv epilogue needs 8k output channels", nd.name);
            break;
        case E2G_OP_CONTEXT:
        case E2G_OP_LAYERNORM:
        case E2G_OP_ATTENTION:
            np.has_bf16 = np.dense = 1;
            break;
        case E2G_OP_LINEAR:
            np.dense = 1;
            if (nd.add < 0) {
                np.has_bf16 = 1, np.ld = p->slot[np.slot].cout;
                break;
            }
            /* the residual stream: fp32 for the token ops that take it so, bf16 for the rest */
            for_each_use(net, j, [&](int c, int role) {
                e2g_op op = net.node[c].op;
                if ((op == E2G_OP_LAYERNORM && role == R_IN0) || (op == E2G_OP_LINEAR && role == R_ADD))
                    np.has_f32 = 1;
                else
                    np.has_bf16 = 1;
            });
            if (j + 1 < net.n && net.node[j + 1].op == E2G_OP_LAYERNORM && net.node[j + 1].in[0] == j)
                np.fused_ln = j + 1, p->np[j + 1].fused_into = j;
            break;
        case E2G_OP_OUTPUT:
            break;
        }
        if (nd.op == E2G_OP_LAYERNORM && nd.cout > 1024)
            return e2g_fail(err, "%s: layer norm over %d > 1024 channels", nd.name, nd.cout);
    }
    /* What each consumer needs of its input: a reflect-padded view for a
     * reflect-padded conv (cuDNN then pads nothing), an unpadded one for
     * other convs, dense token rows for token ops. */
    for (int j = 0; j < net.n; j++) {
        node_plan &np = p->np[j];
        int want = -1, rc = 0;
        for_each_use(net, j, [&](int c, int role) {
            const e2g_node &cn = net.node[c];
            const char *why = NULL;
            int need = -1;
            int rows_ok = np.has_bf16 && np.ld == np.C; /* whole dense rows, not a column block */
            if (cn.op == E2G_OP_CONV && role == R_IN0) {
                const wslot &s = p->slot[p->np[c].slot];
                need = s.reflect ? s.pad : 0;
                if (!np.has_bf16 || np.ld != np.C || np.C != (s.phase ? s.cin : s.cin_pad))
                    why = "a conv input must be a whole view of its channels";
            } else if (cn.op == E2G_OP_CONV && role == R_ADD) {
                if (!np.has_bf16 || np.ld != np.C || net.node[j].cout != cn.cout)
                    why = "a conv's add must be a whole view of its channels";
            } else if ((cn.op == E2G_OP_CONV && role == R_IN1) || (cn.op == E2G_OP_OUTPUT && role == R_IN2)) {
                np.dense = 1, need = 0;
                if (!(cn.film || cn.add_gate) || !rows_ok) why = "FiLM reads whole bf16 token rows of its context";
            } else if (cn.op == E2G_OP_OUTPUT) {
                /* in[0]: the fused conv; in[1]: the input image, read in fp32 */
            } else {
                np.dense = 1, need = 0;
                if (cn.op == E2G_OP_LINEAR && role == R_IN0 && !rows_ok)
                    why = "a linear layer's input must be whole token rows";
                if (((cn.op == E2G_OP_LINEAR && role == R_ADD) || cn.op == E2G_OP_LAYERNORM) && !np.has_f32 &&
                    !rows_ok)
                    why = "a residual or layer norm input must be whole token rows";
                if (cn.op == E2G_OP_ATTENTION && !np.has_bf16) why = "attention reads bf16 rows";
            }
            if (need >= 0 && want >= 0 && need != want) why = "its consumers want different paddings";
            if (need >= 0) want = need;
            if (why && !rc) rc = e2g_fail(err, "%s → %s: %s", net.node[j].name, cn.name, why);
        });
        if (rc) return rc;
        np.pad = want > 0 ? want : 0;
        if (np.dense && np.pad)
            return e2g_fail(err, "%s: token rows cannot be stored reflect-padded", net.node[j].name);
    }
    return 0;
}

/* Gradient storage (the trainer): see node_plan.grad. */
int plan_grads(gen_plan *p, char *err) {
    const e2g_net &net = p->net;
    for (int j = 0; j < net.n; j++) {
        const e2g_node &nd = net.node[j];
        node_plan &np = p->np[j];
        if (nd.op == E2G_OP_INPUT || nd.op == E2G_OP_OUTPUT || np.to_output) {
            np.grad = GRAD_NONE;
            continue;
        }
        int uses = 0, single_ok = 0;
        for_each_use(net, j, [&](int c, int role) {
            const e2g_node &cn = net.node[c];
            if (cn.op == E2G_OP_LINEAR && role == R_IN0 && p->np[c].part > 0) return; /* its slot counted it */
            uses++;
            single_ok = (cn.op == E2G_OP_LINEAR && role == R_IN0) || cn.op == E2G_OP_ATTENTION;
        });
        if (!uses) return e2g_fail(err, "%s: nothing reads it", nd.name);
        int bf16_ok = (nd.op == E2G_OP_LINEAR && nd.add < 0) || nd.op == E2G_OP_LAYERNORM ||
                      nd.op == E2G_OP_ATTENTION || nd.op == E2G_OP_CONTEXT;
        np.grad = bf16_ok && uses == 1 && single_ok ? GRAD_BF16 : GRAD_F32;
    }
    for (int s = 0; s < p->n_slots; s++)
        for (int q = 0; p->slot[s].parts > 1 && q < p->slot[s].parts; q++)
            if (p->np[p->slot[s].part_node[q]].grad != GRAD_BF16)
                return e2g_fail(err, "%s: a concatenated projection must have one consumer",
                                net.node[p->slot[s].part_node[q]].name);
    for (int a = 0; a < net.n; a++) {
        const e2g_node &nd = net.node[a];
        if (nd.op != E2G_OP_ATTENTION) continue;
        for (int r = 0; r < 3; r++)
            if (nd.in[r] < 0 || p->np[nd.in[r]].grad != GRAD_BF16)
                return e2g_fail(err, "%s: attention inputs must be read by the attention only", nd.name);
        if (p->np[nd.in[1]].ld != p->np[nd.in[2]].ld)
            return e2g_fail(err, "%s: keys and values must share their row stride", nd.name);
        if (nd.heads < 1 || !attention_supported(nd.cout, nd.heads))
            return e2g_fail(err, "%s: attention head size %d unsupported on the GPU", nd.name,
                            nd.heads ? nd.cout / nd.heads : 0);
    }
    return 0;
}

conv_geom geometry(const gen_plan *p, const e2g_node_shape *sh, int i) {
    const e2g_node &nd = p->net.node[i];
    const wslot &s = p->slot[p->np[i].slot];
    int in = nd.in[0], pin = p->np[in].pad, h = sh[in].h, w = sh[in].w;
    conv_geom g;
    g.Hp = h + 2 * pin, g.Wp = w + 2 * pin, g.C = p->np[in].C;
    if (s.phase) {
        g.K = 4 * s.cout_pad, g.R = 2, g.stride = 1, g.pad = 1;
        g.Ho = 2 * h, g.Wo = 2 * w, g.Hg = h + 1, g.Wg = w + 1, g.Cs = 4 * s.cout_pad;
    } else {
        g.K = s.cout_pad, g.R = s.k, g.stride = s.stride, g.pad = s.reflect ? 0 : s.pad;
        g.Ho = g.Hg = (g.Hp + 2 * g.pad - g.R) / g.stride + 1;
        g.Wo = g.Wg = (g.Wp + 2 * g.pad - g.R) / g.stride + 1;
        g.Cs = s.cout_pad;
    }
    return g;
}

/* Shapes that must agree, checked at one size. */
int plan_check_shapes(const gen_plan *p, char *err) {
    const e2g_net &net = p->net;
    e2g_node_shape sh[PLAN_MAX];
    e2g_net_shapes(&net, 256, 256, p->T, sh);
    for (int i = 0; i < net.n; i++) {
        const e2g_node &nd = net.node[i];
        const char *why = NULL;
        if (nd.op == E2G_OP_CONV) {
            conv_geom g = geometry(p, sh, i);
            if (g.Ho != sh[i].h || g.Wo != sh[i].w) why = "its convolution does not give its shape";
        }
        if (nd.add >= 0 && (sh[nd.add].h != sh[i].h || sh[nd.add].w != sh[i].w || sh[nd.add].c != sh[i].c))
            why = "its add has another shape";
        if (nd.op == E2G_OP_ATTENTION && (sh[nd.in[1]].h * sh[nd.in[1]].w != sh[nd.in[2]].h * sh[nd.in[2]].w ||
                                          sh[nd.in[0]].c != nd.cout || sh[nd.in[1]].c != nd.cout))
            why = "its q, k, v shapes disagree";
        if (nd.op == E2G_OP_OUTPUT && (sh[nd.in[0]].h != sh[nd.in[1]].h || sh[nd.in[0]].w != sh[nd.in[1]].w))
            why = "its inputs' shapes disagree";
        if (why) return e2g_fail(err, "%s: %s", nd.name, why);
    }
    return 0;
}

tview take_view(dev_arena *ar, int N, int H, int W, int C, int pad, size_t align_elems) {
    tview v = {NULL, N, H, W, C, pad, 0};
    size_t per = (size_t)(H + 2 * pad) * (W + 2 * pad) * C;
    if (align_elems && per % align_elems) {
        v.ns = (per + align_elems - 1) / align_elems * align_elems;
        per = v.ns;
    }
    v.p = ar->take<bf16>((size_t)N * per);
    return v;
}

} // namespace

int gen_plan_build(gen_plan *p, const e2g_gen_config *cfg, char *err) {
    memset(p, 0, sizeof *p);
    e2g_gen_net(&p->net, cfg);
    p->T = cfg->ctx_tokens;
    for (int i = 0; i < p->net.n; i++) {
        node_plan &np = p->np[i];
        np.slot = np.part = np.fused_ln = np.fused_into = -1;
    }
    if (p->net.node[p->net.input].cout > 8) return e2g_fail(err, "the GPU takes at most 8 input channels");
    TRY(plan_slots(p, err));
    TRY(plan_output(p, err));
    TRY(plan_storage(p, err));
    TRY(plan_grads(p, err));
    return plan_check_shapes(p, err);
}

void plan_layout(const gen_plan *p, int N, int H, int W, int keep, size_t sample_align, dev_arena *ar,
                 act_layout *L) {
    const e2g_net &net = p->net;
    size_t align_elems = sample_align / sizeof(bf16), proj_max = 0;
    L->N = N, L->H = H, L->W = W;
    L->raw_max = L->conv_in_max = L->rows_max = L->stats_max = L->affine_max = 0;
    e2g_net_shapes(&net, H, W, p->T, L->sh);
    for (int i = 0; i < net.n; i++) {
        const e2g_node &nd = net.node[i];
        const e2g_node_shape &s = L->sh[i];
        node_buf &b = L->b[i];
        b = node_buf{};
        b.M = (size_t)N * s.h * s.w;
        L->rows_max = std::max(L->rows_max, b.M * s.c);
        if (nd.op == E2G_OP_CONV) {
            b.g = geometry(p, L->sh, i);
            L->raw_max = std::max(L->raw_max, (size_t)N * b.g.Hg * b.g.Wg * b.g.Cs);
            L->conv_in_max = std::max(L->conv_in_max, (size_t)N * b.g.Hp * b.g.Wp * b.g.C);
            if (nd.norm) L->stats_max = std::max(L->stats_max, (size_t)N * 2 * nd.cout);
        }
        if (nd.film) L->affine_max = std::max(L->affine_max, plan_film_floats(net, N, i));
        if (nd.op == E2G_OP_LINEAR && nd.add >= 0) proj_max = std::max(proj_max, b.M * nd.cout);
    }
    for (int i = 0; i < net.n; i++) {
        const e2g_node &nd = net.node[i];
        const node_plan &np = p->np[i];
        const e2g_node_shape &s = L->sh[i];
        node_buf &b = L->b[i];
        switch (nd.op) {
        case E2G_OP_INPUT:
        case E2G_OP_CONV:
            if (np.has_bf16) {
                b.v = take_view(ar, N, s.h, s.w, np.C, np.pad, np.dense ? 0 : align_elems);
                b.rows = b.v.p;
            }
            break;
        case E2G_OP_CONTEXT:
        case E2G_OP_LAYERNORM:
        case E2G_OP_ATTENTION:
            b.v = take_view(ar, N, s.h, s.w, np.C, 0, 0);
            b.rows = b.v.p;
            break;
        case E2G_OP_LINEAR: {
            const wslot &sl = p->slot[np.slot];
            if (nd.add >= 0) {
                if (np.has_f32) b.f32 = ar->take<float>(b.M * nd.cout);
                if (np.has_bf16) b.v = take_view(ar, N, s.h, s.w, nd.cout, 0, 0), b.rows = b.v.p;
            } else if (np.part == 0) { /* the slot's concatenated output; a view when it is one part */
                b.rows = ar->take<bf16>(b.M * sl.cout);
                b.v = tview{b.rows, N, s.h, s.w, sl.cout, 0, 0};
            } else { /* a column block of it (NULL while counting) */
                bf16 *base = L->b[sl.part_node[0]].rows;
                b.rows = base ? base + (size_t)np.part * sl.rows : NULL;
            }
            if (keep && sl.gelu) b.pre = ar->take<bf16>(b.M * nd.cout);
            break;
        }
        case E2G_OP_OUTPUT:
            break;
        }
        if (nd.op == E2G_OP_CONV && keep) {
            b.raw = ar->take<bf16>((size_t)N * b.g.Hg * b.g.Wg * b.g.Cs);
            if (nd.norm) b.stats = ar->take<float>((size_t)N * 2 * nd.cout);
        }
        if (nd.film && keep) b.affine = ar->take<float>(plan_film_floats(net, N, i));
        if (nd.add_gate) b.skip = ar->take<float>(plan_skip_floats(net, N, i)); /* small: one per node */
    }
    if (!keep) { /* inference: one raw conv output, set of statistics and FiLM rows at a time */
        bf16 *raw = ar->take<bf16>(L->raw_max);
        float *stats = ar->take<float>(std::max(L->stats_max, (size_t)1));
        float *affine = ar->take<float>(std::max(L->affine_max, (size_t)1));
        for (int i = 0; i < net.n; i++) {
            if (net.node[i].op == E2G_OP_CONV) L->b[i].raw = raw;
            if (net.node[i].norm) L->b[i].stats = stats;
            if (net.node[i].film) L->b[i].affine = affine;
        }
    }
    L->proj = ar->take<bf16>(std::max(proj_max, (size_t)1));
}

int plan_attention(const gen_plan &P, const act_layout &L, int i, cudaStream_t stream, char *err) {
    const e2g_node &nd = P.net.node[i];
    int q = nd.in[0], k = nd.in[1], v = nd.in[2];
    return attention(L.b[i].rows, L.b[q].rows, P.np[q].ld, L.b[k].rows, L.b[v].rows, P.np[k].ld, L.N,
                     L.sh[i].h * L.sh[i].w, L.sh[k].h * L.sh[k].w, nd.cout, nd.heads, stream, err);
}

int plan_output_layer(const gen_plan &P, const act_layout &L, float *y, const float *bias, const float *x,
                      const e2g_linear_params *gate, cudaStream_t stream, char *err) {
    int o = P.net.output, c = P.net.node[o].in[0];
    const conv_geom &g = L.b[c].g;
    output_args a = {y, L.b[c].raw, g.Cs, bias, x, P.net.node[o].residual, NULL, L.N, (size_t)g.Ho * g.Wo};
    if (P.net.node[o].film) { /* each sample's gains of the image, from its context */
        film_args f = plan_film(P, L, o, gate->w, gate->b, NULL, NULL);
        TRY(film_affine(f, stream, err));
        a.gain = f.gamma;
    }
    return output_layer(a, stream, err);
}

}  // namespace e2g
