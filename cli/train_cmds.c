/* train_cmds.c — `e2gan train` (a base model on several concepts, or one
 * concept from scratch) and `e2gan finetune` (a LoRA adapter for a new
 * concept on a frozen base), over engine/train.c. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter.h"
#include "backend.h"
#include "cli.h"
#include "common.h"
#include "dataset.h"
#include "model_io.h"
#include "precision.h"
#include "ranksearch.h"
#include "reduce.h"
#include "train.h"

/* Options both commands take (getopt_long values 1000+). */
enum {
    OPT_STEPS = 1000, OPT_BATCH, OPT_LR, OPT_L1, OPT_GAN, OPT_EDGE, OPT_DARK, OPT_DECAY, OPT_SEED, OPT_EVAL_EVERY,
    OPT_EVAL_PAIRS, OPT_CHECKPOINT, OPT_CHECKPOINT_EVERY, OPT_REPORT, OPT_THREADS, OPT_QUIET,
    OPT_DATA, OPT_OUT, OPT_PAIRS, OPT_CROP, OPT_TRAIN_CROPS, OPT_EVENTS, OPT_DEVICE, OPT_PRECISION
};

#define TRAIN_OPTIONS                                                                             \
    {"steps", 1, 0, OPT_STEPS}, {"batch", 1, 0, OPT_BATCH}, {"lr", 1, 0, OPT_LR},                 \
        {"lambda-l1", 1, 0, OPT_L1}, {"gan-weight", 1, 0, OPT_GAN}, {"edge-weight", 1, 0, OPT_EDGE}, \
        {"dark-weight", 1, 0, OPT_DARK}, {"decay-from", 1, 0, OPT_DECAY},                          \
        {"seed", 1, 0, OPT_SEED}, {"eval-every", 1, 0, OPT_EVAL_EVERY},                           \
        {"eval-pairs", 1, 0, OPT_EVAL_PAIRS}, {"checkpoint", 1, 0, OPT_CHECKPOINT},               \
        {"checkpoint-every", 1, 0, OPT_CHECKPOINT_EVERY}, {"report", 1, 0, OPT_REPORT},           \
        {"threads", 1, 0, OPT_THREADS}, {"quiet", 0, 0, OPT_QUIET}, {"data", 1, 0, OPT_DATA},     \
        {"out", 1, 0, OPT_OUT}, {"pairs", 1, 0, OPT_PAIRS}, {"crop", 1, 0, OPT_CROP},              \
        {"train-crops", 1, 0, OPT_TRAIN_CROPS}, {"events", 0, 0, OPT_EVENTS}, {"device", 1, 0, OPT_DEVICE}, \
        {"precision", 1, 0, OPT_PRECISION}

#define TRAIN_OPTIONS_HELP                                                                        \
    "training options (defaults in brackets):\n"                                                  \
    "  --data DIR            a dataset made by tools/make_dataset.py, or\n"                      \
    "  --pairs DIR           a folder of pairs STEM.src.png + STEM.dst.png (or src/ and\n"        \
    "                        dst/ folders; png or jpg) of one concept, split and cropped\n"        \
    "                        in memory: --crop N [128], --train-crops N [1024]\n"                 \
    "  --out FILE            where the result goes (required)\n"                                  \
    "  --steps N [1000]  --batch B [8]  --lr X [2e-4]  --decay-from F [0.5: lr decays\n"         \
    "                        linearly to 0 over the last half]\n"                                  \
    "  --lambda-l1 X [100]   --gan-weight X [1; 0 trains with L1 alone, no D]\n"                  \
    "  --edge-weight X [0]   adds X times the L1 of the images' horizontal and vertical\n"       \
    "                        pixel differences (values like --lambda-l1 make sense)\n"          \
    "  --dark-weight X [0]   L1 weighs each pixel by 1 + X * the teacher's darkness\n"          \
    "                        (normalised to mean 1): dark strokes count more\n"                  \
    "                        (docs/training.md#loss-terms-for-sketch-concepts)\n"              \
    "  --seed S [1]          the run is deterministic for a seed and thread count\n"              \
    "  --eval-every N [250]  --eval-pairs N [64; 0 = all validation pairs]\n"                    \
    "  --checkpoint FILE     resume from FILE if it exists; save to it every\n"                  \
    "                        --checkpoint-every N [100] steps and at the end\n"                   \
    "  --report DIR          report.json, curve.png, contact.png\n"                               \
    "  --threads T  --quiet\n"                                                                   \
    "  --device D [auto]     auto|cpu|cuda (default $E2GAN_DEVICE, else auto): auto trains on\n" \
    "                        the GPU when present and the run is supported there (LoRA\n"     \
    "                        or full G, L1 only: --gan-weight, --edge-weight and\n"           \
    "                        --dark-weight 0), else on the CPU as before; cuda refuses\n"     \
    "                        to fall back (docs/cuda.md)\n"                                    \
    "  --precision P [auto]  auto|fp32|bf16 on the CPU (default $E2GAN_PRECISION, else auto):\n" \
    "                        bf16 convolutions and linear layers with fp32 accumulation,\n" \
    "                        fp32 master weights and Adam; auto = bf16 where the CPU has\n" \
    "                        native bf16 (AVX512_BF16, AMX), else fp32\n"                    \
    "  --events              progress as JSON lines on stdout (for a supervising process)\n"

