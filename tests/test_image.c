/* test_image.c — the image module: PNG/JPEG/WebP round trips, files written
 * by ImageMagick (bit depths, palettes, gray, alpha, interlacing, progressive
 * and gray JPEG, lossless/alpha/animated WebP), EXIF orientation checked
 * against ImageMagick's -auto-orient, hostile input (decompression bombs,
 * truncation, random corruption, malformed EXIF), and the pixel <-> tensor
 * mapping with PyTorch-style reflection padding. */
#include <check.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "testutil.h"

#define NO_LIMIT (1L << 40)

/* ---- helpers ---------------------------------------------------------------- */

static e2g_image new_image(int w, int h) {
    e2g_image im = {w, h, malloc((size_t)w * h * 3)};
    ck_assert_ptr_nonnull(im.rgb);
    return im;
}

static uint8_t *pixel(const e2g_image *im, int x, int y) {
    return im->rgb + ((size_t)y * im->width + x) * 3;
}

/* R ramps left to right, G top to bottom, B is a diagonal ramp: every
 * mirror, turn or transpose of it differs visibly, and JPEG keeps it well. */
static e2g_image smooth_image(int w, int h) {
    e2g_image im = new_image(w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = pixel(&im, x, y);
            p[0] = (uint8_t)(20 + 215 * x / (w - 1));
            p[1] = (uint8_t)(20 + 215 * y / (h - 1));
            p[2] = (uint8_t)(60 + 120 * (x + y) / (w + h - 2));
        }
    return im;
}

static e2g_image noise_image(int w, int h, unsigned seed) {
    e2g_image im = new_image(w, h);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        im.rgb[i] = (uint8_t)(s >> 24);
    }
    return im;
}

static double mean_abs_diff(const e2g_image *a, const e2g_image *b) {
    ck_assert_msg(a->width == b->width && a->height == b->height, "size %dx%d, want %dx%d",
                  a->width, a->height, b->width, b->height);
    double sum = 0;
    size_t n = (size_t)a->width * a->height * 3;
    for (size_t i = 0; i < n; i++) sum += abs(a->rgb[i] - b->rgb[i]);
    return sum / n;
}

static void assert_same_pixels(const e2g_image *got, const e2g_image *want, const char *what) {
    ck_assert_msg(got->width == want->width && got->height == want->height,
                  "%s: size %dx%d, want %dx%d", what, got->width, got->height, want->width,
                  want->height);
    for (int y = 0; y < want->height; y++)
        for (int x = 0; x < want->width; x++)
            ck_assert_msg(memcmp(pixel(got, x, y), pixel(want, x, y), 3) == 0,
                          "%s: pixel (%d,%d) is %d,%d,%d, want %d,%d,%d", what, x, y,
                          pixel(got, x, y)[0], pixel(got, x, y)[1], pixel(got, x, y)[2],
                          pixel(want, x, y)[0], pixel(want, x, y)[1], pixel(want, x, y)[2]);
}

static uint8_t *encode_ok(const e2g_image *im, e2g_image_format fmt, int quality, size_t *n) {
    uint8_t *buf;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_encode(&buf, n, im, fmt, quality, err) == 0, "encode: %s", err);
    return buf;
}

static e2g_image decode_ok(const uint8_t *buf, size_t n) {
    e2g_image im;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_decode(&im, buf, n, NO_LIMIT, err) == 0, "decode: %s", err);
    return im;
}

static e2g_image read_ok(const char *path) {
    e2g_image im;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_read_file(&im, path, NO_LIMIT, err) == 0, "read: %s", err);
    return im;
}

static void write_ok(const char *path, const e2g_image *im) {
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_write_file(path, im, 95, err) == 0, "write: %s", err);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    ck_assert_msg(fread(buf, 1, (size_t)size, f) == (size_t)size, "cannot read %s", path);
    fclose(f);
    *n = (size_t)size;
    return buf;
}

