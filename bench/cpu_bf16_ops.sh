#!/usr/bin/env bash
# cpu_bf16_ops.sh — fp32 against bf16 compute (engine/precision.h) per layer
# shape of the generator at ngf 32, 256², batch 1, plus the f32 → bf16
# conversion and the whole generator: runs build/e2gan-bf16-bench
# (bench/cpu_bf16_ops.c), then once more under ONEDNN_VERBOSE to list the
# oneDNN implementation each primitive got.  Prints the report and writes
# it, with the machine, to bench/results/bf16-ops-<date>-<shortcommit>.md.
#
# usage: bench/cpu_bf16_ops.sh        (after building build/e2gan-bf16-bench)
# env:   BENCH (default build/e2gan-bf16-bench), THREADS (2), REPS (20)
#
# Timings are the best of REPS rounds that interleave every op and both
# precisions, so load from other processes hits both alike; the load
# average is recorded.  Exits 3 where bf16 is unavailable.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/e2gan-bf16-bench}
THREADS=${THREADS:-2}
REPS=${REPS:-20}
if [ ! -x "$BENCH" ]; then
  echo "error: $BENCH not found (cmake --build build --target e2gan-bf16-bench)" >&2
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
OMP_NUM_THREADS=$THREADS "$BENCH" --reps "$REPS" >"$TMP/table.md"
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)
# One round of the per-layer ops under ONEDNN_VERBOSE: the implementation
# names, one row per (primitive, pass, data types, implementation).
OMP_NUM_THREADS=$THREADS ONEDNN_VERBOSE=1 "$BENCH" --reps 1 --only "" 2>/dev/null |
  awk -F, '$1 == "onednn_verbose" && $2 == "exec" && $4 != "reorder" {
      n = split($7, md, " "); types = "";
      for (i = 1; i <= n; i++) { split(md[i], f, ":"); if (f[1] !~ /undef/) types = types (types ? " " : "") f[1] }
      key = "| " $4 " | " $6 " | " types " | `" $5 "` |";
      if (!(key in shapes)) order[++k] = key;
      if (index(shapes[key], $10) == 0) { shapes[key] = shapes[key] (shapes[key] ? "<br>" : "") $10; count[key]++ }
    }
    END { for (i = 1; i <= k; i++) print order[i] " " count[order[i]] " |" }' >"$TMP/impls.md"

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (uncommitted changes)" || true)
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -m1 -o -w -E 'avx512f|avx512bw|avx512_vnni|avx512_bf16|amx_bf16|amx_tile|amx_int8|avx512_fp16' /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
[ -n "$flags" ] || flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512bw|avx512_vnni|avx512_bf16|amx_bf16|amx_tile)$' | tr '\n' ' ')
dnnl=$(dpkg-query -W -f '${Version}' libdnnl2 2>/dev/null || echo unknown)
date=$(date +%Y%m%d)
out="$ROOT/bench/results/bf16-ops-$date-$commit.md"
mkdir -p "$ROOT/bench/results"
{
  echo "# bf16 against fp32 on the CPU, per layer — $date, commit $commit$dirty"
  echo
  echo "- machine: $model, $(nproc) CPUs visible; ISA flags: $flags"
  echo "- oneDNN $dnnl (Debian libdnnl2), OMP_NUM_THREADS=$THREADS; load average before $load_before, after $load_after"
  echo "- bf16 runs bf16 source/weights/diff_dst with f32 accumulation and f32 outputs (engine/precision.h);"
  echo "  GFLOP/s = 2·MACs / time (upsample convs counted as upsample + 3×3); backward = input + weight gradients."
  echo "  Forward layers with cin < 4 (enc1) run fp32 by design (conv.h), so enc1's forward columns compare fp32 with fp32."
  echo
  cat "$TMP/table.md"
  echo
  echo "### oneDNN implementations (ONEDNN_VERBOSE, one round of the per-layer ops)"
  echo
  echo "| primitive | pass | data types (src wei bia dst; in backward passes the gradients computed are f32: diff_src, diff_weights) | implementation | shapes |"
  echo "|---|---|---|---|---:|"
  cat "$TMP/impls.md"
} >"$out"
cat "$out"
echo
echo "written: ${out#"$ROOT"/}"
