//! End-to-end tests of `palisade serve`: the real binary on a loopback port
//! with a temporary data directory, over real HTTP. Guests come from
//! `guest-examples/out/` (`scripts/build-guests.sh`), data from
//! `data/sample/`. Every wait is a bounded poll, never a timed assertion.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{guest, repo, sample_csv, Client};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const OPS: &str = "ops-token-0123456789abc";

/// A policy under which a guest in an infinite loop runs until stopped.
const ENDLESS: &str = "fuel_per_event = 1_000_000_000_000\nfuel_per_run = 1_000_000_000_000_000\n\
                       deadline_per_event_ms = 3_600_000\ndeadline_per_run_ms = 86_400_000\n";

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Writes `text` to `name` in `dir`; returns the path as a string.
fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

fn tokens_file(dir: &std::path::Path) -> String {
    file(
        dir,
        "tokens.toml",
        &format!(
            "[[token]]\ntoken = \"{ALICE}\"\ntenant = \"alice\"\n\n\
             [[token]]\ntoken = \"{BOB}\"\ntenant = \"bob\"\n\n\
             [[token]]\ntoken = \"{OPS}\"\ntenant = \"ops\"\noperator = true\n"
        ),
    )
}

/// `palisade backtest --json --no-timing` of a guest on a sample file.
fn cli_backtest(module: &str, data: &str, params: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("backtest")
        .arg("--json")
        .arg("--no-timing")
        .arg(repo().join("guest-examples/out").join(format!("{module}.wasm")))
        .arg("--data")
        .arg(repo().join("data/sample").join(data));
    for p in params {
        cmd.arg("-p").arg(p);
    }
    let out = cmd.output().expect("run the CLI");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A result document without the field that legitimately differs between
/// the CLI and the service (the module is a path there, an id here).
fn comparable(mut v: Value) -> Value {
    v["strategy"]
        .as_object_mut()
        .expect("strategy object")
        .remove("module");
    v
}

/// Installs the endless policy (as the operator) on an open server.
fn install_endless(c: &Client) {
    c.put("/v1/policies/endless", "application/toml", ENDLESS.as_bytes())
        .expect(200);
}

/// Polls `/v1/status` until `n` jobs run (a job not listed yet, such as a
/// waited submission, shows there); bounded.
fn wait_running_count(c: &Client, n: u64) {
    for _ in 0..2_000 {
        if c.get("/v1/status").expect(200).json()["running"] == n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{n} jobs did not run within 2,000 polls");
}

/// The value of one series of `/metrics` (name and labels as exposed).
fn metric_value(c: &Client, series: &str) -> Option<f64> {
    c.get("/metrics")
        .expect(200)
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn wait_running(c: &Client, id: &str) -> Value {
    c.wait_job(id, "running", |v| v["state"] == "running")
}

#[test]
fn backtest_results_equal_the_cli() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let data = c.upload_csv(
        "spy-like-daily",
        &std::fs::read(repo().join("data/sample/spy-like-daily.csv")).unwrap(),
    );
    for (module, params) in [
        ("sma_cross", vec![("fast", json!(5)), ("slow", json!(20))]),
        ("bollinger_revert", vec![]),
        ("donchian_breakout", vec![]),
    ] {
        let id = c.upload_module(&guest(module));
        let params_obj: serde_json::Map<String, Value> =
            params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let job = c.submit(&json!({ "strategy": id, "dataset": data, "params": params_obj }));
        let got = c.result(&job).expect(200).json();
        assert_eq!(got["strategy"]["module"], id);
        let cli_params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cli_params: Vec<&str> = cli_params.iter().map(String::as_str).collect();
        let want = cli_backtest(module, "spy-like-daily.csv", &cli_params);
        assert_eq!(got["outcome"], "ok", "{module}: {got}");
        assert_eq!(
            comparable(got),
            comparable(want),
            "{module}: service and CLI differ"
        );
        let status = c.get(&format!("/v1/jobs/{job}")).expect(200).json();
        assert_eq!(status["state"], "succeeded");
        assert_eq!(status["progress"], 1.0);
        assert_eq!(status["attempts"], 1);
        assert_eq!(status["policy"]["name"], "default");
        assert_eq!(status["policy"]["hash"].as_str().map(str::len), Some(64));
    }
}

/// `palisade <args> --json --no-timing` on the sample data: its stdout, the
/// trailing newline removed.
fn cli_document(args: &[&str]) -> String {
    let sample = repo().join("data/sample/spy-like-daily.csv");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args)
        .arg("--data")
        .arg(&sample)
        .arg("--json")
        .arg("--no-timing");
    let out = cmd.output().expect("run the CLI");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{cmd:?}: not one line of JSON: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim_end().to_owned()
}

/// Checks `value` against the schema `name` of the server's OpenAPI
/// document (`doc`), naming every violation.
#[track_caller]
fn conforms(doc: &Value, name: &str, value: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator =
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\nvalue: {value}");
}

#[test]
fn every_kind_gives_the_cli_document_byte_for_byte() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let data = c.upload_csv(
        "spy-like-daily",
        &std::fs::read(repo().join("data/sample/spy-like-daily.csv")).unwrap(),
    );
    let doc = c.get("/v1/openapi.json").expect(200).json();
    let sma_path = support::guest_path("sma_cross");
    let sma = c.upload_module(&guest("sma_cross"));
    let adversary_path = support::guest_path("adversary");
    let adversary = c.upload_module(&guest("adversary"));
    // (module path, id, CLI arguments before the module, after it, the job).
    let cases: Vec<(&str, &str, Vec<&str>, Value)> = vec![
        (
            &sma_path,
            &sma,
            vec![
                "backtest", &sma_path, "-p", "fast=5", "-p", "slow=20", "--seed", "3",
            ],
            json!({ "kind": "backtest", "params": { "fast": 5, "slow": 20 }, "seed": 3 }),
        ),
        (
            &sma_path,
            &sma,
            vec![
                "optimize",
                &sma_path,
                "--grid",
                "fast=5:25:10",
                "--grid",
                "slow=20,40,60",
                "-p",
                "size=50",
                "--objective",
                "sharpe",
                "--top",
                "3",
            ],
            json!({ "kind": "optimize", "grid": ["fast=5:25:10", "slow=20,40,60"], "params": { "size": 50 },
                    "objective": "sharpe", "top": 3 }),
        ),
        (
            &sma_path,
            &sma,
            vec![
                "optimize",
                &sma_path,
                "--grid",
                "fast",
                "--samples",
                "4",
                "--seed",
                "11",
                "-p",
                "slow=60",
            ],
            json!({ "kind": "optimize", "grid": ["fast"], "samples": 4, "seed": 11, "params": { "slow": 60 } }),
        ),
        (
            &sma_path,
            &sma,
            vec![
                "walk-forward",
                &sma_path,
                "--grid",
                "fast=5:15:5",
                "--grid",
                "slow=30,60",
                "--windows",
                "3",
                "--in-sample",
                "0.7",
                "--mode",
                "anchored",
            ],
            json!({ "kind": "walk_forward", "grid": ["fast=5:15:5", "slow=30,60"], "windows": 3,
                    "in_sample": 0.7, "mode": "anchored" }),
        ),
        (
            &sma_path,
            &sma,
            vec![
                "monte-carlo",
                &sma_path,
                "-p",
                "fast=10",
                "-p",
                "slow=40",
                "--runs",
                "200",
                "--method",
                "permutation",
                "--ruin",
                "0.3",
                "--seed",
                "9",
            ],
            json!({ "kind": "monte_carlo", "params": { "fast": 10, "slow": 40 }, "runs": 200,
                    "method": "permutation", "ruin": 0.3, "seed": 9 }),
        ),
        (
            // The backtest under the study fails: both name the failure.
            &adversary_path,
            &adversary,
            vec!["monte-carlo", &adversary_path, "-p", "mode=4", "--runs", "50"],
            json!({ "kind": "monte_carlo", "params": { "mode": 4 }, "runs": 50 }),
        ),
    ];
    for (path, id, args, mut job) in cases {
        job["strategy"] = json!(id);
        job["dataset"] = json!(data);
        let want = cli_document(&args).replace(
            &format!("\"module\":{}", json!(path)),
            &format!("\"module\":{}", json!(id)),
        );
        let submitted = c.submit(&job);
        let got = c.result(&submitted).expect(200).text();
        assert_eq!(
            got, want,
            "{args:?}: the service's document differs from the CLI's"
        );
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["kind"], job["kind"], "{got}");
        assert!(v["data"]["bars"].as_u64().is_some_and(|n| n > 0), "{got}");
        // The document is what the API document says a result is.
        conforms(&doc, "ResultDocument", &v);
        let status = c.get(&format!("/v1/jobs/{submitted}")).expect(200).json();
        conforms(&doc, "JobView", &status);
    }
    // The other answers match their schemas too.
    conforms(&doc, "StrategyList", &c.get("/v1/strategies").expect(200).json());
    conforms(
        &doc,
        "StrategyView",
        &c.get(&format!("/v1/strategies/{sma}")).expect(200).json(),
    );
    conforms(&doc, "DatasetList", &c.get("/v1/datasets").expect(200).json());
    conforms(
        &doc,
        "DatasetView",
        &c.get(&format!("/v1/datasets/{data}")).expect(200).json(),
    );
    conforms(&doc, "JobList", &c.get("/v1/jobs").expect(200).json());
    conforms(&doc, "PolicyList", &c.get("/v1/policies").expect(200).json());
    conforms(
        &doc,
        "PolicyView",
        &c.get("/v1/policies/default").expect(200).json(),
    );
    conforms(&doc, "StatusView", &c.get("/v1/status").expect(200).json());
    conforms(&doc, "Problem", &c.get("/v1/jobs/nope").problem(404, "not-found"));
    let waited = c
        .post_json(
            "/v1/jobs?wait=30000",
            &json!({ "strategy": sma, "dataset": data, "params": { "fast": 5, "slow": 20 } }),
        )
        .expect(201)
        .json();
    assert_eq!(waited["output"]["kind"], "backtest", "{waited}");
    conforms(&doc, "JobView", &waited);
    conforms(&doc, "ResultDocument", &waited["output"]);
    // A schema that a wrong answer does not meet: the check can fail.
    let mut wrong = waited["output"].clone();
    wrong["kind"] = json!("optimize");
    let schema = json!({
        "$ref": "#/components/schemas/ResultDocument",
        "components": doc["components"],
    });
    assert!(
        !jsonschema::is_valid(&schema, &wrong),
        "a backtest labelled optimize must not validate"
    );
}

