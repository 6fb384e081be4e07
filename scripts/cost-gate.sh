#!/usr/bin/env bash
# The project's cost gate: every example strategy's exact costs (fuel per
# bar, peak memory, host calls per bar), the wasm ones and the Python
# sma-cross, on the bundled data, against the
# baselines kept in benches/baselines/. Any growth beyond 2 % fails, naming
# the figure; the table is printed every run, so a change within the bound is
# seen too. Time per bar is printed for information only.
#
#   scripts/cost-gate.sh           # check (scripts/test.sh runs it)
#   scripts/cost-gate.sh --save    # write new baselines: commit them with
#                                  # the change that explains why
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${PALISADE:-"${CARGO_TARGET_DIR:-target}/debug/palisade"}
mode=(--baseline)
[ "${1:-}" = "--save" ] && mode=(--save)
spy=data/sample/spy-like-daily.csv
qqq=data/sample/qqq-like-daily.csv
status=0
# bench NAME STRATEGY ARGS...: one strategy's figures against NAME's baseline.
bench() {
    local name=$1 strategy=$2
    shift 2
    echo "--- $name"
    "$bin" bench "$strategy" "$@" --runs 1 "${mode[@]}" "benches/baselines/$name.json" || status=1
}
run() {
    local name=$1
    shift
    bench "$name" "guest-examples/out/$name.wasm" "$@"
}
run sma_cross --data "$spy" -p fast=10 -p slow=30
run bollinger_revert --data "$spy"
run donchian_breakout --data "$qqq"
run lead_lag --data "A=$spy" --data "B=$qqq"
# The Python sma-cross: the interpreter's cost per bar, the SDK's event loop
# and componentize-py's crossings included (the runtime component is built
# by scripts/build-python-runtime.sh, which the test command runs first).
bench sma_cross_py sdk-python/examples/sma_cross.py --data "$spy" -p fast=10 -p slow=30
exit $status
