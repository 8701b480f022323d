/* test_ops.c — every CPU op's forward and backward against PyTorch
 * (tests/refs/ops_refs.py).  Tolerances: outputs 1e-5, gradients 1e-4,
 * relative to the reference tensor's largest magnitude (testutil.h).
 * Gradient buffers start at a non-zero value to check that the backward
 * functions and the losses accumulate. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "conv.h"
#include "lowrank.h"
#include "ops.h"
#include "testutil.h"

#define TOL_OUT 1e-5
#define TOL_GRAD 1e-4
#define GRAD_FILL 0.25f

/* A gradient buffer pre-filled with GRAD_FILL. */
static float *grad_buffer(size_t n) {
    float *g = test_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = GRAD_FILL;
    return g;
}

/* Compares an accumulated gradient (minus its GRAD_FILL start). */
static void check_grad(const char *what, float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++) got[i] -= GRAD_FILL;
    ck_assert_msg(rel_error(what, got, want, n, TOL_GRAD) <= TOL_GRAD, "%s mismatch", what);
}

static void check_out(const char *what, const float *got, const float *want, size_t n) {
    ck_assert_msg(rel_error(what, got, want, n, TOL_OUT) <= TOL_OUT, "%s mismatch", what);
}

static const char *conv_cases[] = {"conv3_zero_s1", "conv3_zero_s2", "conv3_zero_s2_odd",
                                   "conv7_reflect", "conv3_reflect", "conv4_s2",
                                   "conv4_s1",      "conv1"};

START_TEST(test_conv) {
    char name[64];
    snprintf(name, sizeof name, "op_%s", conv_cases[_i]);
    e2g_st_file *f = ref_open(name);
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    e2g_conv_shape cs = {ref_meta_int(f, "cin"), ref_meta_int(f, "cout"), ref_meta_int(f, "k"),
                         ref_meta_int(f, "stride"), ref_meta_int(f, "pad"),
                         ref_meta_int(f, "reflect") ? E2G_PAD_REFLECT : E2G_PAD_ZERO};
    int has_bias = ref_meta_int(f, "bias");
    int Ho = e2g_conv2d_out_size(H, &cs), Wo = e2g_conv2d_out_size(W, &cs);
    size_t nx = (size_t)N * cs.cin * H * W, ny = (size_t)N * cs.cout * Ho * Wo;
    size_t nw = (size_t)cs.cout * cs.cin * cs.k * cs.k;

    float *x_ref = ref_tensor(f, "x", NULL), *w = ref_tensor(f, "weight", NULL);
    float *b = has_bias ? ref_tensor(f, "bias", NULL) : NULL;
    float *x = nchw_to_nhwc(x_ref, N, cs.cin, H, W);
    float *out_ref = ref_tensor(f, "out", NULL), *dout_ref = ref_tensor(f, "dout", NULL);
    float *want_out = nchw_to_nhwc(out_ref, N, cs.cout, Ho, Wo);
    float *dout = nchw_to_nhwc(dout_ref, N, cs.cout, Ho, Wo);

    float *out = test_alloc(ny * sizeof(float));
    e2g_conv2d_forward(out, x, w, b, N, H, W, &cs);
    check_out(name, out, want_out, ny);

    float *dx = grad_buffer(nx), *dw = grad_buffer(nw), *db = grad_buffer(cs.cout);
    e2g_conv2d_backward(dx, dw, has_bias ? db : NULL, dout, x, w, N, H, W, &cs);
    float *dx_ref = ref_tensor(f, "dx", NULL);
    float *want_dx = nchw_to_nhwc(dx_ref, N, cs.cin, H, W);
    float *want_dw = ref_tensor(f, "dweight", NULL);
    check_grad("dx", dx, want_dx, nx);
    check_grad("dweight", dw, want_dw, nw);
    if (has_bias) {
        float *want_db = ref_tensor(f, "dbias", NULL);
        check_grad("dbias", db, want_db, cs.cout);
    }
    /* Input gradient alone (frozen weights, as LoRA fine-tuning runs it). */
    float *dx_only = grad_buffer(nx);
    e2g_conv2d_backward(dx_only, NULL, NULL, dout, x, w, N, H, W, &cs);
    check_grad("dx (weights frozen)", dx_only, want_dx, nx);

    e2g_st_close(f);
}
END_TEST

