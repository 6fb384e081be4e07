//! Monte Carlo robustness: resample the trade returns of one backtest and look
//! at the spread of final returns and drawdowns the same trades could have
//! produced in another order or mix (definitions in the [module docs](super)).
//! It resamples closed trades only; it does not re-run the strategy per path.

use std::str::FromStr;
use std::sync::atomic::Ordering;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::optimize::Kept;
use crate::study::{Study, StudyError};
use crate::variants::{run_all, Run, Tracker};
use palisade_backtest::stats::mean;
use palisade_backtest::{BacktestReport, Stats};

/// Default ruin threshold: losing half of the initial cash.
pub const DEFAULT_RUIN: f64 = 0.5;

/// Most runs one study may ask for.
pub const MAX_RUNS: u64 = 10_000_000;

/// Runs between two progress reports (and cancellation checks).
const CHUNK: u64 = 1024;

/// How each run draws its trade returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Method {
    /// `n` returns drawn with replacement.
    #[default]
    Bootstrap,
    /// The `n` returns in a random order.
    Permutation,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A method name that is neither `bootstrap` nor `permutation`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown method {name:?} (expected bootstrap or permutation)")]
pub struct UnknownMethod {
    pub name: String,
}

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Method as strum::VariantArray>::VARIANTS
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMethod { name: s.to_string() })
    }
}

/// What a Monte Carlo study does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MonteCarloOptions {
    /// Number of resampled paths (1 to [`MAX_RUNS`]).
    pub runs: u64,
    pub method: Method,
    /// Seed of the resampling stream (the backtest itself uses
    /// [`Study::seed`]).
    pub seed: u64,
    /// A path is ruined when its equity is at or below `(1 − ruin) × C`;
    /// in `(0, 1]`.
    pub ruin: f64,
}

impl Default for MonteCarloOptions {
    fn default() -> Self {
        MonteCarloOptions {
            runs: 1000,
            method: Method::Bootstrap,
            seed: 0,
            ruin: DEFAULT_RUIN,
        }
    }
}

impl MonteCarloOptions {
    /// Checks the options before anything runs: the errors a Monte Carlo
    /// study would give, with the same messages.
    pub fn validate(&self) -> Result<(), StudyError> {
        if self.runs == 0 {
            return Err(StudyError::InvalidOption {
                option: "runs",
                value: "0".into(),
                expected: "a Monte Carlo study needs at least one run",
            });
        }
        if self.runs > MAX_RUNS {
            return Err(StudyError::InvalidOption {
                option: "runs",
                value: self.runs.to_string(),
                expected: "at most 10000000 runs",
            });
        }
        if !(self.ruin > 0.0 && self.ruin <= 1.0) {
            return Err(StudyError::InvalidOption {
                option: "ruin",
                value: self.ruin.to_string(),
                expected: "the fraction of the initial cash lost that counts as ruin, in (0, 1]",
            });
        }
        Ok(())
    }
}

/// Percentiles (and the mean) of one quantity over the runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p5: f64,
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Of `values`, which it sorts; `values` must not be empty.
    fn of(values: &mut [f64]) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p5: percentile(values, 0.05),
            p50: percentile(values, 0.50),
            p95: percentile(values, 0.95),
            mean: mean(values).unwrap_or(f64::NAN),
        }
    }
}

/// The `p`-th percentile of sorted values, interpolating linearly between
/// order statistics (rank `(n − 1) p`).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Final return and largest drawdown of one trade-by-trade path.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PathResult {
    pub final_return: f64,
    pub max_drawdown: f64,
}

/// What the resampled paths show.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    /// The trades in their actual order.
    pub observed: PathResult,
    pub final_return: Percentiles,
    pub max_drawdown: Percentiles,
    pub probability_of_profit: f64,
    pub probability_of_ruin: f64,
}

