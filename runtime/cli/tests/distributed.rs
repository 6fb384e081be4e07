//! The distributed mode against real servers started here: API nodes
//! (`palisade serve --store postgres://… --queue redis://…`) and workers
//! (`palisade worker`) over a Postgres made with `initdb` and a Redis (a
//! single node, and a 6-node cluster), each on loopback ports in temporary
//! directories (`palisade_testkit::servers`).

mod support;

use std::time::{Duration, Instant};

use palisade_testkit::servers::{free_port, redis_cli, Postgres, Redis, RedisCluster};
use serde_json::{json, Value};
use support::{guest, repo, Client, Server, PALISADE};

/// Heartbeats quick enough for a test: a dead worker is found in about 2 s.
const BEAT: &str = "300";
const TTL: &str = "1500";

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("palisade-distributed")
        .tempdir()
        .expect("temp dir")
}

/// A Postgres, a single Redis, a temporary directory and the flags that
/// point a node at them.
fn servers() -> (Postgres, Redis, tempfile::TempDir, Vec<String>) {
    Redis::require();
    Postgres::require();
    let (pg, redis) = (Postgres::start(), Redis::start());
    let args = shared(&pg, &redis.url());
    (pg, redis, temp(), args)
}

fn shared(pg: &Postgres, queue: &str) -> Vec<String> {
    vec!["--store".into(), pg.url(), "--queue".into(), queue.into()]
}

fn api(dir: &std::path::Path, name: &str, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(PALISADE, &dir.join(name), &args)
}

fn worker(dir: &std::path::Path, name: &str, args: &[String], extra: &[&str]) -> Server {
    worker_beating(dir, name, args, (BEAT, TTL), extra)
}

/// A worker with its heartbeat interval and TTL (milliseconds).
fn worker_beating(
    dir: &std::path::Path,
    name: &str,
    args: &[String],
    (beat, ttl): (&str, &str),
    extra: &[&str],
) -> Server {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend([
        "--worker-name",
        name,
        "--heartbeat-interval-ms",
        beat,
        "--heartbeat-ttl-ms",
        ttl,
        "--max-running",
        "1",
        "--executor-threads",
        "1",
    ]);
    all.extend(extra);
    Server::start_worker(PALISADE, &dir.join(name), &all)
}

fn workers(c: &Client) -> Vec<Value> {
    c.get("/v1/workers").expect(200).json()["workers"]
        .as_array()
        .expect("workers")
        .clone()
}

/// Polls `/v1/workers` until `done` holds (bounded).
fn wait_workers(c: &Client, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let w = workers(c);
        if done(&w) {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within 30 s: {:?}", workers(c));
}

fn metric(base: &str, series: &str) -> f64 {
    Client::new(base, None)
        .get("/metrics")
        .expect(200)
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} at {base}/metrics"))
}

fn sample() -> Vec<u8> {
    std::fs::read(repo().join("data/sample/spy-like-daily.csv")).expect("sample bars")
}

/// A job of every kind, as in the embedded service's tests.
fn every_kind() -> Vec<Value> {
    vec![
        json!({ "kind": "backtest", "params": { "fast": 5, "slow": 20 }, "seed": 3 }),
        json!({ "kind": "optimize", "grid": ["fast=5:25:10", "slow=20,40,60"], "params": { "size": 50 } }),
        json!({ "kind": "walk_forward", "grid": ["fast=5:15:5", "slow=30,60"], "windows": 3 }),
        json!({ "kind": "monte_carlo", "params": { "fast": 10, "slow": 40 }, "runs": 200, "seed": 5 }),
    ]
}

#[test]
fn every_kind_of_job_runs_on_a_worker_with_the_embedded_services_document() {
    let (pg, _redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let w1 = worker(dir.path(), "w1", &args, &[]);
    let embedded = Server::start(PALISADE, &dir.path().join("embedded"), &[]);
    let (c, e) = (node.client(None), embedded.client(None));

    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    assert_eq!(sma, e.upload_module(&guest("sma_cross")), "the same content id");
    assert_eq!(data, e.upload_csv("spy", &sample()));
    // Uploaded once through the API node: the bytes are in Postgres.
    assert_eq!(pg.psql("SELECT count(*) FROM blobs").trim(), "2");

    for mut job in every_kind() {
        job["strategy"] = json!(sma);
        job["dataset"] = json!(data);
        let (remote, local) = (c.submit(&job), e.submit(&job));
        let got = c.result(&remote).expect(200).text();
        let want = e.result(&local).expect(200).text();
        assert_eq!(
            got, want,
            "{job}: a worker's document differs from the embedded service's"
        );
        let status = c.get(&format!("/v1/jobs/{remote}")).expect(200).json();
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["attempts"], 1, "{status}");
    }
    // A submission that waits gets its result in the reply.
    let waited = c
        .post_json(
            "/v1/jobs?wait=30000",
            &json!({ "strategy": sma, "dataset": data, "params": { "fast": 7, "slow": 30 } }),
        )
        .json();
    assert_eq!(waited["state"], "succeeded", "{waited}");

    // The worker is listed, with what an operator needs.
    let listed = wait_workers(&c, "w1 listed idle with its counts", |w| {
        w.len() == 1 && w[0]["status"] == "idle" && w[0]["jobs_done"] == 5
    });
    let w = &listed[0];
    assert_eq!(w["name"], "w1");
    assert_eq!(w["capacity"], 1);
    assert_eq!(w["jobs_failed"], 0);
    assert!(w["build"].as_str().is_some_and(|b| !b.is_empty()), "{w}");
    assert!(w["uptime_seconds"].as_u64().is_some(), "{w}");
    // Its own metrics, on its own port.
    assert!(metric(&w1.base, "palisade_worker_heartbeats_total") >= 1.0);
    assert_eq!(metric(&w1.base, "palisade_queue_up"), 1.0);
    // Operators only.
    let tenant_only = c.get("/v1/workers");
    assert_eq!(tenant_only.status, 200, "an open server's caller is the operator");
    // The embedded service has none.
    let none = e.get("/v1/workers").expect(200).json();
    assert_eq!(none, json!({ "mode": "embedded", "workers": [] }));
}

