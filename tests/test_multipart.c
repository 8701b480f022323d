/* test_multipart.c — the multipart/form-data parser (server/multipart.c):
 * boundaries from Content-Type (token, quoted, repeated, missing, bad
 * characters), bodies with and without a preamble, binary data holding
 * CR, LF and boundary-like bytes, quoted field names, and every malformed
 * shape the parser must refuse rather than guess at — including every
 * truncation of a valid body, which must fail cleanly (run under ASan or
 * valgrind to see the bounds hold). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "multipart.h"
#include "testutil.h"

#define MAX_PARTS 8

static int parse(const char *body, size_t n, const char *boundary, e2g_multipart_part *parts,
                 char *err) {
    return e2g_multipart_parse((const uint8_t *)body, n, boundary, parts, MAX_PARTS, err);
}

START_TEST(test_boundary_parameter) {
    char b[E2G_MULTIPART_BOUNDARY_MAX + 1], err[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=abc123", b, err), 0);
    ck_assert_str_eq(b, "abc123");
    ck_assert_int_eq(e2g_multipart_boundary("Multipart/Form-Data;boundary=----WebKitFormBoundaryX7", b, err), 0);
    ck_assert_str_eq(b, "----WebKitFormBoundaryX7");
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; charset=utf-8; BOUNDARY=\"a b:c?\"", b, err), 0);
    ck_assert_str_eq(b, "a b:c?");
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=\"q\\\"x\"", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/mixed; boundary=abc", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-datax; boundary=abc", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("image/png", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=a; boundary=b", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=\"unterminated", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=\"trailing \"", b, err), -1);
    ck_assert_int_eq(e2g_multipart_boundary("multipart/form-data; boundary=a<b", b, err), -1);
    char longb[120];
    snprintf(longb, sizeof longb, "multipart/form-data; boundary=%071d", 7);
    ck_assert_int_eq(e2g_multipart_boundary(longb, b, err), -1);
    snprintf(longb, sizeof longb, "multipart/form-data; boundary=%070d", 7);
    ck_assert_int_eq(e2g_multipart_boundary(longb, b, err), 0);
    ck_assert_uint_eq(strlen(b), 70);
}
END_TEST

START_TEST(test_two_parts) {
    static const char body[] =
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"concept\"\r\n"
        "\r\n"
        "winter\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=image; filename=\"cat \\\"1\\\".png\"\r\n"
        "Content-Type: image/png\r\n"
        "X-Other: ignored\r\n"
        "\r\n"
        "\x89PNG\r\n x--XyZ\r\n\r\n\x00\x01\r\n"
        "--XyZ--\r\n"
        "epilogue is ignored";
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    int n = parse(body, sizeof body - 1, "XyZ", parts, err);
    ck_assert_msg(n == 2, "%d parts: %s", n, err);
    ck_assert_str_eq(parts[0].name, "concept");
    ck_assert_uint_eq(parts[0].size, 6);
    ck_assert(memcmp(parts[0].data, "winter", 6) == 0);
    ck_assert_str_eq(parts[1].name, "image");
    ck_assert_str_eq(parts[1].filename, "cat \"1\".png");
    ck_assert_str_eq(parts[1].content_type, "image/png");
    static const char data[] = "\x89PNG\r\n x--XyZ\r\n\r\n\x00\x01";
    ck_assert_uint_eq(parts[1].size, sizeof data - 1);
    ck_assert(memcmp(parts[1].data, data, sizeof data - 1) == 0);
    int count;
    ck_assert_ptr_eq(e2g_multipart_find(parts, n, "image", &count), &parts[1]);
    ck_assert_int_eq(count, 1);
    ck_assert_ptr_null(e2g_multipart_find(parts, n, "missing", &count));
    ck_assert_int_eq(count, 0);
}
END_TEST

START_TEST(test_preamble_padding_and_empty_part) {
    static const char body[] =
        "This is the preamble.\r\n--b\r\nnot the boundary\r\n"
        "--b \t\r\n"
        "Content-Disposition: form-data; name=\"empty\"\r\n"
        "\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Disposition: form-data; name=\"x\"\r\n"
        "\r\n"
        "1\r\n"
        "--b--";
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    /* The preamble's own "--b" line is where the first part begins. */
    int n = parse(body, sizeof body - 1, "b", parts, err);
    ck_assert_int_eq(n, -1); /* "not the boundary" is no header line */
    static const char body2[] =
        "preamble\r\n"
        "--b \t\r\n"
        "Content-Disposition: form-data; name=\"empty\"\r\n"
        "\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Disposition: form-data; name=\"x\"\r\n"
        "\r\n"
        "1\r\n"
        "--b--";
    n = parse(body2, sizeof body2 - 1, "b", parts, err);
    ck_assert_msg(n == 2, "%d: %s", n, err);
    ck_assert_str_eq(parts[0].name, "empty");
    ck_assert_uint_eq(parts[0].size, 0);
    ck_assert_str_eq(parts[1].name, "x");
    ck_assert_uint_eq(parts[1].size, 1);
}
END_TEST

