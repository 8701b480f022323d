/* cuda_info.h — what the CUDA runtime sees (built only when nvcc is found). */
#ifndef E2G_CUDA_INFO_H
#define E2G_CUDA_INFO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Describes the CUDA devices into msg and runs a probe kernel on device 0.
 * Returns the device count (0 when there is none), -1 on a device error. */
int e2g_cuda_describe(char *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif
