/* cpu_bf16_ops.c — fp32 against bf16 (precision.h) for each convolution
 * shape of the generator at ngf 32 on a 256×256 image (batch 1), one
 * discriminator layer and the transformer's linear layers (1024 tokens):
 * forward and backward (input + weight gradients), best of --reps runs,
 * GFLOP/s = 2·MACs / time.  Also the float32 → bfloat16 conversion three
 * ways: e2g_bf16_from_f32 (AVX512-BF16 where present), its portable loop,
 * and a oneDNN reorder.  Then the whole generator (ngf 32, 256², batch 1):
 * inference (e2g_infer_run) and a training forward + backward with every
 * weight gradient, and the fp32 / bf16 output difference.  Prints
 * Markdown; bench/cpu_bf16_ops.sh runs it and files the results.  Thread
 * count: OMP_NUM_THREADS. */
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "conv.h"
#include "infer.h"
#include "model.h"
#include "model_io.h"
#include "ops.h"
#include "precision.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *rnd(size_t n, unsigned seed) {
    float *x = e2g_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
    }
    return x;
}

typedef enum { CONV, UPCONV, LINEAR } kind;

typedef struct {
    const char *name;
    kind k;
    int H, W; /* input size (linear: H = tokens) */
    e2g_conv_shape cs;
    int bias;
} op;

static const op OPS[] = {
    {"enc1 7×7 reflect 3→32 @256²", CONV, 256, 256, {3, 32, 7, 1, 3, E2G_PAD_REFLECT}, 1},
    {"enc2 3×3 s2 32→64 @256²", CONV, 256, 256, {32, 64, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"enc3 3×3 s2 64→128 @128²", CONV, 128, 128, {64, 128, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"rb 3×3 reflect 128→128 @64²", CONV, 64, 64, {128, 128, 3, 1, 1, E2G_PAD_REFLECT}, 0},
    {"ds 3×3 s2 128→128 @64²", CONV, 64, 64, {128, 128, 3, 2, 1, E2G_PAD_ZERO}, 0},
    {"us up×2 3×3 128→128 @32²→64²", UPCONV, 32, 32, {128, 128, 3, 1, 1, E2G_PAD_ZERO}, 0},
    {"dec2 up×2 3×3 128→64 @64²→128²", UPCONV, 64, 64, {128, 64, 3, 1, 1, E2G_PAD_ZERO}, 0},
    {"dec1 up×2 3×3 64→32 @128²→256²", UPCONV, 128, 128, {64, 32, 3, 1, 1, E2G_PAD_ZERO}, 1},
    {"out 7×7 reflect 32→3 @256²", CONV, 256, 256, {32, 3, 7, 1, 3, E2G_PAD_REFLECT}, 1},
    {"disc c1 4×4 s2 6→64 @256²", CONV, 256, 256, {6, 64, 4, 2, 1, E2G_PAD_ZERO}, 1},
    {"disc c2 4×4 s2 64→128 @128²", CONV, 128, 128, {64, 128, 4, 2, 1, E2G_PAD_ZERO}, 1},
    {"linear qkv/o 1024×128→128", LINEAR, 1024, 0, {128, 128, 0, 0, 0, E2G_PAD_ZERO}, 1},
    {"linear fc1 1024×128→512", LINEAR, 1024, 0, {128, 512, 0, 0, 0, E2G_PAD_ZERO}, 1},
    {"linear fc2 1024×512→128", LINEAR, 1024, 0, {512, 128, 0, 0, 0, E2G_PAD_ZERO}, 1},
};

typedef struct {
    float *x, *w, *b, *y, *dy, *dx, *dw, *db;
    size_t nx, ny, nw;
    double macs;
} bufs;

static bufs make(const op *o) {
    bufs B = {0};
    const e2g_conv_shape *cs = &o->cs;
    if (o->k == LINEAR) {
        B.nx = (size_t)o->H * cs->cin, B.ny = (size_t)o->H * cs->cout, B.nw = (size_t)cs->cout * cs->cin;
        B.macs = (double)o->H * cs->cin * cs->cout;
    } else if (o->k == UPCONV) {
        B.nx = (size_t)o->H * o->W * cs->cin, B.ny = (size_t)4 * o->H * o->W * cs->cout;
        B.nw = (size_t)cs->cout * cs->cin * 9;
        B.macs = (double)B.ny * cs->cin * 9; /* as upsample + 3×3 conv */
    } else {
        int Ho = e2g_conv2d_out_size(o->H, cs), Wo = e2g_conv2d_out_size(o->W, cs);
        B.nx = (size_t)o->H * o->W * cs->cin, B.ny = (size_t)Ho * Wo * cs->cout;
        B.nw = (size_t)cs->cout * cs->cin * cs->k * cs->k;
        B.macs = (double)B.ny * cs->cin * cs->k * cs->k;
    }
    B.x = rnd(B.nx, 1), B.w = rnd(B.nw, 2), B.b = rnd(cs->cout, 3), B.dy = rnd(B.ny, 4);
    B.y = e2g_xcalloc(B.ny, sizeof(float)), B.dx = e2g_xcalloc(B.nx, sizeof(float));
    B.dw = e2g_xcalloc(B.nw, sizeof(float)), B.db = e2g_xcalloc(cs->cout, sizeof(float));
    return B;
}

static void forward(const op *o, bufs *B) {
    const e2g_conv_shape *cs = &o->cs;
    const float *bias = o->bias ? B->b : NULL;
    if (o->k == LINEAR)
        e2g_linear_forward(B->y, B->x, B->w, bias, o->H, cs->cin, cs->cout, 0);
    else if (o->k == UPCONV)
        e2g_upconv2x_forward(B->y, B->x, B->w, bias, 1, o->H, o->W, cs->cin, cs->cout);
    else
        e2g_conv2d_forward(B->y, B->x, B->w, bias, 1, o->H, o->W, cs);
}

static void backward(const op *o, bufs *B) {
    const e2g_conv_shape *cs = &o->cs;
    float *db = o->bias ? B->db : NULL;
    if (o->k == LINEAR)
        e2g_linear_backward(B->dx, B->dw, db, B->dy, B->x, B->w, o->H, cs->cin, cs->cout);
    else if (o->k == UPCONV)
        e2g_upconv2x_backward(B->dx, B->dw, db, B->dy, B->x, B->w, 1, o->H, o->W, cs->cin, cs->cout);
    else
        e2g_conv2d_backward(B->dx, B->dw, db, B->dy, B->x, B->w, 1, o->H, o->W, cs);
}

/* One timed run, ms. */
static double run_ms(void (*fn)(const op *, bufs *), const op *o, bufs *B) {
    double t0 = now();
    fn(o, B);
    return (now() - t0) * 1e3;
}

/* ---- conversion ------------------------------------------------------------ */

static uint16_t *g_h;
static float *g_f;
static size_t g_n;
static dnnl_primitive_t g_reorder;
static dnnl_memory_t g_from, g_to;
static dnnl_stream_t g_stream;

static void conv_fast(void) { e2g_bf16_from_f32(g_h, g_f, g_n); }

static void conv_generic(void) {
    size_t chunk = 16384, chunks = (g_n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t i = c * chunk;
        e2g_bf16_from_f32_generic(g_h + i, g_f + i, g_n - i < chunk ? g_n - i : chunk);
    }
}

static void conv_reorder(void) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, g_from}, {DNNL_ARG_TO, g_to}};
    if (dnnl_primitive_execute(g_reorder, g_stream, 2, args) != dnnl_success) abort();
    dnnl_stream_wait(g_stream);
}

