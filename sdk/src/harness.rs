//! A native test harness: run a strategy with `cargo test`, without wasm and
//! without the runtime.
//!
//! [`MockHost`] hands over bars one timestamp at a time (bars sharing a
//! timestamp together, as the runtime does), fills market orders at the open
//! of their symbol's first bar stamped after the order (no slippage, no
//! commission), records every order, log line and metric, and lets a test
//! set parameters; reading a parameter the test did not set panics, as the
//! runtime stops a run that reads an undeclared one. Limit and stop orders
//! are recorded but never filled: to check fills precisely, run the module
//! with `palisade backtest`, whose engine is the reference.

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
    /// Index (in the whole series) of the last bar of the timestamp being
    /// handled when it was placed.
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
    /// Bars handed over so far (those of the current timestamp included).
    delivered: usize,
    /// `next_bars` has returned 0: the data ended.
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

    /// The last bar of the timestamp being handled, if any.
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
                && order.ts < bar.ts;
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
    fn symbol_count(&mut self) -> usize {
        self.positions.len()
    }

    fn next_bars(&mut self, buf: &mut [Bar]) -> usize {
        let start = self.delivered;
        let Some(first) = self.bars.get(start) else {
            self.ended = true;
            return 0;
        };
        let ts = first.ts;
        let n = self.bars[start..].iter().take_while(|b| b.ts == ts).count();
        assert!(
            n <= buf.len(),
            "MockHost: {n} bars share timestamp {ts} but the buffer holds {}",
            buf.len()
        );
        for i in start..start + n {
            self.fill_at_open(i);
            buf[i - start] = self.bars[i];
        }
        self.delivered += n;
        n
    }

    fn order(&mut self, symbol: i32, qty: f64, kind: i32, price: f64) -> i64 {
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

    fn cancel(&mut self, id: i64) -> i32 {
        match self.orders.iter().position(|o| o.id == id && o.filled.is_none()) {
            Some(i) => {
                self.orders.remove(i);
                0
            }
            None => error::UNKNOWN_ORDER,
        }
    }

    fn position(&mut self, symbol: i32) -> f64 {
        self.positions.get(symbol as usize).copied().unwrap_or(f64::NAN)
    }

    fn cash(&mut self) -> f64 {
        self.cash
    }

    fn equity(&mut self) -> f64 {
        self.cash
            + self
                .positions
                .iter()
                .zip(&self.last_close)
                .map(|(p, c)| p * c)
                .sum::<f64>()
    }

    fn poll_fill(&mut self) -> Option<Fill> {
        (!self.fills.is_empty()).then(|| self.fills.remove(0))
    }

    fn param(&mut self, name: &str) -> f64 {
        match self.params.get(name) {
            Some(v) => *v,
            None => panic!(
                "MockHost: parameter {name:?} was not set (with_param); the runtime stops a run that reads an undeclared parameter (invalid_params)"
            ),
        }
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
        let mut host = MockHost::from_closes(&[10.0, 11.0, 12.0, 13.0, 14.0]).with_param("reject", 0.0);
        host.run::<Scripted>().unwrap();
        assert_eq!(host.orders.len(), 2);
        assert_eq!(host.orders[0].filled, Some((1, 11.0)));
        assert_eq!(host.orders[1].filled, Some((3, 13.0)));
        assert_eq!(host.position_of(0), 0.0);
        assert_eq!(host.metrics["seen"], 5.0);
        assert_eq!(host.cash(), 100_000.0 + 2.0 * (13.0 - 11.0));
    }

    #[test]
    #[should_panic(expected = "parameter \"reject\" was not set")]
    fn reading_an_unset_parameter_panics() {
        let mut host = MockHost::from_closes(&[1.0]);
        let _ = host.run::<Scripted>();
    }

    /// Records the bars of each timestamp as it gets them, and buys symbol 1
    /// while handling symbol 0's bar of the first timestamp.
    struct Pairs {
        seen: Vec<Vec<(i64, i32)>>,
    }

    impl Strategy for Pairs {
        fn init(_: &mut Init<'_>) -> Result<Self, StrategyError> {
            Ok(Pairs { seen: Vec::new() })
        }
        fn on_bar(&mut self, _: &mut Ctx<'_>, _: &Bar) {
            unreachable!("on_timestamp is overridden")
        }
        fn on_timestamp(&mut self, ctx: &mut Ctx<'_>, bars: &[Bar]) {
            if self.seen.is_empty() {
                ctx.buy(1, 1.0).unwrap();
            }
            self.seen.push(bars.iter().map(|b| (b.ts, b.symbol)).collect());
        }
        fn finish(&mut self, ctx: &mut Ctx<'_>) {
            let want: Vec<Vec<(i64, i32)>> = std::vec![
                std::vec![(0, 0), (0, 1)],
                std::vec![(1, 1)],
                std::vec![(2, 0), (2, 1)]
            ];
            ctx.metric("as_expected", f64::from(u8::from(self.seen == want)));
        }
    }

    #[test]
    fn bars_of_one_timestamp_come_together_and_orders_fill_after_it() {
        let bar = |ts: i64, symbol: i32, open: f64| Bar {
            ts,
            symbol,
            open,
            high: open,
            low: open,
            close: open,
            volume: 1.0,
            ..Bar::default()
        };
        let mut host = MockHost::new(std::vec![
            bar(0, 0, 10.0),
            bar(0, 1, 20.0),
            bar(1, 1, 21.0),
            bar(2, 0, 12.0),
            bar(2, 1, 22.0),
        ]);
        host.run::<Pairs>().unwrap();
        assert_eq!(
            host.metrics["as_expected"], 1.0,
            "timestamps were not handed over whole"
        );
        // Placed at ts 0 for symbol 1: not filled on symbol 1's bar at ts 0,
        // but on its next one (ts 1, open 21).
        assert_eq!(host.orders[0].filled, Some((2, 21.0)));
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
                host.order(symbol, qty, kind, 0.0),
                i64::from(want),
                "{symbol} {qty} {kind}"
            )
        };
        check(&mut host, 0, 0.0, 0, error::BAD_ARGUMENT);
        check(&mut host, 0, f64::NAN, 0, error::BAD_ARGUMENT);
        check(&mut host, 0, 1.0, 7, error::BAD_ARGUMENT);
        check(&mut host, 3, 1.0, 0, error::UNKNOWN_SYMBOL);
        assert_eq!(host.cancel(99), error::UNKNOWN_ORDER);
    }
}
