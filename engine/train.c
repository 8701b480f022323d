/* train.c — the training loop (see train.h).
 *
 * One step: draw the batch of (seed, step); G forward; when the GAN term is
 * on, a D step on real and fake pairs (LSGAN, ½ each) and then G's
 * adversarial gradient through the updated D; λ·L1 (with dark_weight, its
 * dark-pixel-weighted form); with edge_weight, the gradient-domain L1 term;
 * G backward into the full parameters or into the adapter; Adam.  The
 * batch of a step depends only on (seed, step) and every kernel is
 * deterministic for a thread count, so a run resumed from a checkpoint ends
 * where an unbroken one does.
 *
 * On a device (opts->device) the same loop drives the backend's trainer
 * (backend.h; CUDA: kernels/cuda_trainer.h): the batch of step k+1 is
 * decoded into the other pinned slot and uploaded while step k runs;
 * weights and Adam state come back to the host for evaluations,
 * checkpoints and the end. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adam.h"
#include "backend.h"
#include "common.h"
#include "image.h"
#include "infer.h"
#include "metrics.h"
#include "ops.h"
#include "report.h"
#include "safetensors.h"

#define DEFAULT_NDF 64

void e2g_train_defaults(e2g_train_opts *o) {
    *o = (e2g_train_opts){.steps = 1000, .batch = 8, .lr = 2e-4f, .beta1 = 0.5f, .beta2 = 0.999f,
                          .lambda_l1 = 100.0f, .gan_weight = 1.0f, .decay_from = 0.5f, .seed = 1,
                          .eval_every = 250, .checkpoint_every = 100, .log_every = 10,
                          .eval_pairs = 64};
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- edits: which context and LoRA each sample uses ------------------------------ */

/* Model concept index of each dataset concept (full training). */
static int map_concepts(const e2g_model *m, const e2g_dataset *d, int *map, char *err) {
    for (int c = 0; c < d->n_concepts; c++) {
        map[c] = e2g_model_concept(m, d->concepts[c]);
        if (map[c] < 0)
            return e2g_fail(err, "dataset concept '%s' is not a concept of the model", d->concepts[c]);
    }
    return 0;
}

/* Edits for the pairs idx[0..n): their concept's embedding, or the adapter. */
static void pair_edits(e2g_edit *edits, const e2g_train_target *t, const e2g_dataset *d,
                       const int *map, const int *idx, int n) {
    for (int j = 0; j < n; j++) {
        memset(&edits[j], 0, sizeof edits[j]);
        if (t->lora) {
            edits[j].context = t->lora->concept;
            edits[j].n_terms = 1;
            edits[j].terms[0] = (e2g_lora_term){t->lora, 1.0f};
        } else {
            edits[j].context = e2g_model_context(t->model, map[d->pairs[idx[j]].concept]);
        }
    }
}

/* ---- evaluation ------------------------------------------------------------------ */

#define EVAL_BATCH 8
#define SHEET_ROWS_PER_CONCEPT 2
#define CAPTION_LEN 96

/* Per-concept sums over the evaluated pairs; the edge sums only over pairs
 * whose teacher has edges (edge_count of them). */
typedef struct {
    double psnr, ssim, ident_psnr, ident_ssim, const_psnr, const_ssim, paper;
    double edge_f1, edge_p, edge_r, ident_edge_f1, const_edge_f1;
    int count, edge_count;
} eval_sums;

/* The best constant image of a teacher in the L2 sense: its mean colour per
 * channel, rounded to 8 bits, everywhere. */
static void mean_colour_image(uint8_t *dst, const uint8_t *teacher, int S) {
    size_t n = (size_t)S * S;
    uint64_t sum[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) sum[c] += teacher[3 * i + c];
    uint8_t mean[3];
    for (int c = 0; c < 3; c++) mean[c] = (uint8_t)((2 * sum[c] + n) / (2 * n)); /* round half up */
    for (size_t i = 0; i < n; i++) memcpy(dst + 3 * i, mean, 3);
}

/* Adds one pair: the model's edit `out` of source src against teacher dst. */
static void add_pair(eval_sums *a, const uint8_t *out, const uint8_t *src, const uint8_t *dst,
                     uint8_t *constant, int S, double *pair_psnr, double *pair_f1) {
    mean_colour_image(constant, dst, S);
    double psnr = e2g_psnr(out, dst, S, S);
    a->psnr += psnr;
    a->ssim += e2g_ssim(out, dst, S, S);
    a->ident_psnr += e2g_psnr(src, dst, S, S);
    a->ident_ssim += e2g_ssim(src, dst, S, S);
    a->const_psnr += e2g_psnr(constant, dst, S, S);
    a->const_ssim += e2g_ssim(constant, dst, S, S);
    a->paper += e2g_paper_share(dst, S, S);
    e2g_edge_score es;
    double f1 = e2g_edge_f1(out, dst, S, S, &es);
    if (!isnan(f1)) {
        a->edge_f1 += f1, a->edge_p += es.precision, a->edge_r += es.recall;
        a->ident_edge_f1 += e2g_edge_f1(src, dst, S, S, NULL);
        a->const_edge_f1 += e2g_edge_f1(constant, dst, S, S, NULL);
        a->edge_count++;
    }
    a->count++;
    *pair_psnr = psnr, *pair_f1 = f1;
}

