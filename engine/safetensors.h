/* safetensors.h — reader and writer for the safetensors format
 * (docs/architecture.md §4): 8-byte little-endian header length, a JSON header,
 * then the tensors' bytes.  The reader validates everything before any
 * tensor is touched: header ≤ 100 MB, JSON well formed with no duplicate
 * keys, known dtype (F32, F16, BF16), size == prod(shape)·dtype size, offsets
 * in bounds, not overlapping, contiguous, covering the data section with no
 * trailing bytes.  A bad file is an error message, never a crash. */
#ifndef E2G_SAFETENSORS_H
#define E2G_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define E2G_ST_MAX_HEADER (100u * 1000u * 1000u)
#define E2G_ST_MAX_DIMS 8

typedef enum { E2G_DTYPE_F32, E2G_DTYPE_F16, E2G_DTYPE_BF16 } e2g_dtype;

typedef struct {
    char *name;
    e2g_dtype dtype;
    int ndim;
    int64_t shape[E2G_ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data; /* points into the file's buffer */
    size_t nbytes;
} e2g_st_tensor;

typedef struct e2g_st_file e2g_st_file;

/* Reads and validates a whole file.  On success *out owns everything and is
 * released with e2g_st_close(). */
int e2g_st_open(e2g_st_file **out, const char *path, char *err);
/* Validates a file already in memory; takes ownership of buf (malloc'd),
 * also on failure. */
int e2g_st_parse(e2g_st_file **out, uint8_t *buf, size_t size, char *err);
void e2g_st_close(e2g_st_file *f);

int e2g_st_count(const e2g_st_file *f);
const e2g_st_tensor *e2g_st_at(const e2g_st_file *f, int i); /* in file order */
const e2g_st_tensor *e2g_st_find(const e2g_st_file *f, const char *name);
/* A string value of __metadata__, or NULL when absent. */
const char *e2g_st_meta(const e2g_st_file *f, const char *key);
int e2g_st_meta_count(const e2g_st_file *f);
const char *e2g_st_meta_key(const e2g_st_file *f, int i);
/* SHA-256 of the whole file's bytes, as 64 lowercase hex chars + NUL. */
void e2g_st_sha256(const e2g_st_file *f, char hex[65]);

/* Converts a tensor to float32; dst holds t->numel floats. */
void e2g_st_to_f32(const e2g_st_tensor *t, float *dst);
/* Finds `name`, checks its shape equals shape[0..ndim) and converts it into
 * dst.  Returns -1 with a message naming the tensor otherwise. */
int e2g_st_read_f32(const e2g_st_file *f, const char *name, int ndim, const int64_t *shape,
                    float *dst, char *err);

/* Writer: collects tensors (given as float32, stored as `dtype`) and string
 * metadata, then writes the file atomically (temp file, fsync, rename). */
typedef struct e2g_st_writer e2g_st_writer;
e2g_st_writer *e2g_st_writer_new(void);
int e2g_st_writer_add(e2g_st_writer *w, const char *name, e2g_dtype dtype, int ndim,
                      const int64_t *shape, const float *data, char *err);
int e2g_st_writer_meta(e2g_st_writer *w, const char *key, const char *value, char *err);
int e2g_st_writer_save(e2g_st_writer *w, const char *path, char *err);
void e2g_st_writer_free(e2g_st_writer *w);

/* float <-> half / bfloat16 conversions (round to nearest even). */
float e2g_f16_to_f32(uint16_t h);
uint16_t e2g_f32_to_f16(float f);
float e2g_bf16_to_f32(uint16_t h);
uint16_t e2g_f32_to_bf16(float f);

#endif
