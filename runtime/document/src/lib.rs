//! `palisade-document`: the one writer of result documents. A backtest, an
//! optimization, a walk-forward and a Monte Carlo study each end in one JSON
//! document, built here from typed values (the run's output and the studies'
//! reports), and both `palisade <command> --json` and the service's job
//! results call it: the same inputs give the same bytes, whatever the caller,
//! but for the module's label (a path on the command line, the module's
//! SHA-256 in the service) and the CLI's `timing`.
//!
//! Every document starts with the same head, in this order:
//!
//! - `kind`: `backtest`, `optimize`, `walk_forward` or `monte_carlo`;
//! - `strategy`: `{ name, version, module }` (the manifest's name and
//!   version, the caller's label of the module);
//! - `policy`: the policy's name;
//! - `data`: `{ symbols, bars, start_ts, end_ts }` (the data's symbols, its
//!   number of bars, its first and last timestamps; `null` when empty);
//! - `params`: the values of the parameters the run or study does not vary
//!   (every declared parameter of a backtest or Monte Carlo study; those
//!   outside the grid of an optimization or walk-forward), `int` and `bool`
//!   parameters as JSON integers (see [`palisade_run::params::Reported`]);
//! - `seed`: the seed of the strategy's random stream.
//!
//! Then the body of its kind (a backtest's outcome, report, logs, metrics and
//! usage; a study's report, plus `best` for an optimization), then `timing`
//! when the caller measured it. The bodies' fields are documented in
//! `docs/studies.md` and `docs/service.md`.
//!
//! What it must not touch: the terminal, files, HTTP, flags or job records.
//! It only turns values into text; callers decide where the text goes.

use std::collections::BTreeMap;

use palisade_backtest::{BacktestReport, Dataset};
use palisade_host_api::manifest::Manifest;
use palisade_run::params::ParamSet;
use palisade_run::{Failure, LogLine, RunOutput, Usage};
use palisade_study::{Grid, MonteCarloReport, OptimizeReport, Variant, WalkForwardReport};
use serde::{Deserialize, Serialize};

/// The kind of a document, which is the kind of run it reports: what a
/// command or a service job computes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    #[default]
    Backtest,
    Optimize,
    WalkForward,
    MonteCarlo,
}

impl Kind {
    /// Every kind.
    pub const ALL: &'static [Kind] = <Kind as strum::VariantArray>::VARIANTS;

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

/// What a document is about: the strategy, how its module is labelled, the
/// policy, the data and the seed.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub manifest: &'a Manifest,
    /// The caller's label of the module: its path on the command line, its
    /// SHA-256 in the service.
    pub module: &'a str,
    pub policy: &'a str,
    pub data: &'a Dataset,
    pub seed: u64,
}

/// How long the caller took, when it measured it (the CLI, without
/// `--no-timing`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timing {
    /// Worker threads of a study (absent for a backtest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    pub load_seconds: f64,
    pub run_seconds: f64,
}

/// The strategy a document is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StrategyRef {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// The caller's label of the module: its path on the command line, the
    /// strategy id (its SHA-256) in the service.
    pub module: String,
}

/// The data a document is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataSummary {
    /// Symbol names, by id.
    pub symbols: Vec<String>,
    /// Number of bars (of every symbol together).
    pub bars: usize,
    /// Timestamp of the first bar (`null` without bars).
    pub start_ts: Option<i64>,
    /// Timestamp of the last bar (`null` without bars).
    pub end_ts: Option<i64>,
}

/// What every document starts with.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Head {
    pub kind: Kind,
    pub strategy: StrategyRef,
    /// The policy's name.
    pub policy: String,
    pub data: DataSummary,
    /// The values of the parameters the document does not vary; `int` and
    /// `bool` parameters as JSON integers.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, f64>))]
    pub params: ParamSet,
    /// The seed of the strategy's random stream (and of a Monte Carlo
    /// study's resampling).
    pub seed: u64,
}

impl Subject<'_> {
    fn head(&self, kind: Kind, params: &[(String, f64)]) -> Head {
        let bars = self.data.bars();
        Head {
            kind,
            strategy: StrategyRef {
                name: self.manifest.name.clone(),
                version: self.manifest.version.clone(),
                module: self.module.to_owned(),
            },
            policy: self.policy.to_owned(),
            data: DataSummary {
                symbols: self.data.symbols().to_vec(),
                bars: bars.len(),
                start_ts: bars.first().map(|b| b.ts),
                end_ts: bars.last().map(|b| b.ts),
            },
            params: ParamSet::of(self.manifest, params),
            seed: self.seed,
        }
    }

    /// `params` without the parameters `grid` varies.
    fn fixed(params: &[(String, f64)], grid: &Grid) -> Vec<(String, f64)> {
        params
            .iter()
            .filter(|(name, _)| grid.names().all(|n| n != name))
            .cloned()
            .collect()
    }
}

/// A run that completed: the string `"ok"`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Completed {
    #[serde(rename = "ok")]
    Ok,
}

