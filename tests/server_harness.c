/* server_harness.c — what the server's integration tests share: temporary
 * files, the real e2gan-server started on a free loopback port and
 * stopped, and HTTP through curl with assertions on status, headers,
 * problem+json bodies and images (see server_harness.h). */
#include "server_harness.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "testutil.h"

char tmpdir[64];
int server_port;

/* Under AddressSanitizer the server runs several times slower: it gets
 * longer to answer an edit and to drain at shutdown.  The flags come
 * before a test's own, which win. */
#ifdef __SANITIZE_ADDRESS__
#define SANITIZER_FLAGS "--request-timeout-ms 300000 "
#define SLOWDOWN 10
#else
#define SANITIZER_FLAGS ""
#define SLOWDOWN 1
#endif

void sh(const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "`%s` failed with status %d", cmd, rc);
}

const char *tmp_path(const char *name) {
    static char path[8][256];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    return p;
}

void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    *n = (size_t)len;
    return buf;
}

const char *ref_path(const char *name) {
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", getenv("E2G_REFS"), name);
    return p;
}

/* The server binary sits next to the e2gan CLI in the build tree. */
const char *server_binary(void) {
    static char path[1024];
    const char *over = getenv("E2G_SERVER");
    if (over) return over;
    snprintf(path, sizeof path, "%s", test_bin());
    char *slash = strrchr(path, '/');
    ck_assert_ptr_nonnull(slash);
    strcpy(slash + 1, "e2gan-server");
    return path;
}


/* Starts the server with the common flags plus `extra` (space-separated),
 * logging to `log`; waits until /readyz answers 200. */
pid_t start_server(const char *extra, const char *log, int *port) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "exec %s --model %s --adapters %s --listen 127.0.0.1:0 --static-dir %s "
             "--openapi %s/openapi.yaml --threads 2 " SANITIZER_FLAGS "%s",
             server_binary(), ref_path("g_default_ngf16_base.safetensors"), tmp_path("adapters"),
             tmp_path("static"), test_source(), extra);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* A failing test must not leave a server behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1) _exit(127);
        FILE *f = freopen(log, "w", stderr);
        if (!f) _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    *port = 0;
    for (int i = 0; i < 400 * SLOWDOWN && !*port; i++) {
        usleep(25000);
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            const char *at = strstr(line, "listening on 127.0.0.1:");
            if (at) *port = atoi(at + strlen("listening on 127.0.0.1:"));
        }
        if (f) fclose(f);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            size_t n;
            char *text = (char *)read_bytes(log, &n);
            ck_abort_msg("the server exited: %s", text);
        }
    }
    ck_assert_msg(*port > 0, "the server did not report its port");
    for (int i = 0; i < 400 * SLOWDOWN; i++) {
        char c[64];
        snprintf(c, sizeof c, "curl -s -o /dev/null -f http://127.0.0.1:%d/readyz", *port);
        if (system(c) == 0) return pid;
        usleep(25000);
    }
    ck_abort_msg("the server never became ready");
    return pid;
}

