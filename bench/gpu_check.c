/* gpu_check.c — e2gan-gpu-check: proves the CUDA engine against the CPU
 * engine and times it.  Links the engine only (no Check, no HTTP), so it
 * runs on the GPU machine; bench/gpu-check.sh drives it.
 *
 *   e2gan-gpu-check probe            device present? (exit 3 if not) and the
 *                                    backend e2g_runtime_new picks per mode
 *   e2gan-gpu-check ops              each fused kernel vs the CPU op, random inputs
 *   e2gan-gpu-check model BASE IMAGE ADAPTER...
 *                                    whole images vs the fp32 CPU engine (PSNR)
 *   e2gan-gpu-check bench BASE       timings (forward, mixed adapters, switches)
 *
 * Every mode prints "RESULT <key> <value>" lines (the script tabulates them)
 * and exits 0 when all its checks pass, 1 when one fails, 2 on bad usage,
 * 3 when there is no CUDA device. */
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

static void judge(const char *name, double err, double tol) {
    int ok = err <= tol;
    printf("%-44s max rel err %.2e (tolerance %.0e) %s\n", name, err, tol, ok ? "ok" : "FAILED");
    result(name, "%.3e", err);
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
    if (failures) return EXIT_FAILED;
    return present ? 0 : EXIT_NO_DEVICE;
}

/* ---- ops ------------------------------------------------------------------------------------ */

static int check_conv_case(const char *name, int N, int H, int W, e2g_conv_shape cs, int upsample, unsigned *seed) {
    char err[E2G_ERR_LEN];
    int Ho = upsample ? 2 * H : e2g_conv2d_out_size(H, &cs), Wo = upsample ? 2 * W : e2g_conv2d_out_size(W, &cs);
    size_t nx = (size_t)N * H * W * cs.cin, nw = (size_t)cs.cout * cs.cin * cs.k * cs.k, ny = (size_t)N * Ho * Wo * cs.cout;
    float *x = random_floats(nx, -1, 1, seed), *w = random_floats(nw, -0.2f, 0.2f, seed);
    float *b = random_floats(cs.cout, -0.5f, 0.5f, seed), *ref = e2g_xmalloc(ny * 4), *gpu = e2g_xmalloc(ny * 4);
    if (upsample)
        e2g_upconv2x_forward(ref, x, w, b, N, H, W, cs.cin, cs.cout);
    else
        e2g_conv2d_forward(ref, x, w, b, N, H, W, &cs);
    int rc = e2g_cuda_check_conv(gpu, x, w, b, N, H, W, &cs, upsample, err);
    if (rc) printf("%s: %s\n", name, err), failures++;
    else judge(name, rel_err(gpu, ref, ny), 2e-2);
    free(x), free(w), free(b), free(ref), free(gpu);
    return rc;
}

