"""torch_train_bench.py — the PyTorch peer of e2gan-gpu-train-check's step
timing (bench/gpu-run.sh): one training step of E²GAN-G from
tools/e2gan_torch.py — forward, λ·L1 (+ the LSGAN term through the PatchGAN
D with --gan), backward, Adam — under bf16 autocast, channels_last, timed
with CUDA events; LoRA r on the crucial layers through peft (--lora R) or
all of G.  Its last stdout line is JSON {"ms_per_step": …, "samples_per_s": …}.

usage: python3 bench/torch_train_bench.py --ngf 64 --size 256 --batch 16
       [--lora 8] [--gan] [--iters 20]
"""
import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import e2gan_torch as E  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer of the GPU training step")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on the crucial layers (0: all of G)")
    ap.add_argument("--gan", action="store_true", help="also the PatchGAN D step and the G adversarial term")
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    G = E.Generator(a.ngf, 2).to(dev).to(memory_format=torch.channels_last)
    if a.lora:
        from peft import LoraConfig, inject_adapter_in_model
        G.requires_grad_(False)
        cfg = LoraConfig(r=a.lora, lora_alpha=a.lora, target_modules=list(E.CRUCIAL_LAYERS.values()))
        G = inject_adapter_in_model(cfg, G)
        ctx = torch.nn.Parameter(torch.randn(1, 8, 4 * a.ngf, device=dev))
        params = [p for n, p in G.named_parameters() if "lora_" in n] + [ctx]
    else:
        ctx = None
        params = list(G.parameters())
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
    if a.gan:
        D = E.Discriminator().to(dev).to(memory_format=torch.channels_last)
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
    y = (torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
    rows = [i % 2 for i in range(a.batch)]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            c = ctx.expand(a.batch, -1, -1) if ctx is not None else G.concepts[rows]
            fake = G(x, c)
            loss = 100.0 * E.loss_l1(fake, y)
            if a.gan:
                ld = E.loss_d(D(x, y), D(x, fake.detach()))
                opt_d.zero_grad(set_to_none=True)
                ld.backward()
                opt_d.step()
                loss = loss + E.loss_g_gan(D(x, fake))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(a.iters):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        step()
        t1.record()
        torch.cuda.synchronize()
        times.append(t0.elapsed_time(t1))
    ms = statistics.median(times)
    print(json.dumps({"ms_per_step": ms, "samples_per_s": a.batch * 1000.0 / ms}))


if __name__ == "__main__":
    main()
