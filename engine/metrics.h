/* metrics.h — image quality metrics for validation and training reports
 * (docs/data.md, docs/training.md): PSNR, SSIM and edge F1 between two
 * 8-bit RGB images of the same size, computed on the quantised pixels the
 * user would see, and the share of "paper" in an image.  All take
 * interleaved RGB8 buffers laid out like e2g_image.rgb ((h, w, 3),
 * row-major, no padding). */
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

/* ---- edges ----------------------------------------------------------------
 * An edge map is thin Sobel edges of the luma, thresholded against the
 * reference (teacher) image's own edge strength:
 *   luma  Y = 0.299 R + 0.587 G + 0.114 B (computed exactly, as 1000·Y);
 *   Sobel gx, gy (3×3, weights 1 2 1) at every pixel with all 8 neighbours
 *         in the image, magnitude M = sqrt(gx² + gy²) in luma units (a step
 *         of d grey levels gives M = 4d); pixels on the image's border have
 *         M = 0 and are never edges;
 *   thin  non-maximum suppression along the gradient, quantised to 0°, 45°,
 *         90° or 135° (|gy| <= tan 22.5°·|gx| is horizontal, and so on): a
 *         pixel stays if its M is above the neighbour before it (smaller x;
 *         for the vertical direction, smaller y) and at least the one
 *         after, so a plateau two pixels wide leaves one;
 *   keep  the thin pixels with M > T, where T is the reference's
 *         threshold: the mean plus one standard deviation (population) of
 *         its M over the non-border pixels, at least E2G_EDGE_FLOOR.
 * The same T applies to both images, so a faded copy of the reference loses
 * its weak edges.  Everything up to the threshold comparison is integer
 * arithmetic, so maps are exact. */

/* The least edge threshold T: a step of 8 grey levels. */
#define E2G_EDGE_FLOOR 32.0
/* The matching tolerance: an edge pixel is matched when the other map has
 * an edge within this Chebyshev distance (1: its 3×3 neighbourhood). */
#define E2G_EDGE_TOLERANCE 1

/* T of reference image ref (above); NaN when w or h is below 3. */
double e2g_edge_threshold(const uint8_t *ref, int w, int h);

/* Writes img's edge map at threshold t into map (w·h bytes, 1 = edge) and
 * returns the number of edge pixels. */
long e2g_edge_map(const uint8_t *img, int w, int h, double t, uint8_t *map);

typedef struct {
    double f1, precision, recall;
    double threshold;          /* T, from the reference */
    long ref_edges, edges;     /* edge pixels of the reference and of the image */
    long ref_matched, matched; /* of those, how many the other map matches */
} e2g_edge_score;

/* Edge F1 of image `out` against reference `ref`: both edge maps at the
 * reference's T; recall = matched reference edges / reference edges,
 * precision = matched edges of out / edges of out (a pixel is matched
 * within E2G_EDGE_TOLERANCE), F1 = 2PR / (P + R), 0 when P + R = 0.  With no
 * edges in out, P is 1 and F1 0 (a constant image scores 0).  Returns NaN
 * (and fills score, when non-NULL) when ref has no edge at all or is smaller
 * than 3×3: there is nothing to find.  Not symmetric: T comes from ref.
 * Edge polarity is ignored (an inverted copy scores 1).  Single-threaded;
 * deterministic. */
double e2g_edge_f1(const uint8_t *out, const uint8_t *ref, int w, int h, e2g_edge_score *score);

/* ---- paper ------------------------------------------------------------------ */

/* A pixel is "paper" when it is light and grey: min(R, G, B) >= 200 and
 * max − min <= 8. */
#define E2G_PAPER_MIN 200
#define E2G_PAPER_CHROMA 8

/* The share of paper pixels in img, 0..1: a drawing on white (a sketch,
 * line art) is mostly paper, a photo or a colour edit of one is not. */
double e2g_paper_share(const uint8_t *img, int w, int h);

#endif
