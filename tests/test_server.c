/* test_server.c — e2gan-server end to end: the real binary on a free
 * loopback port (127.0.0.1, port 0), the PyTorch reference base model
 * (concepts base-a, base-b) and its adapter (lora-x), driven with curl
 * and a Python urllib client.  Every route of openapi.yaml and every
 * problem status is exercised with assertions on the status, the headers,
 * the problem JSON and the decoded output images; 16 concurrent edits of
 * different concepts must be batched; a small queue must refuse with 503
 * and Retry-After; SIGTERM must drain an edit in progress and exit 0. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "server_harness.h"
#include "testutil.h"

#define TOKEN "test-admin-token-0123456789"
#define ORIGIN "http://localhost:3000"

static pid_t server_pid;
static char server_log[128];

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A PNG whose IHDR claims 50000 × 50000 (and one tiny IDAT): decoding it
 * would allocate 7.5 GB. */
static void write_bomb_png(const char *path) {
    uint8_t png[8 + 25 + 12 + 12];
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    uint8_t *ihdr = png + 8;
    put_be32(ihdr, 13);
    memcpy(ihdr + 4, "IHDR", 4);
    put_be32(ihdr + 8, 50000);
    put_be32(ihdr + 12, 50000);
    ihdr[16] = 8, ihdr[17] = 2, ihdr[18] = 0, ihdr[19] = 0, ihdr[20] = 0;
    put_be32(ihdr + 21, png_crc32(ihdr + 4, 17));
    uint8_t *idat = ihdr + 25;
    put_be32(idat, 0);
    memcpy(idat + 4, "IDAT", 4);
    put_be32(idat + 8, png_crc32(idat + 4, 4));
    uint8_t *iend = idat + 12;
    put_be32(iend, 0);
    memcpy(iend + 4, "IEND", 4);
    put_be32(iend + 8, png_crc32(iend + 4, 4));
    write_bytes(path, png, sizeof png);
}

/* A JPEG of a w × h gradient stored sideways with EXIF orientation 6
 * (rotate 90° clockwise to view): the upright picture is h × w. */
static void write_exif_jpeg(const char *path, int w, int h) {
    e2g_image im = {w, h, malloc((size_t)w * h * 3)};
    for (int i = 0; i < w * h * 3; i++) im.rgb[i] = (uint8_t)(i * 7);
    uint8_t *jpeg;
    size_t n;
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_encode(&jpeg, &n, &im, E2G_IMAGE_JPEG, 90, err) == 0, "%s", err);
    e2g_image_free(&im);
    /* APP1: "Exif\0\0", big-endian TIFF, IFD0 with one entry:
     * Orientation (0x0112), SHORT, count 1, value 6. */
    static const uint8_t app1[] = {0xFF, 0xE1, 0x00, 0x22, 'E',  'x',  'i',  'f',  0,    0,
                                   'M',  'M',  0x00, 0x2A, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01,
                                   0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    uint8_t *out = malloc(n + sizeof app1);
    memcpy(out, jpeg, 2);
    memcpy(out + 2, app1, sizeof app1);
    memcpy(out + 2 + sizeof app1, jpeg + 2, n - 2);
    write_bytes(path, out, n + sizeof app1);
    free(out);
    free(jpeg);
}

/* A w × h noise-free gradient image as PNG. */
static void write_png(const char *path, int w, int h) {
    e2g_image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im.rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / w), p[1] = (uint8_t)(y * 255 / h), p[2] = (uint8_t)((x + y) & 255);
        }
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_write_file(path, &im, 90, err) == 0, "%s", err);
    e2g_image_free(&im);
}

static void make_fixture_files(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_server_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    sh("mkdir -p %s %s/sub", tmp_path("adapters"), tmp_path("static"));
    sh("cp %s %s/lora-x.safetensors", ref_path("g_lora_default_ngf16_adapter.safetensors"),
       tmp_path("adapters"));
    write_bytes(tmp_path("static/index.html"), "<!doctype html><title>e2gan</title>", 35);
    write_bytes(tmp_path("static/app.js"), "console.log(1);", 15);
    write_bytes(tmp_path("static/style.css"), "body{}", 6);
    write_bytes(tmp_path("static/logo.svg"), "<svg/>", 6);
    write_bytes(tmp_path("static/data.json"), "{}", 2);
    write_bytes(tmp_path("static/sub/page.html"), "<p>sub</p>", 10);
    write_bytes(tmp_path("static/.secret"), "hidden", 6);
    write_bytes(tmp_path("outside.txt"), "outside", 7);
    sh("ln -s ../outside.txt %s", tmp_path("static/link.txt"));
    sh("ln -s /etc/passwd %s", tmp_path("static/passwd"));

    char err[E2G_ERR_LEN];
    e2g_image photo = {0};
    char photo_path[1024];
    snprintf(photo_path, sizeof photo_path, "%s/tests/data/chelsea.png", test_source());
    ck_assert_msg(e2g_image_read_file(&photo, photo_path, 1L << 24, err) == 0, "%s", err);
    ck_assert_msg(e2g_image_write_file(tmp_path("photo.png"), &photo, 90, err) == 0, "%s", err);
    ck_assert_msg(e2g_image_write_file(tmp_path("photo.jpg"), &photo, 90, err) == 0, "%s", err);
    ck_assert_msg(e2g_image_write_file(tmp_path("photo.webp"), &photo, 90, err) == 0, "%s", err);
    e2g_image_free(&photo);
    size_t n;
    uint8_t *jpg = read_bytes(tmp_path("photo.jpg"), &n);
    write_bytes(tmp_path("truncated.jpg"), jpg, n / 2);
    free(jpg);
    uint8_t *webp = read_bytes(tmp_path("photo.webp"), &n);
    write_bytes(tmp_path("truncated.webp"), webp, n / 2);
    free(webp);
    write_bomb_png(tmp_path("bomb.png"));
    write_exif_jpeg(tmp_path("exif6.jpg"), 48, 32);
    write_png(tmp_path("big.png"), 512, 512);
    uint8_t noise[300];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)(i * 37 + 11);
    write_bytes(tmp_path("noise.bin"), noise, sizeof noise);
    write_bytes(tmp_path("empty.bin"), "", 0);
    uint8_t *adapter = read_bytes(ref_path("g_lora_default_ngf16_adapter.safetensors"), &n);
    write_bytes(tmp_path("corrupt.safetensors"), adapter, n - 100);
    free(adapter);
    /* Larger than the 2 MiB max_body of the main server. */
    uint8_t *large = calloc(3 << 20, 1);
    memcpy(large, "\x89PNG\r\n\x1a\n", 8);
    write_bytes(tmp_path("large.bin"), large, 3 << 20);
    free(large);
}

