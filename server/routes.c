/* routes.c — the HTTP API of openapi.yaml: one table of routes, each with
 * the checks made on its headers before a body byte is read (method, admin
 * token, readiness, Content-Type) and its handler.  Every error is a
 * problem+json answer; nothing a client sends can crash the process. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "log.h"
#include "multipart.h"
#include "precision.h"
#include "routes.h"

enum {
    R_PARAM = 1, /* path is a prefix; the rest is the {name} parameter */
    R_BODY = 2,  /* the handler reads the body */
    R_ADMIN = 4, /* Bearer token */
    R_MODEL = 8, /* needs the model and registry loaded */
    R_READY = 16 /* takes new edits: loaded and not shutting down */
};

typedef struct route route;
typedef void (*route_fn)(e2g_service *svc, e2g_http_request *rq, const char *param);
struct route {
    const char *method;
    const char *path;
    unsigned flags;
    e2g_route_label label;
    route_fn begin;  /* header checks of its own; may answer (NULL: none) */
    route_fn finish; /* the handler */
};

static void begin_edit(e2g_service *svc, e2g_http_request *rq, const char *param);
static void finish_edit(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_concepts(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_concept(e2g_service *svc, e2g_http_request *rq, const char *param);
static void begin_put_concept(e2g_service *svc, e2g_http_request *rq, const char *param);
static void put_concept(e2g_service *svc, e2g_http_request *rq, const char *param);
static void delete_concept(e2g_service *svc, e2g_http_request *rq, const char *param);
static void begin_post_finetune(e2g_service *svc, e2g_http_request *rq, const char *param);
static void post_finetune(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_finetunes(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_finetune(e2g_service *svc, e2g_http_request *rq, const char *param);
static void delete_finetune(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_healthz(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_readyz(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_metrics(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_openapi(e2g_service *svc, e2g_http_request *rq, const char *param);
static void get_static(e2g_service *svc, e2g_http_request *rq, const char *param);

static const route routes[] = {
    {"POST", "/v1/edits", R_BODY | R_READY, E2G_ROUTE_EDITS, begin_edit, finish_edit},
    {"GET", "/v1/concepts", R_MODEL, E2G_ROUTE_CONCEPTS, NULL, get_concepts},
    {"GET", "/v1/concepts/", R_PARAM | R_MODEL, E2G_ROUTE_CONCEPT, NULL, get_concept},
    {"PUT", "/v1/concepts/", R_PARAM | R_BODY | R_ADMIN | R_MODEL, E2G_ROUTE_CONCEPT,
     begin_put_concept, put_concept},
    {"DELETE", "/v1/concepts/", R_PARAM | R_ADMIN | R_MODEL, E2G_ROUTE_CONCEPT, NULL,
     delete_concept},
    {"POST", "/v1/finetunes", R_BODY | R_ADMIN | R_MODEL, E2G_ROUTE_FINETUNES, begin_post_finetune,
     post_finetune},
    {"GET", "/v1/finetunes", R_ADMIN | R_MODEL, E2G_ROUTE_FINETUNES, NULL, get_finetunes},
    {"GET", "/v1/finetunes/", R_PARAM | R_ADMIN | R_MODEL, E2G_ROUTE_FINETUNES, NULL, get_finetune},
    {"DELETE", "/v1/finetunes/", R_PARAM | R_ADMIN | R_MODEL, E2G_ROUTE_FINETUNES, NULL,
     delete_finetune},
    {"GET", "/healthz", 0, E2G_ROUTE_HEALTHZ, NULL, get_healthz},
    {"GET", "/readyz", 0, E2G_ROUTE_READYZ, NULL, get_readyz},
    {"GET", "/metrics", 0, E2G_ROUTE_METRICS, NULL, get_metrics},
    {"GET", "/openapi.yaml", 0, E2G_ROUTE_OPENAPI, NULL, get_openapi},
};
#define N_ROUTES (int)(sizeof routes / sizeof routes[0])

static const route static_route = {"GET", "/", 0, E2G_ROUTE_STATIC, NULL, get_static};

static const char exposed_headers[] =
    "X-Request-Id, X-E2gan-Concept, X-E2gan-Strength, X-E2gan-Batch-Size, Server-Timing, Retry-After, "
    "Location";

static int path_matches(const route *r, const char *path) {
    if (r->flags & R_PARAM) return strncmp(path, r->path, strlen(r->path)) == 0;
    return strcmp(path, r->path) == 0;
}

/* "GET, HEAD, PUT, DELETE, OPTIONS" for the routes whose path matches. */
static void allowed_methods(const char *path, char *out, size_t len) {
    out[0] = '\0';
    for (int i = 0; i < N_ROUTES; i++) {
        if (!path_matches(&routes[i], path)) continue;
        snprintf(out + strlen(out), len - strlen(out), "%s%s", routes[i].method,
                 strcmp(routes[i].method, "GET") == 0 ? ", HEAD, " : ", ");
    }
    snprintf(out + strlen(out), len - strlen(out), "OPTIONS");
}

static void unavailable(e2g_service *svc, e2g_http_request *rq, const char *slug, const char *title,
                        const char *detail) {
    char seconds[24];
    snprintf(seconds, sizeof seconds, "%lld", svc->cfg->retry_after_s);
    e2g_response_problem(rq, 503, slug, title, "%s", detail);
    e2g_response_header(&rq->resp, "Retry-After", seconds);
}

/* Fails the request with 503 unless the service is in a state the route
 * accepts.  Returns 0 when it may go on. */
static int check_state(e2g_service *svc, e2g_http_request *rq, unsigned flags) {
    int state = atomic_load(&svc->state);
    if (state == E2G_STATE_LOADING && (flags & (R_MODEL | R_READY))) {
        unavailable(svc, rq, "not-ready", "Not ready", "the model is still loading");
        return -1;
    }
    if (state == E2G_STATE_STOPPING && (flags & R_READY)) {
        unavailable(svc, rq, "shutting-down", "Shutting down", "the server is shutting down");
        return -1;
    }
    return 0;
}

/* Compares in time that depends on the given token's length only, never
 * on where it first differs from the secret. */
static int token_equal(const char *given, const char *secret) {
    size_t n = strlen(given), m = strlen(secret);
    volatile unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(given[i] ^ secret[i % m]);
    return diff == 0;
}

static int check_admin(e2g_service *svc, e2g_http_request *rq) {
    const char *secret = svc->cfg->admin_token;
    if (!secret[0]) {
        e2g_response_problem(rq, 403, "admin-disabled", "Admin routes disabled",
                             "this server has no admin token configured");
        return -1;
    }
    const char *auth = e2g_http_header(rq, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        e2g_response_problem(rq, 401, "unauthorized", "Unauthorized",
                             "this route needs Authorization: Bearer <admin token>");
        e2g_response_header(&rq->resp, "WWW-Authenticate", "Bearer realm=\"e2gan\"");
        return -1;
    }
    const char *token = auth + 7;
    while (*token == ' ') token++;
    if (!token_equal(token, secret)) {
        e2g_response_problem(rq, 401, "unauthorized", "Unauthorized", "the admin token is wrong");
        e2g_response_header(&rq->resp, "WWW-Authenticate",
                            "Bearer realm=\"e2gan\", error=\"invalid_token\"");
        return -1;
    }
    return 0;
}

/* The Access-Control-Allow-Origin value for this request's Origin, or NULL
 * when CORS is off or the origin is not listed. */
static const char *cors_allow(e2g_service *svc, e2g_http_request *rq) {
    const char *list = svc->cfg->cors_origins, *origin = e2g_http_header(rq, "Origin");
    if (!origin || !list[0]) return NULL;
    if (strcmp(list, "*") == 0) return "*";
    size_t on = strlen(origin);
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && *p == ' ') p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (n == on && strncasecmp(p, origin, n) == 0) return origin;
        if (!end) return NULL;
        p = end + 1;
    }
}

void e2g_routes_decorate(e2g_service *svc, e2g_http_request *rq) {
    e2g_response *r = &rq->resp;
    e2g_response_header(r, "X-Content-Type-Options", "nosniff");
    if (rq->route != E2G_ROUTE_STATIC) e2g_response_header(r, "Cache-Control", "no-store");
    const char *list = svc->cfg->cors_origins;
    if (!list[0]) return;
    if (strcmp(list, "*") != 0) e2g_response_header(r, "Vary", "Origin");
    const char *allow = cors_allow(svc, rq);
    if (!allow || rq->route == E2G_ROUTE_PREFLIGHT) return;
    e2g_response_header(r, "Access-Control-Allow-Origin", allow);
    e2g_response_header(r, "Access-Control-Expose-Headers", exposed_headers);
    e2g_response_header(r, "Timing-Allow-Origin", allow);
}

/* OPTIONS: a CORS preflight when Origin is given, else the Allow list. */
static void preflight(e2g_service *svc, e2g_http_request *rq, const char *allow_methods) {
    rq->route = E2G_ROUTE_PREFLIGHT;
    const char *origin = e2g_http_header(rq, "Origin");
    if (origin) {
        const char *allow = cors_allow(svc, rq);
        if (!allow) {
            e2g_response_problem(rq, 403, "origin-not-allowed", "Origin not allowed",
                                 "this server does not allow cross-origin requests from that origin");
            return;
        }
        e2g_response_set(&rq->resp, 204, NULL, NULL, 0);
        e2g_response_header(&rq->resp, "Access-Control-Allow-Origin", allow);
        e2g_response_header(&rq->resp, "Access-Control-Allow-Methods", allow_methods);
        e2g_response_header(&rq->resp, "Access-Control-Allow-Headers",
                            "Content-Type, Authorization, X-Request-Id, Accept");
        e2g_response_header(&rq->resp, "Access-Control-Max-Age", "600");
        return;
    }
    e2g_response_set(&rq->resp, 204, NULL, NULL, 0);
    e2g_response_header(&rq->resp, "Allow", allow_methods);
}

void e2g_routes_begin(e2g_service *svc, e2g_http_request *rq) {
    const char *path = rq->path, *method = rq->method;
    const route *match = NULL;
    int path_known = 0;
    int is_head = strcmp(method, "HEAD") == 0;
    for (int i = 0; i < N_ROUTES && !match; i++) {
        if (!path_matches(&routes[i], path)) continue;
        path_known = 1;
        rq->route = routes[i].label;
        if (strcmp(method, routes[i].method) == 0 || (is_head && strcmp(routes[i].method, "GET") == 0))
            match = &routes[i];
    }
    if (!path_known) {
        int api = strncmp(path, "/v1/", 4) == 0 || strcmp(path, "/v1") == 0;
        if (!api && (strcmp(method, "GET") == 0 || is_head)) {
            match = &static_route;
        } else if (!api && strcmp(method, "OPTIONS") == 0) {
            preflight(svc, rq, "GET, HEAD, OPTIONS");
            return;
        } else {
            e2g_response_problem(rq, 404, "not-found", "Not found", "no route for %s %s", method, path);
            return;
        }
    }
    if (!match) {
        char allow[128];
        allowed_methods(path, allow, sizeof allow);
        if (strcmp(method, "OPTIONS") == 0) {
            preflight(svc, rq, allow);
            return;
        }
        e2g_response_problem(rq, 405, "method-not-allowed", "Method not allowed",
                             "%s does not take %s; allowed: %s", path, method, allow);
        e2g_response_header(&rq->resp, "Allow", allow);
        return;
    }
    rq->route = match->label;
    rq->matched = match;
    if ((match->flags & R_ADMIN) && check_admin(svc, rq) != 0) return;
    if (check_state(svc, rq, match->flags) != 0) return;
    if (match->begin) {
        match->begin(svc, rq, path + strlen(match->path));
        if (rq->resp.status) return;
    }
    rq->body_wanted = (match->flags & R_BODY) != 0;
}

void e2g_routes_finish(e2g_service *svc, e2g_http_request *rq) {
    const route *r = rq->matched;
    /* Readiness may have changed while the body arrived (shutdown). */
    if (check_state(svc, rq, r->flags) != 0) return;
    r->finish(svc, rq, rq->path + strlen(r->path));
}

/* ---- edits ---------------------------------------------------------------- */

static int is_multipart(const char *media) { return strcmp(media, "multipart/form-data") == 0; }

static void begin_edit(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)svc, (void)param;
    const char *ct = e2g_http_header(rq, "Content-Type");
    char media[80], boundary[E2G_MULTIPART_BOUNDARY_MAX + 1], err[E2G_ERR_LEN];
    e2g_http_media_type(ct, media, sizeof media);
    if (is_multipart(media)) {
        if (e2g_multipart_boundary(ct, boundary, err) != 0)
            e2g_response_problem(rq, 400, "bad-request", "Bad multipart Content-Type", "%s", err);
        return;
    }
    char types[128];
    if (e2g_image_format_from_media_type(media) == E2G_IMAGE_UNKNOWN && strcmp(media, "application/octet-stream"))
        e2g_response_problem(rq, 415, "unsupported-media-type", "Unsupported media type",
                             "send %s, application/octet-stream or multipart/form-data (field 'image'), not '%s'",
                             e2g_image_format_list(types, sizeof types, E2G_FORMAT_MEDIA_TYPES, ", "),
                             ct ? ct : "(no Content-Type)");
}

/* The q-value Accept gives `type` (exact, else its type/ *, else * / *), or
 * 0 when no range covers it. */
static double accept_q(const char *accept, const char *type) {
    double exact = -1, group = -1, any = -1;
    size_t slash = strchr(type, '/') - type;
    for (const char *p = accept; *p;) {
        size_t n = strcspn(p, ",");
        char item[128];
        if (n < sizeof item) {
            memcpy(item, p, n);
            item[n] = '\0';
            char range[80];
            e2g_http_media_type(item, range, sizeof range);
            double q = 1;
            const char *qp = strstr(item, ";");
            while (qp) {
                const char *v = qp + 1;
                while (*v == ' ') v++;
                if ((v[0] == 'q' || v[0] == 'Q') && v[1] == '=') q = strtod(v + 2, NULL);
                qp = strchr(v, ';');
            }
            if (!(q >= 0 && q <= 1)) q = 0;
            if (strcmp(range, type) == 0) exact = fmax(exact, q);
            else if (strncmp(range, type, slash + 1) == 0 && strcmp(range + slash + 1, "*") == 0)
                group = fmax(group, q);
            else if (strcmp(range, "*/*") == 0) any = fmax(any, q);
        }
        p += n;
        if (*p == ',') p++;
    }
    double q = exact >= 0 ? exact : group >= 0 ? group : any;
    return q > 0 ? q : 0;
}

/* The output format: ?format, else the Accept header's preference among
 * JPEG, PNG and WebP (a tie keeps the input's format, else the first in that
 * order), else the input's format.  -1 with an answer set. */
static int choose_format(e2g_http_request *rq, const char *format, e2g_image_format input,
                         e2g_image_format *out) {
    char list[128];
    if (format) {
        *out = e2g_image_format_from_name(format);
        if (*out != E2G_IMAGE_UNKNOWN) return 0;
        e2g_response_problem(rq, 400, "bad-request", "Bad format", "format must be %s",
                             e2g_image_format_list(list, sizeof list, E2G_FORMAT_NAMES, " or "));
        return -1;
    }
    *out = input;
    const char *accept = e2g_http_header(rq, "Accept");
    if (!accept || !*accept) return 0;
    double best = accept_q(accept, e2g_image_media_type(input));
    for (e2g_image_format f = E2G_IMAGE_JPEG; f < E2G_IMAGE_UNKNOWN; f++) {
        double q = accept_q(accept, e2g_image_media_type(f));
        if (q > best) best = q, *out = f;
    }
    if (best == 0) {
        e2g_response_problem(rq, 406, "not-acceptable", "Not acceptable", "the result is %s, and Accept allows none",
                             e2g_image_format_list(list, sizeof list, E2G_FORMAT_MEDIA_TYPES, " or "));
        return -1;
    }
    return 0;
}

/* A text form field copied into buf, or NULL when absent; -1 (answered)
 * when too long. */
static int form_field(e2g_http_request *rq, const e2g_multipart_part *parts, int n, const char *name,
                      char *buf, size_t len, const char **out) {
    int count;
    const e2g_multipart_part *p = e2g_multipart_find(parts, n, name, &count);
    if (!p) return 0;
    if (count > 1 || p->size >= len || memchr(p->data, '\0', p->size)) {
        e2g_response_problem(rq, 400, "bad-request", "Bad form field",
                             "form field '%s' is repeated, too long or not text", name);
        return -1;
    }
    memcpy(buf, p->data, p->size);
    buf[p->size] = '\0';
    *out = buf;
    return 0;
}

static int parse_strength(const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 2) return -1;
    *out = (float)v;
    return 0;
}

static int parse_quality(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 100) return -1;
    *out = (int)v;
    return 0;
}

/* The format of an image to be decoded (`what` names it in the answer);
 * 415 unless it is one of e2g_image_formats. */
static int check_image_format(e2g_http_request *rq, const uint8_t *data, size_t n, const char *what,
                              e2g_image_format *format) {
    *format = e2g_image_sniff(data, n);
    if (*format != E2G_IMAGE_UNKNOWN) return 0;
    char labels[128];
    e2g_response_problem(rq, 415, "unsupported-media-type", "Unsupported image", "%s is not a %s", what,
                         e2g_image_format_list(labels, sizeof labels, E2G_FORMAT_LABELS, " or "));
    return -1;
}

/* The header alone says how many pixels decoding would allocate: 422 when
 * it is unreadable, 413 past max_pixels. */
static int check_image_size(e2g_service *svc, e2g_http_request *rq, const uint8_t *data, size_t n,
                            const char *what) {
    char err[E2G_ERR_LEN];
    int w, h;
    if (e2g_image_probe(data, n, &w, &h, err) != 0) {
        e2g_response_problem(rq, 422, "bad-image", "Unreadable image", "%s: %s", what, err);
        return -1;
    }
    if ((long long)w * h > svc->cfg->max_pixels) {
        e2g_response_problem(rq, 413, "too-many-pixels", "Image too large",
                             "%s is %d x %d, %lld pixels; this server takes at most %lld", what, w, h,
                             (long long)w * h, svc->cfg->max_pixels);
        return -1;
    }
    return 0;
}

static void finish_edit(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    const e2g_server_config *cfg = svc->cfg;
    double t0 = e2g_now();
    char err[E2G_ERR_LEN], media[80];
    e2g_http_media_type(e2g_http_header(rq, "Content-Type"), media, sizeof media);
    const uint8_t *data = rq->body;
    size_t n = rq->body_len;
    const char *concept = e2g_http_query(rq, "concept"), *strength_s = e2g_http_query(rq, "strength"),
               *format_s = e2g_http_query(rq, "format"), *quality_s = e2g_http_query(rq, "quality");

    enum { MAX_PARTS = 16 };
    e2g_multipart_part parts[MAX_PARTS];
    char concept_buf[512], strength_buf[32], format_buf[16], quality_buf[16];
    if (is_multipart(media)) {
        char boundary[E2G_MULTIPART_BOUNDARY_MAX + 1];
        if (e2g_multipart_boundary(e2g_http_header(rq, "Content-Type"), boundary, err) != 0) {
            e2g_response_problem(rq, 400, "bad-request", "Bad multipart Content-Type", "%s", err);
            return;
        }
        int np = e2g_multipart_parse(data, n, boundary, parts, MAX_PARTS, err);
        if (np < 0) {
            e2g_response_problem(rq, 400, "bad-request", "Malformed multipart body", "%s", err);
            return;
        }
        int count;
        const e2g_multipart_part *image = e2g_multipart_find(parts, np, "image", &count);
        if (count != 1) {
            e2g_response_problem(rq, 400, "bad-request", "No image field",
                                 "the form needs exactly one field named 'image' (it has %d)", count);
            return;
        }
        if ((!concept && form_field(rq, parts, np, "concept", concept_buf, sizeof concept_buf, &concept)) ||
            (!strength_s && form_field(rq, parts, np, "strength", strength_buf, sizeof strength_buf, &strength_s)) ||
            (!format_s && form_field(rq, parts, np, "format", format_buf, sizeof format_buf, &format_s)) ||
            (!quality_s && form_field(rq, parts, np, "quality", quality_buf, sizeof quality_buf, &quality_s)))
            return;
        data = image->data;
        n = image->size;
    }
    if (n == 0) {
        e2g_response_problem(rq, 400, "bad-request", "Empty image", "the request carries no image bytes");
        return;
    }
    if (!concept || !concept[0] || strlen(concept) > 400) {
        e2g_response_problem(rq, 400, "bad-request", "Missing concept",
                             "give concept=NAME (or a blend a:0.7,b:0.3), at most 400 characters");
        return;
    }
    float strength = 1.0f;
    if (strength_s && parse_strength(strength_s, &strength) != 0) {
        e2g_response_problem(rq, 400, "bad-request", "Bad strength", "strength must be a number in 0..2");
        return;
    }
    int quality = (int)cfg->jpeg_quality;
    if (quality_s && parse_quality(quality_s, &quality) != 0) {
        e2g_response_problem(rq, 400, "bad-request", "Bad quality", "quality must be an integer in 1..100");
        return;
    }
    e2g_image_format input, output;
    if (check_image_format(rq, data, n, "the image", &input) != 0 ||
        choose_format(rq, format_s, input, &output) != 0 || check_image_size(svc, rq, data, n, "the image") != 0)
        return;

    e2g_request req = {0};
    int rc = e2g_registry_acquire(svc->registry, &req, concept, strength, err);
    if (rc == -2) {
        e2g_response_problem(rq, 422, "unknown-concept", "Unknown concept", "%s", err);
        return;
    }
    if (rc == -1) {
        e2g_response_problem(rq, 400, "bad-request", "Bad concept", "%s", err);
        return;
    }
    if (rc != 0) {
        e2g_response_problem(rq, 500, "internal", "Adapter unavailable", "%s", err);
        return;
    }
    e2g_image im = {0};
    double t_decode = e2g_now();
    if (e2g_image_decode(&im, data, n, (long)cfg->max_pixels, err) != 0) {
        e2g_registry_release(svc->registry, &req);
        e2g_response_problem(rq, 422, "bad-image", "Unreadable image", "%s", err);
        return;
    }
    double decode_ms = (e2g_now() - t_decode) * 1e3;

    e2g_edit_timing timing = {0};
    e2g_edit_status st = e2g_batcher_edit(svc->batcher, &im, &req, (long)cfg->request_timeout_ms, &timing);
    e2g_registry_release(svc->registry, &req);
    if (st != E2G_EDIT_OK) {
        e2g_image_free(&im);
        if (st == E2G_EDIT_BUSY)
            unavailable(svc, rq, "queue-full", "Busy", "the edit queue is full; retry later");
        else if (st == E2G_EDIT_TIMEOUT)
            unavailable(svc, rq, "timeout", "Timed out", "the edit did not finish in time; retry later");
        else
            unavailable(svc, rq, "shutting-down", "Shutting down", "the server is shutting down");
        return;
    }
    e2g_metrics_edit(svc->metrics, timing.queue_ms / 1e3, timing.compute_ms / 1e3);

    double t_encode = e2g_now();
    uint8_t *out = NULL;
    size_t out_len = 0;
    rc = e2g_image_encode(&out, &out_len, &im, output, quality, err);
    e2g_image_free(&im);
    if (rc != 0) {
        e2g_response_problem(rq, 500, "internal", "Encoding failed", "%s", err);
        return;
    }
    double encode_ms = (e2g_now() - t_encode) * 1e3, total_ms = (e2g_now() - t0) * 1e3;
    const char *type = e2g_image_media_type(output);
    e2g_response_set(&rq->resp, 200, type, out, out_len);
    char text[256];
    e2g_response_header(&rq->resp, "X-E2gan-Concept", concept);
    snprintf(text, sizeof text, "%g", strength);
    e2g_response_header(&rq->resp, "X-E2gan-Strength", text);
    snprintf(text, sizeof text, "%d", timing.batch_size);
    e2g_response_header(&rq->resp, "X-E2gan-Batch-Size", text);
    snprintf(text, sizeof text,
             "decode;dur=%.2f, queue;dur=%.2f, compute;dur=%.2f, encode;dur=%.2f, total;dur=%.2f",
             decode_ms, timing.queue_ms, timing.compute_ms, encode_ms, total_ms);
    e2g_response_header(&rq->resp, "Server-Timing", text);
    snprintf(text, sizeof text, "inline; filename=\"edited.%s\"", e2g_image_extension(output));
    e2g_response_header(&rq->resp, "Content-Disposition", text);
}

/* ---- concepts ------------------------------------------------------------- */

static void get_concepts(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    e2g_response_json(&rq->resp, 200, json_pack("{s:o}", "concepts", e2g_registry_list(svc->registry)));
}

static int check_name(e2g_http_request *rq, const char *name) {
    if (e2g_concept_name_ok(name)) return 0;
    e2g_response_problem(rq, 400, "bad-name", "Bad concept name",
                         "a concept name is 1..64 characters of A-Za-z0-9._- not starting with '.'");
    return -1;
}

static int is_base_concept(e2g_service *svc, const char *name) {
    json_t *d = e2g_registry_describe(svc->registry, name);
    const char *kind = d ? json_string_value(json_object_get(d, "kind")) : NULL;
    int base = kind && strcmp(kind, "base") == 0;
    json_decref(d);
    return base;
}

static void get_concept(e2g_service *svc, e2g_http_request *rq, const char *name) {
    if (check_name(rq, name) != 0) return;
    json_t *d = e2g_registry_describe(svc->registry, name);
    if (!d) {
        e2g_response_problem(rq, 404, "unknown-concept", "Unknown concept", "no concept '%s'", name);
        return;
    }
    e2g_response_json(&rq->resp, 200, d);
}

static void begin_put_concept(e2g_service *svc, e2g_http_request *rq, const char *name) {
    if (check_name(rq, name) != 0) return;
    if (is_base_concept(svc, name)) {
        e2g_response_problem(rq, 409, "base-concept", "Base concept",
                             "'%s' is a concept of the base model; upload the adapter under another name",
                             name);
        return;
    }
    const char *ct = e2g_http_header(rq, "Content-Type");
    char media[80];
    e2g_http_media_type(ct, media, sizeof media);
    if (ct && strcmp(media, "application/octet-stream") != 0)
        e2g_response_problem(rq, 415, "unsupported-media-type", "Unsupported media type",
                             "an adapter upload is application/octet-stream, not '%s'", ct);
}

static void put_concept(e2g_service *svc, e2g_http_request *rq, const char *name) {
    char err[E2G_ERR_LEN];
    if (rq->body_len == 0) {
        e2g_response_problem(rq, 400, "bad-request", "Empty body", "the body must be an adapter file");
        return;
    }
    int created = 0;
    int rc = e2g_registry_put(svc->registry, name, rq->body, rq->body_len, &created, err);
    if (rc == -1) {
        e2g_response_problem(rq, 400, "bad-name", "Bad concept name", "%s", err);
        return;
    }
    if (rc == -2) {
        e2g_response_problem(rq, 422, "bad-adapter", "Invalid adapter", "%s", err);
        return;
    }
    if (rc == -4) {
        e2g_response_problem(rq, 507, "storage", "Could not store the adapter", "%s", err);
        return;
    }
    if (rc != 0) {
        e2g_response_problem(rq, 500, "internal", "Could not store the adapter", "%s", err);
        return;
    }
    E2G_LOG(E2G_LOG_INFO, "concept %s %s (%zu bytes)", name, created ? "added" : "replaced", rq->body_len);
    json_t *d = e2g_registry_describe(svc->registry, name);
    e2g_response_json(&rq->resp, created ? 201 : 200, d ? d : json_pack("{s:s}", "name", name));
    if (created) {
        char location[128];
        snprintf(location, sizeof location, "/v1/concepts/%s", name);
        e2g_response_header(&rq->resp, "Location", location);
    }
}

static void delete_concept(e2g_service *svc, e2g_http_request *rq, const char *name) {
    char err[E2G_ERR_LEN];
    if (check_name(rq, name) != 0) return;
    int rc = e2g_registry_delete(svc->registry, name, err);
    if (rc == 0) {
        E2G_LOG(E2G_LOG_INFO, "concept %s deleted", name);
        e2g_response_set(&rq->resp, 204, NULL, NULL, 0);
    } else if (rc == -1) {
        e2g_response_problem(rq, 404, "unknown-concept", "Unknown concept", "no adapter '%s'", name);
    } else if (rc == -2) {
        e2g_response_problem(rq, 409, "base-concept", "Base concept",
                             "'%s' is a concept of the base model and cannot be removed", name);
    } else {
        e2g_response_problem(rq, 500, "internal", "Could not remove the adapter", "%s", err);
    }
}

/* ---- fine-tuning jobs ------------------------------------------------------- */

/* 503 unless fine-tuning jobs run on this server. */
static int check_jobs(e2g_service *svc, e2g_http_request *rq) {
    if (svc->jobs) return 0;
    e2g_response_problem(rq, 503, "finetuning-unavailable", "Fine-tuning unavailable", "%s",
                         svc->cfg->finetune ? "this server runs no fine-tuning jobs (the trainer was not found; see the log)"
                                            : "this replica runs no fine-tuning jobs (finetune = off): its designated worker does");
    return -1;
}

static void begin_post_finetune(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    if (check_jobs(svc, rq) != 0) return;
    char media[80];
    e2g_http_media_type(e2g_http_header(rq, "Content-Type"), media, sizeof media);
    if (!is_multipart(media)) {
        e2g_response_problem(rq, 415, "unsupported-media-type", "Unsupported media type",
                             "a fine-tuning job is posted as multipart/form-data (pair files and options)");
        return;
    }
    rq->max_body = (size_t)svc->cfg->max_upload;
}

static void post_finetune(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    enum { MAX_PARTS = 2048 };
    char err[E2G_ERR_LEN], boundary[E2G_MULTIPART_BOUNDARY_MAX + 1], text[256], name[256] = "";
    if (e2g_multipart_boundary(e2g_http_header(rq, "Content-Type"), boundary, err) != 0) {
        e2g_response_problem(rq, 400, "bad-request", "Bad multipart Content-Type", "%s", err);
        return;
    }
    e2g_multipart_part *parts = e2g_xmalloc(MAX_PARTS * sizeof *parts);
    e2g_job_file *files = e2g_xmalloc(MAX_PARTS * sizeof *files);
    json_t *options = e2g_job_options_new();
    int np = e2g_multipart_parse(rq->body, rq->body_len, boundary, parts, MAX_PARTS, err), nf = 0, replace = 0;
    if (np < 0) {
        e2g_response_problem(rq, 400, "bad-request", "Malformed multipart body", "%s", err);
        goto out;
    }
    for (int i = 0; i < np; i++) {
        const e2g_multipart_part *p = &parts[i];
        if (p->filename[0]) { /* a pair image */
            char label[300];
            e2g_image_format fmt;
            snprintf(label, sizeof label, "'%s'", p->filename);
            if (check_image_format(rq, p->data, p->size, label, &fmt) != 0 ||
                check_image_size(svc, rq, p->data, p->size, label) != 0)
                goto out;
            files[nf++] = (e2g_job_file){p->filename, p->data, p->size};
            continue;
        }
        if (p->size >= sizeof text || memchr(p->data, '\0', p->size)) {
            e2g_response_problem(rq, 400, "bad-request", "Bad form field", "form field '%s' is too long or not text",
                                 p->name);
            goto out;
        }
        memcpy(text, p->data, p->size);
        text[p->size] = '\0';
        if (!strcmp(p->name, "concept")) {
            snprintf(name, sizeof name, "%s", text);
        } else if (!strcmp(p->name, "replace")) {
            replace = !strcmp(text, "true") || !strcmp(text, "1");
        } else if (e2g_job_option_set(options, p->name, text, err) != 0) {
            e2g_response_problem(rq, 400, "bad-request", "Bad option", "%s", err);
            goto out;
        }
    }
    if (check_name(rq, name) != 0) goto out;
    json_t *existing = e2g_registry_describe(svc->registry, name);
    const char *kind = json_string_value(json_object_get(existing, "kind"));
    int base = kind && !strcmp(kind, "base"), taken = existing && !replace;
    json_decref(existing);
    if (base || taken) {
        e2g_response_problem(rq, 409, base ? "base-concept" : "concept-exists", "Concept exists",
                             base ? "'%s' is a concept of the base model; train under another name"
                                  : "concept '%s' exists; send replace=true to replace it when the job ends",
                             name);
        goto out;
    }
    char id[E2G_JOB_ID_LEN];
    int rc = e2g_jobs_submit(svc->jobs, name, options, files, nf, id, err);
    if (rc == -1) {
        e2g_response_problem(rq, 422, "bad-pairs", "Unusable pairs", "%s", err);
    } else if (rc == -2) {
        e2g_response_problem(rq, 409, "job-exists", "A job already trains this concept", "%s", err);
    } else if (rc != 0) {
        e2g_response_problem(rq, rc == -4 ? 507 : 500, "storage", "Could not store the job", "%s", err);
    } else {
        char location[96];
        snprintf(location, sizeof location, "/v1/finetunes/%s", id);
        json_t *d = e2g_jobs_get(svc->jobs, id);
        e2g_response_json(&rq->resp, 202, d ? d : json_pack("{s:s}", "id", id));
        e2g_response_header(&rq->resp, "Location", location);
    }
out:
    json_decref(options);
    free(files);
    free(parts);
}

static void get_finetunes(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    if (check_jobs(svc, rq) == 0)
        e2g_response_json(&rq->resp, 200, json_pack("{s:o}", "jobs", e2g_jobs_list(svc->jobs)));
}

/* A server-sent-event stream of one job's events. */
typedef struct {
    e2g_service *svc;
    char id[E2G_JOB_ID_LEN];
    long next;
    char *text;
    size_t len, off;
    int over, idle_s;
} event_stream;

static size_t event_stream_read(void *ctx, char *buf, size_t max) {
    event_stream *es = ctx;
    while (es->off >= es->len) {
        free(es->text);
        es->text = NULL, es->len = es->off = 0;
        if (es->over || atomic_load(&es->svc->state) == E2G_STATE_STOPPING) return 0;
        es->text = e2g_jobs_events(es->svc->jobs, es->id, es->next, 1.0, &es->next, &es->over);
        if (es->text) {
            es->len = strlen(es->text), es->idle_s = 0;
        } else if (!es->over && ++es->idle_s >= 15) { /* a comment keeps proxies from timing out */
            es->text = strdup(": keep-alive\n\n");
            es->len = strlen(es->text), es->idle_s = 0;
        }
    }
    size_t n = es->len - es->off < max ? es->len - es->off : max;
    memcpy(buf, es->text + es->off, n);
    es->off += n;
    return n;
}

static void event_stream_free(void *ctx) {
    event_stream *es = ctx;
    free(es->text);
    free(es);
}

/* GET /v1/finetunes/{id} and /v1/finetunes/{id}/events. */
static void get_finetune(e2g_service *svc, e2g_http_request *rq, const char *param) {
    if (check_jobs(svc, rq) != 0) return;
    char id[E2G_JOB_ID_LEN];
    const char *slash = strchr(param, '/');
    size_t n = slash ? (size_t)(slash - param) : strlen(param);
    int events = slash && !strcmp(slash, "/events");
    json_t *d = NULL;
    if (n < sizeof id && (!slash || events)) {
        memcpy(id, param, n);
        id[n] = '\0';
        d = e2g_jobs_get(svc->jobs, id);
    }
    if (!d) {
        e2g_response_problem(rq, 404, "unknown-job", "Unknown job", "no fine-tuning job at %s", rq->path);
        return;
    }
    if (!events) {
        e2g_response_json(&rq->resp, 200, d);
        return;
    }
    json_decref(d);
    event_stream *es = e2g_xcalloc(1, sizeof *es);
    es->svc = svc;
    snprintf(es->id, sizeof es->id, "%s", id);
    const char *last = e2g_http_header(rq, "Last-Event-ID");
    if (last) es->next = strtol(last, NULL, 10) + 1;
    if (es->next < 0) es->next = 0;
    e2g_response_stream(&rq->resp, 200, "text/event-stream", event_stream_read, es, event_stream_free);
    e2g_response_header(&rq->resp, "X-Accel-Buffering", "no");
}

static void delete_finetune(e2g_service *svc, e2g_http_request *rq, const char *id) {
    if (check_jobs(svc, rq) != 0) return;
    int rc = strlen(id) < E2G_JOB_ID_LEN ? e2g_jobs_cancel(svc->jobs, id) : -1;
    if (rc < 0) {
        e2g_response_problem(rq, 404, "unknown-job", "Unknown job", "no fine-tuning job '%s'", id);
    } else if (rc == 1) {
        json_t *d = e2g_jobs_get(svc->jobs, id);
        e2g_response_json(&rq->resp, 202, d ? d : json_pack("{s:s}", "id", id));
    } else {
        e2g_response_set(&rq->resp, 204, NULL, NULL, 0);
    }
}

/* ---- operations ----------------------------------------------------------- */

static void get_healthz(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)svc, (void)param;
    e2g_response_json(&rq->resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void get_readyz(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    int state = atomic_load(&svc->state);
    if (state == E2G_STATE_READY) {
        /* where edits run, and whether the GPU died (edits then run on the CPU) */
        char why[E2G_ERR_LEN] = "";
        int dead = svc->runtime && e2g_runtime_device_dead(svc->runtime, why, sizeof why);
        json_t *j = json_pack("{s:s, s:s, s:b}", "status", "ready", "backend",
                              svc->runtime ? e2g_runtime_name(svc->runtime) : "cpu", "device_dead", dead);
        if (dead) json_object_set_new(j, "device_error", json_string(why));
        e2g_response_json(&rq->resp, 200, j);
    }
    else if (state == E2G_STATE_LOADING)
        unavailable(svc, rq, "not-ready", "Not ready", "the model is still loading");
    else
        unavailable(svc, rq, "shutting-down", "Shutting down", "the server is shutting down");
}

static void get_metrics(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    int state = atomic_load(&svc->state);
    e2g_batcher_stats bs;
    e2g_registry_stats rs;
    int jobs[E2G_JOB_STATES];
    e2g_metrics_gauges g = {state == E2G_STATE_READY, atomic_load(&svc->in_flight), NULL, NULL, NULL, NULL,
                            e2g_precision_name(e2g_get_precision()), 0};
    if (svc->jobs) {
        e2g_jobs_counts(svc->jobs, jobs);
        g.jobs = jobs;
    }
    if (state != E2G_STATE_LOADING) {
        g.device_dead = svc->runtime && e2g_runtime_device_dead(svc->runtime, NULL, 0);
        e2g_batcher_stats_get(svc->batcher, &bs);
        e2g_registry_stats_get(svc->registry, &rs);
        g.batcher = &bs;
        g.registry = &rs;
        g.backend = e2g_runtime_name(svc->runtime);
    }
    size_t len;
    char *text = e2g_metrics_render(svc->metrics, &g, &len);
    e2g_response_set(&rq->resp, 200, "text/plain; version=0.0.4; charset=utf-8", (uint8_t *)text, len);
}

/* ---- files ---------------------------------------------------------------- */

static const char *content_type_for(const char *path) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"}, {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"}, {"json", "application/json"},
        {"map", "application/json"}, {"yaml", "application/yaml"}, {"yml", "application/yaml"},
        {"png", "image/png"}, {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
        {"svg", "image/svg+xml"}, {"ico", "image/x-icon"}, {"webp", "image/webp"},
        {"txt", "text/plain; charset=utf-8"}, {"woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return "application/octet-stream";
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

/* Opens a regular file for a response; -1 when it is missing or not one. */
static int open_regular(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    *size = (size_t)st.st_size;
    return fd;
}

static void serve_file(e2g_http_request *rq, int fd, size_t size, const char *type) {
    e2g_response_set(&rq->resp, 200, type, NULL, 0);
    rq->resp.fd = fd;
    rq->resp.fd_size = size;
}

static void get_openapi(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    size_t size;
    int fd = open_regular(svc->cfg->openapi, &size);
    if (fd < 0) {
        e2g_response_problem(rq, 404, "not-found", "Not found", "this server has no API description file");
        return;
    }
    serve_file(rq, fd, size, "application/yaml");
}

/* A file under the static folder.  The path is checked segment by segment
 * (no empty, '.'-leading or backslash-holding segments, so no '..' and no
 * hidden files), then resolved and required to stay inside the folder (a
 * symbolic link pointing out is refused). */
static void get_static(e2g_service *svc, e2g_http_request *rq, const char *param) {
    (void)param;
    const char *rel = rq->path;
    if (strncmp(rel, "/static/", 8) == 0) rel += 7;
    if (strcmp(rel, "/") == 0) rel = "/index.html";
    int ok = svc->static_root[0] != '\0' && rel[0] == '/' && strlen(rel) < 1024;
    for (const char *seg = rel + 1; ok;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || seg[0] == '.' || memchr(seg, '\\', n)) ok = 0;
        if (seg[n] == '\0') break;
        seg += n + 1;
    }
    char full[PATH_MAX + 1024], real[PATH_MAX];
    size_t root_len = strlen(svc->static_root);
    int fd = -1;
    size_t size = 0;
    if (ok) {
        snprintf(full, sizeof full, "%s%s", svc->static_root, rel);
        ok = realpath(full, real) && strncmp(real, svc->static_root, root_len) == 0 &&
             real[root_len] == '/';
    }
    if (ok) fd = open_regular(real, &size);
    if (fd < 0) {
        e2g_response_problem(rq, 404, "not-found", "Not found", "no file %s", rq->path);
        return;
    }
    serve_file(rq, fd, size, content_type_for(real));
    e2g_response_header(&rq->resp, "Cache-Control", "no-cache");
}
