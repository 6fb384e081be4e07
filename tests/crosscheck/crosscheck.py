#!/usr/bin/env python3
"""Cross-check: Palisade's backtest engine agrees exactly with backtesting.py.

What it proves: for the ``sma-cross`` strategy (long-only SMA crossover, see
``bt_peer.py`` for the exact rule) run on the same bars with the same
parameters, Palisade and backtesting.py 0.6.6 produce

* the same closed trades, in the same order: equal entry/exit timestamps,
  quantity and entry/exit prices (bit-for-bit equal floats);
* the same per-trade PnL (within 1e-9 relative; normally exactly equal, and
  the maximum absolute difference is reported);
* the same open quantity at the end and the same final equity, marked to the
  last close (within 1e-6).

Cases: generated bars (``scripts/gen_bars.py``) for several seeds and
(fast, slow) pairs, including (2, 3) on coarse-tick data where the two
averages are often exactly equal (ties), dyadic 1/64 prices, Unix and RFC 3339
timestamps, a size other than 1, and the bundled ``data/sample`` files.

Run it (after ``cargo build --release`` and building the guest examples)::

    python3 tests/crosscheck/crosscheck.py \\
        --palisade target/release/palisade \\
        --module guest-examples/out/sma_cross.wasm [--quick]

It prints one line per case and ends with ``N passed, M failed``; the exit
status is 0 if every case passed, 1 if any failed, 2 if it could not start
(e.g. the Palisade binary or the module does not exist).

``--self-test`` needs no Palisade: it checks the Python side alone. On every
case it recomputes the signal independently with exact ``Fraction`` means of
the CSV's decimal strings, runs a tiny pure-Python simulation of the rule with
next-open fills, and requires backtesting.py's trades to match it exactly. It
also runs hand-made series whose trades were worked out by hand (ties in both
directions, a cross on the last bar that never fills, a position left open).
This pins down backtesting.py's fill timing as the comparison relies on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import bt_peer  # noqa: E402
import gen_bars  # noqa: E402

PNL_REL_TOL = 1e-9
EQUITY_ABS_TOL = 1e-6
PALISADE_TIMEOUT_S = 600


# --------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class GenSpec:
    """Arguments for ``gen_bars.generate`` plus the timestamp style."""

    bars: int
    seed: int
    tick: str = "0.0001"
    price: float = 100.0
    timestamps: str = "rfc3339"

    def label(self) -> str:
        parts = [f"seed={self.seed}"]
        if self.tick != "0.0001":
            parts.append(f"tick={self.tick}")
        if self.timestamps != "rfc3339":
            parts.append(f"ts={self.timestamps}")
        return " ".join(parts)

    def write(self, path: Path) -> None:
        tick = gen_bars.Tick.parse(self.tick)
        bars = gen_bars.generate(self.bars, self.seed, tick=tick, price=self.price)
        with open(path, "w", newline="", encoding="ascii") as f:
            gen_bars.write_csv(bars, f, tick, self.timestamps)


@dataclass(frozen=True)
class Case:
    fast: int
    slow: int
    size: int = 1
    gen: GenSpec | None = None  # generated data, or ...
    sample: str | None = None  # ... a file under data/sample

    def label(self) -> str:
        data = self.gen.label() if self.gen else f"data={self.sample}"
        size = f" size={self.size}" if self.size != 1 else ""
        return f"{data} fast={self.fast} slow={self.slow}{size}"


def build_cases(quick: bool) -> list[Case]:
    seeds = [1, 2] if quick else [1, 2, 3, 4, 5]
    bars = 1000 if quick else 3000
    pairs = [(10, 30), (2, 3)] if quick else [(5, 20), (10, 30), (20, 50), (2, 3)]
    cases = [Case(f, s, gen=GenSpec(bars, seed)) for seed in seeds for f, s in pairs]

    # Coarse ticks on low prices: the averages tie often, most of all for (2, 3).
    dyadic = GenSpec(bars, 21, tick="1/64", price=5.0, timestamps="unix")
    cents = GenSpec(bars, 22, tick="0.01", price=10.0)
    cases += [Case(2, 3, gen=dyadic)]
    if not quick:
        cases += [Case(10, 30, gen=dyadic), Case(2, 3, gen=cents), Case(5, 20, size=3, gen=cents)]

    cases += [Case(10, 30, sample="spy-like-daily.csv")]
    if not quick:
        cases += [Case(2, 3, sample="spy-like-daily.csv"), Case(10, 30, sample="qqq-like-daily.csv")]
    return cases


class DataFiles:
    """Materializes each case's CSV once (generated cases share files)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.cache: dict[GenSpec, Path] = {}

    def path(self, case: Case) -> Path:
        if case.sample:
            return REPO_ROOT / "data" / "sample" / case.sample
        assert case.gen is not None
        if case.gen not in self.cache:
            g = case.gen
            name = f"gen-s{g.seed}-n{g.bars}-t{g.tick.replace('/', '_')}-p{g.price:g}-{g.timestamps}.csv"
            p = self.workdir / name
            g.write(p)
            self.cache[case.gen] = p
        return self.cache[case.gen]


