/* common.h — error reporting, logging and small helpers shared by every
 * engine file.  Recoverable errors are a -1 return plus a message written
 * into a caller-supplied buffer of E2G_ERR_LEN bytes; abort() is only for
 * broken invariants (a bug), never for bad input. */
#ifndef E2G_COMMON_H
#define E2G_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define E2G_ERR_LEN 256

/* Writes a printf-style message into err (may be NULL) and returns -1, so a
 * failing path reads `return e2g_fail(err, "bad %s", what);`. */
int e2g_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that aborts on failure for internal scratch; sizes coming from
 * user input are checked by the caller before they reach it. */
void *e2g_xmalloc(size_t n);
void *e2g_xcalloc(size_t count, size_t n);

/* Checked multiply for sizes derived from untrusted shapes: returns -1 on
 * overflow. */
int e2g_mul_size(size_t a, size_t b, size_t *out);

/* Writes n bytes to path so that a crash leaves the old file or the new
 * one, never a torn one: a unique temp file PATH.upload.XXXXXX (mode 0644),
 * fsync, rename over path, fsync of the folder.  On failure nothing is left
 * behind, err says why and errno is the cause (ENOSPC on a full disk). */
int e2g_write_file_atomic(const char *path, const void *data, size_t n, char *err);
/* The same, and *written (when not NULL) is the new file's stat, taken
 * before the rename: its device, inode, size and mtime tell it from any
 * file that replaces it later. */
struct stat;
int e2g_write_file_atomic_stat(const char *path, const void *data, size_t n, struct stat *written,
                               char *err);

/* The source index in [0, n) of position i (any int, n >= 1) under
 * PyTorch 'reflect' padding: mirrored about the edges without repeating
 * them (-1 → 1, n → n−2), continued with period 2(n−1) past one
 * reflection (numpy's 'reflect'); 0 when n is 1.  Inline: convolution
 * padding calls it per pixel, nearly always within one reflection. */
static inline int e2g_reflect_index(int i, int n) {
    if (i >= 0 && i < n) return i;
    if (n <= 1) return 0;
    if (i < 0 && i > -n) return -i;
    int64_t period = 2 * ((int64_t)n - 1), m = i;
    if (m >= n && m <= period) return (int)(period - m);
    m %= period;
    if (m < 0) m += period;
    return (int)(m < n ? m : period - m);
}

/* SplitMix64: the engine's deterministic random numbers (weight init,
 * k-means++ seeding, dataset shuffles).  e2g_mix64 is its finaliser,
 * e2g_splitmix64 advances *state and returns the next number,
 * e2g_uniform01 the next double in [0, 1). */
uint64_t e2g_mix64(uint64_t z);
uint64_t e2g_splitmix64(uint64_t *state);
double e2g_uniform01(uint64_t *state);

/* Number of worker threads the engine uses (OpenMP + oneDNN). 0 = all cores. */
void e2g_set_threads(int n);
int e2g_get_threads(void);

#define E2G_ASSERT(cond)                                                        \
    do {                                                                        \
        if (!(cond)) e2g_assert_failed(#cond, __FILE__, __LINE__);              \
    } while (0)
void e2g_assert_failed(const char *cond, const char *file, int line) __attribute__((noreturn));

#endif