#[test]
fn uploads_whose_compilation_exceeds_its_budget_are_refused() {
    let dir = temp();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // Far from both: the bomb takes about 1 s of CPU to compile, sma-cross
    // some tens of ms (once 110 ms on a loaded machine: 100 was too tight).
    std::fs::write(policies.join("tight.toml"), "compile_ms = 400\n").unwrap();
    let config = file(
        dir.path(),
        "config.toml",
        &format!(
            "default_policy = \"tight\"\npolicies_dir = {:?}\n",
            policies.display().to_string()
        ),
    );
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    let bomb = palisade_testkit::fixtures::compile_bomb(5_000);
    let problem = c
        .post("/v1/strategies", "application/wasm", &bomb)
        .problem(422, "invalid-module");
    assert_eq!(problem["cause"], "invalid_module", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("compilation exceeded its 400 ms of CPU time (compile_ms")),
        "{problem}"
    );
    // Nothing of it was kept; a module that compiles in time is taken.
    assert_eq!(
        c.get("/v1/strategies").expect(200).json()["strategies"],
        json!([])
    );
    c.upload_module(&guest("sma_cross"));
}

#[test]
fn every_job_kind_runs() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let strategy = c.upload_module(&guest("sma_cross"));
    let data = c.upload_csv(
        "spy-like-daily",
        &std::fs::read(repo().join("data/sample/spy-like-daily.csv")).unwrap(),
    );

    let metric = |name: &str| -> f64 {
        let key = format!("{name}{{strategy=\"sma-cross\"}} ");
        c.get("/metrics")
            .expect(200)
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0.0)
    };
    let fuel_before = metric("palisade_strategy_fuel_consumed_total");
    let optimize = c.submit(&json!({
        "strategy": strategy, "dataset": data, "kind": "optimize",
        "grid": ["fast=5:15:5"], "params": { "slow": 30 }, "objective": "sharpe", "top": 2
    }));
    let report = c.result(&optimize).expect(200).json();
    // A study's variants count in the strategy's fuel and memory metrics.
    let fuel_study = metric("palisade_strategy_fuel_consumed_total") - fuel_before;
    assert!(metric("palisade_strategy_memory_peak_bytes") >= 65536.0);
    assert_eq!(report["kind"], "optimize");
    assert_eq!(report["counts"]["ok"], 3, "{report}");
    assert_eq!(report["top"].as_array().map(Vec::len), Some(2));
    // Each variant is the backtest of its parameters.
    let variant = &report["variants"][1];
    assert_eq!(variant["params"]["fast"], 10, "int parameters are JSON integers");
    let single =
        c.submit(&json!({ "strategy": strategy, "dataset": data, "params": { "fast": 10, "slow": 30 } }));
    let single = c.result(&single).expect(200).json();
    assert_eq!(variant["stats"], single["stats"]);
    // Three variants like this one (fast 5, 10, 15): about three times its fuel.
    let fuel_single = single["usage"]["fuel"].as_f64().unwrap();
    assert!(
        fuel_study > 2.0 * fuel_single && fuel_study < 4.0 * fuel_single,
        "study {fuel_study}, one variant {fuel_single}"
    );

    let wf = c.submit(&json!({
        "strategy": strategy, "dataset": data, "kind": "walk_forward",
        "grid": ["fast=5,10"], "windows": 3, "in_sample": 0.7, "mode": "anchored"
    }));
    let report = c.result(&wf).expect(200).json();
    assert_eq!(report["kind"], "walk_forward");
    assert_eq!(report["windows"].as_array().map(Vec::len), Some(3), "{report}");
    assert_eq!(report["mode"], "anchored");

    let mc = c.submit(&json!({
        "strategy": strategy, "dataset": data, "kind": "monte_carlo",
        "runs": 200, "method": "permutation", "seed": 7
    }));
    let report = c.result(&mc).expect(200).json();
    assert_eq!(report["kind"], "monte_carlo");
    assert_eq!(report["runs"], 200);
    assert!(report["probability_of_profit"].is_number(), "{report}");

    for id in [&optimize, &wf, &mc] {
        let v = c.get(&format!("/v1/jobs/{id}")).expect(200).json();
        assert_eq!(
            (v["state"].as_str(), v["progress"].as_f64()),
            (Some("succeeded"), Some(1.0)),
            "{v}"
        );
    }
    let listed = c.get("/v1/jobs?kind=optimize").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["jobs"][0]["id"], optimize.as_str());

    // Options of another kind, and bad study options, are refused at submission.
    let v = c
        .post_json(
            "/v1/jobs",
            &json!({ "strategy": strategy, "dataset": data, "grid": ["fast"] }),
        )
        .problem(422, "invalid-job");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("grid does not apply to a backtest job"),
        "{v}"
    );
    let v = c
        .post_json(
            "/v1/jobs",
            &json!({ "strategy": strategy, "dataset": data, "kind": "optimize", "grid": ["speed=1:2:1"] }),
        )
        .problem(422, "invalid-job");
    assert!(v["detail"].as_str().unwrap().contains("speed"), "{v}");
}

#[test]
fn cancelling_an_infinite_loop_stops_it() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    install_endless(&c);
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 100));
    let job = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
    );
    wait_running(&c, &job);
    let v = c.delete(&format!("/v1/jobs/{job}")).expect(202).json();
    assert_eq!(v["state"], "running", "cancellation is asynchronous");
    let v = c.wait_job(&job, "cancelled", |v| v["state"] != "running");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["cause"], "cancelled");
    // The partial report is kept, with the cause.
    let result = c.result(&job).expect(200).json();
    assert_eq!(result["outcome"]["cause"], "cancelled", "{result}");
    // A finished job cannot be cancelled again.
    c.delete(&format!("/v1/jobs/{job}")).problem(409, "conflict");
    // A queued job is cancelled at once.
    let server2_dir = temp();
    drop(server);
    let config = file(server2_dir.path(), "serve.toml", "max_running = 1\n");
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    let busy = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
    );
    wait_running(&c, &busy);
    let waiting = c.submit(&json!({ "strategy": adversary, "dataset": data }));
    let v = c.delete(&format!("/v1/jobs/{waiting}")).expect(200).json();
    assert_eq!(v["state"], "cancelled");
    c.result(&waiting).problem(409, "conflict");
    c.delete(&format!("/v1/jobs/{busy}")).expect(202);
    c.wait_job(&busy, "cancelled", |v| v["state"] == "cancelled");
}

