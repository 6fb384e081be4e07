//! The metrics of live deployments (names and labels in `deploy/README.md`,
//! "Live trading"). The service registers them in its registry; the CLI's
//! `palisade live` in its own. Per-deployment series are removed when the
//! deployment stops, so a stopped deployment's feed is not reported down.

use palisade_live::sequencer::RejectKind;
use palisade_live::{DriftSnapshot, GateState};
use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Every metric of live deployments.
#[derive(Clone, Debug)]
pub struct LiveMetrics {
    pub deployments: IntGaugeVec,
    pub drift_score: GaugeVec,
    pub paper_live_delta: GaugeVec,
    pub gate_state: IntGaugeVec,
    pub gate_transitions: IntCounterVec,
    pub gate_response: Histogram,
    pub emergency_stops: IntGaugeVec,
    pub feed_up: IntGaugeVec,
    pub feed_last_bar: GaugeVec,
    pub feed_interval: GaugeVec,
    pub feed_lag: GaugeVec,
    pub feed_gaps: IntCounterVec,
    pub feed_rejected: IntCounterVec,
    pub feed_bars: IntCounterVec,
    pub feed_to_strategy: Histogram,
    pub intents: IntCounterVec,
    pub fills: IntCounterVec,
}

/// A deployment's lifecycle state, as `palisade_deployments{state}` counts it.
pub const STATES: [&str; 5] = ["starting", "recovering", "live", "stopped", "failed"];
/// `palisade_paper_live_delta`'s kinds.
pub const DELTA_KINDS: [&str; 5] = ["price_bps", "volume_pct", "latency_ms", "pnl_pct", "signal"];
/// Gate states' labels.
pub const GATE_STATES: [&str; 4] = ["open", "recovering", "suspended", "stopped"];
/// `palisade_emergency_stops`'s scopes.
pub const SCOPES: [&str; 3] = ["deployment", "tenant", "all"];

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are valid and registered once")
}

