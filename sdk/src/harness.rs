//! A native test harness: run a strategy with `cargo test`, without wasm and
//! without the runtime.
//!
//! [`MockHost`] delivers bars one at a time, fills market orders at the open
//! of the next bar of their symbol (no slippage, no commission), records every
//! order, log line and metric, and lets a test set parameters. Limit and stop
//! orders are recorded but never filled: to check fills precisely, run the
//! module with `palisade backtest`, whose engine is the reference.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use palisade_host_api::{error, order_kind, Bar, Fill};

use crate::host::Host;
use crate::strategy::{Strategy, StrategyError};

/// An order a strategy placed while running on a [`MockHost`].
#[derive(Clone, Debug, PartialEq)]
pub struct MockOrder {
    pub id: i64,
    /// Index (in the whole series) of the bar being handled when it was placed.
    pub bar_index: usize,
    pub ts: i64,
    pub symbol: i32,
    pub qty: f64,
    /// One of `palisade_host_api::order_kind`.
    pub kind: i32,
    pub price: f64,
    /// Filled at (bar index, price), for market orders that filled.
    pub filled: Option<(usize, f64)>,
}

/// An in-memory host for unit tests of strategy logic.
#[derive(Debug)]
pub struct MockHost {
    bars: Vec<Bar>,
    symbols: Vec<String>,
    params: BTreeMap<String, f64>,
    delivered: usize,
    /// `next_batch` has returned 0: the data ended.
    ended: bool,
    positions: Vec<f64>,
    cash: f64,
    last_close: Vec<f64>,
    fills: Vec<Fill>,
    rng: u64,
    /// Every order placed, in order.
    pub orders: Vec<MockOrder>,
    /// Every log line, with its level.
    pub logs: Vec<(i32, String)>,
    /// Last value of each metric.
    pub metrics: BTreeMap<String, f64>,
}

impl MockHost {
    /// A host over `bars` (of symbol 0 unless their `symbol` says otherwise),
    /// with 100,000 in cash.
    pub fn new(bars: Vec<Bar>) -> MockHost {
        let n_symbols = bars
            .iter()
            .map(|b| b.symbol.max(0) as usize + 1)
            .max()
            .unwrap_or(1);
        MockHost {
            bars,
            symbols: (0..n_symbols).map(|i| std::format!("S{i}")).collect(),
            params: BTreeMap::new(),
            delivered: 0,
            ended: false,
            positions: std::vec![0.0; n_symbols],
            cash: 100_000.0,
            last_close: std::vec![0.0; n_symbols],
            fills: Vec::new(),
            rng: 0,
            orders: Vec::new(),
            logs: Vec::new(),
            metrics: BTreeMap::new(),
        }
    }

    /// Daily bars of symbol 0 whose open, high, low and close all equal the
    /// given closes.
    pub fn from_closes(closes: &[f64]) -> MockHost {
        let bars = closes
            .iter()
            .enumerate()
            .map(|(i, &c)| Bar {
                ts: i as i64 * 86_400,
                open: c,
                high: c,
                low: c,
                close: c,
                volume: 1.0,
                ..Bar::default()
            })
            .collect();
        MockHost::new(bars)
    }

    /// Sets a parameter (as the host would after validating it).
    pub fn with_param(mut self, name: &str, value: f64) -> MockHost {
        self.params.insert(name.to_string(), value);
        self
    }

    /// Runs `S` over all the bars.
    pub fn run<S: Strategy>(&mut self) -> Result<(), StrategyError> {
        crate::strategy::run::<S>(self)
    }

    /// Signed quantity held in `symbol` now.
    pub fn position_of(&self, symbol: i32) -> f64 {
        self.positions.get(symbol as usize).copied().unwrap_or(0.0)
    }

    /// The bar being handled, if any.
    fn current(&self) -> Option<usize> {
        if self.ended {
            return None;
        }
        self.delivered.checked_sub(1)
    }

    fn fill_at_open(&mut self, bar_index: usize) {
        let bar = self.bars[bar_index];
        for order in &mut self.orders {
            let due = order.filled.is_none()
                && order.kind == order_kind::MARKET
                && order.symbol == bar.symbol
                && order.bar_index < bar_index;
            if due {
                order.filled = Some((bar_index, bar.open));
                self.positions[bar.symbol as usize] += order.qty;
                self.cash -= order.qty * bar.open;
                self.fills.push(Fill {
                    order_id: order.id,
                    ts: bar.ts,
                    symbol: bar.symbol,
                    reserved: 0,
                    qty: order.qty,
                    price: bar.open,
                    commission: 0.0,
                });
            }
        }
        self.last_close[bar.symbol as usize] = bar.close;
    }
}

impl Host for MockHost {
    fn next_batch(&mut self, buf: &mut [Bar]) -> usize {
        if self.delivered >= self.bars.len() || buf.is_empty() {
            self.ended = true;
            return 0;
        }
        let i = self.delivered;
        self.fill_at_open(i);
        buf[0] = self.bars[i];
        self.delivered += 1;
        1
    }

