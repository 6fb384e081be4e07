//! `palisade optimize`, `palisade walk-forward` and `palisade monte-carlo`:
//! flags and output of the studies of `palisade-study`; their JSON documents
//! come from `palisade-document`. Exit codes as for
//! every command: 0 done, 1 nothing usable came out (every variant or window
//! failed, the backtest failed or closed no trade), 2 bad input.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use palisade_backtest::Stats;
use palisade_document::{Subject, Timing};
use palisade_host_api::manifest::Manifest;
use palisade_run::params::{self, ParamSet};
use palisade_study::{
    self as study, Grid, Method, MonteCarloOptions, MonteCarloReport, Objective, OnProgress, OptimizeOptions,
    OptimizeReport, Progress, Search, Study, StudyError, VariantStatus, WalkForwardOptions,
    WalkForwardReport, WindowMode,
};

use crate::{emit, num, pct, prepare, report_refused, InputError, RunArgs};

/// The grid and how to search it, shared by `optimize` and `walk-forward`.
#[derive(Debug, Args)]
pub struct GridArgs {
    /// A parameter to vary: `name=min:max:step`, `name=v1,v2,...`, or a bare
    /// `name` for the range its manifest declares; repeat for each parameter
    /// (the first varies slowest).
    #[arg(long = "grid", value_name = "SPEC")]
    pub grid: Vec<String>,
    /// What to rank variants by: total_return, cagr, sharpe, sortino, calmar,
    /// profit_factor, win_rate, avg_trade_pnl, max_drawdown or volatility
    /// (the last two: smaller is better).
    #[arg(long, default_value = "total_return", value_name = "STAT")]
    pub objective: Objective,
    /// Run N points of the grid drawn at random (with --seed) instead of all.
    #[arg(long, value_name = "N")]
    pub samples: Option<u64>,
    /// Variants run at once, one worker thread each [default: the available
    /// cores]. `--jobs` is another name for it.
    #[arg(long, alias = "jobs", short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Leave `timing` out of the JSON, so that repeated runs print identical
    /// bytes.
    #[arg(long)]
    pub no_timing: bool,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    /// How many of the best variants to show (and list in `top`).
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct WalkForwardArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    /// Number of windows.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub windows: usize,
    /// In-sample fraction of a rolling window, strictly between 0 and 1.
    #[arg(long, default_value_t = 0.7, value_name = "F")]
    pub in_sample: f64,
    /// `rolling` (in-sample windows of equal length) or `anchored` (from
    /// the start of the data).
    #[arg(long, default_value = "rolling")]
    pub mode: WindowMode,
    /// Include the stitched out-of-sample equity curve in the JSON.
    #[arg(long)]
    pub equity_curve: bool,
}

#[derive(Debug, Args)]
pub struct MonteCarloArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Number of resampled paths.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub runs: u64,
    /// `bootstrap` (draw trade returns with replacement) or `permutation`
    /// (shuffle them).
    #[arg(long, default_value = "bootstrap")]
    pub method: Method,
    /// A path is ruined when its equity falls to (1 - F) x the initial cash.
    #[arg(long, default_value_t = study::monte_carlo::DEFAULT_RUIN, value_name = "F")]
    pub ruin: f64,
    /// Leave `timing` out of the JSON.
    #[arg(long)]
    pub no_timing: bool,
}

/// A progress bar on stderr, when stderr is a terminal.
struct Meter(Option<ProgressBar>);

impl Meter {
    fn new() -> Meter {
        if !std::io::stderr().is_terminal() {
            return Meter(None);
        }
        let style =
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} runs  {elapsed} (eta {eta})")
                .expect("a valid template");
        Meter(Some(ProgressBar::new(0).with_style(style)))
    }

    fn callback(&self) -> Option<OnProgress> {
        let bar = self.0.clone()?;
        Some(Arc::new(move |p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }))
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// What a study command has once its inputs are loaded.
struct Setup {
    study: Study,
    load_seconds: f64,
}

