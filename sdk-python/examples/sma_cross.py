"""sma-cross in Python: the Rust example `guest-examples/sma-cross` rule for
rule, with the same parameters, manifest and trades.

Per symbol, on every bar at which both averages of closes are defined now
and on the previous bar: the fast SMA *crosses above* the slow one when
fast > slow now and fast <= slow before; it *crosses below* when fast < slow
now and fast >= slow before. On a cross above while flat, buy `size` at
market; on a cross below while long, close the position at market. The SMAs
are exact (SmaPair compares integer sums), so a tie is a tie whatever the
rounding.

The host computes the pair for every symbol (`self.indicator`): each bar
carries `bar.cross`, the pair's crossing at that bar (1.0 above, -1.0
below, 0.0 none, NaN until two bars compare), exactly what pushing the
closes into a SmaPair in Python and comparing with the previous bar would
give, without running Python for it.

Run it: palisade backtest sdk-python/examples/sma_cross.py --data bars.csv
"""

from palisade import Float, Int, InvalidParams, Strategy
from palisade.indicators import SmaPair


class SmaCross(Strategy):
    """long-only SMA crossover: buy when the fast SMA of closes crosses above the slow one, close when it crosses below"""

    name = "sma-cross"
    version = "0.1.0"
    warmup = "slow"

    fast = Int(10, min=1, max=1000, description="fast SMA length in bars")
    slow = Int(30, min=2, max=5000, description="slow SMA length in bars")
    size = Float(1, min=0.000001, max=1000000000, description="units bought on each entry")

    def init(self):
        if self.fast >= self.slow:
            raise InvalidParams(f"fast ({self.fast}) must be less than slow ({self.slow})")
        self.indicator("cross", SmaPair(self.fast, self.slow), line="cross")

    def next(self, bar):
        cross = bar.cross
        if cross > 0:
            if self.position(bar.symbol) == 0.0:
                self.buy(self.size, bar.symbol)
        elif cross < 0:
            if self.position(bar.symbol) > 0.0:
                self.close(bar.symbol)
