//! Deployments end to end, in-process: a feed of messages, the strategy in
//! the sandbox, the simulated venue, drift, the gate and its audit log, and
//! recovery by replay over the same folder.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_backtest::Dataset;
use palisade_deployment::runner::{start, FeedSource, Handle, Launch, Lifecycle, Status};
use palisade_deployment::{DeploymentSpec, FeedSpec, LiveMetrics};
use palisade_live::schema::{bar_json, FeedBar, Format};
use palisade_live::ws::FeedEvent;
use palisade_live::{Command, DriftInjection, GatePolicy, GateState, Intent, VenueConfig};
use palisade_run::Policy;
use palisade_sandbox::{CompiledModule, Sandbox};
use palisade_testkit::bars::minute_dataset;
use palisade_testkit::fixtures::{run_config, sandbox};
use palisade_testkit::guests;
use tokio::sync::mpsc;

const ID: &str = "dep-1";

struct Rig {
    sandbox: Arc<Sandbox>,
    strategy: Arc<CompiledModule>,
    policy: Policy,
    registry: prometheus::Registry,
    metrics: LiveMetrics,
}

fn rig(module: &str) -> Rig {
    let policy = Policy::default();
    let sandbox = Arc::new(sandbox(&policy));
    let strategy = Arc::new(sandbox.load(&guests::bytes(module), &policy).expect("loads"));
    let registry = prometheus::Registry::new();
    let metrics = LiveMetrics::new(&registry);
    Rig {
        sandbox,
        strategy,
        policy,
        registry,
        metrics,
    }
}

fn spec(rig: &Rig, overrides: &[(&str, &str)], venue: Option<VenueConfig>) -> DeploymentSpec {
    DeploymentSpec {
        id: ID.to_owned(),
        tenant: "t1".to_owned(),
        symbols: vec!["SYM".to_owned()],
        interval_secs: Some(60),
        feed: FeedSpec {
            url: "ws://127.0.0.1:1/unused".to_owned(),
            format: Format::Palisade,
        },
        params: run_config(&rig.strategy, overrides).params,
        seed: 0,
        backtest: Default::default(),
        drift: Default::default(),
        gate: GatePolicy {
            cooldown_ms: 3_600_000,
            ..Default::default()
        },
        durability: Default::default(),
        venue,
        verify_every: 0,
        webhook: None,
    }
}

fn launch(rig: &Rig, spec: DeploymentSpec, dir: &Path) -> (Handle, mpsc::Sender<FeedEvent>) {
    launch_leased(rig, spec, dir, None)
}

fn launch_leased(
    rig: &Rig,
    spec: DeploymentSpec,
    dir: &Path,
    lease: Option<palisade_deployment::Lease>,
) -> (Handle, mpsc::Sender<FeedEvent>) {
    let (tx, rx) = mpsc::channel(16_384);
    let handle = start(Launch {
        spec,
        dir: dir.to_owned(),
        sandbox: rig.sandbox.clone(),
        strategy: rig.strategy.clone(),
        policy: rig.policy.clone(),
        metrics: rig.metrics.clone(),
        feed: FeedSource::Channel(rx),
        lease,
    })
    .expect("starts");
    (handle, tx)
}

fn message(data: &Dataset, i: usize) -> FeedEvent {
    let b = data.bars()[i];
    let bar = FeedBar {
        symbol: "SYM".to_owned(),
        ts: b.ts,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        volume: b.volume,
        seq: None,
    };
    text(bar_json(&bar))
}

fn text(text: String) -> FeedEvent {
    FeedEvent::Message {
        text,
        received: Instant::now(),
    }
}

async fn send(tx: &mpsc::Sender<FeedEvent>, data: &Dataset, range: std::ops::Range<usize>) {
    for i in range {
        tx.send(message(data, i)).await.unwrap();
    }
}

