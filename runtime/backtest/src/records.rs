//! The records a backtest keeps as it runs and that both the statistics and
//! the report read: closed trades and the equity curve. Plain data, nothing
//! computed here; it sits below [`crate::stats`] and [`crate::report`] so that
//! neither has to import the other's inputs.

use serde::Serialize;

/// Equity after every bar of one timestamp.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EquityPoint {
    pub ts: i64,
    pub equity: f64,
}

/// A closed trade: one FIFO lot, or the closed part of one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trade {
    pub symbol: String,
    /// Timestamp of the bar the entry filled on.
    pub entry_ts: i64,
    /// Timestamp of the bar the exit filled on.
    pub exit_ts: i64,
    /// Signed quantity: > 0 for a long trade, < 0 for a short one.
    pub qty: f64,
    pub entry_price: f64,
    pub exit_price: f64,
    /// `(exit_price − entry_price) × qty − commission`.
    pub pnl: f64,
    /// The lot's share of its entry and exit fills' commissions.
    pub commission: f64,
    /// `pnl / (|qty| × entry_price)`: the trade's return on its entry
    /// notional.
    #[serde(rename = "return")]
    pub ret: f64,
    /// Bars of the symbol from entry to exit (entry at the open of bar `k`,
    /// exit at the open of bar `k + bars_held`).
    pub bars_held: u64,
}
