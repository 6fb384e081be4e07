//! [`Service`], the one shared state of `palisade serve`: it prepares
//! submissions (resolves the strategy, data, policy and parameters, compiles
//! once), admits them through the scheduler, runs dispatched jobs as tasks of
//! a separate executor runtime, records every state change through the
//! batching writer, and shuts down gracefully. It knows no HTTP: the routes
//! in `api` call it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use palisade_backtest::Dataset;
use palisade_run::{params, Failure, Policy};
use palisade_study::{Grid, MonteCarloOptions, Objective, OptimizeOptions, Search, WalkForwardOptions};

use crate::auth::{Principal, Tokens};
use crate::config::Config;
use crate::deployments::Deployments;
use crate::execute::End;
use crate::jobs::{Job, JobRequest, JobTable, Kind, Plan, Source};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::registry::{Compiled, PolicyEntry, Registry, RegistryError};
use crate::scheduler::{Cancel, Control, Limits, Refused, Reservation, Scheduler, StopReason};
use crate::storage::{
    now_ms, sha256_hex, Blob, DatasetRecord, IdempotencyKey, JobFilter, JobRecord, JobState, Spool, Storage,
    StorageError, StrategyRecord, Write, Writer,
};
use crate::views::{AuditEntry, PolicyChange, PolicyList, PolicySummary, PolicyView, StatusView, Workers};
use crate::worker::{Role, WorkerState};
use palisade_deployment::{DeploymentSpec, Status as DeploymentStatus};

/// How often the watchdog looks at running jobs (and progress is published).
pub const WATCHDOG_TICK: Duration = Duration::from_millis(100);
/// How often the executor runtime beats
/// (`palisade_executor_heartbeat_timestamp_seconds`).
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(1);
/// Progress of running jobs is written to the database every this many ticks.
const PROGRESS_WRITE_TICKS: u32 = 10;
/// Longest `wait` a client may ask of `GET /v1/jobs/{id}/result`.
pub const MAX_RESULT_WAIT: Duration = Duration::from_secs(60);
/// Time jobs told to stop at shutdown get to end (they stop within a few
/// epoch ticks).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A new job id: `j` and 16 hex digits from the operating system's random
/// source, so an id says nothing of other jobs (how many, whose) and
/// cannot be guessed. Jobs are ordered by their `seq`, kept beside.
fn new_job_id() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::Internal(format!("random job id: {e}")))?;
    Ok(format!("j{:016x}", u64::from_be_bytes(bytes)))
}

