#!/usr/bin/env bash
# experiment.sh — the E²GAN paper's comparison in our setting, on the new
# concepts of a dataset, at equal training budgets (same steps and batch):
#   (a) from scratch, full G           (b) base + full fine-tune
#   (c) base + LoRA at uniform ranks   (d) base + LoRA at searched ranks
#   (e) (d) with data reduction
# plus the base trained in the default and in the paper-like form.  Writes a
# markdown table (trainable parameters, adapter bytes, wall time, PSNR,
# SSIM) to docs/experiment.md (or $OUT), with the machine and commit.
#
# usage: tools/experiment.sh   (after tools/setup.sh and tools/make_dataset.py)
# env:   DATA (build/dataset), NGF (16), BATCH (8), BASE_STEPS (1500),
#        BASE_LR (2e-4), STEPS (400), RANKS ("2 8"), KEEP (0.25), CONCEPTS ("cartoon pencil
#        line-art"), BASE_CONCEPTS (the 8 base concepts), THREADS (2),
#        FILM (1: the bases with FiLM, the shipped recipe), SKIP_GATE (1: the
#        default-form base and the scratch runs with skip gates, the shipped recipe;
#        the paper-like form has no U-Net skips to gate), SKETCH_CONCEPTS
#        ("line-art") and SKETCH_LOSS ("--dark-weight 10 --edge-weight 100"):
#        the loss terms of the shipped recipe for those concepts' runs,
#        WORK (build/experiment), OUT (docs/experiment.md)
set -euo pipefail
cd "$(dirname "$0")/.."

E2GAN=build/e2gan
DATA=${DATA:-build/dataset}
NGF=${NGF:-16}
BATCH=${BATCH:-8}
BASE_STEPS=${BASE_STEPS:-1500}
BASE_LR=${BASE_LR:-2e-4}
STEPS=${STEPS:-400}
RANKS=${RANKS:-"2 8"}
KEEP=${KEEP:-0.25}
CONCEPTS=${CONCEPTS:-"cartoon pencil line-art"}
BASE_CONCEPTS=${BASE_CONCEPTS:-oil-paint,charcoal,sepia,pop-art,winter,night,vivid,thermal}
THREADS=${THREADS:-2}
FILM=${FILM:-1}
SKIP_GATE=${SKIP_GATE:-1}
SKETCH_CONCEPTS=${SKETCH_CONCEPTS:-"line-art"}
SKETCH_LOSS=${SKETCH_LOSS:-"--dark-weight 10 --edge-weight 100"}
FILM_FLAG=""
[ "$FILM" = 1 ] && FILM_FLAG=--film
GATE_FLAG=""
[ "$SKIP_GATE" = 1 ] && GATE_FLAG=--skip-gate
WORK=${WORK:-build/experiment}
OUT=${OUT:-docs/experiment.md}
EVAL_EVERY=$((STEPS / 8))
COMMON=(--data "$DATA" --batch "$BATCH" --threads "$THREADS" --gan-weight 0 --quiet --eval-pairs 0)
mkdir -p "$WORK"

# field REPORT_DIR EXPR: a value from a run's report.json (python expression on r)
field() {
  /usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1]+'/report.json')); print($2)" "$1"
}

# row LABEL RUN_DIR PARAMS BYTES: one table row from a run's report
row() {
  local f="r['final']['concepts'][next(iter(r['final']['concepts']))]"
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$3" "$4" \
    "$(field "$2" "f\"{r['budget'].get('total_wall_s', r['budget']['wall_s']):.0f} s\"")" \
    "$(field "$2" "f\"{$f['psnr']:.2f}\"")" "$(field "$2" "f\"{$f['ssim']:.3f}\"")"
}

params_of() { "$E2GAN" info "$1" | sed -n 's/^parameters: \([0-9]*\) .*/\1/p'; }

echo "bases: default and paper-like, ngf $NGF, $BASE_STEPS steps" >&2
for form in default paper-like; do
  flag=$GATE_FLAG; [ "$form" = paper-like ] && flag=--paper-like
  [ -f "$WORK/base-$form.safetensors" ] || "$E2GAN" train "${COMMON[@]}" --concepts "$BASE_CONCEPTS" \
    --ngf "$NGF" $flag $FILM_FLAG --steps "$BASE_STEPS" --lr "$BASE_LR" --report "$WORK/base-$form" \
    --out "$WORK/base-$form.safetensors"
done
BASE=$WORK/base-default.safetensors
G_PARAMS=$(params_of "$BASE")