/* A mean as JSON: null when there is nothing to average. */
static json_t *json_mean(double sum, int n) { return n ? json_real(sum / n) : json_null(); }

/* The per-concept entry of e2g_evaluate (see train.h), with its verdict. */
static json_t *concept_entry(const eval_sums *a, int *learned) {
    const int n = a->count, ne = a->edge_count;
    double psnr = a->psnr / n, over_ident = psnr - a->ident_psnr / n, over_const = psnr - a->const_psnr / n;
    double paper = a->paper / n, f1 = ne ? a->edge_f1 / ne : NAN;
    int sketch = paper >= E2G_SKETCH_PAPER;
    char why[256] = "";
    size_t len = 0;
    if (!(over_ident >= E2G_LEARNED_MARGIN_DB))
        len += snprintf(why + len, sizeof why - len, "%sPSNR %+.2f dB over identity (needs %+.1f)", len ? "; " : "",
                        over_ident, E2G_LEARNED_MARGIN_DB);
    if (!(over_const >= E2G_LEARNED_MARGIN_DB))
        len += snprintf(why + len, sizeof why - len, "%sPSNR %+.2f dB over the constant image (needs %+.1f)",
                        len ? "; " : "", over_const, E2G_LEARNED_MARGIN_DB);
    if (sketch && !(f1 >= E2G_SKETCH_EDGE_F1))
        len += snprintf(why + len, sizeof why - len, "%ssketch teacher, edge F1 %.2f (needs %.2f)", len ? "; " : "",
                        f1, E2G_SKETCH_EDGE_F1);
    *learned = len == 0;
    json_t *e = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:o,s:o,s:o,s:o,s:o,s:i,s:f,s:b,s:b,s:s,s:i}", "psnr", psnr,
                          "ssim", a->ssim / n, "identity_psnr", a->ident_psnr / n, "identity_ssim",
                          a->ident_ssim / n, "constant_psnr", a->const_psnr / n, "constant_ssim",
                          a->const_ssim / n, "edge_f1", json_mean(a->edge_f1, ne), "edge_precision",
                          json_mean(a->edge_p, ne), "edge_recall", json_mean(a->edge_r, ne), "identity_edge_f1",
                          json_mean(a->ident_edge_f1, ne), "constant_edge_f1", json_mean(a->const_edge_f1, ne),
                          "edge_pairs", ne, "teacher_paper", paper, "sketch", sketch, "learned", *learned,
                          "verdict", *learned ? "learned" : why, "pairs", n);
    return e;
}