/* Best ms of each method over 4·reps rounds that interleave the methods,
 * 1 ms apart, so that a descheduled thread on a shared machine spoils
 * single runs rather than a whole method. */
static void best_conv_ms(void (*const fn[3])(void), double best[3], int reps) {
    for (int m = 0; m < 3; m++) fn[m](), best[m] = 1e30;
    for (int r = 0; r < reps * 4; r++)
        for (int m = 0; m < 3; m++) {
            double t0 = now();
            fn[m]();
            double t = now() - t0;
            if (t < best[m]) best[m] = t;
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
    for (int m = 0; m < 3; m++) best[m] *= 1e3;
}

/* f32 → bf16 of an NHWC activation (H, W, C) three ways. */
static void bench_conversion(int H, int W, int C, int reps) {
    g_n = (size_t)H * W * C;
    g_f = rnd(g_n, 9);
    g_h = e2g_xmalloc(g_n * sizeof(uint16_t));
    dnnl_engine_t eng;
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&g_stream, eng, dnnl_stream_default_flags);
    dnnl_dims_t dims = {1, C, H, W};
    dnnl_memory_desc_t f_md, h_md;
    dnnl_memory_desc_init_by_tag(&f_md, 4, dims, dnnl_f32, dnnl_nhwc);
    dnnl_memory_desc_init_by_tag(&h_md, 4, dims, dnnl_bf16, dnnl_nhwc);
    dnnl_primitive_desc_t pd;
    if (dnnl_reorder_primitive_desc_create(&pd, &f_md, eng, &h_md, eng, NULL) != dnnl_success) abort();
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    char impl_name[64];
    snprintf(impl_name, sizeof impl_name, "%s", impl);
    dnnl_primitive_create(&g_reorder, pd);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_create(&g_from, &f_md, eng, g_f);
    dnnl_memory_create(&g_to, &h_md, eng, g_h);
    double bytes = g_n * 6.0;
    void (*const fns[3])(void) = {conv_fast, conv_generic, conv_reorder};
    double t[3];
    best_conv_ms(fns, t, reps);
    double t_fast = t[0], t_gen = t[1], t_re = t[2];
    printf("\n### f32 → bf16 conversion, %d×%d×%d NHWC (%.1f MB in, %.1f MB out)\n\n", H, W, C,
           g_n * 4 / 1e6, g_n * 2 / 1e6);
    printf("| method | ms | GB/s (read + write) |\n|---|---:|---:|\n");
    printf("| e2g_bf16_from_f32 (%s) | %.3f | %.1f |\n",
           e2g_cpu_has_avx512_bf16() ? "VCVTNE2PS2BF16" : "portable", t_fast, bytes / t_fast / 1e6);
    printf("| e2g_bf16_from_f32_generic (portable, -march=x86-64-v3) | %.3f | %.1f |\n", t_gen, bytes / t_gen / 1e6);
    printf("| oneDNN reorder nhwc f32→bf16 (%s) | %.3f | %.1f |\n", impl_name, t_re, bytes / t_re / 1e6);
    dnnl_memory_destroy(g_from);
    dnnl_memory_destroy(g_to);
    dnnl_primitive_destroy(g_reorder);
    dnnl_stream_destroy(g_stream);
    dnnl_engine_destroy(eng);
    free(g_f);
    free(g_h);
}

