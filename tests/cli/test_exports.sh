#!/usr/bin/env bash
# The shared library exports exactly the functions declared in the public
# header: nothing of the C++ runtime leaks, and nothing declared is missing.
set -u
lib="$1"; header="$2"
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" {sub(/@.*/, "", $3); print $3}' | sort -u)
declared=$(grep -oE 'STARKV_API[^(]*\b(starkv_[a-z0-9_]+)\s*\(' "$header" | grep -oE 'starkv_[a-z0-9_]+\s*\($' | tr -d ' (' | sort -u)
fail=0
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
[ -n "$extra" ] && { echo "exported but not declared:"; echo "$extra"; fail=1; }
[ -n "$missing" ] && { echo "declared but not exported:"; echo "$missing"; fail=1; }
n=$(echo "$declared" | wc -l)
if [ $fail = 0 ]; then echo "1 passed, 0 failed ($n functions exported)"; else echo "0 passed, 1 failed"; fi
exit $fail