/// Loads and checks everything; `Err(Ok(code))` is a module the sandbox
/// refused (already reported).
fn setup(run: &RunArgs, threads: u32, bar: &Meter) -> Result<Result<Setup, ExitCode>, InputError> {
    let p = prepare(run, threads)?;
    let strategy = match p.strategy {
        Ok(s) => s,
        Err(f) => return Ok(Err(report_refused(run, &p.policy, &f, p.load_seconds))),
    };
    let base_params = params::resolve(&strategy.info.manifest, &p.overrides)?;
    Ok(Ok(Setup {
        study: Study {
            sandbox: Arc::new(p.sandbox),
            strategy: Arc::new(strategy),
            policy: Arc::new(p.policy),
            data: p.data,
            base_params,
            backtest: p.config,
            seed: run.seed,
            threads: threads as usize,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: bar.callback(),
        },
        load_seconds: p.load_seconds,
    }))
}

fn grid_and_search(
    run: &RunArgs,
    args: &GridArgs,
    manifest: &Manifest,
) -> Result<(Grid, Search), InputError> {
    let grid = Grid::parse(manifest, &args.grid)?;
    let fixed: Vec<(String, String)> = run
        .params
        .iter()
        .map(|p| params::parse_assignment(p))
        .collect::<Result<_, _>>()?;
    grid.check_fixed(fixed.iter().map(|(n, _)| n.as_str()))?;
    let search = match args.samples {
        None => Search::All,
        Some(samples) => Search::Random {
            samples,
            seed: run.seed,
        },
    };
    search.count(grid.size())?;
    Ok((grid, search))
}

/// Runs a study future on a multi-thread runtime with `threads` workers. Ctrl-C
/// (SIGINT) cancels the study: running variants stop at their next epoch
/// tick and the command reports the cancellation (exit code 1).
fn block_on<T>(
    threads: u32,
    bar: &Meter,
    study: &Study,
    future: impl std::future::Future<Output = Result<T, StudyError>>,
) -> Result<Result<T, StudyError>, InputError> {
    let rt = study::executor(threads as usize)?;
    let cancel = study.cancel.clone();
    let out = rt.block_on(async move {
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::Relaxed);
            }
        });
        // Cancelled, the study still ends through its own path, with the
        // count of variants done.
        let out = future.await;
        interrupt.abort();
        out
    });
    bar.finish();
    Ok(out)
}

fn print_head(run: &RunArgs, study: &Study) {
    let m = &study.strategy.info.manifest;
    println!(
        "{} {} on {} ({} bars, {}), policy {}",
        crate::safe(&m.name),
        crate::safe(&m.version),
        run.data.join(", "),
        study.data.len(),
        study.data.symbols().join(", "),
        study.policy.name
    );
}

/// What the study's result document says about it, with the module
/// labelled `module` (its path).
fn subject<'a>(study: &'a Study, module: &'a str) -> Subject<'a> {
    crate::subject(&study.strategy, module, &study.policy, &study.data, study.seed)
}

/// The `timing` of a study's document, unless `--no-timing`.
fn timing(no_timing: bool, threads: Option<u32>, load_seconds: f64, started: Instant) -> Option<Timing> {
    (!no_timing).then(|| Timing {
        threads,
        load_seconds,
        run_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Exit code for study errors: cancellation and worker failures are
/// failures (1), anything else is input the user can fix (2).
fn study_error(e: StudyError) -> Result<ExitCode, InputError> {
    match e {
        StudyError::Cancelled { .. } | StudyError::Worker(_) | StudyError::NoTrades => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        other => Err(InputError(other.to_string())),
    }
}

fn value_text(objective: Objective, v: Option<f64>) -> String {
    match objective {
        Objective::TotalReturn
        | Objective::Cagr
        | Objective::MaxDrawdown
        | Objective::Volatility
        | Objective::WinRate => pct(v),
        _ => num(v),
    }
}

/// Prints rows as columns, the first left-aligned, the others right-aligned.
fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        emit(cells.join("  ").trim_end());
    }
}

fn grid_text(report_grid: &[study::optimize::AxisJson]) -> String {
    report_grid
        .iter()
        .map(|a| {
            let (lo, hi) = a
                .values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v.value), hi.max(v.value))
                });
            format!("{} {lo}..{hi} ({} values)", a.name, a.values.len())
        })
        .collect::<Vec<_>>()
        .join(" x ")
}

fn direction(o: Objective) -> &'static str {
    if o.minimize() {
        "smaller is better"
    } else {
        "larger is better"
    }
}