static void remove_fixture_files(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* The main server: admin token, CORS for one origin, small body limit,
 * batching with room to gather concurrent requests. */
static void main_setup(void) {
    make_fixture_files();
    snprintf(server_log, sizeof server_log, "%s/server.log", tmpdir);
    server_pid = start_server("--admin-token " TOKEN " --cors-origins " ORIGIN
                              " --max-body 2M --max-batch 8 --batch-delay-us 60000 --request-timeout-ms 120000",
                              server_log, &server_port);
}

static void main_teardown(void) {
    int rc = stop_server(server_pid);
    if (rc != 0) fprintf(stderr, "server exit status %d\n", rc);
    remove_fixture_files();
}

#define PHOTO_W 203
#define PHOTO_H 157
#define EDIT "-X POST --data-binary @%s -H 'Content-Type: %s' '%%PORT/v1/edits?%s'"

/* ---- operations and files ------------------------------------------------------ */

START_TEST(test_health_ready_openapi) {
    response r;
    http(&r, "%%PORT/healthz");
    ck_assert_int_eq(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    json_t *j = json_body(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    response_free(&r);

    http(&r, "%%PORT/readyz");
    ck_assert_int_eq(r.status, 200);
    j = json_body(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ready");
    ck_assert_str_eq(json_string_value(json_object_get(j, "backend")), "cpu"); /* E2GAN_DEVICE=cpu */
    ck_assert(json_is_false(json_object_get(j, "device_dead")));
    ck_assert_ptr_null(json_object_get(j, "device_error"));
    json_decref(j);
    response_free(&r);

    http(&r, "-I %%PORT/healthz"); /* curl -I writes the headers as the body */
    ck_assert_int_eq(r.status, 200);
    assert_header(&r, "Content-Length", "15");
    ck_assert_ptr_null(memmem(r.body, r.len, "\"status\"", 8));
    response_free(&r);

    http(&r, "%%PORT/openapi.yaml");
    ck_assert_int_eq(r.status, 200);
    assert_header(&r, "Content-Type", "application/yaml");
    ck_assert(r.len > 1000 && strncmp((const char *)r.body, "openapi: 3.1", 12) == 0);
    response_free(&r);
}
END_TEST

START_TEST(test_static_files) {
    static const struct {
        const char *path, *type, *starts;
    } ok[] = {
        {"/", "text/html; charset=utf-8", "<!doctype html>"},
        {"/index.html", "text/html; charset=utf-8", "<!doctype html>"},
        {"/app.js", "text/javascript; charset=utf-8", "console.log"},
        {"/static/app.js", "text/javascript; charset=utf-8", "console.log"},
        {"/style.css", "text/css; charset=utf-8", "body"},
        {"/logo.svg", "image/svg+xml", "<svg"},
        {"/data.json", "application/json", "{}"},
        {"/sub/page.html", "text/html; charset=utf-8", "<p>sub"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        response r;
        http(&r, "'%%PORT%s'", ok[i].path);
        ck_assert_msg(r.status == 200, "%s: %d", ok[i].path, r.status);
        assert_header(&r, "Content-Type", ok[i].type);
        assert_header(&r, "X-Content-Type-Options", "nosniff");
        ck_assert(strncmp((const char *)r.body, ok[i].starts, strlen(ok[i].starts)) == 0);
        response_free(&r);
    }
    /* Traversal, hidden files, links out of the folder, folders. */
    static const char *const refused[] = {
        "/../outside.txt", "/static/../../outside.txt", "/%2e%2e/outside.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt", "/..%2foutside.txt", "/.secret", "/sub/",
        "/link.txt", "/passwd", "/missing.html", "/sub//page.html", "/sub\\page.html",
        "/%2fetc%2fpasswd", "/%ff%c0%80.html", /* not UTF-8: the log line must stay JSON */
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        response r;
        http(&r, "--path-as-is '%%PORT%s'", refused[i]);
        assert_problem(&r, 404, "not-found");
        ck_assert(!memmem(r.body, r.len, "root:", 5));
        response_free(&r);
    }
}
END_TEST

START_TEST(test_unknown_routes_and_methods) {
    response r;
    http(&r, "%%PORT/v1/nothing");
    assert_problem(&r, 404, "not-found");
    response_free(&r);
    http(&r, "-X POST %%PORT/healthz");
    assert_problem(&r, 405, "method-not-allowed");
    assert_header(&r, "Allow", "GET, HEAD, OPTIONS");
    response_free(&r);
    http(&r, "%%PORT/v1/edits");
    assert_problem(&r, 405, "method-not-allowed");
    assert_header(&r, "Allow", "POST, OPTIONS");
    response_free(&r);
    http(&r, "-X POST %%PORT/v1/concepts");
    assert_problem(&r, 405, "method-not-allowed");
    assert_header(&r, "Allow", "GET, HEAD, OPTIONS");
    response_free(&r);
    http(&r, "-X PATCH %%PORT/v1/concepts/lora-x");
    assert_problem(&r, 405, "method-not-allowed");
    assert_header(&r, "Allow", "GET, HEAD, PUT, DELETE, OPTIONS");
    response_free(&r);
    http(&r, "-X DELETE %%PORT/index.html");
    assert_problem(&r, 404, "not-found");
    response_free(&r);
}
END_TEST

/* ---- request ids, CORS ------------------------------------------------------------ */

START_TEST(test_request_id) {
    response r;
    http(&r, "-H 'X-Request-Id: client-id_1.2:3' %%PORT/healthz");
    assert_header(&r, "X-Request-Id", "client-id_1.2:3");
    response_free(&r);
    /* Unsafe characters are dropped. */
    http(&r, "-H 'X-Request-Id: a<b>\"c d;e' %%PORT/v1/concepts/nope");
    assert_header(&r, "X-Request-Id", "abcde");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    /* Too long: cut to 64. */
    char longid[100];
    memset(longid, 'x', 90);
    longid[90] = '\0';
    http(&r, "-H 'X-Request-Id: %s' %%PORT/healthz", longid);
    longid[64] = '\0';
    assert_header(&r, "X-Request-Id", longid);
    response_free(&r);
    /* Absent or empty once sanitised: 32 random hex digits, never twice. */
    char first[64];
    http(&r, "%%PORT/healthz");
    snprintf(first, sizeof first, "%s", header(&r, "X-Request-Id"));
    ck_assert_uint_eq(strlen(first), 32);
    ck_assert_uint_eq(strspn(first, "0123456789abcdef"), 32);
    response_free(&r);
    http(&r, "-H 'X-Request-Id: <>' %%PORT/healthz");
    ck_assert_uint_eq(strlen(header(&r, "X-Request-Id")), 32);
    ck_assert_str_ne(header(&r, "X-Request-Id"), first);
    response_free(&r);
}
END_TEST

START_TEST(test_cors) {
    response r;
    http(&r, "-X OPTIONS -H 'Origin: " ORIGIN "' -H 'Access-Control-Request-Method: PUT' "
             "-H 'Access-Control-Request-Headers: authorization' %%PORT/v1/concepts/x");
    ck_assert_int_eq(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    assert_header(&r, "Access-Control-Allow-Methods", "GET, HEAD, PUT, DELETE, OPTIONS");
    assert_header_has(&r, "Access-Control-Allow-Headers", "Authorization");
    assert_header_has(&r, "Access-Control-Allow-Headers", "Content-Type");
    assert_header(&r, "Access-Control-Max-Age", "600");
    assert_header_has(&r, "Vary", "Origin");
    response_free(&r);

    http(&r, "-X OPTIONS -H 'Origin: " ORIGIN "' -H 'Access-Control-Request-Method: POST' "
             "%%PORT/v1/edits");
    ck_assert_int_eq(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Methods", "POST, OPTIONS");
    response_free(&r);

    http(&r, "-X OPTIONS -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST' "
             "%%PORT/v1/edits");
    assert_problem(&r, 403, "origin-not-allowed");
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
    response_free(&r);

    http(&r, "-X OPTIONS %%PORT/v1/concepts");
    ck_assert_int_eq(r.status, 204);
    assert_header(&r, "Allow", "GET, HEAD, OPTIONS");
    response_free(&r);

    http(&r, "-H 'Origin: " ORIGIN "' %%PORT/v1/concepts");
    ck_assert_int_eq(r.status, 200);
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    assert_header_has(&r, "Access-Control-Expose-Headers", "X-E2gan-Batch-Size");
    assert_header_has(&r, "Access-Control-Expose-Headers", "Server-Timing");
    assert_header_has(&r, "Access-Control-Expose-Headers", "X-Request-Id");
    response_free(&r);

    http(&r, "-H 'Origin: https://evil.example' %%PORT/v1/concepts");
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
    response_free(&r);
}
END_TEST

/* ---- concepts ---------------------------------------------------------------------- */

START_TEST(test_concepts_read) {
    response r;
    http(&r, "%%PORT/v1/concepts");
    ck_assert_int_eq(r.status, 200);
    json_t *j = json_body(&r);
    json_t *list = json_object_get(j, "concepts");
    ck_assert(json_is_array(list));
    int base = 0, adapter = 0;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        if (strcmp(name, "base-a") == 0 || strcmp(name, "base-b") == 0) base += strcmp(kind, "base") == 0;
        if (strcmp(name, "lora-x") == 0) adapter += strcmp(kind, "adapter") == 0;
    }
    ck_assert_int_eq(base, 2);
    ck_assert_int_eq(adapter, 1);
    json_decref(j);
    response_free(&r);

    http(&r, "%%PORT/v1/concepts/lora-x");
    ck_assert_int_eq(r.status, 200);
    j = json_body(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "name")), "lora-x");
    ck_assert_str_eq(json_string_value(json_object_get(j, "kind")), "adapter");
    json_decref(j);
    response_free(&r);

    http(&r, "%%PORT/v1/concepts/base-b");
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    http(&r, "%%PORT/v1/concepts/nope");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    static const char *const bad_names[] = {"..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", ".hidden",
                                            "a%20b", "x/y", "%00", ""};
    for (size_t k = 0; k < sizeof bad_names / sizeof bad_names[0]; k++) {
        http(&r, "--path-as-is '%%PORT/v1/concepts/%s'", bad_names[k]);
        assert_problem(&r, 400, "bad-name");
        response_free(&r);
    }
}
END_TEST

START_TEST(test_admin) {
    const char *adapter = ref_path("g_lora_default_ngf16_adapter.safetensors");
    response r;
    /* No token, a wrong one, another scheme. */
    http(&r, "-X PUT --data-binary @%s -H 'Content-Type: application/octet-stream' %%PORT/v1/concepts/new-c",
         adapter);
    assert_problem(&r, 401, "unauthorized");
    assert_header_has(&r, "WWW-Authenticate", "Bearer");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s -H 'Authorization: Bearer wrong-token-0123456789' "
             "-H 'Content-Type: application/octet-stream' %%PORT/v1/concepts/new-c", adapter);
    assert_problem(&r, 401, "unauthorized");
    assert_header_has(&r, "WWW-Authenticate", "invalid_token");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s -H 'Authorization: Bearer " TOKEN "x' "
             "-H 'Content-Type: application/octet-stream' %%PORT/v1/concepts/new-c", adapter);
    assert_problem(&r, 401, "unauthorized");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s -H 'Authorization: Basic " TOKEN "' "
             "-H 'Content-Type: application/octet-stream' %%PORT/v1/concepts/new-c", adapter);
    assert_problem(&r, 401, "unauthorized");
    response_free(&r);
    http(&r, "-X DELETE %%PORT/v1/concepts/lora-x");
    assert_problem(&r, 401, "unauthorized");
    response_free(&r);

#define AUTH "-H 'Authorization: Bearer " TOKEN "' "
#define OCTET "-H 'Content-Type: application/octet-stream' "
    /* Bad uploads. */
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", tmp_path("corrupt.safetensors"));
    assert_problem(&r, 422, "bad-adapter");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c",
         ref_path("g_lora_default_ngf32_adapter.safetensors")); /* trained on another base */
    assert_problem(&r, 422, "bad-adapter");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", tmp_path("photo.png"));
    assert_problem(&r, 422, "bad-adapter");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", tmp_path("empty.bin"));
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH "-H 'Content-Type: text/plain' %%PORT/v1/concepts/new-c", adapter);
    assert_problem(&r, 415, "unsupported-media-type");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", tmp_path("large.bin"));
    assert_problem(&r, 413, "body-too-large");
    response_free(&r);
    static const char *const bad_names[] = {"..%2F..%2Ftmp%2Fx", "../x", ".x", "a%2Fb", "a%20b"};
    for (size_t k = 0; k < sizeof bad_names / sizeof bad_names[0]; k++) {
        http(&r, "--path-as-is -X PUT --data-binary @%s " AUTH OCTET "'%%PORT/v1/concepts/%s'", adapter,
             bad_names[k]);
        assert_problem(&r, 400, "bad-name");
        response_free(&r);
    }
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/base-a", adapter);
    assert_problem(&r, 409, "base-concept");
    response_free(&r);

    /* Create, replace, use, delete. */
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", adapter);
    ck_assert_msg(r.status == 201, "%d %.*s", r.status, (int)r.len, (const char *)r.body);
    assert_header(&r, "Location", "/v1/concepts/new-c");
    json_t *j = json_body(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "name")), "new-c");
    json_decref(j);
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH "%%PORT/v1/concepts/new-c", adapter); /* curl's default type */
    assert_problem(&r, 415, "unsupported-media-type");
    response_free(&r);
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c", adapter);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    http(&r, "%%PORT/v1/concepts/new-c");
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=new-c");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, "-X DELETE " AUTH "%%PORT/v1/concepts/new-c");
    ck_assert_int_eq(r.status, 204);
    ck_assert_uint_eq(r.len, 0);
    response_free(&r);
    http(&r, "-X DELETE " AUTH "%%PORT/v1/concepts/new-c");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    http(&r, "%%PORT/v1/concepts/new-c");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=new-c");
    assert_problem(&r, 422, "unknown-concept");
    response_free(&r);
    http(&r, "-X DELETE " AUTH "%%PORT/v1/concepts/base-a");
    assert_problem(&r, 409, "base-concept");
    response_free(&r);
    http(&r, "--path-as-is -X DELETE " AUTH "'%%PORT/v1/concepts/..%%2Fx'");
    assert_problem(&r, 400, "bad-name");
    response_free(&r);
    struct stat st;
    ck_assert_int_eq(stat(tmp_path("adapters/new-c.safetensors"), &st), -1);
    ck_assert_int_eq(stat(tmp_path("adapters/lora-x.safetensors"), &st), 0);
}
END_TEST