/// The result of a Monte Carlo study.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MonteCarloReport {
    pub method: Method,
    pub runs: u64,
    /// The seed of the resampling stream: the study's seed, which every
    /// result document writes once, in its head.
    #[serde(skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub seed: u64,
    pub ruin: f64,
    /// The equity at or below which a path counts as ruined:
    /// `(1 − ruin) × initial_cash`.
    pub ruin_equity: f64,
    pub initial_cash: f64,
    /// Closed trades resampled.
    pub trades: usize,
    /// Closed trades left out: those after the one that brought the realized
    /// equity to 0 or below (see [`trade_returns`]).
    pub trades_excluded: usize,
    /// Their returns on equity, in closing order.
    pub trade_returns: Vec<f64>,
    #[serde(flatten)]
    pub distribution: Distribution,
    /// Statistics of the backtest the trades come from.
    pub backtest: Stats,
}

/// The closed trades' returns on the realized equity before each (see the
/// module docs): `r_i = pnl_i / (C + Σ_{j<i} pnl_j)`, at least −1 (an
/// account cannot lose more than it has). The trade that brings the
/// realized equity to 0 or below ends the list: the trades after it were
/// made with an account already wiped out, so they are left out, and their
/// count is returned beside the returns.
pub fn trade_returns(report: &BacktestReport) -> Result<(Vec<f64>, usize), StudyError> {
    if report.trades.is_empty() {
        return Err(StudyError::NoTrades);
    }
    let mut equity = report.initial_cash;
    let mut out = Vec::with_capacity(report.trades.len());
    for (i, t) in report.trades.iter().enumerate() {
        out.push((t.pnl / equity).max(-1.0));
        equity += t.pnl;
        if equity.is_nan() || equity <= 0.0 {
            return Ok((out, report.trades.len() - i - 1));
        }
    }
    Ok((out, 0))
}

/// Compounds `returns` from 1 and follows the path; an equity that reaches 0
/// stays there.
fn walk(returns: impl Iterator<Item = f64>, ruin_level: f64) -> (PathResult, bool) {
    let (mut equity, mut peak, mut drawdown, mut ruined) = (1.0_f64, 1.0_f64, 0.0_f64, false);
    for r in returns {
        equity *= 1.0 + r;
        if equity <= 0.0 {
            return (
                PathResult {
                    final_return: -1.0,
                    max_drawdown: 1.0,
                },
                true,
            );
        }
        peak = peak.max(equity);
        drawdown = drawdown.max(1.0 - equity / peak);
        ruined |= equity <= ruin_level;
    }
    let path = PathResult {
        final_return: equity - 1.0,
        max_drawdown: drawdown,
    };
    (path, ruined)
}

/// Resamples `returns` (at least one) as `options` say. Pure and
/// deterministic: the same inputs give the same result.
pub fn resample(returns: &[f64], options: &MonteCarloOptions) -> Result<Distribution, StudyError> {
    options.validate()?;
    resample_with(returns, options, &mut |_| true)
}

/// [`resample`] calling `go_on(runs done)` every [`CHUNK`] runs; it stops
/// (with `None` results) when `go_on` returns false.
fn resample_with(
    returns: &[f64],
    options: &MonteCarloOptions,
    go_on: &mut dyn FnMut(u64) -> bool,
) -> Result<Distribution, StudyError> {
    if returns.is_empty() {
        return Err(StudyError::NoTrades);
    }
    let ruin_level = 1.0 - options.ruin;
    let n = returns.len();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut order = returns.to_vec();
    let runs = options.runs as usize;
    let mut finals = Vec::with_capacity(runs);
    let mut drawdowns = Vec::with_capacity(runs);
    let mut ruined = 0u64;
    for run in 0..runs {
        if (run as u64).is_multiple_of(CHUNK) && run > 0 && !go_on(run as u64) {
            break;
        }
        let (path, ruin) = match options.method {
            Method::Bootstrap => walk((0..n).map(|_| returns[rng.random_range(0..n)]), ruin_level),
            Method::Permutation => {
                order.shuffle(&mut rng);
                walk(order.iter().copied(), ruin_level)
            }
        };
        finals.push(path.final_return);
        drawdowns.push(path.max_drawdown);
        ruined += u64::from(ruin);
    }
    let done = finals.len() as f64;
    let profitable = finals.iter().filter(|&&r| r > 0.0).count() as f64;
    Ok(Distribution {
        observed: walk(returns.iter().copied(), ruin_level).0,
        probability_of_profit: profitable / done,
        probability_of_ruin: ruined as f64 / done,
        final_return: Percentiles::of(&mut finals),
        max_drawdown: Percentiles::of(&mut drawdowns),
    })
}

