#!/usr/bin/env python3
"""quality_table.py — the per-concept validation table (PSNR, SSIM, and the
identity edit's PSNR) of one or more training reports (report.json written by
`e2gan train/finetune --report DIR`), as markdown.

usage: /usr/bin/python3 tools/quality_table.py DIR [DIR ...]"""
import json
import sys


def main():
    print("| concept | PSNR (dB) | SSIM | identity PSNR (dB) | model − identity | pairs |")
    print("|---|---|---|---|---|---|")
    for d in sys.argv[1:]:
        report = json.load(open(f"{d}/report.json"))
        for name, c in report["final"]["concepts"].items():
            print(f"| {name} | {c['psnr']:.2f} | {c['ssim']:.3f} | {c['identity_psnr']:.2f} | "
                  f"{c['psnr'] - c['identity_psnr']:+.2f} | {c['pairs']} |")
        if len(report["final"]["concepts"]) > 1:
            f = report["final"]
            print(f"| **mean** | **{f['mean_psnr']:.2f}** | **{f['mean_ssim']:.3f}** | "
                  f"{f['mean_identity_psnr']:.2f} | {f['mean_psnr'] - f['mean_identity_psnr']:+.2f} | {f['pairs']} |")


if __name__ == "__main__":
    main()
