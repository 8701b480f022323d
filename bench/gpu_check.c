/* gpu_check.c — e2gan-gpu-check: proves the CUDA engine against the CPU
 * engine and times it.  Links the engine only (no Check, no HTTP), so it
 * runs on the GPU machine; bench/gpu-run.sh drives it, one process per
 * item so that a fault (a sticky CUDA error kills the process's context)
 * costs that item only.
 *
 *   e2gan-gpu-check probe            device present? (exit 3 if not) and the
 *                                    backend e2g_runtime_new picks per mode
 *   e2gan-gpu-check ops [--list] [NAME...]
 *                                    each fused kernel vs the CPU op, random
 *                                    inputs (all, or the NAMEs; --list: names)
 *   e2gan-gpu-check model BASE IMAGE [ADAPTER...] [--only PART] [--list]
 *                                    whole images vs the fp32 CPU engine (PSNR):
 *                                    base, adapterK (unmerged and merged), blend,
 *                                    mixed, one-merged, graphs (eager vs capture
 *                                    vs replay, graphs on or off and why), film
 *                                    (BASE given random FiLM weights, norms and
 *                                    output gate: a batch of contexts of its
 *                                    own, eager, captured, replayed; merged
 *                                    with the first adapter)
 *   e2gan-gpu-check bench BASE [--only KEY] [--list]
 *                                    timings (forward, mixed adapters, switches)
 *   e2gan-gpu-check sticky BASE      a fault injected into the engine: the
 *                                    runtime must mark the device dead and serve
 *                                    on the CPU (equal to the CPU engine)
 *   e2gan-gpu-check dump-image IMAGE OUT.npy
 *                                    IMAGE padded as `model` pads it, as a
 *                                    float32 (1, H, W, 3) .npy (PyTorch's input
 *                                    for the calibration); no GPU needed
 *
 * Tolerances: the defaults below, or those of the file $E2G_TOLERANCES
 * (bench/gpu_calibrate.py: PyTorch bf16 vs fp32 on the same shapes and
 * weights, in the same run) — lines "op NAME TORCH_ERR TOL" and
 * "psnr_min DB".
 *
 * Every mode prints "RESULT <key> <value>" lines, one "SUMMARY <text>"
 * line (the script's table), and exits 0 when all its checks pass, 1 when
 * one fails, 2 on bad usage, 3 when there is no CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapter.h"
#include "attention.h"
#include "backend.h"
#include "common.h"
#include "conv.h"
#include "cuda_engine.h" /* the single-op checks */
#include "image.h"
#include "infer.h"
#include "model_io.h"
#include "ops.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NO_DEVICE 3

static int failures;

/* ---- tolerances ------------------------------------------------------------------------- */

#define DEFAULT_OP_TOL 2e-2     /* max |err| / max |ref|: bf16 keeps 8 bits, a conv adds a few roundings */
#define DEFAULT_OUTPUT_TOL 1e-2 /* the output layer: one rounding of o */
#define DEFAULT_PSNR_MIN 40.0

/* The value of "KEY NAME ... VALUE" (the last field) or "KEY VALUE" in
 * $E2G_TOLERANCES; 1 when found. */
static int tolerance_file(const char *key, const char *name, double *value) {
    const char *path = getenv("E2G_TOLERANCES");
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char k[64], n[128];
        double a, b;
        if (name && sscanf(line, "%63s %127s %lf %lf", k, n, &a, &b) == 4 && !strcmp(k, key) && !strcmp(n, name))
            *value = b, found = 1;
        else if (!name && sscanf(line, "%63s %lf", k, &a) == 2 && !strcmp(k, key))
            *value = a, found = 1;
    }
    fclose(f);
    return found;
}

static double op_tolerance(const char *name, double fallback, const char **how) {
    double t;
    if (tolerance_file("op", name, &t)) return *how = "calibrated", t;
    return *how = "default", fallback;
}

static double psnr_floor(const char **how) {
    double t;
    if (tolerance_file("psnr_min", NULL, &t)) return *how = "calibrated", t;
    return *how = "default", DEFAULT_PSNR_MIN;
}

static void result(const char *key, const char *fmt, double v) {
    printf("RESULT %s ", key);
    printf(fmt, v);
    printf("\n");
}

static float *random_floats(size_t n, float lo, float hi, unsigned *seed) {
    float *x = e2g_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(*seed >> 8) / 16777216.0f;
    }
    return x;
}

/* Largest |gpu − ref| over the largest |ref|: the bf16 error measure. */
static double rel_err(const float *gpu, const float *ref, size_t n) {
    double m = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - ref[i]);
        if (!(d <= m)) m = d; /* NaN counts as failure */
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    return m / (scale > 0 ? scale : 1);
}

static double worst_ratio; /* worst err / tol over the checks run */

static void judge(const char *name, double err, double fallback) {
    const char *how;
    double tol = op_tolerance(name, fallback, &how);
    int ok = err <= tol;
    printf("%-28s max rel err %.2e (tolerance %.2e, %s) %s\n", name, err, tol, how, ok ? "ok" : "FAILED");
    result(name, "%.3e", err);
    if (!(err / tol <= worst_ratio)) worst_ratio = err / tol;
    if (!ok) failures++;
}

/* ---- probe --------------------------------------------------------------------------------- */

/* The CUDA backend of the registry; this tool is built only with CUDA. */
static const e2g_backend *cuda_backend(void) {
    const e2g_backend *b = e2g_backend_find("cuda");
    if (!b) {
        printf("the backend registry lists no cuda backend\n");
        exit(EXIT_FAILED);
    }
    return b;
}

/* Without a device: the backend choice must stay on the CPU, with a
 * reason, and "cuda" must be refused.  With one: auto picks it. */
