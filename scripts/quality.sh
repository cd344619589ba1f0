#!/usr/bin/env bash
# STAR-KV quality sweep (docs/quality.md): packs MODEL at each rate and rank
# strategy, calibrating on CALIB, and measures perplexity on the first DOCS
# paragraphs of EVAL at context CTX.
#   scripts/quality.sh [MODEL] [CALIB] [EVAL]   (env: STARKV_SHARED, DOCS, CTX, RATES, STRATEGIES, CALIB_TOKENS, SKIP, WIKI)
# WIKI=1: EVAL has one paragraph per line (WikiText-2's wiki.test.raw, the
# default then): its lines longer than 400 characters that are not headings
# become the paragraphs, the first half evaluated, the second half calibrating.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${STARKV_SHARED:-$root/../shared}"
model="${1:-$shared/models/stories260K.gguf}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -n "${WIKI:-}" ]; then
  raw="${3:-$shared/data/wiki.test.raw}"
  eval_text="$work/wiki_eval.txt"
  python3 - "$raw" "$eval_text" "$work/wiki_calib.txt" <<'PY'
import sys
paras = [l.strip() for l in open(sys.argv[1], encoding='utf-8') if len(l.strip()) > 400 and not l.strip().startswith('=')]
half = len(paras) // 2
open(sys.argv[2], 'w', encoding='utf-8').write("\n\n".join(paras[:half]) + "\n")
open(sys.argv[3], 'w', encoding='utf-8').write("\n\n".join(paras[half:]) + "\n")
PY
  set -- "$model" "${2:-$work/wiki_calib.txt}"
else
  eval_text="${3:-$shared/data/tinystories_val.txt}"
fi
if [ -n "${2:-}" ]; then
  calib="$2"
else
  # Default: the second half of the evaluation file's paragraphs (the first 200 are evaluated).
  calib="$work/calib.txt"
  python3 - "$eval_text" "$calib" <<'PY'
import re, sys
paras = [p for p in re.split(r'\n\s*\n', open(sys.argv[1], encoding='utf-8').read()) if p.strip()]
open(sys.argv[2], 'w', encoding='utf-8').write("\n\n".join(paras[len(paras) // 2:]) + "\n")
PY
fi
bin="$root/build/starkv"
docs="${DOCS:-200}" ctx="${CTX:-512}"
ppl() { "$bin" perplexity -m "$1" -f "$eval_text" --docs "$docs" -c "$ctx" | awk '/^perplexity/ {print $2}'; }
base=$(ppl "$model")
echo "| rate | strategy | KV removed (compressed layers) | K/V params removed | bytes/token (all layers) | perplexity | vs uncompressed |"
echo "|---|---|---|---|---|---|---|"
echo "| 0 | none | 0% | 0% | - | $base | - |"
for rate in ${RATES:-0.5 0.6 0.75}; do
  for st in ${STRATEGIES:-uniform energy adaptive}; do
    out="$work/m_${rate}_${st}.skv"
    args=(--kv-compress "$rate" --calib "$calib" --rank-strategy "$st")
    [ -n "${CALIB_TOKENS:-}" ] && args+=(--calib-tokens "$CALIB_TOKENS")  # default: pack's (16384)
    [ -n "${SKIP:-}" ] && args+=(--skip-layers "$SKIP")
    "$bin" pack -m "$model" -o "$out" --zstd-level 1 "${args[@]}" >/dev/null
    p=$(ppl "$out")
    read -r kvr par lat full < <("$bin" inspect "$out" | python3 -c '
import sys, json
for line in sys.stdin:
    if line.startswith("compression: "):
        b = json.loads(line[len("compression: "):])["budget"]
        print(b["kv_removed"], b["kv_params_removed"], b["latent_per_token"], b["uncompressed_per_token"])')
    bpt=$("$bin" run -m "$out" -p "Once" -n 4 --seed 1 2>&1 >/dev/null | awk '/kv memory per token/ {print $5 " / " $8}')
    python3 -c "import sys; r,s,k,p,pp,b,base=sys.argv[1:]; print(f'| {r} | {s} | {100*float(k):.1f}% | {100*float(p):.1f}% | {b} | {float(pp):.4f} | {100*(float(pp)/float(base)-1):+.1f}% |')" \
      "$rate" "$st" "$kvr" "$par" "$p" "$bpt" "$base"
  done
done
