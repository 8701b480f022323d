/* e2gan.c — the command-line tool over the engine:
 *   e2gan init   — a freshly initialised base model (tests, benchmarks)
 *   e2gan info   — what a weights file holds
 *   e2gan edit   — edit one image with a base concept, an adapter or a blend
 *   e2gan bench  — generator throughput at a size and batch
 *   e2gan train, finetune, evaluate — see train_cmds.c
 *   e2gan devices — the CPU threads and CUDA devices this build can use
 * Every failure prints one line "e2gan <command>: <reason>" and exits 1;
 * usage errors exit 2. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "backend.h"
#include "cli.h"
#include "common.h"
#include "image.h"
#include "infer.h"
#include "model.h"
#include "model_io.h"
#include "precision.h"
#include "safetensors.h"

#define MAX_ADAPTERS 64
#define DEFAULT_MAX_PIXELS (64L * 1024 * 1024)

static int fail(const char *cmd, const char *msg) {
    fprintf(stderr, "e2gan %s: %s\n", cmd, msg);
    return 1;
}


/* ---- init ------------------------------------------------------------------- */

static const char init_usage[] =
    "usage: e2gan init --ngf N --concepts a,b,c [--seed S] [--ctx-tokens T] [--ndf D]\n"
    "                  [--paper-like] [--film] [--skip-gate] --out FILE\n"
    "  A base model with PyTorch-default initialisation (for tests and benchmarks).\n"
    "  --ndf D also stores a discriminator of width D; --paper-like sets the\n"
    "  metadata flags unet_skips=false residual_out=false norm_ends=true; --film\n"
    "  conditions the decoder's norms on the concept (metadata film=true);\n"
    "  --skip-gate scales the U-Net skips per concept (metadata skip_gate=true).\n";

static int cmd_init(int argc, char **argv) {
    static const struct option opts[] = {{"ngf", 1, 0, 'n'},        {"concepts", 1, 0, 'c'},
                                         {"seed", 1, 0, 's'},       {"ctx-tokens", 1, 0, 't'},
                                         {"ndf", 1, 0, 'd'},        {"paper-like", 0, 0, 'p'},
                                         {"out", 1, 0, 'o'},        {"film", 0, 0, 'f'},
                                         {"skip-gate", 0, 0, 'g'},  {0, 0, 0, 0}};
    long ngf = 0, seed = 0, tokens = 8, ndf = 0;
    const char *concepts = NULL, *out = NULL;
    int paper = 0, film = 0, skip_gate = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long *target = c == 'n' ? &ngf : c == 's' ? &seed : c == 't' ? &tokens : c == 'd' ? &ndf : NULL;
        if (target && e2g_cli_parse_long(optarg, 0, 1L << 30, target)) return e2g_cli_usage(init_usage);
        if (c == 'c') concepts = optarg;
        if (c == 'o') out = optarg;
        if (c == 'p') paper = 1;
        if (c == 'f') film = 1;
        if (c == 'g') skip_gate = 1;
        if (c == '?') return e2g_cli_usage(init_usage);
    }
    if (ngf < 1 || ngf > 512 || tokens < 1 || tokens > 256 || ndf > 1024 || !concepts || !out ||
        optind != argc)
        return e2g_cli_usage(init_usage);
    char *list = strdup(concepts), *names[256];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < 256; tok = strtok_r(NULL, ",", &save))
        names[n++] = tok;
    if (n == 0) return e2g_cli_usage(init_usage);
    e2g_gen_config cfg = {(int)ngf, (int)tokens, n, !paper, !paper, paper, film, skip_gate};
    e2g_model *m = e2g_model_new(&cfg, (const char *const *)names, (int)ndf, (unsigned long long)seed);
    char err[E2G_ERR_LEN], seed_str[32];
    snprintf(seed_str, sizeof seed_str, "%ld", seed);
    const char *meta[] = {"provenance", "e2gan init (PyTorch-default initialisation)", "seed", seed_str, NULL};
    int rc = e2g_model_save(m, out, meta, err);
    if (rc == 0)
        printf("wrote %s: ngf %ld, %d concepts, %zu generator parameters\n", out, ngf, n,
               e2g_gen_param_count(&cfg));
    e2g_model_free(m);
    free(list);
    return rc ? fail("init", err) : 0;
}

/* ---- info ------------------------------------------------------------------- */