typedef struct {
    e2g_train_opts opts;
    e2g_pairs_opts pairs_opts;
    const char *data, *pairs, *out, *precision;
    long threads;
} train_args;

static void train_args_init(train_args *a) {
    memset(a, 0, sizeof *a);
    e2g_train_defaults(&a->opts);
    e2g_pairs_defaults(&a->pairs_opts);
}

/* Handles a shared option; 1 = taken, 0 = not shared, -1 = bad value. */
static int parse_train_option(int c, const char *arg, train_args *a) {
    e2g_train_opts *o = &a->opts;
    long v;
    double d;
    switch (c) {
    case OPT_STEPS: return e2g_cli_parse_long(arg, 1, 100000000, &o->steps) ? -1 : 1;
    case OPT_BATCH: return e2g_cli_parse_long(arg, 1, 4096, &v) ? -1 : (o->batch = (int)v, 1);
    case OPT_LR: return e2g_cli_parse_double(arg, 0, 1, &d) ? -1 : (o->lr = (float)d, 1);
    case OPT_L1: return e2g_cli_parse_double(arg, 0, 1e6, &d) ? -1 : (o->lambda_l1 = (float)d, 1);
    case OPT_GAN: return e2g_cli_parse_double(arg, 0, 1e6, &d) ? -1 : (o->gan_weight = (float)d, 1);
    case OPT_EDGE: return e2g_cli_parse_double(arg, 0, 1e6, &d) ? -1 : (o->edge_weight = (float)d, 1);
    case OPT_DARK: return e2g_cli_parse_double(arg, 0, 1e6, &d) ? -1 : (o->dark_weight = (float)d, 1);
    case OPT_DECAY: return e2g_cli_parse_double(arg, 0, 1, &d) ? -1 : (o->decay_from = (float)d, 1);
    case OPT_SEED: return e2g_cli_parse_long(arg, 0, 1L << 62, &v) ? -1 : (o->seed = (unsigned long long)v, 1);
    case OPT_EVAL_EVERY: return e2g_cli_parse_long(arg, 0, 100000000, &o->eval_every) ? -1 : 1;
    case OPT_EVAL_PAIRS: return e2g_cli_parse_long(arg, 0, 1000000, &v) ? -1 : (o->eval_pairs = (int)v, 1);
    case OPT_CHECKPOINT: return o->checkpoint = arg, 1;
    case OPT_CHECKPOINT_EVERY: return e2g_cli_parse_long(arg, 1, 100000000, &o->checkpoint_every) ? -1 : 1;
    case OPT_REPORT: return o->report_dir = arg, 1;
    case OPT_THREADS: return e2g_cli_parse_long(arg, 1, 1024, &a->threads) ? -1 : 1;
    case OPT_QUIET: return o->quiet = 1, 1;
    case OPT_DATA: return a->data = arg, 1;
    case OPT_OUT: return a->out = arg, 1;
    case OPT_PAIRS: return a->pairs = arg, 1;
    case OPT_CROP: return e2g_cli_parse_long(arg, 8, 4096, &v) || v % 8 ? -1 : (a->pairs_opts.crop = (int)v, 1);
    case OPT_TRAIN_CROPS: return e2g_cli_parse_long(arg, 1, 1000000, &v) ? -1 : (a->pairs_opts.train_crops = (int)v, 1);
    case OPT_EVENTS: return o->events = stdout, 1;
    case OPT_DEVICE: {
        e2g_device_mode mode;
        if (!*arg || e2g_device_mode_parse(arg, &mode, NULL)) return -1;
        return o->device = arg, 1;
    }
    case OPT_PRECISION: {
        e2g_precision p;
        return e2g_precision_parse(arg, &p) ? -1 : (a->precision = arg, 1);
    }
    default: return 0;
    }
}

