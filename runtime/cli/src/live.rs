//! `palisade feed replay` (a WebSocket server replaying CSV bars at N× real
//! time) and `palisade live run` (one deployment in the foreground: the
//! strategy on a live feed, paper broker, intents, drift and gate, recovered
//! by replay when restarted over the same folder).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use palisade_deployment::{
    start, DeploymentSpec, FeedSource, FeedSpec, Launch, Lifecycle, LiveMetrics, Status,
};
use palisade_live::barlog::Durability;
use palisade_live::schema::Format;
use palisade_live::ws::{serve_replay, ReplayOptions};
use palisade_live::{DriftPolicy, GatePolicy, VenueConfig};
use palisade_run::params;
use tracing_subscriber::EnvFilter;

use crate::{load_data, load_module, load_policy, read_module, sandbox_for, InputError};

#[derive(Debug, Args)]
pub struct FeedArgs {
    #[command(subcommand)]
    command: FeedCommand,
}

#[derive(Debug, Subcommand)]
enum FeedCommand {
    /// Serve CSV bars over WebSocket at N× real time (demos and tests);
    /// clients resume after `?since=<ts>`.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// CSV bars (`timestamp,open,high,low,close,volume`); several files for
    /// several symbols. The symbol is the file stem, or write `SYMBOL=path`.
    #[arg(required = true)]
    data: Vec<String>,
    /// Replay speed: N× real time (60 sends one-minute bars every second);
    /// 0 sends as fast as the client reads.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: String,
    /// Wire format: palisade (docs/feeds.md) or binance (kline stream).
    #[arg(long, default_value = "palisade")]
    format: Format,
    /// Bar interval in seconds (Binance close times); default: the data's
    /// smallest step.
    #[arg(long)]
    interval: Option<i64>,
    /// Serve wss:// (TLS) with this PEM certificate chain; needs --tls-key.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    #[command(subcommand)]
    command: LiveCommand,
}

#[derive(Debug, Subcommand)]
enum LiveCommand {
    /// Run one deployment in the foreground until Ctrl-C; run it again over
    /// the same --dir to recover it by replay.
    Run(Box<RunArgs>),
    /// A service's deployment: override its gate (suspend, resume,
    /// force-open, emergency-stop, release), audited.
    Gate(GateArgs),
    /// A service's deployments' status (one, or every one the token sees).
    Status(RemoteArgs),
    /// A service deployment's audit log.
    Audit(RemoteArgs),
    /// Emergency stop (or --release) of one deployment, a tenant's or all.
    EmergencyStop(EmergencyArgs),
}

/// Where the service is.
#[derive(Debug, Args)]
struct Service {
    /// The service's base URL [default: $PALISADE_URL, else
    /// http://127.0.0.1:8080].
    #[arg(long)]
    url: Option<String>,
    /// A bearer token [default: $PALISADE_TOKEN].
    #[arg(long)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct RemoteArgs {
    /// The deployment's id (status: every deployment when absent).
    deployment: Option<String>,
    #[command(flatten)]
    service: Service,
}

#[derive(Debug, Args)]
struct GateArgs {
    deployment: String,
    /// suspend, resume, force-open, emergency-stop or release.
    action: String,
    /// Why (required for force-open); written to the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    service: Service,
}

#[derive(Debug, Args)]
struct EmergencyArgs {
    /// Stop this deployment.
    #[arg(long, conflicts_with_all = ["tenant", "all"])]
    deployment: Option<String>,
    /// Stop every deployment of this tenant.
    #[arg(long, conflicts_with = "all")]
    tenant: Option<String>,
    /// Stop every deployment.
    #[arg(long)]
    all: bool,
    /// Lift the stop instead.
    #[arg(long)]
    release: bool,
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    service: Service,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The strategy: a wasm module, or Python source (a `.py` file).
    module: PathBuf,
    /// The feed: `ws://host:port/path`, or `wss://…` over TLS (docs/feeds.md).
    #[arg(long)]
    feed: String,
    /// The feed's wire format: palisade or binance.
    #[arg(long, default_value = "palisade")]
    format: Format,
    /// A symbol the strategy trades (repeat, in the order of their ids).
    #[arg(long = "symbol", required = true)]
    symbols: Vec<String>,
    /// Bar interval in seconds (gap detection, feed lag).
    #[arg(long)]
    interval: Option<i64>,
    /// The deployment's id [default: the module's file stem].
    #[arg(long)]
    id: Option<String>,
    /// The deployment's folder (bar log, journals, audit log) [default:
    /// ./palisade-live/ID].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A parameter value, `name=value`; repeatable.
    #[arg(long = "param", short = 'p')]
    params: Vec<String>,
    /// Policy name (default, strict) or path to a policy file.
    #[arg(long)]
    policy: Option<String>,
    /// Starting cash of the paper account.
    #[arg(long, default_value_t = palisade_backtest::DEFAULT_INITIAL_CASH)]
    cash: f64,
    /// Paper slippage as a fraction of the price.
    #[arg(long, default_value_t = 0.0)]
    slippage: f64,
    /// Commission as a fraction of each fill's notional.
    #[arg(long, default_value_t = 0.0)]
    commission: f64,
    /// Seed of the strategy's random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run a simulated execution venue in-process, configured by this TOML
    /// file (an empty file: fills at the paper price); without it, intents
    /// only go to the log.
    #[arg(long)]
    venue: Option<PathBuf>,
    /// Drift thresholds (TOML; docs/live.md).
    #[arg(long)]
    drift_policy: Option<PathBuf>,
    /// Gate settings (TOML; docs/live.md).
    #[arg(long)]
    gate_policy: Option<PathBuf>,
    /// disk: sync every bar to disk before the strategy sees it; os: leave
    /// it to the OS (survives kill -9, not a power cut).
    #[arg(long, default_value = "disk")]
    durability: Durability,
    /// POST every published intent (JSON, docs/live.md) to this
    /// `http://` or `https://` URL, in order, retried until acknowledged.
    #[arg(long)]
    webhook: Option<String>,
    /// Bars between signal checks (offline replay); 0: never.
    #[arg(long, default_value_t = 1440)]
    verify_every: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5.0)]
    status_every: f64,
    /// Status lines as JSON objects.
    #[arg(long)]
    json: bool,
}

