"""The runtime's loading and event loop: syntax errors, the import
allowlist, exceptions, the host.fail mapping, undeclared parameters, the
order of events, and the history."""

import json

import pytest
from conftest import failure, src

from palisade import _runtime
from palisade.testing import INVALID_PARAMS, ERROR, MockHost, RunStopped

HEAD = "from palisade import Strategy, Int, Float, Bool, InvalidParams, StrategyError\n"


def run(body, bars=(1.0, 2.0, 3.0), params=None, filename="strategy.py", head=HEAD):
    """Runs a strategy source through _runtime.run on a MockHost."""
    host = MockHost(list(bars), params=params or {})
    _runtime.run(filename, head + src(body), host)
    return host


# -- syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, line, message",
    [
        ("x = (1,\n", 1, "'(' was never closed"),
        ("a = 1\nb = 2\nif a\n    pass\n", 3, "expected ':'"),
        ("def f():\nreturn 1\n", 2, "expected an indented block"),
    ],
)
def test_syntax_errors_name_file_and_line(source, line, message):
    for fn in (lambda: _runtime.describe("mine.py", source), lambda: _runtime.run("mine.py", source, MockHost([1.0]))):
        kind, got = failure(fn)
        assert kind == "syntax"
        assert got.startswith(f"mine.py, line {line}: ") and message in got, got


def test_a_null_byte_is_a_syntax_error():
    kind, got = failure(_runtime.describe, "s.py", "x = 1\0\n")
    assert kind == "syntax" and got.startswith("s.py, line")


# -- imports -----------------------------------------------------------------


@pytest.mark.parametrize(
    "code, module",
    [
        ("import os", "os"),
        ("from os import path", "os"),
        ("import os.path", "os.path"),
        ("import math, sys", "sys"),
        ("from . import helpers", "."),
        ("from .helpers import x", ".helpers"),
        ("from ..pkg import x", "..pkg"),
        ("import importlib", "importlib"),
        ("import socket", "socket"),
        ("import subprocess", "subprocess"),
        ("import ctypes", "ctypes"),
        ("import builtins", "builtins"),
        ("def later():\n    import pathlib\n", "pathlib"),
        ("class X:\n    def m(self):\n        from io import StringIO\n", "io"),
        ("x = __import__('os')", "os"),
        ("import math\nimport gc\nimport os\n", "gc"),
        # Wherever a statement can be (the check walks statements only,
        # unless the source could call __import__), in code never run.
        ("def never():\n    try:\n        pass\n    except Exception:\n        import os\n", "os"),
        ("def never():\n    try:\n        pass\n    finally:\n        from os import path\n", "os"),
        ("def never():\n    match 1:\n        case 1:\n            import os\n", "os"),
        ("def never():\n    with x:\n        if y:\n            pass\n        else:\n            for a in b:\n                while c:\n                    import os\n", "os"),
        ("async def never():\n    async with x:\n        import os\n", "os"),
        ("def never():\n    return [__import__('os') for _ in ()]", "os"),
        ("never = lambda: __import__('os')", "os"),
        # A name that normalizes to __import__ (NFKC), spelled otherwise.
        ("def never():\n    return __\uff49mport__('os')", "os"),
    ],
)
def test_forbidden_imports_are_refused_before_running(code, module):
    source = HEAD + code + "\nclass A(Strategy):\n    pass\n"
    assert failure(_runtime.describe, "s.py", source) == ("forbidden-import", module)
    assert failure(_runtime.run, "s.py", source, MockHost([1.0])) == ("forbidden-import", module)


@pytest.mark.parametrize(
    "code, module",
    [
        ("name = 'o' + 's'\nmod = __import__(name)", "os"),
        ("mod = __import__('imp' + 'ortlib')", "importlib"),
        ("try:\n    __import__('s' + 'ys')\nexcept Exception:\n    pass", "sys"),
        ("try:\n    __import__('s' + 'ys')\nexcept BaseException:\n    pass", "sys"),
        ("exec('import os')", "os"),
    ],
)
def test_dynamic_imports_are_refused_at_module_level(code, module):
    source = HEAD + code + "\nclass A(Strategy):\n    pass\n"
    assert failure(_runtime.describe, "s.py", source) == ("forbidden-import", module)


