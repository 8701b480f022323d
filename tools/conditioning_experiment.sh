#!/usr/bin/env bash
# conditioning_experiment.sh — does FiLM conditioning pay, at equal budget?
# Two trainings of the base on the 8 base concepts that differ only in
# --film (the concept scales and shifts the decoder's instance norms and
# sets how much of the photo the residual output keeps: docs/architecture.md
# §1), same steps, batch, learning rate, seed and data, run side by side on
# one thread each; both continue from INIT (FiLM starts at zero, so both
# start from the same function).  Writes the per-concept validation table
# (PSNR beside the identity edit and the constant image, edge F1, learned)
# of both to OUT, with the machine and commit.
#
# usage: tools/conditioning_experiment.sh   (after tools/setup.sh and tools/make_dataset.py)
# env:   E2GAN (build/e2gan), DATA (build/dataset), INIT (models/e2gan-s.safetensors), STEPS (1500),
#        BATCH (8), LR (2e-4), WORK (build/conditioning), OUT (docs/conditioning.md)
set -euo pipefail
cd "$(dirname "$0")/.."

E2GAN=${E2GAN:-build/e2gan}
DATA=${DATA:-build/dataset}
INIT=${INIT:-models/e2gan-s.safetensors}
STEPS=${STEPS:-1500}
BATCH=${BATCH:-8}
LR=${LR:-2e-4}
WORK=${WORK:-build/conditioning}
OUT=${OUT:-docs/conditioning.md}
BASE_CONCEPTS=oil-paint,charcoal,sepia,pop-art,winter,night,vivid,thermal
mkdir -p "$WORK"

run() { # NAME ARGS…: one arm unless done (resumes from its checkpoint)
  local name=$1; shift
  [ -f "$WORK/$name/report.json" ] && return
  "$E2GAN" train --data "$DATA" --concepts "$BASE_CONCEPTS" --init "$INIT" --batch "$BATCH" \
    --steps "$STEPS" --lr "$LR" --gan-weight 0 --eval-every $((STEPS / 3)) --eval-pairs 0 --threads 1 \
    --checkpoint "$WORK/$name.ckpt" --report "$WORK/$name" --out "$WORK/$name.safetensors" --quiet "$@"
}
run plain &
run film --film &
wait

/usr/bin/python3 - "$WORK" "$OUT" "$STEPS" "$BATCH" "$LR" "$INIT" "$(git rev-parse --short HEAD)" \
  "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" <<'PY'
import json, sys, datetime
work, out, steps, batch, lr, init, commit, cpu = sys.argv[1:]
r = {arm: json.load(open(f"{work}/{arm}/report.json")) for arm in ("plain", "film")}
f = {arm: r[arm]["final"] for arm in r}
def ef(v):
    return "—" if v is None else f"{v:.2f}"
lines = [
    "# Conditioning: FiLM against the plain base, at equal budget",
    "",
    f"- made by tools/conditioning_experiment.sh on {datetime.date.today()}, commit {commit}",
    f"- machine: {cpu}; the two arms ran side by side, one thread each",
    f"- both continue from {init} for {steps} steps of {batch} crops of 128² on the 8 base concepts,",
    f"  L1 only (λ 100), Adam lr {lr} decaying linearly over the second half, seed 1; they differ only",
    "  in --film (zero at the start, so both start from the same function)",
    "- quality: every validation pair, 8-bit edits against the teacher (docs/training.md#quality)",
    "",
    "| concept | identity | constant | PSNR plain | PSNR FiLM | edge F1 plain | edge F1 FiLM | learned plain | learned FiLM |",
    "|---|---|---|---|---|---|---|---|---|",
]
for name, p in f["plain"]["concepts"].items():
    q = f["film"]["concepts"][name]
    lines.append(f"| {name} | {p['identity_psnr']:.2f} | {p['constant_psnr']:.2f} | {p['psnr']:.2f} | "
                 f"{q['psnr']:.2f} | {ef(p['edge_f1'])} | {ef(q['edge_f1'])} | "
                 f"{'yes' if p['learned'] else 'no'} | {'yes' if q['learned'] else 'no'} |")
lines.append(f"| **mean** | {f['plain']['mean_identity_psnr']:.2f} | {f['plain']['mean_constant_psnr']:.2f} | "
             f"**{f['plain']['mean_psnr']:.2f}** | **{f['film']['mean_psnr']:.2f}** | "
             f"{ef(f['plain']['mean_edge_f1'])} | {ef(f['film']['mean_edge_f1'])} | "
             f"{f['plain']['learned']} of 8 | {f['film']['learned']} of 8 |")
lines += ["", "Validation PSNR (mean over the concepts) during the runs:", "",
          "| step | " + " | ".join(str(e["step"]) for e in r["plain"]["history"]["evals"]) + " |",
          "|---|" + "---|" * len(r["plain"]["history"]["evals"])]
for arm in ("plain", "film"):
    lines.append(f"| {arm} | " + " | ".join(f"{e['mean_psnr']:.2f}" for e in r[arm]["history"]["evals"]) + " |")
lines += ["", "Wall time: " + ", ".join(f"{arm} {r[arm]['budget']['wall_s'] / 60:.1f} min" for arm in r) + "."]
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
