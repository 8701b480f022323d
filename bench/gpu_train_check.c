/* gpu_train_check.c — e2gan-gpu-train-check: proves the GPU trainer's
 * gradients against the CPU engine's and times its step.  Links the engine
 * only, so it runs on the GPU machine; bench/gpu-run.sh drives it.
 *
 *   e2gan-gpu-train-check grads [--film] [NGF S N]
 *        one step's gradient on random weights and inputs, full G and LoRA
 *        (rank 4 on every crucial layer, B nonzero; --film: the generator
 *        with FiLM and skip gates, their weights — norms, output gate,
 *        skip gates — random),
 *        every parameter tensor against e2g_gen_backward: cosine ≥ 0.99
 *        and max |gpu − cpu| ≤ 0.1 · max |cpu| (bf16 activations through
 *        the whole network), or the "grad_cos" / "grad_rel" lines of
 *        $E2G_TOLERANCES
 *        (bench/gpu_calibrate.py: PyTorch bf16 vs fp32 gradients)
 *   e2gan-gpu-train-check bench lora|full NGF S N [RANK]
 *        median device ms per step (forward, L1, backward, Adam) on random
 *        weights; samples/s
 *
 * "RESULT <key> <value>" lines and one "SUMMARY <text>" line for the
 * script; exit 0 pass, 1 a check failed, 2 usage, 3 no CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "model.h"
#include "ops.h"

static int failures;
static double cos_min = 0.99, rel_max = 0.1, worst_cos = 1, worst_rel = 0;
static int tensors;

/* "KEY VALUE" from $E2G_TOLERANCES into *v when present. */
static void tolerance(const char *key, double *v) {
    const char *path = getenv("E2G_TOLERANCES");
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    char line[256], k[64];
    double x;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %lf", k, &x) == 2 && !strcmp(k, key)) *v = x;
    if (f) fclose(f);
}

/* The CUDA backend of the registry and its trainer (this tool is built only
 * with CUDA): what engine/train.c drives. */
static const e2g_backend *cuda(void) {
    const e2g_backend *b = e2g_backend_find("cuda");
    if (!b || !b->train) {
        printf("the backend registry lists no cuda trainer\n");
        exit(1);
    }
    return b;
}

static void fill_random(float *x, size_t n, float lo, float hi, unsigned *seed) {
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(*seed >> 8) / 16777216.0f;
    }
}

/* Compares one tensor; prints and counts a failure. */
static void judge(const char *what, const char *name, const float *gpu, const float *cpu, size_t n) {
    double dot = 0, ng = 0, nc = 0, maxd = 0, maxc = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - cpu[i]);
        if (!(d <= maxd)) maxd = d;
        if (fabs(cpu[i]) > maxc) maxc = fabs(cpu[i]);
        dot += (double)gpu[i] * cpu[i], ng += (double)gpu[i] * gpu[i], nc += (double)cpu[i] * cpu[i];
    }
    double cos = nc > 0 && ng > 0 ? dot / sqrt(ng * nc) : (nc == 0 && ng == 0 ? 1.0 : 0.0);
    double rel = maxc > 0 ? maxd / maxc : maxd;
    int ok = cos >= cos_min && rel <= rel_max;
    if (!ok) failures++;
    tensors++;
    if (!(cos >= worst_cos)) worst_cos = cos;
    if (!(rel <= worst_rel)) worst_rel = rel;
    printf("RESULT grad.%s.%s cos %.5f rel %.4f %s\n", what, name, cos, rel, ok ? "ok" : "FAIL");
}

static e2g_gen_config make_cfg(int ngf, int film) {
    e2g_gen_config cfg = {.ngf = ngf, .ctx_tokens = 8, .n_concepts = 2, .unet_skips = 1, .residual_out = 1,
                          .norm_ends = 0, .film = film, .skip_gate = film};
    return cfg;
}

/* Random FiLM weights, the norms', the output gate's and the skip gates'
 * (initialised at zero): within ±1/√C4 and biases within ±0.25, so that with N(0, 1)
 * concepts (c̄ rms 1/√T) W·c̄ moves the norms' scales and shifts and the
 * gains of the image by about ±0.1 (±0.25 with the biases). */
static void randomise_film(const e2g_gen_config *cfg, e2g_gen_params *p, unsigned *seed) {
    e2g_tensor_entry tab[E2G_GEN_MAX_TENSORS];
    int nt = e2g_gen_tensors(cfg, p, tab);
    float lim_w = 1.0f / sqrtf((float)e2g_gen_c4(cfg));
    for (int i = 0; i < nt; i++) {
        const char *name = tab[i].name;
        if (!strstr(name, ".film.") && !strstr(name, ".skip_gate.") && strncmp(name, "out_gate.", 9)) continue;
        float lim = !strcmp(strrchr(name, '.'), ".weight") ? lim_w : 0.25f;
        fill_random(*tab[i].slot, tab[i].numel, -lim, lim, seed);
    }
}

