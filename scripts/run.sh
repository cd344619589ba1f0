#!/usr/bin/env bash
# Main job: set up, build, and generate a story.
#   scripts/run.sh [MODEL] [-- extra `starkv run` arguments]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$root/../shared/models/stories260K.gguf}"
shift || true
[ "${1:-}" = "--" ] && shift
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
exec "$root/build/starkv" run --model "$model" --prompt "${PROMPT:-Once upon a time}" -n "${N_TOKENS:-200}" "$@"
