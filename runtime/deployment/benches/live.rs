//! Issue 16's live targets measured in-process (`cargo bench -p
//! palisade-deployment --bench live [PART ...]`): deployments started with
//! `start(Launch)` on an in-process channel feed, the sma_cross guest, a
//! multi-thread tokio runtime of 2 workers. Prints one JSON object of
//! figures on stdout (scripts/bench.py's `live` section reads it); progress
//! on stderr.
//!
//! Parts (all when none is named):
//! - `gate`: gate response. (a) The simulated venue drifts every fill by
//!   100 bps; each suspension is read back exactly from
//!   `palisade_gate_response_seconds` (its sum's step across that one
//!   observation), then the bench forces the gate open and goes on.
//!   (b) No venue: the bench reports each crossing fill itself through
//!   `Handle::fill` and times from the call to the status watch showing the
//!   gate suspended.
//! - `detect`: a 1 % price drift injected from intent k (several k, several
//!   data seeds): drifted intents published and drifted fills matched
//!   before the gate suspended.
//! - `latency`: `palisade_feed_to_strategy_seconds` per bar, exact (its
//!   sum's step per bar, the bars sent one at a time), durability os and disk.
//! - `fleet`: N deployments (LIVE_FLEET, default 1000) in one process, each
//!   fed one bar every few seconds: RSS before and after, per deployment,
//!   CPU while idle.
//!
//! Environment: LIVE_GATE_N (suspensions per gate mode, default 300),
//! LIVE_LATENCY_N (bars per durability, default 3000 os / a third of it
//! disk), LIVE_FLEET, LIVE_FLEET_IDLE_SECS (default 30), LIVE_DIR (where the
//! deployments' folders go; default a temporary folder under target/).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_deployment::runner::{start, FeedSource, Handle, Launch, Lifecycle, Status};
use palisade_deployment::{DeploymentSpec, FeedSpec, LiveMetrics};
use palisade_host_api::Bar;
use palisade_live::barlog::Durability;
use palisade_live::schema::{bar_json, FeedBar, Format};
use palisade_live::ws::FeedEvent;
use palisade_live::{
    Command, DriftInjection, DriftPolicy, GatePolicy, GateState, LiveFill, Side, VenueConfig,
};
use palisade_run::{params, Policy};
use palisade_sandbox::{CompiledModule, EngineSettings, Sandbox};
use palisade_testkit::bars::minute_walk;
use palisade_testkit::guests;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

struct Rig {
    sandbox: Arc<Sandbox>,
    strategy: Arc<CompiledModule>,
    policy: Policy,
    metrics: LiveMetrics,
}

fn rig(instances: u32) -> Rig {
    let policy = Policy::default();
    let sandbox = Arc::new(
        Sandbox::new(EngineSettings {
            max_instances: instances,
            ..EngineSettings::for_policy(&policy)
        })
        .expect("engine starts"),
    );
    let strategy = Arc::new(sandbox.load(&guests::bytes("sma_cross"), &policy).expect("loads"));
    let registry = prometheus::Registry::new();
    let metrics = LiveMetrics::new(&registry);
    Rig {
        sandbox,
        strategy,
        policy,
        metrics,
    }
}

struct Opts {
    fast: u32,
    slow: u32,
    venue: Option<VenueConfig>,
    durability: Durability,
}

fn spec(rig: &Rig, id: &str, o: &Opts) -> DeploymentSpec {
    let overrides = vec![
        ("fast".to_owned(), o.fast.to_string()),
        ("slow".to_owned(), o.slow.to_string()),
    ];
    DeploymentSpec {
        id: id.to_owned(),
        tenant: "bench".to_owned(),
        symbols: vec!["SYM".to_owned()],
        interval_secs: Some(60),
        feed: FeedSpec {
            url: "ws://127.0.0.1:1/unused".to_owned(),
            format: Format::Palisade,
        },
        params: params::resolve(&rig.strategy.info.manifest, &overrides).unwrap(),
        seed: 0,
        backtest: Default::default(),
        drift: DriftPolicy {
            // No intent settles unfilled during a bench: only price drift
            // is injected.
            fill_timeout_ms: 3_600_000,
            ..Default::default()
        },
        gate: GatePolicy {
            auto_recover: false,
            ..Default::default()
        },
        durability: o.durability,
        venue: o.venue.clone(),
        verify_every: 0,
        webhook: None,
    }
}