/// Backtests `study`'s strategy with its base parameters over `study.data`,
/// then resamples the closed trades' returns.
///
/// Must be awaited inside a tokio runtime (see [`crate::executor`]).
pub async fn monte_carlo(study: &Study, options: &MonteCarloOptions) -> Result<MonteCarloReport, StudyError> {
    options.validate()?;
    let tracker = Tracker::new(1 + options.runs, study.progress.clone());
    let job = Run {
        params: study.base_params.clone(),
        data: study.data.clone(),
    };
    let kept = run_all(study, vec![job], &tracker, |_, out| Kept::with_report(out))
        .await?
        .pop()
        .expect("one run");
    kept.outcome.map_err(StudyError::BacktestFailed)?;
    let report = kept.report.expect("kept with its report");
    let (returns, trades_excluded) = trade_returns(&report)?;
    let mut reported = 0;
    let mut go_on = |done: u64| {
        tracker.advance(done - reported);
        reported = done;
        !study.cancel.load(Ordering::Relaxed)
    };
    let distribution = resample_with(&returns, options, &mut go_on)?;
    if study.cancel.load(Ordering::Relaxed) {
        return Err(tracker.cancelled());
    }
    tracker.advance(options.runs - reported);
    Ok(MonteCarloReport {
        method: options.method,
        runs: options.runs,
        seed: options.seed,
        ruin: options.ruin,
        ruin_equity: (1.0 - options.ruin) * report.initial_cash,
        initial_cash: report.initial_cash,
        trades: returns.len(),
        trades_excluded,
        trade_returns: returns,
        distribution,
        backtest: report.stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Guest};

    fn options(runs: u64, method: Method, seed: u64) -> MonteCarloOptions {
        MonteCarloOptions {
            runs,
            method,
            seed,
            ruin: DEFAULT_RUIN,
        }
    }

    #[track_caller]
    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let check = |values: &[f64], p: f64, want: f64| close(percentile(values, p), want);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        // numpy.percentile([1..10], [5, 50, 95]) = 1.45, 5.5, 9.55
        check(&ten, 0.05, 1.45);
        check(&ten, 0.50, 5.5);
        check(&ten, 0.95, 9.55);
        check(&[3.0], 0.95, 3.0);
        check(&[1.0, 2.0], 0.5, 1.5);
        let p = Percentiles::of(&mut [5.0, 1.0, 3.0]);
        assert_eq!((p.p5, p.p50, p.p95, p.mean), (1.2, 3.0, 4.8, 3.0));
    }

    #[test]
    fn paths_compound_and_measure_drawdown_from_the_initial_peak() {
        let check = |returns: &[f64], ruin: f64, final_return: f64, max_drawdown: f64, ruined: bool| {
            let (path, r) = walk(returns.iter().copied(), 1.0 - ruin);
            close(path.final_return, final_return);
            close(path.max_drawdown, max_drawdown);
            assert_eq!(r, ruined, "{returns:?}");
        };
        check(&[0.1, -0.5, 0.2], 0.5, 1.1 * 0.5 * 1.2 - 1.0, 0.5, false);
        check(&[0.1, -0.5, 0.2], 0.45, 1.1 * 0.5 * 1.2 - 1.0, 0.5, true);
        check(&[-0.2, 0.5], 0.5, 0.8 * 1.5 - 1.0, 0.2, false);
        check(&[-0.5], 0.5, -0.5, 0.5, true);
        check(&[0.3, 0.1], 0.5, 1.43 - 1.0, 0.0, false);
        check(&[0.5, -1.5, 10.0], 1.0, -1.0, 1.0, true);
    }

    fn report_with_pnls(initial_cash: f64, pnls: &[f64]) -> BacktestReport {
        let study = testing::study(Guest::SmaCross, 10, 1);
        let mut report = testing::backtest(&study, &study.base_params).report;
        report.initial_cash = initial_cash;
        report.trades = pnls
            .iter()
            .map(|&pnl| palisade_backtest::Trade {
                symbol: "X".into(),
                entry_ts: 0,
                exit_ts: 1,
                qty: 1.0,
                entry_price: 10.0,
                exit_price: 10.0 + pnl,
                pnl,
                commission: 0.0,
                ret: pnl / 10.0,
                bars_held: 1,
            })
            .collect();
        report
    }

    #[test]
    fn trade_returns_are_on_the_realized_equity_before_each_trade() {
        let (r, excluded) = trade_returns(&report_with_pnls(100.0, &[10.0, -22.0, 44.0])).unwrap();
        assert_eq!(excluded, 0);
        assert_eq!(r, [0.1, -0.2, 0.5]);
        let d = resample(&r, &options(1, Method::Permutation, 0)).unwrap();
        // Compounding in order gives back the realized equity: 100 + 32.
        close(d.observed.final_return, 0.32);
        close(d.observed.max_drawdown, 0.2);
        assert_eq!(
            trade_returns(&report_with_pnls(100.0, &[]))
                .unwrap_err()
                .to_string(),
            "the backtest closed no trades: there is nothing to resample"
        );
        // A trade that wipes the account out ends the list; a loss beyond
        // the account counts as -100 %.
        assert_eq!(
            trade_returns(&report_with_pnls(100.0, &[-100.0, 5.0])).unwrap(),
            (vec![-1.0], 1)
        );
        assert_eq!(
            trade_returns(&report_with_pnls(100.0, &[10.0, -150.0, 5.0, 7.0])).unwrap(),
            (vec![0.1, -1.0], 2)
        );
    }

    #[test]
    fn permutation_keeps_the_final_return_and_bootstrap_spreads_it() {
        let returns = [0.05, -0.03, 0.02, -0.08, 0.1, 0.01, -0.02];
        let p = resample(&returns, &options(2000, Method::Permutation, 3)).unwrap();
        let product: f64 = returns.iter().map(|r| 1.0 + r).product::<f64>() - 1.0;
        for x in [p.final_return.p5, p.final_return.p50, p.final_return.p95] {
            assert!((x - product).abs() < 1e-12, "{x} vs {product}");
        }
        assert!(p.max_drawdown.p5 < p.max_drawdown.p95, "{:?}", p.max_drawdown);
        // Every order keeps the same profit.
        assert_eq!(p.probability_of_profit, if product > 0.0 { 1.0 } else { 0.0 });

        let b = resample(&returns, &options(2000, Method::Bootstrap, 3)).unwrap();
        assert!(
            b.final_return.p5 < product && product < b.final_return.p95,
            "{:?}",
            b.final_return
        );
        assert!(b.probability_of_profit > 0.0 && b.probability_of_profit < 1.0);
        assert!(b.final_return.p5 <= b.final_return.p50 && b.final_return.p50 <= b.final_return.p95);
    }

    #[test]
    fn ruin_counts_paths_that_touch_the_threshold() {
        // One return: every path is the same single trade.
        let d = resample(&[-0.5], &options(10, Method::Bootstrap, 1)).unwrap();
        assert_eq!((d.probability_of_ruin, d.probability_of_profit), (1.0, 0.0));
        let d = resample(
            &[-0.5],
            &MonteCarloOptions {
                ruin: 0.4999,
                ..options(10, Method::Bootstrap, 1)
            },
        )
        .unwrap();
        assert_eq!(d.probability_of_ruin, 1.0);
        let d = resample(
            &[-0.5],
            &MonteCarloOptions {
                ruin: 0.6,
                ..options(10, Method::Bootstrap, 1)
            },
        )
        .unwrap();
        assert_eq!(d.probability_of_ruin, 0.0);
        // Half the trades lose 60 %: with two draws, ruin unless both win
        // (p = 3/4 in expectation).
        let d = resample(&[-0.6, 0.1], &options(4000, Method::Bootstrap, 9)).unwrap();
        assert!(
            (d.probability_of_ruin - 0.75).abs() < 0.03,
            "{}",
            d.probability_of_ruin
        );
        assert!(
            (d.probability_of_profit - 0.25).abs() < 0.03,
            "{}",
            d.probability_of_profit
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_result() {
        let returns = [0.05, -0.03, 0.02, -0.08, 0.1];
        for method in [Method::Bootstrap, Method::Permutation] {
            let a = resample(&returns, &options(500, method, 11)).unwrap();
            assert_eq!(a, resample(&returns, &options(500, method, 11)).unwrap());
            assert_ne!(
                a.max_drawdown,
                resample(&returns, &options(500, method, 12))
                    .unwrap()
                    .max_drawdown
            );
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let check = |o: MonteCarloOptions, message: &str| {
            assert_eq!(resample(&[0.1], &o).unwrap_err().to_string(), message);
        };
        check(
            options(0, Method::Bootstrap, 0),
            "runs = 0 is invalid: a Monte Carlo study needs at least one run",
        );
        check(
            options(MAX_RUNS + 1, Method::Bootstrap, 0),
            "runs = 10000001 is invalid: at most 10000000 runs",
        );
        for ruin in [0.0, -0.5, 1.5, f64::NAN] {
            check(
                MonteCarloOptions { ruin, ..MonteCarloOptions::default() },
                &format!("ruin = {ruin} is invalid: the fraction of the initial cash lost that counts as ruin, in (0, 1]"),
            );
        }
        assert_eq!(
            "shuffle".parse::<Method>().unwrap_err().to_string(),
            "unknown method \"shuffle\" (expected bootstrap or permutation)"
        );
        assert_eq!("permutation".parse::<Method>(), Ok(Method::Permutation));
    }

    #[test]
    fn a_study_resamples_the_trades_of_the_backtest_with_the_base_parameters() {
        let mut study = testing::study(Guest::SmaCross, 2000, 2);
        study.base_params = testing::with(&study.base_params, &[("fast".into(), 5.0), ("slow".into(), 20.0)]);
        let rt = crate::executor(2).unwrap();
        let opts = MonteCarloOptions {
            runs: 3000,
            ..options(0, Method::Bootstrap, 4)
        };
        let report = rt.block_on(monte_carlo(&study, &opts)).unwrap();
        let alone = testing::backtest(&study, &study.base_params).report;
        assert_eq!(report.backtest, alone.stats);
        assert_eq!(report.trades, alone.trades.len());
        assert!(report.trades > 10, "{}", report.trades);
        assert_eq!(report.trade_returns, trade_returns(&alone).unwrap().0);
        let realized = alone.trades.iter().map(|t| t.pnl).sum::<f64>() / alone.initial_cash;
        close(report.distribution.observed.final_return, realized);
        assert_eq!(report.ruin_equity, 50_000.0);
        assert_eq!(report, rt.block_on(monte_carlo(&study, &opts)).unwrap());
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "final_return",
            "max_drawdown",
            "probability_of_profit",
            "probability_of_ruin",
            "observed",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }

        // A strategy that fails is reported as such.
        let mut failing = testing::study(Guest::Adversary, 30, 1);
        failing.base_params = testing::with(&failing.base_params, &[("mode".into(), 4.0)]);
        let err = rt.block_on(monte_carlo(&failing, &opts)).unwrap_err().to_string();
        assert!(
            err.starts_with("the backtest failed: guest_panic: adversary gave up at bar 0"),
            "{err}"
        );
        // One that closes no trade has nothing to resample.
        let idle = testing::study(Guest::Adversary, 30, 1);
        assert!(matches!(
            rt.block_on(monte_carlo(&idle, &opts)),
            Err(StudyError::NoTrades)
        ));
    }
}
