//! Optimization studies: many sandboxed backtests of one compiled strategy,
//! run in parallel over shared read-only data.
//!
//! - [`optimize()`]: a parameter [`Grid`] (every point, or a seeded random
//!   sample of them) ranked by an [`Objective`].
//! - [`walk_forward()`]: optimize on in-sample windows, run the chosen
//!   parameters on the following out-of-sample windows, and measure how much
//!   of the in-sample performance survives.
//! - [`monte_carlo()`]: resample the trade returns of one backtest to see
//!   the spread of outcomes the same trades could have produced.
//!
//! Every backtest of a study (a *variant*) is its own sandboxed instance with
//! the policy's limits, made from the one compiled module in microseconds; the
//! [`Dataset`] is shared through an `Arc`. Up to [`Study::jobs`] variants run
//! at once, as tasks of the tokio runtime the study is awaited on (build one
//! with [`executor`] for as many worker threads). Results are collected by
//! variant index, never by completion order, so a study gives identical
//! results whatever the number of jobs. A variant that fails (fuel, memory,
//! panic, parameters its strategy refuses) is reported with its cause and the
//! study goes on; a variant whose values break the manifest's declared types
//! or ranges is reported as rejected without running.
//!
//! Studies report progress (runs done / total) through [`Study::progress`]
//! and stop when [`Study::cancel`] is set: the flag is every variant's
//! [`RunConfig::cancel`], which the sandbox checks at each epoch tick
//! (about a millisecond), so even a variant stuck in a loop stops at once.
//! A cancelled study returns [`StudyError::Cancelled`].
//!
//! # Definitions
//!
//! **Grid order.** Variants are numbered in grid order, the first grid
//! parameter varying slowest (like nested loops, or Python's
//! `itertools.product`). A random sample keeps the grid order of the points
//! it drew.
//!
//! **Ranking.** Variants are ranked by their objective value, best first:
//! larger is better, except for [`Objective::MaxDrawdown`] and
//! [`Objective::Volatility`], where smaller is better. A variant without a
//! value (it failed, was rejected, or the statistic is undefined: no trades
//! for `win_rate`, no losing trade for `profit_factor`, ...) ranks after every
//! variant with one. Equal values rank in variant order, so the first variant
//! in grid order wins a tie (as in backtesting.py, whose optimizer takes the
//! first maximum).
//!
//! **Walk-forward windows.** The data's `T` distinct timestamps are cut into
//! `N` windows (timestamps are never split, so every symbol's bars of one
//! timestamp stay together). Out-of-sample (OOS) segments have
//! `L_oos = floor(T (1 − f) / (N (1 − f) + f))` timestamps for the in-sample
//! fraction `f`, and follow each other up to the end of the data; the first
//! in-sample (IS) segment takes the rest, `L_is = T − N L_oos` (so
//! `L_is ≈ L_oos f / (1 − f)`). Window `k` (from 0) tests on
//! `[L_is + k L_oos, L_is + (k + 1) L_oos)`. Its in-sample segment is the
//! `L_is` timestamps before that (*rolling*) or everything from the start
//! (*anchored*). Each segment is a separate backtest that starts flat with
//! the initial cash, so the strategy warms up inside it: every segment must
//! be longer than the strategy's warm-up (the manifest's `warmup`, the
//! largest value over the grid when it names a parameter).
//!
//! **Stitched OOS.** The OOS segments chained end to end, each compounding
//! on the previous: the stitched equity at a point of window `k` is
//! `C × Π_{j<k} (E_j / C) × (e / C)`, where `C` is the initial cash, `E_j` the
//! final equity of window `j` and `e` the equity in window `k`. Its
//! statistics follow `engine::stats` over that curve (trade statistics use
//! the windows' trades unchanged).
//!
//! **Walk-forward efficiency.** `WFE = CAGR(stitched OOS) / mean_k CAGR(IS_k)`,
//! with `IS_k` the in-sample backtest of the parameters chosen in window `k`,
//! and CAGR as in `engine::stats` (`(e_T / C)^(ppy / n) − 1`, so both sides
//! are annualized). Per window, `wfe_k = CAGR(OOS_k) / CAGR(IS_k)`. It is
//! undefined when the in-sample CAGR is not positive, where "what fraction
//! survives" means nothing. 1 means the OOS annual return equals the IS one;
//! 0.5 is half of it.
//!
//! **Degradation.** For each window, with `s` the objective's score
//! (its value, negated when smaller is better):
//! `d_k = (s(IS_k) − s(OOS_k)) / |s(IS_k)|`, and `degradation = mean_k d_k`
//! over the windows where both are defined and `s(IS_k) ≠ 0`. 0 means no
//! loss from IS to OOS, 1 means the OOS objective fell to zero, above 1 that
//! it changed sign.
//!
//! **Parameter stability.** For each grid parameter, the coefficient of
//! variation of the values chosen across windows: `cv = σ / |μ|` with the
//! population standard deviation `σ` and mean `μ` over the windows that
//! chose parameters. 0 means every window chose the same value (also when
//! that value is 0); undefined when `μ = 0 < σ`.
//!
//! **Robustness score**, in `[0, 1]`: the mean of three parts, each in
//! `[0, 1]`: the fraction of windows whose OOS total return is positive (a
//! window that could not be tested counts as not profitable);
//! `clamp(WFE, 0, 1)` (0 when undefined); and the mean over the grid
//! parameters of `1 / (1 + cv)` (a parameter with an undefined `cv` counts
//! 0; the part is 0 when no window chose parameters).
//!
//! A window whose in-sample variants all lack an objective value chooses
//! nothing and is not tested; a window whose OOS backtest fails is reported
//! with its cause. Neither is part of the stitched curve or of WFE.
//!
//! **Monte Carlo trade returns.** The closed trades of one backtest, in
//! closing order, as returns on the equity they were closed from:
//! `r_i = pnl_i / (C + Σ_{j<i} pnl_j)`. Compounding them in their original
//! order gives back `C + Σ pnl`, the realized equity. Each run draws `n`
//! returns with replacement (*bootstrap*) or shuffles them (*permutation*:
//! the final return is then the same in every run, only the path and its
//! drawdown change), compounds them from `C`, and records the final return
//! and the largest drawdown of that trade-by-trade path (peak starting at
//! `C`, as in `engine::stats`). Positions still open at the end are not
//! trades and are left out.
//!
//! **Monte Carlo results.** Percentiles interpolate linearly between order
//! statistics (the `p`-th of sorted `x_0..x_{m−1}` is at rank `(m − 1) p`,
//! numpy's default). Probability of profit: the fraction of runs with a final
//! return above 0. Probability of ruin: the fraction of runs whose equity is
//! at or below `(1 − ruin) × C` after any trade (`ruin = 0.5` by default:
//! losing half the account). The stream is ChaCha8 seeded from the seed, so a
//! seed always gives the same result.
//!
//! What this module does not do: read files, parse flags or print (the CLI
//! does), or queue jobs (the service will).

