#!/usr/bin/env python3
"""Deterministic synthetic OHLCV bars for Palisade's examples, tests and benchmarks.

The price path is a geometric random walk driven by *regimes* that switch at
random: trending stretches (a drift up or down), mean-reverting stretches (the
log price is pulled back to where the stretch began) and short volatile bursts.
That mix makes moving-average crossover strategies trade a realistic number of
times instead of either never crossing or crossing on every bar.

Guarantees, for every bar:

* prices are whole multiples of ``--tick`` and are printed with exactly as many
  decimals as the tick has (``0.0001`` -> 4 decimals, ``1/64`` -> 6 decimals);
* ``high >= max(open, close)``, ``low <= min(open, close)``, every price > 0;
* ``volume`` is a positive integer;
* timestamps increase by exactly ``--interval`` seconds (no calendar logic);
* the same arguments always produce byte-identical output (only the standard
  library is used, with a private ``random.Random(seed)``).

Output is CSV with the header ``timestamp,open,high,low,close,volume``; the
timestamp is either Unix seconds or RFC 3339 UTC (``2015-01-02T00:00:00Z``).

Usage::

    scripts/gen_bars.py --bars 3000 --seed 3 -o /tmp/bars.csv
    scripts/gen_bars.py --bars 500 --seed 1 --tick 1/64 --price 5 --timestamps unix

The bundled samples were made with::

    scripts/gen_bars.py --bars 2520 --seed 7 --timestamps rfc3339 \\
        -o data/sample/spy-like-daily.csv
    scripts/gen_bars.py --bars 2520 --seed 11 --timestamps rfc3339 \\
        -o data/sample/qqq-like-daily.csv

Other scripts can ``import gen_bars`` and call :func:`generate` and
:func:`write_csv` (or :func:`csv_text`) directly.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, TextIO

HEADER = "timestamp,open,high,low,close,volume"


@dataclass(frozen=True)
class Tick:
    """A price increment that has a finite decimal expansion."""

    value: Decimal
    decimals: int

    @classmethod
    def parse(cls, text: str) -> "Tick":
        """Parses ``0.0001``, ``0.25`` or a fraction such as ``1/64``."""
        try:
            frac = Fraction(text.strip())
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"bad tick {text!r}: {e}") from None
        if frac <= 0:
            raise ValueError(f"tick must be positive, got {text!r}")
        # Smallest number of decimals that writes the tick exactly; exists only
        # if the reduced denominator has no prime factors other than 2 and 5.
        decimals = 0
        while (frac * 10**decimals).denominator != 1:
            decimals += 1
            if decimals > 12:
                raise ValueError(f"tick {text!r} has no short exact decimal form")
        value = Decimal(frac.numerator) / Decimal(frac.denominator)
        return cls(value=value, decimals=decimals)

    def format(self, ticks: int) -> str:
        """The price ``ticks * tick`` with exactly ``decimals`` decimals."""
        return f"{Decimal(ticks) * self.value:.{self.decimals}f}"


@dataclass(frozen=True)
class Bar:
    """One bar; prices are integer numbers of ticks."""

    ts: int
    open: int
    high: int
    low: int
    close: int
    volume: int


# Regime kinds.
_TREND, _REVERT, _BURST = "trend", "revert", "burst"


class _Regime:
    """Parameters of the current stretch of the walk, drawn when it starts."""

    def __init__(self, rng: random.Random, log_price: float):
        roll = rng.random()
        if roll < 0.45:
            self.kind = _TREND
            # Slightly more up-trends than down-trends, like an equity index.
            sign = 1.0 if rng.random() < 0.56 else -1.0
            self.drift = sign * rng.uniform(0.0006, 0.0025)
            self.sigma = rng.uniform(0.006, 0.013)
            self.length = rng.randint(40, 220)
        elif roll < 0.90:
            self.kind = _REVERT
            self.anchor = log_price
            self.pull = rng.uniform(0.08, 0.30)
            self.sigma = rng.uniform(0.005, 0.011)
            self.length = rng.randint(30, 150)
        else:
            self.kind = _BURST
            self.drift = rng.uniform(-0.002, 0.001)
            self.sigma = rng.uniform(0.018, 0.035)
            self.length = rng.randint(5, 25)

    def step(self, rng: random.Random, log_price: float) -> float:
        """Close-to-close log return for one bar."""
        shock = self.sigma * rng.gauss(0.0, 1.0)
        if self.kind == _REVERT:
            return -self.pull * (log_price - self.anchor) + shock
        return self.drift + shock


def generate(
    bars: int,
    seed: int,
    *,
    start: str = "2015-01-02",
    tick: Tick | str = "0.0001",
    price: float = 100.0,
    interval: int = 86400,
) -> list[Bar]:
    """Generates ``bars`` bars; the same arguments give the same bars."""
    if bars < 0:
        raise ValueError("bars must be >= 0")
    if interval <= 0:
        raise ValueError("interval must be > 0")
    if not price > 0:
        raise ValueError("price must be > 0")
    tick = tick if isinstance(tick, Tick) else Tick.parse(tick)
    tick_f = float(tick.value)
    t0 = _parse_start(start)

    def to_ticks(p: float) -> int:
        return max(1, round(p / tick_f))

    rng = random.Random(seed)
    log_close = math.log(price)
    regime = _Regime(rng, log_close)
    left = regime.length
    base_volume = rng.uniform(2e6, 8e6)
    out: list[Bar] = []
    for i in range(bars):
        if left == 0:
            regime = _Regime(rng, log_close)
            left = regime.length
        left -= 1

        r = regime.step(rng, log_close)
        gap = 0.35 * regime.sigma * rng.gauss(0.0, 1.0)
        log_open = log_close + gap if i else log_close
        log_close += r
        wick_up = abs(rng.gauss(0.0, 1.0)) * 0.6 * regime.sigma
        wick_dn = abs(rng.gauss(0.0, 1.0)) * 0.6 * regime.sigma

        o = to_ticks(math.exp(log_open))
        c = to_ticks(math.exp(log_close))
        h = max(o, c, to_ticks(math.exp(max(log_open, log_close) + wick_up)))
        lo = max(1, min(o, c, to_ticks(math.exp(min(log_open, log_close) - wick_dn))))

        # Busier on big moves, with a slowly wandering base level.
        base_volume *= math.exp(0.02 * rng.gauss(0.0, 1.0))
        base_volume = min(max(base_volume, 1e6), 2e7)
        activity = 1.0 + 2.5 * abs(r) / 0.01
        volume = max(1, int(base_volume * activity * math.exp(0.3 * rng.gauss(0.0, 1.0))))

        out.append(Bar(t0 + i * interval, o, h, lo, c, volume))
    return out


def _parse_start(text: str) -> int:
    """Unix seconds of ``YYYY-MM-DD`` (midnight UTC) or a full RFC 3339 time."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def format_ts(ts: int, style: str) -> str:
    if style == "unix":
        return str(ts)
    if style == "rfc3339":
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ValueError(f"unknown timestamp style {style!r}")


