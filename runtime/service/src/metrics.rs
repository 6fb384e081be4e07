//! Prometheus metrics of the service, named per Prometheus conventions (base
//! units, `_total` for counters, `_seconds` and `_bytes` suffixes), served as
//! text at `/metrics`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `palisade_queue_depth` | `priority` | jobs waiting, per queue |
//! | `palisade_jobs_total` | `kind`, `source`, `status` | jobs entering each state; `source` is `api` (submitted) or `restart` (re-queued by recovery) |
//! | `palisade_running_jobs` | | jobs running now |
//! | `palisade_running_instances` | | wasm instances that running jobs may have alive (1 per backtest, the parallelism of a study) |
//! | `palisade_step_duration_seconds` | `step` | `validate`, `compile`, `load` (a precompiled module from `compiled/`), `instantiate` (probe at upload), `run`, `store` (one write batch) |
//! | `palisade_strategy_fuel_consumed_total` | `strategy` | fuel burnt by a strategy's runs |
//! | `palisade_strategy_cpu_seconds_total` | `strategy` | executor time spent in a strategy's jobs (measured around each poll of the job) |
//! | `palisade_strategy_memory_peak_bytes` | `strategy` | largest linear memory any run of the strategy reached |
//! | `palisade_strategy_traps_total` | `strategy`, `cause` | runs that ended with a classified failure |
//! | `palisade_throttled_submissions_total` | `strategy`, `reason` | submissions refused with 429 (`rate_limited`, `queue_full`) |
//! | `palisade_watchdog_kills_total` | | jobs the watchdog cancelled for lack of progress |
//! | `palisade_http_request_duration_seconds` | `method`, `route`, `status` | requests served |
//! | `palisade_connections_refused_total` | | connections closed on arrival: over `max_connections` or `max_connections_per_client` |
//! | `process_*` | | the process's CPU seconds, resident memory, open files (Linux) |
//!
//! **Cardinality.** `strategy` is the manifest name; only the first
//! [`crate::config::DEFAULT_STRATEGY_LABELS`] (configurable as
//! `strategy_labels`) distinct names seen since start get their own label,
//! every later one is counted as `other`, so a tenant uploading thousands of
//! strategies cannot blow up the series count. `route` is the route template
//! (`/v1/jobs/{id}`), never the raw path.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label shared by strategies past the cap.
pub const OTHER: &str = "other";

/// Longest strategy label kept; longer names are cut.
const MAX_LABEL_CHARS: usize = 64;

/// Every metric of the service, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGaugeVec,
    pub jobs: IntCounterVec,
    pub running_jobs: IntGauge,
    pub running_instances: IntGauge,
    pub step_seconds: HistogramVec,
    pub fuel: IntCounterVec,
    pub cpu_seconds: CounterVec,
    pub memory_peak: IntGaugeVec,
    pub traps: IntCounterVec,
    pub throttled: IntCounterVec,
    pub watchdog_kills: IntCounter,
    pub http_seconds: HistogramVec,
    pub connections_refused: IntCounter,
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
        ] {
            must(registry.register(c));
        }
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        for p in ["high", "normal", "low"] {
            queue_depth.with_label_values(&[p]).set(0);
        }
        Metrics {
            registry,
            queue_depth,
            jobs,
            running_jobs,
            running_instances,
            step_seconds,
            fuel,
            cpu_seconds,
            memory_peak,
            traps,
            throttled,
            watchdog_kills,
            http_seconds,
            connections_refused,
            labels: Mutex::new(HashSet::new()),
            label_cap,
        }
    }

    /// The label for a strategy name: itself while fewer than the cap have
    /// been seen, else [`OTHER`].
    pub fn strategy_label(&self, name: &str) -> String {
        let name: String = name.chars().take(MAX_LABEL_CHARS).collect();
        if name == OTHER {
            return name;
        }
        let mut seen = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&name) {
            return name;
        }
        if seen.len() < self.label_cap {
            seen.insert(name.clone());
            return name;
        }
        OTHER.to_owned()
    }

    /// Records the duration of one step.
    pub fn step(&self, step: &str, took: Duration) {
        self.step_seconds
            .with_label_values(&[step])
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
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
            "palisade_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        ] {
            assert!(text.contains(name), "missing `{name}` in\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
