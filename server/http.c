/* http.c — libmicrohttpd glue (see http.h).  MHD runs one thread per
 * connection; the access handler is called first with the headers, then
 * once per body chunk, then once with no data.  Responses are queued only
 * from the first call (early answers: MHD then reads no body and closes the
 * connection after answering) or from the last.  A body larger than
 * max_body is refused from its Content-Length before a byte is read;
 * without one (chunked), the excess is dropped as it arrives, never
 * stored, and answered 413 at its end (MHD 0.9 cannot answer mid-body). */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "http.h"
#include "log.h"
#include "routes.h"

struct e2g_http {
    struct MHD_Daemon *daemon;
    e2g_service *svc;
    const e2g_server_config *cfg;
    int port;
};

double e2g_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *e2g_http_header(const e2g_http_request *rq, const char *name) {
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *e2g_http_query(const e2g_http_request *rq, const char *name) {
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

void e2g_response_header(e2g_response *r, const char *name, const char *value) {
    if (r->n_headers == E2G_RESPONSE_HEADERS || strlen(name) >= sizeof r->headers[0].name ||
        strlen(value) >= sizeof r->headers[0].value)
        return;
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return;
    e2g_header *h = &r->headers[r->n_headers++];
    strcpy(h->name, name);
    strcpy(h->value, value);
}

void e2g_response_clear(e2g_response *r) {
    free(r->body);
    r->body = NULL;
    r->len = 0;
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    if (r->stream && r->stream_free) r->stream_free(r->stream_ctx);
    r->stream = NULL;
    r->stream_ctx = NULL;
}

void e2g_response_stream(e2g_response *r, int status, const char *content_type, e2g_stream_fn fn,
                         void *ctx, void (*free_ctx)(void *)) {
    e2g_response_set(r, status, content_type, NULL, 0);
    r->stream = fn;
    r->stream_ctx = ctx;
    r->stream_free = free_ctx;
}

/* A stream handed to MHD, which owns it from then on. */
typedef struct {
    e2g_stream_fn fn;
    void *ctx;
    void (*free_ctx)(void *);
} stream_box;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_box *b = cls;
    size_t n = b->fn(b->ctx, buf, max);
    return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_done(void *cls) {
    stream_box *b = cls;
    if (b->free_ctx) b->free_ctx(b->ctx);
    free(b);
}

void e2g_response_set(e2g_response *r, int status, const char *content_type, uint8_t *body,
                      size_t len) {
    e2g_response_clear(r);
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type ? content_type : "");
    r->body = body;
    r->len = len;
}

void e2g_response_json(e2g_response *r, int status, json_t *v) {
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    E2G_ASSERT(text);
    e2g_response_set(r, status, "application/json", (uint8_t *)text, strlen(text));
}

void e2g_response_problem(e2g_http_request *rq, int status, const char *slug, const char *title,
                          const char *fmt, ...) {
    char detail[768], type[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(type, sizeof type, "urn:e2gan:problem:%s", slug);
    json_t *v = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title", title, "status",
                          status, "detail", detail, "instance", rq->path ? rq->path : "",
                          "request_id", rq->request_id);
    if (!v) /* detail or path was not valid UTF-8 */
        v = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", title, "status", status,
                      "detail", title, "request_id", rq->request_id);
    e2g_response_json(&rq->resp, status, v);
    snprintf(rq->resp.content_type, sizeof rq->resp.content_type, "application/problem+json");
}

