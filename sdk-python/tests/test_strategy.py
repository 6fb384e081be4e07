"""The Strategy API through MockHost: orders and their refusals, positions,
cash and equity, logs, metrics, random, symbol names; MockHost's fill rule
and bar formats; run_strategy's parameters."""

import math
from types import SimpleNamespace

import pytest

from palisade import Bar, Bool, Float, Int, OrderError, Strategy
from palisade.testing import MockHost, RunStopped, run_strategy


class Scripted(Strategy):
    """Buys on the first bar, closes on the third (the Rust harness's test)."""

    def init(self):
        self.seen = 0
        self.fills = []
        self.refused = self.buy(1.0)  # no bar yet

    def next(self, bar):
        if self.seen == 0:
            self.first = self.buy(2.0)
        elif self.seen == 2:
            assert self.position() == 2.0
            self.close()
        self.seen += 1

    def on_fill(self, fill):
        self.fills.append(fill)

    def finish(self):
        self.metric("seen", self.seen)
        self.metric("refused_in_finish", self.buy(1.0) is None and self.last_order_error is OrderError.NO_BAR)


def test_market_orders_fill_at_the_next_open():
    host = run_strategy(Scripted, [10.0, 11.0, 12.0, 13.0, 14.0])
    assert [(o.bar_index, o.qty, o.filled) for o in host.orders] == [(0, 2.0, (1, 11.0)), (2, -2.0, (3, 13.0))]
    assert host.position_of(0) == 0.0
    assert host.cash() == 100_000.0 + 2.0 * (13.0 - 11.0)
    assert host.metrics == {"seen": 5, "refused_in_finish": True}
    assert host.fills == [(1, 86_400, 0, 2.0, 11.0, 0.0), (2, 3 * 86_400, 0, -2.0, 13.0, 0.0)]


class Actions(Strategy):
    flag = Bool(True)

    def next(self, bar):
        if bar.ts != 0:
            return
        r = {}
        r["limit"] = self.buy(1, limit=9.5)
        r["stop"] = self.sell(2, stop=8.0)
        r["bad_qty"] = self.buy(0)
        r["bad_qty_error"] = self.last_order_error
        r["nan_qty"] = self.sell(math.nan)
        r["bad_symbol"] = self.buy(1, symbol=5)
        r["bad_symbol_error"] = self.last_order_error
        r["bad_limit"] = self.buy(1, limit=-1.0)
        r["cancel"] = self.cancel(r["limit"])
        r["cancel_again"] = self.cancel(r["limit"])
        r["cancel_error"] = self.last_order_error
        r["close_flat"] = self.close()
        r["position"] = self.position()
        r["position_unknown"] = self.position(9)
        r["cash"], r["equity"] = self.cash, self.equity
        r["names"] = (self.symbol_name(0), self.symbol_name(1))
        r["random"] = (self.random(), self.random())
        self.log("hello")
        self.log("careful", level="warn")
        self.log(42, "debug")
        self.log("bad", "error")
        self.metric("m", 1)
        self.metric("m", 2.5)
        self.results = r
        with pytest.raises(ValueError, match="limit price or a stop price, not both"):
            self.buy(1, limit=1.0, stop=2.0)
        with pytest.raises(ValueError, match="log level must be"):
            self.log("x", "loud")

    def finish(self):
        Actions.last = self


def test_orders_refusals_and_queries():
    host = run_strategy(Actions, [10.0, 11.0], symbols=["AAA"])
    r = Actions.last.results
    assert (r["limit"], r["stop"]) == (1, 2)
    assert [(o.kind, o.qty, o.price) for o in host.orders] == [(1, 1.0, 9.5), (2, -2.0, 8.0)]
    assert host.orders[0].cancelled and not host.orders[1].cancelled
    assert r["bad_qty"] is None and r["bad_qty_error"] is OrderError.BAD_ARGUMENT
    assert r["nan_qty"] is None and r["bad_limit"] is None
    assert r["bad_symbol"] is None and r["bad_symbol_error"] is OrderError.UNKNOWN_SYMBOL
    assert (r["cancel"], r["cancel_again"], r["cancel_error"]) == (True, False, OrderError.UNKNOWN_ORDER)
    assert r["close_flat"] is None and r["position"] == 0.0 and math.isnan(r["position_unknown"])
    assert (r["cash"], r["equity"]) == (100_000.0, 100_000.0)
    assert r["names"] == ("AAA", None)
    # splitmix64 from seed 0: the reference sequence starts 0xE220A8397B1DCDAF.
    assert r["random"][0] == (0xE220A8397B1DCDAF >> 11) / 2**53
    assert 0.0 <= r["random"][1] < 1.0 and r["random"][1] != r["random"][0]
    assert host.logs == [(2, "hello"), (1, "careful"), (3, "42"), (0, "bad")]
    assert host.metrics == {"m": 2.5}
    assert host.trades() == []  # limit and stop orders are recorded, never filled


