#!/usr/bin/env bash
# Builds the wheel offline from a copy of bindings/python (the source tree stays
# clean), installs it into a scratch folder and generates with it from elsewhere.
#   wheel_test.sh PYTHON REPO WORKDIR MODEL
set -euo pipefail
py="$1" repo="$2" work="$3" model="$4"
rm -rf "$work" && mkdir -p "$work"
cp -r "$repo/bindings/python" "$work/src"
rm -rf "$work/src/build" "$work/src/"*.egg-info
(cd "$work/src" && STARKV_SOURCE_DIR="$repo" "$py" -m pip wheel . --no-deps --no-build-isolation -w "$work/dist" -q)
whl=$(ls "$work"/dist/starkv-*.whl)
listing=$("$py" -m zipfile -l "$whl")
grep -q "starkv/libstarkv.so" <<<"$listing" || { echo "libstarkv missing from $whl"; exit 1; }
"$py" -m pip install -q --no-deps --target "$work/site" "$whl" 2>/dev/null
# The extension finds libstarkv beside itself ($ORIGIN), not in the build tree.
ext=$(ls "$work"/site/starkv/_capi*.so)
readelf -d "$ext" | grep -E 'R(UN)?PATH' | grep -qF '[$ORIGIN]' || { echo "extension rpath is not \$ORIGIN:"; readelf -d "$ext" | grep PATH; exit 1; }
ldd "$ext" | grep -q "libstarkv.so.0 => $work/site/starkv/libstarkv.so.0" || { echo "libstarkv not resolved beside the extension:"; ldd "$ext"; exit 1; }
cd "$work"
PYTHONPATH="$work/site" "$py" - "$model" <<'PY'
import sys, starkv
assert starkv.__file__.startswith(sys.path[0]) or "site" in starkv.__file__, starkv.__file__
with starkv.Model(sys.argv[1]) as m, m.context() as c:
    text = c.complete("Once upon a time", max_tokens=16, temperature=0)
assert text.startswith(", there was"), text
print("wheel ok:", starkv.__file__)
PY
