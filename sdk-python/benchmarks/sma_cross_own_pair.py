"""sma-cross with its SMA pair updated in Python by the strategy itself:
the rule and trades of `examples/sma_cross.py`, which declares the pair for
the host to compute instead. `scripts/bench.sh python` runs both, to show
what each costs a bar.

Per symbol, on every bar at which both averages of closes are defined now
and on the previous bar: buy `size` at market on a cross above while flat;
close on a cross below while long.
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
        # Per symbol (added as symbols appear): the two averages, and how
        # fast compared with slow on the previous bar (-1, 0, 1, or None
        # while not both defined).
        self.pairs = []
        self.prev = []

    def next(self, bar):
        s = bar.symbol
        try:
            pair = self.pairs[s]
        except IndexError:
            pair = self.add_symbols(s)
        now = pair.push_compare(bar.close)
        before = self.prev[s]
        self.prev[s] = now
        if before is None or now is None:
            return
        if now > 0 and before <= 0:
            if self.position(s) == 0.0:
                self.buy(self.size, s)
        elif now < 0 and before >= 0:
            if self.position(s) > 0.0:
                self.close(s)

    def add_symbols(self, s):
        """Averages for every symbol up to ``s``; returns symbol ``s``'s."""
        while len(self.pairs) <= s:
            self.pairs.append(SmaPair(self.fast, self.slow))
            self.prev.append(None)
        return self.pairs[s]