static int cmd_info(int argc, char **argv) {
    if (argc != 2) return e2g_cli_usage("usage: e2gan info FILE\n");
    char err[E2G_ERR_LEN], hex[65];
    e2g_st_file *f = NULL;
    if (e2g_st_open(&f, argv[1], err)) return fail("info", err);
    static const char *const dtype_names[] = {"F32", "F16", "BF16"};
    e2g_st_sha256(f, hex);
    printf("file: %s\nsha256: %s\nmetadata:\n", argv[1], hex);
    for (int i = 0; i < e2g_st_meta_count(f); i++)
        printf("  %s: %s\n", e2g_st_meta_key(f, i), e2g_st_meta(f, e2g_st_meta_key(f, i)));
    size_t total = 0, bytes = 0;
    printf("tensors:\n");
    for (int i = 0; i < e2g_st_count(f); i++) {
        const e2g_st_tensor *t = e2g_st_at(f, i);
        printf("  %-48s %-4s [", t->name, dtype_names[t->dtype]);
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("]\n");
        total += t->numel;
        bytes += t->nbytes;
    }
    printf("parameters: %zu (%.2f M) in %d tensors, %zu bytes\n", total, total / 1e6, e2g_st_count(f),
           bytes);
    e2g_st_close(f);
    return 0;
}

/* ---- edit ------------------------------------------------------------------- */

static const char edit_usage[] =
    "usage: e2gan edit --model BASE [--adapter A.safetensors]... --concept NAME\n"
    "                  [--strength X] [--merged] [--threads T] [--quality Q]\n"
    "                  [--max-pixels P] [--device auto|cpu|cuda]\n"
    "                  [--precision auto|fp32|bf16] IN OUT\n"
    "  NAME is a base concept, an adapter's concept, or a blend \"a:0.7,b:0.3\".\n"
    "  IN and OUT are JPEG, PNG or WebP (by extension for OUT); any size works\n"
    "  (padded to a multiple of 8 by reflection and cropped back).  --merged\n"
    "  folds the LoRA deltas into a private copy of the weights instead of\n"
    "  running the low-rank path.  --device (default $E2GAN_DEVICE, else auto)\n"
    "  picks the engine: auto uses the GPU when one is present.  --precision\n"
    "  (default $E2GAN_PRECISION, else auto) is the CPU's: auto runs bf16 where\n"
    "  the CPU multiplies bf16 natively (AVX512_BF16, AMX), else fp32.\n";

typedef struct {
    e2g_model *model;
    e2g_adapter *adapters[MAX_ADAPTERS];
    int n_adapters;
    e2g_runtime *runtime; /* the model on the device --device picks */
} loaded_models;

static void loaded_free(loaded_models *lm) {
    e2g_runtime_free(lm->runtime);
    for (int i = 0; i < lm->n_adapters; i++) e2g_adapter_free(lm->adapters[i]);
    e2g_model_free(lm->model);
}

static int load_models(loaded_models *lm, const char *model, char **adapters, int n, char *err) {
    memset(lm, 0, sizeof *lm);
    if (e2g_model_load(&lm->model, model, err)) return -1;
    for (int i = 0; i < n; i++) {
        if (e2g_adapter_load(&lm->adapters[i], lm->model, adapters[i], err)) return -1;
        lm->n_adapters++;
    }
    return 0;
}

static int cmd_edit(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},   {"adapter", 1, 0, 'a'}, {"concept", 1, 0, 'c'},
        {"strength", 1, 0, 's'}, {"merged", 0, 0, 'g'},  {"threads", 1, 0, 't'},
        {"quality", 1, 0, 'q'},  {"max-pixels", 1, 0, 'p'}, {"device", 1, 0, 'd'},
        {"precision", 1, 0, 'r'}, {0, 0, 0, 0}};
    const char *model = NULL, *concept = NULL, *device = NULL, *precision = NULL;
    char *adapters[MAX_ADAPTERS];
    int n_adapters = 0, merged = 0, c;
    long threads = 0, quality = 90, max_pixels = DEFAULT_MAX_PIXELS;
    double strength = 1.0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a':
            if (n_adapters == MAX_ADAPTERS) return e2g_cli_usage(edit_usage);
            adapters[n_adapters++] = optarg;
            break;
        case 'c': concept = optarg; break;
        case 's': if (e2g_cli_parse_double(optarg, -1e9, 1e9, &strength)) return e2g_cli_usage(edit_usage); break;
        case 'g': merged = 1; break;
        case 't': if (e2g_cli_parse_long(optarg, 1, 1024, &threads)) return e2g_cli_usage(edit_usage); break;
        case 'q': if (e2g_cli_parse_long(optarg, 1, 100, &quality)) return e2g_cli_usage(edit_usage); break;
        case 'p': if (e2g_cli_parse_long(optarg, 64, 1L << 40, &max_pixels)) return e2g_cli_usage(edit_usage); break;
        case 'd': device = optarg; break;
        case 'r': precision = optarg; break;
        default: return e2g_cli_usage(edit_usage);
        }
    }
    if (!model || !concept || argc - optind != 2) return e2g_cli_usage(edit_usage);
    const char *in_path = argv[optind], *out_path = argv[optind + 1];
    e2g_set_threads((int)threads);
    char err[E2G_ERR_LEN];
    loaded_models lm;
    e2g_image im = {0};
    e2g_request req = {0};
    int rc = 1;
    if (e2g_precision_setup(precision, err) || load_models(&lm, model, adapters, n_adapters, err) ||
        e2g_runtime_new(&lm.runtime, lm.model, device, err) < 0 ||
        e2g_request_resolve(&req, lm.model, lm.adapters, lm.n_adapters, concept, (float)strength, err) ||
        e2g_image_read_file(&im, in_path, max_pixels, err))
        goto out;
    double t0 = e2g_cli_seconds();
    if (e2g_infer_image(&im, lm.runtime, &req.edit, merged, err)) goto out;
    double t1 = e2g_cli_seconds();
    if (e2g_image_write_file(out_path, &im, (int)quality, err)) goto out;
    printf("%s: %dx%d, concept %s, strength %.2f, %.1f ms\n", out_path, im.width, im.height, concept,
           strength, (t1 - t0) * 1e3);
    rc = 0;
