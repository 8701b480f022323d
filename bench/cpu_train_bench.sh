#!/usr/bin/env bash
# cpu_train_bench.sh — training steps per second on the CPU: e2gan's trainer in
# bf16 and fp32 beside PyTorch 1.13 (tools/e2gan_torch.py's generator,
# bench/torch_train_bench.py) in fp32 and under bf16 autocast, same model and
# step: ngf 32, batch 8, 128² crops, L1 only (--gan-weight 0, no D), Adam,
# THREADS threads; the whole generator, and a LoRA adapter (rank 4, e2gan
# finetune's default, on the crucial layers, plus the concept embedding) on a
# frozen base.
#
# e2gan trains on a small dataset made once by tools/make_dataset.py from the
# test photos (tests/data/*.png; 128² crops, concepts sepia and night) and
# kept in DATA; its steps/s are read from `--events` JSON lines (event
# "step", field steps_per_s, the rate since the first step): the rate over
# the steps after the first logged one (step 10, the warm-up) is
# (STEPS − 10) / (STEPS/rate_STEPS − 10/rate_10).  The e2gan step includes
# assembling the batch from the decoded dataset; PyTorch's reuses one random
# batch.  PyTorch: median of TORCH_ITERS steps after TORCH_WARMUP.  The LoRA
# peer needs peft; without it the table says so.
#
# Runs are interleaved: ROUNDS rounds of every configuration, a row the
# best of its rounds (other work only ever slows a run), every round listed;
# before every run the script waits until the 1-minute load average is
# below QUIET_LOAD (polling every 20 s, at most QUIET_WAIT s, then it
# measures anyway) and records the load.  Prints a markdown report
# and writes it to bench/results/cpu-train-<date>-<shortcommit>.md.
#
# usage: bench/cpu_train_bench.sh        (after building build/e2gan)
# env:   E2GAN (build/e2gan), THREADS (2), STEPS (30), TORCH_ITERS (5),
#        TORCH_WARMUP (2), ROUNDS (3), QUIET_LOAD (1.2), QUIET_WAIT (600),
#        DATA (build/train-bench-data)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
E2GAN=${E2GAN:-$ROOT/build/e2gan}
PY=/usr/bin/python3
THREADS=${THREADS:-2}
STEPS=${STEPS:-30}
TORCH_ITERS=${TORCH_ITERS:-5}
TORCH_WARMUP=${TORCH_WARMUP:-2}
ROUNDS=${ROUNDS:-3}
QUIET_LOAD=${QUIET_LOAD:-1.2}
QUIET_WAIT=${QUIET_WAIT:-600}
DATA=${DATA:-$ROOT/build/train-bench-data}
RANK=4
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ -x "$E2GAN" ] || { echo "no $E2GAN: build it first" >&2; exit 1; }
[ "$STEPS" -gt 10 ] || { echo "STEPS must be above 10 (the first 10 are the warm-up)" >&2; exit 1; }
if [ ! -f "$DATA/manifest.json" ]; then
  echo "== making the dataset in $DATA" >&2
  mkdir -p "$TMP/photos"
  cp "$ROOT"/tests/data/*.png "$TMP/photos/"
  "$PY" "$ROOT/tools/make_dataset.py" --photos "$TMP/photos" --photos-from none --out "$DATA" --crop 128 \
    --train-crops 256 --val-crops-per-photo 2 --concepts sepia,night --jobs "$THREADS" >"$TMP/dataset.log" 2>&1 ||
    { cat "$TMP/dataset.log" >&2; exit 1; }
fi
"$E2GAN" init --ngf 32 --concepts a,b --seed 1 --out "$TMP/base.safetensors" >/dev/null
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
if "$PY" -c 'import peft' 2>/dev/null; then have_peft=true; else have_peft=false; fi

. "$ROOT/bench/quiet.sh"  # wait_quiet

# e2gan_run KIND PRECISION: one e2gan training run (KIND full or lora);
# appends "e2gan-KIND-PRECISION STEPS_PER_S LOAD" to $TMP/runs.
e2gan_run() {
  local kind=$1 p=$2 cmd
  local common=(--data "$DATA" --batch 8 --steps "$STEPS" --gan-weight 0 --eval-every 0 --eval-pairs 2
    --threads "$THREADS" --precision "$p" --events --quiet --out "$TMP/out.safetensors")
  if [ "$kind" = full ]; then
    cmd=("$E2GAN" train --ngf 32 "${common[@]}")
  else
    cmd=("$E2GAN" finetune --model "$TMP/base.safetensors" --concept sepia --rank "$RANK" "${common[@]}")
  fi
  wait_quiet
  if ! "${cmd[@]}" >"$TMP/events" 2>"$TMP/err"; then
    echo "e2gan $kind $p failed:" >&2
    cat "$TMP/err" >&2
    exit 1
  fi
  sps=$("$PY" - "$TMP/events" "$STEPS" <<'EOF'
import json, sys
rate = {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "step":
        rate[e["step"]] = e["steps_per_s"]
n = int(sys.argv[2])
print((n - 10) / (n / rate[n] - 10 / rate[10]))
EOF
  )
  echo "e2gan-$kind-$p $sps $LOAD" >>"$TMP/runs"
  echo "  e2gan $kind $p: $sps steps/s, load $LOAD" >&2
}

# torch_run KIND PRECISION: one PyTorch run; appends "torch-KIND-PRECISION
# STEPS_PER_S LOAD" to $TMP/runs.
torch_run() {
  local kind=$1 p=$2 args=()
  [ "$kind" = lora ] && args+=(--lora "$RANK")
  [ "$p" = bf16 ] && args+=(--bf16)
  wait_quiet
  if ! "$PY" "$ROOT/bench/torch_train_bench.py" --device cpu --threads "$THREADS" --ngf 32 --size 128 --batch 8 \
    --iters "$TORCH_ITERS" --warmup "$TORCH_WARMUP" "${args[@]}" >"$TMP/out" 2>"$TMP/err"; then
    echo "PyTorch $kind $p failed:" >&2
    cat "$TMP/err" >&2
    exit 1
  fi
  sps=$(tail -n 1 "$TMP/out" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["steps_per_s"])')
  echo "torch-$kind-$p $sps $LOAD" >>"$TMP/runs"
  echo "  PyTorch $kind $p: $sps steps/s, load $LOAD" >&2
}

configs=("e2gan full bf16" "e2gan full fp32" "e2gan lora bf16" "e2gan lora fp32" "torch full fp32" "torch full bf16")
$have_peft && configs+=("torch lora fp32" "torch lora bf16")
touch "$TMP/runs"
n=${#configs[@]}
for ((r = 0; r < ROUNDS; r++)); do
  echo "== round $((r + 1)) of $ROUNDS" >&2
  for ((i = 0; i < n; i++)); do
    read -r who kind p <<<"${configs[$(((i + r) % n))]}"
    "${who}_run" "$kind" "$p"
  done
done

tables=$("$PY" "$ROOT/bench/cpu_bench_tables.py" train "$TMP/runs" \
  "$("$PY" -c 'import torch; print(torch.__version__)')" "$have_peft")

commit=$(git -C "$ROOT" rev-parse --short HEAD)
dirty=""
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || dirty=" (work tree modified)"
isa=$(grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')
report=$(
  echo "# CPU training step benchmark, fp32 and bf16, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- commit: $commit$dirty"
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); nproc $(nproc)"
  echo "- ISA (\`grep -o 'amx[a-z_0-9]*\|avx512_bf16' /proc/cpuinfo | sort -u\`): ${isa:-none}"
  echo "- \`e2gan devices\`: $("$E2GAN" devices | grep '^precision')"
  echo "- load average at start: $load_start, at the end: $(cut -d ' ' -f 1-3 /proc/loadavg); each run waited for a 1-minute load below $QUIET_LOAD (at most $QUIET_WAIT s, then measured anyway); each round's load is in the table"
  echo "- step: ngf 32, batch 8, 128² crops, 100·L1 only (no D), Adam, $THREADS threads; LoRA rank $RANK on the crucial layers + the concept embedding, base frozen"
  echo "- e2gan: \`e2gan train\` / \`e2gan finetune\` on a dataset of the test photos (make_dataset.py, 256 train crops × 2 concepts), $STEPS steps, rate over steps 11–$STEPS from \`--events\`"
  echo "- PyTorch: bench/torch_train_bench.py --device cpu, channels_last, median of $TORCH_ITERS steps after $TORCH_WARMUP; bf16 = torch.autocast('cpu', dtype=torch.bfloat16) with fp32 weights and Adam (bench/torch_cpu_bf16.py for reflection pad and layer norm)"
  echo "- $ROUNDS interleaved rounds, each row the best of its rounds"
  echo
  echo "$tables"
)
echo "$report"
out="$ROOT/bench/results/cpu-train-$(date -u +%Y%m%d)-$commit.md"
mkdir -p "$ROOT/bench/results"
echo "$report" >"$out"
echo "written to ${out#"$ROOT"/}"
