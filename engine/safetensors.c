/* safetensors.c — the safetensors reader and writer (docs/architecture.md §4).
 * The reader keeps the whole file in one buffer and validates the header
 * completely (JSON, dtypes, shapes, offsets, contiguity, no trailing bytes)
 * before any tensor is handed out; a tensor's data points into that buffer.
 * The writer owns copies of its tensors, already in their stored dtype, and
 * writes the file through a temporary one so a failed save never leaves a
 * half-written file under the final name. */
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* Shapes and offsets (int64 in the file, off_t on disk) are held in size_t. */
_Static_assert(SIZE_MAX >= INT64_MAX, "e2gan needs a 64-bit size_t");

/* Room for "[d0,d1,...]" with E2G_ST_MAX_DIMS dims of up to 20 digits. */
#define SHAPE_STR_LEN (E2G_ST_MAX_DIMS * 21 + 3)

typedef struct {
    char *key, *value;
} meta_entry;

struct e2g_st_file {
    uint8_t *buf; /* the whole file */
    size_t size;
    e2g_st_tensor *tensors; /* sorted by data offset */
    int count;
    meta_entry *meta; /* __metadata__, in header order */
    int meta_count;
};

typedef struct {
    char *name;
    e2g_dtype dtype;
    int ndim;
    int64_t shape[E2G_ST_MAX_DIMS];
    uint8_t *bytes; /* little-endian, already in dtype */
    size_t nbytes;
} writer_tensor;

struct e2g_st_writer {
    writer_tensor *tensors; /* in insertion order, which is also data order */
    int count, cap;
    meta_entry *meta; /* in insertion order */
    int meta_count, meta_cap;
};

static const char *dtype_name(e2g_dtype d) {
    switch (d) {
    case E2G_DTYPE_F32: return "F32";
    case E2G_DTYPE_F16: return "F16";
    case E2G_DTYPE_BF16: return "BF16";
    }
    return "?";
}

static size_t dtype_size(e2g_dtype d) { return d == E2G_DTYPE_F32 ? 4 : 2; }

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(e2g_xmalloc(n), s, n);
}

static void format_shape(char out[SHAPE_STR_LEN], int ndim, const int64_t *shape) {
    size_t pos = 0;
    out[pos++] = '[';
    for (int i = 0; i < ndim; i++)
        pos += (size_t)snprintf(out + pos, SHAPE_STR_LEN - pos, "%s%lld", i ? "," : "",
                                (long long)shape[i]);
    snprintf(out + pos, SHAPE_STR_LEN - pos, "]");
}

/* Element count of a shape whose dims are already known to be >= 0;
 * -1 when it (or its byte size) does not fit in size_t. */
static int shape_numel(int ndim, const int64_t *shape, e2g_dtype dtype, size_t *numel,
                       size_t *nbytes) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (e2g_mul_size(n, (size_t)shape[i], &n)) return -1;
    if (e2g_mul_size(n, dtype_size(dtype), nbytes)) return -1;
    *numel = n;
    return 0;
}

/* ---- float16 / bfloat16 ---------------------------------------------------- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float e2g_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | mant << 13); /* inf, nan */
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        /* Subnormal: shift the mantissa up until its leading 1 is the
         * implicit bit, lowering the exponent as we go. */
        exp = 113;
        while (!(mant & 0x400)) {
            mant <<= 1;
            exp--;
        }
        return bits_f32(sign | exp << 23 | (mant & 0x3ff) << 13);
    }
    return bits_f32(sign | (exp + 112) << 23 | mant << 13);
}

/* Round to nearest, ties to even; values from 65520 up become inf, NaN stays
 * a (quiet) NaN with the top of its payload. */
