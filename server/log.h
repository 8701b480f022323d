/* log.h — the server's log: one JSON object per line on stderr, each with a
 * UTC timestamp and a level.  E2G_LOG costs one comparison below the
 * threshold (its arguments are not evaluated).  Request lines carry the
 * request id, method, path, status and duration. */
#ifndef E2G_LOG_H
#define E2G_LOG_H

typedef enum { E2G_LOG_DEBUG, E2G_LOG_INFO, E2G_LOG_WARN, E2G_LOG_ERROR } e2g_log_level;

extern e2g_log_level e2g_log_threshold;

#define E2G_LOG(level, ...)                                                     \
    do {                                                                        \
        if ((level) >= e2g_log_threshold) e2g_log_write((level), __VA_ARGS__);  \
    } while (0)

/* Writes {"time", "level", "msg"} with msg formatted printf-style. */
void e2g_log_write(e2g_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The per-request line: level info for status < 500, error otherwise. */
void e2g_log_request(const char *request_id, const char *method, const char *path, int status,
                     double ms, unsigned long long bytes_in, unsigned long long bytes_out);

/* Appends s to dst (capacity cap, always NUL-terminated) as the inside of a
 * JSON string: quotes, backslashes and control characters escaped, bytes
 * that are not UTF-8 replaced by \ufffd (client paths are arbitrary
 * bytes); what would not fit is dropped.  Returns the new length. */
size_t e2g_json_escape(char *dst, size_t len, size_t cap, const char *s);

#endif