#[test]
fn deadlines_time_out_and_the_watchdog_stops_stalled_jobs() {
    let dir = temp();
    let config = file(dir.path(), "serve.toml", "watchdog_stall_ms = 300\n");
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    install_endless(&c);
    let short = "fuel_per_event = 1_000_000_000_000\nfuel_per_run = 1_000_000_000_000_000\n\
                 deadline_per_event_ms = 100\ndeadline_per_run_ms = 100\n";
    c.put("/v1/policies/short", "application/toml", short.as_bytes())
        .expect(200);
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 100));

    let late = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "short" }),
    );
    let v = c.wait_job(&late, "timed out", |v| {
        v["state"] != "queued" && v["state"] != "running"
    });
    assert_eq!(v["state"], "timed_out", "{v}");
    assert_eq!(v["error"]["cause"], "deadline");

    let stalled = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
    );
    let v = c.wait_job(&stalled, "stopped by the watchdog", |v| {
        v["state"] != "queued" && v["state"] != "running"
    });
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["cause"], "watchdog");
    // A slow backtest that moves is not stalled: its progress (the bars
    // handed to the guest, published at every epoch tick) is visible, and
    // the watchdog leaves it alone for longer than `watchdog_stall_ms`.
    let slow = short.replace("100\n", "600000\n");
    c.put("/v1/policies/slow", "application/toml", slow.as_bytes())
        .expect(200);
    let steady = c.submit(&json!({
        "strategy": adversary, "dataset": data, "params": { "mode": 9, "amount": 20_000_000 }, "policy": "slow"
    }));
    let v = c.wait_job(&steady, "part way", |v| {
        v["state"] != "queued" && v["state"] != "running"
            || v["progress"].as_f64().is_some_and(|p| p > 0.0 && p < 1.0)
    });
    assert_eq!(
        v["state"], "running",
        "the slow job ended before it was seen part way: {v}"
    );
    let v = c.wait_job(&steady, "ended", |v| {
        v["state"] != "queued" && v["state"] != "running"
    });
    assert_eq!(v["state"], "succeeded", "{v}");
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap()).unwrap();
    let took = at("finished") - at("started");
    assert!(
        took.num_milliseconds() > 300,
        "ran {took} only: make the job slower"
    );

    let metrics = c.get("/metrics").expect(200).text();
    assert!(metrics.contains("palisade_watchdog_kills_total 1"), "{metrics}");
    assert!(
        metrics.contains("palisade_strategy_traps_total{cause=\"deadline\",strategy=\"adversary\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_full_queue_and_a_fast_tenant_get_429() {
    let dir = temp();
    let config = file(dir.path(), "serve.toml", "queue_depth = 2\nmax_running = 1\n");
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    install_endless(&c);
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 100));
    let endless =
        json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" });
    let running = c.submit(&endless);
    wait_running(&c, &running);
    let queued: Vec<String> = (0..2).map(|_| c.submit(&endless)).collect();
    let r = c.post_json("/v1/jobs", &endless);
    let retry = r.retry_after.clone();
    let v = r.problem(429, "queue-full");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(v["detail"].as_str().unwrap().contains("queue is full"), "{v}");
    let status = c.get("/v1/status").expect(200).json();
    assert_eq!(status["queued"]["normal"], 2, "{status}");
    assert_eq!(status["running"], 1);
    assert_eq!(status["limits"]["queue_depth"], 2);
    let metrics = c.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_queue_depth{priority=\"normal\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("palisade_throttled_submissions_total{reason=\"queue_full\",strategy=\"adversary\"} 1"),
        "{metrics}"
    );
    for id in queued.iter().chain([&running]) {
        let r = c.delete(&format!("/v1/jobs/{id}"));
        assert!(r.status == 200 || r.status == 202, "{}", r.text());
    }
    c.wait_job(&running, "cancelled", |v| v["state"] == "cancelled");
    drop(server);

    // The token bucket: a burst of 3, refilled far too slowly to matter here.
    let config = file(dir.path(), "slow.toml", "submit_burst = 3\nsubmit_rate = 0.01\n");
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    let job = json!({ "strategy": adversary, "dataset": data });
    for _ in 0..3 {
        c.submit(&job);
    }
    let r = c.post_json("/v1/jobs", &job);
    let retry: u64 = r
        .retry_after
        .clone()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "{retry}");
    r.problem(429, "rate-limited");
}

