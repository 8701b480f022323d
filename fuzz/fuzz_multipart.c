/* fuzz_multipart.c — libFuzzer target: a multipart/form-data request as
 * the server reads it.  The input's first line is the Content-Type header,
 * the rest is the body: the boundary parameter is parsed, then the body
 * split into parts, whose fields and data must lie inside the body. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "multipart.h"

#define FUZZ_MAX_PARTS 16 /* as routes.c */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const uint8_t *eol = memchr(data, '\n', n);
    if (!eol) return 0;
    size_t type_len = (size_t)(eol - data);
    char *content_type = e2g_xmalloc(type_len + 1);
    memcpy(content_type, data, type_len);
    content_type[type_len] = '\0';
    const uint8_t *body = eol + 1;
    size_t body_len = n - type_len - 1;
    char boundary[E2G_MULTIPART_BOUNDARY_MAX + 1], err[E2G_ERR_LEN];
    e2g_multipart_part parts[FUZZ_MAX_PARTS];
    if (strlen(content_type) == type_len && e2g_multipart_boundary(content_type, boundary, err) == 0) {
        int np = e2g_multipart_parse(body, body_len, boundary, parts, FUZZ_MAX_PARTS, err);
        for (int i = 0; i < np; i++) {
            const e2g_multipart_part *p = &parts[i];
            if (p->data < body || p->size > body_len || p->data + p->size > body + body_len) abort();
            if (e2g_multipart_find(parts, np, p->name, NULL) == NULL) abort();
        }
    }
    free(content_type);
    return 0;
}