void e2g_http_media_type(const char *content_type, char *out, size_t len) {
    out[0] = '\0';
    if (!content_type) return;
    while (*content_type == ' ' || *content_type == '\t') content_type++;
    size_t n = strcspn(content_type, "; \t");
    if (n == 0 || n >= len) return;
    for (size_t i = 0; i < n; i++) {
        char c = content_type[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[n] = '\0';
}

/* Keeps the client's X-Request-Id when it has usable characters (others
 * dropped, at most E2G_REQUEST_ID_MAX), else makes 32 random hex digits. */
static void set_request_id(e2g_http_request *rq) {
    const char *given = e2g_http_header(rq, "X-Request-Id");
    size_t n = 0;
    for (const char *p = given; p && *p && n < E2G_REQUEST_ID_MAX; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == ':' || c == '-')
            rq->request_id[n++] = c;
    }
    rq->request_id[n] = '\0';
    if (n) return;
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        static atomic_ulong counter;
        unsigned long c = atomic_fetch_add(&counter, 1);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long long mix[2] = {(unsigned long long)ts.tv_nsec ^ ((unsigned long long)ts.tv_sec << 30), c};
        memcpy(raw, mix, sizeof raw);
    }
    for (int i = 0; i < 16; i++) snprintf(rq->request_id + 2 * i, 3, "%02x", raw[i]);
}

/* Hands rq->resp to MHD.  The body stays owned by rq (MHD reads it in
 * place until the request completes, when on_completed frees it). */
static enum MHD_Result respond(e2g_http *h, e2g_http_request *rq) {
    e2g_response *r = &rq->resp;
    e2g_routes_decorate(h->svc, rq);
    struct MHD_Response *mr;
    if (r->stream) {
        stream_box *b = e2g_xmalloc(sizeof *b);
        *b = (stream_box){r->stream, r->stream_ctx, r->stream_free};
        mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, b, stream_done);
        if (mr) r->stream = NULL, r->stream_ctx = NULL; /* MHD frees it */
        else free(b);
    } else if (r->fd >= 0) {
        mr = MHD_create_response_from_fd(r->fd_size, r->fd);
        if (mr) r->fd = -1; /* MHD closes it */
        rq->bytes_out = r->fd_size;
    } else {
        mr = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_PERSISTENT);
        rq->bytes_out = r->len;
    }
    if (!mr) return MHD_NO;
    if (r->content_type[0]) MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(mr, "X-Request-Id", rq->request_id);
    for (int i = 0; i < r->n_headers; i++)
        MHD_add_response_header(mr, r->headers[i].name, r->headers[i].value);
    if (atomic_load(&h->svc->state) == E2G_STATE_STOPPING)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(rq->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (ok == MHD_YES) rq->queued = 1;
    return ok;
}

static e2g_http_request *request_new(e2g_http *h, struct MHD_Connection *conn, const char *url,
                                     const char *method) {
    e2g_http_request *rq = e2g_xcalloc(1, sizeof *rq);
    rq->conn = conn;
    rq->t_start = e2g_now();
    rq->resp.fd = -1;
    rq->route = E2G_ROUTE_OTHER;
    snprintf(rq->method, sizeof rq->method, "%s", method);
    rq->path = strdup(url);
    E2G_ASSERT(rq->path);
    set_request_id(rq);
    atomic_fetch_add(&h->svc->in_flight, 1);
    return rq;
}

static void request_free(e2g_http_request *rq) {
    e2g_response_clear(&rq->resp);
    free(rq->body);
    free(rq->path);
    free(rq);
}

/* Appends a body chunk, growing the buffer geometrically up to max_body. */
static void body_append(e2g_http_request *rq, const char *data, size_t n, size_t max_body) {
    if (rq->body_len + n > rq->body_cap) {
        size_t cap = rq->body_cap ? rq->body_cap : 65536;
        while (cap < rq->body_len + n) cap *= 2;
        if (cap > max_body) cap = max_body;
        uint8_t *grown = realloc(rq->body, cap);
        E2G_ASSERT(grown);
        rq->body = grown;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, n);
    rq->body_len += n;
}

