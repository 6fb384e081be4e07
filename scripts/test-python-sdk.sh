#!/usr/bin/env bash
# Runs the Python SDK's tests (sdk-python/tests, pytest) with plain CPython:
# the Strategy API on the mock host, the runtime's loader and event loop
# (syntax errors, the import allowlist, exceptions, manifests), the examples
# against the Rust ones, and the indicators against the fixture the Rust SDK
# writes (sdk/tests/indicator_fixtures.rs). Installs pytest if it is missing
# (idempotent). Extra arguments go to pytest, e.g. -k manifest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n==> %s\n' "$*" >&2; }

if ! python3 -c 'import pytest' 2>/dev/null; then
    say "installing pytest"
    python3 -m pip install --quiet --disable-pip-version-check pytest
fi

say "running the Python SDK's tests (sdk-python, $(python3 --version))"
cd "$root/sdk-python"
python3 -m pytest -q "$@"