/// True when `id` has the shape of a job id: `j` and 16 lowercase hex digits.
pub fn is_job_id(id: &str) -> bool {
    id.len() == 17 && id.starts_with('j') && id[1..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What an idempotency key gives a submission.
pub enum Claim {
    /// The key is new: submit, with this claim.
    New(KeyClaim),
    /// The key created this job before: answer with it, submit nothing.
    Replay(Box<JobRecord>),
}

/// A submission's hold on its idempotency key while it is handled; the key
/// is stored with the job's row, and freed for lookups in the store when
/// the claim is dropped.
pub struct KeyClaim {
    service: Arc<Service>,
    slot: (String, String),
    request_sha256: String,
}

impl KeyClaim {
    fn for_job(&self, job_id: &str) -> Arc<IdempotencyKey> {
        Arc::new(IdempotencyKey {
            tenant: self.slot.0.clone(),
            key: self.slot.1.clone(),
            job_id: job_id.to_owned(),
            request_sha256: self.request_sha256.clone(),
            created: now_ms(),
        })
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        self.service.lock_keys().remove(&self.slot);
    }
}

/// What a `?wait` submission got.
pub struct Waited {
    pub record: JobRecord,
    /// The result document, when the job ended within the wait.
    pub result: Option<Arc<str>>,
    /// The wait was cut short by a shutdown (the job had not ended).
    pub cut: bool,
}

/// Longest wait for the test write of a readiness probe.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Longest pause between two attempts to write a job's end.
const END_RETRY_MAX: Duration = Duration::from_secs(5);

/// What a request to the service can fail with; the API maps each variant
/// to a status and a problem type.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("unknown {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// The module was refused by validation (the failure names the reason).
    #[error("{0}")]
    InvalidModule(Failure),
    #[error("{0}")]
    InvalidDataset(String),
    /// A job request that parses but cannot run (parameters, options).
    #[error("{0}")]
    InvalidJob(String),
    #[error("{0}")]
    InvalidPolicy(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The job is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    #[error("only operators may change policies")]
    Forbidden,
    /// The store has no room for the write; nothing of it was stored.
    #[error("{0}")]
    StoreFull(String),
    /// The store failed to write (an I/O error); nothing of it was stored.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A fault of the server; the message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> Self {
        if e.is_out_of_space() {
            ServiceError::StoreFull(e.to_string())
        } else if e.is_write_failure() {
            ServiceError::StoreUnavailable(e.to_string())
        } else {
            ServiceError::Internal(e.to_string())
        }
    }
}

impl From<RegistryError> for ServiceError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownPolicy(name) => ServiceError::NotFound {
                what: "policy",
                id: name,
            },
            RegistryError::UnknownDataset(id) => ServiceError::NotFound { what: "dataset", id },
            RegistryError::Module(f) => ServiceError::InvalidModule(f),
            RegistryError::Data(d) => ServiceError::InvalidDataset(d.to_string()),
            RegistryError::Policy(p) => ServiceError::InvalidPolicy(p.to_string()),
            RegistryError::Storage(s) => ServiceError::from(s),
            RegistryError::Internal(s) => ServiceError::Internal(s),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot reach the queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The shared state of a running service; see the module docs.
pub struct Service {
    pub config: Config,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    pub(crate) store: Storage,
    pub(crate) writer: Writer,
    pub(crate) registry: Arc<Registry>,
    pub(crate) scheduler: Scheduler,
    pub(crate) table: JobTable,
    /// Distributed mode: the Redis queue.
    pub(crate) queue: Option<Queue>,
    /// What this process is (embedded, API node, worker).
    pub role: Role,
    /// A worker's own state.
    pub(crate) worker: Option<WorkerState>,
    /// Distributed mode: whether the last call to Redis succeeded.
    pub(crate) queue_up: AtomicBool,
    executor: tokio::runtime::Handle,
    parallelism: usize,
    next_seq: AtomicI64,
    /// `(tenant, id)` of strategies and datasets known to exist.
    owned: Mutex<HashSet<(String, String)>>,
    /// Job tasks alive on the executor.
    active: watch::Sender<usize>,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// `(tenant, key)` of submissions with an idempotency key in flight.
    keys_in_flight: Mutex<HashSet<(String, String)>>,
    /// True from the start of a shutdown: wakes `?wait` submissions.
    pub(crate) shutting_down: watch::Sender<bool>,
    started: Instant,
    /// Live deployments run by this process.
    pub deployments: Deployments,
    /// A worker's deployment leases (distributed mode).
    pub(crate) leases: crate::fleet::Leases,
    /// Forwards deployments' requests to workers (an API node).
    pub(crate) forwarder: crate::fleet::Forwarder,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a result read found.
#[derive(Debug)]
pub enum ResultRead {
    /// The job's result document.
    Ready(Arc<str>),
    /// Still queued or running after the wait.
    Pending(Box<JobRecord>),
}

impl Service {
    /// Opens storage, recovers interrupted jobs, re-queues the queued ones and
    /// starts the watchdog. Jobs run on `executor`; the watchdog and the
    /// writer run on the current runtime.
    pub async fn start(
        config: Config,
        tokens: Tokens,
        executor: tokio::runtime::Handle,
    ) -> Result<Arc<Service>, StartError> {
        let role = if config.is_distributed() {
            Role::Api
        } else {
            Role::Embedded
        };
        Service::start_as(config, tokens, executor, role).await
    }

    /// [`Service::start`] as `role`: an API node or a worker connect to
    /// the shared store and the queue (each failure names which and where);
    /// they recover nothing at start (workers reap dead workers' jobs as
    /// they run) and an API node runs no job.
    pub async fn start_as(
        config: Config,
        tokens: Tokens,
        executor: tokio::runtime::Handle,
        role: Role,
    ) -> Result<Arc<Service>, StartError> {
        let (store, queue) = match (role, &config.store, &config.queue) {
            (Role::Embedded, ..) => (Storage::open(&config.data_dir).await?, None),
            (_, Some(store), Some(queue)) => {
                let store = Storage::open_postgres(store, &config.data_dir, config.connect_timeout()).await?;
                let queue = Queue::connect(queue, config.connect_timeout()).await?;
                (store, Some(queue))
            }
            _ => {
                return Err(StartError::Storage(StorageError::Unreachable {
                    what: "the shared store and queue",
                    address: "(unset)".into(),
                    detail: "an API node or a worker needs store (postgres://…) and queue (redis://…)".into(),
                }))
            }
        };
        let recovery = store.recover(config.max_attempts).await?;
        if !recovery.requeued.is_empty() || !recovery.failed.is_empty() || recovery.swept_files > 0 {
            tracing::warn!(
                requeued = ?recovery.requeued,
                failed = ?recovery.failed,
                swept_files = recovery.swept_files,
                "recovered from an unclean stop"
            );
        }
        let metrics = Arc::new(Metrics::new(config.strategy_labels));
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let sources: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        metrics.preset_jobs(&kinds, &sources, &states);
        metrics.executor_threads.set(config.executor_threads() as i64);
        metrics
            .executor_instance_slots
            .set(i64::from(config.max_instances));
        let registry = Arc::new(Registry::new(
            store.clone(),
            metrics.clone(),
            config.max_instances.saturating_add(config.max_deployments),
            config.policies_dir.clone(),
            config.compiler.clone(),
            config.python_runtime.clone(),
        ));
        registry.load_replaced_policies().await?;
        let commit_metrics = metrics.clone();
        let writer = store.writer(move |_, took, committed| {
            commit_metrics.step("store", took);
            if !committed {
                commit_metrics.store_write_errors.inc();
            }
        });
        let next_seq = if store.is_shared() {
            0
        } else {
            store.next_seq().await?
        };
        let worker = (role == Role::Worker).then(|| {
            // The wasmtime build and settings this worker compiles for: its
            // compiled code is its own, never loaded from another build.
            let build = registry
                .policy(&config.default_policy)
                .and_then(|p| registry.sandbox(&p.policy))
                .map(|s| s.artifact_key())
                .unwrap_or_default();
            WorkerState::new(config.worker_name.as_deref(), config.max_running, build)
        });
        let (active, _) = watch::channel(0);
        let deployments = Deployments::new(
            &config.data_dir,
            metrics.registry(),
            config.max_deployments as usize,
            store.postgres().cloned(),
        );
        let service = Arc::new(Service {
            deployments,
            leases: Default::default(),
            forwarder: Default::default(),
            scheduler: Scheduler::new(Limits::from_config(&config), metrics.clone()),
            table: JobTable::new(config.result_cache, config.result_cache_bytes),
            parallelism: config.executor_threads(),
            config,
            tokens,
            metrics,
            store,
            writer,
            registry,
            executor,
            next_seq: AtomicI64::new(next_seq),
            owned: Mutex::new(HashSet::new()),
            active,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            keys_in_flight: Mutex::new(HashSet::new()),
            shutting_down: watch::Sender::new(false),
            started: Instant::now(),
            worker,
            queue,
            role,
            queue_up: AtomicBool::new(true),
        });
        if role == Role::Embedded {
            for record in service.store.queued_jobs().await? {
                service.restore(record).await;
            }
        }
        let watchdog = Arc::downgrade(&service);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCHDOG_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u32;
            loop {
                tick.tick().await;
                let Some(s) = watchdog.upgrade() else { break };
                if s.stopping.load(Ordering::Acquire) {
                    break;
                }
                n = n.wrapping_add(1);
                s.watch_running(n.is_multiple_of(PROGRESS_WRITE_TICKS)).await;
            }
        });
        let heartbeat = Arc::downgrade(&service);
        service.executor.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = heartbeat.upgrade() else { break };
                if s.stopping.load(Ordering::Acquire) {
                    break;
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                s.metrics.executor_heartbeat.set(now.as_secs_f64());
            }
        });
        if role == Role::Worker {
            service.start_worker().await?;
        }
        if role == Role::Api {
            service.watch_workers();
        }
        if role == Role::Embedded {
            service.restart_deployments().await;
        } else if let Err(e) = service.deployments.reload_stops().await {
            tracing::warn!(error = %e, "cannot read the emergency stops");
        }
        service.ready.store(true, Ordering::Release);
        service.pump();
        Ok(service)
    }

    /// Restarts the deployments that were running when the service last
    /// stopped; each recovers by replaying its stored bars.
    async fn restart_deployments(self: &Arc<Self>) {
        for (spec, recorded) in self.deployments.recorded() {
            let id = spec.id.clone();
            match self
                .deploy(
                    &spec.tenant.clone(),
                    &recorded.strategy,
                    &recorded.policy,
                    spec.clone(),
                    None,
                )
                .await
            {
                Ok(_) => tracing::info!(deployment = %id, "deployment restarted; recovering by replay"),
                Err(e) => {
                    tracing::error!(deployment = %id, error = %e, "deployment not restarted");
                    // Listed as failed, saying why, rather than gone.
                    self.deployments.unstartable(&spec, e.to_string());
                }
            }
        }
    }

    /// Starts a deployment of `tenant`'s strategy `strategy` under policy
    /// `policy_name`. A new one (its id must not exist yet) gives its
    /// parameter `overrides`, resolved here; a restarted one has its values.
    pub async fn deploy(
        self: &Arc<Self>,
        tenant: &str,
        strategy: &str,
        policy_name: &str,
        spec: DeploymentSpec,
        overrides: Option<Vec<(String, String)>>,
    ) -> Result<DeploymentStatus, ServiceError> {
        self.deploy_leased(tenant, strategy, policy_name, spec, overrides, None)
            .await
    }

    /// [`Service::deploy`] under `taken`, the lease a worker claimed it
    /// with (a new deployment's is made here, on a worker).
    pub(crate) async fn deploy_leased(
        self: &Arc<Self>,
        tenant: &str,
        strategy: &str,
        policy_name: &str,
        mut spec: DeploymentSpec,
        overrides: Option<Vec<(String, String)>>,
        taken: Option<palisade_deployment::Lease>,
    ) -> Result<DeploymentStatus, ServiceError> {
        if self.is_stopped() {
            return Err(ServiceError::Refused(Refused::ShuttingDown));
        }
        if self.role == Role::Worker && self.store.is_shared() {
            // The stops in force now, not as of the last heartbeat; unread,
            // nothing starts.
            if let Err(e) = self.deployments.reload_stops().await {
                return Err(ServiceError::StoreUnavailable(format!(
                    "the emergency stops in force cannot be read ({e}); nothing starts until they can"
                )));
            }
        }
        if let Some(hosts) = &self.config.live_hosts {
            let allowed = crate::deployments::AllowedHosts::parse(hosts).map_err(ServiceError::Internal)?;
            allowed
                .check("feed.url", &spec.feed.url)
                .map_err(ServiceError::InvalidJob)?;
            if let Some(hook) = &spec.webhook {
                allowed
                    .check("webhook.url", &hook.url)
                    .map_err(ServiceError::InvalidJob)?;
            }
        }
        self.strategy(tenant, strategy).await?;
        let policy = self.registry.policy(policy_name)?;
        let compiled = self.compiled(strategy, &policy).await?;
        let fresh = overrides.is_some();
        if let Some(overrides) = overrides {
            let manifest = &compiled.strategy.info.manifest;
            spec.params =
                params::resolve(manifest, &overrides).map_err(|e| ServiceError::InvalidJob(e.to_string()))?;
        }
        let id = spec.id.clone();
        if fresh {
            spec.validate()
                .map_err(|e| ServiceError::InvalidJob(e.to_string()))?;
            self.lease_new(&spec, strategy, policy_name).await?;
        }
        let lease = taken.or_else(|| self.leases.get(&id).map(|s| s.lease.clone()));
        if lease.is_none() && self.role == Role::Worker && self.store.is_shared() {
            return Err(ServiceError::Internal(format!(
                "deployment {id} has no lease on this worker"
            )));
        }
        let started = self
            .deployments
            .start(spec, &compiled, &policy, policy_name, fresh, lease);
        if fresh {
            self.leased_started(&id, started.is_ok()).await;
        }
        let status = started.map_err(ServiceError::from)?;
        self.deployments.enforce_stops(&id).await;
        let status = self
            .deployments
            .get(tenant, true, &id)
            .map(|h| h.status())
            .unwrap_or(status);
        Ok(status)
    }

    /// The metrics' text exposition, with the values measured at scrape
    /// time brought up to date first: queue waits, stalls, readiness (as
    /// far as it is known without a test write).
    pub fn render_metrics(&self) -> String {
        self.scheduler.publish_waits(Instant::now());
        let ready = self.is_ready() && self.writer.is_writable();
        self.metrics.ready.set(i64::from(ready));
        self.metrics.render()
    }

    /// True from the start of a shutdown.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// True once recovery is done and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Ready to take work: recovery done, not shutting down, and the
    /// store can write. After a failed write the store is probed (a write
    /// that leaves nothing), so readiness comes back by itself once space
    /// frees. The error says why not.
    pub async fn readiness(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("not ready: starting or shutting down".into());
        }
        if let Some(queue) = &self.queue {
            if let Err(e) = tokio::time::timeout(PROBE_WAIT, queue.ping())
                .await
                .unwrap_or_else(|_| {
                    Err(crate::queue::QueueError {
                        address: queue.address().to_owned(),
                        source: redis::RedisError::from((redis::ErrorKind::Io, "no answer in time")),
                    })
                })
            {
                self.queue_up.store(false, Ordering::Release);
                return Err(format!("not ready: {e}"));
            }
            self.queue_up.store(true, Ordering::Release);
        }
        if self.writer.is_writable() && !self.store.is_shared() {
            return Ok(());
        }
        match tokio::time::timeout(PROBE_WAIT, self.writer.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("not ready: {e}")),
            Err(_) => Err("not ready: the store did not answer a test write in time".into()),
        }
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- jobs: admission, dispatch, completion ----

    /// Starts every job the scheduler allows now, on the executor.
    pub fn pump(self: &Arc<Self>) {
        let ready = self.scheduler.next(|job| job.policy.policy.deadline_per_run());
        for (job, control) in ready {
            self.active.send_modify(|n| *n += 1);
            let service = self.clone();
            let span = tracing::info_span!(
                "job",
                id = %job.id,
                kind = job.kind.as_str(),
                tenant = %job.tenant,
                strategy = %job.label
            );
            self.executor
                .spawn(async move { service.run_job(job, control).await }.instrument(span));
        }
    }

    async fn run_job(self: Arc<Self>, job: Job, control: Arc<Control>) {
        let attempts = job.attempts + 1;
        let Some(queued) = self.table.record(&job.id) else {
            tracing::error!("a dispatched job is missing from the job table");
            self.scheduler.done(&job.id);
            self.active.send_modify(|n| *n -= 1);
            return;
        };
        let running = JobRecord {
            state: JobState::Running,
            started: Some(now_ms()),
            attempts,
            progress: 0.0,
            ..queued
        };
        // The start is durable before the guest runs, so a job that brings
        // the process down is counted and, after `max_attempts`, failed. A
        // job submitted with a wait has no row yet (nobody knows of it): its
        // end writes it.
        if self.table.is_durable(&job.id) {
            if let Err(e) = self.writer.commit(Write::job(running.clone())).await {
                tracing::error!(error = %e, "cannot record the start");
            }
        }
        self.table.set(running.clone());
        let outcome = crate::execute::execute(&job, &control, &self.metrics, self.parallelism).await;
        self.scheduler.done(&job.id);
        self.pump();
        let latest = self.table.record(&job.id).unwrap_or(running);
        match outcome.end {
            End::Requeue => {
                let queued = JobRecord {
                    state: JobState::Queued,
                    started: None,
                    progress: 0.0,
                    ..latest
                };
                if let Err(e) = self.writer.commit(Write::job(queued.clone())).await {
                    tracing::error!(error = %e, "cannot re-queue at shutdown");
                }
                self.table.set(queued);
                self.worker_job_handed_back(job.delivery.clone(), &job.id, job.priority)
                    .await;
                tracing::info!("stopped by the shutdown; queued again");
            }
            End::Finished { state, error } => {
                let result: Option<Arc<str>> = outcome.result.map(Arc::from);
                let (error_cause, error_message) = match &error {
                    Some((c, m)) => (Some(c.clone()), Some(m.clone())),
                    None => (None, None),
                };
                let ended = JobRecord {
                    state,
                    finished: Some(now_ms()),
                    progress: if state == JobState::Succeeded {
                        1.0
                    } else {
                        latest.progress
                    },
                    error_cause,
                    error_message,
                    ..latest
                };
                // Readers learn of the end once it is committed: the writer
                // publishes it, so this task and its executor thread are
                // free as soon as the write is queued. An end that cannot
                // be written is never shown: the job stays `running` to
                // readers while the write is retried (see `record_end`).
                let publish = {
                    let service = self.clone();
                    let (ended, result, key) = (ended.clone(), result.clone(), job.idempotency.clone());
                    let span = tracing::Span::current();
                    let delivery = job.delivery.clone();
                    move |committed: Result<(), Arc<str>>| match committed {
                        Ok(()) => {
                            let state = ended.state;
                            service.table.finish(ended, result);
                            service.worker_job_ended(delivery, state);
                        }
                        Err(e) => {
                            span.in_scope(|| {
                                tracing::warn!(error = %e, "cannot record the end of the job yet; retrying")
                            });
                            let retry = service.clone().record_end(ended, result, key, delivery);
                            tokio::spawn(retry.instrument(span));
                        }
                    }
                };
                let write = Write::Job {
                    record: Box::new(ended.clone()),
                    result: result.clone(),
                    key: job.idempotency.clone(),
                };
                if let Err(e) = self.writer.commit_then(write, publish).await {
                    tracing::warn!(error = %e, "cannot record the end of the job");
                }
                self.metrics
                    .jobs
                    .with_label_values(&[job.kind.as_str(), job.source.as_str(), state.as_str()])
                    .inc();
                match &error {
                    Some((cause, message)) => {
                        if matches!(state, JobState::Failed | JobState::TimedOut) {
                            self.metrics.traps.with_label_values(&[&job.label, cause]).inc();
                        }
                        tracing::info!(state = state.as_str(), cause = %cause, message = %message, "ended");
                    }
                    None => tracing::debug!(state = state.as_str(), "ended"),
                }
            }
        }
        self.active.send_modify(|n| *n -= 1);
    }

    /// Writes a job's end until it is stored, then shows it to readers:
    /// while the store cannot write (a full disk), the job stays `running`
    /// to readers and its end is kept in memory. Gives up when the job is
    /// no longer in the table (a `?wait` submission that was refused because
    /// its record could not be written) or when the writer has stopped
    /// (a shutdown: the job runs again after the restart).
    async fn record_end(
        self: Arc<Self>,
        ended: JobRecord,
        result: Option<Arc<str>>,
        key: Option<Arc<IdempotencyKey>>,
        delivery: Option<crate::jobs::Delivery>,
    ) {
        let mut pause = Duration::from_millis(200);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(END_RETRY_MAX);
            if self.table.record(&ended.id).is_none() {
                tracing::info!("the end of a job nobody was told about is dropped");
                return;
            }
            let write = Write::Job {
                record: Box::new(ended.clone()),
                result: result.clone(),
                key: key.clone(),
            };
            match self.writer.commit(write).await {
                Ok(()) => {
                    tracing::info!("the end of the job is recorded");
                    let state = ended.state;
                    self.table.finish(ended, result);
                    self.worker_job_ended(delivery, state);
                    return;
                }
                Err(StorageError::WriterGone) => return,
                Err(e) => tracing::debug!(error = %e, "the end of the job still cannot be recorded"),
            }
        }
    }

    /// One watchdog tick: stops late and stalled jobs, publishes progress.
    async fn watch_running(&self, write_progress: bool) {
        for (id, reason) in self.scheduler.watchdog(Instant::now()) {
            match reason {
                StopReason::Watchdog => tracing::warn!(job = %id, "no progress: stopped by the watchdog"),
                _ => tracing::info!(job = %id, "past its deadline: stopped"),
            }
        }
        for c in self.scheduler.controls() {
            let p = c.progress();
            if self.table.set_progress(&c.id, p) && write_progress {
                let _ = self
                    .writer
                    .send(Write::Progress {
                        id: c.id.clone(),
                        progress: p,
                    })
                    .await;
            }
        }
    }

    /// Submits a job for `who`: prepares it, admits it, records it durably
    /// and queues it. Returns its record.
    pub async fn submit(
        self: &Arc<Self>,
        who: &Principal,
        request: JobRequest,
        key: Option<&KeyClaim>,
    ) -> Result<JobRecord, ServiceError> {
        let (mut job, reservation, record) = self.admit(who, request).await?;
        job.idempotency = key.map(|k| k.for_job(&record.id));
        // Durable before it is acknowledged (and before it can start, so its
        // start is written after its insert), with its idempotency key.
        let write = Write::Job {
            record: Box::new(record.clone()),
            result: None,
            key: job.idempotency.clone(),
        };
        if let Err(e) = self.writer.commit(write).await {
            self.scheduler.release(reservation);
            return Err(e.into());
        }
        if self.role == Role::Api {
            self.scheduler.release(reservation);
            self.enqueue_remote(&job).await;
            return Ok(record);
        }
        self.table.insert(record.clone(), true);
        self.queue(reservation, job);
        Ok(record)
    }

    /// Submits a job for `who` and waits up to `wait` for it to end. A job
    /// that ends in time is written once, with its end and result, and
    /// acknowledged after that commit: a crash before it loses a job nobody
    /// was told about. A job still queued or running when the wait is over
    /// is committed as it stands and acknowledged like [`Service::submit`]'s.
    /// Until one or the other, the job is not in listings (its submitter does
    /// not know its id yet). A shutdown cuts the wait short: the job is
    /// committed as it stands (it runs again after the restart) and
    /// `Waited::cut` says so. Returns its record and, when it ended, its
    /// result.
    pub async fn submit_and_wait(
        self: &Arc<Self>,
        who: &Principal,
        request: JobRequest,
        wait: Duration,
        key: Option<&KeyClaim>,
    ) -> Result<Waited, ServiceError> {
        if self.role == Role::Api {
            // Durable and queued at once; then read from the store until it
            // ends or the wait is over.
            let record = self.submit(who, request, key).await?;
            let wait = wait.min(MAX_RESULT_WAIT);
            self.wait_in_store(&who.tenant, &record.id, wait).await?;
            let record = self.job(&who.tenant, &record.id).await?;
            let result = if record.state.is_terminal() {
                self.store
                    .get_result(&who.tenant, &record.id)
                    .await?
                    .map(Arc::from)
            } else {
                None
            };
            return Ok(Waited {
                cut: self.is_stopped() && !record.state.is_terminal(),
                record,
                result,
            });
        }
        let (mut job, reservation, record) = self.admit(who, request).await?;
        job.idempotency = key.map(|k| k.for_job(&record.id));
        let idempotency = job.idempotency.clone();
        let id = record.id.clone();
        self.table.insert(record, false);
        let watch = self.table.subscribe(&who.tenant, &id);
        self.queue(reservation, job);
        let mut cut = false;
        if let Some(mut rx) = watch {
            let mut shutdown = self.shutting_down.subscribe();
            tokio::select! {
                _ = tokio::time::timeout(wait.min(MAX_RESULT_WAIT), rx.wait_for(|s| s.is_terminal())) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => cut = true,
            }
        }
        let (record, result) = self.waited_for(who, &id, idempotency).await?;
        Ok(Waited {
            cut: cut && !record.state.is_terminal(),
            record,
            result,
        })
    }

    /// The end of [`Service::submit_and_wait`]: the job as it stands, made
    /// durable if it has not ended.
    async fn waited_for(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
        key: Option<Arc<IdempotencyKey>>,
    ) -> Result<(JobRecord, Option<Arc<str>>), ServiceError> {
        let Some((record, result)) = self.table.get(&who.tenant, id) else {
            // Ended and already evicted from the table: its end is committed.
            let record = self.job(&who.tenant, id).await?;
            let result = self.store.get_result(&who.tenant, id).await?.map(Arc::from);
            return Ok((record, result));
        };
        if record.state.is_terminal() {
            // `finish` runs after the end's commit.
            return Ok((record, result));
        }
        // Still queued or running: the acknowledgement needs the row. A
        // later end overwrites it (the writer applies writes in order, and
        // a terminal row is never changed).
        let write = Write::Job {
            record: Box::new(record.clone()),
            result: None,
            key,
        };
        if let Err(e) = self.writer.commit(write).await {
            // Refused, so nobody knows the job: it stops, and an end
            // waiting to be written is dropped (see `record_end`).
            self.forget_unacknowledged(id);
            return Err(e.into());
        }
        self.table.set_durable(id);
        Ok((self.table.record(id).unwrap_or(record), None))
    }

    /// Looks up a submission's idempotency key: the job it created before
    /// (to be answered again), or a claim on the key for this submission.
    /// A key in flight in another request, or sent before with another
    /// body, is a conflict.
    pub async fn claim_key(
        self: &Arc<Self>,
        who: &Principal,
        key: &str,
        request_sha256: &str,
    ) -> Result<Claim, ServiceError> {
        let slot = (who.tenant.clone(), key.to_owned());
        if !self.lock_keys().insert(slot.clone()) {
            return Err(ServiceError::Conflict(format!(
                "a request with Idempotency-Key {key:?} is in progress; retry when it is answered"
            )));
        }
        let claim = KeyClaim {
            service: self.clone(),
            slot,
            request_sha256: request_sha256.to_owned(),
        };
        let Some(stored) = self.store.idempotency_key(&who.tenant, key).await? else {
            return Ok(Claim::New(claim));
        };
        if stored.request_sha256 != request_sha256 {
            return Err(ServiceError::Conflict(format!(
                "Idempotency-Key {key:?} was sent before with another request (job {}); use a new key \
                 for a new request",
                stored.job_id
            )));
        }
        Ok(Claim::Replay(Box::new(
            self.job(&who.tenant, &stored.job_id).await?,
        )))
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.keys_in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops and forgets a `?wait` job whose submission was refused
    /// because its record could not be written: nobody knows its id.
    fn forget_unacknowledged(&self, id: &str) {
        let Some(record) = self.table.record(id) else {
            return;
        };
        if !self.table.remove_unacknowledged(id) {
            return;
        }
        match self.scheduler.cancel(&record.tenant, id) {
            Cancel::Dequeued(_) | Cancel::Signalled => {}
            Cancel::NotLive => {
                if let Some(c) = self.scheduler.control(id) {
                    c.stop(StopReason::Cancelled);
                }
            }
        }
    }

    /// Queues an admitted job and starts what can start.
    fn queue(self: &Arc<Self>, reservation: Reservation, job: Job) {
        self.metrics
            .jobs
            .with_label_values(&[job.kind.as_str(), job.source.as_str(), "queued"])
            .inc();
        self.scheduler.enqueue(reservation, job);
        self.pump();
    }

    /// Prepares a request and admits it (token bucket, queue room): the job,
    /// its place in the queue and its first record.
    async fn admit(
        self: &Arc<Self>,
        who: &Principal,
        request: JobRequest,
    ) -> Result<(Job, Reservation, JobRecord), ServiceError> {
        let job = self.prepare(&who.tenant, request).await?;
        if self.role == Role::Api {
            // The bounds of the shared queue, counted in the store: every
            // API node's submissions together.
            if let Err(refused) = self.shared_room(&who.tenant).await? {
                self.metrics
                    .throttled
                    .with_label_values(&[&job.label, refused.reason()])
                    .inc();
                return Err(refused.into());
            }
        }
        let reservation = match self.scheduler.reserve(&who.tenant) {
            Ok(r) => r,
            Err(refused) => {
                self.metrics
                    .throttled
                    .with_label_values(&[&job.label, refused.reason()])
                    .inc();
                return Err(refused.into());
            }
        };
        let record = JobRecord {
            id: job.id.clone(),
            seq: job.seq,
            tenant: job.tenant.clone(),
            kind: job.kind.as_str().to_owned(),
            strategy: job.compiled.sha.clone(),
            dataset: job.dataset_ids.join(","),
            spec: serde_json::to_string(&*job.request).unwrap_or_default(),
            priority: job.priority.as_str().to_owned(),
            policy: job.policy.policy.name.clone(),
            policy_hash: job.policy.hash.clone(),
            state: JobState::Queued,
            progress: 0.0,
            error_cause: None,
            error_message: None,
            created: now_ms(),
            started: None,
            finished: None,
            attempts: 0,
        };
        Ok((job, reservation, record))
    }

    /// Resolves, checks and compiles everything a request needs.
    async fn prepare(self: &Arc<Self>, tenant: &str, request: JobRequest) -> Result<Job, ServiceError> {
        let misplaced = request.misplaced_options();
        if !misplaced.is_empty() {
            return Err(ServiceError::InvalidJob(format!(
                "{} do{} not apply to a {} job",
                misplaced.join(", "),
                if misplaced.len() == 1 { "es" } else { "" },
                request.kind.as_str()
            )));
        }
        if !self.owns(tenant, &request.strategy, "strategy").await? {
            return Err(ServiceError::NotFound {
                what: "strategy",
                id: request.strategy.clone(),
            });
        }
        let dataset_ids = request.dataset.ids();
        if dataset_ids.is_empty() {
            return Err(ServiceError::InvalidJob(
                "dataset: at least one dataset id is required".into(),
            ));
        }
        for id in &dataset_ids {
            if !self.owns(tenant, id, "dataset").await? {
                return Err(ServiceError::NotFound {
                    what: "dataset",
                    id: id.clone(),
                });
            }
        }
        let policy_name = request
            .policy
            .clone()
            .unwrap_or_else(|| self.config.default_policy.clone());
        let policy = self.registry.policy(&policy_name)?;
        self.registry.persist_version(&policy).await?;
        let seq = if self.store.is_shared() {
            self.store.next_seq().await?
        } else {
            self.next_seq.fetch_add(1, Ordering::Relaxed)
        };
        let id = new_job_id()?;
        self.build(tenant, request, dataset_ids, policy, (id, seq), Source::Api, 0)
            .await
    }

    /// True when `tenant` has the strategy or dataset `id` (cached).
    async fn owns(&self, tenant: &str, id: &str, what: &'static str) -> Result<bool, ServiceError> {
        let key = (tenant.to_owned(), format!("{what}:{id}"));
        if self.lock_owned().contains(&key) {
            return Ok(true);
        }
        let found = match what {
            "strategy" => self.store.get_strategy(tenant, id).await?.is_some(),
            _ => self.store.get_dataset(tenant, id).await?.is_some(),
        };
        if found {
            self.lock_owned().insert(key);
        }
        Ok(found)
    }

    fn forget_owned(&self, tenant: &str, id: &str, what: &'static str) {
        self.lock_owned()
            .remove(&(tenant.to_owned(), format!("{what}:{id}")));
    }

    /// The compiled module for `policy`: from memory when it is there (the
    /// common case: no thread hop per job), else loaded or compiled on a
    /// blocking thread.
    async fn compiled(
        self: &Arc<Self>,
        sha: &str,
        policy: &Arc<PolicyEntry>,
    ) -> Result<Arc<Compiled>, ServiceError> {
        if let Some(compiled) = self.registry.compiled_cached(sha, policy) {
            return Ok(compiled);
        }
        let registry = self.registry.clone();
        let (sha, policy) = (sha.to_owned(), policy.clone());
        tokio::task::spawn_blocking(move || registry.compiled(&sha, None, &policy))
            .await
            .map_err(|e| ServiceError::Internal(format!("compiler task: {e}")))?
            .map_err(ServiceError::from)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn build(
        self: &Arc<Self>,
        tenant: &str,
        request: JobRequest,
        dataset_ids: Vec<String>,
        policy: Arc<PolicyEntry>,
        (id, seq): (String, i64),
        source: Source,
        attempts: i64,
    ) -> Result<Job, ServiceError> {
        let compiled = self.compiled(&request.strategy, &policy).await?;
        let data: Arc<Dataset> = self.registry.dataset(&dataset_ids).await?;
        let manifest = &compiled.strategy.info.manifest;
        let overrides = request.param_overrides().map_err(ServiceError::InvalidJob)?;
        let params =
            params::resolve(manifest, &overrides).map_err(|e| ServiceError::InvalidJob(e.to_string()))?;
        let backtest = request.backtest_config();
        backtest
            .validate()
            .map_err(|e| ServiceError::InvalidJob(e.to_string()))?;
        let plan = plan(&request, manifest, &policy.policy, &data)?;
        let label = self.metrics.strategy_label(&manifest.name);
        Ok(Job {
            id,
            seq,
            tenant: tenant.to_owned(),
            kind: request.kind,
            priority: request.priority,
            request: Arc::new(request),
            plan,
            compiled,
            data,
            dataset_ids,
            policy,
            params,
            backtest,
            source,
            label,
            attempts,
            enqueued: Instant::now(),
            idempotency: None,
            delivery: None,
        })
    }

    /// Builds a job from its stored row, with the policy it was submitted
    /// with (by hash): a restart's queued jobs, a worker's claimed ones.
    /// `attempts` are the starts before this one.
    pub(crate) async fn build_stored(
        self: &Arc<Self>,
        record: &JobRecord,
        source: Source,
        attempts: i64,
    ) -> Result<Job, ServiceError> {
        let request: JobRequest = serde_json::from_str(&record.spec)
            .map_err(|e| ServiceError::Internal(format!("stored job spec: {e}")))?;
        let policy = self
            .registry
            .policy_by_hash(&record.policy, &record.policy_hash)
            .await?;
        let ids = request.dataset.ids();
        self.build(
            &record.tenant,
            request,
            ids,
            policy,
            (record.id.clone(), record.seq),
            source,
            attempts,
        )
        .await
    }

    /// Puts a job found queued at start-up back in its queue, with the
    /// policy it was submitted with; a job that can no longer be prepared
    /// is failed with the reason.
    async fn restore(self: &Arc<Self>, record: JobRecord) {
        let prepared = self.build_stored(&record, Source::Restart, record.attempts).await;
        self.table.insert(record.clone(), true);
        match prepared {
            Ok(job) => {
                self.metrics
                    .jobs
                    .with_label_values(&[job.kind.as_str(), "restart", "queued"])
                    .inc();
                self.scheduler.restore(job);
            }
            Err(e) => {
                let message = format!("cannot run after a restart: {e}");
                tracing::warn!(job = %record.id, %message, "failed at start-up");
                let failed = failed(record, "interrupted", message);
                if let Err(e) = self.writer.commit(Write::job(failed.clone())).await {
                    tracing::error!(error = %e, "cannot record the failure");
                }
                self.table.finish(failed, None);
            }
        }
    }

    /// A tenant's job.
    pub async fn job(&self, tenant: &str, id: &str) -> Result<JobRecord, ServiceError> {
        if let Some((r, _)) = self.table.get(tenant, id) {
            return Ok(r);
        }
        self.store
            .get_job(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "job",
                id: id.to_owned(),
            })
    }

    /// A tenant's jobs, newest first, with the freshest states.
    pub async fn jobs(&self, tenant: &str, filter: &JobFilter) -> Result<Vec<JobRecord>, ServiceError> {
        let mut records = self.store.list_jobs(tenant, filter).await?;
        self.table.fresher(&mut records);
        if let Some(state) = filter.state {
            records.retain(|r| r.state == state);
        }
        Ok(records)
    }

    /// A job's result, waiting up to `wait` for it to finish.
    pub async fn result(&self, tenant: &str, id: &str, wait: Duration) -> Result<ResultRead, ServiceError> {
        if self.role == Role::Api && !wait.is_zero() {
            self.wait_in_store(tenant, id, wait.min(MAX_RESULT_WAIT)).await?;
        }
        if let Some(mut rx) = self.table.subscribe(tenant, id) {
            if !wait.is_zero() {
                let _ =
                    tokio::time::timeout(wait.min(MAX_RESULT_WAIT), rx.wait_for(|s| s.is_terminal())).await;
            }
        }
        let record = self.job(tenant, id).await?;
        if !record.state.is_terminal() {
            return Ok(ResultRead::Pending(Box::new(record)));
        }
        if let Some((_, Some(result))) = self.table.get(tenant, id) {
            return Ok(ResultRead::Ready(result));
        }
        match self.store.get_result(tenant, id).await? {
            Some(json) => Ok(ResultRead::Ready(Arc::from(json))),
            None => Err(ServiceError::Conflict(format!(
                "job {id} ended {} without a result{}",
                record.state,
                record
                    .error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Cancels a tenant's job and returns its record: `cancelled` when it
    /// was queued, still `running` when it was running (it stops within a
    /// few epoch ticks). A job that already ended is a conflict.
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<JobRecord, ServiceError> {
        if self.role == Role::Api {
            return self.cancel_remote(tenant, id).await;
        }
        match self.scheduler.cancel(tenant, id) {
            Cancel::Dequeued(job) => {
                let record = self.job(tenant, id).await?;
                let cancelled = JobRecord {
                    state: JobState::Cancelled,
                    finished: Some(now_ms()),
                    error_cause: Some("cancelled".into()),
                    error_message: Some("cancelled by the client before it ran".into()),
                    ..record
                };
                self.writer.commit(Write::job(cancelled.clone())).await?;
                self.table.finish(cancelled.clone(), None);
                self.metrics
                    .jobs
                    .with_label_values(&[job.kind.as_str(), job.source.as_str(), "cancelled"])
                    .inc();
                Ok(cancelled)
            }
            Cancel::Signalled => self.job(tenant, id).await,
            Cancel::NotLive => {
                let record = self.job(tenant, id).await?;
                if record.state.is_terminal() {
                    Err(ServiceError::Conflict(format!(
                        "job {id} already ended {}",
                        record.state
                    )))
                } else {
                    // Between the queue and the executor: stop it as soon as it runs.
                    match self.scheduler.control(id) {
                        Some(c) => {
                            c.stop(StopReason::Cancelled);
                            Ok(record)
                        }
                        None => Err(ServiceError::Conflict(format!(
                            "job {id} is {}; try again",
                            record.state
                        ))),
                    }
                }
            }
        }
    }

    // ---- strategies ----

    /// Validates, compiles (once) and stores a module for `tenant`. The
    /// boolean is true when it is new for this tenant.
    /// A new file for an upload to be written to as it arrives.
    pub fn spool(&self) -> Result<Spool, ServiceError> {
        Ok(self.store.spool()?)
    }

    /// Validates, compiles and stores a module written to `spool`. The
    /// boolean is true when it is new for this tenant.
    pub async fn upload_strategy(
        self: &Arc<Self>,
        tenant: &str,
        spool: Spool,
    ) -> Result<(StrategyRecord, bool), ServiceError> {
        let sha = spool.sha256();
        if let Some(existing) = self.store.get_strategy(tenant, &sha).await? {
            return Ok((existing, false));
        }
        let policy = self.registry.policy(&self.config.default_policy)?;
        self.registry.persist_version(&policy).await?;
        let registry = self.registry.clone();
        let (sha2, policy2) = (sha.clone(), policy.clone());
        let compiled = tokio::task::spawn_blocking(move || -> Result<Arc<Compiled>, ServiceError> {
            // The compiler needs the module whole: read once, at its size.
            let mut bytes = Vec::with_capacity(spool.size() as usize);
            std::io::Read::read_to_end(&mut spool.reader()?, &mut bytes)
                .map_err(|e| ServiceError::Internal(format!("reading the spooled module: {e}")))?;
            let compiled = registry.compiled(&sha2, Some(&bytes), &policy2)?;
            spool.keep(Blob::Module, &sha2)?;
            Ok(compiled)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("compiler task: {e}")))??;
        // A probe instantiation: the fixed cost of a run, and a module that
        // cannot be instantiated under the policy is refused now.
        let started = Instant::now();
        compiled
            .sandbox
            .instantiate_and_drop(&compiled.strategy, &policy.policy)
            .await
            .map_err(ServiceError::InvalidModule)?;
        self.metrics.step("instantiate", started.elapsed());
        let info = &compiled.strategy.info;
        let record = StrategyRecord {
            tenant: tenant.to_owned(),
            sha256: sha.clone(),
            name: info.manifest.name.clone(),
            version: info.manifest.version.clone(),
            manifest: serde_json::to_string(&info.manifest).unwrap_or_default(),
            info: serde_json::to_string(info).unwrap_or_default(),
            size: info.size_bytes as i64,
            created: now_ms(),
        };
        let created = self.store.insert_strategy(&record).await?;
        let record = self.store.get_strategy(tenant, &sha).await?.unwrap_or(record);
        Ok((record, created))
    }

    pub async fn strategies(&self, tenant: &str) -> Result<Vec<StrategyRecord>, ServiceError> {
        Ok(self.store.list_strategies(tenant).await?)
    }

    pub async fn strategy(&self, tenant: &str, id: &str) -> Result<StrategyRecord, ServiceError> {
        self.store
            .get_strategy(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "strategy",
                id: id.to_owned(),
            })
    }

    pub async fn delete_strategy(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.forget_owned(tenant, id, "strategy");
        if self.store.delete_strategy(tenant, id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "strategy",
                id: id.to_owned(),
            })
        }
    }

    // ---- datasets ----

    /// Validates and stores the CSV bars of one symbol. The boolean is true
    /// when it is new for this tenant.
    pub async fn upload_dataset(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        spool: Spool,
    ) -> Result<(DatasetRecord, bool), ServiceError> {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(|c| c.is_control() || c == ',') {
            return Err(ServiceError::InvalidDataset(format!(
                "name {name:?} must be 1 to 64 characters, without commas or control characters"
            )));
        }
        let sha = spool.sha256();
        let size = spool.size() as i64;
        let id = sha256_hex(format!("{name}\0{sha}").as_bytes())[..16].to_owned();
        if let Some(existing) = self.store.get_dataset(tenant, &id).await? {
            return Ok((existing, false));
        }
        let (name2, sha2) = (name.to_owned(), sha.clone());
        let data = tokio::task::spawn_blocking(move || -> Result<Dataset, ServiceError> {
            let reader = std::io::BufReader::with_capacity(64 << 10, spool.reader()?);
            let data = Dataset::from_csv_reader(&name2, reader, &format!("{name2}.csv"))
                .map_err(|e| ServiceError::InvalidDataset(e.to_string()))?;
            spool.keep(Blob::Dataset, &sha2)?;
            Ok(data)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("dataset task: {e}")))??;
        let bars = data.bars();
        let record = DatasetRecord {
            tenant: tenant.to_owned(),
            id: id.clone(),
            name: name.to_owned(),
            bars: bars.len() as i64,
            first_ts: bars.first().map_or(0, |b| b.ts),
            last_ts: bars.last().map_or(0, |b| b.ts),
            sha256: sha,
            size,
            created: now_ms(),
        };
        self.registry.remember_dataset(&id, Arc::new(data));
        let created = self.store.insert_dataset(&record).await?;
        let record = self.store.get_dataset(tenant, &id).await?.unwrap_or(record);
        Ok((record, created))
    }

    pub async fn datasets(&self, tenant: &str) -> Result<Vec<DatasetRecord>, ServiceError> {
        Ok(self.store.list_datasets(tenant).await?)
    }

    pub async fn dataset(&self, tenant: &str, id: &str) -> Result<DatasetRecord, ServiceError> {
        self.store
            .get_dataset(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "dataset",
                id: id.to_owned(),
            })
    }

    pub async fn delete_dataset(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.forget_owned(tenant, id, "dataset");
        if self.store.delete_dataset(tenant, id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "dataset",
                id: id.to_owned(),
            })
        }
    }

    // ---- policies ----

    /// Every policy: name, hash and where it comes from.
    pub fn policies(&self) -> PolicyList {
        let policies = self
            .registry
            .policy_names()
            .into_iter()
            .filter_map(|name| {
                let p = self.registry.policy(&name).ok()?;
                Some(PolicySummary {
                    name,
                    hash: p.hash.clone(),
                    source: p.source.to_owned(),
                })
            })
            .collect();
        PolicyList { policies }
    }

    /// A policy with its values and audit trail (who changed it: shown to
    /// operators only).
    pub async fn policy(&self, who: &Principal, name: &str) -> Result<PolicyView, ServiceError> {
        let p = self.registry.policy(name)?;
        let audit = self.store.policy_audit(name).await?;
        Ok(PolicyView {
            name: name.to_owned(),
            hash: p.hash.clone(),
            source: p.source.to_owned(),
            policy: (*p.policy).clone(),
            toml: p.toml.clone(),
            audit: audit.iter().map(|a| AuditEntry::of(a, who.operator)).collect(),
        })
    }

    /// Replaces (or creates) policy `name` with the TOML `text`, for new
    /// jobs; operators only; audited.
    pub async fn replace_policy(
        &self,
        who: &Principal,
        name: &str,
        text: &str,
    ) -> Result<PolicyChange, ServiceError> {
        if !who.operator {
            return Err(ServiceError::Forbidden);
        }
        if !crate::registry::valid_policy_name(name) {
            return Err(ServiceError::InvalidPolicy(format!(
                "policy name {name:?} is not [a-z0-9_-]{{1,64}}"
            )));
        }
        if text
            .lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with('#'))
        {
            return Err(ServiceError::InvalidPolicy(format!(
                "the policy is empty: give at least one key (every key left out takes its \
                 built-in default); to go back to the shipped policy {name}, DELETE /v1/policies/{name}"
            )));
        }
        let policy = Policy::from_toml_str(text, &format!("{name}.toml"))
            .map_err(|e| ServiceError::InvalidPolicy(e.to_string()))?;
        let entry = Arc::new(PolicyEntry::new(policy, "api"));
        let audit = self
            .store
            .replace_policy(name, &entry.toml, &entry.hash, &who.tenant)
            .await?;
        self.registry.set_policy(name, entry.clone());
        tracing::info!(policy = name, hash = %entry.hash, by = %who.tenant, "policy replaced");
        Ok(PolicyChange {
            name: name.to_owned(),
            hash: entry.hash.clone(),
            previous_hash: audit.previous_hash,
            source: "api".to_owned(),
        })
    }

    /// Removes the replacement of policy `name` (operators only): new jobs
    /// get the shipped policy again (a file of the policies directory or a
    /// built-in), or, for a policy that only the API made, none. Audited.
    /// Jobs already submitted keep the exact version they were given.
    pub async fn revert_policy(&self, who: &Principal, name: &str) -> Result<PolicyChange, ServiceError> {
        if !who.operator {
            return Err(ServiceError::Forbidden);
        }
        let shipped = self.registry.shipped_policy(name)?;
        let now_hash = shipped.as_ref().map_or("", |e| e.hash.as_str());
        let Some(audit) = self.store.revert_policy(name, now_hash, &who.tenant).await? else {
            return match shipped {
                Some(_) => Err(ServiceError::Conflict(format!(
                    "policy {name} is the shipped one: there is no replacement to remove"
                ))),
                None => Err(ServiceError::NotFound {
                    what: "policy",
                    id: name.to_owned(),
                }),
            };
        };
        self.registry.forget_policy(name);
        let source = shipped.as_ref().map_or("deleted", |e| e.source);
        tracing::info!(policy = name, by = %who.tenant, source, "policy replacement removed");
        Ok(PolicyChange {
            name: name.to_owned(),
            hash: audit.hash,
            previous_hash: audit.previous_hash,
            source: source.to_owned(),
        })
    }

    // ---- status and shutdown ----

    /// Queue depths, running jobs, workers and limits. Running jobs by
    /// tenant: only the caller's own, but for operators, who see every
    /// tenant's.
    pub fn status(&self, who: &Principal) -> StatusView {
        let snap = self.scheduler.snapshot();
        StatusView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: self.is_ready(),
            queued: snap.queued.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            running: snap.running,
            running_by_tenant: snap
                .running_by_tenant
                .into_iter()
                .filter(|(tenant, _)| who.operator || *tenant == who.tenant)
                .collect(),
            admitting: snap.admitting,
            workers: Workers {
                executor_threads: self.parallelism,
                http_threads: self.config.http_threads,
            },
            limits: snap.limits,
            max_instances: self.config.max_instances,
            default_policy: self.config.default_policy.clone(),
            auth: if self.tokens.is_open() {
                "none (loopback only)"
            } else {
                "bearer tokens"
            }
            .to_owned(),
        }
    }

    /// Graceful shutdown: stops admitting and starting jobs, gives running
    /// jobs `grace` to finish, then stops the rest and puts them back in the
    /// queue, and flushes every write.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        self.shutting_down.send_replace(true);
        self.scheduler.stop_admitting();
        self.scheduler.stop_dispatching();
        // Live deployments stop (they resume by replay after a restart, or
        // on another worker, which takes their leases over at once).
        self.deployments.shutdown().await;
        self.release_leases().await;
        let mut active = self.active.subscribe();
        let running = *active.borrow();
        tracing::info!(running, grace_ms = grace.as_millis() as u64, "shutting down");
        if tokio::time::timeout(grace, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let stopped = self.scheduler.stop_all(StopReason::Shutdown);
            tracing::warn!(
                stopped,
                "grace period over: stopping running jobs; they will run again after a restart"
            );
            if tokio::time::timeout(STOP_WAIT, active.wait_for(|n| *n == 0))
                .await
                .is_err()
            {
                tracing::error!("jobs did not stop; they will be re-queued at the next start");
            }
        }
        self.writer.flush_and_stop().await;
        if self.role == Role::Worker {
            self.hand_back_unfinished().await;
        }
        self.store.close().await;
        tracing::info!("stopped");
    }
}