def write_csv(
    bars: Iterable[Bar], out: TextIO, tick: Tick | str = "0.0001", timestamps: str = "rfc3339"
) -> None:
    """Writes ``bars`` as CSV (``\\n`` line endings) to the text stream ``out``."""
    tick = tick if isinstance(tick, Tick) else Tick.parse(tick)
    out.write(HEADER + "\n")
    for b in bars:
        out.write(
            f"{format_ts(b.ts, timestamps)},{tick.format(b.open)},{tick.format(b.high)},"
            f"{tick.format(b.low)},{tick.format(b.close)},{b.volume}\n"
        )


def csv_text(bars: Iterable[Bar], tick: Tick | str = "0.0001", timestamps: str = "rfc3339") -> str:
    """The CSV :func:`write_csv` would write, as a string."""
    import io

    buf = io.StringIO()
    write_csv(bars, buf, tick, timestamps)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", type=int, required=True, help="number of bars")
    ap.add_argument("--seed", type=int, required=True, help="random seed")
    ap.add_argument("--start", default="2015-01-02", help="first timestamp (default 2015-01-02, UTC)")
    ap.add_argument("--tick", default="0.0001", help="price increment, e.g. 0.01 or 1/64 (default 0.0001)")
    ap.add_argument("--price", type=float, default=100.0, help="first open (default 100)")
    ap.add_argument("--timestamps", choices=("unix", "rfc3339"), default="rfc3339")
    ap.add_argument("--interval", type=int, default=86400, help="seconds between bars (default 86400)")
    ap.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    args = ap.parse_args(argv)
    try:
        tick = Tick.parse(args.tick)
        bars = generate(
            args.bars, args.seed, start=args.start, tick=tick, price=args.price, interval=args.interval
        )
    except ValueError as e:
        ap.error(str(e))
    if args.output == "-":
        write_csv(bars, sys.stdout, tick, args.timestamps)
    else:
        with open(args.output, "w", newline="", encoding="ascii") as f:
            write_csv(bars, f, tick, args.timestamps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
