//! The simulated broker: orders, fills, the portfolio (cash, positions,
//! realized and unrealized PnL), FIFO trade accounting and the equity curve.
//! The sandbox drives it event by event; [`Backtest::finish`] turns it into a
//! [`BacktestReport`].
//!
//! It knows nothing of wasm or of the guest protocol: the sandbox maps host
//! calls onto [`Backtest::advance_to`], [`Backtest::place_order`] and friends.
//!
//! # Fill model
//!
//! This is the product's contract; the tests in this module check each line.
//!
//! - Events are the dataset's bars in order (by timestamp, then symbol).
//!   Processing event `e` (a bar of symbol `s`) first tries to fill the
//!   pending orders of `s` at that bar's prices, in the order they were
//!   placed, then marks `s` at the bar's close.
//! - An order placed while handling timestamp `T` (any bar of it) may fill
//!   only on a bar of its symbol stamped after `T`: never on the bar that
//!   produced the signal, and never on another symbol's bar of the same
//!   timestamp, whose open lies before the closes the decision used.
//! - **Market**: fills at the bar's open, adjusted by slippage: a buy pays
//!   `open × (1 + slippage)`, a sell receives `open × (1 − slippage)`.
//! - **Limit** at price `L` (no slippage: the limit is the worst price
//!   accepted). Buy: if `open <= L` fills at the open (the bar gapped through
//!   the limit), else if `low <= L` fills at `L`. Sell: if `open >= L` fills at
//!   the open, else if `high >= L` fills at `L`.
//! - **Stop** at price `P`. Buy: if `open >= P` fills at the open, else if
//!   `high >= P` fills at `P`. Sell: if `open <= P` fills at the open, else if
//!   `low <= P` fills at `P`. Like a market order once triggered, a stop fill
//!   is adjusted by slippage as above.
//! - A limit or stop order that its bar does not reach stays pending (good till
//!   cancelled). Orders fill completely or not at all; volume is not checked.
//! - **Commission** per fill: `commission_per_fill + commission_rate × |qty| ×
//!   price` (price after slippage), deducted from cash.
//! - No margin model: cash may go negative, and short positions are allowed
//!   without limit.
//! - Orders still pending when the data ends are reported, never filled.
//!
//! # Accounting
//!
//! - `cash` changes only on fills: `cash −= qty × price + commission`.
//! - `equity = cash + Σ position × last close` (a symbol's last close is 0
//!   before its first bar).
//! - Trades use FIFO lots. A fill that opens or increases a position opens a
//!   lot; a fill that reduces it closes lots oldest first, each (partially)
//!   closed lot giving one [`Trade`] with `pnl = (exit − entry) × qty −
//!   commission`, where `commission` is the lot's share of its entry fill's
//!   commission plus its share of the exit fill's commission (pro rata by
//!   quantity). A fill that flips the sign closes every lot and opens a new
//!   one with the remainder.
//! - A quantity whose magnitude falls below [`QTY_EPSILON`] times the size of
//!   the fill (or position) that produced it is treated as exactly zero, so
//!   that `0.1 + 0.2 − 0.3` shares close a position.
//! - Equity-curve points: one per distinct timestamp, taken after every bar of
//!   that timestamp was processed (filled and marked).

use std::collections::VecDeque;
use std::sync::Arc;

use palisade_host_api::{error, order_kind, Bar, Fill};

/// Largest order quantity accepted, in magnitude (units of the symbol):
/// larger orders are refused ([`OrderError::BadArgument`]) rather than
/// turning cash and equity into infinities.
pub const MAX_ORDER_QTY: f64 = 1e15;

/// Largest limit or stop price accepted.
pub const MAX_ORDER_PRICE: f64 = 1e15;
use serde::{Deserialize, Serialize};

use crate::data::{DataError, Dataset};
use crate::records::{EquityPoint, Trade};
use crate::report::{BacktestReport, OpenPosition, OrderKindName, PendingOrder};
use crate::stats::{CurvePass, Stats, StatsInput};

/// Default starting cash.
pub const DEFAULT_INITIAL_CASH: f64 = 100_000.0;
/// Default annualization basis: trading days in a year, for daily bars.
pub const DEFAULT_PERIODS_PER_YEAR: f64 = 252.0;
/// Default bound on fills waiting to be delivered to the strategy.
pub const DEFAULT_MAX_PENDING_FILLS: usize = 4096;
/// Relative size below which a position or lot quantity counts as zero.
pub const QTY_EPSILON: f64 = 1e-12;

/// Settings of one backtest. Every field has a default, so a config file
/// names only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BacktestConfig {
    /// Starting cash; finite and > 0 (default [`DEFAULT_INITIAL_CASH`]).
    pub initial_cash: f64,
    /// Commission as a fraction of each fill's notional (default 0).
    pub commission_rate: f64,
    /// Fixed commission per fill (default 0).
    pub commission_per_fill: f64,
    /// Slippage as a fraction of the price for market and stop fills, in
    /// `[0, 1)` (default 0).
    pub slippage: f64,
    /// Equity-curve periods per year, used to annualize statistics; > 0
    /// (default [`DEFAULT_PERIODS_PER_YEAR`]).
    pub periods_per_year: f64,
    /// Most fills kept for the strategy to poll; older ones are dropped and
    /// counted (default [`DEFAULT_MAX_PENDING_FILLS`]).
    pub max_pending_fills: usize,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            initial_cash: DEFAULT_INITIAL_CASH,
            commission_rate: 0.0,
            commission_per_fill: 0.0,
            slippage: 0.0,
            periods_per_year: DEFAULT_PERIODS_PER_YEAR,
            max_pending_fills: DEFAULT_MAX_PENDING_FILLS,
        }
    }
}

/// A [`BacktestConfig`] field out of its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field} must be {expected}, got {value}")]
pub struct ConfigError {
    pub field: &'static str,
    pub expected: &'static str,
    pub value: f64,
}

impl BacktestConfig {
    /// Checks every field's range; [`Backtest::new`] assumes a valid config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const POSITIVE: &str = "finite and > 0";
        const NON_NEGATIVE: &str = "finite and >= 0";
        let check = |field, value: f64, expected, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    expected,
                    value,
                })
            }
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        let c = self;
        check("initial_cash", c.initial_cash, POSITIVE, positive(c.initial_cash))?;
        check(
            "commission_rate",
            c.commission_rate,
            "in [0, 1) (a fraction of each fill's value)",
            (0.0..1.0).contains(&c.commission_rate),
        )?;
        check(
            "commission_per_fill",
            c.commission_per_fill,
            NON_NEGATIVE,
            non_negative(c.commission_per_fill),
        )?;
        check(
            "slippage",
            c.slippage,
            "in [0, 1)",
            (0.0..1.0).contains(&c.slippage),
        )?;
        check(
            "periods_per_year",
            c.periods_per_year,
            POSITIVE,
            positive(c.periods_per_year),
        )
    }
}

/// What an order asks for (see the module's fill model).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OrderKind {
    Market,
    /// Limit price.
    Limit(f64),
    /// Stop (trigger) price.
    Stop(f64),
}