async fn bars_handled(h: &Handle, n: u64) -> Status {
    // Stored, and handled by the strategy.
    let wait =
        h.wait_for(|s| s.bars >= n && s.state != Lifecycle::Recovering && s.last_decided_ts == s.last_bar_ts);
    match tokio::time::timeout(Duration::from_secs(30), wait).await {
        Ok(s) => s,
        Err(_) => panic!("{n} bars not handled in time: {:?}", h.status()),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A sample's value from the registry's text exposition (a histogram's
/// count under `name`); NaN when absent.
fn metric(rig: &Rig, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&rig.registry.gather(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let count = format!("{name}_count");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let bare = series.split('{').next().unwrap();
        if bare != name && bare != count {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap();
        }
    }
    f64::NAN
}

#[test]
fn clean_fills_keep_the_gate_open_and_match_the_paper_fills() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(1_500, 11);
    rt().block_on(async {
        // Periodic signal checks run while bars keep arriving; intents also
        // go to a webhook.
        let sink = palisade_testkit::http::WebhookSink::start();
        let spec = DeploymentSpec {
            verify_every: 100,
            webhook: Some(palisade_live::webhook::WebhookSpec {
                url: sink.url.clone(),
                authorization: None,
            }),
            ..spec(
                &rig,
                &[("fast", "5"), ("slow", "20")],
                Some(VenueConfig::default()),
            )
        };
        let (h, tx) = launch(&rig, spec, dir.path());
        send(&tx, &data, 0..1_500).await;
        // Handled: the venue (no latency) has filled every intent but the
        // last timestamp's by then.
        let s = bars_handled(&h, 1_500).await;
        let s2 = h.status();
        assert_eq!(s.state, Lifecycle::Live);
        assert!(s2.intents_published > 20, "{s2:?}");
        assert_eq!(s2.intents_blocked, 0);
        assert_eq!(s2.gate, GateState::Open);
        assert!(s2.drift.score < 1.0, "{:?}", s2.drift);
        assert_eq!(s2.drift.price_bps, 0.0, "same price as paper");
        assert!(s2.drift.fills_matched > 20, "{:?}", s2.drift);
        assert!(h.audit(0, 100).await.is_empty(), "no transition");
        assert_eq!(
            s2.signal_mismatches, 0,
            "no false positive from checks racing the feed"
        );
        // A periodic check may still run: one at a time.
        h.wait_for(|s| !s.signal_check_running).await;
        let check = h.verify().await.unwrap();
        assert_eq!((check.mismatches, check.bars), (0, 1_500), "{check:?}");
        assert_eq!(check.orders, s2.intents_published);
        assert_eq!(h.status().signal_checked_orders, check.orders);
        // The webhook got every published intent, in order.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.bodies().len() < s2.intents_published as usize {
            assert!(
                Instant::now() < deadline,
                "the webhook got {} intents",
                sink.bodies().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ids: Vec<u64> = sink
            .bodies()
            .iter()
            .map(|b| serde_json::from_str::<Intent>(b).unwrap().order_id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
        h.stop().await;
        assert_eq!(h.status().state, Lifecycle::Stopped);
    });
    // The stopped deployment's series are gone.
    assert!(metric(&rig, "palisade_feed_up", &[("deployment", ID)]).is_nan());
}

#[test]
fn a_one_percent_price_drift_suspends_the_gate_within_five_fills() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(3_000, 5);
    let venue = VenueConfig {
        drift: vec![DriftInjection {
            from_intent: 8,
            until_intent: None,
            price_bps: 100.0,
            extra_latency_ms: 0,
        }],
        ..Default::default()
    };
    rt().block_on(async {
        let (h, tx) = launch(
            &rig,
            spec(&rig, &[("fast", "5"), ("slow", "20")], Some(venue)),
            dir.path(),
        );
        let mut intents = h.intents();
        send(&tx, &data, 0..3_000).await;
        bars_handled(&h, 3_000).await;
        let suspended = h.wait_for(|s| matches!(s.gate, GateState::Suspended { .. }));
        let s = tokio::time::timeout(Duration::from_secs(10), suspended)
            .await
            .expect("the gate suspends");
        assert!(matches!(s.gate, GateState::Suspended { manual: false }), "{s:?}");
        let audit = h.audit(0, 100).await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        let entry = &audit[0];
        assert_eq!(
            (entry.from, entry.to),
            (GateState::Open, GateState::Suspended { manual: false })
        );
        assert!(entry.reason.contains("price"), "{}", entry.reason);
        assert!(entry.metrics.price_bps >= 50.0, "{:?}", entry.metrics);
        // Detected within 5 drifted fills: intents 8.. drift; the 7 before
        // it are clean, so at most 7 + 5 were published before suspension.
        let mut published = Vec::new();
        while let Ok(i) = intents.try_recv() {
            published.push(i);
        }
        assert!(
            published.len() <= 12,
            "{} intents published before the gate closed",
            published.len()
        );
        assert!(published.len() >= 8, "{}", published.len());
        assert!(s.intents_blocked > 0, "later intents are blocked: {s:?}");
        assert_eq!(metric(&rig, "palisade_gate_state", &[("deployment", ID)]), 2.0);
        assert_eq!(metric(&rig, "palisade_gate_response_seconds", &[]), 1.0);
        assert_eq!(
            metric(
                &rig,
                "palisade_gate_transitions_total",
                &[("deployment", ID), ("from", "open"), ("to", "suspended")]
            ),
            1.0
        );
        // An operator resumes: recovering at 25 %, the audit says who.
        let e = h
            .gate(Command::Resume, "alice", "checked the venue")
            .await
            .unwrap();
        assert_eq!(e.to, GateState::Recovering { step: 0 });
        assert_eq!(e.actor, "alice");
        assert_eq!(h.status().size_factor, 0.25);
        // Refused commands name the state.
        let err = h
            .gate(Command::Release, "alice", "x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovering"), "{err}");
        let err = h
            .gate(Command::ForceOpen, "alice", " ")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("reason"), "{err}");
        h.stop().await;
    });
}

#[test]
fn a_restarted_deployment_replays_its_bars_and_resumes_without_loss_or_repeat() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(2_000, 9);
    let overrides = [("fast", "5"), ("slow", "20")];
    // The uninterrupted run.
    let whole = tempfile::tempdir().unwrap();
    let all: Vec<Intent> = rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &overrides, None), whole.path());
        let mut rx = h.intents();
        send(&tx, &data, 0..2_000).await;
        bars_handled(&h, 2_000).await;
        h.stop().await;
        let mut out = Vec::new();
        while let Ok(i) = rx.try_recv() {
            out.push(i);
        }
        out
    });
    assert!(all.len() > 20);
    // Interrupted after 1,200 bars (the runtime dropped: no orderly stop),
    // restarted over the same folder; the feed resends from bar 1,100 (an
    // overlap the sequencer must drop as duplicates).
    let first: Vec<Intent> = {
        let rt = rt();
        let out = rt.block_on(async {
            let (h, tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
            let mut rx = h.intents();
            send(&tx, &data, 0..1_200).await;
            // Handled: every intent of these bars is published by then.
            bars_handled(&h, 1_200).await;
            let mut out = Vec::new();
            while let Ok(i) = rx.try_recv() {
                out.push(i);
            }
            out
        });
        rt.shutdown_background();
        out
    };
    let second: Vec<Intent> = rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
        let mut rx = h.intents();
        let s = h.wait_for(|s| s.state == Lifecycle::Live).await;
        assert_eq!(s.recovered_bars, 1_200);
        assert!(s.recovery_ms.is_some());
        send(&tx, &data, 1_100..2_000).await;
        let s = bars_handled(&h, 2_000).await;
        assert_eq!(s.bars, 2_000, "no bar stored twice");
        // Metrics are set before the status that told us.
        assert_eq!(s.rejected_bars, 100, "the overlap was refused");
        assert_eq!(
            metric(
                &rig,
                "palisade_feed_rejected_bars_total",
                &[("deployment", ID), ("reason", "duplicate")]
            ),
            100.0
        );
        let check = h.verify().await.unwrap();
        assert_eq!(check.mismatches, 0, "{check:?}");
        h.stop().await;
        let mut out = Vec::new();
        while let Ok(i) = rx.try_recv() {
            out.push(i);
        }
        out
    });
    let ids = |v: &[Intent]| {
        v.iter()
            .map(|i| (i.order_id, i.decided_ts, i.qty.to_bits()))
            .collect::<Vec<_>>()
    };
    let mut joined = ids(&first);
    joined.extend(ids(&second));
    assert_eq!(
        joined,
        ids(&all),
        "each intent published once, as an uninterrupted run publishes it"
    );
}

