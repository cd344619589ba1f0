#!/usr/bin/env bash
# Copies the single-pass GPU programs and scripts into one folder for run_small_gpu.sh.
# Usage: stage_small.sh BUILD_DIR DEST
set -euo pipefail
build="$1" dest="$2"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dest"
cp "$build"/cuda/starkv_cuda_latent_tests "$build"/cuda/starkv_bench_latent_attention "$dest/"
cp "$here/run_small_gpu.sh" "$here/sdpa_baseline.py" "$dest/"
# For the e2e step: the backend, the CLI, the e2e tests, host libraries a bare GPU image may lack.
mkdir -p "$dest/bin" "$dest/lib"
cp "$build"/cuda/starkv_cuda_e2e_tests "$build"/starkv "$dest/bin/"
cp -P "$build"/libstarkv.so* "$build"/libstarkv_cuda.so "$dest/lib/"
for l in libpcre2-8.so.0 libzstd.so.1 libxxhash.so.0; do cp -L "/lib/x86_64-linux-gnu/$l" "$dest/lib/"; done