/* ---- edits ------------------------------------------------------------------------- */

START_TEST(test_edit_formats) {
    response r;
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    assert_header(&r, "X-E2gan-Concept", "base-a");
    assert_header(&r, "X-E2gan-Strength", "1");
    ck_assert_int_ge(header_int(&r, "X-E2gan-Batch-Size"), 1);
    const char *timing = header(&r, "Server-Timing");
    ck_assert_ptr_nonnull(timing);
    static const char *const stages[] = {"decode;dur=", "queue;dur=", "compute;dur=", "encode;dur=", "total;dur="};
    for (int i = 0; i < 5; i++) ck_assert_msg(strstr(timing, stages[i]), "Server-Timing '%s' lacks %s", timing, stages[i]);
    ck_assert(atof(strstr(timing, "compute;dur=") + 12) > 0);
    assert_header(&r, "Cache-Control", "no-store");
    response_free(&r);

    /* The input's format by default; ?format; Accept with q-values. */
    http(&r, EDIT, tmp_path("photo.jpg"), "image/jpeg", "concept=base-b");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-b&format=jpeg");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.jpg"), "application/octet-stream", "concept=base-b&format=png");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: image/png'", tmp_path("photo.jpg"), "image/jpeg", "concept=base-a");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: image/jpeg;q=0.4, image/png;q=0.9'", tmp_path("photo.jpg"), "image/jpeg",
         "concept=base-a");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: text/html, image/*;q=0.5, image/png;q=0.1'", tmp_path("photo.png"),
         "image/png", "concept=base-a");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: text/html, application/json'", tmp_path("photo.png"), "image/png",
         "concept=base-a");
    assert_problem(&r, 406, "not-acceptable");
    response_free(&r);

    /* Quality changes the JPEG's size. */
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a&format=jpeg&quality=5");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    size_t small = r.len;
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a&format=jpeg&quality=100");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    ck_assert_msg(r.len > 2 * small, "quality 100: %zu bytes, quality 5: %zu", r.len, small);
    response_free(&r);

    /* EXIF orientation 6: stored 48 x 32, upright 32 x 48. */
    http(&r, EDIT, tmp_path("exif6.jpg"), "image/jpeg", "concept=base-a&format=png");
    assert_image(&r, E2G_IMAGE_PNG, 32, 48);
    response_free(&r);
}
END_TEST