/* Loads the train and val splits of the concepts asked for. */
static int load_data(const train_args *a, const char *concepts, e2g_dataset **train,
                     e2g_dataset **val, char *err) {
    if (a->pairs) {
        if (!concepts || strchr(concepts, ','))
            return e2g_fail(err, "--pairs holds one concept: name it (--concept or --concepts NAME)");
        e2g_pairs_opts po = a->pairs_opts;
        po.seed = a->opts.seed;
        if (e2g_dataset_from_pairs(train, val, a->pairs, concepts, &po, err)) return -1;
    } else {
        if (e2g_dataset_load(train, a->data, "train", concepts, err)) return -1;
        if (e2g_dataset_load(val, a->data, "val", concepts, err)) return -1;
    }
    fprintf(stderr, "data: %d training pairs, %d validation pairs of %d concept(s), %dx%d\n",
            (*train)->n_pairs, (*val)->n_pairs, (*train)->n_concepts, (*train)->crop, (*train)->crop);
    return 0;
}

/* With --events, a line {"event": "phase", "phase", "steps"} as a phase of
 * the work begins (steps: the training steps it runs, 0 for none). */
static void phase_event(const train_args *a, const char *phase, long steps) {
    if (!a->opts.events) return;
    fprintf(a->opts.events, "{\"event\":\"phase\",\"phase\":\"%s\",\"steps\":%ld}\n", phase, steps);
    fflush(a->opts.events);
}

