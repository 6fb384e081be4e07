"""Streaming technical indicators, a port of the Rust SDK's
``sdk/src/indicators.rs`` giving bit-identical values.

Each indicator is fed one value (or one bar's high/low/close) at a time with
``update``, which returns ``None`` while the indicator is warming up and the
value once it has seen enough data; ``value()`` returns the last result again
without new input. ``SmaPair``, made for crossover rules, is fed with ``push``
and read with ``compare()``, ``fast()`` and ``slow()``.

Every operation on floats is the Rust code's, in the Rust code's order, so a
Python strategy and a Rust one fed the same bars take the same decisions: the
fixture ``tests/fixtures/indicators.json`` is written by the Rust SDK
(``sdk/tests/indicator_fixtures.rs``) and the Python tests compare every value
with ``==``. Two rules keep that true here: the exact indicators (``Sma``,
``SmaPair`` and the middle band of ``Bollinger``) sum fixed-point integers in
Python ints, and floats are summed in explicit loops, never with ``sum()``
(Python 3.12+ sums floats with compensation, Rust does not).

``Sma``, ``SmaPair`` and the middle band of ``Bollinger`` are *exact*: inputs
are rounded to a fixed-point grid (8 decimals by default) and summed in
integers, so two averages whose decimal means are equal give equal floats
whatever their lengths, and crossover rules do not depend on rounding noise.

What it deliberately does not do: it does not validate bars, resample or
align series, keeps no history beyond each indicator's window, and is not a
statistics library.

Conventions (as in Rust):

- Constructors raise ``ValueError`` on settings out of range (a period of 0,
  or of 1 for ``RollingStats``; a Bollinger period above ``2**20``; a scale
  outside ``[1, 2**53]``) and ``TypeError`` on a period that is not an int.
- NaN or infinite inputs never raise. A windowed indicator (``Sma``,
  ``Bollinger``, ``Donchian``, ``RollingStats``) returns NaN while such a value
  is inside its window and recovers once it has left. A recursive indicator
  (``Ema``, ``Rsi``, ``Atr``) feeds each result into the next, so a NaN input
  makes every later value NaN until ``reset()``.
- ``compare`` answers ``-1``, ``0`` or ``1`` (less, equal, greater), or
  ``None`` when the averages cannot be compared.
"""

from collections import deque, namedtuple
from math import isfinite, sqrt

__all__ = [
    "DEFAULT_SCALE",
    "Sma",
    "SmaPair",
    "Ema",
    "Rsi",
    "Atr",
    "Bollinger",
    "BollingerBands",
    "Donchian",
    "DonchianChannel",
    "RollingStats",
    "WindowStats",
]

#: Default fixed-point scale of the exact indicators: inputs are rounded to
#: multiples of ``1 / DEFAULT_SCALE``, i.e. to 8 decimals.
DEFAULT_SCALE = 100_000_000

#: Largest magnitude of a quantized value, ``2**53``.
_MAX_QUANTIZED = 1 << 53
_MAX_QUANTIZED_F = float(_MAX_QUANTIZED)
#: Floats that hold integers. ``SmaPair`` keeps its values and sums as
#: floats while each is an integer of at most ``2**53`` in magnitude (a
#: float holds such integers exactly, and adds and subtracts them exactly),
#: which the interpreter handles faster than integers above ``2**30``.
#: ``(y + _ROUNDER) - _ROUNDER`` is ``y`` rounded to an integer, halves to
#: even, for ``|y| < 2**51``.
_ROUNDER = 6755399441055744.0  # 1.5 * 2**52
#: Marks a value that could not be quantized (NaN, infinite or out of range).
_INVALID = None

_NAN = float("nan")

#: One reading of ``Bollinger``.
BollingerBands = namedtuple("BollingerBands", "lower middle upper stddev")
#: One reading of ``Donchian``.
DonchianChannel = namedtuple("DonchianChannel", "upper lower middle")
#: One reading of ``RollingStats``.
WindowStats = namedtuple("WindowStats", "mean variance stddev")