/* WebP in and out: as the body's type, by ?format, by Accept (with
 * q-values), in a form; truncated WebP is a 422. */
START_TEST(test_edit_webp) {
    response r;
    http(&r, EDIT, tmp_path("photo.webp"), "image/webp", "concept=base-a");
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    assert_header(&r, "Content-Disposition", "inline; filename=\"edited.webp\"");
    response_free(&r);
    http(&r, EDIT " -H 'Accept: image/webp'", tmp_path("photo.jpg"), "image/jpeg", "concept=lora-x");
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: image/webp;q=0.5, image/png;q=0.9'", tmp_path("photo.webp"), "image/webp",
         "concept=base-b");
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT " -H 'Accept: image/*'", tmp_path("photo.webp"), "application/octet-stream", "concept=base-b");
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.webp"), "image/webp", "concept=base-a&format=jpeg");
    assert_image(&r, E2G_IMAGE_JPEG, PHOTO_W, PHOTO_H);
    response_free(&r);
    http(&r, "-F 'image=@%s;type=image/webp' -F concept=base-a %%PORT/v1/edits", tmp_path("photo.webp"));
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    response_free(&r);

    /* Quality changes the WebP's size. */
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a&format=webp&quality=5");
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    size_t small = r.len;
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a&format=WebP&quality=100");
    assert_image(&r, E2G_IMAGE_WEBP, PHOTO_W, PHOTO_H);
    ck_assert_msg(r.len > 2 * small, "quality 100: %zu bytes, quality 5: %zu", r.len, small);
    response_free(&r);

    http(&r, EDIT, tmp_path("truncated.webp"), "image/webp", "concept=base-a");
    assert_problem(&r, 422, "bad-image");
    response_free(&r);
}
END_TEST

