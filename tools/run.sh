#!/usr/bin/env bash
# run.sh — sets up and builds e2gan, then starts e2gan-server on the shipped
# model and adapters (models/), on the GPU when the build has CUDA and one is
# present, else on the CPU (docs/cuda.md).
# Open http://127.0.0.1:8080/ for the web page; Ctrl-C stops it.
# Any argument is passed on to the server (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec build/e2gan-server --model models/e2gan-s.safetensors --adapters models/adapters "$@"
