//! The `palisade` command: flag parsing (clap), output for the terminal
//! (text, progress bars) and exit codes over the library crates. It holds no
//! logic worth testing on its own: JSON documents come from
//! `palisade-document`, runs from `palisade-sandbox` and `palisade-study`, the
//! server from `palisade-service`. It is the only crate that knows the
//! terminal and process exit codes, and the one that picks the allocator.
//!
//! Exit codes: 0 success, 1 the run or the module failed (a classified
//! outcome, printed) or, for `bench` and `load`, a check failed, 2 bad
//! input (files, data, parameters, flags, a server that cannot be reached).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

mod bench;
mod live;
mod load;
mod python;
mod serve;
mod study;

use clap::{Args, Parser, Subcommand};
use palisade_backtest::{BacktestConfig, Dataset};
use palisade_document::{Subject, Timing};
use palisade_run::{params, Failure, Policy, RunConfig, RunOutput};
use palisade_sandbox::{CompiledModule, EngineSettings, Language, ModuleInfo, Sandbox};
use serde_json::{json, Value};

/// mimalloc instead of the system allocator: a service job allocates and
/// frees many blocks of mixed sizes on several threads (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Sandboxed runtime for WebAssembly trading strategies"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a module against ABI v2 and a policy, without running it.
    Validate(ModuleArgs),
    /// Show a module's manifest, parameter schema, imports and exports.
    Inspect(ModuleArgs),
    /// Backtest a strategy module on CSV bars.
    Backtest(BacktestArgs),
    /// Backtest every point of a parameter grid in parallel and rank them.
    Optimize(study::OptimizeArgs),
    /// Optimize on in-sample windows, test out-of-sample, measure robustness.
    WalkForward(study::WalkForwardArgs),
    /// Resample a backtest's trade returns: spread of return and drawdown.
    MonteCarlo(study::MonteCarloArgs),
    /// Run the HTTP service: uploads, jobs, policies, metrics.
    Serve(serve::ServeArgs),
    /// Run jobs from the distributed mode's queue (Redis) and store
    /// (Postgres): start any number, on any machines.
    Worker(serve::ServeArgs),
    /// Print the service's OpenAPI 3.1 document (JSON), e.g. to generate a
    /// client; the server serves the same at /v1/openapi.json.
    Openapi,
    /// Measure a strategy's cost (fuel, memory and host calls per bar,
    /// exact; time per bar); compare with a saved baseline.
    Bench(bench::BenchArgs),
    /// Market-data feeds: `feed replay` serves CSV bars over WebSocket at
    /// N× real time.
    Feed(live::FeedArgs),
    /// Live paper trading: `live run` runs one deployment in the foreground.
    Live(live::LiveArgs),
    /// Drive a running server with jobs and measure it: jobs/s, latency
    /// percentiles, failures; --assert sets the exit code.
    Load(load::LoadArgs),
}

#[derive(Debug, Args)]
struct ModuleArgs {
    /// The strategy: a wasm module, or Python source (a `.py` file).
    module: PathBuf,
    /// Policy name (default, strict, python) or path to a policy file
    /// [default: python for a .py strategy, default otherwise].
    #[arg(long)]
    policy: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Flags shared by every command that runs a strategy on data.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The strategy: a wasm module, or Python source (a `.py` file).
    pub module: PathBuf,
    /// CSV bars (`timestamp,open,high,low,close,volume`); repeat for several
    /// symbols. The symbol is the file name without extension, or write
    /// `SYMBOL=path`.
    #[arg(long = "data", required = true)]
    pub data: Vec<String>,
    /// A parameter value, `name=value`; repeatable. Others take their defaults.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Policy name (default, strict, python) or path to a policy file
    /// [default: python for a .py strategy, default otherwise].
    #[arg(long)]
    pub policy: Option<String>,
    /// Starting cash.
    #[arg(long, default_value_t = palisade_backtest::DEFAULT_INITIAL_CASH)]
    pub cash: f64,
    /// Commission as a fraction of each fill's notional (0.001 = 10 bps).
    #[arg(long, default_value_t = 0.0)]
    pub commission: f64,
    /// Fixed commission per fill.
    #[arg(long, default_value_t = 0.0)]
    pub commission_per_fill: f64,
    /// Slippage as a fraction of the price for market and stop fills.
    #[arg(long, default_value_t = 0.0)]
    pub slippage: f64,
    /// Bars per year, to annualize statistics (252 for daily stock bars).
    #[arg(long, default_value_t = palisade_backtest::DEFAULT_PERIODS_PER_YEAR)]
    pub periods_per_year: f64,
    /// Seed of the strategy's random stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
struct BacktestArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Include the equity curve (one point per timestamp) in the JSON.
    #[arg(long)]
    equity_curve: bool,
    /// Leave `timing` out of the JSON, so that repeated runs print identical bytes.
    #[arg(long)]
    no_timing: bool,
}