json_t *e2g_evaluate(const e2g_train_target *t, const e2g_dataset *val, int max_pairs,
                     const char *sheet_path) {
    int S = val->crop, n_pairs = max_pairs > 0 && max_pairs < val->n_pairs ? max_pairs : val->n_pairs;
    int C = val->n_concepts, *map = e2g_xcalloc(C, sizeof(int));
    char err[E2G_ERR_LEN];
    if (!t->lora && map_concepts(t->model, val, map, err)) {
        free(map);
        return json_pack("{s:s}", "error", err);
    }
    size_t img = (size_t)S * S * 3;
    eval_sums *sums = e2g_xcalloc(C, sizeof(eval_sums));
    float *x = e2g_xmalloc(EVAL_BATCH * img * sizeof(float)), *y = e2g_xmalloc(EVAL_BATCH * img * sizeof(float));
    uint8_t *out = e2g_xmalloc(EVAL_BATCH * img), *constant = e2g_xmalloc(img);
    e2g_image *cells = e2g_xcalloc((size_t)3 * C * SHEET_ROWS_PER_CONCEPT, sizeof(e2g_image));
    char (*captions)[CAPTION_LEN] = e2g_xcalloc((size_t)C * SHEET_ROWS_PER_CONCEPT, CAPTION_LEN);
    int sheet_rows = 0, *total = e2g_xcalloc(C, sizeof(int));
    /* the sheet shows each concept's first evaluated pair and the one halfway
     * through its list, so its rows come from different photos */
    for (int p = 0; p < n_pairs; p++) total[val->pairs[(long)p * val->n_pairs / n_pairs].concept]++;
    e2g_runtime *rt; /* the CPU: the weights change between evaluations */
    e2g_runtime_new(&rt, t->model, "cpu", err);
    e2g_infer *inf = NULL;
    int inf_n = 0;
    for (int p0 = 0; p0 < n_pairs; p0 += EVAL_BATCH) {
        int n = n_pairs - p0 < EVAL_BATCH ? n_pairs - p0 : EVAL_BATCH, idx[EVAL_BATCH];
        e2g_edit edits[EVAL_BATCH];
        /* spread the evaluated pairs over the whole split */
        for (int j = 0; j < n; j++) idx[j] = (int)((long)(p0 + j) * val->n_pairs / n_pairs);
        if (n != inf_n) {
            e2g_infer_free(inf);
            inf = e2g_infer_new(rt, inf_n = n, S, S);
        }
        e2g_pairs_to_tensors(val, idx, n, x, NULL);
        pair_edits(edits, t, val, map, idx, n);
        e2g_infer_run(inf, y, x, edits, 0);
        for (int j = 0; j < n; j++) {
            const e2g_pair *p = &val->pairs[idx[j]];
            e2g_image im = {S, S, out + j * img};
            e2g_image_from_tensor(&im, y + j * img, S, S);
            eval_sums *a = &sums[p->concept];
            double pair_psnr, pair_f1;
            add_pair(a, im.rgb, p->src, p->dst, constant, S, &pair_psnr, &pair_f1);
            int seen = a->count - 1; /* this pair's place among its concept's */
            if (sheet_path && (seen == 0 || (seen == total[p->concept] / 2 && seen > 0))) {
                snprintf(captions[sheet_rows], CAPTION_LEN, "%s: %.1f dB (identity %.1f, constant %.1f), edge F1 %.2f",
                         val->concepts[p->concept], pair_psnr, e2g_psnr(p->src, p->dst, S, S),
                         e2g_psnr(constant, p->dst, S, S), pair_f1);
                e2g_image *row = &cells[3 * sheet_rows++];
                row[0] = (e2g_image){S, S, (uint8_t *)p->src};
                row[1] = (e2g_image){S, S, (uint8_t *)p->dst};
                row[2] = (e2g_image){S, S, e2g_xmalloc(img)};
                memcpy(row[2].rgb, im.rgb, img);
            }
        }
    }
    e2g_infer_free(inf);
    e2g_runtime_free(rt);
    json_t *per = json_object();
    /* means over the concepts; edge F1 over the concepts that have one */
    double mean[6] = {0}, mean_edge[2] = {0};
    int used = 0, used_edge = 0, learned = 0;
    for (int c = 0; c < C; c++) {
        const eval_sums *a = &sums[c];
        if (!a->count) continue;
        int ok;
        json_object_set_new(per, val->concepts[c], concept_entry(a, &ok));
        learned += ok;
        const double v[6] = {a->psnr, a->ssim, a->ident_psnr, a->ident_ssim, a->const_psnr, a->const_ssim};
        for (int k = 0; k < 6; k++) mean[k] += v[k] / a->count;
        used++;
        if (a->edge_count) {
            mean_edge[0] += a->edge_f1 / a->edge_count, mean_edge[1] += a->ident_edge_f1 / a->edge_count;
            used_edge++;
        }
    }
    json_t *res = json_pack("{s:o,s:f,s:f,s:f,s:f,s:f,s:f,s:o,s:o,s:i,s:i,s:i}", "concepts", per, "mean_psnr",
                            mean[0] / used, "mean_ssim", mean[1] / used, "mean_identity_psnr", mean[2] / used,
                            "mean_identity_ssim", mean[3] / used, "mean_constant_psnr", mean[4] / used,
                            "mean_constant_ssim", mean[5] / used, "mean_edge_f1", json_mean(mean_edge[0], used_edge),
                            "mean_identity_edge_f1", json_mean(mean_edge[1], used_edge), "learned", learned,
                            "concepts_evaluated", used, "pairs", n_pairs);
    if (sheet_path && sheet_rows) {
        const e2g_image **ptrs = e2g_xmalloc((size_t)3 * sheet_rows * sizeof *ptrs);
        const char **caps = e2g_xmalloc((size_t)sheet_rows * sizeof *caps);
        for (int i = 0; i < 3 * sheet_rows; i++) ptrs[i] = &cells[i];
        for (int r = 0; r < sheet_rows; r++) caps[r] = captions[r];
        if (e2g_contact_sheet_captioned(sheet_path, ptrs, sheet_rows, 3, 4, caps, err))
            json_object_set_new(res, "sheet_error", json_string(err));
        free(ptrs), free(caps);
    }
    for (int r = 0; r < sheet_rows; r++) free(cells[3 * r + 2].rgb);
    free(cells), free(captions), free(out), free(constant), free(x), free(y), free(sums);
    free(total), free(map);
    return res;
}

/* ---- the trainer state ------------------------------------------------------------ */

typedef struct {
    e2g_train_target *t;
    const e2g_train_opts *o;
    const e2g_dataset *data;
    int N, S, gan, *map;
    e2g_gen_acts *acts;
    e2g_disc_acts *dacts;
    float *g_params, *g_grad; /* what Adam updates: all of G, or the adapter */
    size_t g_n;
    e2g_gen_params grads; /* views into g_grad (full training) */
    e2g_lora *dlora;      /* views into g_grad (fine-tuning) */
    float *d_grad;
    e2g_disc_params dgrads;
    e2g_adam adam_g, adam_d;
    float *x, *tgt, *y, *dy, *dctx, *logits, *dlogits;
    size_t n_logits;
    e2g_edit *edits;
    int *idx;
    const e2g_backend *device;    /* the device the steps run on, or NULL: the CPU */
    const e2g_train_backend *gpu; /* its trainer, with state gpu_state */
    void *gpu_state;
    int slot;         /* the pinned slot holding the next step's batch */
    long staged_step; /* the step whose batch is in it, or -1 */
} trainer;