/* A number of an evaluation's JSON, NaN when absent or null. */
static double num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* The quality table of an evaluation (e2g_evaluate) on f: per concept the
 * model's PSNR beside the identity edit's and the constant image's, SSIM,
 * edge F1 (the identity edit's in brackets), whether the teacher is a
 * sketch, and the verdict. */
static void print_quality(FILE *f, const json_t *ev) {
    const json_t *per = json_object_get(ev, "concepts"), *c;
    const char *name;
    fprintf(f, "%-12s %7s %9s %9s %6s %15s %7s  %s\n", "concept", "PSNR", "identity", "constant", "SSIM",
            "edge F1 (id.)", "sketch", "learned");
    json_object_foreach((json_t *)per, name, c) {
        int learned = json_is_true(json_object_get(c, "learned"));
        fprintf(f, "%-12s %7.2f %9.2f %9.2f %6.3f %7.2f (%5.2f) %7s  %s%s%s\n", name, num(c, "psnr"),
                num(c, "identity_psnr"), num(c, "constant_psnr"), num(c, "ssim"), num(c, "edge_f1"),
                num(c, "identity_edge_f1"), json_is_true(json_object_get(c, "sketch")) ? "yes" : "no",
                learned ? "yes" : "no", learned ? "" : ": ",
                learned ? "" : json_string_value(json_object_get(c, "verdict")));
    }
    fprintf(f, "%-12s %7.2f %9.2f %9.2f %6.3f %7.2f (%5.2f) %7s  %d of %d concepts learned\n", "mean",
            num(ev, "mean_psnr"), num(ev, "mean_identity_psnr"), num(ev, "mean_constant_psnr"),
            num(ev, "mean_ssim"), num(ev, "mean_edge_f1"), num(ev, "mean_identity_edge_f1"), "",
            (int)json_integer_value(json_object_get(ev, "learned")),
            (int)json_integer_value(json_object_get(ev, "concepts_evaluated")));
}

/* Adds what a trained file records about its training to `report` and
 * writes report.json when a report folder is set; returns the report as a
 * string for the file's metadata (caller frees). */
static char *finish_report(json_t *report, const train_args *a, const char *what) {
    json_t *budget = json_object_get(report, "budget");
    char machine[256];
    e2g_cli_machine(machine, sizeof machine);
    json_object_set_new(budget, "machine", json_string(machine));
    json_object_set_new(budget, "precision", json_string(e2g_precision_describe()));
    json_object_set_new(report, "data", json_string(a->pairs ? a->pairs : a->data));
    json_object_set_new(report, "what", json_string(what));
    if (a->opts.report_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/report.json", a->opts.report_dir);
        if (json_dump_file(report, path, JSON_INDENT(2) | JSON_SORT_KEYS))
            fprintf(stderr, "e2gan: could not write %s\n", path);
    }
    json_t *final = json_object_get(report, "final");
    if (json_is_object(final)) {
        fprintf(stderr, "validation: mean PSNR %.2f dB (identity %.2f dB, constant %.2f dB), SSIM %.4f, "
                        "edge F1 %.3f\n",
                num(final, "mean_psnr"), num(final, "mean_identity_psnr"), num(final, "mean_constant_psnr"),
                num(final, "mean_ssim"), num(final, "mean_edge_f1"));
        print_quality(stderr, final);
    }
    return json_dumps(report, JSON_COMPACT | JSON_SORT_KEYS);
}

static int prepare(train_args *a, const char *usage_text) {
    if (!a->data == !a->pairs || !a->out) return e2g_cli_usage(usage_text);
    e2g_set_threads((int)a->threads);
    char err[E2G_ERR_LEN];
    if (e2g_precision_setup(a->precision, err)) {
        fprintf(stderr, "e2gan: %s\n", err);
        return 2;
    }
    if (a->opts.report_dir) mkdir(a->opts.report_dir, 0755);
    return 0;
}

/* ---- train ------------------------------------------------------------------ */

static const char train_usage[] =
    "usage: e2gan train --data DIR --out BASE.safetensors [--concepts a,b,...]\n"
    "                   [--ngf N] [--ndf N] [--paper-like] [--film] [--skip-gate]\n"
    "                   [--init BASE] [--concept-weights NAME=K,...] [training options]\n"
    "  Trains the whole generator (and, with the GAN term, the PatchGAN D) on the\n"
    "  dataset's concepts (all of them unless --concepts), one learned embedding\n"
    "  per concept: the base model.  With one concept it is the pix2pix-style\n"
    "  from-scratch baseline.  --init continues from a base instead of a fresh\n"
    "  PyTorch-default initialisation (full fine-tuning): a dataset concept the\n"
    "  base lacks gets a new embedding, started at the mean of the base's.\n"
    "  --film conditions the decoder's instance norms on the concept (FiLM,\n"
    "  docs/architecture.md); with --init, a base without FiLM gets it, at zero.\n"
    "  --skip-gate scales the U-Net skips per concept and channel (the same way).\n"
    "  --concept-weights draws each listed concept's pairs K times as often as\n"
    "  the others' (K an integer 1..100): a concept that lags gets more steps.\n" TRAIN_OPTIONS_HELP;

int e2g_cmd_train(int argc, char **argv) {
    static const struct option opts[] = {TRAIN_OPTIONS,         {"concepts", 1, 0, 'c'},
                                         {"ngf", 1, 0, 'n'},   {"ndf", 1, 0, 'd'},
                                         {"paper-like", 0, 0, 'p'}, {"init", 1, 0, 'i'},
                                         {"film", 0, 0, 'f'},  {"concept-weights", 1, 0, 'w'},
                                         {"skip-gate", 0, 0, 'g'}, {0, 0, 0, 0}};
    train_args a;
    train_args_init(&a);
    const char *concepts = NULL, *init = NULL, *weights = NULL;
    long ngf = 32, ndf = 64;
    int paper = 0, film = 0, skip_gate = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = parse_train_option(c, optarg, &a);
        if (r < 0 || (r == 0 && c == '?')) return e2g_cli_usage(train_usage);
        if (c == 'c') concepts = optarg;
        if (c == 'n' && e2g_cli_parse_long(optarg, 1, 512, &ngf)) return e2g_cli_usage(train_usage);
        if (c == 'd' && e2g_cli_parse_long(optarg, 1, 1024, &ndf)) return e2g_cli_usage(train_usage);
        if (c == 'p') paper = 1;
        if (c == 'f') film = 1;
        if (c == 'g') skip_gate = 1;
        if (c == 'i') init = optarg;
        if (c == 'w') weights = optarg;
    }
    if (optind != argc || prepare(&a, train_usage)) return 2;
    char err[E2G_ERR_LEN];
    e2g_dataset *train = NULL, *val = NULL;
    e2g_model *m = NULL;
    json_t *report = NULL;
    char *report_text = NULL;
    int rc = 1;
    if (load_data(&a, concepts, &train, &val, err)) goto out;
    if (weights) {
        if (e2g_dataset_weigh(train, weights, err)) goto out;
        fprintf(stderr, "concept weights %s: batches are drawn from %d pairs\n", weights, train->n_pairs);
    }
    if (init) { /* continue from a base; concepts it lacks start at its mean */
        if (e2g_model_load(&m, init, err)) goto out;
        for (int c = 0; c < train->n_concepts; c++) e2g_model_add_concept(m, train->concepts[c]);
        e2g_model_add_conditioning(m, film, skip_gate);
    } else {
        e2g_gen_config cfg = {(int)ngf, 8, train->n_concepts, !paper, !paper, paper, film, skip_gate};
        m = e2g_model_new(&cfg, (const char *const *)train->concepts, a.opts.gan_weight > 0 ? (int)ndf : 0,
                          a.opts.seed);
    }
    e2g_train_target target = {m, NULL};
    if (e2g_train(&target, train, val, &a.opts, &report, err)) goto out;
    if (weights) json_object_set_new(report, "concept_weights", json_string(weights));
    report_text = finish_report(report, &a, "base model (full training)");
    const char *meta[] = {"provenance", "e2gan train", "training_report", report_text, NULL};
    if (e2g_model_save(m, a.out, meta, err)) goto out;
    fprintf(stderr, "wrote %s\n", a.out);
    rc = 0;
out:
    if (rc) fprintf(stderr, "e2gan train: %s\n", err);
    free(report_text);
    json_decref(report);
    e2g_model_free(m);
    e2g_dataset_free(train), e2g_dataset_free(val);
    return rc;
}