#[test]
fn a_killed_workers_job_is_reclaimed_and_its_result_committed_once() {
    let (pg, _redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let mut w1 = worker(dir.path(), "w1", &args, &[]);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    // Long enough that the kill lands mid-job.
    let slow = json!({ "strategy": sma, "dataset": data, "kind": "optimize",
        "grid": ["fast=2:30:1", "slow=20:200:6"] });
    let first = c.submit(&slow);
    let busy = wait_workers(&c, "w1 busy with the first job", |w| {
        w.len() == 1 && w[0]["current_jobs"] == json!([first])
    });
    assert_eq!(busy[0]["status"], "busy");
    // w2 joins, idle (nothing else is queued), then w1 dies mid-job.
    let w2 = worker(dir.path(), "w2", &args, &[]);
    wait_workers(&c, "w2 idle", |w| {
        w.iter().any(|x| x["name"] == "w2" && x["status"] == "idle")
    });
    w1.kill9();
    let killed = Instant::now();
    let others = [c.submit(&slow), c.submit(&slow)];
    // Back in the queue (w2 may be busy with another job) or taken again.
    c.wait_job(&first, "reclaimed", |v| {
        v["state"] == "queued" || v["attempts"] == 2
    });
    let reclaim = killed.elapsed();
    // Its last beat was at most one interval before the kill: the job is
    // taken again within TTL + one interval of it (plus polling slack).
    assert!(
        reclaim < Duration::from_millis(1500 + 300 + 1000),
        "reclaimed after {reclaim:?}, more than TTL + one interval (+ slack)"
    );
    assert!(
        reclaim > Duration::from_millis(1500 - 300),
        "reclaimed before the TTL: {reclaim:?}"
    );
    for id in std::iter::once(&first).chain(&others) {
        let r = c.result(id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM results").trim(),
        "3",
        "one result per job"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(attempts::text, ',' ORDER BY seq) FROM jobs")
            .trim(),
        "2,1,1",
        "the killed job ran twice, the others once"
    );
    let listed = wait_workers(&c, "w1 down, w2 idle", |w| {
        w.iter().any(|x| x["name"] == "w1" && x["status"] == "down")
            && w.iter().any(|x| x["name"] == "w2" && x["status"] == "idle")
    });
    assert_eq!(listed.len(), 2);
    assert!(metric(&w2.base, "palisade_reclaimed_jobs_total") >= 1.0);
    assert!(
        metric(&node.base, "palisade_workers{status=\"down\"}") >= 1.0
            || wait_metric(&node.base, "palisade_workers{status=\"down\"}", 1.0)
    );
}

/// Polls a metric until it reaches `at_least` (bounded); true when it did.
fn wait_metric(base: &str, series: &str, at_least: f64) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if metric(base, series) >= at_least {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_draining_worker_finishes_its_job_and_leaves() {
    let (_pg, _redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let mut w1 = worker(dir.path(), "w1", &args, &["--log", "info"]);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = c.submit(&json!({ "strategy": sma, "dataset": data, "kind": "optimize",
        "grid": ["fast=2:20:1", "slow=20:100:8"] }));
    wait_workers(&c, "w1 busy", |w| w.len() == 1 && w[0]["status"] == "busy");
    let status = w1.terminate();
    assert!(status.success(), "a drained worker exits 0: {status:?}");
    let r = c.get(&format!("/v1/jobs/{job}")).expect(200).json();
    assert_eq!(r["state"], "succeeded", "finished within the grace period: {r}");
    assert_eq!(r["attempts"], 1, "{r}");
    // Gone from the list at once, not `down` after its TTL.
    assert!(workers(&c).is_empty(), "{:?}", workers(&c));
}

#[test]
fn an_unreachable_store_or_queue_at_start_is_named_with_its_address() {
    Redis::require();
    Postgres::require();
    let (pg, redis) = (Postgres::start(), Redis::start());
    let dir = temp();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(PALISADE)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("PALISADE_CONNECT_TIMEOUT_MS", "1000")
            .output()
            .expect("run palisade");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let nowhere = free_port();
    let bad_pg = format!("postgres://palisade:secret@127.0.0.1:{nowhere}/postgres");
    let bad_redis = format!("redis://127.0.0.1:{nowhere}");
    for command in ["serve", "worker"] {
        let e = run(&[command, "--store", &bad_pg, "--queue", &redis.url()]);
        assert!(
            e.contains(&format!(
                "Postgres at postgres://palisade:***@127.0.0.1:{nowhere}/postgres"
            )),
            "{e}"
        );
        assert!(!e.contains("secret"), "the password is not printed: {e}");
        let e = run(&[command, "--store", &pg.url(), "--queue", &bad_redis]);
        assert!(
            e.contains(&format!("Redis at redis://127.0.0.1:{nowhere}")),
            "{e}"
        );
        let e = run(&[command, "--store", &pg.url()]);
        assert!(e.contains("queue") && e.contains("set together"), "{e}");
        let e = run(&[command, "--store", "mysql://x", "--queue", &redis.url()]);
        assert!(e.contains("store") && e.contains("Postgres URL"), "{e}");
    }
    let e = run(&["worker"]);
    assert!(e.contains("palisade worker needs --store"), "{e}");
    let e = run(&[
        "serve",
        "--store",
        &pg.url(),
        "--queue",
        &redis.url(),
        "--heartbeat-ttl-ms",
        "300",
        "--heartbeat-interval-ms",
        "300",
    ]);
    assert!(e.contains("heartbeat_ttl_ms"), "{e}");
}

#[test]
fn two_api_nodes_share_the_store_and_a_cluster_survives_losing_a_master() {
    Redis::require();
    Postgres::require();
    let pg = Postgres::start();
    let mut cluster = RedisCluster::start();
    let dir = temp();
    let seed = cluster.urls()[0].clone();
    let args = shared(&pg, &seed);
    let (a, b) = (api(dir.path(), "a", &args), api(dir.path(), "b", &args));
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    let _w2 = worker(dir.path(), "w2", &args, &[]);
    let (ca, cb) = (a.client(None), b.client(None));
    let (sma, data) = (
        ca.upload_module(&guest("sma_cross")),
        ca.upload_csv("spy", &sample()),
    );
    let job = |fast: u32| json!({ "strategy": sma, "dataset": data, "params": { "fast": fast, "slow": 40 } });
    // Node b sees what node a stored, and numbers jobs from the same sequence.
    let mut ids: Vec<String> = Vec::new();
    for fast in 2..12 {
        ids.push(if fast % 2 == 0 {
            ca.submit(&job(fast))
        } else {
            cb.submit(&job(fast))
        });
    }
    for id in &ids {
        assert_eq!(cb.result(id).status, 200);
    }
    // The master of the queue's slot dies; its replica takes over.
    let slot: u16 = redis_cli(cluster.ports()[0], &["CLUSTER", "KEYSLOT", "{palisade}"])
        .trim()
        .parse()
        .expect("a slot");
    cluster.kill9_master_of_slot(slot);
    cluster.wait_ok(Duration::from_secs(20));
    let mut after: Vec<String> = Vec::new();
    let started = Instant::now();
    while after.len() < 10 && started.elapsed() < Duration::from_secs(60) {
        let r = ca.post_json("/v1/jobs", &job(20 + after.len() as u32));
        match r.status {
            201 => after.push(r.json()["id"].as_str().expect("id").to_owned()),
            503 => {
                assert!(r.retry_after.is_some(), "a 503 says when to retry");
                std::thread::sleep(Duration::from_millis(200));
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!(after.len(), 10, "submissions resumed after the failover");
    for id in ids.iter().chain(&after) {
        let r = ca.result(id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
    let seqs = pg.psql("SELECT count(DISTINCT seq) = count(*) FROM jobs");
    assert_eq!(seqs.trim(), "t", "no two jobs share a number");
    assert_eq!(pg.psql("SELECT count(*) FROM results").trim(), "20");
}

#[test]
fn a_postgres_restart_refuses_submissions_with_503_then_work_resumes() {
    let (mut pg, _redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = json!({ "strategy": sma, "dataset": data, "params": { "fast": 5, "slow": 20 } });
    let before: Vec<String> = (0..3).map(|_| c.submit(&job)).collect();
    pg.stop_immediate();
    let refused = c.post_json("/v1/jobs", &job);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.retry_after.is_some());
    assert_eq!(c.get("/readyz").status, 503);
    pg.start_again();
    let started = Instant::now();
    while c.get("/readyz").status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ready again within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = c.submit(&job);
    for id in before.iter().chain(std::iter::once(&after)) {
        let r = c.result(id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
}

/// `palisade load` against an API node, in the background: its JSON
/// summary once it ends.
fn load(base: &str, seconds: u32, concurrency: u32) -> std::thread::JoinHandle<Value> {
    let (base, module) = (base.to_owned(), support::guest_path("sma_cross"));
    let data = format!("SPY={}", repo().join("data/sample/spy-like-daily.csv").display());
    std::thread::spawn(move || {
        let out = std::process::Command::new(PALISADE)
            .args([
                "load", "--url", &base, "--module", &module, "--data", &data, "--json",
            ])
            .args([
                "--duration",
                &format!("{seconds}s"),
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args([
                "--mix",
                "backtest=6,optimize=1",
                "--retries",
                "60",
                "--job-timeout",
                "120s",
            ])
            .output()
            .expect("run palisade load");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "palisade load printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
}

/// The time from `at` (ms since the epoch) to the first job that ended
/// after it: how long the fleet took to finish work again.
fn recovered_after(pg: &Postgres, at: i64) -> String {
    let first = pg.psql(&format!("SELECT min(finished) FROM jobs WHERE finished > {at}"));
    match first.trim().parse::<i64>() {
        Ok(ms) => format!("{:.2} s", (ms - at) as f64 / 1000.0),
        Err(_) => "never".into(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn faults_under_load_lose_no_acknowledged_job_and_commit_no_result_twice() {
    Redis::require();
    Postgres::require();
    let mut pg = Postgres::start();
    let mut cluster = RedisCluster::start();
    let dir = temp();
    let args = shared(&pg, &cluster.urls()[0]);
    let a = api(dir.path(), "a", &args);
    let b_port = free_port().to_string();
    let b_listen = format!("127.0.0.1:{b_port}");
    let mut b_args = args.clone();
    b_args.extend(["--listen".to_string(), b_listen.clone()]);
    let mut b = api(dir.path(), "b", &b_args);
    let mut w1 = worker(dir.path(), "w1", &args, &[]);
    let _w2 = worker(dir.path(), "w2", &args, &[]);
    // Both nodes under load for the whole run; the faults come one by one.
    let (load_a, load_b) = (load(&a.base, 24, 3), load(&b.base, 24, 2));
    let mut faults: Vec<(&str, i64)> = Vec::new();
    std::thread::sleep(Duration::from_secs(3));

    faults.push(("kill -9 a worker (w1), start w3", now_ms()));
    w1.kill9();
    let _w3 = worker(dir.path(), "w3", &args, &[]);
    std::thread::sleep(Duration::from_secs(4));

    faults.push(("kill -9 an API node (b), restart it", now_ms()));
    b.kill9();
    std::thread::sleep(Duration::from_secs(1));
    let _b2 = api(dir.path(), "b", &b_args);
    std::thread::sleep(Duration::from_secs(4));

    faults.push(("kill -9 the Redis master of the queue's slot", now_ms()));
    let slot: u16 = redis_cli(cluster.ports()[0], &["CLUSTER", "KEYSLOT", "{palisade}"])
        .trim()
        .parse()
        .expect("a slot");
    cluster.kill9_master_of_slot(slot);
    cluster.wait_ok(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));

    faults.push(("restart Postgres (immediate stop: a crash)", now_ms()));
    pg.stop_immediate();
    std::thread::sleep(Duration::from_secs(1));
    pg.start_again();

    let (sa, sb) = (load_a.join().expect("load a"), load_b.join().expect("load b"));
    let acknowledged = |s: &Value| s["jobs"].as_u64().unwrap_or(0) - s["dropped"].as_u64().unwrap_or(0);
    let stored: u64 = pg
        .psql("SELECT count(*) FROM jobs")
        .trim()
        .parse()
        .expect("a count");
    let ended: u64 = pg
        .psql("SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'timed_out')")
        .trim()
        .parse()
        .expect("a count");
    let results: u64 = pg
        .psql("SELECT count(*) FROM results")
        .trim()
        .parse()
        .expect("a count");
    let succeeded: u64 = pg
        .psql("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
        .trim()
        .parse()
        .expect("a count");
    let rerun = pg.psql("SELECT count(*) FROM jobs WHERE attempts > 1");
    eprintln!("faults under load: a {sa}\nb {sb}");
    for (fault, at) in &faults {
        eprintln!("| {fault} | {} |", recovered_after(&pg, *at));
    }
    eprintln!(
        "acknowledged {} (a {} + b {}), stored {stored}, ended {ended}, succeeded {succeeded}, results {results}, re-run {}",
        acknowledged(&sa) + acknowledged(&sb),
        acknowledged(&sa),
        acknowledged(&sb),
        rerun.trim()
    );
    for s in [&sa, &sb] {
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(s["dropped"], 0, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
        assert_eq!(s["jobs"], s["succeeded"], "{s}");
    }
    // Every acknowledged job is stored and ended; a retried submission is
    // one job (its Idempotency-Key), so the store holds exactly them.
    assert_eq!(
        stored,
        acknowledged(&sa) + acknowledged(&sb),
        "jobs lost or duplicated"
    );
    assert_eq!(ended, stored, "jobs not ended");
    // One result per succeeded job: none lost, none committed twice.
    assert_eq!(results, succeeded);
}

#[test]
fn an_entry_read_by_a_worker_that_died_before_taking_it_runs_anyway() {
    let (_pg, redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = c.submit(&json!({ "strategy": sma, "dataset": data, "params": { "fast": 5, "slow": 20 } }));
    // A worker read the entry and died before claiming the job: its
    // consumer holds the entry, and it has no heartbeat.
    let stream = "{palisade}:jobs:normal";
    let read = redis_cli(
        redis.port(),
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "ghost",
            "COUNT",
            "1",
            "STREAMS",
            stream,
            ">",
        ],
    );
    assert!(read.contains(&job), "{read}");
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    let r = c.result(&job);
    assert_eq!(r.status, 200, "{}", r.text());
    let status = c.get(&format!("/v1/jobs/{job}")).expect(200).json();
    assert_eq!(status["attempts"], 1, "{status}");
    let consumers = redis_cli(redis.port(), &["XINFO", "CONSUMERS", stream, "workers"]);
    assert!(
        !consumers.contains("ghost"),
        "the dead consumer is dropped: {consumers}"
    );
}

/// A job long enough that a kill or a drain lands while it runs.
fn slow_job(sma: &str, data: &str) -> Value {
    json!({ "strategy": sma, "dataset": data, "kind": "optimize", "grid": ["fast=2:30:1", "slow=20:200:6"] })
}

#[test]
fn a_job_whose_workers_keep_dying_ends_failed_interrupted_after_max_attempts() {
    let (pg, _redis, dir, mut args) = servers();
    with_config(&mut args, dir.path(), "attempts", "max_attempts = 2\n");
    let node = api(dir.path(), "api", &args);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = c.submit(&slow_job(&sma, &data));
    for (attempt, name) in [(1, "w1"), (2, "w2")] {
        let mut w = worker(dir.path(), name, &args, &[]);
        c.wait_job(&job, "running", |v| {
            v["state"] == "running" && v["attempts"] == attempt
        });
        w.kill9();
    }
    // The next worker's reaper finds it started twice: failed, not run again.
    let _w3 = worker(dir.path(), "w3", &args, &[]);
    let ended = c.wait_job(&job, "failed", |v| v["state"] != "running");
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["error"]["cause"], "interrupted", "{ended}");
    assert_eq!(ended["attempts"], 2, "{ended}");
    assert_eq!(pg.psql("SELECT count(*) FROM results").trim(), "0");
}

#[test]
fn a_drain_past_its_grace_hands_the_job_back_and_another_worker_runs_it() {
    let (pg, _redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let mut w1 = worker(
        dir.path(),
        "w1",
        &args,
        &["--config", &grace_file(dir.path(), 100)],
    );
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = c.submit(&slow_job(&sma, &data));
    c.wait_job(&job, "running on w1", |v| v["state"] == "running");
    assert!(w1.terminate().success());
    let back = c.get(&format!("/v1/jobs/{job}")).expect(200).json();
    assert_eq!(back["state"], "queued", "handed back: {back}");
    assert!(workers(&c).is_empty(), "w1 left the list");
    let _w2 = worker(dir.path(), "w2", &args, &[]);
    assert_eq!(c.result(&job).status, 200);
    let done = c.get(&format!("/v1/jobs/{job}")).expect(200).json();
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(pg.psql("SELECT count(*) FROM results").trim(), "1");
}

/// Adds `--config FILE` to `args`, FILE holding `text`.
fn with_config(args: &mut Vec<String>, dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config file");
    args.extend(["--config".to_string(), path.display().to_string()]);
}

/// A config file with `shutdown_grace_ms`.
fn grace_file(dir: &std::path::Path, ms: u64) -> String {
    let path = dir.join(format!("grace-{ms}.toml"));
    std::fs::write(&path, format!("shutdown_grace_ms = {ms}\n")).expect("config file");
    path.display().to_string()
}

#[test]
fn redis_lost_while_running_loses_no_acknowledged_job() {
    let (_pg, mut redis, dir, args) = servers();
    let node = api(dir.path(), "api", &args);
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let job = |fast: u32| json!({ "strategy": sma, "dataset": data, "params": { "fast": fast, "slow": 30 } });
    assert_eq!(c.result(&c.submit(&job(5))).status, 200);
    // Redis dies (and comes back empty: no persistence): not ready, but a
    // submission committed to Postgres is acknowledged all the same.
    redis.kill9();
    let started = Instant::now();
    while c.get("/readyz").status != 503 {
        assert!(started.elapsed() < Duration::from_secs(10), "/readyz noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let during: Vec<String> = (6..9).map(|f| c.submit(&job(f))).collect();
    redis.restart();
    // The groups are made again, and the reconciler gives every queued job
    // without an entry a new one.
    for id in &during {
        let r = c.result(id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
    assert_eq!(c.get("/readyz").status, 200);
}

#[test]
fn the_shared_queue_bounds_a_tenant_across_api_nodes() {
    let (_pg, _redis, dir, mut args) = servers();
    with_config(&mut args, dir.path(), "bounds", "max_queued_per_tenant = 2\n");
    let (a, b) = (api(dir.path(), "a", &args), api(dir.path(), "b", &args));
    let (ca, cb) = (a.client(None), b.client(None));
    let (sma, data) = (
        ca.upload_module(&guest("sma_cross")),
        ca.upload_csv("spy", &sample()),
    );
    let job = json!({ "strategy": sma, "dataset": data, "params": { "fast": 5, "slow": 20 } });
    // No worker yet: jobs wait. Two fit, on either node.
    let first = [ca.submit(&job), cb.submit(&job)];
    for c in [&ca, &cb] {
        let refused = c.post_json("/v1/jobs", &job);
        let problem = refused.problem(429, "queue-full");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("max_queued_per_tenant = 2"),
            "{problem}"
        );
    }
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    for id in &first {
        assert_eq!(ca.result(id).status, 200);
    }
    assert_eq!(cb.result(&cb.submit(&job)).status, 200, "room again");
}

#[test]
fn a_worker_listens_where_its_environment_says_without_a_tokens_file() {
    let (_pg, _redis, dir, args) = servers();
    let port = free_port();
    let mut child = std::process::Command::new(PALISADE)
        .arg("worker")
        .args(&args)
        .arg("--data-dir")
        .arg(dir.path().join("w"))
        .env("PALISADE_LISTEN", format!("0.0.0.0:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("its first line");
    // Its probes answer anyone; without tokens it runs no deployment, so
    // nobody on the network is the operator of one.
    let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
    let health = c.get("/healthz").status;
    let deployments = c.get("/v1/deployments").status;
    let stops = c.post_json("/internal/stops/apply", &json!({})).status;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.ends_with(&format!(" on http://0.0.0.0:{port}\n")),
        "{line:?}"
    );
    assert_eq!((health, deployments, stops), (200, 404, 404));
}

#[test]
fn a_policy_replaced_or_reverted_on_one_api_node_is_in_force_on_the_others() {
    let (_pg, _redis, dir, args) = servers();
    let (a, b) = (api(dir.path(), "a", &args), api(dir.path(), "b", &args));
    let (ca, cb) = (a.client(None), b.client(None));
    let shipped = cb.get("/v1/policies/strict").expect(200).json()["hash"].clone();
    let put = ca
        .put(
            "/v1/policies/strict",
            "application/toml",
            b"fuel_per_event = 123456\n",
        )
        .expect(200)
        .json();
    let replaced = put["hash"].clone();
    assert_ne!(replaced, shipped);
    let until = |what: &str, want: &Value| {
        let started = Instant::now();
        loop {
            let got = cb.get("/v1/policies/strict").expect(200).json();
            if got["hash"] == *want {
                return got;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{what}: {got}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let seen = until("replaced on b", &replaced);
    assert_eq!(seen["policy"]["fuel_per_event"], 123456, "{seen}");
    ca.delete("/v1/policies/strict").expect(200);
    until("reverted on b", &shipped);
}

#[test]
fn a_tenants_running_cap_holds_across_workers() {
    let (_pg, _redis, dir, mut args) = servers();
    with_config(&mut args, dir.path(), "cap", "max_running_per_tenant = 1\n");
    let node = api(dir.path(), "api", &args);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    let _w2 = worker(dir.path(), "w2", &args, &[]);
    let jobs: Vec<String> = (0..3).map(|_| c.submit(&slow_job(&sma, &data))).collect();
    // Two idle workers, three jobs of one tenant: never two at once. A job
    // counts as running from its claim (`started`) to its end (`finished`),
    // so those spans must not overlap (polling states one job at a time
    // could see a job that just ended beside the one claimed after it).
    let views: Vec<Value> = jobs
        .iter()
        .map(|id| {
            c.result(id).expect(200); // a server-side long poll to its end
            let v = c.get(&format!("/v1/jobs/{id}")).expect(200).json();
            assert_eq!(v["state"], "succeeded", "{v}");
            v
        })
        .collect();
    // RFC 3339 with milliseconds, in UTC: ordered as text.
    let mut spans: Vec<(String, String)> = views
        .iter()
        .map(|v| {
            let at = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}: {v}")).to_owned();
            (at("started"), at("finished"))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "max_running_per_tenant = 1 across two workers, but two ran at once: {spans:?}"
        );
    }
}

#[test]
fn a_tenants_submission_rate_holds_across_api_nodes() {
    let (_pg, _redis, dir, mut args) = servers();
    with_config(
        &mut args,
        dir.path(),
        "rate",
        "submit_rate = 0.2\nsubmit_burst = 2\n",
    );
    let (a, b) = (api(dir.path(), "a", &args), api(dir.path(), "b", &args));
    let (ca, cb) = (a.client(None), b.client(None));
    let (sma, data) = (
        ca.upload_module(&guest("sma_cross")),
        ca.upload_csv("spy", &sample()),
    );
    let job = json!({ "strategy": sma, "dataset": data, "params": { "fast": 5, "slow": 20 } });
    // The burst, one on each node; then either node refuses.
    ca.submit(&job);
    cb.submit(&job);
    for c in [&ca, &cb] {
        let refused = c.post_json("/v1/jobs", &job);
        let retry = refused.retry_after.clone();
        let problem = refused.problem(429, "rate-limited");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("0.2 jobs per second"),
            "{problem}"
        );
        let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
        assert!((1..=5).contains(&secs), "a token every 5 s: Retry-After {secs}");
    }
}

#[test]
fn an_aged_low_priority_job_goes_before_newer_high_ones() {
    let (_pg, redis, dir, mut args) = servers();
    with_config(&mut args, dir.path(), "aging", "aging_ms = 300\n");
    let node = api(dir.path(), "api", &args);
    let c = node.client(None);
    let (sma, data) = (
        c.upload_module(&guest("sma_cross")),
        c.upload_csv("spy", &sample()),
    );
    let _w1 = worker(dir.path(), "w1", &args, &[]);
    // The one worker is busy; a low job waits until it has risen twice.
    let busy = c.submit(&slow_job(&sma, &data));
    c.wait_job(&busy, "running", |v| v["state"] == "running");
    let mut low = slow_job(&sma, &data);
    low["priority"] = json!("low");
    let low = c.submit(&low);
    let started = Instant::now();
    while !redis_cli(redis.port(), &["XRANGE", "{palisade}:jobs:high", "-", "+"]).contains(&low) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the low job rose to high"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let waiting = c.get(&format!("/v1/jobs/{busy}")).expect(200).json();
    assert_eq!(waiting["state"], "running", "the worker is still busy: {waiting}");
    let mut high = slow_job(&sma, &data);
    high["priority"] = json!("high");
    let highs = [c.submit(&high), c.submit(&high)];
    for id in std::iter::once(&low).chain(&highs) {
        assert_eq!(c.result(id).status, 200);
    }
    let seq = |id: &str| {
        c.get(&format!("/v1/jobs/{id}")).expect(200).json()["started"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        seq(&low) < seq(&highs[0]),
        "the aged low job ran before the newer high ones"
    );
}

/// A deployment's status through the API node, polled until `done` holds.
fn wait_deployment(c: &Client, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    // Bounded, and generous: tests of this file run two at a time on two
    // cores, each with its own Postgres, Redis and servers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c.get(&format!("/v1/deployments/{id}"));
        if r.status == 200 {
            let v = r.json();
            if done(&v) {
                return v;
            }
        } else {
            // Between a worker's death and the takeover: 503, never 404.
            assert_eq!(r.status, 503, "{id}: {}", r.text());
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {what} did not happen: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The intents a webhook got (its bodies): one sent twice must be one a
/// worker with its data dir in `lost` published just before it died or
/// lost its lease (paused, or too loaded to renew it), decided on a bar it
/// had not shipped yet, and decided again by its successor on that bar
/// fetched again (docs/distributed.md). One that none of them published,
/// sent twice, would be a bug.
fn sent_twice_only_across_a_loss(bodies: &[String], lost: &[std::path::PathBuf]) {
    let mut sorted: Vec<String> = bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    sorted.sort();
    for pair in sorted.windows(2).filter(|w| w[0] == w[1]) {
        let id = &pair[0];
        let deployment = id.split(':').next().unwrap();
        let published = |dir: &std::path::PathBuf| {
            let journal = dir.join("deployments").join(deployment).join("intents.jsonl");
            std::fs::read_to_string(journal)
                .unwrap_or_default()
                .contains(&format!("\"id\":\"{id}\""))
        };
        assert!(
            lost.iter().any(published),
            "{id} was sent twice, and by no worker that lost it: {lost:?}"
        );
    }
}

/// The deployment's published intents, as (order id, side, qty, ts).
fn intents(c: &Client, id: &str) -> Vec<(u64, String, String, i64)> {
    let v = c.get(&format!("/v1/deployments/{id}/intents")).expect(200).json();
    v["intents"]
        .as_array()
        .expect("intents")
        .iter()
        .map(|i| {
            (
                i["order_id"].as_u64().unwrap(),
                i["side"].to_string(),
                i["qty"].to_string(),
                i["decided_ts"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

fn live_deployment(id: &str, strategy: &str, feed: &str) -> Value {
    json!({
        "id": id, "strategy": strategy, "symbols": ["SPY"], "interval_secs": 86400,
        "feed": {"url": feed}, "params": {"fast": 5, "slow": 20},
        "durability": "os", "verify_every": 0
    })
}

#[test]
fn a_deployment_moves_to_another_worker_when_its_worker_dies_losing_no_bar_and_no_acknowledged_fill() {
    use support::{replay_at, tokens, ALICE, BOB, OPS};
    let (pg, _redis, dir, mut args) = servers();
    args.extend(["--tokens".to_owned(), tokens(dir.path())]);
    let node = api(dir.path(), "api", &args);
    let mut w1 = worker(dir.path(), "w1", &args, &[]);
    let mut w2 = worker(dir.path(), "w2", &args, &[]);
    let (alice, bob, ops) = (
        node.client(Some(ALICE)),
        node.client(Some(BOB)),
        node.client(Some(OPS)),
    );
    wait_workers(&ops, "two workers up, reachable", |w| {
        w.iter()
            .filter(|x| x["status"] == "idle" && x["url"].is_string())
            .count()
            == 2
    });
    // 2,520 daily bars at about 3 ms each: the kill lands mid-feed.
    let feed = replay_at("30000000");
    let strategy = alice.upload_module(&guest("sma_cross"));
    let r = alice.post_json("/v1/deployments", &live_deployment("d1", &strategy, &feed.1));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        alice
            .post_json("/v1/deployments", &live_deployment("d1", &strategy, &feed.1))
            .status,
        409,
        "an id is taken across the fleet"
    );
    bob.get("/v1/deployments/d1").problem(404, "not-found");

    let first = wait_deployment(&alice, "d1", "300 bars handled", |v| {
        v["bars"].as_u64() >= Some(300)
    });
    let owner = first["worker"].as_str().expect("a worker runs it").to_owned();
    let name = if workers(&ops)
        .iter()
        .any(|w| w["id"] == owner.as_str() && w["name"] == "w1")
    {
        "w1"
    } else {
        "w2"
    };
    let killed = Instant::now();
    if name == "w1" {
        w1.kill9();
    } else {
        w2.kill9();
    }
    let moved = wait_deployment(&alice, "d1", "taken over by the other worker", |v| {
        v["worker"].as_str().is_some_and(|w| w != owner) && v["state"] == "live"
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1500 + 300 + 3000),
        "taken over after {took:?}: more than a lease's life + one heartbeat (+ slack)"
    );
    assert!(moved["recovered_bars"].as_u64().unwrap() >= 300, "{moved}");

    // Every bar once: none lost, none handled twice, none refused.
    let done = wait_deployment(&alice, "d1", "every bar handled", |v| v["bars"] == 2520);
    assert_eq!(done["rejected_bars"], 0, "{done}");
    assert_eq!(done["gap_bars"], 0, "{done}");
    assert_eq!(done["gate"]["state"], "open", "{done}");
    assert_eq!(done["signal_mismatches"], 0, "{done}");
    // The same intents as a deployment that never moved.
    let r = alice.post_json("/v1/deployments", &live_deployment("d2", &strategy, &feed.1));
    assert_eq!(r.status, 201, "{}", r.text());
    wait_deployment(&alice, "d2", "every bar handled", |v| v["bars"] == 2520);
    let (moved_intents, still) = (intents(&alice, "d1"), intents(&alice, "d2"));
    assert!(!still.is_empty());
    assert_eq!(moved_intents, still, "a move changes no intent");

    // A fill acknowledged by the new worker survives its death too.
    let intent = format!("d1:{}", moved_intents[0].0);
    // Filled now: a fill stamped before its intent was published is refused.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let fill = json!({"intent_id": intent, "qty": 1.0, "price": 100.0, "ts_ms": now_ms,
        "venue_fill_id": "v-1"});
    alice.post_json("/v1/deployments/d1/fills", &fill).expect(200);
    let second = alice.get("/v1/deployments/d1").expect(200).json()["worker"]
        .as_str()
        .unwrap()
        .to_owned();
    let w3 = worker(dir.path(), "w3", &args, &[]);
    if name == "w1" {
        w2.kill9();
    } else {
        w1.kill9();
    }
    let third = wait_deployment(&alice, "d1", "taken over by w3", |v| {
        v["worker"].as_str().is_some_and(|w| w != second) && v["state"] == "live"
    });
    assert_eq!(third["live_fills"], 1, "the acknowledged fill is kept: {third}");
    alice
        .post_json("/v1/deployments/d1/fills", &fill)
        .problem(422, "invalid-fill");

    // Emergency stops reach the worker running the deployment.
    let r = ops.post_json(
        "/v1/emergency-stop",
        &json!({"scope": "tenant", "tenant": "alice"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["stopped"].as_array().unwrap().contains(&json!("d1")),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["unreached_workers"], json!([]), "{}", r.text());
    assert_eq!(
        alice.get("/v1/deployments/d1").expect(200).json()["gate"]["state"],
        "stopped"
    );
    alice
        .post_json("/v1/deployments/d1/gate", &json!({"action": "resume"}))
        .problem(409, "conflict");
    let r = alice.post_json(
        "/v1/emergency-stop/release",
        &json!({"scope": "tenant", "tenant": "alice"}),
    );
    assert_eq!(
        r.status,
        403,
        "an operator's stop is the operator's to lift: {}",
        r.text()
    );
    let r = ops.post_json(
        "/v1/emergency-stop/release",
        &json!({"scope": "tenant", "tenant": "alice"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        alice.get("/v1/deployments/d1").expect(200).json()["gate"]["state"],
        "suspended"
    );

    // A stop lifted while its deployment moves is lifted where it lands.
    ops.post_json("/v1/emergency-stop", &json!({"scope": "all"}))
        .expect(200);
    let on3 = wait_deployment(&alice, "d1", "stopped on w3", |v| v["gate"]["state"] == "stopped");
    let w4 = worker(dir.path(), "w4", &args, &[]);
    wait_workers(&ops, "w4 reachable", |w| {
        w.iter().any(|x| x["name"] == "w4" && x["url"].is_string())
    });
    let mut w3 = w3;
    w3.kill9();
    ops.post_json("/v1/emergency-stop/release", &json!({"scope": "all"}))
        .expect(200);
    let landed = wait_deployment(&alice, "d1", "taken over by w4, released", |v| {
        v["worker"] != on3["worker"] && v["state"] == "live" && v["gate"]["state"] == "suspended"
    });
    assert_eq!(landed["live_fills"], 1, "{landed}");

    // The list gathers every worker's; a stop is for good.
    let list = ops.get("/v1/deployments").expect(200).json();
    let ids: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1", "d2"], "{list}");
    alice.delete("/v1/deployments/d1").expect(200);
    alice.get("/v1/deployments/d1").problem(404, "not-found");
    assert_eq!(
        pg.psql("SELECT stopped FROM deployments WHERE id = 'd1'").trim(),
        "t"
    );
    drop(w4);
}

fn signal(server: &Server, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &server.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

#[test]
fn a_paused_worker_past_its_lease_publishes_nothing_and_a_draining_one_hands_its_deployments_over() {
    use palisade_testkit::http::WebhookSink;
    use support::{replay_at, tokens, ALICE, OPS};
    let (pg, _redis, dir, mut args) = servers();
    args.extend(["--tokens".to_owned(), tokens(dir.path())]);
    let node = api(dir.path(), "api", &args);
    let w1 = worker(dir.path(), "w1", &args, &[]);
    let (alice, ops) = (node.client(Some(ALICE)), node.client(Some(OPS)));
    wait_workers(&ops, "w1 reachable", |w| w.iter().any(|x| x["url"].is_string()));
    // About 8 ms a bar: some 20 s of feed, so bars keep coming while w1
    // is paused and after it wakes.
    let feed = replay_at("10000000");
    let hook = WebhookSink::start();
    let strategy = alice.upload_module(&guest("sma_cross"));
    let mut spec = live_deployment("d1", &strategy, &feed.1);
    spec["webhook"] = json!({"url": hook.url});
    alice.post_json("/v1/deployments", &spec).expect(201);
    wait_deployment(&alice, "d1", "100 bars on w1", |v| {
        v["bars"].as_u64() >= Some(100)
    });
    let w2 = worker(dir.path(), "w2", &args, &[]);
    wait_workers(&ops, "w2 reachable", |w| {
        w.iter().any(|x| x["name"] == "w2" && x["url"].is_string())
    });
    let on_w1 = alice.get("/v1/deployments/d1").expect(200).json()["worker"].clone();

    signal(&w1, "-STOP");
    wait_deployment(&alice, "d1", "taken over by w2", |v| {
        v["worker"] != on_w1 && v["state"] == "live"
    });
    signal(&w1, "-CONT");
    // w1 wakes with its lease long expired: its copy publishes nothing
    // more and stops (it learns at its next heartbeat or shipment).
    let direct = w1.client(Some(OPS));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = direct.get("/v1/deployments").expect(200).json();
        if list["deployments"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "w1 still runs its copy: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = wait_deployment(&alice, "d1", "every bar handled on w2", |v| v["bars"] == 2520);
    assert_eq!(
        (done["rejected_bars"].as_u64(), done["gap_bars"].as_u64()),
        (Some(0), Some(0)),
        "{done}"
    );
    // Every intent reached the webhook once: none from both workers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let journal = intents(&alice, "d1");
    let mut delivered: Vec<u64>;
    loop {
        delivered = hook
            .bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<Value>(b).unwrap()["order_id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        delivered.sort_unstable();
        delivered.dedup();
        if delivered.len() >= journal.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sent_twice_only_across_a_loss(&hook.bodies(), &[dir.path().join("w1"), dir.path().join("w2")]);
    let journaled: Vec<u64> = journal.iter().map(|i| i.0).collect();
    assert_eq!(delivered, journaled, "the webhook got what the journal holds");

    // A draining worker lets its leases go as it leaves: the deployment is
    // back on w1 without waiting out a lease.
    let mut w2 = w2;
    let on_w2 = done["worker"].as_str().unwrap().to_owned();
    assert!(w2.terminate().success());
    let row = pg.psql("SELECT owner || ' ' || lease_until FROM deployments WHERE id = 'd1'");
    assert!(
        row.trim() == format!("{on_w2} 0") || !row.contains(&on_w2),
        "the lease is let go or taken already: {row}"
    );
    let back = wait_deployment(&alice, "d1", "back on w1", |v| {
        v["worker"] == on_w1 && v["state"] == "live"
    });
    assert_eq!(back["recovered_bars"], 2520, "{back}");
    assert_eq!(intents(&alice, "d1"), journal, "the same journal, moved");
}

#[test]
fn a_takeover_of_many_deployments_longer_than_a_lease_runs_each_on_one_worker() {
    use palisade_testkit::http::WebhookSink;
    use support::{replay_at, tokens, ALICE, OPS};
    let (_pg, _redis, dir, mut args) = servers();
    args.extend(["--tokens".to_owned(), tokens(dir.path())]);
    let node = api(dir.path(), "api", &args);
    let mut w1 = worker(dir.path(), "w1", &args, &[]);
    let (alice, ops) = (node.client(Some(ALICE)), node.client(Some(OPS)));
    wait_workers(&ops, "w1 reachable", |w| w.iter().any(|x| x["url"].is_string()));
    // About 6 ms a bar: the feeds run on through the takeover.
    let feed = replay_at("14400000");
    let hook = WebhookSink::start();
    // Three strategies: a taker compiles each before it starts the first
    // deployment of it, which makes the batch long.
    let strategies: Vec<String> = ["sma_cross", "bollinger_revert", "donchian_breakout"]
        .iter()
        .map(|g| alice.upload_module(&guest(g)))
        .collect();
    let ids: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut spec = live_deployment(id, &strategies[i % 3], &feed.1);
        spec["params"] = json!({});
        spec["webhook"] = json!({"url": hook.url});
        alice.post_json("/v1/deployments", &spec).expect(201);
    }
    for id in &ids {
        wait_deployment(&alice, id, "200 bars on w1", |v| v["bars"].as_u64() >= Some(200));
    }
    // Takers with leases of 300 ms: starting fifteen deployments one after
    // another takes longer than that, so their leases must be renewed
    // while the batch runs, or the other taker claims them meanwhile.
    let taker = |name: &str| worker_beating(dir.path(), name, &args, ("100", "300"), &[]);
    let (w2, w3) = (taker("w2"), taker("w3"));
    wait_workers(&ops, "w2 and w3 reachable", |w| {
        w.iter()
            .filter(|x| x["name"] != "w1" && x["url"].is_string())
            .count()
            == 2
    });
    w1.kill9();
    for id in &ids {
        wait_deployment(&alice, id, "every bar handled after the move", |v| {
            v["bars"] == 2520 && v["state"] == "live"
        });
    }
    // Each runs on one worker, and every intent was sent once.
    let listed = |w: &Server| -> Vec<String> {
        w.client(Some(OPS)).get("/v1/deployments").expect(200).json()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (on2, on3) = (listed(&w2), listed(&w3));
    for id in &ids {
        assert_eq!(
            on2.contains(id) as u8 + on3.contains(id) as u8,
            1,
            "{id}: w2 runs {on2:?}, w3 runs {on3:?}"
        );
    }
    // Takers with 300 ms leases on a loaded machine may lose one to the
    // other too.
    let lost: Vec<std::path::PathBuf> = ["w1", "w2", "w3"].iter().map(|w| dir.path().join(w)).collect();
    sent_twice_only_across_a_loss(&hook.bodies(), &lost);
}

#[test]
fn a_deployment_no_worker_can_start_is_stopped_after_three_takeovers_and_tenants_hold_on_tokenless_workers() {
    use support::{replay_at, tokens, ALICE, BOB, OPS};
    let (pg, _redis, dir, args) = servers();
    // The API node checks tokens; the workers have none (on loopback):
    // the API node tells them who the caller is.
    let mut with_tokens = args.clone();
    with_tokens.extend(["--tokens".to_owned(), tokens(dir.path())]);
    let node = api(dir.path(), "api", &with_tokens);
    let mut w1 = worker(dir.path(), "w1", &args, &[]);
    let (alice, bob, ops) = (
        node.client(Some(ALICE)),
        node.client(Some(BOB)),
        node.client(Some(OPS)),
    );
    wait_workers(&ops, "w1 reachable", |w| w.iter().any(|x| x["url"].is_string()));
    let feed = replay_at("10000000");
    let strategy = alice.upload_module(&guest("sma_cross"));
    alice
        .post_json("/v1/deployments", &live_deployment("x1", &strategy, &feed.1))
        .expect(201);
    let on_w1 = wait_deployment(&alice, "x1", "live on w1", |v| v["state"] == "live");
    assert_eq!(on_w1["tenant"], "alice", "{on_w1}");
    bob.get("/v1/deployments/x1").problem(404, "not-found");
    assert_eq!(
        pg.psql("SELECT tenant FROM deployments WHERE id = 'x1'").trim(),
        "alice"
    );
    // The only other worker may not reach the feed's host: each takeover
    // fails the same way, and the third stops it for good.
    let w2 = worker(dir.path(), "w2", &args, &["--live-hosts", "feeds.example.com"]);
    wait_workers(&ops, "w2 reachable", |w| {
        w.iter().any(|x| x["name"] == "w2" && x["url"].is_string())
    });
    w1.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let r = alice.get("/v1/deployments/x1");
        if r.status == 200 && r.json()["state"] == "failed" {
            break r.json();
        }
        // 503 while a worker claims it; a 404 from a worker whose start
        // just failed and that has not let the lease go yet.
        assert!([200, 404, 503].contains(&r.status), "{}", r.text());
        assert!(Instant::now() < deadline, "x1 is still claimed: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let row =
        pg.psql("SELECT stopped || ' ' || failed_starts || ' ' || error FROM deployments WHERE id = 'x1'");
    assert!(row.starts_with("true 3 ") && row.contains("live_hosts"), "{row}");
    assert!(w2.log_text().contains("stopped for good"), "{}", w2.log_text());
    // Listed as failed, saying why, as the embedded service lists one that
    // did not restart; nothing else reaches it; DELETE stops it for good.
    assert!(
        failed["start_error"].as_str().unwrap().contains("live_hosts"),
        "{failed}"
    );
    let listed = ops.get("/v1/deployments").expect(200).json()["deployments"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["state"], "failed", "{listed}");
    bob.get("/v1/deployments/x1").problem(404, "not-found");
    alice
        .post_json(
            "/v1/deployments/x1/gate",
            &json!({"action": "suspend", "reason": "x"}),
        )
        .problem(409, "conflict");
    alice.delete("/v1/deployments/x1").expect(200);
    alice.get("/v1/deployments/x1").problem(404, "not-found");
    assert_eq!(
        ops.get("/v1/deployments").expect(200).json()["deployments"],
        json!([])
    );
}
