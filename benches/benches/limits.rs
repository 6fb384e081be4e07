//! How fast the sandbox stops a guest that must be stopped: the time past its
//! deadline at which a guest stuck in an infinite loop gets control back to
//! the host, and the time from setting a run's cancel flag to the run ending.
//! Issue 2 asks for "its deadline plus a few milliseconds".
//!
//! Run: `scripts/build-guests.sh && cargo bench -p palisade-benches --bench limits`
//! (criterion reports the overshoot or latency itself as the "time").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_run::Policy;
use palisade_run::{params, Cause, RunConfig};
use palisade_sandbox::{EngineSettings, Sandbox};
use palisade_testkit::bars::{minute_dataset as random_walk, DEFAULT_SEED};
use palisade_testkit::guests::bytes as guest_module;

const DEADLINE_MS: u64 = 20;

fn unlimited_fuel(mut p: Policy) -> Policy {
    p.fuel_per_event = 1_000_000_000_000;
    p.fuel_per_run = 1_000_000_000_000_000;
    p
}

fn bench(c: &mut Criterion) {
    let policy = unlimited_fuel(Policy {
        deadline_per_event_ms: DEADLINE_MS,
        ..Policy::default()
    });
    let sandbox = Sandbox::new(EngineSettings::for_policy(&policy)).expect("engine");
    let bytes = guest_module("adversary");
    let strategy = sandbox.load(&bytes, &policy).expect("adversary loads");
    let infinite_loop = [("mode".to_string(), "1".to_string())];
    let values = params::resolve(&strategy.info.manifest, &infinite_loop).unwrap();
    let data = random_walk(100, DEFAULT_SEED);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("stopping_a_runaway_guest");
    group.sample_size(20);
    group.bench_function("deadline_overshoot", |b| {
        b.iter_custom(|iters| {
            let mut past = Duration::ZERO;
            for _ in 0..iters {
                let run = RunConfig {
                    params: values.clone(),
                    ..RunConfig::default()
                };
                let started = Instant::now();
                let out = rt.block_on(sandbox.backtest(&strategy, data.clone(), &policy, &run));
                let took = started.elapsed();
                assert_eq!(out.outcome.unwrap_err().cause, Cause::Deadline);
                past += took.saturating_sub(Duration::from_millis(DEADLINE_MS));
            }
            past
        })
    });
    let patient = unlimited_fuel(Policy::default());
    group.bench_function("cancellation_latency", |b| {
        b.iter_custom(|iters| {
            let mut latency = Duration::ZERO;
            for _ in 0..iters {
                let cancel = Arc::new(AtomicBool::new(false));
                let run = RunConfig {
                    params: values.clone(),
                    cancel: Some(cancel.clone()),
                    ..RunConfig::default()
                };
                let flag = cancel.clone();
                let setter = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    flag.store(true, Ordering::SeqCst);
                    Instant::now()
                });
                let out = rt.block_on(sandbox.backtest(&strategy, data.clone(), &patient, &run));
                let ended = Instant::now();
                let set_at = setter.join().unwrap();
                assert_eq!(out.outcome.unwrap_err().cause, Cause::Cancelled);
                latency += ended.saturating_duration_since(set_at);
            }
            latency
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