fn launch(rig: &Rig, spec: DeploymentSpec, dir: &Path, cap: usize) -> (Handle, mpsc::Sender<FeedEvent>) {
    let (tx, rx) = mpsc::channel(cap);
    let handle = start(Launch {
        spec,
        dir: dir.to_owned(),
        sandbox: rig.sandbox.clone(),
        strategy: rig.strategy.clone(),
        policy: rig.policy.clone(),
        metrics: rig.metrics.clone(),
        feed: FeedSource::Channel(rx),
        lease: None,
    })
    .expect("starts");
    (handle, tx)
}

fn message(b: &Bar) -> FeedEvent {
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
    FeedEvent::Message {
        text: bar_json(&bar),
        received: Instant::now(),
    }
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn suspended(s: &Status) -> bool {
    matches!(s.gate, GateState::Suspended { .. })
}

/// p50, p99, max and mean of `xs` (seconds) in ms.
fn summary(xs: &[f64]) -> Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            // Nearest rank.
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        }
    };
    let ms = |x: f64| (x * 1e6).round() / 1e3;
    json!({
        "n": v.len(),
        "p50_ms": ms(q(0.50)),
        "p99_ms": ms(q(0.99)),
        "max_ms": ms(v.last().copied().unwrap_or(f64::NAN)),
        "mean_ms": ms(v.iter().sum::<f64>() / v.len().max(1) as f64),
    })
}

/// Gate response, (a) from the deployment's own histogram with the
/// simulated venue drifting every fill.
fn gate_histogram(base: &Path, n: usize) -> Value {
    let rig = rig(4);
    let bars = minute_walk(200_000, 31);
    let venue = VenueConfig {
        drift: vec![DriftInjection {
            from_intent: 1,
            until_intent: None,
            price_bps: 100.0,
            extra_latency_ms: 0,
        }],
        ..Default::default()
    };
    let o = Opts {
        fast: 2,
        slow: 5,
        venue: Some(venue),
        durability: Durability::Os,
    };
    let dir = base.join("gate-venue");
    let rt = rt();
    let hist = rig.metrics.gate_response.clone();
    let mut samples = Vec::new();
    let mut skipped = 0;
    let mut sent = 0;
    rt.block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, "gate-venue", &o), &dir, 16);
        let (mut count, mut sum) = (hist.get_sample_count(), hist.get_sample_sum());
        for bar in &bars {
            if samples.len() >= n {
                break;
            }
            tx.send(message(bar)).await.unwrap();
            sent += 1;
            let wait = h.wait_for(suspended);
            if tokio::time::timeout(Duration::from_millis(4), wait)
                .await
                .is_err()
            {
                continue;
            }
            let (c, s) = (hist.get_sample_count(), hist.get_sample_sum());
            if c == count + 1 {
                samples.push(s - sum);
            } else {
                skipped += 1;
            }
            (count, sum) = (c, s);
            h.gate(Command::ForceOpen, "bench", "gate response bench")
                .await
                .expect("force open");
        }
        h.stop().await;
    });
    let mut out = summary(&samples);
    out["bars_sent"] = json!(sent);
    out["skipped"] = json!(skipped);
    out["measure"] = json!("palisade_gate_response_seconds, one observation per suspension (its sum's step): from the drifted venue fill reaching the deployment's actor to the gate suspended (audit entry fdatasync'ed first)");
    out
}