static void write_bytes(const char *path, const uint8_t *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f && fwrite(buf, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* Decoding must fail with a message and leave *out zeroed. */
static void assert_decode_fails(const uint8_t *buf, size_t n, long max_pixels, const char *what) {
    static uint8_t sentinel;
    e2g_image im = {1, 1, &sentinel};
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_decode(&im, buf, n, max_pixels, err) == -1, "%s decoded", what);
    ck_assert_msg(err[0] != '\0', "%s: no error message", what);
    ck_assert_msg(im.rgb == NULL && im.width == 0 && im.height == 0, "%s: output not zeroed", what);
}

/* Offset of the first marker segment `marker` before the scan data of a
 * well-formed JPEG (test input only), or -1. */
static long find_jpeg_marker(const uint8_t *buf, size_t n, uint8_t marker) {
    size_t pos = 2;
    while (pos + 4 <= n && buf[pos] == 0xFF) {
        if (buf[pos + 1] == marker) return (long)pos;
        if (buf[pos + 1] == 0xDA) return -1;
        pos += 2 + ((size_t)buf[pos + 2] << 8 | buf[pos + 3]);
    }
    return -1;
}

static void put_u16(uint8_t *p, unsigned v, int big_endian) {
    p[big_endian ? 0 : 1] = (uint8_t)(v >> 8);
    p[big_endian ? 1 : 0] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v, int big_endian) {
    put_u16(p + (big_endian ? 0 : 2), v >> 16, big_endian);
    put_u16(p + (big_endian ? 2 : 0), v & 0xFFFF, big_endian);
}

/* An APP1 Exif segment of EXIF_LEN bytes, marker included: TIFF header at
 * offset 10, IFD0 at TIFF offset 8 with two entries: Make (ASCII "abc",
 * inline) at segment offset 20, then Orientation (SHORT, 1) at offset 32. */
enum { EXIF_LEN = 48, EXIF_COUNT = 18, EXIF_ORIENT = 32 };
static void exif_segment(uint8_t seg[EXIF_LEN], int big_endian, unsigned orientation) {
    memset(seg, 0, EXIF_LEN);
    seg[0] = 0xFF;
    seg[1] = 0xE1;
    put_u16(seg + 2, EXIF_LEN - 2, 1);
    memcpy(seg + 4, "Exif\0\0", 6);
    memcpy(seg + 10, big_endian ? "MM" : "II", 2);
    put_u16(seg + 12, 42, big_endian);
    put_u32(seg + 14, 8, big_endian);
    put_u16(seg + EXIF_COUNT, 2, big_endian);
    put_u16(seg + 20, 0x010F, big_endian);
    put_u16(seg + 22, 2, big_endian);
    put_u32(seg + 24, 4, big_endian);
    memcpy(seg + 28, "abc", 4);
    put_u16(seg + EXIF_ORIENT, 0x0112, big_endian);
    put_u16(seg + EXIF_ORIENT + 2, 3, big_endian);
    put_u32(seg + EXIF_ORIENT + 4, 1, big_endian);
    put_u16(seg + EXIF_ORIENT + 8, orientation, big_endian);
}

/* A copy of a JPEG with `seg` inserted right after SOI (malloc'd). */
static uint8_t *insert_segment(const uint8_t *jpeg, size_t n, const uint8_t *seg, size_t len,
                               size_t *out_n) {
    uint8_t *out = malloc(n + len);
    memcpy(out, jpeg, 2);
    memcpy(out + 2, seg, len);
    memcpy(out + 2 + len, jpeg + 2, n - 2);
    *out_n = n + len;
    return out;
}

/* ---- scratch directory --------------------------------------------------------
 * The codec tests run inside a fresh directory, made and removed by an
 * unchecked fixture so that it goes away even after a failure. */

static char scratch[PATH_MAX], saved_cwd[PATH_MAX];

static void scratch_setup(void) {
    const char *base = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/e2g_test_image_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_msg(getcwd(saved_cwd, sizeof saved_cwd) != NULL, "getcwd failed");
    ck_assert_msg(mkdtemp(scratch) != NULL, "mkdtemp %s failed", scratch);
    ck_assert_msg(chdir(scratch) == 0, "chdir %s failed", scratch);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void scratch_teardown(void) {
    if (chdir(saved_cwd) != 0) perror(saved_cwd);
    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs a shell command in the scratch directory; it must succeed. */
static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "`%s` failed with status %d (is ImageMagick installed?)", cmd, rc);
}

/* The bit depth, colour type and interlace method of a PNG file's IHDR,
 * to prove ImageMagick wrote the variant a test means to cover. */
static void assert_png_kind(const char *path, int depth, int color, int interlace) {
    size_t n;
    uint8_t *buf = read_bytes(path, &n);
    ck_assert_msg(n > 28, "%s is too short", path);
    ck_assert_msg(buf[24] == depth && buf[25] == color && buf[28] == interlace,
                  "%s: depth %d color type %d interlace %d, want %d %d %d", path, buf[24], buf[25],
                  buf[28], depth, color, interlace);
    free(buf);
}

/* ---- formats, round trips -------------------------------------------------- */

START_TEST(test_sniff_and_extension) {
    const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ck_assert_int_eq(e2g_image_sniff(jpeg, sizeof jpeg), E2G_IMAGE_JPEG);
    ck_assert_int_eq(e2g_image_sniff(png, sizeof png), E2G_IMAGE_PNG);
    ck_assert_int_eq(e2g_image_sniff(png, 7), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_sniff(jpeg, 2), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_sniff((const uint8_t *)"GIF89a", 6), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_sniff(NULL, 0), E2G_IMAGE_UNKNOWN);
    const uint8_t *webp = (const uint8_t *)"RIFF\x10\0\0\0WEBPVP8 ";
    ck_assert_int_eq(e2g_image_sniff(webp, 16), E2G_IMAGE_WEBP);
    ck_assert_int_eq(e2g_image_sniff(webp, 11), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_sniff((const uint8_t *)"RIFF\x10\0\0\0WAVEfmt ", 16), E2G_IMAGE_UNKNOWN);

    ck_assert_int_eq(e2g_image_format_from_path("a.jpg"), E2G_IMAGE_JPEG);
    ck_assert_int_eq(e2g_image_format_from_path("dir/b.JPEG"), E2G_IMAGE_JPEG);
    ck_assert_int_eq(e2g_image_format_from_path("c.Png"), E2G_IMAGE_PNG);
    ck_assert_int_eq(e2g_image_format_from_path("d.webp"), E2G_IMAGE_WEBP);
    ck_assert_int_eq(e2g_image_format_from_path("e.gif"), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_format_from_path("png"), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_format_from_path("x.png/out"), E2G_IMAGE_UNKNOWN);

    ck_assert_int_eq(e2g_image_format_from_name("JPG"), E2G_IMAGE_JPEG);
    ck_assert_int_eq(e2g_image_format_from_name("WebP"), E2G_IMAGE_WEBP);
    ck_assert_int_eq(e2g_image_format_from_name(".png"), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_format_from_name(""), E2G_IMAGE_UNKNOWN);
    ck_assert_str_eq(e2g_image_media_type(E2G_IMAGE_JPEG), "image/jpeg");
    ck_assert_str_eq(e2g_image_media_type(E2G_IMAGE_PNG), "image/png");
    ck_assert_str_eq(e2g_image_media_type(E2G_IMAGE_WEBP), "image/webp");
    ck_assert_str_eq(e2g_image_media_type(E2G_IMAGE_UNKNOWN), "application/octet-stream");
    ck_assert_str_eq(e2g_image_extension(E2G_IMAGE_JPEG), "jpg");
    ck_assert_str_eq(e2g_image_extension(E2G_IMAGE_WEBP), "webp");
}
END_TEST

/* The one table of formats: each row's detector, names and media type
 * agree with the lookups, and the lists the server's messages print. */
START_TEST(test_format_table) {
    for (int f = 0; f < E2G_IMAGE_UNKNOWN; f++) {
        const e2g_image_format_info *info = &e2g_image_formats[f];
        ck_assert_int_eq(info->fmt, f);
        ck_assert_int_eq(e2g_image_format_from_name(info->name), f);
        ck_assert_int_eq(e2g_image_format_from_media_type(info->media_type), f);
        ck_assert_str_eq(e2g_image_media_type(f), info->media_type);
        ck_assert_str_eq(e2g_image_extension(f), info->extensions[0]);
        for (const char *const *ext = info->extensions; *ext; ext++)
            ck_assert_int_eq(e2g_image_format_from_name(*ext), f);
    }
    ck_assert(e2g_image_formats[E2G_IMAGE_JPEG].lossy && e2g_image_formats[E2G_IMAGE_WEBP].lossy);
    ck_assert(!e2g_image_formats[E2G_IMAGE_PNG].lossy);
    ck_assert_int_eq(e2g_image_format_from_media_type("image/gif"), E2G_IMAGE_UNKNOWN);
    ck_assert_int_eq(e2g_image_format_from_media_type("IMAGE/PNG"), E2G_IMAGE_UNKNOWN);
    char buf[128];
    ck_assert_str_eq(e2g_image_format_list(buf, sizeof buf, E2G_FORMAT_NAMES, " or "), "jpeg, png or webp");
    ck_assert_str_eq(e2g_image_format_list(buf, sizeof buf, E2G_FORMAT_LABELS, " or "), "JPEG, PNG or WebP");
    ck_assert_str_eq(e2g_image_format_list(buf, sizeof buf, E2G_FORMAT_MEDIA_TYPES, ", "),
                     "image/jpeg, image/png, image/webp");
    ck_assert_str_eq(e2g_image_format_list(buf, 8, E2G_FORMAT_NAMES, " or "), "jpeg, p"); /* cut, terminated */
}
END_TEST

START_TEST(test_png_roundtrip) {
    e2g_image im = noise_image(37, 29, 1);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_PNG, 0, &n);
    ck_assert_int_eq(e2g_image_sniff(buf, n), E2G_IMAGE_PNG);
    int w = 0, h = 0;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_probe(buf, n, &w, &h, err) == 0, "probe: %s", err);
    ck_assert_int_eq(w, 37);
    ck_assert_int_eq(h, 29);
    e2g_image back = decode_ok(buf, n);
    assert_same_pixels(&back, &im, "PNG round trip");
    free(buf);
    e2g_image_free(&back);
    e2g_image_free(&im);
    ck_assert_ptr_null(im.rgb);
}
END_TEST

