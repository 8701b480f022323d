/* server_harness.h — shared by the server's integration tests: a temporary
 * folder (tmpdir) of fixtures, the real e2gan-server binary started on a
 * free loopback port with the PyTorch reference base model and stopped
 * with SIGTERM, and HTTP requests through curl whose results the tests
 * assert on.  Every helper fails the running Check test on error. */
#ifndef E2G_SERVER_HARNESS_H
#define E2G_SERVER_HARNESS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"

extern char tmpdir[64]; /* set by the test's fixture (mkdtemp) */
extern int server_port; /* the server that http() talks to */

/* Runs a shell command; it must succeed. */
void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* tmpdir/name (a rotating static buffer). */
const char *tmp_path(const char *name);
void write_bytes(const char *path, const void *data, size_t n);
/* A whole file, NUL-terminated (caller frees). */
uint8_t *read_bytes(const char *path, size_t *n);
/* A file of the PyTorch references ($E2G_REFS). */
const char *ref_path(const char *name);
/* The e2gan-server beside the e2gan CLI ($E2G_SERVER overrides). */
const char *server_binary(void);

/* Starts the server on the reference base model, tmpdir/adapters and
 * tmpdir/static, with `extra` flags, logging to `log`; waits until
 * /readyz answers 200 and returns its pid (port in *port). */
pid_t start_server(const char *extra, const char *log, int *port);
/* SIGTERM, then the exit status (or -1 when it had to be killed). */
int stop_server(pid_t pid);

/* Mounts a tmpfs of `size` (mount(8) syntax, e.g. "4m") on dir; 0, or -1
 * when this process may not mount (not root).  Fault tests fill it up. */
int mount_tmpfs(const char *dir, const char *size);
/* Detaches a tmpfs mounted on dir, if any (lazily: the server may still
 * hold files); fixtures' teardowns call it, so a failed test leaves none. */
void unmount_tmpfs(const char *dir);
/* Fills the file system holding dir: writes dir/filler until ENOSPC. */
void fill_disk(const char *dir);

typedef struct {
    int status;
    char headers[16384]; /* of the last response (after any 100 Continue) */
    uint8_t *body;
    size_t len;
} response;

void response_free(response *r);
/* Runs curl with `args` (a shell fragment; %PORT in it becomes
 * http://127.0.0.1:<server_port>) and fills r. */
void http(response *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* http() whose answer must be the problem (status, slug). */
void http_problem(int status, const char *slug, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A response header's value (case-insensitive name), or NULL. */
const char *header(const response *r, const char *name);
/* A header that must be present, as an integer. */
int header_int(const response *r, const char *name);
void assert_header(const response *r, const char *name, const char *want);
void assert_header_has(const response *r, const char *name, const char *part);
/* The response is a problem+json with this status and type slug. */
void assert_problem(const response *r, int status, const char *slug);
/* The body as JSON (must parse; caller decrefs). */
json_t *json_body(const response *r);
/* The response is an image of this format and size. */
void assert_image(const response *r, e2g_image_format fmt, int w, int h);

#endif