static e2g_lora *make_lora(const e2g_gen_config *cfg, int r, unsigned *seed) {
    int rank[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL];
    for (int l = 0; l < E2G_N_CRUCIAL; l++) rank[l] = r, scale[l] = 2.0f;
    e2g_lora *lora = e2g_lora_new(cfg, rank, scale);
    fill_random(lora->memory, lora->numel, -0.2f, 0.2f, seed);
    return lora;
}

/* CPU reference: the gradient of λ·L1 for the batch, into grads (full G,
 * lora NULL) or dlora, as engine/train.c computes it. */
static void cpu_grads(const e2g_gen_config *cfg, e2g_gen_params *p, e2g_lora *lora, e2g_gen_params *grads,
                      e2g_lora *dlora, const float *x, const float *t, const int *rows, int N, int S) {
    int T = cfg->ctx_tokens, c4 = e2g_gen_c4(cfg);
    size_t img = (size_t)N * S * S * 3, ctx1 = (size_t)T * c4;
    e2g_gen_acts *acts = e2g_gen_acts_new(cfg, N, S, S, 1);
    e2g_edit *edits = e2g_xcalloc(N, sizeof *edits);
    for (int j = 0; j < N; j++) {
        if (lora) {
            edits[j].context = lora->concept, edits[j].n_terms = 1;
            edits[j].terms[0] = (e2g_lora_term){lora, 1.0f};
        } else {
            edits[j].context = p->concepts + rows[j] * ctx1;
        }
    }
    float *y = e2g_xmalloc(img * sizeof(float)), *dy = e2g_xcalloc(img, sizeof(float));
    float *dctx = e2g_xcalloc(N * ctx1, sizeof(float));
    e2g_gen_forward(acts, y, p, x, edits);
    e2g_l1_loss(dy, y, t, img, 100.0f);
    e2g_gen_backward(acts, grads, dlora, lora, dctx, NULL, dy, p, x, edits);
    for (int j = 0; j < N; j++)
        e2g_accumulate(lora ? dlora->concept : grads->concepts + rows[j] * ctx1, dctx + j * ctx1, ctx1);
    e2g_gen_acts_free(acts);
    free(edits), free(y), free(dy), free(dctx);
}

static int gpu_grads(const e2g_gen_config *cfg, const float *gen, const e2g_lora *lora, float *out, const float *x,
                     const float *t, const int *rows, int N, int S, char *err) {
    const e2g_train_backend *tb = cuda()->train;
    void *tr;
    if (tb->create(&tr, cfg, gen, lora, N, S, err)) return -1;
    float *hx, *ht;
    int *hr;
    size_t img = (size_t)N * S * S * 3;
    tb->slot(tr, 0, &hx, &ht, &hr);
    memcpy(hx, x, img * sizeof(float)), memcpy(ht, t, img * sizeof(float)), memcpy(hr, rows, N * sizeof(int));
    double l1;
    int rc = tb->upload(tr, 0, err) || tb->step(tr, 0, 100.0f, 0, 1, 0, 0.5f, 0.999f, 1e-8f, err) ||
             tb->finish(tr, &l1, err) || tb->get(tr, NULL, out, NULL, NULL, err);
    tb->destroy(tr);
    return rc ? -1 : 0;
}