/* Each body is malformed in one way; all must be refused. */
START_TEST(test_malformed) {
    static const char *const bad[] = {
        "", /* empty */
        "no delimiter at all",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b", /* no close */
        "--bX\r\n", /* longer boundary */
        "--b\nContent-Disposition: form-data; name=\"a\"\n\nx\n--b--", /* LF only */
        "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", /* no disposition */
        "--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", /* no name */
        "--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--", /* open quote */
        "--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\nx\r\n--b--", /* folded */
        "--b\r\n: no name\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--bjunk\r\n", /* junk after delimiter */
        "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b-\r\n", /* half a close */
        "--b\r\nContent-Disposition: form-data; name=a", /* headers cut */
    };
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int n = parse(bad[i], strlen(bad[i]), "b", parts, err);
        ck_assert_msg(n == -1, "case %zu parsed into %d parts", i, n);
        ck_assert_msg(err[0], "case %zu has no message", i);
    }
}
END_TEST

START_TEST(test_limits) {
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    /* One part more than max_parts. */
    char body[4096] = "";
    for (int i = 0; i <= MAX_PARTS; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body),
                 "--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i);
    strcat(body, "--b--\r\n");
    ck_assert_int_eq(parse(body, strlen(body), "b", parts, err), -1);
    ck_assert_ptr_nonnull(strstr(err, "parts"));
    /* Exactly max_parts is fine. */
    body[0] = '\0';
    for (int i = 0; i < MAX_PARTS; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body),
                 "--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i);
    strcat(body, "--b--\r\n");
    ck_assert_int_eq(parse(body, strlen(body), "b", parts, err), MAX_PARTS);

    /* A header section larger than E2G_MULTIPART_HEADERS_MAX. */
    size_t big = E2G_MULTIPART_HEADERS_MAX + 200;
    char *huge = malloc(big + 200);
    ck_assert_ptr_nonnull(huge);
    int k = sprintf(huge, "--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    memset(huge + k, 'p', big);
    k += (int)big;
    k += sprintf(huge + k, "\r\n\r\nx\r\n--b--");
    ck_assert_int_eq(parse(huge, (size_t)k, "b", parts, err), -1);
    free(huge);

    /* A field name longer than the part's name buffer. */
    char longname[600];
    snprintf(longname, sizeof longname,
             "--b\r\nContent-Disposition: form-data; name=\"%0200d\"\r\n\r\nx\r\n--b--", 1);
    ck_assert_int_eq(parse(longname, strlen(longname), "b", parts, err), -1);
}
END_TEST

/* Every prefix of a valid body (a cut connection) fails cleanly; the
 * copies are exact-size heap blocks so a read past the end is caught by
 * ASan or valgrind. */
START_TEST(test_every_truncation) {
    static const char body[] =
        "--frontier\r\n"
        "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n"
        "\r\n"
        "\x89PNG\r\n\x1a\n data \r\n-- frontier\r\n"
        "--frontier\r\n"
        "Content-Disposition: form-data; name=concept\r\n"
        "\r\n"
        "a:0.7,b:0.3\r\n"
        "--frontier--";
    size_t n = sizeof body - 1;
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    ck_assert_int_eq(parse(body, n, "frontier", parts, err), 2);
    for (size_t cut = 0; cut < n; cut++) {
        char *copy = malloc(cut ? cut : 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, body, cut);
        int r = parse(copy, cut, "frontier", parts, err);
        ck_assert_msg(r == -1, "prefix of %zu bytes parsed into %d parts", cut, r);
        free(copy);
    }
}
END_TEST

/* Random bytes around a valid skeleton never crash the parser. */
START_TEST(test_random_bytes) {
    unsigned state = 12345;
    e2g_multipart_part parts[MAX_PARTS];
    char err[E2G_ERR_LEN];
    static const char alphabet[] = "-\r\n=;:\"\\ bform-dataname";
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 1 + (state % 200);
        uint8_t *buf = malloc(n);
        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < n; i++) {
            state = state * 1103515245u + 12345u;
            buf[i] = (uint8_t)alphabet[(state >> 16) % (sizeof alphabet - 1)];
        }
        int r = e2g_multipart_parse(buf, n, "b", parts, MAX_PARTS, err);
        ck_assert(r >= -1 && r <= MAX_PARTS);
        for (int i = 0; i < r; i++)
            ck_assert(parts[i].data >= buf && parts[i].data + parts[i].size <= buf + n);
        free(buf);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("multipart");
    TCase *tc = tcase_create("multipart");
    tcase_add_test(tc, test_boundary_parameter);
    tcase_add_test(tc, test_two_parts);
    tcase_add_test(tc, test_preamble_padding_and_empty_part);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_every_truncation);
    tcase_add_test(tc, test_random_bytes);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
