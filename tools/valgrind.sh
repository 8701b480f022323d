#!/usr/bin/env bash
# valgrind.sh — runs the engine's test suites under valgrind memcheck: no
# invalid read or write, no use of uninitialised memory, no definite leak
# (exit status 1 on any report).  Uses the normal build (build/, whose
# tests/refs fixtures ctest has written); Check runs each suite in-process
# (CK_FORK=no) so memcheck sees the tests themselves.
#   tools/valgrind.sh [SUITE[:CASE]...]   (default: every engine suite)
# test_attention runs its reference case only: its 16384-token case takes
# a minute natively, hours under memcheck.  test_train is left out: its
# tests run the trainer as child processes (the CLI), not in-process;
# test_server_batcher checks deadlines that memcheck's slowdown misses.
# Logs: build/valgrind/SUITE.log.  docs/hardening.md has the last results.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(test_safetensors test_image test_multipart test_config test_registry
  test_metrics test_report test_ops test_attention:reference test_model)
command -v valgrind >/dev/null || { echo "valgrind.sh: install Debian's valgrind"; exit 2; }
[ -d build/refs ] || { echo "valgrind.sh: run ctest in build/ first (it writes build/refs)"; exit 2; }
mkdir -p build/valgrind
failed=()
for entry in "${suites[@]}"; do
  s=${entry%%:*} only=()
  [ "$s" = "$entry" ] || only=(CK_RUN_CASE="${entry#*:}")
  start=$(date +%s)
  if env "${only[@]}" E2G_REFS=$PWD/build/refs E2G_BIN=$PWD/build/e2gan E2G_SOURCE=$PWD E2GAN_DEVICE=cpu \
     CK_FORK=no CK_DEFAULT_TIMEOUT=0 OMP_NUM_THREADS=2 \
     nice -n 10 valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
       --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes \
       --suppressions=tools/valgrind.supp --log-file="build/valgrind/$s.log" \
       "build/tests/$s" >"build/valgrind/$s.out" 2>&1; then
    result=clean
  else
    result=FAILED failed+=("$s")
  fi
  errors=$(grep -o 'ERROR SUMMARY: [0-9]*' "build/valgrind/$s.log" | awk '{n += $3} END {print n + 0}')
  echo "$s: $result in $(( $(date +%s) - start ))s, $errors errors"
done
[ ${#failed[@]} -eq 0 ] || { echo "valgrind.sh: reports in ${failed[*]}: see build/valgrind/"; exit 1; }
