/* fuzz_base.h — fixtures shared by the fuzz targets and their seed tool:
 * a small base model with a fixed SHA-256, a scratch folder, and the
 * framing of adapter files as fuzz inputs (see fuzz_adapter.c). */
#ifndef E2G_FUZZ_BASE_H
#define E2G_FUZZ_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "model_io.h"

/* The base every adapter input is checked against: ngf 8, 4 context
 * tokens, concepts "base-a" and "base-b", seed 1.  Built once; never freed. */
const e2g_model *fuzz_base(void);

/* A private folder under $TMPDIR (or /tmp), made once per process. */
const char *fuzz_dir(void);

/* Saves an adapter of fuzz_base() for `concept` with these per-layer ranks
 * (0: layer absent) and scale 0.5 (lora_alpha = r/2); aborts on failure. */
void fuzz_save_adapter(const char *path, const char *concept, const int *rank);

/* Writes n bytes to path; aborts on failure (a broken fixture, not input). */
void fuzz_write(const char *path, const void *data, size_t n);

/* An adapter input is its safetensors JSON header, one NUL byte, then the
 * data section: the harness supplies the 8-byte header length, so
 * mutations of the header keep a consistent prefix.  fuzz_unframe turns an
 * input into file bytes (malloc'd, *size set; NULL when the input has no
 * NUL); fuzz_frame does the reverse for the seed tool. */
uint8_t *fuzz_unframe(const uint8_t *in, size_t n, size_t *size);
uint8_t *fuzz_frame(const uint8_t *file, size_t n, size_t *size);

#endif
