"""gpu_calibrate.py — the GPU checks' tolerances, measured in the same run
instead of guessed: PyTorch's own bf16 error against its fp32 result on the
same shapes, input ranges and weights as the checks (bench/gpu-run.sh runs
it before them and hands its file to e2gan-gpu-check and
e2gan-gpu-train-check through $E2G_TOLERANCES).

- ops: for every line of `e2gan-gpu-check ops --list` (name, kind and shape
  as key=value), random inputs in the ranges gpu_check.c draws from, the op
  in fp32 and in bf16 (inputs and weights rounded to bf16, PyTorch's bf16
  kernels: cuDNN convolutions, SDPA, norms) → err = max |bf16 − fp32| /
  max |fp32|, the measure the checks use; tolerance = max(2·err, 2⁻⁸): our
  kernels may be up to twice PyTorch's own bf16 error, and no tighter than
  one bf16 rounding of the largest value.
- model: the base (concept 0) and each adapter merged at strength 1 on the
  check's image (the .npy `e2gan-gpu-check dump-image` writes), fp32 vs a
  bf16 copy of the model → PSNR on the 0..255 scale; floor = worst − 6 dB
  (an RMS error up to twice PyTorch's own bf16 error).
- grads (--grads): one L1 step of a random generator (ngf 16, 32², batch 2
  as the first gradient check) in fp32 and in bf16 → per parameter tensor
  cosine and max |bf16 − fp32| / max |fp32|; grad_cos = 1 − 2·(1 − worst
  cos), grad_rel = 2·worst rel (PyTorch's random weights, not the check's:
  an indication of bf16's effect on gradients, not the same numbers).

Writes lines "op NAME ERR TOL", "psnr NAME DB", "psnr_min DB",
"grad_cos X", "grad_rel X" to --out and prints them; the last stdout line is
a one-line summary.

usage: python3 bench/gpu_calibrate.py --check BUILD/e2gan-gpu-check | --ops-list FILE --out TOL
       [--model BASE --image-npy X.npy [--adapter A ...]] [--grads] [--device cuda]
"""
import argparse
import copy
import math
import os
import subprocess
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import e2gan_torch as E  # noqa: E402

BF16_ROUNDING = 2.0 ** -8


