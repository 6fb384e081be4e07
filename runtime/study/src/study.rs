//! What every study runs on ([`Study`]), how it reports progress, how it
//! ranks variants ([`Objective`], [`rank`]), and how it fails
//! ([`StudyError`]): the vocabulary the three studies share.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use palisade_backtest::{BacktestConfig, Dataset, Stats};
use palisade_run::params::ParamError;
use palisade_run::{Failure, Policy};
use palisade_sandbox::{CompiledModule, Sandbox};

use crate::grid::GridError;

/// Runs done and runs in total, reported after each run of a study, with
/// what the sandboxed runs so far used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Fuel used by the finished backtests, together.
    pub fuel: u64,
    /// The largest linear memory one finished backtest reached, in bytes.
    pub memory_peak_bytes: u64,
}

/// A progress callback. It is called from the executor's worker threads, one
/// call at a time, with `done` increasing by one each call.
pub type OnProgress = Arc<dyn Fn(Progress) + Send + Sync>;

/// What every study runs on: one compiled strategy, its data, its limits and
/// the values of the parameters the study does not vary.
#[derive(Clone)]
pub struct Study {
    pub sandbox: Arc<Sandbox>,
    pub strategy: Arc<CompiledModule>,
    pub policy: Arc<Policy>,
    pub data: Arc<Dataset>,
    /// Every declared parameter with its value (see
    /// [`palisade_run::params::resolve`]); grid parameters replace theirs.
    pub base_params: Vec<(String, f64)>,
    pub backtest: BacktestConfig,
    /// Seed of the guest's random stream in every variant (so a variant is
    /// the same as a standalone backtest with this seed).
    pub seed: u64,
    /// Most variants running at once (at least 1).
    pub threads: usize,
    /// Set to stop the study; every variant watches it.
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<OnProgress>,
}

impl fmt::Debug for Study {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Study")
            .field("strategy", &self.strategy.info.manifest.name)
            .field("policy", &self.policy.name)
            .field("bars", &self.data.len())
            .field("base_params", &self.base_params)
            .field("seed", &self.seed)
            .field("threads", &self.threads)
            .field("cancelled", &self.cancel.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A multi-thread tokio runtime with `threads` worker threads (at least 1), to
/// await a study on.
pub fn executor(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("palisade-study")
        .enable_all()
        .build()
}

/// The worker count to use when none is given: the available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Why a study could not run or did not finish. Failures of single variants
/// are not errors: they are reported in the study's result.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error(transparent)]
    Param(#[from] ParamError),
    /// More variants than the policy's `max_variants`.
    #[error(
        "{what} has {count} variants, more than policy {policy} allows (max_variants = {limit}); \
         narrow the grid or draw fewer with --samples"
    )]
    TooManyVariants {
        what: String,
        count: u64,
        limit: u64,
        policy: String,
    },
    /// An option out of its domain.
    #[error("{option} = {value} is invalid: {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The data is too short for the windows asked for.
    #[error(
        "not enough data for {windows} walk-forward windows with in-sample fraction {in_sample}: \
         {timestamps} timestamps give out-of-sample windows of {oos_bars} bars"
    )]
    NotEnoughData {
        windows: usize,
        in_sample: f64,
        timestamps: usize,
        oos_bars: usize,
    },
    /// A walk-forward segment cannot hold the strategy's warm-up.
    #[error(
        "walk-forward windows are too short for the strategy's warm-up: in-sample windows hold \
         {in_sample_bars} bars and out-of-sample windows {oos_bars}, but the strategy needs {warmup} \
         bars of warm-up ({warmup_source}) and at least one more to act; use fewer windows, a \
         different --in-sample fraction, more data or a shorter warm-up"
    )]
    WindowsTooShort {
        in_sample_bars: usize,
        oos_bars: usize,
        warmup: u64,
        /// Where the warm-up comes from: `warmup = 50` or `parameter slow`.
        warmup_source: String,
    },
    /// The backtest a Monte Carlo study resamples did not complete.
    #[error("the backtest failed: {0}")]
    BacktestFailed(Failure),
    /// The backtest a Monte Carlo study resamples closed no trade.
    #[error("the backtest closed no trades: there is nothing to resample")]
    NoTrades,
    /// [`Study::cancel`] was set.
    #[error("the study was cancelled after {done} of {total} runs")]
    Cancelled { done: u64, total: u64 },
    /// A worker task ended abnormally (a bug in the host, never guest input).
    #[error("a study worker stopped unexpectedly: {0}")]
    Worker(String),
}

