#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for a
# bounded time over a copy of its seed corpus (tests/fuzz/corpus/<target>/),
# after replaying its past crashes (tests/fuzz/regressions/<target>/).
#   FUZZ_SECONDS=30 (per target)   FUZZ_TARGETS="fuzz_a fuzz_b" (default: all)
# Executions per target go to build-fuzz/fuzz-summary.txt. A crash leaves its
# input as build-fuzz/crash-<target>-*: copy it to tests/fuzz/regressions/<target>/,
# add a unit test feeding it (tests/unit/test_fuzz_regressions.cpp), then fix.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-30}"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found; skipping" >&2; exit 0; }
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
shared="${STARKV_SHARED_DIR:-$root/../shared}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DSTARKV_FUZZ=ON -DSTARKV_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
summary="$build/fuzz-summary.txt"
: >"$summary"
status=0
for exe in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$exe" ] || continue
  name="$(basename "$exe")"
  if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $name "* ]]; then continue; fi
  work="$build/corpus-$name"
  mkdir -p "$work"
  cp -n "$root/tests/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  case "$name" in fuzz_tokenize_*) max_len=4096 ;; *) max_len=65536 ;; esac
  log="$build/$name.log"
  opts=(-rss_limit_mb=2048 -timeout=20 -artifact_prefix="$build/crash-$name-")
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 STARKV_SHARED_DIR="$shared"
  # Past crashes first: each must now run clean.
  regressions=("$root/tests/fuzz/regressions/$name"/*)
  if [ -e "${regressions[0]}" ]; then
    if ! (cd "$build" && "$exe" "${opts[@]}" "${regressions[@]}" >"$log.regressions" 2>&1); then
      echo "fuzz.sh: $name fails on a regression input (see $log.regressions)" >&2
      tail -n 30 "$log.regressions" >&2
      status=1
      continue
    fi
  fi
  echo "== $name: ${seconds}s ==" >&2
  rc=0
  (cd "$build" && "$exe" "${opts[@]}" -max_total_time="$seconds" -max_len="$max_len" \
    -print_final_stats=1 "$work" >"$log" 2>&1) || rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')"
  echo "$name seconds=$seconds executions=$execs coverage=$cov corpus=$(ls "$work" | wc -l) rc=$rc" | tee -a "$summary" >&2
  if [ "$rc" != 0 ]; then
    echo "fuzz.sh: $name failed:" >&2
    tail -n 40 "$log" >&2
    status=1
  fi
done
exit "$status"
