#!/usr/bin/env bash
# train_models.sh — trains the shipped models on this machine's CPU, as they
# were made: the dataset; the base `e2gan-s` (ngf 32) on the 8 base concepts
# in phases, each continuing from the one before; then one adapter per new
# concept with rank search and data reduction.  Resumable: each phase
# trains from its checkpoint, finished phases and adapters are skipped.
# Copies the results into models/ (the evaluation for models/README.md:
# tools/quality_table.py on the reports).
#
#   phase 1  plain (no FiLM), BASE_STEPS steps, seed 1       — the first CPU base
#   phase 2  + FiLM (zero-initialised), FILM_STEPS steps     — the conditioning experiment's FiLM arm
#   phase 3  FiLM, LONG_STEPS steps, seed 3                   — the long run (0 skips it)
#   phase 4  FiLM, WEIGHTED_STEPS steps, seed 4, CONCEPT_WEIGHTS — more steps for a concept
#            that lags (--concept-weights; 0 skips it); SKIP_GATE=1 adds the skip gates
#            (--skip-gate, zero-initialised) and names the phase build/train-gated
#   phase 5  VARIED_STEPS steps (0 skips it and phase 6), seed 5, lr 1.5e-4,
#            VARIED_WEIGHTS, on build/dataset-varied: the default photos plus the
#            train-only packages (docs/data.md); the adapters then train on it too
#   phase 6  VARIED_LONG_STEPS steps (0 skips it), seed 6, lr 1.5e-4, VARIED_LONG_WEIGHTS,
#            on the same photos, from phase 5: what made pop-art hold on new photos
#            (docs/training.md)
#
# FROM=FILE starts the first phase that runs (3, 4 or 5) from FILE instead of
# running phases 1-2: how a later session continues the shipped base
# (FROM=models/e2gan-s.safetensors LONG_STEPS=0 WEIGHTED_STEPS=0; Adam's
# moments start afresh, the weights carry on).
#
# usage: tools/train_models.sh        (after tools/setup.sh)
# env:   BASE_STEPS (3500), FILM_STEPS (600), LONG_STEPS (14000), WEIGHTED_STEPS (10000),
#        CONCEPT_WEIGHTS ("oil-paint=4"), SKIP_GATE (1), VARIED_STEPS (3200),
#        VARIED_WEIGHTS ("pop-art=6,oil-paint=3"), VARIED_LONG_STEPS (6400),
#        VARIED_LONG_WEIGHTS ("pop-art=8,oil-paint=3"), BATCH (8), THREADS (2),
#        FROM (unset), BASE_LR (2e-4), ADAPTER_STEPS (500), NEW_CONCEPTS ("cartoon pencil line-art"),
#        KEEP (0.5), ADAPTER_SEEDS ("": CONCEPT=SEED entries, others 1), SKETCH_CONCEPTS ("line-art"), SKETCH_LOSS ("--dark-weight 10
#        --edge-weight 100": the loss terms that made line-art draw, docs/sketch-loss.md)
# The shipped models were made with these defaults (phase 1 with 2 threads,
# phase 2 with one: tools/conditioning_experiment.sh; models/README.md says
# how each shipped file was run).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_STEPS=${BASE_STEPS:-3500}
FILM_STEPS=${FILM_STEPS:-600}
LONG_STEPS=${LONG_STEPS:-14000}
WEIGHTED_STEPS=${WEIGHTED_STEPS:-10000}
CONCEPT_WEIGHTS=${CONCEPT_WEIGHTS:-oil-paint=4}
SKIP_GATE=${SKIP_GATE:-1}
VARIED_STEPS=${VARIED_STEPS:-3200}
VARIED_WEIGHTS=${VARIED_WEIGHTS:-pop-art=6,oil-paint=3}
VARIED_LONG_STEPS=${VARIED_LONG_STEPS:-6400}
VARIED_LONG_WEIGHTS=${VARIED_LONG_WEIGHTS:-pop-art=8,oil-paint=3}
FROM=${FROM:-}
BATCH=${BATCH:-8}
THREADS=${THREADS:-2}
BASE_LR=${BASE_LR:-2e-4}
ADAPTER_STEPS=${ADAPTER_STEPS:-500}
NEW_CONCEPTS=${NEW_CONCEPTS:-"cartoon pencil line-art"}
KEEP=${KEEP:-0.5}
ADAPTER_SEEDS=${ADAPTER_SEEDS:-}
SKETCH_CONCEPTS=${SKETCH_CONCEPTS:-"line-art"}
SKETCH_LOSS=${SKETCH_LOSS:-"--dark-weight 10 --edge-weight 100"}
BASE_CONCEPTS=oil-paint,charcoal,sepia,pop-art,winter,night,vivid,thermal

