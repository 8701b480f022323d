#!/usr/bin/env python3
"""quality_table.py — the per-concept validation table of one or more
evaluations, as markdown: the model's PSNR beside the identity edit's and
the best constant image's, SSIM, edge F1 of the model and of the identity
edit, whether the teacher is a sketch, and the "learned" verdict
(docs/training.md#quality).  Each argument is an evaluation.json
(`e2gan evaluate --report DIR`), a report.json (`e2gan train/finetune
--report DIR`: its final evaluation) or a folder holding either.

usage: /usr/bin/python3 tools/quality_table.py PATH [PATH ...]"""
import json
import os
import sys


def load(path):
    if os.path.isdir(path):
        for name in ("evaluation.json", "report.json"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    doc = json.load(open(path))
    return doc["final"] if "final" in doc else doc


def f(v, fmt):
    return "—" if v is None else format(v, fmt)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| concept | PSNR model (dB) | identity | constant | SSIM | edge F1 model | identity | sketch | learned |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        ev = load(path)
        for name, c in ev["concepts"].items():
            verdict = "**yes**" if c["learned"] else "no: " + c["verdict"]
            print(f"| {name} | {c['psnr']:.2f} | {c['identity_psnr']:.2f} | {c['constant_psnr']:.2f} | "
                  f"{c['ssim']:.3f} | {f(c['edge_f1'], '.2f')} | {f(c['identity_edge_f1'], '.2f')} | "
                  f"{'yes' if c['sketch'] else 'no'} | {verdict} |")
        if len(ev["concepts"]) > 1:  # the evaluation's own means over its concepts
            print(f"| **mean** | **{ev['mean_psnr']:.2f}** | {ev['mean_identity_psnr']:.2f} | "
                  f"{ev['mean_constant_psnr']:.2f} | {ev['mean_ssim']:.3f} | {f(ev['mean_edge_f1'], '.2f')} | "
                  f"{f(ev['mean_identity_edge_f1'], '.2f')} | | **{ev['learned']} of {ev['concepts_evaluated']}** |")

if __name__ == "__main__":
    main()