/// `palisade feed …`.
pub fn feed(args: &FeedArgs) -> Result<ExitCode, InputError> {
    match &args.command {
        FeedCommand::Replay(a) => replay(a),
    }
}

/// `palisade live …`.
pub fn live(args: &LiveArgs) -> Result<ExitCode, InputError> {
    match &args.command {
        LiveCommand::Run(a) => run(a),
        LiveCommand::Gate(a) => {
            let action = a.action.replace('-', "_");
            let body = serde_json::json!({"action": action, "reason": a.reason});
            call(
                &a.service,
                "POST",
                &format!("/v1/deployments/{}/gate", a.deployment),
                Some(body),
            )
        }
        LiveCommand::Status(a) => match &a.deployment {
            Some(d) => call(&a.service, "GET", &format!("/v1/deployments/{d}"), None),
            None => call(&a.service, "GET", "/v1/deployments", None),
        },
        LiveCommand::Audit(a) => {
            let d = a
                .deployment
                .as_deref()
                .ok_or_else(|| InputError("name the deployment whose audit log to show".into()))?;
            call(&a.service, "GET", &format!("/v1/deployments/{d}/audit"), None)
        }
        LiveCommand::EmergencyStop(a) => {
            let mut body = match (&a.deployment, &a.tenant, a.all) {
                (Some(d), None, false) => serde_json::json!({"scope": "deployment", "deployment": d}),
                (None, Some(t), false) => serde_json::json!({"scope": "tenant", "tenant": t}),
                (None, None, true) => serde_json::json!({"scope": "all"}),
                _ => {
                    return Err(InputError(
                        "give one of --deployment ID, --tenant NAME, --all".into(),
                    ))
                }
            };
            body["reason"] = serde_json::json!(a.reason);
            let path = if a.release {
                "/v1/emergency-stop/release"
            } else {
                "/v1/emergency-stop"
            };
            call(&a.service, "POST", path, Some(body))
        }
    }
}

