/* test_report.c — training-report pictures (engine/report.c): the contact
 * sheet's exact pixel layout (with and without captions) and its errors,
 * and line charts read back from PNG — their size, each series' colour,
 * and charts with NaNs, empty and single-point series or no series at
 * all. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "report.h"
#include "testutil.h"

#define NO_LIMIT (1L << 40)

static char tmp_dir[64];

static void make_tmp_dir(void) {
    strcpy(tmp_dir, "/tmp/e2g_report_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void remove_tmp_dir(void) {
    static const char *files[] = {"sheet.png", "sheet.jpg", "bad.png", "chart.png", "edge.png", "none.png"};
    char path[128];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, files[i]);
        remove(path);
    }
    rmdir(tmp_dir);
}

static const char *tmp_path(const char *name) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    return path;
}

static e2g_image read_png(const char *path) {
    e2g_image im;
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_image_read_file(&im, path, NO_LIMIT, err) == 0, "%s", err);
    return im;
}

static const uint8_t *pixel(const e2g_image *im, int x, int y) {
    return im->rgb + ((size_t)y * im->width + x) * 3;
}

/* A w × h cell whose every pixel differs from every other cell's and from
 * white: (cell, x, y) are encoded in the three channels. */
static e2g_image pattern_cell(int index, int w, int h) {
    e2g_image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im.rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(10 * index);
            p[1] = (uint8_t)(7 * x);
            p[2] = (uint8_t)(11 * y);
        }
    return im;
}

static int count_colour(const e2g_image *im, const uint8_t rgb[3]) {
    int n = 0;
    for (size_t i = 0; i < (size_t)im->width * im->height; i++) n += memcmp(im->rgb + 3 * i, rgb, 3) == 0;
    return n;
}

/* Writes a rows × cols sheet of pattern cells and checks every pixel of it. */
static void check_sheet(int rows, int cols, int w, int h, int gap) {
    e2g_image cells[12];
    const e2g_image *ptrs[12];
    ck_assert_int_le(rows * cols, 12);
    for (int i = 0; i < rows * cols; i++) {
        cells[i] = pattern_cell(i, w, h);
        ptrs[i] = &cells[i];
    }
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_contact_sheet(tmp_path("sheet.png"), ptrs, rows, cols, gap, err) == 0, "%s", err);
    e2g_image sheet = read_png(tmp_path("sheet.png"));
    ck_assert_int_eq(sheet.width, cols * w + (cols - 1) * gap);
    ck_assert_int_eq(sheet.height, rows * h + (rows - 1) * gap);
    for (int y = 0; y < sheet.height; y++)
        for (int x = 0; x < sheet.width; x++) {
            const int col = x / (w + gap), cx = x % (w + gap), row = y / (h + gap), cy = y % (h + gap);
            const uint8_t *got = pixel(&sheet, x, y);
            if (cx < w && cy < h) {
                const uint8_t *want = pixel(&cells[row * cols + col], cx, cy);
                ck_assert_msg(memcmp(got, want, 3) == 0, "sheet (%d, %d): cell %d pixel (%d, %d) expected", x,
                              y, row * cols + col, cx, cy);
            } else {
                ck_assert_msg(got[0] == 255 && got[1] == 255 && got[2] == 255, "gap (%d, %d) is not white",
                              x, y);
            }
        }
    e2g_image_free(&sheet);
    for (int i = 0; i < rows * cols; i++) e2g_image_free(&cells[i]);
}

START_TEST(test_sheet_layout) {
    make_tmp_dir();
    check_sheet(2, 3, 7, 5, 3); /* source | teacher | model, two rows */
    check_sheet(4, 1, 9, 4, 1);
    check_sheet(1, 1, 6, 6, 5);
    check_sheet(2, 2, 5, 3, 0);
    remove_tmp_dir();
}
END_TEST

/* Captions: a 15-pixel strip above each row, text in the first, none in
 * the row whose caption is NULL; cells below their strips, unchanged. */
