"""ops_refs.py — PyTorch references for every CPU op's forward and backward.

Run by ctest as `python3 ops_refs.py --out DIR`; writes DIR/op_<case>.safetensors
holding inputs, parameters, a random upstream gradient `dout`, and the
outputs and gradients PyTorch computes in float64 (stored as float32), in
PyTorch layouts (NCHW).  Metadata carries each case's sizes."""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import e2gan_torch as E  # noqa: E402
import safetensors_io  # noqa: E402

torch.manual_seed(1234)
D = torch.float64


def rnd(*shape, std=1.0):
    return (torch.randn(*shape, dtype=D) * std).requires_grad_(True)


def run(fn, inputs):
    """Returns fn's output, the upstream gradient and the inputs' gradients."""
    out = fn(**inputs)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    grads = {"d" + k: v.grad for k, v in inputs.items() if v.grad is not None}
    return out, dout, grads


def conv_case(name, N, cin, cout, H, W, k, stride, pad, mode, bias):
    inputs = {"x": rnd(N, cin, H, W), "weight": rnd(cout, cin, k, k, std=0.3)}
    if bias:
        inputs["bias"] = rnd(cout)

    def fn(x, weight, bias=None):
        if mode == "reflect":
            return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, bias, stride)
        return F.conv2d(x, weight, bias, stride, pad)

    out, dout, grads = run(fn, inputs)
    meta = dict(N=N, cin=cin, cout=cout, H=H, W=W, k=k, stride=stride, pad=pad, reflect=int(mode == "reflect"), bias=int(bias))
    return name, {**inputs, "out": out, "dout": dout, **grads}, meta


def cases():
    yield conv_case("conv3_zero_s1", 2, 5, 7, 9, 11, 3, 1, 1, "zero", True)
    yield conv_case("conv3_zero_s2", 2, 6, 8, 10, 14, 3, 2, 1, "zero", False)
    yield conv_case("conv3_zero_s2_odd", 1, 4, 4, 9, 7, 3, 2, 1, "zero", False)
    yield conv_case("conv7_reflect", 2, 3, 4, 10, 13, 7, 1, 3, "reflect", True)
    yield conv_case("conv3_reflect", 3, 8, 8, 6, 5, 3, 1, 1, "reflect", False)
    yield conv_case("conv4_s2", 2, 6, 8, 13, 17, 4, 2, 1, "zero", True)
    yield conv_case("conv4_s1", 2, 8, 1, 6, 7, 4, 1, 1, "zero", True)
    yield conv_case("conv1", 2, 4, 9, 5, 6, 1, 1, 0, "zero", False)

    N, C, H, W = 2, 5, 7, 9
    inputs = {"x": rnd(N, C, H, W, std=2.0) + 0.5, "weight": rnd(C), "bias": rnd(C)}
    inputs["x"] = inputs["x"].detach().requires_grad_(True)
    out, dout, grads = run(lambda x, weight, bias: F.instance_norm(x, weight=weight, bias=bias, eps=1e-5), inputs)
    yield "instancenorm", {**inputs, "out": out, "dout": dout, **grads}, dict(N=N, C=C, H=H, W=W)

    M, C = 37, 24
    inputs = {"x": rnd(M, C, std=2.0), "weight": rnd(C), "bias": rnd(C)}
    out, dout, grads = run(lambda x, weight, bias: F.layer_norm(x, (C,), weight, bias, 1e-5), inputs)
    yield "layernorm", {**inputs, "out": out, "dout": dout, **grads}, dict(M=M, C=C)

    M, I, O = 37, 24, 19
    inputs = {"x": rnd(M, I), "weight": rnd(O, I, std=0.3), "bias": rnd(O)}
    out, dout, grads = run(lambda x, weight, bias: F.linear(x, weight, bias), inputs)
    yield "linear", {**inputs, "out": out, "dout": dout, **grads}, dict(M=M, **{"in": I, "out": O})

    n = 1000
    for name, fn in [
        ("relu", lambda x: F.relu(x)),
        ("leakyrelu", lambda x: F.leaky_relu(x, 0.2)),
        ("gelu", lambda x: F.gelu(x, approximate="tanh")),
    ]:
        inputs = {"x": rnd(n, std=2.0)}
        out, dout, grads = run(fn, inputs)
        yield name, {**inputs, "out": out, "dout": dout, **grads}, dict(n=n)

    # The generator's output: x spans beyond the ±0.999 clamp.
    for residual in (1, 0):
        inputs = {"o": rnd(n), "x": (torch.rand(n, dtype=D) * 2.2 - 1.1).requires_grad_(True)}

        def out_fn(o, x, residual=residual):
            if residual:
                return torch.tanh(o + torch.atanh(torch.clamp(x, -0.999, 0.999)))
            return torch.tanh(o + 0 * x)

        out, dout, grads = run(out_fn, inputs)
        yield f"output_res{residual}", {**inputs, "out": out, "dout": dout, **grads}, dict(n=n, residual=residual)

    # nearest ×2 upsample followed by a 3×3 zero-pad conv (fused in the engine)
    for name, N, cin, cout, H, W, bias in [("upconv", 2, 5, 6, 3, 5, True), ("upconv_nobias", 1, 8, 3, 4, 1, False)]:
        inputs = {"x": rnd(N, cin, H, W), "weight": rnd(cout, cin, 3, 3, std=0.3)}
        if bias:
            inputs["bias"] = rnd(cout)

        def up_fn(x, weight, bias=None):
            return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, 1, 1)

        out, dout, grads = run(up_fn, inputs)
        meta = dict(N=N, cin=cin, cout=cout, H=H, W=W, bias=int(bias))
        yield name, {**inputs, "out": out, "dout": dout, **grads}, meta