def _quantize(x, scale_f):
    """``round(x * scale)`` with halves away from zero, or ``None`` when the
    product is NaN, infinite or above ``2**53`` in magnitude (the Rust
    ``quantize``: only the product is a float operation)."""
    y = x * scale_f
    if -_MAX_QUANTIZED_F <= y <= _MAX_QUANTIZED_F:
        t = int(y)
        f = y - t  # exact: the fractional part of y
        if f >= 0.5:
            return t + 1
        if f <= -0.5:
            return t - 1
        return t
    return _INVALID


def _max_nan(a, b):
    """The larger of ``a`` and ``b``, NaN if either is NaN."""
    if a >= b:
        return a
    if b > a:
        return b
    return _NAN


def _check_period(period, what, least=1):
    if type(period) is not int:
        raise TypeError(f"{what} period must be an int, got {type(period).__name__}")
    if period < least:
        word = "at least 1" if least == 1 else f"at least {least}, got {period}"
        raise ValueError(f"{what} period must be {word}")


def _check_exact(period, scale, what):
    _check_period(period, what)
    if type(scale) is not int or not 1 <= scale <= _MAX_QUANTIZED:
        raise ValueError(f"{what} scale must be between 1 and 2^53, got {scale}")


def _mean_from(q, r, n, scale_f):
    """``(Q + R / n) / scale`` as the Rust ``WindowSum::mean_from``."""
    return (float(q) + float(r) / float(n)) / scale_f


def _mean(total, invalid, n, scale_f):
    if invalid:
        return _NAN
    q, r = divmod(int(total), n)
    return (float(q) + float(r) / float(n)) / scale_f


def _compare(sum_a, len_a, sum_b, len_b):
    """Exact comparison of two window means (sums cross-multiplied)."""
    x = sum_a * len_b
    y = sum_b * len_a
    return (x > y) - (x < y)


class Sma:
    """Simple moving average of the last ``period`` values, computed exactly
    on a fixed-point grid of ``1 / scale`` (see the module's docs).

    >>> sma = Sma(3)
    >>> [sma.update(x) for x in (1.0, 2.0, 3.0, 4.0)]
    [None, None, 2.0, 3.0]
    """

    __slots__ = ("_q", "_next", "_filled", "_sum", "_invalid", "_scale", "_scale_f")

    def __init__(self, period, scale=DEFAULT_SCALE):
        _check_exact(period, scale, "sma")
        self._q = [0] * period
        self._scale = scale
        self._scale_f = float(scale)
        self.reset()

    def _push(self, x):
        q = _quantize(x, self._scale_f)
        ring = self._q
        i = self._next
        n = len(ring)
        if self._filled == n:
            old = ring[i]
            if old is None:
                self._invalid -= 1
            else:
                self._sum -= old
        else:
            self._filled += 1
        ring[i] = q
        i += 1
        self._next = 0 if i == n else i
        if q is None:
            self._invalid += 1
        else:
            self._sum += q

    def update(self, x):
        """Adds ``x``; the average of the last ``period`` values, or ``None``
        until ``period`` values have been seen."""
        self._push(x)
        return self.value()

    def push(self, x):
        """Adds ``x`` without computing the average (for ``compare``)."""
        self._push(x)

    def value(self):
        """The current average, or ``None`` during warm-up."""
        if self._filled != len(self._q):
            return None
        return _mean(self._sum, self._invalid, len(self._q), self._scale_f)

    def compare(self, other):
        """This average compared with ``other``'s exactly: ``-1``, ``0`` or
        ``1``; ``None`` until both are ready, while either holds a NaN or
        out-of-range value, or when their scales differ."""
        if (
            self._filled != len(self._q)
            or other._filled != len(other._q)
            or self._scale != other._scale
            or self._invalid
            or other._invalid
        ):
            return None
        return _compare(self._sum, len(self._q), other._sum, len(other._q))

    def is_ready(self):
        return self._filled == len(self._q)

    @property
    def period(self):
        return len(self._q)

    @property
    def scale(self):
        return self._scale

    def reset(self):
        """Forgets every value seen, keeping period and scale."""
        self._next = 0
        self._filled = 0
        self._sum = 0
        self._invalid = 0


