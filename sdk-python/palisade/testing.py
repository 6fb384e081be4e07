"""Test a strategy with plain CPython and pytest, without wasm or the runtime.

``MockHost`` has the semantics of the Rust SDK's ``harness::MockHost``
(``sdk/src/harness.rs``): it hands over bars one timestamp at a time (bars
sharing a timestamp together, in symbol order), fills market orders at the
open of their symbol's first bar stamped after the order (no slippage, no
commission), records every order, log line and metric, and serves the
parameters the test set; reading any other parameter stops the run as
``invalid_params``, as the runtime does. Limit and stop orders are recorded
but never filled: to check fills precisely, run the strategy with
``palisade backtest``, whose engine is the reference.

``run_strategy(MyStrategy, bars, params={...})`` runs a strategy class over
bars with its declared defaults, overridden by ``params``, and returns the
``MockHost`` to inspect::

    host = run_strategy(SmaCross, closes, params={"fast": 2, "slow": 5})
    assert [o.qty for o in host.orders] == [1.0, -1.0]

Bars may be given as

- numbers: closes of daily bars of symbol 0 (open = high = low = close,
  volume 1), as the Rust ``MockHost::from_closes``;
- 7-tuples ``(ts, symbol, open, high, low, close, volume)``, the WIT bar;
- 6-tuples ``(ts, open, high, low, close, volume)`` of symbol 0;
- objects with attributes ``open``, ``high``, ``low``, ``close`` and
  optionally ``ts`` (default: the bar's index times 86,400), ``symbol``
  (default 0) and ``volume`` (default 1), e.g. a ``palisade.Bar``;

sorted by timestamp, symbols of one timestamp in increasing order.

A run that stops through ``host.fail`` (the strategy raised
``InvalidParams`` or ``StrategyError``, or read an undeclared parameter)
raises ``RunStopped``: ``kind`` (1 invalid parameters, 2 error) and
``message``. It derives from ``BaseException``, as ``fail`` never returns in
the sandbox: a strategy's ``except Exception`` cannot swallow it.
"""

import math
from dataclasses import dataclass
from functools import partial

from . import _runtime, indicators

__all__ = ["MockHost", "MockOrder", "RunStopped", "run_strategy", "INVALID_PARAMS", "ERROR"]

#: ``RunStopped.kind`` values (``fail`` kinds of the ABI).
PANIC = 0
INVALID_PARAMS = 1
ERROR = 2

_MASK64 = (1 << 64) - 1


class RunStopped(BaseException):
    """The run stopped through ``host.fail``."""

    def __init__(self, kind, message, host=None):
        super().__init__(f"run stopped ({_KIND_NAMES.get(kind, kind)}): {message}")
        self.kind = kind
        self.message = message
        self.host = host


_KIND_NAMES = {PANIC: "panic", INVALID_PARAMS: "invalid_params", ERROR: "error"}


class MockHostError(AssertionError):
    """The strategy or runtime broke the host protocol (e.g. asked for bars
    after the data ended)."""


@dataclass
class MockOrder:
    """An order a strategy placed on a ``MockHost``."""

    id: int
    #: Index (in the whole series) of the last bar of the timestamp being
    #: handled when it was placed.
    bar_index: int
    ts: int
    symbol: int
    qty: float
    #: 0 market, 1 limit, 2 stop.
    kind: int
    price: float
    #: ``(bar index, price)`` once a market order filled.
    filled: tuple = None
    cancelled: bool = False


def _to_bar(i, b):
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        c = float(b)
        return (i * 86_400, 0, c, c, c, c, 1.0)
    if isinstance(b, (tuple, list)) and not hasattr(b, "_fields"):
        if len(b) == 7:
            ts, sym, o, h, lo, c, v = b
        elif len(b) == 6:
            ts, o, h, lo, c, v = b
            sym = 0
        else:
            raise ValueError(f"bar {i}: a tuple bar has 7 fields (ts, symbol, open, high, low, close, volume) or 6 (no symbol), not {len(b)}")
    else:
        ts = getattr(b, "ts", i * 86_400)
        sym = getattr(b, "symbol", 0)
        o, h, lo, c = b.open, b.high, b.low, b.close
        v = getattr(b, "volume", 1.0)
    return (int(ts), int(sym), float(o), float(h), float(lo), float(c), float(v))


