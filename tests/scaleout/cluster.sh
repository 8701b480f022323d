# cluster.sh — e2gan-server replicas on loopback behind Debian's nginx, for
# tests/scaleout/run.sh and bench/scaleout_bench.sh (sourced by bash).
# The caller sets ROOT (the source tree), BUILD (the build folder) and
# CLUSTER_TMP (a private folder it removes), and calls cluster_stop on exit.

NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PY=/usr/bin/python3
declare -A replica_port replica_pid
nginx_pid=
NGINX_PORT=

# free_port: a TCP port nobody listens on now, on 127.0.0.1.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# replica_start NAME SERVER-ARGS…: starts an e2gan-server on a free loopback
# port (--listen 127.0.0.1:0, read back from its log) and waits until
# /readyz answers 200.  Sets replica_port[NAME] and replica_pid[NAME].
replica_start() {
  local name=$1 log=$CLUSTER_TMP/$1.log port=
  shift
  "$BUILD/e2gan-server" --listen 127.0.0.1:0 --static-dir "$ROOT/static" \
    --openapi "$ROOT/openapi.yaml" "$@" >"$log" 2>&1 &
  replica_pid[$name]=$!
  for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
    if [ -n "$port" ] && curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; then
      replica_port[$name]=$port
      return 0
    fi
    kill -0 "${replica_pid[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "cluster.sh: replica $name did not become ready" >&2
  cat "$log" >&2
  return 1
}

# nginx_start WORKER REPLICA…: nginx on a free loopback port (NGINX_PORT)
# with upstream e2gan_replicas = the REPLICAs and e2gan_worker = WORKER,
# the routes of docker/nginx/e2gan-locations.conf; waits for /healthz.
nginx_start() {
  local worker=$1 prefix=$CLUSTER_TMP/nginx servers="" name conf
  shift
  for name in "$@"; do
    servers+="        server 127.0.0.1:${replica_port[$name]} max_fails=1 fail_timeout=10s;"$'\n'
  done
  NGINX_PORT=$(free_port)
  mkdir -p "$prefix"
  chmod 755 "$CLUSTER_TMP" "$prefix" # nginx's workers may run as another user
  conf=$(<"$ROOT/tests/scaleout/nginx.conf.in")
  conf=${conf//@USER@/$(id -un)}
  conf=${conf//@REPLICAS@/${servers%$'\n'}}
  conf=${conf//@WORKER_PORT@/${replica_port[$worker]}}
  conf=${conf//@PORT@/$NGINX_PORT}
  conf=${conf//@LOCATIONS@/$ROOT/docker/nginx/e2gan-locations.conf}
  printf '%s\n' "$conf" >"$prefix/nginx.conf"
  "$NGINX" -p "$prefix" -c nginx.conf -e error.log -g 'daemon off;' &
  nginx_pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/healthz" && return 0
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "cluster.sh: nginx did not start" >&2
  cat "$prefix/error.log" >&2
  return 1
}

# cluster_stop: nginx and every replica still running (SIGTERM, then wait).
cluster_stop() {
  local pid
  for pid in $nginx_pid "${replica_pid[@]}"; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  nginx_pid=
  replica_pid=()
  replica_port=()
  return 0
}
