#!/usr/bin/env bash
# `starkv bench` on synthetic Llama-2-7B / Llama-3-8B shaped bundles (random
# weights, LAYERS layers, plain and STAR-KV 0.5), fp32 and bf16 on the device.
# Run by run_gpu.sh (bench step); bundles are written to $WORK (default /tmp),
# results to $OUT/bench_*.json. Usage: bench_synthetic.sh [LAYERS=8] [CTX=512] [GEN=64]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here/out}"
WORK="${WORK:-/tmp}"
layers="${1:-8}" ctx="${2:-512}" gen="${3:-64}"
starkv="$here/bin/starkv"
for shape in llama2-7b llama3-8b; do
  for rate in 0 0.5; do
    b="$WORK/syn_${shape}_l${layers}_kv${rate}.skv"
    timeout 120 "$starkv" pack --synthetic $shape --layers $layers --kv-compress $rate -o "$b" || continue
    for dt in f32 bf16; do
      [ $shape = llama3-8b ] && [ $dt = f32 ] && continue
      echo "== $shape layers $layers kv-compress $rate dtype $dt ctx $ctx gen $gen"
      STARKV_CUDA_DTYPE=$dt timeout 120 "$starkv" bench -m "$b" --backend cuda --ctx $ctx --gen $gen \
        --json "$OUT/bench_${shape}_kv${rate}_${dt}.json"
    done
    rm -f "$b"
  done
done
