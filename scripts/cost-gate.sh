#!/usr/bin/env bash
# The project's cost gate: every example strategy's exact costs (fuel per
# bar, peak memory, host calls per bar) on the bundled data, against the
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
run() {
    local name=$1
    shift
    echo "--- $name"
    "$bin" bench "guest-examples/out/$name.wasm" "$@" --runs 1 "${mode[@]}" "benches/baselines/$name.json" || status=1
}
run sma_cross --data "$spy" -p fast=10 -p slow=30
run bollinger_revert --data "$spy"
run donchian_breakout --data "$qqq"
run lead_lag --data "A=$spy" --data "B=$qqq"
exit $status
