/* multipart.c — multipart/form-data, strictly (see multipart.h).  The
 * parser works on the complete body (the HTTP layer has already bounded
 * its size), finds each delimiter "CRLF--boundary" with memmem, and reads
 * each part's header lines one at a time with explicit bounds. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "multipart.h"

static int is_tchar(int c) {
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ows(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

/* Reads one `; name=value` parameter at *p (value a token or a quoted
 * string with backslash escapes), lower-casing the name.  Returns 1 when
 * one was read, 0 at the end of the text, -1 when malformed or too long. */
static int next_param(const char **pp, const char *end, char *name, size_t name_len, char *val,
                      size_t val_len) {
    const char *p = skip_ows(*pp, end);
    if (p == end) return 0;
    if (*p != ';') return -1;
    p = skip_ows(p + 1, end);
    size_t n = 0;
    while (p < end && is_tchar((unsigned char)*p)) {
        if (n + 1 >= name_len) return -1;
        name[n++] = (char)tolower((unsigned char)*p++);
    }
    name[n] = '\0';
    if (n == 0 || p == end || *p != '=') return -1;
    p++;
    n = 0;
    if (p < end && *p == '"') {
        p++;
        for (;;) {
            if (p == end) return -1;
            char c = *p++;
            if (c == '"') break;
            if (c == '\\') {
                if (p == end) return -1;
                c = *p++;
            }
            if ((unsigned char)c < 0x20 && c != '\t') return -1;
            if (n + 1 >= val_len) return -1;
            val[n++] = c;
        }
    } else {
        while (p < end && is_tchar((unsigned char)*p)) {
            if (n + 1 >= val_len) return -1;
            val[n++] = *p++;
        }
        if (n == 0) return -1;
    }
    val[n] = '\0';
    *pp = p;
    return 1;
}

/* RFC 2046 bchars, and no trailing space. */
static int boundary_ok(const char *b) {
    size_t n = strlen(b);
    if (n == 0 || n > E2G_MULTIPART_BOUNDARY_MAX || b[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)b[i]) && !strchr("'()+_,-./:=? ", b[i])) return 0;
    return 1;
}

int e2g_multipart_boundary(const char *content_type, char *boundary, char *err) {
    static const char type[] = "multipart/form-data";
    const char *p = content_type, *end = content_type + strlen(content_type);
    p = skip_ows(p, end);
    if ((size_t)(end - p) < sizeof type - 1 || strncasecmp(p, type, sizeof type - 1) != 0)
        return e2g_fail(err, "not multipart/form-data");
    p += sizeof type - 1;
    if (p < end && *p != ';' && *p != ' ' && *p != '\t') return e2g_fail(err, "not multipart/form-data");
    int found = 0;
    char name[64], val[E2G_MULTIPART_BOUNDARY_MAX + 2];
    for (;;) {
        int r = next_param(&p, end, name, sizeof name, val, sizeof val);
        if (r < 0) return e2g_fail(err, "malformed Content-Type parameters");
        if (r == 0) break;
        if (strcmp(name, "boundary") != 0) continue;
        if (found++) return e2g_fail(err, "boundary given twice");
        if (!boundary_ok(val))
            return e2g_fail(err, "boundary must be 1..70 characters of A-Za-z0-9'()+_,-./:=? ");
        strcpy(boundary, val);
    }
    if (!found) return e2g_fail(err, "multipart/form-data without a boundary parameter");
    return 0;
}

