/* train.h — the trainer: full training of the generator (and PatchGAN D)
 * on several concepts — the base model, or one concept from scratch — and
 * LoRA fine-tuning of a new concept on a frozen base.  Adam, LSGAN + λ·L1
 * (docs/architecture.md §2; optionally dark-pixel-weighted, plus a
 * gradient-domain L1 term: docs/training.md), deterministic for a seed,
 * checkpoint and resume, validation PSNR/SSIM/edge F1 beside the identity and constant baselines
 * with a per-concept "learned" verdict, progress on stderr and a report
 * (JSON, loss/quality curve, contact sheet).  It drives the engine only through its forward and
 * backward functions, so another backend can slot in underneath. */
#ifndef E2G_TRAIN_H
#define E2G_TRAIN_H

#include <jansson.h>
#include <stdio.h>

#include "dataset.h"
#include "model.h"
#include "model_io.h"

typedef struct {
    long steps;
    int batch;
    float lr, beta1, beta2;
    float lambda_l1;   /* weight of the L1 term */
    float gan_weight;  /* weight of the LSGAN term; 0 trains without D */
    float edge_weight; /* weight of the gradient-domain L1 term (e2g_edge_l1_loss); 0: off */
    float dark_weight; /* > 0: the L1 term weighs each pixel by 1 + dark_weight·darkness of
                          the teacher (e2g_dark_l1_loss); 0: plain L1 */
    float decay_from;  /* fraction of the run after which lr decays linearly to 0 */
    unsigned long long seed;
    long eval_every, checkpoint_every, log_every;
    int eval_pairs;          /* validation pairs per evaluation (0 = all) */
    const char *checkpoint;  /* resume from / save to this file, or NULL */
    const char *report_dir;  /* report.json, curve.png, contact.png; or NULL */
    int quiet;               /* no progress line */
    const char *device;      /* "auto" (NULL: $E2GAN_DEVICE, else auto), "cpu" or "cuda":
                                where the steps run (see e2g_train) */
    FILE *events;            /* when set: one JSON object per line for each logged
                                step and each evaluation (see e2g_train) */
} e2g_train_opts;

/* Defaults of docs/architecture.md §2: Adam lr 2e-4, β (0.5, 0.999), λ = 100. */
void e2g_train_defaults(e2g_train_opts *o);

/* What is trained: the whole generator (lora NULL) — every dataset concept
 * must then be a concept of the model, in any order — or a LoRA adapter
 * and its concept embedding on the frozen base (the dataset's concepts all
 * map to the adapter). */
typedef struct {
    e2g_model *model; /* its discriminator is trained when gan_weight > 0 */
    e2g_lora *lora;
} e2g_train_target;

/* Runs the training.  opts->device "auto" trains on CUDA device 0 when the
 * build has CUDA, a device answers and the GPU trainer supports the run
 * (default form, λ·L1 alone — no GAN, edge or dark term: docs/cuda.md),
 * else exactly as on the CPU;
 * "cuda" makes any of those an error; "cpu" never uses the GPU.  The GPU
 * run is not bit-deterministic (atomic reductions); its losses follow the
 * CPU's within bf16 rounding.  With opts->events, writes (and flushes) a line per
 * logged step, {"event":"step","step","steps","l1","gan","d","steps_per_s",
 * "eta_s"} (plus "edge" with edge_weight > 0 and "dark_l1", the weighted
 * L1, with dark_weight > 0; "l1" is always the plain mean |y − t|), and
 * per evaluation, {"event":"eval","step","psnr","ssim",
 * "identity_psnr","constant_psnr","edge_f1","learned"} (means over the
 * concepts, edge_f1 null when no teacher had edges; learned: how many
 * concepts pass the verdict below), for a supervising process.  On success *report (a JSON object: options, budget,
 * loss history — history.log rows [step, l1, gan, d, edge, dark_l1] —,
 * evaluations, final per-concept metrics) is the caller's to json_decref. */
int e2g_train(e2g_train_target *target, const e2g_dataset *train, const e2g_dataset *val,
              const e2g_train_opts *opts, json_t **report, char *err);

/* The "learned" verdict of a concept (docs/training.md#quality): its mean
 * PSNR beats both the identity edit's and the constant image's by at least
 * E2G_LEARNED_MARGIN_DB, and, when its teacher is a sketch (mean paper
 * share, metrics.h, at least E2G_SKETCH_PAPER), its edge F1 is at least
 * E2G_SKETCH_EDGE_F1. */
#define E2G_LEARNED_MARGIN_DB 1.0
#define E2G_SKETCH_PAPER 0.5
#define E2G_SKETCH_EDGE_F1 0.3

/* Quality of the target's edits against the teacher on val pairs (at most
 * max_pairs, 0 = all, spread over the split), per dataset concept, as the
 * mean over the concept's pairs of: psnr, ssim (the model's 8-bit edit);
 * identity_psnr, identity_ssim (the source unchanged); constant_psnr,
 * constant_ssim (the teacher's mean colour, rounded, everywhere: the best
 * constant image in the L2 sense); edge_f1, edge_precision, edge_recall,
 * identity_edge_f1, constant_edge_f1 (metrics.h; over the edge_pairs pairs
 * whose teacher has edges, null when none has); teacher_paper (the
 * teacher's paper share), sketch, learned (the verdict above), verdict
 * ("learned" or the criteria missed) and pairs.  Beside them the means
 * over concepts (mean_psnr, mean_ssim, mean_identity_psnr,
 * mean_identity_ssim, mean_constant_psnr, mean_constant_ssim,
 * mean_edge_f1, mean_identity_edge_f1), learned (how many concepts pass),
 * concepts_evaluated and pairs.  Writes a contact sheet (source | teacher
 * | model, each row captioned with its concept, the pair's PSNR of model,
 * identity and constant and its edge F1) when sheet_path is non-NULL.
 * Returns a JSON object ({"error"} when a dataset concept is not the
 * model's). */
json_t *e2g_evaluate(const e2g_train_target *target, const e2g_dataset *val, int max_pairs,
                     const char *sheet_path);

#endif
