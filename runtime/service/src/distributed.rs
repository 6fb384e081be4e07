//! Distributed mode (`--store postgres://… --queue redis://…`): what API
//! nodes and workers do beyond the embedded service.
//!
//! - Postgres holds every record; a job's row says who runs it (`worker`)
//!   and how many times it was started (`attempts`). A worker takes a job
//!   by moving its row from `queued` to `running` in one conditional
//!   statement ([`claim`]), so whatever Redis delivers, one worker at a
//!   time runs a job. A job's end is written by the batching writer with
//!   the guard of every job write (a terminal row never changes, an older
//!   attempt never overwrites a newer one) and its result only with the
//!   row that was written: a result is committed at most once per job.
//! - Redis ([`crate::queue`]) only says which jobs to look at.
//! - Every worker beats every `heartbeat_interval_ms` with a TTL of
//!   `heartbeat_ttl_ms`, and in the same loop reaps and reconciles:
//!   - [`Service::reap`]: a job `running` on a worker whose heartbeat has
//!     expired goes back to `queued` (or `failed`/`interrupted` after
//!     `max_attempts` starts) and gets a new entry; the dead worker's
//!     consumer is dropped with the entries it held. A job is reclaimed
//!     within TTL + one interval of its worker's death.
//!   - [`Service::reconcile`]: a job `queued` for longer than the TTL
//!     with no entry in Redis (lost with a failed-over master, or an API
//!     node killed between its commit and its enqueue) gets one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use crate::jobs::Delivery;
use crate::jobs::{Priority, Source};
use crate::queue::{Queue, WorkerInfo};
use crate::service::Service;
use crate::storage::{now_ms, JobRecord, JobState, StorageError, INTERRUPTED};
use crate::worker::WorkerState;

/// An idle worker without a blocking connection looks for work this often.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait of one blocking read of the queue (then the worker looks at
/// its drain flag and room again).
const BLOCK: Duration = Duration::from_millis(1000);
/// A worker that cannot reach Redis or Postgres tries again after this.
const BACKOFF: Duration = Duration::from_secs(1);
/// Running jobs' cancellation flags are read this often.
const CANCEL_POLL: Duration = Duration::from_millis(250);
/// Jobs re-queued or given an entry per pass, at most.
const PASS_LIMIT: i64 = 1_000;
/// A worker that found a job's tenant at its running cap waits this long
/// before it reads the queue again.
const TENANT_BUSY_PAUSE: Duration = Duration::from_millis(50);
/// An API node reads the workers' heartbeats into its metrics this often.
const WORKERS_READ: Duration = Duration::from_secs(2);

/// What a worker found when it tried to take a job.
#[derive(Debug)]
pub enum Claimed {
    /// The row is now `running` on this worker, with its attempts counted.
    Run(Box<JobRecord>),
    /// Started `max_attempts` times already: failed as interrupted.
    Failed,
    /// Not queued (cancelled, ended, or taken): nothing to do.
    Gone,
    /// Its tenant already has `max_running_per_tenant` jobs running: it
    /// waits its turn at the back of the queue, behind other tenants' jobs.
    TenantBusy,
}

