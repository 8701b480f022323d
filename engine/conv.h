/* conv.h — 2-D convolution forward and backward on the CPU through oneDNN.
 * Activations are NHWC float32; weights are PyTorch's OIHW.  Reflect padding
 * is applied here (oneDNN only zero-pads), so callers describe the layer
 * exactly as docs/architecture.md does. */
#ifndef E2G_CONV_H
#define E2G_CONV_H

typedef enum { E2G_PAD_ZERO, E2G_PAD_REFLECT } e2g_pad_mode;

typedef struct {
    int cin, cout, k, stride, pad;
    e2g_pad_mode pad_mode;
} e2g_conv_shape;

/* Output size along one axis for an input of size n. */
int e2g_conv2d_out_size(int n, const e2g_conv_shape *cs);

/* out: (N, Ho, Wo, cout) is overwritten; inp: (N, H, W, cin);
 * weight: (cout, cin, k, k); bias: (cout) or NULL. */
void e2g_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int H, int W, const e2g_conv_shape *cs);

/* Gradients e2g_accumulate (+=); any of dinp, dweight, dbias may be NULL when
 * not wanted.  dout: (N, Ho, Wo, cout); inp: the forward's input. */
void e2g_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int H, int W,
                     const e2g_conv_shape *cs);

/* Nearest ×2 upsample followed by a 3×3, stride-1, zero-pad-1 conv, without
 * the upsampled copy: inp (N, H, W, cin) → out (N, 2H, 2W, cout); weight
 * (cout, cin, 3, 3), bias (cout) or NULL.  The backward accumulates like
 * conv2d_backward's. */
void e2g_upconv2x_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                      int H, int W, int cin, int cout);
void e2g_upconv2x_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int H, int W, int cin,
                       int cout);

/* Memory-lean inference works on horizontal bands of one image: the caller
 * gathers the band's input rows with their halo (zero or reflected rows at
 * the image's top and bottom), so these pad only the columns, as cs says.
 * conv2d_forward_band: band (rows, W, cin) → ((rows − k)/stride + 1, Wo, cout).
 * upconv2x_forward_band: band rows i0−1 .. i1 (rows = i1 − i0 + 2) → the
 * 2·(i1 − i0) upsampled-and-convolved output rows 2·i0 .. 2·i1 − 1. */
void e2g_conv2d_forward_band(float *out, const float *band, const float *weight, const float *bias,
                         int rows, int W, const e2g_conv_shape *cs);
void e2g_upconv2x_forward_band(float *out, const float *band, const float *weight, const float *bias,
                           int rows, int W, int cin, int cout);

/* Precision: with e2g_get_precision() bf16 (precision.h) every function
 * here takes bf16-rounded inputs, weights and output gradients and
 * accumulates in f32; callers' tensors stay f32 and the contracts above
 * hold.  Where oneDNN's bf16 kernels lose to fp32 a layer stays fp32:
 * forward passes with cin < 4 (the RGB input layer), backward passes with
 * cout < 32 (LoRA's rank-r convolutions, the RGB output layer).  fp32
 * results are those of a build without bf16, bit for bit. */

/* The precision a layer of cin → cout channels runs in, forward or
 * backward, under the current setting. */
int e2g_conv_precision(int cin, int cout, int backward);

/* Reflect padding by p on every side (PyTorch 'reflect'), NHWC.  The
 * backward folds the padded gradient back and accumulates into dinp. */
void e2g_pad_reflect_forward(float *out, const float *inp, int N, int H, int W, int C, int p);
void e2g_pad_reflect_backward(float *dinp, const float *dout, int N, int H, int W, int C, int p);

/* Releases the calling thread's cached oneDNN primitives, scratch buffers
 * and stream; runs by itself when a thread that used them exits. */
void e2g_conv2d_cache_clear(void);

#endif
