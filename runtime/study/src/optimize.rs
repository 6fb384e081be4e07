//! Grid and random search: run every chosen point of a [`Grid`] as its own
//! sandboxed backtest and rank the variants by an [`Objective`] (see the
//! [module docs](super) for the ranking rules). It keeps statistics, not
//! equity curves, and does not retry failed variants.

use serde::Serialize;

use crate::grid::{Axis, Grid, Search};
use crate::study::{rank, Objective, Study, StudyError};
use crate::variants::{run_all, Run, Tracker};
use palisade_backtest::{BacktestReport, Stats};
use palisade_run::params::{ParamSet, Reported};
use palisade_run::{params, Cause, Failure, Policy, RunOutput};

/// How an optimization runs and what it keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizeOptions {
    pub objective: Objective,
    /// How many of the best variants [`OptimizeReport::top`] lists.
    pub top: usize,
    pub search: Search,
    /// Keep each variant's whole report (trades, positions; not the equity
    /// curve) in [`Variant::report`]. Off by default: a large grid's trades
    /// take memory, and the statistics are kept anyway.
    pub keep_reports: bool,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            objective: Objective::TotalReturn,
            top: 10,
            search: Search::All,
            keep_reports: false,
        }
    }
}

/// How a variant ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VariantStatus {
    /// The backtest completed.
    Ok,
    /// The backtest stopped with a classified failure (including
    /// `invalid_params`: the strategy refused the combination).
    Failed { cause: Cause, message: String },
    /// A value breaks the parameter's declared type or range; not run.
    Rejected { message: String },
}

/// One point of the grid and its result.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variant {
    /// Position in the study's run order (grid order).
    pub index: usize,
    /// Position in the full grid (differs from `index` for a random search).
    pub grid_index: u64,
    /// The grid parameters' values; the others are the study's base values.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, f64>))]
    pub params: ParamSet,
    #[serde(flatten)]
    pub status: VariantStatus,
    /// The objective's value; `None` when the variant did not complete or the
    /// statistic is undefined.
    pub objective: Option<f64>,
    /// 1 for the best variant; every variant has a distinct rank.
    pub rank: usize,
    /// Statistics of a completed backtest.
    pub stats: Option<Stats>,
    /// The whole report, when [`OptimizeOptions::keep_reports`] is set (also
    /// for failed runs: the report up to where they stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<BacktestReport>,
}

/// Variants by how they ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub rejected: usize,
}

impl Counts {
    pub(crate) fn of(variants: &[Variant]) -> Counts {
        let mut c = Counts::default();
        for v in variants {
            match v.status {
                VariantStatus::Ok => c.ok += 1,
                VariantStatus::Failed { .. } => c.failed += 1,
                VariantStatus::Rejected { .. } => c.rejected += 1,
            }
        }
        c
    }
}

/// The result of an optimization.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OptimizeReport {
    pub objective: Objective,
    /// True when smaller objective values are better.
    pub minimize: bool,
    /// The grid's axes.
    pub grid: Vec<AxisJson>,
    /// Points in the full grid.
    pub grid_size: u64,
    /// `null` for a full search, else the sample size and seed.
    pub sample: Option<SampleJson>,
    pub counts: Counts,
    /// Every variant, in index order.
    pub variants: Vec<Variant>,
    /// Indices of the best variants, best first (at most
    /// [`OptimizeOptions::top`]; only variants with an objective value).
    pub top: Vec<usize>,
}

impl OptimizeReport {
    /// The best variant, if any has an objective value.
    pub fn best(&self) -> Option<&Variant> {
        self.top.first().map(|&i| &self.variants[i])
    }
}

/// An axis as reported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AxisJson {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<f64>))]
    pub values: Vec<Reported>,
}

impl From<&Axis> for AxisJson {
    fn from(a: &Axis) -> Self {
        AxisJson {
            name: a.name.clone(),
            values: a
                .values
                .iter()
                .map(|&value| Reported {
                    value,
                    integer: a.integer,
                })
                .collect(),
        }
    }
}

/// A random search as reported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SampleJson {
    pub samples: u64,
    pub seed: u64,
}

impl SampleJson {
    pub(crate) fn of(search: Search) -> Option<SampleJson> {
        match search {
            Search::All => None,
            Search::Random { samples, seed } => Some(SampleJson { samples, seed }),
        }
    }
}

