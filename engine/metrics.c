/* metrics.c — PSNR and SSIM between 8-bit RGB images (metrics.h).  SSIM's
 * Gaussian window is separable, so each channel is filtered along rows into
 * five planes (means of a, b and of a², b², a·b) and then down columns, one
 * output row at a time; per-row sums are added in order so that the result
 * is the same for any number of threads. */
#include "metrics.h"

#include "common.h"

#include <math.h>
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
