/* testutil.h — helpers shared by the Check suites: loading the PyTorch
 * reference tensors written by the tests/refs scripts, layout conversion, and
 * comparison with a stated tolerance that prints the first mismatches. */
#ifndef E2G_TESTUTIL_H
#define E2G_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include "safetensors.h"

/* Test memory: zeroed blocks a test keeps until its process ends (Check
 * runs each test in a child process), freed together at exit, so tests pass
 * their buffers around without freeing each one.  ref_tensor and the
 * layout conversions return test memory too. */
void *test_alloc(size_t bytes);

/* Opens $E2G_REFS/<name>.safetensors; fails the current test if missing. */
e2g_st_file *ref_open(const char *name);
/* A reference tensor converted to a float array in test memory; *numel gets its
 * element count when numel is non-NULL.  Fails the test if absent. */
float *ref_tensor(const e2g_st_file *f, const char *name, size_t *numel);
/* An integer from the reference file's metadata; fails the test if absent. */
int ref_meta_int(const e2g_st_file *f, const char *key);
double ref_meta_double(const e2g_st_file *f, const char *key);

/* Layout conversions between PyTorch's NCHW and the engine's NHWC (test memory). */
float *nchw_to_nhwc(const float *x, int n, int c, int h, int w);
float *nhwc_to_nchw(const float *x, int n, int c, int h, int w);

/* Max |got-want| / max|want|: the relative error used by every tolerance
 * in the tests (absolute when the reference is all zeros, as some
 * gradients are in theory).  Prints `what`, the max error and the first few
 * mismatches beyond tol to stderr. */
double rel_error(const char *what, const float *got, const float *want, size_t n, double tol);

/* Paths from the environment that ctest sets. */
const char *test_bin(void);    /* the e2gan CLI */
const char *test_source(void); /* the source tree */

/* Runs a Check suite and returns the process exit status (0 when every
 * test passed). */
typedef struct Suite Suite;
int run_suite(Suite *s);

/* The CRC-32 of PNG chunks (ISO 3309), for tests that craft PNG headers. */
uint32_t png_crc32(const uint8_t *p, size_t n);

/* Uniform random floats in [-1, 1) from a fixed seed (xorshift). */
void fill_random(float *x, size_t n, unsigned seed);

#endif
