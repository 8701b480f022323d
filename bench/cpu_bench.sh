#!/usr/bin/env bash
# cpu_bench.sh — e2gan's C engine, fp32 and bf16, against its PyTorch (CPU)
# and onnxruntime-node (CPU) peers on the same weights: a base made by
# `e2gan init --ngf 32 --concepts a,b --seed 1`, 2 threads:
#   - batch 1 at 256² and 512²: e2gan bf16, e2gan fp32, onnxruntime fp32,
#     PyTorch fp32 (channels_last, its faster layout here) and PyTorch bf16 — both ways PyTorch runs bf16 on the CPU
#     (bf16 weights and activations in channels_last, and bf16 autocast over
#     fp32 channels_last weights; the faster one is compared), median ms per
#     batch and peak RSS (/usr/bin/time -f %M);
#   - batch 8 at 256²: images/s of e2gan bf16, e2gan fp32 and onnxruntime;
#   - the peak RSS of `e2gan bench --size 2048` in bf16 (goal: under 2 GB) and fp32;
#   - where e2gan's time goes at 256² (bench/onednn_breakdown.py: oneDNN's
#     exec times per primitive against the total, bf16 and fp32).
# The engines are timed in ROUNDS interleaved rounds (each round runs every
# engine once, the order rotated); a row is the best of its rounds (other work
# only ever adds time) and lists every round with its load.  Other
# work on the machine skews the timings: before every timed run the script
# waits until the 1-minute load average is below QUIET_LOAD (polling every
# 20 s, at most QUIET_WAIT s, then it measures anyway), and records the load
# each run started at.  Prints a markdown report and writes it, with the
# machine, ISA and commit, to bench/results/cpu-<date>-<shortcommit>.md.
#
# usage: bench/cpu_bench.sh        (after building build/e2gan)
# env:   E2GAN (default build/e2gan), THREADS (2), ITERS_256 (10), ITERS_512 (5),
#        ITERS_B8 (5), ROUNDS (3), QUIET_LOAD (1.2), QUIET_WAIT (600),
#        BIG (2048: the size of the memory run)
#
# Without an e2gan binary it runs the peers alone on a base written by
# tools/e2gan_torch.py, prints their table and writes no results file.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
E2GAN=${E2GAN:-$ROOT/build/e2gan}
PY=/usr/bin/python3
THREADS=${THREADS:-2}
ITERS_256=${ITERS_256:-10}
ITERS_512=${ITERS_512:-5}
ITERS_B8=${ITERS_B8:-5}
ROUNDS=${ROUNDS:-3}
QUIET_LOAD=${QUIET_LOAD:-1.2}
QUIET_WAIT=${QUIET_WAIT:-600}
BIG=${BIG:-2048}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ ! -x /usr/bin/time ]; then
  apt-get install -y time >/dev/null
fi
if [ ! -d "$ROOT/bench/node_modules/onnxruntime-node" ]; then
  npm install --prefix "$ROOT/bench" --ignore-scripts --no-package-lock >/dev/null
fi

load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
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

. "$ROOT/bench/quiet.sh"  # wait_quiet

# run KEY CMD… : waits for a quiet machine, runs CMD under /usr/bin/time; sets
# MS, IPS (from the JSON on CMD's last stdout line) and RSS_MB, and appends
# "KEY MS IPS RSS_MB LOAD" to $TMP/runs.
run() {
  local key=$1
  shift
  wait_quiet
  if ! /usr/bin/time -f %M -o "$TMP/rss" "$@" >"$TMP/out" 2>"$TMP/err"; then
    echo "$key failed:" >&2
    cat "$TMP/err" >&2
    exit 1
  fi
  read -r MS IPS < <(tail -n 1 "$TMP/out" | "$PY" -c \
    'import json, sys; d = json.load(sys.stdin); print(d["ms_per_batch"], d["images_per_s"])')
  RSS_MB=$(($(tail -n 1 "$TMP/rss") / 1024))
  echo "$key $MS $IPS $RSS_MB $LOAD" >>"$TMP/runs"
  echo "  $key: $MS ms, $RSS_MB MB, load $LOAD" >&2
}

# engine KEY SIZE BATCH ITERS: one timed run of the engine KEY.
engine() {
  local key=$1 size=$2 batch=$3 iters=$4
  local common=(--size "$size" --batch "$batch" --iters "$iters" --threads "$THREADS")
  case $key in
  e2gan-bf16 | e2gan-fp32)
    run "$key/$size/$batch" "$E2GAN" bench --model "$TMP/base.safetensors" "${common[@]}" --precision "${key#e2gan-}" ;;
  ort)
    run "$key/$size/$batch" node "$ROOT/bench/ort_bench.mjs" --model "$TMP/g$size.onnx" "${common[@]}" ;;
  torch-fp32)
    run "$key/$size/$batch" "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/base.safetensors" "${common[@]}" \
      --channels-last ;;
  torch-bf16)
    run "$key/$size/$batch" "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/base.safetensors" "${common[@]}" --bf16 ;;
  torch-autocast)
    run "$key/$size/$batch" "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/base.safetensors" "${common[@]}" --autocast ;;
  esac
}