/// Takes `job` for `worker` if it is queued: `running`, one more attempt.
/// A job that has already been started `max_attempts` times is failed
/// instead.
pub async fn claim(
    pool: &PgPool,
    job: &str,
    worker: &str,
    max_attempts: u32,
    tenant_cap: usize,
) -> Result<Claimed, StorageError> {
    let now = now_ms();
    let failed = sqlx::query(
        "UPDATE jobs SET state = 'failed', error_cause = 'interrupted', \
         error_message = $2 || ' (' || attempts || ' attempts)', finished = $3, worker = NULL \
         WHERE id = $1 AND state = 'queued' AND attempts >= $4",
    )
    .bind(job)
    .bind(INTERRUPTED)
    .bind(now)
    .bind(i64::from(max_attempts))
    .execute(pool)
    .await?;
    if failed.rows_affected() == 1 {
        return Ok(Claimed::Failed);
    }
    // At most `tenant_cap` of one tenant's jobs run at once, on all the
    // workers together. Claims of one tenant's jobs take turns (a lock per
    // tenant, held to the end of this transaction), so the count below sees
    // every claim before it: two workers claiming at once cannot both pass.
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('palisade-tenant:' || tenant)) \
         FROM jobs WHERE id = $1",
    )
    .bind(job)
    .execute(&mut *tx)
    .await?;
    let row: Option<JobRecord> = sqlx::query_as(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = $2, progress = 0, worker = $3 \
         WHERE id = $1 AND state = 'queued' \
         AND (SELECT count(*) FROM jobs r WHERE r.tenant = jobs.tenant AND r.state = 'running') < $4 \
         RETURNING *",
    )
    .bind(job)
    .bind(now)
    .bind(worker)
    .bind(tenant_cap as i64)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(r) = row {
        return Ok(Claimed::Run(Box::new(r)));
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_optional(pool)
        .await?;
    Ok(if state.as_deref() == Some("queued") {
        Claimed::TenantBusy
    } else {
        Claimed::Gone
    })
}

/// Puts a job that was running on a dead worker back in the queue, or fails
/// it after `max_attempts` starts; `None` when the row changed meanwhile
/// (its worker ended it, or another reaper got there first).
async fn requeue_abandoned(
    pool: &PgPool,
    job: &str,
    worker: &str,
    attempts: i64,
    max_attempts: u32,
) -> Result<Option<JobState>, StorageError> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET \
           state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'queued' END, \
           error_cause = CASE WHEN attempts >= $4 THEN 'interrupted' ELSE NULL END, \
           error_message = CASE WHEN attempts >= $4 THEN $5 || ' (' || attempts || ' attempts)' ELSE NULL END, \
           finished = CASE WHEN attempts >= $4 THEN $6 ELSE NULL END, \
           started = CASE WHEN attempts >= $4 THEN started ELSE NULL END, \
           progress = CASE WHEN attempts >= $4 THEN progress ELSE 0 END, \
           worker = NULL \
         WHERE id = $1 AND state = 'running' AND worker = $2 AND attempts = $3 RETURNING state",
    )
    .bind(job)
    .bind(worker)
    .bind(attempts)
    .bind(i64::from(max_attempts))
    .bind("interrupted: its worker stopped beating")
    .bind(now_ms())
    .fetch_optional(pool)
    .await?;
    Ok(state.and_then(|s| s.parse().ok()))
}

/// Cancels a job if it is still queued; the row as it is after.
pub async fn cancel_queued(
    pool: &PgPool,
    tenant: &str,
    job: &str,
) -> Result<Option<JobRecord>, StorageError> {
    Ok(sqlx::query_as(
        "UPDATE jobs SET state = 'cancelled', finished = $3, error_cause = 'cancelled', \
         error_message = 'cancelled by the client before it ran' \
         WHERE tenant = $1 AND id = $2 AND state = 'queued' RETURNING *",
    )
    .bind(tenant)
    .bind(job)
    .bind(now_ms())
    .fetch_optional(pool)
    .await?)
}

impl Service {
    fn pg(&self) -> &PgPool {
        self.store
            .postgres()
            .expect("distributed mode runs on a shared store")
    }

    pub(crate) fn redis(&self) -> &Queue {
        self.queue.as_ref().expect("distributed mode has a queue")
    }

    pub(crate) fn worker_state(&self) -> &WorkerState {
        self.worker.as_ref().expect("a worker has its state")
    }

    /// A worker's heartbeat as it stands.
    pub fn worker_info(&self) -> WorkerInfo {
        let w = self.worker_state();
        let current: Vec<String> = self.scheduler.controls().iter().map(|c| c.id.clone()).collect();
        let status = if w.draining.load(Ordering::Acquire) {
            "draining"
        } else if current.is_empty() {
            "idle"
        } else {
            "busy"
        };
        WorkerInfo {
            id: w.id.clone(),
            name: w.name.clone(),
            status: status.into(),
            current_jobs: current,
            jobs_done: w.done.load(Ordering::Relaxed),
            jobs_failed: w.failed.load(Ordering::Relaxed),
            started: crate::jobs::rfc3339(w.started_ms),
            uptime_seconds: w.started.elapsed().as_secs(),
            capacity: w.capacity as u64,
            build: w.build.clone(),
            last_beat_ms: now_ms(),
            url: self.leases.url.get().cloned(),
            deployments: self.deployments.running() as u64,
            max_deployments: self.deployments.max() as u64,
        }
    }