START_TEST(test_instancenorm) {
    e2g_st_file *f = ref_open("op_instancenorm");
    int N = ref_meta_int(f, "N"), C = ref_meta_int(f, "C"), H = ref_meta_int(f, "H"),
        W = ref_meta_int(f, "W");
    size_t n = (size_t)N * C * H * W;
    float *x = nchw_to_nhwc(ref_tensor(f, "x", NULL), N, C, H, W);
    float *w = ref_tensor(f, "weight", NULL), *b = ref_tensor(f, "bias", NULL);
    float *out = test_alloc(n * sizeof(float)), *mean = test_alloc(N * C * sizeof(float)),
          *rstd = test_alloc(N * C * sizeof(float));
    e2g_instancenorm_forward(out, mean, rstd, x, w, b, 0, 0, N, H * W, C);
    float *want = nchw_to_nhwc(ref_tensor(f, "out", NULL), N, C, H, W);
    check_out("instancenorm out", out, want, n);
    /* the fused ReLU variant gives relu(norm) */
    float *fused = test_alloc(n * sizeof(float));
    e2g_instancenorm_forward(fused, mean, rstd, x, w, b, 0, 1, N, H * W, C);
    for (size_t i = 0; i < n; i++) want[i] = want[i] > 0 ? want[i] : 0;
    check_out("instancenorm+relu out", fused, want, n);
    float *dout = nchw_to_nhwc(ref_tensor(f, "dout", NULL), N, C, H, W);
    float *dx = grad_buffer(n), *dw = grad_buffer(C), *db = grad_buffer(C);
    e2g_instancenorm_backward(dx, dw, db, dout, x, mean, rstd, w, 0, N, H * W, C);
    check_grad("instancenorm dx", dx, nchw_to_nhwc(ref_tensor(f, "dx", NULL), N, C, H, W), n);
    check_grad("instancenorm dweight", dw, ref_tensor(f, "dweight", NULL), C);
    check_grad("instancenorm dbias", db, ref_tensor(f, "dbias", NULL), C);
    e2g_st_close(f);
}
END_TEST

START_TEST(test_layernorm) {
    e2g_st_file *f = ref_open("op_layernorm");
    int M = ref_meta_int(f, "M"), C = ref_meta_int(f, "C");
    size_t n = (size_t)M * C;
    float *x = ref_tensor(f, "x", NULL), *w = ref_tensor(f, "weight", NULL),
          *b = ref_tensor(f, "bias", NULL);
    float *out = test_alloc(n * sizeof(float)), *mean = test_alloc(M * sizeof(float)),
          *rstd = test_alloc(M * sizeof(float));
    e2g_layernorm_forward(out, mean, rstd, x, w, b, M, C);
    check_out("layernorm out", out, ref_tensor(f, "out", NULL), n);
    float *dx = grad_buffer(n), *dw = grad_buffer(C), *db = grad_buffer(C);
    e2g_layernorm_backward(dx, dw, db, ref_tensor(f, "dout", NULL), x, mean, rstd, w, M, C);
    check_grad("layernorm dx", dx, ref_tensor(f, "dx", NULL), n);
    check_grad("layernorm dweight", dw, ref_tensor(f, "dweight", NULL), C);
    check_grad("layernorm dbias", db, ref_tensor(f, "dbias", NULL), C);
    e2g_st_close(f);
}
END_TEST

START_TEST(test_linear) {
    e2g_st_file *f = ref_open("op_linear");
    int M = ref_meta_int(f, "M"), I = ref_meta_int(f, "in"), O = ref_meta_int(f, "out");
    float *x = ref_tensor(f, "x", NULL), *w = ref_tensor(f, "weight", NULL),
          *b = ref_tensor(f, "bias", NULL);
    float *out = test_alloc((size_t)M * O * sizeof(float));
    e2g_linear_forward(out, x, w, b, M, I, O, 0);
    float *want = ref_tensor(f, "out", NULL);
    check_out("linear out", out, want, (size_t)M * O);
    /* accumulate mode adds onto what is there */
    e2g_linear_forward(out, x, w, b, M, I, O, 1);
    for (size_t i = 0; i < (size_t)M * O; i++) out[i] *= 0.5f;
    check_out("linear out (accumulate)", out, want, (size_t)M * O);
    float *dx = grad_buffer((size_t)M * I), *dw = grad_buffer((size_t)O * I), *db = grad_buffer(O);
    e2g_linear_backward(dx, dw, db, ref_tensor(f, "dout", NULL), x, w, M, I, O);
    check_grad("linear dx", dx, ref_tensor(f, "dx", NULL), (size_t)M * I);
    check_grad("linear dweight", dw, ref_tensor(f, "dweight", NULL), (size_t)O * I);
    check_grad("linear dbias", db, ref_tensor(f, "dbias", NULL), O);
    e2g_st_close(f);
}
END_TEST