/* ---- finetune --------------------------------------------------------------- */

static const char finetune_usage[] =
    "usage: e2gan finetune --model BASE --data DIR --concept NAME --out ADAPTER.safetensors\n"
    "                      [--rank R] [--alpha A] [--rank-search [--max-rank R] [--probe F]\n"
    "                      [--tolerance DB]] [--keep-fraction F] [training options]\n"
    "  Trains a LoRA adapter of rank R [4] and scale A/R [A = R] on every crucial\n"
    "  layer (docs/architecture.md §3) plus the concept's own embedding (started\n"
    "  at the mean of the base's), on the frozen base; D starts from the base's\n"
    "  when the base has one.  NAME is a concept of the dataset.\n"
    "  --rank-search: a probe at --max-rank [8] trains for the fraction --probe\n"
    "  [0.25] of --steps; each layer then gets the smallest rank (0, 1, 2, 4, ...)\n"
    "  whose SVD truncation keeps validation PSNR within --tolerance [0.1] dB of\n"
    "  the probe's, and training goes on from the truncated adapter.\n"
    "  --keep-fraction F [1]: data reduction, k-means on the base encoder's\n"
    "  features of the sources keeps the F·n pairs nearest the cluster centres.\n" TRAIN_OPTIONS_HELP;

/* A new adapter: A as PyTorch initialises a layer (±1/√fan_in), B zero (so
 * training starts from the base), the embedding at the base concepts' mean. */
