//! Walk-forward analysis: optimize on in-sample windows, test the chosen
//! parameters on the out-of-sample window that follows each, and measure
//! what survives (windows, efficiency, degradation, stability and robustness
//! are defined in the [module docs](super)). Every segment is a fresh
//! backtest: no position or indicator state carries over between windows.

use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use palisade_host_api::manifest::Warmup;
use serde::Serialize;

use crate::grid::{Grid, Search};
use crate::optimize::{
    assemble, candidates, grid_points, AxisJson, Candidate, Counts, Kept, SampleJson, VariantStatus,
};
use crate::study::{Objective, Study, StudyError};
use crate::variants::{run_all, Run, Tracker};
use palisade_backtest::stats::{mean, StatsInput};
use palisade_backtest::{BacktestReport, Dataset, EquityPoint, Stats};
use palisade_run::params::{ParamSet, Reported};
use palisade_run::{Failure, Policy};

/// How in-sample windows are laid out.
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
pub enum WindowMode {
    /// Each in-sample window is the `L_is` timestamps before its
    /// out-of-sample window.
    #[default]
    Rolling,
    /// Each in-sample window starts at the beginning of the data.
    Anchored,
}

impl WindowMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A mode name that is neither `rolling` nor `anchored`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {name:?} (expected rolling or anchored)")]
pub struct UnknownMode {
    pub name: String,
}

impl FromStr for WindowMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <WindowMode as strum::VariantArray>::VARIANTS
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode { name: s.to_string() })
    }
}

/// What a walk-forward study does.
#[derive(Clone, Debug, PartialEq)]
pub struct WalkForwardOptions {
    pub objective: Objective,
    /// Number of windows (at least 1).
    pub windows: usize,
    /// In-sample fraction `f` of a rolling window, in `(0, 1)`.
    pub in_sample: f64,
    pub mode: WindowMode,
    /// The grid points optimized in every window (a random sample is drawn
    /// once and used in all windows).
    pub search: Search,
}

impl Default for WalkForwardOptions {
    fn default() -> Self {
        WalkForwardOptions {
            objective: Objective::TotalReturn,
            windows: 5,
            in_sample: 0.7,
            mode: WindowMode::Rolling,
            search: Search::All,
        }
    }
}

/// A stretch of the data.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Timestamp of its first bar.
    pub start_ts: i64,
    /// Timestamp of its last bar.
    pub end_ts: i64,
    /// Distinct timestamps.
    pub bars: usize,
    /// Bar events (`bars` × symbols when every symbol has every timestamp).
    pub events: usize,
    #[serde(skip)]
    range: Range<usize>,
}

/// The parameters a window's in-sample optimization chose.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chosen {
    /// The variant's index in grid order.
    pub variant: usize,
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, f64>))]
    pub params: ParamSet,
    /// The objective over the in-sample segment.
    pub objective: f64,
    /// The in-sample backtest's statistics.
    pub stats: Stats,
}

/// The out-of-sample test of a window.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutOfSample {
    #[serde(flatten)]
    pub status: VariantStatus,
    pub objective: Option<f64>,
    /// Statistics of the backtest (of the part that ran, when it failed).
    pub stats: Stats,
}

/// One walk-forward window.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    pub index: usize,
    pub in_sample: Segment,
    pub out_of_sample: Segment,
    /// The in-sample variants by how they ended.
    pub counts: Counts,
    /// `None` when no in-sample variant had an objective value.
    pub chosen: Option<Chosen>,
    /// `None` when nothing was chosen.
    pub test: Option<OutOfSample>,
    /// `CAGR(OOS) / CAGR(IS)`.
    pub efficiency: Option<f64>,
    /// `(s(IS) − s(OOS)) / |s(IS)|` of the objective's score `s`.
    pub degradation: Option<f64>,
}

/// The out-of-sample windows chained (see the module docs).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stitched {
    /// Windows in the chain (tested and completed).
    pub windows: usize,
    pub final_equity: f64,
    pub stats: Stats,
    /// One point per timestamp of the chained windows (left out of JSON when
    /// empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub equity_curve: Vec<EquityPoint>,
}

