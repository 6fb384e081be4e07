"""Indicators the host computes (``Strategy.indicator``): declared in init,
each bar carries their values after it, the same as updating the indicator
in Python, on the fast path and the ``Bar`` path alike; declarations the
host cannot honour are refused with what is wrong."""

import random

import pytest
from conftest import failure, src

from palisade import _runtime
from palisade.indicators import Atr, Bollinger, Donchian, Ema, Rsi, RollingStats, Sma, SmaPair, host_declaration
from palisade.testing import MockHost, RunStopped, resolve_params

HEAD = "from palisade import Strategy, Int, Float\nfrom palisade.indicators import *\nimport math\n"


def walk(n, symbols=2, seed=7):
    rng = random.Random(seed)
    price = [100.0] * symbols
    bars = []
    for i in range(n):
        for s in range(symbols):
            o = price[s]
            c = round(o + rng.choice((-1, 1)) * rng.randrange(0, 300) / 100, 2)
            h, lo = max(o, c) + rng.randrange(0, 100) / 100, min(o, c) - rng.randrange(0, 100) / 100
            price[s] = c
            bars.append((60 * i, s, o, h, lo, c, float(rng.randrange(1, 1000))))
    return bars


def run(body, bars, fast=True, symbols=2):
    loader = _runtime._Loader("strategy.py", HEAD + src(body))
    cls = loader.load()
    host = MockHost(list(bars), params=resolve_params(cls), symbols=[f"S{i}" for i in range(symbols)])
    plans = []

    def plan(names):
        plans.append(loader.fields_plan(cls, names) if fast else None)
        return plans[-1]

    loader.guard(_runtime.execute, cls, host, plan)
    return host, plans


# Every kind the host computes, with what the strategy would compute itself
# (the value after the bar, None while undefined).
CASES = [
    ("Sma(5)", None, None, "Sma(5).update", "bar.close"),
    ("Sma(3, 100)", None, "high", "Sma(3, 100).update", "bar.high"),
    ("SmaPair(3, 7)", None, None, "SmaPair(3, 7).push_compare", "bar.close"),
    ("SmaPair(2, 5)", "cross", None, "Crossing(2, 5)", "bar.close"),
    ("SmaPair(1, 2, 100)", "cross", "low", "Crossing(1, 2, 100)", "bar.low"),
    ("Ema(4)", None, "open", "Ema(4).update", "bar.open"),
    ("Rsi(6)", None, None, "Rsi(6).update", "bar.close"),
    ("Atr(5)", None, None, "Atr(5).update", "bar.high, bar.low, bar.close"),
    ("Donchian(4)", "upper", None, "(lambda d: lambda h, l: None if (c := d.update(h, l)) is None else c.upper)(Donchian(4))", "bar.high, bar.low"),
    ("Donchian(4)", "lower", None, "(lambda d: lambda h, l: None if (c := d.update(h, l)) is None else c.lower)(Donchian(4))", "bar.high, bar.low"),
    ("Donchian(4)", "middle", None, "(lambda d: lambda h, l: None if (c := d.update(h, l)) is None else c.middle)(Donchian(4))", "bar.high, bar.low"),
    ("Bollinger(5, 2.0)", "upper", None, "(lambda b: lambda x: None if (c := b.update(x)) is None else c.upper)(Bollinger(5, 2.0))", "bar.close"),
    ("Bollinger(5, 1.5)", "middle", "volume", "(lambda b: lambda x: None if (c := b.update(x)) is None else c.middle)(Bollinger(5, 1.5))", "bar.volume"),
    ("Bollinger(5, 2.0)", "lower", None, "(lambda b: lambda x: None if (c := b.update(x)) is None else c.lower)(Bollinger(5, 2.0))", "bar.close"),
]


