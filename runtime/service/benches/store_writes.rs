//! Job writes per second through the batching writer, into a shared
//! Postgres (started here, from Debian's package, with its defaults but
//! `fsync = off`: see below) and into the embedded SQLite, as the service
//! writes them: every write a whole job row (submission, start or end),
//! sent without waiting, batched by the writer into multi-row statements in
//! one transaction per batch. Also the latency of one write committed and
//! waited for, as a submission waits before it is acknowledged.
//!
//! `cargo bench -p palisade-service --bench store_writes` prints one line per
//! store. The test harness's Postgres runs with `fsync = off` (a crash of
//! the server loses nothing, a power loss may): the figure measures the
//! store's statements and the writer, not this machine's disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_service::storage::{JobRecord, JobState, Storage, Write};
use palisade_testkit::servers::Postgres;

const WRITES: usize = 200_000;
const WAITED: usize = 2_000;

fn record(i: usize) -> JobRecord {
    JobRecord {
        id: format!("j{i:016x}"),
        seq: i as i64 + 1,
        tenant: "bench".into(),
        kind: "backtest".into(),
        strategy: "0".repeat(64),
        dataset: "0123456789abcdef".into(),
        spec: r#"{"kind":"backtest","params":{"fast":10,"slow":30}}"#.into(),
        priority: "normal".into(),
        policy: "default".into(),
        policy_hash: "f".repeat(16),
        state: JobState::Queued,
        progress: 0.0,
        error_cause: None,
        error_message: None,
        created: 1_700_000_000_000 + i as i64,
        started: None,
        finished: None,
        attempts: 0,
    }
}

async fn measure(name: &str, store: Storage) {
    let writer = store.writer(|_, _, _| {});
    let started = Instant::now();
    for i in 0..WRITES {
        writer.send(Write::job(record(i))).await.expect("send");
    }
    // Applied in order: once this is committed, every write before it is.
    writer.commit(Write::Probe).await.expect("flush");
    let batched = WRITES as f64 / started.elapsed().as_secs_f64();
    let mut waits: Vec<Duration> = Vec::with_capacity(WAITED);
    for i in 0..WAITED {
        let t = Instant::now();
        writer
            .commit(Write::job(record(WRITES + i)))
            .await
            .expect("commit");
        waits.push(t.elapsed());
    }
    waits.sort();
    let p50 = waits[WAITED / 2].as_secs_f64() * 1e3;
    let p99 = waits[WAITED * 99 / 100].as_secs_f64() * 1e3;
    println!(
        "{name:<9} {WRITES} job writes sent without waiting: {batched:>9.0} writes/s;  \
         one write committed and waited for: p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    writer.flush_and_stop().await;
    store.close().await;
}

fn main() {
    // `cargo test` runs benches' binaries with --bench absent: do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    Postgres::require();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
    );
    rt.block_on(async {
        let shared = Storage::open_postgres(&pg.url(), &dir.path().join("cache"), Duration::from_secs(5))
            .await
            .expect("postgres");
        measure("postgres", shared).await;
        let embedded = Storage::open(&dir.path().join("embedded")).await.expect("sqlite");
        measure("sqlite", embedded).await;
    });
}
