//! Jobs: what a client submits ([`JobRequest`]), what the scheduler queues
//! ([`Job`]: everything resolved, compiled and parsed, so running it needs no
//! lookup), and the in-memory table of live and recently finished jobs
//! ([`JobTable`]) that status reads and result waits are served from.
//!
//! A job's state in the table becomes terminal only after its result is
//! committed to the database, so whatever a client has seen survives a crash.
//! The table holds every queued and running job and the last
//! `result_cache` finished ones; older jobs are read from the database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;

use palisade_backtest::{BacktestConfig, Dataset};
pub use palisade_document::Kind;
use palisade_study::{Grid, MonteCarloOptions, OptimizeOptions, WalkForwardOptions};

use crate::registry::{Compiled, PolicyEntry};
use crate::storage::{IdempotencyKey, JobRecord, JobState};

/// Which queue a job waits in.
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
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: &'static [Priority] = <Priority as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    /// Queue index: 0 high, 1 normal, 2 low.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Base level for aging: high 2, normal 1, low 0.
    pub fn level(self) -> u64 {
        2 - self as u64
    }
}

/// One dataset id or several (merged by timestamp).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DatasetRef {
    One(String),
    Many(Vec<String>),
}

/// The schema of a [`DatasetRef`]: one dataset id or a non-empty list of
/// them.
fn dataset_ref_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let id = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DATASET_ID_PATTERN))
    };
    OneOfBuilder::new()
        .item(id())
        .item(ArrayBuilder::new().items(id()).min_items(Some(1)))
        .build()
        .into()
}

/// What a dataset id looks like: 16 lowercase hex digits (of the SHA-256
/// of its name and content).
pub const DATASET_ID_PATTERN: &str = "^[0-9a-f]{16}$";

impl DatasetRef {
    pub fn ids(&self) -> Vec<String> {
        match self {
            DatasetRef::One(id) => vec![id.clone()],
            DatasetRef::Many(ids) => ids.clone(),
        }
    }
}

/// Whole numbers from JSON, which has one number type: `3` and `3.0` are
/// the same integer (JSON Schema agrees), so integer fields take either; a
/// fraction, a negative or a value too large is refused naming the value.
mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    /// The largest `top` and `windows` taken (the document says the same).
    pub const MAX_COUNT: u64 = u32::MAX as u64;

    fn of<E: Error>(n: serde_json::Number, max: u64) -> Result<u64, E> {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
                    .map(|f| f as u64)
            })
            .filter(|v| *v <= max)
            .ok_or_else(|| {
                E::custom(format_args!(
                    "invalid value: {n}, expected a whole number from 0 to {max}"
                ))
            })
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        of(serde_json::Number::deserialize(d)?, u64::MAX)
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| of(n, u64::MAX))
            .transpose()
    }

    pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| of(n, MAX_COUNT).map(|v| v as usize))
            .transpose()
    }
}

