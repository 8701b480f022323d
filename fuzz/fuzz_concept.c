/* fuzz_concept.c — libFuzzer target: the `concept` and `strength` of an
 * edit as the server resolves them (e2g_registry_acquire, which parses a
 * name or a blend "a:0.7,b:0.3" and pins adapters, then
 * e2g_request_resolve).  The registry serves the base's two concepts and
 * two adapters with a one-byte cache, so every use loads and evicts.  The
 * input's first byte is the strength in hundredths (0..2.55, past the
 * 0..2 bound); the rest, up to a NUL, is the spec. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz_base.h"
#include "registry.h"

/* Adapters "alpha" (every crucial layer, rank 2) and "beta" (rank 1 on the
 * first layer) in the fuzz folder, and a registry over them. */
static e2g_registry *open_registry(void) {
    char err[E2G_ERR_LEN], path[700];
    int alpha[E2G_N_CRUCIAL], beta[E2G_N_CRUCIAL] = {1};
    for (int l = 0; l < E2G_N_CRUCIAL; l++) alpha[l] = 2;
    snprintf(path, sizeof path, "%s/alpha.safetensors", fuzz_dir());
    fuzz_save_adapter(path, "alpha", alpha);
    snprintf(path, sizeof path, "%s/beta.safetensors", fuzz_dir());
    fuzz_save_adapter(path, "beta", beta);
    e2g_registry *r;
    if (e2g_registry_open(&r, fuzz_base(), fuzz_dir(), 1, err) != 0) {
        fprintf(stderr, "fuzz_concept: %s\n", err);
        abort();
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static e2g_registry *registry;
    if (!registry) registry = open_registry();
    if (n < 1 || n > 600) return 0;
    char spec[600];
    memcpy(spec, data + 1, n - 1);
    spec[n - 1] = '\0';
    e2g_request req;
    char err[E2G_ERR_LEN];
    if (e2g_registry_acquire(registry, &req, spec, data[0] / 100.0f, err) == 0) {
        if (req.edit.n_terms > E2G_MAX_TERMS || req.edit.context != req.context) abort();
        e2g_registry_release(registry, &req);
    }
    return 0;
}
