//! The scheduler: admission, queues, fairness and the controls of running
//! jobs. It decides *which* job runs *when*; the service runs them on the
//! executor runtime and reports back.
//!
//! - **Admission** ([`Scheduler::reserve`]): a submission is refused with
//!   [`Refused::QueueFull`] when the three queues together hold
//!   `queue_depth` jobs (memory never grows without bound), or with
//!   [`Refused::RateLimited`] when its tenant's token bucket is empty (the
//!   bucket holds `submit_burst` tokens and refills at `submit_rate` per
//!   second; each submission takes one). Both carry how long to wait
//!   (`Retry-After`).
//!   A tenant may have at most `max_queued_per_tenant` jobs waiting
//!   ([`Refused::TenantQueueFull`]), so one tenant cannot fill the queue
//!   that every tenant shares.
//! - **Dispatch** ([`Scheduler::next`]): at most `max_running` jobs run at
//!   once, and at most `max_running_per_tenant` of one tenant; a job whose
//!   tenant is at its cap is skipped, not blocking the jobs behind it.
//!   Between tenants with waiting work, the next slot goes to the tenant
//!   with the fewest jobs running (at the same level, below): a tenant with
//!   many jobs queued ahead does not hold another's job back for more than
//!   one slot freeing.
//! - **Priority with aging.** Each queue is first-in first-out. A waiting job's
//!   level is its priority's (high 2, normal 1, low 0) plus one per
//!   `aging_ms` waited, at most 2. The next job is, among each tenant's
//!   oldest eligible job of each queue, the one with the highest level, then
//!   the fewest jobs of its tenant running, then the longest wait. So a low job waits behind
//!   newer high jobs for at most `2 × aging_ms`, after which it goes before
//!   every job that has waited less: low never starves.
//! - **Controls** ([`Control`]): each running job has a cancel flag (the
//!   sandbox's `RunConfig::cancel`, checked at every 1 ms epoch tick), a
//!   deadline (the policy's `deadline_per_run`) and its last progress.
//!   [`Scheduler::watchdog`] stops jobs past their deadline (`timed_out`)
//!   and jobs whose progress has not moved for `watchdog_stall_ms` (counted
//!   as watchdog kills).
//!
//! Every method takes the one lock briefly and never awaits while holding it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::jobs::{Job, Priority};

/// What the scheduler needs to know of a queued job.
pub trait Queued {
    fn id(&self) -> &str;
    fn tenant(&self) -> &str;
    fn priority(&self) -> Priority;
    /// When it entered its queue.
    fn enqueued(&self) -> Instant;
}

impl Queued for Job {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn priority(&self) -> Priority {
        self.priority
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}
use crate::metrics::Metrics;

/// How long a client should wait after a full queue.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(1);

/// The limits the scheduler enforces (from [`Config`]).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    pub queue_depth: usize,
    pub max_running: usize,
    pub max_running_per_tenant: usize,
    pub max_queued_per_tenant: usize,
    pub submit_rate: f64,
    pub submit_burst: u32,
    pub aging_ms: u64,
    pub watchdog_stall_ms: u64,
}

impl Limits {
    /// The limits of `c`, with `max_running_per_tenant` cut to one below
    /// `max_running` (when that is 2 or more): a tenant whose jobs never end
    /// must leave a slot to the others, or it could hold them back until
    /// its jobs' deadlines.
    pub fn from_config(c: &Config) -> Limits {
        let per_tenant = match c.max_running {
            0 | 1 => c.max_running_per_tenant,
            n => c.max_running_per_tenant.min(n - 1),
        };
        Limits {
            queue_depth: c.queue_depth,
            max_running: c.max_running,
            max_running_per_tenant: per_tenant,
            max_queued_per_tenant: c.max_queued_per_tenant,
            submit_rate: c.submit_rate,
            submit_burst: c.submit_burst,
            aging_ms: c.aging_ms,
            watchdog_stall_ms: c.watchdog_stall_ms,
        }
    }
}

