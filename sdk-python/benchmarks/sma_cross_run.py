"""Bars per second of the Python sma-cross through `palisade._runtime.run`,
natively, over a host that costs almost nothing (its `next` is a list
iterator's `__next__`, positions change when an order is placed): what the
SDK's event loop and the strategy's own Python cost per bar (the SMA pair
the strategy declares is computed before the timer starts, as the sandbox's
host computes it in Rust). With
backtesting.py installed, also runs the same rule there over the same closes
(the rule of `tests/crosscheck/bt_peer.py`, with pandas rolling means).

Run it: python3 sdk-python/benchmarks/sma_cross_run.py [bars] [repeats]

Inside the sandbox (CPython for WASI, fuel metering) expect Python to run
several times slower than this; this figure is the native ceiling.
"""

import pathlib
import random
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palisade import _runtime, indicators  # noqa: E402


class FakeHost:
    """``specs``: the indicators the strategy declares (from an earlier
    run), whose values are packed with the bars before the timer starts, as
    the sandbox's host computes them in Rust."""

    def __init__(self, bars, specs=()):
        self.specs = list(specs)
        self.declared = 0
        updaters = [indicators.host_updater(*spec) for spec in self.specs]
        steps = [_runtime.pack_next([b], (), [tuple(u(b) for u in updaters)] if updaters else ()) for b in bars]
        steps.append(_runtime.pack_next([]))
        self.next = iter(steps).__next__
        self.pos = 0.0
        self.ids = 0

    def indicator(self, *spec):
        if self.declared == len(self.specs):
            self.specs.append(spec)
        self.declared += 1
        return self.declared - 1

    def symbol_count(self):
        return 1

    def param(self, name):
        return {"fast": 10.0, "slow": 30.0, "size": 1.0}[name]

    def order(self, symbol, qty, kind, price):
        self.ids += 1
        self.pos += qty
        return self.ids

    def position(self, symbol):
        return self.pos

    def cash(self):
        return 0.0

    def equity(self):
        return 0.0


def bars(n, seed=1):
    rng = random.Random(seed)
    ticks = 1_000_000
    out = []
    for i in range(n):
        ticks += rng.randint(-300, 300)
        c = ticks / 10_000
        out.append((i * 60, 0, c, c + 0.01, c - 0.01, c, 1.0))
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    source = (ROOT / "examples" / "sma_cross.py").read_text()
    data = bars(n)
    # A first run over no bar finds what the strategy declares.
    probe = FakeHost([])
    _runtime.run("sma_cross.py", source, probe)
    specs = probe.specs
    best = float("inf")
    for _ in range(repeats):
        host = FakeHost(data, specs)
        t0 = time.perf_counter()
        _runtime.run("sma_cross.py", source, host)
        best = min(best, time.perf_counter() - t0)
    print(f"palisade _runtime.run, sma-cross 10/30: {n} bars in {best * 1e3:.1f} ms = {n / best:,.0f} bars/s ({host.ids} orders)")
    try:
        import backtesting  # noqa: F401
    except ImportError:
        return
    import warnings

    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(values, k):
        return pd.Series(values).rolling(k).mean()

    class BtSmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self):
            if crossover(self.fast, self.slow) and not self.position:
                self.buy(size=1)
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    frame = pd.DataFrame(
        {"Open": [b[2] for b in data], "High": [b[3] for b in data], "Low": [b[4] for b in data], "Close": [b[5] for b in data], "Volume": [b[6] for b in data]},
        index=pd.date_range("2020-01-01", periods=n, freq="min"),
    )
    best_bt = float("inf")
    for _ in range(max(1, repeats // 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            Backtest(frame, BtSmaCross, cash=10_000_000, finalize_trades=True).run()
            best_bt = min(best_bt, time.perf_counter() - t0)
    print(f"backtesting.py {backtesting.__version__}, same rule: {n} bars in {best_bt * 1e3:.1f} ms = {n / best_bt:,.0f} bars/s")
    print(f"ratio (native, not in the sandbox): {best_bt / best:.1f}x")


if __name__ == "__main__":
    main()