class SmaPair:
    """Two exact simple moving averages of one series, a fast and a slow one:
    the indicator of crossover rules. ``fast()``, ``slow()`` and
    ``compare()`` give what two ``Sma`` of the same lengths and scale would
    give, for about half the work. The lengths may be in either order.
    Feed it Python floats (or ints): a NumPy ``float32`` is neither, and
    would be rounded in single precision; pass ``float(x)``.

    >>> pair = SmaPair(1, 3)
    >>> for x in (0.3, 0.1, 0.2):
    ...     pair.push(x)
    >>> pair.compare()  # 0.2 == (0.3 + 0.1 + 0.2) / 3, exactly
    0
    """

    __slots__ = (
        "_ring",
        "_next",
        "_seen",
        "_len",
        "_fast_len",
        "_slow_len",
        "_fast_sum",
        "_slow_sum",
        "_fast_invalid",
        "_slow_invalid",
        "_scale",
        "_scale_f",
        "_ring_invalid",
        "_float_max",
        "_hot_max",
        "_hot_min",
        "_fast_len_f",
        "_slow_len_f",
        "_int_hot",
    )

    def __init__(self, fast, slow, scale=DEFAULT_SCALE):
        _check_exact(fast, scale, "sma pair fast")
        _check_exact(slow, scale, "sma pair slow")
        self._len = max(fast, slow)
        self._fast_len = fast
        self._slow_len = slow
        # The lengths as floats: the hot path's products are float by float.
        self._fast_len_f = float(fast)
        self._slow_len_f = float(slow)
        self._scale = scale
        self._scale_f = float(scale)
        self.reset()

    def push(self, x):
        """Adds ``x`` to both averages."""
        # The hot paths of crossover strategies (both windows full, no
        # invalid value in them): in floats, or in integers once a value was
        # too large for floats. Everything else goes to _push.
        # ``push_compare`` repeats the float path rather than calling this:
        # measured, the call would cost sma-cross 1,250 more fuel a bar of
        # its 28,200 (4.4 %).
        y = x * self._scale_f
        if self._hot_min <= y <= self._hot_max:
            q = (y + _ROUNDER) - _ROUNDER
            half = y - q
            if half == 0.5:
                if y > 0.0:
                    q += 1.0
            elif half == -0.5 and y < 0.0:
                q -= 1.0
        elif self._int_hot and -_MAX_QUANTIZED_F <= y <= _MAX_QUANTIZED_F:
            q = int(y)
            half = y - q  # exact: the fractional part of y
            if half >= 0.5:
                q += 1
            elif half <= -0.5:
                q -= 1
        else:
            self._push(_quantize(x, self._scale_f))
            return
        ring = self._ring
        i = self._next
        # A full window of w values drops the value pushed w values ago
        # (a negative index wraps around the ring).
        self._fast_sum += q - ring[i - self._fast_len]
        self._slow_sum += q - ring[i - self._slow_len]
        ring[i] = q
        i += 1
        self._next = 0 if i == self._len else i

    def _push(self, q):
        if self._float_max >= 0.0 and q is not None:
            if -self._float_max <= q <= self._float_max:
                q = float(q)
            else:
                self._to_integers()
        ring = self._ring
        n = self._len
        i = self._next
        seen = self._seen
        w = self._fast_len
        if seen >= w:
            old = ring[i - w]
            if old is None:
                self._fast_invalid -= 1
            else:
                self._fast_sum -= old
        w = self._slow_len
        if seen >= w:
            old = ring[i - w]
            if old is None:
                self._slow_invalid -= 1
            else:
                self._slow_sum -= old
        if q is None:
            self._fast_invalid += 1
            self._slow_invalid += 1
            self._ring_invalid += 1
        else:
            self._fast_sum += q
            self._slow_sum += q
        if seen == n and ring[i] is None:
            self._ring_invalid -= 1
        ring[i] = q
        i += 1
        self._next = 0 if i == n else i
        if seen < n:
            self._seen = seen + 1
        full_valid = self._seen == n and self._ring_invalid == 0
        self._hot_max = self._float_max if full_valid else -1.0
        self._hot_min = -self._hot_max
        self._int_hot = full_valid and self._float_max < 0.0

    def _to_integers(self):
        """Leaves floats for exact integers until the next ``reset``: a value
        too large for float sums to stay exact arrived."""
        self._ring = [None if v is None else int(v) for v in self._ring]
        self._fast_sum = int(self._fast_sum)
        self._slow_sum = int(self._slow_sum)
        self._float_max = -1.0

    def push_compare(self, x):
        """``push(x)`` then ``compare()``, in one call: what a crossover rule
        does on every bar, for less work than the two calls."""
        y = x * self._scale_f
        if not self._hot_min <= y <= self._hot_max:
            self.push(x)
            return self.compare()
        q = (y + _ROUNDER) - _ROUNDER
        half = y - q
        if half == 0.5:
            if y > 0.0:
                q += 1.0
        elif half == -0.5 and y < 0.0:
            q -= 1.0
        ring = self._ring
        i = self._next
        fast = self._fast_sum = self._fast_sum + (q - ring[i - self._fast_len])
        slow = self._slow_sum = self._slow_sum + (q - ring[i - self._slow_len])
        ring[i] = q
        i += 1
        self._next = 0 if i == self._len else i
        a = fast * self._slow_len_f
        b = slow * self._fast_len_f
        if a > b:
            return 1
        if a < b:
            return -1
        return _compare(int(fast), self._fast_len, int(slow), self._slow_len)

    def compare(self):
        """The fast average compared with the slow one, exactly: ``-1``,
        ``0`` or ``1``; ``None`` until both are ready and while either window
        holds a NaN or out-of-range value."""
        if self._seen != self._len or self._fast_invalid or self._slow_invalid:
            return None
        x = self._fast_sum * self._slow_len
        y = self._slow_sum * self._fast_len
        if x == y and self._float_max >= 0.0:
            # Float products that tie may be rounded: decide in integers (a
            # float product never reverses the order of the exact ones).
            return _compare(int(self._fast_sum), self._fast_len, int(self._slow_sum), self._slow_len)
        return (x > y) - (x < y)

    def fast(self):
        """The fast average, or ``None`` during its warm-up."""
        if self._seen < self._fast_len:
            return None
        return _mean(self._fast_sum, self._fast_invalid, self._fast_len, self._scale_f)

    def slow(self):
        """The slow average, or ``None`` during its warm-up."""
        if self._seen < self._slow_len:
            return None
        return _mean(self._slow_sum, self._slow_invalid, self._slow_len, self._scale_f)

    def is_ready(self):
        return self._seen == self._len

    @property
    def periods(self):
        return (self._fast_len, self._slow_len)

    @property
    def scale(self):
        return self._scale

    def reset(self):
        """Forgets every value seen, keeping periods and scale."""
        self._next = 0
        self._seen = 0
        self._fast_sum = 0.0
        self._slow_sum = 0.0
        self._fast_invalid = 0
        self._slow_invalid = 0
        self._ring_invalid = 0  # invalid values anywhere in the ring
        # Below this magnitude (after scaling) every value and every sum of a
        # window is an integer that a float holds exactly, and rounds with
        # _ROUNDER (see "Floats that hold integers" above).
        self._float_max = float(min((1 << 53) // (self._len + 1), (1 << 51) - 1))
        self._ring = [0.0] * self._len
        # The hot paths' switches, set once the ring is full and free of
        # invalid values: the float path's bound (_float_max), or the
        # integer path's flag once in integers.
        self._hot_max = -1.0
        self._hot_min = 1.0
        self._int_hot = False


class Ema:
    """Exponential moving average, ``alpha = 2 / (period + 1)``, seeded with
    the simple average (in floats) of the first ``period`` values."""

    __slots__ = ("_period", "_alpha", "_count", "_ema")

    def __init__(self, period):
        _check_period(period, "ema")
        self._period = period
        self._alpha = 2.0 / (float(period) + 1.0)
        self.reset()

    def update(self, x):
        if self._count < self._period:
            self._count += 1
            self._ema += x
            if self._count < self._period:
                return None
            self._ema /= float(self._period)
        else:
            self._ema += self._alpha * (x - self._ema)
        return self._ema

    def value(self):
        return self._ema if self._count == self._period else None

    def is_ready(self):
        return self._count == self._period

    @property
    def period(self):
        return self._period

    @property
    def alpha(self):
        return self._alpha

    def reset(self):
        self._count = 0
        self._ema = 0.0


class _Wilder:
    """Wilder's moving average: the mean of the first ``n`` inputs, then
    ``avg = (avg * (n - 1) + x) / n``."""

    __slots__ = ("period", "count", "avg")

    def __init__(self, period):
        self.period = period
        self.count = 0
        self.avg = 0.0

    def push(self, x):
        n = float(self.period)
        if self.count < self.period:
            self.count += 1
            self.avg += x
            if self.count < self.period:
                return False
            self.avg /= n
        else:
            self.avg = (self.avg * (n - 1.0) + x) / n
        return True

    def reset(self):
        self.count = 0
        self.avg = 0.0


class Rsi:
    """Wilder's Relative Strength Index over ``period`` changes, in
    ``[0, 100]``; 100 when there are no losses, 50 on a flat series. Ready
    after ``period + 1`` values."""

    __slots__ = ("_prev", "_gain", "_loss")

    def __init__(self, period):
        _check_period(period, "rsi")
        self._gain = _Wilder(period)
        self._loss = _Wilder(period)
        self._prev = None

    def update(self, x):
        prev = self._prev
        self._prev = x
        if prev is None:
            return None
        d = x - prev
        if d > 0.0:
            g, l = d, 0.0
        elif d < 0.0:
            g, l = 0.0, -d
        elif d == 0.0:
            g, l = 0.0, 0.0
        else:
            g, l = _NAN, _NAN
        self._gain.push(g)
        self._loss.push(l)
        return self.value()

    def value(self):
        if self._gain.count != self._gain.period:
            return None
        g = self._gain.avg
        total = g + self._loss.avg
        return 50.0 if total == 0.0 else 100.0 * g / total

    def is_ready(self):
        return self._gain.count == self._gain.period

    @property
    def period(self):
        return self._gain.period

    def reset(self):
        self._prev = None
        self._gain.reset()
        self._loss.reset()


class Atr:
    """Wilder's Average True Range over ``period`` bars (the first bar's true
    range is ``high - low``). Ready after ``period`` bars."""

    __slots__ = ("_prev_close", "_avg")

    def __init__(self, period):
        _check_period(period, "atr")
        self._avg = _Wilder(period)
        self._prev_close = None

    def update(self, high, low, close):
        rng = high - low
        pc = self._prev_close
        self._prev_close = close
        if pc is None:
            tr = rng
        else:
            tr = _max_nan(rng, _max_nan(abs(high - pc), abs(low - pc)))
        if self._avg.push(tr):
            return self._avg.avg
        return None

    def value(self):
        avg = self._avg
        return avg.avg if avg.count == avg.period else None

    def is_ready(self):
        return self._avg.count == self._avg.period

    @property
    def period(self):
        return self._avg.period

    def reset(self):
        self._prev_close = None
        self._avg.reset()


class Bollinger:
    """Bollinger bands over the last ``period`` values, ``k`` population
    standard deviations wide: ``middle`` is the exact ``Sma``, and the
    deviation comes from exact integer sums of the quantized values and their
    squares. Returns ``BollingerBands(lower, middle, upper, stddev)``."""

    #: Largest period accepted (as in Rust, where it bounds 128-bit sums).
    MAX_PERIOD = 1 << 20

    __slots__ = ("_q", "_next", "_filled", "_sum", "_sum_sq", "_invalid", "_k", "_scale", "_scale_f")

    def __init__(self, period, k, scale=DEFAULT_SCALE):
        if type(period) is int and period > self.MAX_PERIOD:
            raise ValueError(f"bollinger period must be at most 2^20, got {period}")
        _check_exact(period, scale, "bollinger")
        self._q = [0] * period
        self._k = float(k)
        self._scale = scale
        self._scale_f = float(scale)
        self.reset()

    def update(self, x):
        q = _quantize(x, self._scale_f)
        ring = self._q
        i = self._next
        n = len(ring)
        if self._filled == n:
            old = ring[i]
            if old is None:
                self._invalid -= 1
            else:
                self._sum -= old
                self._sum_sq -= old * old
        else:
            self._filled += 1
        ring[i] = q
        i += 1
        self._next = 0 if i == n else i
        if q is None:
            self._invalid += 1
        else:
            self._sum += q
            self._sum_sq += q * q
        return self.value()

    def value(self):
        n = len(self._q)
        if self._filled != n:
            return None
        if self._invalid:
            return BollingerBands(_NAN, _NAN, _NAN, _NAN)
        scale_f = self._scale_f
        qm, r = divmod(self._sum, n)
        middle = _mean_from(qm, r, n, scale_f)
        # d = sum((q - qm)^2), exact in Python ints (Rust: modulo 2^128, where
        # the true value always fits).
        d = self._sum_sq - 2 * qm * self._sum + n * qm * qm
        nd = n * d
        if nd < 1 << 128:
            n2_var = float(max(nd - r * r, 0))
        else:
            n2_var = float(d) * float(n) - float(r * r)
            if n2_var < 0.0:
                n2_var = 0.0
        stddev = sqrt(n2_var) / (float(n) * scale_f)
        width = self._k * stddev
        return BollingerBands(middle - width, middle, middle + width, stddev)

    def is_ready(self):
        return self._filled == len(self._q)

    @property
    def period(self):
        return len(self._q)

    @property
    def k(self):
        return self._k

    @property
    def scale(self):
        return self._scale

    def reset(self):
        self._next = 0
        self._filled = 0
        self._sum = 0
        self._sum_sq = 0
        self._invalid = 0


class Donchian:
    """Donchian channel over the last ``period`` bars: highest high, lowest
    low and their midpoint, as ``DonchianChannel(upper, lower, middle)``.
    A NaN high makes ``upper`` NaN while it is in the window (likewise a NaN
    low for ``lower``)."""

    __slots__ = ("_period", "_seen", "_highs", "_lows", "_high_nan_until", "_low_nan_until")

    def __init__(self, period):
        _check_period(period, "donchian")
        self._period = period
        self._highs = deque()
        self._lows = deque()
        self.reset()

    def update(self, high, low):
        t = self._seen
        self._seen = t + 1
        n = self._period
        highs = self._highs
        lows = self._lows
        while highs and highs[0][0] + n <= t:
            highs.popleft()
        while lows and lows[0][0] + n <= t:
            lows.popleft()
        if high != high:
            self._high_nan_until = t + n
        else:
            while highs and highs[-1][1] <= high:
                highs.pop()
            highs.append((t, high))
        if low != low:
            self._low_nan_until = t + n
        else:
            while lows and lows[-1][1] >= low:
                lows.pop()
            lows.append((t, low))
        return self.value()

    def value(self):
        seen = self._seen
        if seen < self._period:
            return None
        upper = self._highs[0][1] if self._highs and seen > self._high_nan_until else _NAN
        lower = self._lows[0][1] if self._lows and seen > self._low_nan_until else _NAN
        return DonchianChannel(upper, lower, 0.5 * upper + 0.5 * lower)

    def is_ready(self):
        return self._seen >= self._period

    @property
    def period(self):
        return self._period

    def reset(self):
        self._seen = 0
        self._highs.clear()
        self._lows.clear()
        self._high_nan_until = 0
        self._low_nan_until = 0


class RollingStats:
    """Rolling mean and sample variance of the last ``period`` values, in
    floats (Welford's update, recomputed from the window every ``period``
    updates). Returns ``WindowStats(mean, variance, stddev)``."""

    __slots__ = ("_buf", "_next", "_filled", "_mean", "_m2", "_bad", "_stale")

    def __init__(self, period):
        _check_period(period, "rolling stats", least=2)
        self._buf = [0.0] * period
        self.reset()

    def update(self, x):
        buf = self._buf
        n = len(buf)
        i = self._next
        if self._filled == n:
            old = buf[i]
            full = True
        else:
            self._filled += 1
            old = None
            full = False
        buf[i] = x
        i += 1
        if i == n:
            i = 0
        self._next = i
        if not isfinite(x):
            self._bad += 1
        if full and not isfinite(old):
            self._bad -= 1
        if self._bad > 0:
            self._stale = True
        elif self._stale or i == 0:
            self._recompute()
        elif not full:
            delta = x - self._mean
            self._mean += delta / float(self._filled)
            self._m2 += delta * (x - self._mean)
        else:
            d = x - old
            mean = self._mean + d / float(n)
            self._m2 += d * ((x - mean) + (old - self._mean))
            self._mean = mean
        return self.value()

    def _recompute(self):
        c = float(self._filled)
        values = self._buf[: self._filled]
        total = -0.0  # Rust's f64 `sum` starts from -0.0
        for v in values:
            total += v
        mean = total / c
        sum_d = 0.0
        sum_d2 = 0.0
        for v in values:
            d = v - mean
            sum_d += d
            sum_d2 += d * d
        self._mean = mean + sum_d / c
        m2 = sum_d2 - sum_d * sum_d / c
        self._m2 = 0.0 if m2 < 0.0 else m2
        self._stale = False

    def value(self):
        n = len(self._buf)
        if self._filled != n:
            return None
        if self._bad > 0:
            return WindowStats(_NAN, _NAN, _NAN)
        m2 = self._m2
        if m2 < 0.0:
            m2 = 0.0
        variance = m2 / float(n - 1)
        return WindowStats(self._mean, variance, sqrt(variance))

    def mean(self):
        v = self.value()
        return None if v is None else v.mean

    def variance(self):
        v = self.value()
        return None if v is None else v.variance

    def stddev(self):
        v = self.value()
        return None if v is None else v.stddev

    def is_ready(self):
        return self._filled == len(self._buf)

    @property
    def period(self):
        return len(self._buf)

    def reset(self):
        self._next = 0
        self._filled = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._bad = 0
        self._stale = False


# ---------------------------------------------------------------------------
# Indicators the host computes (Strategy.indicator)
# ---------------------------------------------------------------------------

#: The bar fields an indicator may read (``of``), as the WIT ``indicator``
#: call numbers them; a bar tuple holds field ``i`` at ``2 + i``.
HOST_FIELDS = ("open", "high", "low", "close", "volume")
#: The WIT ``indicator`` call's kinds: per class, or per class and line.
_HOST_KINDS = {
    Sma: 0,
    SmaPair: {None: 1, "cross": 11},
    Ema: 2,
    Rsi: 3,
    Atr: 4,
    Donchian: {"upper": 5, "lower": 6, "middle": 7},
    Bollinger: {"upper": 8, "middle": 9, "lower": 10},
}
#: Classes that read fields of their own (not ``of``).
_OWN_FIELDS = {Atr: "high, low and close", Donchian: "high and low"}
_U32_MAX = (1 << 32) - 1
#: The host's limits (``runtime/sandbox/src/indicators.rs``): indicators per
#: strategy, and bytes of instances and their windows, all symbols together,
#: an instance counting ``HOST_INSTANCE_BYTES`` besides its window.
HOST_MAX_INDICATORS = 16
HOST_MAX_WINDOW_BYTES = 16 << 20
HOST_INSTANCE_BYTES = 256


def host_window_bytes(kind, period, slow):
    """Bytes the host counts for one symbol's instance, its window included."""
    if kind in (0, 8, 9, 10):
        window = 8 * period
    elif kind in (1, 11):
        window = 8 * max(period, slow)
    elif kind in (5, 6, 7):
        window = 32 * period
    else:
        window = 0
    return HOST_INSTANCE_BYTES + window


def host_declaration(indicator, line=None, of=None):
    """The WIT ``indicator`` call's arguments ``(kind, field, period, slow,
    k, scale)`` for an indicator instance (only its settings are read), the
    ``line`` of a channel or bands (``"upper"``, ``"middle"``, ``"lower"``)
    and the field it reads (``of``, default ``"close"``). Raises
    ``TypeError`` or ``ValueError`` naming what is wrong."""
    cls = type(indicator)
    kind = _HOST_KINDS.get(cls)
    if cls is type and indicator in _HOST_KINDS:
        raise TypeError(f"pass an instance with its settings, e.g. {indicator.__name__}(20), not the class {indicator.__name__}")
    if kind is None:
        names = ", ".join(c.__name__ for c in _HOST_KINDS)
        raise TypeError(
            f"the host computes {names} (the classes themselves, not subclasses), not {cls.__name__}: "
            "update any other indicator yourself in next"
        )
    if isinstance(kind, dict):
        if line not in kind:
            lines = " or ".join(repr(k) for k in kind if k is not None)
            what = "several lines: pick one with" if None not in kind else "one other line,"
            raise ValueError(f"{cls.__name__} has {what} line={lines}, not {line!r}")
        kind = kind[line]
    elif line is not None:
        hint = f"; to read the {line}, pass of={line!r}" if line in HOST_FIELDS else ""
        raise ValueError(f"{cls.__name__} has one value: it takes no line (got {line!r}){hint}")
    if cls in _OWN_FIELDS:
        if of is not None:
            raise ValueError(f"{cls.__name__} reads {_OWN_FIELDS[cls]}: it takes no of= (got {of!r})")
        field = 3
    else:
        of = "close" if of is None else of
        if of not in HOST_FIELDS:
            raise ValueError(f"of= names a bar field ({', '.join(HOST_FIELDS)}), not {of!r}")
        field = HOST_FIELDS.index(of)
    slow, k, scale = 0, 0.0, 0
    if cls is SmaPair:
        period, slow = indicator.periods
    else:
        period = indicator.period
    if cls in (Sma, SmaPair, Bollinger):
        scale = indicator.scale
    if cls is Bollinger:
        k = indicator.k
    # The settings as the instance holds them (checked again: an instance's
    # attributes can be edited after it was made).
    for what, n, least in (("period", period, 1), ("slow period", slow, 1 if cls is SmaPair else 0)):
        if type(n) is not int or not least <= n <= _U32_MAX:
            raise ValueError(f"{cls.__name__} {what} must be an int from {least} to 2^32 - 1 for the host to compute it, got {n!r}")
    if cls in (Sma, SmaPair, Bollinger) and (type(scale) is not int or not 1 <= scale <= _MAX_QUANTIZED):
        raise ValueError(f"{cls.__name__} scale must be an int from 1 to 2^53, got {scale!r}")
    if type(k) is not float:
        raise ValueError(f"{cls.__name__} k must be a float, got {k!r}")
    return kind, field, period, slow, k, scale


def host_updater(kind, field, period, slow, k, scale):
    """What the host computes for one symbol, in Python (``MockHost``): a
    function from a bar tuple ``(ts, symbol, open, high, low, close,
    volume)`` to the indicator's value after it (NaN while undefined).
    Raises ``ValueError`` for settings the host refuses."""
    if type(field) is not int or not 0 <= field < len(HOST_FIELDS):
        raise ValueError(f"unknown field {field!r}")
    at = 2 + field
    nan = _NAN

    def value(v):
        return nan if v is None else float(v)

    if kind == 0:
        update = Sma(period, scale).update
        return lambda b: value(update(b[at]))
    if kind in (1, 11):
        if slow == 0:
            raise ValueError("sma pair slow period must be at least 1")
        push = SmaPair(period, slow, scale).push_compare
        if kind == 1:
            return lambda b: value(push(b[at]))
        before = [None]

        def cross(b):
            now, was = push(b[at]), before[0]
            before[0] = now
            if now is None or was is None:
                return nan
            if now > 0:
                return 0.0 if was > 0 else 1.0
            if now < 0:
                return 0.0 if was < 0 else -1.0
            return 0.0

        return cross
    if kind == 2:
        update = Ema(period).update
        return lambda b: value(update(b[at]))
    if kind == 3:
        update = Rsi(period).update
        return lambda b: value(update(b[at]))
    if kind == 4:
        update = Atr(period).update
        return lambda b: value(update(b[3], b[4], b[5]))
    if kind in (5, 6, 7):
        update = Donchian(period).update
        i = kind - 5  # DonchianChannel(upper, lower, middle)
        return lambda b: nan if (c := update(b[3], b[4])) is None else c[i]
    if kind in (8, 9, 10):
        update = Bollinger(period, k, scale).update
        i = (2, 1, 0)[kind - 8]  # BollingerBands(lower, middle, upper, stddev)
        return lambda b: nan if (c := update(b[at])) is None else c[i]
    raise ValueError(f"unknown indicator kind {kind!r}")