/// How much one grid parameter's chosen value moved across windows.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stability {
    pub name: String,
    /// The value chosen in each window that chose parameters.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<f64>))]
    pub values: Vec<Reported>,
    pub mean: Option<f64>,
    /// Population standard deviation.
    pub stdev: Option<f64>,
    /// Coefficient of variation `stdev / |mean|`.
    pub cv: Option<f64>,
}

/// The result of a walk-forward study.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WalkForwardReport {
    pub objective: Objective,
    pub minimize: bool,
    pub mode: WindowMode,
    pub in_sample: f64,
    pub grid: Vec<AxisJson>,
    pub grid_size: u64,
    pub sample: Option<SampleJson>,
    /// The largest warm-up over the grid, in bars.
    pub warmup: u64,
    pub windows: Vec<Window>,
    /// `None` when no window completed its test.
    pub stitched: Option<Stitched>,
    /// Walk-forward efficiency.
    pub efficiency: Option<f64>,
    pub degradation: Option<f64>,
    /// Fraction of windows with a positive out-of-sample return.
    pub profitable_windows: f64,
    pub stability: Vec<Stability>,
    /// In `[0, 1]`.
    pub robustness: f64,
}

/// The event index of the first bar of each timestamp, then the data's
/// length.
fn timestamp_starts(data: &Dataset) -> Vec<usize> {
    let bars = data.bars();
    let mut starts: Vec<usize> = (0..bars.len())
        .filter(|&i| i == 0 || bars[i].ts != bars[i - 1].ts)
        .collect();
    starts.push(bars.len());
    starts
}

/// Timestamps `[start, end)` of an in-sample and its out-of-sample segment.
pub(crate) type Split = (Range<usize>, Range<usize>);

/// Window segments in timestamps, one [`Split`] per window.
pub(crate) fn split(
    timestamps: usize,
    windows: usize,
    in_sample: f64,
    mode: WindowMode,
) -> Result<Vec<Split>, StudyError> {
    let t = timestamps as f64;
    let f = in_sample;
    let oos = (t * (1.0 - f) / (windows as f64 * (1.0 - f) + f)).floor() as usize;
    if oos == 0 {
        return Err(StudyError::NotEnoughData {
            windows,
            in_sample,
            timestamps,
            oos_bars: 0,
        });
    }
    let is_len = timestamps - windows * oos;
    Ok((0..windows)
        .map(|k| {
            let test = is_len + k * oos..is_len + (k + 1) * oos;
            let train = match mode {
                WindowMode::Rolling => k * oos..test.start,
                WindowMode::Anchored => 0..test.start,
            };
            (train, test)
        })
        .collect())
}

/// The largest warm-up of the candidates that may run, and where it comes
/// from.
fn warmup(study: &Study, candidates: &[Candidate]) -> (u64, String) {
    match &study.strategy.info.manifest.warmup {
        None => (0, "none declared".into()),
        Some(Warmup::Bars(n)) => (*n, format!("warmup = {n}")),
        Some(Warmup::Param(name)) => {
            let value =
                |params: &[(String, f64)]| params.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v);
            let most = candidates
                .iter()
                .filter(|c| c.rejected.is_none())
                .map(|c| value(&c.params))
                .fold(value(&study.base_params), f64::max)
                .max(0.0);
            let bars = most.ceil() as u64;
            (
                bars,
                format!("parameter {name} = {bars}, the largest in the grid"),
            )
        }
    }
}

fn segment(data: &Dataset, starts: &[usize], range: &Range<usize>) -> Segment {
    let events = starts[range.start]..starts[range.end];
    Segment {
        start_ts: data.bars()[events.start].ts,
        end_ts: data.bars()[events.end - 1].ts,
        bars: range.len(),
        events: events.len(),
        range: events,
    }
}

fn stability(name: &str, values: Vec<f64>, integer: bool) -> Stability {
    let mu = mean(&values);
    let sigma = mu.map(|m| {
        let squares: Vec<f64> = values.iter().map(|v| (v - m) * (v - m)).collect();
        mean(&squares).unwrap_or(0.0).sqrt()
    });
    let cv = match (mu, sigma) {
        (Some(_), Some(0.0)) => Some(0.0),
        (Some(m), Some(s)) if m != 0.0 => Some(s / m.abs()),
        _ => None,
    };
    Stability {
        name: name.to_string(),
        values: values
            .into_iter()
            .map(|value| Reported { value, integer })
            .collect(),
        mean: mu,
        stdev: sigma,
        cv,
    }
}

