"""bollinger-revert in Python: the Rust example `guest-examples/bollinger-revert`
rule for rule, with the same parameters, manifest and trades.

While flat, buy `size` at market when the close falls below the lower band
(exact SMA of `period` closes minus `k` population standard deviations);
while long, close the position when the close rises back above the middle
band.

Run it: palisade backtest sdk-python/examples/bollinger_revert.py --data bars.csv
"""

from palisade import Float, Int, Strategy
from palisade.indicators import Bollinger


class BollingerRevert(Strategy):
    """long-only mean reversion: buy below the lower Bollinger band, exit above the middle band"""

    name = "bollinger-revert"
    version = "0.1.0"
    warmup = "period"

    period = Int(20, min=2, max=1000, description="lookback of the bands in bars")
    k = Float(2, min=0.1, max=10, description="band width in standard deviations")
    size = Float(1, min=0.000001, max=1000000000, description="units bought on each entry")

    def init(self):
        self.bands = []  # one Bollinger per symbol

    def next(self, bar):
        s = bar.symbol
        while len(self.bands) <= s:
            self.bands.append(Bollinger(self.period, self.k))
        band = self.bands[s].update(bar.close)
        if band is None:
            return
        if bar.close < band.lower:
            if self.position(s) == 0.0:
                self.buy(self.size, s)
        elif bar.close > band.middle and self.position(s) > 0.0:
            self.close(s)
