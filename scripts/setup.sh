#!/usr/bin/env bash
# Installs the Debian packages starkv builds with. Idempotent: when everything
# is present it only checks (well under a second).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config  # toolchain
  libzstd-dev                       # bundle compression
  libeigen3-dev                     # STAR-KV calibration (SVD, eigendecomposition)
  libxxhash-dev                     # bundle checksums
  nlohmann-json3-dev                # config.json, tokenizer.json, bundle metadata
  libcli11-dev                      # the starkv command line
  libpcre2-dev                      # byte-level BPE pre-tokenizer regexes
  libgtest-dev                      # tests
  libbenchmark-dev                  # CPU benchmarks
  libclang-dev                      # Rust bindings: bindgen parses starkv.h (cargo itself: rustup, ~/.cargo/bin)
  librust-bindgen-dev               # Rust bindings: the bindgen crate, offline (/usr/share/cargo/registry)
  swig                              # Python and Java bindings (generated wrappers)
  python3-dev python3-numpy python3-pytest  # Python binding, its tests (Debian's /usr/bin/python3)
  default-jdk-headless junit5       # Java binding (JNI, javac/jar), its JUnit 5 tests
  dpkg-dev file                     # CPack .deb: dpkg-shlibdeps computes Depends
  doxygen                           # API reference from the header (docs/Doxyfile)
  clang                             # libFuzzer targets (scripts/fuzz.sh; brings the clang runtimes)
  libgtk-4-dev                      # samples/desktop (GTK 4 chat window; optional, built when found)
  xvfb xauth fonts-dejavu-core      # samples/desktop's test: a virtual X server (xvfb-run) and a font
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