uint16_t e2g_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x3ff);
    if (x >= 0x477ff000) return sign | 0x7c00;
    if (x >= 0x38800000) { /* normal half */
        uint32_t h = ((x >> 23) - 112) << 10 | ((x >> 13) & 0x3ff);
        uint32_t rem = x & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry moves the exponent */
        return sign | (uint16_t)h;
    }
    if (x <= 0x33000000) return sign; /* at most half the smallest subnormal: 0 */
    /* Subnormal half: count units of 2^-24. */
    uint32_t mant = (x & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - (x >> 23);
    uint32_t h = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float e2g_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t e2g_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---- reader ------------------------------------------------------------------ */

static uint64_t load_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* The checks on the file size and the 8-byte length prefix (read only when
 * the file has 8 bytes), shared by e2g_st_open, which runs them before
 * reading the rest of the file, and e2g_st_parse. */
static int check_prefix(const uint8_t *prefix, size_t file_size, uint64_t *header_len, char *err) {
    if (file_size < 8)
        return e2g_fail(err, "file is %zu bytes, shorter than the 8-byte header length", file_size);
    uint64_t n = load_u64le(prefix);
    if (n > E2G_ST_MAX_HEADER)
        return e2g_fail(err, "header length %llu is over the %u-byte limit", (unsigned long long)n,
                        E2G_ST_MAX_HEADER);
    if (n > file_size - 8)
        return e2g_fail(err, "header length %llu runs past the end of the file (%zu bytes)",
                        (unsigned long long)n, file_size);
    *header_len = n;
    return 0;
}

static int parse_metadata(e2g_st_file *f, json_t *meta, char *err) {
    if (!json_is_object(meta)) return e2g_fail(err, "__metadata__ is not an object");
    f->meta = e2g_xcalloc(json_object_size(meta), sizeof(meta_entry));
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value))
            return e2g_fail(err, "__metadata__ value '%s' is not a string", key);
        f->meta[f->meta_count].key = xstrdup(key);
        f->meta[f->meta_count++].value = xstrdup(json_string_value(value));
    }
    return 0;
}

/* Parses one header entry into t (t->name is set first, so the caller's
 * cleanup frees it on failure) and checks it against the data section. */
static int parse_tensor(e2g_st_tensor *t, const char *name, json_t *entry, const uint8_t *data,
                        size_t data_size, char *err) {
    t->name = xstrdup(name);
    if (!json_is_object(entry)) return e2g_fail(err, "tensor '%s': entry is not an object", name);
    const char *field;
    json_t *value;
    json_object_foreach(entry, field, value) {
        if (strcmp(field, "dtype") && strcmp(field, "shape") && strcmp(field, "data_offsets"))
            return e2g_fail(err, "tensor '%s': unknown field '%s'", name, field);
    }

    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype)) return e2g_fail(err, "tensor '%s': missing or non-string dtype", name);
    const char *ds = json_string_value(dtype);
    if (!strcmp(ds, "F32")) t->dtype = E2G_DTYPE_F32;
    else if (!strcmp(ds, "F16")) t->dtype = E2G_DTYPE_F16;
    else if (!strcmp(ds, "BF16")) t->dtype = E2G_DTYPE_BF16;
    else return e2g_fail(err, "tensor '%s': unknown dtype '%s' (F32, F16, BF16 accepted)", name, ds);

    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape)) return e2g_fail(err, "tensor '%s': missing or non-array shape", name);
    if (json_array_size(shape) > E2G_ST_MAX_DIMS)
        return e2g_fail(err, "tensor '%s': shape has %zu dims, more than %d", name,
                        json_array_size(shape), E2G_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        json_t *dim = json_array_get(shape, (size_t)i);
        if (!json_is_integer(dim)) return e2g_fail(err, "tensor '%s': shape[%d] is not an integer", name, i);
        if (json_integer_value(dim) < 0)
            return e2g_fail(err, "tensor '%s': shape[%d] is negative (%lld)", name, i,
                            (long long)json_integer_value(dim));
        t->shape[i] = json_integer_value(dim);
    }
    char shape_str[SHAPE_STR_LEN];
    format_shape(shape_str, t->ndim, t->shape);
    if (shape_numel(t->ndim, t->shape, t->dtype, &t->numel, &t->nbytes))
        return e2g_fail(err, "tensor '%s': shape %s overflows", name, shape_str);

    json_t *offsets = json_object_get(entry, "data_offsets");
    json_t *jb = json_array_get(offsets, 0), *je = json_array_get(offsets, 1);
    if (json_array_size(offsets) != 2 || !json_is_integer(jb) || !json_is_integer(je) ||
        json_integer_value(jb) < 0 || json_integer_value(je) < 0)
        return e2g_fail(err, "tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                        name);
    long long begin = json_integer_value(jb), end = json_integer_value(je);
    if (begin > end)
        return e2g_fail(err, "tensor '%s': data_offsets [%lld, %lld] end before they begin", name,
                        begin, end);
    if ((uint64_t)end > data_size)
        return e2g_fail(err, "tensor '%s': data_offsets [%lld, %lld] run past the data section (%zu bytes)",
                        name, begin, end, data_size);
    if ((size_t)(end - begin) != t->nbytes)
        return e2g_fail(err, "tensor '%s': data_offsets [%lld, %lld] do not match shape %s x %s = %zu bytes",
                        name, begin, end, shape_str, dtype_name(t->dtype), t->nbytes);
    t->data = data + begin;
    return 0;
}

