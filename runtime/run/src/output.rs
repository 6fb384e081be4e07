//! What a run produced, however it ended: the outcome, the backtest report
//! up to where it stopped, the guest's logs and metrics, and the resources it
//! used. Plain data, written by the session and read by the documents.

use std::collections::BTreeMap;

use palisade_backtest::BacktestReport;
use serde::Serialize;

use crate::outcome::Failure;

/// One line the guest logged.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    /// Timestamp of the bar being handled, if any.
    pub ts: Option<i64>,
    pub message: String,
}

/// Resources a run used, and what the host refused or dropped on its behalf
/// (never silently: every refused order and dropped log line is counted).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub fuel: u64,
    pub memory_peak_bytes: u64,
    /// Orders placed (accepted or refused).
    pub orders: u64,
    /// Orders and cancels the host refused, by reason.
    pub orders_refused: RefusedOrders,
    /// Log lines dropped because the run's log was full (`log_bytes`).
    pub logs_dropped: u64,
    /// Host calls the strategy made (`next_bars` included).
    pub host_calls: u64,
}

/// Requests the host refused with an error code, by the code's name (see
/// `palisade_host_api::error`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RefusedOrders {
    /// Zero, NaN, infinite or out-of-bounds quantity or price, or a bad kind.
    pub bad_argument: u64,
    /// A symbol id the data does not have.
    pub unknown_symbol: u64,
    /// Placed in init or in the finish phase.
    pub no_bar: u64,
    /// Cancels of an order that is not pending.
    pub unknown_order: u64,
}

impl RefusedOrders {
    /// Refused requests of every reason together.
    pub fn total(&self) -> u64 {
        self.bad_argument + self.unknown_symbol + self.no_bar + self.unknown_order
    }
}

/// The result of one run: how it ended, and what it produced up to then.
#[derive(Debug)]
pub struct RunOutput {
    pub outcome: Result<(), Failure>,
    /// The backtest up to where the run ended (all the data when it succeeded).
    pub report: BacktestReport,
    pub logs: Vec<LogLine>,
    pub metrics: BTreeMap<String, f64>,
    pub usage: Usage,
    /// Wall-clock time from instantiation to the end of the run.
    pub run_seconds: f64,
}