/// A job that cannot be prepared to run any more, failed with `cause`.
pub(crate) fn failed(record: JobRecord, cause: &str, message: String) -> JobRecord {
    JobRecord {
        state: JobState::Failed,
        finished: Some(now_ms()),
        error_cause: Some(cause.into()),
        error_message: Some(message),
        ..record
    }
}

/// The study a request asks for, with every option checked against the
/// grid, the policy and the data before it is acknowledged (the checks and
/// messages of the study itself, so of the CLI).
fn plan(
    request: &JobRequest,
    manifest: &palisade_host_api::manifest::Manifest,
    policy: &Policy,
    data: &Dataset,
) -> Result<Plan, ServiceError> {
    let invalid = |e: &dyn std::fmt::Display| ServiceError::InvalidJob(e.to_string());
    let objective = |o: &Option<String>| -> Result<Objective, ServiceError> {
        o.as_deref()
            .map_or(Ok(Objective::TotalReturn), |s| s.parse().map_err(|e| invalid(&e)))
    };
    let search = match request.samples {
        None => Search::All,
        Some(samples) => Search::Random {
            samples,
            seed: request.seed,
        },
    };
    let grid = || -> Result<Grid, ServiceError> {
        if request.grid.is_empty() {
            return Err(ServiceError::InvalidJob(format!(
                "grid: a {} job needs at least one axis, e.g. \"fast=5:20:5\"",
                request.kind.as_str()
            )));
        }
        let grid = Grid::parse(manifest, &request.grid).map_err(|e| invalid(&e))?;
        // Parameters given explicitly must not also be varied.
        let fixed: Vec<&str> = request.params.keys().map(String::as_str).collect();
        grid.check_fixed(fixed).map_err(|e| invalid(&e))?;
        Ok(grid)
    };
    Ok(match request.kind {
        Kind::Backtest => Plan::Backtest,
        Kind::Optimize => {
            let grid = grid()?;
            let options = OptimizeOptions {
                objective: objective(&request.objective)?,
                top: request.top.unwrap_or(OptimizeOptions::default().top),
                search,
                keep_reports: false,
            };
            options.check(&grid, policy).map_err(|e| invalid(&e))?;
            Plan::Optimize { grid, options }
        }
        Kind::WalkForward => {
            let d = WalkForwardOptions::default();
            let grid = grid()?;
            let options = WalkForwardOptions {
                objective: objective(&request.objective)?,
                windows: request.windows.unwrap_or(d.windows),
                in_sample: request.in_sample.unwrap_or(d.in_sample),
                mode: match &request.mode {
                    Some(m) => m.parse().map_err(|e| invalid(&e))?,
                    None => d.mode,
                },
                search,
            };
            options.check(&grid, policy, data).map_err(|e| invalid(&e))?;
            Plan::WalkForward { grid, options }
        }
        Kind::MonteCarlo => {
            let d = MonteCarloOptions::default();
            let options = MonteCarloOptions {
                runs: request.runs.unwrap_or(d.runs),
                method: match &request.method {
                    Some(m) => m.parse().map_err(|e| invalid(&e))?,
                    None => d.method,
                },
                seed: request.seed,
                ruin: request.ruin.unwrap_or(d.ruin),
            };
            options.validate().map_err(|e| invalid(&e))?;
            Plan::MonteCarlo { options }
        }
    })
}
