/* dnnl.h — the oneDNN plumbing the engine's convolutions (conv.c) and bf16
 * matmuls (ops.c) share (engine-internal): one CPU engine, each thread's
 * stream, checked calls, and the release of a thread's cached primitives
 * when it exits (connection and worker threads come and go in the server). */
#ifndef E2G_DNNL_H
#define E2G_DNNL_H

#include <oneapi/dnnl/dnnl.h>

/* oneDNN failing on shapes the engine validated is a bug or an exhausted
 * machine, not bad input: report where and stop. */
#define E2G_DNNL_CHECK(call)                                                                \
    do {                                                                                    \
        dnnl_status_t status_ = (call);                                                     \
        if (status_ != dnnl_success) e2g_dnnl_failed(#call, status_, __FILE__, __LINE__); \
    } while (0)
void e2g_dnnl_failed(const char *call, dnnl_status_t status, const char *file, int line)
    __attribute__((noreturn));

/* The process's CPU engine. */
dnnl_engine_t e2g_dnnl_engine(void);

/* The calling thread's stream, made on first use. */
dnnl_stream_t e2g_dnnl_stream(void);

/* Marks the calling thread as holding cached oneDNN state (plans, scratch,
 * its stream): when it exits, e2g_conv2d_cache_clear and
 * e2g_gemm_cache_clear release it. */
void e2g_dnnl_thread_hold(void);

/* Destroys the calling thread's stream (the next e2g_dnnl_stream makes a
 * new one). */
void e2g_dnnl_stream_release(void);

#endif
