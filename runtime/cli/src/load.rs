//! `palisade load`: the load generator an operator runs against any
//! deployment of `palisade serve`. It uploads a module and its bars (uploads
//! are content-addressed, so running it again adds nothing), then submits
//! jobs of a weighted mix of kinds, `--concurrency` in flight, for `--jobs`
//! jobs or `--duration`, optionally at a fixed `--rate` (open loop). Each job
//! is `POST /v1/jobs` with an `Idempotency-Key`, retried with the same key
//! after a refusal (429, 503, 507: after its `Retry-After`) or a transport
//! error, at most `--retries` times; then long polls of
//! `GET /v1/jobs/{id}/result?wait=` until it ended, and one
//! `GET /v1/jobs/{id}` for its state and cause. It prints jobs per second,
//! latency percentiles and outcomes (a table, or JSON with `--json`), and
//! checks `--assert` expressions (`load/assertion.rs`).
//!
//! Exit codes: 0 done and every assertion held, 1 an assertion failed
//! (named), 2 bad flags, a malformed assertion, or a server that cannot be
//! reached or refuses the uploads.
//!
//! The clients are blocking threads (ureq), one per job in flight: simple,
//! and enough for the rates of whole jobs it is for (about a thousand HTTP
//! exchanges a second on one core). It measures the server through HTTP
//! only: nothing here reads the server's files or metrics.

mod assertion;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::{data_arg, emit, safe, InputError};
use assertion::{Assertion, Count, Metric, Stat};

/// Retries of one request after a refusal or a transport error, by default.
const DEFAULT_RETRIES: u32 = 10;
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The wait asked of each long poll of a result (the server's maximum is 60 s).
const POLL_WAIT_MS: u64 = 10_000;
/// Variants of the default grid of `optimize` and `walk_forward` jobs.
const DEFAULT_VARIANTS: usize = 8;
/// Jobs of a run that gives neither `--jobs` nor `--duration`.
const DEFAULT_JOBS: usize = 100;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server's base URL, `http://HOST:PORT`.
    #[arg(long)]
    pub url: String,
    /// Bearer token (default: the PALISADE_TOKEN environment variable; none
    /// for a server without a tokens file).
    #[arg(long)]
    pub token: Option<String>,
    /// The strategy module (.wasm) to upload and run.
    #[arg(long)]
    pub module: PathBuf,
    /// CSV bars to upload; repeat for several symbols. The dataset's name
    /// is the file name without extension, or write `SYMBOL=path`.
    #[arg(long = "data", required = true)]
    pub data: Vec<String>,
    /// A parameter value, `name=value`; repeatable. Others take their defaults.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Jobs to submit in all (default 100 without --duration).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub jobs: Option<u64>,
    /// Submit for this long (e.g. 30s, 500ms, 2m), then wait for the jobs
    /// in flight. With --jobs too, whichever comes first.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Jobs in flight at once (each a blocking client thread).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: Option<u64>,
    /// Submissions per second (open loop: job i starts at i/RATE s, and its
    /// latency counts from then, however late a free client picked it up).
    /// Default: closed loop, each client submits when its last job ended.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Kinds of job and their weights, e.g. backtest=6,optimize=1 (kinds:
    /// backtest, optimize, walk_forward, monte_carlo).
    #[arg(long)]
    pub mix: Option<String>,
    /// Grid axes of optimize and walk_forward jobs, in the CLI's --grid
    /// syntax; repeatable. Default: 8 values of the strategy's first
    /// numeric parameter not given with --param, ending at its default and
    /// within its declared range.
    #[arg(long)]
    pub grid: Vec<String>,
    /// Priority of the jobs: high, normal or low.
    #[arg(long, value_parser = ["high", "normal", "low"])]
    pub priority: Option<String>,
    /// Policy of the jobs (default: the server's default policy).
    #[arg(long)]
    pub policy: Option<String>,
    /// A preset: `replaced-system` is the replaced system's scenario, 48
    /// optimize jobs of 8 variants, 6 in flight. Flags given as well
    /// override its values.
    #[arg(long, value_parser = ["replaced-system"])]
    pub scenario: Option<String>,
    /// Retries of a request refused (429, 503, 507) or lost to a transport
    /// error, with the same Idempotency-Key.
    #[arg(long, default_value_t = DEFAULT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub retries: u32,
    /// A job not ended this long after its start is counted as an error.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub job_timeout: Duration,
    /// A check of the results, e.g. 'p95<100ms', 'failed==0',
    /// 'jobs_per_sec>=10'; repeatable. Exit code 1 when one fails.
    #[arg(long = "assert", value_name = "EXPR")]
    pub asserts: Vec<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `30s`, `500ms`, `2m`: a whole number with its unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number and a unit, e.g. 30s, 500ms, 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if d.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(d)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(r),
        _ => Err(format!(
            "{text:?}: submissions per second, a number in (0, 1000000]"
        )),
    }
}

