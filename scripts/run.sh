#!/usr/bin/env bash
# Main job: set up, build, pack the model with the STAR-KV low-rank KV cache
# (calibrated on text from ../shared/data) and generate a story from the
# bundle; stderr ends with the KV memory per token against the plain cache.
#   scripts/run.sh [MODEL] [-- extra `starkv run` arguments]
#   env: KV_RATE (default 0.5; 0 = no compression), CALIB, PROMPT, N_TOKENS
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$root/../shared/models/stories260K.gguf}"
shift || true
[ "${1:-}" = "--" ] && shift
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
rate="${KV_RATE:-0.5}"
if [ "$rate" != "0" ]; then
  bundle="$root/build/$(basename "${model%.*}").kv${rate}.skv"
  "$root/build/starkv" pack --model "$model" --out "$bundle" --kv-compress "$rate" \
    --calib "${CALIB:-$root/../shared/data/tinystories_val.txt}" >&2
  model="$bundle"
fi
exec "$root/build/starkv" run --model "$model" --prompt "${PROMPT:-Once upon a time}" -n "${N_TOKENS:-200}" "$@"