/* Data order; ties (zero-size tensors) broken by size, then by the unique name. */
static int cmp_offset(const void *pa, const void *pb) {
    const e2g_st_tensor *a = pa, *b = pb;
    if (a->data != b->data) return a->data < b->data ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* With the tensors sorted by offset, each must begin where the previous one
 * ended, the first at 0, and the last must end at the end of the file. */
static int check_layout(const e2g_st_file *f, const uint8_t *data, size_t data_size, char *err) {
    size_t pos = 0;
    for (int i = 0; i < f->count; i++) {
        const e2g_st_tensor *t = &f->tensors[i];
        size_t begin = (size_t)(t->data - data);
        if (begin < pos) {
            const e2g_st_tensor *p = &f->tensors[i - 1];
            size_t pbegin = (size_t)(p->data - data);
            return e2g_fail(err, "tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap", p->name,
                            pbegin, pbegin + p->nbytes, t->name, begin, begin + t->nbytes);
        }
        if (begin > pos) {
            if (i == 0)
                return e2g_fail(err, "gap before the first tensor '%s', which begins at %zu", t->name,
                                begin);
            return e2g_fail(err, "gap between tensor '%s' (ends at %zu) and '%s' (begins at %zu)",
                            f->tensors[i - 1].name, pos, t->name, begin);
        }
        pos = begin + t->nbytes;
    }
    if (pos != data_size)
        return e2g_fail(err, "%zu trailing bytes after the last tensor (data ends at %zu of %zu)",
                        data_size - pos, pos, data_size);
    return 0;
}

int e2g_st_parse(e2g_st_file **out, uint8_t *buf, size_t size, char *err) {
    *out = NULL;
    e2g_st_file *f = e2g_xcalloc(1, sizeof *f);
    f->buf = buf;
    f->size = size;
    json_t *root = NULL;
    uint64_t header_len = 0;
    if (check_prefix(buf, size, &header_len, err)) goto err;

    json_error_t jerr;
    root = json_loadb((const char *)buf + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        e2g_fail(err, "header is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                 jerr.column);
        goto err;
    }
    if (!json_is_object(root)) {
        e2g_fail(err, "header is not a JSON object");
        goto err;
    }

    const uint8_t *data = buf + 8 + header_len;
    size_t data_size = size - 8 - (size_t)header_len;
    f->tensors = e2g_xcalloc(json_object_size(root), sizeof(e2g_st_tensor));
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (!strcmp(key, "__metadata__")) {
            if (parse_metadata(f, value, err)) goto err;
        } else if (parse_tensor(&f->tensors[f->count++], key, value, data, data_size, err)) {
            goto err;
        }
    }
    qsort(f->tensors, (size_t)f->count, sizeof(e2g_st_tensor), cmp_offset);
    if (check_layout(f, data, data_size, err)) goto err;

    json_decref(root);
    *out = f;
    return 0;
err:
    json_decref(root);
    e2g_st_close(f);
    return -1;
}

int e2g_st_open(e2g_st_file **out, const char *path, char *err) {
    *out = NULL;
    uint8_t *buf = NULL;
    char msg[E2G_ERR_LEN];
    FILE *fp = fopen(path, "rb");
    if (!fp) return e2g_fail(err, "cannot open '%s': %s", path, strerror(errno));

    struct stat st;
    if (fstat(fileno(fp), &st)) {
        e2g_fail(err, "cannot stat '%s': %s", path, strerror(errno));
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        e2g_fail(err, "'%s' is not a regular file", path);
        goto err;
    }
    size_t size = (size_t)st.st_size;
    uint8_t prefix[8];
    uint64_t header_len = 0;
    if (size >= 8 && fread(prefix, 1, 8, fp) != 8) {
        e2g_fail(err, "cannot read '%s': %s", path, ferror(fp) ? strerror(errno) : "file shrank");
        goto err;
    }
    if (check_prefix(prefix, size, &header_len, msg)) {
        e2g_fail(err, "%s: %s", path, msg);
        goto err;
    }

    buf = malloc(size);
    if (!buf) {
        e2g_fail(err, "%s: out of memory for %zu bytes", path, size);
        goto err;
    }
    memcpy(buf, prefix, 8);
    if (fread(buf + 8, 1, size - 8, fp) != size - 8) {
        e2g_fail(err, "cannot read '%s': %s", path, ferror(fp) ? strerror(errno) : "file shrank");
        goto err;
    }
    fclose(fp);
    if (e2g_st_parse(out, buf, size, msg)) return e2g_fail(err, "%s: %s", path, msg);
    return 0;
err:
    free(buf);
    fclose(fp);
    return -1;
}

void e2g_st_close(e2g_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->buf);
    free(f);
}