/// The body of `POST /v1/jobs`. Only `strategy` and `dataset` are required.
/// Options of the studies apply to their kinds only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Strategy id (the module's SHA-256).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub strategy: String,
    /// Dataset id, or several merged by timestamp.
    #[schema(schema_with = dataset_ref_schema)]
    pub dataset: DatasetRef,
    #[serde(default)]
    pub kind: Kind,
    /// Parameter values by name (numbers, booleans or strings as on the
    /// command line); others take their defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, Value>,
    #[serde(default)]
    pub priority: Priority,
    /// Policy name; the server's default policy when absent.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub policy: Option<String>,
    /// Seed of the strategy's random stream.
    #[serde(default, deserialize_with = "whole::u64")]
    #[schema(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    pub seed: u64,
    /// Starting cash (default 10000).
    #[serde(default)]
    #[schema(exclusive_minimum = 0)]
    pub cash: Option<f64>,
    /// Commission as a fraction of each fill's value, in [0, 1).
    #[serde(default)]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub commission: Option<f64>,
    /// Fixed commission per fill, in cash.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub commission_per_fill: Option<f64>,
    /// Slippage as a fraction of the price, in [0, 1).
    #[serde(default)]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub slippage: Option<f64>,
    /// Bars per year, for annualised statistics.
    #[serde(default)]
    #[schema(exclusive_minimum = 0)]
    pub periods_per_year: Option<f64>,
    /// Backtest: include the equity curve in the result.
    #[serde(default)]
    pub equity_curve: bool,
    /// optimize, walk_forward: grid axes in the CLI's `--grid` syntax
    /// (`fast=5:20:5`, `slow=20,30,40`, or a bare name for the declared range).
    #[serde(default)]
    pub grid: Vec<String>,
    /// optimize, walk_forward: what to rank by (default `total_return`).
    #[serde(default)]
    #[schema(value_type = Option<palisade_study::Objective>)]
    pub objective: Option<String>,
    /// optimize: how many best variants to list.
    #[serde(default, deserialize_with = "whole::opt_count")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub top: Option<usize>,
    /// optimize, walk_forward: run a random sample of this many grid points.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(format = "uint64", minimum = 1, maximum = 18446744073709551615_u64)]
    pub samples: Option<u64>,
    /// walk_forward: number of windows.
    #[serde(default, deserialize_with = "whole::opt_count")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub windows: Option<usize>,
    /// walk_forward: in-sample fraction in (0, 1).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub in_sample: Option<f64>,
    /// walk_forward: `rolling` or `anchored`.
    #[serde(default)]
    #[schema(value_type = Option<palisade_study::WindowMode>)]
    pub mode: Option<String>,
    /// monte_carlo: resampled paths.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(format = "uint64", minimum = 1, maximum = 10000000)]
    pub runs: Option<u64>,
    /// monte_carlo: `bootstrap` or `permutation`.
    #[serde(default)]
    #[schema(value_type = Option<palisade_study::Method>)]
    pub method: Option<String>,
    /// monte_carlo: ruin threshold in (0, 1].
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub ruin: Option<f64>,
}

impl JobRequest {
    /// The options given that do not apply to this kind.
    pub fn misplaced_options(&self) -> Vec<&'static str> {
        let given: [(&'static str, bool, &[Kind]); 11] = [
            ("equity_curve", self.equity_curve, &[Kind::Backtest]),
            (
                "grid",
                !self.grid.is_empty(),
                &[Kind::Optimize, Kind::WalkForward],
            ),
            (
                "objective",
                self.objective.is_some(),
                &[Kind::Optimize, Kind::WalkForward],
            ),
            ("top", self.top.is_some(), &[Kind::Optimize]),
            (
                "samples",
                self.samples.is_some(),
                &[Kind::Optimize, Kind::WalkForward],
            ),
            ("windows", self.windows.is_some(), &[Kind::WalkForward]),
            ("in_sample", self.in_sample.is_some(), &[Kind::WalkForward]),
            ("mode", self.mode.is_some(), &[Kind::WalkForward]),
            ("runs", self.runs.is_some(), &[Kind::MonteCarlo]),
            ("method", self.method.is_some(), &[Kind::MonteCarlo]),
            ("ruin", self.ruin.is_some(), &[Kind::MonteCarlo]),
        ];
        given
            .into_iter()
            .filter(|(_, set, kinds)| *set && !kinds.contains(&self.kind))
            .map(|(name, _, _)| name)
            .collect()
    }

    /// The backtest settings, defaults for what is not given.
    pub fn backtest_config(&self) -> BacktestConfig {
        let d = BacktestConfig::default();
        BacktestConfig {
            initial_cash: self.cash.unwrap_or(d.initial_cash),
            commission_rate: self.commission.unwrap_or(d.commission_rate),
            commission_per_fill: self.commission_per_fill.unwrap_or(d.commission_per_fill),
            slippage: self.slippage.unwrap_or(d.slippage),
            periods_per_year: self.periods_per_year.unwrap_or(d.periods_per_year),
            ..d
        }
    }

    /// Parameter values as `name=value` text, as the command line gives them.
    pub fn param_overrides(&self) -> Result<Vec<(String, String)>, String> {
        overrides_of(&self.params)
    }
}

