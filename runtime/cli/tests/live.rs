//! Live deployments through the service, against real processes: `palisade
//! feed replay` serving the sample bars over WebSocket, `palisade serve`
//! running deployments with the simulated venue; drift injected at a known
//! intent, the gate's transitions and audit through the API, fills for
//! unknown intents and tenants refused, emergency stops by scope, and
//! recovery by replay after `kill -9`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{guest, replay, replay_with, tokens, Client, Server, ALICE, BOB, OPS, PALISADE};

/// The sample's bars: 2,520 daily bars.
const BARS: u64 = 2_520;

fn service(data: &std::path::Path, tokens: &str) -> Server {
    Server::start(PALISADE, data, &["--tokens", tokens])
}

/// Polls a deployment's status until `done` holds.
fn wait(c: &Client, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = c.get(&format!("/v1/deployments/{id}")).expect(200).json();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{id}: {what} did not happen: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn deployment(id: &str, strategy: &str, feed: &str, venue: Value) -> Value {
    json!({
        "id": id,
        "strategy": strategy,
        "symbols": ["SPY"],
        "interval_secs": 86400,
        "feed": {"url": feed},
        "params": {"fast": 5, "slow": 20},
        "venue": venue,
        "gate": {"cooldown_ms": 3600000},
        "durability": "os",
        "verify_every": 0
    })
}

#[test]
fn drift_suspends_the_gate_operators_override_and_a_killed_service_recovers_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let feed = replay();
    let data = dir.path().join("data");
    let mut server = service(&data, &tokens);
    let alice = server.client(Some(ALICE));
    let bob = server.client(Some(BOB));
    let ops = server.client(Some(OPS));
    let strategy = alice.upload_module(&guest("sma_cross"));

    // Bad requests first: each names what is wrong, nothing starts.
    let mut bad = deployment("bad id!", &strategy, &feed.1, json!(null));
    alice
        .post_json("/v1/deployments", &bad)
        .problem(422, "invalid-deployment");
    bad["id"] = json!("ok");
    bad["feed"]["url"] = json!("http://nope");
    let p = alice
        .post_json("/v1/deployments", &bad)
        .problem(422, "invalid-deployment");
    assert!(p["detail"].as_str().unwrap().contains("feed.url"), "{p}");
    bad["feed"]["url"] = json!(feed.1);
    bad["params"] = json!({"fast": "x"});
    alice
        .post_json("/v1/deployments", &bad)
        .problem(422, "invalid-deployment");
    bob.post_json(
        "/v1/deployments",
        &deployment("b1", &strategy, &feed.1, json!(null)),
    )
    .problem(404, "not-found");

    // 1 % adverse price drift from the 6th intent on.
    let venue = json!({"drift": [{"from_intent": 6, "price_bps": 100.0}]});
    let r = alice.post_json("/v1/deployments", &deployment("d1", &strategy, &feed.1, venue));
    assert_eq!(r.status, 201, "{}", r.text());
    alice
        .post_json(
            "/v1/deployments",
            &deployment("d1", &strategy, &feed.1, json!(null)),
        )
        .problem(409, "conflict");
    let s = wait(&alice, "d1", "all bars handled and the gate suspended", |v| {
        v["bars"] == BARS && v["gate"]["state"] == "suspended"
    });
    assert_eq!(s["state"], "live");
    assert_eq!(s["gate"]["manual"], false);
    let audit = alice.get("/v1/deployments/d1/audit").expect(200).json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["from"]["state"], "open");
    assert_eq!(entries[0]["actor"], "gate");
    assert!(
        entries[0]["metrics"]["price_bps"].as_f64().unwrap() >= 50.0,
        "{audit}"
    );
    // Detected within 5 drifted fills: at most 5 + 5 intents were published.
    let intents = alice.get("/v1/deployments/d1/intents").expect(200).json();
    let published = intents["intents"].as_array().unwrap().len();
    assert!(
        (6..=10).contains(&published),
        "{published} intents published before the gate closed"
    );
    assert!(s["intents_blocked"].as_u64().unwrap() > 0, "{s}");

    // Fills: unknown intent 404, another tenant 404, invalid 422, overfill 422.
    let fill = |intent: &str, qty: f64| json!({"intent_id": intent, "qty": qty, "price": 100.0, "ts_ms": 1_767_225_600_000_i64});
    alice
        .post_json("/v1/deployments/d1/fills", &fill("d1:999999", 1.0))
        .problem(404, "not-found");
    bob.post_json("/v1/deployments/d1/fills", &fill("d1:1", 1.0))
        .problem(404, "not-found");
    alice
        .post_json("/v1/deployments/d1/fills", &fill("d1:1", -1.0))
        .problem(422, "invalid-fill");
    alice
        .post_json("/v1/deployments/d1/fills", &fill("d1:1", 1e12))
        .problem(422, "invalid-fill");
    let mut old = fill("d1:1", 1.0);
    old["ts_ms"] = json!(i64::MIN);
    alice
        .post_json("/v1/deployments/d1/fills", &old)
        .problem(422, "invalid-fill");
    alice
        .post_json("/v1/deployments/d1/fills", &json!({"qty": 1}))
        .problem(422, "invalid-fill");
    alice
        .post("/v1/deployments/d1/fills", "application/json", b"{not json")
        .problem(400, "bad-request");
    bob.get("/v1/deployments/d1").problem(404, "not-found");
    bob.get("/v1/deployments/d1/audit").problem(404, "not-found");
    assert_eq!(
        bob.get("/v1/deployments").expect(200).json()["deployments"],
        json!([])
    );

    // Overrides: force_open needs a reason; resume steps to 25 %.
    let p = alice
        .post_json("/v1/deployments/d1/gate", &json!({"action": "force_open"}))
        .problem(422, "invalid-deployment");
    assert!(p["detail"].as_str().unwrap().contains("reason"), "{p}");
    let long = json!({"action": "suspend", "reason": "x".repeat(1_001)});
    let p = alice
        .post_json("/v1/deployments/d1/gate", &long)
        .problem(422, "invalid-deployment");
    assert!(p["detail"].as_str().unwrap().contains("at most 1000"), "{p}");
    let p = ops
        .post_json(
            "/v1/emergency-stop/release",
            &json!({"scope": "tenant", "tenant": "nobody"}),
        )
        .problem(404, "not-found");
    assert!(p["detail"].as_str().unwrap().contains("tenant nobody"), "{p}");
    let e = alice
        .post_json(
            "/v1/deployments/d1/gate",
            &json!({"action": "resume", "reason": "venue checked"}),
        )
        .expect(200)
        .json();
    assert_eq!(e["to"], json!({"state": "recovering", "step": 0}));
    assert_eq!(e["actor"], "tenant:alice");
    alice
        .post_json("/v1/deployments/d1/gate", &json!({"action": "fly"}))
        .problem(422, "invalid-deployment");

    // Emergency stop: a tenant may not stop everything; an operator may.
    alice
        .post_json("/v1/emergency-stop", &json!({"scope": "all", "reason": "x"}))
        .problem(403, "forbidden");
    alice
        .post_json("/v1/emergency-stop", &json!({"scope": "tenant", "tenant": "bob"}))
        .problem(403, "forbidden");
    alice
        .post_json("/v1/emergency-stop", &json!({"scope": "all", "tenant": "bob"}))
        .problem(422, "invalid-deployment");
    bob.post_json(
        "/v1/emergency-stop",
        &json!({"scope": "deployment", "deployment": "d1"}),
    )
    .problem(404, "not-found");
    let r = ops
        .post_json("/v1/emergency-stop", &json!({"scope": "all", "reason": "drill"}))
        .expect(200)
        .json();
    assert_eq!(r["stopped"], json!(["d1"]));
    let s = alice.get("/v1/deployments/d1").expect(200).json();
    assert_eq!(s["gate"]["state"], "stopped");
    let metrics = ops.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_emergency_stops{scope=\"all\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_gate_state{deployment=\"d1\"} 3"),
        "{metrics}"
    );
    // A tenant cannot undo an operator's stop, on the gate or the scope.
    alice
        .post_json(
            "/v1/deployments/d1/gate",
            &json!({"action": "release", "reason": "x"}),
        )
        .problem(409, "conflict");
    alice
        .post_json("/v1/emergency-stop/release", &json!({"scope": "all"}))
        .problem(403, "forbidden");

    // kill -9, restart: recovered by replay, no bar stored twice, the gate
    // as the audit log left it, the emergency stop still in force.
    server.kill9();
    let server = service(&data, &tokens);
    let alice = server.client(Some(ALICE));
    let ops = server.client(Some(OPS));
    let s = wait(&alice, "d1", "recovered", |v| {
        v["state"] == "live" && v["bars"] == BARS
    });
    assert_eq!(s["recovered_bars"], BARS);
    assert!(s["recovery_ms"].as_f64().is_some(), "{s}");
    assert_eq!(s["gate"], json!({"state": "stopped"}));
    let list = ops.get("/v1/deployments").expect(200).json();
    assert_eq!(list["emergency_stops"][0]["scope"], "all", "{list}");
    assert_eq!(
        list["emergency_stops"][0]["imposed_by"]["tenant"], "ops",
        "{list}"
    );
    let metrics = ops.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_emergency_stops{scope=\"all\"} 1"),
        "{metrics}"
    );
    // A deployment started under the stop starts stopped.
    let r = alice
        .post_json(
            "/v1/deployments",
            &deployment("d2", &strategy, &feed.1, json!(null)),
        )
        .expect(201)
        .json();
    assert_eq!(r["gate"]["state"], "stopped", "{r}");
    let r = ops
        .post_json(
            "/v1/emergency-stop/release",
            &json!({"scope": "all", "reason": "drill over"}),
        )
        .expect(200)
        .json();
    assert_eq!(r["released"], json!(["d1", "d2"]));
    ops.post_json("/v1/emergency-stop/release", &json!({"scope": "all"}))
        .problem(404, "not-found");
    let audit = alice.get("/v1/deployments/d1/audit").expect(200).json();
    let states: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["suspended", "recovering", "stopped", "suspended"]);
    // A tenant's own stop of its own deployment, lifted by the tenant.
    alice
        .post_json(
            "/v1/emergency-stop",
            &json!({"scope": "deployment", "deployment": "d2"}),
        )
        .expect(200);
    alice
        .post_json(
            "/v1/emergency-stop/release",
            &json!({"scope": "deployment", "deployment": "d2"}),
        )
        .expect(200);
    alice.delete("/v1/deployments/d2").expect(200);
    // The feed resumed after the last stored bar: nothing refused as a
    // duplicate, nothing missing.
    std::thread::sleep(Duration::from_millis(500));
    let s = alice.get("/v1/deployments/d1").expect(200).json();
    assert_eq!(
        (
            s["bars"].as_u64(),
            s["rejected_bars"].as_u64(),
            s["gap_bars"].as_u64()
        ),
        (Some(BARS), Some(0), Some(0)),
        "{s}"
    );
    let check = alice
        .post_json("/v1/deployments/d1/verify", &json!({}))
        .expect(200)
        .json();
    assert_eq!(check["mismatches"], 0, "{check}");

    // Stopped for good: not restarted with the service.
    alice.delete("/v1/deployments/d1").expect(200);
    alice.get("/v1/deployments/d1").problem(404, "not-found");
    drop(server);
    let server = service(&data, &tokens);
    server
        .client(Some(ALICE))
        .get("/v1/deployments/d1")
        .problem(404, "not-found");

    // A tenant's stop of its own tenant: seen by it and by operators, not
    // by another tenant; an operator's stop on the same scope takes it
    // over, and then only an operator lifts it.
    let (alice, bob, ops) = (
        server.client(Some(ALICE)),
        server.client(Some(BOB)),
        server.client(Some(OPS)),
    );
    let scope = json!({"scope": "tenant", "tenant": "alice", "reason": "tenant drill"});
    alice.post_json("/v1/emergency-stop", &scope).expect(200);
    let seen = |c: &Client| c.get("/v1/deployments").expect(200).json()["emergency_stops"].clone();
    assert_eq!(seen(&alice).as_array().unwrap().len(), 1, "{}", seen(&alice));
    assert_eq!(seen(&bob), json!([]), "another tenant's stop is not bob's to see");
    let held = json!({"scope": "tenant", "tenant": "alice", "reason": "compliance hold"});
    ops.post_json("/v1/emergency-stop", &held).expect(200);
    let stops = seen(&ops);
    assert_eq!(stops[0]["imposed_by"]["operator"], true, "{stops}");
    assert_eq!(stops[0]["imposed_by"]["reason"], "compliance hold", "{stops}");
    let release = json!({"scope": "tenant", "tenant": "alice"});
    alice
        .post_json("/v1/emergency-stop/release", &release)
        .problem(403, "forbidden");
    // A tenant's repeat does not take it back.
    alice.post_json("/v1/emergency-stop", &scope).expect(200);
    assert_eq!(seen(&ops)[0]["imposed_by"]["operator"], true);
    ops.post_json("/v1/emergency-stop/release", &release).expect(200);
    assert_eq!(seen(&ops), json!([]));
}

