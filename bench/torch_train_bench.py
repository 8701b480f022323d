"""torch_train_bench.py — the PyTorch peer of the trainer's step timing: one
training step of E²GAN-G from tools/e2gan_torch.py — forward, λ·L1 (+ the
LSGAN term through the PatchGAN D with --gan), backward, Adam — in
channels_last; LoRA r on the crucial layers through peft (--lora R) or all
of G.  Its last stdout line is JSON {"ms_per_step": …, "samples_per_s": …,
"steps_per_s": …, "precision": …}.

On CUDA (the default; bench/gpu-run.sh) the step runs under bf16
autocast and is timed with CUDA events.  With --device cpu
(bench/cpu_train_bench.sh) it runs on --threads T threads, fp32 unless
--bf16 (torch.autocast("cpu", dtype=torch.bfloat16): fp32 weights and Adam,
bf16 convolutions and matmuls; bench/torch_cpu_bf16.py fills in what
PyTorch 1.13 lacks for that), timed with time.perf_counter.

usage: python3 bench/torch_train_bench.py --ngf 64 --size 256 --batch 16
       [--lora 8] [--gan] [--iters 20] [--warmup 3]
       [--device cuda|cpu] [--threads T] [--bf16]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import e2gan_torch as E  # noqa: E402
import torch_cpu_bf16  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer of the GPU training step")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on the crucial layers (0: all of G)")
    ap.add_argument("--gan", action="store_true", help="also the PatchGAN D step and the G adversarial term")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast on the CPU (always on with --device cuda)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = a.device == "cuda"
    bf16 = cuda or a.bf16
    if not cuda:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(1)
        if bf16:
            torch_cpu_bf16.install()  # PyTorch 1.13's missing CPU bf16 pieces
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
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=bf16):
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

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.iters):
        if cuda:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            step()
            t1.record()
            torch.cuda.synchronize()
            times.append(t0.elapsed_time(t1))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({"ms_per_step": ms, "samples_per_s": a.batch * 1000.0 / ms, "steps_per_s": 1000.0 / ms,
                      "precision": "bf16 autocast" if bf16 else "fp32"}))


if __name__ == "__main__":
    main()