/// Parameter values given as JSON (numbers, booleans or strings as on the
/// command line), as the `name=value` overrides `params::resolve` takes.
pub fn overrides_of(params: &serde_json::Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(format!("params.{k}: expected a number, a boolean or a string")),
            };
            Ok((k.clone(), text))
        })
        .collect()
}

/// What a job runs, resolved at submission.
#[derive(Clone, Debug)]
pub enum Plan {
    Backtest,
    Optimize { grid: Grid, options: OptimizeOptions },
    WalkForward { grid: Grid, options: WalkForwardOptions },
    MonteCarlo { options: MonteCarloOptions },
}

/// Where a queued job came from (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Source {
    /// Submitted over the API.
    Api,
    /// Re-queued at start-up after a restart.
    Restart,
}

impl Source {
    /// Every source.
    pub const ALL: &'static [Source] = &[Source::Api, Source::Restart];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A job ready to run.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub seq: i64,
    pub tenant: String,
    pub kind: Kind,
    pub priority: Priority,
    pub request: Arc<JobRequest>,
    pub plan: Plan,
    pub compiled: Arc<Compiled>,
    pub data: Arc<Dataset>,
    pub dataset_ids: Vec<String>,
    pub policy: Arc<PolicyEntry>,
    /// Every declared parameter's value.
    pub params: Vec<(String, f64)>,
    pub backtest: BacktestConfig,
    pub source: Source,
    /// Metric label of the strategy.
    pub label: String,
    /// Starts so far (this run will be `attempts + 1`).
    pub attempts: i64,
    pub enqueued: Instant,
    /// The submission's idempotency key, written with the job's row.
    pub idempotency: Option<Arc<IdempotencyKey>>,
    /// A worker's job: the queue entry it came from, done once the job's
    /// end is committed.
    pub delivery: Option<Delivery>,
}

/// One delivered entry of the distributed queue (`crate::queue`): the job
/// it names and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job: String,
    pub priority: Priority,
    /// The stream entry's id.
    pub entry: String,
}

/// A job's status as the API shows it.
pub fn view(r: &JobRecord) -> JobView<'_> {
    let time = |ms: Option<i64>| ms.map(rfc3339);
    JobView {
        id: &r.id,
        kind: &r.kind,
        state: r.state,
        progress: r.progress,
        priority: &r.priority,
        strategy: &r.strategy,
        dataset: r.dataset.split(',').collect(),
        policy: PolicyRef {
            name: &r.policy,
            hash: &r.policy_hash,
        },
        created: rfc3339(r.created),
        started: time(r.started),
        finished: time(r.finished),
        attempts: r.attempts,
        error: r.error_cause.as_deref().map(|cause| JobError {
            cause,
            message: r.error_message.as_deref(),
        }),
        result: format!("/v1/jobs/{}/result", r.id),
        output: None,
    }
}

/// A job's status as the API shows it (see [`view`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView<'a> {
    #[schema(pattern = "^j[0-9a-f]{16}$")]
    pub id: &'a str,
    pub kind: &'a str,
    pub state: JobState,
    pub progress: f64,
    pub priority: &'a str,
    pub strategy: &'a str,
    pub dataset: Vec<&'a str>,
    pub policy: PolicyRef<'a>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub attempts: i64,
    pub error: Option<JobError<'a>>,
    /// The link to the result document.
    pub result: String,
    /// The result document itself, as stored (the answer of a
    /// `POST /v1/jobs?wait=` whose job ended in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<&'a RawValue>,
}

/// The policy a job runs under: its name and the hash of its text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyRef<'a> {
    pub name: &'a str,
    pub hash: &'a str,
}

/// Why a job failed, was cancelled or timed out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobError<'a> {
    pub cause: &'a str,
    pub message: Option<&'a str>,
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

struct Entry {
    record: JobRecord,
    result: Option<Arc<str>>,
    state: watch::Sender<JobState>,
    /// Whether the job's row is in the database (a job submitted with a
    /// wait is not, until it ends or its submitter stops waiting).
    durable: bool,
}

