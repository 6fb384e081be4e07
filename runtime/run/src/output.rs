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

/// Resources a run used.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub fuel: u64,
    pub memory_peak_bytes: u64,
    pub orders: u64,
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
