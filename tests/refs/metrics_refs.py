"""metrics_refs.py — reference PSNR, SSIM, edge F1 and paper share for
engine/metrics.c, computed in numpy straight from the definitions: PSNR over
all samples with MAX = 255 (capped at 100 dB), and SSIM (Wang et al. 2004)
with an 11×11 Gaussian window of σ = 1.5 applied as a 2-D convolution on the
valid region only, K1 = 0.01, K2 = 0.03, L = 255, population statistics,
averaged over positions and then over the three channels — what skimage's
structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1) returns.
Edge F1 (metrics.h): whole-array Sobel of 1000·luma, non-maximum suppression
by direction masks, the reference's threshold max(mean + std, 32) of the
magnitude off the border, and matching by a 3×3 dilation.

Usage: metrics_refs.py --out DIR  → DIR/metrics.safetensors with, for each
case named in metadata `cases` (comma-separated), tensors <case>.a and
<case>.b (H, W, 3) holding 0..255 integers as float32, <case>.edges_a and
<case>.edges_b (H, W), the two edge maps (0/1) at a's threshold, and
metadata <case>.psnr, <case>.ssim, <case>.edge_t (a's threshold),
<case>.edge_f1, <case>.edge_p, <case>.edge_r (b against a; "nan" when a has
no edge) and <case>.paper (a's paper share), each the repr of a float64."""
import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import safetensors_io  # noqa: E402

PHOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "chelsea.png")
PSNR_CAP = 100.0
SIGMA, RADIUS = 1.5, 5  # scipy's truncate = 3.5: int(3.5·1.5 + 0.5) = 5
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
EDGE_FLOOR = 32.0
TAN_22_5 = np.sqrt(2.0) - 1


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_CAP if mse == 0 else min(10 * np.log10(255.0**2 / mse), PSNR_CAP)


def gaussian_2d():
    """The 11×11 window: a 2-D Gaussian normalised to sum 1."""
    d = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    k = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * SIGMA**2))
    return k / k.sum()


def filter_valid(x, k):
    """Correlates each channel of x (H, W, C) with k, keeping only positions
    where the window lies inside the image: (H − 10, W − 10, C)."""
    n = k.shape[0]
    h, w = x.shape[0] - n + 1, x.shape[1] - n + 1
    out = np.zeros((h, w, x.shape[2]))
    for i in range(n):
        for j in range(n):
            out += k[i, j] * x[i : i + h, j : j + w]
    return out


def ssim(a, b):
    x, y, k = a.astype(np.float64), b.astype(np.float64), gaussian_2d()
    mx, my = filter_valid(x, k), filter_valid(y, k)
    vx = filter_valid(x * x, k) - mx * mx
    vy = filter_valid(y * y, k) - my * my
    cxy = filter_valid(x * y, k) - mx * my
    s = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    return float(s.mean(axis=(0, 1)).mean())


def sobel(img):
    """gx, gy of 1000·luma (int64), zero on the one-pixel border."""
    x = img.astype(np.int64)
    y = 299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2]
    h, w = y.shape
    gx, gy = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    at = lambda dy, dx: y[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]  # noqa: E731
    gx[1:-1, 1:-1] = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy[1:-1, 1:-1] = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def edge_threshold(ref):
    gx, gy = sobel(ref)
    m = np.sqrt((gx * gx + gy * gy).astype(np.float64))[1:-1, 1:-1] / 1000
    return max(float(m.mean() + m.std()), EDGE_FLOOR)


def edge_map(img, t):
    gx, gy = sobel(img)
    g = gx * gx + gy * gy
    h, w = g.shape
    gp = np.pad(g, 1)
    nb = lambda dy, dx: gp[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]  # noqa: E731
    ax, ay = np.abs(gx).astype(np.float64), np.abs(gy).astype(np.float64)
    hor = ay <= TAN_22_5 * ax
    ver = ~hor & (ax <= TAN_22_5 * ay)
    diag = ~hor & ~ver & (gx * gy > 0)
    anti = ~hor & ~ver & (gx * gy < 0)
    thin = ((hor & (g > nb(0, -1)) & (g >= nb(0, 1))) | (ver & (g > nb(-1, 0)) & (g >= nb(1, 0)))
            | (diag & (g > nb(-1, -1)) & (g >= nb(1, 1))) | (anti & (g > nb(1, -1)) & (g >= nb(-1, 1))))
    e = thin & (np.sqrt(g.astype(np.float64)) / 1000 > t)
    e[0, :] = e[-1, :] = e[:, 0] = e[:, -1] = False
    return e


def dilate3(e):
    h, w = e.shape
    p = np.pad(e, 1)
    return np.logical_or.reduce([p[i : i + h, j : j + w] for i in range(3) for j in range(3)])


def edge_f1(out, ref):
    """(F1, precision, recall, threshold, ref map, out map) of out against ref."""
    t = edge_threshold(ref)
    er, eo = edge_map(ref, t), edge_map(out, t)
    if not er.any():
        return float("nan"), float("nan"), float("nan"), t, er, eo
    r = (er & dilate3(eo)).sum() / er.sum()
    p = (eo & dilate3(er)).sum() / eo.sum() if eo.any() else 1.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return float(f1), float(p), float(r), t, er, eo