/* ---- the whole generator ------------------------------------------------------ */

static void bench_generator(int reps) {
    const char *names[] = {"a", "b"};
    e2g_gen_config cfg = {32, 8, 2, 1, 1, 0, 0, 0};
    e2g_model *m = e2g_model_new(&cfg, names, 0, 1);
    int S = 256;
    size_t n = (size_t)S * S * 3;
    float *x = rnd(n, 5), *y[2] = {e2g_xmalloc(n * sizeof(float)), e2g_xmalloc(n * sizeof(float))};
    float *dy = rnd(n, 6);
    for (size_t i = 0; i < n; i++) x[i] *= 0.9f, dy[i] *= 1e-3f;
    e2g_edit edit = {e2g_model_context(m, 0), 0, {{0}}};
    e2g_runtime *rt;
    char msg[E2G_ERR_LEN];
    E2G_ASSERT(e2g_runtime_new(&rt, m, "cpu", msg) == 0);
    e2g_infer *inf = e2g_infer_new(rt, 1, S, S);
    e2g_gen_acts *acts = e2g_gen_acts_new(&cfg, 1, S, S, 1);
    e2g_gen_params grads;
    float *gmem = e2g_xcalloc(e2g_gen_param_count(&cfg), sizeof(float));
    e2g_gen_bind(&cfg, &grads, gmem);
    double best[2][2] = {{1e30, 1e30}, {1e30, 1e30}};
    for (int round = 0; round <= reps; round++)
        for (int p = 0; p < 2; p++) {
            e2g_set_precision(p ? E2G_PRECISION_BF16 : E2G_PRECISION_FP32);
            double t0 = now();
            e2g_infer_run(inf, y[p], x, &edit, 0);
            double t1 = now();
            e2g_gen_forward(acts, y[p], &m->params, x, &edit);
            e2g_gen_backward(acts, &grads, NULL, NULL, NULL, NULL, dy, &m->params, x, &edit);
            double t2 = now();
            if (round && t1 - t0 < best[p][0]) best[p][0] = t1 - t0;
            if (round && t2 - t1 < best[p][1]) best[p][1] = t2 - t1;
        }
    e2g_set_precision(E2G_PRECISION_FP32);
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        double d = y[0][i] > y[1][i] ? y[0][i] - y[1][i] : y[1][i] - y[0][i];
        if (d > maxd) maxd = d;
    }
    printf("\n### Whole generator, ngf 32, 256², batch 1 (untrained init weights)\n\n");
    printf("| pass | fp32 ms | bf16 ms | speed-up |\n|---|---:|---:|---:|\n");
    printf("| inference (e2g_infer_run) | %.1f | %.1f | %.2f× |\n", best[0][0] * 1e3, best[1][0] * 1e3,
           best[0][0] / best[1][0]);
    printf("| training forward + backward (all weight gradients) | %.1f | %.1f | %.2f× |\n", best[0][1] * 1e3,
           best[1][1] * 1e3, best[0][1] / best[1][1]);
    printf("\nmax |y_fp32 − y_bf16| over the image (y in (−1, 1)): %.3g (%.2f of a 0..255 pixel step)\n",
           maxd, maxd * 127.5);
    free(gmem), free(x), free(dy), free(y[0]), free(y[1]);
    e2g_gen_acts_free(acts);
    e2g_infer_free(inf);
    e2g_runtime_free(rt);
    e2g_model_free(m);
}