#[test]
fn a_deployment_whose_files_cannot_be_read_is_listed_as_failed_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let feed = replay();
    let data = dir.path().join("data");
    let mut server = service(&data, &tokens);
    let alice = server.client(Some(ALICE));
    let strategy = alice.upload_module(&guest("sma_cross"));
    alice
        .post_json(
            "/v1/deployments",
            &deployment("hurt", &strategy, &feed.1, json!(null)),
        )
        .expect(201);
    wait(&alice, "hurt", "every bar", |v| v["bars"] == BARS);
    server.kill9();
    // A complete line that is not an audit entry: corruption, refused.
    let audit = data.join("deployments/hurt/audit.jsonl");
    let mut text = std::fs::read_to_string(&audit).unwrap_or_default();
    text.push_str("{\"not\": \"an entry\"}\n");
    std::fs::write(&audit, &text).unwrap();

    let server = service(&data, &tokens);
    let (alice, ops) = (server.client(Some(ALICE)), server.client(Some(OPS)));
    let s = alice.get("/v1/deployments/hurt").expect(200).json();
    assert_eq!(s["state"], "failed", "{s}");
    assert!(s["start_error"].as_str().unwrap().contains("audit.jsonl"), "{s}");
    let metrics = ops.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_deployments{state=\"failed\"} 1"),
        "{metrics}"
    );
    // Its files are kept as they were; DELETE stops it for good.
    assert_eq!(std::fs::read_to_string(&audit).unwrap(), text);
    alice.delete("/v1/deployments/hurt").expect(200);
    alice.get("/v1/deployments/hurt").problem(404, "not-found");
    let metrics = ops.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_deployments{state=\"failed\"} 0"),
        "{metrics}"
    );
    drop(server);
    let server = service(&data, &tokens);
    server
        .client(Some(ALICE))
        .get("/v1/deployments/hurt")
        .problem(404, "not-found");
}

