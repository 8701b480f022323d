/* multipart.h — a strict, bounds-checked parser of multipart/form-data
 * bodies (RFC 7578 over RFC 2046): the boundary parameter of a
 * Content-Type, then the parts of a complete body held in memory.  Parts
 * point into the caller's body; nothing is copied but the header fields.
 * Anything malformed (no delimiter, a part without a closing delimiter,
 * header lines without CRLF, oversized headers, a part without
 * `Content-Disposition: form-data; name=...`) is an error, never a guess. */
#ifndef E2G_MULTIPART_H
#define E2G_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define E2G_MULTIPART_BOUNDARY_MAX 70 /* RFC 2046 */
#define E2G_MULTIPART_HEADERS_MAX 8192 /* bytes of one part's header section */

typedef struct {
    char name[128];         /* the form field's name */
    char filename[256];     /* "" when the part has none */
    char content_type[128]; /* "" when the part has none */
    const uint8_t *data;    /* into the body; not NUL-terminated */
    size_t size;
} e2g_multipart_part;

/* Reads the boundary parameter (token or quoted-string) of a
 * `multipart/form-data; boundary=...` Content-Type into boundary (at
 * least E2G_MULTIPART_BOUNDARY_MAX + 1 bytes).  -1 with a message when the
 * type is another one, the parameter is missing, repeated or malformed. */
int e2g_multipart_boundary(const char *content_type, char *boundary, char *err);

/* Splits body into at most max_parts parts.  Returns the number of parts,
 * or -1 with a message in err (E2G_ERR_LEN bytes). */
int e2g_multipart_parse(const uint8_t *body, size_t n, const char *boundary,
                        e2g_multipart_part *parts, int max_parts, char *err);

/* The first part named `name`, or NULL; *count (may be NULL) gets how many
 * parts have that name. */
const e2g_multipart_part *e2g_multipart_find(const e2g_multipart_part *parts, int n,
                                             const char *name, int *count);

#endif