static e2g_lora *new_adapter(const e2g_model *m, int rank, float alpha, unsigned long long seed) {
    int ranks[E2G_N_CRUCIAL];
    float scales[E2G_N_CRUCIAL];
    for (int l = 0; l < E2G_N_CRUCIAL; l++) ranks[l] = rank, scales[l] = alpha / rank;
    e2g_lora *l = e2g_lora_new(&m->cfg, ranks, scales);
    e2g_tensor_entry t[E2G_N_CRUCIAL];
    for (int i = 0; i < E2G_N_CRUCIAL; i++) {
        e2g_layer_shape s;
        e2g_crucial_shape(&m->cfg, i, &s);
        t[i] = (e2g_tensor_entry){.init = E2G_INIT_WEIGHT, .ndim = 2, .shape = {rank, (int64_t)s.cin * (s.k ? s.k * s.k : 1)},
                                  .numel = (size_t)rank * s.cin * (s.k ? s.k * s.k : 1), .slot = &l->A[i]};
    }
    e2g_init_tensors(t, E2G_N_CRUCIAL, seed);
    size_t ctx = (size_t)m->cfg.ctx_tokens * e2g_gen_c4(&m->cfg);
    for (int k = 0; k < m->cfg.n_concepts; k++) {
        const float *c = e2g_model_context(m, k);
        for (size_t i = 0; i < ctx; i++) l->concept[i] += c[i] / m->cfg.n_concepts;
    }
    return l;
}

/* Trains the probe adapter of the rank search for its share of the steps. */
static e2g_lora *train_probe(e2g_model *m, const e2g_dataset *train, const e2g_dataset *val,
                             const train_args *a, long probe_steps, int max_rank, json_t **report,
                             char *err) {
    e2g_lora *probe = new_adapter(m, max_rank, (float)max_rank, a->opts.seed);
    e2g_train_opts o = a->opts;
    o.steps = probe_steps, o.checkpoint = NULL, o.report_dir = NULL, o.eval_every = 0;
    e2g_train_target target = {m, probe};
    fprintf(stderr, "rank search: probe at rank %d for %ld steps\n", max_rank, probe_steps);
    phase_event(a, "probe", probe_steps);
    if (e2g_train(&target, train, val, &o, report, err)) {
        e2g_lora_free(probe);
        return NULL;
    }
    return probe;
}