int e2g_st_count(const e2g_st_file *f) { return f->count; }

const e2g_st_tensor *e2g_st_at(const e2g_st_file *f, int i) {
    return i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

/* A linear scan: files hold at most a few hundred tensors. */
const e2g_st_tensor *e2g_st_find(const e2g_st_file *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *e2g_st_meta(const e2g_st_file *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

int e2g_st_meta_count(const e2g_st_file *f) { return f->meta_count; }

const char *e2g_st_meta_key(const e2g_st_file *f, int i) {
    return i >= 0 && i < f->meta_count ? f->meta[i].key : NULL;
}

void e2g_st_sha256(const e2g_st_file *f, char hex[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    E2G_ASSERT(EVP_Digest(f->buf, f->size, md, &len, EVP_sha256(), NULL) == 1 && len == 32);
    for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Decodes little-endian bytes, so the data may sit at any alignment. */
void e2g_st_to_f32(const e2g_st_tensor *t, float *dst) {
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case E2G_DTYPE_F32:
            dst[i] = bits_f32((uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                              (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24);
            break;
        case E2G_DTYPE_F16: dst[i] = e2g_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)); break;
        case E2G_DTYPE_BF16: dst[i] = e2g_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)); break;
        }
    }
}

int e2g_st_read_f32(const e2g_st_file *f, const char *name, int ndim, const int64_t *shape,
                    float *dst, char *err) {
    const e2g_st_tensor *t = e2g_st_find(f, name);
    if (!t) return e2g_fail(err, "tensor '%s' is missing", name);
    if (ndim < 0 || ndim > E2G_ST_MAX_DIMS)
        return e2g_fail(err, "tensor '%s': expected rank %d is out of range", name, ndim);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[SHAPE_STR_LEN], want[SHAPE_STR_LEN];
        format_shape(got, t->ndim, t->shape);
        format_shape(want, ndim, shape);
        return e2g_fail(err, "tensor '%s' has shape %s, expected %s", name, got, want);
    }
    e2g_st_to_f32(t, dst);
    return 0;
}

/* ---- writer ------------------------------------------------------------------ */

e2g_st_writer *e2g_st_writer_new(void) { return e2g_xcalloc(1, sizeof(e2g_st_writer)); }

void e2g_st_writer_free(e2g_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->count; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].bytes);
    }
    for (int i = 0; i < w->meta_count; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->tensors);
    free(w->meta);
    free(w);
}

/* Makes room for one more element after `count` in arr (which holds *cap):
 * returns the array, moved or not, or NULL (arr untouched) when out of memory. */
static void *grow(void *arr, int *cap, int count, size_t elem) {
    if (count < *cap) return arr;
    int ncap = *cap ? 2 * *cap : 16;
    void *p = realloc(arr, (size_t)ncap * elem);
    if (p) *cap = ncap;
    return p;
}

