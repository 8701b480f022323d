#!/usr/bin/env bash
# sketch_loss_experiment.sh — which loss makes a sketch concept draw?  The
# same LoRA fine-tune of each sketch concept (thin dark lines on paper) on
# the base, with: L1 alone; L1 + the GAN term; the dark-pixel-weighted L1;
# L1 + the gradient-domain term; both terms (docs/training.md#loss-terms-for-sketch-concepts).
# Same rank, steps, batch, learning rate, seed and data; PARALLEL runs at a
# time, one thread each.  Writes a table (PSNR beside the constant image, edge F1,
# learned, wall time) and a contact sheet per run (source | teacher |
# model, JPEG) to OUT and OUT's folder, for every run of CONCEPTS so far.
#
# usage: tools/sketch_loss_experiment.sh   (after tools/setup.sh and tools/make_dataset.py)
# env:   E2GAN (build/e2gan), DATA (build/dataset), BASE (models/e2gan-s.safetensors),
#        CONCEPTS ("line-art pencil"), VARIANTS ("l1 gan dark edge dark+edge"),
#        STEPS (300), RANK (4), LR (2e-3), DARK (10), EDGE (100), PARALLEL (2),
#        WORK (build/sketch-loss), OUT (docs/sketch-loss.md)
set -euo pipefail
cd "$(dirname "$0")/.."

E2GAN=${E2GAN:-build/e2gan}
DATA=${DATA:-build/dataset}
BASE=${BASE:-models/e2gan-s.safetensors}
CONCEPTS=${CONCEPTS:-"line-art pencil"}
VARIANTS=${VARIANTS:-"l1 gan dark edge dark+edge"}
STEPS=${STEPS:-300}
RANK=${RANK:-4}
LR=${LR:-2e-3}
DARK=${DARK:-10}
EDGE=${EDGE:-100}
PARALLEL=${PARALLEL:-2}
WORK=${WORK:-build/sketch-loss}
OUT=${OUT:-docs/sketch-loss.md}
SHEETS=$(dirname "$OUT")/sketch-loss
mkdir -p "$WORK" "$SHEETS"

flags_of() { # VARIANT → its loss options
  case $1 in
    l1) echo "--gan-weight 0" ;;
    gan) echo "--gan-weight 1" ;;
    dark) echo "--gan-weight 0 --dark-weight $DARK" ;;
    edge) echo "--gan-weight 0 --edge-weight $EDGE" ;;
    dark+edge) echo "--gan-weight 0 --dark-weight $DARK --edge-weight $EDGE" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

run() { # CONCEPT VARIANT: one fine-tune unless done
  local dir=$WORK/$1-$2
  [ -f "$dir/report.json" ] && return
  # shellcheck disable=SC2046
  "$E2GAN" finetune --model "$BASE" --data "$DATA" --concept "$1" --rank "$RANK" --steps "$STEPS" \
    --lr "$LR" --eval-every $((STEPS / 2)) --eval-pairs 0 --threads 1 --quiet --report "$dir" \
    --out "$dir.safetensors" $(flags_of "$2")
}

jobs=()
for concept in $CONCEPTS; do for v in $VARIANTS; do jobs+=("$concept $v"); done; done
for ((i = 0; i < ${#jobs[@]}; i += PARALLEL)); do
  for ((j = i; j < i + PARALLEL && j < ${#jobs[@]}; j++)); do
    # shellcheck disable=SC2086
    run ${jobs[j]} &
  done
  wait
done

# the table: every run of these concepts in WORK, also those of earlier
# invocations with other VARIANTS
done_runs=()
for concept in $CONCEPTS; do
  for v in l1 gan dark edge dark+edge; do
    [ -f "$WORK/$concept-$v/report.json" ] || continue
    done_runs+=("$concept $v")
    convert "$WORK/$concept-$v/contact.png" -quality 85 "$SHEETS/$concept-$v.jpg"
  done
done

/usr/bin/python3 - "$WORK" "$OUT" "$(basename "$SHEETS")" "$STEPS" "$RANK" "$LR" "$DARK" "$EDGE" "$BASE" \
  "$(git rev-parse --short HEAD)" "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" "${done_runs[@]}" <<'PY'
import json, sys, datetime
work, out, sheets, steps, rank, lr, dark, edge, base, commit, cpu, *jobs = sys.argv[1:]
labels = {"l1": "L1 (λ 100)", "gan": "L1 + GAN term (weight 1, D from scratch)",
          "dark": f"dark-weighted L1 (X {dark})", "edge": f"L1 + gradient term (X {edge})",
          "dark+edge": f"dark-weighted L1 + gradient term"}
lines = [
    "# Loss terms for sketch concepts",
    "",
    f"- made by tools/sketch_loss_experiment.sh on {datetime.date.today()}, commit {commit}",
    f"- machine: {cpu}; one thread per run",
    f"- every run: LoRA rank {rank} on every crucial layer plus the concept embedding, on {base},",
    f"  {steps} steps of 8 crops of 128², Adam lr {lr}, seed 1; only the loss differs",
    "- quality: every validation pair of the concept (docs/training.md#quality); contact sheets:",
    "  source | teacher | model, two validation photos, captioned",
    "",
    "| concept | loss | PSNR (dB) | constant | edge F1 | edge precision / recall | learned | wall time | contact sheet |",
    "|---|---|---|---|---|---|---|---|---|",
]
for job in jobs:
    concept, v = job.split()
    r = json.load(open(f"{work}/{concept}-{v}/report.json"))
    c = next(iter(r["final"]["concepts"].values()))
    pr = "—" if c.get("edge_precision") is None else f"{c['edge_precision']:.2f} / {c['edge_recall']:.2f}"
    f1 = "—" if c["edge_f1"] is None else f"{c['edge_f1']:.2f}"
    lines.append(f"| {concept} | {labels[v]} | {c['psnr']:.2f} | {c['constant_psnr']:.2f} | {f1} | {pr} | "
                 f"{'**yes**' if c['learned'] else 'no'} | {r['budget']['wall_s'] / 60:.1f} min | "
                 f"[{concept}-{v}]({sheets}/{concept}-{v}.jpg) |")
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
