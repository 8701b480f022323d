#!/usr/bin/env bash
# load_bench.sh — e2gan-server under load: starts the real server on a free
# loopback port with the shipped model and adapters and drives POST
# /v1/edits with wrk (bench/load_edits.lua) at 1, 8 and 32 concurrent
# clients, once with a single concept and once with 8 concepts mixed
# (adapters and base concepts, round robin), on a 256×256 JPEG.  Reports
# throughput, client p50/p99 latency and the server's own timings, and checks
# the two goals: mixed throughput within 10% of single, and server overhead
# (HTTP + codec) at 1 client <= 15% of engine compute.  Prints a markdown
# report and writes it, with the machine and commit, to
# bench/results/load-<date>-<shortcommit>.md (-quick.md in QUICK mode).
#
# usage: bench/load_bench.sh          (after building build/; about 4 minutes)
#        QUICK=1 bench/load_bench.sh  (5 s per cell; about 1 minute)
# env:   E2GAN_SERVER (build/e2gan-server), E2GAN (build/e2gan), MODEL
#        (models/e2gan-s.safetensors), ADAPTERS (models/adapters), DURATION
#        (seconds per cell: 30, QUICK 5), CLIENTS ("1 8 32"), THREADS (engine
#        threads: nproc), SERVER_ARGS (extra server flags), OUT (report path)
#
# The client shares the machine with the server, and anything else running
# skews the numbers: the report records the load average at the start, and
# only a run on an otherwise quiet machine should be kept.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=${E2GAN_SERVER:-$ROOT/build/e2gan-server}
E2GAN=${E2GAN:-$ROOT/build/e2gan}
MODEL=${MODEL:-$ROOT/models/e2gan-s.safetensors}
ADAPTERS=${ADAPTERS:-$ROOT/models/adapters}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DURATION=${DURATION:-5}; else DURATION=${DURATION:-30}; fi
CLIENTS=${CLIENTS:-1 8 32}
THREADS=${THREADS:-$(nproc)}
SERVER_ARGS=${SERVER_ARGS:-}
SIZE=256
MIXED=8
PY=/usr/bin/python3
TMP=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

for bin in "$SERVER" "$E2GAN"; do
  [ -x "$bin" ] || { echo "load_bench.sh: $bin is missing; build first" >&2; exit 2; }
done
if ! command -v wrk >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq wrk >/dev/null
fi

load=$(cut -d ' ' -f 1-3 /proc/loadavg)
if awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  echo "note: load average $load: the machine is busy and the numbers will be too slow" >&2
fi

# The input: the test photo as a 256×256 JPEG (quality 90, ImageMagick).
IMAGE=$TMP/in.jpg
convert "$ROOT/tests/data/chelsea.png" -resize "${SIZE}x${SIZE}!" -quality 90 "$IMAGE"

# Engine time alone, before the server takes the cores.
engine_ms=$("$E2GAN" bench --model "$MODEL" --size "$SIZE" --batch 1 --threads "$THREADS" \
  --iters "$([ "$QUICK" = 1 ] && echo 5 || echo 20)" | tail -n 1 |
  "$PY" -c 'import json, sys; print("%.1f" % json.load(sys.stdin)["ms_per_batch"])')

# shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
"$SERVER" --model "$MODEL" --adapters "$ADAPTERS" --listen 127.0.0.1:0 --threads "$THREADS" \
  --static-dir "$ROOT/static" --openapi "$ROOT/openapi.yaml" $SERVER_ARGS 2>"$TMP/server.log" &
server_pid=$!
port=
for _ in $(seq 200); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/server.log" | head -n 1)
  [ -n "$port" ] && curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "load_bench.sh: the server did not become ready" >&2; exit 1; }
URL=http://127.0.0.1:$port

