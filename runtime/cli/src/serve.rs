//! `palisade serve`: flags → [`Config`], logging, the two runtimes (HTTP and
//! wasm executor), signals. Everything else is `crate::service`.
//!
//! Prints `palisade listening on http://ADDR` on stdout once the socket is
//! bound (with `--listen 127.0.0.1:0` this says which port was picked); logs
//! go to stderr (`--log` or `PALISADE_LOG`, tracing's filter syntax). Stops
//! gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::InputError;
use palisade_service::auth::Tokens;
use palisade_service::config::{Config, Overrides};
use palisade_service::worker::Role;
use palisade_service::{listen_address, serve as run_server, Service};

/// Flags of `palisade serve`; each overrides `PALISADE_<KEY>` and the config
/// file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the database and uploaded files (default ./palisade-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML config file (keys as in docs/service.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// TOML file of bearer tokens; without it the server is single-user and
    /// listens on loopback only.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory of `<name>.toml` policies (default: the built-in ones).
    #[arg(long)]
    policies_dir: Option<PathBuf>,
    /// The Python runtime component (default: found as `palisade backtest`
    /// finds it; an empty path refuses Python strategies).
    #[arg(long)]
    python_runtime: Option<String>,
    /// Total depth of the job queues (default 200).
    #[arg(long)]
    queue_depth: Option<i64>,
    /// Jobs running at once (default 10).
    #[arg(long)]
    max_running: Option<i64>,
    /// Worker threads of the wasm executor (default: one per core).
    #[arg(long)]
    executor_threads: Option<i64>,
    /// Distributed mode: the shared store, `postgres://user@host:port/db`
    /// (with --queue; default: the embedded SQLite database in --data-dir).
    #[arg(long)]
    store: Option<String>,
    /// Distributed mode: the job queue, `redis://host:port` (a single
    /// Redis or any node of a Redis Cluster; with --store).
    #[arg(long)]
    queue: Option<String>,
    /// A worker's name in GET /v1/workers (default: the host name).
    #[arg(long)]
    worker_name: Option<String>,
    /// The hosts deployments' feeds and webhooks may reach, comma-separated:
    /// `host`, `host:port`, `*.domain` (default: any host).
    #[arg(long)]
    live_hosts: Option<String>,
    /// A worker's heartbeat interval, milliseconds (default 10000).
    #[arg(long)]
    heartbeat_interval_ms: Option<i64>,
    /// A worker silent this long is dead and its jobs are reclaimed,
    /// milliseconds (default 30000).
    #[arg(long)]
    heartbeat_ttl_ms: Option<i64>,
    /// Log filter, e.g. `info` or `palisade_service=debug` (default info).
    #[arg(long)]
    log: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        let mut o: Overrides = Vec::new();
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
        if let Some(v) = &self.listen {
            o.push(("listen".into(), toml::Value::String(v.clone())));
        }
        if let Some(v) = &self.data_dir {
            o.push(("data_dir".into(), path(v)));
        }
        if let Some(v) = &self.tokens {
            o.push(("tokens_file".into(), path(v)));
        }
        if let Some(v) = &self.policies_dir {
            o.push(("policies_dir".into(), path(v)));
        }
        if let Some(v) = &self.python_runtime {
            o.push(("python_runtime".into(), toml::Value::String(v.clone())));
        }
        for (key, v) in [
            ("store", &self.store),
            ("queue", &self.queue),
            ("worker_name", &self.worker_name),
            ("live_hosts", &self.live_hosts),
        ] {
            if let Some(v) = v {
                o.push((key.into(), toml::Value::String(v.clone())));
            }
        }
        for (key, v) in [
            ("queue_depth", self.queue_depth),
            ("max_running", self.max_running),
            ("executor_threads", self.executor_threads),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("heartbeat_ttl_ms", self.heartbeat_ttl_ms),
        ] {
            if let Some(v) = v {
                o.push((key.into(), toml::Value::Integer(v)));
            }
        }
        o
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
/// Standard error for the log, whose write errors are dropped: a log on a
/// full disk loses lines, it does not stop the server (tracing's own
/// fallback, `eprintln!`, panics when standard error cannot be written).
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, InputError> {
    run(args, Role::Api)
}

/// `palisade worker`: runs jobs from the distributed mode's queue until
/// SIGTERM (then finishes or hands back its jobs); serves `/healthz`,
/// `/readyz` and `/metrics` on `listen` (flag, `PALISADE_LISTEN` or the
/// config file; default a free loopback port). None of them takes a token,
/// so a worker listens where it is told without a tokens file.
pub fn worker(args: ServeArgs) -> Result<ExitCode, InputError> {
    run(args, Role::Worker)
}