START_TEST(test_activations) {
    const char *names[] = {"relu", "leakyrelu", "gelu"};
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "op_%s", names[k]);
        e2g_st_file *f = ref_open(name);
        size_t n = ref_meta_int(f, "n");
        float *x = ref_tensor(f, "x", NULL), *dout = ref_tensor(f, "dout", NULL);
        float *out = test_alloc(n * sizeof(float)), *dx = grad_buffer(n);
        if (k == 0) {
            e2g_relu_forward(out, x, n);
            e2g_relu_backward(dx, dout, out, n);
        } else if (k == 1) {
            e2g_leakyrelu_forward(out, x, 0.2f, n);
            e2g_leakyrelu_backward(dx, dout, x, 0.2f, n);
        } else {
            e2g_gelu_forward(out, x, n);
            e2g_gelu_backward(dx, dout, x, n);
        }
        check_out(name, out, ref_tensor(f, "out", NULL), n);
        check_grad(name, dx, ref_tensor(f, "dx", NULL), n);
        e2g_st_close(f);
    }
}
END_TEST

START_TEST(test_output) {
    for (int residual = 0; residual < 2; residual++) {
        char name[64];
        snprintf(name, sizeof name, "op_output_res%d", residual);
        e2g_st_file *f = ref_open(name);
        size_t n = ref_meta_int(f, "n");
        float *o = ref_tensor(f, "o", NULL), *x = ref_tensor(f, "x", NULL);
        float *y = test_alloc(n * sizeof(float)), *d_o = grad_buffer(n), *dx = grad_buffer(n);
        e2g_output_forward(y, o, x, residual, n);
        check_out(name, y, ref_tensor(f, "out", NULL), n);
        e2g_output_backward(d_o, dx, ref_tensor(f, "dout", NULL), y, x, residual, n);
        check_grad("output do", d_o, ref_tensor(f, "do", NULL), n);
        if (residual) check_grad("output dx", dx, ref_tensor(f, "dx", NULL), n);
        e2g_st_close(f);
    }
}
END_TEST

static const char *upconv_cases[] = {"op_upconv", "op_upconv_nobias"};

/* The engine never materialises the upsampled image: the fused op must
 * equal PyTorch's interpolate(nearest, ×2) followed by conv2d. */
START_TEST(test_upconv) {
    e2g_st_file *f = ref_open(upconv_cases[_i]);
    int N = ref_meta_int(f, "N"), cin = ref_meta_int(f, "cin"), cout = ref_meta_int(f, "cout"),
        H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W"), has_bias = ref_meta_int(f, "bias");
    size_t nx = (size_t)N * cin * H * W, ny = (size_t)N * cout * 4 * H * W, nw = (size_t)cout * cin * 9;
    float *x = nchw_to_nhwc(ref_tensor(f, "x", NULL), N, cin, H, W), *w = ref_tensor(f, "weight", NULL);
    float *b = has_bias ? ref_tensor(f, "bias", NULL) : NULL;
    float *out = test_alloc(ny * sizeof(float));
    e2g_upconv2x_forward(out, x, w, b, N, H, W, cin, cout);
    check_out(upconv_cases[_i], out, nchw_to_nhwc(ref_tensor(f, "out", NULL), N, cout, 2 * H, 2 * W), ny);
    float *dx = grad_buffer(nx), *dw = grad_buffer(nw), *db = grad_buffer(cout);
    float *dout = nchw_to_nhwc(ref_tensor(f, "dout", NULL), N, cout, 2 * H, 2 * W);
    e2g_upconv2x_backward(dx, dw, has_bias ? db : NULL, dout, x, w, N, H, W, cin, cout);
    check_grad("upconv dx", dx, nchw_to_nhwc(ref_tensor(f, "dx", NULL), N, cin, H, W), nx);
    check_grad("upconv dweight", dw, ref_tensor(f, "dweight", NULL), nw);
    if (has_bias) check_grad("upconv dbias", db, ref_tensor(f, "dbias", NULL), cout);
    e2g_st_close(f);
}
END_TEST

