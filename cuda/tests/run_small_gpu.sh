#!/usr/bin/env bash
# Small-batch single pass (kernels/latent_decode_small.cu) GPU session, one step per argument:
#   tests     all latent tests (the new single-pass cases print "small-batch pass")
#   bench     batch 1 and 4, fp16: the five-launch path ("five") and the default (single pass at
#             batch <= 4), in L2 as it comes and with L2 flushed before each call; bf16 batch 1;
#             PyTorch SDPA at batch 1 (both ways)
#   tune      batch 1 single pass with other chunk lengths / head splits
#   sanitize  compute-sanitizer memcheck and racecheck over the single-pass tests
#   e2e       FusedLatent.* end to end (the backend's decode runs the single pass at batch 1), then
#             `starkv bench` on synthetic 2-layer stacks (75% latents, bf16) at 4K and 32K, with and
#             without the single pass (STARKV_CUDA_LATENT_SMALL=1 / 0), and the plain bf16 cache
# Programs and scripts sit beside this script (see stage_small.sh). Logs to $OUT.
set -x
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
B="$here/starkv_bench_latent_attention"
for step in "$@"; do case "$step" in
tests)
  timeout 240 "$here/starkv_cuda_latent_tests" > "$OUT/tests.txt" 2>&1
  grep -E "OK \]|FAILED|rel err|PASSED|Failure|Expected|Which is" "$OUT/tests.txt" | head -80 ;;
bench)
  for fl in 0 1; do
    for bt in 1 4; do for k in five auto; do
      LATENT_FLUSH_L2=$fl timeout 60 "$B" f16 20 $k 0 $bt 2>&1 | tee -a "$OUT/bench.txt"
    done; done
  done
  timeout 60 "$B" bf16 20 auto 0 1 2>&1 | tee -a "$OUT/bench.txt"
  timeout 60 "$B" f16 20 auto 64 1 2>&1 | tee -a "$OUT/bench.txt"
  for fl in 0 1; do LATENT_FLUSH_L2=$fl PYTHONUNBUFFERED=1 timeout 90 python3 "$here/sdpa_baseline.py" 20 1 2>&1 | tee -a "$OUT/sdpa.txt"; done ;;
tune)
  for cfg in ${TUNE:-64:1 128:1 64:2 128:2 64:4}; do
    LATENT_FLUSH_L2=1 LATENT_SMALL_CHUNK=${cfg%:*} LATENT_SMALL_SPLIT=${cfg#*:} timeout 60 "$B" f16 20 auto 0 ${TUNE_BATCH:-1} 2>&1 | tee -a "$OUT/tune.txt"
  done ;;
sanitize)
  export STARKV_LATENT_TEST_SMALL=1
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" --gtest_filter='LatentAttention.SmallBatch*' > "$OUT/memcheck.txt" 2>&1; echo "memcheck rc $?"
  grep -E "ERROR SUMMARY|FAILED|PASSED" "$OUT/memcheck.txt" | head
  timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 "$here/starkv_cuda_latent_tests" --gtest_filter='LatentAttention.SmallBatchPagedCaches:LatentAttention.SmallBatchAuto*' > "$OUT/racecheck.txt" 2>&1; echo "racecheck rc $?"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|FAILED|PASSED|hazard" "$OUT/racecheck.txt" | head
  unset STARKV_LATENT_TEST_SMALL ;;
e2e)
  for small in 1 0; do
    STARKV_CUDA_LATENT_SMALL=$small STARKV_SHARED_DIR="$here/shared" timeout 240 "$here/bin/starkv_cuda_e2e_tests" \
      --gtest_filter='FusedLatent.*' > "$OUT/e2e_small$small.txt" 2>&1
    grep -E "OK \]|FAILED|PASSED|logit|top" "$OUT/e2e_small$small.txt" | head -20
  done
  for shape in llama2-7b llama3-8b; do
    for rate in 0.75 0; do
      bdl="/tmp/syn_${shape}_${rate}.skv"
      timeout 120 "$here/bin/starkv" pack --synthetic $shape --layers 2 --kv-compress $rate -o "$bdl" || continue
      for ctx in 4096 32768; do
        for small in 1 0; do
          [ $rate = 0 ] && [ $small = 0 ] && continue
          echo "== $shape kv-compress $rate ctx $ctx small-batch pass $small"
          STARKV_CUDA_LATENT_SMALL=$small STARKV_CUDA_DTYPE=bf16 timeout 120 "$here/bin/starkv" bench -m "$bdl" \
            --backend cuda --ctx $ctx --gen 64 2>&1 | grep -iE "ms/tok|token|floor|decode" | head -6
        done
      done
      rm -f "$bdl"
    done
  done 2>&1 | tee "$OUT/e2e_bench.txt" ;;
esac; done
true