class MockHost:
    """An in-memory host with the WIT ``host`` interface, for unit tests.

    Attributes to inspect after a run: ``orders`` (every ``MockOrder``, in
    order), ``fills`` (every fill tuple delivered), ``logs`` (``(level,
    message)``), ``metrics`` (last value per name), ``failure`` (``(kind,
    message)`` if the run stopped through ``fail``), ``finished``.
    """

    def __init__(self, bars, params=None, symbols=None, cash=100_000.0, seed=0):
        self.bars = [_to_bar(i, b) for i, b in enumerate(bars)]
        for i in range(1, len(self.bars)):
            prev, cur = self.bars[i - 1], self.bars[i]
            if cur[0] < prev[0] or (cur[0] == prev[0] and cur[1] <= prev[1]):
                raise ValueError(
                    f"bar {i}: bars must be sorted by timestamp, symbols of one timestamp increasing (ts {cur[0]}, symbol {cur[1]} after ts {prev[0]}, symbol {prev[1]})"
                )
        if any(b[1] < 0 for b in self.bars):
            raise ValueError("symbol indices must be >= 0")
        n = max([b[1] + 1 for b in self.bars] + [1 if symbols is None else len(symbols), 1])
        self.symbols = list(symbols) if symbols is not None else [f"S{i}" for i in range(n)]
        if len(self.symbols) < n:
            raise ValueError(f"bars use {n} symbols but {len(self.symbols)} names were given")
        self.params = {}
        for name, value in (params or {}).items():
            self.params[name] = float(value)
        self.delivered = 0
        self.ended = False
        # A timestamp next_bar advanced to but could not hand over alone.
        self._held = None
        # Declared indicators (makers of one symbol's updater) and, per
        # symbol, their updaters.
        self._indicators = []
        self._updaters = []
        self._window = 0
        self.positions = [0.0] * len(self.symbols)
        self.cash_balance = float(cash)
        self.last_close = [0.0] * len(self.symbols)
        self.orders = []
        self.fills = []
        self.logs = []
        self.metrics = {}
        self.failure = None
        self.finished = False
        self._rng = seed & _MASK64
        self._pending = []

    @classmethod
    def from_closes(cls, closes, **kwargs):
        """Daily bars of symbol 0 whose open, high, low and close all equal
        the given closes."""
        return cls([float(c) for c in closes], **kwargs)

    # -- inspection ----------------------------------------------------------

    def position_of(self, symbol=0):
        return self.positions[symbol] if 0 <= symbol < len(self.positions) else 0.0

    def trades(self):
        """Filled market orders as ``(bar index, qty, price)``."""
        return [(o.filled[0], o.qty, o.filled[1]) for o in self.orders if o.filled is not None]

    def _current(self):
        if self.ended or self.delivered == 0:
            return None
        return self.delivered - 1

    def _fill_at_open(self, i):
        ts, sym, o = self.bars[i][0], self.bars[i][1], self.bars[i][2]
        for order in self._pending:
            if order.filled is None and not order.cancelled and order.kind == 0 and order.symbol == sym and order.ts < ts:
                order.filled = (i, o)
                self.positions[sym] += order.qty
                self.cash_balance -= order.qty * o
                fill = (order.id, ts, sym, order.qty, o, 0.0)
                self.fills.append(fill)
                self._new_fills.append(fill)
        self._pending = [p for p in self._pending if p.filled is None and not p.cancelled]
        self.last_close[sym] = self.bars[i][5]

    # -- the WIT host interface ----------------------------------------------

    def symbol_count(self):
        return len(self.symbols)

    def next(self):
        if self._held is not None:
            data, self._held = self._held, None
            return data
        if self.ended:
            raise MockHostError("next() was called again after it handed over no bars (the runtime stops such a run)")
        start = self.delivered
        if start >= len(self.bars):
            self.ended = True
            return _runtime.pack_next([])
        ts = self.bars[start][0]
        end = start
        while end < len(self.bars) and self.bars[end][0] == ts:
            end += 1
        self._new_fills = []
        for i in range(start, end):
            self._fill_at_open(i)
        self.delivered = end
        bars = self.bars[start:end]
        values = self._values(bars) if self._indicators else ()
        return _runtime.pack_next(bars, self._new_fills, values)

    def next_bar(self):
        if self._held is not None:
            return b""
        data = self.next()
        if _runtime._HEADER.unpack_from(data) == (1, 0):
            return data[_runtime._HEADER.size :]
        self._held = data
        return b""

    def indicator(self, kind, field, period, slow, k, scale):
        if self.delivered:
            return -5
        try:
            make = partial(indicators.host_updater, kind, field, period, slow, k, scale)
            make()
        except (TypeError, ValueError):
            return -1
        window = indicators.host_window_bytes(kind, period, slow) * len(self.symbols)
        if len(self._indicators) >= indicators.HOST_MAX_INDICATORS or self._window + window > indicators.HOST_MAX_WINDOW_BYTES:
            return -6
        self._window += window
        self._indicators.append(make)
        return len(self._indicators) - 1

    def _values(self, bars):
        """The declared indicators' values after each of ``bars`` (what the
        host computes, with the Python classes)."""
        out = []
        for b in bars:
            s = b[1]
            while len(self._updaters) <= s:
                self._updaters.append(None)
            if self._updaters[s] is None:
                self._updaters[s] = [make() for make in self._indicators]
            out.append(tuple(u(b) for u in self._updaters[s]))
        return out

    def order(self, symbol, qty, kind, price):
        current = self._current()
        if current is None:
            return -4
        if not math.isfinite(qty) or qty == 0.0 or kind not in (0, 1, 2):
            return -1
        if kind != 0 and not (math.isfinite(price) and price > 0.0):
            return -1
        if not 0 <= symbol < len(self.positions):
            return -2
        order = MockOrder(len(self.orders) + 1, current, self.bars[current][0], symbol, qty, kind, price)
        self.orders.append(order)
        self._pending.append(order)
        return order.id

    def cancel(self, order_id):
        for order in self._pending:
            if order.id == order_id and order.filled is None and not order.cancelled:
                order.cancelled = True
                self._pending.remove(order)
                return 0
        return -3

    def position(self, symbol):
        return self.positions[symbol] if 0 <= symbol < len(self.positions) else math.nan

    def cash(self):
        return self.cash_balance

    def equity(self):
        marked = -0.0
        for p, c in zip(self.positions, self.last_close):
            marked += p * c
        return self.cash_balance + marked

    def param(self, name):
        try:
            return self.params[name]
        except KeyError:
            pass
        self.fail(
            INVALID_PARAMS,
            f"the strategy read parameter {name!r}, which it does not declare (declared or set: {', '.join(sorted(self.params)) or 'none'})",
        )

    def symbol_name(self, symbol):
        return self.symbols[symbol] if 0 <= symbol < len(self.symbols) else None

    def log(self, level, message):
        self.logs.append((level, message))

    def fail(self, kind, message):
        self.failure = (kind, message)
        raise RunStopped(kind, message, self)

    def random(self):
        self._rng = (self._rng + 0x9E3779B97F4A7C15) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        return (z >> 11) / 9007199254740992.0

    def metric(self, name, value):
        self.metrics[name] = value


