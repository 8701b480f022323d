/* metrics.c — PSNR, SSIM and edge F1 between 8-bit RGB images, and the
 * paper share (metrics.h).  SSIM's Gaussian window is separable, so each
 * channel is filtered along rows into five planes (means of a, b and of a²,
 * b², a·b) and then down columns, one output row at a time; per-row sums are
 * added in order so that the result is the same for any number of threads.
 * Edge maps are integer Sobel gradients of 1000·luma, thinned by
 * non-maximum suppression and thresholded in double. */
#include "metrics.h"

#include "common.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SSIM_SIGMA 1.5
#define SSIM_C1 ((0.01 * 255) * (0.01 * 255))
#define SSIM_C2 ((0.03 * 255) * (0.03 * 255))

enum { STAT_A, STAT_B, STAT_AA, STAT_BB, STAT_AB, STAT_COUNT };

double e2g_psnr(const uint8_t *a, const uint8_t *b, int w, int h) {
    size_t n = (size_t)w * h * 3;
    uint64_t sum = 0; /* exact: at most 255² per sample */
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < n; i++) {
        int d = (int)a[i] - (int)b[i];
        sum += (uint64_t)(d * d);
    }
    if (sum == 0) return E2G_PSNR_CAP;
    double psnr = 10.0 * log10(255.0 * 255.0 / ((double)sum / (double)n));
    return fmin(psnr, E2G_PSNR_CAP);
}

/* The normalised 1-D Gaussian exp(−k²/2σ²), k = −5..5, that scipy's
 * gaussian_filter uses for σ = 1.5 and truncate = 3.5. */
static void ssim_window(double g[E2G_SSIM_WIN]) {
    double total = 0;
    for (int k = 0; k < E2G_SSIM_WIN; k++) {
        double d = k - E2G_SSIM_WIN / 2;
        g[k] = exp(-0.5 * d * d / (SSIM_SIGMA * SSIM_SIGMA));
        total += g[k];
    }
    for (int k = 0; k < E2G_SSIM_WIN; k++) g[k] /= total;
}

/* Mean SSIM of channel c over the valid region.  planes is scratch of
 * STAT_COUNT · h · ow doubles, row_sums of oh doubles. */
static double ssim_channel(const uint8_t *a, const uint8_t *b, int w, int h, int c,
                           const double g[E2G_SSIM_WIN], double *planes, double *row_sums) {
    const int ow = w - E2G_SSIM_WIN + 1, oh = h - E2G_SSIM_WIN + 1;
    const size_t plane = (size_t)h * ow;

#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        const uint8_t *ra = a + (size_t)y * w * 3 + c, *rb = b + (size_t)y * w * 3 + c;
        double *out = planes + (size_t)y * ow;
        for (int x = 0; x < ow; x++) {
            double s[STAT_COUNT] = {0};
            for (int k = 0; k < E2G_SSIM_WIN; k++) {
                double va = ra[(size_t)(x + k) * 3], vb = rb[(size_t)(x + k) * 3];
                s[STAT_A] += g[k] * va;
                s[STAT_B] += g[k] * vb;
                s[STAT_AA] += g[k] * (va * va);
                s[STAT_BB] += g[k] * (vb * vb);
                s[STAT_AB] += g[k] * (va * vb);
            }
            for (int q = 0; q < STAT_COUNT; q++) out[q * plane + x] = s[q];
        }
    }

#pragma omp parallel
    {
        double *acc = e2g_xmalloc((size_t)STAT_COUNT * ow * sizeof(double)); /* (5, ow) */
#pragma omp for schedule(static)
        for (int y = 0; y < oh; y++) {
            memset(acc, 0, (size_t)STAT_COUNT * ow * sizeof(double));
            for (int k = 0; k < E2G_SSIM_WIN; k++)
                for (int q = 0; q < STAT_COUNT; q++) {
                    const double *src = planes + q * plane + (size_t)(y + k) * ow;
                    double *dst = acc + (size_t)q * ow;
                    for (int x = 0; x < ow; x++) dst[x] += g[k] * src[x];
                }
            double sum = 0;
            for (int x = 0; x < ow; x++) {
                double ma = acc[STAT_A * ow + x], mb = acc[STAT_B * ow + x];
                double va = acc[STAT_AA * ow + x] - ma * ma;
                double vb = acc[STAT_BB * ow + x] - mb * mb;
                double cov = acc[STAT_AB * ow + x] - ma * mb;
                sum += ((2 * ma * mb + SSIM_C1) * (2 * cov + SSIM_C2)) /
                       ((ma * ma + mb * mb + SSIM_C1) * (va + vb + SSIM_C2));
            }
            row_sums[y] = sum;
        }
        free(acc);
    }

    double total = 0;
    for (int y = 0; y < oh; y++) total += row_sums[y];
    return total / ((double)oh * ow);
}

