//! Prometheus metrics of the service, named per Prometheus conventions (base
//! units, `_total` for counters, `_seconds` and `_bytes` suffixes), served as
//! text at `/metrics`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `palisade_queue_depth` | `priority` | jobs waiting, per queue |
//! | `palisade_queue_capacity` | | jobs the queues may hold together (`queue_depth`) |
//! | `palisade_queue_oldest_age_seconds` | `priority` | how long the oldest job of each queue has waited (0 when empty; measured at scrape) |
//! | `palisade_jobs_total` | `kind`, `source`, `status` | jobs entering each state; `source` is `api` (submitted) or `restart` (re-queued by recovery) |
//! | `palisade_running_jobs` | | jobs running now |
//! | `palisade_running_instances` | | wasm instances that running jobs may have alive (1 per backtest, the parallelism of a study) |
//! | `palisade_running_job_max_stall_seconds` | | the longest any running job has gone without progress (0 when none runs; measured at scrape) |
//! | `palisade_executor_job_slots` | | jobs that may run at once (`max_running`) |
//! | `palisade_executor_instance_slots` | | wasm instances that may be alive at once (`max_instances`) |
//! | `palisade_executor_threads` | | threads of the executor runtime |
//! | `palisade_executor_heartbeat_timestamp_seconds` | | Unix time of the executor's last heartbeat (a task on the executor runtime beats every second) |
//! | `palisade_ready` | | 1 when `/readyz` would answer 200 without probing: recovery done, not shutting down, last write batch committed |
//! | `palisade_store_write_errors_total` | | write batches that failed (none of their writes is acknowledged) |
//! | `palisade_step_duration_seconds` | `step` | `validate`, `compile`, `load` (a precompiled module from `compiled/`), `instantiate` (probe at upload), `run`, `store` (one write batch), `heartbeat` (a worker's heartbeat with its reaping and reconciling) |
//! | `palisade_strategy_fuel_consumed_total` | `strategy` | fuel burnt by a strategy's runs |
//! | `palisade_strategy_cpu_seconds_total` | `strategy` | executor time spent in a strategy's jobs (measured around each poll of the job) |
//! | `palisade_strategy_memory_peak_bytes` | `strategy` | largest linear memory any run of the strategy reached |
//! | `palisade_strategy_traps_total` | `strategy`, `cause` | runs that ended with a classified failure |
//! | `palisade_throttled_submissions_total` | `strategy`, `reason` | submissions refused: `queue_full`, `tenant_queue_full`, `rate_limited` (429), `shutting_down` (503) |
//! | `palisade_watchdog_kills_total` | | jobs the watchdog cancelled for lack of progress |
//! | `palisade_http_request_duration_seconds` | `method`, `route`, `status` | requests served |
//! | `palisade_connections_refused_total` | | connections closed on arrival: over `max_connections` or `max_connections_per_client` |
//! | `palisade_queue_up` | | distributed mode: 1 while the last call to Redis succeeded |
//! | `palisade_workers` | `status` | API node: workers listed by their heartbeats, per status (`idle`, `busy`, `draining`, `down`), read every few seconds |
//! | `palisade_worker_heartbeat_age_seconds` | `worker` | API node: age of each listed worker's last heartbeat |
//! | `palisade_worker_heartbeats_total` | | worker: heartbeats written |
//! | `palisade_reclaimed_jobs_total` | | worker: jobs it took back from dead workers (re-queued, or failed after `max_attempts`) |
//! | `palisade_requeued_lost_jobs_total` | | worker: queued jobs whose Redis entry was lost, given a new one |
//! | `palisade_deployment_takeovers_total` | | worker: live deployments it took over (their lease expired or was let go) |
//! | `palisade_deployment_leases_lost_total` | | worker: live deployments it stopped because their lease was another worker's, or could not be renewed in time |
//! | `palisade_deployment_ship_failures_total` | | worker: shipments of deployments' files to the shared store that failed (retried) |
//! | `process_*` | | the process's CPU seconds, resident memory, open files (Linux) |
//!
//! **Cardinality.** `strategy` is the manifest name; only the first
//! [`crate::config::DEFAULT_STRATEGY_LABELS`] (configurable as
//! `strategy_labels`) distinct names seen since start get their own label,
//! every later one is counted as `other`, so a tenant uploading thousands of
//! strategies cannot blow up the series count. `route` is the route template
//! (`/v1/jobs/{id}`), never the raw path. Every other label takes its values
//! from a closed set (priorities, kinds, states, steps, causes).
//!
//! **Series that exist from the start.** A counter whose series appears only
//! at its first increment cannot be seen to increase by `rate()` or
//! `increase()` (its first sample is already 1), so alerts would miss the
//! first event. So the series an alert or a dashboard reads are created at
//! zero: every step's histogram and every priority's queue gauges at start,
//! [`Metrics::preset_jobs`] for the job counters, and a strategy's fuel, CPU,
//! memory, [`LIMIT_CAUSES`] trap and [`REFUSALS`] series when its label is
//! first handed out.
//!
//! This module does not read the clock or the scheduler: the values measured
//! at scrape time are set by the scheduler and the service before
//! [`Metrics::render`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use palisade_run::Cause;
use prometheus::{
    exponential_buckets, CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label shared by strategies past the cap.
pub const OTHER: &str = "other";

/// Longest strategy label kept; longer names are cut.
const MAX_LABEL_CHARS: usize = 64;

/// Every value of the `step` label of `palisade_step_duration_seconds`.
/// Statuses of workers in `palisade_workers`.
pub const WORKER_STATUSES: &[&str] = &["idle", "busy", "draining", "down"];

pub const STEPS: &[&str] = &[
    "validate",
    "compile",
    "load",
    "instantiate",
    "run",
    "store",
    "heartbeat",
];

/// The causes that mean a strategy reached a limit of its policy; their
/// trap series exist from a strategy's first job, so an alert sees the first.
pub const LIMIT_CAUSES: &[Cause] = &[
    Cause::FuelExhausted,
    Cause::MemoryLimit,
    Cause::Deadline,
    Cause::StackOverflow,
    Cause::OutputLimit,
];

/// Every value of the `reason` label of
/// `palisade_throttled_submissions_total` (the scheduler's refusals).
pub const REFUSALS: &[&str] = &["queue_full", "tenant_queue_full", "rate_limited", "shutting_down"];

/// The priorities, as the `priority` label spells them.
const PRIORITIES: &[&str] = &["high", "normal", "low"];

/// Every metric of the service, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGaugeVec,
    pub queue_capacity: IntGauge,
    pub queue_oldest_age: GaugeVec,
    pub jobs: IntCounterVec,
    pub running_jobs: IntGauge,
    pub running_instances: IntGauge,
    pub running_max_stall: Gauge,
    pub executor_job_slots: IntGauge,
    pub executor_instance_slots: IntGauge,
    pub executor_threads: IntGauge,
    pub executor_heartbeat: Gauge,
    pub ready: IntGauge,
    pub store_write_errors: IntCounter,
    pub step_seconds: HistogramVec,
    pub fuel: IntCounterVec,
    pub cpu_seconds: CounterVec,
    pub memory_peak: IntGaugeVec,
    pub traps: IntCounterVec,
    pub throttled: IntCounterVec,
    pub watchdog_kills: IntCounter,
    pub http_seconds: HistogramVec,
    pub connections_refused: IntCounter,
    pub queue_up: IntGauge,
    pub workers: IntGaugeVec,
    pub worker_heartbeat_age: GaugeVec,
    pub worker_heartbeats: IntCounter,
    pub reclaimed: IntCounter,
    pub requeued_lost: IntCounter,
    pub takeovers: IntCounter,
    pub leases_lost: IntCounter,
    pub ship_failures: IntCounter,
    labels: Mutex<HashSet<String>>,
    label_cap: usize,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("label_cap", &self.label_cap)
            .finish_non_exhaustive()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are static and valid")
}

