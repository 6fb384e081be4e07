//! Configuration of `palisade serve`: one [`Config`] struct whose defaults
//! are written in one place ([`Config::default`]), filled from four layers,
//! each overriding the one before: the defaults, an optional TOML file
//! (`--config`, keys as in [`Config`], unknown keys rejected), environment
//! variables `PALISADE_<KEY>` (e.g. `PALISADE_QUEUE_DEPTH=50`) and command-line
//! flags. Every error names its source: the file with line and column, the
//! variable, or the key and its allowed range.
//!
//! It deliberately holds no policy (limits per guest live in policy files, see
//! `crate::policy`) and opens nothing: paths are checked when the service
//! starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (SQLite database and content-addressed files).
pub const DEFAULT_DATA_DIR: &str = "./palisade-data";
/// Default total depth of the three priority queues.
pub const DEFAULT_QUEUE_DEPTH: usize = 200;
/// Default number of jobs running at once, across tenants.
pub const DEFAULT_MAX_RUNNING: usize = 10;
/// Default number of jobs one tenant may have running at once.
pub const DEFAULT_MAX_RUNNING_PER_TENANT: usize = 8;
/// Default number of jobs one tenant may have waiting (a quarter of the
/// default queue, so four tenants can fill it and no one alone).
pub const DEFAULT_MAX_QUEUED_PER_TENANT: usize = 50;
/// Default refill rate of a tenant's submission bucket, jobs per second.
pub const DEFAULT_SUBMIT_RATE: f64 = 100.0;
/// Default capacity of a tenant's submission bucket (a burst).
pub const DEFAULT_SUBMIT_BURST: u32 = 200;
/// Default largest module upload: 16 MiB (a policy may refuse smaller).
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 16 << 20;
/// Default largest dataset upload: 64 MiB of CSV.
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 64 << 20;
/// Default largest JSON request body: 1 MiB.
pub const DEFAULT_MAX_JSON_BYTES: u64 = 1 << 20;
/// Default time a queued job waits before it rises one priority level.
pub const DEFAULT_AGING_MS: u64 = 5_000;
/// Default time a running job may go without progress before the watchdog
/// cancels it.
pub const DEFAULT_WATCHDOG_STALL_MS: u64 = 300_000;
/// Default time running jobs get to finish at shutdown before they are
/// cancelled and re-queued.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default number of starts after which a job interrupted by restarts is
/// failed instead of re-queued.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default number of wasm instances that may be alive at once (pool slots).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Default number of live deployments one service runs (each holds a wasm
/// instance for its lifetime, in pool slots of its own beside `max_instances`).
pub const DEFAULT_MAX_DEPLOYMENTS: u32 = 1000;
/// Default number of finished results kept in memory for fast reads.
pub const DEFAULT_RESULT_CACHE: usize = 4_096;
/// Default bytes of finished results kept in memory: 64 MiB, whatever their
/// number (a result can be tens of MB).
pub const DEFAULT_RESULT_CACHE_BYTES: u64 = 64 << 20;
/// Default number of strategies that get their own metric label; the rest
/// share the label `other`.
pub const DEFAULT_STRATEGY_LABELS: usize = 50;
/// Default time a client gets to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time a client gets to send a request's whole body.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
/// Default connections open at once, all clients together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// Default connections open at once from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Default policy of jobs that name none.
pub const DEFAULT_POLICY: &str = "default";
/// Default interval of a worker's heartbeats (distributed mode).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
/// Default life of a worker's heartbeat: a worker silent this long is dead,
/// and its jobs are reclaimed.
pub const DEFAULT_HEARTBEAT_TTL_MS: u64 = 30_000;
/// Default time to reach Postgres or Redis at start before giving up.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Everything `palisade serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Without any token configured, a non-loopback
    /// address is replaced by loopback (same port).
    pub listen: SocketAddr,
    /// Directory of the database and the uploaded files; created if missing.
    pub data_dir: PathBuf,
    /// TOML file of bearer tokens (`[[token]] token, tenant, operator`).
    /// Without it every request is the local operator and the server listens
    /// on loopback only.
    pub tokens_file: Option<PathBuf>,
    /// Directory of `<name>.toml` policies; without it the built-in ones.
    /// Policies replaced over the API take precedence over both.
    pub policies_dir: Option<PathBuf>,
    /// Policy of jobs that name none.
    pub default_policy: String,
    /// Total depth of the high, normal and low queues together.
    pub queue_depth: usize,
    /// Jobs running at once, across tenants.
    pub max_running: usize,
    /// Jobs one tenant may have running at once (in effect at most
    /// `max_running`).
    pub max_running_per_tenant: usize,
    /// Jobs one tenant may have waiting (in effect at most `queue_depth`).
    pub max_queued_per_tenant: usize,
    /// Refill rate of each tenant's submission bucket, jobs per second.
    pub submit_rate: f64,
    /// Capacity of each tenant's submission bucket.
    pub submit_burst: u32,
    /// Worker threads of the wasm executor (0: one per core).
    pub executor_threads: usize,
    /// Worker threads of the HTTP runtime.
    pub http_threads: usize,
    /// wasm instances alive at once (pool slots of the engine).
    pub max_instances: u32,
    /// Live deployments this service runs at once (more pool slots).
    pub max_deployments: u32,
    /// Largest module upload, bytes.
    pub max_module_bytes: u64,
    /// Largest dataset upload, bytes.
    pub max_dataset_bytes: u64,
    /// Largest JSON request body, bytes.
    pub max_json_bytes: u64,
    /// A queued job rises one priority level per this many milliseconds waited.
    pub aging_ms: u64,
    /// A running job without progress for this long is cancelled and counted
    /// by the watchdog.
    pub watchdog_stall_ms: u64,
    /// At shutdown, running jobs get this long to finish before they are
    /// cancelled and re-queued.
    pub shutdown_grace_ms: u64,
    /// A job found running at start-up (interrupted by a crash) is re-queued
    /// until it has been started this many times, then failed.
    pub max_attempts: u32,
    /// Finished results kept in memory.
    pub result_cache: usize,
    /// Bytes of finished results kept in memory (the oldest are read from
    /// the database again).
    pub result_cache_bytes: u64,
    /// Strategies with their own metric label; others are `other`.
    pub strategy_labels: usize,
    /// A connection that has not sent a request's headers this long after
    /// it opened (or after its previous request) is closed.
    pub header_timeout_ms: u64,
    /// A request whose body has not all arrived this long after its headers
    /// gets 408 and its connection is closed.
    pub body_timeout_ms: u64,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections open at once from one client IP address; more from it
    /// are closed as they arrive.
    pub max_connections_per_client: usize,
    /// The Python runtime component (`palisade-python.wasm`, built by
    /// `scripts/build-python-runtime.sh`); without it Python strategies are
    /// refused. `palisade serve` finds it as the CLI does when unset.
    pub python_runtime: Option<PathBuf>,
    /// The `palisade` binary, which compiles modules in a child process
    /// bounded by the policy (`compile_ms`, `compile_memory_bytes`); set by
    /// `palisade serve`, not a configuration key. `None` compiles in the
    /// server's process, unbounded.
    #[serde(skip)]
    pub compiler: Option<PathBuf>,
    /// Distributed mode: the shared store, `postgres://user@host:port/db`.
    /// Without it the embedded SQLite database in `data_dir` (then
    /// `data_dir` is this node's cache of module and dataset bytes and
    /// compiled code). Needs `queue`.
    pub store: Option<String>,
    /// Distributed mode: the job queue, `redis://host:port` (a single Redis,
    /// or any node of a Redis Cluster, found out at start). Needs `store`.
    pub queue: Option<String>,
    /// A worker writes its heartbeat this often (milliseconds).
    pub heartbeat_interval_ms: u64,
    /// A worker whose heartbeat is this old is dead and its jobs are
    /// reclaimed (milliseconds; more than `heartbeat_interval_ms`).
    pub heartbeat_ttl_ms: u64,
    /// Time to reach the store and the queue at start (milliseconds).
    pub connect_timeout_ms: u64,
    /// A worker's name in `GET /v1/workers` (default: host name and pid).
    pub worker_name: Option<String>,
    /// The hosts deployments' feeds and webhooks may reach, comma-separated
    /// (`host`, `host:port`, `*.domain`); none: any host.
    pub live_hosts: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            tokens_file: None,
            policies_dir: None,
            default_policy: DEFAULT_POLICY.to_owned(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_running: DEFAULT_MAX_RUNNING,
            max_running_per_tenant: DEFAULT_MAX_RUNNING_PER_TENANT,
            max_queued_per_tenant: DEFAULT_MAX_QUEUED_PER_TENANT,
            submit_rate: DEFAULT_SUBMIT_RATE,
            submit_burst: DEFAULT_SUBMIT_BURST,
            executor_threads: 0,
            http_threads: 1,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_deployments: DEFAULT_MAX_DEPLOYMENTS,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            max_dataset_bytes: DEFAULT_MAX_DATASET_BYTES,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
            aging_ms: DEFAULT_AGING_MS,
            watchdog_stall_ms: DEFAULT_WATCHDOG_STALL_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            result_cache: DEFAULT_RESULT_CACHE,
            result_cache_bytes: DEFAULT_RESULT_CACHE_BYTES,
            python_runtime: None,
            compiler: None,
            strategy_labels: DEFAULT_STRATEGY_LABELS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            store: None,
            queue: None,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            heartbeat_ttl_ms: DEFAULT_HEARTBEAT_TTL_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            worker_name: None,
            live_hosts: None,
        }
    }
}

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, has an unknown key or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A flag holds a value of the wrong type.
    #[error("--{flag}: {message}")]
    Flag { flag: String, message: String },
    /// A value is outside its allowed range.
    #[error("{key} = {value} is out of range (allowed {allowed})")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Values given on the command line, as `(key, value)` in [`Config`]'s key
