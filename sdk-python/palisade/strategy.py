"""The ``Strategy`` base class a Python strategy derives from, its parameter
declarations (``Int``, ``Float``, ``Bool``), the records it receives (``Bar``,
``Fill``), the bar history it has seen, and the errors it raises to stop a run.

A strategy acts through the host object the runtime gives it (the WIT
``host`` interface, ``host-api/wit/palisade.wit``); this module only turns
the host's plain calls into the methods an author uses. It runs nothing
itself: the event loop is ``palisade._runtime`` (the same loop in the
sandbox, under ``palisade.testing.run_strategy`` and in benchmarks).

What it deliberately does not do: no I/O, no clock, no threads, and no
look-ahead: the history holds only the bars the runtime has handed over, none
stamped later than the timestamp being handled.
"""

import enum
import keyword
import re
from collections import namedtuple

__all__ = [
    "Bar",
    "Bool",
    "Fill",
    "Float",
    "History",
    "Int",
    "InvalidParams",
    "OrderError",
    "Strategy",
    "StrategyError",
]

#: One bar. ``ts`` is the bar's open in Unix seconds, ``symbol`` the symbol's
#: index in the run (0 for single-symbol data).
Bar = namedtuple("Bar", "ts symbol open high low close volume")


def _bar_getattr(bar, name):
    # Reached only when normal lookup fails: a field the bar does not have.
    fields = ", ".join(type(bar)._fields)
    hint = "" if name[:1] == "_" else f"; an indicator is read as bar.<name> once declared in init: self.indicator({name!r}, ...)"
    raise AttributeError(f"Bar has no field {name!r} (its fields: {fields}){hint}")


Bar.__getattr__ = _bar_getattr
#: One fill of an order the strategy placed: ``qty`` is signed, ``price``
#: includes slippage.
Fill = namedtuple("Fill", "order_id ts symbol qty price commission")

#: Strategy and parameter names (ABI v2's manifest rule).
NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")


class StrategyError(Exception):
    """Raise it to stop the run with an error of the strategy's own (the
    host's ``fail`` kind 2); the message is reported."""

    kind = 2


class InvalidParams(StrategyError):
    """Raise it (normally in ``init``) when the parameters break a constraint
    that declared ranges cannot express, e.g. ``fast < slow``: the run stops
    as ``invalid_params`` with this message (``fail`` kind 1)."""

    kind = 1


class OrderError(enum.IntEnum):
    """Why the host refused an order or a cancel (ABI v2's error codes)."""

    #: Zero, NaN or infinite quantity, a bad limit or stop price.
    BAD_ARGUMENT = -1
    UNKNOWN_SYMBOL = -2
    #: No pending order with that id.
    UNKNOWN_ORDER = -3
    #: No timestamp is being handled (in ``init`` or ``finish``).
    NO_BAR = -4


def _order_error(code):
    try:
        return OrderError(code)
    except ValueError:
        return code


# ---------------------------------------------------------------------------
# Parameter declarations
# ---------------------------------------------------------------------------


class Param:
    """A declared parameter: a class attribute of a ``Strategy``. Its value
    (the host's, or the default in tests) is an instance attribute of the
    same name, set before ``init`` runs. Checked when the manifest is built
    (``palisade._runtime.manifest``), not here, so that a bad declaration is
    reported as a manifest error."""

    type = None

    def __init__(self, default, min=None, max=None, description=None):
        self.default = default
        self.min = min
        self.max = max
        self.description = description
        self.name = None

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        # Only reached before the value is set on the instance (the instance
        # attribute takes precedence over this non-data descriptor).
        if obj is None:
            return self
        return obj.param(self.name)

    def convert(self, value):
        """The host's float as this parameter's Python type."""
        return float(value)

    def __repr__(self):
        extra = "".join(
            f", {k}={v!r}" for k, v in (("min", self.min), ("max", self.max), ("description", self.description)) if v is not None
        )
        return f"{type(self).__name__}({self.default!r}{extra})"


class Int(Param):
    """An integer parameter: ``fast = Int(10, min=2, max=200, description="...")``.
    Its value is an ``int``."""

    type = "int"

    def convert(self, value):
        return int(value)


class Float(Param):
    """A floating-point parameter: ``size = Float(1.0, min=0.01)``."""

    type = "float"


class Bool(Param):
    """A boolean parameter: ``short = Bool(False, description="...")``. Its
    value is a ``bool``."""

    type = "bool"

    def __init__(self, default, description=None):
        super().__init__(default, description=description)

    def convert(self, value):
        return value != 0.0