int e2g_cmd_finetune(int argc, char **argv) {
    static const struct option opts[] = {TRAIN_OPTIONS,          {"model", 1, 0, 'm'},
                                         {"concept", 1, 0, 'c'},   {"rank", 1, 0, 'r'},
                                         {"alpha", 1, 0, 'a'},    {"rank-search", 0, 0, 's'},
                                         {"max-rank", 1, 0, 'R'}, {"probe", 1, 0, 'P'},
                                         {"tolerance", 1, 0, 'T'}, {"keep-fraction", 1, 0, 'k'},
                                         {0, 0, 0, 0}};
    train_args a;
    train_args_init(&a);
    const char *model = NULL, *concept = NULL;
    long rank = 4, max_rank = 8;
    double alpha = -1, probe_fraction = 0.25, tolerance = 0.1, keep = 1.0;
    int search = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = parse_train_option(c, optarg, &a), bad = r < 0 || (r == 0 && c == '?');
        if (c == 'm') model = optarg;
        if (c == 'c') concept = optarg;
        if (c == 's') search = 1;
        if (c == 'r') bad |= e2g_cli_parse_long(optarg, 1, 1024, &rank);
        if (c == 'R') bad |= e2g_cli_parse_long(optarg, 1, 1024, &max_rank);
        if (c == 'a') bad |= e2g_cli_parse_double(optarg, 1e-6, 1e6, &alpha);
        if (c == 'P') bad |= e2g_cli_parse_double(optarg, 0.01, 0.99, &probe_fraction);
        if (c == 'T') bad |= e2g_cli_parse_double(optarg, 0, 100, &tolerance);
        if (c == 'k') bad |= e2g_cli_parse_double(optarg, 1e-6, 1, &keep);
        if (bad) return e2g_cli_usage(finetune_usage);
    }
    if (optind != argc || !model || !concept || prepare(&a, finetune_usage)) return 2;
    if (alpha < 0) alpha = (double)rank;
    char err[E2G_ERR_LEN];
    e2g_dataset *train = NULL, *val = NULL;
    e2g_model *m = NULL;
    e2g_lora *lora = NULL, *probe = NULL;
    json_t *report = NULL, *probe_report = NULL, *search_evidence = NULL, *reduction = NULL;
    char *report_text = NULL;
    int rc = 1;
    double t0 = e2g_cli_seconds();
    if (e2g_model_load(&m, model, err) || load_data(&a, concept, &train, &val, err)) goto out;
    if (keep < 1) {
        phase_event(&a, "reduce", 0);
        reduction = e2g_reduce_pairs(train, m, keep, a.opts.seed);
        fprintf(stderr, "data reduction: kept %d of %d pairs\n", train->n_pairs,
                (int)json_integer_value(json_object_get(reduction, "pairs")));
    }
    train_args final_args = a;
    if (search) {
        long probe_steps = (long)(probe_fraction * a.opts.steps);
        if (probe_steps < 1 || probe_steps >= a.opts.steps) {
            snprintf(err, sizeof err, "--probe leaves no steps for the probe or for the final training");
            goto out;
        }
        probe = train_probe(m, train, val, &a, probe_steps, (int)max_rank, &probe_report, err);
        if (!probe) goto out;
        phase_event(&a, "rank-search", 0);
        lora = e2g_rank_search(m, probe, val, a.opts.eval_pairs, tolerance, &search_evidence);
        json_object_set(search_evidence, "probe_budget", json_object_get(probe_report, "budget"));
        final_args.opts.steps -= probe_steps;
        fprintf(stderr, "rank search: probe %.2f dB, truncated %.2f dB, %lld of %lld LoRA parameters\n",
                json_number_value(json_object_get(search_evidence, "probe_psnr")),
                json_number_value(json_object_get(search_evidence, "truncated_psnr")),
                json_integer_value(json_object_get(search_evidence, "chosen_lora_params")),
                json_integer_value(json_object_get(search_evidence, "probe_lora_params")));
    } else {
        lora = new_adapter(m, (int)rank, (float)alpha, a.opts.seed);
    }
    e2g_train_target target = {m, lora};
    phase_event(&a, "train", final_args.opts.steps);
    if (e2g_train(&target, train, val, &final_args.opts, &report, err)) goto out;
    json_t *ranks = json_object();
    for (int l = 0; l < E2G_N_CRUCIAL; l++) json_object_set_new(ranks, e2g_crucial_name(l), json_integer(lora->rank[l]));
    json_object_set_new(report, "ranks", ranks);
    json_object_set_new(report, "trainable_params", json_integer((json_int_t)lora->numel));
    if (search_evidence) json_object_set(report, "rank_search", search_evidence);
    if (reduction) json_object_set(report, "data_reduction", reduction);
    json_object_set_new(json_object_get(report, "budget"), "total_wall_s", json_real(e2g_cli_seconds() - t0));
    report_text = finish_report(report, &a, "LoRA adapter (fine-tuning on a frozen base)");
    const char *meta[] = {"training_report", report_text, NULL};
    if (e2g_adapter_save(a.out, m, lora, concept, meta, err)) goto out;
    fprintf(stderr, "wrote %s\n", a.out);
    rc = 0;
