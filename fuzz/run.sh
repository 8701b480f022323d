#!/usr/bin/env bash
# run.sh — runs libFuzzer targets over their seed corpora (fuzz/corpus/NAME)
# for SECONDS each, one after the other, at nice 10.  New inputs go to a
# scratch corpus (the repository's is only read); a crash, leak or
# sanitizer report stops the run, keeps the input under OUT/ and fails.
#   fuzz/run.sh BUILD_DIR SECONDS [NAME...]    (default: every target)
# Environment: OUT (default BUILD_DIR/fuzz-out), FUZZ_ARGS (extra flags).
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1 seconds=$2
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image multipart safetensors adapter concept)
out=${OUT:-$build/fuzz-out}
mkdir -p "$out"
for name in "${targets[@]}"; do
  work="$out/$name"
  rm -rf "$work" && mkdir -p "$work/corpus" "$work/tmp"
  dict=()
  [ -f "fuzz/$name.dict" ] && dict=(-dict="fuzz/$name.dict")
  echo "== fuzz_$name: ${seconds}s"
  # a decode within the pixel limit needs a few MB: one allocation over
  # 256 MB is a finding (fuzz/corpus/image/regress-png-text-length-1.2g.png)
  if ! TMPDIR="$work/tmp" nice -n 10 "$build/fuzz/fuzz_$name" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=20 -print_final_stats=1 -artifact_prefix="$work/" \
      "${dict[@]}" ${FUZZ_ARGS:-} "$work/corpus" "fuzz/corpus/$name" >"$work/log" 2>&1; then
    tail -n 60 "$work/log"
    echo "fuzz_$name FAILED: input and log in $work/"
    exit 1
  fi
  grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/log" || true
  rm -rf "$work/tmp"
done