def declared_params(cls):
    """The parameters a strategy class declares (its bases' first), as a dict
    name -> ``Param``."""
    params = {}
    for klass in reversed(cls.__mro__):
        for key, value in vars(klass).items():
            if isinstance(value, Param):
                params[key] = value
            elif key in params:
                del params[key]
    return params


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------

_FIELDS = {"ts": 0, "symbol": 1, "open": 2, "high": 3, "low": 4, "close": 5, "volume": 6}


class Column:
    """One field of a symbol's bar history, oldest first: ``col[-1]`` is the
    current bar's value, ``col[-2]`` the previous one, a slice gives a list.
    A view, not a copy: it grows as bars arrive and costs nothing to hold."""

    __slots__ = ("_bars", "_field")

    def __init__(self, bars, field):
        self._bars = bars
        self._field = field

    def __getitem__(self, i):
        if type(i) is int:
            return self._bars[i][self._field]
        if isinstance(i, slice):
            f = self._field
            return [b[f] for b in list(self._bars)[i]]
        return self._bars[i][self._field]

    def __len__(self):
        return len(self._bars)

    def __iter__(self):
        f = self._field
        return (b[f] for b in self._bars)

    def tolist(self):
        """The column's values as a new list."""
        f = self._field
        return [b[f] for b in self._bars]

    def __repr__(self):
        return f"Column({self.tolist()!r})"


class History:
    """The bars of one symbol the strategy has seen, oldest first, up to and
    including the current timestamp: ``h[-1]`` is the current ``Bar``;
    ``h.close``, ``h.open``, ``h.high``, ``h.low``, ``h.volume``, ``h.ts``
    are ``Column`` views (also under backtesting.py's names ``Close``,
    ``Open``, ``High``, ``Low``, ``Volume``)."""

    __slots__ = ("_bars", "_indicators", "ts", "open", "high", "low", "close", "volume")

    def __init__(self, bars, indicators=()):
        self._bars = bars
        self._indicators = tuple(indicators)
        for name in ("ts", "open", "high", "low", "close", "volume"):
            setattr(self, name, Column(bars, _FIELDS[name]))

    Open = property(lambda self: self.open)
    High = property(lambda self: self.high)
    Low = property(lambda self: self.low)
    Close = property(lambda self: self.close)
    Volume = property(lambda self: self.volume)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self._bars)[i]
        return self._bars[i]

    def __len__(self):
        return len(self._bars)

    def __iter__(self):
        return iter(self._bars)

    def __repr__(self):
        return f"History({len(self._bars)} bars)"

    def __getattr__(self, name):
        # The columns of declared indicators (Strategy.indicator). Private
        # and special names are never columns (copy and pickle look some up
        # on objects whose slots are not set yet).
        if name[:1] != "_":
            names = self._indicators
            if name in names:
                return Column(self._bars, len(Bar._fields) + names.index(name))
        raise AttributeError(f"History has no column {name!r}")


def bar_type(names):
    """``Bar`` with the declared indicators' values after its fields, read
    as ``bar.<name>`` (``Bar`` itself when there are none)."""
    if not names:
        return Bar
    fields = namedtuple("Bar", Bar._fields + tuple(names))
    return type("Bar", (fields, Bar), {"__slots__": (), "__module__": Bar.__module__})


# ---------------------------------------------------------------------------
# Strategy
# ---------------------------------------------------------------------------

_LEVELS = {"error": 0, "warn": 1, "warning": 1, "info": 2, "debug": 3}


