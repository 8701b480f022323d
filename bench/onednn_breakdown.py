"""onednn_breakdown.py — where the time of one `e2gan bench` forward goes:
oneDNN's own execution times (ONEDNN_VERBOSE=1 exec lines) summed per
primitive — convolutions by layer shape, matmuls by shape, reorders by what
they convert — per forward pass, against the pass's total.  The rest (total
minus oneDNN: attention, norms, activations, padding, f32→bf16 conversions
of activations, the engine's own loops) is the engine's C code.

The total is the median ms per batch of a plain `e2gan bench` run (no
verbose output) made just before the verbose one; the verbose run's own
median is printed beside it (printing a line per primitive slows it a
little).  Passes = 1 warm-up + --iters (cli/e2gan.c).

usage: python3 bench/onednn_breakdown.py --e2gan build/e2gan --model BASE
       [--size 256] [--batch 1] [--iters 3] [--threads 2] [--precision bf16 fp32]
Prints a markdown section per precision.
"""
import argparse
import collections
import json
import os
import re
import subprocess


def bench(a, precision, verbose):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    env.pop("ONEDNN_VERBOSE", None)
    if verbose:
        env["ONEDNN_VERBOSE"] = "1"
    out = subprocess.run([a.e2gan, "bench", "--model", a.model, "--size", str(a.size), "--batch", str(a.batch),
                          "--iters", str(a.iters), "--threads", str(a.threads), "--precision", precision],
                         env=env, check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines, json.loads(lines[-1])


def shape_of_conv(desc):
    """mb1_ic64oc32_ih21oh20kh2sh1dh0ph0_iw128ow128kw2sw1dw0pw0 → a layer key
    (row bands and upsample phases of one layer fold together)."""
    f = dict(re.findall(r"([a-z]+)(\d+)", desc))
    k = f"{f['kh']}×{f.get('kw', f['kh'])}"
    what = f"{f['ic']}→{f['oc']} {k} s{f['sh']}, out width {f['ow']}"
    if f["kh"] == "2":
        what += " (up×2 3×3 as 2×2 phases)"
    return what


def dtypes(mds):
    return "/".join(m.split(":")[0].split("_", 1)[1] for m in mds.split() if not m.startswith("bia_"))


def parse(lines):
    rows = collections.defaultdict(lambda: [0, 0.0])  # key → [count, ms]
    for line in lines:
        if not line.startswith("onednn_verbose,exec,cpu,"):
            continue
        f = line.split(",")
        prim, impl, mds, desc, ms = f[3], f[4], f[6], f[-2], float(f[-1])
        if prim == "convolution":
            key = ("convolution", f"{shape_of_conv(desc)}; {dtypes(mds)}; {impl}")
        elif prim == "matmul":
            key = ("matmul", f"{desc}; {dtypes(mds)}; {impl}")
        elif prim == "reorder":
            src, dst = mds.split()[:2]
            kind = "weights" if desc.count("x") == 3 else "data"
            key = ("reorder", f"{kind} {src.split(':')[0][4:]}→{dst.split(':')[0][4:]} "
                              f"({dst.split(':')[3]}), {desc}; {impl}")
        else:
            key = (prim, f"{desc}; {impl}")
        rows[key][0] += 1
        rows[key][1] += ms
    return rows


def main():
    ap = argparse.ArgumentParser(description="oneDNN time per primitive in one e2gan bench forward")
    ap.add_argument("--e2gan", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    a = ap.parse_args()
    passes = a.iters + 1
    for p in a.precision:
        _, plain = bench(a, p, False)
        lines, verbose = bench(a, p, True)
        rows = parse(lines)
        total = plain["ms_per_batch"]
        print(f"#### {p}: {a.size}², batch {a.batch}, {a.threads} threads — ms per forward pass "
              f"({passes} passes: 1 warm-up + {a.iters})")
        print()
        print(f"total {total:.1f} ms (plain run; {verbose['ms_per_batch']:.1f} ms with ONEDNN_VERBOSE=1)")
        print()
        print("| primitive | layer / shape; data types; implementation | calls / pass | ms / pass | share of total |")
        print("|---|---|---:|---:|---:|")
        sums = collections.defaultdict(float)
        for (prim, what), (n, ms) in sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[1][1])):
            sums[prim] += ms / passes
            print(f"| {prim} | {what} | {n / passes:g} | {ms / passes:.2f} | {100 * ms / passes / total:.1f}% |")
        onednn = sum(sums.values())
        for prim in sorted(sums):
            print(f"| **{prim}, all** | | | **{sums[prim]:.2f}** | **{100 * sums[prim] / total:.1f}%** |")
        print(f"| **oneDNN, all** | | | **{onednn:.2f}** | **{100 * onednn / total:.1f}%** |")
        print(f"| **the rest** (attention, norms, activations, padding, activation conversions) | total − oneDNN "
              f"| | **{total - onednn:.2f}** | **{100 * (total - onednn) / total:.1f}%** |")
        print()


if __name__ == "__main__":
    main()
