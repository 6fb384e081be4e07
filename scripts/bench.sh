#!/usr/bin/env bash
# Whole-process figures, measured as users run the CLI (issue 10): each run
# is a fresh `palisade` process on a CSV file, like a user's first run.
#
#   scripts/bench.sh            # all figures below, a markdown table on stdout
#   RUNS=9 scripts/bench.sh     # more runs per figure (default 5)
#
# Figures (median, min and max of RUNS runs, same machine, same minute):
# - backtest: sma-cross over 1,000,000 one-minute bars (49 MB CSV): the
#   run_seconds the JSON reports (instantiation, the run, the report) and the
#   whole process's wall time (CSV loading, validation, compilation included);
# - pandas.read_csv of the same file, for scale;
# - optimize: 1,000 variants of sma-cross over 100,000 bars, whole process,
#   with --threads 1 and 2, and the scaling t1 / (2 t2).
# The warm criterion figures are `cargo bench -p palisade-benches`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '==> %s\n' "$*" >&2; }
runs=${RUNS:-5}
target=${CARGO_TARGET_DIR:-target}

say "building the guests and the release binary"
scripts/build-guests.sh >/dev/null
cargo build --release -j2 -p palisade --bin palisade >&2
bin="$target/release/palisade"
data=${BENCH_DATA_DIR:-"$target/bench-data"}
mkdir -p "$data"
[ -s "$data/walk-1m.csv" ] || { say "generating 1,000,000 bars"; python3 scripts/gen_walk.py 1000000 7 "$data/walk-1m.csv"; }
[ -s "$data/walk-100k.csv" ] || python3 scripts/gen_walk.py 100000 8 "$data/walk-100k.csv"

say "measuring ($runs runs each)"
python3 - "$bin" "$data" "$runs" <<'PY'
import json, statistics, subprocess, sys, time
bin, data, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = "guest-examples/out/sma_cross.wasm"
big = f"{data}/walk-1m.csv"
small = f"{data}/walk-100k.csv"

def spread(xs):
    return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"

def timed(args):
    t = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{args}: exit {out.returncode}\n{out.stderr}")
    return wall, out.stdout

run_s, wall_s = [], []
for _ in range(runs):
    wall, out = timed([bin, "backtest", module, "--data", big, "-p", "fast=10", "-p", "slow=30", "--json"])
    doc = json.loads(out)
    run_s.append(doc["timing"]["run_seconds"])
    wall_s.append(wall)
bars = doc["data"]["bars"]

pandas = []
try:
    import pandas as pd
    for _ in range(runs):
        t = time.perf_counter()
        pd.read_csv(big)
        pandas.append(time.perf_counter() - t)
except ImportError:
    pass

grid = ["--grid", "fast=2:21:1", "--grid", "slow=30:520:10"]
study = {}
for threads in (1, 2):
    study[threads] = [timed([bin, "optimize", module, "--data", small, *grid, "--threads", str(threads), "--json", "--no-timing"])[0] for _ in range(runs)]
t1, t2 = statistics.median(study[1]), statistics.median(study[2])

print("| figure | median (min-max) |")
print("|---|---|")
print(f"| backtest 1M bars, run_seconds | {spread(run_s)} = {bars / statistics.median(run_s) / 1e6:.1f} M bars/s |")
print(f"| backtest 1M bars, whole process | {spread(wall_s)} |")
if pandas:
    print(f"| pandas.read_csv of the same file | {spread(pandas)} |")
print(f"| optimize 1,000 x 100k, whole process, 1 thread | {spread(study[1])} |")
print(f"| optimize 1,000 x 100k, whole process, 2 threads | {spread(study[2])} |")
print(f"| scaling t1 / (2 t2) | {t1 / (2 * t2) * 100:.1f} % |")
PY