/// names; they override everything else.
pub type Overrides = Vec<(String, toml::Value)>;

impl Config {
    /// Builds the configuration from the defaults, the file (if any), the
    /// environment variables `PALISADE_*` in `env` and the flag values.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            // Parse into `Config` first: it names unknown keys and wrong types.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: toml_message(&text, &e),
            })?;
            table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: toml_message(&text, &e),
            })?;
        }
        let keys = Config::keys();
        for (var, text) in env {
            let Some(key) = var.strip_prefix("PALISADE_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !keys.contains(&key) {
                continue;
            }
            let value = env_value(&text);
            check_one(&key, &value).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            table.insert(key, value);
        }
        for (key, value) in flags {
            check_one(&key, &value).map_err(|message| ConfigError::Flag {
                flag: key.replace('_', "-"),
                message,
            })?;
            table.insert(key, value);
        }
        let config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::File {
            path: file.map_or_else(|| PathBuf::from("configuration"), Path::to_owned),
            message: e.message().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The names of every key, as in the file.
    pub fn keys() -> Vec<String> {
        let table = toml::Table::try_from(Config {
            tokens_file: Some(PathBuf::new()),
            policies_dir: Some(PathBuf::new()),
            python_runtime: Some(PathBuf::new()),
            store: Some(String::new()),
            queue: Some(String::new()),
            worker_name: Some(String::new()),
            live_hosts: Some(String::new()),
            ..Config::default()
        })
        .expect("the config serializes to a table");
        table.keys().cloned().collect()
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts: [(&'static str, u64, u64, u64, &'static str); 19] = [
            (
                "max_queued_per_tenant",
                self.max_queued_per_tenant as u64,
                1,
                1_000_000,
                "1..=1000000",
            ),
            (
                "header_timeout_ms",
                self.header_timeout_ms,
                100,
                600_000,
                "100..=600000 milliseconds",
            ),
            (
                "body_timeout_ms",
                self.body_timeout_ms,
                100,
                3_600_000,
                "100..=3600000 milliseconds",
            ),
            (
                "max_connections",
                self.max_connections as u64,
                1,
                1_000_000,
                "1..=1000000",
            ),
            (
                "max_connections_per_client",
                self.max_connections_per_client as u64,
                1,
                1_000_000,
                "1..=1000000",
            ),
            (
                "result_cache_bytes",
                self.result_cache_bytes,
                0,
                64 << 30,
                "0..=68719476736",
            ),
            (
                "queue_depth",
                self.queue_depth as u64,
                1,
                1_000_000,
                "1..=1000000",
            ),
            ("max_running", self.max_running as u64, 1, 10_000, "1..=10000"),
            (
                "max_running_per_tenant",
                self.max_running_per_tenant as u64,
                1,
                10_000,
                "1..=10000",
            ),
            (
                "submit_burst",
                self.submit_burst.into(),
                1,
                10_000_000,
                "1..=10000000",
            ),
            (
                "executor_threads",
                self.executor_threads as u64,
                0,
                1024,
                "0..=1024 (0: one per core)",
            ),
            ("http_threads", self.http_threads as u64, 1, 1024, "1..=1024"),
            (
                "max_instances",
                self.max_instances.into(),
                1,
                100_000,
                "1..=100000",
            ),
            (
                "max_deployments",
                self.max_deployments.into(),
                0,
                100_000,
                "0..=100000",
            ),
            (
                "max_module_bytes",
                self.max_module_bytes,
                1024,
                1 << 30,
                "1024..=1073741824",
            ),
            (
                "max_dataset_bytes",
                self.max_dataset_bytes,
                1024,
                4 << 30,
                "1024..=4294967296",
            ),
            (
                "max_json_bytes",
                self.max_json_bytes,
                1024,
                1 << 30,
                "1024..=1073741824",
            ),
            ("max_attempts", self.max_attempts.into(), 1, 1000, "1..=1000"),
            (
                "strategy_labels",
                self.strategy_labels as u64,
                1,
                10_000,
                "1..=10000",
            ),
        ];
        for (key, value, min, max, allowed) in counts {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value: value.to_string(),
                    allowed,
                });
            }
        }
        let millis: [(&'static str, u64); 3] = [
            ("aging_ms", self.aging_ms),
            ("watchdog_stall_ms", self.watchdog_stall_ms),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
        ];
        for (key, value) in millis {
            if value > 86_400_000 || (key != "shutdown_grace_ms" && value == 0) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value: value.to_string(),
                    allowed: "1..=86400000 milliseconds (shutdown_grace_ms may be 0)",
                });
            }
        }
        for (key, value, allowed) in [
            (
                "heartbeat_interval_ms",
                self.heartbeat_interval_ms,
                "100..=600000 milliseconds",
            ),
            (
                "heartbeat_ttl_ms",
                self.heartbeat_ttl_ms,
                "200..=3600000 milliseconds",
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                "100..=600000 milliseconds",
            ),
        ] {
            let (min, max) = match key {
                "heartbeat_ttl_ms" => (200, 3_600_000),
                _ => (100, 600_000),
            };
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value: value.to_string(),
                    allowed,
                });
            }
        }
        if let Some(hosts) = &self.live_hosts {
            crate::deployments::AllowedHosts::parse(hosts).map_err(|problem| ConfigError::Invalid {
                key: "live_hosts",
                problem,
            })?;
        }
        if self.heartbeat_ttl_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::OutOfRange {
                key: "heartbeat_ttl_ms",
                value: self.heartbeat_ttl_ms.to_string(),
                allowed: "more than heartbeat_interval_ms (a live worker must beat before it expires)",
            });
        }
        match (&self.store, &self.queue) {
            (None, None) => {}
            (Some(store), Some(queue)) => {
                if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
                    return Err(ConfigError::OutOfRange {
                        key: "store",
                        value: crate::storage::redact_url(store),
                        allowed: "a Postgres URL, postgres://user@host:port/database",
                    });
                }
                if !(queue.starts_with("redis://") || queue.starts_with("rediss://")) {
                    return Err(ConfigError::OutOfRange {
                        key: "queue",
                        value: crate::storage::redact_url(queue),
                        allowed: "a Redis URL, redis://host:port",
                    });
                }
            }
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::OutOfRange {
                key: if self.store.is_some() { "queue" } else { "store" },
                value: "unset".into(),
                allowed:
                    "set together with the other: distributed mode needs store (Postgres) and queue (Redis)",
            }),
        }
        if !(self.submit_rate.is_finite() && self.submit_rate > 0.0 && self.submit_rate <= 1e7) {
            return Err(ConfigError::OutOfRange {
                key: "submit_rate",
                value: self.submit_rate.to_string(),
                allowed: "> 0 and <= 10000000 jobs per second",
            });
        }
        Ok(())
    }

    /// Executor worker threads, with 0 resolved to the number of cores.
    pub fn executor_threads(&self) -> usize {
        if self.executor_threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            self.executor_threads
        }
    }

    /// True in distributed mode (`store` and `queue` set).
    pub fn is_distributed(&self) -> bool {
        self.store.is_some() && self.queue.is_some()
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ttl_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn aging(&self) -> Duration {
        Duration::from_millis(self.aging_ms)
    }

    pub fn watchdog_stall(&self) -> Duration {
        Duration::from_millis(self.watchdog_stall_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// An environment variable's text as a TOML value: a number or boolean when
/// it reads as one, else a string (paths, addresses).
fn env_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
            _ => toml::Value::String(text.to_owned()),
        },
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

/// Checks that `value` has the right type for `key`, by deserializing a
/// one-key table.
fn check_one(key: &str, value: &toml::Value) -> Result<(), String> {
    let mut t = toml::Table::new();
    t.insert(key.to_owned(), value.clone());
    toml::Value::Table(t)
        .try_into::<Config>()
        .map(drop)
        .map_err(|e| e.message().to_owned())
}

/// toml's error as `line L column C: message`.
fn toml_message(text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line} column {column}: {}", err.message().trim_end())
        }
        None => err.message().trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::load(None, [], Vec::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./palisade-data"));
        assert_eq!(c.queue_depth, 200);
        assert_eq!(c.max_running, 10);
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.toml");
        std::fs::write(
            &file,
            "queue_depth = 5\nmax_running = 4\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("PALISADE_MAX_RUNNING", "3"),
                ("PALISADE_DATA_DIR", "/tmp/x"),
                ("PALISADE_UNRELATED", "whatever"),
                ("HOME", "/root"),
            ]),
            vec![("max_running".into(), toml::Value::Integer(2))],
        )
        .unwrap();
        assert_eq!(c.queue_depth, 5, "file");
        assert_eq!(c.listen.port(), 9000, "file");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"), "env");
        assert_eq!(c.max_running, 2, "flag over env over file");
    }

    #[test]
    fn errors_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let check = |text: &str, fragments: &[&str]| {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let message = Config::load(Some(&file), [], Vec::new()).unwrap_err().to_string();
            for f in fragments {
                assert!(message.contains(f), "`{message}` lacks `{f}`");
            }
        };
        check(
            "queue_dept = 5\n",
            &["bad.toml", "line 1", "unknown field `queue_dept`"],
        );
        check(
            "\nqueue_depth = \"many\"\n",
            &["bad.toml", "line 2", "invalid type"],
        );
        check(
            "queue_depth = 0\n",
            &["queue_depth = 0 is out of range", "1..=1000000"],
        );
        check("submit_rate = 0.0\n", &["submit_rate = 0 is out of range"]);

        let message = Config::load(None, env(&[("PALISADE_QUEUE_DEPTH", "lots")]), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("environment variable PALISADE_QUEUE_DEPTH: invalid type"),
            "{message}"
        );
        let message = Config::load(
            None,
            [],
            vec![("listen".into(), toml::Value::String("nowhere".into()))],
        )
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("--listen: "), "{message}");
    }
}
