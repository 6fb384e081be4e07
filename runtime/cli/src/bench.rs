//! `palisade bench`: what a strategy costs, for its author and for CI. It
//! backtests the strategy `--runs` times and reports fuel per bar (exact:
//! the same module, data and parameters give the same fuel on every
//! machine), peak linear memory, host calls per bar, and time per bar (the
//! median, for information: time moves with the machine). `--save` writes
//! the report as a baseline; `--baseline` compares with one and exits 1 when
//! a deterministic figure grew by more than `--max-regression` percent,
//! naming it.
//!
//! A baseline is compared only with a run of the same strategy (by its
//! manifest's name), data (by the SHA-256 of each file), parameters, policy
//! and seed; a new build of the strategy is what it is for, so the module's
//! hash may differ (and is shown).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use palisade_run::params::ParamSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{data_arg, emit, prepare_one, runtime, safe, InputError, RunArgs};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Backtests to time (the deterministic figures come from the first).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Write the report to FILE, as a baseline for later runs.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Compare with the report in FILE; exit 1 when a deterministic figure
    /// regressed by more than --max-regression percent.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Largest accepted growth of fuel per bar, peak memory or host calls
    /// per bar, in percent.
    #[arg(long, default_value_t = 2.0, value_name = "PERCENT")]
    pub max_regression: f64,
}

/// What a bench measured, and of what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchReport {
    /// Always `bench`.
    pub kind: String,
    pub strategy: Identity,
    pub data: DataIdentity,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub policy: String,
    pub seed: u64,
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    pub version: String,
    /// SHA-256 of the module file.
    pub module_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataIdentity {
    /// `SYMBOL=sha256` of each file, in the order given.
    pub files: Vec<String>,
    pub bars: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// Fuel of the whole run (deterministic).
    pub fuel: u64,
    pub fuel_per_bar: f64,
    /// Largest linear memory the guest reached (deterministic).
    pub memory_peak_bytes: u64,
    /// Host calls of the whole run (deterministic).
    pub host_calls: u64,
    pub host_calls_per_bar: f64,
    /// Median over the runs of the run's wall time per bar (informational).
    pub seconds_per_bar: f64,
    pub runs: u32,
}

