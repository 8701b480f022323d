/* report.c — contact sheets and line charts for training reports
 * (report.h), drawn into an RGB8 e2g_image with no antialiasing and written
 * by e2g_image_write_file.  Chart text and sheet captions use the 5×7 font below, whose
 * lowercase g, j, p, q, y reach two rows lower. */
#include "report.h"

#include "common.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JPEG_QUALITY 95
#define MAX_SIDE 65535 /* JPEG's limit, and more than any report needs */

/* ---- drawing primitives -------------------------------------------------- */

#define GLYPH_W 5
#define GLYPH_CAP 7 /* rows above the baseline: capitals and digits */
#define GLYPH_H 9   /* with the descenders of g, j, p, q, y */
#define GLYPH_ADVANCE 6 /* one blank column between characters */

/* Rows of a 5×9 glyph cell, top first, bit 4 the leftmost column: a 5×7
 * font plus two rows for descenders. */
static const uint8_t FONT[128][GLYPH_H] = {
    ['0'] = {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, ['1'] = {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['2'] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, ['3'] = {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
    ['4'] = {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, ['5'] = {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
    ['6'] = {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, ['7'] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    ['8'] = {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, ['9'] = {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
    ['A'] = {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}, ['B'] = {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},
    ['C'] = {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}, ['D'] = {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},
    ['E'] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}, ['F'] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},
    ['G'] = {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}, ['H'] = {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},
    ['I'] = {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, ['J'] = {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},
    ['K'] = {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, ['L'] = {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},
    ['M'] = {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}, ['N'] = {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},
    ['O'] = {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, ['P'] = {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},
    ['Q'] = {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}, ['R'] = {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},
    ['S'] = {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}, ['T'] = {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
    ['U'] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, ['V'] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},
    ['W'] = {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}, ['X'] = {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},
    ['Y'] = {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}, ['Z'] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},
    ['a'] = {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}, ['b'] = {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},
    ['c'] = {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}, ['d'] = {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},
    ['e'] = {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}, ['f'] = {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08},
    ['g'] = {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, ['h'] = {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},
    ['i'] = {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}, ['j'] = {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},
    ['k'] = {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, ['l'] = {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['m'] = {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}, ['n'] = {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},
    ['o'] = {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}, ['p'] = {0x00, 0x00, 0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10},
    ['q'] = {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01}, ['r'] = {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},
    ['s'] = {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}, ['t'] = {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06},
    ['u'] = {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}, ['v'] = {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},
    ['w'] = {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}, ['x'] = {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},
    ['y'] = {0x00, 0x00, 0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, ['z'] = {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},
    ['.'] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, [','] = {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08},
    [':'] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}, [';'] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08},
    ['-'] = {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}, ['+'] = {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},
    ['%'] = {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, ['='] = {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},
    ['('] = {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, [')'] = {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},
    ['['] = {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}, [']'] = {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E},
    ['/'] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, ['_'] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},
    ['\''] = {0x0C, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}, ['!'] = {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},
    ['?'] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, ['*'] = {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00},
    ['#'] = {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}, ['<'] = {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},
    ['>'] = {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},
};

static const uint8_t WHITE[3] = {255, 255, 255}, BLACK[3] = {0, 0, 0}, TEXT[3] = {40, 40, 40},
                     GRID[3] = {225, 225, 225};

/* Pixels outside the image are silently dropped, so callers need not clip. */
static void fill_rect(e2g_image *im, int x0, int y0, int w, int h, const uint8_t rgb[3]) {
    for (int y = y0 > 0 ? y0 : 0; y < y0 + h && y < im->height; y++)
        for (int x = x0 > 0 ? x0 : 0; x < x0 + w && x < im->width; x++)
            memcpy(im->rgb + ((size_t)y * im->width + x) * 3, rgb, 3);
}

/* A line of `thick` × `thick` dots from (x0, y0) to (x1, y1) (Bresenham). */
static void draw_line(e2g_image *im, int x0, int y0, int x1, int y1, int thick, const uint8_t rgb[3]) {
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    for (int e = dx + dy;;) {
        fill_rect(im, x0 - thick / 2, y0 - thick / 2, thick, thick, rgb);
        if (x0 == x1 && y0 == y1) return;
        const int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

/* The glyph of c; characters the font lacks are drawn as '?'. */
static const uint8_t *glyph(char c) {
    unsigned char u = (unsigned char)c;
    if (u == ' ') return FONT[' '];
    if (u < 128)
        for (int r = 0; r < GLYPH_H; r++)
            if (FONT[u][r]) return FONT[u];
    return FONT['?'];
}

static int text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (n * GLYPH_ADVANCE - 1) * scale : 0;
}

/* Draws s with its top-left corner at (x, y), each font pixel a
 * scale × scale block. */
static void draw_text(e2g_image *im, int x, int y, const char *s, int scale, const uint8_t rgb[3]) {
    for (; *s; s++, x += GLYPH_ADVANCE * scale) {
        const uint8_t *g = glyph(*s);
        for (int r = 0; r < GLYPH_H; r++)
            for (int c = 0; c < GLYPH_W; c++)
                if (g[r] & (0x10 >> c)) fill_rect(im, x + c * scale, y + r * scale, scale, scale, rgb);
    }
}

/* ---- contact sheet ------------------------------------------------------- */

#define CAPTION_H 15 /* a caption strip: 3 white rows, the 9-row glyph cell, 3 white rows */

int e2g_contact_sheet(const char *path, const e2g_image *const *cells, int rows, int cols, int gap,
                      char *err) {
    return e2g_contact_sheet_captioned(path, cells, rows, cols, gap, NULL, err);
}

int e2g_contact_sheet_captioned(const char *path, const e2g_image *const *cells, int rows, int cols, int gap,
                                const char *const *captions, char *err) {
    if (!cells || rows < 1 || cols < 1 || gap < 0 || rows > MAX_SIDE || cols > MAX_SIDE ||
        (long long)rows * cols > INT_MAX)
        return e2g_fail(err, "contact sheet: need cells, 1..%d rows and columns, gap >= 0 "
                             "(got %d × %d, gap %d)", MAX_SIDE, rows, cols, gap);
    const int n = rows * cols;
    for (int i = 0; i < n; i++)
        if (!cells[i] || !cells[i]->rgb || cells[i]->width < 1 || cells[i]->height < 1)
            return e2g_fail(err, "contact sheet: cell %d (row %d, column %d) is empty", i, i / cols,
                            i % cols);
    const int w = cells[0]->width, h = cells[0]->height, cap = captions ? CAPTION_H : 0;
    for (int i = 1; i < n; i++)
        if (cells[i]->width != w || cells[i]->height != h)
            return e2g_fail(err, "contact sheet: cell %d (row %d, column %d) is %d×%d, cell 0 is %d×%d", i,
                            i / cols, i % cols, cells[i]->width, cells[i]->height, w, h);
    const long long sheet_w = (long long)cols * w + (long long)(cols - 1) * gap;
    const long long sheet_h = (long long)rows * (h + cap) + (long long)(rows - 1) * gap;
    size_t bytes;
    if (sheet_w > MAX_SIDE || sheet_h > MAX_SIDE || e2g_mul_size((size_t)sheet_w * sheet_h, 3, &bytes) != 0)
        return e2g_fail(err, "contact sheet: %lld×%lld pixels is too large", sheet_w, sheet_h);

    e2g_image sheet = {(int)sheet_w, (int)sheet_h, e2g_xmalloc(bytes)};
    memset(sheet.rgb, 255, bytes);
    for (int i = 0; i < n; i++) {
        const int x0 = (i % cols) * (w + gap), y0 = (i / cols) * (h + cap + gap) + cap;
        for (int y = 0; y < h; y++)
            memcpy(sheet.rgb + ((size_t)(y0 + y) * sheet.width + x0) * 3,
                   cells[i]->rgb + (size_t)y * w * 3, (size_t)w * 3);
    }
    for (int r = 0; captions && r < rows; r++)
        if (captions[r]) draw_text(&sheet, 1, r * (h + cap + gap) + 3, captions[r], 1, TEXT);
    int rc = e2g_image_write_file(path, &sheet, JPEG_QUALITY, err);
    e2g_image_free(&sheet);
    return rc;
}

/* ---- axes ------------------------------------------------------------------ */

#define MAX_TICKS 16
#define LABEL_LEN 24

typedef struct {
    double lo, hi; /* the span drawn, data plus margin */
    int n_ticks;
    double ticks[MAX_TICKS];
    char labels[MAX_TICKS][LABEL_LEN];
    int label_w; /* widest label in pixels */
} axis;

/* Ticks at 1, 2 or 5 × 10^k, about `target` of them, inside [lo, hi], and
 * their labels: fixed-point with as many decimals as the step needs, or
 * %e when the values are very large or very small. */
static void axis_ticks(axis *ax, int target, int scale) {
    ax->n_ticks = 0;
    ax->label_w = 0;
    const double span = ax->hi - ax->lo;
    if (!isfinite(span) || span <= 0) return;
    const double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    const double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    const int exponent = (int)floor(log10(step) + 1e-9);
    const double biggest = fmax(fabs(ax->lo), fabs(ax->hi));
    const int scientific = biggest >= 1e7 || step < 1e-4;
    const int digits = scientific ? (int)floor(log10(biggest)) - exponent : -exponent;
    for (double k = ceil(ax->lo / step); ax->n_ticks < MAX_TICKS && k * step <= ax->hi + step * 1e-9; k++) {
        double v = k * step;
        if (fabs(v) < step * 1e-6) v = 0; /* no "-0" or "1e-17" */
        char *label = ax->labels[ax->n_ticks];
        if (scientific)
            snprintf(label, LABEL_LEN, "%.*e", digits < 0 ? 0 : digits > 6 ? 6 : digits, v);
        else
            snprintf(label, LABEL_LEN, "%.*f", digits < 0 ? 0 : digits, v);
        int lw = text_width(label, scale);
        if (lw > ax->label_w) ax->label_w = lw;
        ax->ticks[ax->n_ticks++] = v;
    }
}

/* Sets ax to [lo, hi] widened by `margin` of its span on each side; an
 * empty range (lo > hi: no data) becomes 0..1 and a single value v becomes
 * v ± 10 % (± 1 for 0). */
static void axis_fit(axis *ax, double lo, double hi, double margin, int target, int scale) {
    if (lo > hi) {
        lo = 0;
        hi = 1;
    } else if (lo == hi) {
        double pad = lo != 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    } else {
        double pad = (hi - lo) * margin;
        lo -= pad;
        hi += pad;
    }
    ax->lo = lo;
    ax->hi = hi;
    axis_ticks(ax, target, scale);
}

/* Maps v on ax to a pixel between p0 (at lo) and p1 (at hi). */
static int axis_map(const axis *ax, double v, int p0, int p1) {
    double t = (v - ax->lo) / (ax->hi - ax->lo);
    if (!isfinite(t)) t = 0.5;
    t = fmin(fmax(t, -1), 2); /* a point off the axis stays near the plot */
    return p0 + (int)lround(t * (p1 - p0));
}

/* ---- line chart ------------------------------------------------------------- */

#define TITLE_SCALE 2
#define TEXT_SCALE 1
#define TEXT_H (GLYPH_H * TEXT_SCALE)
#define TICK_LEN 5
#define LABEL_GAP 4 /* between a tick and its label */
#define PAD 10
#define SWATCH_W 24
#define SWATCH_GAP 6
#define LEGEND_GAP 24
#define LEGEND_ROW_H (TEXT_H + 6)
#define LEGEND_MAX_ROWS 6
#define MARKER_MAX_POINTS 50
#define RIGHT_AXIS_NOTE " (right axis)"

static int imax(int a, int b) { return a > b ? a : b; }

static int finite_point(const e2g_series *s, int i) { return isfinite(s->x[i]) && isfinite(s->y[i]); }

/* Widens [*lo, *hi] to the finite points of the series whose right_axis
 * flag matches `right` (any series when right < 0), on x or on y. */
static void data_range(const e2g_series *series, int n_series, int right, int on_y, double *lo,
                       double *hi) {
    for (int s = 0; s < n_series; s++) {
        if (right >= 0 && (series[s].right_axis != 0) != right) continue;
        for (int i = 0; i < series[s].n; i++) {
            if (!finite_point(&series[s], i)) continue;
            double v = on_y ? series[s].y[i] : series[s].x[i];
            *lo = fmin(*lo, v);
            *hi = fmax(*hi, v);
        }
    }
}

typedef struct {
    int series;     /* index into the chart's series */
    char text[128]; /* label, plus RIGHT_AXIS_NOTE where it helps */
    int x, row;     /* left edge of the swatch, legend row */
} legend_entry;

/* Fills entries with the labelled series, placed in rows centred on the
 * image and wrapped at its width, up to LEGEND_MAX_ROWS rows (later series
 * are left out of the legend); *n_entries and *n_rows get the counts. */
static void legend_layout(legend_entry *entries, int *n_entries, int *n_rows, const e2g_series *series,
                          int n_series, int both_axes) {
    const int avail = E2G_CHART_WIDTH - 2 * PAD;
    int n = 0, rows = 0, first = 0, row_w = 0;
    for (int s = 0; s <= n_series; s++) {
        int w = 0;
        if (s < n_series) {
            if (!series[s].label) continue;
            legend_entry *e = &entries[n];
            e->series = s;
            snprintf(e->text, sizeof e->text, "%s%s", series[s].label,
                     both_axes && series[s].right_axis ? RIGHT_AXIS_NOTE : "");
            w = SWATCH_W + SWATCH_GAP + text_width(e->text, TEXT_SCALE);
        }
        if (n > first && (s == n_series || row_w + LEGEND_GAP + w > avail)) {
            int x = imax(PAD, (E2G_CHART_WIDTH - row_w) / 2);
            for (int e = first; e < n; e++) {
                entries[e].x = x;
                entries[e].row = rows;
                x += SWATCH_W + SWATCH_GAP + text_width(entries[e].text, TEXT_SCALE) + LEGEND_GAP;
            }
            first = n;
            row_w = 0;
            if (++rows == LEGEND_MAX_ROWS) break;
        }
        if (s < n_series) {
            row_w += (row_w ? LEGEND_GAP : 0) + w;
            n++;
        }
    }
    *n_entries = n;
    *n_rows = rows;
}

/* Draws one series into the plot rectangle (x0, y0)–(x1, y1): 2-pixel
 * lines between consecutive finite points and 5×5 markers where
 * e2g_series promises them. */
static void draw_series(e2g_image *im, const e2g_series *s, const axis *ax, const axis *ay, int x0,
                        int y0, int x1, int y1) {
    int finite = 0;
    for (int i = 0; i < s->n; i++) finite += finite_point(s, i);
    for (int i = 0; i < s->n; i++) {
        if (!finite_point(s, i)) continue;
        const int px = axis_map(ax, s->x[i], x0, x1), py = axis_map(ay, s->y[i], y1, y0);
        const int prev = i > 0 && finite_point(s, i - 1), next = i + 1 < s->n && finite_point(s, i + 1);
        if (prev)
            draw_line(im, axis_map(ax, s->x[i - 1], x0, x1), axis_map(ay, s->y[i - 1], y1, y0), px, py, 2,
                      s->rgb);
        if (finite <= MARKER_MAX_POINTS || (!prev && !next)) fill_rect(im, px - 2, py - 2, 5, 5, s->rgb);
    }
}

int e2g_line_chart(const char *path, const e2g_series *series, int n_series, const char *title,
                   char *err) {
    if (n_series < 0 || (n_series > 0 && !series))
        return e2g_fail(err, "line chart: bad series list (%d series)", n_series);
    int has_left = 0, has_right = 0;
    for (int s = 0; s < n_series; s++) {
        if (series[s].n < 0 || (series[s].n > 0 && (!series[s].x || !series[s].y)))
            return e2g_fail(err, "line chart: series %d has %d points and %s", s, series[s].n,
                            series[s].n < 0 ? "a negative count" : "no x or y array");
        has_right |= series[s].right_axis != 0;
        has_left |= series[s].right_axis == 0;
    }
    const int draw_left = has_left || !has_right, has_title = title && *title;

    /* Scale the axes, then size the margins to their labels and the legend. */
    axis ax, ayl, ayr;
    double lo = INFINITY, hi = -INFINITY;
    data_range(series, n_series, -1, 0, &lo, &hi);
    axis_fit(&ax, lo, hi, 0.02, 8, TEXT_SCALE);
    lo = INFINITY, hi = -INFINITY;
    data_range(series, n_series, 0, 1, &lo, &hi);
    axis_fit(&ayl, lo, hi, 0.05, 6, TEXT_SCALE);
    lo = INFINITY, hi = -INFINITY;
    data_range(series, n_series, 1, 1, &lo, &hi);
    axis_fit(&ayr, lo, hi, 0.05, 6, TEXT_SCALE);

    legend_entry *legend = e2g_xcalloc(n_series + 1, sizeof *legend);
    int n_legend, legend_rows;
    legend_layout(legend, &n_legend, &legend_rows, series, n_series, has_left && has_right);

    /* Plot rectangle (x0, y0)–(x1, y1), frame included, with room for the
     * y labels and for half of an x label centred on the frame. */
    const int x_label_half = ax.n_ticks ? ax.label_w / 2 : 0;
    const int x0 = PAD + imax(draw_left ? ayl.label_w + TICK_LEN + LABEL_GAP : 0, x_label_half);
    const int x1 = E2G_CHART_WIDTH - 1 - PAD -
                   imax(has_right ? ayr.label_w + TICK_LEN + LABEL_GAP : 0, x_label_half);
    const int y0 = has_title ? 2 * PAD + GLYPH_CAP * TITLE_SCALE : PAD + TEXT_H / 2;
    const int legend_y = E2G_CHART_HEIGHT - PAD - legend_rows * LEGEND_ROW_H;
    const int y1 = legend_y - (legend_rows ? PAD : 0) - TEXT_H - LABEL_GAP - TICK_LEN;
    const int cap_mid = GLYPH_CAP * TEXT_SCALE / 2; /* centres a number on its tick */

    e2g_image im = {E2G_CHART_WIDTH, E2G_CHART_HEIGHT,
                    e2g_xmalloc((size_t)E2G_CHART_WIDTH * E2G_CHART_HEIGHT * 3)};
    fill_rect(&im, 0, 0, im.width, im.height, WHITE);

    /* Grid lines and ticks with labels: x below, y right-aligned on the
     * left and left-aligned on the right. */
    const axis *grid_y = draw_left ? &ayl : &ayr;
    for (int t = 0; t < grid_y->n_ticks; t++)
        fill_rect(&im, x0, axis_map(grid_y, grid_y->ticks[t], y1, y0), x1 - x0, 1, GRID);
    for (int t = 0; t < ax.n_ticks; t++) {
        const int px = axis_map(&ax, ax.ticks[t], x0, x1);
        fill_rect(&im, px, y0, 1, y1 - y0, GRID);
        fill_rect(&im, px, y1, 1, TICK_LEN, BLACK);
        draw_text(&im, px - text_width(ax.labels[t], TEXT_SCALE) / 2, y1 + TICK_LEN + LABEL_GAP, ax.labels[t],
                  TEXT_SCALE, TEXT);
    }
    for (int t = 0; draw_left && t < ayl.n_ticks; t++) {
        const int py = axis_map(&ayl, ayl.ticks[t], y1, y0);
        fill_rect(&im, x0 - TICK_LEN, py, TICK_LEN, 1, BLACK);
        draw_text(&im, x0 - TICK_LEN - LABEL_GAP - text_width(ayl.labels[t], TEXT_SCALE), py - cap_mid,
                  ayl.labels[t], TEXT_SCALE, TEXT);
    }
    for (int t = 0; has_right && t < ayr.n_ticks; t++) {
        const int py = axis_map(&ayr, ayr.ticks[t], y1, y0);
        fill_rect(&im, x1 + 1, py, TICK_LEN, 1, BLACK);
        draw_text(&im, x1 + 1 + TICK_LEN + LABEL_GAP, py - cap_mid, ayr.labels[t], TEXT_SCALE, TEXT);
    }

    for (int s = 0; s < n_series; s++)
        draw_series(&im, &series[s], &ax, series[s].right_axis ? &ayr : &ayl, x0, y0, x1, y1);

    /* The frame goes over the curves' ends; then title and legend. */
    draw_line(&im, x0, y0, x1, y0, 1, BLACK);
    draw_line(&im, x0, y1, x1, y1, 1, BLACK);
    draw_line(&im, x0, y0, x0, y1, 1, BLACK);
    draw_line(&im, x1, y0, x1, y1, 1, BLACK);
    if (has_title)
        draw_text(&im, (E2G_CHART_WIDTH - text_width(title, TITLE_SCALE)) / 2, PAD, title, TITLE_SCALE,
                  BLACK);
    for (int e = 0; e < n_legend; e++) {
        const int y = legend_y + legend[e].row * LEGEND_ROW_H;
        fill_rect(&im, legend[e].x, y + cap_mid - 1, SWATCH_W, 3, series[legend[e].series].rgb);
        draw_text(&im, legend[e].x + SWATCH_W + SWATCH_GAP, y, legend[e].text, TEXT_SCALE, TEXT);
    }
    free(legend);

    int rc = e2g_image_write_file(path, &im, JPEG_QUALITY, err);
    e2g_image_free(&im);
    return rc;
}