static int cmd_probe(void) {
    char msg[E2G_ERR_LEN];
    int present = cuda_backend()->available(msg);
    printf("device: %s\n", present ? "CUDA device 0 present" : msg);
    char card[512] = "";
    if (present) cuda_backend()->describe(card, sizeof card), printf("%s\n", card);
    e2g_gen_config cfg = {.ngf = 8, .ctx_tokens = 8, .n_concepts = 1, .unet_skips = 1, .residual_out = 1};
    const char *names[] = {"c"};
    e2g_model *m = e2g_model_new(&cfg, names, 0, 1);
    e2g_runtime *rt;
    int forced = e2g_runtime_new(&rt, m, "cpu", msg);
    printf("device cpu: %d (%s), backend %s\n", forced, msg, rt ? e2g_runtime_name(rt) : "none");
    if (forced != 0 || strcmp(e2g_runtime_name(rt), "cpu")) failures++;
    e2g_runtime_free(rt);
    int autod = e2g_runtime_new(&rt, m, "auto", msg);
    printf("device auto: %d (%s), backend %s\n", autod, msg, rt ? e2g_runtime_name(rt) : "none");
    if (autod != present || strcmp(e2g_runtime_name(rt), present ? "cuda" : "cpu")) failures++;
    if (!present) {
        e2g_runtime *none;
        int cuda = e2g_runtime_new(&none, m, "cuda", msg);
        printf("device cuda: %d (%s)\n", cuda, msg);
        if (cuda != -1 || none) failures++;
        /* the CPU path still runs and matches the lean forward */
        int H = 16, W = 16;
        unsigned seed = 7;
        float *x = random_floats((size_t)H * W * 3, -1, 1, &seed), *y = e2g_xmalloc((size_t)H * W * 3 * 4),
              *ref = e2g_xmalloc((size_t)H * W * 3 * 4);
        e2g_edit edit = {.context = e2g_model_context(m, 0)};
        e2g_infer *inf = e2g_infer_new(rt, 1, H, W);
        e2g_infer_run(inf, y, x, &edit, 0);
        e2g_infer_free(inf);
        e2g_gen_infer(&m->cfg, ref, &m->params, x, &edit, 1, H, W);
        if (memcmp(y, ref, (size_t)H * W * 3 * 4)) failures++, printf("CPU path differs from e2g_gen_infer\n");
        free(x), free(y), free(ref);
    }
    e2g_runtime_free(rt);
    e2g_model_free(m);
    printf("SUMMARY %s%s\n", failures ? "FAILED: " : "", present ? card : msg);
    if (failures) return EXIT_FAILED;
    return present ? 0 : EXIT_NO_DEVICE;
}

/* ---- ops ------------------------------------------------------------------------------------ */

/* The op checks by name.  `ops --list` prints one line per check with its
 * shape as key=value pairs: bench/gpu_calibrate.py reads them to run the
 * same shapes in PyTorch.  Input ranges (fixed here and there): conv x ∈
 * [-1, 1], w ∈ [-0.2, 0.2], bias ∈ [-0.5, 0.5]; norms x ∈ [-2, 3], gamma
 * ∈ [0.5, 1.5], beta ∈ [-0.5, 0.5], residual ∈ [-1, 1]; GELU x ∈ [-4, 4],
 * bias ∈ [-0.5, 0.5]; attention q, k ∈ [-2, 2], v ∈ [-1, 1]; output o ∈
 * [-3, 3], x ∈ [-1, 1]. */
typedef struct {
    const char *name;
    int N, H, W;
    e2g_conv_shape cs;
    int upsample;
} conv_case;
static const conv_case CONVS[] = {
    {"conv3x3_reflect_64_64", 2, 32, 32, {64, 64, 3, 1, 1, E2G_PAD_REFLECT}, 0},
    {"conv3x3_s2_64_128", 2, 32, 32, {64, 128, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"conv7x7_reflect_16_32", 2, 40, 24, {16, 32, 7, 1, 3, E2G_PAD_REFLECT}, 0},
    {"upconv3x3_64_32", 2, 16, 24, {64, 32, 3, 1, 1, E2G_PAD_ZERO}, 1},
    {"linear_256_768", 1, 300, 1, {256, 768, 1, 1, 0, E2G_PAD_ZERO}, 0},
};
typedef struct {
    const char *name;
    int N, Lq, Lk, C, heads;
} att_case;
static const att_case ATTS[] = {
    {"attn_self_1024_c256_h4", 2, 1024, 1024, 256, 4},
    {"attn_self_100_c128_h2", 2, 100, 100, 128, 2},
    {"attn_cross_1024x8_c256_h4", 2, 1024, 8, 256, 4},
    {"attn_self_64_c32_h1", 1, 64, 64, 32, 1},
};
#define N_CONVS (int)(sizeof CONVS / sizeof *CONVS)
#define N_ATTS (int)(sizeof ATTS / sizeof *ATTS)
static const char *const NORM_OPS[] = {"inorm_relu", "inorm_relu_residual"};
enum { INORM_N = 2, INORM_HW = 24 * 40, INORM_C = 64, LN_M = 300, LN_C = 256, GELU_M = 300, GELU_C = 1024,
       OUT_N = 3 * 4096 };

/* A seed of its own per check, so a subset sees the inputs the full run does. */
static unsigned seed_of(const char *name) {
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h | 1;
}

static void list_ops(void) {
    for (int i = 0; i < N_CONVS; i++) {
        const conv_case *c = &CONVS[i];
        printf("%s kind=conv N=%d H=%d W=%d cin=%d cout=%d k=%d stride=%d pad=%d reflect=%d upsample=%d\n", c->name,
               c->N, c->H, c->W, c->cs.cin, c->cs.cout, c->cs.k, c->cs.stride, c->cs.pad,
               c->cs.pad_mode == E2G_PAD_REFLECT, c->upsample);
    }
    for (int r = 0; r < 2; r++)
        printf("%s kind=instancenorm N=%d HW=%d C=%d residual=%d\n", NORM_OPS[r], INORM_N, INORM_HW, INORM_C, r);
    printf("layernorm_300x256 kind=layernorm M=%d C=%d\n", LN_M, LN_C);
    printf("bias_gelu_300x1024 kind=gelu M=%d C=%d\n", GELU_M, GELU_C);
    for (int i = 0; i < N_ATTS; i++)
        printf("%s kind=attention N=%d Lq=%d Lk=%d C=%d heads=%d\n", ATTS[i].name, ATTS[i].N, ATTS[i].Lq, ATTS[i].Lk,
               ATTS[i].C, ATTS[i].heads);
    printf("output kind=output n=%d\n", OUT_N);
}

static void op_conv(const conv_case *c) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(c->name);
    e2g_conv_shape cs = c->cs;
    int N = c->N, H = c->H, W = c->W;
    int Ho = c->upsample ? 2 * H : e2g_conv2d_out_size(H, &cs), Wo = c->upsample ? 2 * W : e2g_conv2d_out_size(W, &cs);
    size_t nx = (size_t)N * H * W * cs.cin, nw = (size_t)cs.cout * cs.cin * cs.k * cs.k, ny = (size_t)N * Ho * Wo * cs.cout;
    float *x = random_floats(nx, -1, 1, &seed), *w = random_floats(nw, -0.2f, 0.2f, &seed);
    float *b = random_floats(cs.cout, -0.5f, 0.5f, &seed), *ref = e2g_xmalloc(ny * 4), *gpu = e2g_xmalloc(ny * 4);
    if (c->upsample)
        e2g_upconv2x_forward(ref, x, w, b, N, H, W, cs.cin, cs.cout);
    else
        e2g_conv2d_forward(ref, x, w, b, N, H, W, &cs);
    if (e2g_cuda_check_conv(gpu, x, w, b, N, H, W, &cs, c->upsample, err)) printf("%s: %s\n", c->name, err), failures++;
    else judge(c->name, rel_err(gpu, ref, ny), DEFAULT_OP_TOL);
    free(x), free(w), free(b), free(ref), free(gpu);
}

