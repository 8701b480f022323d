/* make_seeds.c — writes the generated part of the seed corpus: adapters of
 * the fuzz base (every layer, mixed ranks, one layer) as raw files for
 * fuzz_safetensors and framed for fuzz_adapter.  Usage:
 * fuzz-make-seeds CORPUS_DIR (the folder holding safetensors/ and adapter/). */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "fuzz_base.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    static const char *const names[] = {"all-rank2", "mixed-ranks", "one-layer"};
    for (int k = 0; k < 3; k++) {
        int rank[E2G_N_CRUCIAL] = {0};
        for (int l = 0; l < E2G_N_CRUCIAL; l++) rank[l] = k == 0 ? 2 : k == 1 ? 1 + l % 4 : l == 0;
        char path[1024];
        snprintf(path, sizeof path, "%s/safetensors/%s.safetensors", argv[1], names[k]);
        fuzz_save_adapter(path, names[k], rank);
        FILE *f = fopen(path, "rb");
        if (!f) return perror(path), 1;
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f), framed_n;
        rewind(f);
        uint8_t *file = e2g_xmalloc(n);
        if (fread(file, 1, n, f) != n) return perror(path), 1;
        fclose(f);
        uint8_t *framed = fuzz_frame(file, n, &framed_n);
        snprintf(path, sizeof path, "%s/adapter/%s", argv[1], names[k]);
        fuzz_write(path, framed, framed_n);
        free(framed);
        free(file);
    }
    return 0;
}