def test_dynamic_imports_are_refused_while_running_even_if_caught():
    body = """
    class A(Strategy):
        def next(self, bar):
            try:
                __import__("o" + "s")
            except BaseException:
                pass
    """
    kind, module = failure(run, body)
    assert (kind, module) == ("forbidden-import", "os")


def test_allowed_imports_work():
    body = """
    import math, statistics, collections, itertools, functools, operator, dataclasses, enum, typing
    import heapq, bisect, decimal, fractions, random, json, re, string, datetime, time, array, copy
    import abc, numbers, cmath, collections.abc
    from palisade.indicators import Sma
    import palisade.indicators as ind
    from fractions import Fraction

    @dataclasses.dataclass
    class Point:
        x: float

    class A(Strategy):
        def init(self):
            self.seen = []
        def next(self, bar):
            self.seen.append(Point(math.sqrt(bar.close)))
            later = __import__("decimal")
        def finish(self):
            self.metric("n", statistics.fmean(p.x ** 2 for p in self.seen))
            self.metric("f", float(Fraction(1, 4)))
    """
    host = run(body)
    assert host.metrics == {"n": 2.0, "f": 0.25}


def test_allowlist_is_deliberate():
    allowed = _runtime.ALLOWED_MODULES
    for name in ("math", "statistics", "collections", "itertools", "functools", "operator", "dataclasses", "enum", "typing", "heapq", "bisect", "decimal", "fractions", "random", "json", "re", "string", "datetime", "time", "array", "copy", "abc", "numbers", "cmath", "palisade"):
        assert name in allowed
    for name in ("os", "sys", "io", "socket", "subprocess", "importlib", "ctypes", "builtins", "pathlib", "shutil", "threading", "signal", "pickle", "marshal", "gc", "inspect", "types", "code"):
        assert name not in allowed


# -- exceptions ----------------------------------------------------------------


def test_an_exception_names_type_message_and_line():
    body = """
    class A(Strategy):
        def next(self, bar):
            if bar.close > 1:
                self.helper()

        def helper(self):
            return 1 / 0
    """
    assert failure(run, body) == ("exception", "ZeroDivisionError: division by zero (strategy.py, line 8)")


def test_the_line_is_the_innermost_frame_of_the_strategy_file():
    # The exception is raised inside the SDK (an indicator's constructor);
    # the line reported is the strategy's call.
    body = """
    from palisade.indicators import Sma

    class A(Strategy):
        def init(self):
            self.sma = Sma(0)
    """
    kind, message = failure(run, body, (1.0,), None, "mine.py")
    assert (kind, message) == ("exception", "ValueError: sma period must be at least 1 (mine.py, line 6)")


@pytest.mark.parametrize(
    "code, kind, message",
    [
        ("raise KeyError('k')", "exception", "KeyError: 'k' (strategy.py, line 5)"),
        ("raise RuntimeError", "exception", "RuntimeError (strategy.py, line 5)"),
        ("raise SystemExit(3)", "exception", "SystemExit: 3 (strategy.py, line 5)"),
        ("raise MemoryError('big')", "out-of-memory", "MemoryError: big (strategy.py, line 5)"),
        ("self.init()", "recursion", "RecursionError: maximum recursion depth exceeded (strategy.py, line 5)"),
    ],
)
def test_exception_kinds(code, kind, message):
    body = f"""
    class A(Strategy):
        def init(self):
            x = 1
            {code}
    """
    got_kind, got = failure(run, body)
    assert got_kind == kind
    assert got.startswith(message.split(" (")[0]) and got.endswith("(strategy.py, line 5)"), got


def test_an_exception_of_a_class_the_strategy_defines():
    body = """
    class Mine(BaseException):
        pass

    class A(Strategy):
        def finish(self):
            raise Mine("odd")
    """
    assert failure(run, body) == ("exception", "Mine: odd (strategy.py, line 7)")


def test_an_exception_at_module_level():
    kind, message = failure(_runtime.describe, "s.py", HEAD + "x = [][1]\n")
    assert (kind, message) == ("exception", "IndexError: list index out of range (s.py, line 2)")