START_TEST(test_jpeg_roundtrip) {
    e2g_image im = smooth_image(64, 48);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_JPEG, 95, &n);
    ck_assert_int_eq(e2g_image_sniff(buf, n), E2G_IMAGE_JPEG);
    long sof = find_jpeg_marker(buf, n, 0xC0);
    ck_assert_msg(sof >= 0 && buf[sof + 11] == 0x11, "q95 should not subsample chroma");
    e2g_image back = decode_ok(buf, n);
    double mad = mean_abs_diff(&back, &im);
    ck_assert_msg(mad < 1.5, "JPEG q95 mean abs error %.3f", mad);
    e2g_image_free(&back);
    free(buf);

    /* lower quality: smaller file, still the same picture */
    size_t n_low;
    buf = encode_ok(&im, E2G_IMAGE_JPEG, 30, &n_low);
    ck_assert_msg(n_low < n, "q30 gave %zu bytes, q95 %zu", n_low, n);
    sof = find_jpeg_marker(buf, n_low, 0xC0);
    ck_assert_msg(sof >= 0 && buf[sof + 11] == 0x22, "q30 should use 4:2:0");
    back = decode_ok(buf, n_low);
    mad = mean_abs_diff(&back, &im);
    ck_assert_msg(mad < 6, "JPEG q30 mean abs error %.3f", mad);
    e2g_image_free(&back);
    free(buf);
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_webp_roundtrip) {
    e2g_image im = smooth_image(64, 48);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_WEBP, 95, &n);
    ck_assert_int_eq(e2g_image_sniff(buf, n), E2G_IMAGE_WEBP);
    ck_assert_msg(memcmp(buf + 12, "VP8 ", 4) == 0, "want a simple lossy file");
    int w = 0, h = 0;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_probe(buf, n, &w, &h, err) == 0, "probe: %s", err);
    ck_assert_int_eq(w, 64);
    ck_assert_int_eq(h, 48);
    e2g_image back = decode_ok(buf, n);
    double mad = mean_abs_diff(&back, &im);
    ck_assert_msg(mad < 2, "WebP q95 mean abs error %.3f", mad);
    e2g_image_free(&back);
    free(buf);

    size_t n_low;
    buf = encode_ok(&im, E2G_IMAGE_WEBP, 10, &n_low);
    ck_assert_msg(n_low < n, "q10 gave %zu bytes, q95 %zu", n_low, n);
    back = decode_ok(buf, n_low);
    mad = mean_abs_diff(&back, &im);
    ck_assert_msg(mad < 6, "WebP q10 mean abs error %.3f", mad);
    e2g_image_free(&back);
    free(buf);

    /* odd sizes survive (WebP stores chroma at half resolution) */
    e2g_image odd = noise_image(37, 1, 4);
    buf = encode_ok(&odd, E2G_IMAGE_WEBP, 90, &n);
    back = decode_ok(buf, n);
    ck_assert(back.width == 37 && back.height == 1);
    e2g_image_free(&back);
    free(buf);
    e2g_image_free(&odd);
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_encode_errors) {
    e2g_image im = smooth_image(8, 8), empty = {0, 0, NULL};
    uint8_t *buf;
    size_t n;
    char err[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &im, E2G_IMAGE_JPEG, 0, err), -1);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &im, E2G_IMAGE_JPEG, 101, err), -1);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &im, E2G_IMAGE_WEBP, 0, err), -1);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &im, E2G_IMAGE_WEBP, 101, err), -1);
    e2g_image wide = new_image(16384, 1);
    memset(wide.rgb, 7, 16384 * 3);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &wide, E2G_IMAGE_WEBP, 90, err), -1);
    ck_assert_msg(strstr(err, "too large for WebP") != NULL, "message: %s", err);
    e2g_image_free(&wide);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &im, E2G_IMAGE_UNKNOWN, 90, err), -1);
    ck_assert_int_eq(e2g_image_encode(&buf, &n, &empty, E2G_IMAGE_PNG, 90, err), -1);
    ck_assert_ptr_null(buf);
    ck_assert_int_eq(e2g_image_write_file("/nonexistent-dir/x.png", &im, 90, err), -1);
    ck_assert_int_eq(e2g_image_write_file("x.bmp", &im, 90, err), -1);
    ck_assert_msg(strstr(err, "extension") != NULL, "message: %s", err);
    e2g_image out;
    ck_assert_int_eq(e2g_image_read_file(&out, "/nonexistent-dir/x.png", NO_LIMIT, err), -1);
    ck_assert_int_eq(e2g_image_read_file(&out, "/", NO_LIMIT, err), -1);
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_file_roundtrip) {
    e2g_image im = noise_image(13, 7, 2), smooth = smooth_image(40, 24);
    write_ok("a.PNG", &im);
    e2g_image back = read_ok("a.PNG");
    assert_same_pixels(&back, &im, "PNG file");
    e2g_image_free(&back);
    write_ok("b.jpeg", &smooth);
    back = read_ok("b.jpeg");
    ck_assert_msg(mean_abs_diff(&back, &smooth) < 1.5, "JPEG file differs");
    e2g_image_free(&back);
    write_ok("c.WebP", &smooth);
    back = read_ok("c.WebP");
    ck_assert_msg(mean_abs_diff(&back, &smooth) < 2, "WebP file differs");
    e2g_image_free(&back);
    e2g_image_free(&smooth);
    e2g_image_free(&im);
}
END_TEST

/* ---- files written by ImageMagick ------------------------------------------ */

/* 24×16 with at most 216 colours (so a palette keeps them exactly), and a
 * gray one; written as plain RGB8 PNGs, then converted by ImageMagick. */
static e2g_image palette_image(void) {
    e2g_image im = new_image(24, 16);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++) {
            uint8_t *p = pixel(&im, x, y);
            p[0] = (uint8_t)(x % 6 * 51);
            p[1] = (uint8_t)(y % 6 * 51);
            p[2] = (uint8_t)(x * y % 6 * 51);
        }
    return im;
}

static e2g_image gray_image(int levels) {
    e2g_image im = new_image(24, 16);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++)
            memset(pixel(&im, x, y), (x + 2 * y) % levels * 255 / (levels - 1), 3);
    return im;
}

