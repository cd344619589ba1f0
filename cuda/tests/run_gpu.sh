#!/usr/bin/env bash
# The GPU tests, benchmarks and memcheck, on a machine with a GPU. Run from a
# folder holding bin/ (test programs, starkv CLI), lib/ (libstarkv.so*,
# libstarkv_cuda.so) and shared/{models/stories260K.gguf,data/tinystories_val.txt};
# logs go to $OUT. Each step has its own time limit and a failure does not stop
# the next one. STEPS (default "tests bench memcheck") picks the parts.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"
STEPS="${STEPS:-tests bench memcheck}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export STARKV_SHARED_DIR="$here/shared"
model="$here/shared/models/stories260K.gguf"
has() { [[ " $STEPS " == *" $1 "* ]]; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  ldd "$here/lib/libstarkv_cuda.so" | grep -E "not found|cublas|cudart"
} 2>&1 | tee "$OUT/device.txt"
if has tests; then
  timeout 120 "$here/bin/starkv_cuda_kernel_tests" 2>&1 | tee "$OUT/kernels.txt"
  timeout 240 "$here/bin/starkv_cuda_e2e_tests" 2>&1 | tee "$OUT/e2e.txt"
fi
if has bench; then
  STARKV_CUDA_BENCH=1 timeout 60 "$here/bin/starkv_cuda_kernel_tests" --gtest_filter='CudaBench.*' 2>&1 | tee "$OUT/bench.txt"
  for g in 0 1; do
    echo "== STARKV_CUDA_GRAPH=$g" | tee -a "$OUT/bench.txt"
    STARKV_CUDA_GRAPH=$g timeout 90 "$here/bin/starkv_cuda_synthetic" 4 512 64 2>&1 | tee -a "$OUT/bench.txt"
  done
  for b in cpu cuda cuda-graph; do
    g=0; be=$b; [ $b = cuda-graph ] && { g=1; be=cuda; }
    echo "== starkv run --backend $be STARKV_CUDA_GRAPH=$g" | tee -a "$OUT/bench.txt"
    STARKV_CUDA_GRAPH=$g timeout 60 "$here/bin/starkv" run -m "$model" -p "Once upon a time" -n 400 --temp 0 --ctx 512 \
      --ignore-eos --backend $be 2>&1 | tail -4 | tee -a "$OUT/bench.txt"
  done
  # The same on stories260K packed with STAR-KV (all layers but the first latent).
  lat="$here/s260k_kv05.skv"
  timeout 120 "$here/bin/starkv" pack -m "$model" -o "$lat" --kv-compress 0.5 --calib "$here/shared/data/tinystories_val.txt" \
    --calib-tokens 2048 --skip-layers 0 > /dev/null 2>&1
  for b in cpu cuda cuda-graph; do
    g=0; be=$b; [ $b = cuda-graph ] && { g=1; be=cuda; }
    echo "== STAR-KV 0.5: starkv run --backend $be STARKV_CUDA_GRAPH=$g" | tee -a "$OUT/bench.txt"
    STARKV_CUDA_GRAPH=$g timeout 60 "$here/bin/starkv" run -m "$lat" -p "Once upon a time" -n 400 --temp 0 --ctx 512 \
      --ignore-eos --backend $be 2>&1 | tail -4 | tee -a "$OUT/bench.txt"
  done
  OUT="$OUT" timeout 420 bash "$here/bench_synthetic.sh" ${BENCH_LAYERS:-8} 2>&1 | tee "$OUT/bench_synthetic.txt"
fi
if has extra; then
  {
    for b in cpu cuda; do
      echo "== starkv perplexity --backend $b (20 TinyStories documents)"
      timeout 60 "$here/bin/starkv" perplexity -m "$model" -f "$here/shared/data/tinystories_val.txt" --docs 20 --backend $b | tail -1
    done
    echo "== starkv perplexity --backend cuda --cuda-dtype f16"
    timeout 60 "$here/bin/starkv" perplexity -m "$model" -f "$here/shared/data/tinystories_val.txt" --docs 20 --backend cuda --cuda-dtype f16 | tail -1
    for bt in 1 4; do
      echo "== starkv bench stories260K --batch $bt"
      timeout 60 "$here/bin/starkv" bench -m "$model" --ctx 256 --gen 256 --batch $bt --json "$OUT/bench_stories_b$bt.json"
    done
    b=/tmp/syn7b.skv
    timeout 120 "$here/bin/starkv" pack --synthetic llama2-7b --layers 8 -o $b
    for dt in f16 bf16; do
      echo "== llama2-7b 8 layers --cuda-dtype $dt ctx 512"
      timeout 120 "$here/bin/starkv" bench -m $b --cuda-dtype $dt --ctx 512 --gen 64 --json "$OUT/bench_llama2-7b_kv0_$dt.json"
    done
    echo "== llama2-7b 8 layers bf16 ctx 2048"
    timeout 120 "$here/bin/starkv" bench -m $b --cuda-dtype bf16 --ctx 2048 --gen 64 --json "$OUT/bench_llama2-7b_kv0_bf16_ctx2048.json"
    b2=/tmp/syn7b_kv05.skv
    timeout 120 "$here/bin/starkv" pack --synthetic llama2-7b --layers 8 --kv-compress 0.5 -o $b2
    echo "== llama2-7b 8 layers kv 0.5 bf16 ctx 2048"
    timeout 120 "$here/bin/starkv" bench -m $b2 --cuda-dtype bf16 --ctx 2048 --gen 64 --json "$OUT/bench_llama2-7b_kv0.5_bf16_ctx2048.json"
    rm -f $b $b2
  } 2>&1 | tee "$OUT/extra.txt"
fi
if has memcheck; then
  {
    timeout 180 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/starkv_cuda_kernel_tests" --gtest_filter='CudaKernels.*:CudaSampling.*'
    echo "memcheck kernels rc=$?"
    STARKV_E2E_STEPS=8 timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/starkv_cuda_e2e_tests" \
      --gtest_filter='*Fp32Greedy*:*Latent*'
    echo "memcheck e2e rc=$?"
    # Failed uploads (every allocation in turn) and the memory limit leave nothing allocated.
    timeout 400 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$here/bin/starkv_cuda_e2e_tests" \
      --gtest_filter='*FailedUpload*:*DeviceMemoryLimit*'
    echo "memcheck leak-check rc=$?"
  } > "$OUT/memcheck.txt" 2>&1
  grep -E "ERROR SUMMARY|rc=|FAILED|PASSED" "$OUT/memcheck.txt"
fi
echo "run_gpu.sh done"
