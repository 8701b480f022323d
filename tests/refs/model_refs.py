"""model_refs.py — PyTorch reference tensors for the C engine's model tests.

Run by ctest as `/usr/bin/python3 tests/refs/model_refs.py --out DIR`.  Every
weight and input is drawn in float32 (so the stored files hold it exactly),
the computation runs in float64, and the results are stored as float32: the
references are exact to fp32 rounding.  Gradients are those of sum(out·dout)
for a random upstream gradient dout.

Files written into DIR (tensor names in each file's docstring below):
  g_<variant>.safetensors, g_<variant>_base.safetensors     generator fwd/bwd
  g_lora_<variant>.safetensors, g_lora_<variant>_adapter.safetensors
  g_blend_default_ngf16.safetensors                         two-concept blend
  d_ndf16.safetensors, d_ndf16_weights.safetensors          discriminator
  losses.safetensors                                        LSGAN and L1
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import e2gan_torch as E  # noqa: E402
import safetensors_io  # noqa: E402

N, H, W = 2, 24, 40  # 1/8 resolution is 3×5
SAMPLE_CONCEPTS = [1, 0]
CONCEPT_NAMES = ["base-a", "base-b"]
VARIANTS = {
    "default_ngf8": dict(ngf=8),
    "default_ngf16": dict(ngf=16),
    "paperlike_ngf16": dict(ngf=16, unet_skips=False, residual_out=False, norm_ends=True),
    "default_ngf32": dict(ngf=32),
    "film_ngf16": dict(ngf=16, film=True),
    "skipgate_ngf16": dict(ngf=16, film=True, skip_gate=True),
}
LORA_VARIANTS = ["default_ngf16", "default_ngf32", "film_ngf16", "skipgate_ngf16"]
LORA_STRENGTH = 0.7
BLEND = (0.6, 0.4)  # adapter weight, base concept 0 weight


def perturb_norms(model):
    """Every IN/LN affine weight ~ 1 + 0.2·N(0,1), bias ~ 0.1·N(0,1); FiLM,
    output-gate and skip-gate weights ~ 0.2·N(0,1)/√C4, biases ~ 0.1·N(0,1)
    (they start at zero)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.LayerNorm, E.FiLMNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            if isinstance(m, E.FiLMNorm):
                m.film.weight.copy_(0.2 * torch.randn_like(m.film.weight) / m.film.weight.shape[1] ** 0.5)
                m.film.bias.copy_(0.1 * torch.randn_like(m.film.bias))
        gates = [getattr(model, "out_gate", None)] + [getattr(getattr(model, m, None), "skip_gate", None)
                                                      for m in ("dec2", "dec1")]
        for gate in filter(None, gates):
            gate.weight.copy_(0.2 * torch.randn_like(gate.weight) / gate.weight.shape[1] ** 0.5)
            gate.bias.copy_(0.1 * torch.randn_like(gate.bias))


def uniform_pm1(*shape):
    return torch.rand(*shape) * 2 - 1


def grad_or_zero(g):
    """A gradient that is analytically zero (a bias before a norm, or the key
    bias of attention, which softmax ignores) comes out of float64 as ~1e-17
    noise; it is stored as exact zeros."""
    return torch.zeros_like(g) if g.abs().max() < 1e-12 else g


def flag(v):
    return "true" if v else "false"


def generator_case(out, variant, cfg, seed):
    """g_<variant>.safetensors: all §1 parameters, x, ctx, y, dy, dx, dctx and
    grad.<param> for every parameter (concepts included: ctx = concepts[[1,0]])."""
    torch.manual_seed(seed)
    ngf = cfg["ngf"]
    flags = {k: v for k, v in cfg.items() if k != "ngf"}
    G = E.Generator(ngf, len(CONCEPT_NAMES), **flags)
    G.concept_names = list(CONCEPT_NAMES)
    perturb_norms(G)
    base_path = os.path.join(out, f"g_{variant}_base.safetensors")
    E.save_base(G, base_path, CONCEPT_NAMES, extra_meta={"provenance": "tests/refs/model_refs.py (random weights)"})
    x = uniform_pm1(N, 3, H, W)
    dy = torch.randn(N, 3, H, W)

    G32 = G
    G = E.load_base(base_path)[0].double()
    for k, v in G32.state_dict().items():
        assert torch.equal(G.state_dict()[k].float(), v), f"{variant}: {k} differs after save/load"
    x64 = x.double().requires_grad_()
    ctx = G.concept_context(SAMPLE_CONCEPTS)
    ctx.retain_grad()
    y = G(x64, ctx)
    (y * dy.double()).sum().backward()

    tensors = dict(G.state_dict())
    tensors.update(x=x, ctx=ctx, y=y, dy=dy, dx=x64.grad, dctx=ctx.grad)
    tensors.update({f"grad.{k}": grad_or_zero(p.grad) for k, p in G.named_parameters()})
    meta = {"ngf": ngf, "ctx_tokens": G.ctx_tokens, "N": N, "H": H, "W": W,
            "unet_skips": flag(G.unet_skips), "residual_out": flag(G.residual_out), "norm_ends": flag(G.norm_ends),
            "concepts": json.dumps(CONCEPT_NAMES),
            "sample_concepts": ",".join(map(str, SAMPLE_CONCEPTS)), "base_file": os.path.basename(base_path)}
    safetensors_io.save(os.path.join(out, f"g_{variant}.safetensors"), tensors, meta)


