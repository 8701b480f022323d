#!/usr/bin/env bash
# setup.sh — installs what e2gan builds and tests with (Debian 12), then
# configures and builds it into build/.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake gcc make pkg-config     # the build
  libdnnl-dev                   # oneDNN: CPU convolutions and sgemm
  libjansson-dev                # JSON: safetensors headers, adapter configs
  libturbojpeg0-dev libpng-dev  # image codecs: JPEG, PNG
  libwebp-dev                   # image codec: WebP
  libssl-dev                    # SHA-256 of base files (adapters bind to it)
  libmicrohttpd-dev             # the HTTP server
  curl                          # the server's integration tests drive it with curl
  check                         # unit-test framework
  python3-torch python3-numpy   # PyTorch: the reference the tests compare with
  python3-yaml python3-jsonschema  # tests: the server's answers checked against openapi.yaml
  imagemagick                   # dataset teachers; real JPEG/PNG variants for the tests
  chromium                      # tests: the web page in a real browser
  nginx                         # tests: replicas behind nginx (the deployment files in docker/)
  clang libclang-rt-dev libomp-dev  # tests: the libFuzzer targets (fuzz/, docs/hardening.md)
  valgrind                      # tools/valgrind.sh: the engine suites under memcheck
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# node + npm run the browser test and the OpenAPI lint; keep a node the
# machine already has (it may not come from Debian)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# nvcc builds kernels/ when present (CUDA is optional).
if [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DE2G_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
