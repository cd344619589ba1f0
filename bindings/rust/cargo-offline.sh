#!/usr/bin/env bash
# Runs cargo on the bindings workspace without network access: crate sources come
# from Debian's packaged registry (/usr/share/cargo/registry, librust-*-dev, e.g.
# librust-bindgen-dev). The crates' Cargo.toml files stay standard; the source
# replacement lives only on this command line.
#   bindings/rust/cargo-offline.sh test            # STARKV_LIB_DIR defaults to <repo>/build
#   STARKV_LIB_DIR=/path/to/build bindings/rust/cargo-offline.sh run --example generate
# CARGO (default: cargo on PATH, else ~/.cargo/bin/cargo) and
# STARKV_CARGO_REGISTRY (default /usr/share/cargo/registry) can be overridden.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo="${CARGO:-}"
if [ -z "$cargo" ]; then
  cargo="$(command -v cargo || true)"
  [ -n "$cargo" ] || cargo="$HOME/.cargo/bin/cargo"
fi
registry="${STARKV_CARGO_REGISTRY:-/usr/share/cargo/registry}"
cd "$here"
# The --config flags go after the subcommand: external subcommands (cargo clippy)
# ignore them before it.
pre=()
if [[ "${1:-}" == +* ]]; then pre+=("$1"); shift; fi
if [[ $# -gt 0 && "$1" != -* ]]; then pre+=("$1"); shift; fi
exec "$cargo" "${pre[@]}" \
  --config 'source.crates-io.replace-with="debian"' \
  --config "source.debian.directory=\"$registry\"" \
  --config net.offline=true \
  "$@"
