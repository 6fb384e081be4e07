#!/usr/bin/env bash
# The demo: builds the example strategies for wasm32 and the Python runtime,
# builds palisade, then validates, backtests and optimizes sma-cross on the
# bundled sample data, runs the same strategy written in Python in the same
# sandbox, and shows the sandbox stopping a misbehaving strategy. Installs
# what it needs (the wasm toolchain, componentize-py), idempotently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*" >&2; }

say "building the example strategies (guest-examples/out/*.wasm)"
scripts/build-guests.sh

say "building the Python runtime component (sdk-python/out/palisade-python.wasm)"
scripts/build-python-runtime.sh >/dev/null

say "building palisade (release; the first build compiles wasmtime and takes several minutes)"
cargo build -j2 --release -p palisade --bin palisade
palisade=target/release/palisade
data=data/sample/spy-like-daily.csv

say "validating sma-cross: manifest, imports, exports"
$palisade inspect guest-examples/out/sma_cross.wasm

say "backtesting sma-cross (fast=10, slow=30, 100 units) on $data"
$palisade backtest guest-examples/out/sma_cross.wasm --data "$data" -p fast=10 -p slow=30 -p size=100

if $palisade optimize --help >/dev/null 2>&1; then
    say "optimizing sma-cross over a grid of fast and slow lengths"
    $palisade optimize guest-examples/out/sma_cross.wasm --data "$data" -p size=100 \
        --grid fast=5:40:5 --grid slow=20:120:10 --objective sharpe --top 5
fi

say "the same strategy in Python (sdk-python/examples/sma_cross.py), in the same sandbox; the first run compiles the Python runtime once"
$palisade backtest sdk-python/examples/sma_cross.py --data "$data" -p fast=10 -p slow=30 -p size=100

say "a strategy stuck in an infinite loop is stopped, and nothing else is affected"
$palisade backtest guest-examples/out/adversary.wasm --data "$data" -p mode=1 -p at=100 || true

say "live paper trading: the sample replayed over WebSocket, sma-cross deployed on it with a simulated venue that fills 1 % worse from its 10th intent; the drift gate suspends the deployment (audit log below)"
live_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$palisade feed replay "SPY=$data" --speed 0 --listen "127.0.0.1:$port" 2>/dev/null &
replay_pid=$!
printf '[[drift]]\nfrom_intent = 10\nprice_bps = 100\n' > "$live_dir/venue.toml"
sleep 1
timeout -s INT 5 $palisade live run guest-examples/out/sma_cross.wasm --feed "ws://127.0.0.1:$port/" \
    --symbol SPY --interval 86400 --venue "$live_dir/venue.toml" --dir "$live_dir/deployment" \
    -p fast=10 -p slow=30 --durability os --status-every 2 2>/dev/null || true
kill "$replay_pid" 2>/dev/null || true
echo "audit log:"
cat "$live_dir/deployment/audit.jsonl"
rm -rf "$live_dir"
