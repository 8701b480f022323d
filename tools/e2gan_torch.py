"""e2gan_torch.py — the PyTorch reference implementation of the E²GAN contract
(docs/architecture.md): generator (§1), PatchGAN discriminator and losses
(§2, and the trainer's optional edge and dark-pixel L1 terms), unmerged and merged LoRA with per-layer ranks, strength and blends (§3),
and the safetensors base/adapter files (§4).

It is written independently of the C engine and serves as the oracle for the
engine's tests (tests/refs/model_refs.py, ops_refs.py), as the PyTorch peer in benchmarks
and as the ONNX exporter for the onnxruntime peer.

Module defaults are PyTorch's default initialisation (kaiming-uniform weights
with a=√5, uniform ±1/√fan_in biases, norms 1/0); the concept embeddings are
N(0, 1).  The state_dict keys are exactly the tensor names of §1.

LoRA is attached to a generator without touching its state_dict: every crucial
layer is a LoRAConv2d / LoRALinear whose `lora_paths` list holds (A, B, coef)
triples, each adding coef·B(A(x)) to the layer's output.  A LoraAdapter owns an
adapter's A/B tensors (as trainable parameters) and its concept embedding.
"""
import copy
import hashlib
import json
import math
import os
import sys
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

PEFT_PREFIX = "base_model.model."

# Crucial layers of §3 → the module path whose weight the adapter adapts.
CRUCIAL_LAYERS = {
    "enc1": "enc1.conv",
    "enc2": "enc2.conv",
    "enc3": "enc3.conv",
    "ds": "ds.conv",
    **{f"tb.{a}.{p}": f"tb.{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"},
    "tb.fc1": "tb.fc1",
    "tb.fc2": "tb.fc2",
    "us": "us.conv",
    "dec2": "dec2.conv",
    "dec1": "dec1.conv",
    "out": "out",
}
MODULE_TO_LAYER = {m: l for l, m in CRUCIAL_LAYERS.items()}


# --------------------------------------------------------------------------
# Layers that can carry unmerged LoRA paths


class LoRAConv2d(nn.Conv2d):
    """Conv2d that adds coef·B(A(x)) for each attached (A, B, coef): A is a conv
    with this layer's kernel, stride and padding, B a 1×1 conv."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_paths = []

    def forward(self, x):
        y = super().forward(x)
        for a, b, coef in self.lora_paths:
            y = y + coef * F.conv2d(F.conv2d(x, a, None, self.stride, self.padding), b)
        return y


class LoRALinear(nn.Linear):
    """Linear that adds coef·B(A(x)) for each attached (A, B, coef)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_paths = []

    def forward(self, x):
        y = super().forward(x)
        for a, b, coef in self.lora_paths:
            y = y + coef * F.linear(F.linear(x, a), b)
        return y


# --------------------------------------------------------------------------
# Generator (§1)


def _in(c):
    return nn.InstanceNorm2d(c, affine=True, eps=1e-5, track_running_stats=False)


class FiLMNorm(nn.Module):
    """Instance norm whose affine depends on the sample's context (FiLM):
    γ = weight + W_γ·c̄ + b_γ, β = bias + W_β·c̄ + b_β, c̄ the mean of the
    context tokens; film = Linear(C4, 2·C), scale rows first, zero at start.
    Keys weight, bias, film.weight, film.bias."""

    def __init__(self, c, c4):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.film = nn.Linear(c4, 2 * c)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x, ctx):
        gamma, beta = self.film(ctx.mean(1)).chunk(2, dim=1)
        gamma, beta = gamma + self.weight, beta + self.bias
        x = F.instance_norm(x, eps=1e-5)
        return x * gamma[:, :, None, None] + beta[:, :, None, None]