pub mod grid;
pub mod monte_carlo;
pub mod optimize;
mod runner;
pub mod walk_forward;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

pub use grid::{Axis, AxisSpec, Grid, GridArg, GridError, Search, DECLARED_RANGE_POINTS, MAX_AXIS_POINTS};
pub use monte_carlo::{monte_carlo, resample, trade_returns, Method, MonteCarloOptions, MonteCarloReport};
pub use optimize::{optimize, OptimizeOptions, OptimizeReport, Variant, VariantStatus};
pub use walk_forward::{walk_forward, WalkForwardOptions, WalkForwardReport, WindowMode};

use crate::engine::{BacktestConfig, Dataset, Stats};
use crate::policy::Policy;
use crate::sandbox::params::ParamError;
use crate::sandbox::{Failure, Sandbox, Strategy};

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
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What every study runs on: one compiled strategy, its data, its limits and
/// the values of the parameters the study does not vary.
#[derive(Clone)]
pub struct Study {
    pub sandbox: Arc<Sandbox>,
    pub strategy: Arc<Strategy>,
    pub policy: Arc<Policy>,
    pub data: Arc<Dataset>,
    /// Every declared parameter with its value (see
    /// [`crate::sandbox::params::resolve`]); grid parameters replace theirs.
    pub base_params: Vec<(String, f64)>,
    pub backtest: BacktestConfig,
    /// Seed of the guest's random stream in every variant (so a variant is
    /// the same as a standalone backtest with this seed).
    pub seed: u64,
    /// Most variants running at once (at least 1).
    pub jobs: usize,
    /// Set to stop the study; every variant watches it.
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for Study {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Study")
            .field("strategy", &self.strategy.info.manifest.name)
            .field("policy", &self.policy.name)
            .field("bars", &self.data.len())
            .field("base_params", &self.base_params)
            .field("seed", &self.seed)
            .field("jobs", &self.jobs)
            .field("cancelled", &self.cancel.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A multi-thread tokio runtime with `jobs` worker threads (at least 1), to
/// await a study on.
pub fn executor(jobs: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.max(1))
        .thread_name("palisade-study")
        .enable_all()
        .build()
}

/// The worker count to use when none is given: the available cores.
pub fn default_jobs() -> usize {
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
    /// A trade's return is undefined (the realized equity before it is not
    /// positive).
    #[error("trade {trade} closed when the realized equity was {equity}: its return on equity is undefined")]
    UndefinedReturn { trade: usize, equity: f64 },
    /// [`Study::cancel`] was set.
    #[error("the study was cancelled after {done} of {total} runs")]
    Cancelled { done: u64, total: u64 },
    /// A worker task ended abnormally (a bug in the host, never guest input).
    #[error("a study worker stopped unexpectedly: {0}")]
    Worker(String),
}

/// What a study ranks variants by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
    pub const ALL: [Objective; 10] = [
        Objective::TotalReturn,
        Objective::Cagr,
        Objective::Sharpe,
        Objective::Sortino,
        Objective::Calmar,
        Objective::ProfitFactor,
        Objective::WinRate,
        Objective::AvgTradePnl,
        Objective::MaxDrawdown,
        Objective::Volatility,
    ];

    /// The snake_case name, as in [`Stats`].
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::TotalReturn => "total_return",
            Objective::Cagr => "cagr",
            Objective::Sharpe => "sharpe",
            Objective::Sortino => "sortino",
            Objective::Calmar => "calmar",
            Objective::ProfitFactor => "profit_factor",
            Objective::WinRate => "win_rate",
            Objective::AvgTradePnl => "avg_trade_pnl",
            Objective::MaxDrawdown => "max_drawdown",
            Objective::Volatility => "volatility",
        }
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

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An objective name that is not one of [`Objective::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown objective {name:?} (expected one of: {})", Objective::ALL.map(Objective::as_str).join(", "))]
pub struct UnknownObjective {
    pub name: String,
}

impl FromStr for Objective {
    type Err = UnknownObjective;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Objective::ALL
            .into_iter()
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

/// Parameter values in a fixed order, serialized as a JSON object in that
/// order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet(pub Vec<(String, f64)>);

impl ParamSet {
    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl Serialize for ParamSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl fmt::Display for ParamSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing;

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
        for o in Objective::ALL {
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

    #[test]
    fn param_sets_serialize_in_their_order() {
        let p = ParamSet(vec![("slow".into(), 20.0), ("fast".into(), 5.0)]);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"slow":20.0,"fast":5.0}"#);
        assert_eq!(p.to_string(), "slow=20 fast=5");
        assert_eq!(p.get("fast"), Some(5.0));
        assert_eq!(p.get("size"), None);
    }
}