static void trainer_free(trainer *tr) {
    if (tr->gpu) tr->gpu->destroy(tr->gpu_state);
    e2g_gen_acts_free(tr->acts);
    e2g_disc_acts_free(tr->dacts);
    if (tr->dlora) {
        tr->dlora->memory = NULL; /* g_grad owns it */
        e2g_lora_free(tr->dlora);
    }
    free(tr->g_grad), free(tr->d_grad);
    e2g_adam_free(&tr->adam_g), e2g_adam_free(&tr->adam_d);
    free(tr->x), free(tr->tgt), free(tr->y), free(tr->dy), free(tr->dctx);
    free(tr->logits), free(tr->dlogits), free(tr->edits), free(tr->idx), free(tr->map);
}

static void trainer_init(trainer *tr, e2g_train_target *t, const e2g_dataset *data,
                         const e2g_train_opts *o) {
    e2g_model *m = t->model;
    memset(tr, 0, sizeof *tr);
    tr->t = t, tr->o = o, tr->data = data, tr->N = o->batch, tr->S = data->crop;
    tr->gan = o->gan_weight > 0;
    int N = tr->N, S = tr->S, T = m->cfg.ctx_tokens, c4 = e2g_gen_c4(&m->cfg);
    tr->acts = e2g_gen_acts_new(&m->cfg, N, S, S, 1);
    if (t->lora) {
        tr->g_params = t->lora->memory, tr->g_n = t->lora->numel;
        tr->g_grad = e2g_xcalloc(tr->g_n, sizeof(float));
        /* a gradient adapter of the same ranks whose tensors view g_grad */
        tr->dlora = e2g_lora_new(&m->cfg, t->lora->rank, t->lora->scale);
        ptrdiff_t shift = tr->g_grad - tr->dlora->memory;
        for (int l = 0; l < E2G_N_CRUCIAL; l++)
            if (tr->dlora->rank[l]) tr->dlora->A[l] += shift, tr->dlora->B[l] += shift;
        tr->dlora->concept += shift;
        free(tr->dlora->memory);
        tr->dlora->memory = tr->g_grad;
    } else {
        tr->g_params = m->memory, tr->g_n = e2g_gen_param_count(&m->cfg);
        tr->g_grad = e2g_xcalloc(tr->g_n, sizeof(float));
        e2g_gen_bind(&m->cfg, &tr->grads, tr->g_grad);
    }
    e2g_adam_init(&tr->adam_g, tr->g_n);
    if (tr->gan) {
        if (!m->ndf) { /* a base saved without D: start one */
            m->ndf = DEFAULT_NDF;
            m->disc_memory = e2g_xmalloc(e2g_disc_param_count(m->ndf) * sizeof(float));
            e2g_disc_bind(m->ndf, &m->disc, m->disc_memory);
            e2g_disc_init(m->ndf, &m->disc, o->seed ^ 0xD15Cull);
        }
        size_t dn = e2g_disc_param_count(m->ndf);
        tr->d_grad = e2g_xcalloc(dn, sizeof(float));
        e2g_disc_bind(m->ndf, &tr->dgrads, tr->d_grad);
        e2g_adam_init(&tr->adam_d, dn);
        tr->dacts = e2g_disc_acts_new(m->ndf, N, S, S);
        int ho, wo;
        e2g_disc_out_size(S, S, &ho, &wo);
        tr->n_logits = (size_t)N * ho * wo;
        tr->logits = e2g_xmalloc(tr->n_logits * sizeof(float));
        tr->dlogits = e2g_xmalloc(tr->n_logits * sizeof(float));
    }
    size_t img = (size_t)N * S * S * 3;
    tr->x = e2g_xmalloc(img * sizeof(float)), tr->tgt = e2g_xmalloc(img * sizeof(float));
    tr->y = e2g_xmalloc(img * sizeof(float)), tr->dy = e2g_xmalloc(img * sizeof(float));
    tr->dctx = e2g_xmalloc((size_t)N * T * c4 * sizeof(float));
    tr->edits = e2g_xcalloc(N, sizeof(e2g_edit));
    tr->idx = e2g_xmalloc(N * sizeof(int));
    tr->map = e2g_xcalloc(data->n_concepts, sizeof(int));
}

/* The learning rate of a step: constant, then linear decay to 0. */
static float step_lr(const e2g_train_opts *o, long step) {
    long start = (long)(o->decay_from * o->steps);
    if (step < start || o->steps <= start) return o->lr;
    return o->lr * (float)(o->steps - step) / (float)(o->steps - start);
}

/* A step's losses, unweighted: l1 is the plain mean |y − t| even when
 * dark_l1 (the dark-pixel-weighted L1, dark_weight > 0) replaces it in the
 * objective; edge is the gradient-domain L1 (edge_weight > 0). */
typedef struct {
    double l1, gan, d, edge, dark_l1;
} step_losses;

/* One LSGAN term: mean((D(src, tgt) − target)²), gradients scaled by
 * `weight` flow into D's parameters (dgrads non-NULL) and/or into dtgt. */
