#!/usr/bin/env bash
# Copies a build's GPU test programs, libraries and the test model into one
# folder (for run_gpu.sh on a GPU machine). Usage: stage.sh BUILD_DIR DEST SHARED_DIR
set -euo pipefail
build="$1" dest="$2" shared="$3"
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/lib" "$dest/shared/models" "$dest/shared/data"
cp "$build"/cuda/starkv_cuda_kernel_tests "$build"/cuda/starkv_cuda_e2e_tests "$build"/cuda/starkv_cuda_synthetic "$build"/starkv "$dest/bin/"
cp -P "$build"/libstarkv.so* "$build"/libstarkv_cuda.so "$dest/lib/"
# Host libraries a bare GPU image may lack.
for l in libpcre2-8.so.0 libzstd.so.1 libxxhash.so.0; do cp -L "/lib/x86_64-linux-gnu/$l" "$dest/lib/"; done
cp "$shared/models/stories260K.gguf" "$dest/shared/models/"
cp "$shared/data/tinystories_val.txt" "$dest/shared/data/"  # calibration text of the STAR-KV test
cp "$(dirname "$0")/run_gpu.sh" "$(dirname "$0")/bench_synthetic.sh" "$dest/"
