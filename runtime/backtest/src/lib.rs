//! `palisade-backtest`, the backtest engine: pure Rust. It replays validated
//! bar data ([`data`]) through a simulated broker ([`broker`]) that fills orders,
//! keeps the portfolio and records trades and the equity curve, then computes
//! statistics ([`stats`]) into a serializable report ([`report`]).
//!
//! The sandbox drives a [`Backtest`] as the guest asks questions: it calls
//! [`Backtest::advance_to`] with the event the guest is handling, then places
//! orders, reads positions and polls fills. The engine never calls back into
//! the guest and holds no notion of batches or host calls.
//!
//! The fill model, in one paragraph (the [`broker`] docs hold the full
//! contract): an order placed while handling event `t` fills on the next bar
//! of its symbol (event > `t`); market orders at that bar's open plus
//! slippage; limit and stop orders when the bar trades through their price
//! (at the open when it gaps through); commission per fill is a fixed part
//! plus a fraction of notional; no margin model.
//!
//! What this crate owns, and what it must not touch: it knows bars, orders,
//! fills, the portfolio and statistics. It knows nothing of WebAssembly,
//! guests, policies, the terminal or HTTP (it depends on no other Palisade
//! crate but the ABI's `palisade-host-api`, for the `Bar` and `Fill`
//! layouts), and its only I/O is reading CSV files.
//!
//! Per-bar work is a few arithmetic operations: no allocation, no map lookup,
//! and pending orders are looked at only when there are some for the bar's
//! symbol.

pub mod broker;
pub mod data;
pub mod records;
pub mod report;
pub mod stats;

pub use broker::{
    Backtest, BacktestConfig, ConfigError, OrderError, OrderKind, DEFAULT_INITIAL_CASH,
    DEFAULT_MAX_PENDING_FILLS, DEFAULT_PERIODS_PER_YEAR, MAX_ORDER_PRICE, MAX_ORDER_QTY,
};
pub use data::{BarProblem, DataError, Dataset, Location};
pub use records::{EquityPoint, Trade};
pub use report::{BacktestReport, OpenPosition, OrderKindName, PendingOrder};
pub use stats::Stats;
