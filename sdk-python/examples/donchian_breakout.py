"""donchian-breakout in Python: the Rust example `guest-examples/donchian-breakout`
rule for rule, with the same parameters, manifest and trades (the "turtle"
rule).

While flat, buy `size` at market when the close exceeds the highest high of
the previous `entry` bars; while long, close the position when the close
falls below the lowest low of the previous `exit` bars.

Run it: palisade backtest sdk-python/examples/donchian_breakout.py --data bars.csv
"""

from palisade import Float, Int, InvalidParams, Strategy
from palisade.indicators import Donchian


class DonchianBreakout(Strategy):
    """long-only channel breakout: buy above the previous entry-bar high, exit below the previous exit-bar low"""

    name = "donchian-breakout"
    version = "0.1.0"
    warmup = "entry"

    entry = Int(20, min=2, max=1000, description="breakout lookback in bars")
    exit = Int(10, min=1, max=1000, description="exit lookback in bars")
    size = Float(1, min=0.000001, max=1000000000, description="units bought on each entry")

    def init(self):
        if self.exit > self.entry:
            raise InvalidParams(f"exit ({self.exit}) must not exceed entry ({self.entry})")
        # Per symbol: [entry channel, exit channel, their readings as of the
        # previous bar] (a breakout is measured against the previous bars).
        self.legs = []

    def next(self, bar):
        s = bar.symbol
        while len(self.legs) <= s:
            self.legs.append([Donchian(self.entry), Donchian(self.exit), None, None])
        leg = self.legs[s]
        entry, exit = leg[2], leg[3]
        if entry is not None and exit is not None:
            if bar.close > entry.upper:
                if self.position(s) == 0.0:
                    self.buy(self.size, s)
            elif bar.close < exit.lower and self.position(s) > 0.0:
                self.close(s)
        leg[2] = leg[0].update(bar.high, bar.low)
        leg[3] = leg[1].update(bar.high, bar.low)
