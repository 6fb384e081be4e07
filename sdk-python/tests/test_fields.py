"""The fast path: ``next`` handed its bar's fields instead of a ``Bar``
(``palisade._fields``), only where no strategy could tell, and with the same
results, errors and lines as the ``Bar`` path."""

import pytest
from conftest import EXAMPLES, failure, src

from palisade import _fields, _runtime
from palisade.testing import MockHost, resolve_params

HEAD = "from palisade import Strategy, Int, Float\nimport math\n"

BARS = [
    (60 * i, i % 2, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i * (-1) ** i, 100.0 + i) for i in range(12)
]


def loaded(body, filename="strategy.py"):
    loader = _runtime._Loader(filename, HEAD + src(body))
    cls = loader.load()
    return loader, cls


def plan_of(body):
    loader, cls = loaded(body)
    return loader.fields_plan(cls)


def planned(loader, cls, fast):
    """What the run asks for the fast path's plan: the runtime's, or none."""
    return (lambda names: loader.fields_plan(cls, names)) if fast else (lambda names: None)


def run_both(body, bars=BARS, symbols=("A", "B")):
    """Runs a source with the fast path allowed and with Bar tuples only;
    returns both hosts (logs, orders)."""
    hosts = []
    for fast in (True, False):
        loader, cls = loaded(body)
        host = MockHost(list(bars), params=resolve_params(cls), symbols=list(symbols))
        make = planned(loader, cls, fast)
        loader.guard(_runtime.execute, cls, host, make)
        hosts.append(host)
    return hosts


def test_a_next_that_reads_fields_gets_them_in_bar_order():
    plan = plan_of("""
    class S(Strategy):
        def next(self, bar):
            self.log(f"{bar.close} {bar.symbol} {bar.ts}")
    """)
    assert plan is not None and plan.fields == ("ts", "symbol", "close")
    assert plan.function.__name__ == "next" and plan.function.__qualname__ == "S.next"


def test_every_field_reads_the_same_value_either_way():
    body = """
    class S(Strategy):
        def next(self, bar):
            self.log(repr((bar.ts, bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume)))
            self.log(repr((type(bar.ts), type(bar.symbol), type(bar.close))))
    """
    assert plan_of(body).fields == ("ts", "symbol", "open", "high", "low", "close", "volume")
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and len(fast.logs) == 2 * len(BARS)


def test_a_next_that_reads_no_field_is_called_without_arguments():
    body = """
    class S(Strategy):
        def init(self):
            self.n = 0

        def next(self, bar):
            self.n += 1
            self.log(str(self.n))
    """
    assert plan_of(body).fields == ()
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs[-1] == (2, str(len(BARS)))


@pytest.mark.parametrize(
    "code",
    [
        "self.helper(bar)",
        "x = bar[5]",
        "x = bar",
        "bar.close = 1.0",
        "del bar",
        "bar = None",
        "(bar := 3)",
        "for bar in range(2): pass",
        "x = bar.count(1.0)",
        "x = bar._asdict()",
        "x = getattr(bar, 'close')",
        "x = [bar.close for _ in range(2)]",
        "x = (lambda: bar.close)()",
        "x = [b.close for bar in [1] for b in []]",
        "x = locals()",
        "x = vars()",
        "x = dir()",
        "x = eval('1')",
        "exec('x = 1')",
        "yield 1",
        "x = super().next",
        "x = __class__",
        "try:\n    pass\nexcept ValueError as bar:\n    pass",
        "match 1:\n    case bar:\n        pass",
        "match {}:\n    case {**bar}:\n        pass",
        "import math as bar",
        "def inner(bar):\n    return bar\n",
        "class Inner:\n    bar = 1\n",
        "x, *bar = (1, 2)",
        "bar.close += 1",
        "print(*bar)",
        "x = bar.close if bar else 0",
    ],
)
def test_any_other_use_of_the_bar_keeps_the_bar(code):
    body = "class S(Strategy):\n    def helper(self, b):\n        pass\n\n    def next(self, bar):\n"
    body += "".join(f"        {line}\n" for line in code.splitlines())
    body += "        self.log(str(bar.close))\n"
    loader = _runtime._Loader("strategy.py", HEAD + body)
    cls = loader.load()
    assert loader.fields_plan(cls) is None