static void op_instancenorm(const char *name, int with_res) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(name);
    int N = INORM_N, HW = INORM_HW, C = INORM_C;
    size_t n = (size_t)N * HW * C;
    float *x = random_floats(n, -2, 3, &seed), *g = random_floats(C, 0.5f, 1.5f, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
    float *r = with_res ? random_floats(n, -1, 1, &seed) : NULL, *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
    float *mean = e2g_xmalloc(N * C * 4), *rstd = e2g_xmalloc(N * C * 4);
    e2g_instancenorm_forward(ref, mean, rstd, x, g, b, 0, 1, N, HW, C);
    if (r) e2g_add_forward(ref, ref, r, n);
    if (e2g_cuda_check_instancenorm(gpu, x, g, b, 1, r, N, HW, C, err)) printf("%s: %s\n", name, err), failures++;
    else judge(name, rel_err(gpu, ref, n), DEFAULT_OP_TOL);
    free(x), free(g), free(b), free(r), free(ref), free(gpu), free(mean), free(rstd);
}

static void op_layernorm(const char *name) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(name);
    int M = LN_M, C = LN_C;
    size_t n = (size_t)M * C;
    float *x = random_floats(n, -2, 3, &seed), *g = random_floats(C, 0.5f, 1.5f, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
    float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4), *mean = e2g_xmalloc(M * 4), *rstd = e2g_xmalloc(M * 4);
    e2g_layernorm_forward(ref, mean, rstd, x, g, b, M, C);
    if (e2g_cuda_check_layernorm(gpu, x, g, b, M, C, err)) printf("%s: %s\n", name, err), failures++;
    else judge(name, rel_err(gpu, ref, n), DEFAULT_OP_TOL);
    free(x), free(g), free(b), free(ref), free(gpu), free(mean), free(rstd);
}

static void op_gelu(const char *name) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(name);
    int M = GELU_M, C = GELU_C;
    size_t n = (size_t)M * C;
    float *x = random_floats(n, -4, 4, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
    float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) ref[i] = x[i] + b[i % C];
    e2g_gelu_forward(ref, ref, n);
    if (e2g_cuda_check_gelu(gpu, x, b, M, C, err)) printf("%s: %s\n", name, err), failures++;
    else judge(name, rel_err(gpu, ref, n), DEFAULT_OP_TOL);
    free(x), free(b), free(ref), free(gpu);
}

static void op_attention(const att_case *a) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(a->name);
    size_t nq = (size_t)a->N * a->Lq * a->C, nk = (size_t)a->N * a->Lk * a->C;
    float *q = random_floats(nq, -2, 2, &seed), *k = random_floats(nk, -2, 2, &seed), *v = random_floats(nk, -1, 1, &seed);
    float *ref = e2g_xmalloc(nq * 4), *gpu = e2g_xmalloc(nq * 4), *lse = e2g_xmalloc(nq * 4);
    e2g_attention_forward(ref, lse, q, k, v, a->N, a->Lq, a->Lk, a->C, a->heads);
    if (e2g_cuda_check_attention(gpu, q, k, v, a->N, a->Lq, a->Lk, a->C, a->heads, err))
        printf("%s: %s\n", a->name, err), failures++;
    else judge(a->name, rel_err(gpu, ref, nq), DEFAULT_OP_TOL);
    free(q), free(k), free(v), free(ref), free(gpu), free(lse);
}

static void op_output(const char *name) {
    char err[E2G_ERR_LEN];
    unsigned seed = seed_of(name);
    size_t n = OUT_N;
    float *o = random_floats(n, -3, 3, &seed), *x = random_floats(n, -1, 1, &seed);
    float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
    e2g_output_forward(ref, o, x, 1, n);
    if (e2g_cuda_check_output(gpu, o, x, 1, n, err)) printf("%s: %s\n", name, err), failures++;
    else judge(name, rel_err(gpu, ref, n), DEFAULT_OUTPUT_TOL);
    free(o), free(x), free(ref), free(gpu);
}

/* Runs the check of that name (only looks it up when dry); 0 when there
 * is none. */
static int run_op(const char *name, int dry) {
    for (int i = 0; i < N_CONVS; i++)
        if (!strcmp(name, CONVS[i].name)) return dry || (op_conv(&CONVS[i]), 1);
    for (int i = 0; i < N_ATTS; i++)
        if (!strcmp(name, ATTS[i].name)) return dry || (op_attention(&ATTS[i]), 1);
    for (int r = 0; r < 2; r++)
        if (!strcmp(name, NORM_OPS[r])) return dry || (op_instancenorm(name, r), 1);
    if (!strcmp(name, "layernorm_300x256")) return dry || (op_layernorm(name), 1);
    if (!strcmp(name, "bias_gelu_300x1024")) return dry || (op_gelu(name), 1);
    if (!strcmp(name, "output")) return dry || (op_output(name), 1);
    return 0;
}

