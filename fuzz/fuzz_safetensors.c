/* fuzz_safetensors.c — libFuzzer target: a safetensors file (base models,
 * adapters, uploads) through the validating reader, then every tensor
 * converted and every metadata entry read, as the loaders do. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    uint8_t *copy = e2g_xmalloc(n ? n : 1);
    memcpy(copy, data, n);
    e2g_st_file *f;
    char err[E2G_ERR_LEN];
    if (e2g_st_parse(&f, copy, n, err) != 0) return 0; /* the reader freed copy */
    for (int i = 0; i < e2g_st_count(f); i++) {
        const e2g_st_tensor *t = e2g_st_at(f, i);
        if (e2g_st_find(f, t->name) != t) abort();
        float *values = e2g_xmalloc((t->numel ? t->numel : 1) * sizeof(float));
        e2g_st_to_f32(t, values);
        free(values);
    }
    for (int i = 0; i < e2g_st_meta_count(f); i++)
        if (!e2g_st_meta(f, e2g_st_meta_key(f, i))) abort();
    char sha[65];
    e2g_st_sha256(f, sha);
    e2g_st_close(f);
    return 0;
}