#[test]
fn a_strategy_that_traps_live_stops_its_deployment_only() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let feed = replay();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "max_deployments = 2\n").unwrap();
    let server = Server::start(
        PALISADE,
        &dir.path().join("data"),
        &["--tokens", &tokens, "--config", config.to_str().unwrap()],
    );
    let alice = server.client(Some(ALICE));
    let sma = alice.upload_module(&guest("sma_cross"));
    let adversary = alice.upload_module(&guest("adversary"));
    alice
        .post_json("/v1/deployments", &deployment("good", &sma, &feed.1, json!({})))
        .expect(201);
    let mut bad = deployment("bad", &adversary, &feed.1, json!({}));
    bad["params"] = json!({"mode": 4, "at": 100});
    alice.post_json("/v1/deployments", &bad).expect(201);
    // Two run (the limit); a third is refused, naming the setting.
    let p = alice
        .post_json("/v1/deployments", &deployment("third", &sma, &feed.1, json!({})))
        .problem(409, "conflict");
    assert!(p["detail"].as_str().unwrap().contains("max_deployments"), "{p}");
    let s = wait(&alice, "bad", "failed", |v| v["state"] == "failed");
    assert_eq!(s["failure"]["cause"], "guest_panic", "{s}");
    assert_eq!(s["gate"], json!({"state": "suspended", "manual": true}));
    let good = wait(&alice, "good", "all bars", |v| v["bars"] == BARS);
    assert_eq!(good["state"], "live");
    assert_eq!(good["gate"]["state"], "open");
    let metrics = alice.get("/metrics").expect(200).text();
    assert!(
        metrics.contains("palisade_deployments{state=\"failed\"} 1"),
        "{metrics}"
    );
    // The same through the CLI: status, gate, audit, emergency stop.
    let cli = |args: &[&str]| {
        let out = Command::new(PALISADE)
            .arg("live")
            .args(args)
            .args(["--url", &server.base, "--token", ALICE])
            .output()
            .expect("run palisade live");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, text, _) = cli(&["status", "good"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["gate"]["state"],
        "open"
    );
    let (code, text, err) = cli(&["gate", "good", "suspend", "--reason", "cli check"]);
    assert_eq!(code, Some(0), "{err}");
    let entry: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(entry["to"], json!({"state": "suspended", "manual": true}));
    assert_eq!(entry["reason"], "cli check");
    let (code, _, err) = cli(&["gate", "good", "force-open"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("reason"), "{err}");
    let (code, text, _) = cli(&["audit", "good"]);
    assert_eq!(code, Some(0));
    let entries = serde_json::from_str::<Value>(&text).unwrap()["entries"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    let (code, _, err) = cli(&["emergency-stop", "--all"]);
    assert_eq!(code, Some(1), "a tenant may not stop everything");
    assert!(err.contains("403"), "{err}");
    let (code, text, err) = cli(&["emergency-stop", "--tenant", "alice", "--reason", "cli"]);
    assert_eq!(code, Some(0), "{err}");
    // The failed deployment's gate is stopped too (it could be resumed
    // once restarted).
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["stopped"],
        json!(["bad", "good"])
    );
    let (code, _, err) = cli(&["emergency-stop", "--tenant", "alice", "--release"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn feeds_and_webhooks_reach_only_the_hosts_the_operator_allows() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let feed = replay();
    let server = Server::start(
        PALISADE,
        &dir.path().join("data"),
        &[
            "--tokens",
            &tokens,
            "--live-hosts",
            "127.0.0.1, *.example.com:9443",
        ],
    );
    let alice = server.client(Some(ALICE));
    let strategy = alice.upload_module(&guest("sma_cross"));
    let port = feed.1.trim_start_matches("ws://127.0.0.1:").trim_end_matches('/');
    // The same feed by another name, a cloud metadata address, a
    // look-alike domain: each refused, naming the host.
    for (url, host) in [
        (format!("ws://localhost:{port}/"), format!("localhost:{port}")),
        (
            "ws://169.254.169.254/".to_owned(),
            "169.254.169.254:80".to_owned(),
        ),
        ("ws://example.com:9443/".to_owned(), "example.com:9443".to_owned()),
        (
            "ws://feed.example.com:9444/".to_owned(),
            "feed.example.com:9444".to_owned(),
        ),
    ] {
        let p = alice
            .post_json("/v1/deployments", &deployment("h1", &strategy, &url, json!(null)))
            .problem(422, "invalid-deployment");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&host) && detail.contains("live_hosts"),
            "{url}: {p}"
        );
    }
    let mut d = deployment("h1", &strategy, &feed.1, json!(null));
    d["webhook"] = json!({"url": "http://10.1.2.3/intents"});
    let p = alice
        .post_json("/v1/deployments", &d)
        .problem(422, "invalid-deployment");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("webhook.url host 10.1.2.3:80"),
        "{p}"
    );
    // An allowed host starts; nothing refused was kept.
    d["webhook"] = json!({"url": "http://127.0.0.1:9/intents"});
    let r = alice.post_json("/v1/deployments", &d);
    assert_eq!(r.status, 201, "{}", r.text());
    let list = alice.get("/v1/deployments").expect(200).json();
    assert_eq!(list["deployments"].as_array().unwrap().len(), 1, "{list}");
    // A bad list is refused at start, naming the key.
    let out = support::palisade(&[
        "serve",
        "--live-hosts",
        "a,,b",
        "--data-dir",
        dir.path().join("d2").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live_hosts") && err.contains("empty entry"), "{err}");
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key,
/// as PEM files in `dir`.
fn certificate(dir: &std::path::Path, name: &str) -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let key = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, private) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().to_owned(),
        private.to_str().unwrap().to_owned(),
    )
}