/// Chains completed out-of-sample reports (in window order).
fn stitch(reports: &[&BacktestReport], periods_per_year: f64) -> Option<Stitched> {
    let first = reports.first()?;
    let cash = first.initial_cash;
    let mut factor = 1.0;
    let mut curve = Vec::new();
    let mut trades = Vec::new();
    let (mut exposed, mut fills) = (0usize, 0usize);
    for r in reports {
        curve.extend(r.equity_curve.iter().map(|p| EquityPoint {
            ts: p.ts,
            equity: p.equity * factor,
        }));
        let last = r.equity_curve.last().map_or(r.final_equity, |p| p.equity);
        factor *= last / r.initial_cash;
        trades.extend(r.trades.iter().cloned());
        exposed += r
            .stats
            .exposure
            .map_or(0, |e| (e * r.stats.periods as f64).round() as usize);
        fills += r.fills;
    }
    let stats = Stats::compute(&StatsInput {
        initial_cash: cash,
        periods_per_year,
        equity: &curve,
        exposed_points: exposed,
        trades: &trades,
        fills,
    });
    Some(Stitched {
        windows: reports.len(),
        final_equity: cash * factor,
        stats,
        equity_curve: curve,
    })
}

impl WalkForwardOptions {
    /// Checks the options against the grid, the policy and the data before
    /// anything runs: the errors [`walk_forward`] would give before its
    /// first run (all but the strategy's warm-up), with the same messages.
    pub fn check(&self, grid: &Grid, policy: &Policy, data: &Dataset) -> Result<(), StudyError> {
        self.check_options()?;
        grid_points(policy, grid, self.search, self.windows as u64, |p| {
            self.describe(p)
        })?;
        split(
            timestamp_starts(data).len() - 1,
            self.windows,
            self.in_sample,
            self.mode,
        )?;
        Ok(())
    }

    fn check_options(&self) -> Result<(), StudyError> {
        if self.windows == 0 {
            return Err(StudyError::InvalidOption {
                option: "windows",
                value: "0".into(),
                expected: "at least one window",
            });
        }
        if !(self.in_sample > 0.0 && self.in_sample < 1.0) {
            return Err(StudyError::InvalidOption {
                option: "in_sample",
                value: self.in_sample.to_string(),
                expected: "the in-sample fraction of a window, strictly between 0 and 1",
            });
        }
        Ok(())
    }

    fn describe(&self, points: u64) -> String {
        format!(
            "walk-forward over {} windows of {points} grid points",
            self.windows
        )
    }
}

