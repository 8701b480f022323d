/* cuda_info.cu — finding the GPUs and proving a kernel runs on them (the
 * backend's describe: card, driver, runtime and cuDNN versions). */
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>

#include "cuda_info.h"

namespace e2g {

__global__ void fill_index(int *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = i;
}

/* Launches a tiny kernel and checks its result; returns 0 or -1 with a
 * message naming the failing CUDA call. */
static int probe_kernel(char *msg, size_t len) {
    enum { N = 256 };
    int *dev = NULL, host[N];
    cudaError_t e = cudaMalloc(&dev, sizeof host);
    if (e == cudaSuccess) {
        fill_index<<<1, N>>>(dev, N);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost);
    cudaFree(dev);
    if (e != cudaSuccess) {
        snprintf(msg, len, "kernel probe failed: %s", cudaGetErrorString(e));
        return -1;
    }
    for (int i = 0; i < N; i++)
        if (host[i] != i) {
            snprintf(msg, len, "kernel probe returned wrong data at %d", i);
            return -1;
        }
    return 0;
}

extern "C" int e2g_cuda_describe(char *msg, size_t len) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(msg, len, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return 0;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        snprintf(msg, len, "CUDA device 0 did not answer");
        return -1;
    }
    char probe[128] = "kernel probe ok";
    int rc = probe_kernel(probe, sizeof probe);
    int driver = 0;
    cudaDriverGetVersion(&driver);
    snprintf(msg, len,
             "%d CUDA device(s); device 0: %s, sm_%d%d, %.1f GiB, %d SMs; driver CUDA %d.%d, runtime %d.%d; "
             "cuDNN %zu (built with %d); %s",
             count, prop.name, prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0, prop.multiProcessorCount,
             driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, cudnnGetVersion(),
             CUDNN_VERSION, probe);
    return rc ? -1 : count;
}

}  // namespace e2g