int main(int argc, char **argv) {
    int reps = 10;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--reps N] [--only NAME-PREFIX]\n", argv[0]);
            return 2;
        }
    }
    if (e2g_set_precision(E2G_PRECISION_BF16) != 0) {
        fprintf(stderr, "bf16 unavailable: %s\n", e2g_precision_describe());
        return 3;
    }
    const char *bf16_desc = e2g_precision_describe();
    e2g_set_precision(E2G_PRECISION_FP32);
    printf("threads %d, best of %d interleaved rounds, batch 1; bf16 = %s\n\n", omp_get_max_threads(), reps,
           bf16_desc);
    printf("| op | MMAC | fwd fp32 ms | fwd bf16 ms | fwd GFLOP/s fp32 → bf16 | fwd speed-up "
           "| bwd fp32 ms | bwd bf16 ms | bwd GFLOP/s fp32 → bf16 | bwd speed-up |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    /* Rounds interleave every op and both precisions, so that load from
     * other processes on a shared machine hits both alike; the best of the
     * rounds counts.  Round 0 warms up (builds the plans) and is dropped. */
    enum { N_OPS = sizeof OPS / sizeof *OPS };
    bufs B[N_OPS];
    double best[N_OPS][2][2];
    for (int i = 0; i < N_OPS; i++) {
        B[i] = make(&OPS[i]);
        for (int p = 0; p < 4; p++) best[i][p / 2][p % 2] = 1e30;
    }
    for (int round = 0; round <= reps; round++)
        for (int i = 0; i < N_OPS; i++) {
            const op *o = &OPS[i];
            if (only && strncmp(o->name, only, strlen(only))) continue;
            for (int p = 0; p < 2; p++) {
                e2g_set_precision(p ? E2G_PRECISION_BF16 : E2G_PRECISION_FP32);
                double f = run_ms(forward, o, &B[i]), b = run_ms(backward, o, &B[i]);
                if (round && f < best[i][p][0]) best[i][p][0] = f;
                if (round && b < best[i][p][1]) best[i][p][1] = b;
            }
        }
    e2g_set_precision(E2G_PRECISION_FP32);
    double tot[2][2] = {{0}};
    for (int i = 0; i < N_OPS; i++) {
        const op *o = &OPS[i];
        if (only && strncmp(o->name, only, strlen(only))) continue;
        double f[2] = {best[i][0][0], best[i][1][0]}, b[2] = {best[i][0][1], best[i][1][1]};
        for (int p = 0; p < 2; p++) tot[p][0] += f[p], tot[p][1] += b[p];
        double gf = 2 * B[i].macs / 1e6, gb = 2 * gf; /* backward: data + weights */
        printf("| %s | %.0f | %.2f | %.2f | %.0f → %.0f | %.2f× | %.2f | %.2f | %.0f → %.0f | %.2f× |\n", o->name,
               B[i].macs / 1e6, f[0], f[1], gf / f[0], gf / f[1], f[0] / f[1], b[0], b[1], gb / b[0], gb / b[1],
               b[0] / b[1]);
    }
    for (int i = 0; i < N_OPS; i++)
        free(B[i].x), free(B[i].w), free(B[i].b), free(B[i].y), free(B[i].dy), free(B[i].dx), free(B[i].dw), free(B[i].db);
    printf("| **sum of the rows** | | %.2f | %.2f | | %.2f× | %.2f | %.2f | | %.2f× |\n", tot[0][0], tot[1][0],
           tot[0][0] / tot[1][0], tot[0][1], tot[1][1], tot[0][1] / tot[1][1]);
    if (!only) {
        bench_conversion(256, 256, 32, reps);
        bench_conversion(64, 64, 128, reps);
        bench_generator(reps < 10 ? reps : 10);
    }
    e2g_conv2d_cache_clear();
    e2g_gemm_cache_clear();
    return 0;
}