impl OrderKind {
    /// Decodes an ABI order kind ([`order_kind`]). `price` is ignored for
    /// market orders and must be finite and > 0 for limit and stop orders.
    /// `None` for an unknown kind or a bad price.
    pub fn from_abi(kind: i32, price: f64) -> Option<OrderKind> {
        let k = match kind {
            order_kind::MARKET => OrderKind::Market,
            order_kind::LIMIT => OrderKind::Limit(price),
            order_kind::STOP => OrderKind::Stop(price),
            _ => return None,
        };
        k.is_valid().then_some(k)
    }

    /// The limit or stop price.
    pub fn price(self) -> Option<f64> {
        match self {
            OrderKind::Market => None,
            OrderKind::Limit(p) | OrderKind::Stop(p) => Some(p),
        }
    }

    fn is_valid(self) -> bool {
        self.price()
            .is_none_or(|p| p.is_finite() && p > 0.0 && p <= MAX_ORDER_PRICE)
    }

    /// The kind without its price, as reports and live intents name it.
    pub fn name(self) -> OrderKindName {
        match self {
            OrderKind::Market => OrderKindName::Market,
            OrderKind::Limit(_) => OrderKindName::Limit,
            OrderKind::Stop(_) => OrderKindName::Stop,
        }
    }

    /// The fill price on `bar` for a buy (`qty > 0`) or sell, or `None` when
    /// the bar does not reach the order: the module's fill model, which the
    /// live crate's simulated venue also follows.
    #[inline]
    pub fn fill_price(self, buy: bool, bar: &Bar, slippage: f64) -> Option<f64> {
        let slipped = |p: f64| {
            if buy {
                p * (1.0 + slippage)
            } else {
                p * (1.0 - slippage)
            }
        };
        match self {
            OrderKind::Market => Some(slipped(bar.open)),
            OrderKind::Limit(limit) => {
                if buy {
                    if bar.open <= limit {
                        Some(bar.open)
                    } else if bar.low <= limit {
                        Some(limit)
                    } else {
                        None
                    }
                } else if bar.open >= limit {
                    Some(bar.open)
                } else if bar.high >= limit {
                    Some(limit)
                } else {
                    None
                }
            }
            OrderKind::Stop(stop) => {
                let trigger = if buy {
                    if bar.open >= stop {
                        Some(bar.open)
                    } else if bar.high >= stop {
                        Some(stop)
                    } else {
                        None
                    }
                } else if bar.open <= stop {
                    Some(bar.open)
                } else if bar.low <= stop {
                    Some(stop)
                } else {
                    None
                };
                trigger.map(slipped)
            }
        }
    }
}

/// Why an order or cancel was refused. [`OrderError::code`] is the ABI's
/// answer to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Zero, NaN or infinite quantity; a limit or stop price that is not
    /// finite and > 0; an unknown order kind.
    #[error("bad order argument")]
    BadArgument,
    #[error("unknown symbol")]
    UnknownSymbol,
    /// No pending order with that id (never placed, filled or cancelled).
    #[error("unknown order")]
    UnknownOrder,
    /// The event index is past the data: orders need a bar.
    #[error("no bar to place the order on")]
    NoBar,
}

