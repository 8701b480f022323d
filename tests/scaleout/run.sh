#!/usr/bin/env bash
# run.sh — the scale-out test (ctest scaleout_nginx): three e2gan-server
# replicas on loopback behind Debian's nginx (docker/nginx/e2gan-locations.conf,
# the routes compose uses), sharing one adapter directory and one admin
# token; replica r1 is the designated fine-tuning worker (finetune on), r2
# and r3 are not (finetune off).  Checks:
#   1. an adapter uploaded through nginx is served by every replica (asked
#      directly) within 1 s, and its delete likewise: each replica follows
#      the shared directory through inotify, not by polling;
#   2. job routes reach the worker through nginx; a replica asked directly
#      answers 503 finetuning-unavailable;
#   3. kill -9 of a replica while four clients run edits through nginx
#      costs no client request (nginx retries on another replica);
# and docker/healthcheck.sh (the images' HEALTHCHECK) on a live and a dead port.
# usage: tests/scaleout/run.sh [BUILD]   (BUILD: the build folder, E2GAN_BUILD or build/)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-${E2GAN_BUILD:-$ROOT/build}}
CLUSTER_TMP=$(mktemp -d)
# shellcheck source=tests/scaleout/cluster.sh
. "$ROOT/tests/scaleout/cluster.sh"
loop_pids=()
cleanup() {
  local pid
  for pid in "${loop_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  cluster_stop
  rm -rf "$CLUSTER_TMP"
}
trap cleanup EXIT
trap 'exit 143' INT TERM
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ -x "$NGINX" ] || fail "nginx is missing (Debian package nginx; tools/setup.sh installs it)"
TOKEN=scaleout-test-token-0123456789
ADAPTERS=$CLUSTER_TMP/adapters
mkdir -p "$ADAPTERS"
cp "$ROOT"/models/adapters/*.safetensors "$ADAPTERS/"
common=(--model "$ROOT/models/e2gan-s.safetensors" --adapters "$ADAPTERS" --admin-token "$TOKEN"
  --threads 1)
replica_start r1 "${common[@]}" --jobs-dir "$CLUSTER_TMP/jobs" --trainer "$BUILD/e2gan"
replica_start r2 "${common[@]}" --finetune off
replica_start r3 "${common[@]}" --finetune off
nginx_start r1 r1 r2 r3
LB=http://127.0.0.1:$NGINX_PORT
echo "replicas on ports ${replica_port[r1]} ${replica_port[r2]} ${replica_port[r3]}, nginx on $NGINX_PORT"

# waits_for R STATUS PATH DEADLINE: until GET PATH on replica R answers STATUS
# or the monotonic clock passes DEADLINE (seconds); prints the wait in ms.
now() { awk '{ print $1 }' /proc/uptime; }
waits_for() {
  local r=$1 want=$2 path=$3 deadline=$4 start code
  start=$(now)
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${replica_port[$r]}$path")
    [ "$code" = "$want" ] && break
    awk -v n="$(now)" -v d="$deadline" 'BEGIN { exit !(n > d) }' && return 1
    sleep 0.02
  done
  awk -v s="$start" -v n="$(now)" 'BEGIN { printf "%.0f", 1000 * (n - s) }'
}

# the images' HEALTHCHECK script against a replica, and against a closed port
E2GAN_LISTEN=0.0.0.0:${replica_port[r2]} "$ROOT/docker/healthcheck.sh" || fail "healthcheck.sh on a live replica"
! E2GAN_LISTEN=0.0.0.0:$(free_port) "$ROOT/docker/healthcheck.sh" 2>/dev/null || fail "healthcheck.sh on a closed port"

# 1. an upload through nginx reaches every replica within 1 s; so does a delete
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$ROOT/models/adapters/cartoon.safetensors" \
  "$LB/v1/concepts/scaleout-ink")
[ "$code" = 201 ] || fail "upload through nginx: $code"
deadline=$(awk -v n="$(now)" 'BEGIN { print n + 1.0 }')
for r in r1 r2 r3; do
  ms=$(waits_for "$r" 200 /v1/concepts/scaleout-ink "$deadline") || fail "$r does not list the upload after 1 s"
  echo "upload: $r lists scaleout-ink after ${ms} ms"
done
for r in r1 r2 r3; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$ROOT/tests/data/chelsea.png" \
    -H 'Content-Type: image/png' "http://127.0.0.1:${replica_port[$r]}/v1/edits?concept=scaleout-ink")
  [ "$code" = 200 ] || fail "$r cannot edit with the uploaded adapter: $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOKEN" "$LB/v1/concepts/scaleout-ink")
[ "$code" = 204 ] || fail "delete through nginx: $code"
deadline=$(awk -v n="$(now)" 'BEGIN { print n + 1.0 }')
for r in r1 r2 r3; do
  ms=$(waits_for "$r" 404 /v1/concepts/scaleout-ink "$deadline") || fail "$r still lists the deleted adapter after 1 s"
  echo "delete: $r drops scaleout-ink after ${ms} ms"
done

# 2. fine-tuning jobs: the worker only
auth=(-H "Authorization: Bearer $TOKEN")
for _ in 1 2 3; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$LB/v1/finetunes")
  [ "$code" = 200 ] || fail "GET /v1/finetunes through nginx: $code (the worker should answer)"
done
body=$(curl -s "${auth[@]}" "http://127.0.0.1:${replica_port[r2]}/v1/finetunes")
grep -q 'finetuning-unavailable' <<<"$body" && grep -q 'finetune = off' <<<"$body" ||
  fail "r2 asked directly for jobs: $body"
echo "jobs: through nginx the worker r1 answers; r2 directly: 503 finetuning-unavailable"

# 3. kill -9 of a replica under load: no failed client request
convert "$ROOT/tests/data/chelsea.png" -resize '64x64!' "$CLUSTER_TMP/small.png"
edit_status() { # edit_status URL CONCEPT: the HTTP status of one edit of the small image
  curl -s -o /dev/null -w '%{http_code}' --max-time 60 --data-binary @"$CLUSTER_TMP/small.png" \
    -H 'Content-Type: image/png' "$1/v1/edits?concept=$2" || printf ' curl-exit-%s' "$?"
}
client_loop() { # until the stop file exists: one status line per edit
  until [ -e "$CLUSTER_TMP/stop" ]; do
    edit_status "$LB" "$1"
    echo
  done >"$CLUSTER_TMP/client-$2.txt"
}
# upstream_edits PORT: edits that replica answered 200 (nginx's access log)
upstream_edits() { grep -c "POST /v1/edits upstream=\(.*, \)\?127.0.0.1:$1 upstream_status=\(.*, \)\?200" "$CLUSTER_TMP/nginx/access.log" || true; }
# waits_until N COMMAND…: up to 60 s until COMMAND prints a number >= N
waits_until() {
  local n=$1
  shift
  for _ in $(seq 600); do
    [ "$("$@")" -ge "$n" ] && return 0
    sleep 0.1
  done
  return 1
}
for r in r1 r2 r3; do # the first edit of a size sets up the engine's convolutions
  [ "$(edit_status "http://127.0.0.1:${replica_port[$r]}" cartoon)" = 200 ] || fail "warm-up edit on $r"
done
: >"$CLUSTER_TMP/nginx/access.log"
concepts=(cartoon pencil line-art cartoon)
for i in 0 1 2 3; do
  client_loop "${concepts[$i]}" "$i" &
  loop_pids+=($!)
done
waits_until 3 upstream_edits "${replica_port[r3]}" || fail "r3 served no edit through nginx in 60 s"
kill -9 "${replica_pid[r3]}"
echo "killed r3 (pid ${replica_pid[r3]}) under load after it had served $(upstream_edits "${replica_port[r3]}") edits"
after_kill() { grep -c 'POST /v1/edits' "$CLUSTER_TMP/nginx/access.log" || true; }
waits_until $(($(after_kill) + 24)) after_kill || fail "the edits stalled after the kill"
touch "$CLUSTER_TMP/stop"
wait "${loop_pids[@]}"
loop_pids=()
total=$(cat "$CLUSTER_TMP"/client-*.txt | wc -l)
failed=$(cat "$CLUSTER_TMP"/client-*.txt | grep -vcx 200 || true)
retried=$(grep -c 'upstream=[^ ]*, ' "$CLUSTER_TMP/nginx/access.log" || true)
echo "under kill -9: $total edits through nginx, $failed failed, $retried retried by nginx on another replica"
[ "$total" -gt 0 ] && [ "$failed" -eq 0 ] || fail "$failed of $total client requests failed"
echo "scaleout: 3 passed, 0 failed"