/// A grid point made into the parameters of a run.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub grid_index: u64,
    pub values: ParamSet,
    /// Every declared parameter's value.
    pub params: Vec<(String, f64)>,
    /// Why it may not run, when a value breaks its declaration.
    pub rejected: Option<String>,
}

/// The points `search` picks in `grid`, with the study's base values for the
/// other parameters. `runs_per_point` is how many times the study runs each
/// point (walk-forward: once per window); the total is checked against the
/// policy's `max_variants` before anything is allocated.
pub(crate) fn candidates(
    study: &Study,
    grid: &Grid,
    search: Search,
    runs_per_point: u64,
    what: impl FnOnce(u64) -> String,
) -> Result<Vec<Candidate>, StudyError> {
    let points = grid_points(&study.policy, grid, search, runs_per_point, what)?;
    let manifest = &study.strategy.info.manifest;
    let mut out = Vec::with_capacity(points as usize);
    for grid_index in search.indices(grid.size())? {
        let point = grid.point(grid_index);
        let mut params = study.base_params.clone();
        let mut rejected = None;
        for (name, &value) in grid.names().zip(&point) {
            let spec = params::spec(manifest, name)?;
            if let Err(e) = params::check_value(spec, value) {
                rejected.get_or_insert_with(|| e.to_string());
            }
            match params.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => params.push((name.to_string(), value)),
            }
        }
        let values = ParamSet(
            grid.axes()
                .iter()
                .zip(point)
                .map(|(a, value)| {
                    let integer = a.integer;
                    (a.name.clone(), Reported { value, integer })
                })
                .collect(),
        );
        out.push(Candidate {
            grid_index,
            values,
            params,
            rejected,
        });
    }
    Ok(out)
}

/// What a study keeps of one run.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub outcome: Result<(), Failure>,
    pub stats: Stats,
    pub report: Option<BacktestReport>,
}

impl Kept {
    pub fn stats_only(out: RunOutput) -> Kept {
        Kept {
            outcome: out.outcome,
            stats: out.report.stats,
            report: None,
        }
    }

    pub fn with_report(out: RunOutput) -> Kept {
        Kept {
            outcome: out.outcome,
            stats: out.report.stats.clone(),
            report: Some(out.report.without_curve()),
        }
    }
}

/// The variants of `candidates`, given the runs of those not rejected (in
/// order), ranked.
pub(crate) fn assemble(
    candidates: &[Candidate],
    runs: impl IntoIterator<Item = Kept>,
    objective: Objective,
) -> (Vec<Variant>, Vec<usize>) {
    let mut runs = runs.into_iter();
    let mut variants: Vec<Variant> = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let (status, stats, report) = match &c.rejected {
                Some(message) => (
                    VariantStatus::Rejected {
                        message: message.clone(),
                    },
                    None,
                    None,
                ),
                None => {
                    let kept = runs.next().expect("one run per candidate that is not rejected");
                    match kept.outcome {
                        Ok(()) => (VariantStatus::Ok, Some(kept.stats), kept.report),
                        Err(f) => (
                            VariantStatus::Failed {
                                cause: f.cause,
                                message: f.message,
                            },
                            None,
                            kept.report,
                        ),
                    }
                }
            };
            Variant {
                index,
                grid_index: c.grid_index,
                params: c.values.clone(),
                objective: stats.as_ref().and_then(|s| objective.value(s)),
                status,
                rank: 0,
                stats,
                report,
            }
        })
        .collect();
    let values: Vec<Option<f64>> = variants.iter().map(|v| v.objective).collect();
    let ranking = rank(objective, &values);
    for (position, &i) in ranking.iter().enumerate() {
        variants[i].rank = position + 1;
    }
    (variants, ranking)
}

/// The grid points a study runs (`runs_per_point` runs each), refused
/// when the runs are more than `policy.max_variants`.
pub(crate) fn grid_points(
    policy: &Policy,
    grid: &Grid,
    search: Search,
    runs_per_point: u64,
    what: impl FnOnce(u64) -> String,
) -> Result<u64, StudyError> {
    let points = search.count(grid.size())?;
    let total = points.saturating_mul(runs_per_point);
    if total > policy.max_variants {
        return Err(StudyError::TooManyVariants {
            what: what(points),
            count: total,
            limit: policy.max_variants,
            policy: policy.name.clone(),
        });
    }
    Ok(points)
}