class ConvBlock(nn.Module):
    """conv (reflect or zero pad) → optional IN (FiLM when film_c4) → optional
    ReLU; keys conv.*, norm.*."""

    def __init__(self, cin, cout, k, stride, pad, reflect, bias, norm, relu, film_c4=0):
        super().__init__()
        self.pad, self.reflect, self.relu = pad, reflect, relu
        self.conv = LoRAConv2d(cin, cout, k, stride, 0 if reflect else pad, bias=bias)
        self.norm = (FiLMNorm(cout, film_c4) if film_c4 else _in(cout)) if norm else None

    def forward(self, x, ctx=None):
        if self.reflect:
            x = F.pad(x, [self.pad] * 4, mode="reflect")
        x = self.conv(x)
        if isinstance(self.norm, FiLMNorm):
            x = self.norm(x, ctx)
        elif self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class ResBlock(nn.Module):
    """x + b(a(x)); a = reflect conv 3×3 → IN → ReLU, b = the same without ReLU."""

    def __init__(self, c, film_c4=0):
        super().__init__()
        self.a = ConvBlock(c, c, 3, 1, 1, True, False, True, True, film_c4)
        self.b = ConvBlock(c, c, 3, 1, 1, True, False, True, False, film_c4)

    def forward(self, x, ctx=None):
        return x + self.b(self.a(x, ctx), ctx)


class Attention(nn.Module):
    """Multi-head attention: q from x, k/v from the context c, then o."""

    def __init__(self, c):
        super().__init__()
        self.heads = max(1, c // 64)
        if c % self.heads:
            raise ValueError(f"C4={c} does not split into {self.heads} heads of 64")
        self.d = c // self.heads
        self.q, self.k, self.v, self.o = (LoRALinear(c, c) for _ in range(4))

    def forward(self, x, c):
        n, h, d = x.shape[0], self.heads, self.d
        q = self.q(x).reshape(n, -1, h, d).transpose(1, 2)
        k = self.k(c).reshape(n, -1, h, d).transpose(1, 2)
        v = self.v(c).reshape(n, -1, h, d).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(n, -1, h * d))


class TransformerBlock(nn.Module):
    """Pre-LN block on the 1/8-resolution tokens: self-attn, cross-attn to the
    concept context, tanh-GELU MLP (×4)."""

    def __init__(self, c, mlp=4):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(c, eps=1e-5) for _ in range(3))
        self.self_attn = Attention(c)
        self.cross_attn = Attention(c)
        self.fc1 = LoRALinear(c, mlp * c)
        self.fc2 = LoRALinear(mlp * c, c)

    def forward(self, h, ctx):
        n, c, hh, ww = h.shape
        t = h.flatten(2).transpose(1, 2)
        u = self.ln1(t)
        t = t + self.self_attn(u, u)
        t = t + self.cross_attn(self.ln2(t), ctx)
        t = t + self.fc2(F.gelu(self.fc1(self.ln3(t)), approximate="tanh"))
        return t.transpose(1, 2).reshape(n, c, hh, ww)


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Generator(nn.Module):
    """E²GAN-G of §1.  forward(x, ctx): x N×3×H×W in [-1, 1], ctx N×T×C4."""

    def __init__(self, ngf, n_concepts, ctx_tokens=8, unet_skips=True, residual_out=True, norm_ends=False,
                 film=False, skip_gate=False):
        super().__init__()
        c1, c2, c4 = ngf, 2 * ngf, 4 * ngf
        self.ngf, self.ctx_tokens = ngf, ctx_tokens
        self.unet_skips, self.residual_out, self.norm_ends = unet_skips, residual_out, norm_ends
        self.film, self.skip_gate = film, skip_gate and unet_skips
        f = c4 if film else 0  # FiLM on every norm after the transformer block
        self.concept_names = [str(i) for i in range(n_concepts)]
        self.enc1 = ConvBlock(3, c1, 7, 1, 3, True, not norm_ends, norm_ends, True)
        self.enc2 = ConvBlock(c1, c2, 3, 2, 1, False, False, True, True)
        self.enc3 = ConvBlock(c2, c4, 3, 2, 1, False, False, True, True)
        self.rb1 = ResBlock(c4)
        self.rb2 = ResBlock(c4)
        self.ds = ConvBlock(c4, c4, 3, 2, 1, False, False, True, True)
        self.tb = TransformerBlock(c4)
        self.us = ConvBlock(c4, c4, 3, 1, 1, False, False, True, True, f)
        self.rb3 = ResBlock(c4, f)
        self.dec2 = ConvBlock(c4, c2, 3, 1, 1, False, False, True, True, f)
        self.dec1 = ConvBlock(c2, c1, 3, 1, 1, False, not norm_ends, norm_ends, True, f)
        self.out = LoRAConv2d(c1, 3, 7, 1, 0, bias=True)
        if self.skip_gate:  # each skip's gain per channel, 1 at start: keys dec2.skip_gate.*, dec1.skip_gate.*
            for block, c in ((self.dec2, c2), (self.dec1, c1)):
                block.skip_gate = nn.Linear(c4, c)
                nn.init.zeros_(block.skip_gate.weight)
                nn.init.zeros_(block.skip_gate.bias)
        if film and residual_out:  # the photo's gain per channel in the residual output, 1 at start
            self.out_gate = nn.Linear(c4, 3)
            nn.init.zeros_(self.out_gate.weight)
            nn.init.zeros_(self.out_gate.bias)
        self.concepts = nn.Parameter(torch.randn(n_concepts, ctx_tokens, c4))

    def _skip_gain(self, block, ctx):
        if not self.skip_gate:
            return 1
        return 1 + block.skip_gate(ctx.mean(1))[:, :, None, None]

    def concept_context(self, names_or_indices):
        """N×T×C4 context: one base concept (name or row index) per sample."""
        rows = [self.concept_names.index(c) if isinstance(c, str) else int(c) for c in names_or_indices]
        return self.concepts[rows]

    def forward(self, x, ctx):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        h = self.rb2(self.rb1(self.enc3(e2)))
        h = self.tb(self.ds(h), ctx)
        h = self.rb3(self.us(_up(h), ctx), ctx)
        h = self.dec2(_up(h), ctx)
        if self.unet_skips:
            h = h + self._skip_gain(self.dec2, ctx) * e2
        h = self.dec1(_up(h), ctx)
        if self.unet_skips:
            h = h + self._skip_gain(self.dec1, ctx) * e1
        o = self.out(F.pad(h, [3] * 4, mode="reflect"))
        if self.residual_out:
            gain = 1 + self.out_gate(ctx.mean(1))[:, :, None, None] if self.film else 1
            o = o + gain * torch.atanh(torch.clamp(x, -0.999, 0.999))
        return torch.tanh(o)