/// Why a submission was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("the queue is full ({depth} jobs waiting)")]
    QueueFull { depth: usize, retry_after: Duration },
    #[error("tenant {tenant} is submitting faster than {rate} jobs per second (burst {burst})")]
    RateLimited {
        tenant: String,
        rate: f64,
        burst: u32,
        retry_after: Duration,
    },
    #[error(
        "tenant {tenant} has {waiting} jobs waiting, its share of the queue (max_queued_per_tenant = {limit})"
    )]
    TenantQueueFull {
        tenant: String,
        waiting: usize,
        limit: usize,
        retry_after: Duration,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Refused {
    /// Seconds to wait before retrying (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refused::QueueFull { retry_after, .. }
            | Refused::RateLimited { retry_after, .. }
            | Refused::TenantQueueFull { retry_after, .. } => {
                retry_after.as_secs_f64().ceil().max(1.0) as u64
            }
            Refused::ShuttingDown => 5,
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::QueueFull { .. } => "queue_full",
            Refused::TenantQueueFull { .. } => "tenant_queue_full",
            Refused::RateLimited { .. } => "rate_limited",
            Refused::ShuttingDown => "shutting_down",
        }
    }
}

/// Why a running job was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// `DELETE /v1/jobs/{id}`.
    Cancelled = 1,
    /// Past the policy's `deadline_per_run`.
    Deadline = 2,
    /// No progress for `watchdog_stall_ms`.
    Watchdog = 3,
    /// The server is shutting down: the job goes back to the queue.
    Shutdown = 4,
}

/// The controls of one running job.
#[derive(Debug)]
pub struct Control {
    pub id: String,
    pub tenant: String,
    /// Given to the sandbox; set to stop the run at the next epoch tick.
    pub cancel: Arc<AtomicBool>,
    reason: AtomicU8,
    pub started: Instant,
    pub deadline: Instant,
    progress_bits: AtomicU64,
    /// Milliseconds after `started` when progress last moved.
    moved_ms: AtomicU64,
}

impl Control {
    pub fn new(id: String, tenant: String, deadline: Duration) -> Control {
        let started = Instant::now();
        Control {
            id,
            tenant,
            cancel: Arc::new(AtomicBool::new(false)),
            reason: AtomicU8::new(0),
            started,
            deadline: started + deadline,
            progress_bits: AtomicU64::new(0f64.to_bits()),
            moved_ms: AtomicU64::new(0),
        }
    }

    /// Tells the run to stop; the first reason given is kept. True when this
    /// call was the first.
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.cancel.store(true, Ordering::Release);
        first
    }

    /// Why the run was told to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::Deadline),
            3 => Some(StopReason::Watchdog),
            4 => Some(StopReason::Shutdown),
            _ => None,
        }
    }

    /// Records progress (0 to 1); a change resets the watchdog.
    pub fn set_progress(&self, p: f64) {
        self.set_progress_at(p, Instant::now());
    }

    fn set_progress_at(&self, p: f64, now: Instant) {
        let old = f64::from_bits(self.progress_bits.swap(p.to_bits(), Ordering::AcqRel));
        if p != old {
            let since = now.saturating_duration_since(self.started).as_millis() as u64;
            self.moved_ms.store(since, Ordering::Release);
        }
    }

    pub fn progress(&self) -> f64 {
        f64::from_bits(self.progress_bits.load(Ordering::Acquire))
    }

    /// How long since progress last moved (or the job started).
    pub fn stalled_for(&self, now: Instant) -> Duration {
        let moved = self.started + Duration::from_millis(self.moved_ms.load(Ordering::Acquire));
        now.saturating_duration_since(moved)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

struct Inner<J> {
    queues: [VecDeque<J>; 3],
    /// Admitted, being written, not yet in a queue.
    reserved: usize,
    running: HashMap<String, Arc<Control>>,
    per_tenant: HashMap<String, usize>,
    /// Jobs of each tenant reserved or queued (tenants with none absent).
    waiting: HashMap<String, usize>,
    buckets: HashMap<String, Bucket>,
    admitting: bool,
    dispatching: bool,
}

impl<J> Inner<J> {
    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    fn add_waiting(&mut self, tenant: &str) {
        *self.waiting.entry(tenant.to_owned()).or_insert(0) += 1;
    }

    fn remove_waiting(&mut self, tenant: &str) {
        if let Some(n) = self.waiting.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(tenant);
            }
        }
    }
}

