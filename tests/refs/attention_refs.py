"""attention_refs.py — PyTorch reference for engine/attention.c: multi-head
scaled-dot-product attention softmax(q·kᵀ/√d)·v (no projections) and its
gradients, computed in float64 and stored as float32 in the engine's
(N, L, C) layout, head h in columns [h·d, (h+1)·d).

Usage: attention_refs.py --out DIR  → DIR/attention_<case>.safetensors with
tensors q k v dout out dq dk dv, lse (N, heads, Lq), and metadata N Lq Lk C
heads."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import safetensors_io  # noqa: E402

# name: (N, Lq, Lk, C, heads).  Token counts are deliberately not multiples
# of the engine's block sizes (64 queries × 256 keys); "large" spans several
# blocks both ways.
CASES = {
    "self_37": (2, 37, 37, 64, 1),
    "self_200": (1, 200, 200, 128, 2),
    "self_5_d32": (3, 5, 5, 32, 1),
    "cross_91x8": (2, 91, 8, 128, 2),
    "cross_300x8_h1": (1, 300, 8, 64, 1),  # one key-block task: split over queries when threads > 1
    "large_1100": (1, 1100, 1100, 64, 1),
}


def attention(q, k, v, heads):
    """(N, L, C) tensors → out (N, Lq, C) and the rows' log-sum-exp of the
    scores, lse (N, heads, Lq); heads split along C."""
    n, lq, c = q.shape
    lk, d = k.shape[1], c // heads
    qh = q.view(n, lq, heads, d).transpose(1, 2)
    kh = k.view(n, lk, heads, d).transpose(1, 2)
    vh = v.view(n, lk, heads, d).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / d**0.5
    out = (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2).reshape(n, lq, c)
    return out, torch.logsumexp(scores, dim=-1)


def make_case(seed, n, lq, lk, c, heads):
    g = torch.Generator().manual_seed(seed)
    # std 1.5 for q and k makes the logits' std ≈ 2.25: a peaked, not flat, softmax.
    q = (1.5 * torch.randn(n, lq, c, generator=g, dtype=torch.float64)).requires_grad_()
    k = (1.5 * torch.randn(n, lk, c, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.randn(n, lk, c, generator=g, dtype=torch.float64).requires_grad_()
    dout = torch.randn(n, lq, c, generator=g, dtype=torch.float64)
    out, lse = attention(q, k, v, heads)
    out.backward(dout)
    tensors = {"q": q, "k": k, "v": v, "dout": dout, "out": out, "lse": lse,
               "dq": q.grad, "dk": k.grad, "dv": v.grad}
    return {name: t.detach().float() for name, t in tensors.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for the .safetensors files")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for seed, (name, (n, lq, lk, c, heads)) in enumerate(CASES.items()):
        tensors = make_case(1000 + seed, n, lq, lk, c, heads)
        meta = {"N": n, "Lq": lq, "Lk": lk, "C": c, "heads": heads}
        safetensors_io.save(os.path.join(args.out, f"attention_{name}.safetensors"), tensors, metadata=meta)


if __name__ == "__main__":
    main()
