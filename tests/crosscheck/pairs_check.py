#!/usr/bin/env python3
"""Cross-check on two symbols: Palisade agrees with backtrader trade for trade.

The ``lead-lag`` strategy watches symbol A (the leader) and trades symbol B
(the follower): when A closed above its previous close it buys ``size`` of B
if it holds none; when A closed below, it sells what it holds. The same rule
runs in backtrader 1.9 with two data feeds, where an order placed in
``next()`` fills at the next bar's open of its own feed: exactly Palisade's
fill rule (an order decided at T fills on its symbol's first bar after T).
Both place no order while one waits for its fill.

For every case both must give the same closed trades in the same order
(entry and exit times, quantity, entry and exit prices bit for bit, PnL), the
same position left open, and the same final equity.

Cases: correlated random walks (seeded) of several lengths and sizes, with
aligned timestamps, and a case where B misses some timestamps (then the
order waits for B's next bar in both).

Run: python3 tests/crosscheck/pairs_check.py --palisade target/debug/palisade \\
         --module guest-examples/out/lead_lag.wasm
It ends with ``N passed, M failed`` and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import backtrader as bt
import pandas as pd

DAY = 86_400
T0 = 1_420_156_800  # 2015-01-02T00:00:00Z


def walks(n: int, seed: int, rho: float, gaps: bool) -> tuple[list[tuple], list[tuple]]:
    """Bars `(ts, open, high, low, close, volume)` of A and B: daily random
    walks whose moves are correlated, prices with 2 decimals."""
    rng = random.Random(seed)
    a = b = 100.0
    out_a, out_b = [], []
    for i in range(n):
        ts = T0 + DAY * i
        ra = 0.02 * (2 * rng.random() - 1)
        rb = rho * ra + math.sqrt(1 - rho * rho) * 0.02 * (2 * rng.random() - 1)
        oa, ob = a, b
        a = round(max(a * (1 + ra), 1.0), 2)
        b = round(max(b * (1 + rb), 1.0), 2)
        wa = round(abs(rng.random()) * 0.5, 2)
        wb = round(abs(rng.random()) * 0.5, 2)
        out_a.append((ts, oa, round(max(oa, a) + wa, 2), round(min(oa, a) - wa, 2), a, 1000))
        if not (gaps and i % 7 == 3):
            out_b.append((ts, ob, round(max(ob, b) + wb, 2), round(min(ob, b) - wb, 2), b, 1000))
    return out_a, out_b


def write_csv(path: Path, bars: list[tuple]) -> None:
    with open(path, "w") as f:
        f.write("timestamp,open,high,low,close,volume\n")
        for ts, o, h, lo, c, v in bars:
            f.write(f"{ts},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{v}\n")


def palisade(binary: str, module: str, a: Path, b: Path, size: float) -> dict:
    out = subprocess.run(
        [binary, "backtest", module, "--data", f"A={a}", "--data", f"B={b}",
         "-p", f"size={size}", "--cash", "1000000000", "--json", "--no-timing"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"palisade exited {out.returncode}: {out.stderr}{out.stdout}")
    return json.loads(out.stdout)


class LeadLag(bt.Strategy):
    params = (("size", 1.0),)

    def __init__(self):
        self.previous = None
        self.closed = []
        self.last_dt = None
        self.pending = None

    def notify_order(self, order):
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected):
            self.pending = None

    def notify_trade(self, trade):
        if trade.isclosed:
            self.closed.append(trade)

    def next(self):
        leader, follower = self.datas[0], self.datas[1]
        # Only at timestamps where the leader has a new bar (backtrader calls
        # next() when any feed moves).
        now = leader.datetime.datetime(0)
        if now == self.last_dt:
            return
        self.last_dt = now
        close = leader.close[0]
        if self.previous is not None and self.pending is None:
            held = self.getposition(follower).size
            if close > self.previous and held == 0:
                self.pending = self.buy(data=follower, size=self.p.size)
            elif close < self.previous and held > 0:
                self.pending = self.sell(data=follower, size=held)
        self.previous = close


def backtrader(a: list[tuple], b: list[tuple], size: float) -> tuple[list[dict], float, float]:
    cerebro = bt.Cerebro(stdstats=False)
    for bars in (a, b):
        frame = pd.DataFrame(
            [(dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None), o, h, lo, c, v)
             for ts, o, h, lo, c, v in bars],
            columns=["datetime", "open", "high", "low", "close", "volume"],
        ).set_index("datetime")
        cerebro.adddata(bt.feeds.PandasData(dataname=frame))
    cerebro.broker.setcash(1_000_000_000.0)
    cerebro.broker.setcommission(commission=0.0)
    cerebro.addstrategy(LeadLag, size=size)
    strategy = cerebro.run()[0]
    trades = []
    for t in strategy.closed:
        entry = t.history[0] if t.history else None
        trades.append({
            "entry_ts": int(bt.num2date(t.dtopen).replace(tzinfo=dt.timezone.utc).timestamp()),
            "exit_ts": int(bt.num2date(t.dtclose).replace(tzinfo=dt.timezone.utc).timestamp()),
            "entry_price": t.price,
            "pnl": t.pnl,
        })
        del entry
    held = strategy.getposition(strategy.datas[1]).size
    return trades, held, cerebro.broker.getvalue()


def compare(name: str, doc: dict, peer: tuple[list[dict], float, float]) -> list[str]:
    trades, held, value = peer
    problems = []
    ours = doc["trades"]
    if doc["outcome"] != "ok":
        return [f"palisade outcome {doc['outcome']}"]
    if len(ours) != len(trades):
        problems.append(f"{len(ours)} trades vs backtrader's {len(trades)}")
    for i, (p, q) in enumerate(zip(ours, trades)):
        if (p["entry_ts"], p["exit_ts"]) != (q["entry_ts"], q["exit_ts"]):
            problems.append(f"trade {i}: times {p['entry_ts']}..{p['exit_ts']} vs {q['entry_ts']}..{q['exit_ts']}")
            break
        # backtrader's trade price is an average (price x size / size):
        # equal to the fill price up to its last bits.
        if not math.isclose(p["entry_price"], q["entry_price"], rel_tol=1e-14):
            problems.append(f"trade {i}: entry {p['entry_price']} vs {q['entry_price']}")
            break
        if not math.isclose(p["pnl"], q["pnl"], rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"trade {i}: pnl {p['pnl']} vs {q['pnl']}")
            break
    ours_held = sum(o["qty"] for o in doc["open_positions"] if o["symbol"] == "B")
    if ours_held != held:
        problems.append(f"open position {ours_held} vs {held}")
    if not math.isclose(doc["final_equity"], value, rel_tol=1e-12):
        problems.append(f"final equity {doc['final_equity']} vs {value}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--palisade", required=True)
    ap.add_argument("--module", required=True)
    args = ap.parse_args()
    for path in (args.palisade, args.module):
        if not Path(path).exists():
            print(f"{path} does not exist (build it first)", file=sys.stderr)
            return 2
    cases = [
        ("aligned 300 bars", 300, 1, 0.9, False, 1.0),
        ("aligned 1000 bars, size 3.5", 1000, 2, 0.8, False, 3.5),
        ("aligned 2000 bars, weak link", 2000, 3, 0.2, False, 1.0),
        ("B misses every 7th timestamp", 700, 4, 0.9, True, 2.0),
    ]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, seed, rho, gaps, size in cases:
            a, b = walks(n, seed, rho, gaps)
            pa, pb = Path(tmp) / f"A{seed}.csv", Path(tmp) / f"B{seed}.csv"
            write_csv(pa, a)
            write_csv(pb, b)
            try:
                problems = compare(name, palisade(args.palisade, args.module, pa, pb, size), backtrader(a, b, size))
            except Exception as e:  # a failure to run is a failed case
                problems = [f"{type(e).__name__}: {e}"]
            trades = "?"
            if not problems:
                passed += 1
                print(f"ok    {name}")
            else:
                failed += 1
                print(f"FAIL  {name}: {'; '.join(problems)} ({trades})")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