static int cmd_ops(int argc, char **argv) {
    char err[E2G_ERR_LEN];
    if (argc >= 1 && !strcmp(argv[0], "--list")) return list_ops(), 0;
    for (int i = 0; i < argc; i++) /* names first: a typo is a usage error, with or without a device */
        if (!run_op(argv[i], 1)) return fprintf(stderr, "ops: no op check named '%s' (see ops --list)\n", argv[i]), EXIT_USAGE;
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    int ran = 0;
    if (argc == 0) {
        const char *all[] = {"inorm_relu", "inorm_relu_residual", "layernorm_300x256", "bias_gelu_300x1024", "output"};
        for (int i = 0; i < N_CONVS; i++) ran += run_op(CONVS[i].name, 0);
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) ran += run_op(all[i], 0);
        for (int i = 0; i < N_ATTS; i++) ran += run_op(ATTS[i].name, 0);
    }
    for (int i = 0; i < argc; i++) ran += run_op(argv[i], 0);
    printf("SUMMARY %d op(s), %d failed, worst err/tol %.2f\n", ran, failures, worst_ratio);
    return failures ? EXIT_FAILED : 0;
}

/* ---- whole images ------------------------------------------------------------------------------ */

/* PSNR of two [-1, 1] outputs on the 0..255 scale. */
static double psnr(const float *a, const float *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = ((double)a[i] - b[i]) * 127.5;
        se += d * d;
    }
    double mse = se / n;
    return mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : 99.0;
}

static double psnr_min_used;

/* One batch on the GPU through its backend's table, so a failure shows
 * instead of falling back to the CPU; 0 or -1 (printed, counted). */
static int gpu_batch(const char *name, const e2g_runtime *gpu_rt, float *y, const float *x, const e2g_edit *edits,
                     int N, int H, int W, int merged) {
    char err[E2G_ERR_LEN];
    if (e2g_runtime_backend(gpu_rt)->run(e2g_runtime_state(gpu_rt), y, x, edits, N, H, W, merged, err) == 0) return 0;
    printf("%s: %s\n", name, err);
    failures++;
    return -1;
}

static void cpu_batch(const e2g_runtime *cpu_rt, float *y, const float *x, const e2g_edit *edits, int N, int H, int W,
                      int merged) {
    e2g_infer *inf = e2g_infer_new(cpu_rt, N, H, W);
    e2g_infer_run(inf, y, x, edits, merged);
    e2g_infer_free(inf);
}

static double worst_psnr(const float *a, const float *b, int N, size_t img) {
    double worst = 99;
    for (int n = 0; n < N; n++) {
        double p = psnr(a + n * img, b + n * img, img);
        if (p < worst) worst = p;
    }
    return worst;
}

static double worst_model_psnr = 99;

/* Runs edits on the CPU (fp32) and the GPU and requires PSNR ≥ the floor
 * (40 dB, or calibrated) for every sample. */
static void compare_batch(const char *name, const e2g_runtime *cpu_rt, const e2g_runtime *gpu_rt, const float *x,
                          const e2g_edit *edits, int N, int H, int W, int merged) {
    size_t img = (size_t)H * W * 3;
    float *cpu = e2g_xmalloc(N * img * 4), *gpu = e2g_xmalloc(N * img * 4);
    cpu_batch(cpu_rt, cpu, x, edits, N, H, W, merged);
    if (gpu_batch(name, gpu_rt, gpu, x, edits, N, H, W, merged) == 0) {
        double worst = worst_psnr(gpu, cpu, N, img);
        int ok = worst >= psnr_min_used;
        printf("%-44s worst PSNR %.1f dB over %d image(s) %s\n", name, worst, N, ok ? "ok" : "FAILED");
        result(name, "%.2f", worst);
        if (worst < worst_model_psnr) worst_model_psnr = worst;
        if (!ok) failures++;
    }
    free(cpu), free(gpu);
}

static void graph_stats(const e2g_runtime *rt, e2g_cuda_graph_stats *g) {
    e2g_cuda_engine_graph_stats((e2g_cuda_engine *)e2g_runtime_state(rt), g);
}

/* The same batch three times: eager (first sight of its signature), CUDA
 * graph capture (second), replay (third); each must be the path the graph
 * counters say, and all three must agree with each other and the CPU. */
static void graphs_check(const char *what, const e2g_runtime *cpu_rt, const e2g_runtime *gpu_rt, const float *x,
                         const e2g_edit *edits, int N, int H, int W, int merged) {
    size_t img = (size_t)H * W * 3;
    float *cpu = e2g_xmalloc(N * img * 4), *out[3];
    cpu_batch(cpu_rt, cpu, x, edits, N, H, W, merged);
    const char *path[3] = {"eager", "capture", "replay"};
    e2g_cuda_graph_stats before, after;
    int ok = 1;
    for (int k = 0; k < 3; k++) {
        out[k] = e2g_xmalloc(N * img * 4);
        graph_stats(gpu_rt, &before);
        char name[96];
        snprintf(name, sizeof name, "graphs %s %s", what, path[k]);
        if (gpu_batch(name, gpu_rt, out[k], x, edits, N, H, W, merged)) {
            ok = 0;
            continue;
        }
        graph_stats(gpu_rt, &after);
        long de = after.eager - before.eager, dc = after.captured - before.captured, dr = after.replayed - before.replayed;
        const char *took = de ? "eager" : dc ? "capture" : dr ? "replay" : "none";
        double p = worst_psnr(out[k], cpu, N, img);
        int right = !strcmp(took, path[k]) || !after.enabled;
        printf("%-44s ran %s (eager %ld, captured %ld, replayed %ld), PSNR vs CPU %.1f dB%s\n", name, took, de, dc, dr, p,
               right ? "" : "  UNEXPECTED PATH");
        result(name, "%.2f", p);
        if (!right || p < psnr_min_used) ok = 0;
        if (p < worst_model_psnr) worst_model_psnr = p;
    }
    for (int k = 1; k < 3 && ok; k++) {
        double p = worst_psnr(out[k], out[0], N, img);
        printf("graphs %s: %s vs eager PSNR %.1f dB\n", what, path[k], p);
        /* not bit for bit: block_stats sums with atomics in any order */
        if (p < 45) ok = 0, printf("graphs %s: %s differs from eager (< 45 dB)\n", what, path[k]);
    }
    graph_stats(gpu_rt, &after);
    printf("graphs: %s%s%s\n", after.enabled ? "ON" : "OFF", after.enabled ? "" : " — ", after.why_off);
    result("graphs_enabled", "%.0f", after.enabled);
    if (!after.enabled) ok = 0;
    if (!ok) failures++;
    free(cpu);
    for (int k = 0; k < 3; k++) free(out[k]);
}