/* jansson refuses strings that are not UTF-8; catch them when they are added. */
static int is_utf8(const char *s) {
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

int e2g_st_writer_add(e2g_st_writer *w, const char *name, e2g_dtype dtype, int ndim,
                      const int64_t *shape, const float *data, char *err) {
    if (!name || !*name) return e2g_fail(err, "tensor name is empty");
    if (!strcmp(name, "__metadata__") || !is_utf8(name))
        return e2g_fail(err, "'%s' is not a valid tensor name", name);
    for (int i = 0; i < w->count; i++)
        if (!strcmp(w->tensors[i].name, name)) return e2g_fail(err, "tensor '%s' added twice", name);
    if (dtype != E2G_DTYPE_F32 && dtype != E2G_DTYPE_F16 && dtype != E2G_DTYPE_BF16)
        return e2g_fail(err, "tensor '%s': unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > E2G_ST_MAX_DIMS)
        return e2g_fail(err, "tensor '%s': rank %d is out of range 0..%d", name, ndim, E2G_ST_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return e2g_fail(err, "tensor '%s': shape[%d] is negative", name, i);
    size_t numel, nbytes;
    if (shape_numel(ndim, shape, dtype, &numel, &nbytes))
        return e2g_fail(err, "tensor '%s': shape overflows", name);
    if (numel && !data) return e2g_fail(err, "tensor '%s': no data", name);
    writer_tensor *tensors = grow(w->tensors, &w->cap, w->count, sizeof(writer_tensor));
    if (!tensors) return e2g_fail(err, "tensor '%s': out of memory", name);
    w->tensors = tensors;
    uint8_t *bytes = malloc(nbytes ? nbytes : 1);
    if (!bytes) return e2g_fail(err, "tensor '%s': out of memory for %zu bytes", name, nbytes);

    for (size_t i = 0; i < numel; i++) {
        if (dtype == E2G_DTYPE_F32) {
            uint32_t u = f32_bits(data[i]);
            for (int b = 0; b < 4; b++) bytes[4 * i + b] = (uint8_t)(u >> 8 * b);
        } else {
            uint16_t u = dtype == E2G_DTYPE_F16 ? e2g_f32_to_f16(data[i]) : e2g_f32_to_bf16(data[i]);
            bytes[2 * i] = (uint8_t)u;
            bytes[2 * i + 1] = (uint8_t)(u >> 8);
        }
    }
    writer_tensor *t = &w->tensors[w->count++];
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->bytes = bytes;
    t->nbytes = nbytes;
    return 0;
}

int e2g_st_writer_meta(e2g_st_writer *w, const char *key, const char *value, char *err) {
    if (!key || !value) return e2g_fail(err, "metadata key and value must not be NULL");
    if (!is_utf8(key) || !is_utf8(value))
        return e2g_fail(err, "metadata '%s': key or value is not valid UTF-8", key);
    for (int i = 0; i < w->meta_count; i++)
        if (!strcmp(w->meta[i].key, key)) return e2g_fail(err, "metadata '%s' set twice", key);
    meta_entry *meta = grow(w->meta, &w->meta_cap, w->meta_count, sizeof(meta_entry));
    if (!meta) return e2g_fail(err, "metadata '%s': out of memory", key);
    w->meta = meta;
    w->meta[w->meta_count].key = xstrdup(key);
    w->meta[w->meta_count++].value = xstrdup(value);
    return 0;
}

/* The header JSON: __metadata__ first, then the tensors in insertion order
 * with contiguous offsets.  Returns a malloc'd string, NULL if out of memory. */
static char *build_header(const e2g_st_writer *w) {
    json_t *root = json_object();
    int bad = !root;
    if (!bad && w->meta_count) {
        json_t *meta = json_object();
        bad |= json_object_set_new(root, "__metadata__", meta);
        for (int i = 0; !bad && i < w->meta_count; i++)
            bad |= json_object_set_new(meta, w->meta[i].key, json_string(w->meta[i].value));
    }
    size_t offset = 0;
    for (int i = 0; !bad && i < w->count; i++) {
        const writer_tensor *t = &w->tensors[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) bad |= json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype_name(t->dtype), "shape", shape,
                                  "data_offsets", (json_int_t)offset, (json_int_t)(offset + t->nbytes));
        bad |= json_object_set_new(root, t->name, entry);
        offset += t->nbytes;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(root);
    return text;
}

int e2g_st_writer_save(e2g_st_writer *w, const char *path, char *err) {
    char *header = build_header(w);
    if (!header) return e2g_fail(err, "%s: out of memory building the header", path);
    size_t hlen = strlen(header), padded = (hlen + 7) & ~(size_t)7;
    if (padded > E2G_ST_MAX_HEADER) {
        free(header);
        return e2g_fail(err, "%s: header of %zu bytes is over the %u-byte limit", path, padded,
                        E2G_ST_MAX_HEADER);
    }

    size_t tmp_len = strlen(path) + 32;
    char *tmp = e2g_xmalloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        e2g_fail(err, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        free(header);
        return -1;
    }

    uint8_t prefix[8];
    for (int b = 0; b < 8; b++) prefix[b] = (uint8_t)((uint64_t)padded >> 8 * b);
    int ok = fwrite(prefix, 1, 8, fp) == 8 && fwrite(header, 1, hlen, fp) == hlen &&
             fwrite("       ", 1, padded - hlen, fp) == padded - hlen;
    for (int i = 0; ok && i < w->count; i++)
        ok = fwrite(w->tensors[i].bytes, 1, w->tensors[i].nbytes, fp) == w->tensors[i].nbytes;
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp);
        e2g_fail(err, "cannot write '%s': %s", path, strerror(saved));
    }
    free(tmp);
    free(header);
    return ok ? 0 : -1;
}
