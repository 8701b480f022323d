#!/bin/sh
# gpu-train-check.sh — the GPU trainer's proof and benchmark, one run on the
# GPU machine (docs/cuda.md#the-gpu-machine), about 4–5 minutes:
#   1. grads: one step's gradient of every parameter tensor (full G) and of
#      every LoRA A/B and the concept embedding against the CPU engine on
#      random weights and inputs (ngf 16 at 32², ngf 32 at 64²): cosine
#      ≥ 0.99 and max |gpu − cpu| ≤ 0.1·max |cpu| per tensor;
#   2. curve: `e2gan finetune` of one concept, same seed and data, 60 steps
#      on --device cpu and --device cuda: the logged L1 within 5% of the
#      CPU's at every logged step;
#   3. speed: LoRA r 8 step at ngf 64, 256², batch 16 (goal ≤ 20 ms) and
#      full-G throughput at ngf 32, 128², batch 32, beside PyTorch eager
#      (bench/torch_train_bench.py: bf16 autocast, channels_last, peft) in
#      the same run — PyTorch both with and without the PatchGAN D, since
#      the GPU trainer has no D yet;
#   4. e2e: fine-tuning the concept with rank search and data reduction on
#      the GPU, wall time (goal ≤ 30 s) and validation PSNR against the
#      CPU-trained shipped adapter's (goal within 0.5 dB);
# then writes bench/results/gpu-train-<date>-<commit>.md and prints it.
# Exits 1 if a check fails.
#
# Prepare on a CPU machine (the GPU machine cannot reach the network):
#   bench/gpu-check.sh prepare          # build-gpu/: binaries + missing .so
#   python3 tools/make_dataset.py --concepts cartoon --out build-gpu/dataset
#   then run with build-gpu carried (64 MiB limit: one concept fits).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=${E2G_GPU_DIST:-$ROOT/build-gpu}
DATA=${E2G_TRAIN_DATA:-$DIST/dataset}
CONCEPT=${E2G_TRAIN_CONCEPT:-cartoon}
BASE=$ROOT/models/e2gan-s.safetensors
TCHECK=$DIST/e2gan-gpu-train-check
E2GAN=$DIST/e2gan
OUT=$(mktemp -d /tmp/e2g_gpu_train_XXXXXX)
PY=${E2G_PYTHON:-python3}
export OMP_WAIT_POLICY=passive
fail=0
note() { echo "== $*"; }
bad() { echo "FAIL: $*"; fail=1; }

[ -x "$TCHECK" ] || { echo "no $TCHECK: run bench/gpu-check.sh prepare on a CPU machine and carry build-gpu"; exit 1; }
"$DIST/e2gan-gpu-check" probe >"$OUT/probe.txt" 2>&1; rc=$?
[ $rc -eq 3 ] && { cat "$OUT/probe.txt"; echo "FAIL: no CUDA device"; exit 1; }

note "1. gradients against the CPU engine"
"$TCHECK" grads 16 32 2 >"$OUT/grads1.txt" 2>&1 || bad "gradients (ngf 16, 32², batch 2)"
"$TCHECK" grads 32 64 4 >"$OUT/grads2.txt" 2>&1 || bad "gradients (ngf 32, 64², batch 4)"
grep -h "FAIL" "$OUT/grads1.txt" "$OUT/grads2.txt"
grads_worst=$(cat "$OUT/grads1.txt" "$OUT/grads2.txt" | awk '$1=="RESULT" && $4=="cos" { if (min=="" || $5<min) { min=$5 }; if ($7>max) max=$7 } END { printf "min cos %s, max rel %s", min, max }')
echo "$grads_worst"

curve="skipped: no dataset at $DATA"
if [ -d "$DATA" ]; then
    note "2. loss curve, CPU vs GPU"
    for dev in cpu cuda; do
        timeout 240 "$E2GAN" finetune --model "$BASE" --data "$DATA" --concept "$CONCEPT" --rank 8 --steps 60 \
            --batch 8 --lr 2e-3 --gan-weight 0 --eval-every 0 --eval-pairs 16 --seed 3 --device $dev --quiet \
            --report "$OUT/curve-$dev" --out "$OUT/curve-$dev.safetensors" 2>"$OUT/curve-$dev.log" \
            || bad "finetune --device $dev: $(tail -1 "$OUT/curve-$dev.log")"
    done
    curve=$($PY - "$OUT" <<'PYEOF'
import json, sys
o = sys.argv[1]
c = json.load(open(f"{o}/curve-cpu/report.json"))["history"]["log"]
g = json.load(open(f"{o}/curve-cuda/report.json"))["history"]["log"]
worst = max(abs(b[1] - a[1]) / abs(a[1]) for a, b in zip(c, g))
print(f"{worst:.4f} " + " ".join(f"{a[0]}:{a[1]:.4f}/{b[1]:.4f}" for a, b in zip(c, g)))
PYEOF
) || bad "curve comparison"
    echo "L1 cpu/gpu: $curve"
    awk -v w="${curve%% *}" 'BEGIN { exit !(w <= 0.05) }' || bad "GPU loss curve off the CPU's by ${curve%% *} (> 5%)"
