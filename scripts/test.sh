#!/usr/bin/env bash
# Runs every test of the project: formatting, the crate layers, clippy and
# the API docs with warnings denied, the host workspace's tests
# (unit and end-to-end, against real guest modules), the guest strategies'
# native unit tests, the Python SDK's tests (pytest), the operator kit in
# deploy/ (against a real Prometheus), a short run of the load generator
# (`palisade load`) against a real server, and the cross-check of the
# backtest engine against backtesting.py. Installs what it needs (wasm
# toolchain, Python peer, Prometheus), idempotently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*" >&2; }

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
say "free disk where the build goes ($target_dir): $(df -h --output=avail "$target_dir" | tail -1 | tr -d ' ') (a fresh run writes about 7 GB there)"

say "checking formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "checking the crate layers and that no files import each other in a circle"
python3 scripts/check-imports.py

say "building the guest strategies for wasm32"
scripts/build-guests.sh

say "building the Python runtime component (componentize-py)"
scripts/build-python-runtime.sh >/dev/null

say "installing the Python peers for the cross-checks (backtesting.py, backtrader)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/crosscheck/requirements.txt

say "linting the host workspace (cargo clippy, warnings denied)"
cargo clippy -j2 --workspace --all-targets -- -D warnings

say "building the API docs (cargo doc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc -j2 --workspace --no-deps --quiet

say "installing Redis and Postgres for the distributed mode's tests (Debian's redis-server, postgresql)"
scripts/install-servers.sh

say "running the host workspace's tests"
cargo test -j2 --workspace
say "the build directory now takes $(du -sh "$target_dir" | cut -f1)"

say "validating the service's OpenAPI document (palisade openapi, openapi-spec-validator)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/api/requirements.txt
openapi_json=$(mktemp)
"${CARGO_TARGET_DIR:-target}/debug/palisade" openapi > "$openapi_json"
python3 -m openapi_spec_validator "$openapi_json"
rm -f "$openapi_json"

say "property-based tests of the running service against that document (schemathesis, 120 s)"
scripts/api-fuzz.sh 120

say "checking the operator kit in deploy/ (promtool, the dashboard, a live Prometheus scraping palisade serve)"
scripts/check-deploy.sh

say "a short run of palisade load against a local palisade serve (24 jobs, assertions)"
scripts/load-check.sh

say "the cost gate: the example strategies' exact costs against benches/baselines/"
scripts/cost-gate.sh

say "the ratio gate: wasm vs native, backtesting.py vs palisade, each in one run, against benches/baselines/ratios.json"
scripts/ratio-gate.sh

say "running the guest strategies' native unit tests"
(cd guest-examples && cargo test -j2 --quiet)

scripts/test-python-sdk.sh

say "cross-checking the backtest engine against backtesting.py"
python3 tests/crosscheck/crosscheck.py --palisade "${CARGO_TARGET_DIR:-target}/debug/palisade" \
    --module guest-examples/out/sma_cross.wasm

say "cross-checking the Python sma-cross against backtesting.py, trade for trade"
python3 tests/crosscheck/crosscheck.py --palisade "${CARGO_TARGET_DIR:-target}/debug/palisade" \
    --module sdk-python/examples/sma_cross.py

say "cross-checking a two-symbol strategy against backtrader, trade for trade"
python3 tests/crosscheck/pairs_check.py --palisade "${CARGO_TARGET_DIR:-target}/debug/palisade" \
    --module guest-examples/out/lead_lag.wasm

say "cross-checking the optimizer's best parameters against backtesting.py's optimizer"
python3 tests/crosscheck/optimize_check.py --palisade "${CARGO_TARGET_DIR:-target}/debug/palisade" \
    --module guest-examples/out/sma_cross.wasm