/* Copies at most cap-1 bytes of s (length n) into dst; -1 if it is longer. */
static int copy_field(char *dst, size_t cap, const char *s, size_t n) {
    if (n >= cap) return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* Content-Disposition: form-data; name="..."; filename="..." */
static int parse_disposition(e2g_multipart_part *part, const char *v, const char *end, char *err) {
    static const char fd[] = "form-data";
    v = skip_ows(v, end);
    if ((size_t)(end - v) < sizeof fd - 1 || strncasecmp(v, fd, sizeof fd - 1) != 0 ||
        (v + sizeof fd - 1 < end && is_tchar((unsigned char)v[sizeof fd - 1])))
        return e2g_fail(err, "a part's Content-Disposition is not form-data");
    const char *p = v + sizeof fd - 1;
    int have_name = 0;
    char name[32], val[256];
    for (;;) {
        int r = next_param(&p, end, name, sizeof name, val, sizeof val);
        if (r < 0) return e2g_fail(err, "malformed Content-Disposition parameters");
        if (r == 0) break;
        if (strcmp(name, "name") == 0) {
            if (have_name++ || copy_field(part->name, sizeof part->name, val, strlen(val)) != 0)
                return e2g_fail(err, "bad or repeated field name");
        } else if (strcmp(name, "filename") == 0) {
            if (copy_field(part->filename, sizeof part->filename, val, strlen(val)) != 0)
                return e2g_fail(err, "filename too long");
        }
    }
    if (!have_name || !part->name[0]) return e2g_fail(err, "a part has no field name");
    return 0;
}

/* Reads the header section starting at body[pos] up to and including the
 * empty line; *pos moves past it. */
static int parse_part_headers(e2g_multipart_part *part, const uint8_t *body, size_t n, size_t *pos,
                              char *err) {
    size_t p = *pos, limit = n - p > E2G_MULTIPART_HEADERS_MAX ? p + E2G_MULTIPART_HEADERS_MAX : n;
    int have_disposition = 0;
    for (;;) {
        const uint8_t *crlf = p < limit ? memmem(body + p, limit - p, "\r\n", 2) : NULL;
        if (!crlf) return e2g_fail(err, "a part's headers are unterminated or longer than %d bytes",
                                   E2G_MULTIPART_HEADERS_MAX);
        size_t line_end = (size_t)(crlf - body);
        const char *line = (const char *)body + p, *end = (const char *)body + line_end;
        p = line_end + 2;
        if (line == end) break;
        if (*line == ' ' || *line == '\t') return e2g_fail(err, "folded header lines are not allowed");
        const char *colon = memchr(line, ':', (size_t)(end - line));
        if (!colon || colon == line) return e2g_fail(err, "a part header line has no name");
        for (const char *c = line; c < colon; c++)
            if (!is_tchar((unsigned char)*c)) return e2g_fail(err, "bad part header name");
        for (const char *c = colon + 1; c < end; c++)
            if (*c == '\0' || *c == '\r' || *c == '\n') return e2g_fail(err, "bad part header value");
        size_t name_len = (size_t)(colon - line);
        const char *value = skip_ows(colon + 1, end);
        while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if (name_len == 19 && strncasecmp(line, "Content-Disposition", 19) == 0) {
            if (have_disposition++) return e2g_fail(err, "repeated Content-Disposition");
            if (parse_disposition(part, value, end, err) != 0) return -1;
        } else if (name_len == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
            if (copy_field(part->content_type, sizeof part->content_type, value,
                           (size_t)(end - value)) != 0)
                return e2g_fail(err, "a part's Content-Type is too long");
        }
    }
    if (!have_disposition) return e2g_fail(err, "a part has no Content-Disposition");
    *pos = p;
    return 0;
}

int e2g_multipart_parse(const uint8_t *body, size_t n, const char *boundary,
                        e2g_multipart_part *parts, int max_parts, char *err) {
    char delim[E2G_MULTIPART_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    size_t bl = strlen(boundary);
    if (!boundary_ok(boundary)) return e2g_fail(err, "bad boundary");
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, bl);
    size_t dl = bl + 4;

    /* The first delimiter may open the body (no CRLF before it) or end a
     * preamble. */
    size_t pos;
    if (n >= dl - 2 && memcmp(body, delim + 2, dl - 2) == 0) {
        pos = dl - 2;
    } else {
        const uint8_t *d = n >= dl ? memmem(body, n, delim, dl) : NULL;
        if (!d) return e2g_fail(err, "no multipart delimiter for the boundary");
        pos = (size_t)(d - body) + dl;
    }
    int count = 0;
    for (;;) {
        /* pos is just after "--boundary": "--" closes, otherwise optional
         * transport padding and CRLF open a part. */
        if (n - pos >= 2 && body[pos] == '-' && body[pos + 1] == '-') break;
        while (pos < n && (body[pos] == ' ' || body[pos] == '\t')) pos++;
        if (n - pos < 2 || body[pos] != '\r' || body[pos + 1] != '\n')
            return e2g_fail(err, "a delimiter is not followed by CRLF");
        pos += 2;
        if (count == max_parts) return e2g_fail(err, "more than %d parts", max_parts);
        e2g_multipart_part *part = &parts[count];
        memset(part, 0, sizeof *part);
        if (parse_part_headers(part, body, n, &pos, err) != 0) return -1;
        const uint8_t *d = n - pos >= dl ? memmem(body + pos, n - pos, delim, dl) : NULL;
        if (!d) return e2g_fail(err, "part '%s' has no closing delimiter (truncated body?)", part->name);
        part->data = body + pos;
        part->size = (size_t)(d - (body + pos));
        pos = (size_t)(d - body) + dl;
        count++;
    }
    return count;
}

const e2g_multipart_part *e2g_multipart_find(const e2g_multipart_part *parts, int n,
                                             const char *name, int *count) {
    const e2g_multipart_part *first = NULL;
    int c = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(parts[i].name, name) == 0) {
            if (!first) first = &parts[i];
            c++;
        }
    if (count) *count = c;
    return first;
}
