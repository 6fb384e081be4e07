//! Load benchmark of `palisade serve` over loopback HTTP:
//! `cargo bench -p palisade-runtime --bench service` (guests built first:
//! `scripts/build-guests.sh`).
//!
//! Starts the real server binary on 127.0.0.1 with a temporary data
//! directory, uploads `sma_cross.wasm` and 1,000 bars of
//! `data/sample/spy-like-daily.csv`, then runs `CLIENTS` client threads for
//! `SECONDS` seconds. Each client keeps `DEPTH` jobs in flight (one
//! keep-alive connection each). In mode `wait` (the default) a job is one
//! exchange: `POST /v1/jobs?wait=…` answers with the result once the job
//! ended. In mode `poll` it is two: submit (`POST /v1/jobs`, answered once
//! the job is committed as queued), then wait for the result
//! (`GET /v1/jobs/{id}/result?wait=…`). Meanwhile one more thread calls
//! `/healthz` every 2 ms. Prints jobs completed per second, the
//! submit-to-result latency percentiles and the `/healthz` percentiles.
//!
//! Knobs (environment): `PALISADE_BENCH_CLIENTS` (6), `PALISADE_BENCH_DEPTH`
//! (4), `PALISADE_BENCH_SECONDS` (10), `PALISADE_BENCH_MODE` (`wait` or
//! `poll`). Traffic goes to loopback only; every loop is bounded by the
//! duration.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{guest, sample_csv, Server};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // of ours: run a short smoke round then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let clients = env("PALISADE_BENCH_CLIENTS", 6) as usize;
    let depth = env("PALISADE_BENCH_DEPTH", 4) as usize;
    let seconds = if smoke {
        1
    } else {
        env("PALISADE_BENCH_SECONDS", 10)
    };
    let mode = std::env::var("PALISADE_BENCH_MODE").unwrap_or_else(|_| "wait".into());
    let one_exchange = match mode.as_str() {
        "wait" => true,
        "poll" => false,
        other => panic!("PALISADE_BENCH_MODE is {other:?}: wait or poll"),
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        std::env::var("PALISADE_BENCH_CONFIG").unwrap_or_else(|_| {
            "queue_depth = 1000\nsubmit_rate = 1000000.0\nsubmit_burst = 1000000\n".into()
        }),
    )
    .expect("config");
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, &["--config", config.to_str().expect("utf-8 path")]);
    let client = server.client(None);
    let strategy = client.upload_module(&guest("sma_cross"));
    let dataset = client.upload_csv("spy-like-daily", &sample_csv("spy-like-daily.csv", 1_000));
    let job = json!({ "strategy": strategy, "dataset": dataset });
    // Warm-up: compile caches, connections.
    for _ in 0..50 {
        let id = client.submit(&job);
        client.result(&id).expect(200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients * depth {
        let (client, job) = (server.client(None), job.clone());
        workers.push(std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if one_exchange {
                    // A light check, as a load generator should be: the
                    // end-to-end tests read whole results.
                    let r = client.post_json("/v1/jobs?wait=10000", &job).expect(201);
                    let text = r.text();
                    assert!(
                        text.contains(r#""state":"succeeded""#) && text.contains(r#""output":{"#),
                        "{text}"
                    );
                    latencies.push((t.elapsed(), t.elapsed()));
                    continue;
                }
                let id = client.submit(&job);
                let submitted = t.elapsed();
                let r = client.result(&id);
                assert_eq!(r.status, 200, "{}", r.text());
                latencies.push((t.elapsed(), submitted));
            }
            latencies
        }));
    }
    let health = {
        let (client, stop) = (server.client(None), stop.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                client.get("/healthz").expect(200);
                latencies.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(2));
            }
            latencies
        })
    };
    let both: Vec<(Duration, Duration)> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread"))
        .collect();
    let mut jobs: Vec<Duration> = both.iter().map(|b| b.0).collect();
    let mut submits: Vec<Duration> = both.iter().map(|b| b.1).collect();
    submits.sort();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut healthz = health.join().expect("health thread");
    jobs.sort();
    healthz.sort();

    let rate = jobs.len() as f64 / elapsed.as_secs_f64();
    let p95 = percentile(&jobs, 0.95);
    let h99 = percentile(&healthz, 0.99);
    println!(
        "service: {clients} clients x {depth} in flight, {:.1} s, 1,000-bar sma_cross backtests, mode {mode}",
        elapsed.as_secs_f64()
    );
    println!(
        "  jobs completed: {} ({rate:.0} jobs/s; target >= 5000, ratio {:.2})",
        jobs.len(),
        rate / 5000.0
    );
    println!(
        "  submit-to-result: p50 {:.2} ms, p95 {:.2} ms (target < 20, ratio {:.2}), p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&jobs, 0.5)),
        ms(p95),
        ms(p95) / 20.0,
        ms(percentile(&jobs, 0.99)),
        ms(jobs.last().copied().unwrap_or_default())
    );
    if !one_exchange {
        println!(
            "  of which the submission (POST /v1/jobs until 201): p50 {:.2} ms, p95 {:.2} ms",
            ms(percentile(&submits, 0.5)),
            ms(percentile(&submits, 0.95))
        );
    }
    println!(
        "  /healthz while saturated: {} calls, p50 {:.2} ms, p99 {:.2} ms (target < 5, ratio {:.2})",
        healthz.len(),
        ms(percentile(&healthz, 0.5)),
        ms(h99),
        ms(h99) / 5.0
    );
    let metrics = client.get("/metrics").expect(200).text();
    for line in metrics.lines() {
        if line.starts_with("palisade_step_duration_seconds_sum")
            || line.starts_with("palisade_step_duration_seconds_count")
        {
            println!("  {line}");
        }
    }
}