static double disc_term(trainer *tr, const float *tgt, float target, float weight,
                        e2g_disc_params *dgrads, float *dtgt) {
    const e2g_disc_params *D = &tr->t->model->disc;
    e2g_disc_forward(tr->dacts, tr->logits, D, tr->x, tgt);
    memset(tr->dlogits, 0, tr->n_logits * sizeof(float));
    double loss = e2g_mse_const_loss(tr->dlogits, tr->logits, target, tr->n_logits, weight);
    e2g_disc_backward(tr->dacts, dgrads, NULL, dtgt, tr->dlogits, D, tr->x, tgt);
    return loss;
}

static step_losses train_step(trainer *tr, long step) {
    const e2g_train_opts *o = tr->o;
    e2g_model *m = tr->t->model;
    int N = tr->N, T = m->cfg.ctx_tokens, c4 = e2g_gen_c4(&m->cfg);
    size_t img = (size_t)N * tr->S * tr->S * 3, ctx1 = (size_t)T * c4;
    float lr = step_lr(o, step);
    step_losses L = {0};

    e2g_dataset_batch(tr->data, o->seed, step, N, tr->idx);
    e2g_pairs_to_tensors(tr->data, tr->idx, N, tr->x, tr->tgt);
    pair_edits(tr->edits, tr->t, tr->data, tr->map, tr->idx, N);
    e2g_gen_forward(tr->acts, tr->y, &m->params, tr->x, tr->edits);
    memset(tr->dy, 0, img * sizeof(float));
    if (tr->gan) {
        memset(tr->d_grad, 0, tr->adam_d.n * sizeof(float));
        L.d = 0.5 * (disc_term(tr, tr->tgt, 1.0f, 0.5f, &tr->dgrads, NULL) +
                     disc_term(tr, tr->y, 0.0f, 0.5f, &tr->dgrads, NULL));
        e2g_adam_step(&tr->adam_d, m->disc_memory, tr->d_grad, lr, o->beta1, o->beta2, 1e-8f);
        L.gan = disc_term(tr, tr->y, 1.0f, o->gan_weight, NULL, tr->dy);
    }
    if (o->dark_weight > 0) {
        L.dark_l1 = e2g_dark_l1_loss(tr->dy, tr->y, tr->tgt, img / 3, o->dark_weight, o->lambda_l1);
        L.l1 = e2g_l1_loss(NULL, tr->y, tr->tgt, img, 0.0f);
    } else {
        L.l1 = e2g_l1_loss(tr->dy, tr->y, tr->tgt, img, o->lambda_l1);
    }
    if (o->edge_weight > 0) L.edge = e2g_edge_l1_loss(tr->dy, tr->y, tr->tgt, N, tr->S, tr->S, 3, o->edge_weight);
    memset(tr->g_grad, 0, tr->g_n * sizeof(float));
    memset(tr->dctx, 0, (size_t)N * ctx1 * sizeof(float));
    e2g_lora *lora = tr->t->lora;
    e2g_gen_backward(tr->acts, lora ? NULL : &tr->grads, tr->dlora, lora, tr->dctx, NULL, tr->dy,
                     &m->params, tr->x, tr->edits);
    for (int j = 0; j < N; j++) { /* each sample's context gradient to its embedding */
        float *dst = lora ? tr->dlora->concept
                          : tr->grads.concepts + (size_t)tr->map[tr->data->pairs[tr->idx[j]].concept] * ctx1;
        e2g_accumulate(dst, tr->dctx + j * ctx1, ctx1);
    }
    e2g_adam_step(&tr->adam_g, tr->g_params, tr->g_grad, lr, o->beta1, o->beta2, 1e-8f);
    return L;
}

/* ---- a device backend ------------------------------------------------------------ */

/* The run's loss terms beyond λ·L1, as backend.h's E2G_LOSS_* flags. */
static unsigned extra_loss_terms(const e2g_train_opts *o) {
    return (o->gan_weight > 0 ? E2G_LOSS_GAN : 0u) | (o->edge_weight > 0 ? E2G_LOSS_EDGE : 0u) |
           (o->dark_weight > 0 ? E2G_LOSS_DARK : 0u);
}

/* Where the steps run: 1 on a device (tr->gpu made), 0 on the CPU, -1 when
 * a device was demanded and cannot be had (err says why). */
static int choose_device(trainer *tr, char *err) {
    e2g_device_mode mode;
    if (e2g_device_mode_parse(tr->o->device, &mode, err)) return -1;
    if (mode == E2G_DEVICE_CPU) return 0;
    const e2g_model *m = tr->t->model;
    const e2g_backend *cand[8];
    char why[E2G_ERR_LEN];
    int n = e2g_backend_candidates(mode, cand, 8, why), present = 0;
    for (int i = 0; i < n; i++) {
        const e2g_train_backend *tb = cand[i]->train;
        if (!tb) {
            snprintf(why, sizeof why, "the %s backend does not train", cand[i]->name);
            continue;
        }
        if (cand[i]->available(why) != 1) continue;
        present = 1;
        if (tb->supports(&m->cfg, extra_loss_terms(tr->o), why) == 1 &&
            tb->create(&tr->gpu_state, &m->cfg, m->memory, tr->t->lora, tr->N, tr->S, why) == 0) {
            tr->device = cand[i], tr->gpu = tb, tr->staged_step = -1;
            if (!tr->o->quiet) fprintf(stderr, "training on %s\n", cand[i]->device);
            return 1;
        }
    }
    if (mode == E2G_DEVICE_AUTO) {
        if (present && !tr->o->quiet) fprintf(stderr, "training on the CPU: %s\n", why);
        return 0;
    }
    return e2g_fail(err, "cannot train on CUDA: %s", why);
}

