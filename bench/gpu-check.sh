#!/bin/sh
# gpu-check.sh — the CUDA engine's proof and benchmark, in one run on the GPU
# machine (docs/cuda.md#the-gpu-machine), about 3–6 minutes:
#   1. probe: a device is there and the engine attaches;
#   2. ops: every fused kernel against the CPU engine's op on random inputs
#      (bf16 tolerance: max error ≤ 2e-2 of the reference's largest value);
#   3. model: whole images vs the fp32 CPU engine, PSNR ≥ 40 dB, for the
#      shipped base and each shipped adapter, merged and unmerged, a mixed
#      batch (base, each adapter, a blend) and a batch of one adapter merged;
#   4. bench: ngf 64 at 256² — batch 1, batch 32, 32 requests over 32
#      adapters, adapter switches, TFLOP/s — beside PyTorch eager bf16
#      channels_last on the same weights (torch.compile from docs/cuda.md's table);
# then writes bench/results/gpu-<date>-<commit>.md and prints its table last.
# Exits 1 if any check fails.
#
# The GPU machine lacks Check, libmicrohttpd, libturbojpeg and oneDNN, so the
# binaries are built here first and carried:
#   bench/gpu-check.sh prepare     # on a CPU machine: fills build-gpu/
#   bench/gpu-check.sh             # on the GPU machine (carry build-gpu)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=${E2G_GPU_DIST:-$ROOT/build-gpu}

if [ "${1:-}" = prepare ]; then
    set -e
    OBJ=$ROOT/build-gpu-obj
    cmake -S "$ROOT" -B "$OBJ" -DE2G_WERROR=ON -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$OBJ" --target e2gan-gpu-check e2gan-gpu-train-check e2gan -j"$(nproc)"
    rm -rf "$DIST" && mkdir -p "$DIST/lib"
    cp "$OBJ/e2gan-gpu-check" "$OBJ/e2gan-gpu-train-check" "$OBJ/e2gan" "$DIST/"
    # the shared libraries the GPU machine does not have (docs/cuda.md)
    for lib in libdnnl.so.2 libturbojpeg.so.0; do
        path=$(ldd "$OBJ/e2gan-gpu-check" | awk -v l="$lib" '$1 == l { print $3 }')
        [ -n "$path" ] || { echo "gpu-check prepare: $lib not linked?" >&2; exit 1; }
        cp -L "$path" "$DIST/lib/"
    done
    git -C "$ROOT" rev-parse --short HEAD >"$DIST/commit"
    du -sh "$DIST"
    echo "prepared $DIST: run bench/gpu-check.sh on the GPU machine with build-gpu carried"
    exit 0
fi

CHECK=$DIST/e2gan-gpu-check
if [ ! -x "$CHECK" ]; then
    echo "gpu-check: $CHECK missing: run 'bench/gpu-check.sh prepare' on a build machine and carry build-gpu" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$DIST/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export E2GAN_DEVICE=cuda
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/log
failed=0

# step NAME TIMEOUT CMD...: runs, keeps stdout in $TMP/NAME, fails loudly.
step() {
    name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" >"$TMP/$name" 2>&1
    rc=$?
    cat "$TMP/$name"
    if [ $rc -ne 0 ]; then
        echo "!! $name FAILED (exit $rc)"
        failed=1
    fi
    return $rc
}

card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || cat "$DIST/commit")
built=$(cat "$DIST/commit" 2>/dev/null || echo unknown)
echo "card: ${card:-unknown}; commit $commit (binaries built at $built)"