# --------------------------------------------------------------------------
# Discriminator and losses (§2)


class Discriminator(nn.Module):
    """pix2pix 70×70 PatchGAN on concat(source, target); one logit per patch."""

    def __init__(self, ndf=64):
        super().__init__()
        self.c1 = nn.Conv2d(6, ndf, 4, 2, 1)
        self.c2 = nn.Conv2d(ndf, 2 * ndf, 4, 2, 1)
        self.n2 = _in(2 * ndf)
        self.c3 = nn.Conv2d(2 * ndf, 4 * ndf, 4, 2, 1)
        self.n3 = _in(4 * ndf)
        self.c4 = nn.Conv2d(4 * ndf, 8 * ndf, 4, 1, 1)
        self.n4 = _in(8 * ndf)
        self.out = nn.Conv2d(8 * ndf, 1, 4, 1, 1)

    def forward(self, source, target):
        h = F.leaky_relu(self.c1(torch.cat([source, target], 1)), 0.2)
        h = F.leaky_relu(self.n2(self.c2(h)), 0.2)
        h = F.leaky_relu(self.n3(self.c3(h)), 0.2)
        h = F.leaky_relu(self.n4(self.c4(h)), 0.2)
        return self.out(h)


def loss_d(d_real, d_fake):
    """LSGAN discriminator loss ½[mean((D(x,y)−1)²) + mean(D(x,G(x))²)]."""
    return 0.5 * (torch.mean((d_real - 1) ** 2) + torch.mean(d_fake**2))


def loss_g_gan(d_fake):
    """LSGAN generator loss mean((D(x,G(x))−1)²)."""
    return torch.mean((d_fake - 1) ** 2)


def loss_l1(fake, target):
    """mean |G(x) − y| (the trainer multiplies it by λ = 100)."""
    return torch.mean(torch.abs(fake - target))


