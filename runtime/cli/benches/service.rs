//! Load benchmark of `palisade serve` over loopback HTTP:
//! `cargo bench -p palisade --bench service` (guests built first:
//! `scripts/build-guests.sh`).
//!
//! Starts the real server binary on 127.0.0.1 with a temporary data
//! directory, uploads `sma_cross.wasm` and 1,000 bars of
//! `data/sample/spy-like-daily.csv`, then runs `CLIENTS` clients for
//! `SECONDS` seconds. Each client keeps `DEPTH` jobs in flight (one
//! keep-alive connection each). The clients' connections all run on one
//! thread (a current-thread tokio runtime writing HTTP/1.1 by hand): a load
//! generator with a blocking thread per connection spent more CPU than the
//! server's HTTP thread on this 2-core machine, which the server then
//! lacked. (The generator panics rather than reconnects if the server
//! closes a connection, and expects `content-length` on every answer, as
//! the server sends.) In mode `wait` (the default) a job is one
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
use support::{guest, sample_csv};

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

/// One keep-alive HTTP/1.1 connection to the server.
struct Conn {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Conn {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one request and reads its answer: the status and the body.
    async fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await.expect("send request");
        self.buf.clear();
        let (head_len, body_len) = loop {
            if let Some(head) = find(&self.buf, b"\r\n\r\n") {
                let head_text = std::str::from_utf8(&self.buf[..head]).expect("UTF-8 head");
                let length = head_text
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().expect("content-length"))
                    })
                    .unwrap_or_else(|| panic!("an answer without content-length: {head_text}"));
                break (head + 4, length);
            }
            self.read_more().await;
        };
        while self.buf.len() < head_len + body_len {
            self.read_more().await;
        }
        let status = std::str::from_utf8(&self.buf[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, &self.buf[head_len..head_len + body_len])
    }

    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt;
        let n = self.stream.read_buf(&mut self.buf).await.expect("read answer");
        assert!(n > 0, "the server closed the connection");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One client connection's loop until `deadline`: submit-to-result latency
/// and submission latency of each job.
async fn client_loop(
    addr: &str,
    job: &[u8],
    one_exchange: bool,
    deadline: Instant,
) -> Vec<(Duration, Duration)> {
    let mut conn = Conn::open(addr).await;
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        if one_exchange {
            let (status, body) = conn.exchange("POST", "/v1/jobs?wait=10000", job).await;
            // A light check, as a load generator should be: the end-to-end
            // tests read whole results.
            assert!(
                status == 201
                    && find(body, br#""state":"succeeded""#).is_some()
                    && find(body, br#""output":{"#).is_some(),
                "{status}: {}",
                String::from_utf8_lossy(body)
            );
            let elapsed = t.elapsed();
            latencies.push((elapsed, elapsed));
            continue;
        }
        let (status, body) = conn.exchange("POST", "/v1/jobs", job).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(body));
        let v: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        let id = v["id"].as_str().expect("id").to_owned();
        let submitted = t.elapsed();
        // Each long poll lasts up to 10 s: 20 of them bound the wait.
        for attempt in 1.. {
            let (status, body) = conn
                .exchange("GET", &format!("/v1/jobs/{id}/result?wait=10000"), b"")
                .await;
            match status {
                200 => break,
                202 if attempt < 20 => continue,
                other => panic!("result of {id}: {other}: {}", String::from_utf8_lossy(body)),
            }
        }
        latencies.push((t.elapsed(), submitted));
    }
    latencies
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
    let server = support::server(&data_dir, &["--config", config.to_str().expect("utf-8 path")]);
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
    let addr = server
        .base
        .strip_prefix("http://")
        .expect("an http:// base URL")
        .to_owned();
    let body = serde_json::to_vec(&job).expect("job JSON");
    let load = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        rt.block_on(async move {
            let tasks: Vec<_> = (0..clients * depth)
                .map(|_| {
                    let (addr, body) = (addr.clone(), body.clone());
                    tokio::spawn(async move { client_loop(&addr, &body, one_exchange, deadline).await })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("client task"));
            }
            all
        })
    });
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
    let both: Vec<(Duration, Duration)> = load.join().expect("load thread");
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