#[test]
fn tenants_are_isolated_and_tokens_are_checked() {
    let dir = temp();
    let tokens = tokens_file(dir.path());
    let server = support::server(&dir.path().join("data"), &["--tokens", &tokens]);
    let alice = server.client(Some(ALICE));
    let bob = server.client(Some(BOB));
    let ops = server.client(Some(OPS));
    let anonymous = server.client(None);

    let strategy = alice.upload_module(&guest("sma_cross"));
    let data = alice.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let job = alice.submit(&json!({ "strategy": strategy, "dataset": data }));
    alice.result(&job).expect(200);

    // Bob sees none of it, and cannot use it.
    for path in [
        format!("/v1/strategies/{strategy}"),
        format!("/v1/datasets/{data}"),
        format!("/v1/jobs/{job}"),
        format!("/v1/jobs/{job}/result"),
    ] {
        bob.get(&path).problem(404, "not-found");
    }
    bob.delete(&format!("/v1/jobs/{job}")).problem(404, "not-found");
    bob.delete(&format!("/v1/strategies/{strategy}"))
        .problem(404, "not-found");
    bob.post_json("/v1/jobs", &json!({ "strategy": strategy, "dataset": data }))
        .problem(404, "not-found");
    assert_eq!(
        bob.get("/v1/strategies").expect(200).json()["strategies"],
        json!([])
    );
    assert_eq!(bob.get("/v1/datasets").expect(200).json()["datasets"], json!([]));
    assert_eq!(bob.get("/v1/jobs").expect(200).json()["jobs"], json!([]));
    // Bob uploading the same module gets his own copy (201), Alice keeps hers.
    assert_eq!(
        bob.post("/v1/strategies", "application/wasm", &guest("sma_cross"))
            .expect(201)
            .json()["id"],
        strategy.as_str()
    );
    assert_eq!(
        alice
            .post("/v1/strategies", "application/wasm", &guest("sma_cross"))
            .expect(200)
            .json()["id"],
        strategy.as_str()
    );

    // Tokens.
    let r = anonymous.get("/v1/strategies");
    assert_eq!(r.status, 401);
    r.problem(401, "unauthorized");
    server
        .client(Some("not-a-token-at-all-000"))
        .get("/v1/jobs")
        .problem(401, "unauthorized");
    anonymous.get("/healthz").expect(200);
    anonymous.get("/readyz").expect(200);
    anonymous.get("/metrics").expect(200);

    // Policies: operators only.
    let policy = "memory_bytes = 1_048_576\n";
    alice
        .put("/v1/policies/small", "application/toml", policy.as_bytes())
        .problem(403, "forbidden");
    alice.get("/v1/policies/small").problem(404, "not-found");
    let changed = ops
        .put("/v1/policies/small", "application/toml", policy.as_bytes())
        .expect(200)
        .json();
    let hash = changed["hash"].as_str().unwrap().to_owned();
    let shown = alice.get("/v1/policies/small").expect(200).json();
    assert_eq!(shown["policy"]["memory_bytes"], 1_048_576);
    // Who changed it is for operators' eyes only.
    assert_eq!(shown["audit"][0]["tenant"], serde_json::Value::Null);
    let for_ops = ops.get("/v1/policies/small").expect(200).json();
    assert_eq!(for_ops["audit"][0]["tenant"], "ops");
    // The module needs 17 pages at start: refused under this policy, at submission.
    let v = alice
        .post_json(
            "/v1/jobs",
            &json!({ "strategy": strategy, "dataset": data, "policy": "small" }),
        )
        .problem(422, "invalid-module");
    assert_eq!(v["cause"], "memory_limit", "{v}");
    // A replacement applies to new jobs; a job records the name and hash of
    // the policy it ran with.
    let changed = ops
        .put(
            "/v1/policies/small",
            "application/toml",
            b"memory_bytes = 2_097_152\n",
        )
        .expect(200)
        .json();
    assert_eq!(changed["previous_hash"], hash.as_str());
    let hash = changed["hash"].as_str().unwrap().to_owned();
    let job = alice.submit(&json!({ "strategy": strategy, "dataset": data, "policy": "small" }));
    alice.result(&job).expect(200);
    let v = alice.get(&format!("/v1/jobs/{job}")).expect(200).json();
    assert_eq!(v["policy"], json!({ "name": "small", "hash": hash }));
    assert_eq!(
        alice.get("/v1/policies/small").expect(200).json()["audit"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let names: Vec<String> = alice.get("/v1/policies").expect(200).json()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["default", "python", "small", "strict"]);
}

#[test]
fn bad_input_is_refused_and_nothing_stored_is_lost() {
    let dir = temp();
    let config = file(
        dir.path(),
        "serve.toml",
        "max_module_bytes = 4096\nmax_dataset_bytes = 65536\n",
    );
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    let small = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "palisade_run") (result i32) i32.const 0))"#,
    )
    .unwrap();
    // A module small enough for the limit, but without a manifest.
    let v = c
        .post("/v1/strategies", "application/wasm", &small)
        .problem(422, "invalid-module");
    assert_eq!(v["cause"], "invalid_module", "{v}");
    let forbidden = wat::parse_str(r#"(module (import "env" "system" (func)))"#).unwrap();
    let v = c
        .post("/v1/strategies", "application/wasm", &forbidden)
        .problem(422, "invalid-module");
    assert_eq!(v["cause"], "forbidden_import");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("forbidden import env.system"),
        "{v}"
    );
    c.post("/v1/strategies", "application/wasm", b"")
        .problem(400, "bad-request");
    // Oversized: sma_cross is larger than 4096 bytes.
    c.post("/v1/strategies", "application/wasm", &guest("sma_cross"))
        .problem(413, "payload-too-large");
    let big_csv = sample_csv("spy-like-daily.csv", 2_000);
    c.post("/v1/datasets?name=spy", "text/csv", &big_csv)
        .problem(413, "payload-too-large");

    // Store good data with a generous server, then come back to the strict one.
    drop(server);
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let strategy = c.upload_module(&guest("sma_cross"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 500));
    let job = c.submit(&json!({ "strategy": strategy, "dataset": data }));
    let before = c.result(&job).expect(200).text();
    drop(server);
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);

    // Datasets: errors name the line.
    let mut bad = sample_csv("spy-like-daily.csv", 5);
    bad.extend_from_slice(b"2015-01-08T00:00:00Z,100,99,101,100,5\n");
    let v = c
        .post("/v1/datasets?name=spy", "text/csv", &bad)
        .problem(422, "invalid-dataset");
    assert!(
        v["detail"].as_str().unwrap().starts_with("spy.csv line 7: "),
        "{v}"
    );
    c.post("/v1/datasets", "text/csv", &sample_csv("spy-like-daily.csv", 5))
        .problem(400, "bad-request");

    // Jobs: malformed JSON names the field; unknown references are 404.
    let v = c
        .post("/v1/jobs", "application/json", b"{\"strategy\": 1}")
        .problem(400, "bad-request");
    assert!(v["detail"].as_str().unwrap().contains("field `strategy`"), "{v}");
    let v = c
        .post_json(
            "/v1/jobs",
            &json!({ "strategy": strategy, "dataset": data, "priority": "urgent" }),
        )
        .problem(400, "bad-request");
    assert!(v["detail"].as_str().unwrap().contains("field `priority`"), "{v}");
    c.post("/v1/jobs", "application/json", b"{\"strategy\": ")
        .problem(400, "bad-request");
    c.post_json(
        "/v1/jobs",
        &json!({ "strategy": "0".repeat(64), "dataset": data }),
    )
    .problem(404, "not-found");
    c.post_json("/v1/jobs", &json!({ "strategy": strategy, "dataset": "nope" }))
        .problem(404, "not-found");
    c.post_json(
        "/v1/jobs",
        &json!({ "strategy": strategy, "dataset": data, "policy": "lenient" }),
    )
    .problem(404, "not-found");
    let v = c
        .post_json(
            "/v1/jobs",
            &json!({ "strategy": strategy, "dataset": data, "params": { "fast": 0 } }),
        )
        .problem(422, "invalid-job");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("parameter fast = 0 is out of range"),
        "{v}"
    );
    c.get("/v1/jobs?state=done").problem(400, "bad-request");
    c.get("/v1/jobs/j999999").problem(404, "not-found");
    c.get("/v1/nothing").problem(404, "not-found");
    c.put("/v1/policies/bad", "application/toml", b"memory_bytes = 100\n")
        .problem(422, "invalid-policy");

    // Nothing stored was touched.
    assert_eq!(
        c.get(&format!("/v1/jobs/{job}/result")).expect(200).text(),
        before
    );
    assert_eq!(
        c.get("/v1/strategies").expect(200).json()["strategies"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        c.get(&format!("/v1/datasets/{data}")).expect(200).json()["bars"],
        500
    );
    assert_eq!(c.get("/v1/policies/bad").status, 404);
}

#[test]
fn multipart_uploads_and_duplicates() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let module = guest("donchian_breakout");
    let mut body = Vec::new();
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"module\"; filename=\"d.wasm\"\r\nContent-Type: application/wasm\r\n\r\n");
    body.extend_from_slice(&module);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let r = c
        .post("/v1/strategies", "multipart/form-data; boundary=XyZ", &body)
        .expect(201);
    let v = r.json();
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/v1/strategies/{}", v["id"].as_str().unwrap()).as_str())
    );
    assert_eq!(v["name"], "donchian-breakout");
    assert_eq!(v["size"], module.len());
    assert!(v["parameters"].as_array().is_some_and(|p| !p.is_empty()), "{v}");
    assert!(v["exports"].as_array().unwrap().contains(&json!("palisade_run")));
    // The same bytes again, raw: the existing strategy, 200.
    let again = c
        .post("/v1/strategies", "application/wasm", &module)
        .expect(200)
        .json();
    assert_eq!(again["id"], v["id"]);
    assert_eq!(again["created"], v["created"]);
    // Delete, then it is gone.
    let id = v["id"].as_str().unwrap();
    c.delete(&format!("/v1/strategies/{id}")).expect(204);
    c.get(&format!("/v1/strategies/{id}")).problem(404, "not-found");
}

#[test]
fn restart_after_kill_9_loses_nothing() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    install_endless(&c);
    let strategy = c.upload_module(&guest("sma_cross"));
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 800));
    let done = c.submit(&json!({ "strategy": strategy, "dataset": data, "params": { "fast": 7 } }));
    let result = c.result(&done).expect(200).text();
    let stuck = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
    );
    wait_running(&c, &stuck);
    server.kill9();

    // Restart: everything is there; the interrupted job runs again.
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    assert_eq!(
        c.get(&format!("/v1/jobs/{done}/result")).expect(200).text(),
        result
    );
    let strategies = c.get("/v1/strategies").expect(200).json();
    assert_eq!(strategies["strategies"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        c.get(&format!("/v1/strategies/{strategy}")).expect(200).json()["name"],
        "sma-cross"
    );
    assert_eq!(
        c.get(&format!("/v1/datasets/{data}")).expect(200).json()["bars"],
        800
    );
    let v = c.wait_job(&stuck, "running again", |v| {
        v["state"] == "running" && v["attempts"] == 2
    });
    assert_eq!(v["policy"]["name"], "endless");
    // New jobs run on the restarted server, with the stored module and data.
    let again = c.submit(&json!({ "strategy": strategy, "dataset": data, "params": { "fast": 7 } }));
    let again_result = c.result(&again).expect(200).json();
    let first: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(again_result, first);
    server.kill9();

    // After too many starts the job is failed with the reason.
    let config = file(dir.path(), "serve.toml", "max_attempts = 2\n");
    let server = support::server(&data_dir, &["--config", &config]);
    let c = server.client(None);
    let v = c.get(&format!("/v1/jobs/{stuck}")).expect(200).json();
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["cause"], "interrupted");
    assert_eq!(v["error"]["message"], "interrupted by a restart (2 attempts)");
    assert_eq!(
        c.get(&format!("/v1/jobs/{done}/result")).expect(200).text(),
        result
    );
}

