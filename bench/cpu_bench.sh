#!/usr/bin/env bash
# cpu_bench.sh — e2gan's C engine against its PyTorch (CPU) and onnxruntime-node
# (CPU) peers on the same weights: a base made by `e2gan init --ngf 32
# --concepts a,b --seed 1`, batch 1, 2 threads, 256² and 512²; each engine's
# median ms per batch and peak RSS (/usr/bin/time -f %M).  Then the peak RSS of
# `e2gan bench --size 2048`.  Prints a markdown table and writes it, with the
# machine and commit, to bench/results/cpu-<date>-<shortcommit>.md.
#
# usage: bench/cpu_bench.sh        (after building build/e2gan)
# env:   E2GAN (default build/e2gan), THREADS (2), ITERS_256 (10), ITERS_512 (5)
#
# Without an e2gan binary it runs the two peers alone on a base written by
# tools/e2gan_torch.py, prints their table and writes no results file.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
E2GAN=${E2GAN:-$ROOT/build/e2gan}
PY=/usr/bin/python3
THREADS=${THREADS:-2}
ITERS_256=${ITERS_256:-10}
ITERS_512=${ITERS_512:-5}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ ! -x /usr/bin/time ]; then
  apt-get install -y time >/dev/null
fi
if [ ! -d "$ROOT/bench/node_modules/onnxruntime-node" ]; then
  npm install --prefix "$ROOT/bench" --ignore-scripts --no-package-lock >/dev/null
fi

load=$(cut -d ' ' -f 1-3 /proc/loadavg)  # other work on the machine skews the timings
have_e2gan=false
if [ -x "$E2GAN" ]; then
  have_e2gan=true
  "$E2GAN" init --ngf 32 --concepts a,b --seed 1 --out "$TMP/base.safetensors" >/dev/null
else
  echo "note: $E2GAN not found; running the PyTorch and onnxruntime peers only" >&2
  "$PY" -c "
import sys; sys.path.insert(0, '$ROOT/tools')
import torch, e2gan_torch as E
torch.manual_seed(1)
E.save_base(E.Generator(32, 2), '$TMP/base.safetensors', ['a', 'b'])"
fi

# run NAME CMD… : runs CMD under /usr/bin/time; sets MS, IPS (from the JSON on
# CMD's last stdout line) and RSS_MB.
run() {
  local name=$1
  shift
  if ! /usr/bin/time -f %M -o "$TMP/rss" "$@" >"$TMP/out" 2>"$TMP/err"; then
    echo "$name failed:" >&2
    cat "$TMP/err" >&2
    exit 1
  fi
  read -r MS IPS < <(tail -n 1 "$TMP/out" | "$PY" -c \
    'import json, sys; d = json.load(sys.stdin); print(d["ms_per_batch"], d["images_per_s"])')
  RSS_MB=$(( $(tail -n 1 "$TMP/rss") / 1024 ))
}

rows=()
for size in 256 512; do
  iters_var=ITERS_$size
  iters=${!iters_var}
  mkdir -p "$TMP/check$size"
  "$PY" "$ROOT/bench/export_onnx.py" --model "$TMP/base.safetensors" --size "$size" \
    --out "$TMP/g$size.onnx" --check-dir "$TMP/check$size"
  node "$ROOT/bench/ort_bench.mjs" --model "$TMP/g$size.onnx" --size "$size" --check "$TMP/check$size" >/dev/null

  run onnxruntime node "$ROOT/bench/ort_bench.mjs" --model "$TMP/g$size.onnx" --size "$size" \
    --batch 1 --iters "$iters" --threads "$THREADS"
  ort_ms=$MS
  ort_row="| onnxruntime-node | ${size}² | $MS | $IPS | $RSS_MB | 1.00 |"

  if $have_e2gan; then
    run e2gan "$E2GAN" bench --model "$TMP/base.safetensors" --size "$size" --batch 1 \
      --iters "$iters" --threads "$THREADS"
    rows+=("| e2gan (C) | ${size}² | $MS | $IPS | $RSS_MB | $("$PY" -c "print(f'{$MS / $ort_ms:.2f}')") |")
  fi
  run pytorch "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/base.safetensors" --size "$size" \
    --batch 1 --iters "$iters" --threads "$THREADS"
  rows+=("| PyTorch $("$PY" -c 'import torch; print(torch.__version__)') | ${size}² | $MS | $IPS | $RSS_MB | $("$PY" -c "print(f'{$MS / $ort_ms:.2f}')") |")
  rows+=("$ort_row")
done

mem_line=""
if $have_e2gan; then
  run e2gan-2048 "$E2GAN" bench --model "$TMP/base.safetensors" --size 2048 --batch 1 \
    --iters 1 --threads "$THREADS"
  mem_line="e2gan at 2048×2048, batch 1: peak RSS $RSS_MB MB ($MS ms per image)."
fi

commit=$(git -C "$ROOT" rev-parse --short HEAD)
dirty=""
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || dirty=" (work tree modified)"
ort_version=$(node -p "require('$ROOT/bench/node_modules/onnxruntime-node/package.json').version")
report=$(
  echo "# CPU benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- commit: $commit$dirty"
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); nproc $(nproc); load average at start: $load"
  echo "- model: ngf 32 (e2gan init --ngf 32 --concepts a,b --seed 1), batch 1, $THREADS threads"
  echo "- iterations (median of): 256² $ITERS_256, 512² $ITERS_512; onnxruntime-node $ort_version, node $(node --version)"
  echo "- peak RSS: /usr/bin/time -f %M of the whole process (for PyTorch this includes the interpreter and torch)"
  echo
  echo "| engine | size | ms / batch | images / s | peak RSS (MB) | time ÷ onnxruntime |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [ -n "$mem_line" ]; then
    echo
    echo "$mem_line"
  fi
)
echo "$report"
if $have_e2gan; then
  out="$ROOT/bench/results/cpu-$(date -u +%Y%m%d)-$commit.md"
  mkdir -p "$ROOT/bench/results"
  echo "$report" >"$out"
  echo "written to ${out#"$ROOT"/}"
fi