#[test]
fn a_wss_feed_is_read_when_the_service_trusts_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, trusted_key) = certificate(dir.path(), "trusted");
    let (other, other_key) = certificate(dir.path(), "other");

    // The replay server refuses files that are not a certificate and its key.
    for (cert, key, problem) in [
        (
            dir.path().join("none.pem").to_str().unwrap().to_owned(),
            trusted_key.clone(),
            "none.pem: no such file",
        ),
        (trusted_key.clone(), trusted_key.clone(), "no PEM certificate"),
        (
            trusted.clone(),
            other_key.clone(),
            "not a certificate and its key",
        ),
    ] {
        let out = Command::new(PALISADE)
            .args(["feed", "replay", &format!("SPY={}", support::sample_path())])
            .args(["--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(problem),
            "{problem}: {stderr}"
        );
    }
    let out = Command::new(PALISADE)
        .args(["feed", "replay", "x.csv", "--tls-cert", &trusted])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    let good = replay_with("0", &["--tls-cert", &trusted, "--tls-key", &trusted_key]);
    let bad = replay_with("0", &["--tls-cert", &other, "--tls-key", &other_key]);
    assert!(good.1.starts_with("wss://localhost:"), "{}", good.1);
    let tokens = tokens(dir.path());
    let data = dir.path().join("data");
    let server = Server::start_command_env(
        PALISADE,
        "serve",
        &data,
        &["--tokens", &tokens],
        &[("SSL_CERT_FILE", &trusted)],
    );
    let alice = server.client(Some(ALICE));
    let strategy = alice.upload_module(&guest("sma_cross"));
    // A webhook nobody answers: its failures are in the status.
    let closed = palisade_testkit::servers::free_port();
    for (id, feed) in [("tls-good", &good.1), ("tls-bad", &bad.1)] {
        let mut d = deployment(id, &strategy, feed, json!(null));
        d["webhook"] = json!({"url": format!("http://127.0.0.1:{closed}/hook")});
        let r = alice.post_json("/v1/deployments", &d);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let s = wait(&alice, "tls-good", "every bar over wss", |v| v["bars"] == BARS);
    assert_eq!(s["feed_connected"], true, "{s}");
    assert!(s["feed_error"].is_null(), "{s}");
    let s = wait(&alice, "tls-good", "a failed webhook delivery", |v| {
        !v["webhook_error"].is_null()
    });
    let error = s["webhook_error"].as_str().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{closed}")), "{error}");
    // The other certificate is not trusted: no bar, the reason in the status.
    let s = wait(&alice, "tls-bad", "the feed refused", |v| {
        !v["feed_error"].is_null()
    });
    let error = s["feed_error"].as_str().unwrap();
    assert!(error.contains("certificate") && error.contains(&bad.1), "{error}");
    assert_eq!(s["bars"], 0, "{s}");
    assert_eq!(s["feed_connected"], false, "{s}");
}
