"""Manifests: what ``describe`` returns for valid declarations, and the
``manifest`` failure for every invalid one, on both sides of each limit."""

import json

import pytest
from conftest import failure, src

from palisade import Bool, Float, Int, Strategy, _runtime


def describe(body, header="from palisade import Strategy, Int, Float, Bool\n"):
    return json.loads(_runtime.describe("strategy.py", header + src(body)))


def test_full_manifest_in_abi_v2_schema():
    m = describe(
        '''
        class SmaCross(Strategy):
            """long-only SMA crossover

            More text that is not the description.
            """
            warmup = "slow"
            fast = Int(10, min=2, max=200, description="fast SMA length")
            slow = Int(30.0, min=3, max=500)
            size = Float(1, min=0.5)
            short = Bool(False, description="allow shorts")
            def next(self, bar):
                pass
        '''
    )
    assert m == {
        "abi": 2,
        "name": "sma-cross",
        "version": "0.1.0",
        "description": "long-only SMA crossover",
        "warmup": "slow",
        "params": [
            {"name": "fast", "type": "int", "default": 10, "min": 2, "max": 200, "description": "fast SMA length"},
            {"name": "slow", "type": "int", "default": 30, "min": 3, "max": 500},
            {"name": "size", "type": "float", "default": 1.0, "min": 0.5},
            {"name": "short", "type": "bool", "default": False, "description": "allow shorts"},
        ],
    }
    assert type(m["params"][1]["default"]) is int and type(m["params"][2]["default"]) is float


def test_minimal_manifest_and_explicit_attributes():
    assert describe("class A(Strategy):\n    pass\n") == {"abi": 2, "name": "a", "version": "0.1.0", "params": []}
    m = describe(
        '''
        class Whatever(Strategy):
            """ignored docstring"""
            name = "my_strat-2"
            version = "1.2.3"
            description = "explicit"
            warmup = 0
        '''
    )
    assert (m["name"], m["version"], m["description"], m["warmup"]) == ("my_strat-2", "1.2.3", "explicit", 0)


@pytest.mark.parametrize(
    "cls_name, want",
    [("SmaCross", "sma-cross"), ("RSIStrategy", "rsi-strategy"), ("My2Fast", "my2-fast"), ("sma_cross", "sma-cross"), ("X", "x")],
)
def test_default_name_is_kebab_case(cls_name, want):
    assert describe(f"class {cls_name}(Strategy):\n    pass\n")["name"] == want


def test_params_are_inherited_in_declaration_order_and_can_be_overridden():
    m = describe(
        """
        class Base(Strategy):
            a = Int(1)
            b = Int(2)
        class Child(Base):
            b = Int(3, max=9)
            c = Bool(True)
        """
    )
    assert m["name"] == "child"
    assert [(p["name"], p["default"]) for p in m["params"]] == [("a", 1), ("b", 3), ("c", True)]


def many_params(n):
    return "class Many(Strategy):\n" + "".join(f"    p{i} = Int({i})\n" for i in range(n))


def test_at_most_64_params():
    assert len(describe(many_params(64))["params"]) == 64
    kind, message = failure(_runtime.describe, "s.py", "from palisade import *\n" + many_params(65))
    assert (kind, message) == ("manifest", "65 parameters are declared, at most 64 are allowed")


def test_name_length_limits():
    assert describe(f'class A(Strategy):\n    name = "{"a" * 64}"\n')["name"] == "a" * 64
    kind, message = failure(_runtime.describe, "s.py", f'from palisade import *\nclass A(Strategy):\n    name = "{"a" * 65}"\n')
    assert kind == "manifest" and "must be 1 to 64 characters" in message
    long_param = "p" * 64
    assert describe(f"class A(Strategy):\n    {long_param} = Int(1)\n")["params"][0]["name"] == long_param
    kind, message = failure(_runtime.describe, "s.py", f"from palisade import *\nclass A(Strategy):\n    {long_param}x = Int(1)\n")
    assert kind == "manifest" and f"parameter name {long_param + 'x'!r}" in message


