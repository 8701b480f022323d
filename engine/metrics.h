/* metrics.h — image quality metrics for validation and training reports
 * (docs/data.md): PSNR and SSIM between two 8-bit RGB images
 * of the same size, computed on the quantised pixels the user would see.
 * Both take interleaved RGB8 buffers laid out like e2g_image.rgb
 * ((h, w, 3), row-major, no padding) and compute in double. */
#ifndef E2G_METRICS_H
#define E2G_METRICS_H

#include <stdint.h>

/* The PSNR reported for identical images, and the most e2g_psnr returns for
 * any pair, so that a mean over images stays finite and monotone. */
#define E2G_PSNR_CAP 100.0

/* The side of SSIM's Gaussian window (σ = 1.5, truncated at 3.5σ as in
 * scipy/skimage): images narrower or shorter than this have no SSIM. */
#define E2G_SSIM_WIN 11

/* Peak signal-to-noise ratio in dB with MAX = 255:
 * 10·log10(255² / MSE), the MSE taken over all w·h·3 samples at once (not a
 * mean of per-channel PSNRs), capped at E2G_PSNR_CAP (also the value for
 * identical images).  Requires w, h >= 1. */
double e2g_psnr(const uint8_t *a, const uint8_t *b, int w, int h);

/* Mean structural similarity of Wang et al. (2004): an 11×11 Gaussian
 * window of σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, population (not sample)
 * statistics, evaluated at every position where the window fits inside the
 * image (no padding) and averaged there, per channel; the result is the
 * mean of the three channels' values.  Matches skimage's
 * structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
 * use_sample_covariance=False, data_range=255, channel_axis=-1).
 * Returns NaN when w or h is below E2G_SSIM_WIN.  Uses OpenMP threads; the
 * result does not depend on their number. */
double e2g_ssim(const uint8_t *a, const uint8_t *b, int w, int h);

#endif