out:
    if (rc) fail("edit", err);
    e2g_request_free(&req);
    e2g_image_free(&im);
    loaded_free(&lm);
    return rc;
}

/* ---- bench ------------------------------------------------------------------ */

static const char bench_usage[] =
    "usage: e2gan bench --model BASE --size S --batch B [--iters N] [--threads T]\n"
    "                   [--adapter A.safetensors] [--concept NAME] [--merged]\n"
    "                   [--device auto|cpu|cuda] [--precision auto|fp32|bf16]\n"
    "  Times the generator on random images of S×S (S a multiple of 8); the last\n"
    "  line is JSON {\"ms_per_batch\": …, \"images_per_s\": …, \"precision\": …}\n"
    "  (median of N).\n";

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {{"model", 1, 0, 'm'},  {"size", 1, 0, 's'},
                                         {"batch", 1, 0, 'b'},  {"iters", 1, 0, 'i'},
                                         {"threads", 1, 0, 't'}, {"adapter", 1, 0, 'a'},
                                         {"concept", 1, 0, 'c'}, {"merged", 0, 0, 'g'},
                                         {"device", 1, 0, 'd'}, {"precision", 1, 0, 'r'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *concept = NULL, *device = NULL, *precision = NULL;
    char *adapter = NULL;
    long size = 0, batch = 1, iters = 10, threads = 0;
    int merged = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 's': if (e2g_cli_parse_long(optarg, 8, 16384, &size) || size % 8) return e2g_cli_usage(bench_usage); break;
        case 'b': if (e2g_cli_parse_long(optarg, 1, 1024, &batch)) return e2g_cli_usage(bench_usage); break;
        case 'i': if (e2g_cli_parse_long(optarg, 1, 100000, &iters)) return e2g_cli_usage(bench_usage); break;
        case 't': if (e2g_cli_parse_long(optarg, 1, 1024, &threads)) return e2g_cli_usage(bench_usage); break;
        case 'a': adapter = optarg; break;
        case 'c': concept = optarg; break;
        case 'g': merged = 1; break;
        case 'd': device = optarg; break;
        case 'r': precision = optarg; break;
        default: return e2g_cli_usage(bench_usage);
        }
    }
    if (!model || !size || optind != argc) return e2g_cli_usage(bench_usage);
    e2g_set_threads((int)threads);
    char err[E2G_ERR_LEN];
    loaded_models lm;
    e2g_request req = {0};
    int rc = 1;
    if (e2g_precision_setup(precision, err) || load_models(&lm, model, &adapter, adapter ? 1 : 0, err) ||
        e2g_runtime_new(&lm.runtime, lm.model, device, err) < 0)
        goto out;
    if (!concept) concept = adapter ? lm.adapters[0]->concept : lm.model->concept_names[0];
    if (e2g_request_resolve(&req, lm.model, lm.adapters, lm.n_adapters, concept, 1.0f, err)) goto out;
    e2g_infer *inf = e2g_infer_new(lm.runtime, (int)batch, (int)size, (int)size);
    size_t n = (size_t)batch * size * size * 3;
    float *x = e2g_xmalloc(n * sizeof(float)), *y = e2g_xmalloc(n * sizeof(float));
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    e2g_edit *edits = e2g_xmalloc(batch * sizeof *edits);
    for (long i = 0; i < batch; i++) edits[i] = req.edit;
    double *ms = e2g_xmalloc(iters * sizeof(double));
    e2g_infer_run(inf, y, x, edits, merged); /* warm-up: primitives, pages */
    for (long i = 0; i < iters; i++) {
        double t0 = e2g_cli_seconds();
        e2g_infer_run(inf, y, x, edits, merged);
        ms[i] = (e2g_cli_seconds() - t0) * 1e3;
    }
    qsort(ms, iters, sizeof *ms, compare_doubles);
    double median = ms[iters / 2];
    printf("model %s, ngf %d, %ldx%ld, batch %ld, %s, threads %d, concept %s%s, %ld iters: "
           "min %.2f ms, median %.2f ms, max %.2f ms\n",
           model, lm.model->cfg.ngf, size, size, batch, e2g_runtime_name(lm.runtime), e2g_get_threads(), concept,
           merged ? " (merged)" : "", iters, ms[0], median, ms[iters - 1]);
    printf("{\"ms_per_batch\": %.3f, \"images_per_s\": %.3f, \"precision\": \"%s\"}\n", median,
           batch * 1e3 / median, e2g_precision_name(e2g_get_precision()));
    free(ms), free(edits), free(x), free(y);
    e2g_infer_free(inf);
    rc = 0;