fi

note "3. speed beside PyTorch"
"$TCHECK" bench lora 64 256 16 8 >"$OUT/bench.txt" 2>&1 || bad "LoRA step benchmark"
"$TCHECK" bench full 32 128 32 >>"$OUT/bench.txt" 2>&1 || bad "full-G benchmark"
cat "$OUT/bench.txt"
val() { awk -v k="$1" '$1=="RESULT" && $2==k { print $3 }' "$OUT/bench.txt"; }
lora_ms=$(val train.lora.ngf64.256.b16.ms_per_step)
full_sps=$(val train.full.ngf32.128.b32.samples_per_s)
torch() { timeout 120 $PY "$ROOT/bench/torch_train_bench.py" "$@" 2>"$OUT/torch.err" | tail -1; }
pt_lora=$(torch --ngf 64 --size 256 --batch 16 --lora 8)
pt_lora_gan=$(torch --ngf 64 --size 256 --batch 16 --lora 8 --gan)
pt_full=$(torch --ngf 32 --size 128 --batch 32)
pt_full_gan=$(torch --ngf 32 --size 128 --batch 32 --gan)
echo "pytorch: lora $pt_lora | lora+D $pt_lora_gan | full $pt_full | full+D $pt_full_gan"
[ -n "$lora_ms" ] && awk -v m="$lora_ms" 'BEGIN { exit !(m <= 20) }' || echo "goal missed: LoRA step ${lora_ms:-?} ms > 20 ms"

e2e="skipped: no dataset at $DATA"
if [ -d "$DATA" ]; then
    note "4. end to end: $CONCEPT, rank search + data reduction, on the GPU"
    t0=$(date +%s.%N)
    timeout 300 "$E2GAN" finetune --model "$BASE" --data "$DATA" --concept "$CONCEPT" --rank-search --max-rank 8 \
        --keep-fraction 0.5 --steps 500 --batch 8 --lr 2e-3 --gan-weight 0 --eval-pairs 32 --device cuda --quiet \
        --report "$OUT/e2e" --out "$OUT/e2e.safetensors" 2>"$OUT/e2e.log" || bad "e2e finetune: $(tail -1 "$OUT/e2e.log")"
    t1=$(date +%s.%N)
    e2e=$($PY - "$OUT" "$ROOT/models/adapters/$CONCEPT.safetensors" "$t0" "$t1" <<'PYEOF'
import json, struct, sys
o, ref, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
gpu = json.load(open(f"{o}/e2e/report.json"))["final"]["mean_psnr"]
with open(ref, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
rep = json.loads(meta.get("training_report", "{}"))
cpu = (rep.get("final") or {}).get("mean_psnr")
print(f"{t1 - t0:.1f} {gpu:.2f} {cpu if cpu is None else round(cpu, 2)}")
PYEOF
) || bad "e2e report"
    echo "wall s, GPU PSNR, CPU adapter PSNR: $e2e"
fi

commit=$(cat "$DIST/commit" 2>/dev/null || git -C "$ROOT" rev-parse --short HEAD)
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
day=$(date +%Y%m%d)
res="$ROOT/bench/results/gpu-train-$day-$commit.md"
mkdir -p "$ROOT/bench/results"
cat >"$res" <<MD
# GPU training check — $card, $(date -u +%Y-%m-%dT%H:%MZ), commit $commit

bench/gpu-train-check.sh; PyTorch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null) eager bf16 in the same run.

| check | result | goal |
|---|---|---|
| gradients vs CPU (every tensor, full G and LoRA) | $grads_worst | cos ≥ 0.99, rel ≤ 0.1 |
| L1 curve GPU vs CPU, 60 steps (worst rel. diff, step:cpu/gpu) | $curve | ≤ 0.05 |
| LoRA r8 step, ngf 64, 256², b16, G only: e2gan | ${lora_ms:-?} ms | ≤ 20 ms |
| same, PyTorch + peft, G only / G + D | $pt_lora / $pt_lora_gan | H100 (docs/cuda.md): 45.8 ms with D |
| full G, ngf 32, 128², b32: e2gan samples/s (G only) | ${full_sps:-?} | |
| same, PyTorch, G only / G + D | $pt_full / $pt_full_gan | ≈1240 samples/s with D |
| e2e $CONCEPT, rank search + keep 0.5, 500 steps: wall s, PSNR GPU, PSNR CPU adapter | $e2e | ≤ 30 s, within 0.5 dB |

Failures: $fail.  Raw outputs were in $OUT on the GPU machine.
MD
echo
cat "$res"
exit $fail
