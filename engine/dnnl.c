/* dnnl.c — the engine's shared oneDNN plumbing (see dnnl.h). */
#include "dnnl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "conv.h"
#include "ops.h"

static dnnl_engine_t g_engine;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_thread_key; /* its destructor runs at a holding thread's exit */
static _Thread_local dnnl_stream_t t_stream;

void e2g_dnnl_failed(const char *call, dnnl_status_t status, const char *file, int line) {
    fprintf(stderr, "e2gan: oneDNN %s failed with status %d (%s:%d)\n", call, (int)status, file, line);
    abort();
}

static void thread_exit(void *unused) {
    (void)unused;
    e2g_conv2d_cache_clear();
    e2g_gemm_cache_clear();
    e2g_dnnl_stream_release();
}

static void engine_init(void) {
    E2G_DNNL_CHECK(dnnl_engine_create(&g_engine, dnnl_cpu, 0));
    if (pthread_key_create(&g_thread_key, thread_exit) != 0) abort();
}

dnnl_engine_t e2g_dnnl_engine(void) {
    pthread_once(&g_engine_once, engine_init);
    return g_engine;
}

/* A key's destructor runs only for a non-NULL value. */
void e2g_dnnl_thread_hold(void) {
    e2g_dnnl_engine();
    if (!pthread_getspecific(g_thread_key)) pthread_setspecific(g_thread_key, &g_thread_key);
}

dnnl_stream_t e2g_dnnl_stream(void) {
    if (!t_stream) {
        e2g_dnnl_thread_hold();
        E2G_DNNL_CHECK(dnnl_stream_create(&t_stream, e2g_dnnl_engine(), dnnl_stream_default_flags));
    }
    return t_stream;
}

void e2g_dnnl_stream_release(void) {
    if (t_stream) dnnl_stream_destroy(t_stream);
    t_stream = NULL;
}
