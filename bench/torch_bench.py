"""torch_bench.py — the PyTorch peer of `e2gan bench`: loads an e2gan-base
file with tools/e2gan_torch.py and times the generator on random input (base
concept 0 as context) under inference_mode.  Its last stdout line is JSON
{"ms_per_batch": …, "images_per_s": …}, as e2gan bench prints.  On the CPU
(default) it is the peer of bench/cpu_bench.sh; with --device cuda --bf16 it
is bench/gpu-run.sh's eager peer (bf16 weights and activations,
channels_last, timed with CUDA events).  --autocast instead keeps fp32
weights in channels_last and runs the forward under
torch.autocast(DEVICE, dtype=torch.bfloat16) (bench/cpu_bench.sh times both
on the CPU and keeps the faster); --channels-last runs fp32 in channels_last
(PyTorch's faster fp32 layout on the CPU; bf16 always uses it).  bf16 on the CPU goes through
bench/torch_cpu_bf16.py (two ops PyTorch 1.13 lacks in bf16 there).

usage: python3 bench/torch_bench.py --model BASE --size S
       [--batch B] [--iters N] [--warmup W] [--threads T] [--device cpu|cuda]
       [--bf16 | --autocast] [--channels-last]
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
    ap = argparse.ArgumentParser(description="PyTorch CPU peer of e2gan bench")
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true", help="bf16 weights and activations, channels_last")
    ap.add_argument("--autocast", action="store_true",
                    help="fp32 weights, channels_last, bf16 autocast around the forward")
    ap.add_argument("--channels-last", action="store_true", help="fp32 weights and input in channels_last")
    args = ap.parse_args()
    if args.bf16 and args.autocast:
        ap.error("--bf16 and --autocast are two ways of running bf16: pick one")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.device == "cpu" and (args.bf16 or args.autocast):
        torch_cpu_bf16.install()  # PyTorch 1.13's missing CPU bf16 pieces
    G = E.load_base(args.model)[0].eval().to(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device) * 2 - 1
    if args.bf16:
        G = G.to(torch.bfloat16).to(memory_format=torch.channels_last)
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    elif args.autocast or args.channels_last:
        G = G.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.autocast)
    precision = "bf16 autocast" if args.autocast else "bf16" if args.bf16 else "fp32"
    if args.channels_last and precision == "fp32":
        precision = "fp32 channels_last"
    cuda = args.device == "cuda"
    times = []
    with torch.inference_mode(), amp:
        ctx = G.concept_context([0] * args.batch)
        for i in range(args.warmup + args.iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                G(x, ctx)
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                G(x, ctx)
                ms = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(ms)
    ms = statistics.median(times)
    print(json.dumps({"ms_per_batch": round(ms, 3), "images_per_s": round(args.batch * 1e3 / ms, 3),
                      "precision": precision}))


if __name__ == "__main__":
    main()