/* The FiLM case: the model at path given FiLM and the skip gates
 * (e2g_model_add_conditioning) with random weights, scaled so that W·c̄
 * moves the norms' scales and shifts, the output gate's gains of the image
 * and the skip gates' gains by about ±0.25, and
 * each sample a context of its own (the batch's perturbed), so that every
 * sample has its own affine and gains.  The batch (edits' adapters,
 * unmerged) eager, captured and replayed against the CPU (graphs_check);
 * with adapters, sample 1's merged over the batch too. */
static void film_check(const char *path, const float *x, const e2g_edit *edits, int N, int H, int W, int n_ad) {
    char err[E2G_ERR_LEN];
    e2g_model *fm;
    if (e2g_model_load(&fm, path, err)) {
        printf("film: %s\n", err);
        failures++;
        return;
    }
    e2g_model_add_conditioning(fm, 1, 1);
    int T = fm->cfg.ctx_tokens, C4 = e2g_gen_c4(&fm->cfg);
    size_t one = (size_t)T * C4;
    unsigned seed = seed_of("film");
    float *noise = random_floats(N * one, -0.5f, 0.5f, &seed), *ctx = e2g_xmalloc(N * one * 4);
    double sq = 0;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < C4; k++) {
            double mean = 0;
            for (int t = 0; t < T; t++) {
                size_t j = (size_t)t * C4 + k;
                ctx[n * one + j] = edits[n].context[j] + noise[n * one + j];
                mean += ctx[n * one + j] / T;
            }
            sq += mean * mean;
        }
    double rms = sqrt(sq / ((double)N * C4)), a = 0.25 * sqrt(3.0) / (sqrt((double)C4) * (rms > 1e-3 ? rms : 1e-3));
    e2g_tensor_entry tab[E2G_GEN_MAX_TENSORS];
    int nt = e2g_gen_tensors(&fm->cfg, &fm->params, tab);
    for (int i = 0; i < nt; i++) { /* the norms' FiLM, the output's gate and the skip gates */
        const char *name = tab[i].name;
        if (!strstr(name, ".film.") && !strstr(name, ".skip_gate.") && strncmp(name, "out_gate.", 9)) continue;
        float lim = !strcmp(strrchr(name, '.'), ".weight") ? (float)a : 0.25f;
        float *v = random_floats(tab[i].numel, -lim, lim, &seed);
        memcpy(*tab[i].slot, v, tab[i].numel * sizeof(float));
        free(v);
    }
    e2g_edit *own = e2g_xmalloc(N * sizeof *own), *same = e2g_xmalloc(N * sizeof *same);
    for (int n = 0; n < N; n++) {
        own[n] = edits[n], own[n].context = ctx + n * one;
        same[n] = edits[n_ad ? 1 : 0], same[n].context = ctx + n * one;
    }
    e2g_runtime *cpu, *gpu;
    e2g_runtime_new(&cpu, fm, "cpu", err);
    if (e2g_runtime_new(&gpu, fm, "cuda", err) != 1) {
        printf("film: %s\n", err);
        failures++;
    } else {
        printf("film: FiLM, gate and skip-gate weights within ±%.3g (context means' rms %.3g), biases within ±0.25\n", a,
               rms);
        graphs_check("film", cpu, gpu, x, own, N, H, W, 0);
        if (n_ad) compare_batch("psnr film, one adapter merged", cpu, gpu, x, same, N, H, W, 1);
        e2g_runtime_free(gpu);
    }
    e2g_runtime_free(cpu);
    e2g_model_free(fm);
    free(noise), free(ctx), free(own), free(same);
}

/* The parts of `model` for n_ad adapters, in order. */
static int model_parts(int n_ad, char names[][24], int max) {
    int n = 0;
    snprintf(names[n++], 24, "base");
    for (int i = 1; i <= n_ad && n < max; i++) snprintf(names[n++], 24, "adapter%d", i);
    const char *rest[] = {"blend", "mixed", "one-merged", "graphs", "film"};
    for (int i = 0; i < 5 && n < max; i++)
        if (n_ad || (strcmp(rest[i], "one-merged") != 0)) snprintf(names[n++], 24, "%s", rest[i]);
    return n;
}