/* Strength and blends change the output; strength 0 keeps only the
 * adapter's embedding, so it differs from strength 1 too. */
START_TEST(test_edit_concepts) {
    response a, b, c, d;
    http(&a, EDIT, tmp_path("photo.png"), "image/png", "concept=lora-x");
    assert_image(&a, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    http(&b, EDIT, tmp_path("photo.png"), "image/png", "concept=lora-x&strength=0.25");
    assert_image(&b, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    assert_header(&b, "X-E2gan-Strength", "0.25");
    http(&c, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a:0.7,lora-x:0.3");
    assert_image(&c, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    assert_header(&c, "X-E2gan-Concept", "base-a:0.7,lora-x:0.3");
    http(&d, EDIT, tmp_path("photo.png"), "image/png", "concept=lora-x");
    ck_assert(a.len != b.len || memcmp(a.body, b.body, a.len) != 0);
    ck_assert(a.len != c.len || memcmp(a.body, c.body, a.len) != 0);
    /* The same request twice gives the same image. */
    ck_assert(a.len == d.len && memcmp(a.body, d.body, a.len) == 0);
    response_free(&a);
    response_free(&b);
    response_free(&c);
    response_free(&d);
}
END_TEST

START_TEST(test_edit_errors) {
    response r;
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "");
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=nope");
    assert_problem(&r, 422, "unknown-concept");
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a:0.5,nope:0.5");
    assert_problem(&r, 422, "unknown-concept");
    response_free(&r);
    http(&r, EDIT, tmp_path("photo.png"), "image/png", "concept=base-a:x,lora-x");
    ck_assert_int_eq(r.status, 400);
    response_free(&r);
    static const char *const bad_params[] = {"concept=base-a&strength=3", "concept=base-a&strength=-0.1",
                                             "concept=base-a&strength=abc", "concept=base-a&strength=nan",
                                             "concept=base-a&quality=0", "concept=base-a&quality=101",
                                             "concept=base-a&quality=9x", "concept=base-a&format=gif"};
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        http(&r, EDIT, tmp_path("photo.png"), "image/png", bad_params[i]);
        assert_problem(&r, 400, "bad-request");
        response_free(&r);
    }
    http(&r, EDIT, tmp_path("photo.png"), "text/plain", "concept=base-a");
    assert_problem(&r, 415, "unsupported-media-type");
    response_free(&r);
    http(&r, "-X POST --data-binary @%s '%%PORT/v1/edits?concept=base-a'", tmp_path("photo.png"));
    assert_problem(&r, 415, "unsupported-media-type"); /* curl's form-urlencoded default */
    response_free(&r);
    http(&r, EDIT, tmp_path("noise.bin"), "image/png", "concept=base-a");
    assert_problem(&r, 415, "unsupported-media-type");
    response_free(&r);
    http(&r, EDIT, tmp_path("empty.bin"), "image/jpeg", "concept=base-a");
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, EDIT, tmp_path("truncated.jpg"), "image/jpeg", "concept=base-a");
    assert_problem(&r, 422, "bad-image");
    response_free(&r);
    http(&r, EDIT, tmp_path("bomb.png"), "image/png", "concept=base-a");
    assert_problem(&r, 413, "too-many-pixels");
    response_free(&r);
    /* Over max_body: refused from Content-Length, and when chunked. */
    http(&r, EDIT, tmp_path("large.bin"), "image/png", "concept=base-a");
    assert_problem(&r, 413, "body-too-large");
    response_free(&r);
    http(&r, EDIT " -H 'Transfer-Encoding: chunked'", tmp_path("large.bin"), "image/png", "concept=base-a");
    assert_problem(&r, 413, "body-too-large");
    response_free(&r);
    /* The server is still there. */
    http(&r, "%%PORT/healthz");
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
}
END_TEST

START_TEST(test_multipart) {
    response r;
    http(&r, "-F 'image=@%s;type=image/png' -F concept=lora-x -F strength=0.5 %%PORT/v1/edits", tmp_path("photo.png"));
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    assert_header(&r, "X-E2gan-Concept", "lora-x");
    assert_header(&r, "X-E2gan-Strength", "0.5");
    response_free(&r);
    /* A query parameter wins over a form field. */
    http(&r, "-F 'image=@%s' -F concept=nope -F format=png '%%PORT/v1/edits?concept=base-b'", tmp_path("photo.jpg"));
    assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
    assert_header(&r, "X-E2gan-Concept", "base-b");
    response_free(&r);
    http(&r, "-F concept=base-a %%PORT/v1/edits");
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, "-F 'image=@%s' -F 'image=@%s' -F concept=base-a %%PORT/v1/edits", tmp_path("photo.png"),
         tmp_path("photo.png"));
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, "-F 'image=@%s' -F concept=base-a %%PORT/v1/edits", tmp_path("truncated.jpg"));
    assert_problem(&r, 422, "bad-image");
    response_free(&r);
    /* Malformed bodies and Content-Types. */
    http(&r, "-X POST --data-binary @%s -H 'Content-Type: multipart/form-data; boundary=zzz' "
             "'%%PORT/v1/edits?concept=base-a'", tmp_path("photo.png"));
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    http(&r, "-X POST --data-binary @%s -H 'Content-Type: multipart/form-data' "
             "'%%PORT/v1/edits?concept=base-a'", tmp_path("photo.png"));
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
    static const char cut[] = "--zzz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n\x89PNG\r\n";
    write_bytes(tmp_path("cut.form"), cut, sizeof cut - 1);
    http(&r, "-X POST --data-binary @%s -H 'Content-Type: multipart/form-data; boundary=\"zzz\"' "
             "'%%PORT/v1/edits?concept=base-a'", tmp_path("cut.form"));
    assert_problem(&r, 400, "bad-request");
    response_free(&r);
}
END_TEST

