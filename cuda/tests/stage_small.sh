#!/usr/bin/env bash
# Copies the single-pass GPU programs and scripts into one folder for run_small_gpu.sh.
# Usage: stage_small.sh BUILD_DIR DEST
set -euo pipefail
build="$1" dest="$2"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dest"
cp "$build"/cuda/starkv_cuda_latent_tests "$build"/cuda/starkv_bench_latent_attention "$dest/"
cp "$here/run_small_gpu.sh" "$here/sdpa_baseline.py" "$dest/"