def bad(body):
    """The manifest failure message of a class body."""
    source = "from palisade import Strategy, Int, Float, Bool\nclass A(Strategy):\n" + src(body).replace("\n", "\n    ").rstrip() + "\n"
    source = source.replace("class A(Strategy):\n", "class A(Strategy):\n    ", 1)
    kind, message = failure(_runtime.describe, "s.py", source)
    assert kind == "manifest", message
    return message


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "Bad Name"', "strategy name 'Bad Name' must be 1 to 64 characters of a-z, 0-9, _ and -"),
        ('name = ""', "strategy name '' must be 1 to 64 characters"),
        ("version = 1", "version must be a string, not 1"),
        ("description = 3", "description must be a string"),
        ('warmup = "nope"', "warmup names nope, which is not a declared Int parameter"),
        ('x = Float(1.0)\nwarmup = "x"', "warmup names x, which is not a declared Int parameter"),
        ("warmup = -1", "warmup must be a bar count"),
        ("warmup = 2.5", "warmup must be a bar count"),
        ("warmup = True", "warmup must be a bar count"),
        ("keep_bars = -1", "keep_bars must be None, True, False or an int >= 0"),
        ("Fast = Int(1)", "parameter name 'Fast' must be 1 to 64 characters"),
        ("cash = Float(1.0)", "parameter cash: the name hides Strategy.cash"),
        ("buy = Int(1)", "parameter buy: the name hides Strategy.buy"),
        ("n = Int(2.5)", "parameter n: default of an Int must be a whole number, not 2.5"),
        ("n = Int(2, min=0.5)", "parameter n: min of an Int must be a whole number"),
        ("n = Int(True)", "parameter n: default must be a number, not True"),
        ('n = Int("3")', "parameter n: default must be a number, not '3'"),
        ("n = Int(None)", "parameter n: default must be a number, not None"),
        ("x = Float(float('nan'))", "parameter x: default must be finite"),
        ("x = Float(1.0, max=float('inf'))", "parameter x: max must be finite"),
        ("x = Float(1.0, min=2.0, max=1.0)", "parameter x: min 2.0 is greater than max 1.0"),
        ("b = Bool(1)", "parameter b: default of a Bool must be True or False"),
        ("x = Float(1.0, description=5)", "parameter x: description must be a string"),
    ],
)
def test_invalid_declarations(body, message):
    assert message in bad(body)


@pytest.mark.parametrize(
    "decl, ok",
    [
        ("Int(2, min=2, max=5)", True),
        ("Int(5, min=2, max=5)", True),
        ("Int(1, min=2, max=5)", False),
        ("Int(6, min=2, max=5)", False),
        ("Float(0.1, min=0.1)", True),
        ("Float(0.09999999999999999, min=0.1)", False),
        ("Float(10.0, max=10)", True),
        ("Float(10.000000000000002, max=10)", False),
    ],
)
def test_default_at_and_just_outside_its_range(decl, ok):
    source = f"from palisade import *\nclass A(Strategy):\n    p = {decl}\n"
    if ok:
        _runtime.describe("s.py", source)
    else:
        kind, message = failure(_runtime.describe, "s.py", source)
        assert kind == "manifest" and "is outside [min, max]" in message


def test_manifest_of_a_class_natively():
    class Native(Strategy):
        """native strategy"""

        fast = Int(3, min=1)
        flag = Bool(True)
        x = Float(0.25)

    assert _runtime.manifest(Native) == {
        "abi": 2,
        "name": "native",
        "version": "0.1.0",
        "description": "native strategy",
        "params": [
            {"name": "fast", "type": "int", "default": 3, "min": 1},
            {"name": "flag", "type": "bool", "default": True},
            {"name": "x", "type": "float", "default": 0.25},
        ],
    }
    assert Native.fast.default == 3 and "Int(3, min=1)" == repr(Native.fast)
    with pytest.raises(_runtime.RuntimeFailure):
        _runtime.manifest(int)


def test_manifest_size_limit():
    text = "d" * 1100
    body = "".join(f'    p{i} = Int({i}, description="{text}")\n' for i in range(60))
    kind, message = failure(_runtime.describe, "s.py", "from palisade import *\nclass A(Strategy):\n" + body)
    assert (kind, message) == ("manifest", "the manifest is longer than 65536 bytes")


@pytest.mark.parametrize(
    "body, message",
    [
        ("x = 1\n", "s.py defines no strategy: define one class deriving from palisade.Strategy"),
        ("class A(Strategy):\n    pass\nclass B(Strategy):\n    pass\n", "s.py defines 2 strategies (A, B): define exactly one Strategy subclass"),
        ("Imported = Strategy\n", "s.py defines no strategy"),
    ],
)
def test_exactly_one_strategy_class(body, message):
    kind, got = failure(_runtime.describe, "s.py", "from palisade import Strategy\n" + body)
    assert kind == "manifest" and got.startswith(message)


def test_a_base_class_and_its_one_subclass_is_one_strategy():
    m = describe("class Base(Strategy):\n    a = Int(1)\nclass Real(Base):\n    pass\n")
    assert m["name"] == "real"