def loss_edge_l1(fake, target):
    """Gradient-domain L1 (the trainer's --edge-weight term): the mean of
    |∂fake − ∂target| over every horizontal and every vertical difference of
    neighbouring pixels, per sample and channel (N, C, H, W images):
    [Σ|Δx fake − Δx target| + Σ|Δy fake − Δy target|] / (N·C·(H(W−1) + (H−1)W))."""
    diff = fake - target
    dx = diff[..., :, 1:] - diff[..., :, :-1]
    dy = diff[..., 1:, :] - diff[..., :-1, :]
    return (dx.abs().sum() + dy.abs().sum()) / (dx.numel() + dy.numel())


def dark_pixel_weights(target, dark_weight):
    """1 + dark_weight·d per pixel (N, 1, H, W), d = clamp((1 − luma)/2, 0, 1)
    the darkness of an RGB target in [−1, 1], luma = 0.299 r + 0.587 g + 0.114 b."""
    r, g, b = target.detach().unbind(1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return (1 + dark_weight * ((1 - luma) / 2).clamp(0, 1)).unsqueeze(1)


def loss_dark_l1(fake, target, dark_weight):
    """Dark-pixel-weighted L1 (the trainer's --dark-weight term, in place of
    loss_l1): Σ w|fake − target| / Σ w over every element, w the pixel's
    dark_pixel_weights (shared by its channels): weights of mean 1."""
    w = dark_pixel_weights(target, dark_weight).expand_as(fake)
    return (w * torch.abs(fake - target)).sum() / w.sum()


# --------------------------------------------------------------------------
# LoRA (§3)


def _pattern_value(pattern, module_path, default):
    """PEFT's rank/alpha pattern rule: a key matches a module path exactly or as
    a dotted suffix ("self_attn.q" matches "tb.self_attn.q").  The §3 layer name
    ("enc2" for module "enc2.conv") is accepted as well.  Exact matches win;
    among suffix matches the first key in the pattern's order wins."""
    layer = MODULE_TO_LAYER.get(module_path, module_path)
    for key in (module_path, layer):
        if key in pattern:
            return pattern[key]
    for key, value in pattern.items():
        if module_path.endswith("." + key) or layer.endswith("." + key):
            return value
    return default


def lora_scale(module_path, rank, config):
    """alpha/r for one adapted module; r must equal lora_A's first dimension."""
    r = _pattern_value(config.get("rank_pattern") or {}, module_path, config["r"])
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module_path, config["lora_alpha"])
    if r != rank:
        raise ValueError(f"{module_path}: lora_A has rank {rank}, adapter_config says {r}")
    return alpha / r