#[test]
fn bad_bars_are_refused_counted_and_the_deployment_keeps_running() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(300, 2);
    rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &[("fast", "3"), ("slow", "8")], None), dir.path());
        send(&tx, &data, 0..100).await;
        for bad in [
            "not json".to_owned(),
            r#"{"type":"bar","symbol":"SYM","ts":1}"#.to_owned(),
            r#"{"type":"bar","symbol":"NOPE","ts":1700100000,"open":1,"high":1,"low":1,"close":1,"volume":1}"#.to_owned(),
            r#"{"type":"bar","symbol":"SYM","ts":1700100000,"open":1,"high":0.5,"low":1,"close":1,"volume":1}"#.to_owned(),
            // Milliseconds by mistake: stored, it would block every later
            // bar as out of order.
            r#"{"type":"bar","symbol":"SYM","ts":1700100000000,"open":1,"high":1,"low":1,"close":1,"volume":1}"#.to_owned(),
        ] {
            tx.send(text(bad)).await.unwrap();
        }
        tx.send(message(&data, 50)).await.unwrap(); // out of order or duplicate
        tx.send(message(&data, 99)).await.unwrap(); // duplicate
        send(&tx, &data, 100..300).await;
        let s = bars_handled(&h, 300).await;
        assert_eq!(s.state, Lifecycle::Live);
        assert_eq!(s.bars, 300);
        assert_eq!(s.rejected_bars, 7, "{s:?}");
        let count = |reason| metric(&rig, "palisade_feed_rejected_bars_total", &[("deployment", ID), ("reason", reason)]);
        assert_eq!(count("malformed"), 2.0);
        assert_eq!(count("unknown_symbol"), 1.0);
        assert_eq!(count("invalid"), 2.0);
        assert_eq!(count("duplicate") + count("out_of_order"), 2.0);
        // A gap: skipping 10 bars counts them.
        tx.send(message(&minute_dataset(320, 2), 310)).await.unwrap();
        let s = bars_handled(&h, 301).await;
        assert_eq!(s.gap_bars, 10, "{s:?}");
        h.stop().await;
    });
}

