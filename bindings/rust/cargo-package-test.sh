#!/usr/bin/env bash
# `cargo package` accepts both crates, offline, with verification, and the
# packaged crates work on their own (outside this repository):
#  1. starkv-sys is packaged; cargo verifies it by building the .crate alone
#     (its header travels inside: include/starkv/starkv.h);
#  2. the packaged starkv-sys joins the local directory registry (Debian's
#     crates), so that starkv, packaged next, is verified against the packaged
#     starkv-sys rather than the path dependency;
#  3. both .crate files are extracted and tested against the built libstarkv:
#     starkv-sys's own tests, and starkv's generation tests (golden story).
#   cargo-package-test.sh LIB_DIR SHARED_DIR WORK_DIR
# CARGO, STARKV_CARGO_REGISTRY, STARKV_CLI as for cargo-offline.sh / rust.cargo_test.
# Exits 77 (ctest: skipped) when cargo is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lib="$1" shared="$2" work="$3"
cargo="${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}"
[ -x "$cargo" ] || { echo "SKIP: cargo not found"; exit 77; }
debian="${STARKV_CARGO_REGISTRY:-/usr/share/cargo/registry}"
# The build products survive between runs (bindgen: ~30 s cold); the rest is new.
target="$work/target"
rm -rf "$work/registry" "$work/extracted" && mkdir -p "$work/registry" "$work/extracted"
# The crates must find their header inside themselves.
unset STARKV_INCLUDE_DIR
export STARKV_LIB_DIR="$lib" STARKV_SHARED_DIR="$shared"

# One directory registry for every step (the same source, so bindgen and its
# dependencies build once): Debian's crates, then also the packaged starkv-sys.
reg="$work/registry"
for d in "$debian"/*/; do ln -s "${d%/}" "$reg/"; done
# cargo_local SUBCOMMAND ARGS...: cargo with crates-io replaced by that registry.
cargo_local() {
  local sub="$1"; shift
  "$cargo" "$sub" --config 'source.crates-io.replace-with="local"' \
    --config "source.local.directory=\"$reg\"" --config net.offline=true "$@"
}

cd "$here"
echo "== cargo package starkv-sys"
cargo_local package -p starkv-sys --allow-dirty --target-dir "$target"
sys_crate="$target/package/starkv-sys-0.1.0.crate"
# The header is in the .crate as a file (in the repository it is a link).
tar tvzf "$sys_crate" | grep -E '^-.* starkv-sys-0\.1\.0/include/starkv/starkv\.h$' >/dev/null \
  || { echo "FAIL: starkv.h is not a regular file in $sys_crate"; tar tvzf "$sys_crate"; exit 1; }

tar xzf "$sys_crate" -C "$reg"
printf '{"files":{},"package":"%s"}' "$(sha256sum "$sys_crate" | cut -d' ' -f1)" \
  >"$reg/starkv-sys-0.1.0/.cargo-checksum.json"

echo "== cargo package starkv (verified against the packaged starkv-sys)"
cargo_local package -p starkv --allow-dirty --target-dir "$target"
crate="$target/package/starkv-0.1.0.crate"

echo "== the extracted crates against $lib"
tar xzf "$sys_crate" -C "$work/extracted"
tar xzf "$crate" -C "$work/extracted"
(cd "$work/extracted/starkv-sys-0.1.0" && cargo_local test --target-dir "$target")
(cd "$work/extracted/starkv-0.1.0" && cargo_local test --test generation --target-dir "$target")
echo "1 passed, 0 failed"
