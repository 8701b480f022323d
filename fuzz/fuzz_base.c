/* fuzz_base.c — fixtures of the fuzz targets (see fuzz_base.h). */
#include "fuzz_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "common.h"

const e2g_model *fuzz_base(void) {
    static e2g_model *base;
    if (!base) {
        static const char *const names[] = {"base-a", "base-b"};
        e2g_gen_config cfg = {.ngf = 8, .ctx_tokens = 4, .n_concepts = 2, .unet_skips = 1, .residual_out = 1};
        base = e2g_model_new(&cfg, names, 0, 1);
        memset(base->sha256, 'a', 64); /* adapters name this base by it */
        base->sha256[64] = '\0';
    }
    return base;
}

const char *fuzz_dir(void) {
    static char dir[512];
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/e2g-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror(dir);
            abort();
        }
    }
    return dir;
}

void fuzz_save_adapter(const char *path, const char *concept, const int *rank) {
    const e2g_model *base = fuzz_base();
    float scale[E2G_N_CRUCIAL];
    for (int l = 0; l < E2G_N_CRUCIAL; l++) scale[l] = 0.5f;
    e2g_lora *lora = e2g_lora_new(&base->cfg, rank, scale);
    char err[E2G_ERR_LEN];
    int rc = e2g_adapter_save(path, base, lora, concept, NULL, err);
    e2g_lora_free(lora);
    if (rc != 0) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
}

void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

uint8_t *fuzz_unframe(const uint8_t *in, size_t n, size_t *size) {
    const uint8_t *nul = memchr(in, 0, n);
    if (!nul) return NULL;
    size_t header = (size_t)(nul - in), data = n - header - 1;
    uint8_t *file = e2g_xmalloc(8 + header + data);
    for (int b = 0; b < 8; b++) file[b] = (uint8_t)((uint64_t)header >> 8 * b);
    memcpy(file + 8, in, header);
    memcpy(file + 8 + header, nul + 1, data);
    *size = 8 + header + data;
    return file;
}

uint8_t *fuzz_frame(const uint8_t *file, size_t n, size_t *size) {
    if (n < 8) return NULL;
    uint64_t header = 0;
    for (int b = 0; b < 8; b++) header |= (uint64_t)file[b] << 8 * b;
    if (header > n - 8) return NULL;
    uint8_t *in = e2g_xmalloc(n - 7);
    memcpy(in, file + 8, header);
    in[header] = 0;
    memcpy(in + header + 1, file + 8 + header, n - 8 - header);
    *size = n - 7;
    return in;
}
