"""metrics_refs.py — reference PSNR and SSIM for engine/metrics.c, computed
in numpy float64 straight from the definitions: PSNR over all samples with
MAX = 255 (capped at 100 dB), and SSIM (Wang et al. 2004) with an 11×11
Gaussian window of σ = 1.5 applied as a 2-D convolution on the valid region
only, K1 = 0.01, K2 = 0.03, L = 255, population statistics, averaged over
positions and then over the three channels — what skimage's
structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1) returns.

Usage: metrics_refs.py --out DIR  → DIR/metrics.safetensors with, for each
case named in metadata `cases` (comma-separated), tensors <case>.a and
<case>.b (H, W, 3) holding 0..255 integers as float32, and metadata
<case>.psnr and <case>.ssim (repr of a float64)."""
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
    meta["cases"] = ",".join(names)
    safetensors_io.save(os.path.join(args.out, "metrics.safetensors"), tensors, metadata=meta)


if __name__ == "__main__":
    main()
