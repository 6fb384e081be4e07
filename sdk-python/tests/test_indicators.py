"""The Python indicators against the Rust SDK's, value for value.

``fixtures/indicators.json`` is written by ``sdk/tests/indicator_fixtures.rs``
(which fails when the committed file is stale). Floats are compared with
``==`` plus the sign of zeros; NaN matches NaN; ``None`` is "not ready".
"""

import json
import math
import pathlib
import random

import pytest

from palisade.indicators import (
    DEFAULT_SCALE,
    Atr,
    Bollinger,
    Donchian,
    Ema,
    RollingStats,
    Rsi,
    Sma,
    SmaPair,
    _quantize,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "indicators.json"


def _decode(v):
    if isinstance(v, str):
        return float(v)  # "NaN", "inf", "-inf"
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _load():
    data = json.loads(FIXTURE.read_text())
    series = {name: _decode(values) for name, values in data["series"].items()}
    return series, data["cases"]


SERIES, CASES = _load()


def _same(a, b):
    """Exact equality of (nested) fixture values."""
    if isinstance(b, list):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if b is None or isinstance(b, int) and not isinstance(a, float):
        return a == b and type(a) is type(b)
    if not isinstance(a, float):
        return False
    if math.isnan(b):
        return math.isnan(a)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _make(case, fused=False):
    """The indicator a fixture case describes and one step of it; with
    ``fused``, an ``SmaPair`` is driven by ``push_compare``."""
    kind = case["indicator"]
    if kind == "sma":
        ind = Sma(case["period"], case["scale"])
        return ind, ind.update
    if kind == "sma_pair":
        ind = SmaPair(case["fast"], case["slow"], case["scale"])

        def step(x):
            if fused:
                now = ind.push_compare(x)
            else:
                ind.push(x)
                now = ind.compare()
            return [ind.fast(), ind.slow(), now]

        return ind, step
    if kind == "sma_compare":
        a, b = Sma(*case["a"]), Sma(*case["b"])

        def step(x):
            a.push(x)
            b.push(x)
            return a.compare(b)

        return None, step
    if kind == "ema":
        ind = Ema(case["period"])
        return ind, ind.update
    if kind == "rsi":
        ind = Rsi(case["period"])
        return ind, ind.update
    if kind == "atr":
        ind = Atr(case["period"])
        return ind, lambda b: ind.update(*b)
    if kind == "bollinger":
        ind = Bollinger(case["period"], _decode(case["k"]), case["scale"])
        return ind, lambda x: None if (v := ind.update(x)) is None else list(v)
    if kind == "donchian":
        ind = Donchian(case["period"])
        return ind, lambda b: None if (v := ind.update(b[0], b[1])) is None else list(v)
    if kind == "rolling_stats":
        ind = RollingStats(case["period"])
        return ind, lambda x: None if (v := ind.update(x)) is None else list(v)
    raise AssertionError(f"unknown indicator {kind}")


def _case_id(case):
    keys = [k for k in case if k not in ("outputs", "from")]
    return ",".join(f"{k}={case[k]}" for k in keys)


def test_fixture_covers_every_indicator():
    kinds = {c["indicator"] for c in CASES}
    assert kinds == {"sma", "sma_pair", "sma_compare", "ema", "rsi", "atr", "bollinger", "donchian", "rolling_stats"}
    ties = [c for c in CASES if c["indicator"] == "sma_pair" and any(o[2] == 0 for o in c["outputs"])]
    assert len(ties) >= 5, "the fixture should hold exact SMA ties"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_rust(case):
    _check(case)


@pytest.mark.parametrize("case", [c for c in CASES if c["indicator"] == "sma_pair"], ids=_case_id)
def test_push_compare_is_push_then_compare(case):
    """The fused call gives the Rust pair's values too, through NaN,
    infinities, values out of range, resets and exact ties."""
    _check(case, fused=True)


def _check(case, fused=False):
    ind, step = _make(case, fused)
    inputs = SERIES[case["series"]]
    start = case["from"]
    reset_at = case.get("reset_at")
    for i, x in enumerate(inputs):
        if i == reset_at:
            ind.reset()
        got = step(x)
        if i >= start:
            want = _decode(case["outputs"][i - start])
            assert _same(got, want), f"input {i} ({x!r}): python {got!r}, rust {want!r}"


def test_value_repeats_the_last_update():
    sma, ema, rsi, atr = Sma(3), Ema(3), Rsi(3), Atr(3)
    bb, dc, rs = Bollinger(3, 2.0), Donchian(3), RollingStats(3)
    for x in (1.0, 2.0, 4.0, 3.0, 5.0):
        assert sma.update(x) == sma.value()
        assert ema.update(x) == ema.value()
        assert rsi.update(x) == rsi.value()
        assert atr.update(x + 1, x - 1, x) == atr.value()
        assert bb.update(x) == bb.value()
        assert dc.update(x + 1, x - 1) == dc.value()
        assert rs.update(x) == rs.value()
    assert rs.mean() == rs.value().mean and rs.stddev() == rs.value().stddev
    assert all(i.is_ready() for i in (sma, ema, rsi, atr, bb, dc, rs))
    assert (sma.period, sma.scale, bb.k, dc.period) == (3, DEFAULT_SCALE, 2.0, 3)


class _ExactPair:
    """SmaPair's definition in integers only: the reference for the floats
    SmaPair keeps while they are exact."""

    def __init__(self, fast, slow, scale):
        self.fast_len, self.slow_len, self.scale_f = fast, slow, float(scale)
        self.values = []

    def push(self, x):
        self.values.append(_quantize(x, self.scale_f))

    def _window(self, n):
        return self.values[-n:] if len(self.values) >= n else None

    def _mean(self, n):
        w = self._window(n)
        if w is None:
            return None
        if None in w:
            return math.nan
        q, r = divmod(sum(w), n)
        return (float(q) + float(r) / float(n)) / self.scale_f

    def outputs(self):
        f, s = self._window(self.fast_len), self._window(self.slow_len)
        if f is None or s is None or None in f or None in s:
            now = None
        else:
            a, b = sum(f) * self.slow_len, sum(s) * self.fast_len
            now = (a > b) - (a < b)
        return [self._mean(self.fast_len), self._mean(self.slow_len), now]


def _hostile_series(rng, n):
    """Prices on a tick grid (ties), exact halves of the scale's unit,
    negatives, values around the float bound of the longest window, a few
    NaN, infinities and values beyond 2^53 after scaling."""
    out, x = [], 100.0
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            x = round(x + rng.choice((-1, 0, 1)) * 0.25, 2)
            out.append(x)
        elif r < 0.7:
            out.append((rng.randrange(-10**9, 10**9) + 0.5) / 1e8)  # exact ties after scaling
        elif r < 0.8:
            out.append(rng.choice((1, -1)) * rng.uniform(1e6, 3e7))  # near the float bound of long windows
        elif r < 0.85:
            out.append(rng.choice((math.nan, math.inf, -math.inf, 1e300, -0.0)))
        else:
            out.append(rng.uniform(-200.0, 200.0))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_pair_is_exact_through_every_kind_of_value(seed):
    """Against integer arithmetic: the float sums, their rounding, the
    change to integers when a value is too large for them, and back after
    ``reset``; ``push`` + ``compare`` and ``push_compare`` alike."""
    rng = random.Random(seed)
    fast, slow = rng.randrange(1, 40), rng.randrange(1, 400)
    pair, fused, ref = SmaPair(fast, slow), SmaPair(fast, slow), _ExactPair(fast, slow, DEFAULT_SCALE)
    values = _hostile_series(rng, 600)
    if seed % 2:  # half the runs without the large values, staying in floats
        values = [v for v in values if not (math.isfinite(v) and abs(v) > 1e5)]
    for i, x in enumerate(values):
        if i == 300 and seed % 3 == 0:
            pair.reset(), fused.reset()
            ref = _ExactPair(fast, slow, DEFAULT_SCALE)
        pair.push(x)
        got_fused = fused.push_compare(x)
        ref.push(x)
        want = ref.outputs()
        assert _same([pair.fast(), pair.slow(), pair.compare()], want), (i, x)
        assert _same([fused.fast(), fused.slow(), got_fused], want), (i, x)


@pytest.mark.parametrize("fast, slow", [(3, 5), (5, 3), (2, 7), (1, 2), (30, 31)])
def test_pair_is_exact_around_the_float_bound(fast, slow):
    """Values on both sides of the bound below which sums stay in floats,
    differing by one unit of the scale: products past 2^53 that floats would
    round to a tie, and sums that floats would round, must still compare
    and average exactly."""
    rng = random.Random(fast * 100 + slow)
    bound = (1 << 53) // (max(fast, slow) + 1) / DEFAULT_SCALE
    for base in (bound * 0.999, bound * 1.001, 2.0**51 / DEFAULT_SCALE * 0.999, 2.0**51 / DEFAULT_SCALE * 1.001):
        pair, fused, ref = SmaPair(fast, slow), SmaPair(fast, slow), _ExactPair(fast, slow, DEFAULT_SCALE)
        for i in range(200):
            x = base + rng.choice((-1, 0, 0, 1)) * 1e-8 * base / 1e7
            pair.push(x)
            got_fused = fused.push_compare(x)
            ref.push(x)
            want = ref.outputs()
            assert _same([pair.fast(), pair.slow(), pair.compare()], want), (base, i, x)
            assert _same([fused.fast(), fused.slow(), got_fused], want), (base, i, x)


def test_rounding_in_floats_is_halves_away_from_zero():
    pair = SmaPair(1, 1, scale=1)
    for y in (0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999999999999996, -2.5000000000000004, 1e15 + 0.5, -(2.0**50) - 0.5):
        assert pair.push_compare(y) == 0
        assert pair.slow() == float(_quantize(y, 1.0)), y


def test_a_tie_is_a_tie():
    pair = SmaPair(1, 3)
    for x in (0.3, 0.1, 0.2):
        pair.push(x)
    assert pair.compare() == 0
    assert (0.3 + 0.1 + 0.2) / 3 != 0.2  # what a float sum would have said


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Sma(0), "sma period must be at least 1"),
        (lambda: Sma(3, 0), "sma scale must be between 1 and 2^53"),
        (lambda: Sma(3, (1 << 53) + 1), "sma scale must be between 1 and 2^53"),
        (lambda: SmaPair(0, 3), "sma pair fast period must be at least 1"),
        (lambda: SmaPair(3, 0), "sma pair slow period must be at least 1"),
        (lambda: Ema(0), "ema period must be at least 1"),
        (lambda: Rsi(0), "rsi period must be at least 1"),
        (lambda: Atr(0), "atr period must be at least 1"),
        (lambda: Bollinger(0, 2.0), "bollinger period must be at least 1"),
        (lambda: Bollinger((1 << 20) + 1, 2.0), "bollinger period must be at most 2^20"),
        (lambda: Donchian(0), "donchian period must be at least 1"),
        (lambda: RollingStats(1), "rolling stats period must be at least 2"),
    ],
)
def test_settings_out_of_range_are_refused(make, message):
    with pytest.raises(ValueError, match=message.replace("^", r"\^")):
        make()


def test_a_period_must_be_an_int():
    with pytest.raises(TypeError, match="must be an int"):
        Sma(2.0)
    Bollinger(1 << 20, 2.0)  # the largest period is accepted
    Sma(1, 1 << 53)
