"""The Python indicators against the Rust SDK's, value for value.

``fixtures/indicators.json`` is written by ``sdk/tests/indicator_fixtures.rs``
(which fails when the committed file is stale). Floats are compared with
``==`` plus the sign of zeros; NaN matches NaN; ``None`` is "not ready".
"""

import json
import math
import pathlib

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


def _make(case):
    kind = case["indicator"]
    if kind == "sma":
        ind = Sma(case["period"], case["scale"])
        return ind, ind.update
    if kind == "sma_pair":
        ind = SmaPair(case["fast"], case["slow"], case["scale"])

        def step(x):
            ind.push(x)
            return [ind.fast(), ind.slow(), ind.compare()]

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
    ind, step = _make(case)
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
