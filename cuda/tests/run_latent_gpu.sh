#!/usr/bin/env bash
# Latent attention on a GPU machine: tests, the benchmark (fp16 and bf16
# latents), the PyTorch SDPA baseline, compute-sanitizer memcheck and
# racecheck, and an Nsight Compute profile of the two main kernels, in one
# session. Run from a folder holding the two programs
# (starkv_cuda_latent_tests, starkv_bench_latent_attention) and
# sdpa_baseline.py; logs go to $OUT. Each step continues after a failure.
set -x
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/device.txt"
timeout 120 "$here/starkv_cuda_latent_tests" 2>&1 | tee "$OUT/tests.txt"
timeout 150 "$here/starkv_bench_latent_attention" f16 20 2>&1 | tee "$OUT/bench.txt"
PYTHONUNBUFFERED=1 timeout 150 python3 "$here/sdpa_baseline.py" 20 2>&1 | tee "$OUT/sdpa.txt"
timeout 100 "$here/starkv_bench_latent_attention" bf16 10 2>&1 | tee "$OUT/bench_bf16.txt"
export STARKV_LATENT_TEST_SMALL=1
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" 2>&1 \
  | tee "$OUT/memcheck.txt" | grep -E "ERROR SUMMARY|FAILED|PASSED|rel err"
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" \
  --gtest_filter='LatentAttention.Mha*:LatentAttention.GqaF16*' 2>&1 \
  | tee "$OUT/racecheck.txt" | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|FAILED|PASSED|rel err|hazard"
unset STARKV_LATENT_TEST_SMALL
if [ -n "${LATENT_PROFILE:-}" ]; then
  timeout 200 ncu --kernel-name regex:"latent_(scores|values)" --launch-count 2 --section SpeedOfLight \
    --section Occupancy --section WarpStateStats --section SchedulerStats --section InstructionStats \
    --section MemoryWorkloadAnalysis "$here/starkv_bench_latent_attention" f16 1 > "$OUT/ncu.txt" 2>&1
  cuobjdump -sass "$here/starkv_bench_latent_attention" > "$OUT/sass.txt" 2>&1
fi
echo "=== summary"; cat "$OUT/bench.txt" "$OUT/sdpa.txt"; grep -E "OK|FAILED|rel err" "$OUT/tests.txt"
