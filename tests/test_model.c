/* test_model.c — the whole generator and discriminator against PyTorch
 * (tests/refs/model_refs.py, an independent implementation of
 * docs/architecture.md): outputs (tolerance 1e-5), input, context and every
 * parameter gradient (1e-4), for the default form at three widths, the
 * paper-like form, the form with FiLM and with FiLM and skip gates; LoRA adapters unmerged and merged, with their gradients;
 * a two-concept blend; the PatchGAN discriminator. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter.h"
#include "common.h"
#include "model.h"
#include "model_io.h"
#include "testutil.h"

#define TOL_OUT 1e-5
#define TOL_GRAD 1e-4

static char *ref_path(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", getenv("E2G_REFS"), name);
    return path;
}

static e2g_model *load_base(const e2g_st_file *ref) {
    char err[E2G_ERR_LEN];
    e2g_model *m = NULL;
    const char *file = e2g_st_meta(ref, "base_file");
    ck_assert_msg(file != NULL, "reference names no base_file");
    ck_assert_msg(e2g_model_load(&m, ref_path(file), err) == 0, "load %s: %s", file, err);
    return m;
}

/* A reference image tensor (N, 3, H, W) as NHWC. */
static float *ref_image(const e2g_st_file *f, const char *name, int N, int H, int W) {
    return nchw_to_nhwc(ref_tensor(f, name, NULL), N, 3, H, W);
}

static void check(const char *what, const float *got, const float *want, size_t n, double tol) {
    ck_assert_msg(rel_error(what, got, want, n, tol) <= tol, "%s mismatch", what);
}

static const char *g_variants[] = {"default_ngf8", "default_ngf16", "paperlike_ngf16",
                                   "default_ngf32", "film_ngf16", "skipgate_ngf16"};

/* Forward and full backward of the base generator. */
START_TEST(test_generator) {
    char name[64];
    snprintf(name, sizeof name, "g_%s", g_variants[_i]);
    e2g_st_file *f = ref_open(name);
    e2g_model *m = load_base(f);
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    int T = m->cfg.ctx_tokens, c4 = e2g_gen_c4(&m->cfg);
    size_t img = (size_t)N * H * W * 3, ctx_n = (size_t)N * T * c4;
    float *x = ref_image(f, "x", N, H, W), *ctx = ref_tensor(f, "ctx", NULL);
    e2g_edit edits[8] = {0};
    for (int n = 0; n < N; n++) edits[n].context = ctx + (size_t)n * T * c4;

    e2g_gen_acts *acts = e2g_gen_acts_new(&m->cfg, N, H, W, 1);
    float *y = test_alloc(img * sizeof(float));
    e2g_gen_forward(acts, y, &m->params, x, edits);
    float *want_y = ref_image(f, "y", N, H, W);
    check("y", y, want_y, img, TOL_OUT);
    if (!m->cfg.norm_ends) { /* the memory-lean inference path */
        float *y_lean = test_alloc(img * sizeof(float));
        e2g_gen_infer(&m->cfg, y_lean, &m->params, x, edits, N, H, W);
        check("y (lean inference)", y_lean, want_y, img, TOL_OUT);
    }

    size_t np = e2g_gen_param_count(&m->cfg);
    float *gmem = test_alloc(np * sizeof(float)), *dctx = test_alloc(ctx_n * sizeof(float)),
          *dx = test_alloc(img * sizeof(float));
    e2g_gen_params grads;
    e2g_gen_bind(&m->cfg, &grads, gmem);
    e2g_gen_backward(acts, &grads, NULL, NULL, dctx, dx, ref_image(f, "dy", N, H, W), &m->params, x,
                     edits);
    check("dx", dx, ref_image(f, "dx", N, H, W), img, TOL_GRAD);
    check("dctx", dctx, ref_tensor(f, "dctx", NULL), ctx_n, TOL_GRAD);
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    int nt = e2g_gen_tensors(&m->cfg, &grads, t);
    for (int i = 0; i < nt; i++) {
        if (strcmp(t[i].name, "concepts") == 0) continue; /* the test passes contexts directly */
        char gname[64];
        snprintf(gname, sizeof gname, "grad.%.48s", t[i].name);
        check(gname, *t[i].slot, ref_tensor(f, gname, NULL), t[i].numel, TOL_GRAD);
    }
    e2g_gen_acts_free(acts);
    e2g_model_free(m);
    e2g_st_close(f);
}
END_TEST

