#!/usr/bin/env python3
"""Times backtesting.py's optimizer and ``palisade optimize`` on the same grid
and data, in the same run, and prints both and their ratio.

The grid: ``sma-cross`` with fast = 5, 10, ..., 50 and slow = 60, 80, ..., 140
(50 variants, all with fast < slow) over 10,000 generated daily bars
(``scripts/gen_bars.py --bars 10000 --seed 7``). backtesting.py runs
``Backtest.optimize`` (``bt_peer.python_optimize``: a process pool over all
cores); Palisade runs ``palisade optimize --jobs <cores>``, as a fresh process
each time, so its time includes starting, compiling the module and reading
the CSV (its own ``run_seconds``, the study alone, is printed too). Each side
runs ``--repeat`` times (default 3); the median is reported. Both must pick
the same best parameters, or the script fails.

Usage (after ``cargo build --release`` and ``scripts/build-guests.sh``)::

    python3 benches/peer_optimize.py [--palisade target/release/palisade] \\
        [--module guest-examples/out/sma_cross.wasm] [--bars 10000] [--repeat 3]

Requires backtesting.py 0.6.6, pandas and numpy (see tests/crosscheck/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "crosscheck"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bt_peer  # noqa: E402
import gen_bars  # noqa: E402

FAST = list(range(5, 51, 5))
SLOW = list(range(60, 141, 20))


def palisade_once(args, csv_path: str, jobs: int) -> tuple[float, float, tuple[int, int]]:
    cmd = [
        args.palisade,
        "optimize",
        args.module,
        "--data",
        csv_path,
        "--grid",
        "fast=" + ",".join(map(str, FAST)),
        "--grid",
        "slow=" + ",".join(map(str, SLOW)),
        "--objective",
        "total_return",
        "--jobs",
        str(jobs),
        "--json",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"palisade failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    best = out["best"]["params"]
    return wall, out["timing"]["run_seconds"], (int(best["fast"]), int(best["slow"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--palisade", default=str(REPO_ROOT / "target" / "release" / "palisade"))
    ap.add_argument("--module", default=str(REPO_ROOT / "guest-examples" / "out" / "sma_cross.wasm"))
    ap.add_argument("--bars", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for what, path in (("palisade binary", args.palisade), ("module", args.module)):
        if not Path(path).exists():
            print(f"error: {what} {path} does not exist", file=sys.stderr)
            return 2
    jobs = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="palisade-peer-optimize-") as tmp:
        csv_path = str(Path(tmp) / "bars.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            gen_bars.write_csv(gen_bars.generate(args.bars, 7), f)
        df = bt_peer.load_csv(csv_path)

        py_times, py_best = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            py_best, _ = bt_peer.python_optimize(df, FAST, SLOW)
            py_times.append(time.perf_counter() - started)

        wall_times, run_times, our_best = [], [], None
        for _ in range(args.repeat):
            wall, run, our_best = palisade_once(args, csv_path, jobs)
            wall_times.append(wall)
            run_times.append(run)

    n = len(FAST) * len(SLOW)
    py = statistics.median(py_times)
    wall = statistics.median(wall_times)
    run = statistics.median(run_times)
    print(f"grid: {n} variants of sma-cross (fast {FAST[0]}..{FAST[-1]} x slow {SLOW[0]}..{SLOW[-1]}) over {args.bars} bars, {jobs} cores")
    print(f"backtesting.py Backtest.optimize:  {py:8.3f} s  ({n / py:8.1f} variants/s)  best {py_best}")
    print(f"palisade optimize (whole process): {wall:8.3f} s  ({n / wall:8.1f} variants/s)  best {our_best}")
    print(f"palisade optimize (study only):    {run:8.3f} s  ({n / run:8.1f} variants/s)")
    print(f"ratio backtesting.py / palisade:   {py / wall:8.1f}x (whole process), {py / run:.1f}x (study only)")
    if py_best != our_best:
        print(f"error: the best parameters differ: backtesting.py {py_best}, palisade {our_best}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