START_TEST(test_sheet_captions) {
    make_tmp_dir();
    const int rows = 2, cols = 2, w = 40, h = 6, gap = 2, cap = 15;
    e2g_image cells[4];
    const e2g_image *ptrs[4];
    for (int i = 0; i < 4; i++) cells[i] = pattern_cell(i + 1, w, h), ptrs[i] = &cells[i];
    const char *captions[2] = {"night 18.6 dB", NULL};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_contact_sheet_captioned(tmp_path("cap.png"), ptrs, rows, cols, gap, captions, err) == 0,
                  "%s", err);
    e2g_image sheet = read_png(tmp_path("cap.png"));
    ck_assert_int_eq(sheet.width, cols * w + gap);
    ck_assert_int_eq(sheet.height, rows * (h + cap) + gap);
    int text[2] = {0, 0};
    for (int y = 0; y < sheet.height; y++)
        for (int x = 0; x < sheet.width; x++) {
            const int row = y / (h + cap + gap), ry = y % (h + cap + gap), col = x / (w + gap), cx = x % (w + gap);
            const uint8_t *got = pixel(&sheet, x, y);
            if (ry < cap) {
                text[row] += !(got[0] == 255 && got[1] == 255 && got[2] == 255);
            } else if (ry < cap + h && cx < w) {
                ck_assert_msg(memcmp(got, pixel(&cells[row * cols + col], cx, ry - cap), 3) == 0,
                              "sheet (%d, %d): cell pixel expected", x, y);
            } else {
                ck_assert_msg(got[0] == 255 && got[1] == 255 && got[2] == 255, "gap (%d, %d) is not white", x, y);
            }
        }
    ck_assert_int_gt(text[0], 50);
    ck_assert_int_eq(text[1], 0);
    e2g_image_free(&sheet);
    for (int i = 0; i < 4; i++) e2g_image_free(&cells[i]);
    remove_tmp_dir();
}
END_TEST

START_TEST(test_sheet_jpeg) {
    make_tmp_dir();
    e2g_image a = pattern_cell(0, 16, 8), b = pattern_cell(1, 16, 8);
    const e2g_image *cells[] = {&a, &b};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_contact_sheet(tmp_path("sheet.jpg"), cells, 1, 2, 4, err) == 0, "%s", err);
    e2g_image sheet;
    ck_assert_msg(e2g_image_read_file(&sheet, tmp_path("sheet.jpg"), NO_LIMIT, err) == 0, "%s", err);
    ck_assert_int_eq(sheet.width, 36);
    ck_assert_int_eq(sheet.height, 8);
    e2g_image_free(&sheet);
    e2g_image_free(&a);
    e2g_image_free(&b);
    remove_tmp_dir();
}
END_TEST

START_TEST(test_sheet_errors) {
    make_tmp_dir();
    e2g_image a = pattern_cell(0, 8, 6), b = pattern_cell(1, 8, 6), wide = pattern_cell(2, 9, 6),
              tall = pattern_cell(3, 8, 7);
    char err[E2G_ERR_LEN];
    const e2g_image *mismatch[] = {&a, &b, &b, &wide};
    err[0] = 0;
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), mismatch, 2, 2, 2, err), -1);
    ck_assert_msg(strstr(err, "cell 3") && strstr(err, "9×6"), "message: %s", err);
    ck_assert_int_ne(access(tmp_path("bad.png"), F_OK), 0);
    const e2g_image *mismatch_h[] = {&a, &tall};
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), mismatch_h, 1, 2, 2, err), -1);
    const e2g_image *with_null[] = {&a, NULL};
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), with_null, 1, 2, 2, err), -1);
    ck_assert_msg(strstr(err, "cell 1"), "message: %s", err);
    const e2g_image *ok[] = {&a, &b};
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), ok, 0, 2, 2, err), -1);
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), ok, 1, 2, -1, err), -1);
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.png"), NULL, 1, 2, 2, err), -1);
    ck_assert_int_eq(e2g_contact_sheet(tmp_path("bad.bmp"), ok, 1, 2, 2, err), -1);
    ck_assert_msg(strstr(err, "extension"), "message: %s", err);
    ck_assert_int_ne(access(tmp_path("bad.png"), F_OK), 0);
    e2g_image_free(&a);
    e2g_image_free(&b);
    e2g_image_free(&wide);
    e2g_image_free(&tall);
    remove_tmp_dir();
}
END_TEST

#define BLUE {31, 119, 180}
#define RED {214, 39, 40}
#define GREEN {0, 160, 90}
#define PURPLE {148, 103, 189}
static const uint8_t BLUE_RGB[3] = BLUE, RED_RGB[3] = RED, GREEN_RGB[3] = GREEN, PURPLE_RGB[3] = PURPLE,
                     UNUSED_RGB[3] = {1, 2, 3}, WHITE_RGB[3] = {255, 255, 255}, BLACK_RGB[3] = {0, 0, 0};