START_TEST(test_losses) {
    e2g_st_file *f = ref_open("losses");
    size_t nr, nf, nx;
    float *d_real = ref_tensor(f, "d_real", &nr), *d_fake = ref_tensor(f, "d_fake", &nf);
    float *fake = ref_tensor(f, "fake", &nx), *target = ref_tensor(f, "target", NULL);
    float *g_real = grad_buffer(nr), *g_fake = grad_buffer(nf), *g_img = grad_buffer(nx);
    float loss_d = 0.5f * (e2g_mse_const_loss(g_real, d_real, 1.0f, nr, 0.5f) +
                           e2g_mse_const_loss(g_fake, d_fake, 0.0f, nf, 0.5f));
    float want = ref_tensor(f, "loss_d", NULL)[0];
    check_out("loss_d", &loss_d, &want, 1);
    check_grad("loss_d d_real", g_real, ref_tensor(f, "grad.loss_d.d_real", NULL), nr);
    check_grad("loss_d d_fake", g_fake, ref_tensor(f, "grad.loss_d.d_fake", NULL), nf);
    float *g_fake2 = grad_buffer(nf);
    float loss_g = e2g_mse_const_loss(g_fake2, d_fake, 1.0f, nf, 1.0f);
    want = ref_tensor(f, "loss_g_gan", NULL)[0];
    check_out("loss_g_gan", &loss_g, &want, 1);
    check_grad("loss_g_gan d_fake", g_fake2, ref_tensor(f, "grad.loss_g_gan.d_fake", NULL), nf);
    float loss_l1 = e2g_l1_loss(g_img, fake, target, nx, 1.0f);
    want = ref_tensor(f, "loss_l1", NULL)[0];
    check_out("loss_l1", &loss_l1, &want, 1);
    check_grad("loss_l1 fake", g_img, ref_tensor(f, "grad.loss_l1.fake", NULL), nx);
    e2g_st_close(f);
}
END_TEST

/* The trainer's optional terms against E.loss_edge_l1 and E.loss_dark_l1
 * (NHWC here, NCHW there; ties where fake equals target); the dark-pixel
 * weighting at weight 0 is the plain L1, bit for bit; a broken edge term
 * (one direction left out) is caught. */
START_TEST(test_sketch_losses) {
    e2g_st_file *f = ref_open("op_sketch_losses");
    int N = ref_meta_int(f, "N"), H = ref_meta_int(f, "H"), W = ref_meta_int(f, "W");
    float dark_weight = (float)ref_meta_double(f, "dark_weight");
    size_t pixels = (size_t)N * H * W, n = 3 * pixels;
    float *fake = nchw_to_nhwc(ref_tensor(f, "fake", NULL), N, 3, H, W);
    float *target = nchw_to_nhwc(ref_tensor(f, "target", NULL), N, 3, H, W);

    float *g_edge = grad_buffer(n), want = ref_tensor(f, "loss_edge_l1", NULL)[0];
    float edge = e2g_edge_l1_loss(g_edge, fake, target, N, H, W, 3, 1.0f);
    check_out("loss_edge_l1", &edge, &want, 1);
    check_grad("loss_edge_l1 fake", g_edge, nchw_to_nhwc(ref_tensor(f, "grad.loss_edge_l1", NULL), N, 3, H, W), n);
    float rows_only = e2g_edge_l1_loss(NULL, fake, target, N * H, 1, W, 3, 1.0f); /* no vertical terms */
    ck_assert(rel_error("edge term without its vertical half (expected to fail)", &rows_only, &want, 1, TOL_OUT) >
              TOL_OUT);

    float *g_dark = grad_buffer(n);
    float dark = e2g_dark_l1_loss(g_dark, fake, target, pixels, dark_weight, 1.0f);
    want = ref_tensor(f, "loss_dark_l1", NULL)[0];
    check_out("loss_dark_l1", &dark, &want, 1);
    check_grad("loss_dark_l1 fake", g_dark, nchw_to_nhwc(ref_tensor(f, "grad.loss_dark_l1", NULL), N, 3, H, W), n);

    float *g_plain = grad_buffer(n), *g_dark0 = grad_buffer(n);
    float plain = e2g_l1_loss(g_plain, fake, target, n, 100.0f);
    float dark0 = e2g_dark_l1_loss(g_dark0, fake, target, pixels, 0.0f, 100.0f);
    ck_assert(memcmp(&plain, &dark0, sizeof plain) == 0 && memcmp(g_plain, g_dark0, n * sizeof(float)) == 0);
    ck_assert_msg(fabsf(dark - plain) > 1e-3f, "the dark weighting changed nothing");
    e2g_st_close(f);
}
END_TEST