/// The deterministic figures a baseline gates, by name.
fn gated(f: &Figures) -> [(&'static str, f64); 3] {
    [
        ("fuel_per_bar", f.fuel_per_bar),
        ("memory_peak_bytes", f.memory_peak_bytes as f64),
        ("host_calls_per_bar", f.host_calls_per_bar),
    ]
}

fn sha256_file(path: &Path) -> Result<String, InputError> {
    let bytes =
        std::fs::read(path).map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// `palisade bench`.
pub fn bench(args: &BenchArgs) -> Result<ExitCode, InputError> {
    if !(args.max_regression.is_finite() && args.max_regression >= 0.0) {
        return Err(InputError(format!(
            "--max-regression {} must be a percentage >= 0",
            args.max_regression
        )));
    }
    let baseline = args.baseline.as_deref().map(read_baseline).transpose()?;
    let p = match prepare_one(&args.run)? {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let (strategy, values, run) = (&p.strategy, &p.values, &p.run);
    let rt = runtime()?;
    let mut seconds = Vec::with_capacity(args.runs as usize);
    let mut first = None;
    for _ in 0..args.runs {
        let out = rt.block_on(p.sandbox.backtest(strategy, p.data.clone(), &p.policy, run));
        if let Err(f) = &out.outcome {
            emit(format_args!(
                "the backtest failed: {}: {}",
                f.cause,
                safe(&f.message)
            ));
            return Ok(ExitCode::from(1));
        }
        let bars = out.report.bars.max(1) as f64;
        seconds.push(out.run_seconds / bars);
        first.get_or_insert(out);
    }
    let out = first.expect("at least one run");
    seconds.sort_by(f64::total_cmp);
    let bars = out.report.bars as u64;
    let per_bar = |x: u64| x as f64 / bars.max(1) as f64;
    let mut files = Vec::new();
    for arg in &args.run.data {
        let (symbol, path) = data_arg(arg);
        files.push(format!("{symbol}={}", sha256_file(&path)?));
    }
    let m = &strategy.info.manifest;
    let report = BenchReport {
        kind: "bench".into(),
        strategy: Identity {
            name: m.name.clone(),
            version: m.version.clone(),
            module_sha256: sha256_file(&args.run.module)?,
        },
        data: DataIdentity { files, bars },
        params: match serde_json::to_value(ParamSet::of(m, values)) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        },
        policy: p.policy.name.clone(),
        seed: args.run.seed,
        figures: Figures {
            fuel: out.usage.fuel,
            fuel_per_bar: per_bar(out.usage.fuel),
            memory_peak_bytes: out.usage.memory_peak_bytes,
            host_calls: out.usage.host_calls,
            host_calls_per_bar: per_bar(out.usage.host_calls),
            seconds_per_bar: seconds[seconds.len() / 2],
            runs: args.runs,
        },
    };
    if let Some(path) = &args.save {
        let text = serde_json::to_string_pretty(&report).map_err(InputError::from)? + "\n";
        std::fs::write(path, text)
            .map_err(|e| InputError(format!("{}: cannot write: {e}", path.display())))?;
    }
    let comparison = match (&baseline, &args.baseline) {
        (Some(old), Some(path)) => Some(compare(path, old, &report, args.max_regression)?),
        _ => None,
    };
    if args.run.json {
        emit(serde_json::to_string(&report).map_err(InputError::from)?);
    } else {
        print_report(&report);
    }
    let Some(lines) = comparison else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut regressed = false;
    for (line, bad) in lines {
        regressed |= bad;
        if bad {
            eprintln!("regression: {line}");
        } else if !args.run.json {
            emit(line);
        }
    }
    Ok(if regressed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_baseline(path: &Path) -> Result<BenchReport, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError(format!("baseline {}: cannot read: {e}", path.display())))?;
    let report: BenchReport = serde_json::from_str(&text).map_err(|e| {
        InputError(format!(
            "baseline {}: not a report of `palisade bench --save`: {e}",
            path.display()
        ))
    })?;
    if report.kind != "bench" {
        return Err(InputError(format!(
            "baseline {}: kind {:?}, not a report of `palisade bench --save`",
            path.display(),
            report.kind
        )));
    }
    Ok(report)
}

/// The comparison's lines, each with whether it is a regression; `Err` when
/// the baseline is of something else.
fn compare(
    path: &Path,
    old: &BenchReport,
    new: &BenchReport,
    max_regression: f64,
) -> Result<Vec<(String, bool)>, InputError> {
    let other = |what: &str, was: String, is: String| {
        InputError(format!(
            "baseline {} is of another {what} ({was}), not {is}: compare like with like, or save a new baseline",
            path.display()
        ))
    };
    if old.strategy.name != new.strategy.name {
        return Err(other(
            "strategy",
            old.strategy.name.clone(),
            new.strategy.name.clone(),
        ));
    }
    if old.data != new.data {
        return Err(other(
            "data set",
            old.data.files.join(" "),
            new.data.files.join(" "),
        ));
    }
    if old.params != new.params {
        let show =
            |p: &serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(p.clone()).to_string();
        return Err(other("set of parameters", show(&old.params), show(&new.params)));
    }
    if (&old.policy, old.seed) != (&new.policy, new.seed) {
        return Err(other(
            "policy or seed",
            format!("{} seed {}", old.policy, old.seed),
            format!("{} seed {}", new.policy, new.seed),
        ));
    }
    let mut lines = Vec::new();
    if old.strategy.module_sha256 != new.strategy.module_sha256 {
        lines.push((
            format!(
                "module changed: {} -> {}",
                &old.strategy.module_sha256[..12.min(old.strategy.module_sha256.len())],
                &new.strategy.module_sha256[..12.min(new.strategy.module_sha256.len())]
            ),
            false,
        ));
    }
    for ((name, was), (_, is)) in gated(&old.figures).into_iter().zip(gated(&new.figures)) {
        let change = if was == 0.0 {
            if is == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (is - was) / was * 100.0
        };
        let bad = change > max_regression;
        let verdict = if bad {
            format!("more than --max-regression {max_regression}%")
        } else {
            "within bounds".into()
        };
        lines.push((format!("{name}: {was} -> {is} ({change:+.2}%), {verdict}"), bad));
    }
    let (was, is) = (old.figures.seconds_per_bar, new.figures.seconds_per_bar);
    lines.push((
        format!(
            "seconds_per_bar: {:.2} ns -> {:.2} ns (informational: time moves with the machine)",
            was * 1e9,
            is * 1e9
        ),
        false,
    ));
    Ok(lines)
}

fn print_report(r: &BenchReport) {
    let f = &r.figures;
    emit(format_args!(
        "{} {} on {} bars ({}), policy {}",
        safe(&r.strategy.name),
        safe(&r.strategy.version),
        r.data.bars,
        r.data.files.join(", "),
        r.policy
    ));
    emit(format_args!(
        "fuel per bar       {:>14.2}  (exact; {} in all)",
        f.fuel_per_bar, f.fuel
    ));
    emit(format_args!(
        "peak memory        {:>14}  bytes (exact)",
        f.memory_peak_bytes
    ));
    emit(format_args!(
        "host calls per bar {:>14.3}  (exact; {} in all)",
        f.host_calls_per_bar, f.host_calls
    ));
    emit(format_args!(
        "time per bar       {:>14.2}  ns (median of {} runs; informational)",
        f.seconds_per_bar * 1e9,
        f.runs
    ));
}
