#!/usr/bin/env bash
# Every test: set up, build, run the suite; then the same suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (skip that with STARKV_NO_SANITIZE=1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs="$(nproc 2>/dev/null || echo 2)"
"$root/scripts/setup.sh"
# The larger real model (byte-level BPE, Q4_1): its tests skip, visibly, when
# it cannot be fetched.
if [ "${STARKV_NO_SMOLLM2:-0}" != "1" ]; then
  "$root/scripts/fetch_smollm2.sh" >/dev/null || echo "test: SmolLM2 not available; its tests will be skipped" >&2
fi

BUILD_DIR="$root/build" "$root/scripts/build.sh"
(cd "$root/build" && ctest --output-on-failure -j "$jobs" --timeout 1200)

if [ "${STARKV_NO_SANITIZE:-0}" != "1" ]; then
  echo "== the suite again under ASan+UBSan ==" >&2
  BUILD_DIR="$root/build-asan" BUILD_TYPE=RelWithDebInfo "$root/scripts/build.sh" \
    -DSTARKV_SANITIZE=ON -DSTARKV_BUILD_BENCH=OFF
  (cd "$root/build-asan" && \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j "$jobs" --timeout 2400)
fi

# The concurrency tests (names with Thread, Concurrent or Parallel, the soak
# included) under ThreadSanitizer (skip with STARKV_NO_TSAN=1).
if [ "${STARKV_NO_TSAN:-0}" != "1" ]; then
  echo "== the concurrency tests under ThreadSanitizer ==" >&2
  cmake -S "$root" -B "$root/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTARKV_TSAN=ON \
    -DSTARKV_BUILD_BENCH=OFF -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST \
    ${STARKV_SHARED_DIR:+-DSTARKV_SHARED_DIR="$STARKV_SHARED_DIR"} >/dev/null
  cmake --build "$root/build-tsan" -j "$jobs" --target starkv_unit_tests starkv_api_tests starkv_soak_tests
  (cd "$root/build-tsan" && \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 STARKV_SOAK_THREADS=4 STARKV_SOAK_SESSIONS=6 \
    ctest --output-on-failure -j 1 --timeout 1200 -R 'Thread|Concurrent|Parallel')
fi

# libFuzzer over every parser (clang only; bounded: FUZZ_SECONDS per target).
if [ "${STARKV_NO_FUZZ:-0}" != "1" ] && command -v clang++ >/dev/null 2>&1; then
  echo "== fuzzing every parser (FUZZ_SECONDS per target) ==" >&2
  FUZZ_SECONDS="${FUZZ_SECONDS:-30}" "$root/scripts/fuzz.sh"
fi