/// Gate response, (b) timed by the bench: each crossing fill reported
/// through `Handle::fill`, from the call to the status watch showing the
/// gate suspended.
fn gate_external(base: &Path, n: usize) -> Value {
    let rig = rig(4);
    let bars = minute_walk(400_000, 37);
    let o = Opts {
        fast: 2,
        slow: 5,
        venue: None,
        durability: Durability::Os,
    };
    let dir = base.join("gate-api");
    let rt = rt();
    let hist = rig.metrics.gate_response.clone();
    let mut external = Vec::new();
    let mut reply = Vec::new();
    let mut recorded = Vec::new();
    rt.block_on(async {
        let (h, tx) = launch(&rig, spec(&rig, "gate-api", &o), &dir, 16);
        let mut intents = h.intents();
        let mut i = 0;
        while external.len() < n && i + 1 < bars.len() {
            tx.send(message(&bars[i])).await.unwrap();
            i += 1;
            let intent = match tokio::time::timeout(Duration::from_millis(3), intents.recv()).await {
                Ok(Ok(intent)) => intent,
                _ => continue,
            };
            // Its paper fill: at the open of the bar after the one it was
            // decided at.
            let k = bars.iter().position(|b| b.ts == intent.decided_ts).unwrap();
            if k + 1 != i {
                // Seen late: its paper fill may be in already; left unfilled.
                continue;
            }
            let paper = bars[k + 1].open;
            let before = h.status().paper_fills;
            tx.send(message(&bars[i])).await.unwrap();
            i += 1;
            h.wait_for(|s| s.paper_fills > before).await;
            let worse = match intent.side {
                Side::Buy => paper * 1.01,
                Side::Sell => paper * 0.99,
            };
            let fill = LiveFill {
                intent_id: intent.id.clone(),
                qty: intent.qty,
                price: worse,
                ts_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64,
                venue_fill_id: None,
            };
            let (c0, s0) = (hist.get_sample_count(), hist.get_sample_sum());
            let t0 = Instant::now();
            let waiter = {
                let h = h.clone();
                tokio::spawn(async move {
                    h.wait_for(suspended).await;
                    Instant::now()
                })
            };
            let answered = h.fill(fill).await;
            let t_reply = t0.elapsed();
            let t_suspended = waiter.await.unwrap() - t0;
            answered.expect("fill accepted");
            if !suspended(&h.status()) {
                panic!("one 100 bps fill did not suspend the gate: {:?}", h.status());
            }
            if hist.get_sample_count() == c0 + 1 {
                recorded.push(hist.get_sample_sum() - s0);
            }
            external.push(t_suspended.as_secs_f64());
            reply.push(t_reply.as_secs_f64());
            h.gate(Command::ForceOpen, "bench", "gate response bench")
                .await
                .expect("force open");
            // Intents published meanwhile are left alone (the tracker
            // restarted with the gate).
            while intents.try_recv().is_ok() {}
        }
        h.stop().await;
    });
    json!({
        "fill_sent_to_status_suspended": summary(&external),
        "fill_sent_to_fill_answered": summary(&reply),
        "histogram_same_events": summary(&recorded),
        "measure": "the bench reports the crossing live fill (1 % worse than its paper fill) with Handle::fill and times from the call to the status watch showing the gate suspended (a task waiting on Handle::wait_for)",
    })
}

/// Detection: a 1 % price drift from the k-th intent.
fn detect(base: &Path) -> Value {
    let rig = rig(4);
    let mut runs = Vec::new();
    let rt = rt();
    for seed in [1u64, 2, 3, 4, 5] {
        let bars = minute_walk(6_000, 100 + seed);
        for from in [1u64, 5, 10, 20] {
            let venue = VenueConfig {
                drift: vec![DriftInjection {
                    from_intent: from,
                    until_intent: None,
                    price_bps: 100.0,
                    extra_latency_ms: 0,
                }],
                ..Default::default()
            };
            let o = Opts {
                fast: 5,
                slow: 20,
                venue: Some(venue),
                durability: Durability::Os,
            };
            let id = format!("detect-{seed}-{from}");
            let dir = base.join(&id);
            let r = rt.block_on(async {
                let (h, tx) = launch(&rig, spec(&rig, &id, &o), &dir, 16_384);
                for b in &bars {
                    tx.send(message(b)).await.unwrap();
                }
                let all = bars.len() as u64;
                let done = h.wait_for(|s| s.bars >= all && s.state == Lifecycle::Live);
                tokio::time::timeout(Duration::from_secs(60), done)
                    .await
                    .expect("bars handled");
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = h.status();
                let audit = h.audit(0, 100).await;
                h.stop().await;
                let first = audit.first();
                json!({
                    "seed": seed,
                    "from_intent": from,
                    "suspended": suspended(&s),
                    "transitions": audit.len(),
                    "reason": first.map(|e| e.reason.clone()),
                    "price_bps_at_crossing": first.map(|e| e.metrics.price_bps),
                    // Matched fills since the start, the clean ones first.
                    "drifted_fills_matched": first.map(|e| e.metrics.fills_matched.saturating_sub(from - 1)),
                    "drifted_intents_published": s.intents_published.saturating_sub(from - 1),
                    "intents_published": s.intents_published,
                    "intents_blocked": s.intents_blocked,
                })
            });
            eprintln!("detect: {r}");
            runs.push(r);
        }
    }
    let max = |key: &str| runs.iter().filter_map(|r| r[key].as_u64()).max();
    json!({
        "runs": runs.len(),
        "all_suspended": runs.iter().all(|r| r["suspended"] == json!(true) && r["transitions"] == json!(1)),
        "max_drifted_fills": max("drifted_fills_matched"),
        "max_drifted_intents_published": max("drifted_intents_published"),
        "detail": runs,
    })
}

