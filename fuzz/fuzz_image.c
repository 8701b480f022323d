/* fuzz_image.c — libFuzzer target: an uploaded image as the server takes
 * it (server/routes.c): the header probe, the pixel limit, then the
 * decode (JPEG with EXIF orientation, PNG, WebP).  A decode must give the
 * size the probe announced. */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "image.h"

/* Smaller than the server's default (4194304) so that large but legal
 * images do not slow the fuzzer down; the limit's logic is the same. */
#define FUZZ_MAX_PIXELS (1L << 18)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    char err[E2G_ERR_LEN];
    int w, h;
    if (e2g_image_probe(data, n, &w, &h, err) != 0) return 0;
    if ((long long)w * h > FUZZ_MAX_PIXELS) return 0;
    e2g_image im;
    if (e2g_image_decode(&im, data, n, FUZZ_MAX_PIXELS, err) != 0) return 0;
    if (im.width != w || im.height != h) {
        fprintf(stderr, "probe said %dx%d, decode gave %dx%d\n", w, h, im.width, im.height);
        abort();
    }
    e2g_image_free(&im);
    return 0;
}