fn run(args: ServeArgs, role: Role) -> Result<ExitCode, InputError> {
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("PALISADE_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&filter).map_err(|e| InputError(format!("--log {filter:?}: {e}")))?,
        )
        .with_writer(|| LogWriter)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();

    // A file-size limit (ulimit -f) must fail a write, which the store
    // reports and survives, rather than kill the server with SIGXFSZ.
    // SAFETY: setting a signal's disposition to "ignore" runs no code of
    // ours in a handler; nothing else in the process handles SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let mut config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())?;
    if role == Role::Worker && config.listen == Config::default().listen && !listen_given(&args) {
        // Several workers on one machine: each on a port of its own.
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    // Modules are compiled by this binary in a bounded child process.
    config.compiler = palisade_sandbox::compiler::this_executable();
    // The Python runtime: found as the CLI finds it when not configured; an
    // empty path turns Python strategies off; a configured path must exist.
    config.python_runtime = match config.python_runtime.take() {
        None => crate::python::find_runtime().ok(),
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) if p.is_file() => Some(p),
        Some(p) => {
            return Err(InputError(format!(
                "python_runtime {} is not a file (build it with scripts/build-python-runtime.sh, or give an empty path to refuse Python strategies)",
                p.display()
            )))
        }
    };
    let tokens = match &config.tokens_file {
        Some(path) => Tokens::from_file(path)?,
        None => Tokens::default(),
    };
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.executor_threads())
        .thread_name("palisade-exec")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()?;
    let http = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads)
        .thread_name("palisade-http")
        .enable_all()
        .build()?;
    let result = http.block_on(async {
        // A worker's routes (probes, metrics) take no token: it listens
        // where it is told.
        let (addr, rebound) = match role {
            Role::Worker => (config.listen, false),
            _ => listen_address(config.listen, &tokens),
        };
        if rebound {
            tracing::warn!(
                requested = %config.listen,
                listening = %addr,
                "no tokens configured: listening on loopback only (give --tokens to serve other hosts)"
            );
        } else if tokens.is_open() && role != Role::Worker {
            tracing::warn!("no tokens configured: every request is the local operator; loopback only");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| InputError(format!("cannot listen on {addr}: {e}")))?;
        let bound: SocketAddr = listener.local_addr()?;
        if role == Role::Worker && !config.is_distributed() {
            return Err(InputError(
                "palisade worker needs --store postgres://… and --queue redis://… (or store and queue in the config)"
                    .into(),
            ));
        }
        let role = match role {
            Role::Api if !config.is_distributed() => Role::Embedded,
            role => role,
        };
        let service = Service::start_as(config, tokens, executor.handle().clone(), role)
            .await
            .map_err(|e| InputError(format!("cannot start: {e}")))?;
        if role == Role::Worker {
            // Where API nodes forward its deployments' requests: the bound
            // address, or this host's name when it listens on every one.
            let host = if bound.ip().is_unspecified() {
                palisade_service::worker::hostname()
            } else {
                bound.ip().to_string()
            };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            // Its deployments' routes take tokens like the API's: without a
            // tokens file every caller would be the operator, which only
            // this machine may be.
            if !service.tokens.is_open() || bound.ip().is_loopback() {
                service.serve_deployments(format!("http://{host}:{}", bound.port()));
            } else {
                tracing::warn!(
                    listening = %bound,
                    "no tokens configured: this worker runs no live deployment (give it the API nodes' --tokens, or listen on loopback)"
                );
            }
        }
        match role {
            Role::Worker => println!("palisade worker {} on http://{bound}", service.worker_info().id),
            _ => println!("palisade listening on http://{bound}"),
        }
        tracing::info!(%bound, data_dir = %service.config.data_dir.display(), "listening");
        run_server(service, listener, shutdown_signal()).await?;
        Ok::<(), InputError>(())
    });
    executor.shutdown_timeout(Duration::from_secs(1));
    result.map(|()| ExitCode::SUCCESS)
}

/// Whether `listen` was given anywhere but the defaults: the flag, the
/// environment or the config file.
fn listen_given(args: &ServeArgs) -> bool {
    args.listen.is_some()
        || std::env::var_os("PALISADE_LISTEN").is_some()
        || args
            .config
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.parse::<toml::Table>().ok())
            .is_some_and(|t| t.contains_key("listen"))
}

/// Niceness of the executor's threads: when wasm saturates every core, the
/// HTTP runtime (and so `/healthz`) still gets the CPU first.
pub const EXECUTOR_NICE: i32 = 5;

/// Lowers the calling thread's priority to [`EXECUTOR_NICE`] (Linux: nice
/// values are per thread). Failure only means the thread keeps its priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; they read and change
    // only the nice value of the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, EXECUTOR_NICE);
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("signal received: shutting down");
}