static int cmd_grads(int ngf, int S, int N, int film) {
    char err[E2G_ERR_LEN];
    if (!cuda()->available(err)) {
        printf("%s\n", err);
        return 3;
    }
    tolerance("grad_cos", &cos_min);
    tolerance("grad_rel", &rel_max);
    printf("tolerances: cosine >= %.4f, max rel <= %.3f (%s)\n", cos_min, rel_max,
           getenv("E2G_TOLERANCES") ? "$E2G_TOLERANCES" : "default");
    e2g_gen_config cfg = make_cfg(ngf, film);
    size_t n = e2g_gen_param_count(&cfg), img = (size_t)N * S * S * 3;
    float *mem = e2g_xmalloc(n * sizeof(float)), *g_cpu = e2g_xcalloc(n, sizeof(float)), *g_gpu = e2g_xmalloc(n * sizeof(float));
    e2g_gen_params p, gp;
    e2g_gen_bind(&cfg, &p, mem);
    e2g_gen_init(&cfg, &p, 7);
    e2g_gen_bind(&cfg, &gp, g_cpu);
    unsigned seed = 11;
    if (film) randomise_film(&cfg, &p, &seed);
    float *x = e2g_xmalloc(img * sizeof(float)), *t = e2g_xmalloc(img * sizeof(float));
    fill_random(x, img, -1, 1, &seed), fill_random(t, img, -1, 1, &seed);
    int rows[64];
    for (int j = 0; j < N; j++) rows[j] = j % cfg.n_concepts;
    /* full G */
    cpu_grads(&cfg, &p, NULL, &gp, NULL, x, t, rows, N, S);
    if (gpu_grads(&cfg, mem, NULL, g_gpu, x, t, rows, N, S, err)) {
        printf("FAIL full G: %s\n", err); /* the LoRA run may still tell something */
        failures++;
    } else {
        e2g_tensor_entry tab[E2G_GEN_MAX_TENSORS];
        int nt = e2g_gen_tensors(&cfg, &gp, tab);
        for (int i = 0; i < nt; i++) {
            size_t off = (size_t)(*tab[i].slot - g_cpu);
            judge("full", tab[i].name, g_gpu + off, g_cpu + off, tab[i].numel);
        }
    }
    /* LoRA */
    e2g_lora *lora = make_lora(&cfg, 4, &seed), *dlora = e2g_lora_new(&cfg, lora->rank, lora->scale);
    float *l_gpu = e2g_xmalloc(lora->numel * sizeof(float));
    cpu_grads(&cfg, &p, lora, NULL, dlora, x, t, rows, N, S);
    int lora_ok = gpu_grads(&cfg, mem, lora, l_gpu, x, t, rows, N, S, err) == 0;
    if (!lora_ok) printf("FAIL LoRA: %s\n", err), failures++;
    for (int l = 0; l < E2G_N_CRUCIAL && lora_ok; l++) {
        char name[96];
        e2g_layer_shape ls;
        e2g_crucial_shape(&cfg, l, &ls);
        size_t kk = ls.k ? (size_t)ls.k * ls.k : 1;
        snprintf(name, sizeof name, "%s.lora_A", e2g_crucial_name(l));
        judge("lora", name, l_gpu + (lora->A[l] - lora->memory), dlora->A[l], (size_t)lora->rank[l] * ls.cin * kk);
        snprintf(name, sizeof name, "%s.lora_B", e2g_crucial_name(l));
        judge("lora", name, l_gpu + (lora->B[l] - lora->memory), dlora->B[l], (size_t)ls.cout * lora->rank[l]);
    }
    if (lora_ok)
        judge("lora", "concept.embedding", l_gpu + (lora->concept - lora->memory), dlora->concept,
              (size_t)cfg.ctx_tokens * e2g_gen_c4(&cfg));
    printf("RESULT grads_failed %d\n", failures);
    printf("SUMMARY ngf %d%s %dx%d b%d: %d tensor(s), min cos %.4f, max rel %.3f, %d failed\n", ngf,
           film ? " FiLM" : "", S, S, N, tensors, worst_cos, worst_rel, failures);
    e2g_lora_free(lora), e2g_lora_free(dlora);
    free(mem), free(g_cpu), free(g_gpu), free(l_gpu), free(x), free(t);
    return failures ? 1 : 0;
}

static int cmd_bench(const char *mode, int ngf, int S, int N, int rank) {
    char err[E2G_ERR_LEN];
    if (!cuda()->available(err)) {
        printf("%s\n", err);
        return 3;
    }
    e2g_gen_config cfg = make_cfg(ngf, 0);
    size_t n = e2g_gen_param_count(&cfg), img = (size_t)N * S * S * 3;
    float *mem = e2g_xmalloc(n * sizeof(float));
    e2g_gen_params p;
    e2g_gen_bind(&cfg, &p, mem);
    e2g_gen_init(&cfg, &p, 3);
    unsigned seed = 5;
    e2g_lora *lora = strcmp(mode, "lora") == 0 ? make_lora(&cfg, rank, &seed) : NULL;
    const e2g_train_backend *tb = cuda()->train;
    void *tr;
    if (tb->create(&tr, &cfg, mem, lora, N, S, err)) {
        printf("FAIL bench: %s\nSUMMARY FAILED: %s\n", err, err);
        return 1;
    }
    float *hx, *ht;
    int *hr;
    tb->slot(tr, 0, &hx, &ht, &hr);
    fill_random(hx, img, -1, 1, &seed), fill_random(ht, img, -1, 1, &seed);
    for (int j = 0; j < N; j++) hr[j] = j % cfg.n_concepts;
    double ms;
    int rc = tb->time(tr, 20, &ms, err);
    if (rc) {
        printf("FAIL bench: %s\nSUMMARY FAILED: %s\n", err, err);
        failures++;
    } else {
        printf("RESULT train.%s.ngf%d.%d.b%d.ms_per_step %.3f\n", mode, ngf, S, N, ms);
        printf("RESULT train.%s.ngf%d.%d.b%d.samples_per_s %.1f\n", mode, ngf, S, N, N * 1000.0 / ms);
        printf("SUMMARY %s ngf %d %dx%d b%d: %.3f ms/step, %.1f samples/s\n", mode, ngf, S, S, N, ms, N * 1000.0 / ms);
    }
    tb->destroy(tr);
    if (lora) e2g_lora_free(lora);
    free(mem);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "grads") == 0) {
        int film = argc > 2 && strcmp(argv[2], "--film") == 0;
        char **a = argv + 2 + film;
        int left = argc - 2 - film;
        return cmd_grads(left > 0 ? atoi(a[0]) : 16, left > 1 ? atoi(a[1]) : 32, left > 2 ? atoi(a[2]) : 2, film);
    }
    if (argc >= 6 && strcmp(argv[1], "bench") == 0 && (!strcmp(argv[2], "lora") || !strcmp(argv[2], "full")))
        return cmd_bench(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argc > 6 ? atoi(argv[6]) : 8);
    fprintf(stderr, "usage: e2gan-gpu-train-check grads [--film] [NGF S N] | bench lora|full NGF S N [RANK]\n");
    return 2;
}
