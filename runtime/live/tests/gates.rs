//! The gate against an injection schedule: a strategy buying and selling
//! on every bar, its paper fills from the backtest's fill rule, its live
//! fills from the simulated venue with a 1 % price drift injected on a
//! known range of intents. Checks the gate's transitions, their times and
//! the audit log, wiring the parts the way a deployment runner does:
//! evaluate, record, apply, restart the drift measures when told.

use palisade_backtest::OrderKind as BacktestOrderKind;
use palisade_host_api::Bar;
use palisade_live::{
    AuditLog, DriftInjection, DriftPolicy, DriftTracker, Gate, GatePolicy, GateState, Intent, OrderKind,
    Side, SimVenue, VenueConfig, VenueReport,
};

/// Bars arrive one second apart (a one-minute feed replayed at 60×).
const BAR_MS: i64 = 1_000;
const SLIPPAGE_BPS: f64 = 5.0;

struct Deployment {
    venue: SimVenue,
    drift: DriftTracker,
    gate: Gate,
    audit: AuditLog,
    /// The intent decided at the previous bar, if it was published.
    in_flight: Option<Intent>,
    /// Quantities published, by bar.
    published: Vec<(u64, f64)>,
}

impl Deployment {
    fn bar(n: u64) -> Bar {
        let open = 100.0 + (n % 5) as f64;
        Bar {
            ts: n as i64 * 60,
            open,
            high: open + 1.0,
            low: open - 1.0,
            close: open + 0.25,
            ..Bar::default()
        }
    }

    /// Bar `n` arrives: fills, marks, the gate's decision, then the
    /// strategy's order for the next bar.
    fn on_bar(&mut self, n: u64) {
        let (bar, now_ms) = (Deployment::bar(n), n as i64 * BAR_MS);
        if let Some(intent) = self.in_flight.take() {
            let buy = intent.side == Side::Buy;
            let paper = BacktestOrderKind::Market
                .fill_price(buy, &bar, SLIPPAGE_BPS / 10_000.0)
                .unwrap();
            self.drift
                .on_paper_fill(&intent.id, intent.intended_qty, paper)
                .unwrap();
        }
        for report in self.venue.on_bar("X", &bar, now_ms) {
            match report {
                VenueReport::Fill(fill) => self.drift.on_live_fill(&fill).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        self.drift.mark("X", bar.close);
        if let Some(t) = self.gate.evaluate(&self.drift.snapshot(), now_ms) {
            self.audit.record("d", &t).unwrap();
            self.gate.apply(&t).unwrap();
            if t.restarts_drift() {
                self.drift.restart();
            }
        }
        self.decide(n, &bar, now_ms);
    }

    fn decide(&mut self, n: u64, bar: &Bar, now_ms: i64) {
        if !self.gate.publishes() {
            return;
        }
        let intent = Intent {
            id: Intent::id_for("d", n),
            deployment: "d".into(),
            order_id: n,
            decided_ts: bar.ts,
            symbol: "X".into(),
            side: if n.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            qty: 10.0 * self.gate.size_factor(),
            intended_qty: 10.0,
            kind: OrderKind::Market,
            price: None,
            published_ms: now_ms,
        };
        self.drift.on_intent(&intent).unwrap();
        self.venue.submit(&intent, now_ms).unwrap();
        self.published.push((n, intent.qty));
        self.in_flight = Some(intent);
    }
}

#[test]
fn injected_drift_suspends_then_the_gate_recovers_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueConfig {
        slippage_bps: SLIPPAGE_BPS,
        drift: vec![DriftInjection {
            from_intent: 10,
            until_intent: Some(12),
            price_bps: 100.0,
            extra_latency_ms: 0,
        }],
        ..VenueConfig::default()
    };
    let mut d = Deployment {
        venue: SimVenue::new(venue),
        drift: DriftTracker::new(DriftPolicy::default(), 100_000.0),
        gate: Gate::new(GatePolicy::default(), 0),
        audit: AuditLog::open(&dir.path().join("d.jsonl")).unwrap(),
        in_flight: None,
        published: Vec::new(),
    };
    for n in 1..=120 {
        d.on_bar(n);
    }

    // Intents 10, 11 and 12 fill at bars 11, 12 and 13 about 100 bps worse:
    // the third one brings the mean over 5 fills above 50 bps.
    let log: Vec<(i64, GateState, GateState, &str)> = d
        .audit
        .entries(0, 100)
        .iter()
        .map(|e| (e.at_ms, e.from, e.to, e.actor.as_str()))
        .collect();
    let suspended = GateState::Suspended { manual: false };
    let recovering = |step| GateState::Recovering { step };
    // Suspended at bar 13; the cooldown of 60 s ends at bar 73; each step
    // holds 5 matched fills, one per bar, the first filled at bar 74.
    let want = vec![
        (13_000, GateState::Open, suspended, "gate"),
        (73_000, suspended, recovering(0), "gate"),
        (78_000, recovering(0), recovering(1), "gate"),
        (83_000, recovering(1), recovering(2), "gate"),
        (88_000, recovering(2), GateState::Open, "gate"),
    ];
    assert_eq!(log, want);
    let trip = &d.audit.entries(0, 1)[0];
    assert!(
        trip.reason.starts_with("drift over threshold: price drift 59."),
        "{}",
        trip.reason
    );
    assert!(
        trip.metrics.score >= 1.0 && trip.metrics.score < 1.2,
        "{:?}",
        trip.metrics
    );

    // Nothing was published while suspended; sizes stepped 2.5, 5, 10.
    let qty_at = |n| d.published.iter().find(|p| p.0 == n).map(|p| p.1);
    assert_eq!(qty_at(12), Some(10.0));
    assert!((13..73).all(|n| qty_at(n).is_none()));
    assert_eq!(
        [qty_at(73), qty_at(78), qty_at(83), qty_at(88)],
        [Some(2.5), Some(5.0), Some(10.0), Some(10.0)]
    );

    // The log says where the gate is after a restart.
    let reopened = AuditLog::open(d.audit.path()).unwrap();
    assert_eq!(reopened.entries(0, 100), d.audit.entries(0, 100));
    assert_eq!(reopened.last().unwrap().to, d.gate.state());
}