START_TEST(test_chart_two_axes) {
    make_tmp_dir();
    enum { N = 300, V = 7 };
    double steps[N], loss[N], val_steps[V], psnr[V];
    for (int i = 0; i < N; i++) {
        steps[i] = 10.0 * i;
        loss[i] = 0.05 + 0.3 * exp(-i / 60.0);
    }
    for (int i = 0; i < V; i++) {
        val_steps[i] = 500.0 * i;
        psnr[i] = 18 + 7 * (1 - exp(-i / 2.0));
    }
    const e2g_series series[] = {{"train loss", steps, loss, N, BLUE, 0},
                                 {"val PSNR (dB)", val_steps, psnr, V, RED, 1}};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_line_chart(tmp_path("chart.png"), series, 2, "Training: snow", err) == 0, "%s", err);
    e2g_image im = read_png(tmp_path("chart.png"));
    ck_assert_int_eq(im.width, E2G_CHART_WIDTH);
    ck_assert_int_eq(im.height, E2G_CHART_HEIGHT);
    /* Each curve covers far more pixels than its legend swatch alone. */
    ck_assert_int_gt(count_colour(&im, BLUE_RGB), 500);
    ck_assert_int_gt(count_colour(&im, RED_RGB), 500);
    ck_assert_int_eq(count_colour(&im, UNUSED_RGB), 0);
    ck_assert_int_gt(count_colour(&im, WHITE_RGB), im.width * im.height / 2);
    ck_assert_int_gt(count_colour(&im, BLACK_RGB), 1000); /* frame and title */
    e2g_image_free(&im);
    remove_tmp_dir();
}
END_TEST

START_TEST(test_chart_nan_empty_single) {
    make_tmp_dir();
    double x[6] = {0, 1, NAN, 3, 4, INFINITY}, y[6] = {1, NAN, 2, 0.5, -1, 3};
    double one_x = 2.5, one_y = 7;
    const e2g_series series[] = {{"with gaps", x, y, 6, BLUE, 0},
                                 {"nothing yet", NULL, NULL, 0, PURPLE, 1},
                                 {"one point", &one_x, &one_y, 1, GREEN, 1},
                                 {NULL, x, y, 2, RED, 0}};
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_line_chart(tmp_path("edge.png"), series, 4, NULL, err) == 0, "%s", err);
    e2g_image im = read_png(tmp_path("edge.png"));
    ck_assert_int_eq(im.width, E2G_CHART_WIDTH);
    ck_assert_int_eq(im.height, E2G_CHART_HEIGHT);
    ck_assert_int_gt(count_colour(&im, BLUE_RGB), 0);
    ck_assert_int_gt(count_colour(&im, GREEN_RGB), 0);
    ck_assert_int_gt(count_colour(&im, PURPLE_RGB), 0); /* its legend swatch */
    ck_assert_int_gt(count_colour(&im, RED_RGB), 0);  /* one isolated marker, no legend */
    e2g_image_free(&im);

    double nan = NAN;
    const e2g_series all_nan = {"all NaN", &nan, &nan, 1, BLUE, 0};
    ck_assert_msg(e2g_line_chart(tmp_path("edge.png"), &all_nan, 1, "all NaN", err) == 0, "%s", err);
    ck_assert_msg(e2g_line_chart(tmp_path("none.png"), NULL, 0, "no series", err) == 0, "%s", err);
    im = read_png(tmp_path("none.png"));
    ck_assert_int_eq(im.width, E2G_CHART_WIDTH);
    ck_assert_int_eq(im.height, E2G_CHART_HEIGHT);
    e2g_image_free(&im);
    remove_tmp_dir();
}
END_TEST

START_TEST(test_chart_errors) {
    make_tmp_dir();
    double x[2] = {0, 1};
    char err[E2G_ERR_LEN];
    const e2g_series negative = {"n < 0", x, x, -1, {0, 0, 0}, 0};
    ck_assert_int_eq(e2g_line_chart(tmp_path("bad.png"), &negative, 1, NULL, err), -1);
    ck_assert_msg(strstr(err, "series 0"), "message: %s", err);
    const e2g_series no_y[] = {{"fine", x, x, 2, {0, 0, 0}, 0}, {"no y", x, NULL, 2, {0, 0, 0}, 0}};
    ck_assert_int_eq(e2g_line_chart(tmp_path("bad.png"), no_y, 2, NULL, err), -1);
    ck_assert_msg(strstr(err, "series 1"), "message: %s", err);
    ck_assert_int_eq(e2g_line_chart(tmp_path("bad.png"), NULL, 1, NULL, err), -1);
    ck_assert_int_eq(e2g_line_chart(tmp_path("bad.png"), no_y, -1, NULL, err), -1);
    ck_assert_int_eq(e2g_line_chart(tmp_path("bad.bmp"), no_y, 1, NULL, err), -1);
    ck_assert_int_ne(access(tmp_path("bad.png"), F_OK), 0);
    remove_tmp_dir();
}
END_TEST

int main(void) {
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("report");
    tcase_add_test(tc, test_sheet_layout);
    tcase_add_test(tc, test_sheet_jpeg);
    tcase_add_test(tc, test_sheet_captions);
    tcase_add_test(tc, test_sheet_errors);
    tcase_add_test(tc, test_chart_two_axes);
    tcase_add_test(tc, test_chart_nan_empty_single);
    tcase_add_test(tc, test_chart_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