#[test]
fn a_strategy_that_traps_live_fails_its_deployment_and_suspends_its_gate() {
    let rig = rig("adversary");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(100, 2);
    rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &[("mode", "4"), ("at", "40")], None), dir.path());
        send(&tx, &data, 0..100).await;
        let s = tokio::time::timeout(
            Duration::from_secs(30),
            h.wait_for(|s| s.state == Lifecycle::Failed),
        )
        .await
        .unwrap();
        let failure = s.failure.clone().unwrap();
        assert_eq!(failure.cause, palisade_run::Cause::GuestPanic, "{failure:?}");
        assert_eq!(s.gate, GateState::Suspended { manual: true });
        let audit = h.audit(0, 10).await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].actor, "runner");
        assert!(audit[0].reason.contains("guest_panic"), "{}", audit[0].reason);
        assert_eq!(metric(&rig, "palisade_deployments", &[("state", "failed")]), 1.0);
        h.stop().await;
    });
}

#[test]
fn a_signal_check_catches_a_live_path_that_diverged() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(1_000, 4);
    let overrides = [("fast", "5"), ("slow", "20")];
    rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
        send(&tx, &data, 0..1_000).await;
        bars_handled(&h, 1_000).await;
        h.stop().await;
    });
    // The live path's record says the strategy decided something the
    // module, replayed, does not: another build ran live.
    let orders = dir.path().join("orders.jsonl");
    let text = std::fs::read_to_string(&orders).unwrap();
    let tampered = text.replacen("\"qty\":", "\"qty\":1e-9+", 0);
    assert_eq!(tampered, text);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let qty = v["qty"].as_f64().unwrap();
    v["qty"] = serde_json::json!(qty * (1.0 + f64::EPSILON));
    lines[2] = v.to_string();
    std::fs::write(&orders, lines.join("\n") + "\n").unwrap();
    rt().block_on(async {
        let (h, _tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
        h.wait_for(|s| s.state == Lifecycle::Live).await;
        let check = h.verify().await.unwrap();
        assert_eq!(check.mismatches, 1, "{check:?}");
        assert!(check.differences[0].contains("order 3"), "{check:?}");
        let s = h.status();
        assert_eq!(s.signal_mismatches, 1);
        assert!(matches!(s.gate, GateState::Suspended { manual: true }), "{s:?}");
        let audit = h.audit(0, 10).await;
        assert!(audit.last().unwrap().reason.contains("signal"), "{audit:?}");
        h.stop().await;
    });
}

