#!/usr/bin/env bash
# The GPU tests, benchmarks and memcheck, on a machine with a GPU. Run from a
# folder holding bin/ (test programs, starkv CLI), lib/ (libstarkv.so*,
# libstarkv_cuda.so) and shared/models/stories260K.gguf; logs go to $OUT.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export STARKV_SHARED_DIR="$here/shared"
model="$here/shared/models/stories260K.gguf"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  ldd "$here/lib/libstarkv_cuda.so" | grep -E "not found|cublas|cudart"
} 2>&1 | tee "$OUT/device.txt"
"$here/bin/starkv_cuda_kernel_tests" 2>&1 | tee "$OUT/kernels.txt"
"$here/bin/starkv_cuda_e2e_tests" 2>&1 | tee "$OUT/e2e.txt"
STARKV_CUDA_BENCH=1 "$here/bin/starkv_cuda_kernel_tests" --gtest_filter='CudaBench.*' 2>&1 | tee "$OUT/bench.txt"
"$here/bin/starkv_cuda_synthetic" 4 512 64 2>&1 | tee -a "$OUT/bench.txt"
for b in cpu cuda; do
  "$here/bin/starkv" run -m "$model" -p "Once upon a time" -n 400 --temp 0 --ctx 512 --ignore-eos --backend $b 2>&1 \
    | tail -3 | tee -a "$OUT/bench.txt"
done
{
  compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/starkv_cuda_kernel_tests" --gtest_filter='CudaKernels.*'
  echo "memcheck kernels rc=$?"
  STARKV_E2E_STEPS=16 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/starkv_cuda_e2e_tests"
  echo "memcheck e2e rc=$?"
} 2>&1 | tee "$OUT/memcheck.txt" | grep -E "ERROR SUMMARY|rc=|FAILED|PASSED"
