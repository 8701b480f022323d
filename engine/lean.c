/* lean.c — inference with the least memory (e2g_gen_infer), the path that
 * serves every CPU request.  It walks the generator's node table (net.c)
 * like the planned executor, with two differences:
 *
 *  - nothing is kept for a backward: each node's output is freed after
 *    its last use, and norm statistics are scratch;
 *  - the nodes at full resolution (the "band" nodes: enc1, dec1, out and
 *    the output) never exist whole.  They are computed for one image at a
 *    time on bands of rows, on demand: a node asked for rows [r0, r1)
 *    asks its inputs for the rows its convolution reads (the halo),
 *    recursively, so the layers around the full-resolution ones (enc2's
 *    convolution, the output) pull what they need band by band.
 *
 * Band nodes must have no norm (a norm needs the whole image): the form
 * with norm_ends uses the planned executor instead (infer.c).  A batch is
 * walked in passes of a few images (E2G_INFER_PASS_PIXELS, model.h). */
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "common.h"
#include "layers.h"
#include "model.h"
#include "net.h"
#include "ops.h"

/* Output rows computed per band of a full-resolution node: enough to keep
 * oneDNN efficient, small enough that no full-resolution activation ever
 * exists. */
#define BAND_ROWS 32

typedef struct {
    e2g_net net;
    const e2g_gen_params *p;
    const e2g_edit *edits;
    int N, H, W;
    e2g_node_shape shape[E2G_NET_MAX_NODES];
    int band[E2G_NET_MAX_NODES];
    float *whole[E2G_NET_MAX_NODES]; /* whole-batch outputs while alive */
    float *gain[E2G_NET_MAX_NODES];  /* skip gates' gains (N, cout), made on first use */
} lean;

/* A band of rows [lo, lo + rows) of one image's node output. */
typedef struct {
    float *p;
    int lo, rows;
    int owned;
} rows_view;

static size_t image_numel(const lean *ln, int i) {
    return (size_t)ln->shape[i].h * ln->shape[i].w * ln->shape[i].c;
}

static size_t row_numel(const lean *ln, int i) { return (size_t)ln->shape[i].w * ln->shape[i].c; }

/* Copies rows [r0, r1) of an image of height H into dst; src holds rows
 * [src_lo, …).  Rows outside [0, H) are mirrored (reflect) or zero; the
 * mirrored rows must be in src. */
static void gather_rows(float *dst, const float *src, int src_lo, int r0, int r1, int H, size_t row,
                        int reflect) {
    for (int r = r0; r < r1; r++) {
        float *d = dst + (size_t)(r - r0) * row;
        if (reflect || (r >= 0 && r < H)) {
            int from = reflect ? e2g_reflect_index(r, H) : r;
            memcpy(d, src + (size_t)(from - src_lo) * row, row * sizeof(float));
        } else {
            memset(d, 0, row * sizeof(float));
        }
    }
}

static rows_view node_rows(lean *ln, int i, int n, int r0, int r1);

/* The gains of node i's skip gate for the batch. */
static const float *skip_gain(lean *ln, int i) {
    const e2g_node *nd = &ln->net.node[i];
    if (!ln->gain[i]) {
        const e2g_node_shape *ctx = &ln->shape[nd->in[1]];
        ln->gain[i] = e2g_xmalloc((size_t)ln->N * nd->cout * sizeof(float));
        e2g_skip_gain_forward(ln->gain[i], e2g_node_conv(nd, ln->p), ln->whole[nd->in[1]], ln->N,
                              ctx->h * ctx->w, ctx->c, nd->cout);
    }
    return ln->gain[i];
}

/* Rows [r0, r1) of node i's input j for image n, clipped to the image. */
static rows_view input_rows(lean *ln, int j, int n, int r0, int r1) {
    int H = ln->shape[j].h;
    r0 = r0 > 0 ? r0 : 0, r1 = r1 < H ? r1 : H;
    if (ln->band[j]) return node_rows(ln, j, n, r0, r1);
    return (rows_view){ln->whole[j] + n * image_numel(ln, j), 0, H, 0};
}

static void release(rows_view *v) {
    if (v->owned) free(v->p);
}