/// What a study ranks variants by.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Objective {
    TotalReturn,
    Cagr,
    Sharpe,
    Sortino,
    Calmar,
    ProfitFactor,
    WinRate,
    AvgTradePnl,
    /// Smaller is better.
    MaxDrawdown,
    /// Smaller is better.
    Volatility,
}

impl Objective {
    /// Every objective.
    pub const ALL: &'static [Objective] = <Objective as strum::VariantArray>::VARIANTS;

    /// The snake_case name, as in [`Stats`].
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// True when smaller values are better.
    pub fn minimize(self) -> bool {
        matches!(self, Objective::MaxDrawdown | Objective::Volatility)
    }

    /// The statistic's value; `None` when undefined (or not finite).
    pub fn value(self, s: &Stats) -> Option<f64> {
        let v = match self {
            Objective::TotalReturn => Some(s.total_return),
            Objective::Cagr => s.cagr,
            Objective::Sharpe => s.sharpe,
            Objective::Sortino => s.sortino,
            Objective::Calmar => s.calmar,
            Objective::ProfitFactor => s.profit_factor,
            Objective::WinRate => s.win_rate,
            Objective::AvgTradePnl => s.avg_trade_pnl,
            Objective::MaxDrawdown => Some(s.max_drawdown),
            Objective::Volatility => s.volatility,
        };
        v.filter(|x| x.is_finite())
    }

    /// The value oriented so that larger is better (negated when smaller is
    /// better); `-0.0` is made `0.0` so that equal values tie.
    pub fn score(self, value: f64) -> f64 {
        (if self.minimize() { -value } else { value }) + 0.0
    }
}

/// An objective name that is not one of [`Objective::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown objective {name:?} (expected one of: {})", Objective::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownObjective {
    pub name: String,
}

impl FromStr for Objective {
    type Err = UnknownObjective;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Objective::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownObjective { name: s.to_string() })
    }
}

/// Ranks variants by their objective values, best first (see the module
/// docs): returns variant indices. `None` and non-finite values rank last;
/// equal values keep index order.
pub fn rank(objective: Objective, values: &[Option<f64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let key = |i: usize| values[i].filter(|v| v.is_finite()).map(|v| objective.score(v));
    order.sort_by(|&a, &b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.cmp(&b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(&b),
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rank(objective: Objective, values: &[Option<f64>], expected: &[usize]) {
        assert_eq!(rank(objective, values), expected, "{objective} {values:?}");
    }

    #[test]
    fn ranking_orders_best_first_with_missing_last_and_ties_by_index() {
        use Objective::*;
        check_rank(TotalReturn, &[Some(0.1), Some(0.3), Some(0.2)], &[1, 2, 0]);
        check_rank(
            TotalReturn,
            &[None, Some(-1.0), Some(f64::NAN), Some(0.0)],
            &[3, 1, 0, 2],
        );
        check_rank(
            TotalReturn,
            &[Some(0.2), Some(0.5), Some(0.2), Some(0.5)],
            &[1, 3, 0, 2],
        );
        check_rank(TotalReturn, &[Some(-0.0), Some(0.0)], &[0, 1]);
        check_rank(TotalReturn, &[Some(0.0), Some(-0.0)], &[0, 1]);
        check_rank(
            MaxDrawdown,
            &[Some(0.3), Some(0.1), None, Some(0.1)],
            &[1, 3, 0, 2],
        );
        check_rank(
            Volatility,
            &[Some(0.2), Some(f64::INFINITY), Some(0.1)],
            &[2, 0, 1],
        );
        check_rank(Sharpe, &[None, None], &[0, 1]);
        check_rank(Sharpe, &[], &[]);
    }

    #[test]
    fn objective_names_round_trip_and_unknown_names_list_the_choices() {
        for &o in Objective::ALL {
            assert_eq!(o.as_str().parse::<Objective>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
        }
        let err = "return".parse::<Objective>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown objective \"return\" (expected one of: total_return, cagr, sharpe, sortino, calmar, \
             profit_factor, win_rate, avg_trade_pnl, max_drawdown, volatility)"
        );
    }
}
