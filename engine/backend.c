/* backend.c — the device-mode parser and lookups over the registry (see
 * backend.h); the list itself is in backend_registry.c. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *const mode_names[] = {"auto", "cpu", "cuda"};

int e2g_device_mode_parse(const char *s, e2g_device_mode *out, char *err) {
    if (!s || !*s) s = getenv("E2GAN_DEVICE");
    if (!s || !*s) s = "auto";
    for (int i = 0; i < 3; i++)
        if (strcmp(s, mode_names[i]) == 0) return *out = (e2g_device_mode)i, 0;
    return e2g_fail(err, "unknown device '%s' (auto, cpu or cuda)", s);
}

const char *e2g_device_mode_name(e2g_device_mode mode) { return mode_names[mode]; }

const e2g_backend *e2g_backend_find(const char *name) {
    for (int i = 0; i < e2g_backend_count(); i++)
        if (strcmp(e2g_backend_get(i)->name, name) == 0) return e2g_backend_get(i);
    return NULL;
}

int e2g_backend_candidates(e2g_device_mode mode, const e2g_backend **out, int max, char *why) {
    if (mode == E2G_DEVICE_CPU) {
        snprintf(why, E2G_ERR_LEN, "the CPU was asked for (device cpu)");
        return 0;
    }
    int n = 0;
    for (int i = 1; i < e2g_backend_count() && n < max; i++) {
        const e2g_backend *b = e2g_backend_get(i);
        if (mode == E2G_DEVICE_AUTO || strcmp(b->name, e2g_device_mode_name(mode)) == 0) out[n++] = b;
    }
    if (!n)
        snprintf(why, E2G_ERR_LEN, "this build has no CUDA (nvcc or cuDNN missing at configure time)");
    return n;
}