struct Table {
    jobs: HashMap<String, Entry>,
    finished: VecDeque<String>,
    /// Bytes of the results of `finished`.
    finished_bytes: u64,
}

/// Live and recently finished jobs; see the module docs.
pub struct JobTable {
    inner: Mutex<Table>,
    keep_finished: usize,
    keep_bytes: u64,
}

impl std::fmt::Debug for JobTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTable").finish_non_exhaustive()
    }
}

impl JobTable {
    /// A table that keeps at most `keep_finished` finished jobs, whose
    /// results hold at most `keep_bytes` together.
    pub fn new(keep_finished: usize, keep_bytes: u64) -> JobTable {
        JobTable {
            inner: Mutex::new(Table {
                jobs: HashMap::new(),
                finished: VecDeque::new(),
                finished_bytes: 0,
            }),
            keep_finished,
            keep_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job; `durable` when its row is committed already.
    pub fn insert(&self, record: JobRecord, durable: bool) {
        let (state, _) = watch::channel(record.state);
        let id = record.id.clone();
        self.lock().jobs.insert(
            id,
            Entry {
                record,
                result: None,
                state,
                durable,
            },
        );
    }

    /// Whether a job's row is committed (unknown jobs: true, nothing to do).
    pub fn is_durable(&self, id: &str) -> bool {
        self.lock().jobs.get(id).is_none_or(|e| e.durable)
    }

    /// Notes that a job's row is committed.
    pub fn set_durable(&self, id: &str) {
        if let Some(e) = self.lock().jobs.get_mut(id) {
            e.durable = true;
        }
    }

    /// Removes a job whose row was never committed (its submission was
    /// refused); true when it was there. A committed job stays.
    pub fn remove_unacknowledged(&self, id: &str) -> bool {
        let mut t = self.lock();
        let unacknowledged = t.jobs.get(id).is_some_and(|e| !e.durable);
        if unacknowledged {
            let e = t.jobs.remove(id).expect("checked above");
            if let Some(at) = t.finished.iter().position(|f| f == id) {
                t.finished.remove(at);
                t.finished_bytes -= e.result.as_ref().map_or(0, |r| r.len() as u64);
            }
        }
        unacknowledged
    }

    /// A tenant's job, with its result when finished and kept.
    pub fn get(&self, tenant: &str, id: &str) -> Option<(JobRecord, Option<Arc<str>>)> {
        let t = self.lock();
        let e = t.jobs.get(id).filter(|e| e.record.tenant == tenant)?;
        Some((e.record.clone(), e.result.clone()))
    }

    /// A job's current record.
    pub fn record(&self, id: &str) -> Option<JobRecord> {
        self.lock().jobs.get(id).map(|e| e.record.clone())
    }

    /// Replaces a job's record by a non-terminal one (see
    /// [`JobTable::finish`] for the end).
    pub fn set(&self, record: JobRecord) {
        let mut t = self.lock();
        if let Some(e) = t.jobs.get_mut(&record.id) {
            e.state.send_replace(record.state);
            e.record = record;
        }
    }

    /// Changes a job's progress, if it is running; true when it changed.
    pub fn set_progress(&self, id: &str, progress: f64) -> bool {
        let mut t = self.lock();
        match t.jobs.get_mut(id) {
            Some(e) if e.record.state == JobState::Running && e.record.progress != progress => {
                e.record.progress = progress;
                true
            }
            _ => false,
        }
    }

    /// Records the end of a job (after its write is committed) and wakes
    /// those waiting for it.
    pub fn finish(&self, record: JobRecord, result: Option<Arc<str>>) {
        let mut t = self.lock();
        let id = record.id.clone();
        let Some(e) = t.jobs.get_mut(&id) else {
            return;
        };
        e.state.send_replace(record.state);
        e.record = record;
        let bytes = result.as_ref().map_or(0, |r| r.len() as u64);
        e.result = result;
        t.finished_bytes += bytes;
        t.finished.push_back(id);
        // Bounded by count and by bytes: the oldest finished jobs are read
        // from the database again.
        while t.finished.len() > self.keep_finished || t.finished_bytes > self.keep_bytes {
            let Some(old) = t.finished.pop_front() else {
                break;
            };
            if let Some(e) = t.jobs.remove(&old) {
                t.finished_bytes -= e.result.as_ref().map_or(0, |r| r.len() as u64);
            }
        }
    }

    /// Watches a tenant's job's state.
    pub fn subscribe(&self, tenant: &str, id: &str) -> Option<watch::Receiver<JobState>> {
        let t = self.lock();
        t.jobs
            .get(id)
            .filter(|e| e.record.tenant == tenant)
            .map(|e| e.state.subscribe())
    }

    /// Records of jobs in the table matching `ids` (to overlay fresher
    /// states on rows read from the database).
    pub fn fresher(&self, records: &mut [JobRecord]) {
        let t = self.lock();
        for r in records {
            if let Some(e) = t.jobs.get(&r.id) {
                *r = e.record.clone();
            }
        }
    }

    /// Queued and running jobs of `tenant` in the table, newest first.
    pub fn live_of(&self, tenant: &str) -> Vec<JobRecord> {
        let t = self.lock();
        let mut v: Vec<JobRecord> = t
            .jobs
            .values()
            .filter(|e| e.record.tenant == tenant && !e.record.state.is_terminal())
            .map(|e| e.record.clone())
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.seq));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<JobRequest, String> {
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let body = |field: &str, value: &str| {
            parse(&format!(
                r#"{{"strategy":"s","dataset":"d","kind":"walk_forward","{field}":{value}}}"#
            ))
        };
        assert_eq!(body("windows", "399.0").unwrap().windows, Some(399));
        assert_eq!(body("windows", "4294967295").unwrap().windows, Some(4294967295));
        assert_eq!(body("top", "1e3").unwrap().top, Some(1000));
        assert_eq!(body("runs", "7").unwrap().runs, Some(7));
        assert_eq!(body("samples", "null").unwrap().samples, None);
        assert_eq!(body("seed", "18446744073709551615").unwrap().seed, u64::MAX);
        assert_eq!(body("seed", "300000.0").unwrap().seed, 300000);
        // Read exactly (serde_json's float_roundtrip): a fast parse would
        // make this 2251799813685247.2 and refuse it as a fraction.
        assert_eq!(
            body("samples", "2251799813685247.0").unwrap().samples,
            Some(2251799813685247)
        );
        for (field, value, max) in [
            ("windows", "399.5", "4294967295"),
            ("windows", "4294967296", "4294967295"),
            ("top", "-1", "4294967295"),
            ("seed", "18446744073709551616", "18446744073709551615"),
            ("seed", "1.8446744073709552e19", "18446744073709551615"),
            ("runs", "-0.5", "18446744073709551615"),
        ] {
            let e = body(field, value).unwrap_err();
            assert!(
                e.contains(&format!("expected a whole number from 0 to {max}")),
                "{field} = {value}: {e}"
            );
        }
        assert!(body("seed", "\"1\"").is_err(), "a string is not a number");
    }

    #[test]
    fn content_and_job_ids_have_one_shape() {
        use crate::storage::is_sha256_hex;
        assert!(is_sha256_hex(&"a1".repeat(32)));
        assert!(!is_sha256_hex(&"A1".repeat(32)));
        assert!(!is_sha256_hex(&"a1".repeat(31)));
        assert!(!is_sha256_hex(&format!("{}g", "a".repeat(63))));
        assert!(crate::service::is_job_id("j0123456789abcdef"));
        for bad in [
            "",
            "j",
            "k0123456789abcdef",
            "j0123456789abcdeF",
            "j0123456789abcdef0",
        ] {
            assert!(!crate::service::is_job_id(bad), "{bad}");
        }
    }

    fn finished(id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            seq: 1,
            tenant: "t".into(),
            kind: "backtest".into(),
            strategy: "s".into(),
            dataset: "d1".into(),
            spec: "{}".into(),
            priority: "normal".into(),
            policy: "default".into(),
            policy_hash: "h".into(),
            state: JobState::Succeeded,
            progress: 1.0,
            error_cause: None,
            error_message: None,
            created: 1,
            started: Some(1),
            finished: Some(2),
            attempts: 1,
        }
    }

