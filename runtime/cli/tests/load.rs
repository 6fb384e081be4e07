//! End-to-end tests of `palisade load`: the real binary against a real
//! `palisade serve` on a loopback port (a temporary data directory), over
//! real HTTP. Exit codes: 0 when every assertion holds, 1 when one fails
//! (named), 2 for a malformed assertion or an unreachable server. No test
//! asserts a speed: latency assertions here hold on any machine (under
//! minutes) or on none (under a nanosecond).

mod support;

use std::process::Output;

use serde_json::Value;
use support::{guest_path, sample_path, PALISADE};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Runs `palisade load` with `args`; returns its exit code, stdout and
/// stderr.
fn load(args: &[&str]) -> (i32, String, String) {
    let out: Output = std::process::Command::new(PALISADE)
        .arg("load")
        .args(args)
        .output()
        .expect("run palisade load");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The usual flags against `url`: sma_cross on the sample bars.
fn sma(url: &str) -> Vec<String> {
    vec![
        "--url".into(),
        url.into(),
        "--module".into(),
        guest_path("sma_cross"),
        "--data".into(),
        format!("SPY={}", sample_path()),
    ]
}

fn with<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn a_small_run_passes_its_assertions_and_a_failing_one_is_named() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let base = sma(&server.base);

    // A mix of kinds; every job succeeds and is counted once.
    let (code, out, err) = load(&with(
        &base,
        &[
            "--jobs",
            "12",
            "--concurrency",
            "3",
            "--mix",
            "backtest=4,optimize=1,walk_forward=1",
            "--json",
            "--assert",
            "failed==0",
            "--assert",
            "p95<120s",
            "--assert",
            "succeeded==12",
            "--assert",
            "errors==0",
        ],
    ));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v = json(&out);
    assert_eq!(v["jobs"], 12, "{v}");
    assert_eq!(v["succeeded"], 12, "{v}");
    assert_eq!(v["jobs_by_kind"]["backtest"], 8, "{v}");
    assert_eq!(v["jobs_by_kind"]["optimize"], 2, "{v}");
    assert_eq!(v["jobs_by_kind"]["walk_forward"], 2, "{v}");
    assert_eq!(
        v["grid"][0], "fast=3,4,5,6,7,8,9,10",
        "the default grid: 8 variants, {v}"
    );
    assert_eq!(v["refused"]["total"], 0, "{v}");
    assert!(v["jobs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    let lat = &v["latency_ms"];
    let (p50, p95, max) = (
        lat["p50"].as_f64().unwrap(),
        lat["p95"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{lat}");
    assert!(v["submit_ms"]["max"].as_f64().unwrap() <= max, "{v}");
    assert!(
        v["assertions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["passed"] == true),
        "{v}"
    );

    // The server counted the same jobs: 12 submitted, none twice.
    let jobs = server.client(None).get("/v1/jobs?limit=100").expect(200).json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 12, "{jobs}");

    // A latency no job can meet: exit 1, naming the assertion; the passing
    // ones pass. The table is printed either way.
    let (code, out, err) = load(&with(
        &base,
        &[
            "--jobs",
            "4",
            "--concurrency",
            "2",
            "--assert",
            "failed==0",
            "--assert",
            "p95<0.000001ms",
        ],
    ));
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("assertion failed: p95<0.000001ms (measured "),
        "{err}"
    );
    assert!(err.trim_end().ends_with(" ms)"), "{err}");
    assert!(!err.contains("failed==0"), "{err}");
    assert!(
        out.contains("pass failed==0") && out.contains("FAIL p95<0.000001ms"),
        "{out}"
    );
    assert!(out.contains("jobs/s") && out.contains("end to end"), "{out}");

    // A count on the wrong side: exit 1 too.
    let (code, _, err) = load(&with(&base, &["--jobs", "2", "--assert", "succeeded>2"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("assertion failed: succeeded>2 (measured 2)"),
        "{err}"
    );
}

#[test]
fn failed_jobs_are_counted_by_cause() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    // fast >= slow: the strategy refuses its parameters when it starts.
    let base = sma(&server.base);
    let (code, out, err) = load(&with(
        &base,
        &[
            "--jobs",
            "3",
            "-p",
            "fast=40",
            "-p",
            "slow=30",
            "--json",
            "--assert",
            "failed==0",
        ],
    ));
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let v = json(&out);
    assert_eq!(v["failed"], 3, "{v}");
    assert_eq!(v["failed_causes"]["invalid_params"], 3, "{v}");
    assert!(err.contains("assertion failed: failed==0 (measured 3)"), "{err}");
}

#[test]
fn malformed_assertions_and_flags_exit_2_before_any_request() {
    // Nothing listens here, yet the malformed assertion is what is reported.
    let base = sma("http://127.0.0.1:9");
    for (bad, says) in [
        (
            "p95<100",
            "--assert \"p95<100\": p95 is a latency: give its unit, ms or s",
        ),
        ("p96<1s", "--assert \"p96<1s\": unknown metric \"p96\""),
        ("failed=0", "--assert \"failed=0\": expected METRIC OP VALUE"),
        ("failed==0.5", "a whole number"),
    ] {
        let (code, out, err) = load(&with(&base, &["--assert", "failed==0", "--assert", bad]));
        assert_eq!(code, 2, "{bad}: {out} {err}");
        assert!(err.contains(says), "{bad}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    let (code, _, err) = load(&with(&base, &["--mix", "sweep=1"]));
    assert_eq!(code, 2);
    assert!(err.contains("unknown kind \"sweep\""), "{err}");
    let (code, _, err) = load(&with(&base, &["--duration", "10"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("the unit must be ms, s or m") || err.contains("expected a whole number"),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_exit_2_naming_the_address() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, out, err) = load(&with(&sma(&url), &["--jobs", "1"]));
    assert_eq!(code, 2, "{out} {err}");
    assert!(err.contains(&format!("cannot reach {url}")), "{err}");
    let (code, _, err) = load(&with(&sma("https://127.0.0.1:1"), &[]));
    assert_eq!(code, 2);
    assert!(err.contains("https is not supported"), "{err}");
}

#[test]
fn refusals_of_a_full_queue_are_counted_and_retried_with_the_same_key() {
    let dir = temp();
    // One job runs, one waits; a guest that loops until its 1 s deadline
    // keeps them there, so of 3 jobs submitted at once at least one is
    // refused (429 queue-full, Retry-After 1) and then retried.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(
        policies.join("loop1s.toml"),
        "fuel_per_event = 1_000_000_000_000\nfuel_per_run = 1_000_000_000_000_000\n\
         deadline_per_event_ms = 1_000\ndeadline_per_run_ms = 1_000\n",
    )
    .expect("policy");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "queue_depth = 1\nmax_queued_per_tenant = 1\nmax_running = 1\n",
    )
    .expect("config");
    let server = support::server(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--policies-dir",
            policies.to_str().expect("utf-8"),
        ],
    );
    let adversary = guest_path("adversary");
    let qqq = format!(
        "QQQ={}",
        palisade_testkit::guests::sample_path("qqq-like-daily.csv")
    );
    // Three endless jobs at once against a queue that takes fewer.
    let endless = [
        "--url",
        &server.base,
        "--module",
        &adversary,
        "--data",
        &qqq,
        "-p",
        "mode=1",
        "--policy",
        "loop1s",
        "--jobs",
        "3",
        "--concurrency",
        "3",
        "--json",
    ];
    let (code, out, err) = load(
        &[
            &endless[..],
            &["--assert", "refused>0"],
            &["--assert", "timed_out==3", "--assert", "dropped==0"],
            &["--assert", "errors==0"],
        ]
        .concat(),
    );
    assert_eq!(
        code,
        0,
        "stdout: {out}\nstderr: {err}\nlog:\n{}",
        server.log_text()
    );
    let v = json(&out);
    assert!(v["refused"]["429"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["refused"]["503"], 0, "{v}");
    // Retried with the same key: exactly 3 jobs exist.
    let jobs = server.client(None).get("/v1/jobs?limit=100").expect(200).json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3, "{jobs}");

    // With no retries, a refused job is dropped, not lost silently.
    let (code, out, err) = load(&[&endless[..], &["--retries", "0", "--assert", "dropped==0"]].concat());
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let v = json(&out);
    assert!(v["dropped"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        v["dropped"].as_u64().unwrap() + v["timed_out"].as_u64().unwrap(),
        3,
        "{v}"
    );
}
