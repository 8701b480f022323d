/* http.h — the glue between libmicrohttpd and the routes: one thread per
 * connection (so a handler may block on the batcher), the request's body
 * read incrementally under the configured size limit, request ids,
 * responses built as plain structs and queued in one place, and the
 * per-request log line and metrics when MHD reports the request done. */
#ifndef E2G_HTTP_H
#define E2G_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"

struct MHD_Connection;
typedef struct e2g_service e2g_service; /* routes.h */

#define E2G_REQUEST_ID_MAX 64
#define E2G_RESPONSE_HEADERS 16

typedef struct {
    char name[40];
    char value[480];
} e2g_header;

/* A streamed body: fills buf (max bytes) and returns the count; 0 when
 * the stream is over.  It may block (each connection has its thread). */
typedef size_t (*e2g_stream_fn)(void *ctx, char *buf, size_t max);

/* A response under construction.  body is malloc'd and owned by the
 * response; fd (-1 when unused) is a file served as the body instead;
 * stream (NULL when unused) produces the body as it is sent, and
 * stream_free(stream_ctx) runs when the response is done with it. */
typedef struct {
    int status; /* 0 until a handler sets one */
    char content_type[80];
    uint8_t *body;
    size_t len;
    int fd;
    size_t fd_size;
    e2g_stream_fn stream;
    void *stream_ctx;
    void (*stream_free)(void *ctx);
    e2g_header headers[E2G_RESPONSE_HEADERS];
    int n_headers;
} e2g_response;

typedef struct {
    struct MHD_Connection *conn;
    char method[16];
    char *path; /* decoded, without the query */
    char request_id[E2G_REQUEST_ID_MAX + 1];
    double t_start; /* monotonic seconds */
    uint8_t *body;  /* the request body, when the route wants it */
    size_t body_len, body_cap;
    unsigned long long bytes_in, bytes_out;
    int body_wanted;   /* set by the route: keep the body (else it is discarded) */
    int body_overflow; /* more than max_body bytes arrived */
    size_t max_body;   /* the route's limit (0: the configured max_body) */
    int queued;        /* the response is with MHD */
    e2g_route_label route;
    const void *matched; /* the route table entry (routes.c) */
    e2g_response resp;
} e2g_http_request;

/* A request header or query argument (decoded), or NULL. */
const char *e2g_http_header(const e2g_http_request *rq, const char *name);
const char *e2g_http_query(const e2g_http_request *rq, const char *name);

/* Adds a response header; a value with CR, LF or other control characters
 * is dropped (header injection), as is one past E2G_RESPONSE_HEADERS. */
void e2g_response_header(e2g_response *r, const char *name, const char *value);
/* Sets the status and body, taking ownership of body (malloc'd, may be
 * NULL when len is 0); any earlier body is freed. */
void e2g_response_set(e2g_response *r, int status, const char *content_type, uint8_t *body,
                      size_t len);
/* Sets a JSON body (application/json), stealing the reference to v. */
void e2g_response_json(e2g_response *r, int status, json_t *v);
/* An application/problem+json answer: type urn:e2gan:problem:<slug>, the
 * title, the status, detail printf-style, plus instance and request_id. */
void e2g_response_problem(e2g_http_request *rq, int status, const char *slug, const char *title,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Makes the response a stream (see e2g_stream_fn), taking ctx. */
void e2g_response_stream(e2g_response *r, int status, const char *content_type, e2g_stream_fn fn,
                         void *ctx, void (*free_ctx)(void *));
/* Frees the response's body and closes its fd, leaving it empty. */
void e2g_response_clear(e2g_response *r);

/* The media type of a Content-Type value, lower-cased, without
 * parameters, into out (len bytes); "" when absent or malformed. */
void e2g_http_media_type(const char *content_type, char *out, size_t len);

/* Monotonic time in seconds. */
double e2g_now(void);

typedef struct e2g_http e2g_http;

/* Binds cfg->listen and starts serving svc.  Returns 0, or -1 with a
 * message in err (E2G_ERR_LEN bytes). */
int e2g_http_start(e2g_http **out, e2g_service *svc, const e2g_server_config *cfg, char *err);
/* The bound port (useful with port 0). */
int e2g_http_port(const e2g_http *h);
/* Stops accepting new connections; open ones go on being served. */
void e2g_http_quiesce(e2g_http *h);
/* Closes every connection, joins the threads and frees h. */
void e2g_http_stop(e2g_http *h);

#endif