def sketch_loss_case():
    """The trainer's optional loss terms (E.loss_edge_l1, E.loss_dark_l1 at
    dark_weight 4) on fake, target (N, 3, H, W) in [−1, 1], H ≠ W; fake equals
    target on a block so that ties (zero gradient) occur.  Stores each loss
    (shape [1]) and its gradient w.r.t. fake: grad.<loss>."""
    N, H, W, dark_weight = 2, 7, 9, 4.0
    # float32-representable inputs: the engine reads them as stored
    target = (torch.rand(N, 3, H, W, dtype=D) * 2 - 1).float().to(D)
    fake = (torch.rand(N, 3, H, W, dtype=D) * 2 - 1).float().to(D)
    fake[:, :, 2:5, 3:7] = target[:, :, 2:5, 3:7]
    fake.requires_grad_(True)
    tensors = {"fake": fake, "target": target}
    for name, loss in (("loss_edge_l1", E.loss_edge_l1(fake, target)),
                       ("loss_dark_l1", E.loss_dark_l1(fake, target, dark_weight))):
        (grad,) = torch.autograd.grad(loss, fake)
        tensors[name] = loss.reshape(1)
        tensors[f"grad.{name}"] = grad
    return "sketch_losses", tensors, dict(N=N, H=H, W=W, dark_weight=dark_weight)


def adam_case():
    """Three torch.optim.Adam steps with the trainer's betas (0.5, 0.999)."""
    p = torch.randn(257, dtype=D)
    grads = [torch.randn(257, dtype=D) * s for s in (1.0, 0.1, 3.0)]
    param = p.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.01, betas=(0.5, 0.999), eps=1e-8)
    out = {"p0": p}
    for i, g in enumerate(grads):
        param.grad = g.clone()
        opt.step()
        out[f"g{i + 1}"] = g
        out[f"p{i + 1}"] = param.detach().clone()
    return "adam", out, dict(n=257, steps=3, lr=0.01, beta1=0.5, beta2=0.999, eps=1e-8)


def lowrank_case():
    """The best rank-k approximation of B·A (Eckart–Young, through SVD)."""
    B, A = torch.randn(40, 6, dtype=D), torch.randn(6, 27, dtype=D)
    U, S, Vh = torch.linalg.svd(B @ A, full_matrices=False)
    out = {"B": B, "A": A, "sigma": S[:6]}
    for k in (1, 3, 6):
        out[f"approx{k}"] = U[:, :k] @ torch.diag(S[:k]) @ Vh[:k]
    return "lowrank", out, dict(cout=40, r=6, fan=27)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, tensors, meta in [*cases(), sketch_loss_case(), adam_case(), lowrank_case()]:
        safetensors_io.save(os.path.join(args.out, f"op_{name}.safetensors"), tensors, meta)


if __name__ == "__main__":
    main()
