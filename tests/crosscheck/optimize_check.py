#!/usr/bin/env python3
"""Cross-check: ``palisade optimize`` picks the same best parameters as
backtesting.py's own optimizer (``Backtest.optimize``).

For each case (generated bars from ``scripts/gen_bars.py`` or a bundled
sample, and a (fast, slow) grid of the ``sma-cross`` strategy) it runs

* backtesting.py: ``bt_peer.python_optimize`` (grid search maximizing
  ``Return [%]`` under the constraint ``fast < slow``), and
* Palisade: ``palisade optimize --json --objective total_return`` on the same
  CSV and grid (combinations with ``fast >= slow`` are refused by the strategy
  itself, reported as ``invalid_params`` and ranked last),

and requires:

1. the same best ``(fast, slow)``;
2. the same best return (within 1e-9 relative);
3. Palisade's best variant to have exactly the statistics of a standalone
   ``palisade backtest --json`` with those parameters;
4. byte-identical ``--json --no-timing`` output with ``--threads 1`` and
   ``--threads 2``.

backtesting.py leaves variants without a closed trade out of its ranking;
Palisade ranks them like any other. So that the comparison is like for like,
a case first checks that every admissible variant closed at least one trade.
Ties are broken the same way in both (the first in grid order, ``fast``
slowest), see README.md.

Run it (after ``cargo build --release`` and ``scripts/build-guests.sh``)::

    python3 tests/crosscheck/optimize_check.py \\
        --palisade target/release/palisade \\
        --module guest-examples/out/sma_cross.wasm [--quick]

One line per case, then ``N passed, M failed``. Exit status 0 if every case
passed, 1 if one failed, 2 if it could not start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bt_peer  # noqa: E402
import gen_bars  # noqa: E402

RETURN_REL_TOL = 1e-9
TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    name: str
    csv: str  # path of the CSV file
    fast: list[int]
    slow: list[int]


def grid_arg(name: str, values: list[int]) -> str:
    return f"{name}=" + ",".join(str(v) for v in values)


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def palisade_optimize(args, case: Case, jobs: int) -> tuple[dict, str]:
    out = run(
        [
            args.palisade,
            "optimize",
            args.module,
            "--data",
            case.csv,
            "--grid",
            grid_arg("fast", case.fast),
            "--grid",
            grid_arg("slow", case.slow),
            "--objective",
            "total_return",
            "--threads",
            str(jobs),
            "--json",
            "--no-timing",
        ]
    )
    return json.loads(out), out


def palisade_backtest(args, case: Case, fast: int, slow: int) -> dict:
    out = run(
        [
            args.palisade,
            "backtest",
            args.module,
            "--data",
            case.csv,
            "-p",
            f"fast={fast}",
            "-p",
            f"slow={slow}",
            "--json",
            "--no-timing",
        ]
    )
    return json.loads(out)


def check(args, case: Case) -> list[str]:
    """The problems found in one case (empty when it passed)."""
    problems: list[str] = []
    report, text1 = palisade_optimize(args, case, jobs=1)
    _, text2 = palisade_optimize(args, case, jobs=2)
    if text1 != text2:
        problems.append("--threads 1 and --threads 2 printed different results")

    admissible = [v for v in report["variants"] if v["params"]["fast"] < v["params"]["slow"]]
    idle = [v["params"] for v in admissible if v["status"] != "ok" or v["stats"]["trade_count"] == 0]
    if idle:
        return problems + [f"not comparable: admissible variants without a closed trade or failed: {idle[:3]}"]
    refused = [v for v in report["variants"] if v not in admissible]
    if any(v.get("cause") != "invalid_params" for v in refused):
        problems.append("a variant with fast >= slow was not refused with invalid_params")

    best = report["best"]
    ours = (int(best["params"]["fast"]), int(best["params"]["slow"]))
    our_return = best["objective"] * 100.0

    df = bt_peer.load_csv(case.csv)
    theirs, their_return = bt_peer.python_optimize(df, case.fast, case.slow)

    if ours != theirs:
        problems.append(f"best differs: palisade {ours} ({our_return:.6f}%), backtesting.py {theirs} ({their_return:.6f}%)")
    elif abs(our_return - their_return) > RETURN_REL_TOL * max(abs(their_return), 1e-12):
        problems.append(f"best return differs: palisade {our_return!r}%, backtesting.py {their_return!r}%")

    alone = palisade_backtest(args, case, *ours)
    if alone["stats"] != best["stats"]:
        problems.append(f"best variant's stats differ from a standalone backtest: {best['stats']} vs {alone['stats']}")
    if not problems:
        print(
            f"  best {ours}: {our_return:.6f}% in both; {len(admissible)} admissible of "
            f"{len(report['variants'])} variants"
        )
    return problems


def cases(workdir: Path, quick: bool) -> list[Case]:
    out = []
    seeds = [1, 2] if quick else [1, 2, 3, 4, 5]
    bars = 1200 if quick else 2500
    grids = [
        (list(range(5, 31, 5)), list(range(20, 81, 10))),
        ([2, 3, 5, 8, 13], [10, 20, 40]),
    ]
    for seed in seeds:
        path = workdir / f"gen-{seed}.csv"
        with open(path, "w", encoding="utf-8") as f:
            gen_bars.write_csv(gen_bars.generate(bars, seed), f)
        for g, (fast, slow) in enumerate(grids):
            out.append(Case(f"seed {seed}, {bars} bars, grid {g + 1}", str(path), fast, slow))
    sample = REPO_ROOT / "data" / "sample" / "spy-like-daily.csv"
    if sample.exists():
        out.append(Case("data/sample/spy-like-daily.csv", str(sample), [5, 10, 20, 30], [40, 60, 90, 120]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--palisade", default=str(REPO_ROOT / "target" / "release" / "palisade"))
    ap.add_argument("--module", default=str(REPO_ROOT / "guest-examples" / "out" / "sma_cross.wasm"))
    ap.add_argument("--quick", action="store_true", help="fewer and shorter series")
    args = ap.parse_args(argv)
    for what, path in (("palisade binary", args.palisade), ("module", args.module)):
        if not Path(path).exists():
            print(f"error: {what} {path} does not exist (see README.md for how to build it)", file=sys.stderr)
            return 2

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="palisade-optimize-check-") as tmp:
        for case in cases(Path(tmp), args.quick):
            print(f"{case.name}: fast {case.fast} x slow {case.slow}")
            try:
                problems = check(args, case)
            except Exception as e:  # a crash of either side is a failed case
                problems = [f"{type(e).__name__}: {e}"]
            if problems:
                failed += 1
                for p in problems:
                    print(f"  FAIL: {p}")
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
