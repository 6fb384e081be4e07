"""The Python examples against the Rust ones: the same manifests (read from
the Rust sources' `palisade_sdk::strategy!` blocks, and from the built wasm
modules' `palisade.manifest` sections when `guest-examples/out/` exists) and
the rules' trades, checked against independent references on generated
data."""

import importlib.util
import json
import pathlib
import random
import re
from fractions import Fraction

import pytest
from conftest import example

from palisade import _runtime
from palisade.testing import INVALID_PARAMS, RunStopped, run_strategy

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = {"sma_cross": "sma-cross", "bollinger_revert": "bollinger-revert", "donchian_breakout": "donchian-breakout"}


def rust_manifest(crate):
    """The manifest the Rust `strategy!` macro writes, from its source."""
    text = (REPO / "guest-examples" / crate / "src" / "lib.rs").read_text()
    block = text[text.index("palisade_sdk::strategy! {") :]
    head = {k: json.loads(v) for k, v in re.findall(r'^\s*(name|version|description|warmup): ("[^"]*"|\d+),$', block, re.M)}
    params = []
    for line in re.findall(r"^\s*(\w+: \w+ = .*);$", block, re.M):
        pname, rest = line.split(": ", 1)
        ptype, rest = rest.split(" = ", 1)
        fields = re.findall(r'(?:^|, )(?:(min|max|doc) = )?("[^"]*"|[-\d.]+|true|false)', rest)
        entry = {"name": pname, "type": ptype, "default": json.loads(fields[0][1])}
        for key, value in fields[1:]:
            entry["description" if key == "doc" else key] = json.loads(value)
        params.append(entry)
    return {"abi": 2, **head, "params": params}


