/* cuda_opcheck.cu — single fused kernels on host arrays (cuda_engine.h's
 * e2g_cuda_check_*), so bench/gpu_check.c can compare each against the CPU
 * engine's op of the same name on random inputs.  Inputs go up as bf16
 * exactly as the engine stores activations; outputs come back as fp32. */
#include <vector>

#include "cuda_engine.h"
#include "cuda_kernels.cuh"

namespace e2g {

namespace {

/* Device buffers of one check, freed together. */
struct scratch {
    std::vector<void *> bufs;
    ~scratch() {
        for (void *p : bufs) cudaFree(p);
    }
    template <typename T>
    int alloc(T **out, size_t n, char *err) {
        *out = NULL;
        CUDA_TRY(cudaMalloc((void **)out, (n ? n : 1) * sizeof(T)));
        bufs.push_back(*out);
        return 0;
    }
    /* fp32 host → bf16 device */
    int bf16_in(bf16 **out, const float *host, size_t n, char *err) {
        float *tmp;
        TRY(alloc(&tmp, n, err));
        TRY(alloc(out, n, err));
        CUDA_TRY(cudaMemcpy(tmp, host, n * sizeof(float), cudaMemcpyHostToDevice));
        return f32_to_bf16(*out, tmp, n, 0, err);
    }
    int f32_in(float **out, const float *host, size_t n, char *err) {
        TRY(alloc(out, n, err));
        CUDA_TRY(cudaMemcpy(*out, host, n * sizeof(float), cudaMemcpyHostToDevice));
        return 0;
    }
    /* bf16 device → fp32 host, waiting for the work before it */
    int bf16_out(float *host, const bf16 *dev, size_t n, char *err) {
        float *tmp;
        TRY(alloc(&tmp, n, err));
        TRY(bf16_to_f32(tmp, dev, n, 0, err));
        CUDA_TRY(cudaMemcpy(host, tmp, n * sizeof(float), cudaMemcpyDeviceToHost));
        return 0;
    }
};

} // namespace

extern "C" int e2g_cuda_check_instancenorm(float *out, const float *x, const float *gamma, const float *beta,
                                           int relu, const float *residual, int N, int HW, int C, char *err) {
    scratch s;
    size_t n = (size_t)N * HW * C;
    bf16 *dx, *dr = NULL, *dy;
    float *dg, *db, *sums;
    TRY(s.bf16_in(&dx, x, n, err));
    if (residual) TRY(s.bf16_in(&dr, residual, n, err));
    TRY(s.f32_in(&dg, gamma, C, err));
    TRY(s.f32_in(&db, beta, C, err));
    TRY(s.alloc(&sums, (size_t)N * 2 * C, err));
    TRY(s.alloc(&dy, n, err));
    conv_out src = {dx, N, 1, HW, C, C, 0};
    TRY(block_stats(sums, src, 0, err));
    epilogue_args a = {};
    a.src = src, a.sums = sums, a.gamma = dg, a.beta = db, a.relu = relu;
    a.add = {dr, N, 1, HW, C, 0, 0};
    a.dst = {dy, N, 1, HW, C, 0, 0};
    TRY(block_epilogue(a, 0, err));
    return s.bf16_out(out, dy, n, err);
}

extern "C" int e2g_cuda_check_layernorm(float *out, const float *x, const float *gamma, const float *beta,
                                        int M, int C, char *err) {
    scratch s;
    size_t n = (size_t)M * C;
    bf16 *dx, *dy;
    float *dg, *db;
    TRY(s.bf16_in(&dx, x, n, err));
    TRY(s.f32_in(&dg, gamma, C, err));
    TRY(s.f32_in(&db, beta, C, err));
    TRY(s.alloc(&dy, n, err));
    TRY(residual_layernorm(NULL, NULL, dy, dx, NULL, NULL, NULL, dg, db, M, C, 0, err));
    return s.bf16_out(out, dy, n, err);
}

extern "C" int e2g_cuda_check_gelu(float *out, const float *x, const float *bias, int M, int C, char *err) {
    scratch s;
    size_t n = (size_t)M * C;
    bf16 *dx;
    float *db;
    TRY(s.bf16_in(&dx, x, n, err));
    TRY(s.f32_in(&db, bias, C, err));
    TRY(bias_act(dx, db, 1, M, C, 0, err));
    return s.bf16_out(out, dx, n, err);
}

extern "C" int e2g_cuda_check_attention(float *out, const float *q, const float *k, const float *v, int N,
                                        int Lq, int Lk, int C, int heads, char *err) {
    scratch s;
    bf16 *dq, *dk, *dv, *dy;
    TRY(s.bf16_in(&dq, q, (size_t)N * Lq * C, err));
    TRY(s.bf16_in(&dk, k, (size_t)N * Lk * C, err));
    TRY(s.bf16_in(&dv, v, (size_t)N * Lk * C, err));
    TRY(s.alloc(&dy, (size_t)N * Lq * C, err));
    TRY(attention(dy, dq, C, dk, dv, C, N, Lq, Lk, C, heads, 0, err));
    return s.bf16_out(out, dy, (size_t)N * Lq * C, err);
}

extern "C" int e2g_cuda_check_output(float *y, const float *o, const float *x, int residual, size_t n,
                                     char *err) {
    scratch s;
    bf16 *dout;
    float *dx, *dy, *bias;
    const float zeros[3] = {0, 0, 0};
    TRY(s.bf16_in(&dout, o, n, err));
    TRY(s.f32_in(&dx, x, n, err));
    TRY(s.f32_in(&bias, zeros, 3, err));
    TRY(s.alloc(&dy, n, err));
    output_args a = {dy, dout, 3, bias, dx, residual, NULL, 1, n / 3};
    TRY(output_layer(a, 0, err));
    CUDA_TRY(cudaMemcpy(y, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
    return 0;
}

}  // namespace e2g
