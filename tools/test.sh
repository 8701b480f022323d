#!/usr/bin/env bash
# test.sh — sets up, builds and runs every test (the README's test command):
# the suite on the normal build, the suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer (build-asan/), then a short libFuzzer run of
# each fuzz target over its seed corpus (build-fuzz/, clang).  FUZZ_SECONDS
# (default 20) is the length of each fuzz run.  docs/hardening.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir build --output-on-failure

# The C tests again under the sanitizers, on the references build/ wrote
# (-FS: its fixture scripts are not rerun); the dataset builder's check, the
# OpenAPI lint and the self-containment check run no C code.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DE2G_SANITIZE=ON -DE2G_WERROR=ON \
  -DE2G_REFS_DIR="$PWD/build/refs" >/dev/null
cmake --build build-asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:check_initialization_order=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp:print_suppressions=0 \
  ctest --test-dir build-asan --output-on-failure -FS torch_refs -E '_refs$|^dataset_check$|^openapi_lint$|^self_contained$'

CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DE2G_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz
fuzz/run.sh build-fuzz "${FUZZ_SECONDS:-20}"
