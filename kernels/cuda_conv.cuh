/* cuda_conv.cuh — cuDNN convolutions shared by the inference engine and
 * the trainer: a stream, a cuDNN handle, one workspace and a list of plans
 * (descriptors plus the fastest algorithm of each direction, measured on
 * first use with cudnnFind*AlgorithmEx).  NHWC bf16 tensors, KRSC bf16
 * filters, fp32 accumulation on tensor cores.  Every call returns 0 or -1
 * with err filled. */
#ifndef E2G_CUDA_CONV_CUH
#define E2G_CUDA_CONV_CUH

#include "cuda_util.cuh"

namespace e2g {

#define DNN_WS_BYTES ((size_t)256 << 20) /* algorithms needing more workspace are skipped */

struct conv_plan;

struct dnn_ctx {
    cudaStream_t stream;
    cudnnHandle_t dnn;
    void *ws;
    conv_plan *plans;
};

/* Device 0, a non-blocking stream, the handle on it, the workspace; the
 * stream-ordered pool keeps freed memory.  dnn_free releases what was made. */
int dnn_init(dnn_ctx *c, char *err);
void dnn_free(dnn_ctx *c);

/* Shapes: input (N, H, W, C) as stored (already padded for a reflect pad,
 * then pad = 0), K filters of R×R over C, zero padding `pad`.  xns: the
 * input's (and dx's) elements from one sample to the next, 0 = packed
 * (H·W·C; tview.ns); the output is packed.  A plan is kept per shape and
 * per alignment of the pointers (up to 256 bytes), because cuDNN may
 * measure an algorithm that needs the alignment it was measured with. */
/* y = conv(x, w) */
int conv_fwd(dnn_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, int N, int H, int W, int C, int K,
             int R, int stride, int pad, size_t xns, char *err);
/* dx = conv_transpose(dy, w): overwrites dx */
int conv_bwd_data(dnn_ctx *c, bf16 *dx, const bf16 *dy, const bf16 *w, int N, int H, int W, int C,
                  int K, int R, int stride, int pad, size_t xns, char *err);
/* dw = Σ x ⊗ dy: overwrites dw (K, R, R, C) */
int conv_bwd_filter(dnn_ctx *c, bf16 *dw, const bf16 *x, const bf16 *dy, int N, int H, int W, int C,
                    int K, int R, int stride, int pad, size_t xns, char *err);

}  // namespace e2g

#endif