/* The input band a conv node's output rows [r0, r1) read, gathered with
 * the node's padding: rows [*g0, *g1) of its (virtual, padded) input. */
static float *conv_input_band(lean *ln, const e2g_node *nd, int n, int r0, int r1, int *rows) {
    int j = nd->in[0], Hin = ln->shape[j].h, g0, g1;
    if (nd->upsample) /* the ×2 conv reads input rows r0/2 − 1 .. r1/2 (r0, r1 even) */
        g0 = r0 / 2 - 1, g1 = r1 / 2 + 1;
    else
        g0 = r0 * nd->conv.stride - nd->conv.pad, g1 = (r1 - 1) * nd->conv.stride - nd->conv.pad + nd->conv.k;
    int reflect = !nd->upsample && nd->conv.pad_mode == E2G_PAD_REFLECT;
    rows_view src = input_rows(ln, j, n, g0, g1);
    size_t row = row_numel(ln, j);
    float *band = e2g_xmalloc((size_t)(g1 - g0) * row * sizeof(float));
    gather_rows(band, src.p, src.lo, g0, g1, Hin, row, reflect);
    release(&src);
    *rows = g1 - g0;
    return band;
}

/* conv + LoRA of a conv node on the band its output rows [r0, r1) read
 * (into out, (r1 − r0) rows). */
static void conv_band(lean *ln, const e2g_node *nd, int n, int r0, int r1, float *out) {
    int rows, Win = ln->shape[nd->in[0]].w;
    const e2g_conv_params *cp = e2g_node_conv(nd, ln->p);
    float *band = conv_input_band(ln, nd, n, r0, r1, &rows);
    e2g_layer_conv_forward_band(out, band, cp->w, nd->bias ? cp->b : NULL, rows, Win, &nd->conv, nd->upsample);
    if (nd->crucial >= 0) e2g_lora_conv_forward_band(out, band, &ln->edits[n], nd->crucial, &nd->conv, rows, Win, nd->upsample);
    free(band);
}

/* Rows [r0, r1) (or a few more: an upsampling conv computes even-aligned
 * pairs) of band node i for image n. */
static rows_view node_rows(lean *ln, int i, int n, int r0, int r1) {
    const e2g_node *nd = &ln->net.node[i];
    E2G_ASSERT(nd->op == E2G_OP_CONV && !nd->norm);
    if (nd->upsample) r0 &= ~1, r1 += r1 & 1;
    size_t row = row_numel(ln, i), count = (size_t)(r1 - r0) * row;
    rows_view v = {e2g_xmalloc(count * sizeof(float)), r0, r1 - r0, 1};
    conv_band(ln, nd, n, r0, r1, v.p);
    if (nd->act == E2G_ACT_RELU) e2g_relu_forward(v.p, v.p, count);
    if (nd->act == E2G_ACT_LRELU) e2g_leakyrelu_forward(v.p, v.p, E2G_LRELU_SLOPE, count);
    if (nd->add >= 0) {
        rows_view a = input_rows(ln, nd->add, n, r0, r1);
        const float *skip = a.p + (size_t)(r0 - a.lo) * row;
        if (nd->add_gate)
            e2g_add_gated_forward(v.p, v.p, skip, skip_gain(ln, i) + (size_t)n * nd->cout, 1, count / nd->cout,
                                  nd->cout);
        else
            e2g_add_forward(v.p, v.p, skip, count);
        release(&a);
    }
    return v;
}

/* ---- whole-batch nodes ---------------------------------------------------------------- */

/* A conv node over the whole batch; a band input is pulled band by band
 * for its convolution, the norm then sees the whole output. */
