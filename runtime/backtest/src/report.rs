//! The result of a backtest as plain serializable data: statistics, closed
//! trades, positions still open, orders still pending and the equity curve.
//! The CLI and the HTTP API print it as JSON (keys in snake_case, undefined
//! numbers as `null`); nothing here computes anything.

use serde::{Deserialize, Serialize};

pub use crate::records::{EquityPoint, Trade};
use crate::stats::Stats;

/// Everything a finished backtest reports.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BacktestReport {
    /// Number of bar events replayed.
    pub bars: usize,
    /// Symbol names, by id.
    pub symbols: Vec<String>,
    pub stats: Stats,
    /// Closed trades, in the order they closed.
    pub trades: Vec<Trade>,
    /// Positions still open at the end, marked at their last close (included
    /// in `final_equity`, not in `trades`).
    pub open_positions: Vec<OpenPosition>,
    /// Orders never filled, by id.
    pub pending_orders: Vec<PendingOrder>,
    /// Cash plus open positions at their last close.
    pub final_equity: f64,
    pub initial_cash: f64,
    /// Σ pnl of the closed trades (commissions included).
    pub realized_pnl: f64,
    /// Σ (last close − entry price) × qty over the open lots (their entry
    /// commissions are in `open_positions[].commission`, already paid).
    pub unrealized_pnl: f64,
    /// Total commission paid.
    pub commission: f64,
    /// Number of fills.
    pub fills: usize,
    /// Fills dropped from the strategy's queue because it held
    /// `max_pending_fills` undelivered fills (they were still executed).
    pub dropped_fills: usize,
    /// One point per distinct timestamp; omitted from JSON when empty (see
    /// [`BacktestReport::without_curve`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub equity_curve: Vec<EquityPoint>,
}

impl BacktestReport {
    /// The same report without its equity curve (which then disappears from
    /// JSON); the statistics were computed from it already.
    pub fn without_curve(mut self) -> BacktestReport {
        self.equity_curve = Vec::new();
        self
    }
}

/// A position open at the end of the data.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenPosition {
    pub symbol: String,
    /// Signed quantity.
    pub qty: f64,
    /// Quantity-weighted entry price of the open lots.
    pub avg_entry_price: f64,
    /// Entry timestamp of the oldest open lot.
    pub entry_ts: Option<i64>,
    pub last_close: f64,
    /// `(last_close − entry price) × qty`, summed over the open lots.
    pub unrealized_pnl: f64,
    /// Entry commission paid for the open lots.
    pub commission: f64,
}

/// An order that never filled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingOrder {
    pub id: u64,
    pub symbol: String,
    pub qty: f64,
    pub kind: OrderKindName,
    /// Limit or stop price (absent for market orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Timestamp of the bar the order was placed on.
    pub placed_ts: i64,
}

/// An order kind as reported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderKindName {
    Market,
    Limit,
    Stop,
}