double e2g_ssim(const uint8_t *a, const uint8_t *b, int w, int h) {
    if (w < E2G_SSIM_WIN || h < E2G_SSIM_WIN) return NAN;
    const int ow = w - E2G_SSIM_WIN + 1, oh = h - E2G_SSIM_WIN + 1;
    double g[E2G_SSIM_WIN];
    ssim_window(g);
    double *planes = e2g_xmalloc((size_t)STAT_COUNT * h * ow * sizeof(double)); /* (5, h, ow) */
    double *row_sums = e2g_xmalloc((size_t)oh * sizeof(double));
    double total = 0;
    for (int c = 0; c < 3; c++) total += ssim_channel(a, b, w, h, c, g, planes, row_sums);
    free(planes);
    free(row_sums);
    return total / 3;
}

/* ---- edges ------------------------------------------------------------------ */

#define TAN_22_5 0.41421356237309503 /* √2 − 1 */

/* 1000·luma of every pixel: 299 R + 587 G + 114 B. */
static void luma1000(const uint8_t *img, int w, int h, int32_t *y) {
    for (size_t i = 0; i < (size_t)w * h; i++)
        y[i] = 299 * img[3 * i] + 587 * img[3 * i + 1] + 114 * img[3 * i + 2];
}

/* Sobel gradients of img at every non-border pixel (0 on the border) and
 * their squared magnitudes g = gx² + gy² (in (1000·luma)² units). */
static void sobel(const uint8_t *img, int w, int h, int32_t *gx, int32_t *gy, int64_t *g) {
    int32_t *y = e2g_xmalloc((size_t)w * h * sizeof(int32_t));
    luma1000(img, w, h, y);
    memset(gx, 0, (size_t)w * h * sizeof(int32_t));
    memset(gy, 0, (size_t)w * h * sizeof(int32_t));
    memset(g, 0, (size_t)w * h * sizeof(int64_t));
    for (int r = 1; r < h - 1; r++)
        for (int c = 1; c < w - 1; c++) {
            const int32_t *up = y + (size_t)(r - 1) * w + c, *mid = y + (size_t)r * w + c,
                          *dn = y + (size_t)(r + 1) * w + c;
            int32_t x = (up[1] + 2 * mid[1] + dn[1]) - (up[-1] + 2 * mid[-1] + dn[-1]);
            int32_t v = (dn[-1] + 2 * dn[0] + dn[1]) - (up[-1] + 2 * up[0] + up[1]);
            size_t i = (size_t)r * w + c;
            gx[i] = x, gy[i] = v;
            g[i] = (int64_t)x * x + (int64_t)v * v;
        }
    free(y);
}

/* The magnitude in luma units of a squared 1000·luma gradient. */
static double magnitude(int64_t g) { return sqrt((double)g) / 1000.0; }

double e2g_edge_threshold(const uint8_t *ref, int w, int h) {
    if (w < 3 || h < 3) return NAN;
    size_t n = (size_t)w * h, inner = (size_t)(w - 2) * (h - 2);
    int32_t *gx = e2g_xmalloc(n * sizeof(int32_t)), *gy = e2g_xmalloc(n * sizeof(int32_t));
    int64_t *g = e2g_xmalloc(n * sizeof(int64_t));
    sobel(ref, w, h, gx, gy, g);
    double sum = 0, dev = 0;
    for (int r = 1; r < h - 1; r++)
        for (int c = 1; c < w - 1; c++) sum += magnitude(g[(size_t)r * w + c]);
    double mean = sum / (double)inner;
    for (int r = 1; r < h - 1; r++)
        for (int c = 1; c < w - 1; c++) {
            double d = magnitude(g[(size_t)r * w + c]) - mean;
            dev += d * d;
        }
    free(gx), free(gy), free(g);
    double t = mean + sqrt(dev / (double)inner);
    return t > E2G_EDGE_FLOOR ? t : E2G_EDGE_FLOOR;
}