    #[test]
    fn finished_results_are_bounded_by_count_and_by_bytes() {
        let table = JobTable::new(100, 1_000);
        let result = |n: usize| -> Option<Arc<str>> { Some(Arc::from("x".repeat(n))) };
        for (id, size) in [("a", 400), ("b", 400), ("c", 100)] {
            table.insert(finished(id), true);
            table.finish(finished(id), result(size));
        }
        // 900 bytes: all kept.
        assert!(table.get("t", "a").is_some());
        // 400 more: over 1000, the oldest goes.
        table.insert(finished("d"), true);
        table.finish(finished("d"), result(400));
        assert!(
            table.get("t", "a").is_none(),
            "the oldest result is read from the database again"
        );
        assert!(table.get("t", "b").is_some() && table.get("t", "d").is_some());
        // A result larger than the whole budget is not kept at all.
        table.insert(finished("e"), true);
        table.finish(finished("e"), result(5_000));
        assert!(table.get("t", "e").is_none());
        assert_eq!(table.lock().finished_bytes, 0);
        // And by count.
        let table = JobTable::new(2, u64::MAX);
        for id in ["a", "b", "c"] {
            table.insert(finished(id), true);
            table.finish(finished(id), result(1));
        }
        assert!(table.get("t", "a").is_none() && table.get("t", "c").is_some());
    }