/* A reference file with its base model and adapter loaded. */
typedef struct {
    e2g_st_file *f;
    e2g_model *m;
    e2g_adapter *ad;
} lora_fixture;

static lora_fixture open_lora(const char *name) {
    char err[E2G_ERR_LEN];
    lora_fixture fx = {ref_open(name), NULL, NULL};
    fx.m = load_base(fx.f);
    ck_assert_msg(e2g_adapter_load(&fx.ad, fx.m, ref_path(e2g_st_meta(fx.f, "adapter_file")), err) == 0,
                  "adapter: %s", err);
    return fx;
}

static void close_lora(lora_fixture *fx) {
    e2g_adapter_free(fx->ad);
    e2g_model_free(fx->m);
    e2g_st_close(fx->f);
}

static const char *lora_variants[] = {"default_ngf16", "default_ngf32", "film_ngf16", "skipgate_ngf16"};

/* An adapter on every crucial layer, ranks differing per layer: unmerged
 * forward, merged forward, and the LoRA and embedding gradients. */
START_TEST(test_lora) {
    char name[64];
    snprintf(name, sizeof name, "g_lora_%s", lora_variants[_i]);
    lora_fixture fx = open_lora(name);
    e2g_st_file *f = fx.f;
    e2g_model *m = fx.m;
    e2g_adapter *ad = fx.ad;
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    float strength = (float)ref_meta_double(f, "strength");
    int T = m->cfg.ctx_tokens, c4 = e2g_gen_c4(&m->cfg);
    size_t img = (size_t)N * H * W * 3;
    float *x = ref_image(f, "x", N, H, W), *want = ref_image(f, "y", N, H, W);
    e2g_edit edits[8] = {0};
    for (int n = 0; n < N; n++) {
        edits[n].context = ad->lora->concept;
        edits[n].n_terms = 1;
        edits[n].terms[0] = (e2g_lora_term){ad->lora, strength};
    }
    e2g_gen_acts *acts = e2g_gen_acts_new(&m->cfg, N, H, W, 1);
    float *y = test_alloc(img * sizeof(float));
    e2g_gen_forward(acts, y, &m->params, x, edits);
    check("y (unmerged LoRA)", y, want, img, TOL_OUT);

    /* merged: the same output from private weights and no LoRA terms */
    e2g_gen_params merged;
    float *private_w = e2g_gen_merge(&m->cfg, &merged, &m->params, edits[0].terms, 1);
    ck_assert_ptr_nonnull(private_w);
    e2g_edit plain[8] = {0};
    for (int n = 0; n < N; n++) plain[n].context = ad->lora->concept;
    float *y_merged = test_alloc(img * sizeof(float));
    e2g_gen_forward(acts, y_merged, &merged, x, plain);
    check("y (merged LoRA)", y_merged, ref_image(f, "y_merged", N, H, W), img, TOL_OUT);
    free(private_w);

    /* gradients of the adapter (base frozen), from the unmerged forward */
    e2g_gen_forward(acts, y, &m->params, x, edits);
    e2g_lora *dl = e2g_lora_new(&m->cfg, ad->lora->rank, ad->lora->scale);
    float *dctx = test_alloc((size_t)N * T * c4 * sizeof(float)), *dx = test_alloc(img * sizeof(float));
    e2g_gen_backward(acts, NULL, dl, ad->lora, dctx, dx, ref_image(f, "dy", N, H, W), &m->params, x,
                     edits);
    check("dx", dx, ref_image(f, "dx", N, H, W), img, TOL_GRAD);
    for (int n = 1; n < N; n++) /* every sample used the adapter's embedding */
        for (int i = 0; i < T * c4; i++) dctx[i] += dctx[(size_t)n * T * c4 + i];
    check("grad.concept.embedding", dctx, ref_tensor(f, "grad.concept.embedding", NULL),
          (size_t)T * c4, TOL_GRAD);
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        e2g_layer_shape s;
        e2g_crucial_shape(&m->cfg, l, &s);
        int kk = s.k ? s.k * s.k : 1, r = ad->lora->rank[l];
        ck_assert_int_gt(r, 0);
        char gname[96];
        snprintf(gname, sizeof gname, "grad.base_model.model.%s.lora_A.weight", e2g_crucial_name(l));
        check(gname, dl->A[l], ref_tensor(f, gname, NULL), (size_t)r * s.cin * kk, TOL_GRAD);
        snprintf(gname, sizeof gname, "grad.base_model.model.%s.lora_B.weight", e2g_crucial_name(l));
        check(gname, dl->B[l], ref_tensor(f, gname, NULL), (size_t)s.cout * r, TOL_GRAD);
    }
    e2g_lora_free(dl);
    e2g_gen_acts_free(acts);
    close_lora(&fx);
}
END_TEST