long e2g_edge_map(const uint8_t *img, int w, int h, double t, uint8_t *map) {
    size_t n = (size_t)w * h;
    memset(map, 0, n);
    if (w < 3 || h < 3) return 0;
    int32_t *gx = e2g_xmalloc(n * sizeof(int32_t)), *gy = e2g_xmalloc(n * sizeof(int32_t));
    int64_t *g = e2g_xmalloc(n * sizeof(int64_t));
    sobel(img, w, h, gx, gy, g);
    long count = 0;
    for (int r = 1; r < h - 1; r++)
        for (int c = 1; c < w - 1; c++) {
            size_t i = (size_t)r * w + c;
            if (!(magnitude(g[i]) > t)) continue;
            double ax = fabs((double)gx[i]), ay = fabs((double)gy[i]);
            ptrdiff_t before, after; /* offsets of the neighbours across the edge */
            if (ay <= TAN_22_5 * ax) {
                before = -1, after = 1; /* horizontal gradient: left, right */
            } else if (ax <= TAN_22_5 * ay) {
                before = -(ptrdiff_t)w, after = w; /* vertical: up, down */
            } else if ((gx[i] > 0) == (gy[i] > 0)) {
                before = -(ptrdiff_t)w - 1, after = w + 1; /* along ↘: up-left, down-right */
            } else {
                before = w - 1, after = -(ptrdiff_t)w + 1; /* along ↗: down-left, up-right */
            }
            if (g[i] > g[i + before] && g[i] >= g[i + after]) map[i] = 1, count++;
        }
    free(gx), free(gy), free(g);
    return count;
}

/* How many edges of `a` have an edge of `b` within the tolerance. */
static long matched(const uint8_t *a, const uint8_t *b, int w, int h) {
    const int d = E2G_EDGE_TOLERANCE;
    long n = 0;
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++) {
            if (!a[(size_t)r * w + c]) continue;
            int hit = 0;
            for (int rr = r - d > 0 ? r - d : 0; rr <= r + d && rr < h && !hit; rr++)
                for (int cc = c - d > 0 ? c - d : 0; cc <= c + d && cc < w && !hit; cc++)
                    hit = b[(size_t)rr * w + cc];
            n += hit;
        }
    return n;
}

double e2g_edge_f1(const uint8_t *out, const uint8_t *ref, int w, int h, e2g_edge_score *score) {
    e2g_edge_score s = {.f1 = NAN, .precision = NAN, .recall = NAN, .threshold = NAN};
    if (w >= 3 && h >= 3) {
        s.threshold = e2g_edge_threshold(ref, w, h);
        uint8_t *mr = e2g_xmalloc((size_t)w * h), *mo = e2g_xmalloc((size_t)w * h);
        s.ref_edges = e2g_edge_map(ref, w, h, s.threshold, mr);
        s.edges = e2g_edge_map(out, w, h, s.threshold, mo);
        if (s.ref_edges > 0) {
            s.ref_matched = matched(mr, mo, w, h);
            s.matched = matched(mo, mr, w, h);
            s.recall = (double)s.ref_matched / (double)s.ref_edges;
            s.precision = s.edges ? (double)s.matched / (double)s.edges : 1.0;
            s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
        }
        free(mr), free(mo);
    }
    if (score) *score = s;
    return s.f1;
}

/* ---- paper ------------------------------------------------------------------ */

double e2g_paper_share(const uint8_t *img, int w, int h) {
    size_t n = (size_t)w * h, paper = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = img + 3 * i;
        int lo = p[0] < p[1] ? p[0] : p[1], hi = p[0] > p[1] ? p[0] : p[1];
        lo = p[2] < lo ? p[2] : lo, hi = p[2] > hi ? p[2] : hi;
        paper += lo >= E2G_PAPER_MIN && hi - lo <= E2G_PAPER_CHROMA;
    }
    return n ? (double)paper / (double)n : 0.0;
}