#[test]
fn a_timestamp_a_symbol_missed_goes_out_incomplete_once_the_feed_is_quiet() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let bar = |symbol: &str, ts: i64| {
        text(bar_json(&FeedBar {
            symbol: symbol.to_owned(),
            ts,
            open: 10.0,
            high: 11.0,
            low: 9.0,
            close: 10.5,
            volume: 1.0,
            seq: None,
        }))
    };
    rt().block_on(async {
        let spec = DeploymentSpec {
            symbols: vec!["A".to_owned(), "B".to_owned()],
            ..spec(&rig, &[("fast", "2"), ("slow", "4")], None)
        };
        let (h, tx) = launch(&rig, spec, dir.path());
        for ts in [60, 120] {
            tx.send(bar("A", ts)).await.unwrap();
            tx.send(bar("B", ts)).await.unwrap();
        }
        // B's bar at 180 never comes: after a quiet spell, A's goes alone.
        tx.send(bar("A", 180)).await.unwrap();
        let s = bars_handled(&h, 4).await;
        assert_eq!(s.last_bar_ts, Some(120), "complete timestamps go at once");
        let started = Instant::now();
        let s = bars_handled(&h, 5).await;
        assert!(
            started.elapsed() >= Duration::from_millis(1_500),
            "not before the feed went quiet"
        );
        assert_eq!(s.last_bar_ts, Some(180));
        // B's late bar is refused; the next timestamp is handled as usual.
        tx.send(bar("B", 180)).await.unwrap();
        tx.send(bar("A", 240)).await.unwrap();
        tx.send(bar("B", 240)).await.unwrap();
        let s = bars_handled(&h, 7).await;
        assert_eq!((s.bars, s.rejected_bars), (7, 1), "{s:?}");
        h.stop().await;
    });
}