/// `palisade optimize`.
pub fn optimize(args: &OptimizeArgs) -> Result<ExitCode, InputError> {
    let threads = args.grid.threads.unwrap_or(study::default_threads() as u32);
    let bar = Meter::new();
    let s = match setup(&args.run, threads, &bar)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let manifest = &s.study.strategy.info.manifest;
    let (grid, search) = grid_and_search(&args.run, &args.grid, manifest)?;
    let options = OptimizeOptions {
        objective: args.grid.objective,
        top: args.top,
        search,
        keep_reports: false,
    };
    let started = Instant::now();
    let report = match block_on(
        threads,
        &bar,
        &s.study,
        study::optimize(&s.study, &grid, &options),
    )? {
        Ok(r) => r,
        Err(e) => return study_error(e),
    };
    let code = if report.counts.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.run.json {
        let module = args.run.module.display().to_string();
        let timing = timing(args.grid.no_timing, Some(threads), s.load_seconds, started);
        let base = &s.study.base_params;
        emit(palisade_document::optimize(
            &subject(&s.study, &module),
            &grid,
            base,
            report,
            timing,
        ));
    } else {
        print_optimize(&args.run, &s.study, &report, threads, started);
    }
    Ok(code)
}

fn print_optimize(run: &RunArgs, study: &Study, r: &OptimizeReport, threads: u32, started: Instant) {
    print_head(run, study);
    let o = r.objective;
    let sample = match r.sample {
        Some(s) => format!(", {} drawn at random (seed {})", r.variants.len(), s.seed),
        None => String::new(),
    };
    emit(format_args!(
        "grid: {} = {} points{sample}; objective {o} ({}); {threads} threads",
        grid_text(&r.grid),
        r.grid_size,
        direction(o)
    ));
    emit(format_args!(
        "ran {} variants in {:.2} s: {} ok, {} failed, {} rejected",
        r.variants.len(),
        started.elapsed().as_secs_f64(),
        r.counts.ok,
        r.counts.failed,
        r.counts.rejected
    ));
    if r.top.is_empty() {
        emit(format_args!("no variant has a value for {o}"));
    } else {
        emit(format_args!("top {} by {o}:", r.top.len()));
        let names: Vec<&str> = r.grid.iter().map(|a| a.name.as_str()).collect();
        let mut rows = vec![{
            let mut h = vec!["rank".to_string()];
            h.extend(names.iter().map(|n| n.to_string()));
            if o != Objective::TotalReturn {
                h.push(o.to_string());
            }
            h.extend(["return", "sharpe", "max_drawdown", "trades"].map(String::from));
            h
        }];
        for &i in &r.top {
            let v = &r.variants[i];
            let s = v.stats.as_ref().expect("ranked variants completed");
            let mut row = vec![v.rank.to_string()];
            row.extend(v.params.0.iter().map(|(_, x)| x.to_string()));
            if o != Objective::TotalReturn {
                row.push(value_text(o, v.objective));
            }
            row.extend([
                pct(Some(s.total_return)),
                num(s.sharpe),
                pct(Some(s.max_drawdown)),
                s.trade_count.to_string(),
            ]);
            rows.push(row);
        }
        table(&rows);
    }
    print_problems(&r.variants);
}

/// Lists failed and rejected variants (the first ten of each kind).
fn print_problems(variants: &[study::Variant]) {
    const SHOWN: usize = 10;
    for (kind, pick) in [("failed", true), ("rejected", false)] {
        let bad: Vec<(&study::Variant, String)> = variants
            .iter()
            .filter_map(|v| match (&v.status, pick) {
                (VariantStatus::Failed { cause, message }, true) => Some((v, format!("{cause}: {message}"))),
                (VariantStatus::Rejected { message }, false) => Some((v, message.clone())),
                _ => None,
            })
            .collect();
        if bad.is_empty() {
            continue;
        }
        emit(format_args!("{kind}: {} variants", bad.len()));
        for (v, why) in bad.iter().take(SHOWN) {
            emit(format_args!("  #{} {}: {}", v.index, v.params, crate::safe(why)));
        }
        if bad.len() > SHOWN {
            emit(format_args!("  ... and {} more (see --json)", bad.len() - SHOWN));
        }
    }
}