START_TEST(test_magick_pngs) {
    e2g_image color = palette_image(), gray = gray_image(16), bw = gray_image(2);
    write_ok("color.png", &color);
    write_ok("gray.png", &gray);
    write_ok("bw.png", &bw);
    sh("convert color.png -define png:bit-depth=16 -define png:color-type=2 PNG:c16.png");
    sh("convert color.png PNG8:pal.png");
    sh("convert color.png -alpha set -channel A -evaluate set 50%% +channel PNG32:rgba.png");
    sh("convert color.png -interlace PNG PNG24:adam7.png");
    sh("convert color.png -transparent 'rgb(0,0,0)' PNG8:paltrns.png");
    sh("convert gray.png -define png:bit-depth=16 -define png:color-type=0 PNG:g16.png");
    sh("convert gray.png -define png:bit-depth=8 -define png:color-type=0 PNG:g8.png");
    sh("convert gray.png -alpha set -channel A -evaluate set 50%% +channel "
       "-define png:color-type=4 PNG:gray_alpha.png");
    sh("convert bw.png -define png:bit-depth=1 -define png:color-type=0 PNG:g1.png");
    /* 16-bit levels that are not multiples of 257, so scaling must round */
    sh("convert -size 16x37 gradient:black-white -define png:bit-depth=16 "
       "-define png:color-type=0 PNG:ramp16.png");
    sh("convert ramp16.png -depth 16 txt:ramp16.txt");

    const struct {
        const char *file;
        int depth, color, interlace;
        const e2g_image *want;
    } cases[] = {
        {"c16.png", 16, 2, 0, &color},  {"pal.png", 8, 3, 0, &color},
        {"rgba.png", 8, 6, 0, &color},  {"adam7.png", 8, 2, 1, &color},
        {"g16.png", 16, 0, 0, &gray},   {"g8.png", 8, 0, 0, &gray},
        {"gray_alpha.png", 8, 4, 0, &gray}, {"g1.png", 1, 0, 0, &bw},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_png_kind(cases[i].file, cases[i].depth, cases[i].color, cases[i].interlace);
        e2g_image got = read_ok(cases[i].file);
        assert_same_pixels(&got, cases[i].want, cases[i].file);
        e2g_image_free(&got);
    }

    assert_png_kind("ramp16.png", 16, 0, 0);
    e2g_image ramp = read_ok("ramp16.png");
    ck_assert(ramp.width == 16 && ramp.height == 37);
    FILE *txt = fopen("ramp16.txt", "r");
    ck_assert_ptr_nonnull(txt);
    char line[256];
    int x, y, v, seen = 0, odd = 0;
    while (fgets(line, sizeof line, txt))
        if (sscanf(line, "%d,%d: (%d", &x, &y, &v) == 3) {
            ck_assert(x >= 0 && x < 16 && y >= 0 && y < 37);
            int want = (2 * v + 257) / 514; /* round(v / 257) */
            ck_assert_msg(pixel(&ramp, x, y)[0] == want, "16-bit %d at (%d,%d) became %d, want %d",
                          v, x, y, pixel(&ramp, x, y)[0], want);
            seen++;
            odd += v % 257 != 0;
        }
    fclose(txt);
    ck_assert_int_eq(seen, 16 * 37);
    ck_assert_int_gt(odd, 100);
    e2g_image_free(&ramp);

    /* palette + tRNS: the transparent entry's colour is ImageMagick's choice,
     * every opaque pixel must come back exactly */
    assert_png_kind("paltrns.png", 8, 3, 0);
    e2g_image got = read_ok("paltrns.png");
    ck_assert_int_eq(got.width, 24);
    ck_assert_int_eq(got.height, 16);
    int opaque = 0;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++) {
            const uint8_t *want = pixel(&color, x, y);
            if (want[0] + want[1] + want[2] == 0) continue;
            opaque++;
            ck_assert_msg(memcmp(pixel(&got, x, y), want, 3) == 0, "paltrns pixel (%d,%d)", x, y);
        }
    ck_assert_int_gt(opaque, 300);
    e2g_image_free(&got);
    e2g_image_free(&color);
    e2g_image_free(&gray);
    e2g_image_free(&bw);
}
END_TEST