def paper_share(img):
    x = img.astype(np.int64)
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    return float(((lo >= 200) & (hi - lo <= 8)).mean())


def line_drawing(h, w, shift=0):
    """Thin dark lines on white: a horizontal, a vertical and a diagonal
    line and a circle, all moved by `shift` pixels right and down."""
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy - shift, xx - shift
    ink = (yy == h // 3) | (xx == w // 4) | (xx == yy + 5) | (np.abs(np.hypot(xx - 0.6 * w, yy - 0.6 * h) - w / 6) < 0.7)
    img = np.full((h, w, 3), 255, np.uint8)
    img[ink] = 40
    return img


def quantise(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def read_photo(path):
    """An 8-bit RGB image (H, W, 3) through ImageMagick (no Python imaging needed)."""
    size = subprocess.run(["identify", "-format", "%w %h", path], check=True, capture_output=True, text=True)
    w, h = map(int, size.stdout.split())
    raw = subprocess.run(["convert", path, "-depth", "8", "rgb:-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)


def box_blur(x, r):
    """Mean over a (2r+1)² box with edge replication, in float64."""
    p = np.pad(x.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    return sum(p[i : i + h, j : j + w] for i in range(2 * r + 1) for j in range(2 * r + 1)) / (2 * r + 1) ** 2


def smooth_image(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return quantise(np.stack([128 + 100 * np.sin(xx / 9 + yy / 13),
                              40 + 200 * xx / (w - 1),
                              128 + 90 * np.cos(np.hypot(xx - w / 3, yy - h / 2) / 6)], axis=-1))


def cases():
    rng = np.random.default_rng(20240611)
    photo = read_photo(PHOTO)
    smooth = smooth_image(60, 80)
    one_off = np.full((200, 300, 3), 77, np.uint8)
    one_off_b = one_off.copy()
    one_off_b[123, 45, 1] += 1
    photo_one_off = photo.copy()
    photo_one_off[10, 20, 2] ^= 1
    flat_b = np.full((13, 17, 3), 100, np.uint8)
    flat_b[..., 1] = 110
    window = rng.integers(0, 256, (11, 11, 3))
    strip = smooth_image(11, 300)
    yield "random_64x48", rng.integers(0, 256, (48, 64, 3)), rng.integers(0, 256, (48, 64, 3))
    yield "smooth_noisy_80x60", smooth, quantise(smooth + rng.normal(0, 12, smooth.shape))
    yield "window_11x11", window, quantise(0.7 * window + 30 + rng.normal(0, 20, window.shape))
    yield "strip_300x11", strip, quantise(0.9 * strip + rng.normal(0, 3, strip.shape))
    yield "flat_17x13", np.full((13, 17, 3), 100, np.uint8), flat_b
    yield "photo_blur_quant", photo, quantise(np.floor(box_blur(photo, 1) / 16) * 16 + 8)
    yield "photo_vs_inverted", photo, 255 - photo
    yield "photo_identical", photo, photo
    yield "photo_one_off", photo, photo_one_off
    yield "cap_one_off_300x200", one_off, one_off_b
    yield "photo_shift_1px", photo, np.roll(photo, 1, axis=1)
    yield "photo_shift_2px", photo, np.roll(photo, 2, axis=0)
    yield "photo_blur_r1", photo, quantise(box_blur(photo, 1))
    yield "photo_blur_r2", photo, quantise(box_blur(photo, 2))
    yield "photo_faded", photo, quantise(0.4 * photo + 150)
    yield "photo_vs_white", photo, np.full_like(photo, 255)
    yield "photo_vs_mean", photo, np.broadcast_to(quantise(photo.reshape(-1, 3).mean(axis=0)), photo.shape)
    lines = line_drawing(72, 96)
    yield "lines_shift_1px", lines, line_drawing(72, 96, shift=1)
    yield "lines_vs_photo", lines, photo[:72, :96]
    yield "photo_vs_lines", photo[:72, :96], lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for metrics.safetensors")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tensors, meta, names = {}, {}, []
    for name, a, b in cases():
        names.append(name)
        tensors[f"{name}.a"] = np.asarray(a, np.float32)
        tensors[f"{name}.b"] = np.asarray(b, np.float32)
        meta[f"{name}.psnr"] = repr(float(psnr(a, b)))
        meta[f"{name}.ssim"] = repr(ssim(a, b))
        f1, p, r, t, ea, eb = edge_f1(b, a)
        tensors[f"{name}.edges_a"] = ea.astype(np.float32)
        tensors[f"{name}.edges_b"] = eb.astype(np.float32)
        for key, v in (("edge_f1", f1), ("edge_p", p), ("edge_r", r), ("edge_t", t), ("paper", paper_share(a))):
            meta[f"{name}.{key}"] = repr(float(v))
    meta["cases"] = ",".join(names)
    safetensors_io.save(os.path.join(args.out, "metrics.safetensors"), tensors, metadata=meta)


if __name__ == "__main__":
    main()