def test_equity_marks_positions_at_the_last_close():
    class Hold(Strategy):
        def next(self, bar):
            if bar.ts == 0:
                self.buy(3)
            self.metric(f"equity{bar.ts // 86_400}", self.equity)

    bars = [(0, 0, 10.0, 10.0, 10.0, 10.0, 1.0), (86_400, 0, 11.0, 12.0, 10.0, 12.0, 1.0)]
    host = run_strategy(Hold, bars)
    assert host.metrics == {"equity0": 100_000.0, "equity1": 100_000.0 - 33.0 + 36.0}


def test_bar_formats():
    objects = [SimpleNamespace(open=1.0, high=2.0, low=0.5, close=1.5), SimpleNamespace(ts=5, open=1, high=2, low=0, close=1, volume=7)]
    host = MockHost(objects)
    assert host.bars == [(0, 0, 1.0, 2.0, 0.5, 1.5, 1.0), (5, 0, 1.0, 2.0, 0.0, 1.0, 7.0)]
    host = MockHost([(1, 1.0, 2.0, 0.5, 1.5, 9.0), Bar(2, 0, 1.0, 1.0, 1.0, 1.0, 1.0), (3, 1, 1.0, 1.0, 1.0, 1.0, 1.0)])
    assert host.bars[0] == (1, 0, 1.0, 2.0, 0.5, 1.5, 9.0) and host.symbol_count() == 2
    assert MockHost.from_closes([3, 4]).bars[1] == (86_400, 0, 4.0, 4.0, 4.0, 4.0, 1.0)
    with pytest.raises(ValueError, match="must be sorted by timestamp"):
        MockHost([(2, 0, 1, 1, 1, 1, 1), (1, 0, 1, 1, 1, 1, 1)])
    with pytest.raises(ValueError, match="must be sorted by timestamp"):
        MockHost([(1, 1, 1, 1, 1, 1, 1), (1, 0, 1, 1, 1, 1, 1)])
    with pytest.raises(ValueError, match="7 fields"):
        MockHost([(1, 2, 3)])


def test_next_after_the_end_is_a_protocol_error():
    host = MockHost([1.0])
    first = host.next()
    assert first[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x00" and len(first) == 8 + 56
    assert host.next() == b"\x00" * 8
    with pytest.raises(AssertionError, match="after it handed over no bars"):
        host.next()


class Params(Strategy):
    n = Int(3, min=1, max=10)
    x = Float(0.5, min=0.0)
    flag = Bool(False)

    def init(self):
        Params.seen = (self.n, self.x, self.flag)


def test_run_strategy_parameters():
    run_strategy(Params, [1.0])
    assert Params.seen == (3, 0.5, False)
    run_strategy(Params, [1.0], params={"n": 10, "x": 2, "flag": True})
    assert Params.seen == (10, 2.0, True)
    for params, message in [
        ({"m": 1}, "declares no parameter 'm'"),
        ({"n": 11}, "outside"),
        ({"n": 2.5}, "is an int"),
        ({"flag": 1}, "is a bool"),
        ({"x": math.nan}, "finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_strategy(Params, [1.0], params=params)


def test_mock_host_refuses_unset_parameters():
    host = MockHost([1.0], params={"a": 1})
    assert host.param("a") == 1.0
    with pytest.raises(RunStopped, match="invalid_params.*'b'.*declared or set: a"):
        host.param("b")


def test_a_declared_parameter_read_before_it_is_set_goes_to_the_host():
    class Early(Strategy):
        n = Int(4)

    s = object.__new__(Early)
    s.__dict__["_host"] = MockHost([1.0], params={"n": 4})
    s.__dict__["_params"] = {"n": Early.n}
    assert s.n == 4 and type(s.n) is int