/* Decodes the batch of `step` into pinned slot s and starts its upload. */
static int gpu_stage(trainer *tr, int s, long step, char *err) {
    float *x, *tgt;
    int *rows;
    tr->gpu->slot(tr->gpu_state, s, &x, &tgt, &rows);
    e2g_dataset_batch(tr->data, tr->o->seed, step, tr->N, tr->idx);
    e2g_pairs_to_tensors(tr->data, tr->idx, tr->N, x, tgt);
    for (int j = 0; j < tr->N; j++) rows[j] = tr->map[tr->data->pairs[tr->idx[j]].concept];
    return tr->gpu->upload(tr->gpu_state, s, err);
}

/* One step on the device; the next step's batch is prepared while it runs. */
static int gpu_step(trainer *tr, long step, step_losses *L, char *err) {
    const e2g_train_opts *o = tr->o;
    if (tr->staged_step != step && gpu_stage(tr, tr->slot, step, err)) return -1;
    int s = tr->slot;
    tr->adam_g.t++;
    if (tr->gpu->step(tr->gpu_state, s, o->lambda_l1, 1, tr->adam_g.t, step_lr(o, step), o->beta1, o->beta2,
                      1e-8f, err))
        return -1;
    tr->slot ^= 1, tr->staged_step = -1;
    if (step + 1 < o->steps) {
        if (gpu_stage(tr, tr->slot, step + 1, err)) return -1;
        tr->staged_step = step + 1;
    }
    memset(L, 0, sizeof *L);
    return tr->gpu->finish(tr->gpu_state, &L->l1, err);
}

/* Brings the device's weights and Adam state to the host arrays (no-op on
 * the CPU). */
static int sync_host(trainer *tr, char *err) {
    if (tr->gpu) return tr->gpu->get(tr->gpu_state, tr->g_params, NULL, tr->adam_g.m, tr->adam_g.v, err);
    return 0;
}

/* ---- checkpoints ------------------------------------------------------------------ */

#define CHECKPOINT_FORMAT "e2gan-checkpoint"

static int add_flat(e2g_st_writer *w, const char *name, const float *data, size_t n, char *err) {
    int64_t shape[1] = {(int64_t)n};
    return e2g_st_writer_add(w, name, E2G_DTYPE_F32, 1, shape, data, err);
}

static int save_checkpoint(const trainer *tr, long step, double wall, json_t *history, char *err) {
    e2g_st_writer *w = e2g_st_writer_new();
    char num[3][32];
    snprintf(num[0], sizeof num[0], "%ld", step);
    snprintf(num[1], sizeof num[1], "%.3f", wall);
    snprintf(num[2], sizeof num[2], "%llu", tr->o->seed);
    char *hist = json_dumps(history, JSON_COMPACT);
    int rc = add_flat(w, "g.params", tr->g_params, tr->g_n, err) ||
             add_flat(w, "g.adam_m", tr->adam_g.m, tr->g_n, err) ||
             add_flat(w, "g.adam_v", tr->adam_g.v, tr->g_n, err) ||
             (tr->gan && (add_flat(w, "d.params", tr->t->model->disc_memory, tr->adam_d.n, err) ||
                          add_flat(w, "d.adam_m", tr->adam_d.m, tr->adam_d.n, err) ||
                          add_flat(w, "d.adam_v", tr->adam_d.v, tr->adam_d.n, err))) ||
             e2g_st_writer_meta(w, "format", CHECKPOINT_FORMAT, err) ||
             e2g_st_writer_meta(w, "step", num[0], err) || e2g_st_writer_meta(w, "wall_s", num[1], err) ||
             e2g_st_writer_meta(w, "seed", num[2], err) || e2g_st_writer_meta(w, "history", hist, err) ||
             e2g_st_writer_save(w, tr->o->checkpoint, err);
    free(hist);
    e2g_st_writer_free(w);
    return rc ? -1 : 0;
}

static int read_flat(const e2g_st_file *f, const char *name, float *dst, size_t n, char *err) {
    int64_t shape[1] = {(int64_t)n};
    return e2g_st_read_f32(f, name, 1, shape, dst, err);
}

/* Restores a checkpoint when the file exists: *step, *wall and *history
 * continue from it.  A checkpoint of another run (seed, sizes) is an error. */
