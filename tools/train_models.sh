#!/usr/bin/env bash
# train_models.sh — trains the shipped models on this machine's CPU, as they
# were made: the dataset, the base `e2gan-s` (ngf 32) on the 8 base concepts,
# then one adapter per new concept with rank search and data reduction.
# Resumable: the base trains from a checkpoint, finished steps are skipped.
# Copies the results into models/ and writes their quality table to
# models/README.md's data (build/train-*/report.json, contact sheets).
#
# usage: tools/train_models.sh        (after tools/setup.sh)
# env:   BASE_STEPS (3500), ADAPTER_STEPS (500), BATCH (8), THREADS (2),
#        NEW_CONCEPTS ("cartoon pencil line-art"), KEEP (0.5), BASE_LR (2e-4)
# The shipped models were made with these defaults.  (The first base used
# BASE_LR 1e-3 and did not learn its concepts apart: docs/training.md.)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_STEPS=${BASE_STEPS:-3500}
ADAPTER_STEPS=${ADAPTER_STEPS:-500}
BATCH=${BATCH:-8}
THREADS=${THREADS:-2}
NEW_CONCEPTS=${NEW_CONCEPTS:-"cartoon pencil line-art"}
KEEP=${KEEP:-0.5}
BASE_LR=${BASE_LR:-2e-4}
BASE_CONCEPTS=oil-paint,charcoal,sepia,pop-art,winter,night,vivid,thermal

[ -f build/dataset/manifest.json ] || /usr/bin/python3 tools/make_dataset.py
mkdir -p build/train-base models/adapters

if [ ! -f build/train-base/e2gan-s.safetensors ]; then
  build/e2gan train --data build/dataset --concepts "$BASE_CONCEPTS" --ngf 32 --batch "$BATCH" \
    --steps "$BASE_STEPS" --lr "$BASE_LR" --gan-weight 0 --eval-every 500 --eval-pairs 0 \
    --checkpoint build/train-base/ckpt.safetensors --checkpoint-every 100 \
    --report build/train-base --threads "$THREADS" --out build/train-base/e2gan-s.safetensors
fi
cp build/train-base/e2gan-s.safetensors models/e2gan-s.safetensors

for concept in $NEW_CONCEPTS; do
  out=build/train-$concept
  mkdir -p "$out"
  if [ ! -f "$out/$concept.safetensors" ]; then
    build/e2gan finetune --model models/e2gan-s.safetensors --data build/dataset --concept "$concept" \
      --rank-search --max-rank 8 --keep-fraction "$KEEP" --steps "$ADAPTER_STEPS" --batch "$BATCH" \
      --lr 2e-3 --gan-weight 0 --eval-every 100 --eval-pairs 0 --report "$out" --threads "$THREADS" \
      --out "$out/$concept.safetensors"
  fi
  cp "$out/$concept.safetensors" "models/adapters/$concept.safetensors"
done
echo "models: $(ls models/*.safetensors models/adapters/*.safetensors | tr '\n' ' ')" >&2
