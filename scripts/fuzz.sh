#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for a
# bounded time over a copy of its seed corpus (tests/fuzz/corpus).
#   FUZZ_SECONDS=60 (per target)   FUZZ_JOBS=1
# A crash leaves its input as build-fuzz/crash-*: turn it into a regression
# test (tests/unit/test_bundle.cpp or a seed) before fixing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found; skipping" >&2; exit 0; }
build="$root/build-fuzz"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DSTARKV_FUZZ=ON >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
for exe in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$exe" ] || continue
  name="$(basename "$exe")"
  work="$build/corpus-$name"
  mkdir -p "$work"
  cp -n "$root"/tests/fuzz/corpus/* "$work"/ 2>/dev/null || true
  echo "== $name: ${seconds}s ==" >&2
  (cd "$build" && ASAN_OPTIONS=detect_leaks=1 "$exe" -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=2048 -print_final_stats=1 "$work" 2>&1 | tail -n 15)
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz.sh: $name failed" >&2; exit 1; }
done