/// One request to the service; prints the JSON answer (pretty) on success,
/// the problem's detail on failure (exit 1).
fn call(
    service: &Service,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<ExitCode, InputError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let base = service
        .url
        .clone()
        .or_else(|| std::env::var("PALISADE_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let token = service
        .token
        .clone()
        .or_else(|| std::env::var("PALISADE_TOKEN").ok());
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("POST", Some(b)) => {
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send(b.to_string().as_bytes())
        }
        _ => {
            let mut req = agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
    };
    let mut response = result.map_err(|e| InputError(format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| InputError(format!("{url}: reading the answer: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if status < 300 {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        Ok(ExitCode::SUCCESS)
    } else {
        let detail = value["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        eprintln!("error: {status}: {detail}");
        Ok(ExitCode::from(1))
    }
}

fn init_logs() {
    let filter = std::env::var("PALISADE_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .try_init();
}

fn multi_thread() -> Result<tokio::runtime::Runtime, InputError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn replay(args: &ReplayArgs) -> Result<ExitCode, InputError> {
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        return Err(InputError(format!(
            "--speed {}: must be a number >= 0",
            args.speed
        )));
    }
    init_logs();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(palisade_live::tls::server_config(cert, key).map_err(InputError)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let data = Arc::new(load_data(&args.data)?);
    let rt = multi_thread()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| InputError(format!("--listen {}: {e}", args.listen)))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        eprintln!(
            "replaying {} bars of {} at {}x on {scheme}://{addr}/ ({}); Ctrl-C stops",
            data.len(),
            data.symbols().join(", "),
            args.speed,
            args.format
        );
        let options = ReplayOptions {
            speed: args.speed,
            format: args.format,
            interval_secs: args.interval,
            tls,
        };
        let server = tokio::spawn(serve_replay(listener, data, options, stop_rx));
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
        server
            .await
            .map_err(|e| InputError(e.to_string()))?
            .map_err(|e| InputError(e.to_string()))?;
        Ok(ExitCode::SUCCESS)
    })
}

fn read_toml<T>(
    path: &Option<PathBuf>,
    parse: impl Fn(&str, &str) -> Result<T, palisade_live::ConfigError>,
) -> Result<Option<T>, InputError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    Ok(Some(parse(&text, &path.display().to_string())?))
}

fn run(args: &RunArgs) -> Result<ExitCode, InputError> {
    init_logs();
    let policy = load_policy(args.policy.as_deref(), &args.module)?;
    let bytes = read_module(&args.module)?;
    let sandbox = sandbox_for(&policy, 4)?;
    let strategy = match load_module(&sandbox, &args.module, &bytes, &policy)? {
        Ok(m) => m,
        Err(f) => {
            eprintln!("refused: {}: {}", f.cause, f.message);
            return Ok(ExitCode::from(1));
        }
    };
    let overrides = args
        .params
        .iter()
        .map(|p| params::parse_assignment(p))
        .collect::<Result<Vec<_>, _>>()?;
    let values = params::resolve(&strategy.info.manifest, &overrides)?;
    let stem = args
        .module
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("deployment");
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| stem.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("palisade-live").join(&id));
    let spec = DeploymentSpec {
        id,
        tenant: "local".to_owned(),
        symbols: args.symbols.clone(),
        interval_secs: args.interval,
        feed: FeedSpec {
            url: args.feed.clone(),
            format: args.format,
        },
        params: values,
        seed: args.seed,
        backtest: palisade_backtest::BacktestConfig {
            initial_cash: args.cash,
            slippage: args.slippage,
            commission_rate: args.commission,
            ..Default::default()
        },
        drift: read_toml(&args.drift_policy, DriftPolicy::from_toml_str)?.unwrap_or_default(),
        gate: read_toml(&args.gate_policy, GatePolicy::from_toml_str)?.unwrap_or_default(),
        durability: args.durability,
        venue: read_toml(&args.venue, VenueConfig::from_toml_str)?,
        verify_every: args.verify_every,
        webhook: args
            .webhook
            .clone()
            .map(|url| palisade_live::webhook::WebhookSpec {
                url,
                authorization: None,
            }),
    };
    spec.validate()?;
    let registry = prometheus::Registry::new();
    let metrics = LiveMetrics::new(&registry);
    let rt = multi_thread()?;
    rt.block_on(async {
        let handle = start(Launch {
            spec,
            dir: dir.clone(),
            sandbox: Arc::new(sandbox),
            strategy: Arc::new(strategy),
            policy,
            metrics,
            feed: FeedSource::WebSocket,
            lease: None,
        })?;
        eprintln!(
            "deployment {} in {} (Ctrl-C stops; run again to recover)",
            handle.id(),
            dir.display()
        );
        let every = Duration::from_secs_f64(args.status_every.max(0.1));
        let mut ticker = tokio::time::interval(every);
        let ended = loop {
            tokio::select! {
                _ = ticker.tick() => print_status(&handle.status(), args.json),
                _ = tokio::signal::ctrl_c() => break false,
                s = handle.wait_for(|s| s.state == Lifecycle::Failed) => {
                    print_status(&s, args.json);
                    break true;
                }
            }
        };
        if !ended {
            handle.stop().await;
        }
        let status = handle.status();
        print_status(&status, args.json);
        Ok(if status.state == Lifecycle::Failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn print_status(s: &Status, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    let failure = s
        .failure
        .as_ref()
        .map(|f| format!(" failed: {}: {}", f.cause, f.message))
        .unwrap_or_default();
    println!(
        "{} {:?} gate={} drift={:.3} bars={} last_ts={} intents={}/{} blocked fills paper={} live={} rejected={} gaps={} recovered={} in {}{failure}",
        s.id,
        s.state,
        s.gate,
        s.drift.score,
        s.bars,
        s.last_bar_ts.map_or("-".to_owned(), |t| t.to_string()),
        s.intents_published,
        s.intents_blocked,
        s.paper_fills,
        s.live_fills,
        s.rejected_bars,
        s.gap_bars,
        s.recovered_bars,
        s.recovery_ms.map_or("-".to_owned(), |ms| format!("{ms:.0} ms")),
    );
}
