//! `lead-lag`: a two-symbol strategy. It watches symbol 0 (the leader) and
//! trades symbol 1 (the follower): when the leader closed higher than its
//! previous close, it buys `size` of the follower if it holds none; when the
//! leader closed lower, it sells what it holds; while an order waits for
//! its fill (the follower may miss timestamps) it places no other. Both
//! symbols' bars of a
//! timestamp are decided on together, and every order fills at the
//! follower's next open. The cross-check compares it with backtrader trade
//! for trade (`tests/crosscheck/pairs_check.py`).
#![no_std]

#[cfg(test)]
extern crate std;

use palisade_sdk::{Bar, Ctx, Fill, Init, Strategy, StrategyError};

pub struct LeadLag {
    size: f64,
    previous: Option<f64>,
    /// An order waits for its fill.
    pending: bool,
}

impl Strategy for LeadLag {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        Ok(LeadLag {
            size: init.param("size"),
            previous: None,
            pending: false,
        })
    }

    fn on_bar(&mut self, _ctx: &mut Ctx<'_>, _bar: &Bar) {}

    fn on_fill(&mut self, _ctx: &mut Ctx<'_>, _fill: &Fill) {
        self.pending = false;
    }

    fn on_timestamp(&mut self, ctx: &mut Ctx<'_>, bars: &[Bar]) {
        let Some(leader) = bars.iter().find(|b| b.symbol == 0) else {
            return;
        };
        if let (Some(previous), false) = (self.previous, self.pending) {
            let held = ctx.position(1);
            if leader.close > previous && held == 0.0 {
                self.pending = ctx.buy(1, self.size).is_ok();
            } else if leader.close < previous && held > 0.0 {
                self.pending = ctx.sell(1, held).is_ok();
            }
        }
        self.previous = Some(leader.close);
    }
}

palisade_sdk::strategy! {
    strategy: LeadLag,
    name: "lead-lag",
    version: "0.1.0",
    description: "buys the follower (symbol 1) when the leader (symbol 0) closed up, sells it when the leader closed down",
    params: {
        size: float = 1, min = 0.000001, max = 1000000000, doc = "units of the follower bought on each entry";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::harness::MockHost;

    fn bar(ts: i64, symbol: i32, close: f64) -> Bar {
        Bar {
            ts,
            symbol,
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
            ..Bar::default()
        }
    }

    #[test]
    fn buys_the_follower_when_the_leader_rises_and_sells_when_it_falls() {
        let mut host = MockHost::new(std::vec![
            bar(0, 0, 10.0),
            bar(0, 1, 50.0),
            bar(1, 0, 11.0),
            bar(1, 1, 51.0),
            bar(2, 0, 10.0),
            bar(2, 1, 52.0),
            bar(3, 0, 9.0),
            bar(3, 1, 53.0),
        ])
        .with_param("size", 2.0);
        host.run::<LeadLag>().unwrap();
        let orders: std::vec::Vec<(i64, i32, f64)> =
            host.orders.iter().map(|o| (o.ts, o.symbol, o.qty)).collect();
        assert_eq!(orders, [(1, 1, 2.0), (2, 1, -2.0)]);
        assert_eq!(
            host.orders[0].filled,
            Some((5, 52.0)),
            "fills at the follower's next open"
        );
    }
}