START_TEST(test_magick_jpegs) {
    e2g_image ref = smooth_image(48, 32), gray = gray_image(16);
    write_ok("ref.png", &ref);
    write_ok("gray.png", &gray);
    sh("convert ref.png -quality 95 -sampling-factor 1x1 baseline.jpg");
    sh("convert ref.png -quality 95 -sampling-factor 1x1 -interlace Plane progressive.jpg");
    sh("convert ref.png -quality 95 -sampling-factor 2x2 subsampled.jpg");
    sh("convert gray.png -colorspace Gray -quality 98 gray.jpg");
    sh("convert ref.png -colorspace CMYK cmyk.jpg");

    static const struct {
        const char *file;
        uint8_t sof;
        int components;
        double tol;
    } cases[] = {{"baseline.jpg", 0xC0, 3, 1.5},
                 {"progressive.jpg", 0xC2, 3, 1.5},
                 {"subsampled.jpg", 0xC0, 3, 2.5},
                 {"gray.jpg", 0xC0, 1, 2.5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *buf = read_bytes(cases[i].file, &n);
        long sof = find_jpeg_marker(buf, n, cases[i].sof);
        ck_assert_msg(sof >= 0 && buf[sof + 9] == cases[i].components,
                      "%s is not the intended kind of JPEG", cases[i].file);
        e2g_image got = decode_ok(buf, n);
        const e2g_image *want = cases[i].components == 1 ? &gray : &ref;
        double mad = mean_abs_diff(&got, want);
        ck_assert_msg(mad < cases[i].tol, "%s: mean abs error %.3f", cases[i].file, mad);
        e2g_image_free(&got);
        free(buf);
    }

    char err[E2G_ERR_LEN] = "";
    e2g_image out;
    ck_assert_int_eq(e2g_image_read_file(&out, "cmyk.jpg", NO_LIMIT, err), -1);
    ck_assert_msg(strstr(err, "CMYK") != NULL, "message: %s", err);
    e2g_image_free(&ref);
    e2g_image_free(&gray);
}
END_TEST

/* WebP files of every kind ImageMagick (libwebp) writes: lossless comes
 * back exactly, with or without alpha (alpha is dropped; at 50% opacity the
 * encoder keeps the colours); lossy with alpha (an extended VP8X file with
 * an ALPH chunk) comes back close; an animation is refused. */
START_TEST(test_magick_webps) {
    e2g_image ref = smooth_image(48, 32);
    write_ok("ref.png", &ref);
    sh("convert ref.png -define webp:lossless=true lossless.webp");
    sh("convert ref.png -alpha set -channel A -evaluate set 50%% +channel "
       "-define webp:lossless=true lossless_alpha.webp");
    sh("convert ref.png -quality 95 lossy.webp");
    sh("convert ref.png -alpha set -channel A -evaluate set 50%% +channel -quality 95 lossy_alpha.webp");
    sh("convert -delay 10 ref.png -flip ref.png -loop 0 animated.webp");

    static const struct {
        const char *file, *chunk;
        double tol; /* mean abs error; 0: exact */
    } cases[] = {{"lossless.webp", "VP8L", 0},
                 {"lossless_alpha.webp", "VP8L", 0},
                 {"lossy.webp", "VP8 ", 2},
                 {"lossy_alpha.webp", "VP8X", 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *buf = read_bytes(cases[i].file, &n);
        ck_assert_msg(n > 16 && memcmp(buf + 12, cases[i].chunk, 4) == 0,
                      "%s is not the intended kind of WebP", cases[i].file);
        e2g_image got = decode_ok(buf, n);
        if (cases[i].tol == 0) {
            assert_same_pixels(&got, &ref, cases[i].file);
        } else {
            double mad = mean_abs_diff(&got, &ref);
            ck_assert_msg(mad < cases[i].tol, "%s: mean abs error %.3f", cases[i].file, mad);
        }
        e2g_image_free(&got);
        free(buf);
    }

    size_t n;
    uint8_t *anim = read_bytes("animated.webp", &n);
    ck_assert_msg(n > 21 && memcmp(anim + 12, "VP8X", 4) == 0 && (anim[20] & 0x02),
                  "animated.webp has no animation flag");
    char err[E2G_ERR_LEN] = "";
    int w, h;
    ck_assert_int_eq(e2g_image_probe(anim, n, &w, &h, err), -1);
    ck_assert_msg(strstr(err, "animated") != NULL, "message: %s", err);
    assert_decode_fails(anim, n, NO_LIMIT, "animated WebP");
    free(anim);
    e2g_image_free(&ref);
}
END_TEST

/* For each EXIF orientation, ImageMagick stores the upright picture turned
 * the opposite way; the crafted Exif segment (alternating byte orders)
 * must bring it back upright, agreeing with ImageMagick's -auto-orient. */
START_TEST(test_exif_orientation) {
    static const char *const store_op[9] = {
        NULL, "", "-flop", "-rotate 180", "-flip", "-transpose", "-rotate -90", "-transverse",
        "-rotate 90"};
    e2g_image upright = smooth_image(48, 32);
    write_ok("upright.png", &upright);
    for (unsigned o = 1; o <= 8; o++) {
        sh("convert upright.png %s -quality 95 -sampling-factor 1x1 stored%u.jpg", store_op[o], o);
        size_t n, tagged_n;
        char name[32];
        snprintf(name, sizeof name, "stored%u.jpg", o);
        uint8_t *plain = read_bytes(name, &n);
        uint8_t seg[EXIF_LEN];
        exif_segment(seg, o % 2 == 0, o);
        uint8_t *tagged = insert_segment(plain, n, seg, EXIF_LEN, &tagged_n);
        snprintf(name, sizeof name, "tagged%u.jpg", o);
        write_bytes(name, tagged, tagged_n);

        int w = 0, h = 0;
        char err[E2G_ERR_LEN] = "";
        ck_assert_msg(e2g_image_probe(tagged, tagged_n, &w, &h, err) == 0, "probe: %s", err);
        ck_assert_msg(w == 48 && h == 32, "orientation %u: probe says %dx%d", o, w, h);

        e2g_image got = decode_ok(tagged, tagged_n);
        double mad = mean_abs_diff(&got, &upright);
        ck_assert_msg(mad < 1.5, "orientation %u: mean abs error %.3f against upright", o, mad);

        sh("convert tagged%u.jpg -auto-orient PNG24:auto%u.png", o, o);
        snprintf(name, sizeof name, "auto%u.png", o);
        e2g_image magick = read_ok(name);
        mad = mean_abs_diff(&got, &magick);
        ck_assert_msg(mad < 0.5, "orientation %u: mean abs error %.3f against -auto-orient", o, mad);

        e2g_image_free(&magick);
        e2g_image_free(&got);
        free(tagged);
        free(plain);
    }
    e2g_image_free(&upright);
}
END_TEST

/* ---- hostile input --------------------------------------------------------- */

/* Caps this test process's address space at its current size + 512 MiB, so
 * that a decoder allocating a bomb's 7.5 GB of pixels would fail.  Not
 * under AddressSanitizer, whose shadow memory needs terabytes of address
 * space; returns whether the cap is in place. */
static int cap_address_space(struct rlimit *saved) {
#if defined(__SANITIZE_ADDRESS__)
    (void)saved;
    return 0;
#else
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    ck_assert_msg(f && fscanf(f, "%lu", &pages) == 1, "cannot read /proc/self/statm");
    fclose(f);
    ck_assert_int_eq(getrlimit(RLIMIT_AS, saved), 0);
    struct rlimit cap = *saved;
    cap.rlim_cur = pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)512 << 20);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &cap), 0);
    return 1;
#endif
}

/* A bomb's header must be probed as side×side and refused by the pixel
 * limit; with the address space capped, decoding it without a limit shows
 * the cap would have caught an allocation. */
static void check_bomb(const uint8_t *bomb, size_t n, int side, const char *what) {
    int w = 0, h = 0;
    char err[E2G_ERR_LEN] = "";
    ck_assert_msg(e2g_image_probe(bomb, n, &w, &h, err) == 0, "%s probe: %s", what, err);
    ck_assert_msg(w == side && h == side, "%s probe: %dx%d", what, w, h);

    struct rlimit saved;
    int capped = cap_address_space(&saved);
    e2g_image im;
    ck_assert_int_eq(e2g_image_decode(&im, bomb, n, 4096L * 4096, err), -1);
    ck_assert_msg(strstr(err, "exceeds the limit") != NULL, "%s: %s", what, err);
    ck_assert_ptr_null(im.rgb);
    if (capped) {
        ck_assert_int_eq(e2g_image_decode(&im, bomb, n, NO_LIMIT, err), -1);
        ck_assert_msg(strstr(err, "out of memory") != NULL, "%s without limit: %s", what, err);
        ck_assert_int_eq(setrlimit(RLIMIT_AS, &saved), 0);
    }
}

