#!/usr/bin/env bash
# CPack builds the .tar.gz and the .deb; the .deb's metadata is right (name,
# version, maintainer, Depends from dpkg-shlibdeps, shlibs) and it holds only
# the public files; extracted (dpkg-deb -x, no system-wide install) it builds
# and runs samples/c and samples/cpp like an installed package.
#   cpack_packages.sh BUILD_DIR SOURCE_DIR MODEL WORK_DIR
set -uo pipefail
build="$1" src="$2" model="$3" work="$4"
rm -rf "$work" && mkdir -p "$work"
for tool in cpack dpkg-deb dpkg-shlibdeps; do
  command -v $tool >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs dpkg-dev)"; exit 1; }
done
(cd "$work" && cpack --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1) \
  || { echo "FAIL: cpack"; cat "$work/cpack.log"; exit 1; }
deb=$(ls "$work"/out/starkv_*.deb 2>/dev/null | head -n1)
tgz=$(ls "$work"/out/starkv-*.tar.gz 2>/dev/null | head -n1)
[ -f "$deb" ] && [ -f "$tgz" ] || { echo "FAIL: missing package:"; ls "$work/out"; exit 1; }
echo "packages: $(basename "$deb") $(basename "$tgz")"

fail=0
info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = starkv ] || { echo "FAIL: Package: $(field Package)"; fail=1; }
[ "$(field Version)" = 0.1.0 ] || { echo "FAIL: Version: $(field Version)"; fail=1; }
grep -q '@' <<<"$(field Maintainer)" || { echo "FAIL: Maintainer: $(field Maintainer)"; fail=1; }
depends=$(field Depends)
for dep in libc6 libstdc++6 libzstd1 libpcre2-8-0 libxxhash0; do
  grep -q "\b$dep\b" <<<"$depends" || { echo "FAIL: Depends lacks $dep: $depends"; fail=1; }
done
grep -q shlibs <<<"$info" || { echo "FAIL: no shlibs control file"; fail=1; }
echo "Depends: $depends"

# Contents: the public files under /usr, nothing of the build.
files=$(dpkg-deb -c "$deb" | sed 's| -> .*||' | awk '{print $NF}' | grep -v '/$' | sed 's|^\./||' | sort)
for want in usr/bin/starkv usr/include/starkv/starkv.h usr/lib/libstarkv.so.0 usr/lib/libstarkv.so.0.1.0 \
  usr/lib/libstarkv.so usr/lib/pkgconfig/starkv.pc usr/lib/cmake/starkv/starkvConfig.cmake \
  usr/lib/cmake/starkv/starkvConfigVersion.cmake usr/lib/cmake/starkv/starkvTargets.cmake; do
  grep -qx "$want" <<<"$files" || { echo "FAIL: $want missing from the .deb"; fail=1; }
done
if grep -E 'internal|test|bench|capi|starkv_jni|\.a$' <<<"$files"; then echo "FAIL: unwanted files in the .deb"; fail=1; fi
# The tarball holds the same tree (without /usr).
tfiles=$(tar tzf "$tgz" | grep -v '/$' | sed -E 's|^[^/]+/||' | sort)
[ "$tfiles" = "$(sed 's|^usr/||' <<<"$files")" ] || { echo "FAIL: the .tar.gz and the .deb differ:"; \
  diff <(sed 's|^usr/||' <<<"$files") <(echo "$tfiles"); fail=1; }
[ $fail = 0 ] || exit 1

dpkg-deb -x "$deb" "$work/root" || { echo "FAIL: dpkg-deb -x"; exit 1; }
. "$(dirname "$0")/build_samples.sh"
build_and_run_samples "$work/root/usr" "$work/samples" "$src" "$model" || exit 1
echo "1 passed, 0 failed"