def test_invalid_params_and_strategy_error_go_to_host_fail():
    body = """
    class A(Strategy):
        fast = Int(5)
        slow = Int(3)
        def init(self):
            if self.fast >= self.slow:
                raise InvalidParams(f"fast ({self.fast}) must be < slow ({self.slow})")
    """
    with pytest.raises(RunStopped) as stop:
        run(body, params={"fast": 5, "slow": 3})
    assert (stop.value.kind, stop.value.message) == (INVALID_PARAMS, "fast (5) must be < slow (3)")
    assert stop.value.host.failure == (1, "fast (5) must be < slow (3)")

    body = """
    class A(Strategy):
        def next(self, bar):
            if bar.close == 2.0:
                raise StrategyError("no more")
    """
    with pytest.raises(RunStopped) as stop:
        run(body)
    assert (stop.value.kind, stop.value.message) == (ERROR, "no more")


class SilentHost(MockHost):
    """A host whose fail returns (to see what the runtime does next)."""

    def fail(self, kind, message):
        self.failure = (kind, message)


def test_after_fail_the_runtime_stops_calling_the_strategy():
    source = HEAD + src(
        """
        class A(Strategy):
            def next(self, bar):
                self.metric("bars", bar.ts)
                raise StrategyError("stop")
            def finish(self):
                self.metric("finished", 1)
        """
    )
    host = SilentHost([1.0, 2.0])
    _runtime.run("s.py", source, host)
    assert host.failure == (2, "stop") and host.metrics == {"bars": 0}


# -- parameters ----------------------------------------------------------------


def test_parameters_are_typed_attributes_before_init():
    body = """
    class A(Strategy):
        n = Int(3)
        x = Float(0.5)
        flag = Bool(False)
        def init(self):
            self.metric("ok", type(self.n) is int and type(self.x) is float and type(self.flag) is bool)
            self.metric("values", self.n * 100 + self.x * 10 + self.flag)
            self.metric("explicit", self.param("n") + self.param("flag"))
    """
    host = run(body, params={"n": 7, "x": 0.25, "flag": 1.0})
    assert host.metrics == {"ok": 1.0, "values": 703.5, "explicit": 8.0}


@pytest.mark.parametrize("read", ["self.lookback", "self.param('lookback')", "getattr(self, 'lookback')"])
def test_undeclared_parameter_reads_go_to_the_host(read):
    body = f"""
    class A(Strategy):
        fast = Int(3)
        def init(self):
            n = {read}
    """
    with pytest.raises(RunStopped) as stop:
        run(body, params={"fast": 3})
    assert stop.value.kind == INVALID_PARAMS and "'lookback'" in stop.value.message


def test_undeclared_attribute_when_the_host_does_not_stop():
    class Lenient(MockHost):
        def param(self, name):
            self.asked = name
            return 0.0

    source = HEAD + "class A(Strategy):\n    def init(self):\n        self.window\n"
    host = Lenient([1.0])
    kind, message = failure(_runtime.run, "s.py", source, host)
    assert host.asked == "window"
    assert kind == "exception"
    assert "AttributeError: A has no attribute 'window' and declares no parameter 'window'" in message


def test_names_that_cannot_be_parameters_are_plain_attribute_errors():
    body = """
    class A(Strategy):
        def init(self):
            self.metric("h", hasattr(self, "_cache") + hasattr(self, "Cache"))
    """
    assert run(body).metrics == {"h": 0.0}


# -- event order -------------------------------------------------------------


def test_event_order_fills_before_bars_and_finish_once():
    body = """
    class A(Strategy):
        def init(self):
            self.events = ["init"]
        def next(self, bar):
            self.events.append(("bar", bar.ts, bar.symbol))
            if bar.ts == 0:
                self.buy(1, bar.symbol)
        def on_fill(self, fill):
            self.events.append(("fill", fill.ts, fill.symbol, fill.qty, fill.price))
        def finish(self):
            self.events.append("finish")
            self.log(json.dumps(self.events))
    """
    bars = [(0, 0, 10.0, 10, 10, 10, 1), (0, 1, 20.0, 20, 20, 20, 1), (60, 1, 21.0, 21, 21, 21, 1), (120, 0, 12.0, 12, 12, 12, 1)]
    host = run(body, bars, head=HEAD + "import json\n")
    events = json.loads(host.logs[0][1])
    assert events == [
        "init",
        ["bar", 0, 0],
        ["bar", 0, 1],
        ["fill", 60, 1, 1.0, 21.0],
        ["bar", 60, 1],
        ["fill", 120, 0, 1.0, 12.0],
        ["bar", 120, 0],
        "finish",
    ]
    assert host.ended  # next() was asked once more, and not again after it answered no bars