static int cmd_model(int argc, char **argv) {
    const char *only = NULL;
    int list = 0, nargs = 0;
    char *args[64];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) list = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (argv[i][0] == '-' || nargs == 64) return EXIT_USAGE;
        else args[nargs++] = argv[i];
    }
    if (nargs < 2) return EXIT_USAGE;
    char err[E2G_ERR_LEN], parts[72][24];
    int n_ad = nargs - 2, n_parts = model_parts(n_ad, parts, 72), want = -1;
    if (list) {
        for (int i = 0; i < n_parts; i++) printf("%s\n", parts[i]);
        return 0;
    }
    for (int i = 0; only && i < n_parts; i++)
        if (!strcmp(only, parts[i])) want = i;
    if (only && want < 0) return fprintf(stderr, "model: no part '%s' (see --list)\n", only), EXIT_USAGE;
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    const char *how;
    psnr_min_used = psnr_floor(&how);
    printf("PSNR floor %.1f dB (%s)\n", psnr_min_used, how);
    e2g_model *m = NULL;
    e2g_adapter **ad = e2g_xcalloc(n_ad + 1, sizeof *ad);
    e2g_image im = {0};
    if (e2g_model_load(&m, args[0], err) || e2g_image_read_file(&im, args[1], 1L << 24, err)) {
        printf("%s\n", err);
        return EXIT_FAILED;
    }
    for (int i = 0; i < n_ad; i++)
        if (e2g_adapter_load(&ad[i], m, args[2 + i], err)) return printf("%s: %s\n", args[2 + i], err), EXIT_FAILED;
    /* Two runtimes of the model: the fp32 CPU reference and the GPU. */
    e2g_runtime *cpu, *eng;
    e2g_runtime_new(&cpu, m, "cpu", err);
    if (e2g_runtime_new(&eng, m, "cuda", err) != 1) return printf("%s\n", err), EXIT_FAILED;
    int W, H;
    e2g_image_pad_dims(im.width, im.height, 8, &W, &H);
    size_t img = (size_t)H * W * 3;
    int N = 2 + n_ad;
    float *x = e2g_xmalloc(N * img * 4);
    for (int n = 0; n < N; n++) e2g_image_to_tensor(x + n * img, &im, W, H);
    for (int n = 1; n < N; n++) /* different images: flip each later one */
        for (size_t i = 0; i < img; i++) x[n * img + i] = n % 2 ? -x[i] : x[i] * 0.8f;
    e2g_request *req = e2g_xcalloc(N, sizeof *req);
    e2g_edit *edits = e2g_xcalloc(N, sizeof *edits);
    char spec[256];
    for (int n = 0; n < N; n++) {
        if (n == 0) snprintf(spec, sizeof spec, "%s", m->concept_names[0]);
        else if (n <= n_ad) snprintf(spec, sizeof spec, "%s", ad[n - 1]->concept);
        else if (n_ad >= 2) snprintf(spec, sizeof spec, "%s:0.6,%s:0.4", ad[0]->concept, ad[1]->concept);
        else snprintf(spec, sizeof spec, "%s", m->concept_names[m->cfg.n_concepts - 1]);
        if (e2g_request_resolve(&req[n], m, ad, n_ad, spec, n == N - 1 ? 0.8f : 1.0f, err))
            return printf("%s: %s\n", spec, err), EXIT_FAILED;
        edits[n] = req[n].edit;
    }
    printf("image %dx%d (padded %dx%d), %d adapter(s)\n", im.width, im.height, W, H, n_ad);
    char name[96];
    for (int p = 0; p < n_parts; p++) {
        if (want >= 0 && p != want) continue;
        const char *part = parts[p];
        int n = !strcmp(part, "base") ? 0 : !strncmp(part, "adapter", 7) ? atoi(part + 7) : !strcmp(part, "blend") ? N - 1 : -1;
        if (n >= 0) { /* one sample: unmerged, and merged when it has terms */
            snprintf(name, sizeof name, "psnr %.24s unmerged", part);
            compare_batch(name, cpu, eng, x + n * img, &edits[n], 1, H, W, 0);
            if (edits[n].n_terms) {
                snprintf(name, sizeof name, "psnr %.24s merged", part);
                compare_batch(name, cpu, eng, x + n * img, &edits[n], 1, H, W, 1);
            }
        } else if (!strcmp(part, "mixed")) {
            compare_batch("psnr mixed batch (base, adapters, blend)", cpu, eng, x, edits, N, H, W, 0);
        } else if (!strcmp(part, "one-merged")) {
            e2g_edit *same = e2g_xmalloc(N * sizeof *same);
            for (int k = 0; k < N; k++) same[k] = edits[1];
            compare_batch("psnr batch of one adapter, merged", cpu, eng, x, same, N, H, W, 1);
            free(same);
        } else if (!strcmp(part, "graphs") && H < 16) {
            printf("graphs: the image is too small for a bucket of its own\n");
            failures++;
        } else if (!strcmp(part, "graphs")) {
            /* 8 rows fewer: a bucket no other part used, so the first run is
             * the first sight of its signatures */
            int Hg = H - 8;
            size_t gimg = (size_t)Hg * W * 3;
            float *xg = e2g_xmalloc(N * gimg * 4);
            for (int k = 0; k < N; k++) memcpy(xg + k * gimg, x + k * img, gimg * 4);
            graphs_check("mixed", cpu, eng, xg, edits, N, Hg, W, 0);
            if (n_ad) {
                e2g_edit *same = e2g_xmalloc(N * sizeof *same);
                for (int k = 0; k < N; k++) same[k] = edits[1];
                graphs_check("merged", cpu, eng, xg, same, N, Hg, W, 1);
                free(same);
            }
            free(xg);
        } else if (!strcmp(part, "film")) {
            film_check(args[0], x, edits, N, H, W, n_ad);
        }
    }
    e2g_cuda_graph_stats gs;
    graph_stats(eng, &gs);
    printf("SUMMARY worst PSNR %.1f dB (floor %.1f, %s); graphs %s%s%s\n", worst_model_psnr, psnr_min_used, how,
           gs.enabled ? "on" : "OFF: ", "", gs.enabled ? "" : gs.why_off);
    for (int n = 0; n < N; n++) e2g_request_free(&req[n]);
    free(req), free(edits), free(x);
    for (int i = 0; i < n_ad; i++) e2g_adapter_free(ad[i]);
    free(ad);
    e2g_image_free(&im);
    e2g_runtime_free(eng);
    e2g_runtime_free(cpu);
    e2g_model_free(m);
    return failures ? EXIT_FAILED : 0;
}

/* ---- benchmarks ------------------------------------------------------------------------------------- */

/* Nominal multiply-adds of one H×W image (the upsampled convs counted at
 * their 3×3 size, as PyTorch runs them): what TFLOP/s figures use. */
static double gen_macs(const e2g_gen_config *cfg, int H, int W) {
    double ngf = cfg->ngf, c4 = 4 * ngf, T = cfg->ctx_tokens, px = (double)H * W, L = px / 64;
    double conv = px * 3 * ngf * 49 + px / 4 * ngf * 2 * ngf * 9 + px / 16 * 2 * ngf * c4 * 9 + 6 * px / 16 * c4 * c4 * 9 +
                  px / 64 * c4 * c4 * 9 + px / 16 * c4 * c4 * 9 + px / 4 * c4 * 2 * ngf * 9 + px * 2 * ngf * ngf * 9 +
                  px * ngf * 3 * 49;
    double lin = L * 6 * c4 * c4 + T * 2 * c4 * c4 + L * 8 * c4 * c4;
    double att = 2 * L * L * c4 + 2 * L * T * c4;
    return conv + lin + att;
}

