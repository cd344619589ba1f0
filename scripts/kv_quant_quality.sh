#!/usr/bin/env bash
# Quantized STAR-KV latents (docs/quality.md, last section): packs MODEL at
# RATE with fp32 latents and with --kv-bits 8/4/3 (Hadamard on/off, mixed vs
# uniform bits), calibrating on CALIB, and measures perplexity on the first
# DOCS paragraphs of EVAL at context CTX, with the true KV bytes per token and
# the reduction against an fp16 uncompressed cache.
#   scripts/kv_quant_quality.sh [MODEL] [EVAL] [CALIB]
#   env: STARKV_BIN, RATE (0.75), STRATEGY (adaptive), SKIP (default skip), DOCS (200), CTX (512),
#        CALIB_TOKENS (4096), CONFIGS ("fp32 8 4 3 4:none 3:none 4:uniform 3:uniform")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${STARKV_SHARED:-$root/../shared}"
model="${1:-$shared/models/stories260K.gguf}"
eval_text="${2:-$shared/data/tinystories_val.txt}"
bin="${STARKV_BIN:-$root/build/starkv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
calib="${3:-}"
if [ -z "$calib" ]; then
  # Default: the second half of the evaluation file's paragraphs (the first DOCS are evaluated).
  calib="$work/calib.txt"
  python3 - "$eval_text" "$calib" <<'PY'
import re, sys
paras = [p for p in re.split(r'\n\s*\n', open(sys.argv[1], encoding='utf-8').read()) if p.strip()]
open(sys.argv[2], 'w', encoding='utf-8').write("\n\n".join(paras[len(paras) // 2:]) + "\n")
PY
fi
docs="${DOCS:-200}" ctx="${CTX:-512}" rate="${RATE:-0.75}"
ppl() { "$bin" perplexity -m "$1" -f "$eval_text" --docs "$docs" -c "$ctx" | awk '/^perplexity/ {print $2}'; }
kvline() { "$bin" run -m "$1" -p "Once" -n 2 --seed 1 2>&1 >/dev/null | awk '/^kv bytes per token/ {gsub(";", ""); print $8, $11, $13}'; }
base=$(ppl "$model")
echo "uncompressed perplexity: $base (rate $rate, strategy ${STRATEGY:-adaptive}, skip ${SKIP:-default})"
echo "| latents | block | Hadamard | bits split | code bits/channel | KV bytes/token | vs fp16 uncompressed | perplexity | vs fp32 latents |"
echo "|---|---|---|---|---|---|---|---|---|"
ref=""
for cfg in ${CONFIGS:-fp32 8 4 3 4:none 3:none 4:uniform 3:uniform}; do
  bits="${cfg%%:*}" opt=""
  [ "$cfg" != "$bits" ] && opt="${cfg#*:}"
  out="$work/m.skv"
  args=(--kv-compress "$rate" --calib "$calib" --rank-strategy "${STRATEGY:-adaptive}" --calib-tokens "${CALIB_TOKENS:-4096}")
  [ -n "${SKIP:-}" ] && args+=(--skip-layers "$SKIP")
  hb="auto" mixed="mixed"
  if [ "$bits" != "fp32" ]; then
    args+=(--kv-bits "$bits")
    [ "$opt" = "none" ] && { args+=(--hadamard-block none); hb="none"; }
    [ "$opt" = "uniform" ] && { args+=(--kv-bits-uniform); mixed="uniform"; }
  fi
  "$bin" pack -m "$model" -o "$out" --zstd-level 1 "${args[@]}" >/dev/null
  p=$(ppl "$out")
  read -r bpt fp16 red < <(kvline "$out")
  cb=$("$bin" inspect "$out" | python3 -c '
import sys, json
for line in sys.stdin:
    if line.startswith("compression: "):
        q = json.loads(line[len("compression: "):]).get("kv_quant")
        print("%.2f" % q["code_bits_per_channel"] if q else "32")')
  [ -z "$ref" ] && ref="$p"
  python3 -c "import sys; b,hb,mx,cb,bpt,fp16,red,p,ref=sys.argv[1:]; \
print(f'| {b} | {\"-\" if b==\"fp32\" else \"auto\"} | {\"-\" if b==\"fp32\" else (\"off\" if hb==\"none\" else \"on\")} | {\"-\" if b==\"fp32\" else mx} | {cb} | {bpt} | {red} | {float(p):.4f} | {100*(float(p)/float(ref)-1):+.2f}% |')" \
    "$bits" "$hb" "$mixed" "$cb" "$bpt" "$fp16" "$red" "$p" "$ref"
done