static int load_checkpoint(trainer *tr, long *step, double *wall, json_t **history, char *err) {
    if (access(tr->o->checkpoint, F_OK) != 0) return 0;
    e2g_st_file *f = NULL;
    if (e2g_st_open(&f, tr->o->checkpoint, err)) return -1;
    const char *format = e2g_st_meta(f, "format"), *seed = e2g_st_meta(f, "seed");
    const char *s = e2g_st_meta(f, "step"), *w = e2g_st_meta(f, "wall_s"), *h = e2g_st_meta(f, "history");
    char want_seed[32];
    snprintf(want_seed, sizeof want_seed, "%llu", tr->o->seed);
    int rc = -1;
    json_error_t jerr;
    if (!format || strcmp(format, CHECKPOINT_FORMAT) || !s || !w || !h || !seed) {
        e2g_fail(err, "%s is not an e2gan checkpoint", tr->o->checkpoint);
    } else if (strcmp(seed, want_seed) != 0) {
        e2g_fail(err, "%s was made with seed %s, this run has %s", tr->o->checkpoint, seed, want_seed);
    } else if (!read_flat(f, "g.params", tr->g_params, tr->g_n, err) &&
               !read_flat(f, "g.adam_m", tr->adam_g.m, tr->g_n, err) &&
               !read_flat(f, "g.adam_v", tr->adam_g.v, tr->g_n, err) &&
               (!tr->gan || (!read_flat(f, "d.params", tr->t->model->disc_memory, tr->adam_d.n, err) &&
                             !read_flat(f, "d.adam_m", tr->adam_d.m, tr->adam_d.n, err) &&
                             !read_flat(f, "d.adam_v", tr->adam_d.v, tr->adam_d.n, err)))) {
        *step = atol(s), *wall = atof(w);
        tr->adam_g.t = tr->adam_d.t = *step;
        json_decref(*history);
        *history = json_loads(h, 0, &jerr);
        rc = *history ? 0 : e2g_fail(err, "checkpoint history is not JSON");
    }
    e2g_st_close(f);
    return rc;
}

/* ---- reports ------------------------------------------------------------------------ */

/* The progress line; the edge and dark-L1 losses when their terms are on. */
static void progress(const e2g_train_opts *o, long step, const step_losses *L, double rate) {
    if (o->quiet) return;
    double eta = rate > 0 ? (o->steps - step) / rate : 0;
    fprintf(stderr, "\rstep %ld/%ld | L1 %.4f  G %.4f  D %.4f", step, o->steps, L->l1, L->gan, L->d);
    if (o->dark_weight > 0) fprintf(stderr, "  dark-L1 %.4f", L->dark_l1);
    if (o->edge_weight > 0) fprintf(stderr, "  edge %.4f", L->edge);
    fprintf(stderr, " | %.2f steps/s | ETA %02d:%02d:%02d ", rate, (int)(eta / 3600), (int)fmod(eta / 60, 60),
            (int)fmod(eta, 60));
    if (!isatty(STDERR_FILENO) || step == o->steps) fputc('\n', stderr);
}

/* One line of opts->events (see e2g_train); steals ev. */
static void emit_event(FILE *events, json_t *ev) {
    if (events) {
        json_dumpf(ev, events, JSON_COMPACT);
        fputc('\n', events);
        fflush(events);
    }
    json_decref(ev);
}

/* curve.png: L1 loss per logged step (left) and validation PSNR (right),
 * with the identity edit's and the constant image's PSNR for scale. */
static void write_curve(const char *dir, json_t *history) {
    json_t *log = json_object_get(history, "log"), *evals = json_object_get(history, "evals");
    size_t nl = json_array_size(log), ne = json_array_size(evals);
    double *lx = e2g_xcalloc(nl + 1, sizeof(double)), *ly = e2g_xcalloc(nl + 1, sizeof(double));
    double *ex = e2g_xcalloc(ne + 1, sizeof(double)), *ey[3];
    for (int k = 0; k < 3; k++) ey[k] = e2g_xcalloc(ne + 1, sizeof(double));
    for (size_t i = 0; i < nl; i++) {
        json_t *row = json_array_get(log, i);
        lx[i] = json_number_value(json_array_get(row, 0));
        ly[i] = json_number_value(json_array_get(row, 1));
    }
    static const char *const keys[3] = {"mean_psnr", "mean_identity_psnr", "mean_constant_psnr"};
    for (size_t i = 0; i < ne; i++) {
        json_t *e = json_array_get(evals, i), *v;
        ex[i] = json_number_value(json_object_get(e, "step"));
        for (int k = 0; k < 3; k++) /* NaN (not drawn) in a history from before the baseline was kept */
            ey[k][i] = json_is_number(v = json_object_get(e, keys[k])) ? json_number_value(v) : NAN;
    }
    e2g_series s[4] = {{"L1 loss (train)", lx, ly, (int)nl, {200, 60, 40}, 0},
                       {"PSNR dB (val)", ex, ey[0], (int)ne, {40, 90, 200}, 1},
                       {"identity PSNR", ex, ey[1], (int)ne, {150, 150, 150}, 1},
                       {"constant PSNR", ex, ey[2], (int)ne, {120, 180, 120}, 1}};
    char path[4096], err[E2G_ERR_LEN];
    snprintf(path, sizeof path, "%s/curve.png", dir);
    if (e2g_line_chart(path, s, 4, "training", err)) fprintf(stderr, "e2gan: %s\n", err);
    free(lx), free(ly), free(ex);
    for (int k = 0; k < 3; k++) free(ey[k]);
}

