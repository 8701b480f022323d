#!/usr/bin/env bash
# run.sh — sets up and builds e2gan, then edits a photo with the CLI.
# The HTTP service (issue 7) and the trained shipped model (issue 3) do not
# exist yet: until they do, this edits with a freshly initialised model, so
# the output shows the pipeline working, not a trained style.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
model=models/e2gan-s.safetensors
if [ ! -f "$model" ]; then
  model=build/untrained-base.safetensors
  [ -f "$model" ] || build/e2gan init --ngf 32 --concepts oil-paint,winter --seed 1 --out "$model"
fi
in=${1:-build/sample.png}
[ -f "$in" ] || convert rose: -resize 256x256 "$in"
build/e2gan edit --model "$model" --concept "$(build/e2gan info "$model" | sed -n 's/^  concepts: \["\([^"]*\)".*/\1/p')" "$in" build/edited.png
echo "wrote build/edited.png"
