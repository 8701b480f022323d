"""export_onnx.py — exports an e2gan-base file to ONNX for the onnxruntime peer
(tools/e2gan_torch.py export_onnx: input x N×3×S×S, base concept baked in).
With --check-dir it also writes a random input and PyTorch's output as raw
little-endian float32 (x.f32, y.f32) for `ort_bench.mjs --check`.

usage: /usr/bin/python3 bench/export_onnx.py --model BASE --size S --out M.onnx
       [--concept K] [--check-dir DIR]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import e2gan_torch as E  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="export an e2gan base to ONNX")
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--concept", type=int, default=0)
    ap.add_argument("--check-dir")
    args = ap.parse_args()
    G = E.load_base(args.model)[0].eval()
    E.export_onnx(G, args.out, args.size, args.size, args.concept)
    if args.check_dir:
        torch.manual_seed(0)
        x = torch.rand(1, 3, args.size, args.size) * 2 - 1
        with torch.inference_mode():
            y = G(x, G.concept_context([args.concept]))
        x.numpy().astype("<f4").tofile(os.path.join(args.check_dir, "x.f32"))
        y.numpy().astype("<f4").tofile(os.path.join(args.check_dir, "y.f32"))


if __name__ == "__main__":
    main()