static void too_large(e2g_http_request *rq, long long max_body) {
    e2g_response_problem(rq, 413, "body-too-large", "Request body too large",
                         "the body may be at most %lld bytes", max_body);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    (void)version;
    e2g_http *h = cls;
    e2g_http_request *rq = *con_cls;
    if (!rq) {
        rq = request_new(h, conn, url, method);
        *con_cls = rq;
        e2g_routes_begin(h->svc, rq);
        if (!rq->max_body) rq->max_body = (size_t)h->cfg->max_body;
        const char *cl = e2g_http_header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (rq->resp.status) {
            /* Answering now makes MHD skip the body and close the
             * connection; without a body, answer at the final call and
             * keep the connection alive. */
            int has_body = (cl && strcmp(cl, "0") != 0) ||
                           e2g_http_header(rq, MHD_HTTP_HEADER_TRANSFER_ENCODING);
            return has_body ? respond(h, rq) : MHD_YES;
        }
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || end == cl) {
                e2g_response_problem(rq, 400, "bad-request", "Bad Content-Length", "'%s' is not a length", cl);
                return respond(h, rq);
            }
            if (n > rq->max_body) {
                too_large(rq, (long long)rq->max_body);
                return respond(h, rq);
            }
            if (rq->body_wanted && n) {
                rq->body = e2g_xmalloc((size_t)n);
                rq->body_cap = (size_t)n;
            }
        }
        return MHD_YES;
    }
    if (rq->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->resp.status) return respond(h, rq); /* answered by the route, no body */
    size_t max_body = rq->max_body;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        rq->bytes_in += n;
        /* MHD cannot answer in the middle of a body: the excess is dropped
         * until the end (then 413), or the connection is closed once the
         * client has sent twice the limit. */
        if (rq->body_overflow) return rq->bytes_in > 2 * (unsigned long long)max_body ? MHD_NO : MHD_YES;
        if (rq->body_len + n > max_body) {
            rq->body_overflow = 1;
            free(rq->body);
            rq->body = NULL;
            rq->body_len = rq->body_cap = 0;
            return MHD_YES;
        }
        if (rq->body_wanted) body_append(rq, upload_data, n, max_body);
        return MHD_YES;
    }
    if (rq->body_overflow) too_large(rq, (long long)max_body);
    else e2g_routes_finish(h->svc, rq);
    if (!rq->resp.status)
        e2g_response_problem(rq, 500, "internal", "Internal error", "the route gave no answer");
    return respond(h, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    e2g_http *h = cls;
    e2g_http_request *rq = *con_cls;
    if (!rq) return;
    *con_cls = NULL;
    double seconds = e2g_now() - rq->t_start;
    int status = rq->queued ? rq->resp.status : 0;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && rq->queued)
        E2G_LOG(E2G_LOG_DEBUG, "request %s: connection ended early (%d)", rq->request_id, (int)toe);
    e2g_log_request(rq->request_id, rq->method, rq->path, status, seconds * 1e3, rq->bytes_in,
                    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? rq->bytes_out : 0);
    if (status) e2g_metrics_request(h->svc->metrics, rq->route, status, seconds);
    request_free(rq);
    atomic_fetch_sub(&h->svc->in_flight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    E2G_LOG(E2G_LOG_WARN, "libmicrohttpd: %s", msg);
}

int e2g_http_start(e2g_http **out, e2g_service *svc, const e2g_server_config *cfg, char *err) {
    char host[256], port_text[8];
    int port;
    if (e2g_config_split_listen(cfg->listen, host, sizeof host, &port) != 0)
        return e2g_fail(err, "bad listen address '%s'", cfg->listen);
    snprintf(port_text, sizeof port_text, "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port_text, &hints, &ai);
    if (gai != 0) return e2g_fail(err, "cannot resolve %s: %s", host, gai_strerror(gai));

    e2g_http *h = e2g_xcalloc(1, sizeof *h);
    h->svc = svc;
    h->cfg = cfg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        free(h);
        return e2g_fail(err, "cannot listen on %s (address in use or not available?)", cfg->listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    *out = h;
    return 0;
}

int e2g_http_port(const e2g_http *h) { return h->port; }

void e2g_http_quiesce(e2g_http *h) {
    MHD_socket s = MHD_quiesce_daemon(h->daemon);
    if (s != MHD_INVALID_SOCKET) close(s);
}

void e2g_http_stop(e2g_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
