#!/usr/bin/env bash
# samples/desktop under a virtual X server (xvfb-run): the self-test types a
# prompt and clicks Send; the text view must hold exactly the prompt followed by
# the greedy story (the CLI's output for the same prompt and token count, and a
# prefix of the golden greedy story); Cancel must stop a generation early; the
# window's screenshot must be a valid, non-blank PNG.
#   test_desktop.sh DESKTOP_BIN CLI_BIN SHARED_DIR WORK_DIR
# Exits 77 (ctest: skipped) without the GTK 4 build or xvfb-run.
set -uo pipefail
bin="$1" cli="$2" shared="$3" work="$4"
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then echo "SKIP: samples/desktop not built (no GTK 4)"; exit 77; fi
if ! command -v xvfb-run >/dev/null; then echo "SKIP: xvfb-run not found (apt-get install xvfb xauth)"; exit 77; fi
model="$shared/models/stories260K.gguf"
golden="$shared/golden/stories260K_greedy_from_bos_256.txt"
rm -rf "$work" && mkdir -p "$work"
prompt="Once upon a time"
n=48
failed=0
fail() { echo "FAIL: $*"; failed=1; }

# run_app NAME ARGS...: the app under a fresh X server; its stdout in $work/NAME.out.
run_app() {
  local name="$1"; shift
  timeout 90 xvfb-run -a -s "-screen 0 1024x768x24" \
    "$bin" "$model" --self-test "$prompt" --dump-text "$work/$name.txt" "$@" \
    >"$work/$name.out" 2>"$work/$name.err"
  local rc=$?
  [ $rc -eq 0 ] || { fail "$name: exit code $rc"; cat "$work/$name.out" "$work/$name.err"; }
}
# field NAME KEY: a key=value of the app's "self-test:" line.
field() { grep -o "$2=[^ ]*" "$work/$1.out" | head -1 | cut -d= -f2; }
# same_as_cli NAME TOKENS: the text view equals `starkv run` for the same prompt.
same_as_cli() {
  "$cli" run --model "$model" --prompt "$prompt" -n "$2" --temp 0 --threads 1 >"$work/$1.cli" 2>/dev/null
  # The CLI ends its output with one newline; the text view does not.
  python3 - "$work/$1.txt" "$work/$1.cli" "$golden" <<'PY' || fail "$1: text view differs from the CLI or the golden story"
import sys
view = open(sys.argv[1], encoding="utf-8").read()
cli = open(sys.argv[2], encoding="utf-8").read()
cli = cli[:-1] if cli.endswith("\n") else cli
golden = open(sys.argv[3], encoding="utf-8").read()
print(f"text view: {len(view)} chars: {view[:60]!r}...")
if view != cli:
    print(f"CLI gave {len(cli)} chars: {cli!r}\ntext view: {view!r}"); sys.exit(1)
if not golden.startswith(view):
    print("the text view is not a prefix of the golden greedy story"); sys.exit(1)
PY
}

# 1. A full generation, and the screenshot.
run_app full -n "$n" --screenshot "$work/desktop.png"
gen=$(field full generated); stop=$(field full stop)
[ "$gen" = "$n" ] && [ "$stop" = max-tokens ] || fail "full: generated=$gen stop=$stop, expected $n max-tokens"
same_as_cli full "$n"
python3 "$here/check_png.py" "$work/desktop.png" 300 200 || failed=1

# 2. Cancel after 4 pieces of at most 200 (20 ms a piece: the whole story would take 4 s).
run_app cancel -n 200 --delay-ms 20 --cancel-after 4
gen=$(field cancel generated); stop=$(field cancel stop)
if [ "$stop" = cancelled ] && [ -n "$gen" ] && [ "$gen" -ge 4 ] && [ "$gen" -lt 200 ]; then
  echo "cancel: stopped after $gen tokens"
  same_as_cli cancel "$gen"
else
  fail "cancel: generated=$gen stop=$stop, expected 4..199 tokens and stop=cancelled"
fi

if [ $failed = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $failed
