/* cuda_conv.cu — cuDNN convolution plans, forward and both gradients
 * (cuda_conv.cuh).  A plan is found per shape; each direction's algorithm
 * is measured the first time that direction runs (with the call's own
 * buffers as scratch, so it must not run inside a CUDA graph capture: the
 * inference engine's first, eager run of a shape does it). */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_conv.cuh"

namespace e2g {

struct conv_plan {
    int N, H, W, C, K, R, stride, pad, align;
    size_t xns;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int have_fwd, have_data, have_filter;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t data;
    cudnnConvolutionBwdFilterAlgo_t filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
    size_t fwd_ws, data_ws, filter_ws;
    conv_plan *next;
};

static void plan_destroy(conv_plan *p) {
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

static int plan_describe(conv_plan *p, char *err) {
    int Ho = (p->H + 2 * p->pad - p->R) / p->stride + 1, Wo = (p->W + 2 * p->pad - p->R) / p->stride + 1;
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->x));
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->y));
    CUDNN_TRY(cudnnCreateFilterDescriptor(&p->w));
    CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    if (p->xns) /* NHWC with a padded sample stride */
        CUDNN_TRY(cudnnSetTensor4dDescriptorEx(p->x, CUDNN_DATA_BFLOAT16, p->N, p->C, p->H, p->W, (int)p->xns, 1,
                                               p->W * p->C, p->C));
    else
        CUDNN_TRY(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, p->N, p->C, p->H, p->W));
    CUDNN_TRY(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, p->N, p->K, Ho, Wo));
    CUDNN_TRY(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, p->K, p->C, p->R, p->R));
    CUDNN_TRY(cudnnSetConvolution2dDescriptor(p->conv, p->pad, p->pad, p->stride, p->stride, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, CUDNN_TENSOR_OP_MATH));
    return 0;
}

/* The alignment the three pointers share: their lowest set address bit,
 * at most 256. */
static int align_of(const void *a, const void *b, const void *c) {
    uintptr_t v = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | 256u;
    return (int)(v & (~v + 1));
}

static int get_plan(dnn_ctx *c, conv_plan **out, int N, int H, int W, int C, int K, int R, int stride,
                    int pad, size_t xns, int align, char *err) {
    if (xns == (size_t)H * W * C) xns = 0; /* packed after all */
    for (conv_plan *p = c->plans; p; p = p->next)
        if (p->N == N && p->H == H && p->W == W && p->C == C && p->K == K && p->R == R &&
            p->stride == stride && p->pad == pad && p->xns == xns && p->align == align) {
            *out = p;
            return 0;
        }
    conv_plan *p = (conv_plan *)calloc(1, sizeof *p);
    if (!p) return e2g_fail(err, "out of host memory");
    p->N = N, p->H = H, p->W = W, p->C = C, p->K = K, p->R = R, p->stride = stride, p->pad = pad;
    p->xns = xns, p->align = align;
    if (plan_describe(p, err)) {
        plan_destroy(p);
        return -1;
    }
    p->next = c->plans, c->plans = p;
    *out = p;
    return 0;
}

/* The first successful measured algorithm within the workspace. */
#define PICK(perf, found, algo_out, math_out, ws_out, ok)                                  \
    do {                                                                                   \
        ok = 0;                                                                            \
        for (int i_ = 0; i_ < (found) && !ok; i_++)                                        \
            if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && (perf)[i_].memory <= DNN_WS_BYTES) \
                algo_out = (perf)[i_].algo, math_out = (perf)[i_].mathType,                \
                ws_out = (perf)[i_].memory, ok = 1;                                        \
    } while (0)

static int no_algo(const conv_plan *p, const char *dir, char *err) {
    return e2g_fail(err, "CUDA: no cuDNN %s algorithm for conv %dx%dx%dx%d -> %d, k %d", dir, p->N, p->H,
                    p->W, p->C, p->K, p->R);
}