    #[test]
    fn requests_parse_with_defaults_and_reject_unknown_fields() {
        let r = parse(r#"{"strategy":"s","dataset":"d"}"#).unwrap();
        assert_eq!(
            (r.kind, r.priority, r.seed),
            (Kind::Backtest, Priority::Normal, 0)
        );
        assert_eq!(r.dataset.ids(), ["d"]);
        let r =
            parse(r#"{"strategy":"s","dataset":["a","b"],"kind":"walk_forward","priority":"low"}"#).unwrap();
        assert_eq!((r.kind, r.priority), (Kind::WalkForward, Priority::Low));
        assert_eq!(r.dataset.ids(), ["a", "b"]);
        assert!(parse(r#"{"strategy":"s","dataset":"d","colour":1}"#)
            .unwrap_err()
            .contains("unknown field `colour`"));
        assert!(parse(r#"{"strategy":"s","dataset":"d","kind":"paper"}"#)
            .unwrap_err()
            .contains("unknown variant `paper`"));
        assert!(parse(r#"{"dataset":"d"}"#)
            .unwrap_err()
            .contains("missing field `strategy`"));
    }

    #[test]
    fn options_of_other_kinds_are_named() {
        let r = parse(r#"{"strategy":"s","dataset":"d","grid":["fast=5:10:5"],"runs":5}"#).unwrap();
        assert_eq!(r.misplaced_options(), ["grid", "runs"]);
        let r = parse(r#"{"strategy":"s","dataset":"d","kind":"optimize","grid":["fast"],"top":3}"#).unwrap();
        assert!(r.misplaced_options().is_empty());
    }

    #[test]
    fn params_become_command_line_text() {
        let r =
            parse(r#"{"strategy":"s","dataset":"d","params":{"fast":5,"ratio":0.5,"on":true,"slow":"30"}}"#)
                .unwrap();
        let mut got = r.param_overrides().unwrap();
        got.sort();
        let want: Vec<(String, String)> = [("fast", "5"), ("on", "true"), ("ratio", "0.5"), ("slow", "30")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        let r = parse(r#"{"strategy":"s","dataset":"d","params":{"fast":[1]}}"#).unwrap();
        assert_eq!(
            r.param_overrides().unwrap_err(),
            "params.fast: expected a number, a boolean or a string"
        );
    }

    #[test]
    fn priorities_have_levels() {
        assert_eq!(Priority::High.level(), 2);
        assert_eq!(Priority::Low.level(), 0);
        assert_eq!(Priority::parse("normal"), Some(Priority::Normal));
        assert_eq!(Kind::parse("monte_carlo"), Some(Kind::MonteCarlo));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
