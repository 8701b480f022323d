/* cuda_util.cuh — what every CUDA file of the engine shares: checked CUDA
 * and cuDNN calls that turn a failure into a -1 return with "call failed:
 * reason (file:line)" in the caller's err buffer, and bf16 helpers. */
#ifndef E2G_CUDA_UTIL_CUH
#define E2G_CUDA_UTIL_CUH

#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "common.h"
}

#include "cuda_bodies.cuh" /* bf16, bf16x8, reflect_dev, the kernels' bodies */

namespace e2g {

/* Writes the failure into err and returns -1. */
static inline int cuda_failed(char *err, const char *call, const char *why, const char *file,
                              int line) {
    if (err) snprintf(err, E2G_ERR_LEN, "CUDA: %s failed: %s (%s:%d)", call, why, file, line);
    return -1;
}

#define CUDA_TRY(call)                                                                     \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess)                                                             \
            return cuda_failed(err, #call, cudaGetErrorString(e_), __FILE__, __LINE__);    \
    } while (0)

#define CUDNN_TRY(call)                                                                    \
    do {                                                                                   \
        cudnnStatus_t s_ = (call);                                                         \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                    \
            return cuda_failed(err, #call, cudnnGetErrorString(s_), __FILE__, __LINE__);   \
    } while (0)

/* After a kernel launch: a bad configuration shows here, a fault later. */
#define LAUNCH_TRY() CUDA_TRY(cudaGetLastError())

/* Propagates a -1 from a callee that already wrote err. */
#define TRY(call)                                                                          \
    do {                                                                                   \
        if ((call) != 0) return -1;                                                        \
    } while (0)

static inline unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 1u << 30 ? 1u << 30 : b);
}

static inline size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Bump allocation inside one device allocation: a counting pass with base
 * NULL, then the real one. */
struct dev_arena {
    char *base;
    size_t used;
    template <typename T>
    T *take(size_t n) {
        T *p = base ? (T *)(base + used) : NULL;
        used += align256(n * sizeof(T));
        return p;
    }
};

/* The median of a benchmark's timings into *ms; an error when none were
 * taken. */
template <typename T>
static inline int median_ms(std::vector<T> &times, T *ms, char *err) {
    if (times.empty()) return e2g_fail(err, "CUDA: no timing");
    std::sort(times.begin(), times.end());
    *ms = times[times.size() / 2];
    return 0;
}

}  // namespace e2g

#endif
