"""torch_cpu_bf16.py — what PyTorch 1.13 needs to run tools/e2gan_torch.py's
generator in bf16 on the CPU, for the PyTorch peers of bench/cpu_bench.sh and
bench/cpu_train_bench.sh.  PyTorch 1.13 has no CPU bf16 kernel for
reflection_pad2d, and its CPU autocast passes a bf16 activation to
layer_norm against fp32 weights, which it refuses.  install() patches
torch.nn.functional (this process only; the model code is unchanged):

- F.pad(mode="reflect") on a bf16 CPU tensor gathers the reflected rows and
  columns with index_select (exact: a pad is a copy), keeping channels_last;
- F.layer_norm under CPU autocast runs in fp32 (as autocast does for norms
  on CUDA), its output fp32.

Everything else of the model runs as PyTorch has it.
"""
import torch
import torch.nn.functional as F

_pad, _layer_norm = F.pad, F.layer_norm


def _reflect_index(n, before, after):
    return torch.cat([torch.arange(before, 0, -1), torch.arange(n), torch.arange(n - 2, n - 2 - after, -1)])


def pad(x, p, mode="constant", value=None):
    if mode == "reflect" and x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.dim() == 4 and len(p) == 4:
        left, right, top, bottom = p
        y = x.index_select(2, _reflect_index(x.shape[2], top, bottom))
        y = y.index_select(3, _reflect_index(x.shape[3], left, right))
        if x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y
    return _pad(x, p, mode=mode) if value is None else _pad(x, p, mode=mode, value=value)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if x.device.type == "cpu" and torch.is_autocast_cpu_enabled() and x.dtype != torch.float32:
        x = x.float()
    return _layer_norm(x, normalized_shape, weight, bias, eps)


def install():
    F.pad, F.layer_norm = pad, layer_norm
