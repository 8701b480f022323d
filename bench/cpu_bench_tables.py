"""cpu_bench_tables.py — the markdown tables of bench/cpu_bench.sh and
bench/cpu_train_bench.sh from their run logs.

Each log line is one timed run, in the order run:
  infer: "KEY MS IPS RSS_MB LOAD", KEY = ENGINE/SIZE/BATCH (SIZE "big": the memory run)
  train: "KEY STEPS_PER_S LOAD",   KEY = e2gan|torch-full|lora-bf16|fp32
A row takes the best of its rounds (the fastest run: other work on the machine
only ever adds time) and lists every round with the 1-minute load average it
started at.

usage: python3 bench/cpu_bench_tables.py infer RUNS TORCH_VERSION BIG
       python3 bench/cpu_bench_tables.py train RUNS TORCH_VERSION HAVE_PEFT(true|false)
"""
import collections
import sys


def read(path, n):
    runs = collections.defaultdict(list)
    for line in open(path):
        f = line.split()
        if len(f) == n:
            runs[f[0]].append(tuple(float(x) for x in f[1:]))
    return runs


def infer(path, version, big):
    runs = read(path, 5)  # key → [(ms, ips, rss, load)]
    names = {"e2gan-bf16": "e2gan (C) bf16", "e2gan-fp32": "e2gan (C) fp32", "ort": "onnxruntime-node fp32",
             "torch-fp32": f"PyTorch {version} fp32",
             "torch-bf16": f"PyTorch {version} bf16 (bf16 weights, channels_last)",
             "torch-autocast": f"PyTorch {version} bf16 (autocast, fp32 weights, channels_last)"}

    def best(key):
        return min(r[0] for r in runs[key]) if key in runs else None

    def row(key, ort_key, note=""):
        r = runs[key]
        ms = best(key)
        ratio = f"{ms / best(ort_key):.2f}" if best(ort_key) else "–"
        rounds = ", ".join(f"{x[0]:.1f} @ {x[3]:.2f}" for x in r)
        batch = int(key.split("/")[2])
        print(f"| {names[key.split('/')[0]]} | {ms:.1f} | {1e3 * batch / ms:.2f} | {int(max(x[2] for x in r))} "
              f"| {ratio} | {note} | {rounds} |")

    header = ("| engine | ms / {} (best of rounds) | images / s | peak RSS (MB) | time ÷ onnxruntime | note "
              "| each round: ms @ 1-min load |")
    for size in (256, 512):
        if f"ort/{size}/1" not in runs:
            continue
        print(f"### {size}², batch 1")
        print()
        tb = {k: best(f"{k}/{size}/1") for k in ("torch-bf16", "torch-autocast")}
        fast = min(tb, key=tb.get)
        print(header.format("image"))
        print("|---|---:|---:|---:|---:|---|---|")
        for k in ("e2gan-bf16", "e2gan-fp32", "ort", "torch-fp32", "torch-bf16", "torch-autocast"):
            key = f"{k}/{size}/1"
            if key not in runs:
                continue
            note = ""
            if k == "e2gan-bf16":
                how = "autocast" if fast == "torch-autocast" else "bf16 weights"
                note = (f"÷ PyTorch bf16 ({how}): **{best(key) / tb[fast]:.2f}**; "
                        f"÷ e2gan fp32: {best(key) / best(f'e2gan-fp32/{size}/1'):.2f}")
            elif k == "torch-fp32" and f"e2gan-fp32/{size}/1" in runs:
                note = f"e2gan fp32 ÷ this: {best(f'e2gan-fp32/{size}/1') / best(key):.2f}"
            elif k in tb:
                note = "the faster PyTorch bf16" if k == fast else "the slower PyTorch bf16"
            row(key, f"ort/{size}/1", note)
        print()
    if "ort/256/8" in runs:
        print("### 256², batch 8")
        print()
        print(header.format("batch"))
        print("|---|---:|---:|---:|---:|---|---|")
        for k in ("e2gan-bf16", "e2gan-fp32", "ort"):
            key = f"{k}/256/8"
            if key in runs:
                note = f"÷ e2gan fp32: {best(key) / best('e2gan-fp32/256/8'):.2f}" if k == "e2gan-bf16" else ""
                row(key, "ort/256/8", note)
        print()
    for p in ("bf16", "fp32"):
        r = runs.get(f"e2gan-{p}/big/1")
        if r:
            ms, _, rss, load = r[0]
            ok = "under 2 GB" if rss < 2048 else "**over 2 GB**"
            print(f"- e2gan {p} at {big}×{big}, batch 1: peak RSS **{int(rss)} MB** ({ok}), {ms / 1e3:.1f} s "
                  f"per image (one run, load {load:.2f})")


def train(path, version, have_peft):
    runs = read(path, 3)  # key → [(steps_per_s, load)]

    def best(key):
        return max(r[0] for r in runs[key]) if key in runs else None

    print("| what is trained | engine | precision | steps / s (best of rounds) | samples / s | ÷ e2gan fp32 "
          "| e2gan bf16 ÷ this | each round: steps/s @ 1-min load |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for kind, label in (("full", "whole G"), ("lora", "LoRA r 4 + embedding")):
        for who in ("e2gan", "torch"):
            name = "e2gan (C)" if who == "e2gan" else f"PyTorch {version}"
            if who == "torch" and kind == "lora" and not have_peft:
                print(f"| {label} | {name} | fp32, bf16 autocast | peft not available | | | | |")
                continue
            for p in ("bf16", "fp32"):
                k = f"{who}-{kind}-{p}"
                if k not in runs:
                    continue
                s = best(k)
                prec = p if who == "e2gan" else ("bf16 autocast" if p == "bf16" else "fp32")
                rounds = ", ".join(f"{x[0]:.3f} @ {x[1]:.2f}" for x in runs[k])
                print(f"| {label} | {name} | {prec} | {s:.3f} | {8 * s:.2f} | {s / best(f'e2gan-{kind}-fp32'):.2f} "
                      f"| {best(f'e2gan-{kind}-bf16') / s:.2f} | {rounds} |")


if __name__ == "__main__":
    if sys.argv[1] == "infer":
        infer(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        train(sys.argv[2], sys.argv[3], sys.argv[4] == "true")