impl OptimizeOptions {
    /// Checks the options against the grid and the policy before anything
    /// runs: the errors [`optimize`] would give, with the same messages.
    pub fn check(&self, grid: &Grid, policy: &Policy) -> Result<(), StudyError> {
        grid_points(policy, grid, self.search, 1, |_| self.describe(grid))?;
        Ok(())
    }

    fn describe(&self, grid: &Grid) -> String {
        match self.search {
            Search::All => "the grid".to_string(),
            Search::Random { .. } => format!("the sample of the grid's {} points", grid.size()),
        }
    }
}

/// Runs the points of `grid` that `options.search` picks, each as a backtest
/// of `study`'s strategy over `study.data`, and ranks them.
///
/// Must be awaited inside a tokio runtime (see [`crate::executor`]).
pub async fn optimize(
    study: &Study,
    grid: &Grid,
    options: &OptimizeOptions,
) -> Result<OptimizeReport, StudyError> {
    let candidates = candidates(study, grid, options.search, 1, |_| options.describe(grid))?;
    let runs: Vec<Run> = candidates
        .iter()
        .filter(|c| c.rejected.is_none())
        .map(|c| Run {
            params: c.params.clone(),
            data: study.data.clone(),
        })
        .collect();
    let tracker = Tracker::new(runs.len() as u64, study.progress.clone());
    let runs = if options.keep_reports {
        run_all(study, runs, &tracker, |_, out| Kept::with_report(out)).await?
    } else {
        run_all(study, runs, &tracker, |_, out| Kept::stats_only(out)).await?
    };
    let (variants, ranking) = assemble(&candidates, runs, options.objective);
    let top = ranking
        .into_iter()
        .filter(|&i| variants[i].objective.is_some())
        .take(options.top)
        .collect();
    Ok(OptimizeReport {
        objective: options.objective,
        minimize: options.objective.minimize(),
        grid: grid.axes().iter().map(AxisJson::from).collect(),
        grid_size: grid.size(),
        sample: SampleJson::of(options.search),
        counts: Counts::of(&variants),
        variants,
        top,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testing::{self, Guest};

    fn grid(study: &Study, args: &[&str]) -> Grid {
        Grid::parse(&study.strategy.info.manifest, args).unwrap()
    }

    fn run(study: &Study, grid: &Grid, options: &OptimizeOptions) -> Result<OptimizeReport, StudyError> {
        let rt = crate::executor(study.threads).unwrap();
        rt.block_on(optimize(study, grid, options))
    }

    #[test]
    fn every_variant_equals_a_standalone_backtest_with_its_parameters() {
        let study = testing::study(Guest::SmaCross, 1500, 2);
        let g = grid(&study, &["fast=3:12:3", "slow=10,20,40"]);
        let options = OptimizeOptions {
            keep_reports: true,
            ..OptimizeOptions::default()
        };
        let report = run(&study, &g, &options).unwrap();
        assert_eq!(report.variants.len(), 12);
        assert_eq!(
            report.counts,
            Counts {
                ok: 11,
                failed: 1,
                rejected: 0
            }
        );
        let mut traded = 0;
        for v in &report.variants {
            let params = testing::with(&study.base_params, &v.params.values());
            let alone = testing::backtest(&study, &params);
            let report_of_variant = v.report.as_ref().expect("kept");
            assert_eq!(
                serde_json::to_value(report_of_variant).unwrap(),
                serde_json::to_value(alone.report.without_curve()).unwrap(),
                "variant {} ({})",
                v.index,
                v.params
            );
            match (&v.status, &alone.outcome) {
                (VariantStatus::Ok, Ok(())) => {
                    assert_eq!(v.stats.as_ref(), Some(&report_of_variant.stats));
                    assert_eq!(v.objective, Some(report_of_variant.stats.total_return));
                }
                (VariantStatus::Failed { cause, message }, Err(f)) => {
                    assert_eq!((cause, message), (&f.cause, &f.message));
                }
                (status, outcome) => panic!("variant {}: {status:?} vs standalone {outcome:?}", v.index),
            }
            traded += usize::from(report_of_variant.stats.trade_count > 0);
        }
        assert!(
            traded >= 10,
            "the data should make most variants trade ({traded})"
        );
    }

    #[test]
    fn a_refused_combination_is_reported_with_its_cause_and_the_study_goes_on() {
        let study = testing::study(Guest::SmaCross, 400, 2);
        let report = run(
            &study,
            &grid(&study, &["fast=5,30", "slow=20"]),
            &OptimizeOptions::default(),
        )
        .unwrap();
        let [ok, refused] = &report.variants[..] else {
            panic!("{report:?}")
        };
        assert_eq!(ok.status, VariantStatus::Ok);
        assert_eq!(
            refused.status,
            VariantStatus::Failed {
                cause: Cause::InvalidParams,
                message: "fast (30) must be less than slow (20)".into()
            }
        );
        assert_eq!((ok.rank, refused.rank), (1, 2));
        assert_eq!(refused.objective, None);
        assert_eq!(report.top, [0]);
    }

    #[test]
    fn values_outside_declared_ranges_are_rejected_not_dropped() {
        let study = testing::study(Guest::SmaCross, 400, 2);
        // fast is declared 1..=1000; 0 and 2.5 (not an int) break it.
        let report = run(
            &study,
            &grid(&study, &["fast=0,2.5,4", "slow=12"]),
            &OptimizeOptions::default(),
        )
        .unwrap();
        let statuses: Vec<&VariantStatus> = report.variants.iter().map(|v| &v.status).collect();
        assert_eq!(
            statuses,
            [
                &VariantStatus::Rejected {
                    message: "parameter fast = 0 is out of range (declared 1..=1000)".into()
                },
                &VariantStatus::Rejected {
                    message: "parameter fast: \"2.5\" is not a valid int".into()
                },
                &VariantStatus::Ok,
            ]
        );
        assert_eq!(
            report.counts,
            Counts {
                ok: 1,
                failed: 0,
                rejected: 2
            }
        );
        assert_eq!(report.variants[2].rank, 1);
        let json = serde_json::to_value(&report.variants[0]).unwrap();
        assert_eq!(json["status"], "rejected");
        // fast and slow are `int` parameters: JSON integers.
        assert_eq!(json["params"], serde_json::json!({"fast": 0, "slow": 12}));
    }

    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let one = testing::study(Guest::SmaCross, 1200, 1);
        let two = Study {
            threads: 2,
            ..one.clone()
        };
        let three = Study {
            threads: 3,
            ..one.clone()
        };
        let g = grid(&one, &["fast=2:20:2", "slow=15:45:10"]);
        let options = OptimizeOptions {
            objective: Objective::Sharpe,
            top: 5,
            ..OptimizeOptions::default()
        };
        let a = run(&one, &g, &options).unwrap();
        let b = run(&two, &g, &options).unwrap();
        let c = run(&three, &g, &options).unwrap();
        assert_eq!(a.variants.len(), 40);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&c).unwrap()
        );
        assert_eq!(a.top.len(), 5);
    }

    #[test]
    fn top_k_follows_the_objective_and_its_direction() {
        let study = testing::study(Guest::SmaCross, 1500, 2);
        let g = grid(&study, &["fast=2:14:3", "slow=16:46:6"]);
        for &objective in Objective::ALL {
            let options = OptimizeOptions {
                objective,
                top: 4,
                ..OptimizeOptions::default()
            };
            let report = run(&study, &g, &options).unwrap();
            let values: Vec<f64> = report
                .top
                .iter()
                .map(|&i| report.variants[i].objective.unwrap())
                .collect();
            assert!(!values.is_empty(), "{objective}");
            for w in report.top.windows(2) {
                let (x, y) = (&report.variants[w[0]], &report.variants[w[1]]);
                let (sx, sy) = (
                    objective.score(x.objective.unwrap()),
                    objective.score(y.objective.unwrap()),
                );
                assert!(
                    sx > sy || (sx == sy && x.index < y.index),
                    "{objective}: {values:?}"
                );
            }
            // The best is at least as good as every variant with a value.
            let best = objective.score(values[0]);
            for v in &report.variants {
                if let Some(x) = v.objective {
                    assert!(
                        objective.score(x) <= best,
                        "{objective}: {x} beats the best {}",
                        values[0]
                    );
                }
                assert_eq!(v.objective, v.stats.as_ref().and_then(|s| objective.value(s)));
            }
        }
    }

    #[test]
    fn random_search_runs_the_drawn_points_in_grid_order() {
        let study = testing::study(Guest::SmaCross, 600, 2);
        let g = grid(&study, &["fast=2:10:1", "slow=20:60:5"]);
        let options = |seed| OptimizeOptions {
            search: Search::Random { samples: 7, seed },
            ..OptimizeOptions::default()
        };
        let a = run(&study, &g, &options(5)).unwrap();
        assert_eq!(a.variants.len(), 7);
        assert_eq!(a.sample, Some(SampleJson { samples: 7, seed: 5 }));
        let drawn: Vec<u64> = a.variants.iter().map(|v| v.grid_index).collect();
        assert_eq!(drawn, Search::Random { samples: 7, seed: 5 }.indices(81).unwrap());
        for v in &a.variants {
            let point = g.point(v.grid_index);
            assert_eq!(v.params.0.iter().map(|p| p.1.value).collect::<Vec<_>>(), point);
        }
        let again = run(&study, &g, &options(5)).unwrap();
        assert_eq!(a, again);
        let other = run(&study, &g, &options(6)).unwrap();
        assert_ne!(
            drawn,
            other.variants.iter().map(|v| v.grid_index).collect::<Vec<_>>()
        );
    }

    #[test]
    fn more_variants_than_the_policy_allows_is_an_error_naming_both() {
        let mut study = testing::study(Guest::SmaCross, 100, 1);
        study.policy = Arc::new(palisade_run::Policy {
            max_variants: 50,
            ..(*study.policy).clone()
        });
        let g = grid(&study, &["fast=1:10:1", "slow=20:30:2"]);
        let err = run(&study, &g, &OptimizeOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the grid has 60 variants, more than policy default allows (max_variants = 50); \
             narrow the grid or draw fewer with --samples"
        );
        let sampled = OptimizeOptions {
            search: Search::Random { samples: 50, seed: 1 },
            ..OptimizeOptions::default()
        };
        assert_eq!(run(&study, &g, &sampled).unwrap().variants.len(), 50);
        let sampled = OptimizeOptions {
            search: Search::Random { samples: 51, seed: 1 },
            ..OptimizeOptions::default()
        };
        assert_eq!(
            run(&study, &g, &sampled).unwrap_err().to_string(),
            "the sample of the grid's 60 points has 51 variants, more than policy default allows \
             (max_variants = 50); narrow the grid or draw fewer with --samples"
        );
    }

    #[test]
    fn progress_counts_every_run_in_order() {
        let mut study = testing::study(Guest::SmaCross, 300, 2);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        study.progress = Some(Arc::new(move |p| sink.lock().unwrap().push((p.done, p.total))));
        // One rejected variant (fast = 0) is not a run.
        let g = grid(&study, &["fast=0:4:1", "slow=10"]);
        run(&study, &g, &OptimizeOptions::default()).unwrap();
        assert_eq!(*seen.lock().unwrap(), [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]);
    }

    #[test]
    fn a_cancelled_study_stops_even_inside_an_endless_variant() {
        let mut study = testing::study(Guest::Adversary, 50, 2);
        study.policy = Arc::new(testing::endless_policy());
        // Variant 0 loops forever from its first bar; variant 1 trades once
        // and finishes. Cancelling when variant 1 is done catches variant 0
        // mid-run: it was claimed first, and a claimed variant always runs.
        let g = grid(&study, &["mode=1,0"]);
        let candidates = candidates(&study, &g, Search::All, 1, |_| String::new()).unwrap();
        let runs: Vec<Run> = candidates
            .iter()
            .map(|c| Run {
                params: c.params.clone(),
                data: study.data.clone(),
            })
            .collect();
        let cancel = study.cancel.clone();
        let on_progress: crate::OnProgress = Arc::new(move |p| {
            if p.done >= 1 {
                cancel.store(true, Ordering::Relaxed);
            }
        });
        let tracker = Tracker::new(runs.len() as u64, Some(on_progress));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let sink = outcomes.clone();
        let rt = crate::executor(2).unwrap();
        let result = rt.block_on(run_all(&study, runs, &tracker, move |i, out: RunOutput| {
            sink.lock().unwrap().push((i, out.outcome));
        }));
        assert!(
            matches!(result, Err(StudyError::Cancelled { done: 2, total: 2 })),
            "{result:?}"
        );
        let mut outcomes = outcomes.lock().unwrap().clone();
        outcomes.sort_by_key(|o| o.0);
        assert_eq!(outcomes[1], (1, Ok(())));
        let (index, endless) = &outcomes[0];
        assert_eq!(*index, 0);
        let failure = endless.as_ref().unwrap_err();
        assert_eq!(
            (failure.cause, failure.message.as_str()),
            (Cause::Cancelled, "the run was cancelled")
        );

        // Through the public API, a cancelled study ends with an error.
        let err = run(&study, &g, &OptimizeOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "the study was cancelled after 0 of 2 runs");
    }
}