#: What a strategy computes for a crossing of an SMA pair itself.
CROSSING = """
    class Crossing:
        def __init__(self, *settings):
            self.pair = SmaPair(*settings)
            self.before = None

        def __call__(self, x):
            now, before = self.pair.push_compare(x), self.before
            self.before = now
            if now is None or before is None:
                return None
            return 1 if now > 0 and before <= 0 else -1 if now < 0 and before >= 0 else 0
"""


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("made, line, of, own, args", CASES)
def test_each_bar_carries_the_value_the_strategy_would_compute(made, line, of, own, args, fast):
    body = f"""
    class S(Strategy):
        def init(self):
            self.indicator("x", {made}, line={line!r}, of={of!r})
            self.own = [{own}, {own}]
            self.seen = 0

        def next(self, bar):
            mine = self.own[bar.symbol]({args})
            got = bar.x
            if type(got) is not float or (mine is None) != (got != got) or (mine is not None and mine != got):
                raise AssertionError(f"bar {{self.seen}}: host {{got!r}}, own {{mine!r}}")
            self.seen += 1
            if mine is not None:
                self.metric("defined", self.seen)
    """
    host, plans = run(CROSSING + body, walk(40), fast=fast)
    assert host.failure is None
    assert host.metrics["defined"] > 20
    assert (plans[0] is not None) == fast
    if fast:
        assert "x" in plans[0].fields


def test_values_follow_declaration_order_with_fills_and_several_bars_a_timestamp():
    body = """
    class S(Strategy):
        def init(self):
            self.indicator("slow", Sma(4))
            self.indicator("fast", Sma(2))
            self.mine = {}

        def next(self, bar):
            s, f = self.mine.setdefault(bar.symbol, (Sma(4), Sma(2)))
            assert (s.update(bar.close), f.update(bar.close)) == (
                None if bar.slow != bar.slow else bar.slow,
                None if bar.fast != bar.fast else bar.fast,
            ), bar
            if self.position(bar.symbol) == 0:
                self.buy(1, bar.symbol)
            else:
                self.close(bar.symbol)
    """
    host, _ = run(body, walk(30, symbols=3), symbols=3)
    assert host.failure is None
    assert len(host.fills) > 20


def test_the_bar_path_shows_indicators_in_repr_history_and_tuple():
    body = """
    class S(Strategy):
        keep_bars = True

        def init(self):
            self.indicator("ma", Sma(2))

        def next(self, bar):
            assert isinstance(bar, Bar) and len(bar) == 8 and bar[7] is bar.ma or bar[7] != bar[7]
            assert self.history(bar.symbol).ma[-1] is bar.ma or bar.ma != bar.ma
            self.log(repr(bar))
    """
    host, plans = run(body.replace("Bar)", "__import__('palisade').Bar)"), walk(3, symbols=1), symbols=1)
    assert host.failure is None and plans == []
    assert "ma=nan" in host.logs[0][1] and "ma=" in host.logs[1][1] and "close=" in host.logs[1][1]


def test_without_indicators_bars_are_plain():
    body = """
    class S(Strategy):
        def next(self, bar):
            self.log(f"{type(bar).__mro__[1].__name__} {len(bar)}")
    """
    host, _ = run(body, walk(2, symbols=1), fast=False, symbols=1)
    assert host.logs[0][1] == "tuple 7"


