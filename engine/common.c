/* common.c — error buffers, checked allocation and thread settings. */
#include "common.h"

#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int e2g_fail(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, E2G_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *e2g_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "e2gan: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

void *e2g_xcalloc(size_t count, size_t n) {
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "e2gan: out of memory allocating %zu x %zu bytes\n", count, n);
        abort();
    }
    return p;
}

int e2g_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void e2g_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
}

int e2g_get_threads(void) { return omp_get_max_threads(); }

void e2g_assert_failed(const char *cond, const char *file, int line) {
    fprintf(stderr, "e2gan: internal error: %s (%s:%d)\n", cond, file, line);
    abort();
}