/* A second client: Python's urllib with a hand-built multipart body,
 * a preamble and a quoted boundary. */
START_TEST(test_python_client) {
    const char *script = tmp_path("client.py");
    FILE *f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fputs("import sys, urllib.error, urllib.request\n"
          "port, image, out = sys.argv[1], sys.argv[2], sys.argv[3]\n"
          "boundary = 'py boundary:42'\n"
          "data = open(image, 'rb').read()\n"
          "body = (b'preamble to ignore\\r\\n'\n"
          "        b'--' + boundary.encode() + b'\\r\\n'\n"
          "        b'Content-Disposition: form-data; name=\"concept\"\\r\\n\\r\\nbase-a:0.5,lora-x:0.5\\r\\n'\n"
          "        b'--' + boundary.encode() + b'\\r\\n'\n"
          "        b'Content-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\\r\\n'\n"
          "        b'Content-Type: image/jpeg\\r\\n\\r\\n' + data + b'\\r\\n'\n"
          "        b'--' + boundary.encode() + b'--\\r\\n')\n"
          "req = urllib.request.Request('http://127.0.0.1:%s/v1/edits?format=png' % port, data=body,\n"
          "    headers={'Content-Type': 'multipart/form-data; boundary=\"%s\"' % boundary,\n"
          "             'X-Request-Id': 'python-client-1'})\n"
          "with urllib.request.urlopen(req, timeout=60) as resp:\n"
          "    assert resp.status == 200, resp.status\n"
          "    assert resp.headers['Content-Type'] == 'image/png', resp.headers['Content-Type']\n"
          "    assert resp.headers['X-Request-Id'] == 'python-client-1'\n"
          "    assert resp.headers['X-E2gan-Concept'] == 'base-a:0.5,lora-x:0.5'\n"
          "    open(out, 'wb').write(resp.read())\n"
          "try:\n"
          "    urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:%s/v1/edits?concept=base-a' % port,\n"
          "        data=b'--x\\r\\nbroken', headers={'Content-Type': 'multipart/form-data; boundary=x'}), timeout=60)\n"
          "    sys.exit('a broken form was accepted')\n"
          "except urllib.error.HTTPError as e:\n"
          "    assert e.code == 400 and e.headers['Content-Type'] == 'application/problem+json', e.code\n"
          "print('ok')\n",
          f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %d %s %s 2>&1", script, server_port, tmp_path("photo.jpg"),
             tmp_path("py_out.png"));
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "python client: %s", out);
    ck_assert_str_eq(out, "ok\n");
    e2g_image im = {0};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_read_file(&im, tmp_path("py_out.png"), 1L << 24, err) == 0, "%s", err);
    ck_assert_int_eq(im.width, PHOTO_W);
    ck_assert_int_eq(im.height, PHOTO_H);
    e2g_image_free(&im);
}
END_TEST

/* 16 edits of four concepts at once: all 200, batched (some batch of more
 * than one image), each equal to the same edit made alone. */