@pytest.mark.parametrize(
    "call, message",
    [
        ('self.indicator("x", RollingStats(5))', "the host computes Sma, SmaPair, Ema, Rsi, Atr, Donchian, Bollinger"),
        ('self.indicator("x", type("Mine", (Sma,), {})(5))', "not Mine"),
        ('self.indicator("x", Donchian(5))', "pick one with line='upper' or 'lower' or 'middle'"),
        ('self.indicator("x", Sma(5), line="upper")', "Sma has one value: it takes no line"),
        ('self.indicator("x", SmaPair(2, 5), line="upper")', "SmaPair has one other line, line='cross', not 'upper'"),
        ('self.indicator("x", Atr(5), of="close")', "Atr reads high, low and close: it takes no of="),
        ('self.indicator("x", Sma(5), of="Close")', "of= names a bar field (open, high, low, close, volume), not 'Close'"),
        ('self.indicator("close", Sma(5))', "not 'close'"),
        ('self.indicator("count", Sma(5))', "not 'count'"),
        ('self.indicator("_x", Sma(5))', "not '_x'"),
        ('self.indicator("for", Sma(5))', "not 'for'"),
        ('self.indicator("x", Sma(5)); self.indicator("x", Ema(5))', "indicator 'x' is declared already"),
        ('self.indicator("x", Ema(1 << 32))', "Ema period must be an int from 1 to 2^32 - 1 for the host to compute it, got 4294967296"),
        ("d = Donchian(5); d._period = -1; self.indicator('x', d, line='upper')", "Donchian period must be an int from 1"),
        ("d = Donchian(5); d._period = 5.5; self.indicator('x', d, line='upper')", "got 5.5"),
        ("s = Sma(5); s._scale = -1; self.indicator('x', s)", "Sma scale must be an int from 1 to 2^53, got -1"),
        ("s = SmaPair(2, 5); s._slow_len = 0; self.indicator('x', s)", "SmaPair slow period must be an int from 1"),
        ("b = Bollinger(5, 2.0); b._k = '2'; self.indicator('x', b, line='upper')", "Bollinger k must be a float, got '2'"),
        ('self.indicator("x", Sma)', "pass an instance with its settings, e.g. Sma(20), not the class Sma"),
        ('self.indicator("x", Sma(5), "high")', "it takes no line (got 'high'); to read the high, pass of='high'"),
        ('self.indicator("Close", Sma(5))', "not 'Close'"),
        ('self.indicator("\ufb01lter", Sma(5))', "an indicator's name is an ASCII identifier"),
        ('self.indicator("\uff43lose", Sma(5))', "an indicator's name is an ASCII identifier"),
        ("[self.indicator(f'x{i}', Ema(2)) for i in range(17)]", "indicator 'x16' is over the host's limits: at most 16"),
        ('self.indicator("x", Donchian((1 << 18) + 1), "upper")', "indicator 'x' is over the host's limits"),
    ],
)
def test_a_declaration_the_host_cannot_honour_says_what_is_wrong(call, message):
    body = f"""
    class S(Strategy):
        def init(self):
            {call}
    """
    with pytest.raises(_runtime.RuntimeFailure) as e:
        run(body, walk(2))
    assert e.value.kind == "exception" and message in e.value.message


def test_limits_hold_on_both_sides():
    # 16 indicators fit; instances and windows of exactly 16 MiB for two
    # symbols fit (256 bytes an instance, 8 a value of a window).
    fits = """
    class S(Strategy):
        def init(self):
            for i in range(15):
                self.indicator(f"x{i}", Ema(2))
            self.indicator("big", Sma(((16 << 20) // 2 - 16 * 256) // 8))
    """
    host, _ = run(fits, walk(2))
    assert host.failure is None
    over = fits.replace("// 8))", "// 8 + 1))")
    with pytest.raises(_runtime.RuntimeFailure, match="over the host's limits"):
        run(over, walk(2))


@pytest.mark.parametrize("where", ["next", "finish"])
def test_declaring_after_init_is_refused(where):
    body = f"""
    class S(Strategy):
        def {where}(self, *a):
            self.indicator("x", Sma(2))
    """
    with pytest.raises(_runtime.RuntimeFailure) as e:
        run(body, walk(2))
    assert "indicators are declared in init, before the first bar" in e.value.message


def test_the_host_refuses_a_late_declaration_made_behind_the_sdk():
    host = MockHost(walk(2))
    assert host.indicator(0, 3, 2, 0, 0.0, 100) == 0
    host.next()
    assert host.indicator(0, 3, 2, 0, 0.0, 100) == -5
    fresh = MockHost(walk(2))
    assert fresh.indicator(0, 3, 0, 0, 0.0, 100) == -1
    assert fresh.indicator(11, 3, 2, 0, 0.0, 100) == -1
    assert fresh.indicator(0, 5, 2, 0, 0.0, 100) == -1
    assert fresh.indicator(1, 3, 2, 0, 0.0, 100) == -1