def test_on_timestamp_gets_every_bar_of_a_timestamp():
    body = """
    class Pairs(Strategy):
        def init(self):
            self.seen = []
        def next(self, bar):
            raise AssertionError("on_timestamp is overridden")
        def on_timestamp(self, bars):
            self.seen.append([(b.ts, b.symbol) for b in bars])
        def finish(self):
            self.metric("ok", self.seen == [[(0, 0), (0, 1)], [(1, 1)], [(2, 0), (2, 1)]])
    """
    bars = [(0, 0, 1, 1, 1, 1, 1), (0, 1, 1, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1, 1), (2, 0, 1, 1, 1, 1, 1), (2, 1, 1, 1, 1, 1, 1)]
    assert run(body, bars).metrics == {"ok": 1.0}


# -- history -----------------------------------------------------------------


HISTORY_BODY = """
class A(Strategy):
    {keep}
    def init(self):
        self.checked = 0
    def next(self, bar):
        h = self.history(bar.symbol)
        assert h[-1] == bar and h.close[-1] == bar.close and self.data.Close[-1] == self.history(0).close[-1]
        for other in range(2):
            for ts in self.history(other).ts:
                assert ts <= bar.ts, (ts, bar.ts)
        self.checked += 1
    def finish(self):
        self.metric("checked", self.checked)
        self.metric("len", len(self.data))
        self.metric("closes", sum(self.data.close[-3:]))
        self.metric("prev", self.data.close[-2])
"""


@pytest.mark.parametrize("keep, length", [("", 4), ("keep_bars = True", 4), ("keep_bars = 3", 3)])
def test_history_never_holds_a_later_bar(keep, length):
    bars = [(t, s, 1, 1, 1, float(t * 10 + s), 1) for t in range(4) for s in range(2)]
    host = run(HISTORY_BODY.format(keep=keep), bars)
    assert host.metrics == {"checked": 8.0, "len": float(length), "closes": 10.0 + 20 + 30, "prev": 20.0}


def test_history_off_says_how_to_turn_it_on():
    body = """
    class A(Strategy):
        keep_bars = 0
        def next(self, bar):
            getattr(self, "da" + "ta")
    """
    kind, message = failure(run, body)
    assert kind == "exception" and "keeps no bar history (keep_bars = 0); set keep_bars = True" in message


def test_history_is_recorded_only_when_the_code_uses_it():
    from palisade import Strategy

    class Plain(Strategy):
        def next(self, bar):
            pass

    class Uses(Strategy):
        def next(self, bar):
            return (lambda: self.data)()

    assert not _runtime._uses_history(Plain) and _runtime._uses_history(Uses)