#[test]
fn graceful_shutdown_requeues_running_jobs() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let config = file(dir.path(), "serve.toml", "shutdown_grace_ms = 50\n");
    let mut server = support::server(&data_dir, &["--config", &config]);
    let c = server.client(None);
    install_endless(&c);
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 50));
    let job = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
    );
    wait_running(&c, &job);
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    assert!(
        server.log_text().contains("grace period over"),
        "{}",
        server.log_text()
    );
    // A clean shutdown is no error of the server.
    assert!(!server.log_text().contains(" ERROR "), "{}", server.log_text());

    let server = support::server(&data_dir, &["--config", &config]);
    let c = server.client(None);
    let v = c.wait_job(&job, "running again", |v| v["state"] == "running");
    assert_eq!(v["attempts"], 2, "{v}");
    c.delete(&format!("/v1/jobs/{job}")).expect(202);
    c.wait_job(&job, "cancelled", |v| v["state"] == "cancelled");
}

#[test]
fn an_adversary_at_its_limits_does_not_change_other_results() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    install_endless(&c);
    let strategy = c.upload_module(&guest("sma_cross"));
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 2_000));
    let job = json!({ "strategy": strategy, "dataset": data, "params": { "fast": 8, "slow": 21 } });
    let alone = c.submit(&job);
    let expected = c.result(&alone).expect(200).json();

    // Attacks running beside: an endless loop, a memory bomb, log spam, a panic.
    let loop_job = c.submit(&json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless", "priority": "high" }));
    wait_running(&c, &loop_job);
    // Log spam past log_bytes fails the run under a policy that says so (by
    // default the lines are dropped and counted).
    c.put(
        "/v1/policies/logfail",
        "application/toml",
        b"log_overflow = \"fail\"\n",
    )
    .expect(200);
    let attacks: Vec<(String, &str)> = [
        (json!({ "mode": 2, "amount": 1e9 }), "endless", "memory_limit"),
        (json!({ "mode": 6, "amount": 60000 }), "logfail", "output_limit"),
        (json!({ "mode": 4 }), "default", "guest_panic"),
    ]
    .into_iter()
    .map(|(params, policy, cause)| {
        (
            c.submit(&json!({ "strategy": adversary, "dataset": data, "params": params, "policy": policy })),
            cause,
        )
    })
    .collect();
    let beside: Vec<String> = (0..8).map(|_| c.submit(&job)).collect();
    for id in &beside {
        assert_eq!(c.result(id).expect(200).json(), expected, "job {id} differs");
    }
    for (id, cause) in &attacks {
        let v = c.wait_job(id, "ended", |v| v["state"] != "queued" && v["state"] != "running");
        assert_eq!(
            (v["state"].as_str(), v["error"]["cause"].as_str()),
            (Some("failed"), Some(*cause)),
            "{v}"
        );
    }
    assert_eq!(
        c.get(&format!("/v1/jobs/{loop_job}")).expect(200).json()["state"],
        "running"
    );
    c.delete(&format!("/v1/jobs/{loop_job}")).expect(202);
    c.wait_job(&loop_job, "cancelled", |v| v["state"] == "cancelled");
    let metrics = c.get("/metrics").expect(200).text();
    for line in [
        "palisade_strategy_traps_total{cause=\"memory_limit\",strategy=\"adversary\"} 1",
        "palisade_strategy_traps_total{cause=\"guest_panic\",strategy=\"adversary\"} 1",
        "palisade_jobs_total{kind=\"backtest\",source=\"api\",status=\"succeeded\"} 9",
        "palisade_jobs_total{kind=\"backtest\",source=\"api\",status=\"cancelled\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
}

#[test]
fn documents_and_probes_are_served() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    let doc = c.get("/v1/openapi.json").expect(200).json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}/result",
        "/v1/strategies/{id}",
        "/v1/policies/{name}",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert_eq!(c.get("/healthz").expect(200).text(), "ok\n");
    assert_eq!(c.get("/readyz").expect(200).text(), "ready\n");
    let status = c.get("/v1/status").expect(200).json();
    assert_eq!(status["limits"]["max_running"], 10);
    assert_eq!(status["limits"]["queue_depth"], 200);
    assert_eq!(status["auth"], "none (loopback only)");
    let metrics = c.get("/metrics").expect(200);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{}",
        metrics.content_type
    );
    let text = metrics.text();
    for name in [
        "palisade_queue_depth",
        "palisade_running_jobs",
        "palisade_watchdog_kills_total",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[test]
fn submitting_with_a_wait_answers_with_the_result() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    install_endless(&c);
    let strategy = c.upload_module(&guest("sma_cross"));
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 500));
    let job = json!({ "strategy": strategy, "dataset": data, "params": { "fast": 5, "slow": 20 } });

    // Ended within the wait: the status with the result spliced in, the
    // same document GET …/result serves, and the job listed.
    let r = c.post_json("/v1/jobs?wait=10000", &job).expect(201);
    let v = r.json();
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(r.location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["attempts"], 1);
    let stored = c.get(&format!("/v1/jobs/{id}/result")).expect(200).json();
    assert_eq!(v["output"], stored);
    assert_eq!(stored["outcome"], "ok");
    let listed = c.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"][0]["id"], id.as_str(), "{listed}");
    // The same job submitted without a wait gives the same result.
    let other = c.submit(&job);
    assert_eq!(c.result(&other).expect(200).json(), stored);

    // Still running when the wait is over: the status alone, committed, so
    // it is listed and can be cancelled like any other job.
    let r = c
        .post_json(
            "/v1/jobs?wait=50",
            &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" }),
        )
        .expect(201);
    let v = r.json();
    let stuck = v["id"].as_str().expect("id").to_owned();
    assert!(v["state"] == "running" || v["state"] == "queued", "{v}");
    assert!(v.get("output").is_none(), "{v}");
    let listed = c.get("/v1/jobs?state=running").expect(200).json();
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == stuck.as_str()),
        "{listed}"
    );
    wait_running(&c, &stuck);

    // Bad waits are refused before anything is queued.
    c.post_json("/v1/jobs?wait=soon", &job)
        .problem(400, "bad-request");

    // A crash: the answered jobs are all there; the running one runs again.
    server.kill9();
    let server = support::server(&data_dir, &[]);
    let c = server.client(None);
    assert_eq!(c.get(&format!("/v1/jobs/{id}/result")).expect(200).json(), stored);
    c.wait_job(&stuck, "running again", |v| v["state"] == "running");
    c.delete(&format!("/v1/jobs/{stuck}")).expect(202);
    c.wait_job(&stuck, "cancelled", |v| v["state"] == "cancelled");
}