/* Adam against torch.optim.Adam over three steps. */
START_TEST(test_adam) {
    e2g_st_file *f = ref_open("op_adam");
    int n = ref_meta_int(f, "n");
    float *p = ref_tensor(f, "p0", NULL);
    e2g_adam adam;
    e2g_adam_init(&adam, n);
    for (int step = 1; step <= 3; step++) {
        char name[8];
        snprintf(name, sizeof name, "g%d", step);
        e2g_adam_step(&adam, p, ref_tensor(f, name, NULL), (float)ref_meta_double(f, "lr"),
                      (float)ref_meta_double(f, "beta1"), (float)ref_meta_double(f, "beta2"),
                      (float)ref_meta_double(f, "eps"));
        snprintf(name, sizeof name, "p%d", step);
        check_out(name, p, ref_tensor(f, name, NULL), n);
    }
    e2g_adam_free(&adam);
    e2g_st_close(f);
}
END_TEST

/* Singular values and best rank-k approximations of B·A against
 * torch.linalg.svd; a rank-deficient product keeps its true rank. */
START_TEST(test_lowrank) {
    e2g_st_file *f = ref_open("op_lowrank");
    int cout = ref_meta_int(f, "cout"), r = ref_meta_int(f, "r"), fan = ref_meta_int(f, "fan");
    float *B = ref_tensor(f, "B", NULL), *A = ref_tensor(f, "A", NULL);
    float sigma[16], *U = test_alloc((size_t)cout * r * sizeof(float)), *Vt = test_alloc((size_t)r * fan * sizeof(float));
    ck_assert_int_eq(e2g_lowrank_svd(B, A, cout, r, fan, sigma, U, Vt), r);
    check_out("singular values", sigma, ref_tensor(f, "sigma", NULL), r);
    int ks[3] = {1, 3, 6};
    float *Bk = test_alloc((size_t)cout * r * sizeof(float)), *Ak = test_alloc((size_t)r * fan * sizeof(float));
    float *approx = test_alloc((size_t)cout * fan * sizeof(float));
    for (int i = 0; i < 3; i++) {
        int k = ks[i];
        char name[16];
        e2g_lowrank_truncate(B, A, cout, r, fan, k, Bk, Ak);
        e2g_gemm('N', 'N', cout, fan, k, 1.0f, Bk, k, Ak, fan, 0.0f, approx, fan);
        snprintf(name, sizeof name, "approx%d", k);
        ck_assert(rel_error(name, approx, ref_tensor(f, name, NULL), (size_t)cout * fan, 1e-4) <= 1e-4);
    }
    /* rank 2 in a rank-4 factorisation: two columns of B repeat */
    for (int o = 0; o < cout; o++) B[o * r + 2] = B[o * r], B[o * r + 3] = B[o * r + 1];
    for (int j = 0; j < fan; j++) A[2 * fan + j] = 0, A[3 * fan + j] = 0;
    ck_assert_int_eq(e2g_lowrank_svd(B, A, cout, 4, fan, sigma, U, Vt), 2);
    e2g_st_close(f);
}
END_TEST

/* The comparison itself must catch a broken op: a ReLU that leaks like a
 * LeakyReLU is far outside the output tolerance. */
START_TEST(test_broken_op_is_caught) {
    e2g_st_file *f = ref_open("op_relu");
    size_t n = ref_meta_int(f, "n");
    float *x = ref_tensor(f, "x", NULL), *out = test_alloc(n * sizeof(float));
    e2g_leakyrelu_forward(out, x, 0.01f, n);
    ck_assert(rel_error("broken relu (expected to fail)", out, ref_tensor(f, "out", NULL), n,
                        TOL_OUT) > TOL_OUT);
    e2g_st_close(f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_add_loop_test(tc, test_conv, 0, (int)(sizeof conv_cases / sizeof *conv_cases));
    tcase_add_test(tc, test_instancenorm);
    tcase_add_test(tc, test_layernorm);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_activations);
    tcase_add_test(tc, test_output);
    tcase_add_loop_test(tc, test_upconv, 0, 2);
    tcase_add_test(tc, test_losses);
    tcase_add_test(tc, test_sketch_losses);
    tcase_add_test(tc, test_adam);
    tcase_add_test(tc, test_lowrank);
    tcase_add_test(tc, test_broken_op_is_caught);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
