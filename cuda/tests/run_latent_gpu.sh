#!/usr/bin/env bash
# Latent-attention GPU session: tests, benchmark per scores kernel, bf16, SDPA baseline,
# optionally compute-sanitizer (LATENT_SANITIZE=1) and an ncu profile (LATENT_PROFILE=1). Logs to $OUT.
# KERNELS: the scores kernels to benchmark (default "auto table ktable fold key").
set -x
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv 2>&1 | tee "$OUT/device.txt"
timeout 120 "$here/starkv_cuda_latent_tests" 2>&1 | tail -60 > "$OUT/tests.txt"
grep -E "OK \]|FAILED|rel err|PASSED" "$OUT/tests.txt"
for k in ${KERNELS:-auto table ktable fold key}; do timeout 100 "$here/starkv_bench_latent_attention" f16 20 $k 2>&1 | tee "$OUT/bench_$k.txt"; done
# LATENT_PAGED="64 256": the default kernels over shuffled pages of that many rows (fp16, and q4 with LATENT_BF16).
for pr in ${LATENT_PAGED:-}; do timeout 100 "$here/starkv_bench_latent_attention" f16 20 auto $pr 2>&1 | tee "$OUT/bench_paged$pr.txt"; done
[ -n "${LATENT_BF16:-}" ] && [ -n "${LATENT_PAGED:-}" ] && for pr in ${LATENT_PAGED}; do timeout 100 "$here/starkv_bench_latent_attention" q4 10 auto $pr 2>&1 | tee "$OUT/bench_q4_paged$pr.txt"; done
[ -n "${LATENT_BF16:-}" ] && for f in bf16 q4; do timeout 100 "$here/starkv_bench_latent_attention" $f 10 auto 2>&1 | tee "$OUT/bench_$f.txt"; done
[ -n "${LATENT_SDPA:-1}" ] && PYTHONUNBUFFERED=1 timeout 120 python3 "$here/sdpa_baseline.py" 20 2>&1 | tee "$OUT/sdpa.txt"
if [ -n "${LATENT_SANITIZE:-}" ]; then
  export STARKV_LATENT_TEST_SMALL=1
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" 2>&1 | tee "$OUT/memcheck.txt" | grep -E "ERROR SUMMARY|FAILED|PASSED|rel err" | head -20
  timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" --gtest_filter='LatentAttention.Mha*:LatentAttention.GqaF16*:LatentAttention.GqaHalfSplitKeyTable:LatentAttention.Q4*' 2>&1 | tee "$OUT/racecheck.txt" | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|FAILED|PASSED|hazard" | head
  unset STARKV_LATENT_TEST_SMALL
fi
if [ -n "${LATENT_PROFILE:-}" ]; then
  timeout 90 ncu --kernel-name regex:"latent_scores" --launch-count 1 --section SpeedOfLight --section Occupancy --section WarpStateStats --section InstructionStats --section LaunchStats "$here/starkv_bench_latent_attention" f16 1 ${LATENT_PROFILE_KERNEL:-table} > "$OUT/ncu.txt" 2>&1
  grep -E "latent_|Duration|Executed Instructions |Registers Per|Achieved Occupancy|Issued Ipc|Stall|Local|Throughput" "$OUT/ncu.txt" | head -40
fi
true