/* "lora-x:0.6,base-a:0.4": blended context and 0.6·ΔW, through the same
 * request parser the CLI and server use. */
START_TEST(test_blend) {
    char err[E2G_ERR_LEN];
    lora_fixture fx = open_lora("g_blend_default_ngf16");
    e2g_st_file *f = fx.f;
    e2g_model *m = fx.m;
    e2g_adapter *ad = fx.ad;
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    e2g_request req;
    ck_assert_msg(e2g_request_resolve(&req, m, &ad, 1, e2g_st_meta(f, "blend"), 1.0f, err) == 0,
                  "resolve: %s", err);
    size_t img = (size_t)N * H * W * 3;
    e2g_edit edits[8];
    for (int n = 0; n < N; n++) edits[n] = req.edit;
    e2g_gen_acts *acts = e2g_gen_acts_new(&m->cfg, N, H, W, 0);
    float *y = test_alloc(img * sizeof(float));
    e2g_gen_forward(acts, y, &m->params, ref_image(f, "x", N, H, W), edits);
    check("y (blend)", y, ref_image(f, "y", N, H, W), img, TOL_OUT);
    e2g_request_free(&req);
    e2g_gen_acts_free(acts);
    close_lora(&fx);
}
END_TEST

/* The lean inference path against the planned forward on an image tall
 * enough for several bands with a partial last one, with per-sample LoRA,
 * in the default form and without skips or residual output.  At 136×192
 * (26,112 pixels) the walk takes 2 images per pass (E2G_INFER_PASS_PIXELS),
 * so the batch of 3 runs as passes of 2 and 1. */
START_TEST(test_lean_inference) {
    char err[E2G_ERR_LEN];
    lora_fixture fx = open_lora("g_lora_default_ngf16");
    e2g_model *m = fx.m;
    e2g_adapter *ad = fx.ad;
    int N = 3, H = 136, W = 192;
    ck_assert_int_eq(E2G_INFER_PASS_PIXELS / ((size_t)H * W), 2);
    size_t img = (size_t)N * H * W * 3;
    float *x = test_alloc(img * sizeof(float)), *y = test_alloc(img * sizeof(float)),
          *y_lean = test_alloc(img * sizeof(float));
    fill_random(x, img, 11);
    e2g_request req[3];
    e2g_edit edits[3];
    const char *specs[3] = {"lora-x", "base-a", "base-a"};
    for (int n = 0; n < N; n++) {
        ck_assert_msg(e2g_request_resolve(&req[n], m, &ad, 1, specs[n], 0.8f, err) == 0, "%s", err);
        edits[n] = req[n].edit;
    }
    for (int variant = 0; variant < 2; variant++) {
        m->cfg.unet_skips = m->cfg.residual_out = !variant;
        e2g_gen_acts *acts = e2g_gen_acts_new(&m->cfg, N, H, W, 0);
        e2g_gen_forward(acts, y, &m->params, x, edits);
        e2g_gen_infer(&m->cfg, y_lean, &m->params, x, edits, N, H, W);
        check(variant ? "lean vs planned (no skips)" : "lean vs planned", y_lean, y, img, TOL_OUT);
        e2g_gen_acts_free(acts);
    }
    for (int n = 0; n < N; n++) e2g_request_free(&req[n]);
    close_lora(&fx);
}
END_TEST

