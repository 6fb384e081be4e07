"""The backtesting.py side of Palisade's cross-check: the ``sma-cross`` rule as a
backtesting.py ``Strategy``, a CSV loader, and a parameter optimizer.

This module holds the one Python definition of the strategy; ``crosscheck.py``
and the benchmarks both use it.

The rule (identical to Palisade's ``sma-cross`` guest) on each bar ``t`` where
both simple moving averages of the closes are defined at ``t`` and ``t-1``:

* cross up   = ``fast_t > slow_t`` and ``fast_{t-1} <= slow_{t-1}``
* cross down = ``fast_t < slow_t`` and ``fast_{t-1} >= slow_{t-1}``

Long-only: on a cross up while flat buy ``size`` units at market; on a cross
down while long close the position at market. Market orders placed on bar
``t`` fill at the open of bar ``t+1`` (backtesting.py's default,
``trade_on_close=False``); an order placed on the last bar never fills.

Palisade's SMAs are exact (integer sums of ``price * 1e8``), so two averages
of equal decimal value compare equal. Float rolling means would not: e.g.
``(0.1 + 0.2) / 2`` vs ``(0.3 + 0.0) / 2``. The signal here is therefore
computed on integers and compared by cross-multiplying the window sums by the
window lengths, which is exact rational comparison.

Requires backtesting.py (tested with 0.6.6), pandas and numpy.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

#: Initial cash used by Palisade's ``backtest`` command.
CASH = 100_000
#: Fixed-point scale of prices inside Palisade's SDK indicators.
PRICE_SCALE = 10**8


# --------------------------------------------------------------------------
# Data


def load_csv(path: str) -> pd.DataFrame:
    """Reads a ``timestamp,open,high,low,close,volume`` CSV into the frame
    backtesting.py expects (columns ``Open High Low Close Volume``, a naive UTC
    ``DatetimeIndex``).

    Timestamps may be Unix seconds or RFC 3339. Every price must be exactly
    representable at Palisade's fixed-point scale (at most 8 decimals) and its
    float must round-trip to that fixed-point value; otherwise ``ValueError``.
    Prices are parsed with Python's correctly rounded ``float()``, which is also
    what ``fixed / 1e8`` gives in f64, so both engines see identical floats.
    """
    ts: list[int] = []
    cols: dict[str, list[float]] = {k: [] for k in ("Open", "High", "Low", "Close", "Volume")}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        if header != ["timestamp", "open", "high", "low", "close", "volume"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            ts.append(parse_timestamp(row[0]))
            for name, text in zip(("Open", "High", "Low", "Close"), row[1:5]):
                value = float(text)
                if price_to_fixed(value) != _decimal_to_fixed(text, path, lineno):
                    raise ValueError(f"{path}:{lineno}: price {text} does not round-trip via f64")
                cols[name].append(value)
            cols["Volume"].append(float(row[5]))
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"{path}: timestamps are not strictly increasing")
    index = pd.to_datetime(ts, unit="s")
    return pd.DataFrame(cols, index=index)


def parse_timestamp(text: str) -> int:
    """Unix seconds from ``1420156800`` or ``2015-01-02T00:00:00Z``."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def unix_seconds(index: pd.DatetimeIndex) -> list[int]:
    """Unix seconds of a naive UTC index (independent of its resolution)."""
    return [int(x) for x in (index - pd.Timestamp(0)) // pd.Timedelta(seconds=1)]


def price_to_fixed(price: float) -> int:
    """``round(price * 1e8)``: exact for any price with <= 8 decimals below ~4.5e7
    (the product's rounding error is far below 0.5)."""
    return int(round(price * PRICE_SCALE))


def _decimal_to_fixed(text: str, path: str, lineno: int) -> int:
    scaled = Decimal(text.strip()) * PRICE_SCALE
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{path}:{lineno}: price {text} has more than 8 decimals")
    return int(scaled)


# --------------------------------------------------------------------------
# The signal


def sma_compare(closes_fixed: list[int], fast: int, slow: int) -> list[int | None]:
    """For each bar, the sign of ``sma_fast - sma_slow`` (-1, 0, 1), or ``None``
    while either average is undefined (fewer than its window of bars)."""
    if fast < 1 or slow < 1:
        raise ValueError("windows must be >= 1")
    prefix = [0]
    for c in closes_fixed:
        prefix.append(prefix[-1] + c)
    out: list[int | None] = [None] * len(closes_fixed)
    for t in range(max(fast, slow) - 1, len(closes_fixed)):
        sum_fast = prefix[t + 1] - prefix[t + 1 - fast]
        sum_slow = prefix[t + 1] - prefix[t + 1 - slow]
        # sum_fast/fast vs sum_slow/slow, without division.
        diff = sum_fast * slow - sum_slow * fast
        out[t] = (diff > 0) - (diff < 0)
    return out


def sma_cross_signals(closes_fixed: list[int], fast: int, slow: int) -> list[int]:
    """Per bar: +1 on a cross up, -1 on a cross down, 0 otherwise."""
    cmp = sma_compare(closes_fixed, fast, slow)
    sig = [0] * len(cmp)
    for t in range(1, len(cmp)):
        now, prev = cmp[t], cmp[t - 1]
        if now is None or prev is None:
            continue
        if now > 0 and prev <= 0:
            sig[t] = 1
        elif now < 0 and prev >= 0:
            sig[t] = -1
    return sig


def _signal_indicator(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    # No NaNs on purpose: backtesting.py starts calling next() after the
    # longest leading-NaN run of any indicator; with none, it starts at bar 1,
    # which is early enough for every bar where the rule can fire (t >= slow).
    fixed = [price_to_fixed(float(c)) for c in close]
    return np.asarray(sma_cross_signals(fixed, int(fast), int(slow)), dtype=float)


# --------------------------------------------------------------------------
# The strategy


class SmaCross(Strategy):
    """Long-only SMA crossover; parameters are class attributes so that
    ``Backtest.run(fast=..)`` and ``Backtest.optimize`` can set them."""

    fast = 10
    slow = 30
    size = 1  # whole units; backtesting.py reads 0 < size < 1 as a fraction of equity

    def init(self):
        self.signal = self.I(
            _signal_indicator, self.data.Close, self.fast, self.slow, name="sma_cross", plot=False
        )

    def next(self):
        signal = self.signal[-1]
        if signal > 0 and not self.position:
            self.buy(size=self.size)
        elif signal < 0 and self.position.is_long:
            self.position.close()


# --------------------------------------------------------------------------
# Running it


@dataclass
class Trade:
    """A closed trade, in the shape Palisade reports it."""

    entry_bar: int
    exit_bar: int
    entry_ts: int
    exit_ts: int
    qty: float
    entry_price: float
    exit_price: float
    pnl: float


@dataclass
class PeerResult:
    trades: list[Trade]
    final_equity: float
    open_qty: float  # summed size of trades still open at the end
    stats: pd.Series = field(repr=False)


def make_backtest(df: pd.DataFrame, cash: float = CASH) -> Backtest:
    """The backtesting.py configuration matching Palisade's defaults: no
    commission or spread, fills at the next open, no margin (``margin=1``), no
    hedging, no auto-closing, and open trades left open at the end."""
    return Backtest(
        df,
        SmaCross,
        cash=cash,
        spread=0.0,
        commission=0.0,
        margin=1.0,
        trade_on_close=False,
        hedging=False,
        exclusive_orders=False,
        finalize_trades=False,
    )


def run_backtest(df: pd.DataFrame, fast: int, slow: int, size: int = 1, cash: float = CASH) -> PeerResult:
    """Runs ``SmaCross`` once. Raises ``RuntimeError`` if backtesting.py's broker
    cancelled any order (insufficient cash/margin), since Palisade would not."""
    if not (isinstance(size, int) and size >= 1):
        raise ValueError("size must be a whole number of units >= 1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = make_backtest(df, cash).run(fast=fast, slow=slow, size=size)
    for w in caught:
        if "canceled" in str(w.message):
            raise RuntimeError(f"backtesting.py cancelled an order: {w.message}")

    ts = unix_seconds(df.index)
    trades = [
        Trade(
            entry_bar=int(row.EntryBar),
            exit_bar=int(row.ExitBar),
            entry_ts=ts[int(row.EntryBar)],
            exit_ts=ts[int(row.ExitBar)],
            qty=float(row.Size),
            entry_price=float(row.EntryPrice),
            exit_price=float(row.ExitPrice),
            pnl=float(row.PnL),
        )
        for row in stats["_trades"].itertuples(index=False)
    ]
    # stats._trades lists closed trades only; the open ones are still on the
    # strategy instance, which keeps its broker after the run.
    open_qty = float(sum(t.size for t in stats["_strategy"].trades))
    return PeerResult(trades, float(stats["Equity Final [$]"]), open_qty, stats)


def python_optimize(df: pd.DataFrame, fast_range, slow_range, cash: float = CASH):
    """Grid-searches ``fast`` x ``slow`` (with ``fast < slow``) maximizing
    ``Return [%]`` with ``Backtest.optimize``; ``size`` stays 1.

    Returns ``((fast, slow), return_pct)`` of the best run. Ties are broken the
    way backtesting.py does (``idxmax``: the first in grid order, i.e. smallest
    ``fast``, then smallest ``slow``). backtesting.py runs the grid in a
    process pool (fork on Linux, one process per CPU).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trades remain open.*")
        warnings.filterwarnings("ignore", message=".*Searching for best of.*")
        stats = make_backtest(df, cash).optimize(
            fast=list(fast_range),
            slow=list(slow_range),
            maximize="Return [%]",
            constraint=lambda p: p.fast < p.slow,
        )
    best = stats["_strategy"]
    return (int(best.fast), int(best.slow)), float(stats["Return [%]"])