out:
    if (rc) fprintf(stderr, "e2gan finetune: %s\n", err);
    free(report_text);
    json_decref(report), json_decref(probe_report), json_decref(search_evidence), json_decref(reduction);
    e2g_lora_free(lora), e2g_lora_free(probe);
    e2g_model_free(m);
    e2g_dataset_free(train), e2g_dataset_free(val);
    return rc;
}

/* ---- evaluate --------------------------------------------------------------- */

static const char evaluate_usage[] =
    "usage: e2gan evaluate --model BASE --data DIR [--concepts a,b,...]\n"
    "                      [--adapter A.safetensors --concept NAME] [--pairs N]\n"
    "                      [--report DIR] [--threads T] [--precision auto|fp32|bf16]\n"
    "  PSNR, SSIM and edge F1 against the teacher on the dataset's validation\n"
    "  pairs, per concept, beside the identity edit's and the best constant\n"
    "  image's, and whether the concept is learned (docs/training.md#quality):\n"
    "  JSON on stdout, a table on stderr; with --report, also evaluation.json and\n"
    "  contact.png there.  With --adapter, the adapter edits the validation pairs\n"
    "  of dataset concept NAME.\n";

int e2g_cmd_evaluate(int argc, char **argv) {
    static const struct option opts[] = {{"model", 1, 0, 'm'},   {"data", 1, 0, 'd'},
                                         {"concepts", 1, 0, 'c'}, {"adapter", 1, 0, 'a'},
                                         {"concept", 1, 0, 'n'},  {"pairs", 1, 0, 'p'},
                                         {"report", 1, 0, 'r'},   {"threads", 1, 0, 't'},
                                         {"precision", 1, 0, 'P'}, {0, 0, 0, 0}};
    const char *model = NULL, *data = NULL, *concepts = NULL, *adapter = NULL, *report = NULL,
               *precision = NULL;
    long pairs = 0, threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = c == '?';
        if (c == 'm') model = optarg;
        if (c == 'd') data = optarg;
        if (c == 'c' || c == 'n') concepts = optarg;
        if (c == 'a') adapter = optarg;
        if (c == 'r') report = optarg;
        if (c == 'P') precision = optarg;
        if (c == 'p') bad |= e2g_cli_parse_long(optarg, 0, 1000000, &pairs);
        if (c == 't') bad |= e2g_cli_parse_long(optarg, 1, 1024, &threads);
        if (bad) return e2g_cli_usage(evaluate_usage);
    }
    if (optind != argc || !model || !data || (adapter && !concepts)) return e2g_cli_usage(evaluate_usage);
    e2g_set_threads((int)threads);
    char err[E2G_ERR_LEN], sheet[4096];
    e2g_model *m = NULL;
    e2g_adapter *a = NULL;
    e2g_dataset *val = NULL;
    int rc = 1;
    if (e2g_precision_setup(precision, err) || e2g_model_load(&m, model, err) ||
        (adapter && e2g_adapter_load(&a, m, adapter, err)) || e2g_dataset_load(&val, data, "val", concepts, err))
        goto out;
    if (report) {
        mkdir(report, 0755);
        snprintf(sheet, sizeof sheet, "%s/contact.png", report);
    }
    e2g_train_target target = {m, a ? a->lora : NULL};
    json_t *result = e2g_evaluate(&target, val, (int)pairs, report ? sheet : NULL);
    if (json_object_get(result, "error")) {
        snprintf(err, sizeof err, "%s", json_string_value(json_object_get(result, "error")));
        json_decref(result);
        goto out;
    }
    json_object_set_new(result, "precision", json_string(e2g_precision_name(e2g_get_precision())));
    json_dumpf(result, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    putchar('\n');
    fflush(stdout);
    print_quality(stderr, result);
    if (report) {
        char path[4096];
        snprintf(path, sizeof path, "%s/evaluation.json", report);
        json_dump_file(result, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    }
    json_decref(result);
    rc = 0;
out:
    if (rc) fprintf(stderr, "e2gan evaluate: %s\n", err);
    e2g_adapter_free(a);
    e2g_model_free(m);
    e2g_dataset_free(val);
    return rc;
}