/* A batch mixing two adapters and a base concept: each sample equals the
 * same sample run alone, so per-sample LoRA never leaks across samples. */
START_TEST(test_mixed_batch) {
    char err[E2G_ERR_LEN];
    lora_fixture fx = open_lora("g_lora_default_ngf16");
    e2g_model *m = fx.m;
    e2g_adapter *ad = fx.ad;
    int H = 16, W = 24, N = 3;
    size_t one = (size_t)H * W * 3;
    float *x = test_alloc(N * one * sizeof(float)), *y = test_alloc(N * one * sizeof(float)),
          *y1 = test_alloc(one * sizeof(float));
    fill_random(x, N * one, 7);
    const char *specs[3] = {"lora-x", "base-b", "lora-x:0.5,base-a:0.5"};
    float strengths[3] = {1.0f, 1.0f, 1.5f};
    e2g_request req[3];
    e2g_edit edits[3];
    for (int n = 0; n < N; n++) {
        ck_assert_msg(e2g_request_resolve(&req[n], m, &ad, 1, specs[n], strengths[n], err) == 0, "%s", err);
        edits[n] = req[n].edit;
    }
    e2g_gen_acts *batch = e2g_gen_acts_new(&m->cfg, N, H, W, 0), *single = e2g_gen_acts_new(&m->cfg, 1, H, W, 0);
    e2g_gen_forward(batch, y, &m->params, x, edits);
    for (int n = 0; n < N; n++) {
        e2g_gen_forward(single, y1, &m->params, x + n * one, &edits[n]);
        check(specs[n], y + n * one, y1, one, TOL_OUT);
    }
    /* and the adapter really changes the output */
    ck_assert(rel_error("lora-x vs base-b (expected to differ)", y, y + one, one, TOL_OUT) > 0.01);
    for (int n = 0; n < N; n++) e2g_request_free(&req[n]);
    e2g_gen_acts_free(batch);
    e2g_gen_acts_free(single);
    close_lora(&fx);
}
END_TEST

START_TEST(test_discriminator) {
    e2g_st_file *f = ref_open("d_ndf16");
    int ndf = ref_meta_int(f, "ndf"), N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"),
        W = ref_meta_int(f, "W");
    char err[E2G_ERR_LEN];
    size_t np = e2g_disc_param_count(ndf);
    float *pmem = test_alloc(np * sizeof(float)), *gmem = test_alloc(np * sizeof(float));
    e2g_disc_params p, g;
    e2g_disc_bind(ndf, &p, pmem);
    e2g_disc_bind(ndf, &g, gmem);
    e2g_tensor_entry t[E2G_DISC_MAX_TENSORS], gt[E2G_DISC_MAX_TENSORS];
    int nt = e2g_disc_tensors(ndf, &p, t);
    e2g_disc_tensors(ndf, &g, gt);
    for (int i = 0; i < nt; i++)
        ck_assert_msg(e2g_st_read_f32(f, t[i].name, t[i].ndim, t[i].shape, *t[i].slot, err) == 0, "%s", err);
    int Ho, Wo;
    e2g_disc_out_size(H, W, &Ho, &Wo);
    size_t img = (size_t)N * H * W * 3, nl = (size_t)N * Ho * Wo;
    float *src = ref_image(f, "src", N, H, W), *tgt = ref_image(f, "tgt", N, H, W);
    float *logits = test_alloc(nl * sizeof(float));
    e2g_disc_acts *a = e2g_disc_acts_new(ndf, N, H, W);
    e2g_disc_forward(a, logits, &p, src, tgt);
    size_t nref;
    float *want = ref_tensor(f, "logits", &nref); /* (N, 1, Ho, Wo) is NHWC already */
    ck_assert_uint_eq(nref, nl);
    check("logits", logits, want, nl, TOL_OUT);
    float *dsrc = test_alloc(img * sizeof(float)), *dtgt = test_alloc(img * sizeof(float));
    e2g_disc_backward(a, &g, dsrc, dtgt, ref_tensor(f, "dlogits", NULL), &p, src, tgt);
    check("dsrc", dsrc, ref_image(f, "dsrc", N, H, W), img, TOL_GRAD);
    check("dtgt", dtgt, ref_image(f, "dtgt", N, H, W), img, TOL_GRAD);
    for (int i = 0; i < nt; i++) {
        char gname[64];
        snprintf(gname, sizeof gname, "grad.%.48s", gt[i].name);
        check(gname, *gt[i].slot, ref_tensor(f, gname, NULL), gt[i].numel, TOL_GRAD);
    }
    e2g_disc_acts_free(a);
    e2g_st_close(f);
}
END_TEST