/* Datasheet dense bf16 tensor-core peak for the cards this project uses. */
static double peak_tflops(const char *name) {
    if (strstr(name, "H100") && strstr(name, "PCIe")) return 756;
    if (strstr(name, "H100") || strstr(name, "H200")) return 989;
    return 0;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A random adapter of rank r on every crucial layer (what a PEFT r=8 run
 * gives), weights scaled like trained ones. */
static e2g_lora *random_adapter(const e2g_gen_config *cfg, int r, unsigned *seed) {
    int rank[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL];
    for (int i = 0; i < E2G_N_CRUCIAL; i++) rank[i] = r, scale[i] = 2.0f;
    e2g_lora *l = e2g_lora_new(cfg, rank, scale);
    float *v = random_floats(l->numel, -0.02f, 0.02f, seed);
    memcpy(l->memory, v, l->numel * sizeof(float));
    free(v);
    return l;
}

static const char *const BENCH_KEYS[] = {"b1", "b32", "b32_one_merged", "b32_one_unmerged", "b32_32_adapters", "switch"};
#define N_BENCH (int)(sizeof BENCH_KEYS / sizeof *BENCH_KEYS)

static int cmd_bench(int argc, char **argv) {
    const char *only = NULL, *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            for (int k = 0; k < N_BENCH; k++) printf("%s\n", BENCH_KEYS[k]);
            return 0;
        }
        if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (argv[i][0] == '-' || path) return EXIT_USAGE;
        else path = argv[i];
    }
    int want = -1;
    for (int k = 0; only && k < N_BENCH; k++)
        if (!strcmp(only, BENCH_KEYS[k])) want = k;
    if (!path || (only && want < 0)) return EXIT_USAGE;
    char err[E2G_ERR_LEN], card[512];
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    cuda_backend()->describe(card, sizeof card);
    printf("%s\n", card);
    e2g_model *m;
    if (e2g_model_load(&m, path, err)) return printf("%s\n", err), EXIT_FAILED;
    char msg[E2G_ERR_LEN];
    e2g_runtime *rt;
    if (e2g_runtime_new(&rt, m, "cuda", msg) != 1) return printf("%s\n", msg), EXIT_FAILED;
    const e2g_backend *Bk = e2g_runtime_backend(rt); /* its benchmark hooks */
    void *E = e2g_runtime_state(rt);
    const e2g_gen_config *cfg = &m->cfg;
    enum { B = 32, S = 256 };
    unsigned seed = 3;
    e2g_lora *lora[B];
    for (int i = 0; i < B; i++) lora[i] = random_adapter(cfg, 8, &seed);
    e2g_edit base[B], one[B], mixed[B];
    for (int i = 0; i < B; i++) {
        base[i] = (e2g_edit){.context = e2g_model_context(m, 0)};
        one[i] = (e2g_edit){.context = lora[0]->concept, .n_terms = 1, .terms = {{lora[0], 1.0f}}};
        mixed[i] = (e2g_edit){.context = lora[i]->concept, .n_terms = 1, .terms = {{lora[i], 1.0f}}};
    }
    double macs = gen_macs(cfg, S, S), peak = peak_tflops(card), t;
    printf("ngf %d: %.2f GMAC per %dx%d image\n", cfg->ngf, macs / 1e9, S, S);
    struct { const char *key; const e2g_edit *edits; int n, merged; } runs[] = {
        {"ms_b1", base, 1, 0}, {"ms_b32", base, B, 0}, {"ms_b32_one_adapter_merged", one, B, 1},
        {"ms_b32_one_adapter_unmerged", one, B, 0}, {"ms_b32_32_adapters", mixed, B, 0},
    };
    char summary[512] = "";
    size_t sl = 0;
    for (int i = 0; i < 5; i++) {
        if (want >= 0 && want != i) continue;
        if (Bk->time(E, runs[i].edits, runs[i].n, S, S, runs[i].merged, 50, &t, err)) {
            printf("%s: FAILED: %s\n", runs[i].key, err);
            failures++;
            sl += snprintf(summary + sl, sizeof summary - sl, "%s FAILED; ", BENCH_KEYS[i]);
            continue;
        }
        e2g_cuda_graph_stats gs;
        e2g_cuda_engine_graph_stats((e2g_cuda_engine *)E, &gs);
        double tflops = 2 * macs * runs[i].n / (t * 1e-3) / 1e12;
        printf("%-32s %8.3f ms  %7.1f TFLOP/s%s; graphs %s (replayed %ld)\n", runs[i].key, t, tflops,
               peak > 0 ? "" : " (peak unknown)", gs.enabled ? "on" : "OFF", gs.replayed);
        result(runs[i].key, "%.4f", t);
        char key[64];
        snprintf(key, sizeof key, "tflops_%s", runs[i].key + 3);
        result(key, "%.1f", tflops);
        sl += snprintf(summary + sl, sizeof summary - sl, "%s %.3f ms (%.0f TFLOP/s%s); ", BENCH_KEYS[i], t, tflops,
                       gs.enabled ? "" : ", graphs OFF");
    }
    result("peak_tflops", "%.0f", peak);

    /* Adapter switches, merged (the single-adapter fast path), timed on the host
     * around the backend's prepare, which waits for the device. */
    if (want < 0 || want == 5) {
        enum { SWITCHES = 40 };
        double cold[SWITCHES], warm[SWITCHES];
        int ok = 1;
        for (int i = 0; i < SWITCHES && ok; i++) {
            Bk->drop_adapters(E);
            double t0 = now_us();
            if (Bk->prepare(E, &one[0], 1, 1, err)) ok = 0;
            cold[i] = now_us() - t0;
        }
        if (ok && Bk->prepare(E, &mixed[1], 1, 1, err)) ok = 0;
        for (int i = 0; i < SWITCHES && ok; i++) {
            double t0 = now_us();
            if (Bk->prepare(E, i % 2 ? &mixed[1] : &one[0], 1, 1, err)) ok = 0;
            warm[i] = now_us() - t0;
        }
        if (!ok) {
            printf("switch: FAILED: %s\n", err);
            failures++;
            snprintf(summary + sl, sizeof summary - sl, "switch FAILED");
        } else {
            qsort(cold, SWITCHES, sizeof *cold, cmp_double);
            qsort(warm, SWITCHES, sizeof *warm, cmp_double);
            printf("adapter switch: cold (upload + merge) %.1f us, cached %.1f us (medians)\n", cold[SWITCHES / 2],
                   warm[SWITCHES / 2]);
            result("us_switch_cold", "%.1f", cold[SWITCHES / 2]);
            result("us_switch_cached", "%.1f", warm[SWITCHES / 2]);
            snprintf(summary + sl, sizeof summary - sl, "switch cold %.1f us, cached %.1f us", cold[SWITCHES / 2],
                     warm[SWITCHES / 2]);
        }
    }
    printf("SUMMARY %s\n", summary);
    for (int i = 0; i < B; i++) e2g_lora_free(lora[i]);
    e2g_runtime_free(rt);
    e2g_model_free(m);
    return failures ? EXIT_FAILED : 0;
}