START_TEST(test_concurrent_batching) {
    static const char *const concepts[4] = {"base-a", "base-b", "lora-x", "base-a:0.5,lora-x:0.5"};
    char cmd[8192] = "";
    size_t len = 0;
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len,
                                "curl -s --max-time 120 -o %s/par%d.png -D %s/par%d.h -w '%%{http_code}' "
                                "-X POST --data-binary @%s -H 'Content-Type: image/png' "
                                "'http://127.0.0.1:%d/v1/edits?concept=%s' > %s/par%d.code & ",
                                tmpdir, i, tmpdir, i, tmp_path("photo.png"), server_port, concepts[i % 4],
                                tmpdir, i);
    snprintf(cmd + len, sizeof cmd - len, "wait");
    sh("%s", cmd);
    int max_batch = 0;
    for (int i = 0; i < 16; i++) {
        char name[64];
        size_t n;
        snprintf(name, sizeof name, "par%d.code", i);
        char *code = (char *)read_bytes(tmp_path(name), &n);
        ck_assert_msg(strcmp(code, "200") == 0, "request %d: %s", i, code);
        free(code);
        response r = {0};
        snprintf(name, sizeof name, "par%d.h", i);
        char *h = (char *)read_bytes(tmp_path(name), &n);
        snprintf(r.headers, sizeof r.headers, "%s", h);
        free(h);
        snprintf(name, sizeof name, "par%d.png", i);
        r.status = 200;
        r.body = read_bytes(tmp_path(name), &r.len);
        assert_image(&r, E2G_IMAGE_PNG, PHOTO_W, PHOTO_H);
        assert_header(&r, "X-E2gan-Concept", concepts[i % 4]);
        int b = header_int(&r, "X-E2gan-Batch-Size");
        ck_assert(b >= 1 && b <= 8);
        if (b > max_batch) max_batch = b;
        /* The same edit alone gives the same pixels (within one level:
         * the engine's kernels may differ with the batch size). */
        if (i < 4) {
            response alone;
            char query[128];
            snprintf(query, sizeof query, "concept=%s", concepts[i]);
            http(&alone, EDIT, tmp_path("photo.png"), "image/png", query);
            e2g_image x = {0}, y = {0};
            char err[E2G_ERR_LEN];
            ck_assert(e2g_image_decode(&x, r.body, r.len, 1L << 24, err) == 0);
            ck_assert(e2g_image_decode(&y, alone.body, alone.len, 1L << 24, err) == 0);
            int worst = 0;
            for (size_t k = 0; k < (size_t)PHOTO_W * PHOTO_H * 3; k++) {
                int d = abs((int)x.rgb[k] - (int)y.rgb[k]);
                if (d > worst) worst = d;
            }
            ck_assert_msg(worst <= 1, "%s: batched and alone differ by %d", concepts[i], worst);
            e2g_image_free(&x);
            e2g_image_free(&y);
            response_free(&alone);
        }
        response_free(&r);
    }
    ck_assert_msg(max_batch > 1, "16 concurrent requests never shared a batch");
}
END_TEST

/* The value of a series (name with its labels) in exposition text. */
static long metric(const char *text, const char *series) {
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", series);
    const char *at = strstr(text, needle);
    ck_assert_msg(at != NULL, "/metrics lacks %s", series);
    return atol(at + strlen(needle));
}

START_TEST(test_metrics_and_logs) {
    response r;
    http(&r, EDIT " -H 'X-Request-Id: metrics-probe-7'", tmp_path("photo.png"), "image/png", "concept=lora-x");
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    http(&r, "%%PORT/v1/concepts/nope");
    response_free(&r);
    http(&r, "%%PORT/metrics");
    ck_assert_int_eq(r.status, 200);
    assert_header_has(&r, "Content-Type", "text/plain; version=0.0.4");
    const char *text = (const char *)r.body;
    static const char *const series[] = {
        "e2gan_http_requests_total{route=\"edits\",code=\"200\"} ",
        "e2gan_http_requests_total{route=\"concept\",code=\"404\"} ",
        "e2gan_http_request_duration_seconds_bucket{route=\"edits\",le=\"+Inf\"} ",
        "e2gan_queue_wait_seconds_bucket{le=\"0.001\"} ",
        "e2gan_queue_wait_seconds_count ",
        "e2gan_compute_seconds_bucket{le=\"+Inf\"} ",
        "e2gan_compute_seconds_sum ",
        "e2gan_batch_size_bucket{le=\"1\"} ",
        "e2gan_batch_size_bucket{le=\"+Inf\"} ",
        "e2gan_batch_size_count ",
        "e2gan_queue_depth 0",
        "e2gan_requests_in_flight 1",
        "e2gan_ready 1",
        "e2gan_device_dead 0",
        "e2gan_adapter_cache_hits_total ",
        "e2gan_adapter_cache_misses_total ",
        "e2gan_adapter_cache_bytes ",
        "# TYPE e2gan_compute_seconds histogram",
        "# TYPE e2gan_http_requests_total counter",
    };
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
        ck_assert_msg(strstr(text, series[i]), "/metrics lacks '%s'", series[i]);
    ck_assert_int_ge(metric(text, "e2gan_http_requests_total{route=\"edits\",code=\"200\"}"), 1);
    ck_assert_int_ge(metric(text, "e2gan_adapter_cache_hits_total") + metric(text, "e2gan_adapter_cache_misses_total"), 1);
    ck_assert_int_gt(metric(text, "e2gan_adapter_cache_bytes"), 0);
    ck_assert_int_ge(metric(text, "e2gan_batches_total"), 1);
    ck_assert_int_eq(metric(text, "e2gan_batch_size_count"), metric(text, "e2gan_batches_total"));
    response_free(&r);

    /* One JSON line per request, with the request id. */
    size_t n;
    char *log = (char *)read_bytes(server_log, &n);
    int found = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(j != NULL, "log line is not JSON: %s", line);
        ck_assert(json_is_string(json_object_get(j, "time")));
        ck_assert(json_is_string(json_object_get(j, "level")));
        const char *id = json_string_value(json_object_get(j, "request_id"));
        if (id && strcmp(id, "metrics-probe-7") == 0) {
            found = 1;
            ck_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
            ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/v1/edits");
            ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 200);
            ck_assert(json_real_value(json_object_get(j, "ms")) > 0);
        }
        json_decref(j);
    }
    ck_assert_msg(found, "no log line for request metrics-probe-7");
    free(log);
}
END_TEST

/* ---- a server without admin token and with a tiny queue ------------------------------- */