/* A base given FiLM and the skip gates (e2gan train --init OLD --film
 * --skip-gate) computes exactly what it computed before, since the new
 * tensors start at zero; saved and loaded, it keeps them and the flags. */
START_TEST(test_add_conditioning) {
    char err[E2G_ERR_LEN], path[] = "/tmp/e2g_test_conditioningXXXXXX";
    e2g_st_file *f = ref_open("g_default_ngf16");
    e2g_model *m = load_base(f);
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    int T = m->cfg.ctx_tokens, c4 = e2g_gen_c4(&m->cfg);
    size_t img = (size_t)N * H * W * 3;
    float *x = ref_image(f, "x", N, H, W), *ctx = ref_tensor(f, "ctx", NULL);
    e2g_edit edits[8] = {0};
    for (int n = 0; n < N; n++) edits[n].context = ctx + (size_t)n * T * c4;
    float *before = test_alloc(img * sizeof(float)), *after = test_alloc(img * sizeof(float));
    e2g_gen_infer(&m->cfg, before, &m->params, x, edits, N, H, W);
    size_t params_before = e2g_gen_param_count(&m->cfg);
    e2g_model_add_conditioning(m, 1, 1);
    ck_assert(m->cfg.film && m->cfg.skip_gate);
    ck_assert_uint_eq(e2g_gen_param_count(&m->cfg) - params_before,
                      /* ngf 16: FiLM of us, rb3.a, rb3.b (64 channels), dec2 (32); the output
                       * gate (3); the skip gates of dec2 (32) and dec1 (16); C4 + 1 each */
                      (size_t)(2 * (64 + 64 + 64 + 32) + 3 + 32 + 16) * (c4 + 1));
    e2g_gen_infer(&m->cfg, after, &m->params, x, edits, N, H, W);
    ck_assert_msg(memcmp(before, after, img * sizeof(float)) == 0, "zero FiLM and skip gates changed the output");

    int fd = mkstemp(path);
    ck_assert(fd >= 0);
    close(fd);
    ck_assert_msg(e2g_model_save(m, path, NULL, err) == 0, "%s", err);
    e2g_model *back = NULL;
    ck_assert_msg(e2g_model_load(&back, path, err) == 0, "%s", err);
    ck_assert(back->cfg.film && back->cfg.skip_gate);
    e2g_gen_infer(&back->cfg, after, &back->params, x, edits, N, H, W);
    ck_assert_msg(memcmp(before, after, img * sizeof(float)) == 0, "the saved model computes otherwise");
    unlink(path);
    e2g_model_free(back);
    e2g_model_free(m);
    e2g_st_close(f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_generator, 0, (int)(sizeof g_variants / sizeof *g_variants));
    tcase_add_loop_test(tc, test_lora, 0, (int)(sizeof lora_variants / sizeof *lora_variants));
    tcase_add_test(tc, test_blend);
    tcase_add_test(tc, test_mixed_batch);
    tcase_add_test(tc, test_lean_inference);
    tcase_add_test(tc, test_discriminator);
    tcase_add_test(tc, test_add_conditioning);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
