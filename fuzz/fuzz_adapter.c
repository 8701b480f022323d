/* fuzz_adapter.c — libFuzzer target: an adapter file checked against the
 * base as an upload or the adapter directory's scan does it
 * (e2g_adapter_load): metadata, the PEFT adapter_config JSON (r,
 * lora_alpha, rank_pattern, alpha_pattern), key names, ranks and shapes.
 * The input is framed (fuzz_base.h) so the header's mutations stay
 * parseable as a safetensors prefix and reach the adapter checks. */
#include <stdio.h>
#include <stdlib.h>

#include "adapter.h"
#include "common.h"
#include "fuzz_base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static char path[600];
    const e2g_model *base = fuzz_base();
    if (!path[0]) snprintf(path, sizeof path, "%s/input.safetensors", fuzz_dir());
    size_t size;
    uint8_t *file = fuzz_unframe(data, n, &size);
    if (!file) return 0;
    fuzz_write(path, file, size);
    free(file);
    e2g_adapter *a;
    char err[E2G_ERR_LEN];
    if (e2g_adapter_load(&a, base, path, err) == 0) e2g_adapter_free(a);
    return 0;
}