impl LiveMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> LiveMetrics {
        let gauge =
            |name: &str, help: &str, labels: &[&str]| must(GaugeVec::new(Opts::new(name, help), labels));
        let igauge =
            |name: &str, help: &str, labels: &[&str]| must(IntGaugeVec::new(Opts::new(name, help), labels));
        let counter =
            |name: &str, help: &str, labels: &[&str]| must(IntCounterVec::new(Opts::new(name, help), labels));
        let m = LiveMetrics {
            deployments: igauge("palisade_deployments", "Live deployments by state", &["state"]),
            drift_score: gauge(
                "palisade_drift_score",
                "Largest drift measure over its threshold (>= 1 suspends the gate)",
                &["deployment"],
            ),
            paper_live_delta: gauge(
                "palisade_paper_live_delta",
                "Paper vs live drift measures by kind",
                &["deployment", "kind"],
            ),
            gate_state: igauge(
                "palisade_gate_state",
                "Gate state: 0 open, 1 recovering, 2 suspended, 3 stopped",
                &["deployment"],
            ),
            gate_transitions: counter(
                "palisade_gate_transitions_total",
                "Gate transitions",
                &["deployment", "from", "to"],
            ),
            gate_response: must(Histogram::with_opts(
                HistogramOpts::new(
                    "palisade_gate_response_seconds",
                    "From the fill whose drift crossed the threshold to intents stopped",
                )
                .buckets(must(exponential_buckets(0.0001, 2.5, 12))),
            )),
            emergency_stops: igauge(
                "palisade_emergency_stops",
                "Emergency stops in force, by scope",
                &["scope"],
            ),
            feed_up: igauge(
                "palisade_feed_up",
                "The deployment's feed is connected",
                &["deployment"],
            ),
            feed_last_bar: gauge(
                "palisade_feed_last_bar_received_seconds",
                "Unix time the last accepted bar arrived",
                &["deployment"],
            ),
            feed_interval: gauge(
                "palisade_feed_interval_seconds",
                "The deployment's bar interval (0 when unknown)",
                &["deployment"],
            ),
            feed_lag: gauge(
                "palisade_feed_lag_seconds",
                "Receipt time minus the last bar's close time",
                &["deployment"],
            ),
            feed_gaps: counter(
                "palisade_feed_gaps_total",
                "Missing bars detected by timestamp or sequence",
                &["deployment"],
            ),
            feed_rejected: counter(
                "palisade_feed_rejected_bars_total",
                "Bars the feed sent that were rejected",
                &["deployment", "reason"],
            ),
            feed_bars: counter(
                "palisade_feed_bars_total",
                "Bars accepted and stored",
                &["deployment"],
            ),
            feed_to_strategy: must(Histogram::with_opts(
                HistogramOpts::new(
                    "palisade_feed_to_strategy_seconds",
                    "From a bar's message received to the strategy handed the bar (stored first)",
                )
                .buckets(must(exponential_buckets(0.00002, 2.5, 12))),
            )),
            intents: counter(
                "palisade_live_intents_total",
                "Order intents by outcome",
                &["deployment", "outcome"],
            ),
            fills: counter(
                "palisade_live_fills_total",
                "Fills by source",
                &["deployment", "source"],
            ),
        };
        for c in m.collectors() {
            must(registry.register(c));
        }
        for state in STATES {
            m.deployments.with_label_values(&[state]).set(0);
        }
        for scope in SCOPES {
            m.emergency_stops.with_label_values(&[scope]).set(0);
        }
        m
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.deployments.clone()),
            Box::new(self.drift_score.clone()),
            Box::new(self.paper_live_delta.clone()),
            Box::new(self.gate_state.clone()),
            Box::new(self.gate_transitions.clone()),
            Box::new(self.gate_response.clone()),
            Box::new(self.emergency_stops.clone()),
            Box::new(self.feed_up.clone()),
            Box::new(self.feed_last_bar.clone()),
            Box::new(self.feed_interval.clone()),
            Box::new(self.feed_lag.clone()),
            Box::new(self.feed_gaps.clone()),
            Box::new(self.feed_rejected.clone()),
            Box::new(self.feed_bars.clone()),
            Box::new(self.feed_to_strategy.clone()),
            Box::new(self.intents.clone()),
            Box::new(self.fills.clone()),
        ]
    }

    /// Creates a deployment's series at zero (so a first increase is seen).
    pub fn add(&self, deployment: &str, interval_secs: Option<i64>) {
        let d = deployment;
        for reason in RejectKind::ALL {
            self.feed_rejected
                .with_label_values(&[d, reason.as_str()])
                .reset();
        }
        for outcome in ["published", "blocked"] {
            self.intents.with_label_values(&[d, outcome]).reset();
        }
        for source in ["paper", "live"] {
            self.fills.with_label_values(&[d, source]).reset();
        }
        for from in GATE_STATES {
            for to in GATE_STATES {
                if from != to {
                    self.gate_transitions.with_label_values(&[d, from, to]).reset();
                }
            }
        }
        self.feed_gaps.with_label_values(&[d]).reset();
        self.feed_bars.with_label_values(&[d]).reset();
        self.feed_up.with_label_values(&[d]).set(0);
        self.feed_interval
            .with_label_values(&[d])
            .set(interval_secs.unwrap_or(0) as f64);
        self.drift(d, &DriftSnapshot::default());
    }

    /// Removes a stopped deployment's series.
    pub fn remove(&self, deployment: &str) {
        let d = deployment;
        for reason in RejectKind::ALL {
            let _ = self.feed_rejected.remove_label_values(&[d, reason.as_str()]);
        }
        for outcome in ["published", "blocked"] {
            let _ = self.intents.remove_label_values(&[d, outcome]);
        }
        for source in ["paper", "live"] {
            let _ = self.fills.remove_label_values(&[d, source]);
        }
        for from in GATE_STATES {
            for to in GATE_STATES {
                let _ = self.gate_transitions.remove_label_values(&[d, from, to]);
            }
        }
        for kind in DELTA_KINDS {
            let _ = self.paper_live_delta.remove_label_values(&[d, kind]);
        }
        for vec in [&self.feed_gaps, &self.feed_bars] {
            let _ = vec.remove_label_values(&[d]);
        }
        for vec in [&self.feed_up, &self.gate_state] {
            let _ = vec.remove_label_values(&[d]);
        }
        for vec in [
            &self.drift_score,
            &self.feed_last_bar,
            &self.feed_interval,
            &self.feed_lag,
        ] {
            let _ = vec.remove_label_values(&[d]);
        }
    }

    /// Sets a deployment's drift gauges.
    pub fn drift(&self, deployment: &str, snap: &DriftSnapshot) {
        self.drift_score.with_label_values(&[deployment]).set(snap.score);
        let values = [
            snap.price_bps,
            snap.volume_pct,
            snap.latency_ms,
            snap.pnl_pct,
            snap.signal as f64,
        ];
        for (kind, value) in DELTA_KINDS.iter().zip(values) {
            self.paper_live_delta
                .with_label_values(&[deployment, kind])
                .set(value);
        }
    }

    /// Sets a deployment's gate gauge.
    pub fn gate(&self, deployment: &str, state: GateState) {
        self.gate_state
            .with_label_values(&[deployment])
            .set(gate_code(state));
    }
}

/// `palisade_gate_state`'s value of a state.
pub fn gate_code(state: GateState) -> i64 {
    match state {
        GateState::Open => 0,
        GateState::Recovering { .. } => 1,
        GateState::Suspended { .. } => 2,
        GateState::Stopped => 3,
    }
}
