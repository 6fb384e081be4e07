//! `sma-cross`: a long-only moving-average crossover, the reference strategy
//! of the examples (the Python cross-check in `tests/crosscheck` reproduces
//! it trade for trade).
//!
//! Rule, per symbol, on every bar at which both averages of closes are defined
//! now and on the previous bar: the fast SMA *crosses above* the slow one when
//! `fast > slow` now and `fast <= slow` before; it *crosses below* when
//! `fast < slow` now and `fast >= slow` before. On a cross above while flat,
//! buy `size` at market; on a cross below while long, close the position at
//! market. The SDK's SMA is exact, so a tie is a tie whatever the rounding.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::cmp::Ordering::{self, Equal, Greater, Less};

use palisade_sdk::indicators::SmaPair;
use palisade_sdk::{Bar, Ctx, Init, Strategy, StrategyError};

/// Per-symbol state.
struct Leg {
    /// Fast and slow SMAs of closes.
    smas: SmaPair,
    /// How fast compared with slow on the previous bar, once both were defined.
    prev: Option<Ordering>,
}

pub struct SmaCross {
    fast_len: usize,
    slow_len: usize,
    size: f64,
    legs: Vec<Leg>,
}

impl SmaCross {
    fn leg(&mut self, symbol: i32) -> &mut Leg {
        let i = symbol.max(0) as usize;
        while self.legs.len() <= i {
            self.legs.push(Leg {
                smas: SmaPair::new(self.fast_len, self.slow_len),
                prev: None,
            });
        }
        &mut self.legs[i]
    }
}

impl Strategy for SmaCross {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        let fast_len = init.param_usize("fast");
        let slow_len = init.param_usize("slow");
        if fast_len >= slow_len {
            return Err(StrategyError::invalid_params(format!(
                "fast ({fast_len}) must be less than slow ({slow_len})"
            )));
        }
        let mut strategy = SmaCross {
            fast_len,
            slow_len,
            size: init.param("size"),
            legs: Vec::new(),
        };
        strategy.leg(0);
        Ok(strategy)
    }

    #[inline]
    fn on_bar(&mut self, ctx: &mut Ctx<'_>, bar: &Bar) {
        let size = self.size;
        let leg = self.leg(bar.symbol);
        leg.smas.push(bar.close);
        // Exact comparison of the two averages: a tie is a tie.
        let now = leg.smas.compare();
        match (leg.prev, now) {
            (Some(Less | Equal), Some(Greater)) => {
                if ctx.position(bar.symbol) == 0.0 {
                    let _ = ctx.buy(bar.symbol, size);
                }
            }
            (Some(Greater | Equal), Some(Less)) => {
                if ctx.position(bar.symbol) > 0.0 {
                    let _ = ctx.close_position(bar.symbol);
                }
            }
            _ => {}
        }
        leg.prev = now;
    }
}

palisade_sdk::strategy! {
    strategy: SmaCross,
    name: "sma-cross",
    version: "0.1.0",
    description: "long-only SMA crossover: buy when the fast SMA of closes crosses above the slow one, close when it crosses below",
    warmup: "slow",
    params: {
        fast: int = 10, min = 1, max = 1000, doc = "fast SMA length in bars";
        slow: int = 30, min = 2, max = 5000, doc = "slow SMA length in bars";
        size: float = 1, min = 0.000001, max = 1000000000, doc = "units bought on each entry";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::harness::MockHost;

    fn run(closes: &[f64], fast: f64, slow: f64) -> MockHost {
        let mut host = MockHost::from_closes(closes)
            .with_param("fast", fast)
            .with_param("slow", slow)
            .with_param("size", 1.0);
        host.run::<SmaCross>().unwrap();
        host
    }

    #[test]
    fn buys_on_cross_above_and_sells_on_cross_below() {
        // fast(1) vs slow(2): rises, then falls.
        let host = run(&[5.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 4.0, 3.0], 1.0, 2.0);
        let sides: Vec<(usize, f64)> = host.orders.iter().map(|o| (o.bar_index, o.qty)).collect();
        assert_eq!(sides, [(3, 1.0), (6, -1.0)]);
    }

    #[test]
    fn a_tie_is_not_a_cross() {
        // Bar 2: fast 0.1 < slow; bar 3: fast 0.2 == slow (0.3+0.1+0.2)/3
        // exactly (a float running sum would say 0.20000000000000004); bar 4:
        // fast above. Only bar 4 crosses.
        let host = run(&[0.3, 0.3, 0.1, 0.2, 0.3], 1.0, 3.0);
        let at: Vec<usize> = host.orders.iter().map(|o| o.bar_index).collect();
        assert_eq!(at, [4]);
    }

    #[test]
    fn rejects_fast_not_below_slow() {
        let mut host = MockHost::from_closes(&[1.0])
            .with_param("fast", 5.0)
            .with_param("slow", 5.0);
        let err = host.run::<SmaCross>().unwrap_err();
        assert!(
            err.message.contains("fast (5) must be less than slow (5)"),
            "{err:?}"
        );
    }

    #[test]
    fn manifest_is_json_with_declared_params() {
        assert!(MANIFEST_JSON.starts_with("{\"abi\":2,\"name\":\"sma-cross\""));
        assert!(MANIFEST_JSON.contains("\"name\":\"fast\",\"type\":\"int\",\"default\":10"));
    }
}