def _split_peft_key(key):
    """'base_model.model.enc2.conv.lora_A.weight' → ('enc2.conv', 'A')."""
    if not key.startswith(PEFT_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
        raise ValueError(f"not a PEFT LoRA key: {key}")
    return key[len(PEFT_PREFIX) : -len(".lora_A.weight")], key[-8]


class LoraAdapter(nn.Module):
    """One adapter: lora_A/lora_B per adapted module and the concept embedding,
    all as trainable parameters, plus its PEFT adapter_config."""

    def __init__(self, tensors, adapter_config):
        super().__init__()
        self.config = dict(adapter_config)
        self.paths = {}  # module path → (A, B, scale)
        split = [_split_peft_key(k) for k in tensors if k != "concept.embedding"]
        for path in sorted({p for p, _ in split}):
            if path not in MODULE_TO_LAYER:
                raise ValueError(f"{path} is not a crucial layer")
            if (path, "A") not in split or (path, "B") not in split:
                raise ValueError(f"{path}: lora_A and lora_B must both be present")
            a = nn.Parameter(torch.as_tensor(tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"]).clone())
            b = nn.Parameter(torch.as_tensor(tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"]).clone())
            if a.dim() != b.dim() or b.shape[1] != a.shape[0] or (b.dim() == 4 and b.shape[2:] != (1, 1)):
                raise ValueError(f"{path}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not chain")
            self.register_parameter(path.replace(".", "_") + "_lora_A", a)
            self.register_parameter(path.replace(".", "_") + "_lora_B", b)
            self.paths[path] = (a, b, lora_scale(path, a.shape[0], self.config))
        self.embedding = nn.Parameter(torch.as_tensor(tensors["concept.embedding"]).clone())

    def peft_tensors(self):
        """{full PEFT key: parameter} plus 'concept.embedding'."""
        out = {}
        for path, (a, b, _) in self.paths.items():
            out[f"{PEFT_PREFIX}{path}.lora_A.weight"] = a
            out[f"{PEFT_PREFIX}{path}.lora_B.weight"] = b
        out["concept.embedding"] = self.embedding
        return out

    def delta(self, path):
        """scale·B·A in the base weight's layout (conv: B[Cout,r] @ A[r,Cin·k·k])."""
        a, b, scale = self.paths[path]
        w = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
        return scale * w.reshape(b.shape[0], *a.shape[1:])


def _module(G, path):
    m = G
    for part in path.split("."):
        m = getattr(m, part)
    return m


def attach(G, weighted_adapters):
    """Adds the unmerged paths of [(adapter, weight), …]; weight multiplies ΔW
    (a request's strength, or a blend weight)."""
    for adapter, weight in weighted_adapters:
        if adapter.embedding.shape != G.concepts.shape[1:]:
            raise ValueError(f"concept.embedding {tuple(adapter.embedding.shape)} does not fit this base")
        for path, (a, b, scale) in adapter.paths.items():
            m = _module(G, path)
            if a.shape[1:] != m.weight.shape[1:] or b.shape[0] != m.weight.shape[0]:
                raise ValueError(f"{path}: adapter shapes do not fit the base weight {tuple(m.weight.shape)}")
            m.lora_paths.append((a, b, weight * scale))


def detach(G):
    """Removes every attached LoRA path."""
    for m in G.modules():
        if isinstance(m, (LoRAConv2d, LoRALinear)):
            m.lora_paths = []


def apply_lora(G, adapter_tensors, adapter_config, strength=1.0):
    """Builds a LoraAdapter from PEFT-named tensors and attaches it to G at the
    given strength; returns the adapter (its parameters are trainable)."""
    adapter = LoraAdapter(adapter_tensors, adapter_config)
    attach(G, [(adapter, strength)])
    return adapter


def merge_lora(G, weighted_adapters):
    """A copy of G (without attached paths) whose weights are W + Σ w·scale·B·A."""
    merged = copy.deepcopy(G)
    detach(merged)
    with torch.no_grad():
        for adapter, weight in weighted_adapters:
            for path in adapter.paths:
                w = _module(merged, path).weight
                w += weight * adapter.delta(path).to(w.dtype)
    return merged


def blend_context(weighted_contexts):
    """Σ w·ctx over [(T×C4 embedding, weight), …] (an adapter contributes its
    concept embedding, a base concept its row of G.concepts)."""
    return sum(w * c for c, w in weighted_contexts)


# --------------------------------------------------------------------------
# Files (§4)


def file_sha256(path):
    """sha256 hex digest of a file's bytes (an adapter's base_sha256)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flag(meta, name, default):
    v = meta.get(name)
    if v is None:
        return default
    if v not in ("true", "false"):
        raise ValueError(f"metadata {name} must be 'true' or 'false', not {v!r}")
    return v == "true"


def save_base(G, path, concept_names, D=None, extra_meta=None, dtype="F32"):
    """Writes an e2gan-base file: G's §1 tensors (plus D's as 'disc.*')."""
    if len(concept_names) != G.concepts.shape[0]:
        raise ValueError("one name per row of G.concepts is needed")
    tensors = dict(G.state_dict())
    if D is not None:
        tensors.update({"disc." + k: v for k, v in D.state_dict().items()})
    meta = {
        "format": "e2gan-base",
        "ngf": G.ngf,
        "ctx_tokens": G.ctx_tokens,
        "concepts": json.dumps(list(concept_names)),
        "unet_skips": "true" if G.unet_skips else "false",
        "residual_out": "true" if G.residual_out else "false",
        "norm_ends": "true" if G.norm_ends else "false",
    }
    if G.film:
        meta["film"] = "true"  # absent: false
    if G.skip_gate:
        meta["skip_gate"] = "true"
    meta.update(extra_meta or {})
    safetensors_io.save(path, tensors, meta, dtype)


def load_base(path):
    """Reads an e2gan-base file → (Generator, metadata, Discriminator or None)."""
    tensors, meta = safetensors_io.load(path)
    if meta.get("format") != "e2gan-base":
        raise ValueError(f"{path}: not an e2gan-base file")
    names = json.loads(meta["concepts"])
    G = Generator(
        int(meta["ngf"]),
        len(names),
        int(meta.get("ctx_tokens", 8)),
        _flag(meta, "unet_skips", True),
        _flag(meta, "residual_out", True),
        _flag(meta, "norm_ends", False),
        _flag(meta, "film", False),
        _flag(meta, "skip_gate", False),
    )
    G.concept_names = list(names)
    G.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("disc.")})
    D = None
    disc = {k[5:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("disc.")}
    if disc:
        D = Discriminator(disc["c1.weight"].shape[0])
        D.load_state_dict(disc)
    return G, meta, D


def save_adapter(path, lora_tensors, concept_embedding, adapter_config, concept_name, base_sha256,
                 extra_meta=None, dtype="F32"):
    """Writes an e2gan-lora file: PEFT-named lora_A/lora_B, concept.embedding."""
    tensors = dict(lora_tensors)
    tensors.pop("concept.embedding", None)
    for key in tensors:
        _split_peft_key(key)
    tensors["concept.embedding"] = concept_embedding
    meta = {
        "format": "e2gan-lora",
        "adapter_config": json.dumps(adapter_config, sort_keys=True),
        "concept": concept_name,
        "base_sha256": base_sha256,
    }
    meta.update(extra_meta or {})
    safetensors_io.save(path, tensors, meta, dtype)


def load_adapter(path, base_path=None):
    """Reads an e2gan-lora file → (tensors incl. concept.embedding, adapter_config,
    metadata); with base_path, refuses an adapter trained on another base."""
    tensors, meta = safetensors_io.load(path)
    if meta.get("format") != "e2gan-lora":
        raise ValueError(f"{path}: not an e2gan-lora file")
    if base_path is not None and meta.get("base_sha256") != file_sha256(base_path):
        raise ValueError(f"{path}: trained on another base than {base_path}")
    return {k: torch.from_numpy(v) for k, v in tensors.items()}, json.loads(meta["adapter_config"]), meta


def peft_adapter_config(r, lora_alpha, rank_pattern=None, alpha_pattern=None):
    """A PEFT adapter_config.json dict targeting all crucial layers of §3."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "r": r,
        "lora_alpha": lora_alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(CRUCIAL_LAYERS.values()),
        "rank_pattern": dict(rank_pattern or {}),
        "alpha_pattern": dict(alpha_pattern or {}),
    }


# --------------------------------------------------------------------------
# ONNX


class _FixedConcept(nn.Module):
    """G with one concept's context baked in: forward(x) only."""

    def __init__(self, G, ctx):
        super().__init__()
        self.G = G
        self.register_buffer("ctx", ctx.detach().clone().unsqueeze(0))

    def forward(self, x):
        return self.G(x, self.ctx.expand(x.shape[0], -1, -1))


def export_onnx(G, path, H, W, concept_index, opset=13):
    """Exports G at H×W with base concept `concept_index` baked in; input 'x'
    (N×3×H×W, batch dynamic), output 'y'."""
    model = _FixedConcept(G, G.concepts[concept_index]).eval()
    # torch 1.13 has no exporter for aten::atanh; ONNX has Atanh since opset 9.
    torch.onnx.register_custom_op_symbolic("aten::atanh", lambda g, v: g.op("Atanh", v), 9)
    x = torch.zeros(1, 3, H, W)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on instance_norm and shape inference
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=opset,
                          do_constant_folding=True)
    torch.onnx.unregister_custom_op_symbolic("aten::atanh", 9)