/* ---- a dead device ---------------------------------------------------------------------- */

/* A fault injected into the CUDA engine (a kernel writing to an invalid
 * address) as a buggy kernel would raise it: the next batch fails with a
 * sticky error, the runtime must mark the device dead, run that batch and
 * every later one on the CPU (equal to the CPU engine bit for bit) and
 * report the reason. */
static int cmd_sticky(int argc, char **argv) {
    if (argc != 1) return EXIT_USAGE;
    char err[E2G_ERR_LEN], why[E2G_ERR_LEN];
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    e2g_model *m;
    if (e2g_model_load(&m, argv[0], err)) return printf("%s\n", err), EXIT_FAILED;
    e2g_runtime *cpu, *rt;
    e2g_runtime_new(&cpu, m, "cpu", err);
    if (e2g_runtime_new(&rt, m, "cuda", err) != 1) return printf("%s\n", err), EXIT_FAILED;
    enum { N = 2, H = 64, W = 64 };
    size_t n = (size_t)N * H * W * 3;
    unsigned seed = 5;
    float *x = random_floats(n, -1, 1, &seed), *y = e2g_xmalloc(n * 4), *ref = e2g_xmalloc(n * 4);
    e2g_edit edits[N] = {{.context = e2g_model_context(m, 0)}, {.context = e2g_model_context(m, 0)}};
    cpu_batch(cpu, ref, x, edits, N, H, W, 0);
    cpu_batch(rt, y, x, edits, N, H, W, 0);
    double before = psnr(y, ref, n);
    int dead0 = e2g_runtime_device_dead(rt, NULL, 0);
    printf("before the fault: on %s, PSNR vs CPU %.1f dB, device dead %d\n", e2g_runtime_name(rt), before, dead0);
    if (dead0 || strcmp(e2g_runtime_name(rt), "cuda")) failures++;
    e2g_cuda_engine_inject_fault((e2g_cuda_engine *)e2g_runtime_state(rt));
    int exact = 1;
    for (int k = 0; k < 3; k++) { /* the faulting batch, then two more */
        memset(y, 0, n * 4);
        cpu_batch(rt, y, x, edits, N, H, W, 0);
        if (memcmp(y, ref, n * 4)) exact = 0;
    }
    int dead = e2g_runtime_device_dead(rt, why, sizeof why);
    int healthy = e2g_cuda_engine_healthy((e2g_cuda_engine *)e2g_runtime_state(rt), NULL);
    printf("after the fault: device dead %d (%s), engine healthy %d, runs on %s, batches equal to the CPU's: %s\n",
           dead, why, healthy, e2g_runtime_name(rt), exact ? "yes" : "NO");
    if (!dead || healthy || !exact || strcmp(e2g_runtime_name(rt), "cpu") || !strstr(why, "cudaError")) failures++;
    printf("SUMMARY %s: device dead %d (%s), CPU fallback %s\n", failures ? "FAILED" : "ok", dead, why,
           exact ? "exact" : "WRONG");
    free(x), free(y), free(ref);
    e2g_runtime_free(rt);
    e2g_runtime_free(cpu);
    e2g_model_free(m);
    return failures ? EXIT_FAILED : 0;
}

/* ---- the calibration's input ------------------------------------------------------------- */

/* IMAGE padded as cmd_model pads it, as a little-endian float32 .npy of
 * shape (1, H, W, 3). */
static int cmd_dump_image(int argc, char **argv) {
    if (argc != 2) return EXIT_USAGE;
    char err[E2G_ERR_LEN];
    e2g_image im = {0};
    if (e2g_image_read_file(&im, argv[0], 1L << 24, err)) return printf("%s\n", err), EXIT_FAILED;
    int W, H;
    e2g_image_pad_dims(im.width, im.height, 8, &W, &H);
    size_t n = (size_t)H * W * 3;
    float *x = e2g_xmalloc(n * 4);
    e2g_image_to_tensor(x, &im, W, H);
    char header[128];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, %d, %d, 3), }", H, W);
    int total = 10 + len + 1, padded = (total + 63) / 64 * 64;
    FILE *f = fopen(argv[1], "wb");
    if (!f) return printf("cannot write %s\n", argv[1]), EXIT_FAILED;
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)((padded - 10) & 0xff),
                               (unsigned char)((padded - 10) >> 8)};
    fwrite(magic, 1, 10, f);
    fwrite(header, 1, len, f);
    for (int i = total - 1; i < padded - 1; i++) fputc(' ', f);
    fputc('\n', f);
    int ok = fwrite(x, 4, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    printf("%s: %dx%d padded to %dx%d\n", argv[1], im.width, im.height, W, H);
    free(x);
    e2g_image_free(&im);
    return ok ? 0 : EXIT_FAILED;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: e2gan-gpu-check probe | ops [--list] [NAME...] | model BASE IMAGE [ADAPTER...] "
                        "[--only PART] [--list] | bench BASE [--only KEY] [--list] | sticky BASE | "
                        "dump-image IMAGE OUT.npy\n");
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "probe") == 0) return cmd_probe();
    if (strcmp(argv[1], "ops") == 0) return cmd_ops(argc - 2, argv + 2);
    if (strcmp(argv[1], "model") == 0) return cmd_model(argc - 2, argv + 2);
    if (strcmp(argv[1], "bench") == 0) return cmd_bench(argc - 2, argv + 2);
    if (strcmp(argv[1], "sticky") == 0) return cmd_sticky(argc - 2, argv + 2);
    if (strcmp(argv[1], "dump-image") == 0) return cmd_dump_image(argc - 2, argv + 2);
    fprintf(stderr, "e2gan-gpu-check: unknown mode '%s'\n", argv[1]);
    return EXIT_USAGE;
}