START_TEST(test_admin_disabled_and_overload) {
    char log[128];
    snprintf(log, sizeof log, "%s/limits.log", tmpdir);
    server_pid = start_server("--queue-capacity 1 --max-batch 1 --batch-delay-us 0 "
                              "--request-timeout-ms 100 --retry-after-s 7",
                              log, &server_port);
    response r;
    http(&r, "-X PUT --data-binary @%s " AUTH OCTET "%%PORT/v1/concepts/new-c",
         ref_path("g_lora_default_ngf16_adapter.safetensors"));
    assert_problem(&r, 403, "admin-disabled");
    response_free(&r);
    http(&r, "-X DELETE " AUTH "%%PORT/v1/concepts/lora-x");
    assert_problem(&r, 403, "admin-disabled");
    response_free(&r);
    http(&r, "-X OPTIONS -H 'Origin: " ORIGIN "' %%PORT/v1/edits"); /* CORS is off here */
    assert_problem(&r, 403, "origin-not-allowed");
    response_free(&r);

    /* Six 512 x 512 edits at once: one runs, one waits (and times out),
     * the rest find the queue full. */
    char cmd[8192] = "";
    size_t len = 0;
    for (int i = 0; i < 6; i++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len,
                                "curl -s --max-time 60 -o %s/busy%d.json -D %s/busy%d.h "
                                "-X POST --data-binary @%s -H 'Content-Type: image/png' "
                                "'http://127.0.0.1:%d/v1/edits?concept=base-a' & ",
                                tmpdir, i, tmpdir, i, tmp_path("big.png"), server_port);
    snprintf(cmd + len, sizeof cmd - len, "wait");
    sh("%s", cmd);
    int full = 0, timeouts = 0;
    for (int i = 0; i < 6; i++) {
        char name[64];
        size_t n;
        response b = {0};
        snprintf(name, sizeof name, "busy%d.h", i);
        char *h = (char *)read_bytes(tmp_path(name), &n);
        snprintf(b.headers, sizeof b.headers, "%s", h);
        b.status = atoi(strchr(h, ' ') + 1);
        free(h);
        snprintf(name, sizeof name, "busy%d.json", i);
        b.body = read_bytes(tmp_path(name), &b.len);
        ck_assert_msg(b.status == 503 || b.status == 200, "status %d", b.status);
        if (b.status == 503) {
            assert_header(&b, "Retry-After", "7");
            full += strstr((const char *)b.body, "urn:e2gan:problem:queue-full") != NULL;
            timeouts += strstr((const char *)b.body, "urn:e2gan:problem:timeout") != NULL;
        }
        response_free(&b);
    }
    ck_assert_msg(full >= 1, "no request found the queue full");
    ck_assert_msg(timeouts >= 1, "no request timed out");
    http(&r, "%%PORT/metrics");
    const char *text = (const char *)r.body;
    ck_assert_int_ge(metric(text, "e2gan_queue_refused_total"), full);
    ck_assert_int_ge(metric(text, "e2gan_queue_timeouts_total"), timeouts);
    ck_assert_int_eq(metric(text, "e2gan_http_requests_total{route=\"edits\",code=\"503\"}"), full + timeouts);
    response_free(&r);
    ck_assert_int_eq(stop_server(server_pid), 0);
}
END_TEST

/* SIGTERM while an edit runs: the edit still gets its 200, the server
 * exits 0, and then nothing listens on the port. */
START_TEST(test_graceful_shutdown) {
    char log[128];
    snprintf(log, sizeof log, "%s/shutdown.log", tmpdir);
    server_pid = start_server("", log, &server_port);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 60 -o %s -w '%%{http_code}' -X POST --data-binary @%s "
             "-H 'Content-Type: image/png' 'http://127.0.0.1:%d/v1/edits?concept=base-a'",
             tmp_path("drained.png"), tmp_path("big.png"), server_port);
    FILE *edit = popen(cmd, "r");
    ck_assert_ptr_nonnull(edit);
    /* Wait until the edit is in the server (in flight: it and /metrics). */
    int in_flight = 0;
    for (int i = 0; i < 200 && !in_flight; i++) {
        response r;
        http(&r, "%%PORT/metrics");
        in_flight = strstr((const char *)r.body, "e2gan_requests_in_flight 2") != NULL;
        response_free(&r);
        if (!in_flight) usleep(10000);
    }
    ck_assert_msg(in_flight, "the edit never reached the server");
    ck_assert_int_eq(stop_server(server_pid), 0);
    char code[16] = "";
    size_t n = fread(code, 1, sizeof code - 1, edit);
    code[n] = '\0';
    pclose(edit);
    ck_assert_str_eq(code, "200");
    e2g_image im = {0};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_read_file(&im, tmp_path("drained.png"), 1L << 24, err) == 0, "%s", err);
    ck_assert_int_eq(im.width, 512);
    e2g_image_free(&im);
    snprintf(cmd, sizeof cmd, "curl -s -o /dev/null http://127.0.0.1:%d/healthz", server_port);
    int rc = system(cmd);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 7, "curl after shutdown: %d", rc);
    char *text = (char *)read_bytes(log, &n);
    ck_assert_ptr_nonnull(strstr(text, "shutting down"));
    ck_assert_ptr_nonnull(strstr(text, "\"msg\":\"stopped\""));
    free(text);
}
END_TEST

static void files_setup(void) { make_fixture_files(); }

int main(void) {
    Suite *s = suite_create("server");
    TCase *api = tcase_create("api");
    tcase_add_unchecked_fixture(api, main_setup, main_teardown);
    tcase_set_timeout(api, 300);
    tcase_add_test(api, test_health_ready_openapi);
    tcase_add_test(api, test_static_files);
    tcase_add_test(api, test_unknown_routes_and_methods);
    tcase_add_test(api, test_request_id);
    tcase_add_test(api, test_cors);
    tcase_add_test(api, test_concepts_read);
    tcase_add_test(api, test_admin);
    tcase_add_test(api, test_edit_formats);
    tcase_add_test(api, test_edit_webp);
    tcase_add_test(api, test_edit_concepts);
    tcase_add_test(api, test_edit_errors);
    tcase_add_test(api, test_multipart);
    tcase_add_test(api, test_python_client);
    tcase_add_test(api, test_concurrent_batching);
    tcase_add_test(api, test_metrics_and_logs);
    suite_add_tcase(s, api);

    TCase *lifecycle = tcase_create("lifecycle");
    tcase_add_unchecked_fixture(lifecycle, files_setup, remove_fixture_files);
    tcase_set_timeout(lifecycle, 300);
    tcase_add_test(lifecycle, test_admin_disabled_and_overload);
    tcase_add_test(lifecycle, test_graceful_shutdown);
    suite_add_tcase(s, lifecycle);
    return run_suite(s);
}
