/* log.c — JSON lines on stderr.  Each line is built in a local buffer and
 * written with one write(2), so lines from concurrent request threads never
 * interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

e2g_log_level e2g_log_threshold = E2G_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes
 * there are not one (overlong forms and surrogates included). */
static size_t utf8_sequence(const unsigned char *s) {
    unsigned char c = s[0];
    size_t n;
    unsigned min;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000, cp = c & 0x07;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

size_t e2g_json_escape(char *dst, size_t len, size_t cap, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p && len + 1 < cap) {
        char esc[8];
        const char *src = esc;
        size_t n, used = 1;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
        } else if (*p < 0x80) {
            esc[0] = (char)*p, n = 1;
        } else if ((used = utf8_sequence(p)) != 0) {
            src = (const char *)p, n = used;
        } else {
            n = (size_t)snprintf(esc, sizeof esc, "\\ufffd"), used = 1; /* not UTF-8 */
        }
        if (len + n + 1 > cap) break;
        memcpy(dst + len, src, n);
        len += n;
        p += used;
    }
    if (cap) dst[len < cap ? len : cap - 1] = '\0';
    return len;
}

/* Starts a line: {"time":"2025-01-02T03:04:05.678Z","level":"info" */
static size_t line_start(char *buf, size_t cap, e2g_log_level level) {
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(buf, cap, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\"", stamp,
                     (long)(tv.tv_usec / 1000), level_names[level]);
    return n < 0 ? 0 : (size_t)n;
}

static void line_end(char *buf, size_t len, size_t cap) {
    if (len + 3 > cap) len = cap - 3;
    buf[len++] = '}';
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w; /* nowhere to report a failing log */
}

void e2g_log_write(e2g_log_level level, const char *fmt, ...) {
    char msg[1024], buf[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = line_start(buf, sizeof buf, level);
    len += (size_t)snprintf(buf + len, sizeof buf - len, ",\"msg\":\"");
    len = e2g_json_escape(buf, len, sizeof buf - 3, msg);
    buf[len++] = '"';
    line_end(buf, len, sizeof buf);
}

void e2g_log_request(const char *request_id, const char *method, const char *path, int status,
                     double ms, unsigned long long bytes_in, unsigned long long bytes_out) {
    e2g_log_level level = status >= 500 ? E2G_LOG_ERROR : E2G_LOG_INFO;
    if (level < e2g_log_threshold) return;
    char buf[2400];
    size_t len = line_start(buf, sizeof buf, level);
    const char *keys[] = {"request_id", "method", "path"};
    const char *vals[] = {request_id, method, path};
    for (int i = 0; i < 3; i++) {
        len += (size_t)snprintf(buf + len, sizeof buf - len, ",\"%s\":\"", keys[i]);
        len = e2g_json_escape(buf, len, sizeof buf - 200, vals[i] ? vals[i] : "");
        buf[len++] = '"';
    }
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            ",\"status\":%d,\"ms\":%.3f,\"bytes_in\":%llu,\"bytes_out\":%llu", status,
                            ms, bytes_in, bytes_out);
    line_end(buf, len, sizeof buf);
}