out:
    if (rc) fail("bench", err);
    e2g_request_free(&req);
    loaded_free(&lm);
    return rc;
}

/* ---- devices ---------------------------------------------------------------- */

static int cmd_devices(void) {
    int rc = 0;
    for (int i = 0; i < e2g_backend_count(); i++) {
        const e2g_backend *b = e2g_backend_get(i);
        char msg[512];
        if (b->describe(msg, sizeof msg) < 0) rc = 1;
        printf("%s: %s\n", b->name, msg);
    }
    if (!e2g_backend_find("cuda")) printf("cuda: not built (nvcc or cuDNN was not found at configure time)\n");
    /* what edit, bench, train and the server pick without --device */
    char why[E2G_ERR_LEN] = "";
    e2g_device_mode mode;
    if (e2g_device_mode_parse(NULL, &mode, why)) {
        printf("device: %s\n", why);
        return 1;
    }
    const e2g_backend *cand[8], *chosen = NULL;
    int n = e2g_backend_candidates(mode, cand, 8, why);
    for (int i = 0; i < n && !chosen; i++)
        if (cand[i]->available(why) == 1) chosen = cand[i];
    if (chosen)
        printf("device (E2GAN_DEVICE=%s): %s\n", e2g_device_mode_name(mode), chosen->name);
    else
        printf("device (E2GAN_DEVICE=%s): %s (%s)\n", e2g_device_mode_name(mode),
               mode == E2G_DEVICE_CUDA ? "none" : "cpu", why);
    /* and the CPU's compute precision they pick without --precision */
    const char *env = getenv("E2GAN_PRECISION");
    if (e2g_precision_setup(NULL, why)) {
        printf("precision: %s\n", why);
        return 1;
    }
    printf("precision (E2GAN_PRECISION=%s): %s\n", env && *env ? env : "auto", e2g_precision_describe());
    return rc;
}

/* ---- main ------------------------------------------------------------------- */

static const char main_usage[] =
    "usage: e2gan COMMAND [ARGS]\n"
    "commands:\n"
    "  init   make a freshly initialised base model\n"
    "  info   show a weights file's metadata and tensors\n"
    "  edit   edit an image with a concept, an adapter or a blend\n"
    "  bench  time the generator\n"
    "  train  train a base model (or one concept from scratch) on a dataset\n"
    "  finetune  train a LoRA adapter for a new concept on a frozen base\n"
    "  evaluate  quality of a model (or adapter) on a dataset's validation pairs:\n"
    "            PSNR/SSIM/edge F1 beside identity and constant baselines, learned or not\n"
    "  devices  show the CPU threads and CUDA devices the build can use\n"
    "Run 'e2gan COMMAND' without arguments for its options.\n";

/* Training runs for hours beside other work: OpenMP threads that spin while
 * waiting then steal the cores the others need (measured: 100x slower on
 * a loaded 2-core machine).  libgomp reads its wait policy when it loads,
 * so the training commands re-run themselves with a passive policy unless
 * the caller chose one. */
static void prefer_passive_wait(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    if (argc < 2) return e2g_cli_usage(main_usage);
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0 || strcmp(cmd, "finetune") == 0) prefer_passive_wait(argv);
    argc--, argv++;
    if (strcmp(cmd, "init") == 0) return cmd_init(argc, argv);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc, argv);
    if (strcmp(cmd, "edit") == 0) return cmd_edit(argc, argv);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc, argv);
    if (strcmp(cmd, "train") == 0) return e2g_cmd_train(argc, argv);
    if (strcmp(cmd, "finetune") == 0) return e2g_cmd_finetune(argc, argv);
    if (strcmp(cmd, "evaluate") == 0) return e2g_cmd_evaluate(argc, argv);
    if (strcmp(cmd, "devices") == 0) return cmd_devices();
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(main_usage, stdout);
        return 0;
    }
    fprintf(stderr, "e2gan: unknown command '%s'\n", cmd);
    return e2g_cli_usage(main_usage);
}