/// How a run ended: `"ok"`, or `{ cause, message }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Outcome {
    Ok(Completed),
    Failed(Failure),
}

impl Outcome {
    fn of(outcome: Result<(), Failure>) -> Outcome {
        match outcome {
            Ok(()) => Outcome::Ok(Completed::Ok),
            Err(f) => Outcome::Failed(f),
        }
    }
}

/// The document of a backtest.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BacktestDocument {
    #[serde(flatten)]
    pub head: Head,
    pub outcome: Outcome,
    /// The report's fields (the equity curve only when asked for).
    #[serde(flatten)]
    pub report: BacktestReport,
    pub logs: Vec<LogLine>,
    /// The guest's metrics by name (`null` for a value that is not a finite
    /// number).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Option<f64>>))]
    pub metrics: BTreeMap<String, f64>,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// The document of an optimization.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OptimizeDocument {
    #[serde(flatten)]
    pub head: Head,
    #[serde(flatten)]
    pub report: OptimizeReport,
    /// The best variant (the first of `top`), `null` when none ranks.
    pub best: Option<Variant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// The document of a walk-forward study.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalkForwardDocument {
    #[serde(flatten)]
    pub head: Head,
    #[serde(flatten)]
    pub report: WalkForwardReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// The body of a Monte Carlo document: the study's report, or how the
/// backtest it resamples failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum MonteCarloBody {
    Report(Box<MonteCarloReport>),
    BacktestFailed {
        /// How the backtest failed.
        outcome: Failure,
    },
}

/// The document of a Monte Carlo study.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonteCarloDocument {
    #[serde(flatten)]
    pub head: Head,
    #[serde(flatten)]
    pub body: MonteCarloBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// Any result document: what `GET /v1/jobs/{id}/result` answers (its
/// `kind` says which). For the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ResultDocument {
    Backtest(Box<BacktestDocument>),
    Optimize(Box<OptimizeDocument>),
    WalkForward(Box<WalkForwardDocument>),
    MonteCarlo(Box<MonteCarloDocument>),
}

fn write(doc: &impl Serialize) -> String {
    // The documents hold only strings, numbers, booleans, sequences and maps
    // with string keys: serde_json cannot fail on them.
    serde_json::to_string(doc).expect("a result document serializes")
}

/// The document of one backtest run: the head, `outcome`, the report's
/// fields (the equity curve only when `equity_curve`), `logs`, `metrics`,
/// `usage`, and `timing` when given. `params` are every parameter's value.
pub fn backtest(
    subject: &Subject<'_>,
    params: &[(String, f64)],
    out: RunOutput,
    equity_curve: bool,
    timing: Option<Timing>,
) -> String {
    let report = if equity_curve {
        out.report
    } else {
        out.report.without_curve()
    };
    write(&BacktestDocument {
        head: subject.head(Kind::Backtest, params),
        outcome: Outcome::of(out.outcome),
        report,
        logs: out.logs,
        metrics: out.metrics,
        usage: out.usage,
        timing,
    })
}

/// The document of an optimization over `grid`: the head (`params`: those of
/// `base_params` the grid does not vary), the report's fields, `best`, and
/// `timing` when given.
pub fn optimize(
    subject: &Subject<'_>,
    grid: &Grid,
    base_params: &[(String, f64)],
    report: OptimizeReport,
    timing: Option<Timing>,
) -> String {
    write(&OptimizeDocument {
        head: subject.head(Kind::Optimize, &Subject::fixed(base_params, grid)),
        best: report.best().cloned(),
        report,
        timing,
    })
}

/// The document of a walk-forward study over `grid`: the head (as for
/// [`optimize`]), the report's fields (the stitched equity curve only when
/// `equity_curve`), and `timing` when given.
pub fn walk_forward(
    subject: &Subject<'_>,
    grid: &Grid,
    base_params: &[(String, f64)],
    mut report: WalkForwardReport,
    equity_curve: bool,
    timing: Option<Timing>,
) -> String {
    if !equity_curve {
        if let Some(st) = &mut report.stitched {
            st.equity_curve = Vec::new();
        }
    }
    write(&WalkForwardDocument {
        head: subject.head(Kind::WalkForward, &Subject::fixed(base_params, grid)),
        report,
        timing,
    })
}

/// The document of a Monte Carlo study of the backtest with `params`: the
/// head, then the report's fields, or `outcome` (`{ cause, message }`) when
/// the backtest itself failed; `timing` when given.
pub fn monte_carlo(
    subject: &Subject<'_>,
    params: &[(String, f64)],
    result: Result<MonteCarloReport, Failure>,
    timing: Option<Timing>,
) -> String {
    write(&MonteCarloDocument {
        head: subject.head(Kind::MonteCarlo, params),
        body: match result {
            Ok(report) => MonteCarloBody::Report(Box::new(report)),
            Err(outcome) => MonteCarloBody::BacktestFailed { outcome },
        },
        timing,
    })
}