static void conv_whole(lean *ln, int i, float *out) {
    const e2g_node *nd = &ln->net.node[i];
    const e2g_node_shape *in = &ln->shape[nd->in[0]], *o = &ln->shape[i];
    int N = ln->N;
    block_acts b = {in->h, in->w, o->h, o->w, out, NULL, NULL, out, NULL};
    const e2g_conv_params *cp = e2g_node_conv(nd, ln->p);
    if (nd->norm) {
        b.mean = e2g_xmalloc((size_t)N * nd->cout * sizeof(float));
        b.rstd = e2g_xmalloc((size_t)N * nd->cout * sizeof(float));
    }
    if (nd->film) {
        const e2g_node_shape *ctx = &ln->shape[nd->in[1]];
        b.affine = e2g_xmalloc(2 * (size_t)N * nd->cout * sizeof(float));
        e2g_film_forward(b.affine, cp, ln->whole[nd->in[1]], N, ctx->h * ctx->w, ctx->c, nd->cout);
    }
    if (ln->band[nd->in[0]]) {
        int step = nd->upsample ? BAND_ROWS : BAND_ROWS / nd->conv.stride;
        for (int n = 0; n < N; n++)
            for (int r0 = 0; r0 < o->h; r0 += step) {
                int r1 = r0 + step < o->h ? r0 + step : o->h;
                conv_band(ln, nd, n, r0, r1, out + n * image_numel(ln, i) + (size_t)r0 * row_numel(ln, i));
            }
        e2g_block_finish(&b, nd, cp, N);
    } else {
        e2g_block_forward(&b, nd, cp, ln->whole[nd->in[0]], N, ln->edits);
    }
    free(b.mean), free(b.rstd), free(b.affine);
}

static void run_whole(lean *ln, int i) {
    const e2g_node *nd = &ln->net.node[i];
    int N = ln->N, L = ln->shape[i].h * ln->shape[i].w;
    size_t n = (size_t)N * image_numel(ln, i);
    const float *in = nd->in[0] >= 0 ? ln->whole[nd->in[0]] : NULL;
    const float *add = nd->add >= 0 ? ln->whole[nd->add] : NULL;
    float *out = ln->whole[i] = e2g_xmalloc(n * sizeof(float));
    switch (nd->op) {
    case E2G_OP_CONTEXT:
        for (int s = 0; s < N; s++)
            memcpy(out + s * image_numel(ln, i), ln->edits[s].context, image_numel(ln, i) * sizeof(float));
        break;
    case E2G_OP_CONV:
        conv_whole(ln, i, out);
        if (nd->add_gate)
            e2g_add_gated_forward(out, out, add, skip_gain(ln, i), N, (size_t)L, nd->cout);
        else if (add)
            e2g_add_forward(out, out, add, n);
        break;
    case E2G_OP_LAYERNORM: {
        const e2g_linear_params *lp = e2g_node_linear(nd, ln->p);
        float *stats = e2g_xmalloc(2 * (size_t)N * L * sizeof(float));
        e2g_layernorm_forward(out, stats, stats + (size_t)N * L, in, lp->w, lp->b, N * L, nd->cout);
        free(stats);
        break;
    }
    case E2G_OP_LINEAR: {
        const e2g_linear_params *lp = e2g_node_linear(nd, ln->p);
        int accumulate = add && nd->act == E2G_ACT_NONE;
        if (accumulate) memcpy(out, add, n * sizeof(float));
        e2g_linear_forward(out, in, lp->w, lp->b, N * L, nd->cin, nd->cout, accumulate);
        if (nd->crucial >= 0) e2g_lora_linear_forward(out, in, ln->edits, nd->crucial, L, nd->cin, nd->cout, N);
        if (nd->act == E2G_ACT_GELU) e2g_gelu_forward(out, out, n);
        if (add && !accumulate) e2g_add_forward(out, out, add, n);
        break;
    }
    case E2G_OP_ATTENTION: {
        int k = nd->in[1];
        float *lse = e2g_xmalloc((size_t)N * L * nd->heads * sizeof(float));
        e2g_attention_forward(out, lse, in, ln->whole[k], ln->whole[nd->in[2]], N, L,
                          ln->shape[k].h * ln->shape[k].w, nd->cout, nd->heads);
        free(lse);
        break;
    }
    default: E2G_ASSERT(0);
    }
}

/* ---- the walk -------------------------------------------------------------------------- */

/* The step after which each node's whole output is no longer needed: its
 * last consumer, where a band consumer counts at the steps that pull it
 * (its whole consumers, transitively; the output pulls at the end). */