def test_pack_next_is_the_wit_layout_and_the_loop_reads_it_back():
    import struct

    from palisade import Strategy
    from palisade._runtime import execute, pack_next

    bar = (1_700_000_000, 3, 1.5, 2.0, 1.0, 1.75, 1e6)
    fill = (7, 1_700_000_000, 3, -2.5, 1.5, 0.25)
    data = pack_next([bar, bar], [fill])
    # Header (B, F), B bars of 56 bytes, F fills of 48: ABI v2's records.
    assert len(data) == 8 + 2 * 56 + 48
    assert struct.unpack_from("<II", data) == (2, 1)
    assert struct.unpack_from("<qiiddddd", data, 8) == (bar[0], bar[1], 0, *bar[2:])
    assert struct.unpack_from("<qqiiddd", data, 8 + 2 * 56) == (fill[0], fill[1], fill[2], 0, *fill[3:])
    assert pack_next([]) == b"\0" * 8
    # MockHost.next_bar tells a timestamp of one bar and no fill by its
    # packing's length, 64 bytes: no other count of bars and fills packs to
    # that length.
    assert (_runtime._HEADER.size, _runtime._BAR.size, _runtime._FILL.size) == (8, 56, 48)
    lengths = {(b, f): len(pack_next([bar] * b, [fill] * f)) for b in range(4) for f in range(4)}
    assert [k for k, n in lengths.items() if n == 64] == [(1, 0)] and _runtime.ONE_BAR_PACKING == 64

    seen = []

    class Recorder(Strategy):
        def on_fill(self, f):
            seen.append(("fill", tuple(f)))

        def next(self, b):
            seen.append(("bar", tuple(b)))

    class Packed:
        def __init__(self):
            self.steps = iter([pack_next([bar, bar[:1] + (4,) + bar[2:]], [fill, fill]), pack_next([])])

        def next(self):
            return next(self.steps)

        def symbol_count(self):
            return 5

        def param(self, name):
            raise AssertionError(name)

    execute(Recorder, Packed())
    other = bar[:1] + (4,) + bar[2:]
    assert seen == [("fill", fill), ("fill", fill), ("bar", bar), ("bar", other)]


def test_next_bar_hands_over_lone_bars_and_holds_the_rest_for_next():
    # Two symbols: the first timestamp has both (held), then one bar each.
    bars = [(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0), (0, 1, 2.0, 2.0, 2.0, 2.0, 1.0), (60, 0, 3.0, 3.0, 3.0, 3.0, 1.0)]
    host = MockHost(bars, symbols=["A", "B"])
    assert host.next_bar() == b"" and host.next_bar() == b""
    assert len(host.next()) == 8 + 2 * 56
    alone = host.next_bar()
    assert len(alone) == 56 and _runtime._BAR.unpack(alone) == bars[2]
    # The end is held too, and handed over by next.
    assert host.next_bar() == b"" and host.next() == _runtime.pack_next([])


def test_a_host_without_next_bar_gets_every_timestamp_through_next():
    from palisade import Strategy
    from palisade._runtime import execute, pack_next

    seen = []

    class Recorder(Strategy):
        def next(self, bar):
            seen.append(bar.close)

    class Plain:
        def __init__(self):
            self.steps = iter([pack_next([(60 * i, 0, 1.0, 1.0, 1.0, float(i), 1.0)]) for i in range(3)] + [pack_next([])])

        def next(self):
            return next(self.steps)

        def symbol_count(self):
            return 1

    for plan in (None, lambda names: None):
        seen.clear()
        execute(Recorder, Plain(), plan)
        assert seen == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("symbols", [1, 2])
def test_lone_bars_come_through_next_bar_and_the_rest_through_next(symbols):
    calls = {"next": 0, "next_bar": 0, "lone": 0}

    class Counting(MockHost):
        inside = False

        def next(self):
            calls["next"] += not self.inside
            return super().next()

        def next_bar(self):
            calls["next_bar"] += 1
            self.inside = True
            data = super().next_bar()
            self.inside = False
            calls["lone"] += bool(data)
            return data

    source = HEAD + src("""
    class S(Strategy):
        def next(self, bar):
            if bar.ts == 60 * 3:
                self.buy(1.0, bar.symbol)
            self.log(f"{bar.symbol} {bar.close}")
    """)
    bars = [(60 * i, s, float(i), float(i), float(i), float(i), 1.0) for i in range(8) for s in range(symbols)]
    host = Counting(bars, params={}, symbols=[str(s) for s in range(symbols)])
    _runtime.run("strategy.py", source, host)
    assert [m for _, m in host.logs] == [f"{s} {float(i)}" for i in range(8) for s in range(symbols)]
    assert [o.qty for o in host.orders] == [1.0] * symbols and host.fills
    if symbols == 1:
        # The first timestamp, the one with the fill and the end through
        # next; the 6 others alone through next_bar.
        assert calls == {"next": 3, "next_bar": 8, "lone": 6}
    else:
        assert calls == {"next": 9, "next_bar": 0, "lone": 0}
