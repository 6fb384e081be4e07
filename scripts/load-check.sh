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

dir=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" > "$dir/out.log" 2> "$dir/server.log" &
server=$!
addr=
for _ in $(seq 1 100); do
    addr=$(sed -n 's/^palisade listening on //p' "$dir/out.log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "load-check: the server did not say where it listens" >&2; exit 1; }

status=0
timeout 120 "$bin" load --url "$addr" \
    --module guest-examples/out/sma_cross.wasm --data SPY=data/sample/spy-like-daily.csv \
    --jobs 24 --concurrency 4 --mix backtest=4,optimize=1,walk_forward=1 \
    --assert 'failed==0' --assert 'errors==0' --assert 'dropped==0' --assert 'succeeded==24' \
    --assert 'p95<30s' || status=$?
if grep -q "panicked" "$dir/server.log"; then
    echo "load-check: the server panicked:" >&2
    grep -A5 "panicked" "$dir/server.log" >&2
    status=1
fi
kill -0 "$server" 2>/dev/null || { echo "load-check: the server died" >&2; status=1; }
exit $status