int conv_fwd(dnn_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, int N, int H, int W, int C, int K, int R,
             int stride, int pad, size_t xns, char *err) {
    conv_plan *p;
    TRY(get_plan(c, &p, N, H, W, C, K, R, stride, pad, xns, align_of(y, x, w), err));
    if (!p->have_fwd) {
        cudnnConvolutionFwdAlgoPerf_t perf[8];
        int found = 0, ok;
        CUDNN_TRY(cudnnFindConvolutionForwardAlgorithmEx(c->dnn, p->x, x, p->w, w, p->conv, p->y, y, 8, &found,
                                                         perf, c->ws, DNN_WS_BYTES));
        PICK(perf, found, p->fwd, p->fwd_math, p->fwd_ws, ok);
        if (!ok) return no_algo(p, "forward", err);
        p->have_fwd = 1;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->fwd_math));
    CUDNN_TRY(cudnnConvolutionForward(c->dnn, &one, p->x, x, p->w, w, p->conv, p->fwd, c->ws, p->fwd_ws, &zero,
                                      p->y, y));
    return 0;
}

int conv_bwd_data(dnn_ctx *c, bf16 *dx, const bf16 *dy, const bf16 *w, int N, int H, int W, int C, int K,
                  int R, int stride, int pad, size_t xns, char *err) {
    conv_plan *p;
    TRY(get_plan(c, &p, N, H, W, C, K, R, stride, pad, xns, align_of(dx, dy, w), err));
    if (!p->have_data) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[8];
        int found = 0, ok;
        CUDNN_TRY(cudnnFindConvolutionBackwardDataAlgorithmEx(c->dnn, p->w, w, p->y, dy, p->conv, p->x, dx, 8,
                                                              &found, perf, c->ws, DNN_WS_BYTES));
        PICK(perf, found, p->data, p->data_math, p->data_ws, ok);
        if (!ok) return no_algo(p, "backward-data", err);
        p->have_data = 1;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->data_math));
    CUDNN_TRY(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv, p->data, c->ws, p->data_ws,
                                           &zero, p->x, dx));
    return 0;
}

int conv_bwd_filter(dnn_ctx *c, bf16 *dw, const bf16 *x, const bf16 *dy, int N, int H, int W, int C, int K,
                    int R, int stride, int pad, size_t xns, char *err) {
    conv_plan *p;
    TRY(get_plan(c, &p, N, H, W, C, K, R, stride, pad, xns, align_of(dw, x, dy), err));
    if (!p->have_filter) {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[8];
        int found = 0, ok;
        CUDNN_TRY(cudnnFindConvolutionBackwardFilterAlgorithmEx(c->dnn, p->x, x, p->y, dy, p->conv, p->w, dw, 8,
                                                                &found, perf, c->ws, DNN_WS_BYTES));
        PICK(perf, found, p->filter, p->filter_math, p->filter_ws, ok);
        if (!ok) return no_algo(p, "backward-filter", err);
        p->have_filter = 1;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->filter_math));
    CUDNN_TRY(cudnnConvolutionBackwardFilter(c->dnn, &one, p->x, x, p->y, dy, p->conv, p->filter, c->ws,
                                             p->filter_ws, &zero, p->w, dw));
    return 0;
}

int dnn_init(dnn_ctx *c, char *err) {
    CUDA_TRY(cudaSetDevice(0));
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUDNN_TRY(cudnnCreate(&c->dnn));
    CUDNN_TRY(cudnnSetStream(c->dnn, c->stream));
    CUDA_TRY(cudaMalloc(&c->ws, DNN_WS_BYTES));
    cudaMemPool_t pool;
    unsigned long long keep = ~0ull;
    CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, 0));
    CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return 0;
}

void dnn_free(dnn_ctx *c) {
    if (c->stream) cudaStreamSynchronize(c->stream);
    while (c->plans) {
        conv_plan *p = c->plans;
        c->plans = p->next;
        plan_destroy(p);
    }
    cudaFree(c->ws);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->stream) cudaStreamDestroy(c->stream);
    *c = dnn_ctx{};
}

}  // namespace e2g
