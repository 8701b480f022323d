#!/usr/bin/env bash
# test.sh — sets up, builds and runs every test (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir build --output-on-failure