def uniform(gen, shape, lo, hi, dev):
    return (torch.rand(*shape, generator=gen) * (hi - lo) + lo).to(dev)


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def op_error(spec, dev, gen):
    """PyTorch bf16 vs fp32 on one op check's shape; spec: the --list fields."""
    k = spec["kind"]
    keep = set()  # arguments the engine holds in fp32 (not rounded to bf16)
    i = {key: int(v) for key, v in spec.items() if key not in ("name", "kind")}
    if k == "conv":
        x = uniform(gen, (i["N"], i["cin"], i["H"], i["W"]), -1, 1, dev)
        w = uniform(gen, (i["cout"], i["cin"], i["k"], i["k"]), -0.2, 0.2, dev)
        b = uniform(gen, (i["cout"],), -0.5, 0.5, dev)

        def f(x, w, b):  # padding and nearest upsampling copy values: done in fp32, exact
            if i["upsample"]:
                return F.conv2d(F.interpolate(x.float(), scale_factor=2, mode="nearest").to(x.dtype), w, b, padding=1)
            if i["reflect"]:
                return F.conv2d(F.pad(x.float(), [i["pad"]] * 4, mode="reflect").to(x.dtype), w, b, stride=i["stride"])
            return F.conv2d(x, w, b, stride=i["stride"], padding=i["pad"])

        args = (x, w, b)
    elif k == "instancenorm":
        x = uniform(gen, (i["N"], i["C"], i["HW"]), -2, 3, dev)
        g = uniform(gen, (i["C"],), 0.5, 1.5, dev)
        bt = uniform(gen, (i["C"],), -0.5, 0.5, dev)
        r = uniform(gen, (i["N"], i["C"], i["HW"]), -1, 1, dev)

        def f(x, g, bt, r):
            y = F.relu(F.instance_norm(x, weight=g, bias=bt, eps=1e-5))
            return y + r if i["residual"] else y

        args = (x, g, bt, r)
    elif k == "layernorm":
        x = uniform(gen, (i["M"], i["C"]), -2, 3, dev)
        g = uniform(gen, (i["C"],), 0.5, 1.5, dev)
        bt = uniform(gen, (i["C"],), -0.5, 0.5, dev)

        def f(x, g, bt):
            return F.layer_norm(x, (i["C"],), g, bt, 1e-5)

        args = (x, g, bt)
    elif k == "gelu":
        x = uniform(gen, (i["M"], i["C"]), -4, 4, dev)
        b = uniform(gen, (i["C"],), -0.5, 0.5, dev)

        def f(x, b):
            return F.gelu(x + b, approximate="tanh")

        args = (x, b)
    elif k == "attention":
        N, Lq, Lk, C, h = i["N"], i["Lq"], i["Lk"], i["C"], i["heads"]
        q = uniform(gen, (N, Lq, C), -2, 2, dev)
        kk = uniform(gen, (N, Lk, C), -2, 2, dev)
        v = uniform(gen, (N, Lk, C), -1, 1, dev)

        def f(q, kk, v):
            def heads(t):
                return t.view(N, t.shape[1], h, C // h).transpose(1, 2)

            qh, kh, vh = heads(q), heads(kk), heads(v)
            if hasattr(F, "scaled_dot_product_attention"):
                o = F.scaled_dot_product_attention(qh, kh, vh)
            else:  # PyTorch < 2.0
                o = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(C // h), dim=-1) @ vh
            return o.transpose(1, 2).reshape(N, Lq, C)

        args = (q, kk, v)
    elif k == "output":
        o = uniform(gen, (i["n"],), -3, 3, dev)
        x = uniform(gen, (i["n"],), -1, 1, dev)

        def f(o, x):  # the engine holds o in bf16, the input x and the arithmetic in fp32
            return torch.tanh(o.float() + torch.atanh(torch.clamp(x.float(), -0.999, 0.999)))

        args = (o, x)
        keep = {1}
    else:
        raise ValueError(f"unknown op kind {k}")
    with torch.no_grad():
        ref = f(*args)
        low = f(*(a if j in keep else a.bfloat16() for j, a in enumerate(args)))
    return rel(low, ref)


def psnr(a, b):
    mse = ((a.float() - b.float()) * 127.5).pow(2).mean().item()
    return 10 * math.log10(255.0 ** 2 / mse) if mse > 0 else 99.0


def model_psnrs(args, dev):
    G, _, _ = E.load_base(args.model)
    G = G.eval().to(dev)
    x = torch.from_numpy(np.load(args.image_npy)).permute(0, 3, 1, 2).contiguous().to(dev)
    out = {}
    cases = [("base", G, G.concept_context([0]))]
    for path in args.adapter:
        tensors, config, meta = E.load_adapter(path)
        ad = E.LoraAdapter(tensors, config).to(dev)
        merged = E.merge_lora(G, [(ad, 1.0)]).eval()
        cases.append((meta.get("concept", os.path.basename(path)), merged, ad.embedding.detach()[None]))
    with torch.no_grad():
        for name, net, ctx in cases:
            ref = net(x, ctx)
            low = copy.deepcopy(net).to(torch.bfloat16)(x.bfloat16(), ctx.bfloat16())
            out[name] = psnr(low, ref)
    return out


def grad_stats(dev):
    torch.manual_seed(0)
    G = E.Generator(16, 2).to(dev)
    x = torch.rand(2, 3, 32, 32, device=dev) * 2 - 1
    t = torch.rand(2, 3, 32, 32, device=dev) * 2 - 1

    def grads(low):
        G.zero_grad()
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=low):
            y = G(x, G.concept_context([0, 1]))
        loss = 100 * (y.float() - t).abs().mean()
        loss.backward()
        return {n: p.grad.float().clone() for n, p in G.named_parameters() if p.grad is not None}

    # fp32 masters, bf16 convolutions and matmuls (autocast): as the GPU trainer
    ref, low = grads(False), grads(True)
    scale = max(r.abs().max().item() for r in ref.values())
    worst_cos, worst_rel, worst = 1.0, 0.0, ""
    for n, r in ref.items():
        if r.abs().max().item() < 1e-6 * scale:  # zero in theory (a bias before a norm): noise only
            continue
        lo = low[n]
        cos = F.cosine_similarity(lo.flatten(), r.flatten(), dim=0).item()
        if cos < worst_cos:
            worst = n
        worst_cos, worst_rel = min(worst_cos, cos), max(worst_rel, rel(lo, r))
    print(f"grads: worst cosine on {worst}", file=sys.stderr)
    return worst_cos, worst_rel


def main():
    ap = argparse.ArgumentParser(description="tolerances of the GPU checks from PyTorch bf16 vs fp32")
    ap.add_argument("--check", help="e2gan-gpu-check (for ops --list)")
    ap.add_argument("--ops-list", help="a file holding what `e2gan-gpu-check ops --list` printed")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model")
    ap.add_argument("--image-npy")
    ap.add_argument("--adapter", action="append", default=[])
    ap.add_argument("--grads", action="store_true")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    lines, summary = [], []
    if a.ops_list:
        listing = open(a.ops_list).read()
    else:
        listing = subprocess.run([a.check, "ops", "--list"], check=True, capture_output=True, text=True).stdout
    worst = 0.0
    for row in listing.splitlines():
        fields = row.split()
        spec = {"name": fields[0], **dict(f.split("=", 1) for f in fields[1:])}
        gen = torch.Generator().manual_seed(zlib.crc32(spec["name"].encode()))
        err = op_error(spec, dev, gen)
        tol = max(2 * err, BF16_ROUNDING)
        worst = max(worst, err)
        lines.append(f"op {spec['name']} {err:.4e} {tol:.4e}")
    summary.append(f"ops: worst PyTorch bf16 err {worst:.2e}")
    if a.model and a.image_npy:
        ps = model_psnrs(a, dev)
        for name, p in ps.items():
            lines.append(f"psnr {name} {p:.2f}")
        floor = min(ps.values()) - 6.0
        lines.append(f"psnr_min {floor:.2f}")
        summary.append(f"model: PyTorch bf16 PSNR {min(ps.values()):.1f}..{max(ps.values()):.1f} dB → floor {floor:.1f}")
    if a.grads:
        cos, r = grad_stats(dev)
        lines.append(f"grad_cos {1 - 2 * (1 - cos):.5f}")
        lines.append(f"grad_rel {2 * r:.4f}")
        summary.append(f"grads: PyTorch bf16 min cos {cos:.4f}, max rel {r:.3f}")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("SUMMARY " + "; ".join(summary))


if __name__ == "__main__":
    main()
