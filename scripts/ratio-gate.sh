#!/usr/bin/env bash
# The project's ratio gate (issue 17): two speed ratios, each measured in
# one run with both sides alternating on the same machine, against the
# bands in benches/baselines/ratios.json. Absolute times move by a third
# from one process to the next on shared machines; a ratio measured in one
# run moves far less, so a band around it catches a real regression without
# flapping. The table is printed every run.
#
# - wasm over native: sma-cross over 200,000 bars in the sandbox vs the same
#   strategy compiled natively through the same engine
#   (`cargo bench -p palisade-benches --bench ratio`).
# - backtesting.py over palisade: the same strategy and parameters on the
#   same 100,000 bars, engine against engine: backtesting.py's
#   `Backtest.run` (its CSV already loaded) against the `run_seconds` a
#   fresh `palisade backtest` process reports (instantiation, the run, the
#   report). The whole process's wall time (CSV loading, validation and
#   compilation, process start) is shown beside it, for information: it
#   doubles when the machine is busy, which would make a gate on it flap.
# - backtesting.py over Python in palisade: the same, with the strategy
#   written in Python (sdk-python/examples/sma_cross.py) and run in the
#   sandbox by the Python runtime (compiled once beforehand, as after any
#   first run); its run_seconds include instantiating the runtime and
#   loading the source.
#
#   scripts/ratio-gate.sh          # check (scripts/test.sh runs it)
# Changing a band is a reviewed commit to ratios.json saying why.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*" >&2; }
target=${CARGO_TARGET_DIR:-target}

say "building the release binary, the Python runtime and the ratio bench"
cargo build --release -j2 -p palisade --bin palisade >&2
scripts/build-python-runtime.sh >/dev/null
say "wasm vs native (cargo bench -p palisade-benches --bench ratio)"
wasm_json=$(cargo bench -j2 -q -p palisade-benches --bench ratio 2>/dev/null | grep '^{')
echo "$wasm_json" >&2

data="$target/bench-data"
mkdir -p "$data"
[ -s "$data/walk-100k.csv" ] || python3 scripts/gen_walk.py 100000 8 "$data/walk-100k.csv"

say "backtesting.py vs palisade on the same bars"
python3 - "$target/release/palisade" "$data/walk-100k.csv" "$wasm_json" benches/baselines/ratios.json <<'PY'
import json, statistics, subprocess, sys, time
sys.path.insert(0, "tests/crosscheck")
import bt_peer

palisade, csv_path, wasm_json, baseline_path = sys.argv[1:5]
FAST, SLOW, ROUNDS = 10, 30, 7
df = bt_peer.load_csv(csv_path)
peer_s, ours_s, wall_s, ratios = [], [], [], []
py_s, py_ratios = [], []
PY = "sdk-python/examples/sma_cross.py"


def backtest(module):
    t = time.perf_counter()
    out = subprocess.run([palisade, "backtest", module, "--data", csv_path, "-p", f"fast={FAST}",
                          "-p", f"slow={SLOW}", "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        # The JSON document names the outcome (a guest error, say) on stdout.
        sys.exit(f"palisade backtest {module} failed (exit {out.returncode}): {out.stderr}{out.stdout[-2000:]}")
    return json.loads(out.stdout), wall


backtest(PY)  # the Python runtime compiled once, as after any first run
for _ in range(ROUNDS):
    t = time.perf_counter()
    peer = bt_peer.run_backtest(df, FAST, SLOW)
    peer_s.append(time.perf_counter() - t)
    doc, wall = backtest("guest-examples/out/sma_cross.wasm")
    wall_s.append(wall)
    ours_s.append(doc["timing"]["run_seconds"])
    ratios.append(peer_s[-1] / ours_s[-1])
    py_doc, _ = backtest(PY)
    py_s.append(py_doc["timing"]["run_seconds"])
    py_ratios.append(peer_s[-1] / py_s[-1])
for name, d in (("palisade", doc), ("palisade (Python)", py_doc)):
    if len(d["trades"]) != len(peer.trades):
        sys.exit(f"the two runs differ: {name} {len(d['trades'])} trades, backtesting.py {len(peer.trades)}")
if py_doc["trades"] != doc["trades"]:
    sys.exit("the Python and the wasm sma-cross differ in their trades")

wasm = json.loads(wasm_json)
measured = {
    "wasm_over_native": (wasm["wasm_over_native"],
                         f"wasm {wasm['wasm_ms']:.1f} ms / native {wasm['native_ms']:.1f} ms, {wasm['bars']:,} bars, median of {wasm['rounds']} rounds"),
    "backtesting_py_over_palisade": (statistics.median(ratios),
                                     f"backtesting.py {statistics.median(peer_s) * 1e3:.0f} ms / palisade {statistics.median(ours_s) * 1e3:.1f} ms ({statistics.median(wall_s) * 1e3:.0f} ms whole process), {len(df):,} bars, median of {ROUNDS} rounds"),
    "backtesting_py_over_python": (statistics.median(py_ratios),
                                   f"backtesting.py {statistics.median(peer_s) * 1e3:.0f} ms / Python sma-cross in palisade {statistics.median(py_s) * 1e3:.0f} ms, {len(df):,} bars, median of {ROUNDS} rounds"),
}
try:
    bands = json.load(open(baseline_path))["ratios"]
except (OSError, ValueError, KeyError) as e:
    sys.exit(f"{baseline_path}: cannot read the bands ({e})")
failed = []
print(f"{'ratio':<30} {'measured':>9} {'band':>14}  detail")
for name, (value, detail) in measured.items():
    band = bands.get(name)
    if band is None:
        sys.exit(f"{baseline_path}: no band for {name}")
    lo, hi = band.get("min"), band.get("max")
    shown = f"{'≥ ' + str(lo) if lo is not None else ''}{' ' if lo is not None and hi is not None else ''}{'≤ ' + str(hi) if hi is not None else ''}"
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    print(f"{name:<30} {value:>9.2f} {shown:>14}  {detail}{'' if ok else '  <-- OUT OF BAND'}")
    if not ok:
        failed.append(name)
if failed:
    sys.exit(f"ratio gate: {', '.join(failed)} out of band (benches/baselines/ratios.json)")
print("ratio gate: every ratio within its band")
PY