/// A place in the queue, held while the job's record is written.
#[derive(Debug)]
#[must_use = "a reservation must be enqueued or released"]
pub struct Reservation(String);

/// The outcome of [`Scheduler::cancel`].
#[derive(Debug)]
pub enum Cancel<J = Job> {
    /// The job was waiting; it is out of the queue.
    Dequeued(Box<J>),
    /// The job is running; it stops at the next epoch tick.
    Signalled,
    /// Not queued or running (finished, unknown, or another tenant's).
    NotLive,
}

/// Queue depths, running jobs and limits, for `/v1/status`.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub queued: HashMap<&'static str, usize>,
    pub running: usize,
    pub running_by_tenant: HashMap<String, usize>,
    pub admitting: bool,
    pub limits: Limits,
}

/// See the module docs.
pub struct Scheduler<J = Job> {
    inner: Mutex<Inner<J>>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl<J> std::fmt::Debug for Scheduler<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<J: Queued> Scheduler<J> {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Scheduler<J> {
        metrics.queue_capacity.set(limits.queue_depth as i64);
        metrics.executor_job_slots.set(limits.max_running as i64);
        Scheduler {
            inner: Mutex::new(Inner {
                queues: Default::default(),
                reserved: 0,
                running: HashMap::new(),
                per_tenant: HashMap::new(),
                waiting: HashMap::new(),
                buckets: HashMap::new(),
                admitting: true,
                dispatching: true,
            }),
            limits,
            metrics,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<J>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_depths(&self, inner: &Inner<J>) {
        for &p in Priority::ALL {
            self.metrics
                .queue_depth
                .with_label_values(&[p.as_str()])
                .set(inner.queues[p.index()].len() as i64);
        }
        self.metrics.running_jobs.set(inner.running.len() as i64);
    }

    /// Admits a submission of `tenant`: a place in the queue and a token of
    /// its bucket. The queue is checked first, so a full queue costs no token.
    pub fn reserve(&self, tenant: &str) -> Result<Reservation, Refused> {
        self.reserve_at(tenant, Instant::now())
    }

    fn reserve_at(&self, tenant: &str, now: Instant) -> Result<Reservation, Refused> {
        let mut inner = self.lock();
        if !inner.admitting {
            return Err(Refused::ShuttingDown);
        }
        let depth = inner.queued() + inner.reserved;
        if depth >= self.limits.queue_depth {
            return Err(Refused::QueueFull {
                depth,
                retry_after: QUEUE_FULL_RETRY,
            });
        }
        let waiting = inner.waiting.get(tenant).copied().unwrap_or(0);
        if waiting >= self.limits.max_queued_per_tenant {
            return Err(Refused::TenantQueueFull {
                tenant: tenant.to_owned(),
                waiting,
                limit: self.limits.max_queued_per_tenant,
                retry_after: QUEUE_FULL_RETRY,
            });
        }
        let burst = f64::from(self.limits.submit_burst);
        let bucket = inner.buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket
            .take(self.limits.submit_rate, burst, now)
            .map_err(|retry_after| Refused::RateLimited {
                tenant: tenant.to_owned(),
                rate: self.limits.submit_rate,
                burst: self.limits.submit_burst,
                retry_after,
            })?;
        inner.reserved += 1;
        inner.add_waiting(tenant);
        Ok(Reservation(tenant.to_owned()))
    }

    /// Gives back a place that will not be used.
    pub fn release(&self, r: Reservation) {
        let Reservation(tenant) = r;
        let mut inner = self.lock();
        inner.reserved = inner.reserved.saturating_sub(1);
        inner.remove_waiting(&tenant);
    }

    /// Puts an admitted job in its queue.
    pub fn enqueue(&self, r: Reservation, job: J) {
        let Reservation(_) = r;
        let mut inner = self.lock();
        inner.reserved = inner.reserved.saturating_sub(1);
        inner.queues[job.priority().index()].push_back(job);
        self.publish_depths(&inner);
    }

    /// Puts a job in its queue without admission (start-up recovery: these
    /// jobs were admitted before the restart, and may exceed the depth).
    pub fn restore(&self, job: J) {
        let mut inner = self.lock();
        inner.add_waiting(job.tenant());
        inner.queues[job.priority().index()].push_back(job);
        self.publish_depths(&inner);
    }

    /// Takes the jobs that may start now (see the module docs for the
    /// order), registering a [`Control`] for each; `deadline` gives a job's
    /// run deadline.
    pub fn next(&self, deadline: impl Fn(&J) -> Duration) -> Vec<(J, Arc<Control>)> {
        self.next_at(Instant::now(), deadline)
    }

    fn next_at(&self, now: Instant, deadline: impl Fn(&J) -> Duration) -> Vec<(J, Arc<Control>)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        while inner.dispatching && inner.running.len() < self.limits.max_running {
            let Some((q, i)) = self.pick(&inner, now) else {
                break;
            };
            let job = inner.queues[q].remove(i).expect("picked index exists");
            inner.remove_waiting(job.tenant());
            let control = Arc::new(Control::new(
                job.id().to_owned(),
                job.tenant().to_owned(),
                deadline(&job),
            ));
            inner.running.insert(job.id().to_owned(), control.clone());
            *inner.per_tenant.entry(job.tenant().to_owned()).or_insert(0) += 1;
            out.push((job, control));
        }
        if !out.is_empty() {
            self.publish_depths(&inner);
        }
        out
    }

    /// The queue and index of the next job: among each tenant's oldest job
    /// of each queue whose tenant is under its cap, the highest aged level,
    /// then the fewest jobs of its tenant running, then the longest wait.
    fn pick(&self, inner: &Inner<J>, now: Instant) -> Option<(usize, usize)> {
        let aging = self.limits.aging_ms.max(1) as u128;
        let running = |tenant: &str| inner.per_tenant.get(tenant).copied().unwrap_or(0);
        // (level, tenant's running jobs, enqueued, queue, index)
        let mut best: Option<(u64, usize, Instant, usize, usize)> = None;
        for (q, queue) in inner.queues.iter().enumerate() {
            let mut seen: Vec<&str> = Vec::new();
            for (i, job) in queue.iter().enumerate() {
                let tenant = job.tenant();
                if seen.contains(&tenant) {
                    continue;
                }
                seen.push(tenant);
                let busy = running(tenant);
                if busy >= self.limits.max_running_per_tenant {
                    continue;
                }
                let waited = now.saturating_duration_since(job.enqueued()).as_millis();
                let level = (job.priority().level() + (waited / aging).min(2) as u64).min(2);
                let better = match best {
                    None => true,
                    Some((l, b, at, _, _)) => {
                        level > l || (level == l && (busy < b || (busy == b && job.enqueued() < at)))
                    }
                };
                if better {
                    best = Some((level, busy, job.enqueued(), q, i));
                }
            }
        }
        best.map(|(_, _, _, q, i)| (q, i))
    }

    /// A running job ended: frees its slot.
    pub fn done(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(c) = inner.running.remove(id) {
            if let Some(n) = inner.per_tenant.get_mut(&c.tenant) {
                *n -= 1;
                if *n == 0 {
                    inner.per_tenant.remove(&c.tenant);
                }
            }
        }
        self.publish_depths(&inner);
    }

    /// Cancels a tenant's queued or running job.
    pub fn cancel(&self, tenant: &str, id: &str) -> Cancel<J> {
        let mut inner = self.lock();
        if let Some(c) = inner.running.get(id).filter(|c| c.tenant == tenant) {
            c.stop(StopReason::Cancelled);
            return Cancel::Signalled;
        }
        for q in 0..inner.queues.len() {
            if let Some(i) = inner.queues[q]
                .iter()
                .position(|j| j.id() == id && j.tenant() == tenant)
            {
                let job = inner.queues[q].remove(i).expect("found index exists");
                inner.remove_waiting(job.tenant());
                self.publish_depths(&inner);
                return Cancel::Dequeued(Box::new(job));
            }
        }
        Cancel::NotLive
    }

    /// The control of a running job.
    pub fn control(&self, id: &str) -> Option<Arc<Control>> {
        self.lock().running.get(id).cloned()
    }

    /// Stops jobs past their deadline and jobs without progress for
    /// `watchdog_stall_ms`; returns the jobs stopped now and why.
    pub fn watchdog(&self, now: Instant) -> Vec<(String, StopReason)> {
        let stall = Duration::from_millis(self.limits.watchdog_stall_ms);
        let inner = self.lock();
        let mut stopped = Vec::new();
        for c in inner.running.values() {
            if c.reason().is_some() {
                continue;
            }
            let reason = if now >= c.deadline {
                StopReason::Deadline
            } else if c.stalled_for(now) >= stall {
                StopReason::Watchdog
            } else {
                continue;
            };
            if c.stop(reason) {
                if reason == StopReason::Watchdog {
                    self.metrics.watchdog_kills.inc();
                }
                stopped.push((c.id.clone(), reason));
            }
        }
        stopped
    }

    /// Refuses new submissions from now on.
    pub fn stop_admitting(&self) {
        self.lock().admitting = false;
    }

    /// Starts no more jobs from now on (queued jobs stay queued).
    pub fn stop_dispatching(&self) {
        self.lock().dispatching = false;
    }

    /// Tells every running job to stop for `reason`; returns how many.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let inner = self.lock();
        for c in inner.running.values() {
            c.stop(reason);
        }
        inner.running.len()
    }

    /// The controls of every running job.
    pub fn controls(&self) -> Vec<Arc<Control>> {
        self.lock().running.values().cloned().collect()
    }

    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Publishes what only the clock changes: how long the oldest job of
    /// each queue has waited, and the longest any running job has gone
    /// without progress (for a scrape; 0 when there is none).
    pub fn publish_waits(&self, now: Instant) {
        let inner = self.lock();
        for &p in Priority::ALL {
            let oldest = inner.queues[p.index()].iter().map(Queued::enqueued).min();
            let waited = oldest.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            self.metrics
                .queue_oldest_age
                .with_label_values(&[p.as_str()])
                .set(waited.as_secs_f64());
        }
        let stall = inner.running.values().map(|c| c.stalled_for(now)).max();
        self.metrics
            .running_max_stall
            .set(stall.unwrap_or(Duration::ZERO).as_secs_f64());
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            queued: Priority::ALL
                .iter()
                .map(|p| (p.as_str(), inner.queues[p.index()].len()))
                .collect(),
            running: inner.running.len(),
            running_by_tenant: inner.per_tenant.clone(),
            admitting: inner.admitting,
            limits: self.limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            queue_depth: 4,
            max_running: 2,
            max_running_per_tenant: 1,
            max_queued_per_tenant: 100,
            submit_rate: 1.0,
            submit_burst: 3,
            aging_ms: 1_000,
            watchdog_stall_ms: 5_000,
        }
    }

