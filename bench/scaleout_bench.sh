#!/usr/bin/env bash
# scaleout_bench.sh — throughput of e2gan-server replicas behind nginx on
# this machine: one replica asked directly, one behind nginx, and three
# behind nginx (with 1 and with nproc engine threads each), all on loopback
# (tests/scaleout/cluster.sh, the routes of docker/nginx/e2gan-locations.conf),
# driven by wrk with bench/load_edits.lua (POST /v1/edits, a SIZE×SIZE JPEG,
# one concept) at CLIENTS concurrent clients.  Replicas on one machine share
# its cores: three cannot beat one that already uses them all; the point is
# what nginx and the extra processes cost, and each replica's memory.
# Writes bench/results/scaleout-<date>-<commit>.md; the report records the
# load average before and after, and says when the machine was busy.
#
# usage: bench/scaleout_bench.sh   (after building build/; about 3 minutes)
# env:   DURATION (s per cell, 30), CLIENTS (8), SIZE (256), BUILD (build/),
#        OUT (report path)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
DURATION=${DURATION:-30}
CLIENTS=${CLIENTS:-8}
SIZE=${SIZE:-256}
NPROC=$(nproc)
CLUSTER_TMP=$(mktemp -d)
# shellcheck source=tests/scaleout/cluster.sh
. "$ROOT/tests/scaleout/cluster.sh"
trap 'cluster_stop; rm -rf "$CLUSTER_TMP"' EXIT
trap 'exit 143' INT TERM
command -v wrk >/dev/null || { echo "scaleout_bench.sh: wrk is missing (Debian package wrk)" >&2; exit 2; }
[ -x "$NGINX" ] || { echo "scaleout_bench.sh: nginx is missing (Debian package nginx)" >&2; exit 2; }

IMAGE=$CLUSTER_TMP/in.jpg
convert "$ROOT/tests/data/chelsea.png" -resize "${SIZE}x${SIZE}!" -quality 90 "$IMAGE"
ADAPTERS=$CLUSTER_TMP/adapters
mkdir -p "$ADAPTERS"
cp "$ROOT"/models/adapters/*.safetensors "$ADAPTERS/"
CONCEPT=cartoon
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)

# cluster N THREADS: N replicas with THREADS engine threads each, nginx in front
cluster() {
  local i names=() warmup
  for i in $(seq "$1"); do
    replica_start "r$i" --model "$ROOT/models/e2gan-s.safetensors" --adapters "$ADAPTERS" --threads "$2"
    warmup=()
    for _ in $(seq "$CLIENTS"); do # the engine sets up each batch size once
      curl -sf -o /dev/null --data-binary @"$IMAGE" -H 'Content-Type: image/jpeg' \
        "http://127.0.0.1:${replica_port[r$i]}/v1/edits?concept=$CONCEPT" &
      warmup+=($!)
    done
    wait "${warmup[@]}"
    names+=("r$i")
  done
  nginx_start r1 "${names[@]}"
}

# cell LABEL URL: one wrk run; appends a table row
rows=()
cell() {
  local label=$1 url=$2 r rss=0 pid
  wrk -t 1 -c "$CLIENTS" -d "${DURATION}s" --timeout 60s -s "$ROOT/bench/load_edits.lua" "$url" \
    -- "$IMAGE" image/jpeg "$CONCEPT" >"$CLUSTER_TMP/wrk.out"
  r=$(sed -n 's/^RESULT //p' "$CLUSTER_TMP/wrk.out")
  [ -n "$r" ] || { cat "$CLUSTER_TMP/wrk.out" >&2; exit 1; }
  for pid in "${replica_pid[@]}"; do
    rss=$((rss + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")))
  done
  read -r n errors rps p50 p99 _ compute _ _ _ _ batch <<<"$r"
  rows+=("| $label | $n | $errors | $rps | $p50 | $p99 | $batch | $compute | $((rss / 1024)) |")
  echo "${rows[-1]}" >&2
}

cluster 1 "$NPROC"
cell "1 replica × $NPROC threads, direct" "http://127.0.0.1:${replica_port[r1]}"
cell "1 replica × $NPROC threads, nginx" "http://127.0.0.1:$NGINX_PORT"
cluster_stop
cluster 3 1
cell "3 replicas × 1 thread, nginx" "http://127.0.0.1:$NGINX_PORT"
cluster_stop
cluster 3 "$NPROC"
cell "3 replicas × $NPROC threads, nginx" "http://127.0.0.1:$NGINX_PORT"
cluster_stop
load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)

busy=$(awk -v a="${load_start%% *}" 'BEGIN { print (a > 0.5 ? 1 : 0) }')
commit=$(git -C "$ROOT" rev-parse --short HEAD)
dirty=""
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || dirty=" (work tree modified)"
report=$(
  echo "# Scale-out benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  if [ "$busy" = 1 ]; then
    echo "**Measured under contention**: the load average was $load_start at the start"
    echo "($load_end at the end) on $NPROC cores — other work was running, so every number"
    echo "below is lower than this machine gives when quiet; compare the rows with each other."
    echo
  fi
  echo "- commit: $commit$dirty"
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); nproc $NPROC; load average $load_start at start, $load_end at end"
  echo "- replicas: e2gan-server (defaults: max_batch 8, batch_delay_us 2000) on 127.0.0.1, models/e2gan-s.safetensors; nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') (docker/nginx/e2gan-locations.conf), 1 worker process"
  echo "- load: $(wrk -v 2>&1 | head -n 1 | cut -d ' ' -f 1-2), 1 thread, $CLIENTS clients, closed loop, $DURATION s per row; POST /v1/edits, ${SIZE}×${SIZE} JPEG, concept $CONCEPT"
  echo
  echo "| setup | requests | errors | req/s | p50 ms | p99 ms | mean batch | engine call ms | RSS of the replicas, MiB |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "All replicas, nginx and wrk share the same $NPROC cores: replicas add no compute"
  echo "here, they divide it. RSS is the sum over the replicas after their row."
)
echo "$report"
out=${OUT:-$ROOT/bench/results/scaleout-$(date -u +%Y%m%d)-$commit.md}
mkdir -p "$(dirname "$out")"
echo "$report" >"$out"
echo "written to ${out#"$ROOT"/}"