# rounds SIZE BATCH ITERS ENGINE…: ROUNDS rounds of every engine, the order
# rotated by one each round.
rounds() {
  local size=$1 batch=$2 iters=$3
  shift 3
  local engines=("$@") n=$#
  for ((r = 0; r < ROUNDS; r++)); do
    echo "== ${size}², batch $batch, round $((r + 1)) of $ROUNDS" >&2
    for ((i = 0; i < n; i++)); do
      engine "${engines[$(((i + r) % n))]}" "$size" "$batch" "$iters"
    done
  done
}

touch "$TMP/runs"
batch1=(ort torch-fp32 torch-bf16 torch-autocast)
$have_e2gan && batch1=(e2gan-bf16 e2gan-fp32 "${batch1[@]}")
for size in 256 512; do
  iters_var=ITERS_$size
  mkdir -p "$TMP/check$size"
  "$PY" "$ROOT/bench/export_onnx.py" --model "$TMP/base.safetensors" --size "$size" \
    --out "$TMP/g$size.onnx" --check-dir "$TMP/check$size"
  node "$ROOT/bench/ort_bench.mjs" --model "$TMP/g$size.onnx" --size "$size" --check "$TMP/check$size" >/dev/null
  rounds "$size" 1 "${!iters_var}" "${batch1[@]}"
done

breakdown=""
if $have_e2gan; then
  rounds 256 8 "$ITERS_B8" e2gan-bf16 e2gan-fp32 ort
  for p in bf16 fp32; do
    run "e2gan-$p/big/1" "$E2GAN" bench --model "$TMP/base.safetensors" --size "$BIG" --batch 1 \
      --iters 1 --threads "$THREADS" --precision "$p"
  done
  wait_quiet
  breakdown_load=$LOAD
  breakdown=$("$PY" "$ROOT/bench/onednn_breakdown.py" --e2gan "$E2GAN" --model "$TMP/base.safetensors" \
    --size 256 --batch 1 --iters 3 --threads "$THREADS" --precision bf16 fp32)
fi

# The tables, from $TMP/runs (bench/cpu_bench_tables.py: best of the rounds).
tables=$("$PY" "$ROOT/bench/cpu_bench_tables.py" infer "$TMP/runs" \
  "$("$PY" -c 'import torch; print(torch.__version__)')" "$BIG")

commit=$(git -C "$ROOT" rev-parse --short HEAD)
dirty=""
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || dirty=" (work tree modified)"
ort_version=$(node -p "require('$ROOT/bench/node_modules/onnxruntime-node/package.json').version")
isa=$(grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')
report=$(
  echo "# CPU benchmark, fp32 and bf16, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- commit: $commit$dirty"
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); nproc $(nproc)"
  echo "- ISA (\`grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u\`): ${isa:-none}"
  if $have_e2gan; then
    echo "- \`e2gan devices\`: $("$E2GAN" devices | grep '^precision')"
  fi
  echo "- load average at start: $load_start, at the end: $(cut -d ' ' -f 1-3 /proc/loadavg); each timed run waited for a 1-minute load below $QUIET_LOAD (at most $QUIET_WAIT s, then measured anyway); each round's load is in the table"
  echo "- model: ngf 32 (e2gan init --ngf 32 --concepts a,b --seed 1), $THREADS threads; $ROUNDS interleaved rounds, each row the best of its rounds (each round: the median of its iterations)"
  echo "- iterations per run (median of): 256² $ITERS_256, 512² $ITERS_512, 256² batch 8 $ITERS_B8; onnxruntime-node $ort_version, node $(node --version)"
  echo "- PyTorch bf16 on the CPU goes through bench/torch_cpu_bf16.py (reflection pad and layer norm, which PyTorch 1.13 lacks in CPU bf16)"
  echo "- peak RSS: /usr/bin/time -f %M of the whole process (for PyTorch this includes the interpreter and torch), max over the rounds; PyTorch fp32 runs in channels_last"
  echo
  echo "$tables"
  if [ -n "$breakdown" ]; then
    echo
    echo "### Where e2gan's time goes (bench/onednn_breakdown.py, load $breakdown_load)"
    echo
    echo "$breakdown"
  fi
)
echo "$report"
if $have_e2gan; then
  out="$ROOT/bench/results/cpu-$(date -u +%Y%m%d)-$commit.md"
  mkdir -p "$ROOT/bench/results"
  echo "$report" >"$out"
  echo "written to ${out#"$ROOT"/}"
fi