step probe 60 "$CHECK" probe || { echo "no usable GPU: stopping"; exit 1; }
step ops 120 "$CHECK" ops
step model 180 "$CHECK" model "$ROOT/models/e2gan-s.safetensors" "$ROOT/tests/data/chelsea.png" \
    "$ROOT"/models/adapters/*.safetensors
step init 60 "$DIST/e2gan" init --ngf 64 --concepts a,b --seed 1 --out "$TMP/ngf64.safetensors"
step bench 240 "$CHECK" bench "$TMP/ngf64.safetensors"
PY=${PYTHON:-python3}
step torch_b1 120 "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/ngf64.safetensors" --size 256 --batch 1 \
    --device cuda --bf16 --iters 50 --warmup 5
step torch_b32 120 "$PY" "$ROOT/bench/torch_bench.py" --model "$TMP/ngf64.safetensors" --size 256 --batch 32 \
    --device cuda --bf16 --iters 20 --warmup 3

# ---- the table ----------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/gpu-$(date +%Y%m%d)-$commit.md
python3 - "$TMP" "$OUT" "${card:-unknown}" "$commit" "$failed" <<'EOF'
import json, os, sys
tmp, out, card, commit, failed = sys.argv[1:6]
def results(name):
    r = {}
    path = os.path.join(tmp, name)
    for line in open(path) if os.path.exists(path) else []:
        if line.startswith("RESULT "):
            key, value = line[7:].rsplit(" ", 1)
            r[key] = float(value)
    return r
def torch_ms(name):
    path = os.path.join(tmp, name)
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])["ms_per_batch"]
    except Exception:
        return None
ops, model, bench = results("ops"), results("model"), results("bench")
t1, t32 = torch_ms("torch_b1"), torch_ms("torch_b32")
def fmt(v, spec="%.3f"):
    return spec % v if v is not None else "n/a"
def goal(v, limit):
    return "n/a" if v is None else ("met" if v <= limit else "MISSED")
g = bench.get
rows = [
    ("ngf 64, 256², batch 1 (ms)", fmt(g("ms_b1")), fmt(t1), "1.27 / 0.558", "≤ 0.40: " + goal(g("ms_b1"), 0.40)),
    ("ngf 64, 256², batch 32 (ms)", fmt(g("ms_b32")), fmt(t32), "19.5 / 19.2", "≤ 9.8: " + goal(g("ms_b32"), 9.8)),
    ("batch 32, one adapter merged (ms)", fmt(g("ms_b32_one_adapter_merged")), "", "", ""),
    ("batch 32, one adapter unmerged (ms)", fmt(g("ms_b32_one_adapter_unmerged")), "", "", ""),
    ("batch 32 over 32 adapters (ms)", fmt(g("ms_b32_32_adapters")), "", "",
     "≤ 1.15× one merged: %s (%s×)" % (goal(g("ratio_32_adapters_vs_one_merged"), 1.15),
                                       fmt(g("ratio_32_adapters_vs_one_merged"), "%.2f"))),
    ("adapter switch, cold upload + merge (µs)", fmt(g("us_switch_cold"), "%.1f"), "", "peft hot-swap 3800",
     "≤ 50: " + goal(g("us_switch_cold"), 50)),
    ("adapter switch, cached (µs)", fmt(g("us_switch_cached"), "%.1f"), "", "", ""),
    ("TFLOP/s batch 32 (peak %s)" % fmt(g("peak_tflops"), "%.0f"), fmt(g("tflops_b32"), "%.1f"), "", "", ""),
]
worst_psnr = min(model.values()) if model else None
worst_op = max(ops.values()) if ops else None
lines = [
    "# GPU check and benchmark", "",
    "card: %s  " % card, "commit: %s  " % commit,
    "checks: %s" % ("all passed" if failed == "0" else "SOME FAILED (see the run's log)"), "",
    "worst fused-op error (max |err| / max |ref|): %s; worst whole-image PSNR vs fp32 CPU: %s dB" %
    (fmt(worst_op, "%.2e"), fmt(worst_psnr, "%.1f")), "",
    "| measure | e2gan CUDA | PyTorch eager bf16 (same run) | torch.compile / +graph (docs/cuda.md) | goal |",
    "|---|---|---|---|---|",
] + ["| %s | %s | %s | %s | %s |" % r for r in rows]
text = "\n".join(lines) + "\n"
with open(out, "w") as f:
    f.write(text)
print("\n" + text)
print("written to", out)
EOF
if [ $failed -ne 0 ]; then
    echo "gpu-check: SOME CHECKS FAILED"
    exit 1
fi
echo "gpu-check: all checks passed"
