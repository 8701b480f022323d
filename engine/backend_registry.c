/* backend_registry.c — the backends of this build, the CPU first.  The one
 * engine file that knows whether CUDA was built: CMake defines
 * E2G_HAVE_CUDA for this file alone and links the kernels' library, which
 * provides e2g_cuda_backend (kernels/cuda_backend.cu). */
#include "backend.h"

#include <stddef.h>

static const e2g_backend *(*const providers[])(void) = {
    e2g_cpu_backend,
#ifdef E2G_HAVE_CUDA
    e2g_cuda_backend,
#endif
};

int e2g_backend_count(void) { return (int)(sizeof providers / sizeof *providers); }

const e2g_backend *e2g_backend_get(int i) {
    return i >= 0 && i < e2g_backend_count() ? providers[i]() : NULL;
}