/* Runs an evaluation, appends it to history and returns its mean PSNR. */
static double evaluate_into(trainer *tr, const e2g_dataset *val, long step, json_t *history,
                            const char *sheet) {
    json_t *e = e2g_evaluate(tr->t, val, tr->o->eval_pairs, sheet);
    json_object_set_new(e, "step", json_integer(step));
    json_array_append(json_object_get(history, "evals"), e);
    double psnr = json_number_value(json_object_get(e, "mean_psnr"));
    emit_event(tr->o->events,
               json_pack("{s:s,s:I,s:f,s:f,s:f,s:f,s:O,s:O}", "event", "eval", "step", (json_int_t)step, "psnr",
                         psnr, "ssim", json_number_value(json_object_get(e, "mean_ssim")), "identity_psnr",
                         json_number_value(json_object_get(e, "mean_identity_psnr")), "constant_psnr",
                         json_number_value(json_object_get(e, "mean_constant_psnr")), "edge_f1",
                         json_object_get(e, "mean_edge_f1"), "learned", json_object_get(e, "learned")));
    json_decref(e);
    return psnr;
}

/* ---- the loop ----------------------------------------------------------------------- */

int e2g_train(e2g_train_target *target, const e2g_dataset *train, const e2g_dataset *val,
              const e2g_train_opts *o, json_t **report, char *err) {
    if (o->steps < 1 || o->batch < 1) return e2g_fail(err, "steps and batch must be positive");
    if (train->crop % 8) return e2g_fail(err, "crops must be a multiple of 8");
    trainer tr;
    trainer_init(&tr, target, train, o);
    json_t *history = json_pack("{s:[],s:[]}", "log", "evals");
    long step = 0;
    double wall = 0;
    int rc = -1;
    if (!target->lora && map_concepts(target->model, train, tr.map, err)) goto out;
    if (o->checkpoint && load_checkpoint(&tr, &step, &wall, &history, err)) goto out;
    int on_gpu = choose_device(&tr, err);
    if (on_gpu < 0) goto out;
    if (on_gpu && tr.gpu->set(tr.gpu_state, tr.g_params, tr.adam_g.m, tr.adam_g.v, err)) goto out;
    if (step) fprintf(stderr, "resuming at step %ld of %ld\n", step, o->steps);
    double t0 = now_seconds(), rate = 0;
    long first = step;
    while (step < o->steps) {
        step_losses L;
        if (on_gpu) {
            if (gpu_step(&tr, step, &L, err)) goto out;
        } else {
            L = train_step(&tr, step);
        }
        step++;
        rate = (step - first) / (now_seconds() - t0);
        if (step % o->log_every == 0 || step == o->steps) {
            json_array_append_new(json_object_get(history, "log"),
                                  json_pack("[i,f,f,f,f,f]", step, L.l1, L.gan, L.d, L.edge, L.dark_l1));
            progress(o, step, &L, rate);
            json_t *ev = json_pack("{s:s,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "event", "step", "step", (json_int_t)step,
                                   "steps", (json_int_t)o->steps, "l1", L.l1, "gan", L.gan, "d", L.d,
                                   "steps_per_s", rate, "eta_s", rate > 0 ? (o->steps - step) / rate : 0.0);
            if (o->edge_weight > 0) json_object_set_new(ev, "edge", json_real(L.edge));
            if (o->dark_weight > 0) json_object_set_new(ev, "dark_l1", json_real(L.dark_l1));
            emit_event(o->events, ev);
        }
        int eval_now = val && o->eval_every > 0 && step % o->eval_every == 0 && step < o->steps;
        int save_now = o->checkpoint && (step % o->checkpoint_every == 0 || step == o->steps);
        if ((eval_now || save_now || step == o->steps) && sync_host(&tr, err)) goto out;
        if (eval_now) evaluate_into(&tr, val, step, history, NULL);
        if (save_now && save_checkpoint(&tr, step, wall + now_seconds() - t0, history, err)) goto out;
    }
    wall += now_seconds() - t0;
    char sheet[4096] = "";
    if (o->report_dir) snprintf(sheet, sizeof sheet, "%s/contact.png", o->report_dir);
    if (val) evaluate_into(&tr, val, o->steps, history, o->report_dir ? sheet : NULL);
    if (o->report_dir) write_curve(o->report_dir, history);
    json_t *evals = json_object_get(history, "evals");
    *report = json_pack("{s:{s:I,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:I},s:{s:f,s:I,s:i,s:s},s:O,s:O}",
                        "options", "steps", (json_int_t)o->steps, "batch", o->batch, "lr", o->lr,
                        "lambda_l1", o->lambda_l1, "gan_weight", o->gan_weight, "edge_weight",
                        o->edge_weight, "dark_weight", o->dark_weight, "decay_from",
                        o->decay_from, "seed", (json_int_t)o->seed, "budget", "wall_s", wall,
                        "samples", (json_int_t)(o->steps * o->batch), "threads", e2g_get_threads(),
                        "device", on_gpu ? tr.device->name : "cpu",
                        "history", history, "final",
                        json_array_size(evals) ? json_array_get(evals, json_array_size(evals) - 1)
                                               : json_null());
    rc = 0;
out:
    json_decref(history);
    trainer_free(&tr);
    return rc;
}