static int cmd_ops(void) {
    char err[E2G_ERR_LEN];
    unsigned seed = 1;
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    check_conv_case("conv 3x3 s1 reflect 64->64 32x32", 2, 32, 32, (e2g_conv_shape){64, 64, 3, 1, 1, E2G_PAD_REFLECT}, 0, &seed);
    check_conv_case("conv 3x3 s2 zero 64->128 32x32", 2, 32, 32, (e2g_conv_shape){64, 128, 3, 2, 1, E2G_PAD_ZERO}, 0, &seed);
    check_conv_case("conv 7x7 s1 reflect 16->32 40x24", 2, 40, 24, (e2g_conv_shape){16, 32, 7, 1, 3, E2G_PAD_REFLECT}, 0, &seed);
    check_conv_case("upsample+conv 3x3 64->32 16x24", 2, 16, 24, (e2g_conv_shape){64, 32, 3, 1, 1, E2G_PAD_ZERO}, 1, &seed);
    check_conv_case("linear as 1x1 conv 256->768", 1, 300, 1, (e2g_conv_shape){256, 768, 1, 1, 0, E2G_PAD_ZERO}, 0, &seed);

    for (int with_res = 0; with_res < 2; with_res++) { /* instance norm + ReLU (+ residual) */
        int N = 2, HW = 24 * 40, C = 64;
        size_t n = (size_t)N * HW * C;
        float *x = random_floats(n, -2, 3, &seed), *g = random_floats(C, 0.5f, 1.5f, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
        float *r = with_res ? random_floats(n, -1, 1, &seed) : NULL, *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
        float *mean = e2g_xmalloc(N * C * 4), *rstd = e2g_xmalloc(N * C * 4);
        e2g_instancenorm_forward(ref, mean, rstd, x, g, b, 1, N, HW, C);
        if (r) e2g_add_forward(ref, ref, r, n);
        if (e2g_cuda_check_instancenorm(gpu, x, g, b, 1, r, N, HW, C, err)) printf("%s\n", err), failures++;
        else judge(with_res ? "instance norm + relu + residual" : "instance norm + relu", rel_err(gpu, ref, n), 2e-2);
        free(x), free(g), free(b), free(r), free(ref), free(gpu), free(mean), free(rstd);
    }
    { /* layer norm */
        int M = 300, C = 256;
        size_t n = (size_t)M * C;
        float *x = random_floats(n, -2, 3, &seed), *g = random_floats(C, 0.5f, 1.5f, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
        float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4), *mean = e2g_xmalloc(M * 4), *rstd = e2g_xmalloc(M * 4);
        e2g_layernorm_forward(ref, mean, rstd, x, g, b, M, C);
        if (e2g_cuda_check_layernorm(gpu, x, g, b, M, C, err)) printf("%s\n", err), failures++;
        else judge("layer norm", rel_err(gpu, ref, n), 2e-2);
        free(x), free(g), free(b), free(ref), free(gpu), free(mean), free(rstd);
    }
    { /* bias + GELU */
        int M = 300, C = 1024;
        size_t n = (size_t)M * C;
        float *x = random_floats(n, -4, 4, &seed), *b = random_floats(C, -0.5f, 0.5f, &seed);
        float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
        for (size_t i = 0; i < n; i++) ref[i] = x[i] + b[i % C];
        e2g_gelu_forward(ref, ref, n);
        if (e2g_cuda_check_gelu(gpu, x, b, M, C, err)) printf("%s\n", err), failures++;
        else judge("bias + gelu", rel_err(gpu, ref, n), 2e-2);
        free(x), free(b), free(ref), free(gpu);
    }
    struct { const char *name; int N, Lq, Lk, C, heads; } att[] = {
        {"self-attention 1024 tokens C256 4 heads", 2, 1024, 1024, 256, 4},
        {"self-attention 100 tokens C128 2 heads", 2, 100, 100, 128, 2},
        {"cross-attention 1024x8 C256 4 heads", 2, 1024, 8, 256, 4},
        {"self-attention 64 tokens C32 1 head", 1, 64, 64, 32, 1},
    };
    for (size_t i = 0; i < sizeof att / sizeof *att; i++) {
        size_t nq = (size_t)att[i].N * att[i].Lq * att[i].C, nk = (size_t)att[i].N * att[i].Lk * att[i].C;
        float *q = random_floats(nq, -2, 2, &seed), *k = random_floats(nk, -2, 2, &seed), *v = random_floats(nk, -1, 1, &seed);
        float *ref = e2g_xmalloc(nq * 4), *gpu = e2g_xmalloc(nq * 4), *lse = e2g_xmalloc(nq * 4);
        e2g_attention_forward(ref, lse, q, k, v, att[i].N, att[i].Lq, att[i].Lk, att[i].C, att[i].heads);
        if (e2g_cuda_check_attention(gpu, q, k, v, att[i].N, att[i].Lq, att[i].Lk, att[i].C, att[i].heads, err))
            printf("%s\n", err), failures++;
        else judge(att[i].name, rel_err(gpu, ref, nq), 2e-2);
        free(q), free(k), free(v), free(ref), free(gpu), free(lse);
    }
    { /* the logit-space output */
        size_t n = 3 * 4096;
        float *o = random_floats(n, -3, 3, &seed), *x = random_floats(n, -1, 1, &seed);
        float *ref = e2g_xmalloc(n * 4), *gpu = e2g_xmalloc(n * 4);
        e2g_output_forward(ref, o, x, 1, n);
        if (e2g_cuda_check_output(gpu, o, x, 1, n, err)) printf("%s\n", err), failures++;
        else judge("output tanh(o + atanh(x))", rel_err(gpu, ref, n), 1e-2);
        free(o), free(x), free(ref), free(gpu);
    }
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

/* Runs edits on the CPU (fp32) and the GPU and requires PSNR ≥ 40 dB for
 * every sample.  The GPU runs through its backend's table, so a failure
 * shows instead of falling back to the CPU. */
static void compare_batch(const char *name, const e2g_runtime *cpu_rt, const e2g_runtime *gpu_rt, const float *x,
                          const e2g_edit *edits, int N, int H, int W, int merged) {
    char err[E2G_ERR_LEN];
    size_t img = (size_t)H * W * 3;
    float *cpu = e2g_xmalloc(N * img * 4), *gpu = e2g_xmalloc(N * img * 4);
    e2g_infer *inf = e2g_infer_new(cpu_rt, N, H, W);
    e2g_infer_run(inf, cpu, x, edits, merged);
    e2g_infer_free(inf);
    if (e2g_runtime_backend(gpu_rt)->run(e2g_runtime_state(gpu_rt), gpu, x, edits, N, H, W, merged, err)) {
        printf("%s: %s\n", name, err);
        failures++;
    } else {
        double worst = 99;
        for (int n = 0; n < N; n++) {
            double p = psnr(gpu + n * img, cpu + n * img, img);
            if (p < worst) worst = p;
        }
        int ok = worst >= 40.0;
        printf("%-44s worst PSNR %.1f dB over %d image(s) %s\n", name, worst, N, ok ? "ok" : "FAILED (< 40 dB)");
        result(name, "%.2f", worst);
        if (!ok) failures++;
    }
    free(cpu), free(gpu);
}

static int cmd_model(int argc, char **argv) {
    if (argc < 2) return EXIT_USAGE;
    char err[E2G_ERR_LEN];
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    e2g_model *m = NULL;
    int n_ad = argc - 2;
    e2g_adapter **ad = e2g_xcalloc(n_ad + 1, sizeof *ad);
    e2g_image im = {0};
    if (e2g_model_load(&m, argv[0], err) || e2g_image_read_file(&im, argv[1], 1L << 24, err)) {
        printf("%s\n", err);
        return EXIT_FAILED;
    }
    for (int i = 0; i < n_ad; i++)
        if (e2g_adapter_load(&ad[i], m, argv[2 + i], err)) return printf("%s: %s\n", argv[2 + i], err), EXIT_FAILED;
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
    for (int n = 0; n < N; n++) {
        snprintf(name, sizeof name, "psnr sample %d unmerged", n);
        compare_batch(name, cpu, eng, x + n * img, &edits[n], 1, H, W, 0);
        if (edits[n].n_terms) {
            snprintf(name, sizeof name, "psnr sample %d merged", n);
            compare_batch(name, cpu, eng, x + n * img, &edits[n], 1, H, W, 1);
        }
    }
    compare_batch("psnr mixed batch (base, adapters, blend)", cpu, eng, x, edits, N, H, W, 0);
    if (n_ad) {
        e2g_edit *same = e2g_xmalloc(N * sizeof *same);
        for (int n = 0; n < N; n++) same[n] = edits[1];
        compare_batch("psnr batch of one adapter, merged", cpu, eng, x, same, N, H, W, 1);
        free(same);
    }
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

static int cmd_bench(int argc, char **argv) {
    if (argc < 1) return EXIT_USAGE;
    char err[E2G_ERR_LEN], card[512];
    if (!cuda_backend()->available(err)) return printf("%s\n", err), EXIT_NO_DEVICE;
    cuda_backend()->describe(card, sizeof card);
    printf("%s\n", card);
    e2g_model *m;
    if (e2g_model_load(&m, argv[0], err)) return printf("%s\n", err), EXIT_FAILED;
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
    double ms[5];
    for (int i = 0; i < 5; i++) {
        if (Bk->time(E, runs[i].edits, runs[i].n, S, S, runs[i].merged, 50, &t, err))
            return printf("%s: %s\n", runs[i].key, err), EXIT_FAILED;
        ms[i] = t;
        double tflops = 2 * macs * runs[i].n / (t * 1e-3) / 1e12;
        printf("%-32s %8.3f ms  %7.1f TFLOP/s%s\n", runs[i].key, t, tflops, peak > 0 ? "" : " (peak unknown)");
        result(runs[i].key, "%.4f", t);
        char key[64];
        snprintf(key, sizeof key, "tflops_%s", runs[i].key + 3);
        result(key, "%.1f", tflops);
    }
    result("peak_tflops", "%.0f", peak);
    result("ratio_32_adapters_vs_one_merged", "%.3f", ms[4] / ms[2]);
    result("ratio_32_adapters_vs_one_unmerged", "%.3f", ms[4] / ms[3]);

    /* Adapter switches, merged (the single-adapter fast path), timed on the host
     * around the backend's prepare, which waits for the device. */
    enum { SWITCHES = 40 };
    double cold[SWITCHES], warm[SWITCHES];
    for (int i = 0; i < SWITCHES; i++) {
        Bk->drop_adapters(E);
        double t0 = now_us();
        if (Bk->prepare(E, &one[0], 1, 1, err)) return printf("%s\n", err), EXIT_FAILED;
        cold[i] = now_us() - t0;
    }
    Bk->prepare(E, &mixed[1], 1, 1, err);
    for (int i = 0; i < SWITCHES; i++) {
        double t0 = now_us();
        if (Bk->prepare(E, i % 2 ? &mixed[1] : &one[0], 1, 1, err)) return printf("%s\n", err), EXIT_FAILED;
        warm[i] = now_us() - t0;
    }
    qsort(cold, SWITCHES, sizeof *cold, cmp_double);
    qsort(warm, SWITCHES, sizeof *warm, cmp_double);
    printf("adapter switch: cold (upload + merge) %.1f us, cached %.1f us (medians)\n", cold[SWITCHES / 2],
           warm[SWITCHES / 2]);
    result("us_switch_cold", "%.1f", cold[SWITCHES / 2]);
    result("us_switch_cached", "%.1f", warm[SWITCHES / 2]);
    for (int i = 0; i < B; i++) e2g_lora_free(lora[i]);
    e2g_runtime_free(rt);
    e2g_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: e2gan-gpu-check probe | ops | model BASE IMAGE [ADAPTER...] | bench BASE\n");
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "probe") == 0) return cmd_probe();
    if (strcmp(argv[1], "ops") == 0) return cmd_ops();
    if (strcmp(argv[1], "model") == 0) return cmd_model(argc - 2, argv + 2);
    if (strcmp(argv[1], "bench") == 0) return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "e2gan-gpu-check: unknown mode '%s'\n", argv[1]);
    return EXIT_USAGE;
}