class Strategy:
    """Base class of a Python strategy. Subclass it, declare parameters as
    class attributes, and override ``next`` (and optionally ``init``,
    ``on_timestamp``, ``on_fill``, ``finish``)::

        class SmaCross(Strategy):
            \"\"\"long-only SMA crossover\"\"\"
            fast = Int(10, min=1, max=1000, description="fast SMA length")
            slow = Int(30, min=2, max=5000, description="slow SMA length")

            def init(self):
                if self.fast >= self.slow:
                    raise InvalidParams("fast must be less than slow")
                self.pair = SmaPair(self.fast, self.slow)

            def next(self, bar):
                ...

    Class attributes describing the strategy (its manifest): ``name``
    (default: the class name in kebab-case, ``[a-z0-9_-]{1,64}``),
    ``version`` (default ``"0.1.0"``), ``description`` (default: the first
    line of the docstring), ``warmup`` (a bar count or the name of an ``Int``
    parameter), and ``keep_bars``, the bar history kept per symbol: ``None``
    (default) keeps every bar when the class's code mentions ``data`` or
    ``history`` and none otherwise, ``True`` every bar, ``False`` or ``0``
    none, ``N`` the last ``N``.

    Order methods return the order id (an int >= 1), or ``None`` when the
    host refused the order (as the Rust SDK returns an error value rather
    than stopping); ``last_order_error`` then says why (an ``OrderError``).
    """

    name = None
    version = "0.1.0"
    description = None
    warmup = None
    keep_bars = None

    #: Why the last refused order or cancel was refused (``OrderError``).
    last_order_error = None

    _host = None
    _params = {}
    _histories = None
    _history_views = None

    # -- what the author overrides ------------------------------------------

    def init(self):
        """Set-up, once before the first bar; parameters are already set as
        attributes. Orders are refused here (there is no bar yet)."""

    def next(self, bar):
        """Handles one ``Bar``. Orders placed here fill on their symbol's
        first bar stamped after this one, at the earliest."""

    def on_timestamp(self, bars):
        """Handles every symbol's bar at one timestamp (a list, in symbol
        order); by default calls ``next`` for each. Override it to decide on
        several symbols together."""
        nxt = self.next
        for bar in bars:
            nxt(bar)

    def on_fill(self, fill):
        """Called for each ``Fill`` of an order this strategy placed, before
        the bars of the timestamp it filled at."""

    def finish(self):
        """Called once after the last bar; orders are refused here."""

    # -- indicators the host computes ---------------------------------------

    def indicator(self, name, indicator, line=None, of=None):
        """Declares, in ``init``, an indicator the host computes for every
        symbol: each bar then carries its value after that bar as
        ``bar.<name>`` (a float, NaN while undefined), exactly what updating
        ``indicator`` with the symbol's bars yourself would give, without
        running Python per bar. ``indicator`` is an instance of ``Sma``,
        ``SmaPair`` (its value is ``compare()``: -1.0, 0.0 or 1.0; with
        ``line="cross"``, its crossing at this bar: 1.0 when fast > slow now
        and fast <= slow on the previous bar, -1.0 the other way, else 0.0),
        ``Ema``, ``Rsi``, ``Atr``, ``Donchian`` or ``Bollinger`` (only its
        settings are read; the host makes one per symbol); ``line`` picks a
        line of ``Donchian`` or ``Bollinger`` (``"upper"``, ``"middle"``,
        ``"lower"``); ``of`` the field the others read (default
        ``"close"``). At most 16 per strategy."""
        from .indicators import HOST_INSTANCE_BYTES, HOST_MAX_INDICATORS, HOST_MAX_WINDOW_BYTES, host_declaration

        names = self.__dict__.get("_indicator_names")
        if type(names) is not list:
            raise RuntimeError("indicators are declared in init, before the first bar")
        if (
            type(name) is not str
            or not name.isascii()
            or not name.isidentifier()
            or name[:1] == "_"
            or keyword.iskeyword(name)
            or hasattr(Bar, name)
            or hasattr(History, name)
        ):
            raise ValueError(
                "an indicator's name is an ASCII identifier, not a keyword, not starting with _, and not the "
                f"name of a Bar or History attribute ({', '.join(Bar._fields)}, count, index, Open, High, Low, "
                f"Close, Volume), not {name!r}"
            )
        if name in names:
            raise ValueError(f"indicator {name!r} is declared already")
        args = host_declaration(indicator, line, of)
        got = self._host.indicator(*args)
        if got == -6:
            raise ValueError(
                f"indicator {name!r} is over the host's limits: at most {HOST_MAX_INDICATORS} indicators, "
                f"and {HOST_MAX_WINDOW_BYTES >> 20} MiB for all symbols together ({HOST_INSTANCE_BYTES} bytes an "
                "indicator per symbol, and its window: 8 bytes a period's value, 32 for Donchian)"
            )
        if got < 0 or got != len(names):
            raise ValueError(f"the host refused indicator {name!r} ({type(indicator).__name__}, code {got})")
        names.append(name)

    # -- actions ------------------------------------------------------------

    def _order(self, symbol, qty, limit, stop):
        if limit is None:
            if stop is None:
                kind, price = 0, 0.0
            else:
                kind, price = 2, float(stop)
        elif stop is None:
            kind, price = 1, float(limit)
        else:
            raise ValueError("an order takes a limit price or a stop price, not both")
        order_id = self._host.order(symbol, float(qty), kind, price)
        if order_id > 0:
            return order_id
        self.last_order_error = _order_error(order_id)
        return None

    def buy(self, size=1.0, symbol=0, limit=None, stop=None):
        """Buys ``size`` units of ``symbol``: at market, or as a limit order
        (fills at ``limit`` or below) or a stop order (becomes a market order
        once the price trades at or above ``stop``). Returns the order id, or
        ``None`` if the host refused it (see ``last_order_error``)."""
        return self._order(symbol, size, limit, stop)

    def sell(self, size=1.0, symbol=0, limit=None, stop=None):
        """Sells ``size`` units of ``symbol`` (as ``buy``, mirrored: a limit
        sells at ``limit`` or above, a stop once the price trades at or below
        ``stop``)."""
        return self._order(symbol, -size, limit, stop)

    def close(self, symbol=0):
        """Sends a market order for minus the position in ``symbol``; returns
        its id, or ``None`` when already flat (or refused: see
        ``last_order_error``)."""
        held = self._host.position(symbol)
        if held == 0.0:
            return None
        return self._order(symbol, -held, None, None)

    def cancel(self, order_id):
        """Cancels a pending order: ``True``, or ``False`` when no such order
        is pending (``last_order_error`` is then ``UNKNOWN_ORDER``)."""
        code = self._host.cancel(order_id)
        if code == 0:
            return True
        self.last_order_error = _order_error(code)
        return False

    def position(self, symbol=0):
        """Signed quantity held in ``symbol`` now (NaN for an unknown symbol)."""
        return self._host.position(symbol)

    @property
    def cash(self):
        """Cash now."""
        return self._host.cash()

    @property
    def equity(self):
        """Cash plus positions marked at their last close."""
        return self._host.equity()

    def log(self, message, level="info"):
        """Writes a line to the run's log; ``level`` is ``"error"``,
        ``"warn"``, ``"info"`` or ``"debug"``."""
        try:
            code = _LEVELS[level]
        except KeyError:
            raise ValueError(f"log level must be error, warn, info or debug, not {level!r}") from None
        self._host.log(code, str(message))

    def random(self):
        """The next value in ``[0, 1)`` of the run's seeded random stream
        (the same for the same seed, on every host)."""
        return self._host.random()

    def metric(self, name, value):
        """Records a named value in the run's result (the last one is kept)."""
        self._host.metric(str(name), float(value))

    def symbol_name(self, symbol):
        """The name of a symbol index, or ``None`` if the data has none."""
        return self._host.symbol_name(symbol)

    def param(self, name):
        """A parameter's value, read from the host. Reading a name the class
        does not declare stops the run as ``invalid_params``, naming it."""
        value = self._host.param(name)
        spec = self._params.get(name)
        return value if spec is None else spec.convert(value)

    # -- history ------------------------------------------------------------

    @property
    def data(self):
        """The bar history of symbol 0 (``self.history(0)``), as
        backtesting.py's ``self.data``: ``self.data.close[-1]``."""
        return self.history(0)

    def history(self, symbol=0):
        """The bars of ``symbol`` seen so far, oldest first, the current
        timestamp's included (a ``History``)."""
        views = self._history_views
        if views is None:
            raise RuntimeError(
                f"{type(self).__name__} keeps no bar history (keep_bars = {self.keep_bars!r}); "
                "set keep_bars = True (every bar) or keep_bars = N (the last N bars) on the class"
            )
        view = views[symbol]
        if view is None:
            view = views[symbol] = History(self._histories[symbol], self.__dict__.get("_indicator_names", ()))
        return view

    # -- undeclared names ---------------------------------------------------

    def __getattr__(self, name):
        # Reached only when normal lookup fails. A name that could be a
        # parameter goes to the host, which stops the run as invalid_params
        # naming it (the strategy reads a parameter it did not declare).
        host = self._host
        if host is None or name[:1] == "_" or NAME_RE.fullmatch(name) is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in self.__dict__.get("_indicator_names", ()):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}: {name!r} is an indicator the host computes, "
                f"read it from the bar as bar.{name}"
            )
        host.param(name)
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r} and declares no parameter {name!r}: "
            f"set self.{name} in init, or declare it on the class, e.g. {name} = Float(...)"
        )