/// An error the user can fix: printed to stderr, exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl<E: std::fmt::Display> From<E> for InputError {
    fn from(e: E) -> Self {
        InputError(e.to_string())
    }
}

/// Runs the command line; returns the process exit code.
fn main() -> ExitCode {
    // A compiler child of this binary (see `palisade_sandbox::compiler`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(palisade_sandbox::compiler::CHILD_ARG) {
        return palisade_sandbox::compiler::child_main(&args[2..]);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(a) => validate(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Backtest(a) => backtest(&a),
        Command::Optimize(a) => study::optimize(&a),
        Command::WalkForward(a) => study::walk_forward(&a),
        Command::MonteCarlo(a) => study::monte_carlo(&a),
        Command::Serve(a) => serve::serve(a),
        Command::Worker(a) => serve::worker(a),
        Command::Openapi => openapi(),
        Command::Bench(a) => bench::bench(&a),
        Command::Load(a) => load::load(&a),
        Command::Feed(a) => live::feed(&a),
        Command::Live(a) => live::live(&a),
    };
    match result {
        Ok(code) => code,
        Err(InputError(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn openapi() -> Result<ExitCode, InputError> {
    emit(serde_json::to_string_pretty(
        palisade_service::api::openapi_json(),
    )?);
    Ok(ExitCode::SUCCESS)
}

fn read_module(path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))
}

/// The policy `--policy` names, or the default for the strategy at `module`.
fn load_policy(name: Option<&str>, module: &Path) -> Result<Policy, InputError> {
    Ok(Policy::load(
        name.unwrap_or(python::default_policy(module)),
        None,
    )?)
}

/// A sandbox able to run jobs of `policy`.
pub fn sandbox_for(policy: &Policy, instances: u32) -> Result<Sandbox, InputError> {
    let settings = EngineSettings {
        max_instances: instances,
        ..EngineSettings::for_policy(policy)
    };
    Sandbox::new(settings).map_err(|f| InputError(f.message))
}

fn failure_json(f: &Failure) -> Value {
    json!({ "cause": f.cause, "message": f.message })
}

fn validate(args: &ModuleArgs) -> Result<ExitCode, InputError> {
    let bytes = read_module(&args.module)?;
    let policy = load_policy(args.policy.as_deref(), &args.module)?;
    let sandbox = sandbox_for(&policy, 1)?;
    let verdict = load_module(&sandbox, &args.module, &bytes, &policy)?.map(|s| s.info);
    if args.json {
        let out = match &verdict {
            Ok(info) => json!({ "verdict": "ok", "policy": policy.name, "module": info_json(info) }),
            Err(f) => json!({ "verdict": "rejected", "policy": policy.name, "outcome": failure_json(f) }),
        };
        println!("{out}");
    } else {
        match &verdict {
            Ok(info) => {
                let m = &info.manifest;
                let what = match info.language {
                    Language::Wasm => format!("ABI v{}", m.abi),
                    Language::Python => "Python".to_owned(),
                };
                println!(
                    "ok: {} {} is a valid {what} strategy under policy {}",
                    safe(&m.name),
                    safe(&m.version),
                    policy.name
                );
                if info.language == Language::Wasm {
                    println!("  imports: {}", safe(&info.imports.join(", ")));
                    println!("  exports: {}", safe(&info.exports.join(", ")));
                }
                println!(
                    "  parameters: {}",
                    m.params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(f) => println!("rejected: {}: {}", f.cause, safe(&f.message)),
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn info_json(info: &ModuleInfo) -> Value {
    serde_json::to_value(info).unwrap_or(Value::Null)
}

fn inspect(args: &ModuleArgs) -> Result<ExitCode, InputError> {
    let bytes = read_module(&args.module)?;
    let policy = load_policy(args.policy.as_deref(), &args.module)?;
    let checked = if python::is_python(&args.module) {
        // A Python strategy's manifest comes from running its declarations
        // in the sandbox.
        let sandbox = sandbox_for(&policy, 1)?;
        python::load(&sandbox, &args.module, &bytes, &policy)?.map(|s| s.info)
    } else {
        palisade_sandbox::validate::validate(&bytes, &policy)
    };
    let info = match checked {
        Ok(info) => info,
        Err(f) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "verdict": "rejected", "outcome": failure_json(&f) })
                );
            } else {
                println!("rejected: {}: {}", f.cause, safe(&f.message));
            }
            return Ok(ExitCode::from(1));
        }
    };
    if args.json {
        println!("{}", info_json(&info));
        return Ok(ExitCode::SUCCESS);
    }
    let m = &info.manifest;
    match info.language {
        Language::Wasm => println!("{} {} (ABI v{})", safe(&m.name), safe(&m.version), m.abi),
        Language::Python => println!("{} {} (Python)", safe(&m.name), safe(&m.version)),
    }
    if let Some(d) = &m.description {
        println!("  {}", safe(d));
    }
    match info.language {
        Language::Wasm => println!(
            "size: {} bytes, {} functions, memory {} pages at start",
            info.size_bytes, info.functions, info.memory_min_pages
        ),
        Language::Python => println!("size: {} bytes of source", info.size_bytes),
    }
    if let Some(w) = &m.warmup {
        println!("warm-up: {}", serde_json::to_string(w).unwrap_or_default());
    }
    println!("parameters:");
    for p in &m.params {
        let ty = serde_json::to_value(p.ty)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "  {:<12} {:<5} default {:<10} range {:<16} {}",
            p.name,
            ty,
            serde_json::to_string(&p.default).unwrap_or_default(),
            params::range_text(p),
            safe(p.description.as_deref().unwrap_or(""))
        );
    }
    if info.language == Language::Wasm {
        println!("imports: {}", safe(&info.imports.join(", ")));
        println!("exports: {}", safe(&info.exports.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates `bytes` (read from `path`) and compiles them in a child process
/// of this binary, bounded by the policy's `compile_ms` and
/// `compile_memory_bytes`; a Python strategy (`.py`) is checked by the Python
/// runtime instead. The inner `Err` is the module's fault; the outer one,
/// the host's.
pub fn load_module(
    sandbox: &Sandbox,
    path: &Path,
    bytes: &[u8],
    policy: &Policy,
) -> Result<Result<CompiledModule, Failure>, InputError> {
    use palisade_sandbox::compiler::{this_executable, CompileError, CompileLimits};
    if python::is_python(path) {
        return python::load(sandbox, path, bytes, policy);
    }
    let info = match sandbox.check(bytes, policy) {
        Ok(info) => info,
        Err(f) => return Ok(Err(f)),
    };
    let exe =
        this_executable().ok_or_else(|| InputError("cannot find this executable to compile with".into()))?;
    match sandbox.compile_bounded(info, bytes, &exe, CompileLimits::from_policy(policy)) {
        Ok(m) => Ok(Ok(m)),
        Err(CompileError::Module(f)) => Ok(Err(f)),
        Err(CompileError::Host(m)) => Err(InputError(format!("the compiler failed: {m}"))),
    }
}

/// The symbol and file of a `--data` argument: `SYMBOL=path`, or a path
/// whose file stem is the symbol.
pub fn data_arg(arg: &str) -> (String, PathBuf) {
    match arg.split_once('=') {
        Some((s, p)) => (s.to_string(), PathBuf::from(p)),
        None => {
            let path = PathBuf::from(arg);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(arg)
                .to_string();
            (stem, path)
        }
    }
}

/// Reads `--data` arguments into one dataset.
pub fn load_data(args: &[String]) -> Result<Dataset, InputError> {
    let inputs: Vec<(String, PathBuf)> = args.iter().map(|a| data_arg(a)).collect();
    Ok(Dataset::from_csv_files(&inputs)?)
}

/// Everything a run needs, loaded and checked; `Err` of the inner result is
/// a module the sandbox refused.
pub struct Prepared {
    pub policy: Policy,
    pub sandbox: Sandbox,
    pub strategy: Result<CompiledModule, Failure>,
    pub data: Arc<Dataset>,
    pub config: BacktestConfig,
    pub overrides: Vec<(String, String)>,
    pub load_seconds: f64,
}

/// Loads policy, module and data for a run command.
pub fn prepare(args: &RunArgs, instances: u32) -> Result<Prepared, InputError> {
    let started = Instant::now();
    let policy = load_policy(args.policy.as_deref(), &args.module)?;
    let overrides = args
        .params
        .iter()
        .map(|p| params::parse_assignment(p))
        .collect::<Result<Vec<_>, _>>()?;
    let config = BacktestConfig {
        initial_cash: args.cash,
        commission_rate: args.commission,
        commission_per_fill: args.commission_per_fill,
        slippage: args.slippage,
        periods_per_year: args.periods_per_year,
        ..BacktestConfig::default()
    };
    config.validate()?;
    let bytes = read_module(&args.module)?;
    let data = Arc::new(load_data(&args.data)?);
    let sandbox = sandbox_for(&policy, instances)?;
    let strategy = load_module(&sandbox, &args.module, &bytes, &policy)?;
    Ok(Prepared {
        policy,
        sandbox,
        strategy,
        data,
        config,
        overrides,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

/// A current-thread async runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, InputError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// One backtest ready to run: what [`prepare`] loaded, with the module
/// compiled, its parameter values resolved and the run configured.
pub struct OneRun {
    pub policy: Policy,
    pub sandbox: Sandbox,
    pub data: Arc<Dataset>,
    pub load_seconds: f64,
    pub strategy: CompiledModule,
    pub values: Vec<(String, f64)>,
    pub run: RunConfig,
}

/// Prepares one backtest of `args`; `Err(code)` when the module was refused
/// (the refusal is reported already).
pub fn prepare_one(args: &RunArgs) -> Result<Result<OneRun, ExitCode>, InputError> {
    let Prepared {
        policy,
        sandbox,
        strategy,
        data,
        config,
        overrides,
        load_seconds,
    } = prepare(args, 1)?;
    let strategy = match strategy {
        Ok(s) => s,
        Err(f) => return Ok(Err(report_refused(args, &policy, &f, load_seconds))),
    };
    let values = params::resolve(&strategy.info.manifest, &overrides)?;
    let run = RunConfig {
        params: values.clone(),
        seed: args.seed,
        backtest: config,
        cancel: None,
        progress: None,
    };
    Ok(Ok(OneRun {
        policy,
        sandbox,
        data,
        load_seconds,
        strategy,
        values,
        run,
    }))
}

fn backtest(args: &BacktestArgs) -> Result<ExitCode, InputError> {
    let p = match prepare_one(&args.run)? {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let (strategy, values, run) = (&p.strategy, &p.values, &p.run);
    let out = runtime()?.block_on(p.sandbox.backtest(strategy, p.data.clone(), &p.policy, run));
    let ok = out.outcome.is_ok();
    if args.run.json {
        let module = args.run.module.display().to_string();
        let subject = subject(strategy, &module, &p.policy, &p.data, args.run.seed);
        let timing = (!args.no_timing).then_some(Timing {
            threads: None,
            load_seconds: p.load_seconds,
            run_seconds: out.run_seconds,
        });
        emit(palisade_document::backtest(
            &subject,
            values,
            out,
            args.equity_curve,
            timing,
        ));
    } else {
        print_summary(&args.run, strategy, &p.policy, values, &out, p.load_seconds);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn report_refused(args: &RunArgs, policy: &Policy, f: &Failure, load_seconds: f64) -> ExitCode {
    if args.json {
        println!(
            "{}",
            json!({
                "policy": policy.name,
                "outcome": failure_json(f),
                "timing": { "load_seconds": load_seconds, "run_seconds": 0.0 },
            })
        );
    } else {
        println!("refused: {}: {}", f.cause, safe(&f.message));
    }
    ExitCode::from(1)
}

/// Text that came from a module or a guest (names, free text, messages,
/// logs), made safe for a terminal: control characters (escape sequences
/// that could clear the screen, set the window title or forge lines) are
/// shown escaped, as `\u{1b}`.
pub fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints a line on stdout; a closed pipe (`palisade ... | head`) is not an error.
pub fn emit(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// What the result documents of a run of `strategy` on `data` say about it,
/// with the module labelled `module` (its path).
pub fn subject<'a>(
    strategy: &'a CompiledModule,
    module: &'a str,
    policy: &'a Policy,
    data: &'a Dataset,
    seed: u64,
) -> Subject<'a> {
    Subject {
        manifest: &strategy.info.manifest,
        module,
        policy: &policy.name,
        data,
        seed,
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{:.2}%", v * 100.0))
}

fn num(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}"))
}

fn print_summary(
    args: &RunArgs,
    strategy: &CompiledModule,
    policy: &Policy,
    values: &[(String, f64)],
    out: &RunOutput,
    load: f64,
) {
    let m = &strategy.info.manifest;
    let r = &out.report;
    let s = &r.stats;
    println!(
        "{} {} on {} ({} bars, {}), policy {}",
        safe(&m.name),
        safe(&m.version),
        args.data.join(", "),
        r.bars,
        r.symbols.join(", "),
        policy.name
    );
    let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("params: {}", shown.join(" "));
    match &out.outcome {
        Ok(()) => println!("outcome: ok"),
        Err(f) => println!("outcome: {}: {}", f.cause, safe(&f.message)),
    }
    println!(
        "return {}  CAGR {}  volatility {}  Sharpe {}  Sortino {}",
        pct(Some(s.total_return)),
        pct(s.cagr),
        pct(s.volatility),
        num(s.sharpe),
        num(s.sortino)
    );
    println!(
        "max drawdown {}  Calmar {}  exposure {}",
        pct(Some(s.max_drawdown)),
        num(s.calmar),
        pct(s.exposure)
    );
    println!(
        "trades {}  win rate {}  profit factor {}  open positions {}",
        s.trade_count,
        pct(s.win_rate),
        num(s.profit_factor),
        r.open_positions.len()
    );
    println!("final equity {:.2} (from {:.2})", r.final_equity, r.initial_cash);
    let refused = &out.usage.orders_refused;
    if refused.total() > 0 {
        println!(
            "refused by the host: {} (bad_argument {}, unknown_symbol {}, no_bar {}, unknown_order {})",
            refused.total(),
            refused.bad_argument,
            refused.unknown_symbol,
            refused.no_bar,
            refused.unknown_order
        );
    }
    for line in out.logs.iter().take(10) {
        println!("log {}: {}", line.level, safe(&line.message));
    }
    if out.logs.len() > 10 {
        println!("... {} more log lines (see --json)", out.logs.len() - 10);
    }
    if out.usage.logs_dropped > 0 {
        println!(
            "log: {} lines dropped past the policy's log_bytes ({} bytes)",
            out.usage.logs_dropped, policy.log_bytes
        );
    }
    let rate = r.bars as f64 / out.run_seconds.max(1e-9);
    println!(
        "load {load:.3} s, run {:.4} s ({:.1} M bars/s), fuel {}",
        out.run_seconds,
        rate / 1e6,
        out.usage.fuel
    );
}

#[cfg(test)]
mod safe_tests {
    use super::safe;

    #[test]
    fn escapes_reach_the_terminal_escaped() {
        assert_eq!(safe("ok"), "ok");
        assert_eq!(
            safe("\u{1b}[2J\u{1b}]0;title\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;title\\u{7}"
        );
        assert_eq!(safe("a\nb\rc"), "a\\u{a}b\\u{d}c");
        assert_eq!(safe("prix: 3 €"), "prix: 3 €");
    }
}