#[test]
fn compiled_modules_survive_a_restart() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let step_count = |metrics: &str, step: &str| -> u64 {
        let key = format!("palisade_step_duration_seconds_count{{step=\"{step}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    let strategy = c.upload_module(&guest("sma_cross"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let job = json!({ "strategy": strategy, "dataset": data });
    let first = c.result(&c.submit(&job)).expect(200).json();
    let metrics = c.get("/metrics").expect(200).text();
    assert_eq!(step_count(&metrics, "compile"), 1, "{metrics}");
    assert_eq!(step_count(&metrics, "load"), 0);
    let files: Vec<_> = std::fs::read_dir(data_dir.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().contains(&strategy), "{files:?}");
    server.kill9();

    // After a restart the module is loaded, not compiled, and runs the same.
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    assert_eq!(c.result(&c.submit(&job)).expect(200).json(), first);
    let metrics = c.get("/metrics").expect(200).text();
    assert_eq!(step_count(&metrics, "load"), 1, "{metrics}");
    assert_eq!(step_count(&metrics, "compile"), 0, "{metrics}");
    server.kill9();

    // A damaged file is never loaded: the module is compiled again and the
    // file rewritten.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let server = support::server(&data_dir, &[]);
    let c = server.client(None);
    assert_eq!(c.result(&c.submit(&job)).expect(200).json(), first);
    let metrics = c.get("/metrics").expect(200).text();
    assert_eq!(step_count(&metrics, "compile"), 1, "{metrics}");
    assert_eq!(step_count(&metrics, "load"), 0, "{metrics}");
    assert_ne!(std::fs::read(&files[0]).unwrap(), bytes);
    drop(server);
}

/// A refusal because the store cannot write: 507 (no space) or 503 (an I/O
/// error), problem+json with Retry-After, saying nothing was stored.
#[track_caller]
fn refused_for_storage(r: support::Reply) -> Value {
    let kind = match r.status {
        507 => "insufficient-storage",
        503 => "unavailable",
        other => panic!("expected 507 or 503, got {other}: {}", r.text()),
    };
    assert!(r.retry_after.is_some(), "no Retry-After: {}", r.text());
    let v = r.problem_of_its_status(kind);
    assert!(
        v["detail"].as_str().unwrap().contains("nothing was stored"),
        "{v}"
    );
    v
}

#[test]
fn a_full_disk_loses_nothing_acknowledged_and_reuses_no_id() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let mut server = support::server(&data_dir, &[]);
    let c = server.client(None);
    // A loop stopped by its run deadline: it ends while the disk is full.
    let brief = "fuel_per_event = 1_000_000_000_000\nfuel_per_run = 1_000_000_000_000_000\n\
                 deadline_per_event_ms = 3_000\ndeadline_per_run_ms = 3_000\n";
    c.put("/v1/policies/brief", "application/toml", brief.as_bytes())
        .expect(200);
    let strategy = c.upload_module(&guest("sma_cross"));
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let job = json!({ "strategy": strategy, "dataset": data });
    let done = c.submit(&job);
    let result = c.result(&done).expect(200).text();
    let slow = c.submit(
        &json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "brief" }),
    );
    wait_running(&c, &slow);

    server.limit_file_size(Some(1));
    // Nothing new is acknowledged: not a waited job, not a queued one, not
    // an upload; none of them is listed afterwards.
    refused_for_storage(c.post_json("/v1/jobs?wait=2000", &job));
    refused_for_storage(c.post_json("/v1/jobs", &job));
    refused_for_storage(c.post("/v1/strategies", "application/wasm", &guest("donchian_breakout")));
    let ready = c.get("/readyz");
    let v = ready.problem(503, "unavailable");
    assert!(v["detail"].as_str().unwrap().contains("cannot write"), "{v}");
    // Alerts see it: failed batches are counted, readiness is 0.
    assert_eq!(metric_value(&c, "palisade_ready"), Some(0.0));
    let write_errors = metric_value(&c, "palisade_store_write_errors_total").unwrap();
    assert!(
        write_errors >= 3.0,
        "{write_errors} failed batches for three refusals"
    );
    // The acknowledged loop ends (its deadline) while nothing can be
    // written: its end is not shown before it is stored.
    let timed_out = |c: &Client| {
        let metrics = c.get("/metrics").expect(200).text();
        metrics.lines().any(|l| {
            l.starts_with("palisade_jobs_total{") && l.contains("status=\"timed_out\"") && l.ends_with(" 1")
        })
    };
    for _ in 0..2_000 {
        if timed_out(&c) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(timed_out(&c), "the loop did not reach its deadline");
    assert_eq!(
        c.get(&format!("/v1/jobs/{slow}")).expect(200).json()["state"],
        "running"
    );
    let listed = c.get("/v1/jobs").expect(200).json();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");

    // Space again: ready by itself, the end is stored and shown, and new
    // work is taken under a new id.
    server.limit_file_size(None);
    for _ in 0..2_000 {
        if c.get("/readyz").status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    c.get("/readyz").expect(200);
    assert_eq!(metric_value(&c, "palisade_ready"), Some(1.0));
    let v = c.wait_job(&slow, "its end stored", |v| v["state"] != "running");
    assert_eq!(v["state"], "timed_out", "{v}");
    let again = c.submit(&job);
    assert!(again != done && again != slow, "{again}");
    assert_eq!(c.result(&again).expect(200).text(), result);
    server.kill9();

    // What was shown is what is stored; ids are not given twice.
    let server = support::server(&data_dir, &[]);
    let c = server.client(None);
    assert_eq!(
        c.get(&format!("/v1/jobs/{slow}")).expect(200).json()["state"],
        "timed_out"
    );
    assert_eq!(
        c.get(&format!("/v1/jobs/{done}/result")).expect(200).text(),
        result
    );
    let listed = c.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(3), "{listed}");
    let fresh = c.submit(&job);
    assert!(![&done, &slow, &again].contains(&&fresh), "{fresh}");
}

#[test]
fn every_option_is_checked_at_submission_and_nothing_refused_is_stored() {
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let c = server.client(None);
    c.put("/v1/policies/narrow", "application/toml", b"max_variants = 12\n")
        .expect(200);
    let strategy = c.upload_module(&guest("sma_cross"));
    let data = c.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let with = |extra: Value| {
        let mut job = json!({ "strategy": strategy, "dataset": data });
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        job
    };
    let of_kind = |mut base: Value, extra: Value| {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        with(base)
    };
    let mc = |extra: Value| of_kind(json!({ "kind": "monte_carlo" }), extra);
    let wf = |extra: Value| of_kind(json!({ "kind": "walk_forward", "grid": ["fast=5,10"] }), extra);
    // (request, words the refusal must contain), on both sides of each bound.
    let refused = [
        (mc(json!({ "runs": 0 })), "runs = 0"),
        (mc(json!({ "runs": 10_000_001 })), "runs = 10000001"),
        (mc(json!({ "ruin": 2.0 })), "ruin = 2"),
        (mc(json!({ "ruin": 0.0 })), "ruin = 0"),
        (mc(json!({ "ruin": -1.0 })), "ruin = -1"),
        (wf(json!({ "windows": 0 })), "windows = 0"),
        (
            wf(json!({ "windows": 1_000 })),
            "not enough data for 1000 walk-forward windows",
        ),
        (wf(json!({ "windows": 100_000 })), "200000 variants"),
        (wf(json!({ "in_sample": 1.0 })), "in_sample = 1"),
        (wf(json!({ "in_sample": 1.5 })), "in_sample = 1.5"),
        (wf(json!({ "in_sample": 0.0 })), "in_sample = 0"),
        (
            with(json!({ "kind": "optimize", "grid": ["fast=5,10"], "samples": 0 })),
            "--samples must be at least 1",
        ),
        (
            with(json!({ "kind": "optimize", "grid": ["fast=1:13:1"], "policy": "narrow" })),
            "more than policy narrow allows (max_variants = 12)",
        ),
        (
            wf(json!({ "grid": ["fast=1:4:1"], "windows": 4, "policy": "narrow" })),
            "more than policy narrow allows (max_variants = 12)",
        ),
        (with(json!({ "commission": 5.0 })), "commission_rate"),
        (with(json!({ "commission": 1.0 })), "commission_rate"),
        (with(json!({ "commission": -0.001 })), "commission_rate"),
    ];
    for (job, words) in &refused {
        let v = c.post_json("/v1/jobs", job).problem(422, "invalid-job");
        assert!(v["detail"].as_str().unwrap().contains(words), "{job}: {v}");
    }
    let listed = c.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(0), "{listed}");

    // Just inside each bound: accepted and run.
    let accepted = [
        mc(json!({ "runs": 1, "ruin": 1.0 })),
        wf(json!({ "windows": 2, "in_sample": 0.5 })),
        with(json!({ "kind": "optimize", "grid": ["fast=1:12:1"], "policy": "narrow", "samples": 1 })),
        with(json!({ "kind": "optimize", "grid": ["fast=1:12:1"], "policy": "narrow" })),
        with(json!({ "commission": 0.999 })),
        with(json!({ "commission": 0.0 })),
    ];
    for job in &accepted {
        let id = c.submit(job);
        let r = c.result(&id);
        assert_eq!(r.status, 200, "{job}: {}", r.text());
    }
}

