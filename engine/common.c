/* common.c — error buffers, checked allocation, atomic file writes and
 * thread settings. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int e2g_fail(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, E2G_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Fails with errno kept as the cause, after the cleanup. */
static int fail_errno(char *err, int cause, const char *what, const char *path) {
    e2g_fail(err, "%s %s: %s", what, path, strerror(cause));
    errno = cause;
    return -1;
}

int e2g_write_file_atomic(const char *path, const void *data, size_t n, char *err) {
    return e2g_write_file_atomic_stat(path, data, n, NULL, err);
}

int e2g_write_file_atomic_stat(const char *path, const void *data, size_t n, struct stat *written,
                               char *err) {
    size_t len = strlen(path) + 16;
    char *tmp = e2g_xmalloc(len);
    snprintf(tmp, len, "%s.upload.XXXXXX", path);
    /* a unique name, even among servers on other hosts sharing the folder
     * (where process ids repeat: each container's server may be pid 1) */
    int fd = mkostemp(tmp, O_CLOEXEC), rc = 0;
    if (fd < 0) {
        rc = fail_errno(err, errno, "cannot create", tmp);
        free(tmp);
        return rc;
    }
    fchmod(fd, 0644);
    for (const uint8_t *p = data; n && !rc;) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) rc = -1, errno = w < 0 ? errno : ENOSPC;
        else p += w, n -= (size_t)w;
    }
    if (rc || fsync(fd) != 0 || (written && fstat(fd, written) != 0)) {
        int cause = errno;
        close(fd), unlink(tmp);
        rc = fail_errno(err, cause, "cannot write", tmp);
    } else if (close(fd) != 0 || rename(tmp, path) != 0) {
        int cause = errno;
        unlink(tmp);
        rc = fail_errno(err, cause, "cannot install", path);
    } else {
        char *slash = strrchr(tmp, '/');
        if (slash) *slash = '\0';
        int dfd = open(slash ? (slash == tmp ? "/" : tmp) : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) fsync(dfd), close(dfd);
    }
    free(tmp);
    return rc;
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

uint64_t e2g_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t e2g_splitmix64(uint64_t *state) { return e2g_mix64(*state += 0x9E3779B97F4A7C15ull); }

double e2g_uniform01(uint64_t *state) { return (e2g_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0); }