[ -f build/dataset/manifest.json ] || /usr/bin/python3 tools/make_dataset.py
data=build/dataset
if [ "$VARIED_STEPS" -gt 0 ]; then
  data=build/dataset-varied
  [ -f $data/manifest.json ] || /usr/bin/python3 tools/make_dataset.py --out $data \
    --packages mate-backgrounds,plasma-workspace-wallpapers,python3-skimage,lomiri-wallpapers-16.04,lomiri-wallpapers-20.04,kphotoalbum,scratch
fi
mkdir -p models/adapters

phase() { # NAME STEPS SEED ARGS…: one base phase unless done (BASE_DATA, LR); prints its output
  local name=$1 steps=$2 seed=$3 dir=build/train-$1
  shift 3
  mkdir -p "$dir"
  if [ ! -f "$dir/e2gan-s.safetensors" ]; then
    build/e2gan train --data "${BASE_DATA:-build/dataset}" --concepts "$BASE_CONCEPTS" --ngf 32 --batch "$BATCH" \
      --steps "$steps" --lr "${LR:-$BASE_LR}" --seed "$seed" --gan-weight 0 --eval-every $((steps / 6)) \
      --eval-pairs 0 --checkpoint "$dir/ckpt.safetensors" --checkpoint-every 100 --report "$dir" \
      --threads "$THREADS" --out "$dir/e2gan-s.safetensors" "$@" >&2
  fi
  echo "$dir/e2gan-s.safetensors"
}
if [ -n "$FROM" ]; then
  base=$FROM
else
  base=$(phase base "$BASE_STEPS" 1)
  base=$(phase film "$FILM_STEPS" 1 --init "$base" --film)
fi
[ "$LONG_STEPS" -gt 0 ] && base=$(phase long "$LONG_STEPS" 3 --init "$base" --film)
if [ "$WEIGHTED_STEPS" -gt 0 ] && [ "$SKIP_GATE" = 1 ]; then
  base=$(phase gated "$WEIGHTED_STEPS" 4 --init "$base" --film --skip-gate --concept-weights "$CONCEPT_WEIGHTS")
elif [ "$WEIGHTED_STEPS" -gt 0 ]; then
  base=$(phase weighted "$WEIGHTED_STEPS" 4 --init "$base" --film --concept-weights "$CONCEPT_WEIGHTS")
fi
if [ "$VARIED_STEPS" -gt 0 ]; then
  gate=""
  [ "$SKIP_GATE" = 1 ] && gate=--skip-gate
  base=$(BASE_DATA=$data LR=1.5e-4 phase varied "$VARIED_STEPS" 5 --init "$base" --film $gate \
    --concept-weights "$VARIED_WEIGHTS")
  if [ "$VARIED_LONG_STEPS" -gt 0 ]; then
    base=$(BASE_DATA=$data LR=1.5e-4 phase varied-long "$VARIED_LONG_STEPS" 6 --init "$base" --film \
      $gate --concept-weights "$VARIED_LONG_WEIGHTS")
  fi
fi
cp "$base" models/e2gan-s.safetensors

for concept in $NEW_CONCEPTS; do
  out=build/train-$concept
  loss=""
  case " $SKETCH_CONCEPTS " in *" $concept "*) loss=$SKETCH_LOSS ;; esac
  seed=1
  for entry in $ADAPTER_SEEDS; do [ "${entry%%=*}" = "$concept" ] && seed=${entry#*=}; done
  mkdir -p "$out"
  if [ ! -f "$out/$concept.safetensors" ]; then
    # shellcheck disable=SC2086
    build/e2gan finetune --model models/e2gan-s.safetensors --data $data --concept "$concept" \
      --rank-search --max-rank 8 --keep-fraction "$KEEP" --steps "$ADAPTER_STEPS" --batch "$BATCH" \
      --lr 2e-3 --seed "$seed" --gan-weight 0 $loss --eval-every 100 --eval-pairs 0 --report "$out" --threads "$THREADS" \
      --out "$out/$concept.safetensors"
  fi
  cp "$out/$concept.safetensors" "models/adapters/$concept.safetensors"
done
echo "models: $(ls models/*.safetensors models/adapters/*.safetensors | tr '\n' ' ')" >&2
