/* report.h — pictures for training reports: a contact sheet of equally
 * sized images (say source | teacher | model per row, optionally with a
 * caption above each row) and a line chart of training curves (say loss on
 * the left axis and validation PSNR on the right, against steps).  Both are written with e2g_image_write_file, so
 * the path's extension (.png, .jpg, .jpeg) picks the format; JPEGs are
 * written at quality 95.  Text uses a built-in 5×7 bitmap font: ASCII
 * letters, digits, space and . , : ; - + % ( ) [ ] / _ = ' ! ? * # < >;
 * any other character is drawn as '?'. */
#ifndef E2G_REPORT_H
#define E2G_REPORT_H

#include <stdint.h>

#include "image.h"

#define E2G_CHART_WIDTH 800
#define E2G_CHART_HEIGHT 480

/* Lays rows × cols images out on a white sheet, cells[r·cols + c] at row r,
 * column c, with `gap` white pixels between neighbouring cells and no outer
 * border: the sheet is cols·w + (cols−1)·gap wide and rows·h + (rows−1)·gap
 * high for cells of w × h.  Every cell must be non-NULL and of the same size
 * as cells[0]; rows, cols >= 1, gap >= 0, and the sheet at most 65535
 * pixels a side.  Returns 0, or -1 with a
 * message in err (E2G_ERR_LEN bytes, may be NULL). */
int e2g_contact_sheet(const char *path, const e2g_image *const *cells, int rows, int cols, int gap,
                      char *err);

/* The same with a caption above each row: captions[r] (NULL for none) in
 * dark grey on a white strip 15 pixels high (text wider than the sheet is
 * cut off), so the sheet is rows·(h + 15) + (rows−1)·gap high.  captions
 * NULL is e2g_contact_sheet. */
int e2g_contact_sheet_captioned(const char *path, const e2g_image *const *cells, int rows, int cols, int gap,
                                const char *const *captions, char *err);

/* One curve of a line chart: n points (x[i], y[i]), joined in the order
 * given.  Points where x or y is NaN or infinite are skipped and break the
 * line; a point with no drawn neighbour gets a marker, as does every point
 * of a series of at most 50 points.  x and y may be NULL when n is 0. */
typedef struct {
    const char *label; /* legend text; NULL for none */
    const double *x, *y;
    int n;
    uint8_t rgb[3];
    int right_axis; /* nonzero: scaled against the right-hand y axis */
} e2g_series;

/* Draws an E2G_CHART_WIDTH × E2G_CHART_HEIGHT chart of n_series curves on
 * white: a framed plot with light grid lines, numbered ticks on the x axis,
 * on the left y axis (for series with right_axis == 0) and on the right y
 * axis (drawn only when some series uses it), each axis scaled to its
 * series' finite points plus a small margin; the title (may be NULL) above
 * and a legend of colour swatches and labels below (series without a
 * label are left out; at most six rows, wrapped at the chart's width),
 * where a right-axis series is marked "(right axis)" when both axes are in
 * use.  Empty series
 * and charts without any finite point are drawn without error (an axis
 * with no data spans 0..1).  Returns 0, or -1 with a message in err. */
int e2g_line_chart(const char *path, const e2g_series *series, int n_series, const char *title,
                   char *err);

#endif