def lora_config():
    """r=4, lora_alpha=8 by default; ranks cycle 1,2,4 and alphas vary through
    rank_pattern/alpha_pattern, whose keys use all three accepted forms: the
    module path ("enc2.conv", "out"), the §3 layer name ("enc1", "dec1") and a
    dotted suffix of the module path ("self_attn.q", "fc1")."""
    keys = {"enc1": "enc1", "dec1": "dec1", "tb.fc1": "fc1"}
    keys.update({f"tb.self_attn.{p}": f"self_attn.{p}" for p in "qkvo"})
    rank_pattern, alpha_pattern, ranks = {}, {}, {}
    for i, (layer, path) in enumerate(E.CRUCIAL_LAYERS.items()):
        key = keys.get(layer, path)
        ranks[path] = (1, 2, 4)[i % 3]
        if ranks[path] != 4:
            rank_pattern[key] = ranks[path]
        if i % 2 == 0:
            alpha_pattern[key] = (1, 3, 5, 6)[(i // 2) % 4]
    return E.peft_adapter_config(4, 8, rank_pattern, alpha_pattern), ranks


def make_adapter(G, ranks):
    """Random PEFT tensors: A ~ U(±1/√fan_in), B ~ 0.3·N(0,1)/√fan_in(B) (non-zero)."""
    tensors = {}
    for path, r in ranks.items():
        w = E._module(G, path).weight
        a = (torch.rand(r, *w.shape[1:]) * 2 - 1) / w[0].numel() ** 0.5
        b = 0.3 * torch.randn(w.shape[0], r, *([1, 1] if w.dim() == 4 else [])) / r**0.5
        tensors[f"{E.PEFT_PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{E.PEFT_PREFIX}{path}.lora_B.weight"] = b
    return tensors, torch.randn(G.ctx_tokens, 4 * G.ngf)


def lora_case(out, variant, seed):
    """g_lora_<variant>.safetensors: x, ctx, dy, y, dx, y_merged, grad.<PEFT key> for
    every lora_A/lora_B and grad.concept.embedding; the adapter is applied at
    strength 0.7 and both samples use its concept embedding as context."""
    base_path = os.path.join(out, f"g_{variant}_base.safetensors")
    adapter_path = os.path.join(out, f"g_lora_{variant}_adapter.safetensors")
    G = E.load_base(base_path)[0]
    torch.manual_seed(seed)
    config, ranks = lora_config()
    lora, emb = make_adapter(G, ranks)
    E.save_adapter(adapter_path, lora, emb, config, "lora-x", E.file_sha256(base_path),
                   extra_meta={"provenance": "tests/refs/model_refs.py (random adapter)"})
    x = uniform_pm1(N, 3, H, W)
    dy = torch.randn(N, 3, H, W)

    tensors, config, _ = E.load_adapter(adapter_path, base_path)
    G = G.double()
    adapter = E.apply_lora(G, tensors, config, LORA_STRENGTH).double()
    for path, r in ranks.items():
        assert adapter.paths[path][0].shape[0] == r
    assert len({s for _, _, s in adapter.paths.values()}) > 3, "scales should differ per layer"
    x64 = x.double().requires_grad_()
    ctx = adapter.embedding.expand(N, -1, -1)
    y = G(x64, ctx)
    (y * dy.double()).sum().backward()
    with torch.no_grad():
        y_merged = E.merge_lora(G, [(adapter, LORA_STRENGTH)])(x64, ctx)
        E.detach(G)
        y_base = G(x64, ctx)
    assert torch.allclose(y, y_merged, rtol=0, atol=1e-12), f"{variant}: merged LoRA != unmerged"
    assert (y - y_base).abs().max() > 1e-3, f"{variant}: the adapter has no visible effect"

    out_t = {"x": x, "ctx": ctx, "dy": dy, "y": y, "dx": x64.grad, "y_merged": y_merged}
    out_t.update({f"grad.{k}": p.grad for k, p in adapter.peft_tensors().items()})
    meta = {"ngf": G.ngf, "N": N, "H": H, "W": W, "strength": LORA_STRENGTH,
            "base_file": os.path.basename(base_path), "adapter_file": os.path.basename(adapter_path)}
    safetensors_io.save(os.path.join(out, f"g_lora_{variant}.safetensors"), out_t, meta)
    return G, adapter


def blend_case(out, G, adapter, seed):
    """g_blend_default_ngf16.safetensors: x, ctx, y for the blend
    lora-x:0.6,base-a:0.4 (ΔW·0.6, ctx = 0.6·emb + 0.4·concepts[0])."""
    torch.manual_seed(seed)
    x = uniform_pm1(N, 3, H, W)
    wa, wb = BLEND
    with torch.no_grad():
        ctx = E.blend_context([(adapter.embedding, wa), (G.concepts[0], wb)]).expand(N, -1, -1)
        E.attach(G, [(adapter, wa)])
        y = G(x.double(), ctx)
        E.detach(G)
        y_merged = E.merge_lora(G, [(adapter, wa)])(x.double(), ctx)
    assert torch.allclose(y, y_merged, rtol=0, atol=1e-12)
    meta = {"ngf": G.ngf, "N": N, "H": H, "W": W, "blend": f"lora-x:{wa},{CONCEPT_NAMES[0]}:{wb}",
            "base_file": "g_default_ngf16_base.safetensors", "adapter_file": "g_lora_default_ngf16_adapter.safetensors"}
    safetensors_io.save(os.path.join(out, "g_blend_default_ngf16.safetensors"), {"x": x, "ctx": ctx, "y": y}, meta)


def discriminator_case(out, seed):
    """d_ndf16.safetensors: D's parameters, src, tgt (N×3×40×48), logits
    (N×1×3×4), dlogits, dsrc, dtgt, grad.<param>; d_ndf16_weights.safetensors:
    the parameters alone."""
    torch.manual_seed(seed)
    D = E.Discriminator(16)
    perturb_norms(D)
    safetensors_io.save(os.path.join(out, "d_ndf16_weights.safetensors"), D.state_dict(), {"ndf": 16})
    src, tgt = uniform_pm1(N, 3, 40, 48), uniform_pm1(N, 3, 40, 48)
    D = D.double()
    s64, t64 = src.double().requires_grad_(), tgt.double().requires_grad_()
    logits = D(s64, t64)
    dlogits = torch.randn(logits.shape)
    (logits * dlogits.double()).sum().backward()
    tensors = dict(D.state_dict())
    tensors.update(src=src, tgt=tgt, logits=logits, dlogits=dlogits, dsrc=s64.grad, dtgt=t64.grad)
    tensors.update({f"grad.{k}": grad_or_zero(p.grad) for k, p in D.named_parameters()})
    safetensors_io.save(os.path.join(out, "d_ndf16.safetensors"), tensors, {"ndf": 16, "N": N, "H": 40, "W": 48})


def losses_case(out, seed):
    """losses.safetensors: d_real, d_fake (N×1×3×4), fake, target (N×3×16×16);
    loss_d, loss_g_gan, loss_l1 (shape [1]); grad.loss_d.d_real,
    grad.loss_d.d_fake, grad.loss_g_gan.d_fake, grad.loss_l1.fake."""
    torch.manual_seed(seed)
    inputs = {"d_real": torch.randn(N, 1, 3, 4), "d_fake": torch.randn(N, 1, 3, 4),
              "fake": uniform_pm1(N, 3, 16, 16), "target": uniform_pm1(N, 3, 16, 16)}
    v = {k: t.double().requires_grad_() for k, t in inputs.items()}
    losses = {"loss_d": E.loss_d(v["d_real"], v["d_fake"]), "loss_g_gan": E.loss_g_gan(v["d_fake"]),
              "loss_l1": E.loss_l1(v["fake"], v["target"])}
    tensors = dict(inputs)
    for name, wrt in (("loss_d", ("d_real", "d_fake")), ("loss_g_gan", ("d_fake",)), ("loss_l1", ("fake",))):
        grads = torch.autograd.grad(losses[name], [v[k] for k in wrt])
        tensors[name] = losses[name].reshape(1)
        tensors.update({f"grad.{name}.{k}": g for k, g in zip(wrt, grads)})
    safetensors_io.save(os.path.join(out, "losses.safetensors"), tensors, {"N": N})


def check_flags():
    """The flags change the state_dict exactly as §1 says."""
    default = set(E.Generator(8, 1).state_dict())
    paper = set(E.Generator(8, 1, unet_skips=False, residual_out=False, norm_ends=True).state_dict())
    assert default - paper == {"enc1.conv.bias", "dec1.conv.bias"}
    assert paper - default == {"enc1.norm.weight", "enc1.norm.bias", "dec1.norm.weight", "dec1.norm.bias"}
    assert set(E.Generator(8, 1, unet_skips=False, residual_out=False).state_dict()) == default
    film = set(E.Generator(8, 1, film=True).state_dict())
    assert film - default == {f"{m}.norm.film.{p}" for m in ("us", "rb3.a", "rb3.b", "dec2") for p in ("weight", "bias")} | {
        "out_gate.weight", "out_gate.bias"}
    assert default - film == set()
    gated = set(E.Generator(8, 1, film=True, skip_gate=True).state_dict())
    assert gated - film == {f"{m}.skip_gate.{p}" for m in ("dec2", "dec1") for p in ("weight", "bias")}
    assert set(E.Generator(8, 1, unet_skips=False, skip_gate=True).state_dict()) == default


PHOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "chelsea.png")
EDITS = [("base-b", 1.0), ("lora-x", 0.8)]  # (concept, strength) for the photo edit


def read_photo(path):
    """An 8-bit RGB image (H, W, 3) through ImageMagick (no Python imaging needed)."""
    size = subprocess.run(["identify", "-format", "%w %h", path], check=True, capture_output=True, text=True)
    w, h = map(int, size.stdout.split())
    raw = subprocess.run(["convert", path, "-depth", "8", "rgb:-"], check=True, capture_output=True).stdout
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(h, w, 3)


def edit_case(out, G, adapter):
    """edit_photo.safetensors: PyTorch's edit of a real photo as docs/architecture.md
    §1 defines it — pixels p/127.5 − 1, reflection-padded at the right and
    bottom to a multiple of 8, the generator in float64, cropped back,
    round((y + 1)·127.5) clamped to 0..255 — for a base concept and for the
    adapter; `expected_<i>` (H, W, 3) holds the 8-bit result of EDITS[i]."""
    photo = read_photo(PHOTO)
    h, w = photo.shape[:2]
    x = photo.double().permute(2, 0, 1)[None] / 127.5 - 1
    x = F.pad(x, [0, -w % 8, 0, -h % 8], mode="reflect")
    tensors = {}
    with torch.no_grad():
        for i, (concept, strength) in enumerate(EDITS):
            E.detach(G)
            if concept == "lora-x":
                E.attach(G, [(adapter, strength)])
                ctx = adapter.embedding[None]
            else:
                ctx = G.concept_context([concept])
            y = G(x, ctx)[0, :, :h, :w].permute(1, 2, 0)
            tensors[f"expected_{i}"] = torch.clamp(torch.round((y + 1) * 127.5), 0, 255)
    E.detach(G)
    meta = {"photo": "tests/data/chelsea.png", "base_file": "g_default_ngf16_base.safetensors",
            "adapter_file": "g_lora_default_ngf16_adapter.safetensors"}
    for i, (concept, strength) in enumerate(EDITS):
        meta[f"concept_{i}"], meta[f"strength_{i}"] = concept, strength
    safetensors_io.save(os.path.join(out, "edit_photo.safetensors"), tensors, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    check_flags()
    for i, (variant, cfg) in enumerate(VARIANTS.items()):
        generator_case(args.out, variant, cfg, 100 + i)
    for i, variant in enumerate(LORA_VARIANTS):
        G, adapter = lora_case(args.out, variant, 200 + i)
        if variant == "default_ngf16":
            blend_case(args.out, G, adapter, 300)
            edit_case(args.out, G, adapter)
    discriminator_case(args.out, 400)
    losses_case(args.out, 500)


if __name__ == "__main__":
    main()