# --------------------------------------------------------------------------
# Comparison


@dataclass
class Other:
    """The engine compared against backtesting.py, normalized."""

    trades: list[bt_peer.Trade]  # entry_bar/exit_bar are -1 when unknown
    final_equity: float
    open_qty: float | None  # None: could not be read


@dataclass
class Verdict:
    problems: list[str]
    max_dpnl: float
    n_trades: int


def compare(peer: bt_peer.PeerResult, other: Other, other_name: str) -> Verdict:
    problems: list[str] = []
    a, b = peer.trades, other.trades
    if len(a) != len(b):
        problems.append(f"closed trades: backtesting.py {len(a)}, {other_name} {len(b)}")
    max_dpnl = 0.0
    for i, (x, y) in enumerate(zip(a, b)):
        diffs = []
        for name in ("entry_ts", "exit_ts", "qty", "entry_price", "exit_price"):
            if getattr(x, name) != getattr(y, name):
                diffs.append(f"{name} {getattr(x, name)!r} vs {getattr(y, name)!r}")
        if y.entry_bar >= 0 and (x.entry_bar, x.exit_bar) != (y.entry_bar, y.exit_bar):
            diffs.append(f"bars {x.entry_bar}->{x.exit_bar} vs {y.entry_bar}->{y.exit_bar}")
        dpnl = abs(x.pnl - y.pnl)
        if not math.isfinite(dpnl):
            dpnl = math.inf
        max_dpnl = max(max_dpnl, dpnl)
        if dpnl > pnl_tolerance(x, y):
            diffs.append(f"pnl {x.pnl!r} vs {y.pnl!r}")
        if diffs:
            problems.append(f"trade #{i}: " + "; ".join(diffs))
            if len(problems) >= 6:
                problems.append("(further differences not shown)")
                break
    if other.open_qty is not None and other.open_qty != peer.open_qty:
        problems.append(f"open quantity at end: backtesting.py {peer.open_qty}, {other_name} {other.open_qty}")
    if not abs(peer.final_equity - other.final_equity) <= EQUITY_ABS_TOL:
        problems.append(
            f"final equity: backtesting.py {peer.final_equity!r}, {other_name} {other.final_equity!r}"
        )
    return Verdict(problems, max_dpnl, len(a))


def pnl_tolerance(x: bt_peer.Trade, y: bt_peer.Trade) -> float:
    """1e-9 relative to the PnL, plus a floor for f64 cancellation in
    ``exit - entry`` (a few ulps of the notional; far below one tick)."""
    scale = max(abs(x.pnl), abs(y.pnl))
    notional = abs(x.qty) * max(abs(x.entry_price), abs(x.exit_price))
    return PNL_REL_TOL * scale + 1e-12 * notional


# --------------------------------------------------------------------------
# Palisade


class CaseError(Exception):
    pass