def _wasm_sections():
    """scripts/wasm-add-section.py, whose section reader the tests share."""
    spec = importlib.util.spec_from_file_location("wasm_add_section", REPO / "scripts" / "wasm-add-section.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.custom_sections


def wasm_manifest(path):
    """The `palisade.manifest` custom section of a wasm module."""
    for name, payload in _wasm_sections()(path.read_bytes()):
        if name == "palisade.manifest":
            return json.loads(payload)
    raise AssertionError(f"{path} has no palisade.manifest section")


@pytest.mark.parametrize("module, crate", EXAMPLES.items())
def test_manifest_equals_the_rust_example(module, crate):
    py = json.loads(_runtime.describe(f"{module}.py", (REPO / "sdk-python" / "examples" / f"{module}.py").read_text()))
    assert py == rust_manifest(crate)
    assert len(py["params"]) == 3 and py["name"] == crate


@pytest.mark.parametrize("module, crate", EXAMPLES.items())
def test_manifest_equals_the_built_wasm_module(module, crate):
    wasm = REPO / "guest-examples" / "out" / f"{crate.replace('-', '_')}.wasm"
    if not wasm.exists():
        candidates = list((REPO / "guest-examples" / "out").glob(f"{crate}*.wasm")) if wasm.parent.exists() else []
        if not candidates:
            pytest.skip("guest-examples/out/ is not built (scripts/build-guests.sh)")
        wasm = candidates[0]
    py = json.loads(_runtime.describe(f"{module}.py", (REPO / "sdk-python" / "examples" / f"{module}.py").read_text()))
    assert py == wasm_manifest(wasm)


def test_the_rust_manifest_reader_reads_what_it_should():
    m = rust_manifest("sma-cross")
    assert m["params"][2] == {"name": "size", "type": "float", "default": 1, "min": 0.000001, "max": 1000000000, "description": "units bought on each entry"}
    assert m["warmup"] == "slow" and m["description"].startswith("long-only SMA crossover")


# -- generated data -----------------------------------------------------------


def walk(n, seed, decimals=2, step=60):
    """Closes of a random walk with `decimals` decimals (coarse grids give
    exact SMA ties), as bars with high/low around the close."""
    rng = random.Random(seed)
    unit = 10**decimals
    ticks = 100 * unit
    bars = []
    for i in range(n):
        ticks = max(unit, ticks + rng.randint(-step, step))
        c = ticks / unit
        o = (ticks + rng.randint(-step // 2, step // 2)) / unit
        h = max(c, o) + rng.randint(0, step) / unit
        lo = min(c, o) - rng.randint(0, step) / unit
        bars.append((i * 86_400, 0, o, h, lo, c, 1.0))
    return bars


def fills_from_signals(bars, signals):
    """(bar index, qty, price) of market orders placed at `signals`
    (bar index, qty), filled at the next bar's open."""
    return [(i + 1, qty, bars[i + 1][2]) for i, qty in signals if i + 1 < len(bars)]


# -- sma-cross ---------------------------------------------------------------


def sma_cross_reference(bars, fast, slow, size=1.0):
    """The rule with exact rational SMAs of the decimal closes."""
    closes = [Fraction(str(b[5])) for b in bars]
    signals, prev, held = [], None, 0.0
    for t in range(len(bars)):
        now = None
        if t + 1 >= slow:
            f = sum(closes[t + 1 - fast : t + 1]) / fast
            s = sum(closes[t + 1 - slow : t + 1]) / slow
            now = (f > s) - (f < s)
        if prev is not None and now is not None:
            if now > 0 >= prev and held == 0.0:
                signals.append((t, size))
                held = size
            elif now < 0 <= prev and held > 0.0:
                signals.append((t, -held))
                held = 0.0
        prev = now
    return signals


@pytest.mark.parametrize("seed, fast, slow, decimals", [(1, 2, 5, 1), (2, 10, 30, 2), (3, 1, 2, 0), (4, 5, 6, 1), (5, 3, 20, 4)])
def test_sma_cross_trades_match_the_exact_reference(seed, fast, slow, decimals):
    bars = walk(600, seed, decimals)
    host = run_strategy(example("sma_cross"), bars, params={"fast": fast, "slow": slow})
    want = sma_cross_reference(bars, fast, slow)
    assert [(o.bar_index, o.qty) for o in host.orders] == want
    assert host.trades() == fills_from_signals(bars, want)
    assert len(want) >= 4


def test_sma_cross_as_the_rust_unit_tests():
    cls = example("sma_cross")
    host = run_strategy(cls, [5.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 4.0, 3.0], params={"fast": 1, "slow": 2})
    assert [(o.bar_index, o.qty) for o in host.orders] == [(3, 1.0), (6, -1.0)]
    # A tie is not a cross: fast 0.2 == slow (0.3 + 0.1 + 0.2) / 3 exactly at bar 3.
    host = run_strategy(cls, [0.3, 0.3, 0.1, 0.2, 0.3], params={"fast": 1, "slow": 3})
    assert [o.bar_index for o in host.orders] == [4]
    with pytest.raises(RunStopped) as stop:
        run_strategy(cls, [1.0], params={"fast": 5, "slow": 5})
    assert stop.value.kind == INVALID_PARAMS and stop.value.message == "fast (5) must be less than slow (5)"


def test_sma_cross_trades_each_symbol_on_its_own():
    a, b = walk(300, 11, 1), walk(300, 12, 1)
    merged = sorted([bar for bar in a] + [(t, 1, o, h, lo, c, v) for (t, _s, o, h, lo, c, v) in b], key=lambda x: (x[0], x[1]))
    host = run_strategy(example("sma_cross"), merged, params={"fast": 3, "slow": 8})
    for symbol, bars in ((0, a), (1, b)):
        got = [(merged[o.bar_index][0], o.qty) for o in host.orders if o.symbol == symbol]
        want = [(bars[t][0], qty) for t, qty in sma_cross_reference(bars, 3, 8)]
        assert got == want and want


# -- bollinger-revert ----------------------------------------------------------


def bollinger_reference(bars, period, k, size=1.0):
    """The rule with bands from exact rational sums (population variance),
    checked only away from the bands' edges (see the test)."""
    closes = [Fraction(str(b[5])) for b in bars]
    signals, held, margins = [], 0.0, []
    for t in range(period - 1, len(bars)):
        window = closes[t + 1 - period : t + 1]
        mean = sum(window) / period
        var = sum((x - mean) ** 2 for x in window) / period
        lower = float(mean) - k * float(var) ** 0.5
        c = float(closes[t])
        margins.append(min(abs(c - lower), abs(c - float(mean))))
        if c < lower:
            if held == 0.0:
                signals.append((t, size))
                held = size
        elif c > float(mean) and held > 0.0:
            signals.append((t, -held))
            held = 0.0
    return signals, min(margins)


@pytest.mark.parametrize("seed, period, k", [(1, 20, 2.0), (2, 5, 1.0), (3, 10, 1.5)])
def test_bollinger_revert_trades_match_the_reference(seed, period, k):
    bars = walk(800, seed, 2)
    host = run_strategy(example("bollinger_revert"), bars, params={"period": period, "k": k})
    want, margin = bollinger_reference(bars, period, k)
    assert margin > 1e-9, "a close too near a band to compare with a float reference"
    assert [(o.bar_index, o.qty) for o in host.orders] == want and len(want) >= 4
    assert host.trades() == fills_from_signals(bars, want)


# -- donchian-breakout ---------------------------------------------------------


def donchian_reference(bars, entry, exit, size=1.0):
    signals, held = [], 0.0
    for t in range(max(entry, exit), len(bars)):
        c = bars[t][5]
        upper = max(b[3] for b in bars[t - entry : t])
        lower = min(b[4] for b in bars[t - exit : t])
        if c > upper:
            if held == 0.0:
                signals.append((t, size))
                held = size
        elif c < lower and held > 0.0:
            signals.append((t, -held))
            held = 0.0
    return signals


@pytest.mark.parametrize("seed, entry, exit", [(1, 20, 10), (2, 5, 5), (3, 10, 2), (4, 2, 1)])
def test_donchian_breakout_trades_match_the_reference(seed, entry, exit):
    bars = walk(800, seed, 2)
    host = run_strategy(example("donchian_breakout"), bars, params={"entry": entry, "exit": exit, "size": 2.5})
    want = donchian_reference(bars, entry, exit, 2.5)
    assert [(o.bar_index, o.qty) for o in host.orders] == want and len(want) >= 4
    assert host.trades() == fills_from_signals(bars, want)


def test_donchian_breakout_refuses_exit_above_entry():
    with pytest.raises(RunStopped) as stop:
        run_strategy(example("donchian_breakout"), [1.0], params={"entry": 5, "exit": 6})
    assert stop.value.message == "exit (6) must not exceed entry (5)"


def test_examples_run_through_the_runtime_as_in_the_sandbox():
    from palisade.testing import MockHost, resolve_params

    for module in EXAMPLES:
        path = REPO / "sdk-python" / "examples" / f"{module}.py"
        cls = example(module)
        host = MockHost(walk(400, 9, 2), params=resolve_params(cls))
        _runtime.run(path.name, path.read_text(), host)
        native = run_strategy(cls, walk(400, 9, 2))
        assert [(o.bar_index, o.qty) for o in host.orders] == [(o.bar_index, o.qty) for o in native.orders]


def test_the_wasm_section_reader(tmp_path):
    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def custom(name, body):
        payload = leb(len(name)) + name + body
        return b"\0" + leb(len(payload)) + payload

    manifest = {"abi": 2, "name": "x" * 200, "version": "1", "params": []}
    module = b"\0asm\x01\0\0\0" + custom(b"name", b"\0\0") + b"\x01\x04\x01\x60\0\0" + custom(b"palisade.manifest", json.dumps(manifest).encode())
    path = tmp_path / "m.wasm"
    path.write_bytes(module)
    assert wasm_manifest(path) == manifest