fn date(ts: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp(ts, 0) else {
        return ts.to_string();
    };
    if ts % 86_400 == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// `palisade walk-forward`.
pub fn walk_forward(args: &WalkForwardArgs) -> Result<ExitCode, InputError> {
    let threads = args.grid.threads.unwrap_or(study::default_threads() as u32);
    let bar = Meter::new();
    let s = match setup(&args.run, threads, &bar)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let manifest = &s.study.strategy.info.manifest;
    let (grid, search) = grid_and_search(&args.run, &args.grid, manifest)?;
    let options = WalkForwardOptions {
        objective: args.grid.objective,
        windows: args.windows,
        in_sample: args.in_sample,
        mode: args.mode,
        search,
    };
    let started = Instant::now();
    let report = match block_on(
        threads,
        &bar,
        &s.study,
        study::walk_forward(&s.study, &grid, &options),
    )? {
        Ok(r) => r,
        Err(e) => return study_error(e),
    };
    let code = if report.stitched.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.run.json {
        let module = args.run.module.display().to_string();
        let timing = timing(args.grid.no_timing, Some(threads), s.load_seconds, started);
        let base = &s.study.base_params;
        let subject = subject(&s.study, &module);
        emit(palisade_document::walk_forward(
            &subject,
            &grid,
            base,
            report,
            args.equity_curve,
            timing,
        ));
    } else {
        print_walk_forward(&args.run, &s.study, &report, threads, started);
    }
    Ok(code)
}

fn print_walk_forward(run: &RunArgs, study: &Study, r: &WalkForwardReport, threads: u32, started: Instant) {
    print_head(run, study);
    let o = r.objective;
    emit(format_args!(
        "walk-forward: {} {} windows, in-sample {}%, grid {} = {} points; objective {o} ({}); warm-up {} bars; {threads} threads, {:.2} s",
        r.windows.len(),
        r.mode,
        r.in_sample * 100.0,
        grid_text(&r.grid),
        r.grid_size,
        direction(o),
        r.warmup,
        started.elapsed().as_secs_f64()
    ));
    let mut rows = vec![[
        "window",
        "in-sample",
        "out-of-sample",
        "chosen",
        "IS value",
        "OOS value",
        "OOS return",
        "WFE",
    ]
    .map(String::from)
    .to_vec()];
    let mut notes = Vec::new();
    for w in &r.windows {
        let span = |s: &study::walk_forward::Segment| {
            format!("{}..{} ({})", date(s.start_ts), date(s.end_ts), s.bars)
        };
        let (chosen, is_value) = match &w.chosen {
            Some(c) => (c.params.to_string(), value_text(o, Some(c.objective))),
            None => ("none".into(), "n/a".into()),
        };
        let (oos_value, oos_return) = match &w.test {
            Some(t) if t.status == VariantStatus::Ok => {
                (value_text(o, t.objective), pct(Some(t.stats.total_return)))
            }
            Some(t) => {
                if let VariantStatus::Failed { cause, message } = &t.status {
                    notes.push(format!(
                        "window {}: out-of-sample run failed: {cause}: {message}",
                        w.index + 1
                    ));
                }
                ("failed".into(), "n/a".into())
            }
            None => {
                notes.push(format!(
                    "window {}: no in-sample variant has a value for {o} ({} ok, {} failed, {} rejected)",
                    w.index + 1,
                    w.counts.ok,
                    w.counts.failed,
                    w.counts.rejected
                ));
                ("n/a".into(), "n/a".into())
            }
        };
        rows.push(vec![
            (w.index + 1).to_string(),
            span(&w.in_sample),
            span(&w.out_of_sample),
            chosen,
            is_value,
            oos_value,
            oos_return,
            num(w.efficiency),
        ]);
    }
    table(&rows);
    for n in notes {
        emit(n);
    }
    match &r.stitched {
        Some(st) => emit(format_args!(
            "stitched out-of-sample ({} windows): {}",
            st.windows,
            stats_line(&st.stats)
        )),
        None => emit("stitched out-of-sample: no window completed its test"),
    }
    emit(format_args!(
        "walk-forward efficiency {}  degradation {}  profitable windows {}",
        num(r.efficiency),
        num(r.degradation),
        pct(Some(r.profitable_windows))
    ));
    let cvs: Vec<String> = r
        .stability
        .iter()
        .map(|s| {
            let values: Vec<String> = s.values.iter().map(ToString::to_string).collect();
            format!("{} cv {} [{}]", s.name, num(s.cv), values.join(", "))
        })
        .collect();
    emit(format_args!("parameter stability: {}", cvs.join("; ")));
    emit(format_args!("robustness {:.2} (0 to 1)", r.robustness));
}

fn stats_line(s: &Stats) -> String {
    format!(
        "return {}  CAGR {}  Sharpe {}  max drawdown {}  trades {}",
        pct(Some(s.total_return)),
        pct(s.cagr),
        num(s.sharpe),
        pct(Some(s.max_drawdown)),
        s.trade_count
    )
}

/// `palisade monte-carlo`.
pub fn monte_carlo(args: &MonteCarloArgs) -> Result<ExitCode, InputError> {
    let bar = Meter::new();
    let s = match setup(&args.run, 1, &bar)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let options = MonteCarloOptions {
        runs: args.runs,
        method: args.method,
        seed: args.run.seed,
        ruin: args.ruin,
    };
    let started = Instant::now();
    let report = match block_on(1, &bar, &s.study, study::monte_carlo(&s.study, &options))? {
        Ok(r) => r,
        Err(StudyError::BacktestFailed(f)) => {
            if args.run.json {
                let module = args.run.module.display().to_string();
                let timing = timing(args.no_timing, None, s.load_seconds, started);
                let base = &s.study.base_params;
                emit(palisade_document::monte_carlo(
                    &subject(&s.study, &module),
                    base,
                    Err(f),
                    timing,
                ));
            } else {
                print_head(&args.run, &s.study);
                emit(format_args!(
                    "backtest failed: {}: {}",
                    f.cause,
                    crate::safe(&f.message)
                ));
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return study_error(e),
    };
    if args.run.json {
        let module = args.run.module.display().to_string();
        let timing = timing(args.no_timing, Some(1), s.load_seconds, started);
        let base = &s.study.base_params;
        emit(palisade_document::monte_carlo(
            &subject(&s.study, &module),
            base,
            Ok(report),
            timing,
        ));
    } else {
        print_monte_carlo(&args.run, &s.study, &report, started);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_monte_carlo(run: &RunArgs, study: &Study, r: &MonteCarloReport, started: Instant) {
    print_head(run, study);
    emit(format_args!(
        "params: {}",
        ParamSet::of(&study.strategy.info.manifest, &study.base_params)
    ));
    emit(format_args!("backtest: {}", stats_line(&r.backtest)));
    emit(format_args!(
        "monte carlo: {} {} runs of {} closed trades, seed {}, {:.2} s",
        r.runs,
        r.method,
        r.trades,
        r.seed,
        started.elapsed().as_secs_f64()
    ));
    let d = &r.distribution;
    let row = |name: &str, p: &study::monte_carlo::Percentiles, observed: f64| {
        vec![
            name.to_string(),
            pct(Some(p.p5)),
            pct(Some(p.p50)),
            pct(Some(p.p95)),
            pct(Some(p.mean)),
            pct(Some(observed)),
        ]
    };
    table(&[
        ["", "5%", "50%", "95%", "mean", "observed"]
            .map(String::from)
            .to_vec(),
        row("final return", &d.final_return, d.observed.final_return),
        row("max drawdown", &d.max_drawdown, d.observed.max_drawdown),
    ]);
    emit(format_args!(
        "probability of profit {}",
        pct(Some(d.probability_of_profit))
    ));
    emit(format_args!(
        "probability of ruin {} (equity at or below {:.2}, {}% of the initial cash)",
        pct(Some(d.probability_of_ruin)),
        r.ruin_equity,
        (1.0 - r.ruin) * 100.0
    ));
    emit("(returns of closed trades only, compounded trade by trade; observed = the trades in their actual order)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_show_the_time_only_when_it_is_not_midnight() {
        assert_eq!(date(1_420_156_800), "2015-01-02");
        assert_eq!(date(1_420_156_800 + 3_600 * 14 + 60 * 30), "2015-01-02 14:30");
    }
}