/// Runs a walk-forward study of `grid` over `study.data`.
///
/// Must be awaited inside a tokio runtime (see [`crate::executor`]).
pub async fn walk_forward(
    study: &Study,
    grid: &Grid,
    options: &WalkForwardOptions,
) -> Result<WalkForwardReport, StudyError> {
    options.check_options()?;
    let n = options.windows;
    let candidates = candidates(study, grid, options.search, n as u64, |p| options.describe(p))?;
    let data = &study.data;
    let starts = timestamp_starts(data);
    let splits = split(starts.len() - 1, n, options.in_sample, options.mode)?;
    let (warmup, warmup_source) = warmup(study, &candidates);
    let (is_bars, oos_bars) = (splits[0].0.len(), splits[0].1.len());
    if (is_bars.min(oos_bars) as u64) <= warmup {
        return Err(StudyError::WindowsTooShort {
            in_sample_bars: is_bars,
            oos_bars,
            warmup,
            warmup_source,
        });
    }
    let segments: Vec<(Segment, Segment)> = splits
        .iter()
        .map(|(a, b)| (segment(data, &starts, a), segment(data, &starts, b)))
        .collect();

    // In-sample: every window's variants in one parallel batch.
    let accepted: Vec<&Candidate> = candidates.iter().filter(|c| c.rejected.is_none()).collect();
    let tracker = Tracker::new((n * (accepted.len() + 1)) as u64, study.progress.clone());
    let mut planned = Vec::with_capacity(n * accepted.len());
    for (train, _) in &segments {
        let slice = Arc::new(data.slice(train.range.clone()));
        planned.extend(accepted.iter().map(|c| Run {
            params: c.params.clone(),
            data: slice.clone(),
        }));
    }
    let mut runs = run_all(study, planned, &tracker, |_, out| Kept::stats_only(out))
        .await?
        .into_iter();
    let mut windows = Vec::with_capacity(n);
    let mut tests = Vec::new();
    for (index, (train, test)) in segments.into_iter().enumerate() {
        let (variants, ranking) =
            assemble(&candidates, runs.by_ref().take(accepted.len()), options.objective);
        let chosen = ranking.first().and_then(|&i| {
            let v = &variants[i];
            Some(Chosen {
                variant: i,
                params: v.params.clone(),
                objective: v.objective?,
                stats: v.stats.clone()?,
            })
        });
        match &chosen {
            Some(c) => tests.push((
                index,
                Run {
                    params: candidates[c.variant].params.clone(),
                    data: Arc::new(data.slice(test.range.clone())),
                },
            )),
            None => tracker.tick(),
        }
        windows.push(Window {
            index,
            in_sample: train,
            out_of_sample: test,
            counts: Counts::of(&variants),
            chosen,
            test: None,
            efficiency: None,
            degradation: None,
        });
    }

    // Out-of-sample: the chosen parameters of every window, in parallel.
    let (tested, planned): (Vec<usize>, Vec<Run>) = tests.into_iter().unzip();
    let outcomes: Vec<(Result<(), Failure>, BacktestReport)> =
        run_all(study, planned, &tracker, |_, out| (out.outcome, out.report)).await?;
    let mut completed = Vec::new();
    for (&index, (outcome, report)) in tested.iter().zip(&outcomes) {
        let w = &mut windows[index];
        let chosen = w.chosen.as_ref().expect("tested windows chose parameters");
        let status = match outcome {
            Ok(()) => VariantStatus::Ok,
            Err(f) => VariantStatus::Failed {
                cause: f.cause,
                message: f.message.clone(),
            },
        };
        let objective = outcome
            .is_ok()
            .then(|| options.objective.value(&report.stats))
            .flatten();
        if outcome.is_ok() {
            completed.push((index, report));
            w.efficiency = match (report.stats.cagr, chosen.stats.cagr) {
                (Some(oos), Some(is)) if is > 0.0 => Some(oos / is),
                _ => None,
            };
            let s_is = options.objective.score(chosen.objective);
            w.degradation = objective
                .filter(|_| s_is != 0.0)
                .map(|o| (s_is - options.objective.score(o)) / s_is.abs());
        }
        w.test = Some(OutOfSample {
            status,
            objective,
            stats: report.stats.clone(),
        });
    }

    let reports: Vec<&BacktestReport> = completed.iter().map(|(_, r)| *r).collect();
    let stitched = stitch(&reports, study.backtest.periods_per_year);
    let is_cagrs: Vec<f64> = completed
        .iter()
        .filter_map(|(i, _)| windows[*i].chosen.as_ref().and_then(|c| c.stats.cagr))
        .collect();
    let efficiency = match (stitched.as_ref().and_then(|s| s.stats.cagr), mean(&is_cagrs)) {
        (Some(oos), Some(is)) if is > 0.0 && is_cagrs.len() == completed.len() => Some(oos / is),
        _ => None,
    };
    let degradations: Vec<f64> = windows.iter().filter_map(|w| w.degradation).collect();
    let profitable = completed
        .iter()
        .filter(|(_, r)| r.stats.total_return > 0.0)
        .count() as f64
        / n as f64;
    let stability: Vec<Stability> = grid
        .axes()
        .iter()
        .map(|axis| {
            let values = windows
                .iter()
                .filter_map(|w| w.chosen.as_ref().and_then(|c| c.params.get(&axis.name)))
                .collect();
            self::stability(&axis.name, values, axis.integer)
        })
        .collect();
    let any_chosen = windows.iter().any(|w| w.chosen.is_some());
    let stable_part = if any_chosen && !stability.is_empty() {
        stability
            .iter()
            .map(|s| s.cv.map_or(0.0, |cv| 1.0 / (1.0 + cv)))
            .sum::<f64>()
            / stability.len() as f64
    } else {
        0.0
    };
    let robustness = (profitable + efficiency.map_or(0.0, |e| e.clamp(0.0, 1.0)) + stable_part) / 3.0;
    Ok(WalkForwardReport {
        objective: options.objective,
        minimize: options.objective.minimize(),
        mode: options.mode,
        in_sample: options.in_sample,
        grid: grid.axes().iter().map(AxisJson::from).collect(),
        grid_size: grid.size(),
        sample: SampleJson::of(options.search),
        warmup,
        windows,
        stitched,
        efficiency,
        degradation: mean(&degradations),
        profitable_windows: profitable,
        stability,
        robustness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::{optimize, OptimizeOptions};
    use crate::testing::{self, Guest};

    fn check_split(t: usize, n: usize, f: f64, mode: WindowMode, expected: &[Split]) {
        assert_eq!(
            split(t, n, f, mode).unwrap(),
            expected,
            "T={t} N={n} f={f} {mode}"
        );
    }

    #[test]
    fn windows_tile_the_data_with_contiguous_out_of_sample_segments() {
        use WindowMode::*;
        // T=1000, N=4, f=0.75: L_oos = floor(250 / 1.75) = 142, L_is = 432.
        check_split(
            1000,
            4,
            0.75,
            Rolling,
            &[
                (0..432, 432..574),
                (142..574, 574..716),
                (284..716, 716..858),
                (426..858, 858..1000),
            ],
        );
        check_split(
            1000,
            4,
            0.75,
            Anchored,
            &[
                (0..432, 432..574),
                (0..574, 574..716),
                (0..716, 716..858),
                (0..858, 858..1000),
            ],
        );
        // One window is a plain split: L_oos = floor(100 × 0.3 / 1) = 30.
        check_split(100, 1, 0.7, Rolling, &[(0..70, 70..100)]);
        // f = 0.5: in- and out-of-sample of equal length (remainder in-sample).
        check_split(10, 3, 0.5, Rolling, &[(0..4, 4..6), (2..6, 6..8), (4..8, 8..10)]);
        assert_eq!(
            split(3, 5, 0.7, Rolling).unwrap_err().to_string(),
            "not enough data for 5 walk-forward windows with in-sample fraction 0.7: 3 timestamps give \
             out-of-sample windows of 0 bars"
        );
    }

    fn run(
        study: &Study,
        grid: &[&str],
        options: &WalkForwardOptions,
    ) -> Result<WalkForwardReport, StudyError> {
        let g = Grid::parse(&study.strategy.info.manifest, grid).unwrap();
        crate::executor(study.threads)
            .unwrap()
            .block_on(walk_forward(study, &g, options))
    }

    #[test]
    fn each_window_optimizes_in_sample_and_tests_the_best_out_of_sample() {
        let study = testing::study(Guest::SmaCross, 3000, 2);
        let grid = ["fast=3:15:4", "slow=20:60:20"];
        let options = WalkForwardOptions {
            windows: 3,
            in_sample: 0.6,
            ..WalkForwardOptions::default()
        };
        let report = run(&study, &grid, &options).unwrap();
        assert_eq!(report.windows.len(), 3);
        assert_eq!(report.warmup, 60);
        let g = Grid::parse(&study.strategy.info.manifest, &grid).unwrap();
        let rt = crate::executor(2).unwrap();
        for w in &report.windows {
            // The in-sample choice is the best of an optimization over the
            // same segment.
            let train = Arc::new(study.data.slice(w.in_sample.range.clone()));
            let alone = Study {
                data: train,
                ..study.clone()
            };
            let opt = rt
                .block_on(optimize(&alone, &g, &OptimizeOptions::default()))
                .unwrap();
            let best = opt.best().unwrap();
            let chosen = w.chosen.as_ref().unwrap();
            assert_eq!((chosen.variant, &chosen.params), (best.index, &best.params));
            assert_eq!(Some(chosen.objective), best.objective);
            // The test is a standalone backtest of those parameters on the
            // out-of-sample segment.
            let params = testing::with(&study.base_params, &chosen.params.values());
            let test_data = Arc::new(study.data.slice(w.out_of_sample.range.clone()));
            let oos = testing::backtest_on(&study, test_data, &params);
            let test = w.test.as_ref().unwrap();
            assert_eq!(test.status, VariantStatus::Ok);
            assert_eq!(test.stats, oos.report.stats);
            assert_eq!(test.objective, Some(oos.report.stats.total_return));
            assert_eq!(w.out_of_sample.bars, w.out_of_sample.events);
            assert_eq!(
                w.counts,
                Counts {
                    ok: 12,
                    failed: 0,
                    rejected: 0
                }
            );
            let expected_wfe = match (oos.report.stats.cagr, chosen.stats.cagr) {
                (Some(o), Some(i)) if i > 0.0 => Some(o / i),
                _ => None,
            };
            assert_eq!(w.efficiency, expected_wfe);
        }
        // Consecutive out-of-sample windows, ending with the data.
        let last = study.data.bars().last().unwrap().ts;
        assert_eq!(report.windows[2].out_of_sample.end_ts, last);
        for pair in report.windows.windows(2) {
            assert_eq!(pair[0].out_of_sample.range.end, pair[1].out_of_sample.range.start);
        }

        // The stitched curve compounds the windows' returns.
        let stitched = report.stitched.as_ref().unwrap();
        assert_eq!(stitched.windows, 3);
        let product: f64 = report
            .windows
            .iter()
            .map(|w| 1.0 + w.test.as_ref().unwrap().stats.total_return)
            .product();
        assert!((stitched.stats.total_return - (product - 1.0)).abs() < 1e-12);
        assert_eq!(
            stitched.equity_curve.len(),
            report.windows.iter().map(|w| w.out_of_sample.bars).sum::<usize>()
        );
        let trades: usize = report
            .windows
            .iter()
            .map(|w| w.test.as_ref().unwrap().stats.trade_count)
            .sum();
        assert_eq!(stitched.stats.trade_count, trades);

        // Summary numbers follow their definitions.
        let is_cagr: Vec<f64> = report
            .windows
            .iter()
            .map(|w| w.chosen.as_ref().unwrap().stats.cagr.unwrap())
            .collect();
        let is_mean = is_cagr.iter().sum::<f64>() / 3.0;
        match report.efficiency {
            Some(e) => assert!((e - stitched.stats.cagr.unwrap() / is_mean).abs() < 1e-12),
            None => assert!(is_mean <= 0.0),
        }
        let profitable = report
            .windows
            .iter()
            .filter(|w| w.test.as_ref().unwrap().stats.total_return > 0.0)
            .count();
        assert_eq!(report.profitable_windows, profitable as f64 / 3.0);
        assert_eq!(report.stability.len(), 2);
        for s in &report.stability {
            assert_eq!(s.values.len(), 3);
        }
        assert!((0.0..=1.0).contains(&report.robustness), "{}", report.robustness);
        let stable = report
            .stability
            .iter()
            .map(|s| 1.0 / (1.0 + s.cv.unwrap()))
            .sum::<f64>()
            / 2.0;
        let expected =
            (report.profitable_windows + report.efficiency.unwrap_or(0.0).clamp(0.0, 1.0) + stable) / 3.0;
        assert!((report.robustness - expected).abs() < 1e-12);

        // Anchored windows grow from the start; the tests are the same segments.
        let anchored = run(
            &study,
            &grid,
            &WalkForwardOptions {
                mode: WindowMode::Anchored,
                ..options.clone()
            },
        )
        .unwrap();
        for (a, r) in anchored.windows.iter().zip(&report.windows) {
            assert_eq!(a.in_sample.range.start, 0);
            assert_eq!(a.in_sample.range.end, r.in_sample.range.end);
            assert_eq!(a.out_of_sample, r.out_of_sample);
        }
        // Same inputs, same result, whatever the threads.
        let one = Study {
            threads: 1,
            ..study.clone()
        };
        assert_eq!(run(&one, &grid, &options).unwrap(), report);
    }

    #[test]
    fn stability_is_the_coefficient_of_variation_of_the_choices() {
        let s = stability("fast", vec![10.0, 20.0, 30.0], true);
        assert_eq!(s.mean, Some(20.0));
        assert!((s.stdev.unwrap() - (200.0_f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.cv.unwrap() - (200.0_f64 / 3.0).sqrt() / 20.0).abs() < 1e-12);
        assert_eq!(stability("k", vec![5.0, 5.0], false).cv, Some(0.0));
        assert_eq!(stability("k", vec![0.0, 0.0], false).cv, Some(0.0));
        assert_eq!(stability("k", vec![-1.0, 1.0], false).cv, None);
        assert_eq!(stability("k", vec![], false).cv, None);
    }

    #[test]
    fn windows_too_short_for_the_warm_up_are_refused() {
        let study = testing::study(Guest::SmaCross, 600, 1);
        // T=600, N=5, f=0.7: L_oos = floor(180 / 2.2) = 81, L_is = 195. The
        // warm-up is the largest slow in the grid.
        let options = WalkForwardOptions::default();
        let err = run(&study, &["fast=5", "slow=50,81"], &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "walk-forward windows are too short for the strategy's warm-up: in-sample windows hold 195 bars \
             and out-of-sample windows 81, but the strategy needs 81 bars of warm-up (parameter slow = 81, \
             the largest in the grid) and at least one more to act; use fewer windows, a different \
             --in-sample fraction, more data or a shorter warm-up"
        );
        assert!(run(&study, &["fast=5", "slow=50,80"], &options).is_ok());
        // A rejected value does not count (slow is declared >= 2... and at
        // most 5000).
        assert!(run(&study, &["fast=5", "slow=50,80,6000"], &options).is_ok());
    }

    #[test]
    fn bad_options_are_refused() {
        let study = testing::study(Guest::SmaCross, 300, 1);
        let check = |options: WalkForwardOptions, message: &str| {
            assert_eq!(
                run(&study, &["fast=5"], &options).unwrap_err().to_string(),
                message
            );
        };
        check(
            WalkForwardOptions {
                windows: 0,
                ..Default::default()
            },
            "windows = 0 is invalid: at least one window",
        );
        for f in [0.0, 1.0, -0.2, f64::NAN] {
            check(
                WalkForwardOptions { in_sample: f, ..Default::default() },
                &format!("in_sample = {f} is invalid: the in-sample fraction of a window, strictly between 0 and 1"),
            );
        }
        let mut limited = study.clone();
        limited.policy = Arc::new(palisade_run::Policy {
            max_variants: 20,
            ..Default::default()
        });
        let g = Grid::parse(&study.strategy.info.manifest, &["fast=2:6:1"]).unwrap();
        let err = crate::executor(1)
            .unwrap()
            .block_on(walk_forward(&limited, &g, &WalkForwardOptions::default()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "walk-forward over 5 windows of 5 grid points has 25 variants, more than policy default allows \
             (max_variants = 20); narrow the grid or draw fewer with --samples"
        );
        assert_eq!(
            "sliding".parse::<WindowMode>().unwrap_err().to_string(),
            "unknown mode \"sliding\" (expected rolling or anchored)"
        );
    }

    #[test]
    fn a_window_without_a_usable_variant_is_reported_untested() {
        let study = testing::study(Guest::SmaCross, 1000, 2);
        // fast >= slow everywhere: the strategy refuses every variant.
        let report = run(
            &study,
            &["fast=30,40", "slow=20"],
            &WalkForwardOptions {
                windows: 2,
                ..Default::default()
            },
        )
        .unwrap();
        for w in &report.windows {
            assert_eq!(
                w.counts,
                Counts {
                    ok: 0,
                    failed: 2,
                    rejected: 0
                }
            );
            assert_eq!((&w.chosen, &w.test), (&None, &None));
        }
        assert_eq!(report.stitched, None);
        assert_eq!(
            (report.efficiency, report.profitable_windows, report.robustness),
            (None, 0.0, 0.0)
        );
    }
}