@pytest.mark.parametrize(
    "body",
    [
        # Not exactly (self, bar).
        "class S(Strategy):\n    def next(self, bar, extra=1):\n        self.log(str(bar.close))\n",
        "class S(Strategy):\n    def next(self, *bars):\n        pass\n",
        "class S(Strategy):\n    def next(self, bar, *, k=1):\n        pass\n",
        # Decorated.
        "def deco(f):\n    return f\n\nclass S(Strategy):\n    @deco\n    def next(self, bar):\n        self.log(str(bar.close))\n",
        # Not a def of the class.
        "def f(self, bar):\n    self.log(str(bar.close))\n\nclass S(Strategy):\n    next = f\n",
        "class S(Strategy):\n    next = lambda self, bar: None\n",
        # Replaced after its def.
        "class S(Strategy):\n    def next(self, bar):\n        pass\n    def other(self, bar):\n        self.log(str(bar.close))\n    next = other\n",
        # Not overridden at all.
        "class S(Strategy):\n    pass\n",
        # A generator.
        "class S(Strategy):\n    def next(self, bar):\n        x = bar.close\n        yield x\n",
    ],
)
def test_next_itself_must_be_a_plain_def_taking_self_and_bar(body):
    loader = _runtime._Loader("strategy.py", HEAD + body)
    cls = loader.load()
    assert loader.fields_plan(cls) is None


def test_a_next_inherited_from_a_base_in_the_source_is_planned():
    plan = plan_of("""
    class Base(Strategy):
        def next(self, bar):
            self.log(str(bar.high))

    class S(Base):
        pass
    """)
    assert plan is not None and plan.fields == ("high",)


def test_a_nested_scope_without_the_bar_does_not_matter():
    body = """
    class S(Strategy):
        def next(self, bar):
            c, o = bar.close, bar.open
            self.log(str(sorted([c, 1.0], key=lambda v: -v)) + str([v * 2 for v in (c, o)]))
    """
    assert plan_of(body).fields == ("open", "close")
    fast, slow = run_both(body)
    assert fast.logs == slow.logs


def test_private_names_are_mangled_as_in_the_class():
    body = """
    class S(Strategy):
        def init(self):
            self.__seen = 0

        def next(self, bar):
            self.__seen += 1
            self.log(f"{self.__seen} {self._S__seen} {bar.close}")
    """
    assert plan_of(body) is not None
    fast, slow = run_both(body)
    assert fast.logs == slow.logs


def test_an_exception_names_the_same_line_either_way():
    body = """
    class S(Strategy):
        def next(self, bar):
            if bar.ts > 120:
                x = bar.close / 0
    """
    messages = set()
    for fast in (True, False):
        loader, cls = loaded(body)
        host = MockHost(list(BARS), params={})
        make = planned(loader, cls, fast)
        messages.add(failure(loader.guard, _runtime.execute, cls, host, make))
    assert messages == {("exception", "ZeroDivisionError: float division by zero (strategy.py, line 6)")}


def test_the_run_uses_the_fast_path_and_the_original_next_is_intact():
    body = """
    class S(Strategy):
        def init(self):
            self.calls = []

        def next(self, bar):
            self.log(f"{bar.close}")

        def finish(self):
            # The strategy's own next still takes a Bar.
            self.next(self._last)
    """
    loader, cls = loaded(body)
    made = []

    def make(names):
        made.append(loader.fields_plan(cls, names))
        return made[-1]

    bar = _runtime.Bar(0, 0, 1.0, 1.0, 1.0, 7.5, 1.0)
    cls._last = bar
    host = MockHost(list(BARS), params={}, symbols=["A", "B"])
    loader.guard(_runtime.execute, cls, host, make)
    assert made and made[0] is not None
    assert host.logs[-1] == (2, "7.5")


def test_an_instance_next_set_in_init_is_what_runs():
    body = """
    class S(Strategy):
        def init(self):
            self.next = self.other

        def next(self, bar):
            self.log("class next")

        def other(self, bar):
            self.log(f"instance next {bar.close}")
    """
    loader, cls = loaded(body)
    host = MockHost(list(BARS), params={}, symbols=["A", "B"])
    loader.guard(_runtime.execute, cls, host, lambda names: loader.fields_plan(cls, names))
    assert host.logs and all(m.startswith("instance next") for _, m in host.logs)


def test_on_timestamp_and_history_keep_bars():
    for body in (
        """
        class S(Strategy):
            def on_timestamp(self, bars):
                for bar in bars:
                    self.next(bar)

            def next(self, bar):
                self.log(str(bar.close))
        """,
        """
        class S(Strategy):
            def next(self, bar):
                self.log(str(len(self.history(bar.symbol))))
        """,
    ):
        loader, cls = loaded(body)
        host = MockHost(list(BARS), params={}, symbols=["A", "B"])
        loader.guard(_runtime.execute, cls, host, lambda names: pytest.fail("no plan is asked for"))
        assert len(host.logs) == len(BARS)