START_TEST(test_bomb_png) {
    e2g_image im = smooth_image(8, 8);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_PNG, 0, &n);
    /* IHDR: length at 8, type at 12, width 16, height 20, CRC of 12..28 at 29 */
    ck_assert_uint_eq(png_crc32(buf + 12, 17), (uint32_t)buf[29] << 24 | buf[30] << 16 | buf[31] << 8 | buf[32]);
    put_u32(buf + 16, 50000, 1);
    put_u32(buf + 20, 50000, 1);
    put_u32(buf + 29, png_crc32(buf + 12, 17), 1);
    check_bomb(buf, n, 50000, "PNG");
    free(buf);
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_bomb_jpeg) {
    e2g_image im = smooth_image(16, 16);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_JPEG, 90, &n);
    long sof = find_jpeg_marker(buf, n, 0xC0);
    ck_assert_int_ge(sof, 0);
    put_u16(buf + sof + 5, 50000, 1); /* height */
    put_u16(buf + sof + 7, 50000, 1); /* width */
    check_bomb(buf, n, 50000, "JPEG");
    free(buf);
    e2g_image_free(&im);
}
END_TEST

/* WebP sides stop at 16383: 805 MB of pixels, still a bomb. */
START_TEST(test_bomb_webp) {
    e2g_image im = smooth_image(16, 16);
    size_t n;
    uint8_t *buf = encode_ok(&im, E2G_IMAGE_WEBP, 90, &n);
    /* simple lossy file: the VP8 frame header's start code at 23, then
     * width and height (14 bits each, little-endian) at 26 and 28 */
    ck_assert_msg(memcmp(buf + 12, "VP8 ", 4) == 0 && memcmp(buf + 23, "\x9d\x01\x2a", 3) == 0,
                  "not a simple lossy WebP");
    put_u16(buf + 26, 16383, 0);
    put_u16(buf + 28, 16383, 0);
    check_bomb(buf, n, 16383, "WebP");
    free(buf);
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_pixel_limit_boundary) {
    e2g_image im = smooth_image(20, 10);
    for (int fmt = E2G_IMAGE_JPEG; fmt <= E2G_IMAGE_WEBP; fmt++) {
        size_t n;
        uint8_t *buf = encode_ok(&im, fmt, 90, &n);
        e2g_image got;
        char err[E2G_ERR_LEN] = "";
        ck_assert_msg(e2g_image_decode(&got, buf, n, 200, err) == 0, "at the limit: %s", err);
        e2g_image_free(&got);
        assert_decode_fails(buf, n, 199, "one pixel over the limit");
        free(buf);
    }
    e2g_image_free(&im);
}
END_TEST

/* Every proper prefix of a valid file is an error, never a crash. */
START_TEST(test_truncated) {
    e2g_image im = noise_image(40, 24, 3);
    for (int fmt = E2G_IMAGE_JPEG; fmt <= E2G_IMAGE_WEBP; fmt++) {
        size_t n;
        uint8_t *buf = encode_ok(&im, fmt, 90, &n);
        for (size_t cut = 0; cut < n; cut++) {
            uint8_t *prefix = malloc(cut ? cut : 1); /* exact size, so ASan sees over-reads */
            memcpy(prefix, buf, cut);
            char what[64];
            snprintf(what, sizeof what, "%s cut to %zu of %zu bytes", e2g_image_extension(fmt), cut, n);
            assert_decode_fails(prefix, cut, NO_LIMIT, what);
            free(prefix);
        }
        free(buf);
    }
    e2g_image_free(&im);
}
END_TEST

