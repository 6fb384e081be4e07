#!/usr/bin/env bash
# Builds the AssemblyScript strategies of guest-examples/assemblyscript/ into
# guest-examples/out/ (today one: sma_cross.ts -> sma_cross_as.wasm), with the
# compiler pinned in its package.json / package-lock.json (assemblyscript
# 0.28.20, from the npm registry), then appends the `palisade.manifest` custom
# section from manifest.json (scripts/wasm-add-section.py).
#
# Idempotent: runs `npm ci` only when node_modules/ lacks the pinned compiler,
# and rebuilds only when an input (the sources, asconfig.json, manifest.json,
# the package files, this script or the section tool) changed since the last
# build (their hash is kept next to the module). Needs Node.js >= 20 and npm,
# which the project's machines have.
#
# What it deliberately does not do: validate the module (that is the
# sandbox's job: `palisade validate guest-examples/out/sma_cross_as.wasm`,
# and tests/all/assemblyscript.rs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/guest-examples/assemblyscript"
out="$root/guest-examples/out"
module="$out/sma_cross_as.wasm"
stamp="$out/sma_cross_as.inputs"
say() { printf '==> %s\n' "$*" >&2; }

inputs_hash() {
    (cd "$root" && sha256sum \
        guest-examples/assemblyscript/*.ts \
        guest-examples/assemblyscript/asconfig.json \
        guest-examples/assemblyscript/manifest.json \
        guest-examples/assemblyscript/package.json \
        guest-examples/assemblyscript/package-lock.json \
        scripts/build-assemblyscript.sh \
        scripts/wasm-add-section.py) | sha256sum | cut -d' ' -f1
}

hash=$(inputs_hash)
if [ -f "$module" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    # Touched, so that a module checked up to date is not older than its
    # sources (runtime/testkit/build.rs compares times).
    touch "$module"
    say "AssemblyScript guests are up to date (${module#"$root"/})"
    exit 0
fi

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "building the AssemblyScript guests needs Node.js >= 20 and npm" >&2
    exit 1
}
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "assemblyscript 0.28 needs Node.js >= 20, this is $(node --version)" >&2
    exit 1
fi

pinned=$(node -p 'require(process.argv[1]).devDependencies.assemblyscript' "$src/package.json")
installed=$(node -p 'try { require(process.argv[1]).version } catch (e) { "" }' \
    "$src/node_modules/assemblyscript/package.json")
if [ "$installed" != "$pinned" ]; then
    say "installing assemblyscript $pinned from the npm registry (npm ci in guest-examples/assemblyscript)"
    (cd "$src" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

say "compiling guest-examples/assemblyscript/sma_cross.ts with asc $pinned"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$src" && node node_modules/assemblyscript/bin/asc.js sma_cross.ts --config asconfig.json \
    --outFile "$tmp/sma_cross_as.wasm")
say "appending the palisade.manifest section from manifest.json"
python3 "$root/scripts/wasm-add-section.py" "$tmp/sma_cross_as.wasm" palisade.manifest \
    "$src/manifest.json" "$tmp/with-manifest.wasm" --json
mv "$tmp/with-manifest.wasm" "$module"
printf '%s\n' "$hash" > "$stamp"
say "built ${module#"$root"/} ($(wc -c < "$module") bytes)"
