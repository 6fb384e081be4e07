#!/usr/bin/env python3
"""One-minute OHLCV bars of one symbol for the whole-process benchmarks
(scripts/bench.sh): a seeded random walk of the log price, about 0.1 % per
bar, pulled weakly back towards 100 so a million bars stay in a realistic
range; prices with 4 decimals, unix-second timestamps. The same arguments
always give the same bytes (Python's random.Random(seed)).

Usage: gen_walk.py BARS SEED OUTPUT
"""

import math
import random
import sys


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bars, seed, output = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    price = 100.0
    t0 = 1_700_000_000
    with open(output, "w") as f:
        f.write("timestamp,open,high,low,close,volume\n")
        for i in range(bars):
            o = price
            step = 0.001 * (2 * rng.random() - 1) * 1.732 - 0.0005 * math.log(o / 100)
            c = round(max(o * math.exp(step), 0.01), 4)
            h = round(max(o, c) * (1 + 0.0005 * rng.random()), 4)
            lo = round(min(o, c) * (1 - 0.0005 * rng.random()), 4)
            v = round(1000 + 9000 * rng.random())
            f.write(f"{t0 + 60 * i},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{v}\n")
            price = c
    return 0


if __name__ == "__main__":
    sys.exit(main())