#[test]
fn orders_decided_on_stored_bars_a_crash_left_unhandled_are_not_published_late() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(2_000, 9);
    let overrides = [("fast", "5"), ("slow", "20")];
    rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
        send(&tx, &data, 0..1_000).await;
        bars_handled(&h, 1_000).await;
        h.stop().await;
    });
    // Bars stored that the strategy never handled (it lagged the feed when
    // the process died).
    let symbols = vec!["SYM".to_owned()];
    let (mut log, stored) =
        palisade_live::barlog::BarLog::open(&dir.path().join("bars.log"), &symbols, Default::default())
            .unwrap();
    assert_eq!(stored.len(), 1_000);
    log.append(&data.bars()[1_000..1_600]).unwrap();
    drop(log);
    let last_stored = data.bars()[1_599].ts;
    let journaled = std::fs::read_to_string(dir.path().join("intents.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    rt().block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, &overrides, None), dir.path());
        let mut rx = h.intents();
        let s = h.wait_for(|s| s.state == Lifecycle::Live).await;
        assert_eq!(s.recovered_bars, 1_600);
        assert!(
            s.intents_blocked > 0,
            "the lagged bars' orders were recorded unpublished: {s:?}"
        );
        let published_at_recovery = s.intents_published;
        send(&tx, &data, 1_600..2_000).await;
        bars_handled(&h, 2_000).await;
        h.stop().await;
        let mut late = Vec::new();
        while let Ok(i) = rx.try_recv() {
            late.push(i);
        }
        assert!(
            late.iter().all(|i| i.decided_ts >= last_stored),
            "an intent decided on an old stored bar was published: {:?}",
            late.iter().find(|i| i.decided_ts < last_stored)
        );
        // The count goes on from the journal's; the recovery itself
        // published at most the one order decided on the last stored bar.
        assert!(
            (journaled..=journaled + 1).contains(&published_at_recovery),
            "{published_at_recovery} published, {journaled} journaled before"
        );
        // Nothing is journaled twice, and the check agrees with the replay.
        let orders = std::fs::read_to_string(dir.path().join("orders.jsonl")).unwrap();
        let ids: Vec<u64> = orders
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    });
}

#[test]
fn a_deployment_recovered_with_another_build_is_caught_by_its_replay() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(1_000, 4);
    rt().block_on(async {
        let (h, tx) = launch(
            &rig,
            spec(&rig, &[("fast", "5"), ("slow", "20")], None),
            dir.path(),
        );
        send(&tx, &data, 0..1_000).await;
        bars_handled(&h, 1_000).await;
        h.stop().await;
    });
    // The same deployment restarted with the same build decides the same.
    rt().block_on(async {
        let (h, _tx) = launch(
            &rig,
            spec(&rig, &[("fast", "5"), ("slow", "20")], None),
            dir.path(),
        );
        let s = h.wait_for(|s| s.state == Lifecycle::Live).await;
        assert_eq!((s.signal_mismatches, s.gate), (0, GateState::Open), "{s:?}");
        h.stop().await;
    });
    // Restarted with a build that decides otherwise (here, other
    // parameters): its recovery's replay disagrees with the journal, and the
    // gate suspends before any live bar.
    rt().block_on(async {
        let (h, _tx) = launch(
            &rig,
            spec(&rig, &[("fast", "6"), ("slow", "20")], None),
            dir.path(),
        );
        let s = h
            .wait_for(|s| s.state == Lifecycle::Live && s.gate != GateState::Open)
            .await;
        assert!(s.signal_mismatches > 0, "{s:?}");
        assert!(matches!(s.gate, GateState::Suspended { manual: true }), "{s:?}");
        let audit = h.audit(0, 10).await;
        assert!(audit[0].reason.contains("signal"), "{audit:?}");
        h.stop().await;
    });
}

#[test]
fn a_deployment_publishes_only_while_its_lease_is_held() {
    let rig = rig("sma_cross");
    let dir = tempfile::tempdir().unwrap();
    let data = minute_dataset(600, 5);
    rt().block_on(async {
        let lease = palisade_deployment::Lease::until(Instant::now() + Duration::from_secs(600));
        let spec = spec(&rig, &[("fast", "5"), ("slow", "20")], None);
        let (h, tx) = launch_leased(&rig, spec, dir.path(), Some(lease.clone()));
        send(&tx, &data, 0..300).await;
        let held = bars_handled(&h, 300).await;
        assert!(held.intents_published > 3, "{held:?}");
        assert_eq!(held.intents_blocked, 0);
        // Expired (a paused process, or one cut off from the store): the
        // strategy goes on, nothing more is published.
        lease.extend(Instant::now());
        send(&tx, &data, 300..600).await;
        let expired = bars_handled(&h, 600).await;
        assert_eq!(expired.intents_published, held.intents_published, "{expired:?}");
        assert!(expired.intents_blocked > 3, "{expired:?}");
        assert_eq!(expired.state, Lifecycle::Live);
        h.stop().await;
    });
}