def run_palisade(binary: str, module: str, data: Path, case: Case) -> dict:
    cmd = [
        binary, "backtest", module, "--data", str(data),
        "--param", f"fast={case.fast}", "--param", f"slow={case.slow}",
        "--param", f"size={case.size}", "--json",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PALISADE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CaseError(f"palisade timed out after {PALISADE_TIMEOUT_S}s: {' '.join(cmd)}") from None
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    if proc.returncode != 0 or not isinstance(report, dict):
        outcome = report.get("outcome") if isinstance(report, dict) else None
        raise CaseError(
            f"palisade exited {proc.returncode}"
            + (f", outcome {json.dumps(outcome)}" if outcome is not None else "")
            + (", stdout is not one JSON object" if report is None else "")
            + f"\n      command: {' '.join(cmd)}\n      stderr: {_tail(proc.stderr)}"
        )
    return report


def _tail(text: str, lines: int = 8) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n              ".join(kept) if kept else "(empty)"


def normalize_palisade(report: dict, n_bars: int) -> tuple[Other, list[str]]:
    """Reads the ``--json`` report; returns it normalized plus contract problems."""
    problems = []
    if report.get("outcome") != "ok":
        problems.append(f"outcome is {json.dumps(report.get('outcome'))}, expected \"ok\"")
    bars = report.get("bars")
    if isinstance(bars, int) and not isinstance(bars, bool) and bars != n_bars:
        problems.append(f"bars {bars}, the CSV has {n_bars}")
    try:
        trades = [
            bt_peer.Trade(
                entry_bar=-1,
                exit_bar=-1,
                entry_ts=_ts(t["entry_ts"]),
                exit_ts=_ts(t["exit_ts"]),
                qty=_num(t["qty"]),
                entry_price=_num(t["entry_price"]),
                exit_price=_num(t["exit_price"]),
                pnl=_num(t["pnl"]),
            )
            for t in report["trades"]
        ]
        final_equity = _num(report["final_equity"])
    except (KeyError, TypeError, ValueError) as e:
        raise CaseError(f"palisade report does not follow the contract: {type(e).__name__}: {e}") from None
    return Other(trades, final_equity, _open_qty(report.get("open_positions"))), problems


def _num(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)  # a decimal string parses to the same correctly rounded f64


def _ts(v) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        return bt_peer.parse_timestamp(v)
    raise TypeError(f"expected a timestamp, got {v!r}")


def _open_qty(value) -> float | None:
    """Total open quantity from ``open_positions`` whatever its exact shape (a
    list of positions, a map by symbol, ...); None when it cannot be read."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        parts = [_open_qty(v) for v in value]
    elif isinstance(value, dict):
        for key in ("qty", "quantity", "size"):
            if key in value:
                return _open_qty(value[key])
        parts = [_open_qty(v) for v in value.values()]
    else:
        return None
    return None if any(p is None for p in parts) else float(sum(parts))


# --------------------------------------------------------------------------
# Self-test (no Palisade)


def read_decimal_closes(path: Path) -> list[Decimal]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        return [Decimal(r["close"]) for r in rows]


def fraction_signals(closes: list[Decimal], fast: int, slow: int) -> list[int]:
    """The rule recomputed from scratch with exact rational means (slow, simple,
    and independent of ``bt_peer``'s integer prefix sums)."""

    def sma(t: int, n: int) -> Fraction | None:
        return Fraction(sum(closes[t - n + 1 : t + 1], Decimal(0))) / n if t >= n - 1 else None

    sig = [0] * len(closes)
    for t in range(1, len(closes)):
        f1, s1, f0, s0 = sma(t, fast), sma(t, slow), sma(t - 1, fast), sma(t - 1, slow)
        if None in (f1, s1, f0, s0):
            continue
        if f1 > s1 and f0 <= s0:
            sig[t] = 1
        elif f1 < s1 and f0 >= s0:
            sig[t] = -1
    return sig


def float_signals(closes: list[float], fast: int, slow: int) -> list[int]:
    """What a float rolling-mean implementation would signal (for reporting)."""
    import pandas as pd

    s = pd.Series(closes)
    diff = (s.rolling(fast).mean() - s.rolling(slow).mean()).tolist()
    sig = [0] * len(closes)
    for t in range(1, len(closes)):
        now, prev = diff[t], diff[t - 1]
        if math.isnan(now) or math.isnan(prev):
            continue
        if now > 0 and prev <= 0:
            sig[t] = 1
        elif now < 0 and prev >= 0:
            sig[t] = -1
    return sig


def reference_run(df, signals: list[int], size: int, cash: float = bt_peer.CASH) -> Other:
    """Minimal simulation of the rule: a market order placed on bar t fills at
    the open of bar t+1; orders left after the last bar never fill; equity is
    cash plus the open position marked to the last close."""
    opens, closes = df["Open"].tolist(), df["Close"].tolist()
    ts = bt_peer.unix_seconds(df.index)
    trades: list[bt_peer.Trade] = []
    qty, entry_price, entry_bar, pending = 0, 0.0, -1, None
    for t in range(len(opens)):
        if pending == "buy":
            qty, entry_price, entry_bar = size, opens[t], t
        elif pending == "close":
            pnl = (opens[t] - entry_price) * qty
            trades.append(
                bt_peer.Trade(entry_bar, t, ts[entry_bar], ts[t], float(qty), entry_price, opens[t], pnl)
            )
            cash += pnl
            qty = 0
        pending = None
        if signals[t] > 0 and qty == 0:
            pending = "buy"
        elif signals[t] < 0 and qty > 0:
            pending = "close"
    final_equity = cash + (closes[-1] - entry_price) * qty if qty else cash
    return Other(trades, final_equity, float(qty))


# Hand-worked series for fast=1, slow=2 (sma1 > sma2 iff close rises):
#   bar      0  1  2  3  4   5  6  7  8  9  10 11
#   close   10  9  8  9  10  9  8  8  9  9  8  9
#   sign     -  -  -  +  +   -  -  0  +  0  -  +
#   signal         .  up .  dn  .  .  up .  dn up(last bar: never fills)
# Orders fill on the next open: trades (4 -> 6) and (9 -> 11). Cut after bar
# 9, the second trade is still open at the end.
HAND_CLOSES = [10, 9, 8, 9, 10, 9, 8, 8, 9, 9, 8, 9]
HAND_CASES = [
    ("hand-made 12 bars", 12, [(4, 6), (9, 11)], 0),
    ("hand-made 10 bars", 10, [(4, 6)], 1),
]


def write_hand_csv(path: Path, n: int) -> None:
    closes = HAND_CLOSES[:n]
    with open(path, "w", newline="", encoding="ascii") as f:
        f.write(gen_bars.HEADER + "\n")
        for i, c in enumerate(closes):
            o = (closes[i - 1] if i else c) + 0.25 * (1 + i % 3)  # distinct opens
            f.write(f"{1_600_000_000 + 86400 * i},{o:.2f},{max(o, c) + 0.5:.2f},"
                    f"{min(o, c) - 0.5:.2f},{c:.2f},1000\n")  # fmt: skip


def self_test_case(df, csv_path: Path, fast: int, slow: int, size: int) -> tuple[Verdict, str]:
    peer = bt_peer.run_backtest(df, fast, slow, size)
    exact = bt_peer.sma_cross_signals([bt_peer.price_to_fixed(c) for c in df["Close"]], fast, slow)
    problems = []
    if exact != fraction_signals(read_decimal_closes(csv_path), fast, slow):
        problems.append("bt_peer.sma_cross_signals disagrees with the Fraction recomputation")
    verdict = compare(peer, reference_run(df, exact, size), "reference")
    verdict.problems[:0] = problems
    cmp = bt_peer.sma_compare([bt_peer.price_to_fixed(c) for c in df["Close"]], fast, slow)
    ties = sum(1 for c in cmp if c == 0)
    float_diffs = sum(1 for a, b in zip(exact, float_signals(df["Close"].tolist(), fast, slow)) if a != b)
    return verdict, f"ties={ties} float_sma_signal_diffs={float_diffs} open={peer.open_qty:g}"


# --------------------------------------------------------------------------
# Main


def fmt_diff(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Check that Palisade's backtests agree exactly with backtesting.py.",
        epilog="Exit status: 0 all passed, 1 a case failed, 2 could not start.",
    )
    ap.add_argument("--palisade", default=str(REPO_ROOT / "target" / "release" / "palisade"),
                    help="the palisade binary (default target/release/palisade)")  # fmt: skip
    ap.add_argument("--module", default=str(REPO_ROOT / "guest-examples" / "out" / "sma_cross.wasm"),
                    help="the sma-cross module (default guest-examples/out/sma_cross.wasm)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="fewer and shorter cases")
    ap.add_argument("--self-test", action="store_true",
                    help="check the Python side against a pure-Python reference; no Palisade needed")  # fmt: skip
    ap.add_argument("--workdir", help="write generated CSVs here and keep them (default: a temp dir)")
    args = ap.parse_args(argv)

    if not args.self_test:
        binary = shutil.which(args.palisade) if os.sep not in args.palisade else args.palisade
        if not binary or not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            print(f"crosscheck: the palisade binary {args.palisade!r} does not exist or is not "
                  "executable; build it first (cargo build --release -p palisade) "
                  "or pass --palisade PATH", file=sys.stderr)  # fmt: skip
            return 2
        if not os.path.isfile(args.module):
            print(f"crosscheck: the module {args.module!r} does not exist; build the guest "
                  "examples first or pass --module PATH", file=sys.stderr)  # fmt: skip
            return 2
        args.palisade = binary

    with tempfile.TemporaryDirectory(prefix="palisade-crosscheck-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        files = DataFiles(workdir)
        passed = failed = 0
        all_exact, max_dpnl_all, total_trades = True, 0.0, 0

        def report(label: str, verdict: Verdict | None, extra: str = "", error: str = "") -> None:
            nonlocal passed, failed, all_exact, max_dpnl_all, total_trades
            if verdict is not None:
                all_exact &= verdict.max_dpnl == 0
                max_dpnl_all = max(max_dpnl_all, verdict.max_dpnl)
                total_trades += verdict.n_trades
            ok = verdict is not None and not verdict.problems and not error
            head = f"{'ok ' if ok else 'FAIL'} {label}"
            if verdict is not None:
                head += f" trades={verdict.n_trades} max|dpnl|={fmt_diff(verdict.max_dpnl)}"
            print(f"{head} {extra}".rstrip(), flush=True)
            for p in ([error] if error else []) + (verdict.problems if verdict else []):
                print(f"      {p}")
            if ok:
                passed += 1
            else:
                failed += 1

        if args.self_test:
            for label, n, expected, open_qty in HAND_CASES:
                path = workdir / f"hand-{n}.csv"
                write_hand_csv(path, n)
                df = bt_peer.load_csv(str(path))
                verdict, extra = self_test_case(df, path, 1, 2, 1)
                peer = bt_peer.run_backtest(df, 1, 2, 1)
                got = [(t.entry_bar, t.exit_bar) for t in peer.trades]
                if got != expected:
                    verdict.problems.append(f"backtesting.py trades (bars) {got}, worked out by hand {expected}")
                if peer.open_qty != open_qty:
                    verdict.problems.append(f"open quantity {peer.open_qty}, expected {open_qty}")
                report(f"{label} fast=1 slow=2", verdict, extra)

        for case in build_cases(args.quick):
            label = case.label()
            try:
                path = files.path(case)
                df = bt_peer.load_csv(str(path))
                if args.self_test:
                    verdict, extra = self_test_case(df, path, case.fast, case.slow, case.size)
                    report(label, verdict, extra)
                    continue
                peer = bt_peer.run_backtest(df, case.fast, case.slow, case.size)
                other, problems = normalize_palisade(
                    run_palisade(args.palisade, args.module, path, case), len(df)
                )
                verdict = compare(peer, other, "palisade")
                verdict.problems[:0] = problems
                extra = f"open={peer.open_qty:g}" + (" (open_positions unreadable)" if other.open_qty is None else "")
                report(label, verdict, extra)
            except (CaseError, OSError, ValueError, RuntimeError) as e:
                report(label, None, error=str(e))

        other_name = "the reference" if args.self_test else "Palisade"
        if failed == 0:
            if all_exact:
                print(f"PnL of all {total_trades} closed trades exactly equal to {other_name}'s")
            else:
                print(f"max |dpnl| over all {total_trades} closed trades: {fmt_diff(max_dpnl_all)}")
        print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