    /// Starts a worker's loops: heartbeats (with reaping and reconciling),
    /// taking jobs, and reading cancellation requests. Beats once first,
    /// so that nobody reaps the jobs it is about to take.
    pub(crate) async fn start_worker(self: &Arc<Self>) -> Result<(), crate::queue::QueueError> {
        self.redis()
            .beat(&self.worker_info(), self.config.heartbeat_ttl())
            .await?;
        self.every(self.config.heartbeat_interval(), |s| async move {
            s.beat_and_reap().await
        });
        self.every(CANCEL_POLL, |s| async move { s.read_cancellations().await });
        let taker = self.clone();
        tokio::spawn(async move { taker.take_loop().await });
        Ok(())
    }

    async fn beat_and_reap(&self) {
        let started = Instant::now();
        match self
            .redis()
            .beat(&self.worker_info(), self.config.heartbeat_ttl())
            .await
        {
            Ok(()) => {
                self.metrics.worker_heartbeats.inc();
                self.set_queue_up(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the heartbeat");
                self.set_queue_up(false);
                return;
            }
        }
        if let Err(e) = self.reap().await {
            tracing::warn!(error = %e, "cannot reap dead workers' jobs");
        }
        if let Err(e) = self.reconcile().await {
            tracing::warn!(error = %e, "cannot reconcile the queue with the store");
        }
        match self.redis().raise_aged(self.config.aging()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(raised = n, "aged jobs rose a priority level"),
            Err(e) => tracing::warn!(error = %e, "cannot raise aged jobs"),
        }
        self.metrics.step("heartbeat", started.elapsed());
    }

    /// Re-queues the jobs of workers whose heartbeat has expired.
    pub async fn reap(&self) -> Result<usize, String> {
        let queue = self.redis();
        // The workers running jobs first, then who is alive: a worker that
        // starts in between is seen alive, never reaped for a job it just
        // took.
        let holders: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT worker FROM jobs WHERE state = 'running' AND worker IS NOT NULL",
        )
        .fetch_all(self.pg())
        .await
        .map_err(|e| e.to_string())?;
        let live = queue.live_workers(now_ms()).await.map_err(|e| e.to_string())?;
        let gone: Vec<String> = holders.into_iter().filter(|w| !live.contains(w)).collect();
        let running: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT id, worker, attempts, priority FROM jobs WHERE state = 'running' AND worker = ANY($1) \
             ORDER BY seq LIMIT $2",
        )
        .bind(&gone)
        .bind(PASS_LIMIT)
        .fetch_all(self.pg())
        .await
        .map_err(|e| e.to_string())?;
        let mut reclaimed = 0;
        let mut dead = std::collections::HashSet::new();
        for (id, worker, attempts, priority) in running {
            if live.contains(&worker) {
                continue;
            }
            dead.insert(worker.clone());
            let state = requeue_abandoned(self.pg(), &id, &worker, attempts, self.config.max_attempts)
                .await
                .map_err(|e| e.to_string())?;
            match state {
                Some(JobState::Queued) => {
                    let priority = Priority::parse(&priority).unwrap_or_default();
                    if let Err(e) = queue.enqueue(&id, priority).await {
                        // The reconciler adds the entry later.
                        tracing::warn!(job = %id, error = %e, "reclaimed, but cannot enqueue it yet");
                    }
                    tracing::warn!(job = %id, dead_worker = %worker, attempts, "reclaimed from a dead worker");
                    self.metrics.reclaimed.inc();
                    reclaimed += 1;
                }
                Some(state) => {
                    tracing::warn!(job = %id, dead_worker = %worker, attempts, state = state.as_str(),
                        "its worker died once too often: failed");
                    self.metrics.reclaimed.inc();
                    reclaimed += 1;
                }
                None => {}
            }
        }
        // Consumers of dead workers hold entries nobody will acknowledge.
        let me = &self.worker_state().id;
        if let Ok(consumers) = queue.consumers().await {
            for (name, _) in consumers {
                if &name != me && !live.contains(&name) {
                    dead.insert(name);
                }
            }
        }
        for worker in dead {
            // Entries it read and never acknowledged.
            let held = queue.take_over(&worker, me).await.map_err(|e| e.to_string())?;
            self.requeue_entries(held).await?;
            if let Err(e) = queue.forget_consumer(&worker).await {
                tracing::debug!(error = %e, "cannot drop a dead worker's consumer");
            }
        }
        // Entries held too long by anyone (a failed `done`, a read at a
        // stop), this worker's own included.
        let stale = queue
            .take_over_stale(me, self.config.heartbeat_ttl())
            .await
            .map_err(|e| e.to_string())?;
        self.requeue_entries(stale).await?;
        Ok(reclaimed)
    }

    /// Entries taken over from a consumer: each is done, and a job still
    /// queued gets a fresh one. All are handled even when one fails (they
    /// are this worker's now: a later pass takes them over again).
    async fn requeue_entries(&self, entries: Vec<Delivery>) -> Result<(), String> {
        let mut first_error = None;
        for d in entries {
            let handled = async {
                let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                    .bind(&d.job)
                    .fetch_optional(self.pg())
                    .await
                    .map_err(|e| e.to_string())?;
                self.redis().done(&d).await.map_err(|e| e.to_string())?;
                if state.as_deref() == Some("queued") {
                    self.redis()
                        .enqueue(&d.job, d.priority)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::warn!(job = %d.job, "an entry nobody took: enqueued again");
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = handled {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Gives an entry to queued jobs that have none (Redis lost it).
    pub async fn reconcile(&self) -> Result<usize, String> {
        let before = now_ms() - self.config.heartbeat_ttl_ms as i64;
        let queued: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, priority FROM jobs WHERE state = 'queued' AND created < $1 ORDER BY seq LIMIT $2",
        )
        .bind(before)
        .bind(PASS_LIMIT)
        .fetch_all(self.pg())
        .await
        .map_err(|e| e.to_string())?;
        if queued.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = queued.iter().map(|(id, _)| id.clone()).collect();
        let present = self.redis().enqueued(&ids).await.map_err(|e| e.to_string())?;
        let mut added = 0;
        for ((id, priority), present) in queued.into_iter().zip(present) {
            if present {
                continue;
            }
            let priority = Priority::parse(&priority).unwrap_or_default();
            self.redis()
                .enqueue(&id, priority)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(job = %id, "queued without an entry in Redis: enqueued again");
            self.metrics.requeued_lost.inc();
            added += 1;
        }
        Ok(added)
    }

    async fn read_cancellations(&self) {
        let controls = self.scheduler.controls();
        if controls.is_empty() {
            return;
        }
        let ids: Vec<String> = controls.iter().map(|c| c.id.clone()).collect();
        match self.redis().cancel_requested(&ids).await {
            Ok(flags) => {
                for (c, asked) in controls.iter().zip(flags) {
                    if asked && c.stop(crate::scheduler::StopReason::Cancelled) {
                        tracing::info!(job = %c.id, "cancelled by the client");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read cancellation requests"),
        }
    }

    /// Takes jobs from the queue while there is room, until a drain or a
    /// shutdown.
    async fn take_loop(self: Arc<Self>) {
        let capacity = self.worker_state().capacity;
        let mut retry: Option<Delivery> = None;
        // Entries a blocking read brought beyond the one taken, in priority
        // order; they are this worker's until taken (or reaped with it).
        let mut ready: std::collections::VecDeque<Delivery> = std::collections::VecDeque::new();
        let mut blocking: Option<Queue> = None;
        loop {
            if self.is_stopped() || self.worker_state().draining.load(Ordering::Acquire) {
                break;
            }
            if self.scheduler.running() + self.scheduler.snapshot().queued.values().sum::<usize>() >= capacity
            {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let delivery = match retry.take().or_else(|| ready.pop_front()) {
                Some(d) => d,
                None => {
                    if blocking.is_none() {
                        blocking = self.redis().dedicated().await.ok();
                    }
                    let read = match &blocking {
                        // Waits for work without polling: an entry is
                        // taken the moment it is added.
                        Some(q) => q.wait_next(&self.worker_state().id, BLOCK).await,
                        None => self
                            .redis()
                            .next(&self.worker_state().id)
                            .await
                            .map(|d| d.into_iter().collect()),
                    };
                    match read {
                        Ok(found) => {
                            self.set_queue_up(true);
                            if found.is_empty() && blocking.is_none() {
                                tokio::time::sleep(POLL).await;
                            }
                            ready.extend(found);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the queue");
                            self.set_queue_up(false);
                            blocking = None;
                            tokio::time::sleep(BACKOFF).await;
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = self.take(&delivery).await {
                // Postgres cannot be reached: the entry stays ours until it
                // can (or, should this worker die, its jobs are reaped).
                tracing::warn!(job = %delivery.job, error = %e, "cannot take the job yet");
                retry = Some(delivery);
                tokio::time::sleep(BACKOFF).await;
            }
        }
        // Entries read but not taken go back: done, and a fresh entry for
        // each (a job no longer queued ignores it).
        for d in retry.into_iter().chain(ready) {
            if self.redis().done(&d).await.is_ok() {
                let _ = self.redis().enqueue(&d.job, d.priority).await;
            }
        }
    }

    /// Claims a delivered job in Postgres and queues it here.
    async fn take(self: &Arc<Self>, d: &Delivery) -> Result<(), StorageError> {
        let worker = self.worker_state().id.clone();
        let cap = self.config.max_running_per_tenant;
        match claim(self.pg(), &d.job, &worker, self.config.max_attempts, cap).await? {
            Claimed::Gone => {
                let _ = self.redis().done(d).await;
            }
            Claimed::Failed => {
                tracing::warn!(job = %d.job, "started too many times: failed as interrupted");
                let _ = self.redis().done(d).await;
            }
            Claimed::TenantBusy => {
                // A fresh entry at the back; the pause keeps a queue of
                // nothing but this tenant's jobs from spinning.
                if self.redis().done(d).await.is_ok() {
                    let _ = self.redis().enqueue(&d.job, d.priority).await;
                }
                tokio::time::sleep(TENANT_BUSY_PAUSE).await;
            }
            Claimed::Run(record) => self.run_claimed(*record, d.clone()).await,
        }
        Ok(())
    }

    /// Prepares a claimed job and hands it to the local scheduler; one that
    /// cannot be prepared any more is failed.
    async fn run_claimed(self: &Arc<Self>, record: JobRecord, delivery: Delivery) {
        let mut pause = Duration::from_millis(200);
        let prepared = loop {
            match self.prepare_claimed(&record).await {
                // The store cannot be read now (restarting, unreachable):
                // the job stays this worker's and is prepared once it can.
                Err(crate::ServiceError::StoreUnavailable(e)) if !self.is_stopped() => {
                    tracing::warn!(job = %record.id, error = %e, "cannot prepare the job yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BACKOFF * 5);
                }
                // Stopping while the store is away: the row stays running
                // on this worker and is handed back or reaped.
                Err(crate::ServiceError::StoreUnavailable(_)) => return,
                other => break other,
            }
        };
        self.hand_over_claimed(record, delivery, prepared).await;
    }

    /// Builds a claimed job from its row, as a restart does.
    async fn prepare_claimed(
        self: &Arc<Self>,
        record: &JobRecord,
    ) -> Result<crate::jobs::Job, crate::ServiceError> {
        let source = if record.attempts > 1 {
            Source::Restart
        } else {
            Source::Api
        };
        // `run_job` counts this start itself.
        self.build_stored(record, source, record.attempts - 1).await
    }

    async fn hand_over_claimed(
        self: &Arc<Self>,
        record: JobRecord,
        delivery: Delivery,
        prepared: Result<crate::jobs::Job, crate::ServiceError>,
    ) {
        match prepared {
            Ok(mut job) => {
                job.delivery = Some(delivery);
                // Not "durable": the claim wrote the start.
                self.table.insert(record, false);
                self.scheduler.restore(job);
                self.pump();
            }
            Err(e) => {
                let message = format!("cannot run on worker {}: {e}", self.worker_state().id);
                tracing::warn!(job = %record.id, %message, "failed");
                let failed = crate::service::failed(record, "invalid_job", message);
                if let Err(e) = self.writer.commit(crate::storage::Write::job(failed)).await {
                    tracing::error!(error = %e, "cannot record the failure");
                    return;
                }
                let _ = self.redis().done(&delivery).await;
            }
        }
    }

    /// After a worker's job end is committed: the entry is done and the
    /// counts move.
    pub(crate) fn worker_job_ended(self: &Arc<Self>, delivery: Option<Delivery>, state: JobState) {
        let Some(w) = self.worker.as_ref() else { return };
        w.done.fetch_add(1, Ordering::Relaxed);
        if matches!(state, JobState::Failed | JobState::TimedOut) {
            w.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = delivery {
            let s = self.clone();
            tokio::spawn(async move {
                if let Err(e) = s.redis().done(&d).await {
                    tracing::debug!(error = %e, "cannot acknowledge the entry (it is dropped with the consumer)");
                }
            });
        }
    }

    /// A worker's job handed back (a drain stopped it): queued again with a
    /// new entry, the old one done.
    pub(crate) async fn worker_job_handed_back(
        &self,
        delivery: Option<Delivery>,
        id: &str,
        priority: Priority,
    ) {
        if self.queue.is_none() {
            return;
        }
        if let Some(d) = delivery {
            let _ = self.redis().done(&d).await;
        }
        if let Err(e) = self.redis().enqueue(id, priority).await {
            tracing::warn!(job = %id, error = %e, "handed back; the reconciler will enqueue it");
        }
    }

    /// At the end of a worker's shutdown: jobs still `running` on it (taken
    /// but not started yet, or that did not stop in time) go back to the
    /// queue now, rather than when its heartbeat expires.
    pub(crate) async fn hand_back_unfinished(&self) {
        let me = &self.worker_state().id;
        let back: Result<Vec<(String, String)>, sqlx::Error> = sqlx::query_as(
            "UPDATE jobs SET state = 'queued', started = NULL, progress = 0, worker = NULL \
             WHERE state = 'running' AND worker = $1 RETURNING id, priority",
        )
        .bind(me)
        .fetch_all(self.pg())
        .await;
        match back {
            Ok(rows) => {
                for (id, priority) in rows {
                    let priority = Priority::parse(&priority).unwrap_or_default();
                    tracing::info!(job = %id, "handed back at shutdown");
                    if let Err(e) = self.redis().enqueue(&id, priority).await {
                        tracing::warn!(job = %id, error = %e, "handed back; the reconciler will enqueue it");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back unfinished jobs; they are reaped once this worker's heartbeat expires")
            }
        }
    }

    /// Drain (SIGTERM to a worker): takes no more jobs, lets running ones
    /// finish within `grace`, hands back the rest, and leaves the list of
    /// workers.
    pub async fn drain(&self, grace: Duration) {
        if let Some(w) = self.worker.as_ref() {
            w.draining.store(true, Ordering::Release);
            let _ = self
                .redis()
                .beat(&self.worker_info(), self.config.heartbeat_ttl())
                .await;
        }
        self.shutdown(grace).await;
        if let (Some(w), Some(q)) = (self.worker.as_ref(), self.queue.as_ref()) {
            if let Err(e) = q.leave(&w.id).await {
                tracing::warn!(error = %e, "cannot leave the list of workers");
            }
        }
    }

    /// API node: waits up to `wait` for a job to end, reading Postgres.
    pub(crate) async fn wait_in_store(
        &self,
        tenant: &str,
        id: &str,
        wait: Duration,
    ) -> Result<(), StorageError> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        let mut shutdown = self.shutting_down.subscribe();
        loop {
            let Some(record) = self.store.get_job(tenant, id).await? else {
                return Ok(());
            };
            if record.state.is_terminal() || Instant::now() >= deadline {
                return Ok(());
            }
            let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// API node: gives a committed job its queue entry. A failure is
    /// logged, not returned: the job is durable and acknowledged, and the
    /// reconciler enqueues it once Redis answers.
    pub(crate) async fn enqueue_remote(&self, job: &crate::jobs::Job) {
        self.metrics
            .jobs
            .with_label_values(&[job.kind.as_str(), job.source.as_str(), "queued"])
            .inc();
        match self.redis().enqueue(&job.id, job.priority).await {
            Ok(()) => self.set_queue_up(true),
            Err(e) => {
                self.set_queue_up(false);
                tracing::warn!(job = %job.id, error = %e, "stored; the reconciler will enqueue it");
            }
        }
    }

    /// API node: whether the shared queue has room for one more of
    /// `tenant`'s jobs (`queue_depth`, `max_queued_per_tenant`), counted
    /// over the jobs queued in the store by every API node. Two nodes may
    /// both admit the last place: the bound is exact to within the
    /// submissions in flight at once.
    pub(crate) async fn shared_room(
        &self,
        tenant: &str,
    ) -> Result<Result<(), crate::scheduler::Refused>, StorageError> {
        let (mine, all): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE tenant = $1), count(*) FROM jobs WHERE state = 'queued'",
        )
        .bind(tenant)
        .fetch_one(self.pg())
        .await?;
        let retry_after = Duration::from_secs(1);
        let limit = self.config.max_queued_per_tenant.min(self.config.queue_depth);
        Ok(if all as usize >= self.config.queue_depth {
            Err(crate::scheduler::Refused::QueueFull {
                depth: all as usize,
                retry_after,
            })
        } else if mine as usize >= limit {
            Err(crate::scheduler::Refused::TenantQueueFull {
                tenant: tenant.to_owned(),
                waiting: mine as usize,
                limit,
                retry_after,
            })
        } else {
            self.shared_token(tenant).await
        })
    }

    /// A token of `tenant`'s submission rate over every API node: a bucket
    /// in Redis. Without Redis the submission is still durable, so it is
    /// not refused for that (the node's own bucket still holds).
    async fn shared_token(&self, tenant: &str) -> Result<(), crate::scheduler::Refused> {
        match self
            .redis()
            .take_token(tenant, self.config.submit_rate, self.config.submit_burst)
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(crate::scheduler::Refused::RateLimited {
                tenant: tenant.to_owned(),
                rate: self.config.submit_rate,
                burst: self.config.submit_burst,
                retry_after: wait,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared submission bucket");
                Ok(())
            }
        }
    }

    /// API node: cancels a queued job in the store, or asks the worker
    /// running it to stop (it ends `cancelled` within a poll or two).
    pub(crate) async fn cancel_remote(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<JobRecord, crate::ServiceError> {
        if let Some(cancelled) = cancel_queued(self.pg(), tenant, id).await? {
            return Ok(cancelled);
        }
        let record = self.job(tenant, id).await?;
        match record.state {
            JobState::Running => {
                self.redis()
                    .request_cancel(id)
                    .await
                    .map_err(|e| crate::ServiceError::StoreUnavailable(format!("the queue: {e}")))?;
                Ok(record)
            }
            state if state.is_terminal() => Err(crate::ServiceError::Conflict(format!(
                "job {id} already ended {state}"
            ))),
            state => Err(crate::ServiceError::Conflict(format!(
                "job {id} is {state}; try again"
            ))),
        }
    }

    /// Workers listed by their heartbeats (API node).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, crate::ServiceError> {
        let Some(queue) = &self.queue else {
            return Ok(Vec::new());
        };
        queue
            .workers(now_ms())
            .await
            .map_err(|e| crate::ServiceError::StoreUnavailable(format!("the queue: {e}")))
    }

    /// API node: reads the workers' heartbeats every few seconds into the
    /// metrics (`palisade_workers`, `palisade_worker_heartbeat_age_seconds`).
    pub(crate) fn watch_workers(self: &Arc<Self>) {
        self.every(WORKERS_READ, |s| async move {
            s.read_workers().await;
            // Policies replaced or reverted through another API node.
            match s.registry.sync_replaced_policies().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(changed = n, "policies replaced elsewhere are in force here"),
                Err(e) => tracing::warn!(error = %e, "cannot read the replaced policies"),
            }
            // Emergency stops imposed or lifted through another API node
            // (palisade_emergency_stops).
            if let Err(e) = s.deployments.reload_stops().await {
                tracing::warn!(error = %e, "cannot read the emergency stops");
            }
        });
    }

    async fn read_workers(&self) {
        let now = now_ms();
        match self.redis().workers(now).await {
            Ok(workers) => {
                self.set_queue_up(true);
                for status in crate::metrics::WORKER_STATUSES {
                    let n = workers.iter().filter(|w| w.status == *status).count();
                    self.metrics.workers.with_label_values(&[status]).set(n as i64);
                }
                self.metrics.worker_heartbeat_age.reset();
                for w in &workers {
                    let age = (now - w.last_beat_ms).max(0) as f64 / 1000.0;
                    self.metrics
                        .worker_heartbeat_age
                        .with_label_values(&[&w.name_label()])
                        .set(age);
                }
            }
            Err(e) => {
                self.set_queue_up(false);
                tracing::warn!(error = %e, "cannot read the workers' heartbeats");
            }
        }
    }

    /// Runs `each` every `period` while the service lives and is not
    /// stopping (a missed tick is delayed, not caught up).
    pub(crate) fn every<F, Fut>(self: &Arc<Self>, period: Duration, each: F)
    where
        F: Fn(Arc<Service>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let s = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = s.upgrade() else { break };
                if s.is_stopped() {
                    break;
                }
                each(s).await;
            }
        });
    }

    fn set_queue_up(&self, up: bool) {
        self.queue_up.store(up, Ordering::Release);
        self.metrics.queue_up.set(i64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a real Postgres: sixteen claims of one tenant's queued jobs
    /// at once, from as many tasks over the pool's connections, with caps of
    /// 1 to 3: no more than the cap are ever running (without the per-tenant
    /// lock, two to three times the cap ran).
    #[test]
    fn claims_at_the_same_instant_keep_a_tenants_cap() {
        crate::storage::with_postgres(|pool, _tmp| async move {
            for (round, cap) in [1usize, 2, 3, 1, 2, 3, 1, 2].into_iter().enumerate() {
                let ids: Vec<String> = (0..16).map(|i| format!("j{round}-{i}")).collect();
                for (i, id) in ids.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO jobs (id, seq, tenant, kind, strategy, dataset, spec, priority, \
                         policy, policy_hash, state, created) \
                         VALUES ($1, $2, $3, 'backtest', 's', 'd', '{}', 'normal', 'default', 'h', 'queued', 0)",
                    )
                    .bind(id)
                    .bind((round * 100 + i) as i64)
                    .bind(format!("tenant-{round}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                }
                // All spawned before any is awaited.
                let claims: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let (pool, id) = (pool.clone(), id.clone());
                        tokio::spawn(async move { claim(&pool, &id, "w", 5, cap).await })
                    })
                    .collect();
                let mut ran = 0;
                for c in claims {
                    match c.await.unwrap().unwrap() {
                        Claimed::Run(_) => ran += 1,
                        Claimed::TenantBusy => {}
                        other => panic!("unexpected claim result: {other:?}"),
                    }
                }
                let running: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant = $1 AND state = 'running'")
                        .bind(format!("tenant-{round}"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!((ran, running), (cap, cap as i64), "cap {cap}");
            }
        });
    }
}