impl Metrics {
    /// Creates and registers every metric; `label_cap` strategies get their
    /// own label.
    pub fn new(label_cap: usize) -> Metrics {
        let registry = Registry::new();
        let steps = exponential_buckets(0.000_01, 4.0, 12).expect("valid buckets");
        let queue_depth = must(IntGaugeVec::new(
            Opts::new("palisade_queue_depth", "Jobs waiting, per priority queue"),
            &["priority"],
        ));
        let jobs = must(IntCounterVec::new(
            Opts::new(
                "palisade_jobs_total",
                "Jobs entering each state, by kind and source",
            ),
            &["kind", "source", "status"],
        ));
        let running_jobs = must(IntGauge::new("palisade_running_jobs", "Jobs running now"));
        let running_instances = must(IntGauge::new(
            "palisade_running_instances",
            "wasm instances running jobs may have alive",
        ));
        let queue_capacity = must(IntGauge::new(
            "palisade_queue_capacity",
            "Jobs the queues may hold together (queue_depth)",
        ));
        let queue_oldest_age = must(GaugeVec::new(
            Opts::new(
                "palisade_queue_oldest_age_seconds",
                "How long the oldest job of each queue has waited, 0 when empty",
            ),
            &["priority"],
        ));
        let running_max_stall = must(Gauge::new(
            "palisade_running_job_max_stall_seconds",
            "The longest any running job has gone without progress, 0 when none runs",
        ));
        let executor_job_slots = must(IntGauge::new(
            "palisade_executor_job_slots",
            "Jobs that may run at once (max_running)",
        ));
        let executor_instance_slots = must(IntGauge::new(
            "palisade_executor_instance_slots",
            "wasm instances that may be alive at once (max_instances)",
        ));
        let executor_threads = must(IntGauge::new(
            "palisade_executor_threads",
            "Threads of the executor runtime",
        ));
        let executor_heartbeat = must(Gauge::new(
            "palisade_executor_heartbeat_timestamp_seconds",
            "Unix time of the executor runtime's last heartbeat",
        ));
        let ready = must(IntGauge::new(
            "palisade_ready",
            "1 when ready: recovery done, not shutting down, last write batch committed",
        ));
        let store_write_errors = must(IntCounter::new(
            "palisade_store_write_errors_total",
            "Write batches that failed",
        ));
        let queue_up = must(IntGauge::new(
            "palisade_queue_up",
            "Distributed mode: 1 while the last call to Redis succeeded",
        ));
        let workers = must(IntGaugeVec::new(
            Opts::new(
                "palisade_workers",
                "Workers listed by their heartbeats, per status",
            ),
            &["status"],
        ));
        let worker_heartbeat_age = must(GaugeVec::new(
            Opts::new(
                "palisade_worker_heartbeat_age_seconds",
                "Age of each listed worker's last heartbeat",
            ),
            &["worker"],
        ));
        let worker_heartbeats = must(IntCounter::new(
            "palisade_worker_heartbeats_total",
            "Heartbeats this worker wrote",
        ));
        let reclaimed = must(IntCounter::new(
            "palisade_reclaimed_jobs_total",
            "Jobs taken back from dead workers",
        ));
        let requeued_lost = must(IntCounter::new(
            "palisade_requeued_lost_jobs_total",
            "Queued jobs whose Redis entry was lost, given a new one",
        ));
        let takeovers = must(IntCounter::new(
            "palisade_deployment_takeovers_total",
            "Live deployments this worker took over",
        ));
        let leases_lost = must(IntCounter::new(
            "palisade_deployment_leases_lost_total",
            "Live deployments stopped here because their lease was lost or could not be renewed in time",
        ));
        let ship_failures = must(IntCounter::new(
            "palisade_deployment_ship_failures_total",
            "Shipments of deployments' files to the shared store that failed",
        ));
        let step_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "palisade_step_duration_seconds",
                "Duration of each step of a job's life",
            )
            .buckets(steps.clone()),
            &["step"],
        ));
        let fuel = must(IntCounterVec::new(
            Opts::new(
                "palisade_strategy_fuel_consumed_total",
                "Fuel consumed by a strategy's runs",
            ),
            &["strategy"],
        ));
        let cpu_seconds = must(CounterVec::new(
            Opts::new(
                "palisade_strategy_cpu_seconds_total",
                "Executor time spent in a strategy's jobs",
            ),
            &["strategy"],
        ));
        let memory_peak = must(IntGaugeVec::new(
            Opts::new(
                "palisade_strategy_memory_peak_bytes",
                "Largest linear memory a run of the strategy reached",
            ),
            &["strategy"],
        ));
        let traps = must(IntCounterVec::new(
            Opts::new(
                "palisade_strategy_traps_total",
                "Runs that ended with a classified failure",
            ),
            &["strategy", "cause"],
        ));
        let throttled = must(IntCounterVec::new(
            Opts::new(
                "palisade_throttled_submissions_total",
                "Submissions refused with 429",
            ),
            &["strategy", "reason"],
        ));
        let watchdog_kills = must(IntCounter::new(
            "palisade_watchdog_kills_total",
            "Jobs the watchdog cancelled for lack of progress",
        ));
        let http_seconds = must(HistogramVec::new(
            HistogramOpts::new("palisade_http_request_duration_seconds", "HTTP requests served")
                .buckets(steps),
            &["method", "route", "status"],
        ));
        let connections_refused = must(IntCounter::new(
            "palisade_connections_refused_total",
            "Connections closed on arrival: over the overall or per-client limit",
        ));
        for c in [
            Box::new(connections_refused.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_depth.clone()),
            Box::new(jobs.clone()),
            Box::new(running_jobs.clone()),
            Box::new(running_instances.clone()),
            Box::new(step_seconds.clone()),
            Box::new(fuel.clone()),
            Box::new(cpu_seconds.clone()),
            Box::new(memory_peak.clone()),
            Box::new(traps.clone()),
            Box::new(throttled.clone()),
            Box::new(watchdog_kills.clone()),
            Box::new(http_seconds.clone()),
            Box::new(queue_capacity.clone()),
            Box::new(queue_oldest_age.clone()),
            Box::new(running_max_stall.clone()),
            Box::new(executor_job_slots.clone()),
            Box::new(executor_instance_slots.clone()),
            Box::new(executor_threads.clone()),
            Box::new(executor_heartbeat.clone()),
            Box::new(ready.clone()),
            Box::new(store_write_errors.clone()),
            Box::new(queue_up.clone()),
            Box::new(workers.clone()),
            Box::new(worker_heartbeat_age.clone()),
            Box::new(worker_heartbeats.clone()),
            Box::new(reclaimed.clone()),
            Box::new(requeued_lost.clone()),
            Box::new(takeovers.clone()),
            Box::new(leases_lost.clone()),
            Box::new(ship_failures.clone()),
        ] {
            must(registry.register(c));
        }
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        for p in PRIORITIES {
            queue_depth.with_label_values(&[p]).set(0);
            queue_oldest_age.with_label_values(&[p]).set(0.0);
        }
        for step in STEPS {
            step_seconds.with_label_values(&[step]);
        }
        for status in WORKER_STATUSES {
            workers.with_label_values(&[status]).set(0);
        }
        Metrics {
            registry,
            queue_depth,
            queue_capacity,
            queue_oldest_age,
            jobs,
            running_jobs,
            running_instances,
            running_max_stall,
            executor_job_slots,
            executor_instance_slots,
            executor_threads,
            executor_heartbeat,
            ready,
            store_write_errors,
            step_seconds,
            fuel,
            cpu_seconds,
            memory_peak,
            traps,
            throttled,
            watchdog_kills,
            http_seconds,
            connections_refused,
            queue_up,
            workers,
            worker_heartbeat_age,
            worker_heartbeats,
            reclaimed,
            requeued_lost,
            takeovers,
            leases_lost,
            ship_failures,
            labels: Mutex::new(HashSet::new()),
            label_cap,
        }
    }

    /// The label for a strategy name: itself while fewer than the cap have
    /// been seen, else [`OTHER`]. A label handed out for the first time gets
    /// its per-strategy series at zero (see the module docs).
    pub fn strategy_label(&self, name: &str) -> String {
        let name: String = name.chars().take(MAX_LABEL_CHARS).collect();
        let label = {
            let mut seen = self.labels.lock().unwrap_or_else(|e| e.into_inner());
            if name == OTHER || seen.contains(&name) {
                return name;
            }
            if seen.len() < self.label_cap {
                seen.insert(name.clone());
                name
            } else if seen.insert(OTHER.to_owned()) {
                // `other` is remembered too, not counted in the cap: it is
                // only ever handed out past it.
                OTHER.to_owned()
            } else {
                return OTHER.to_owned();
            }
        };
        self.preset_strategy(&label);
        label
    }

    /// Creates a strategy's series at zero.
    fn preset_strategy(&self, label: &str) {
        self.fuel.with_label_values(&[label]);
        self.cpu_seconds.with_label_values(&[label]);
        self.memory_peak.with_label_values(&[label]);
        for cause in LIMIT_CAUSES {
            self.traps.with_label_values(&[label, cause.as_str()]);
        }
        for reason in REFUSALS {
            self.throttled.with_label_values(&[label, reason]);
        }
    }

    /// Creates every `palisade_jobs_total` series at zero: each kind,
    /// source and state (the service passes its closed sets).
    pub fn preset_jobs(&self, kinds: &[&str], sources: &[&str], states: &[&str]) {
        for kind in kinds {
            for source in sources {
                for state in states {
                    self.jobs.with_label_values(&[kind, source, state]);
                }
            }
        }
    }

    /// Records the duration of one step.
    pub fn step(&self, step: &str, took: Duration) {
        self.step_seconds
            .with_label_values(&[step])
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    /// The registry, for metrics defined elsewhere (live deployments').
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_labels_are_capped() {
        let m = Metrics::new(2);
        assert_eq!(m.strategy_label("a"), "a");
        assert_eq!(m.strategy_label("b"), "b");
        assert_eq!(m.strategy_label("c"), OTHER);
        assert_eq!(m.strategy_label("a"), "a", "already seen");
        assert_eq!(m.strategy_label(&"x".repeat(100)).len(), OTHER.len());
    }

    #[test]
    fn exposition_follows_the_naming_conventions() {
        let m = Metrics::new(10);
        m.jobs.with_label_values(&["backtest", "api", "queued"]).inc();
        m.fuel.with_label_values(&["sma-cross"]).inc_by(5);
        m.cpu_seconds.with_label_values(&["sma-cross"]).inc_by(0.5);
        m.memory_peak.with_label_values(&["sma-cross"]).set(65536);
        m.traps.with_label_values(&["sma-cross", "fuel_exhausted"]).inc();
        m.throttled.with_label_values(&["sma-cross", "queue_full"]).inc();
        m.step("run", Duration::from_millis(2));
        m.http_seconds
            .with_label_values(&["GET", "/healthz", "200"])
            .observe(0.001);
        let text = m.render();
        for name in [
            "palisade_queue_depth{priority=\"low\"} 0",
            "palisade_jobs_total{kind=\"backtest\",source=\"api\",status=\"queued\"} 1",
            "palisade_running_jobs 0",
            "palisade_running_instances 0",
            "palisade_step_duration_seconds_bucket{step=\"run\"",
            "palisade_strategy_fuel_consumed_total{strategy=\"sma-cross\"} 5",
            "palisade_strategy_cpu_seconds_total{strategy=\"sma-cross\"} 0.5",
            "palisade_strategy_memory_peak_bytes{strategy=\"sma-cross\"} 65536",
            "palisade_strategy_traps_total{cause=\"fuel_exhausted\",strategy=\"sma-cross\"} 1",
            "palisade_throttled_submissions_total{reason=\"queue_full\",strategy=\"sma-cross\"} 1",
            "palisade_watchdog_kills_total 0",
            "palisade_queue_capacity 0",
            "palisade_queue_oldest_age_seconds{priority=\"high\"} 0",
            "palisade_running_job_max_stall_seconds 0",
            "palisade_executor_job_slots 0",
            "palisade_executor_instance_slots 0",
            "palisade_executor_threads 0",
            "palisade_executor_heartbeat_timestamp_seconds 0",
            "palisade_ready 0",
            "palisade_store_write_errors_total 0",
            "palisade_step_duration_seconds_count{step=\"compile\"} 0",
            "palisade_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        ] {
            assert!(text.contains(name), "missing `{name}` in\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    /// The value of the series `series` (name and labels as exposed).
    fn value(m: &Metrics, series: &str) -> Option<f64> {
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_strategy_series_exist_at_zero_from_its_first_label() {
        let m = Metrics::new(1);
        let trap = |s: &str, cause: &str| {
            format!("palisade_strategy_traps_total{{cause=\"{cause}\",strategy=\"{s}\"}}")
        };
        assert_eq!(value(&m, &trap("a", "fuel_exhausted")), None, "not before");
        m.strategy_label("a");
        for cause in LIMIT_CAUSES {
            assert_eq!(value(&m, &trap("a", cause.as_str())), Some(0.0), "{cause}");
        }
        assert_eq!(value(&m, &trap("a", "guest_panic")), None, "not a limit");
        for reason in REFUSALS {
            let series =
                format!("palisade_throttled_submissions_total{{reason=\"{reason}\",strategy=\"a\"}}");
            assert_eq!(value(&m, &series), Some(0.0), "{reason}");
        }
        for name in [
            "palisade_strategy_fuel_consumed_total",
            "palisade_strategy_cpu_seconds_total",
            "palisade_strategy_memory_peak_bytes",
        ] {
            assert_eq!(
                value(&m, &format!("{name}{{strategy=\"a\"}}")),
                Some(0.0),
                "{name}"
            );
            assert_eq!(
                value(&m, &format!("{name}{{strategy=\"other\"}}")),
                None,
                "{name}"
            );
        }
        assert_eq!(m.strategy_label("b"), OTHER, "past the cap");
        assert_eq!(value(&m, &trap(OTHER, "memory_limit")), Some(0.0));
        // An increment after the preset counts from zero.
        m.traps.with_label_values(&["a", "fuel_exhausted"]).inc();
        assert_eq!(value(&m, &trap("a", "fuel_exhausted")), Some(1.0));
        assert_eq!(m.strategy_label("a"), "a", "a second time changes nothing");
        assert_eq!(value(&m, &trap("a", "fuel_exhausted")), Some(1.0));
    }

    #[test]
    fn job_counters_exist_at_zero_for_every_combination() {
        let m = Metrics::new(1);
        m.preset_jobs(
            &["backtest", "optimize"],
            &["api", "restart"],
            &["queued", "failed"],
        );
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("palisade_jobs_total{"))
            .count();
        assert_eq!(series, 8, "{text}");
        assert_eq!(
            value(
                &m,
                "palisade_jobs_total{kind=\"optimize\",source=\"restart\",status=\"failed\"}"
            ),
            Some(0.0)
        );
    }
}
