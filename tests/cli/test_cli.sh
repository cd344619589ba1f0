#!/usr/bin/env bash
# The starkv command line's contract: exit codes, stdout = prompt + generated
# text, diagnostics on stderr only, one-line error messages.
# Usage: test_cli.sh STARKV_BIN SHARED_DIR
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 STARKV_BIN SHARED_DIR" >&2
    exit 2
fi
BIN=$1
SHARED=$2
MODEL=$SHARED/models/stories260K.gguf
GOLDEN=$SHARED/golden/stories260K_greedy_from_bos_256.txt
TEXT=$SHARED/data/tinystories_val.txt
TMP=$(mktemp -d "${TMPDIR:-/tmp}/starkv_cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }

for f in "$BIN" "$MODEL" "$GOLDEN" "$TEXT"; do
    if [ ! -e "$f" ]; then
        echo "missing $f" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
done

# run CMD...: runs the binary with its stdout/stderr in files; sets $rc.
run() {
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
}

# ---- run: prompt echo, greedy generation, stats on stderr ------------------
PROMPT="Once upon a time"
run run --model "$MODEL" --prompt "$PROMPT" -n 20 --temp 0 --threads 1
if [ $rc -eq 0 ]; then pass "run exits 0"; else fail "run exits 0" "rc=$rc: $(head -c 300 "$TMP/err")"; fi
if [ "$(head -c ${#PROMPT} "$TMP/out")" = "$PROMPT" ]; then
    pass "run stdout starts with the prompt"
else
    fail "run stdout starts with the prompt" "$(head -c 80 "$TMP/out")"
fi
if [ "$(wc -c <"$TMP/out")" -gt $((${#PROMPT} + 20)) ]; then
    pass "run generates text after the prompt"
else
    fail "run generates text after the prompt" "$(cat "$TMP/out")"
fi
if grep -q "tokens/s" "$TMP/err"; then pass "run prints stats on stderr"; else fail "run prints stats on stderr"; fi
if grep -q "tokens/s" "$TMP/out"; then fail "no stats on stdout"; else pass "no stats on stdout"; fi
cp "$TMP/out" "$TMP/greedy20_a"
run run --model "$MODEL" --prompt "$PROMPT" -n 20 --temp 0 --threads 2
if [ $rc -eq 0 ] && cmp -s "$TMP/out" "$TMP/greedy20_a"; then
    pass "greedy run is deterministic across thread counts"
else
    fail "greedy run is deterministic across thread counts"
fi

# ---- run: greedy from BOS equals the golden text ----------------------------
run run --model "$MODEL" -n 256 --temp 0 --ignore-eos
if [ $rc -eq 0 ] && cmp -s "$TMP/out" "$GOLDEN"; then
    pass "greedy 256 from BOS equals the golden file"
else
    fail "greedy 256 from BOS equals the golden file" "rc=$rc; $(cmp "$TMP/out" "$GOLDEN" 2>&1 | head -1)"
fi
run run --model "$MODEL" --prompt "" -n 256 --temp 0 --ignore-eos
if [ $rc -eq 0 ] && cmp -s "$TMP/out" "$GOLDEN"; then
    pass "greedy with --prompt \"\" equals the golden file"
else
    fail "greedy with --prompt \"\" equals the golden file" "rc=$rc"
fi

# ---- run: seeded sampling is reproducible ------------------------------------
run run --model "$MODEL" --prompt "$PROMPT" -n 40 --temp 0.9 --seed 42
cp "$TMP/out" "$TMP/seed_a"
rc_a=$rc
run run --model "$MODEL" --prompt "$PROMPT" -n 40 --temp 0.9 --seed 42
if [ $rc_a -eq 0 ] && [ $rc -eq 0 ] && cmp -s "$TMP/out" "$TMP/seed_a"; then
    pass "same seed, same text"
else
    fail "same seed, same text"
fi

# ---- perplexity ---------------------------------------------------------------
run perplexity --model "$MODEL" --text "$TEXT" --docs 20 --ctx 512
last=$(tail -n 1 "$TMP/out")
if [ $rc -eq 0 ] && [[ "$last" =~ ^perplexity:\ ([0-9.]+)\ over\ ([0-9]+)\ tokens$ ]]; then
    ppl=${BASH_REMATCH[1]}
    if awk -v p="$ppl" 'BEGIN { exit !(p >= 2 && p <= 10) }'; then
        pass "perplexity line ($ppl) in [2, 10]"
    else
        fail "perplexity in [2, 10]" "$ppl"
    fi
    if [ "${BASH_REMATCH[2]}" -gt 100 ]; then pass "perplexity counts tokens"; else fail "perplexity counts tokens" "$last"; fi
else
    fail "perplexity last line format" "rc=$rc; last line: '$last'; $(head -c 300 "$TMP/err")"
fi

# ---- perplexity --backend cpu: the default backend's number ---------------------
ppl_default=$(tail -1 "$TMP/out")
run perplexity --model "$MODEL" --text "$TEXT" --docs 20 --ctx 512 --backend cpu
if [ $rc -eq 0 ] && [ "$(tail -1 "$TMP/out")" = "$ppl_default" ]; then pass "perplexity --backend cpu"; else fail "perplexity --backend cpu" "rc=$rc"; fi

# ---- info ------------------------------------------------------------------------
run info --model "$MODEL"
if [ $rc -eq 0 ] && grep -qx "tensors: 48" "$TMP/out"; then pass "info lists tensors: 48"; else fail "info lists tensors: 48" "rc=$rc"; fi
if grep -q "^n_layer: 5$" "$TMP/out" && grep -q "^n_head_kv: 4$" "$TMP/out"; then
    pass "info lists the dims"
else
    fail "info lists the dims"
fi

# ---- bench on the CPU: table on stdout, JSON whose KV bytes match the tokens held ----
run bench --model "$MODEL" --backend cpu --ctx 16 --gen 8 --threads 1 --json "$TMP/bench.json"
json_num() { grep -o "\"$1\": [0-9.e+-]*" "$TMP/bench.json" | head -1 | sed 's/.*: //'; }
if [ $rc -eq 0 ] && grep -q "^decode tokens/s" "$TMP/out" && [ -s "$TMP/bench.json" ]; then
    per_token=$(json_num kv_bytes_per_token)
    in_use=$(json_num kv_bytes_in_use)
    decode=$(json_num decode_tokens_per_s)
    if [ -n "$per_token" ] && [ "$in_use" = "$((per_token * 24))" ] && awk "BEGIN{exit !($decode > 0)}"; then
        pass "bench: decode $decode tok/s, KV $in_use bytes = 24 tokens x $per_token"
    else
        fail "bench JSON" "per_token=$per_token in_use=$in_use decode=$decode"
    fi
else
    fail "bench runs" "rc=$rc; $(head -c 300 "$TMP/err")"
fi

# ---- bad arguments: non-zero, one line on stderr, nothing on stdout, no signal ------
printf 'this is not a gguf file\n' >"$TMP/not_gguf.gguf"
: >"$TMP/empty.gguf"
expect_usage_error() {
    local name=$1
    shift
    run "$@"
    local errlines
    errlines=$(grep -c '' "$TMP/err")
    if [ $rc -eq 0 ]; then
        fail "$name: non-zero exit" "exit 0"
    elif [ $rc -ge 128 ]; then
        fail "$name: not killed by a signal" "rc=$rc"
    elif [ -s "$TMP/out" ]; then
        fail "$name: nothing on stdout" "$(head -c 200 "$TMP/out")"
    elif [ "$errlines" -ne 1 ]; then
        fail "$name: one line on stderr" "$errlines lines: $(head -c 300 "$TMP/err" | tr '\n' '|')"
    else
        pass "$name (rc=$rc): $(cat "$TMP/err")"
    fi
}
expect_usage_error "run without --model" run --prompt "hi" -n 5
expect_usage_error "unknown flag" run --model "$MODEL" --no-such-flag
expect_usage_error "nonexistent model" run --model "$TMP/nope.gguf" --prompt "hi" -n 5
expect_usage_error "non-GGUF file" run --model "$TMP/not_gguf.gguf" --prompt "hi" -n 5
expect_usage_error "empty file" info --model "$TMP/empty.gguf"
expect_usage_error "directory as model" info --model "$TMP"
expect_usage_error "--temp -1" run --model "$MODEL" --prompt "hi" -n 5 --temp -1
expect_usage_error "-n not a number" run --model "$MODEL" -n lots
expect_usage_error "no subcommand"
expect_usage_error "unknown subcommand" frobnicate
expect_usage_error "perplexity without --text" perplexity --model "$MODEL"
expect_usage_error "perplexity on a missing text" perplexity --model "$MODEL" --text "$TMP/missing.txt"
expect_usage_error "info on a missing model" info --model "$TMP/nope.gguf"
expect_usage_error "pack without --model or --synthetic" pack --out "$TMP/x.skv"
expect_usage_error "pack --synthetic of an unknown shape" pack --synthetic gpt2 --out "$TMP/x.skv"
expect_usage_error "pack --synthetic with --model" pack --synthetic llama2-7b --model "$MODEL" --out "$TMP/x.skv"
expect_usage_error "bench without --model" bench

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