/// Feed to strategy latency: bars sent one at a time, each observation
/// read back exactly as the histogram's sum's step.
fn latency(base: &Path, durability: Durability, n: usize) -> Value {
    let rig = rig(4);
    let bars = minute_walk(n, 41);
    let o = Opts {
        fast: 10,
        slow: 30,
        venue: None,
        durability,
    };
    let name = match durability {
        Durability::Os => "os",
        Durability::Disk => "disk",
    };
    let dir = base.join(format!("latency-{name}"));
    let rt = rt();
    let hist = rig.metrics.feed_to_strategy.clone();
    let (h, tx) = rt.block_on(async { launch(&rig, spec(&rig, &format!("latency-{name}"), &o), &dir, 16) });
    let mut samples = Vec::with_capacity(n);
    let mut sync = Vec::new();
    for b in &bars {
        let (c0, s0) = (hist.get_sample_count(), hist.get_sample_sum());
        tx.blocking_send(message(b)).unwrap();
        let t = Instant::now();
        while hist.get_sample_count() == c0 {
            assert!(t.elapsed() < Duration::from_secs(10), "a bar was not handed over");
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(hist.get_sample_sum() - s0);
        // A feed's bars arrive far apart: let the deployment go idle.
        std::thread::sleep(Duration::from_millis(1));
    }
    // The bare cost of one fdatasync of 60 bytes on this disk.
    if durability == Durability::Disk {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
        for _ in 0..300 {
            let t = Instant::now();
            f.write_all(&[0u8; 60]).unwrap();
            f.sync_data().unwrap();
            sync.push(t.elapsed().as_secs_f64());
        }
    }
    rt.block_on(h.stop());
    let mut out = summary(&samples);
    if !sync.is_empty() {
        out["fdatasync_60_bytes"] = summary(&sync);
    }
    out
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the process, in seconds (CLK_TCK 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// N deployments in one process.
fn fleet(base: &Path, n: usize, idle_secs: u64) -> Value {
    let warmup = 40usize; // bars each before the idle phase (slow = 30)
    let every = Duration::from_secs(5);
    let rt = rt();
    let rig = rig(n as u32);
    let bars = minute_walk(warmup + 200, 43);
    let o = Opts {
        fast: 10,
        slow: 30,
        venue: None,
        durability: Durability::Disk,
    };
    // Let the engine and runtime settle before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib();
    let t = Instant::now();
    let mut started = Vec::with_capacity(n);
    let mut failure = None;
    rt.block_on(async {
        for i in 0..n {
            let id = format!("fleet-{i:04}");
            let (tx, rx) = mpsc::channel(64);
            let r = start(Launch {
                spec: spec(&rig, &id, &o),
                dir: base.join("fleet").join(&id),
                sandbox: rig.sandbox.clone(),
                strategy: rig.strategy.clone(),
                policy: rig.policy.clone(),
                metrics: rig.metrics.clone(),
                feed: FeedSource::Channel(rx),
                lease: None,
            });
            match r {
                Ok(h) => started.push((h, tx)),
                Err(e) => {
                    failure = Some(format!("deployment {i}: {e}"));
                    break;
                }
            }
        }
        for (_, tx) in &started {
            for b in &bars[..warmup] {
                tx.send(message(b)).await.unwrap();
            }
        }
        for (h, _) in &started {
            let done = h.wait_for(|s| s.bars >= warmup as u64 || s.state == Lifecycle::Failed);
            let _ = tokio::time::timeout(Duration::from_secs(120), done).await;
        }
    });
    let start_secs = t.elapsed().as_secs_f64();
    let failed: Vec<String> = started
        .iter()
        .filter_map(|(h, _)| {
            let s = h.status();
            (s.state != Lifecycle::Live || s.bars < warmup as u64)
                .then(|| format!("{}: {:?} {:?}", s.id, s.state, s.failure.map(|f| f.message)))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib();
    let live = started.len() - failed.len();
    // Idle with nothing arriving: the deployments' timers only.
    let (c0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_secs.min(20)));
    let quiet_cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64();
    // Idle as live strategies are: each gets one bar every `every`,
    // staggered across it.
    let senders: Vec<mpsc::Sender<FeedEvent>> = started.iter().map(|(_, tx)| tx.clone()).collect();
    let feed_bars = bars[warmup..].to_vec();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let sent = rt.block_on(async move {
        let ticks = 50u32;
        let slice = every / ticks;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(idle_secs);
        let mut interval = tokio::time::interval(slice);
        let mut tick = 0usize;
        let mut sent = 0u64;
        let mut rounds = vec![0usize; senders.len()];
        while tokio::time::Instant::now() < deadline {
            interval.tick().await;
            for (j, tx) in senders.iter().enumerate() {
                if j % ticks as usize == tick % ticks as usize {
                    let b = &feed_bars[rounds[j] % feed_bars.len()];
                    rounds[j] += 1;
                    if tx.try_send(message(b)).is_ok() {
                        sent += 1;
                    }
                }
            }
            tick += 1;
        }
        sent
    });
    let busy_secs = t0.elapsed().as_secs_f64();
    let fed_cpu = (cpu_seconds() - c0) / busy_secs;
    let rss_fed = rss_kib();
    let stored: u64 = started.iter().map(|(h, _)| h.status().bars).sum();
    let threads_now = threads();
    rt.block_on(async {
        for (h, _) in &started {
            h.stop().await;
        }
    });
    let mib = |k: u64| k as f64 / 1024.0;
    json!({
        "requested": n,
        "started": started.len(),
        "live": live,
        "start_failure": failure,
        "not_live": failed.iter().take(5).collect::<Vec<_>>(),
        "start_and_warmup_secs": start_secs,
        "warmup_bars_each": warmup,
        "rss_before_mib": mib(rss_before),
        "rss_after_mib": mib(rss_after),
        "rss_fed_mib": mib(rss_fed),
        "rss_per_deployment_kib": (rss_after.saturating_sub(rss_before)) as f64 / live.max(1) as f64,
        "cpu_quiet_cores": quiet_cpu,
        "cpu_fed_cores": fed_cpu,
        "fed_secs": busy_secs,
        "bar_every_secs": every.as_secs_f64(),
        "bars_sent_while_fed": sent,
        "bars_stored_total": stored,
        "threads": threads_now,
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = ["gate", "detect", "latency", "fleet"];
    let parts: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let base: PathBuf = match std::env::var("LIVE_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
            std::fs::create_dir_all(&root).unwrap();
            root
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("live-bench-")
        .tempdir_in(&base)
        .unwrap();
    let dir = tmp.path();
    let mut out = serde_json::Map::new();
    for part in parts {
        eprintln!("==> live bench: {part}");
        let t = Instant::now();
        let v = match part {
            "gate" => {
                let n = env_usize("LIVE_GATE_N", 300);
                json!({ "venue_histogram": gate_histogram(dir, n), "api_fill": gate_external(dir, n) })
            }
            "detect" => detect(dir),
            "latency" => {
                let n = env_usize("LIVE_LATENCY_N", 3000);
                json!({
                    "os": latency(dir, Durability::Os, n),
                    "disk": latency(dir, Durability::Disk, (n / 3).max(1)),
                })
            }
            "fleet" => fleet(
                dir,
                env_usize("LIVE_FLEET", 1000),
                env_usize("LIVE_FLEET_IDLE_SECS", 30) as u64,
            ),
            other => {
                eprintln!("unknown part {other} (parts: {all:?})");
                std::process::exit(2);
            }
        };
        eprintln!("{part}: {v} ({:.1} s)", t.elapsed().as_secs_f64());
        out.insert(part.to_owned(), v);
    }
    println!("{}", Value::Object(out));
}