START_TEST(test_empty_and_garbage) {
    static const uint8_t garbage[] = "hello, this is not an image at all";
    static const uint8_t jpeg_magic[] = {0xFF, 0xD8, 0xFF};
    static const uint8_t png_magic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t webp_magic[] = "RIFF\x04\0\0\0WEBP";
    static const uint8_t webp_no_frame[] = "RIFF\x0c\0\0\0WEBPJUNK\0\0\0\0";
    uint8_t png_zero[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    put_u32(png_zero + 29, png_crc32(png_zero + 12, 17), 1); /* a 0×0 IHDR with a valid CRC */
    assert_decode_fails(NULL, 0, NO_LIMIT, "zero bytes");
    assert_decode_fails(garbage, sizeof garbage, NO_LIMIT, "garbage");
    assert_decode_fails(jpeg_magic, sizeof jpeg_magic, NO_LIMIT, "JPEG magic alone");
    assert_decode_fails(png_magic, sizeof png_magic, NO_LIMIT, "PNG magic alone");
    assert_decode_fails(png_zero, sizeof png_zero, NO_LIMIT, "0x0 PNG");
    assert_decode_fails(webp_magic, sizeof webp_magic - 1, NO_LIMIT, "WebP magic alone");
    assert_decode_fails(webp_no_frame, sizeof webp_no_frame - 1, NO_LIMIT, "WebP without a frame");
    int w, h;
    char err[E2G_ERR_LEN];
    ck_assert_int_eq(e2g_image_probe(NULL, 0, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(garbage, sizeof garbage, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(jpeg_magic, sizeof jpeg_magic, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(png_magic, sizeof png_magic, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(png_zero, sizeof png_zero, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(webp_magic, sizeof webp_magic - 1, &w, &h, err), -1);
    ck_assert_int_eq(e2g_image_probe(webp_no_frame, sizeof webp_no_frame - 1, &w, &h, err), -1);
}
END_TEST

/* Random byte changes in valid files: any outcome but a crash, and a
 * success must respect the pixel limit. */
START_TEST(test_random_corruption) {
    e2g_image im = smooth_image(32, 24);
    uint32_t s = 12345;
    for (int fmt = E2G_IMAGE_JPEG; fmt <= E2G_IMAGE_WEBP; fmt++) {
        size_t n;
        uint8_t *buf = encode_ok(&im, fmt, 90, &n);
        uint8_t *copy = malloc(n);
        for (int iter = 0; iter < 1500; iter++) {
            memcpy(copy, buf, n);
            for (int k = 0; k < 1 + iter % 4; k++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                copy[(s >> 8) % n] = (uint8_t)s;
            }
            e2g_image got;
            char err[E2G_ERR_LEN];
            if (e2g_image_decode(&got, copy, n, 100000, err) == 0) {
                ck_assert(got.width > 0 && got.height > 0 && (long)got.width * got.height <= 100000);
                e2g_image_free(&got);
            } else {
                ck_assert_ptr_null(got.rgb);
            }
        }
        free(copy);
        free(buf);
    }
    e2g_image_free(&im);
}
END_TEST

/* Malformed Exif segments are ignored (orientation 1), never read out of
 * bounds; the 48×32 test image comes back 48×32 when the tag is ignored and
 * 32×48 when orientation 6 is honoured. */
START_TEST(test_malformed_exif) {
    e2g_image stored = smooth_image(48, 32);
    size_t n;
    uint8_t *jpeg = encode_ok(&stored, E2G_IMAGE_JPEG, 90, &n);
    enum { IGNORED, HONOURED };
    uint8_t seg[EXIF_LEN + 24];
    for (int variant = 0; variant < 9; variant++) {
        int big = variant % 2, expect = IGNORED;
        size_t len = EXIF_LEN;
        exif_segment(seg, big, 6);
        switch (variant) {
        case 0: case 1: expect = HONOURED; break;                      /* well formed */
        case 2: put_u32(seg + 14, 0xFFFFFFF0u, big); break;           /* IFD offset far out */
        case 3: put_u32(seg + 14, EXIF_LEN - 10 - 1, big); break;     /* IFD count cut off */
        case 4: put_u16(seg + EXIF_ORIENT + 2, 4, big); break;        /* LONG, not SHORT */
        case 5: put_u16(seg + EXIF_ORIENT + 8, 9, big); break;        /* value out of range */
        case 6: memcpy(seg + 10, "IM", 2); break;                     /* unknown byte order */
        case 7: memcpy(seg + 4, "Exif\0X", 6); break;                 /* not an Exif header */
        case 8:
            /* IFD0 claims 3 entries but the segment ends after the first; a
             * COM segment right after it holds an Orientation entry where an
             * unchecked reader would find the third one */
            put_u16(seg + EXIF_COUNT, 3, big);
            put_u16(seg + 2, EXIF_ORIENT - 2, 1);
            memcpy(seg + EXIF_ORIENT + 12, seg + EXIF_ORIENT, 12);
            seg[EXIF_ORIENT] = 0xFF;
            seg[EXIF_ORIENT + 1] = 0xFE;
            put_u16(seg + EXIF_ORIENT + 2, 2 + 8 + 12, 1);
            memset(seg + EXIF_ORIENT + 4, 'c', 8);
            len = EXIF_ORIENT + 4 + 8 + 12;
            break;
        }
        size_t tagged_n;
        uint8_t *tagged = insert_segment(jpeg, n, seg, len, &tagged_n);
        e2g_image got = decode_ok(tagged, tagged_n);
        int want_w = expect == HONOURED ? 32 : 48;
        ck_assert_msg(got.width == want_w, "variant %d: decoded %dx%d", variant, got.width, got.height);
        e2g_image_free(&got);
        free(tagged);
    }
    free(jpeg);
    e2g_image_free(&stored);
}
END_TEST

/* ---- tensors --------------------------------------------------------------- */

START_TEST(test_pad_dims) {
    int pw, ph;
    e2g_image_pad_dims(37, 29, 8, &pw, &ph);
    ck_assert(pw == 40 && ph == 32);
    e2g_image_pad_dims(40, 32, 8, &pw, &ph);
    ck_assert(pw == 40 && ph == 32);
    e2g_image_pad_dims(1, 9, 8, &pw, &ph);
    ck_assert(pw == 8 && ph == 16);
}
END_TEST

/* The pixel index a tensor value came from, for images whose pixel at
 * index i has value 3·i + c in channel c (at most 81 pixels). */
static int source_index(float v, int c) {
    int p = (int)lrintf((v + 1.0f) * 127.5f);
    ck_assert_msg(p % 3 == c, "value %g is not from channel %d of the test image", v, c);
    return p / 3;
}

/* Pads a w×h image whose pixel (x, y) is 3·(y·w + x) + c to pw×ph and
 * checks that tensor pixel (x, y) came from (want_x[x], want_y[y]). */
static void check_padding(int w, int h, int pw, int ph, const int *want_x, const int *want_y) {
    ck_assert_int_le(w * h, 81);
    e2g_image im = new_image(w, h);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++) im.rgb[3 * i + c] = (uint8_t)(3 * i + c);
    float *t = malloc((size_t)pw * ph * 3 * sizeof *t); /* (ph, pw, 3) */
    e2g_image_to_tensor(t, &im, pw, ph);
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++)
            for (int c = 0; c < 3; c++) {
                int got = source_index(t[((size_t)y * pw + x) * 3 + c], c);
                int want = want_y[y] * w + want_x[x];
                ck_assert_msg(got == want, "%dx%d padded to %dx%d: (%d,%d) came from pixel %d, want %d",
                              w, h, pw, ph, x, y, got, want);
            }
    free(t);
    e2g_image_free(&im);
}

START_TEST(test_reflect_by_hand) {
    static const int cols5[8] = {0, 1, 2, 3, 4, 3, 2, 1}; /* torch: pad 3 on width 5 */
    static const int rows2[8] = {0, 1, 0, 1, 0, 1, 0, 1}; /* 2 rows keep bouncing */
    static const int cols3[8] = {0, 1, 2, 1, 0, 1, 2, 1};
    static const int ones[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    check_padding(5, 2, 8, 8, cols5, rows2);
    check_padding(3, 2, 8, 8, cols3, rows2);
    check_padding(2, 3, 8, 8, rows2, cols3);
    check_padding(1, 1, 8, 8, ones, ones);
    check_padding(3, 5, 3, 5, cols3, cols5); /* no padding needed */
}
END_TEST

/* The reference for sizes 1..9: torch.nn.functional.pad(mode='reflect')
 * computes out[n−1+k] = in[n−1−k] and only accepts pads below n, so wider
 * pads apply it repeatedly, each step reflecting the current array about its
 * last element by at most n−1 (numpy's 'reflect' does the same); a single
 * pixel has nothing to reflect and repeats. */
static void torch_reflect(int *idx, int n, int len) {
    for (int i = 0; i < n; i++) idx[i] = i;
    int cur = n;
    while (cur < len) {
        int step = n == 1 ? 1 : (len - cur < n - 1 ? len - cur : n - 1);
        for (int k = 0; k < step; k++) idx[cur + k] = n == 1 ? 0 : idx[cur - 2 - k];
        cur += step;
    }
}

START_TEST(test_reflect_torch_sizes) {
    for (int w = 1; w <= 9; w++)
        for (int h = 1; h <= 9; h++) {
            int want_x[32], want_y[32], pw, ph;
            e2g_image_pad_dims(w, h, 8, &pw, &ph);
            pw += 8; /* also a pad wider than the image */
            torch_reflect(want_x, w, pw);
            torch_reflect(want_y, h, ph);
            check_padding(w, h, pw, ph, want_x, want_y);
        }
}
END_TEST

START_TEST(test_pixel_float_mapping) {
    e2g_image im = new_image(256, 1), back = new_image(256, 1);
    for (int p = 0; p < 256; p++) memset(pixel(&im, p, 0), p, 3);
    float t[256 * 3];
    e2g_image_to_tensor(t, &im, 256, 1);
    ck_assert_float_eq(t[0], -1.0f);
    ck_assert_float_eq(t[255 * 3], 1.0f);
    for (int p = 0; p < 256; p++)
        ck_assert_msg(fabsf(t[3 * p] - (p / 127.5f - 1.0f)) <= 1e-7f, "pixel %d maps to %g", p, t[3 * p]);
    memset(back.rgb, 0x55, 256 * 3);
    e2g_image_from_tensor(&back, t, 256, 1);
    assert_same_pixels(&back, &im, "0..255 through floats");

    /* clamping, rounding to nearest, NaN */
    e2g_image one = new_image(6, 1);
    const float y[6 * 3] = {-3.0f, -1.0f, 0.0f, 1.0f, 7.0f, NAN,
                            -1.0f + 0.4f / 127.5f, -1.0f + 0.6f / 127.5f, 1.0f - 0.4f / 127.5f,
                            1.0f - 0.6f / 127.5f, INFINITY, -INFINITY,
                            0, 0, 0, 0, 0, 0};
    static const uint8_t want[6 * 3] = {0, 0, 128, 255, 255, 0, 0, 1, 255, 254, 255, 0,
                                        128, 128, 128, 128, 128, 128};
    e2g_image_from_tensor(&one, y, 6, 1);
    for (int i = 0; i < 18; i++)
        ck_assert_msg(one.rgb[i] == want[i], "value %g became %d, want %d", y[i], one.rgb[i], want[i]);
    e2g_image_free(&one);
    e2g_image_free(&im);
    e2g_image_free(&back);
}
END_TEST

START_TEST(test_odd_size_pad_and_crop) {
    e2g_image im = noise_image(37, 29, 4);
    int pw, ph;
    e2g_image_pad_dims(im.width, im.height, 8, &pw, &ph);
    ck_assert(pw == 40 && ph == 32);
    float *t = malloc((size_t)pw * ph * 3 * sizeof *t); /* (32, 40, 3) */
    e2g_image_to_tensor(t, &im, pw, ph);
    /* a corner of the pad region: (39, 31) mirrors (37−2−2, 29−2−2) = (33, 25) */
    for (int c = 0; c < 3; c++)
        ck_assert_float_eq(t[((size_t)31 * pw + 39) * 3 + c], pixel(&im, 33, 25)[c] / 127.5f - 1.0f);
    e2g_image back = new_image(37, 29);
    memset(back.rgb, 0, (size_t)37 * 29 * 3);
    e2g_image_from_tensor(&back, t, pw, ph);
    assert_same_pixels(&back, &im, "37x29 padded to 40x32 and cropped");
    free(t);
    e2g_image_free(&back);
    e2g_image_free(&im);
}
END_TEST

/* e2g_reflect_index (engine/common.h) against reflecting step by step,
 * for negative positions too (a convolution's left and top pads). */
START_TEST(test_reflect_index) {
    for (int n = 1; n <= 9; n++)
        for (int i = -40; i <= 40; i++) {
            int want = 0;
            if (n > 1) {
                want = i;
                while (want < 0 || want >= n) want = want < 0 ? -want : 2 * (n - 1) - want;
            }
            ck_assert_msg(e2g_reflect_index(i, n) == want, "reflect(%d, %d) = %d, want %d", i, n,
                          e2g_reflect_index(i, n), want);
        }
    ck_assert_int_eq(e2g_reflect_index(1000000007, 5), 1000000007 % 8 < 5 ? 1000000007 % 8 : 8 - 1000000007 % 8);
    ck_assert_int_eq(e2g_reflect_index(INT_MIN, 1), 0);
    int r = e2g_reflect_index(INT_MIN, 7);
    ck_assert(r >= 0 && r < 7);
}
END_TEST

/* e2g_image_pad / e2g_image_unpad: the padded tensor of
 * e2g_image_to_tensor, and back. */
START_TEST(test_pad_helper) {
    e2g_image im = noise_image(37, 29, 5);
    e2g_image_padded p;
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_pad(&p, &im, 8, err) == 0, "%s", err);
    ck_assert(p.pw == 40 && p.ph == 32 && p.x && p.y);
    float *t = malloc((size_t)40 * 32 * 3 * sizeof *t);
    e2g_image_to_tensor(t, &im, 40, 32);
    ck_assert(memcmp(t, p.x, (size_t)40 * 32 * 3 * sizeof *t) == 0);
    memcpy(p.y, p.x, (size_t)40 * 32 * 3 * sizeof *t);
    e2g_image back = new_image(37, 29);
    memset(back.rgb, 0, (size_t)37 * 29 * 3);
    e2g_image_unpad(&back, &p);
    assert_same_pixels(&back, &im, "e2g_image_pad then e2g_image_unpad");
    e2g_image_padded_free(&p);
    ck_assert(p.x == NULL && p.y == NULL);
    e2g_image_padded_free(&p); /* twice is safe */
    e2g_image huge = {1500000000, 1500000000, im.rgb}; /* pw·ph·12 bytes overflow size_t */
    ck_assert_int_eq(e2g_image_pad(&p, &huge, 8, err), -1);
    ck_assert_msg(strstr(err, "too large"), "%s", err);
    ck_assert(p.x == NULL && p.y == NULL);
    free(t);
    e2g_image_free(&back);
    e2g_image_free(&im);
}
END_TEST

static Suite *image_suite(void) {
    Suite *s = suite_create("image");
    TCase *codec = tcase_create("codec");
    tcase_add_unchecked_fixture(codec, scratch_setup, scratch_teardown);
    tcase_set_timeout(codec, 120);
    tcase_add_test(codec, test_sniff_and_extension);
    tcase_add_test(codec, test_format_table);
    tcase_add_test(codec, test_png_roundtrip);
    tcase_add_test(codec, test_jpeg_roundtrip);
    tcase_add_test(codec, test_webp_roundtrip);
    tcase_add_test(codec, test_encode_errors);
    tcase_add_test(codec, test_file_roundtrip);
    tcase_add_test(codec, test_magick_pngs);
    tcase_add_test(codec, test_magick_jpegs);
    tcase_add_test(codec, test_magick_webps);
    tcase_add_test(codec, test_exif_orientation);
    suite_add_tcase(s, codec);

    TCase *hostile = tcase_create("hostile");
    tcase_set_timeout(hostile, 300);
    tcase_add_test(hostile, test_bomb_png);
    tcase_add_test(hostile, test_bomb_jpeg);
    tcase_add_test(hostile, test_bomb_webp);
    tcase_add_test(hostile, test_pixel_limit_boundary);
    tcase_add_test(hostile, test_truncated);
    tcase_add_test(hostile, test_empty_and_garbage);
    tcase_add_test(hostile, test_random_corruption);
    tcase_add_test(hostile, test_malformed_exif);
    suite_add_tcase(s, hostile);

    TCase *tensor = tcase_create("tensor");
    tcase_add_test(tensor, test_pad_dims);
    tcase_add_test(tensor, test_reflect_by_hand);
    tcase_add_test(tensor, test_reflect_torch_sizes);
    tcase_add_test(tensor, test_pixel_float_mapping);
    tcase_add_test(tensor, test_odd_size_pad_and_crop);
    tcase_add_test(tensor, test_reflect_index);
    tcase_add_test(tensor, test_pad_helper);
    suite_add_tcase(s, tensor);
    return s;
}

int main(void) { return run_suite(image_suite()); }