/* SIGTERM, then the exit status (or -1 when it had to be killed). */
int stop_server(pid_t pid) {
    kill(pid, SIGTERM);
    for (int i = 0; i < 2400 * SLOWDOWN; i++) { /* 60 s: a loaded machine drains slowly */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        usleep(25000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int mount_tmpfs(const char *dir, const char *size) {
    char options[64];
    snprintf(options, sizeof options, "size=%s,mode=0755", size);
    if (mount("tmpfs", dir, "tmpfs", 0, options) == 0) return 0;
    ck_assert_msg(errno == EPERM, "mounting a tmpfs on %s: %s", dir, strerror(errno));
    return -1;
}

void unmount_tmpfs(const char *dir) {
    if (umount2(dir, MNT_DETACH) != 0)
        ck_assert_msg(errno == EINVAL || errno == EPERM, "unmounting %s: %s", dir, strerror(errno));
}

void fill_disk(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/filler", dir);
    FILE *f = fopen(path, "ab");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    static const char block[4096];
    while (fwrite(block, 1, sizeof block, f) == sizeof block) continue;
    fclose(f); /* fails too: the disk is full */
    struct statvfs vfs;
    ck_assert_int_eq(statvfs(dir, &vfs), 0);
    ck_assert_msg(vfs.f_bavail == 0, "%s still has %lu blocks free", dir, (unsigned long)vfs.f_bavail);
}

/* ---- HTTP through curl ------------------------------------------------------ */

void response_free(response *r) {
    free(r->body);
    r->body = NULL;
}

/* Runs curl with `args` (a shell fragment; the URL may use %PORT as
 * http://127.0.0.1:PORT) and fills r. */
static void http_args(response *r, const char *args);

void http(response *r, const char *fmt, ...) {
    char args[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    http_args(r, args);
}

void http_problem(int status, const char *slug, const char *fmt, ...) {
    char args[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    response r;
    http_args(&r, args);
    assert_problem(&r, status, slug);
    response_free(&r);
}

static void http_args(response *r, const char *args) {
    static int counter;
    char expanded[3200], cmd[4096];
    char base[48];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", server_port);
    size_t len = 0;
    for (const char *p = args; *p;) {
        const char *at = strstr(p, "%PORT");
        int n = at ? (int)(at - p) : (int)strlen(p);
        len += (size_t)snprintf(expanded + len, sizeof expanded - len, "%.*s%s", n, p, at ? base : "");
        ck_assert(len < sizeof expanded);
        if (!at) break;
        p = at + 5;
    }
    int id = counter++;
    char hdr[64], body[64];
    snprintf(hdr, sizeof hdr, "h%d_%d.txt", getpid(), id);
    snprintf(body, sizeof body, "b%d_%d.bin", getpid(), id);
    snprintf(cmd, sizeof cmd, "curl -s --max-time 60 -D %s -o %s -w '%%{http_code}' %s", tmp_path(hdr),
             tmp_path(body), expanded);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char code[16] = "";
    size_t got = fread(code, 1, sizeof code - 1, p);
    code[got] = '\0';
    pclose(p);
    memset(r, 0, sizeof *r);
    r->status = atoi(code);
    ck_assert_msg(r->status > 0, "curl failed: %s", cmd);
    size_t n;
    char *h = (char *)read_bytes(tmp_path(hdr), &n);
    /* Keep the last header block (curl also writes interim responses). */
    char *last = h, *next;
    while ((next = strstr(last + 1, "\r\nHTTP/")) != NULL) last = next + 2;
    snprintf(r->headers, sizeof r->headers, "%s", last);
    free(h);
    struct stat st;
    if (stat(tmp_path(body), &st) == 0) r->body = read_bytes(tmp_path(body), &r->len);
    unlink(tmp_path(hdr));
    unlink(tmp_path(body));
}

/* A response header's value (case-insensitive name), copied into a
 * static buffer; NULL when absent. */
const char *header(const response *r, const char *name) {
    static char value[4][1024];
    static int next;
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (!end) break;
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            char *out = value[next++ % 4];
            snprintf(out, sizeof value[0], "%.*s", (int)(end - v), v);
            return out;
        }
        line = end + 2;
    }
    return NULL;
}

/* A header that must be present, as an integer. */
int header_int(const response *r, const char *name) {
    const char *v = header(r, name);
    ck_assert_msg(v != NULL, "no %s header in:\n%s", name, r->headers);
    return atoi(v);
}

void assert_header(const response *r, const char *name, const char *want) {
    const char *got = header(r, name);
    ck_assert_msg(got != NULL, "no %s header in:\n%s", name, r->headers);
    ck_assert_msg(strcmp(got, want) == 0, "%s is '%s', want '%s'", name, got, want);
}

void assert_header_has(const response *r, const char *name, const char *part) {
    const char *got = header(r, name);
    ck_assert_msg(got != NULL, "no %s header in:\n%s", name, r->headers);
    ck_assert_msg(strstr(got, part) != NULL, "%s is '%s', lacks '%s'", name, got, part);
}

/* The response is a problem+json with this status and type slug. */
void assert_problem(const response *r, int status, const char *slug) {
    ck_assert_msg(r->status == status, "status %d, want %d; body: %.*s", r->status, status,
                  (int)r->len, r->body ? (const char *)r->body : "");
    assert_header(r, "Content-Type", "application/problem+json");
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body, r->len, 0, &je);
    ck_assert_msg(j != NULL, "problem body is not JSON: %s", je.text);
    char type[128];
    snprintf(type, sizeof type, "urn:e2gan:problem:%s", slug);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), type);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), status);
    ck_assert(json_string_length(json_object_get(j, "title")) > 0);
    ck_assert(json_string_length(json_object_get(j, "detail")) > 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), header(r, "X-Request-Id"));
    json_decref(j);
}

json_t *json_body(const response *r) {
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body, r->len, 0, &je);
    ck_assert_msg(j != NULL, "body is not JSON: %s", je.text);
    return j;
}

/* The response is an image of this format and size. */
void assert_image(const response *r, e2g_image_format fmt, int w, int h) {
    ck_assert_msg(r->status == 200, "status %d: %.*s", r->status, (int)r->len,
                  r->body ? (const char *)r->body : "");
    assert_header(r, "Content-Type", e2g_image_media_type(fmt));
    ck_assert_int_eq(e2g_image_sniff(r->body, r->len), fmt);
    e2g_image im = {0};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_decode(&im, r->body, r->len, 1L << 24, err) == 0, "%s", err);
    ck_assert_int_eq(im.width, w);
    ck_assert_int_eq(im.height, h);
    e2g_image_free(&im);
}