#[test]
fn built_in_policies_cannot_be_emptied_and_can_be_reverted() {
    let dir = temp();
    let tokens = tokens_file(dir.path());
    let server = support::server(&dir.path().join("data"), &["--tokens", &tokens]);
    let ops = server.client(Some(OPS));
    let alice = server.client(Some(ALICE));
    let shipped = ops.get("/v1/policies/default").expect(200).json();

    // An empty body (or comments only) would reset every limit: refused.
    for body in ["", "  \n", "# nothing\n\n# at all\n"] {
        let v = ops
            .put("/v1/policies/default", "application/toml", body.as_bytes())
            .problem(422, "invalid-policy");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("DELETE /v1/policies/default"),
            "{v}"
        );
    }
    assert_eq!(
        ops.get("/v1/policies/default").expect(200).json()["hash"],
        shipped["hash"]
    );

    // Replaced, then reverted to exactly the shipped policy, audited.
    let changed = ops
        .put(
            "/v1/policies/default",
            "application/toml",
            b"memory_bytes = 1_048_576\n",
        )
        .expect(200)
        .json();
    assert_ne!(changed["hash"], shipped["hash"]);
    alice.delete("/v1/policies/default").problem(403, "forbidden");
    let back = ops.delete("/v1/policies/default").expect(200).json();
    assert_eq!(back["source"], "builtin", "{back}");
    assert_eq!(back["hash"], shipped["hash"]);
    assert_eq!(back["previous_hash"], changed["hash"]);
    let now = ops.get("/v1/policies/default").expect(200).json();
    assert_eq!(now["hash"], shipped["hash"]);
    assert_eq!(now["policy"], shipped["policy"]);
    let audit = now["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 2, "{now}");
    assert_eq!(audit[1]["hash"], shipped["hash"]);
    assert_eq!(audit[1]["tenant"], "ops");
    // Nothing left to revert.
    ops.delete("/v1/policies/default").problem(409, "conflict");

    // A policy only the API made is deleted; jobs can no longer name it.
    ops.put(
        "/v1/policies/mine",
        "application/toml",
        b"fuel_per_event = 5_000\n",
    )
    .expect(200);
    let gone = ops.delete("/v1/policies/mine").expect(200).json();
    assert_eq!(gone["source"], "deleted", "{gone}");
    assert_eq!(gone["hash"], "");
    ops.get("/v1/policies/mine").problem(404, "not-found");
    ops.delete("/v1/policies/mine").problem(404, "not-found");
    ops.delete("/v1/policies/never-was").problem(404, "not-found");
}

/// Reads what the server sends until it closes the connection (bounded by
/// a 20 s read timeout, which fails the test).
fn read_to_close(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn requests_that_are_not_http_get_problems_too() {
    use std::io::Write;
    let dir = temp();
    let server = support::server(&dir.path().join("data"), &[]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let ask = |request: &[u8]| {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        // The server may answer and close before all of a large request is
        // sent: a failed write is fine, the answer is what is checked.
        let _ = s.write_all(request);
        read_to_close(&mut s)
    };
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "bad-request"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
            400,
            "bad-request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
            400,
            "bad-request",
        ),
        (
            format!("GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri-too-long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\n{many_headers}Host: x\r\n\r\n").into_bytes(),
            431,
            "header-fields-too-large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(500_000)).into_bytes(),
            431,
            "header-fields-too-large",
        ),
    ];
    for (request, status, kind) in cases {
        let answer = ask(&request);
        let asked = String::from_utf8_lossy(&request[..request.len().min(60)]);
        let shown = format!("{asked:?} → {}", &answer[..answer.len().min(300)]);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{shown}");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains("content-type: application/problem+json"), "{shown}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!(v["type"], format!("urn:palisade:problem:{kind}"), "{shown}");
        assert_eq!(v["status"], status);
    }
    // Below the limits the same requests are served.
    let few_headers: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = ask(format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\nHost: x\r\nConnection: close\r\n\r\n",
        "b".repeat(90 << 10)
    )
    .as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "{}",
        &answer[..answer.len().min(300)]
    );
    let answer = ask(format!(
        "GET /healthz?{} HTTP/1.1\r\n{few_headers}Host: x\r\nConnection: close\r\n\r\n",
        "a".repeat(10_000)
    )
    .as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "{}",
        &answer[..answer.len().min(300)]
    );
}

#[test]
fn slow_and_greedy_clients_are_cut_off() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = temp();
    let config = file(
        dir.path(),
        "serve.toml",
        "header_timeout_ms = 1_500\nbody_timeout_ms = 1_000\nmax_connections = 100\n\
         max_connections_per_client = 4\nmax_module_bytes = 1_048_576\n",
    );
    let server = support::server(&dir.path().join("data"), &["--config", &config]);
    let c = server.client(None);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&addr).expect("connect");

    // Headers never finished: closed, with nothing to say.
    let mut s = connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), "");

    // A body trickled: 408 problem+json after body_timeout_ms, then closed.
    let mut s = connect();
    s.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let trickle = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        })
    };
    let answer = read_to_close(&mut s);
    trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:palisade:problem:request-timeout"),
        "{answer}"
    );

    // A declared length over the limit: 413 at once, before any body byte
    // (a read of the body would end in 408 instead).
    let mut s = connect();
    s.write_all(b"POST /v1/strategies HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Just at the limit the length is not refused on sight: the body is
    // awaited (and, never sent, times out).
    let mut s = connect();
    s.write_all(b"POST /v1/strategies HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Four connections from one address are open: a fifth is closed on
    // arrival without an answer; once they close, a new one is served.
    let idle: Vec<TcpStream> = (0..4).map(|_| connect()).collect();
    let mut fifth = connect();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_to_close(&mut fifth), "");
    for mut s in idle {
        assert_eq!(
            read_to_close(&mut s),
            "",
            "an idle connection is closed by the header timeout"
        );
    }
    c.get("/healthz").expect(200);
    let metrics = c.get("/metrics").expect(200).text();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("palisade_connections_refused_total "))
        .expect("the metric")
        .trim()
        .parse()
        .unwrap();
    assert!(refused >= 1, "{refused}");
}

#[test]
fn a_tenant_cannot_fill_the_queue_or_hold_back_another() {
    let dir = temp();
    let tokens = tokens_file(dir.path());
    let config = file(
        dir.path(),
        "serve.toml",
        // A per-tenant cap as large as the global one is cut to one below it.
        "queue_depth = 10\nmax_queued_per_tenant = 2\nmax_running = 2\nmax_running_per_tenant = 2\n",
    );
    let server = support::server(
        &dir.path().join("data"),
        &["--tokens", &tokens, "--config", &config],
    );
    let ops = server.client(Some(OPS));
    install_endless(&ops);
    let alice = server.client(Some(ALICE));
    let bob = server.client(Some(BOB));
    let loops = alice.upload_module(&guest("adversary"));
    let alice_data = alice.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 100));
    let endless =
        json!({ "strategy": loops, "dataset": alice_data, "params": { "mode": 1 }, "policy": "endless" });
    let running = alice.submit(&endless);
    wait_running(&alice, &running);
    let queued: Vec<String> = (0..2).map(|_| alice.submit(&endless)).collect();
    // Alice's share of the queue is full; the queue is not.
    let v = alice.post_json("/v1/jobs", &endless).problem(429, "queue-full");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("max_queued_per_tenant = 2"),
        "{v}"
    );
    // Bob's short job is taken and runs to its end meanwhile.
    let strategy = bob.upload_module(&guest("sma_cross"));
    let bob_data = bob.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let short = bob.submit(&json!({ "strategy": strategy, "dataset": bob_data }));
    bob.wait_job(&short, "succeeded beside alice's loop", |v| {
        v["state"] == "succeeded"
    });
    for id in &queued {
        assert_eq!(alice.get(&format!("/v1/jobs/{id}")).json()["state"], "queued");
    }
    for id in queued.iter().chain([&running]) {
        let r = alice.delete(&format!("/v1/jobs/{id}"));
        assert!(r.status == 200 || r.status == 202, "{}", r.text());
    }
    alice.wait_job(&running, "cancelled", |v| v["state"] == "cancelled");
}