{
  echo "# The E²GAN experiment in our setting"
  echo
  echo "- made by tools/experiment.sh on $(date -u '+%Y-%m-%d'), commit $(git rev-parse --short HEAD)"
  echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $THREADS threads"
  echo "- generator ngf $NGF at ${BATCH}×128² crops (smaller than the shipped ngf 32, for the budget);"
  echo "  FiLM $([ "$FILM" = 1 ] && echo on || echo off), skip gates $([ "$SKIP_GATE" = 1 ] && echo on || echo off) (default form); L1 (λ = 100, no GAN term)$([ -n "$SKETCH_CONCEPTS" ] && echo ", plus \`$SKETCH_LOSS\` for $SKETCH_CONCEPTS");"
  echo "  Adam lr $BASE_LR for the bases, 1e-3 for full training of one concept, 2e-3 for LoRA"
  echo "- budgets: the bases $BASE_STEPS steps; every run below $STEPS steps of batch $BATCH"
  echo "  (rank search: its probe and search count inside the same $STEPS steps)"
  echo "- quality: PSNR/SSIM against the teacher on every validation pair"
  echo
  echo "## The base: default form against the paper-like form (docs/architecture.md §1)"
  echo
  echo "| form | mean PSNR | mean SSIM | identity PSNR |"
  echo "|---|---|---|---|"
  for form in default paper-like; do
    printf '| %s | %s | %s | %s |\n' "$form" "$(field "$WORK/base-$form" "f\"{r['final']['mean_psnr']:.2f}\"")" \
      "$(field "$WORK/base-$form" "f\"{r['final']['mean_ssim']:.3f}\"")" \
      "$(field "$WORK/base-$form" "f\"{r['final']['mean_identity_psnr']:.2f}\"")"
  done
} >"$OUT.tmp"

for concept in $CONCEPTS; do
  echo "concept $concept" >&2
  d=$WORK/$concept
  mkdir -p "$d"
  run_train() { # DIR ARGS…: a full-G run unless done
    local dir=$1; shift
    [ -f "$dir/report.json" ] || "$E2GAN" train "${COMMON[@]}" --concepts "$concept" --steps "$STEPS" \
      --lr 1e-3 --eval-every "$EVAL_EVERY" --report "$dir" --out "$dir.safetensors" "$@"
  }
  run_lora() { # DIR ARGS…: a LoRA run on the base unless done
    local dir=$1; shift
    [ -f "$dir/report.json" ] || "$E2GAN" finetune "${COMMON[@]}" --model "$BASE" --concept "$concept" \
      --steps "$STEPS" --lr 2e-3 --eval-every "$EVAL_EVERY" --report "$dir" --out "$dir.safetensors" "$@"
  }
  loss=""
  case " $SKETCH_CONCEPTS " in *" $concept "*) loss=$SKETCH_LOSS ;; esac
  # shellcheck disable=SC2086
  run_train "$d/a-scratch" --ngf "$NGF" $FILM_FLAG $GATE_FLAG $loss
  # shellcheck disable=SC2086
  run_train "$d/b-full" --init "$BASE" $loss
  # shellcheck disable=SC2086
  for r in $RANKS; do run_lora "$d/c-rank$r" --rank "$r" $loss; done
  # shellcheck disable=SC2086
  run_lora "$d/d-search" --rank-search --max-rank 8 $loss
  # shellcheck disable=SC2086
  run_lora "$d/e-search-keep" --rank-search --max-rank 8 --keep-fraction "$KEEP" $loss
  {
    echo
    echo "## $concept"
    echo
    echo "| run | trainable parameters | adapter bytes | wall time | PSNR | SSIM |"
    echo "|---|---|---|---|---|---|"
    row "(a) from scratch, full G" "$d/a-scratch" "$(params_of "$d/a-scratch.safetensors")" "—"
    row "(b) base + full fine-tune" "$d/b-full" "$(params_of "$d/b-full.safetensors")" "—"
    for r in $RANKS; do
      row "(c) LoRA, uniform rank $r" "$d/c-rank$r" "$(field "$d/c-rank$r" "r['trainable_params']")" "$(stat -c %s "$d/c-rank$r.safetensors")"
    done
    row "(d) LoRA, searched ranks" "$d/d-search" "$(field "$d/d-search" "r['trainable_params']")" "$(stat -c %s "$d/d-search.safetensors")"
    row "(e) (d) + data reduction ($KEEP)" "$d/e-search-keep" "$(field "$d/e-search-keep" "r['trainable_params']")" "$(stat -c %s "$d/e-search-keep.safetensors")"
    echo
    echo "Searched ranks: $(field "$d/d-search" "', '.join(f'{k} {v}' for k, v in r['ranks'].items() if v)") (others 0)."
    echo "(d) vs (b): $(field "$d/d-search" "round(r['final']['mean_psnr'], 2)") vs $(field "$d/b-full" "round(r['final']['mean_psnr'], 2)") dB with $(/usr/bin/python3 -c "print(f'{100*$(field "$d/d-search" "r['trainable_params']")/$G_PARAMS:.2f}')")% of G's parameters trainable."
    echo "(e) reaches (a)'s final PSNR: $(/usr/bin/python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(f"{d}/a-scratch/report.json"))
e = json.load(open(f"{d}/e-search-keep/report.json"))
target, total = a["final"]["mean_psnr"], a["budget"]["wall_s"]
per_step = e["budget"]["wall_s"] / e["options"]["steps"]
hit = next((ev["step"] for ev in e["history"]["evals"] if ev["mean_psnr"] >= target), None)
if hit is None:
    print(f"not within its {e['options']['steps']} steps ({e['final']['mean_psnr']:.2f} vs {target:.2f} dB)")
else:
    print(f"after {hit} of its final-phase steps, ≈{hit * per_step:.0f} s against (a)'s {total:.0f} s"
          f" ({hit * per_step / total:.2f}×)")
PY
)"
  } >>"$OUT.tmp"
done
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