@pytest.mark.parametrize("name", ["sma_cross", "bollinger_revert", "donchian_breakout"])
def test_the_examples_take_the_fast_path_with_the_same_trades(name):
    from test_examples import walk

    path = EXAMPLES / f"{name}.py"
    loader = _runtime._Loader(path.name, path.read_text())
    cls = loader.load()
    plans = []

    def fast(names):
        plans.append(loader.fields_plan(cls, names))
        return plans[-1]

    runs = []
    for make in (fast, lambda names: None):
        host = MockHost(walk(3000, 5, 2), params=resolve_params(cls))
        _runtime.execute(cls, host, make)
        runs.append((host.trades(), host.logs))
    assert plans and plans[0] is not None
    assert runs[0] == runs[1] and runs[0][0]


def test_native_classes_are_planned_from_their_module_source(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from sma_cross import SmaCross

    # Its bars carry the crossing the host computes.
    assert _fields.plan_from_source(SmaCross) is None
    plan = _fields.plan_from_source(SmaCross, ("cross",))
    assert plan is not None and plan.fields == ("symbol", "cross")
    # A class defined inside a function is not top level: no plan.

    class Local(SmaCross):
        def next(self, bar):
            return bar.close

    assert _fields.plan_from_source(Local) is None


@pytest.mark.parametrize("depth", [50, 400, 900])
def test_deeply_nested_code_runs_the_same_whether_planned_or_not(depth):
    # Nested negations: the rewrite recurses through them, and may give up
    # (a plan is never an error); the run's output is the same either way.
    body = "class S(Strategy):\n    def next(self, bar):\n        self.log(str(" + "-" * depth + "bar.close))\n"
    logs = []
    for fast in (True, False):
        loader = _runtime._Loader("strategy.py", HEAD + body)
        cls = loader.load()
        host = MockHost([1.0, 2.0], params={})
        loader.guard(_runtime.execute, cls, host, planned(loader, cls, fast))
        logs.append(host.logs)
    sign = "-" if depth % 2 else ""
    assert logs[0] == logs[1] == [(2, f"{sign}1.0"), (2, f"{sign}2.0")]


def test_a_next_from_another_file_is_not_planned():
    body = """
    ns = {}
    exec("def next(self, bar):\\n    return bar.close\\n", ns)

    class S(Strategy):
        next = ns["next"]
    """
    assert plan_of(body) is None


@pytest.mark.parametrize(
    "body",
    [
        # Non-ASCII text before a read on its line: offsets are in bytes.
        'class S(Strategy):\n    def next(self, bar):\n        self.log("é→ " + "bar.close" + str(bar.close)) # bar.close\n',
        # Two reads on one line, a semicolon, a comment naming the field.
        "class S(Strategy):\n    def next(self, bar):\n        x = bar.close; y = bar.open  # bar.high\n        self.log(f'{x} {y} {bar.close - bar.open}')\n",
        # Tabs for indentation.
        "class S(Strategy):\n\tdef next(self, bar):\n\t\tself.log(str(bar.volume))\n",
        # A read inside parentheses spread over lines.
        "class S(Strategy):\n    def next(self, bar):\n        self.log(str(\n            bar.close\n            + 1))\n",
        # The parameters on lines of their own.
        "class S(Strategy):\n    def next(\n        self,\n        bar,\n    ):\n        self.log(str(bar.close))\n",
        # An annotated parameter.
        "class S(Strategy):\n    def next(self, bar: 'Bar'):\n        self.log(str(bar.ts))\n",
        # The generated name already used in the source.
        "_palisade_bar_close = 'taken'\nclass S(Strategy):\n    def next(self, bar):\n        self.log(str(bar.close) + _palisade_bar_close)\n",
    ],
)
def test_the_copy_is_made_from_odd_sources_and_reads_the_same(body):
    plan = plan_of(body)
    assert plan is not None
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs


@pytest.mark.parametrize(
    "body",
    [
        # A read split over two lines: the copy would move lines.
        "class S(Strategy):\n    def next(self, bar):\n        self.log(str((bar\n            .close)))\n",
        # A return annotation (evaluated when the copy is defined).
        "class S(Strategy):\n    def next(self, bar) -> None:\n        self.log(str(bar.close))\n",
    ],
)
def test_sources_the_copy_could_not_match_line_for_line_keep_the_bar(body):
    assert plan_of(body) is None
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs


def test_a_module_with_future_imports_keeps_the_bar():
    # The sandbox refuses __future__ (not on the allowlist); a native test
    # module may have it, and it changes how the module compiles.
    import ast

    source = "from __future__ import annotations\n" + HEAD + src("""
    class S(Strategy):
        def next(self, bar):
            self.log(str(bar.close))
    """)
    namespace = {"__name__": "native_module"}
    exec(compile(source, "native.py", "exec", dont_inherit=True), namespace)
    tree = compile(source, "native.py", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    assert _fields.plan(namespace["S"], tree, source, "native.py") is None
    plain = source.replace("from __future__ import annotations", "#")
    tree = compile(plain, "native.py", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    assert _fields.plan(namespace["S"], tree, plain, "native.py") is not None


# -- found by an adversarial review ------------------------------------------


def test_a_debug_f_string_shows_the_bars_text_so_keeps_the_bar():
    body = """
    class S(Strategy):
        def next(self, bar):
            self.log(f"{bar.close=} {bar.close * 2 = }")
    """
    assert plan_of(body) is None
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs[0][1].startswith("bar.close=")
    # The usual f-strings are fine.
    assert plan_of('class S(Strategy):\n    def next(self, bar):\n        self.log(f"close={bar.close}")\n')


def test_a_match_value_pattern_reading_the_bar_keeps_the_bar():
    body = """
    class S(Strategy):
        def next(self, bar):
            match [999.0]:
                case [bar.close]:
                    self.log("matched")
                case _:
                    self.log("no")
    """
    assert plan_of(body) is None
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs[0] == (2, "no")


def test_a_name_equal_to_a_generated_local_after_normalization_is_avoided():
    # A fullwidth letter normalizes (NFKC) to the local the copy would use.
    body = """
    _palisade_bar_\uff43lose = "GLOBAL"

    class S(Strategy):
        def next(self, bar):
            self.log(str(bar.close) + " " + _palisade_bar_\uff43lose)
    """
    plan = plan_of(body)
    assert plan is None or "_palisade_bar_close" not in plan.function.__code__.co_varnames
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs[0][1].endswith("GLOBAL")


@pytest.mark.parametrize(
    "module_code",
    [
        # Building the copy must not run the strategy's code again.
        "calls = []\n_orig = __builtins__['__build_class__']\n"
        "def hook(*a, **k):\n    calls.append(a[1])\n    return _orig(*a, **k)\n"
        "__builtins__['__build_class__'] = hook\n",
        # Builtins replaced after next was defined (see below: appended).
        "",
    ],
)
def test_building_the_copy_runs_nothing_and_keeps_the_builtins(module_code):
    body = module_code + src("""
    calls = globals().get("calls", [])

    class S(Strategy):
        def next(self, bar):
            self.log(str(len(calls)) + " " + str(len("abc")) + " " + str(bar.close))
    """)
    if not module_code:
        body += "__builtins__ = dict(__builtins__, len=lambda x: 42)\n"
    fast, slow = run_both(body)
    assert fast.logs == slow.logs


def test_what_runs_is_the_method_the_instance_resolves():
    body = """
    class S(Strategy):
        def init(self):
            class Other(S):
                def next(self, bar):
                    self.log("other " + str(bar.close))

            self.__class__ = Other

        def next(self, bar):
            self.log("planned " + str(bar.close))
    """
    fast, slow = run_both(body)
    assert fast.logs == slow.logs and fast.logs[0][1].startswith("other")
    # The same with the introspection words out of the source: the runtime
    # itself checks what the instance resolves.
    loader, cls = loaded(body.replace("self.__class__ = Other", "object.__setattr__(self, 'next', Other.next.__get__(self))"))
    plan = loader.fields_plan(cls)
    assert plan is not None
    host = MockHost(list(BARS), params={}, symbols=["A", "B"])
    loader.guard(_runtime.execute, cls, host, lambda names: plan)
    assert host.logs[0][1].startswith("other")


def test_a_patched_bar_class_keeps_the_bar():
    body = """
    import palisade

    class S(Strategy):
        def next(self, bar):
            self.log(str(bar.close))
    """
    from palisade import Bar

    original = Bar.close
    try:
        Bar.close = property(lambda b: tuple.__getitem__(b, 5) * 100)
        assert plan_of(body) is None
        fast, slow = run_both(body)
        assert fast.logs == slow.logs
    finally:
        Bar.close = original
    assert plan_of(body) is not None


@pytest.mark.parametrize(
    "trick",
    [
        "L = locals\n",
        "E = eval\n",
        "def frame(e):\n    return e.__traceback__.tb_frame.f_locals\n",
        "def swap(f, g):\n    f.__code__ = g.__code__\n",
    ],
)
def test_a_source_that_could_look_at_frames_or_code_keeps_the_bar(trick):
    assert plan_of(trick + "class S(Strategy):\n    def next(self, bar):\n        self.log(str(bar.close))\n") is None