impl OrderError {
    /// The ABI error code ([`error`]): `BAD_ARGUMENT` -1, `UNKNOWN_SYMBOL` -2,
    /// `UNKNOWN_ORDER` -3, `NO_BAR` -4.
    pub fn code(self) -> i32 {
        match self {
            OrderError::BadArgument => error::BAD_ARGUMENT,
            OrderError::UnknownSymbol => error::UNKNOWN_SYMBOL,
            OrderError::UnknownOrder => error::UNKNOWN_ORDER,
            OrderError::NoBar => error::NO_BAR,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Order {
    id: u64,
    at_event: usize,
    /// Timestamp of `at_event`: the order fills only on a later timestamp.
    placed_ts: i64,
    qty: f64,
    kind: OrderKind,
}

/// Per-symbol state touched on every bar: kept small and together.
#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    position: f64,
    last_close: f64,
    /// Bars of this symbol processed so far.
    bars_seen: u64,
}

#[derive(Clone, Copy, Debug)]
struct Lot {
    /// Signed remaining quantity.
    qty: f64,
    entry_price: f64,
    entry_ts: i64,
    /// The symbol's bar count when the lot was opened.
    entry_bar: u64,
    /// Remaining share of the entry fill's commission.
    commission: f64,
}

#[derive(Clone, Copy, Debug)]
struct ClosedTrade {
    symbol: u32,
    entry_ts: i64,
    exit_ts: i64,
    qty: f64,
    entry_price: f64,
    exit_price: f64,
    pnl: f64,
    commission: f64,
    bars_held: u64,
}

/// One backtest in progress over shared data.
pub struct Backtest {
    data: Arc<Dataset>,
    state: State,
}

/// Everything [`Backtest`] mutates, apart from the data it reads, so that the
/// event loop can borrow both at once.
struct State {
    config: BacktestConfig,
    processed: usize,
    cash: f64,
    /// Σ position × last close, updated incrementally.
    positions_value: f64,
    /// Symbols with a non-zero position.
    open_symbols: usize,
    marks: Vec<Mark>,
    /// Pending orders per symbol, in placement order.
    pending: Vec<Vec<Order>>,
    pending_count: usize,
    /// Symbol of each order ever placed, by `id − 1`.
    order_symbols: Vec<u32>,
    lots: Vec<VecDeque<Lot>>,
    trades: Vec<ClosedTrade>,
    realized_pnl: f64,
    commission_paid: f64,
    fill_queue: VecDeque<Fill>,
    /// Every fill, for a caller that asked ([`Backtest::keep_fills`]): a live
    /// deployment compares its paper fills with the venue's.
    journal: Option<Vec<Fill>>,
    fills: usize,
    dropped_fills: usize,
    last_ts: Option<i64>,
    /// The equity curve, stored once: the report hands it out as it is.
    curve: Vec<EquityPoint>,
    /// The statistics' pass over `curve`, fed as it grows.
    curve_pass: CurvePass,
    exposed_points: usize,
}

impl Backtest {
    /// Starts a backtest. `config` should have passed
    /// [`BacktestConfig::validate`].
    pub fn new(data: Arc<Dataset>, config: BacktestConfig) -> Backtest {
        let symbols = data.symbols().len();
        let points = data.timestamps();
        let initial_cash = config.initial_cash;
        let state = State {
            cash: config.initial_cash,
            fill_queue: VecDeque::with_capacity(config.max_pending_fills.min(256)),
            journal: None,
            config,
            processed: 0,
            positions_value: 0.0,
            open_symbols: 0,
            marks: vec![Mark::default(); symbols],
            pending: vec![Vec::new(); symbols],
            pending_count: 0,
            order_symbols: Vec::new(),
            lots: vec![VecDeque::new(); symbols],
            trades: Vec::new(),
            realized_pnl: 0.0,
            commission_paid: 0.0,
            fills: 0,
            dropped_fills: 0,
            last_ts: None,
            curve: Vec::with_capacity(points),
            curve_pass: CurvePass::new(initial_cash),
            exposed_points: 0,
        };
        Backtest { data, state }
    }

    /// The data this backtest replays.
    pub fn data(&self) -> &Arc<Dataset> {
        &self.data
    }

    /// The settings it runs with.
    pub fn config(&self) -> &BacktestConfig {
        &self.state.config
    }

    /// Number of bar events.
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the data has no events.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of events processed so far.
    #[inline]
    pub fn processed(&self) -> usize {
        self.state.processed
    }

    /// Processes every event up to and including `event` (clamped to the
    /// last one) that was not processed yet: fills the pending orders of the
    /// bar's symbol, then marks it at its close. Events already processed are
    /// not processed again, so a smaller `event` is a no-op.
    #[inline]
    pub fn advance_to(&mut self, event: usize) {
        let bars = self.data.bars();
        let end = event.saturating_add(1).min(bars.len());
        let state = &mut self.state;
        if end <= state.processed {
            return;
        }
        // The statistics' pass is a few dependency chains per equity point:
        // a local copy keeps them in registers for the whole loop.
        let mut pass = state.curve_pass.clone();
        for bar in &bars[state.processed..end] {
            state.step(bar, &mut pass);
        }
        state.curve_pass = pass;
        state.processed = end;
    }

    /// Places an order while handling event `at_event`; returns its id (ids
    /// start at 1 and increase by one per accepted order). The order may fill
    /// only on a bar of `symbol` stamped after `at_event`'s timestamp.
    /// Checks, in this order: `at_event` is an event of the data
    /// ([`OrderError::NoBar`]), `symbol` exists ([`OrderError::UnknownSymbol`]),
    /// `qty` is finite, non-zero and at most [`MAX_ORDER_QTY`] in magnitude,
    /// and the kind's price is finite, > 0 and at most [`MAX_ORDER_PRICE`]
    /// ([`OrderError::BadArgument`]).
    pub fn place_order(
        &mut self,
        at_event: usize,
        symbol: u32,
        qty: f64,
        kind: OrderKind,
    ) -> Result<u64, OrderError> {
        if at_event >= self.len() {
            return Err(OrderError::NoBar);
        }
        let state = &mut self.state;
        let slot = symbol as usize;
        if slot >= state.pending.len() {
            return Err(OrderError::UnknownSymbol);
        }
        if !qty.is_finite() || qty == 0.0 || qty.abs() > MAX_ORDER_QTY || !kind.is_valid() {
            return Err(OrderError::BadArgument);
        }
        let placed_ts = self.data.bars()[at_event].ts;
        let state = &mut self.state;
        state.order_symbols.push(symbol);
        let id = state.order_symbols.len() as u64;
        state.pending[slot].push(Order {
            id,
            at_event,
            placed_ts,
            qty,
            kind,
        });
        state.pending_count += 1;
        Ok(id)
    }

    /// Cancels a pending order.
    pub fn cancel(&mut self, id: u64) -> Result<(), OrderError> {
        let state = &mut self.state;
        let symbol = id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| state.order_symbols.get(i))
            .ok_or(OrderError::UnknownOrder)?;
        let orders = &mut state.pending[*symbol as usize];
        let index = orders
            .iter()
            .position(|o| o.id == id)
            .ok_or(OrderError::UnknownOrder)?;
        orders.remove(index);
        state.pending_count -= 1;
        Ok(())
    }

    /// Signed quantity held; `None` for an unknown symbol.
    pub fn position(&self, symbol: u32) -> Option<f64> {
        self.state.marks.get(symbol as usize).map(|m| m.position)
    }

    /// Current cash.
    pub fn cash(&self) -> f64 {
        self.state.cash
    }

    /// Cash plus every position marked at its symbol's last close.
    pub fn equity(&self) -> f64 {
        self.state.equity()
    }

    /// Number of orders waiting to fill.
    pub fn pending_orders(&self) -> usize {
        self.state.pending_count
    }

    /// Fills so far (delivered, queued or dropped).
    pub fn fills(&self) -> usize {
        self.state.fills
    }

    /// Realized PnL of the trades closed so far, commissions included.
    pub fn realized_pnl(&self) -> f64 {
        self.state.realized_pnl
    }

    /// The oldest fill not yet delivered. At most
    /// [`BacktestConfig::max_pending_fills`] are kept; when more arrive the
    /// oldest are dropped and counted in [`BacktestReport::dropped_fills`].
    pub fn pop_fill(&mut self) -> Option<Fill> {
        self.state.fill_queue.pop_front()
    }

    /// Keeps every fill from now on, for [`Backtest::take_fills`], besides
    /// the queue the strategy polls.
    pub fn keep_fills(&mut self) {
        self.state.journal.get_or_insert_with(Vec::new);
    }

    /// The fills kept since the last call (none unless
    /// [`Backtest::keep_fills`] was called).
    pub fn take_fills(&mut self) -> Vec<Fill> {
        self.state
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Appends the bars of a live feed to the data (see [`Dataset::push`]):
    /// the bars are checked against the last one, and copied only when
    /// another holder shares the data.
    pub fn extend(&mut self, bars: &[Bar]) -> Result<(), DataError> {
        Arc::make_mut(&mut self.data).push(bars)
    }

    /// Processes the remaining events, marks open positions at their last
    /// close and computes the report. Orders still pending are reported, not
    /// filled.
    pub fn finish(mut self) -> BacktestReport {
        if let Some(last) = self.len().checked_sub(1) {
            self.advance_to(last);
        }
        self.report()
    }

    /// The report of a run that stopped early (the strategy failed or was
    /// stopped): like [`Backtest::finish`] but processes no further event, so
    /// it covers the events processed so far (`bars` says how many), with
    /// positions marked at the last close seen.
    pub fn abort(self) -> BacktestReport {
        self.report()
    }

    fn report(self) -> BacktestReport {
        let data = self.data;
        let mut s = self.state;

        // Recompute the marked value exactly, so that the final equity does
        // not carry the rounding of the incremental updates.
        s.positions_value = s
            .marks
            .iter()
            .map(|m| m.position * m.last_close)
            .fold(0.0, |acc, v| acc + v);
        let final_equity = s.equity();
        if let Some(ts) = s.last_ts {
            let mut pass = s.curve_pass.clone();
            s.push_point(ts, &mut pass);
            s.curve_pass = pass;
        }

        let name = |symbol: usize| data.symbols()[symbol].clone();
        let trades: Vec<Trade> = s
            .trades
            .iter()
            .map(|t| Trade {
                symbol: name(t.symbol as usize),
                entry_ts: t.entry_ts,
                exit_ts: t.exit_ts,
                qty: t.qty,
                entry_price: t.entry_price,
                exit_price: t.exit_price,
                pnl: t.pnl,
                commission: t.commission,
                ret: t.pnl / (t.qty.abs() * t.entry_price),
                bars_held: t.bars_held,
            })
            .collect();

        let mut open_positions = Vec::new();
        let mut unrealized_pnl = 0.0;
        for (symbol, (lots, mark)) in s.lots.iter().zip(&s.marks).enumerate() {
            if lots.is_empty() && mark.position == 0.0 {
                continue;
            }
            let qty: f64 = lots.iter().map(|l| l.qty).sum();
            let cost: f64 = lots.iter().map(|l| l.qty * l.entry_price).sum();
            let unrealized: f64 = lots
                .iter()
                .map(|l| (mark.last_close - l.entry_price) * l.qty)
                .sum();
            unrealized_pnl += unrealized;
            open_positions.push(OpenPosition {
                symbol: name(symbol),
                qty: mark.position,
                avg_entry_price: if qty == 0.0 { 0.0 } else { cost / qty },
                entry_ts: lots.front().map(|l| l.entry_ts),
                last_close: mark.last_close,
                unrealized_pnl: unrealized,
                commission: lots.iter().map(|l| l.commission).sum(),
            });
        }

        let mut pending_orders: Vec<PendingOrder> = s
            .pending
            .iter()
            .enumerate()
            .flat_map(|(symbol, orders)| {
                let data = &data;
                orders.iter().map(move |o| PendingOrder {
                    id: o.id,
                    symbol: data.symbols()[symbol].clone(),
                    qty: o.qty,
                    kind: o.kind.name(),
                    price: o.kind.price(),
                    placed_ts: data.bars()[o.at_event].ts,
                })
            })
            .collect();
        pending_orders.sort_by_key(|o| o.id);

        let stats = Stats::complete(
            &s.curve_pass,
            &StatsInput {
                initial_cash: s.config.initial_cash,
                periods_per_year: s.config.periods_per_year,
                equity: &s.curve,
                exposed_points: s.exposed_points,
                trades: &trades,
                fills: s.fills,
            },
        );

        BacktestReport {
            bars: s.processed,
            symbols: data.symbols().to_vec(),
            stats,
            trades,
            open_positions,
            pending_orders,
            final_equity,
            initial_cash: s.config.initial_cash,
            realized_pnl: s.realized_pnl,
            unrealized_pnl,
            commission: s.commission_paid,
            fills: s.fills,
            dropped_fills: s.dropped_fills,
            equity_curve: s.curve,
        }
    }
}

impl State {
    #[inline]
    fn equity(&self) -> f64 {
        self.cash + self.positions_value
    }

    /// Processes one event: the per-bar hot path.
    #[inline(always)]
    fn step(&mut self, bar: &Bar, pass: &mut CurvePass) {
        if self.last_ts != Some(bar.ts) {
            if let Some(ts) = self.last_ts {
                self.push_point(ts, pass);
            }
            self.last_ts = Some(bar.ts);
        }
        let symbol = bar.symbol as usize;
        if self.pending_count != 0 && !self.pending[symbol].is_empty() {
            self.fill_pending(bar);
        }
        let mark = &mut self.marks[symbol];
        self.positions_value += mark.position * (bar.close - mark.last_close);
        mark.last_close = bar.close;
        mark.bars_seen += 1;
    }

    #[inline]
    fn push_point(&mut self, ts: i64, pass: &mut CurvePass) {
        let equity = self.equity();
        self.curve.push(EquityPoint { ts, equity });
        pass.push(equity);
        self.exposed_points += usize::from(self.open_symbols != 0);
    }

    /// Fills what it can of the pending orders of `bar`'s symbol.
    #[inline(never)]
    fn fill_pending(&mut self, bar: &Bar) {
        let symbol = bar.symbol as usize;
        let mut orders = std::mem::take(&mut self.pending[symbol]);
        let slippage = self.config.slippage;
        orders.retain(|order| {
            if bar.ts <= order.placed_ts {
                return true;
            }
            match order.kind.fill_price(order.qty > 0.0, bar, slippage) {
                Some(price) => {
                    self.execute(order, bar, price);
                    false
                }
                None => true,
            }
        });
        self.pending[symbol] = orders;
    }

    fn execute(&mut self, order: &Order, bar: &Bar, price: f64) {
        let qty = order.qty;
        let symbol = bar.symbol as usize;
        let commission = self.config.commission_per_fill + self.config.commission_rate * qty.abs() * price;
        self.cash -= qty * price + commission;
        self.commission_paid += commission;
        self.pending_count -= 1;
        self.fills += 1;

        let mark = &mut self.marks[symbol];
        let old = mark.position;
        let mut new = old + qty;
        if new.abs() <= QTY_EPSILON * old.abs().max(qty.abs()) {
            new = 0.0;
        }
        mark.position = new;
        self.positions_value += (new - old) * mark.last_close;
        let bar_no = mark.bars_seen;
        match (old == 0.0, new == 0.0) {
            (true, false) => self.open_symbols += 1,
            (false, true) => {
                self.open_symbols -= 1;
                if self.open_symbols == 0 {
                    // Nothing is held: drop the rounding the incremental
                    // updates accumulated.
                    self.positions_value = 0.0;
                }
            }
            _ => {}
        }

        self.book(symbol, qty, price, commission, bar.ts, bar_no);

        let fill = Fill {
            order_id: order.id as i64,
            ts: bar.ts,
            symbol: bar.symbol,
            reserved: 0,
            qty,
            price,
            commission,
        };
        if let Some(journal) = &mut self.journal {
            journal.push(fill);
        }
        let max = self.config.max_pending_fills;
        if self.fill_queue.len() >= max {
            self.dropped_fills += 1;
            if max == 0 {
                return;
            }
            self.fill_queue.pop_front();
        }
        self.fill_queue.push_back(fill);
    }

    /// FIFO lot accounting for one fill.
    fn book(&mut self, symbol: usize, qty: f64, price: f64, commission: f64, ts: i64, bar_no: u64) {
        let lots = &mut self.lots[symbol];
        let fill_abs = qty.abs();
        let mut rest = qty;
        while let Some(lot) = lots.front_mut() {
            if rest == 0.0 || (lot.qty > 0.0) == (rest > 0.0) {
                break;
            }
            let lot_abs = lot.qty.abs();
            let rest_abs = rest.abs();
            let whole = rest_abs >= lot_abs * (1.0 - QTY_EPSILON);
            let closed_abs = if whole { lot_abs } else { rest_abs };
            let closed = closed_abs.copysign(lot.qty);
            let entry_commission = if whole {
                lot.commission
            } else {
                lot.commission * (closed_abs / lot_abs)
            };
            let exit_commission = commission * (closed_abs / fill_abs);
            let trade_commission = entry_commission + exit_commission;
            let pnl = (price - lot.entry_price) * closed - trade_commission;
            self.trades.push(ClosedTrade {
                symbol: symbol as u32,
                entry_ts: lot.entry_ts,
                exit_ts: ts,
                qty: closed,
                entry_price: lot.entry_price,
                exit_price: price,
                pnl,
                commission: trade_commission,
                bars_held: bar_no - lot.entry_bar,
            });
            self.realized_pnl += pnl;
            if whole {
                lots.pop_front();
                rest += closed;
                if rest.abs() <= QTY_EPSILON * fill_abs {
                    rest = 0.0;
                }
            } else {
                lot.qty -= closed;
                lot.commission -= entry_commission;
                rest = 0.0;
            }
        }
        if rest != 0.0 {
            lots.push_back(Lot {
                qty: rest,
                entry_price: price,
                entry_ts: ts,
                entry_bar: bar_no,
                commission: commission * (rest.abs() / fill_abs),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: u32 = 0;

    /// A bar of symbol 0 at `ts` with these prices.
    fn ohlc(ts: i64, open: f64, high: f64, low: f64, close: f64) -> Bar {
        Bar {
            ts,
            symbol: 0,
            reserved: 0,
            open,
            high,
            low,
            close,
            volume: 1.0,
        }
    }

    /// One symbol `X` whose bars all trade at exactly the given prices.
    fn flat(closes: &[f64]) -> Arc<Dataset> {
        let bars = closes
            .iter()
            .enumerate()
            .map(|(i, &c)| ohlc(i as i64, c, c, c, c))
            .collect();
        Arc::new(Dataset::from_bars(vec!["X".into()], bars).unwrap())
    }

    fn config() -> BacktestConfig {
        BacktestConfig {
            initial_cash: 10_000.0,
            ..BacktestConfig::default()
        }
    }

    /// Places each `(at_event, symbol, qty, kind)` after advancing to its
    /// event, then finishes.
    fn run(
        data: &Arc<Dataset>,
        config: BacktestConfig,
        orders: &[(usize, u32, f64, OrderKind)],
    ) -> BacktestReport {
        let mut bt = Backtest::new(Arc::clone(data), config);
        for &(at, symbol, qty, kind) in orders {
            bt.advance_to(at);
            bt.place_order(at, symbol, qty, kind).unwrap();
        }
        bt.finish()
    }

    /// Places one order on a signal bar (close 100) and checks its fill price
    /// on the next bar `(open, high, low, close)`, or that it stays pending.
    #[track_caller]
    fn check_fill(slippage: f64, qty: f64, kind: OrderKind, next: [f64; 4], want: Option<f64>) {
        let [o, h, l, c] = next;
        let bars = vec![ohlc(0, 100.0, 100.0, 100.0, 100.0), ohlc(1, o, h, l, c)];
        let data = Arc::new(Dataset::from_bars(vec!["X".into()], bars).unwrap());
        let config = BacktestConfig { slippage, ..config() };
        let mut bt = Backtest::new(data, config);
        bt.advance_to(0);
        let id = bt.place_order(0, X, qty, kind).unwrap();
        bt.advance_to(1);
        let got = bt.pop_fill();
        let case = format!("{qty} {kind:?} slippage {slippage} on {next:?}");
        match want {
            Some(price) => {
                let fill = got.unwrap_or_else(|| panic!("{case}: no fill, want {price}"));
                assert_eq!(fill.price, price, "{case}");
                assert_eq!((fill.order_id, fill.ts, fill.qty), (id as i64, 1, qty), "{case}");
                assert_eq!(bt.position(X), Some(qty), "{case}");
                assert_eq!(bt.pending_orders(), 0, "{case}");
            }
            None => {
                assert_eq!(got, None, "{case}");
                assert_eq!(bt.position(X), Some(0.0), "{case}");
                assert_eq!(bt.pending_orders(), 1, "{case}");
                let report = bt.finish();
                assert_eq!(report.pending_orders.len(), 1, "{case}");
                assert_eq!(report.pending_orders[0].id, id, "{case}");
            }
        }
    }

    #[test]
    fn market_fills() {
        let bar = [100.0, 110.0, 90.0, 105.0];
        check_fill(0.0, 10.0, OrderKind::Market, bar, Some(100.0));
        check_fill(0.0, -10.0, OrderKind::Market, bar, Some(100.0));
        check_fill(0.01, 10.0, OrderKind::Market, bar, Some(100.0 * 1.01));
        check_fill(0.01, -10.0, OrderKind::Market, bar, Some(100.0 * 0.99));
        check_fill(0.0, 10.0, OrderKind::Market, [97.0, 98.0, 96.0, 97.0], Some(97.0));
    }

    #[test]
    fn limit_fills() {
        let bar = [100.0, 103.0, 96.0, 101.0];
        // Buy: touched inside the bar, gapped through at the open, never reached.
        check_fill(0.0, 5.0, OrderKind::Limit(97.0), bar, Some(97.0));
        check_fill(0.0, 5.0, OrderKind::Limit(96.0), bar, Some(96.0));
        check_fill(0.0, 5.0, OrderKind::Limit(105.0), bar, Some(100.0));
        check_fill(0.0, 5.0, OrderKind::Limit(100.0), bar, Some(100.0));
        check_fill(0.0, 5.0, OrderKind::Limit(95.99), bar, None);
        // Sell: the mirror image.
        check_fill(0.0, -5.0, OrderKind::Limit(102.0), bar, Some(102.0));
        check_fill(0.0, -5.0, OrderKind::Limit(103.0), bar, Some(103.0));
        check_fill(0.0, -5.0, OrderKind::Limit(90.0), bar, Some(100.0));
        check_fill(0.0, -5.0, OrderKind::Limit(103.01), bar, None);
        // No slippage on limit fills.
        check_fill(0.05, 5.0, OrderKind::Limit(97.0), bar, Some(97.0));
        check_fill(0.05, -5.0, OrderKind::Limit(90.0), bar, Some(100.0));
    }

    #[test]
    fn stop_fills() {
        let bar = [100.0, 103.0, 96.0, 101.0];
        // Buy stop: triggered inside the bar, gapped through, never reached.
        check_fill(0.0, 5.0, OrderKind::Stop(102.0), bar, Some(102.0));
        check_fill(0.0, 5.0, OrderKind::Stop(103.0), bar, Some(103.0));
        check_fill(0.0, 5.0, OrderKind::Stop(95.0), bar, Some(100.0));
        check_fill(0.0, 5.0, OrderKind::Stop(103.5), bar, None);
        // Sell stop.
        check_fill(0.0, -5.0, OrderKind::Stop(97.0), bar, Some(97.0));
        check_fill(0.0, -5.0, OrderKind::Stop(110.0), bar, Some(100.0));
        check_fill(0.0, -5.0, OrderKind::Stop(95.5), bar, None);
        // Slippage applies to stop fills, against the trader.
        check_fill(0.01, 5.0, OrderKind::Stop(102.0), bar, Some(102.0 * 1.01));
        check_fill(0.01, -5.0, OrderKind::Stop(110.0), bar, Some(100.0 * 0.99));
    }

    #[test]
    fn limit_waits_until_touched() {
        // Good till cancelled: fills on the first later bar that reaches it.
        let data = flat(&[100.0, 99.0, 98.0, 94.0, 93.0]);
        let report = run(&data, config(), &[(0, X, 1.0, OrderKind::Limit(95.0))]);
        assert_eq!(report.fills, 1);
        assert_eq!(report.open_positions[0].avg_entry_price, 94.0);
        assert_eq!(report.open_positions[0].entry_ts, Some(3));
        assert!(report.pending_orders.is_empty());
    }

    #[test]
    fn never_fills_on_its_own_bar() {
        let data = flat(&[100.0, 101.0]);
        let mut bt = Backtest::new(Arc::clone(&data), config());
        // Placed on event 0 before event 0 was processed: still only event 1.
        bt.place_order(0, X, 1.0, OrderKind::Market).unwrap();
        bt.advance_to(0);
        assert_eq!(bt.pop_fill(), None);
        bt.advance_to(1);
        assert_eq!(bt.pop_fill().map(|f| (f.ts, f.price)), Some((1, 101.0)));
        // Placed on the last bar: never fills, reported pending.
        bt.place_order(1, X, -1.0, OrderKind::Market).unwrap();
        let report = bt.finish();
        assert_eq!(report.fills, 1);
        assert_eq!(report.pending_orders.len(), 1);
        let pending = serde_json::to_string(&report.pending_orders[0]).unwrap();
        assert_eq!(
            pending,
            r#"{"id":2,"symbol":"X","qty":-1.0,"kind":"market","placed_ts":1}"#
        );
    }

    #[test]
    fn commission_and_cash() {
        let data = flat(&[100.0, 100.0, 110.0, 120.0]);
        let config = BacktestConfig {
            commission_rate: 0.001,
            commission_per_fill: 1.0,
            slippage: 0.01,
            ..config()
        };
        let mut bt = Backtest::new(data, config);
        bt.advance_to(0);
        bt.place_order(0, X, 10.0, OrderKind::Market).unwrap();
        bt.advance_to(1);
        // Buy 10 at 100 × 1.01 = 101: notional 1010, commission 1 + 1.01.
        let fill = bt.pop_fill().unwrap();
        assert_eq!(fill.price, 101.0);
        assert!((fill.commission - 2.01).abs() < 1e-12, "{fill:?}");
        assert!((bt.cash() - (10_000.0 - 1010.0 - 2.01)).abs() < 1e-9);
        // Marked at the close of 100.
        assert!((bt.equity() - (bt.cash() + 1000.0)).abs() < 1e-9);
        bt.advance_to(2);
        assert!((bt.equity() - (bt.cash() + 1100.0)).abs() < 1e-9);
        bt.place_order(2, X, -10.0, OrderKind::Market).unwrap();
        let report = bt.finish();
        // Sell 10 at 120 × 0.99 = 118.8: commission 1 + 1.188.
        let t = &report.trades[0];
        assert!((t.exit_price - 118.8).abs() < 1e-12);
        assert!((t.commission - (2.01 + 2.188)).abs() < 1e-12);
        assert!((t.pnl - (178.0 - 4.198)).abs() < 1e-9, "{t:?}");
        assert!((report.final_equity - (10_000.0 + t.pnl)).abs() < 1e-9);
        assert!((report.commission - 4.198).abs() < 1e-12);
        assert_eq!(report.realized_pnl, t.pnl);
    }

    /// `(qty, entry_price, exit_price, pnl, commission)` of each trade.
    fn trades(report: &BacktestReport) -> Vec<(f64, f64, f64, f64, f64)> {
        report
            .trades
            .iter()
            .map(|t| (t.qty, t.entry_price, t.exit_price, t.pnl, t.commission))
            .collect()
    }

    #[test]
    fn fifo_partial_closes_and_flip() {
        // Events: 0 signal, fills at opens of 1 (100), 2 (110), 3 (120), 4 (100).
        let data = flat(&[90.0, 100.0, 110.0, 120.0, 100.0, 95.0]);
        let config = BacktestConfig {
            commission_per_fill: 2.0,
            ..config()
        };
        let report = run(
            &data,
            config,
            &[
                (0, X, 10.0, OrderKind::Market),  // long 10 @ 100
                (1, X, 10.0, OrderKind::Market),  // long 20: lots 10 @ 100, 10 @ 110
                (2, X, -15.0, OrderKind::Market), // close 10 @ 100 and 5 of 110, at 120
                (3, X, -10.0, OrderKind::Market), // close 5 @ 110 at 100, open short 5 @ 100
            ],
        );
        // Commission shares: lot 1 pays all its entry 2, plus 10/15 of 2;
        // lot 2's closed half pays 1 of its entry 2, plus 5/15 of 2; the flip
        // fill's 2 splits 1 to the closed 5 and 1 to the new short lot.
        let c1 = 2.0 + 2.0 * 10.0 / 15.0;
        let c2 = 1.0 + 2.0 * 5.0 / 15.0;
        let c3 = 1.0 + 1.0;
        let want = [
            (10.0, 100.0, 120.0, 200.0 - c1, c1),
            (5.0, 110.0, 120.0, 50.0 - c2, c2),
            (5.0, 110.0, 100.0, -50.0 - c3, c3),
        ];
        let got = trades(&report);
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2));
            assert!(
                (g.3 - w.3).abs() < 1e-9 && (g.4 - w.4).abs() < 1e-12,
                "{g:?} vs {w:?}"
            );
        }
        let t = &report.trades;
        assert_eq!((t[0].entry_ts, t[0].exit_ts, t[0].bars_held), (1, 3, 2));
        assert_eq!((t[2].entry_ts, t[2].exit_ts, t[2].bars_held), (2, 4, 2));
        assert!((t[0].ret - (200.0 - c1) / 1000.0).abs() < 1e-12);

        // The short remainder is open, marked at the last close 95.
        assert_eq!(report.open_positions.len(), 1);
        let open = &report.open_positions[0];
        assert_eq!(
            (open.qty, open.avg_entry_price, open.last_close),
            (-5.0, 100.0, 95.0)
        );
        assert_eq!(open.unrealized_pnl, 25.0);
        assert_eq!(open.commission, 1.0);
        assert_eq!(report.unrealized_pnl, 25.0);
        // Accounting identity: every cent is either realized, unrealized or
        // an open lot's entry commission.
        let identity = report.initial_cash + report.realized_pnl + report.unrealized_pnl - open.commission;
        assert!((report.final_equity - identity).abs() < 1e-9);
        assert!((report.commission - 8.0).abs() < 1e-12);
    }

    #[test]
    fn short_trade_and_exact_close() {
        let data = flat(&[100.0, 100.0, 80.0, 80.0]);
        let report = run(
            &data,
            config(),
            &[
                (0, X, -0.1, OrderKind::Market),
                (0, X, -0.2, OrderKind::Market),
                (1, X, 0.3, OrderKind::Market),
            ],
        );
        // 0.1 + 0.2 − 0.3 is not 0 in floating point, but the position closes.
        assert!(report.open_positions.is_empty(), "{:?}", report.open_positions);
        assert_eq!(report.trades.len(), 2);
        assert!(report.trades.iter().all(|t| t.qty < 0.0 && t.pnl > 0.0));
        assert!((report.realized_pnl - 6.0).abs() < 1e-12);
        assert!((report.final_equity - 10_006.0).abs() < 1e-9);
        assert_eq!(report.stats.win_rate, Some(1.0));
    }

    #[test]
    fn end_of_data_marks_open_positions() {
        let data = flat(&[50.0, 50.0, 55.0, 60.0]);
        let report = run(&data, config(), &[(0, X, 100.0, OrderKind::Market)]);
        assert!(report.trades.is_empty());
        assert_eq!(report.final_equity, 10_000.0 + 100.0 * 10.0);
        let curve: Vec<(i64, f64)> = report.equity_curve.iter().map(|p| (p.ts, p.equity)).collect();
        assert_eq!(
            curve,
            [(0, 10_000.0), (1, 10_000.0), (2, 10_500.0), (3, 11_000.0)]
        );
        assert!((report.stats.total_return - 0.1).abs() < 1e-15);
        // Exposed at 3 of 4 points.
        assert_eq!(report.stats.exposure, Some(0.75));
        assert_eq!(report.stats.trade_count, 0);
        assert_eq!(report.bars, 4);
    }

    #[test]
    fn abort_reports_what_was_processed() {
        let data = flat(&[50.0, 50.0, 55.0, 60.0]);
        let mut bt = Backtest::new(data, config());
        bt.advance_to(0);
        bt.place_order(0, X, 10.0, OrderKind::Market).unwrap();
        bt.place_order(0, X, 10.0, OrderKind::Limit(1.0)).unwrap();
        bt.advance_to(2);
        let report = bt.abort();
        assert_eq!(report.bars, 3);
        assert_eq!(report.equity_curve.len(), 3);
        assert_eq!(report.final_equity, 10_050.0);
        assert_eq!(report.open_positions[0].last_close, 55.0);
        assert_eq!(report.pending_orders.len(), 1);
    }

    fn two_symbols() -> Arc<Dataset> {
        let bar = |ts, symbol, price| Bar {
            symbol,
            ..ohlc(ts, price, price, price, price)
        };
        let bars = vec![
            bar(1, 0, 10.0),
            bar(1, 1, 200.0),
            bar(2, 0, 11.0),
            bar(3, 0, 12.0),
            bar(3, 1, 210.0),
            bar(4, 1, 220.0),
        ];
        Arc::new(Dataset::from_bars(vec!["A".into(), "B".into()], bars).unwrap())
    }

    #[test]
    fn multi_symbol_fills_on_next_bar_of_its_symbol() {
        let data = two_symbols();
        let mut bt = Backtest::new(Arc::clone(&data), config());
        bt.advance_to(0);
        // Placed while handling A's bar at ts 1 (event 0): B's bar of the same
        // timestamp (event 1) opened before the close the decision used, so
        // the order waits for B's next bar (ts 3, event 4).
        bt.place_order(0, 1, 1.0, OrderKind::Market).unwrap();
        bt.advance_to(2);
        assert_eq!(bt.pop_fill(), None, "filled on a bar of its own timestamp");
        // Placed at event 2 (A, ts 2): B's next bar is event 4 too.
        bt.place_order(2, 1, 1.0, OrderKind::Market).unwrap();
        bt.advance_to(3);
        assert_eq!(bt.pop_fill(), None);
        bt.advance_to(4);
        for _ in 0..2 {
            let fill = bt.pop_fill().unwrap();
            assert_eq!((fill.symbol, fill.ts, fill.price), (1, 3, 210.0));
        }
        assert_eq!(bt.position(1), Some(2.0));
        assert_eq!(bt.position(0), Some(0.0));
        assert_eq!(bt.position(2), None);
        let report = bt.finish();
        // One point per timestamp: 1, 2, 3, 4.
        let curve: Vec<(i64, f64)> = report.equity_curve.iter().map(|p| (p.ts, p.equity)).collect();
        assert_eq!(
            curve,
            [(1, 10_000.0), (2, 10_000.0), (3, 10_000.0), (4, 10_020.0)]
        );
        assert_eq!(report.symbols, ["A", "B"]);
        assert_eq!(report.open_positions[0].symbol, "B");
    }

    #[test]
    fn order_before_a_symbols_first_bar() {
        // B has no bar before event 1; its last close counts as 0 until then.
        let bar = |ts, symbol, price| Bar {
            symbol,
            ..ohlc(ts, price, price, price, price)
        };
        let bars = vec![bar(1, 0, 10.0), bar(2, 1, 50.0), bar(3, 1, 60.0)];
        let data = Arc::new(Dataset::from_bars(vec!["A".into(), "B".into()], bars).unwrap());
        let mut bt = Backtest::new(data, config());
        bt.advance_to(0);
        bt.place_order(0, 1, 2.0, OrderKind::Market).unwrap();
        bt.advance_to(1);
        assert_eq!(bt.cash(), 9_900.0);
        assert_eq!(bt.equity(), 10_000.0);
        bt.advance_to(2);
        assert_eq!(bt.equity(), 10_020.0);
    }

    #[test]
    fn order_errors() {
        let data = flat(&[100.0, 101.0, 102.0]);
        let mut bt = Backtest::new(data, config());
        let cases: &[(usize, u32, f64, OrderKind, OrderError)] = &[
            (3, X, 1.0, OrderKind::Market, OrderError::NoBar),
            (usize::MAX, X, 1.0, OrderKind::Market, OrderError::NoBar),
            (0, 1, 1.0, OrderKind::Market, OrderError::UnknownSymbol),
            (0, u32::MAX, 0.0, OrderKind::Market, OrderError::UnknownSymbol),
            (0, X, 0.0, OrderKind::Market, OrderError::BadArgument),
            (0, X, -0.0, OrderKind::Market, OrderError::BadArgument),
            (0, X, f64::NAN, OrderKind::Market, OrderError::BadArgument),
            (0, X, f64::INFINITY, OrderKind::Market, OrderError::BadArgument),
            (0, X, 1.0, OrderKind::Limit(0.0), OrderError::BadArgument),
            (0, X, 1.0, OrderKind::Limit(-5.0), OrderError::BadArgument),
            (0, X, 1.0, OrderKind::Stop(f64::NAN), OrderError::BadArgument),
            (0, X, 1.0, OrderKind::Stop(f64::INFINITY), OrderError::BadArgument),
        ];
        for &(at, symbol, qty, kind, want) in cases {
            let got = bt.place_order(at, symbol, qty, kind);
            assert_eq!(got, Err(want), "{at} {symbol} {qty} {kind:?}");
        }
        assert_eq!(bt.pending_orders(), 0);
        // Ids start at 1 and count accepted orders only.
        assert_eq!(bt.place_order(0, X, 1.0, OrderKind::Limit(50.0)), Ok(1));
        assert_eq!(bt.place_order(0, X, 1.0, OrderKind::Market), Ok(2));
        assert_eq!(bt.cancel(0), Err(OrderError::UnknownOrder));
        assert_eq!(bt.cancel(3), Err(OrderError::UnknownOrder));
        assert_eq!(bt.cancel(u64::MAX), Err(OrderError::UnknownOrder));
        assert_eq!(bt.cancel(1), Ok(()));
        assert_eq!(bt.cancel(1), Err(OrderError::UnknownOrder));
        bt.advance_to(1);
        // Order 2 filled: no longer cancellable.
        assert_eq!(bt.cancel(2), Err(OrderError::UnknownOrder));
        assert_eq!(bt.pending_orders(), 0);
        let report = bt.finish();
        assert_eq!(report.fills, 1);
        assert!(report.pending_orders.is_empty());

        let codes: Vec<i32> = [
            OrderError::BadArgument,
            OrderError::UnknownSymbol,
            OrderError::UnknownOrder,
            OrderError::NoBar,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [-1, -2, -3, -4]);
    }

    #[test]
    fn order_kind_from_abi() {
        let cases: &[(i32, f64, Option<OrderKind>)] = &[
            (order_kind::MARKET, f64::NAN, Some(OrderKind::Market)),
            (order_kind::MARKET, 0.0, Some(OrderKind::Market)),
            (order_kind::LIMIT, 10.5, Some(OrderKind::Limit(10.5))),
            (order_kind::LIMIT, 0.0, None),
            (order_kind::LIMIT, f64::NAN, None),
            (order_kind::STOP, 3.0, Some(OrderKind::Stop(3.0))),
            (order_kind::STOP, -3.0, None),
            (3, 1.0, None),
            (-1, 1.0, None),
        ];
        for &(kind, price, want) in cases {
            assert_eq!(OrderKind::from_abi(kind, price), want, "{kind} {price}");
        }
    }

    #[test]
    fn fill_queue_keeps_the_newest() {
        let data = flat(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        for (max, want_prices, dropped) in [
            (2, vec![3.0, 4.0], 2),
            (10, vec![1.0, 2.0, 3.0, 4.0], 0),
            (0, vec![], 4),
        ] {
            let config = BacktestConfig {
                max_pending_fills: max,
                ..config()
            };
            let mut bt = Backtest::new(Arc::clone(&data), config);
            for at in 0..4 {
                bt.place_order(at, X, 1.0, OrderKind::Limit(10.0)).unwrap();
            }
            // Each order fills at the open of the bar after its own.
            bt.advance_to(4);
            let prices: Vec<f64> = std::iter::from_fn(|| bt.pop_fill()).map(|f| f.price).collect();
            assert_eq!(prices, [2.0, 3.0, 4.0, 5.0][4 - want_prices.len()..], "max {max}");
            let report = bt.finish();
            assert_eq!((report.fills, report.dropped_fills), (4, dropped), "max {max}");
        }
    }

    #[test]
    fn advance_is_clamped_and_idempotent() {
        let data = flat(&[1.0, 2.0, 3.0]);
        let mut bt = Backtest::new(data, config());
        assert_eq!((bt.len(), bt.processed()), (3, 0));
        bt.advance_to(1);
        assert_eq!(bt.processed(), 2);
        bt.advance_to(0);
        assert_eq!(bt.processed(), 2);
        bt.advance_to(usize::MAX);
        assert_eq!(bt.processed(), 3);
        let report = bt.finish();
        assert_eq!(report.equity_curve.len(), 3);

        // An empty window runs and reports nothing.
        let empty = Arc::new(flat(&[1.0]).slice(0..0));
        let mut bt = Backtest::new(empty, config());
        bt.advance_to(5);
        assert_eq!(
            bt.place_order(0, X, 1.0, OrderKind::Market),
            Err(OrderError::NoBar)
        );
        let report = bt.finish();
        assert_eq!((report.bars, report.final_equity), (0, 10_000.0));
        assert!(report.equity_curve.is_empty());
    }

    #[test]
    fn config_validation() {
        assert_eq!(BacktestConfig::default().validate(), Ok(()));
        let check = |config: BacktestConfig, want: &str| {
            assert_eq!(config.validate().unwrap_err().to_string(), want);
        };
        let d = BacktestConfig::default;
        check(
            BacktestConfig {
                initial_cash: 0.0,
                ..d()
            },
            "initial_cash must be finite and > 0, got 0",
        );
        check(
            BacktestConfig {
                commission_rate: -0.1,
                ..d()
            },
            "commission_rate must be in [0, 1) (a fraction of each fill's value), got -0.1",
        );
        check(
            BacktestConfig {
                commission_rate: 1.0,
                ..d()
            },
            "commission_rate must be in [0, 1) (a fraction of each fill's value), got 1",
        );
        let just_under = BacktestConfig {
            commission_rate: 0.999,
            ..d()
        };
        assert_eq!(just_under.validate(), Ok(()));
        check(
            BacktestConfig {
                commission_per_fill: f64::INFINITY,
                ..d()
            },
            "commission_per_fill must be finite and >= 0, got inf",
        );
        check(
            BacktestConfig { slippage: 1.0, ..d() },
            "slippage must be in [0, 1), got 1",
        );
        check(
            BacktestConfig {
                periods_per_year: f64::NAN,
                ..d()
            },
            "periods_per_year must be finite and > 0, got NaN",
        );
        let parsed: BacktestConfig = serde_json::from_str(r#"{"slippage": 0.001}"#).unwrap();
        assert_eq!(
            parsed,
            BacktestConfig {
                slippage: 0.001,
                ..d()
            }
        );
        assert!(serde_json::from_str::<BacktestConfig>(r#"{"slipage": 0.001}"#).is_err());
    }

    #[test]
    fn reports_are_deterministic() {
        let data = two_symbols();
        let config = BacktestConfig {
            commission_rate: 0.0005,
            commission_per_fill: 0.5,
            slippage: 0.001,
            ..config()
        };
        let orders = [
            (0, 0, 3.0, OrderKind::Market),
            (1, 1, -1.5, OrderKind::Limit(205.0)),
            (2, 0, -5.0, OrderKind::Stop(11.5)),
            (3, 1, 2.0, OrderKind::Market),
        ];
        let a = serde_json::to_string(&run(&data, config.clone(), &orders)).unwrap();
        let b = serde_json::to_string(&run(&data, config, &orders)).unwrap();
        assert_eq!(a, b);
        assert!(a.contains(r#""equity_curve":[{"ts":1,"#), "{a}");
        let report = run(&data, BacktestConfig::default(), &orders).without_curve();
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("equity_curve"), "{json}");
        assert!(json.contains(r#""sharpe":"#), "{json}");
    }

    #[test]
    fn streamed_statistics_equal_a_computation_over_the_reported_curve() {
        let data = two_symbols();
        let orders = [
            (0, 0, 3.0, OrderKind::Market),
            (1, 1, -1.5, OrderKind::Limit(205.0)),
            (2, 0, -5.0, OrderKind::Stop(11.5)),
            (3, 1, 2.0, OrderKind::Market),
        ];
        for report in [run(&data, config(), &orders), {
            let mut bt = Backtest::new(Arc::clone(&data), config());
            bt.advance_to(2);
            bt.place_order(2, 0, 1.0, OrderKind::Market).unwrap();
            bt.advance_to(4);
            bt.abort()
        }] {
            let again = Stats::compute(&StatsInput {
                initial_cash: report.initial_cash,
                periods_per_year: report.stats.periods_per_year,
                equity: &report.equity_curve,
                exposed_points: (report.stats.exposure.unwrap_or(0.0) * report.stats.periods as f64).round()
                    as usize,
                trades: &report.trades,
                fills: report.fills,
            });
            assert_eq!(report.stats, again);
            assert!(report.stats.periods > 2, "{:?}", report.stats);
        }
    }
}
