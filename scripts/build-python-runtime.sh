#!/usr/bin/env bash
# Builds the Python runtime component, sdk-python/out/palisade-python.wasm:
# CPython for WASI (from componentize-py, pinned below) with the Python SDK
# (sdk-python/palisade), the glue of sdk-python/component/app.py and the
# strategy module allowlist pre-imported, against the WIT world
# host-api/wit/palisade.wit. Every Python strategy runs in an instance of it.
#
# Idempotent: installs componentize-py with pip when missing, and rebuilds
# only when an input changed (a stamp of the inputs' hashes sits beside the
# output). Prints the component's path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out_dir="$root/sdk-python/out"
out="$out_dir/palisade-python.wasm"
stamp="$out_dir/palisade-python.stamp"
version=0.25.1
say() { printf '==> %s\n' "$*" >&2; }

if ! command -v componentize-py >/dev/null 2>&1 ||
    [ "$(componentize-py --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    say "installing componentize-py $version with pip (builds the Python runtime component)"
    python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$version" >&2
    hash -r
fi

inputs() {
    (cd "$root" && find host-api/wit sdk-python/palisade sdk-python/component \
        -type f \( -name '*.py' -o -name '*.wit' \) -not -path '*/__pycache__/*' | LC_ALL=C sort |
        xargs sha256sum)
    echo "componentize-py $version"
}
want=$(inputs | sha256sum | cut -d' ' -f1)
if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$out"
    exit 0
fi

say "building the Python runtime component with componentize-py $version (CPython for WASI)"
mkdir -p "$out_dir"
tmp="$out_dir/.palisade-python.wasm.tmp"
(cd "$root" && componentize-py -d host-api/wit/palisade.wit -w python-strategy componentize \
    -p sdk-python -p sdk-python/component app -o "$tmp" >&2)
mv "$tmp" "$out"
echo "$want" > "$stamp"
say "built $out ($(stat -c %s "$out") bytes)"
echo "$out"
