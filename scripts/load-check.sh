#!/usr/bin/env bash
# A short run of `palisade load` against a real `palisade serve`: starts the
# server on a loopback port with a temporary data directory, runs 24 jobs
# (backtests, optimizations and walk-forwards of sma_cross, 4 in flight)
# with assertions that any healthy build meets on any machine, and stops
# the server. Fails when the load tool exits non-zero (an assertion failed,
# or it could not reach the server) or the server panicked or died.
#
#   scripts/load-check.sh      (guests built first: scripts/build-guests.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="${CARGO_TARGET_DIR:-target}/debug/palisade"
[ -x "$bin" ] || { echo "load-check: $bin is missing: build it with cargo build -p palisade" >&2; exit 1; }

. scripts/serve-lib.sh
dir=$(mktemp -d)
PALISADE_PID=
cleanup() {
    if [ -n "$PALISADE_PID" ]; then
        kill "$PALISADE_PID" 2>/dev/null || true
        wait "$PALISADE_PID" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

start_palisade "$dir" "$bin"
addr=$PALISADE_URL

status=0
timeout 120 "$bin" load --url "$addr" \
    --module guest-examples/out/sma_cross.wasm --data SPY=data/sample/spy-like-daily.csv \
    --jobs 24 --concurrency 4 --mix backtest=4,optimize=1,walk_forward=1 \
    --assert 'failed==0' --assert 'errors==0' --assert 'dropped==0' --assert 'succeeded==24' \
    --assert 'p95<30s' || status=$?
palisade_healthy load-check "$dir" || status=1
exit $status