static void last_uses(const lean *ln, int *last) {
    const e2g_net *net = &ln->net;
    int pull[E2G_NET_MAX_NODES];
    for (int i = net->n - 1; i >= 0; i--) {
        pull[i] = i == net->output ? net->n : -1;
        last[i] = -1;
        for (int c = i + 1; c < net->n; c++) {
            const e2g_node *nc = &net->node[c];
            int reads = nc->add == i;
            for (int k = 0; k < 3; k++) reads |= nc->in[k] == i;
            if (!reads) continue;
            int t = ln->band[c] ? pull[c] : c;
            if (t > last[i]) last[i] = t;
        }
        if (ln->band[i]) pull[i] = pull[i] > last[i] ? pull[i] : last[i];
    }
}

/* One pass of the walk over N images. */
static void infer_pass(const e2g_gen_config *cfg, float *y, const e2g_gen_params *p, const float *x,
                       const e2g_edit *edits, int N, int H, int W) {
    lean ln = {.p = p, .edits = edits, .N = N, .H = H, .W = W};
    e2g_gen_net(&ln.net, cfg);
    const e2g_net *net = &ln.net;
    e2g_net_shapes(net, H, W, cfg->ctx_tokens, ln.shape);
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        ln.band[i] = (nd->op == E2G_OP_CONV || nd->op == E2G_OP_OUTPUT) && ln.shape[i].h == H &&
                     ln.shape[i].w == W;
        E2G_ASSERT(!ln.band[i] || !nd->norm);
    }
    int last[E2G_NET_MAX_NODES];
    last_uses(&ln, last);
    ln.whole[net->input] = (float *)x;
    for (int i = 0; i < net->n; i++) {
        const e2g_node *nd = &net->node[i];
        if (i == net->output) { /* band by band, straight into y */
            int o = nd->in[0];
            size_t img = image_numel(&ln, i), row = row_numel(&ln, i);
            float *gain = NULL;
            if (nd->film) {
                const e2g_node_shape *ctx = &ln.shape[nd->in[2]];
                gain = e2g_xmalloc(3 * (size_t)N * sizeof(float));
                e2g_output_gain_forward(gain, e2g_node_linear(nd, p), ln.whole[nd->in[2]], N, ctx->h * ctx->w,
                                        ctx->c);
            }
            for (int n = 0; n < N; n++)
                for (int r0 = 0; r0 < H; r0 += BAND_ROWS) {
                    int r1 = r0 + BAND_ROWS < H ? r0 + BAND_ROWS : H;
                    rows_view v = input_rows(&ln, o, n, r0, r1);
                    size_t at = n * img + (size_t)r0 * row, count = (size_t)(r1 - r0) * row;
                    const float *band = v.p + (size_t)(r0 - v.lo) * row;
                    if (gain)
                        e2g_output_gated_forward(y + at, band, x + at, gain + 3 * n, count);
                    else
                        e2g_output_forward(y + at, band, x + at, nd->residual, count);
                    release(&v);
                }
            free(gain);
        } else if (!ln.band[i] && i != net->input) {
            run_whole(&ln, i);
        }
        for (int j = 0; j < i; j++)
            if (last[j] == i && j != net->input) free(ln.whole[j]), ln.whole[j] = NULL;
    }
    for (int j = 0; j < net->n; j++) {
        if (j != net->input) free(ln.whole[j]);
        free(ln.gain[j]);
    }
}

void e2g_gen_infer(const e2g_gen_config *cfg, float *y, const e2g_gen_params *p, const float *x,
                   const e2g_edit *edits, int N, int H, int W) {
    E2G_ASSERT(!cfg->norm_ends && H % 8 == 0 && W % 8 == 0);
    size_t pixels = (size_t)H * W, image = pixels * 3;
    int per_pass = pixels >= E2G_INFER_PASS_PIXELS ? 1 : (int)(E2G_INFER_PASS_PIXELS / pixels);
    for (int n0 = 0; n0 < N; n0 += per_pass) {
        int n = N - n0 < per_pass ? N - n0 : per_pass;
        infer_pass(cfg, y + n0 * image, p, x + n0 * image, edits + n0, n, H, W);
    }
}