    fn order(&mut self, _bar: u32, symbol: i32, qty: f64, kind: i32, price: f64) -> i64 {
        let Some(current) = self.current() else {
            return i64::from(error::NO_BAR);
        };
        if !qty.is_finite() || qty == 0.0 || !(0..=2).contains(&kind) {
            return i64::from(error::BAD_ARGUMENT);
        }
        if symbol < 0 || symbol as usize >= self.positions.len() {
            return i64::from(error::UNKNOWN_SYMBOL);
        }
        let id = self.orders.len() as i64 + 1;
        self.orders.push(MockOrder {
            id,
            bar_index: current,
            ts: self.bars[current].ts,
            symbol,
            qty,
            kind,
            price,
            filled: None,
        });
        id
    }

    fn cancel(&mut self, _bar: u32, id: i64) -> i32 {
        match self.orders.iter().position(|o| o.id == id && o.filled.is_none()) {
            Some(i) => {
                self.orders.remove(i);
                0
            }
            None => error::UNKNOWN_ORDER,
        }
    }

    fn position(&mut self, _bar: u32, symbol: i32) -> f64 {
        self.positions.get(symbol as usize).copied().unwrap_or(f64::NAN)
    }

    fn cash(&mut self, _bar: u32) -> f64 {
        self.cash
    }

    fn equity(&mut self, _bar: u32) -> f64 {
        self.cash
            + self
                .positions
                .iter()
                .zip(&self.last_close)
                .map(|(p, c)| p * c)
                .sum::<f64>()
    }

    fn poll_fill(&mut self, _bar: u32) -> Option<Fill> {
        (!self.fills.is_empty()).then(|| self.fills.remove(0))
    }

    fn param(&mut self, name: &str) -> f64 {
        self.params.get(name).copied().unwrap_or(f64::NAN)
    }

    fn symbol_name(&mut self, symbol: i32, out: &mut [u8]) -> i32 {
        let Some(name) = usize::try_from(symbol).ok().and_then(|i| self.symbols.get(i)) else {
            return error::UNKNOWN_SYMBOL;
        };
        let n = name.len().min(out.len());
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        name.len() as i32
    }

    fn log(&mut self, level: i32, message: &str) {
        self.logs.push((level, message.to_string()));
    }

    fn random(&mut self) -> f64 {
        palisade_host_api::next_random(&mut self.rng)
    }

    fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ctx, Init};

    /// Buys on the first bar, sells on the third, remembers what it saw.
    struct Scripted {
        seen: usize,
        fills: Vec<Fill>,
    }

    impl Strategy for Scripted {
        fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
            if init.param("reject") == 1.0 {
                return Err(StrategyError::invalid_params("rejected on request"));
            }
            Ok(Scripted {
                seen: 0,
                fills: Vec::new(),
            })
        }
        fn on_bar(&mut self, ctx: &mut Ctx<'_>, _bar: &Bar) {
            match self.seen {
                0 => {
                    ctx.buy(0, 2.0).unwrap();
                }
                2 => {
                    assert_eq!(ctx.position(0), 2.0);
                    ctx.close_position(0).unwrap();
                }
                _ => {}
            }
            self.seen += 1;
        }
        fn on_fill(&mut self, _ctx: &mut Ctx<'_>, fill: &Fill) {
            self.fills.push(*fill);
        }
        fn finish(&mut self, ctx: &mut Ctx<'_>) {
            ctx.metric("seen", self.seen as f64);
            assert_eq!(ctx.buy(0, 1.0), Err(crate::OrderError::NoBar));
        }
    }

    #[test]
    fn market_orders_fill_at_next_open() {
        let mut host = MockHost::from_closes(&[10.0, 11.0, 12.0, 13.0, 14.0]);
        host.run::<Scripted>().unwrap();
        assert_eq!(host.orders.len(), 2);
        assert_eq!(host.orders[0].filled, Some((1, 11.0)));
        assert_eq!(host.orders[1].filled, Some((3, 13.0)));
        assert_eq!(host.position_of(0), 0.0);
        assert_eq!(host.metrics["seen"], 5.0);
        assert_eq!(host.cash(0), 100_000.0 + 2.0 * (13.0 - 11.0));
    }

    #[test]
    fn init_can_reject_parameters() {
        let mut host = MockHost::from_closes(&[1.0]).with_param("reject", 1.0);
        let err = host.run::<Scripted>().unwrap_err();
        assert_eq!(err, StrategyError::invalid_params("rejected on request"));
    }

    #[test]
    fn bad_orders_are_refused_not_panics() {
        let mut host = MockHost::from_closes(&[1.0, 2.0]);
        host.delivered = 1;
        let check = |host: &mut MockHost, symbol, qty, kind, want| {
            assert_eq!(
                host.order(0, symbol, qty, kind, 0.0),
                i64::from(want),
                "{symbol} {qty} {kind}"
            )
        };
        check(&mut host, 0, 0.0, 0, error::BAD_ARGUMENT);
        check(&mut host, 0, f64::NAN, 0, error::BAD_ARGUMENT);
        check(&mut host, 0, 1.0, 7, error::BAD_ARGUMENT);
        check(&mut host, 3, 1.0, 0, error::UNKNOWN_SYMBOL);
        assert_eq!(host.cancel(0, 99), error::UNKNOWN_ORDER);
    }
}