# Concepts from GET /v1/concepts: the single one is the first base concept;
# the mixed ones are the adapters, then base concepts, MIXED in all.
{ read -r single; read -r -a mixed; } < <(curl -sf "$URL/v1/concepts" | "$PY" -c "
import json, sys
cs = json.load(sys.stdin)['concepts']
names = lambda kind: [c['name'] for c in cs if c['kind'] == kind]
print(names('base')[0])
print(' '.join((names('adapter') + names('base'))[:$MIXED]))")

# Warm up: every concept once (adapters load into the cache on first use).
for c in "${mixed[@]}"; do
  curl -sf -o /dev/null --data-binary @"$IMAGE" -H 'Content-Type: image/jpeg' "$URL/v1/edits?concept=$c"
done

# Waits until the server has finished the edits of clients wrk left behind
# at the end of a run (in flight: just the /metrics request itself).
drain() {
  for _ in $(seq 600); do
    curl -sf "$URL/metrics" | grep -q '^e2gan_requests_in_flight 1$' && return
    sleep 0.2
  done
  echo "load_bench.sh: the server did not drain" >&2
  exit 1
}

# cell CLIENTS CONCEPT… : one wrk run; sets R (the RESULT fields, see load_edits.lua).
cell() {
  local clients=$1
  shift
  drain
  wrk -t 1 -c "$clients" -d "${DURATION}s" --timeout 60s -s "$ROOT/bench/load_edits.lua" "$URL" \
    -- "$IMAGE" image/jpeg "$@" >"$TMP/wrk.out"
  R=$(sed -n 's/^RESULT //p' "$TMP/wrk.out")
  [ -n "$R" ] || { cat "$TMP/wrk.out" >&2; exit 1; }
}

rows=()
declare -A rps mean compute queue decode encode total
for mode in single mixed; do
  for clients in $CLIENTS; do
    if [ "$mode" = single ]; then cell "$clients" "$single"; else cell "$clients" "${mixed[@]}"; fi
    read -r n errors r q50 q99 avg comp wait dec enc tot batch <<<"$R"
    key=$mode/$clients
    rps[$key]=$r mean[$key]=$avg compute[$key]=$comp queue[$key]=$wait decode[$key]=$dec
    encode[$key]=$enc total[$key]=$tot
    rows+=("| $mode | $clients | $n | $r | $q50 | $q99 | $batch | $comp | $wait | $errors |")
    echo "${rows[-1]}" >&2
  done
done

ratios=""
mixed_ok=met
for clients in $CLIENTS; do
  ratio=$(awk -v m="${rps[mixed/$clients]}" -v s="${rps[single/$clients]}" \
    'BEGIN { if (s > 0) printf "%.2f", m / s; else printf "n/a" }')
  awk -v r="$ratio" 'BEGIN { exit !(r != "n/a" && r >= 0.90) }' || mixed_ok="not met"
  ratios="$ratios${ratios:+, }$ratio at $clients"
done

# Overhead at the lowest concurrency (1 client), single concept: the client's
# mean latency against the engine's mean compute from Server-Timing; where it
# goes: decode + encode, the batcher's queue (batch_delay_us), HTTP and
# client (client latency − server total).  Means, because they add up.
k=single/${CLIENTS%% *}
read -r overhead codec http < <(awk -v lat="${mean[$k]}" -v comp="${compute[$k]}" -v d="${decode[$k]}" \
  -v e="${encode[$k]}" -v tot="${total[$k]}" \
  'BEGIN { printf "%s %.2f %.1f\n", (comp > 0 ? sprintf("%.1f", 100 * (lat - comp) / comp) : "n/a"), d + e, lat - tot }')
overhead_ok=$(awk -v o="$overhead" 'BEGIN { print (o != "n/a" && o <= 15 ? "met" : "not met") }')

commit=$(git -C "$ROOT" rev-parse --short HEAD)
dirty=""
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || dirty=" (work tree modified)"
report=$(
  echo "# Load benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  [ "$QUICK" = 1 ] && echo "**QUICK mode ($DURATION s per cell): a smoke test of the script, not a measurement.**" && echo
  echo "- commit: $commit$dirty"
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1); nproc $(nproc); load average at start: $load"
  echo "- server: e2gan-server defaults$([ -n "$SERVER_ARGS" ] && echo " + $SERVER_ARGS") (max_batch 8, batch_delay_us 2000), --threads $THREADS, on 127.0.0.1"
  echo "- model: ${MODEL#"$ROOT"/} (ngf $("$E2GAN" info "$MODEL" | sed -n 's/^ *ngf: *//p')), adapters ${ADAPTERS#"$ROOT"/}"
  echo "- input: ${SIZE}×${SIZE} JPEG (quality 90), output JPEG; $(wrk -v 2>&1 | head -n 1 | cut -d ' ' -f 1-2), 1 thread, closed loop, $DURATION s per cell"
  echo "- concepts: single = $single; mixed = ${mixed[*]} (round robin)"
  echo
  echo "| concepts | clients | requests | req/s | p50 ms | p99 ms | mean batch | engine call ms | queue ms | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "p50 and p99 are the client's latencies (wrk); engine call and queue are the means"
  echo "of the server's Server-Timing stages (an engine call runs a whole batch)."
  echo
  echo "## Goals"
  echo
  echo "- mixed ÷ single throughput, goal ≥ 0.90: $ratios clients — **$mixed_ok**"
  echo "- server overhead at ${SIZE}², ${CLIENTS%% *} client(s), single concept, goal ≤ 15% of engine time:"
  echo "  mean client latency ${mean[$k]} ms, mean engine compute ${compute[$k]} ms (Server-Timing;"
  echo "  \`e2gan bench\` alone: $engine_ms ms) → (${mean[$k]} − ${compute[$k]}) / ${compute[$k]} = **$overhead%** —"
  echo "  **$overhead_ok**; of it decode + encode $codec ms, queue ${queue[$k]} ms, HTTP and client"
  echo "  (client latency − server total) $http ms."
)
echo "$report"
suffix=
[ "$QUICK" = 1 ] && suffix=-quick
out=${OUT:-$ROOT/bench/results/load-$(date -u +%Y%m%d)-$commit$suffix.md}
mkdir -p "$(dirname "$out")"
echo "$report" >"$out"
echo "written to ${out#"$ROOT"/}"