def test_declarations_match_the_wit_numbering():
    assert host_declaration(Sma(5)) == (0, 3, 5, 0, 0.0, 100_000_000)
    assert host_declaration(SmaPair(3, 9, 100), of="open") == (1, 0, 3, 9, 0.0, 100)
    assert host_declaration(SmaPair(3, 9), "cross") == (11, 3, 3, 9, 0.0, 100_000_000)
    assert host_declaration(Ema(4), of="volume") == (2, 4, 4, 0, 0.0, 0)
    assert host_declaration(Rsi(14)) == (3, 3, 14, 0, 0.0, 0)
    assert host_declaration(Atr(14)) == (4, 3, 14, 0, 0.0, 0)
    assert [host_declaration(Donchian(20), line)[0] for line in ("upper", "lower", "middle")] == [5, 6, 7]
    assert [host_declaration(Bollinger(20, 2.5), line)[:1] for line in ("upper", "middle", "lower")] == [(8,), (9,), (10,)]
    assert host_declaration(Bollinger(20, 2.5), "upper")[4] == 2.5


def test_the_example_and_its_own_pair_twin_trade_the_same():
    from test_examples import walk as walk_bars

    from conftest import EXAMPLES

    trades = []
    for path in (EXAMPLES / "sma_cross.py", EXAMPLES.parent / "benchmarks" / "sma_cross_own_pair.py"):
        loader = _runtime._Loader(path.name, path.read_text())
        cls = loader.load()
        for params in ({"fast": 3, "slow": 8}, {"fast": 10, "slow": 30}):
            host = MockHost(walk_bars(2000, 3, 2), params={**resolve_params(cls), **params})
            _runtime.execute(cls, host, lambda names: loader.fields_plan(cls, names))
            trades.append(host.trades())
    assert trades[:2] == trades[2:] and all(trades)


def test_copies_of_a_history_work_with_and_without_indicators():
    for declare in ("", 'self.indicator("ma", Sma(2))'):
        body = f"""
        import copy

        class S(Strategy):
            keep_bars = True

            def init(self):
                {declare or "pass"}

            def next(self, bar):
                a, b = copy.copy(self.data), copy.deepcopy(self.data)
                self.log(f"{{len(a)}} {{len(b)}} {{a.close[-1] == bar.close}}")
        """
        host, _ = run(body, walk(3, symbols=1), symbols=1)
        assert host.failure is None and [m for _, m in host.logs] == ["1 1 True", "2 2 True", "3 3 True"]


def test_an_indicator_column_is_empty_before_its_symbols_first_bar():
    body = """
    class S(Strategy):
        keep_bars = True

        def init(self):
            self.indicator("ma", Sma(2))
            self.log(f"init {len(self.data.ma)} {self.history(1).ma.tolist()}")

        def next(self, bar):
            self.log(f"{bar.symbol} {len(self.history(1).ma)}")
    """
    host, _ = run(body, walk(2))
    # Every bar of a timestamp is in the history before any is handled.
    assert [m for _, m in host.logs] == ["init 0 []", "0 1", "1 1", "0 2", "1 2"]


def test_reading_an_indicator_from_self_or_an_undeclared_one_from_the_bar_says_where_it_is():
    for read, message in (
        ("self.ma", "'ma' is an indicator the host computes, read it from the bar as bar.ma"),
        ("bar.sma", "Bar has no field 'sma' (its fields: ts, symbol, open, high, low, close, volume, ma); an indicator is read as bar.<name> once declared in init"),
    ):
        body = f"""
        class S(Strategy):
            def init(self):
                self.indicator("ma", Sma(2))

            def next(self, bar):
                return {read}
        """
        with pytest.raises(_runtime.RuntimeFailure) as e:
            run(body, walk(2))
        assert e.value.kind == "exception" and message in e.value.message and "line 9" in e.value.message


@pytest.mark.parametrize("symbols", [1, 2])
def test_an_indicator_declared_on_the_host_directly_is_named_not_garbled(symbols):
    body = """
    class S(Strategy):
        def init(self):
            self._host.indicator(0, 3, 2, 0, 0.0, 100)

        def next(self, bar):
            self.log(repr(bar))
    """
    with pytest.raises(RunStopped) as e:
        run(body, walk(3, symbols=symbols), symbols=symbols)
    assert e.value.host.logs == []
    assert e.value.kind == 2 and "an indicator was declared on the host directly" in e.value.host.failure[1]