def resolve_params(strategy_cls, params=None):
    """The declared defaults of a strategy class overridden by ``params``,
    checked as the host checks them (declared, typed, within [min, max])."""
    m = _runtime.manifest(strategy_cls)
    specs = {p["name"]: p for p in m["params"]}
    values = {name: p["default"] for name, p in specs.items()}
    for name, value in (params or {}).items():
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f"{strategy_cls.__name__} declares no parameter {name!r} (it declares {', '.join(specs) or 'none'})")
        if spec["type"] == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"parameter {name} is a bool, not {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"parameter {name} must be a finite number, not {value!r}")
            if spec["type"] == "int" and value != int(value):
                raise ValueError(f"parameter {name} is an int, not {value!r}")
            lo, hi = spec.get("min"), spec.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"parameter {name} = {value} is outside [{lo}, {hi}]")
        values[name] = value
    return {k: float(v) for k, v in values.items()}


def run_strategy(strategy_cls, bars, params=None, **host_options):
    """Runs ``strategy_cls`` over ``bars`` on a new ``MockHost`` (its
    parameters: the declared defaults overridden by ``params``) and returns
    the host. ``host_options`` go to ``MockHost`` (``symbols``, ``cash``,
    ``seed``). Raises ``RunStopped`` if the run stopped through ``fail``;
    other exceptions propagate as the strategy raised them."""
    host = MockHost(bars, params=resolve_params(strategy_cls, params), **host_options)
    _runtime.execute(strategy_cls, host)
    host.finished = True
    return host