/// The kinds of job, as the API names them.
const KINDS: [&str; 4] = ["backtest", "optimize", "walk_forward", "monte_carlo"];

/// Parses `--mix`: kinds with whole weights ≥ 1, each kind once.
fn parse_mix(text: &str) -> Result<Vec<(&'static str, u32)>, String> {
    let mut mix: Vec<(&'static str, u32)> = Vec::new();
    for part in text.split(',') {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let name = name.trim().replace('-', "_");
        let kind = KINDS.into_iter().find(|k| *k == name).ok_or_else(|| {
            format!(
                "--mix {text:?}: unknown kind {name:?} (kinds: {})",
                KINDS.join(", ")
            )
        })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| {
                format!("--mix {text:?}: the weight of {kind} must be a whole number in 1..=1000")
            })?;
        if mix.iter().any(|(k, _)| *k == kind) {
            return Err(format!("--mix {text:?}: {kind} is given twice"));
        }
        mix.push((kind, weight));
    }
    Ok(mix)
}

/// The kind of each job in turn: smooth weighted round robin, so that
/// `backtest=6,optimize=1` spreads the optimizations out instead of sending
/// them in a burst, and every run of the same flags sends the same sequence.
fn mix_sequence(mix: &[(&'static str, u32)]) -> Vec<usize> {
    let total: i64 = mix.iter().map(|(_, w)| i64::from(*w)).sum();
    let mut current = vec![0i64; mix.len()];
    (0..total)
        .map(|_| {
            for (c, (_, w)) in current.iter_mut().zip(mix) {
                *c += i64::from(*w);
            }
            let best = (0..mix.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

/// A `--param` value as JSON: a number, a boolean, else the text.
fn param_value(text: &str) -> Value {
    if let Ok(n) = text.parse::<f64>() {
        if let Some(n) = serde_json::Number::from_f64(n) {
            return Value::Number(n);
        }
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// The default grid: `DEFAULT_VARIANTS` values of the first declared
/// numeric parameter not fixed by `--param`, ending at its default and
/// within its declared range (for an integer, consecutive values; for a
/// float, the default times 0.3, 0.4, …, 1.0), going above the default only
/// when the range leaves too few below it. Values below a default are the
/// safe side for the usual lengths and sizes (a fast average stays faster
/// than a slow one). `None` when the strategy declares no such parameter.
fn default_grid(parameters: &Value, fixed: &[String]) -> Option<String> {
    let p = parameters.as_array()?.iter().find(|p| {
        let name = p["name"].as_str().unwrap_or("");
        matches!(p["type"].as_str(), Some("int" | "float"))
            && p["default"].is_number()
            && !fixed.iter().any(|f| f == name)
    })?;
    let name = p["name"].as_str()?;
    let default = p["default"].as_f64()?;
    let min = p["min"].as_f64().unwrap_or(f64::NEG_INFINITY);
    let max = p["max"].as_f64().unwrap_or(f64::INFINITY);
    let int = p["type"] == "int";
    let candidate = |k: i64| -> f64 {
        if int {
            default + k as f64
        } else if default != 0.0 {
            // k in -7..=0 gives 0.3..=1.0 times the default; above, 1.1, 1.2, …
            let f = 1.0 + k as f64 / 10.0;
            (default * f * 1e9).round() / 1e9
        } else {
            k as f64 / 10.0
        }
    };
    let mut values: Vec<f64> = Vec::new();
    let below = (0..DEFAULT_VARIANTS as i64).map(|k| -k);
    let above = 1..=DEFAULT_VARIANTS as i64 * 2;
    for k in below.chain(above) {
        let v = candidate(k);
        if values.len() == DEFAULT_VARIANTS {
            break;
        }
        if v >= min && v <= max && v.is_finite() && !values.contains(&v) {
            values.push(v);
        }
    }
    values.sort_by(f64::total_cmp);
    let list: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
    Some(format!("{name}={}", list.join(",")))
}

/// The server, as the clients see it.
struct Target {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// An answer: status, `Retry-After` and body.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem's detail, or the start of the body.
    fn detail(&self) -> String {
        let v = self.json();
        match v["detail"].as_str() {
            Some(d) => format!("{} {}", self.status, safe(d)),
            None => {
                let text = String::from_utf8_lossy(&self.body);
                format!(
                    "{} {}",
                    self.status,
                    safe(&text.chars().take(200).collect::<String>())
                )
            }
        }
    }

    fn is_refusal(&self) -> bool {
        matches!(self.status, 429 | 503 | 507)
    }
}

impl Target {
    fn new(base: &str, token: Option<String>, clients: usize) -> Target {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A long poll lasts up to POLL_WAIT_MS; an upload may be large.
            .timeout_global(Some(Duration::from_secs(120)))
            .max_idle_connections(clients + 4)
            .max_idle_connections_per_host(clients + 4)
            .user_agent(concat!("palisade-load/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Target {
            agent,
            base: base.to_owned(),
            token,
        }
    }

    fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, String> {
        let mut r = r.map_err(|e| e.to_string())?;
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        r.body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok(Answer {
            status: r.status().as_u16(),
            retry_after,
            body,
        })
    }

    fn get(&self, path: &str) -> Result<Answer, String> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Target::answer(req.call())
    }

    fn post(&self, path: &str, content_type: &str, key: Option<&str>, body: &[u8]) -> Result<Answer, String> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        Target::answer(req.send(body))
    }
}

/// How one job ended, from the client's side.
#[derive(Clone, Debug)]
enum Outcome {
    Succeeded,
    /// State `failed`, with its cause.
    Failed(String),
    TimedOut,
    Cancelled,
    /// Never acknowledged: every try was refused.
    Dropped,
    /// A transport error or an unexpected answer.
    Error(String),
}

/// What one job cost and how it ended.
struct JobRecord {
    kind: usize,
    outcome: Outcome,
    /// Start to acknowledgement, seconds.
    submit: Option<f64>,
    /// Start to the end of the job, seconds.
    latency: Option<f64>,
    /// Refusal answers by status: 429, 503, 507.
    refusals: [u64; 3],
    /// Requests retried after a transport error.
    transport_retries: u64,
    /// The detail of the last refusal.
    last_refusal: Option<String>,
}

/// Sleeps before retry `attempt` (0-based) of a transport error: 0.1 s,
/// doubling, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6)).min(Duration::from_secs(5))
}

/// Runs one job: submits it (retrying with the same key), waits for its
/// end, reads its state.
fn run_job(t: &Target, kind: usize, body: &[u8], key: &str, start: Instant, args: &LoadArgs) -> JobRecord {
    let mut rec = JobRecord {
        kind,
        outcome: Outcome::Error(String::new()),
        submit: None,
        latency: None,
        refusals: [0; 3],
        transport_retries: 0,
        last_refusal: None,
    };
    let mut attempt = 0u32;
    let id = loop {
        match t.post("/v1/jobs", "application/json", Some(key), body) {
            Ok(a) if a.status == 201 || a.status == 200 => match a.json()["id"].as_str() {
                Some(id) => break id.to_owned(),
                None => {
                    rec.outcome =
                        Outcome::Error(format!("submission: an answer without an id: {}", a.detail()));
                    return rec;
                }
            },
            Ok(a) if a.is_refusal() => {
                let i = match a.status {
                    429 => 0,
                    503 => 1,
                    _ => 2,
                };
                rec.refusals[i] += 1;
                rec.last_refusal = Some(a.detail());
                if attempt == args.retries {
                    rec.outcome = Outcome::Dropped;
                    return rec;
                }
                std::thread::sleep(
                    a.retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(MAX_RETRY_AFTER),
                );
            }
            Ok(a) => {
                rec.outcome = Outcome::Error(format!("submission: {}", a.detail()));
                return rec;
            }
            Err(e) => {
                if attempt == args.retries {
                    rec.outcome = Outcome::Error(format!("submission: {e}"));
                    return rec;
                }
                rec.transport_retries += 1;
                std::thread::sleep(backoff(attempt));
            }
        }
        attempt += 1;
    };
    rec.submit = Some(start.elapsed().as_secs_f64());
    let deadline = start + args.job_timeout;
    let mut attempt = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            rec.outcome = Outcome::Error(format!(
                "job {id} did not end within --job-timeout {} s",
                args.job_timeout.as_secs_f64()
            ));
            return rec;
        }
        let wait = (left.as_millis() as u64).clamp(1, POLL_WAIT_MS);
        match t.get(&format!("/v1/jobs/{id}/result?wait={wait}")) {
            Ok(a) if a.status == 202 => continue,
            Ok(a) if a.status == 200 || a.status == 409 => break,
            Ok(a) if a.is_refusal() && attempt < args.retries => {
                attempt += 1;
                std::thread::sleep(
                    a.retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(MAX_RETRY_AFTER),
                );
            }
            Ok(a) => {
                rec.outcome = Outcome::Error(format!("result of {id}: {}", a.detail()));
                return rec;
            }
            Err(_) if attempt < args.retries => {
                rec.transport_retries += 1;
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            Err(e) => {
                rec.outcome = Outcome::Error(format!("result of {id}: {e}"));
                return rec;
            }
        }
    }
    rec.latency = Some(start.elapsed().as_secs_f64());
    let mut attempt = 0u32;
    let status = loop {
        match t.get(&format!("/v1/jobs/{id}")) {
            Ok(a) if a.status == 200 => break a.json(),
            Ok(a) if a.is_refusal() && attempt < args.retries => {
                std::thread::sleep(
                    a.retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(MAX_RETRY_AFTER),
                );
            }
            Ok(a) => {
                rec.outcome = Outcome::Error(format!("status of {id}: {}", a.detail()));
                return rec;
            }
            Err(_) if attempt < args.retries => {
                rec.transport_retries += 1;
                std::thread::sleep(backoff(attempt));
            }
            Err(e) => {
                rec.outcome = Outcome::Error(format!("status of {id}: {e}"));
                return rec;
            }
        }
        attempt += 1;
    };
    let cause = status["error"]["cause"].as_str().unwrap_or("unknown");
    rec.outcome = match status["state"].as_str() {
        Some("succeeded") => Outcome::Succeeded,
        Some("failed") => Outcome::Failed(safe(cause)),
        Some("timed_out") => Outcome::TimedOut,
        Some("cancelled") => Outcome::Cancelled,
        other => Outcome::Error(format!("job {id} ended in an unknown state {other:?}")),
    };
    rec
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p90: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        let ms = |v: Option<f64>| v.map(|s| s * 1e3);
        Percentiles {
            p50: ms(percentile(&samples, 0.50)),
            p90: ms(percentile(&samples, 0.90)),
            p95: ms(percentile(&samples, 0.95)),
            p99: ms(percentile(&samples, 0.99)),
            max: ms(samples.last().copied()),
        }
    }

    /// In seconds, as assertions compare.
    fn get(&self, s: Stat) -> Option<f64> {
        let ms = match s {
            Stat::P50 => self.p50,
            Stat::P90 => self.p90,
            Stat::P95 => self.p95,
            Stat::P99 => self.p99,
            Stat::Max => self.max,
        };
        ms.map(|v| v / 1e3)
    }
}

#[derive(Debug, Default, Serialize)]
struct Refusals {
    total: u64,
    #[serde(rename = "429")]
    too_many_requests: u64,
    #[serde(rename = "503")]
    unavailable: u64,
    #[serde(rename = "507")]
    insufficient_storage: u64,
}

#[derive(Debug, Serialize)]
struct AssertionResult {
    assertion: String,
    /// The measured value (milliseconds for a latency).
    value: Option<f64>,
    passed: bool,
    /// The value for people: with its unit, counts as whole numbers.
    #[serde(skip)]
    shown: String,
}

/// What a run measured: the table, or the `--json` object.
#[derive(Debug, Serialize)]
struct Summary {
    kind: &'static str,
    url: String,
    strategy: String,
    datasets: Vec<String>,
    mix: BTreeMap<&'static str, u32>,
    grid: Option<Vec<String>>,
    concurrency: usize,
    rate: Option<f64>,
    /// Jobs attempted.
    jobs: u64,
    jobs_by_kind: BTreeMap<&'static str, u64>,
    wall_seconds: f64,
    /// Jobs that ended (any state) per second of wall time.
    jobs_per_sec: f64,
    succeeded: u64,
    failed: u64,
    /// Failed jobs by cause.
    failed_causes: BTreeMap<String, u64>,
    timed_out: u64,
    cancelled: u64,
    /// Refusal answers to submissions.
    refused: Refusals,
    /// Jobs never acknowledged: every try refused.
    dropped: u64,
    /// The detail of a refusal (the last job's), e.g. why the queue is full.
    last_refusal: Option<String>,
    /// Jobs lost to a transport error or an unexpected answer.
    errors: u64,
    /// The first few distinct error messages.
    error_messages: Vec<String>,
    transport_retries: u64,
    /// Start (scheduled time with --rate) to terminal state, ms.
    latency_ms: Percentiles,
    /// Start to acknowledgement (retries included), ms.
    submit_ms: Percentiles,
    assertions: Vec<AssertionResult>,
}

impl Summary {
    fn metric(&self, m: Metric) -> Option<f64> {
        Some(match m {
            Metric::Latency(s) => return self.latency_ms.get(s),
            Metric::Submit(s) => return self.submit_ms.get(s),
            Metric::JobsPerSec => self.jobs_per_sec,
            Metric::Count(c) => {
                (match c {
                    Count::Jobs => self.jobs,
                    Count::Succeeded => self.succeeded,
                    Count::Failed => self.failed,
                    Count::TimedOut => self.timed_out,
                    Count::Cancelled => self.cancelled,
                    Count::Refused => self.refused.total,
                    Count::Dropped => self.dropped,
                    Count::Errors => self.errors,
                }) as f64
            }
        })
    }
}

/// The base URL, checked: `http://` and a host, no trailing slash.
fn base_url(url: &str) -> Result<String, InputError> {
    let base = url.trim_end_matches('/');
    match base.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.contains(['?', '#', ' ']) => Ok(base.to_owned()),
        _ if base.starts_with("https://") => Err(InputError(format!(
            "--url {url}: https is not supported; give the server's http:// address (e.g. http://127.0.0.1:8080)"
        ))),
        _ => Err(InputError(format!("--url {url}: expected http://HOST:PORT"))),
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The flags with the scenario's values under them, checked.
struct Plan {
    jobs: Option<u64>,
    duration: Option<Duration>,
    concurrency: usize,
    mix: Vec<(&'static str, u32)>,
}

fn plan(args: &LoadArgs) -> Result<Plan, InputError> {
    // The replaced system ran 48 jobs, 6 in parallel, each an optimization
    // of 8 variants.
    let preset = args.scenario.as_deref() == Some("replaced-system");
    let jobs = args.jobs.or(preset.then_some(48));
    let jobs = match (jobs, args.duration) {
        (None, None) => Some(DEFAULT_JOBS as u64),
        (j, _) => j,
    };
    let concurrency = args.concurrency.unwrap_or(if preset { 6 } else { 4 }) as usize;
    let mix = match (&args.mix, preset) {
        (Some(m), _) => parse_mix(m)?,
        (None, true) => vec![("optimize", 1)],
        (None, false) => vec![("backtest", 1)],
    };
    Ok(Plan {
        jobs,
        duration: args.duration,
        concurrency,
        mix,
    })
}

/// What the uploads gave: the strategy id, its declared parameters, and
/// each dataset's id and name.
struct Uploaded {
    strategy: String,
    parameters: Value,
    datasets: Vec<(String, String)>,
}

/// Uploads the module and datasets.
fn upload(t: &Target, args: &LoadArgs) -> Result<Uploaded, InputError> {
    let module = std::fs::read(&args.module)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", args.module.display())))?;
    let files = args
        .data
        .iter()
        .map(|d| {
            let (name, path) = data_arg(d);
            std::fs::read(&path)
                .map(|bytes| (name, bytes))
                .map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let unreachable = |what: &str, e: String| InputError(format!("cannot reach {} ({what}): {e}", t.base));
    let refused =
        |what: &str, a: &Answer| InputError(format!("{what} at {} refused: {}", t.base, a.detail()));
    let a = t
        .post("/v1/strategies", "application/wasm", None, &module)
        .map_err(|e| unreachable("uploading the module", e))?;
    if a.status != 200 && a.status != 201 {
        return Err(refused(&format!("the module {}", args.module.display()), &a));
    }
    let v = a.json();
    let strategy = v["id"]
        .as_str()
        .ok_or_else(|| InputError(format!("the upload answer has no id: {}", a.detail())))?
        .to_owned();
    let mut datasets = Vec::new();
    for (name, bytes) in files {
        let a = t
            .post(
                &format!("/v1/datasets?name={}", encode(&name)),
                "text/csv",
                None,
                &bytes,
            )
            .map_err(|e| unreachable("uploading the data", e))?;
        if a.status != 200 && a.status != 201 {
            return Err(refused(&format!("the dataset {name}"), &a));
        }
        let id = a.json()["id"]
            .as_str()
            .ok_or_else(|| InputError(format!("the upload answer has no id: {}", a.detail())))?
            .to_owned();
        datasets.push((id, name));
    }
    Ok(Uploaded {
        strategy,
        parameters: v["parameters"].clone(),
        datasets,
    })
}

/// `palisade load`.
pub fn load(args: &LoadArgs) -> Result<ExitCode, InputError> {
    // Everything the user can get wrong is checked before any request.
    let asserts = args
        .asserts
        .iter()
        .map(|a| a.parse::<Assertion>())
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan(args)?;
    let base = base_url(&args.url)?;
    let params = args
        .params
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_owned(), param_value(v.trim())))
                .ok_or_else(|| InputError(format!("--param {p:?}: expected name=value")))
        })
        .collect::<Result<Map<String, Value>, _>>()?;
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("PALISADE_TOKEN").ok().filter(|t| !t.is_empty()));
    let t = Target::new(&base, token, plan.concurrency);

    let Uploaded {
        strategy,
        parameters,
        datasets,
    } = upload(&t, args)?;
    let needs_grid = plan
        .mix
        .iter()
        .any(|(k, _)| matches!(*k, "optimize" | "walk_forward"));
    let grid = if !needs_grid {
        None
    } else if !args.grid.is_empty() {
        Some(args.grid.clone())
    } else {
        let fixed: Vec<String> = params.keys().cloned().collect();
        Some(vec![default_grid(&parameters, &fixed).ok_or_else(|| {
            InputError(
                "the strategy declares no numeric parameter to vary (or --param fixes them all): give --grid"
                    .into(),
            )
        })?])
    };
    let dataset_ids: Vec<&str> = datasets.iter().map(|(id, _)| id.as_str()).collect();
    let bodies: Vec<Vec<u8>> = plan
        .mix
        .iter()
        .map(|(kind, _)| {
            let mut body = json!({
                "strategy": strategy,
                "dataset": if dataset_ids.len() == 1 { json!(dataset_ids[0]) } else { json!(dataset_ids) },
                "kind": kind,
                "params": params,
            });
            if let Some(p) = &args.priority {
                body["priority"] = json!(p);
            }
            if let Some(p) = &args.policy {
                body["policy"] = json!(p);
            }
            if matches!(*kind, "optimize" | "walk_forward") {
                body["grid"] = json!(grid);
            }
            serde_json::to_vec(&body).unwrap_or_default()
        })
        .collect();
    let sequence = mix_sequence(&plan.mix);

    // Keys unique to this run: a second run must not replay the first's jobs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run_id = format!("{:x}-{:x}", nanos, std::process::id());
    let next = AtomicUsize::new(0);
    let records = Mutex::new(Vec::new());
    let started = Instant::now();
    let stop_at = plan.duration.map(|d| started + d);
    std::thread::scope(|scope| {
        for _ in 0..plan.concurrency {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if plan.jobs.is_some_and(|n| i as u64 >= n) {
                    break;
                }
                let start = match args.rate {
                    Some(rate) => {
                        let at = started + Duration::from_secs_f64(i as f64 / rate);
                        if stop_at.is_some_and(|s| at >= s) {
                            break;
                        }
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        at
                    }
                    None => Instant::now(),
                };
                if stop_at.is_some_and(|s| start >= s) {
                    break;
                }
                let kind = sequence[i % sequence.len()];
                let key = format!("load-{run_id}-{i}");
                let rec = run_job(&t, kind, &bodies[kind], &key, start, args);
                records.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let records = records.into_inner().unwrap_or_else(|e| e.into_inner());

    let mut s = Summary {
        kind: "load",
        url: base,
        strategy,
        datasets: datasets.iter().map(|(id, name)| format!("{name}={id}")).collect(),
        mix: plan.mix.iter().copied().collect(),
        grid,
        concurrency: plan.concurrency,
        rate: args.rate,
        jobs: records.len() as u64,
        jobs_by_kind: BTreeMap::new(),
        wall_seconds: wall,
        jobs_per_sec: 0.0,
        succeeded: 0,
        failed: 0,
        failed_causes: BTreeMap::new(),
        timed_out: 0,
        cancelled: 0,
        refused: Refusals::default(),
        dropped: 0,
        last_refusal: None,
        errors: 0,
        error_messages: Vec::new(),
        transport_retries: 0,
        latency_ms: Percentiles::default(),
        submit_ms: Percentiles::default(),
        assertions: Vec::new(),
    };
    for r in &records {
        *s.jobs_by_kind.entry(plan.mix[r.kind].0).or_default() += 1;
        s.refused.too_many_requests += r.refusals[0];
        s.refused.unavailable += r.refusals[1];
        s.refused.insufficient_storage += r.refusals[2];
        s.transport_retries += r.transport_retries;
        if r.last_refusal.is_some() {
            s.last_refusal.clone_from(&r.last_refusal);
        }
        match &r.outcome {
            Outcome::Succeeded => s.succeeded += 1,
            Outcome::Failed(cause) => {
                s.failed += 1;
                *s.failed_causes.entry(cause.clone()).or_default() += 1;
            }
            Outcome::TimedOut => s.timed_out += 1,
            Outcome::Cancelled => s.cancelled += 1,
            Outcome::Dropped => s.dropped += 1,
            Outcome::Error(m) => {
                s.errors += 1;
                if s.error_messages.len() < 5 && !s.error_messages.contains(m) {
                    s.error_messages.push(m.clone());
                }
            }
        }
    }
    s.refused.total = s.refused.too_many_requests + s.refused.unavailable + s.refused.insufficient_storage;
    let ended = s.succeeded + s.failed + s.timed_out + s.cancelled;
    s.jobs_per_sec = ended as f64 / wall.max(1e-9);
    s.latency_ms = Percentiles::of(records.iter().filter_map(|r| r.latency).collect());
    s.submit_ms = Percentiles::of(records.iter().filter_map(|r| r.submit).collect());
    let mut all_held = true;
    for a in &asserts {
        let value = s.metric(a.metric);
        let passed = a.holds(value);
        all_held &= passed;
        let (value, shown) = match (a.metric, value) {
            (_, None) => (None, "nothing: no job ended".to_owned()),
            (Metric::Latency(_) | Metric::Submit(_), Some(v)) => {
                (Some(v * 1e3), format!("{:.1} ms", v * 1e3))
            }
            (Metric::JobsPerSec, Some(v)) => (Some(v), format!("{v:.2} jobs/s")),
            (Metric::Count(_), Some(v)) => (Some(v), format!("{v:.0}")),
        };
        s.assertions.push(AssertionResult {
            assertion: a.text.clone(),
            value,
            passed,
            shown,
        });
    }
    if args.json {
        emit(serde_json::to_string_pretty(&s)?);
    } else {
        print_table(&s);
    }
    if !all_held {
        for a in s.assertions.iter().filter(|a| !a.passed) {
            eprintln!("assertion failed: {} (measured {})", a.assertion, a.shown);
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn print_table(s: &Summary) {
    let mix: Vec<String> = s.mix.iter().map(|(k, w)| format!("{k}={w}")).collect();
    let kinds: Vec<String> = s.jobs_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    emit(format_args!("palisade load against {}", s.url));
    emit(format_args!(
        "  strategy {}, data {}",
        &s.strategy[..s.strategy.len().min(12)],
        s.datasets.join(", ")
    ));
    emit(format_args!(
        "  mix {}{}, concurrency {}, {}",
        mix.join(","),
        s.grid
            .as_ref()
            .map_or(String::new(), |g| format!(" (grid {})", g.join(" "))),
        s.concurrency,
        s.rate
            .map_or("closed loop".into(), |r| format!("open loop at {r} jobs/s"))
    ));
    emit(format_args!(
        "jobs: {} ({}) in {:.2} s: {:.2} jobs/s",
        s.jobs,
        kinds.join(", "),
        s.wall_seconds,
        s.jobs_per_sec
    ));
    emit("");
    emit(format_args!("{:<22}{:>8}", "outcome", "jobs"));
    let causes: Vec<String> = s.failed_causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    for (name, n, note) in [
        ("succeeded", s.succeeded, String::new()),
        ("failed", s.failed, causes.join(", ")),
        ("timed_out", s.timed_out, String::new()),
        ("cancelled", s.cancelled, String::new()),
        ("dropped (refused)", s.dropped, String::new()),
        ("errors", s.errors, String::new()),
    ] {
        emit(format_args!("{name:<22}{n:>8}  {note}").to_string().trim_end());
    }
    emit(format_args!(
        "refused answers: {} (429: {}, 503: {}, 507: {}); transport retries: {}",
        s.refused.total,
        s.refused.too_many_requests,
        s.refused.unavailable,
        s.refused.insufficient_storage,
        s.transport_retries
    ));
    if let Some(r) = &s.last_refusal {
        emit(format_args!("  refused: {r}"));
    }
    for m in &s.error_messages {
        emit(format_args!("  error: {m}"));
    }
    emit("");
    emit(format_args!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency (ms)", "p50", "p90", "p95", "p99", "max"
    ));
    for (name, p) in [("submit", &s.submit_ms), ("end to end", &s.latency_ms)] {
        emit(format_args!(
            "{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p95),
            ms(p.p99),
            ms(p.max)
        ));
    }
    if !s.assertions.is_empty() {
        emit("");
        for a in &s.assertions {
            emit(format_args!(
                "{} {} (measured {})",
                if a.passed { "pass" } else { "FAIL" },
                a.assertion,
                a.shown
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["30", "0s", "1.5s", "s", "-1s", "10h", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mixes_are_weighted_and_spread_out() {
        let mix = parse_mix("backtest=2,optimize=1").unwrap();
        assert_eq!(mix, [("backtest", 2), ("optimize", 1)]);
        assert_eq!(mix_sequence(&mix), [0, 1, 0]);
        let mix = parse_mix("backtest=6,walk-forward=1,monte_carlo").unwrap();
        let seq = mix_sequence(&mix);
        assert_eq!(seq.len(), 8);
        assert_eq!(seq.iter().filter(|&&k| k == 0).count(), 6);
        assert_ne!(seq[..2], [1, 2], "the rare kinds are not sent together first");
        for (bad, why) in [
            ("backtest=0", "weight of backtest"),
            ("backtest=x", "weight of backtest"),
            ("sweep=1", "unknown kind \"sweep\""),
            ("backtest,backtest", "given twice"),
            ("", "unknown kind \"\""),
        ] {
            let e = parse_mix(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_default_grid_has_eight_values_ending_at_the_default() {
        let params = json!([
            {"name": "fast", "type": "int", "default": 10, "min": 1, "max": 1000},
            {"name": "slow", "type": "int", "default": 30, "min": 2, "max": 5000},
            {"name": "size", "type": "float", "default": 1.0, "min": 0.000001, "max": 1e9},
        ]);
        assert_eq!(default_grid(&params, &[]).unwrap(), "fast=3,4,5,6,7,8,9,10");
        assert_eq!(
            default_grid(&params, &["fast".into()]).unwrap(),
            "slow=23,24,25,26,27,28,29,30"
        );
        assert_eq!(
            default_grid(&params, &["fast".into(), "slow".into()]).unwrap(),
            "size=0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"
        );
        // Near its minimum, the axis goes above the default.
        let near = json!([{"name": "n", "type": "int", "default": 2, "min": 1, "max": 100}]);
        assert_eq!(default_grid(&near, &[]).unwrap(), "n=1,2,3,4,5,6,7,8");
        let none = json!([{"name": "on", "type": "bool", "default": true}]);
        assert_eq!(default_grid(&none, &[]), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.50), Some(50.0));
        assert_eq!(percentile(&samples, 0.95), Some(95.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn urls_are_http_with_a_host() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(base_url("https://x:1")
            .unwrap_err()
            .0
            .contains("https is not supported"));
        assert!(base_url("127.0.0.1:8080").is_err());
        assert!(base_url("http://").is_err());
    }
}