    struct J {
        id: String,
        tenant: &'static str,
        priority: Priority,
        enqueued: Instant,
    }

    impl Queued for J {
        fn id(&self) -> &str {
            &self.id
        }
        fn tenant(&self) -> &str {
            self.tenant
        }
        fn priority(&self) -> Priority {
            self.priority
        }
        fn enqueued(&self) -> Instant {
            self.enqueued
        }
    }

    fn scheduler(l: Limits) -> Scheduler<J> {
        Scheduler::new(l, Arc::new(Metrics::new(10)))
    }

    /// Enqueues jobs `(id, tenant, priority, enqueued at t0 + ms)`.
    fn fill(s: &Scheduler<J>, t0: Instant, jobs: &[(&str, &'static str, Priority, u64)]) {
        for &(id, tenant, priority, ms) in jobs {
            s.restore(J {
                id: id.to_owned(),
                tenant,
                priority,
                enqueued: t0 + Duration::from_millis(ms),
            });
        }
    }

    fn ids(v: Vec<(J, Arc<Control>)>) -> Vec<String> {
        v.into_iter().map(|(j, _)| j.id).collect()
    }

    #[test]
    fn a_tenant_always_leaves_a_running_slot_to_the_others() {
        let limits = |max_running, per_tenant| {
            Limits::from_config(&Config {
                max_running,
                max_running_per_tenant: per_tenant,
                ..Config::default()
            })
            .max_running_per_tenant
        };
        assert_eq!(limits(10, 8), 8);
        assert_eq!(limits(10, 9), 9);
        assert_eq!(limits(10, 10), 9);
        assert_eq!(limits(4, 8), 3);
        assert_eq!(limits(2, 5), 1);
        // One slot in all: nothing to leave.
        assert_eq!(limits(1, 8), 8);
    }

    #[test]
    fn priority_then_age_then_tenant_caps() {
        let l = Limits {
            queue_depth: 100,
            max_running: 1,
            max_running_per_tenant: 1,
            ..limits()
        };
        let s = scheduler(l);
        let t0 = Instant::now();
        fill(
            &s,
            t0,
            &[
                ("low", "a", Priority::Low, 0),
                ("normal", "a", Priority::Normal, 10),
                ("high1", "a", Priority::High, 20),
                ("high2", "b", Priority::High, 30),
            ],
        );
        let day = |_: &J| Duration::from_secs(86_400);
        // Fresh: high before normal before low, each queue FIFO.
        let at = t0 + Duration::from_millis(40);
        assert_eq!(ids(s.next_at(at, day)), ["high1"]);
        assert!(s.next_at(at, day).is_empty(), "global cap of 1");
        s.done("high1");
        // 2.5 aging periods later every job is at level 2: the oldest goes first.
        let at = t0 + Duration::from_millis(2_500);
        assert_eq!(ids(s.next_at(at, day)), ["low"]);
        s.done("low");
        assert_eq!(ids(s.next_at(at, day)), ["normal"]);
        s.done("normal");
        assert_eq!(ids(s.next_at(at, day)), ["high2"]);
        s.done("high2");
    }

    #[test]
    fn a_tenant_with_many_jobs_ahead_holds_another_back_one_slot_at_most() {
        let s = scheduler(Limits {
            queue_depth: 100,
            max_running: 4,
            max_running_per_tenant: 3,
            ..limits()
        });
        let t0 = Instant::now();
        // Tenant a queued ten jobs (say, endless loops) before b's one.
        let many: Vec<(String, &'static str, Priority, u64)> = (0..10)
            .map(|i| (format!("a{i}"), "a", Priority::Normal, i))
            .collect();
        let many: Vec<(&str, &'static str, Priority, u64)> = many
            .iter()
            .map(|(id, t, p, ms)| (id.as_str(), *t, *p, *ms))
            .collect();
        fill(&s, t0, &many);
        let day = |_: &J| Duration::from_secs(86_400);
        let at = t0 + Duration::from_millis(20);
        assert_eq!(ids(s.next_at(at, day)), ["a0", "a1", "a2"], "a at its cap");
        fill(
            &s,
            t0,
            &[
                ("b0", "b", Priority::Normal, 15),
                ("b1", "b", Priority::Normal, 16),
            ],
        );
        // The free slot goes to b although a's jobs are older.
        assert_eq!(ids(s.next_at(at, day)), ["b0"]);
        // One of a's ends: b (1 running) and a (2 running) both wait; b
        // has fewer running, so goes first again.
        s.done("a0");
        assert_eq!(ids(s.next_at(at, day)), ["b1"]);
        s.done("b0");
        assert_eq!(ids(s.next_at(at, day)), ["a3"]);
    }

    #[test]
    fn a_tenant_cannot_fill_the_shared_queue() {
        let s = scheduler(Limits {
            queue_depth: 10,
            max_queued_per_tenant: 3,
            submit_burst: 100,
            ..limits()
        });
        let mut held: Vec<Reservation> = (0..3)
            .map(|_| s.reserve("a").expect("within a's share"))
            .collect();
        match s.reserve("a") {
            Err(e @ Refused::TenantQueueFull { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "tenant a has 3 jobs waiting, its share of the queue (max_queued_per_tenant = 3)"
                );
                assert_eq!(e.reason(), "tenant_queue_full");
            }
            other => panic!("{other:?}"),
        }
        // Another tenant still gets in.
        let b = s.reserve("b").expect("b has its own share");
        // A refused write gives the place back; a job that starts frees it.
        s.release(held.pop().unwrap());
        let again = s.reserve("a").expect("room again");
        s.enqueue(
            again,
            J {
                id: "a-job".into(),
                tenant: "a",
                priority: Priority::Normal,
                enqueued: Instant::now(),
            },
        );
        assert!(matches!(s.reserve("a"), Err(Refused::TenantQueueFull { .. })));
        let day = |_: &J| Duration::from_secs(86_400);
        assert_eq!(ids(s.next(day)), ["a-job"]);
        let last = s.reserve("a").expect("the started job left the queue");
        for r in held.into_iter().chain([b, last]) {
            s.release(r);
        }
        assert!(s.lock().waiting.is_empty());
    }

    #[test]
    fn a_tenant_at_its_cap_does_not_block_others() {
        let s = scheduler(Limits {
            queue_depth: 100,
            max_running: 3,
            max_running_per_tenant: 1,
            ..limits()
        });
        let t0 = Instant::now();
        fill(
            &s,
            t0,
            &[
                ("a1", "a", Priority::High, 0),
                ("a2", "a", Priority::High, 1),
                ("b1", "b", Priority::Low, 2),
            ],
        );
        let day = |_: &J| Duration::from_secs(86_400);
        let at = t0 + Duration::from_millis(10);
        assert_eq!(ids(s.next_at(at, day)), ["a1", "b1"]);
        assert_eq!(s.snapshot().running_by_tenant.get("a"), Some(&1));
        s.done("a1");
        assert_eq!(ids(s.next_at(at, day)), ["a2"]);
    }

    #[test]
    fn cancel_dequeues_or_signals_and_watchdog_stops_late_and_stalled_jobs() {
        let s = scheduler(Limits {
            max_running: 2,
            max_running_per_tenant: 2,
            ..limits()
        });
        let t0 = Instant::now();
        fill(
            &s,
            t0,
            &[
                ("run", "a", Priority::Normal, 0),
                ("late", "a", Priority::Normal, 1),
                ("wait", "a", Priority::Low, 2),
            ],
        );
        let started = s.next_at(t0, |j| {
            if j.id == "late" {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(3_600)
            }
        });
        let controls: HashMap<String, Arc<Control>> = started.into_iter().map(|(j, c)| (j.id, c)).collect();
        assert!(
            matches!(s.cancel("b", "wait"), Cancel::NotLive),
            "another tenant's job"
        );
        assert!(matches!(s.cancel("a", "wait"), Cancel::Dequeued(j) if j.id == "wait"));
        // Past "late"'s deadline, before anyone stalls.
        let now = Instant::now() + Duration::from_millis(10);
        assert_eq!(s.watchdog(now), vec![("late".to_string(), StopReason::Deadline)]);
        assert!(controls["late"].cancel.load(Ordering::Acquire));
        // Long after: "run" never moved.
        let now = Instant::now() + Duration::from_secs(6);
        assert_eq!(s.watchdog(now), vec![("run".to_string(), StopReason::Watchdog)]);
        assert_eq!(s.metrics.watchdog_kills.get(), 1);
        assert!(matches!(s.cancel("a", "run"), Cancel::Signalled));
        assert_eq!(
            controls["run"].reason(),
            Some(StopReason::Watchdog),
            "the first reason stays"
        );
    }

    #[test]
    fn buckets_refill_at_the_rate() {
        let mut b = Bucket {
            tokens: 2.0,
            at: Instant::now(),
        };
        let t0 = b.at;
        assert!(b.take(2.0, 2.0, t0).is_ok());
        assert!(b.take(2.0, 2.0, t0).is_ok());
        assert_eq!(b.take(2.0, 2.0, t0), Err(Duration::from_millis(500)));
        assert!(b.take(2.0, 2.0, t0 + Duration::from_millis(500)).is_ok());
        // Never more than the burst.
        assert!(b.take(2.0, 2.0, t0 + Duration::from_secs(100)).is_ok());
        assert!(b.take(2.0, 2.0, t0 + Duration::from_secs(100)).is_ok());
        assert!(b.take(2.0, 2.0, t0 + Duration::from_secs(100)).is_err());
    }

    #[test]
    fn admission_refuses_when_full_or_throttled() {
        let s = scheduler(limits());
        let now = Instant::now();
        let a: Vec<_> = (0..3).map(|_| s.reserve_at("a", now).unwrap()).collect();
        match s.reserve_at("a", now) {
            Err(e @ Refused::RateLimited { .. }) => assert_eq!(e.retry_after_secs(), 1),
            other => panic!("{other:?}"),
        }
        let b = s.reserve_at("b", now).unwrap();
        match s.reserve_at("c", now) {
            Err(Refused::QueueFull { depth: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
        for r in a {
            s.release(r);
        }
        s.release(b);
        assert!(s.reserve_at("c", now).is_ok());
        s.stop_admitting();
        assert_eq!(s.reserve_at("d", now).unwrap_err(), Refused::ShuttingDown);
    }

    #[test]
    fn controls_keep_the_first_reason_and_track_progress() {
        let c = Control::new("j".into(), "t".into(), Duration::from_secs(1));
        assert!(c.stop(StopReason::Cancelled));
        assert!(!c.stop(StopReason::Deadline));
        assert_eq!(c.reason(), Some(StopReason::Cancelled));
        assert!(c.cancel.load(Ordering::Acquire));
        let later = c.started + Duration::from_secs(10);
        assert_eq!(c.stalled_for(later), Duration::from_secs(10));
        c.set_progress_at(0.5, c.started + Duration::from_secs(4));
        assert_eq!(c.stalled_for(later), Duration::from_secs(6));
        // The same value again is no progress.
        c.set_progress_at(0.5, c.started + Duration::from_secs(8));
        assert_eq!(c.stalled_for(later), Duration::from_secs(6));
        assert_eq!(c.progress(), 0.5);
    }

    #[test]
    fn waits_are_published_for_a_scrape() {
        let s = scheduler(Limits {
            max_running: 1,
            aging_ms: 1_000_000,
            ..limits()
        });
        assert_eq!(s.metrics.queue_capacity.get(), 4);
        assert_eq!(s.metrics.executor_job_slots.get(), 1);
        let age = |p: &str| s.metrics.queue_oldest_age.with_label_values(&[p]).get();
        let t0 = Instant::now();
        s.publish_waits(t0);
        assert_eq!(
            (age("low"), s.metrics.running_max_stall.get()),
            (0.0, 0.0),
            "empty"
        );
        fill(
            &s,
            t0,
            &[
                ("low1", "b", Priority::Low, 1_000),
                ("low2", "b", Priority::Low, 2_000),
                ("high", "b", Priority::High, 3_000),
            ],
        );
        // `high` starts at 3 s; the oldest of the rest is low1, queued at 1 s.
        let started = s.next_at(t0 + Duration::from_millis(3_000), |_| Duration::from_secs(60));
        assert_eq!(ids(started), ["high"], "high goes first");
        s.publish_waits(t0 + Duration::from_millis(5_000));
        assert_eq!((age("high"), age("normal"), age("low")), (0.0, 0.0, 4.0));
        // The running job started just after t0 (its control reads the
        // clock) and has not moved since.
        let stall = s.metrics.running_max_stall.get();
        assert!(stall > 4.0 && stall <= 5.0, "{stall}");
        s.done("high");
        s.publish_waits(t0 + Duration::from_millis(6_000));
        assert_eq!(s.metrics.running_max_stall.get(), 0.0, "none runs");
        assert_eq!(age("low"), 5.0);
    }

    #[test]
    fn every_refusal_reason_is_a_preset_metric_label() {
        let wait = Duration::from_secs(1);
        for refused in [
            Refused::QueueFull {
                depth: 1,
                retry_after: wait,
            },
            Refused::TenantQueueFull {
                tenant: "t".into(),
                waiting: 1,
                limit: 1,
                retry_after: wait,
            },
            Refused::RateLimited {
                tenant: "t".into(),
                rate: 1.0,
                burst: 1,
                retry_after: wait,
            },
            Refused::ShuttingDown,
        ] {
            assert!(
                crate::metrics::REFUSALS.contains(&refused.reason()),
                "{}",
                refused.reason()
            );
        }
    }
}