#[test]
fn a_shutdown_answers_a_waiting_submission_with_its_state() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let config = file(dir.path(), "serve.toml", "shutdown_grace_ms = 200\n");
    let mut server = support::server(&data_dir, &["--config", &config]);
    let c = server.client(None);
    install_endless(&c);
    let adversary = c.upload_module(&guest("adversary"));
    let data = c.upload_csv("qqq", &sample_csv("qqq-like-daily.csv", 50));
    let job = json!({ "strategy": adversary, "dataset": data, "params": { "mode": 1 }, "policy": "endless" });
    let waiting = {
        let c = c.clone();
        std::thread::spawn(move || c.post_json("/v1/jobs?wait=60000", &job))
    };
    wait_running_count(&c, 1);
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    // Answered before the server closed: 202, the job as it stood, stored.
    let r = waiting.join().unwrap();
    let location = r.location.clone().expect("Location");
    let v = r.expect(202).json();
    assert_eq!(v["state"], "running", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));

    // After the restart it is there, once, and runs again.
    let server = support::server(&data_dir, &["--config", &config]);
    let c = server.client(None);
    let v = c.wait_job(&id, "running again", |v| v["state"] == "running");
    assert_eq!(v["attempts"], 2, "{v}");
    let listed = c.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1), "{listed}");
    c.delete(&format!("/v1/jobs/{id}")).expect(202);
    c.wait_job(&id, "cancelled", |v| v["state"] == "cancelled");
}

#[test]
fn an_idempotency_key_never_runs_a_job_twice() {
    let dir = temp();
    let data_dir = dir.path().join("data");
    let tokens = tokens_file(dir.path());
    let mut server = support::server(&data_dir, &["--tokens", &tokens]);
    let ops = server.client(Some(OPS));
    install_endless(&ops);
    let alice = server.client(Some(ALICE));
    let bob = server.client(Some(BOB));
    let strategy = alice.upload_module(&guest("sma_cross"));
    let data = alice.upload_csv("spy", &sample_csv("spy-like-daily.csv", 300));
    let job = json!({ "strategy": strategy, "dataset": data });
    let keyed = |c: &Client, path: &str, key: &str, body: &Value| {
        c.post_json_with(path, ("Idempotency-Key", key), body)
    };

    // The first answer creates the job; a retry gets the same job.
    let first = keyed(&alice, "/v1/jobs", "order-1", &job).expect(201).json();
    let id = first["id"].as_str().unwrap().to_owned();
    let again = keyed(&alice, "/v1/jobs", "order-1", &job).expect(200).json();
    assert_eq!(again["id"], id.as_str(), "{again}");
    // The same key with another body is a conflict naming the job.
    let other = json!({ "strategy": strategy, "dataset": data, "params": { "fast": 7 } });
    let v = keyed(&alice, "/v1/jobs", "order-1", &other).problem(409, "conflict");
    assert!(v["detail"].as_str().unwrap().contains(&id), "{v}");
    // Keys are per tenant: bob's "order-1" is his own (his job is refused
    // for lack of his own strategy, not taken for alice's).
    keyed(&bob, "/v1/jobs", "order-1", &job).problem(404, "not-found");

    // With a wait: answered with the result once; a retry, the same job.
    let waited = keyed(&alice, "/v1/jobs?wait=30000", "order-2", &other)
        .expect(201)
        .json();
    assert_eq!(waited["state"], "succeeded", "{waited}");
    let retried = keyed(&alice, "/v1/jobs?wait=30000", "order-2", &other)
        .expect(200)
        .json();
    assert_eq!(retried["id"], waited["id"]);
    assert_eq!(retried["state"], "succeeded");

    // A retry while the first request still waits: 409, nothing submitted.
    let loops = alice.upload_module(&guest("adversary"));
    let endless = json!({ "strategy": loops, "dataset": data, "params": { "mode": 1 }, "policy": "endless" });
    let pending = {
        let (alice, endless) = (alice.clone(), endless.clone());
        std::thread::spawn(move || {
            alice.post_json_with("/v1/jobs?wait=3000", ("Idempotency-Key", "order-3"), &endless)
        })
    };
    wait_running_count(&alice, 1);
    let v = keyed(&alice, "/v1/jobs", "order-3", &endless).problem(409, "conflict");
    assert!(v["detail"].as_str().unwrap().contains("in progress"), "{v}");
    let stuck = pending.join().unwrap().expect(201).json();
    assert_eq!(stuck["state"], "running");
    let stuck_id = stuck["id"].as_str().unwrap().to_owned();
    assert_eq!(
        keyed(&alice, "/v1/jobs", "order-3", &endless).expect(200).json()["id"],
        stuck_id.as_str()
    );
    alice.delete(&format!("/v1/jobs/{stuck_id}")).expect(202);

    // Bad keys are refused before anything is read or stored.
    for bad in ["has space".to_owned(), "x".repeat(256)] {
        keyed(&alice, "/v1/jobs", &bad, &job).problem(400, "bad-request");
    }
    keyed(&alice, "/v1/jobs", &"k".repeat(255), &job).expect(201);
    let listed = alice.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(4), "{listed}");

    // Keys are stored with their jobs: they hold across a restart.
    server.kill9();
    let server = support::server(&data_dir, &["--tokens", &tokens]);
    let alice = server.client(Some(ALICE));
    let after = alice
        .post_json_with("/v1/jobs", ("Idempotency-Key", "order-1"), &job)
        .expect(200)
        .json();
    assert_eq!(after["id"], id.as_str());
    let listed = alice.get("/v1/jobs").expect(200).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(4), "{listed}");
}

#[test]
fn job_ids_say_nothing_and_pages_follow_them() {
    let dir = temp();
    let tokens = tokens_file(dir.path());
    let server = support::server(&dir.path().join("data"), &["--tokens", &tokens]);
    let alice = server.client(Some(ALICE));
    let bob = server.client(Some(BOB));
    let strategy = alice.upload_module(&guest("sma_cross"));
    let data = alice.upload_csv("spy", &sample_csv("spy-like-daily.csv", 200));
    let job = json!({ "strategy": strategy, "dataset": data });
    let ids: Vec<String> = (0..3).map(|_| alice.submit(&job)).collect();
    for id in &ids {
        assert!(
            id.len() == 17 && id.starts_with('j') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
    // Newest first, one page at a time, following the ids.
    let page = |before: Option<&str>| {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        alice.get(&format!("/v1/jobs?limit=1{q}")).expect(200).json()["jobs"][0]["id"]
            .as_str()
            .map(str::to_owned)
    };
    let first = page(None).unwrap();
    assert_eq!(first, ids[2]);
    let second = page(Some(&first)).unwrap();
    assert_eq!(second, ids[1]);
    assert_eq!(page(Some(&second)).unwrap(), ids[0]);
    assert_eq!(page(Some(&ids[0])), None);
    // Another tenant's id, or a made-up one, names no job of the caller's
    // (404, as reading it would); what is not a job id at all is malformed.
    let v = bob
        .get(&format!("/v1/jobs?before={}", ids[1]))
        .problem(404, "not-found");
    assert!(v["detail"].as_str().unwrap().contains(&ids[1]), "{v}");
    alice
        .get("/v1/jobs?before=j0000000000000001")
        .problem(404, "not-found");
    for bad in [
        "",
        "j1",
        "J0000000000000001",
        "j000000000000000g",
        "j00000000000000001",
    ] {
        let v = alice
            .get(&format!("/v1/jobs?before={bad}"))
            .problem(400, "bad-request");
        assert!(v["detail"].as_str().unwrap().contains("is not a job id"), "{v}");
    }
    // A strategy filter that is no strategy id is malformed, not an empty page.
    let v = alice.get("/v1/jobs?strategy=sma").problem(400, "bad-request");
    assert!(
        v["detail"].as_str().unwrap().contains("is not a strategy id"),
        "{v}"
    );
    let none = alice
        .get(&format!("/v1/jobs?strategy={}", "0".repeat(64)))
        .expect(200)
        .json();
    assert_eq!(none["jobs"], serde_json::json!([]));
}
