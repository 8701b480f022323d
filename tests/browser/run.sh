#!/usr/bin/env bash
# The browser test of the web page: starts build/e2gan-server on a free
# loopback port with a fresh ngf-8 model, an empty adapter directory, a
# jobs folder and a random admin token (fine-tuning jobs run build/e2gan,
# beside the server); drives static/ in Debian's chromium with
# edit_page.mjs (editing, adapters) and finetune_page.mjs (a real
# fine-tuning job); stops the server; exits 1 when either test failed.
# Installs chromium (apt-get) and playwright-core (npm) when missing; builds
# nothing (build/e2gan and build/e2gan-server must exist).
#   tests/browser/run.sh [SCREENSHOT.png]    (default build/browser-edit-page.png;
#                                             the fine-tuning one beside it, browser-finetune-page.png)
# E2GAN_BUILD overrides the build folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${E2GAN_BUILD:-$repo/build}
screenshot=${1:-$build/browser-edit-page.png}
ft_screenshot=$(dirname "$screenshot")/browser-finetune-page.png

for bin in e2gan e2gan-server; do
  if [ ! -x "$build/$bin" ]; then
    echo "run.sh: $build/$bin is missing; build first (tools/test.sh builds it)" >&2
    exit 2
  fi
done

if [ ! -x /usr/bin/chromium ]; then
  sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "run.sh: installing Debian's chromium"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium >/dev/null; then
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium >/dev/null
  fi
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  npm install --prefix "$here" --no-audit --no-fund
fi

tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Runs a setup command quietly; on failure shows what it printed.
quiet() {
  if ! "$@" >"$tmp/setup.log" 2>&1; then
    echo "run.sh: failed: $*" >&2
    cat "$tmp/setup.log" >&2
    exit 1
  fi
}
quiet "$build/e2gan" init --ngf 8 --concepts winter,oil-paint --seed 1 --out "$tmp/base.safetensors"
# A real adapter for the upload/edit/delete round trip: one step of
# fine-tuning on a one-pair dataset (a fraction of a second).
quiet node "$here/tiny_dataset.mjs" "$tmp/data"
quiet "$build/e2gan" finetune --model "$tmp/base.safetensors" --data "$tmp/data" --concept sepia \
  --out "$tmp/sepia.safetensors" --steps 1 --batch 1 --eval-every 0 --threads 1 --quiet
mkdir "$tmp/adapters" "$tmp/jobs"

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
E2GAN_ADMIN_TOKEN=$token "$build/e2gan-server" --model "$tmp/base.safetensors" --adapters "$tmp/adapters" \
  --jobs-dir "$tmp/jobs" --listen "127.0.0.1:$port" --static-dir "$repo/static" --openapi "$repo/openapi.yaml" \
  >"$tmp/server.log" 2>&1 &
server_pid=$!

url="http://127.0.0.1:$port/"
ready=0
for _ in $(seq 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  if node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "${url}readyz"; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "run.sh: e2gan-server did not become ready on $url; its log:" >&2
  tail -n 40 "$tmp/server.log" >&2
  exit 1
fi

mkdir -p "$(dirname "$screenshot")"
rc=0
node "$here/edit_page.mjs" --url "$url" --screenshot "$screenshot" --token "$token" \
  --adapter "$tmp/sepia.safetensors" || rc=$?
node "$here/finetune_page.mjs" --url "$url" --screenshot "$ft_screenshot" --token "$token" || rc=$?
if [ "$rc" != 0 ]; then
  echo "run.sh: the browser test failed; the server's log:" >&2
  tail -n 40 "$tmp/server.log" >&2
  for log in "$tmp"/jobs/*/trainer.log; do
    [ -f "$log" ] || continue
    echo "run.sh: $log:" >&2
    tail -n 10 "$log" >&2
  done
fi
exit "$rc"
