//! Python strategies through the `palisade` binary and `palisade serve`, as
//! users run them: the CLI's commands on a `.py` file, the runtime's
//! compilation kept in the cache, uploads and jobs over HTTP, and a clear
//! refusal (never a panic) for every kind of bad source.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::{guest_path, repo, sample_csv, sample_path, server, PALISADE};

/// The cache the tests' `palisade` processes share: the runtime is compiled
/// by the first of them only.
fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-cache")
}

fn example(name: &str) -> String {
    repo()
        .join(format!("sdk-python/examples/{name}.py"))
        .display()
        .to_string()
}

/// Runs `palisade` with the shared cache and `env`.
fn palisade_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(PALISADE);
    cmd.args(args).env("PALISADE_CACHE_DIR", cache());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run palisade")
}

fn palisade(args: &[&str]) -> Output {
    palisade_env(args, &[])
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `<target tmp>/<name>-<this process>`. The first call removes what
/// earlier runs of these tests left there (`<name>-<pid>` of a process
/// that is gone), so the folders do not pile up run after run.
fn scratch(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".log").unwrap_or(&file);
            let Some((prefix, pid)) = stem.rsplit_once('-') else {
                continue;
            };
            let ours = prefix.starts_with("python-");
            let gone = pid
                .parse::<u32>()
                .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists());
            if ours && gone {
                let _ = std::fs::remove_dir_all(entry.path());
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    root.join(format!("{name}-{}", std::process::id()))
}

/// Writes a strategy source to a fresh file and returns its path.
fn source_file(name: &str, contents: &[u8]) -> String {
    let dir = scratch("python-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

/// The parts of a backtest document that do not depend on the language the
/// strategy is written in (usage and timing do).
fn comparable(doc: &Value) -> Value {
    let mut v = doc.clone();
    let o = v.as_object_mut().unwrap();
    for key in ["usage", "timing", "policy", "strategy"] {
        o.remove(key);
    }
    v
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

#[test]
fn the_python_examples_give_the_rust_examples_documents() {
    for (py, wasm, params) in [
        (
            "sma_cross",
            "sma_cross",
            vec!["-p", "fast=5", "-p", "slow=40", "-p", "size=3"],
        ),
        ("bollinger_revert", "bollinger_revert", vec![]),
        ("donchian_breakout", "donchian_breakout", vec![]),
    ] {
        let data = sample_path();
        let mut args = vec![
            "backtest",
            "--data",
            &data,
            "--json",
            "--no-timing",
            "--policy",
            "default",
        ];
        args.extend(&params);
        let py_path = example(py);
        let wasm_path = guest_path(wasm);
        let ours = palisade(&[&args[..1], &[py_path.as_str()], &args[1..]].concat());
        let theirs = palisade(&[&args[..1], &[wasm_path.as_str()], &args[1..]].concat());
        assert!(ours.status.success(), "{py}: {}", text(&ours));
        assert!(theirs.status.success(), "{wasm}: {}", text(&theirs));
        let (a, b) = (json_of(&ours), json_of(&theirs));
        assert!(
            a["trades"].as_array().is_some_and(|t| !t.is_empty()),
            "{py} traded"
        );
        assert_eq!(comparable(&a), comparable(&b), "{py} vs {wasm}");
        assert_eq!(a["strategy"]["name"], b["strategy"]["name"]);
        assert!(a["usage"]["fuel"].as_u64().unwrap() > b["usage"]["fuel"].as_u64().unwrap());
    }
}

#[test]
fn a_py_file_runs_under_the_python_policy_unless_told_otherwise() {
    let py = example("sma_cross");
    let out = palisade(&["backtest", &py, "--data", &sample_path(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["policy"], "python");
    let out = palisade(&[
        "backtest",
        &py,
        "--data",
        &sample_path(),
        "--json",
        "--policy",
        "strict",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["policy"], "strict");
    // Loading from the cache is milliseconds: the whole load of a run that
    // found the runtime compiled (this one: the previous run compiled it).
    let out = palisade(&["backtest", &py, "--data", &sample_path(), "--json"]);
    let load = json_of(&out)["timing"]["load_seconds"].as_f64().unwrap();
    assert!(
        load < 5.0,
        "a cached runtime loaded in {load} s: it was compiled again"
    );
    let cached: Vec<_> = std::fs::read_dir(cache())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert!(!cached.is_empty(), "nothing kept in {}", cache().display());
}

#[test]
fn inspect_and_validate_show_a_python_strategys_manifest() {
    let py = example("sma_cross");
    let out = palisade(&["inspect", &py]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("sma-cross 0.1.0 (Python)") && t.contains("fast") && t.contains("slow"),
        "{t}"
    );
    let out = palisade(&["inspect", &py, "--json"]);
    let v = json_of(&out);
    assert_eq!(v["language"], "python");
    let rust = json_of(&palisade(&["inspect", &guest_path("sma_cross"), "--json"]));
    assert_eq!(
        v["manifest"]["params"].as_array().map(Vec::len),
        rust["manifest"]["params"].as_array().map(Vec::len)
    );
    let out = palisade(&["validate", &py]);
    assert!(
        out.status.success() && text(&out).contains("is a valid Python strategy"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_sources_are_refused_naming_what_is_wrong() {
    let cases: &[(&str, &[u8], &str, &str)] = &[
        (
            "syntax.py",
            b"from palisade import Strategy\nclass S(Strategy):\n    def next(self, bar)\n        pass\n",
            "invalid_module",
            "syntax.py, line 3",
        ),
        (
            "osimport.py",
            b"import os\nfrom palisade import Strategy\nclass S(Strategy):\n    def next(self, bar): pass\n",
            "forbidden_import",
            "module os",
        ),
        ("noclass.py", b"x = 1\n", "invalid_module", "manifest"),
        ("latin1.py", b"x = '\xe9'\n", "invalid_module", "not UTF-8"),
        ("nul.py", b"x = 1\x00\n", "invalid_module", ""),
    ];
    for (name, body, cause, fragment) in cases {
        let path = source_file(name, body);
        let out = palisade(&["validate", &path, "--json"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {t}");
        assert!(!t.contains("panicked"), "{name}: {t}");
        let v = json_of(&out);
        assert_eq!(v["verdict"], "rejected", "{name}: {t}");
        assert_eq!(v["outcome"]["cause"], *cause, "{name}: {t}");
        assert!(
            v["outcome"]["message"].as_str().unwrap().contains(fragment),
            "{name}: {t}"
        );
    }
}

#[test]
fn a_failing_strategy_ends_with_its_cause_and_line() {
    let src = b"from palisade import Strategy, Int\nclass S(Strategy):\n    n = Int(3)\n    def next(self, bar):\n        if bar.close > 0:\n            1 / 0\n";
    let path = source_file("boom.py", src);
    let out = palisade(&["backtest", &path, "--data", &sample_path(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["outcome"]["cause"], "guest_error");
    let m = v["outcome"]["message"].as_str().unwrap();
    assert!(
        m.contains("ZeroDivisionError") && m.contains("boom.py, line 6"),
        "{m}"
    );
    // An undeclared parameter on the command line is bad input (exit 2).
    let out = palisade(&["backtest", &path, "--data", &sample_path(), "-p", "m=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_missing_runtime_is_named_with_how_to_build_it() {
    let out = palisade_env(
        &["backtest", &example("sma_cross"), "--data", &sample_path()],
        &[("PALISADE_PYTHON_RUNTIME", "/nonexistent/palisade-python.wasm")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("PALISADE_PYTHON_RUNTIME names /nonexistent/palisade-python.wasm"),
        "{}",
        text(&out)
    );
}

#[test]
fn studies_run_python_strategies() {
    let optimize = |module: &str| -> Value {
        let out = palisade(&[
            "optimize",
            module,
            "--data",
            &sample_path(),
            "--grid",
            "fast=5:15:5",
            "--grid",
            "slow=30:50:10",
            "--json",
            "--no-timing",
            "--threads",
            "2",
        ]);
        assert!(out.status.success(), "{module}: {}", text(&out));
        json_of(&out)
    };
    let ours = optimize(&example("sma_cross"));
    let theirs = optimize(&guest_path("sma_cross"));
    let ranked = |v: &Value| -> Vec<(Value, Value)> {
        v["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["params"].clone(), x["stats"]["total_return"].clone()))
            .collect()
    };
    assert_eq!(ranked(&ours), ranked(&theirs));
    assert_eq!(ours["variants"].as_array().map(Vec::len), Some(9));
}

/// The service, one server for every case (it compiles the runtime once).
#[test]
fn the_service_takes_python_strategies() {
    let dir = tempfile_dir("python-service");
    let s = server(&dir, &[]);
    let c = s.client(None);
    let source = std::fs::read(example("sma_cross")).unwrap();
    let reply = c.post("/v1/strategies", "text/x-python", &source).expect(201);
    let v = reply.json();
    assert_eq!(v["language"], "python");
    assert_eq!(v["name"], "sma-cross");
    let id = v["id"].as_str().unwrap().to_owned();
    // The same upload again: 200, the same strategy.
    assert_eq!(
        c.post("/v1/strategies", "text/x-python", &source)
            .expect(200)
            .json()["id"],
        id.as_str()
    );
    let data = c.upload_csv("SPY", &sample_csv("spy-like-daily.csv", 2520));

    // A backtest job's document equals the CLI's for the same inputs.
    let job = c.submit(&json!({"strategy": id, "dataset": data, "kind": "backtest", "params": {"fast": 7}}));
    let done = c.wait_job(&job, "the backtest", |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    let result = c.result(&job).expect(200).json();
    let sample = repo().join("data/sample/spy-like-daily.csv");
    let out = palisade(&[
        "backtest",
        &example("sma_cross"),
        "--data",
        &format!("SPY={}", sample.display()),
        "-p",
        "fast=7",
        "--json",
        "--no-timing",
        "--policy",
        "default",
    ]);
    let cli = json_of(&out);
    assert_eq!(comparable(&result), comparable(&cli));
    // (Fuel differs by the file name in the interpreter's code objects:
    // the service calls every source strategy.py.)
    let first = result.clone();

    // An optimize job over a grid of the declared parameters.
    let job = c.submit(&json!({"strategy": id, "dataset": data, "kind": "optimize",
                               "grid": ["fast=5:10:5", "slow=30:40:10"]}));
    let done = c.wait_job(&job, "the study", |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        c.result(&job).expect(200).json()["variants"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );

    // A strategy that fails while running: the job fails with the cause.
    let boom = b"from palisade import Strategy\nclass S(Strategy):\n    def next(self, bar):\n        raise ValueError('nope')\n";
    let boom_id = c.post("/v1/strategies", "text/x-python", boom).expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = c.submit(&json!({"strategy": boom_id, "dataset": data, "kind": "backtest"}));
    let done = c.wait_job(&job, "the failing job", |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    let result = c.result(&job).json();
    assert_eq!(result["outcome"]["cause"], "guest_error", "{done} {result}");
    assert!(
        result["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("ValueError: nope (strategy.py, line 4)"),
        "{result}"
    );

    // Bad sources: 422 naming the problem, nothing stored.
    for (body, cause, fragment) in [
        (&b"import socket\n"[..], "forbidden_import", "module socket"),
        (b"def f(:\n", "invalid_module", "strategy.py, line 1"),
        (
            b"from palisade import Strategy\nclass A(Strategy):\n    pass\nclass B(Strategy):\n    pass\n",
            "invalid_module",
            "manifest",
        ),
    ] {
        let p = c
            .post("/v1/strategies", "text/x-python", body)
            .problem(422, "invalid-module");
        assert_eq!(p["cause"], cause, "{p}");
        assert!(p["detail"].as_str().unwrap().contains(fragment), "{p}");
    }
    let list = c.get("/v1/strategies").expect(200).json();
    assert_eq!(list["strategies"].as_array().map(Vec::len), Some(2), "{list}");

    // A restart loads the kept runtime instead of compiling it.
    let logged = s.log_text().len();
    drop(s);
    let s = server(&dir, &[]);
    let c = s.client(None);
    let job = c.submit(&json!({"strategy": id, "dataset": data, "kind": "backtest", "params": {"fast": 7}}));
    let done = c.wait_job(&job, "the job after a restart", |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    // The same run after a restart: the same document, fuel included.
    let again = c.result(&job).expect(200).json();
    assert_eq!(comparable(&again), comparable(&first));
    assert_eq!(again["usage"], first["usage"]);
    assert!(
        !s.log_text()[logged..].contains("compiling the Python runtime"),
        "compiled again after a restart"
    );
    assert!(Path::new(&dir).join("runtimes").read_dir().unwrap().count() >= 1);
}

/// A server without a Python runtime refuses Python uploads, naming why;
/// one told of a runtime that is not there does not start.
#[test]
fn a_server_without_the_runtime_refuses_python_uploads() {
    let dir = tempfile_dir("python-none");
    let s = server(&dir, &["--python-runtime", ""]);
    let c = s.client(None);
    let p = c
        .post(
            "/v1/strategies",
            "text/x-python",
            &std::fs::read(example("sma_cross")).unwrap(),
        )
        .problem_of_its_status("invalid-module");
    assert!(p["detail"].as_str().unwrap().contains("Python runtime"), "{p}");
    // wasm modules are unaffected.
    c.post("/v1/strategies", "application/wasm", &support::guest("sma_cross"))
        .expect(201);
    let out = Command::new(PALISADE)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--python-runtime",
            "/nonexistent/palisade-python.wasm",
        ])
        .arg("--data-dir")
        .arg(dir.join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("python_runtime /nonexistent/palisade-python.wasm is not a file"),
        "{}",
        text(&out)
    );
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// Waiting on the clock returns at once (the bar's time does not pass), so
/// `time.sleep` cannot hold a run past its deadlines; clocks read the bar's
/// time.
#[test]
fn sleeping_returns_at_once_and_clocks_read_the_bar() {
    let src = b"import time\nfrom palisade import Strategy\ntime.sleep(3600)\nclass S(Strategy):\n    def next(self, bar):\n        time.sleep(3600)\n        self.log(f'{time.time()} {time.monotonic()} {bar.ts}')\n";
    let path = source_file("sleepy.py", src);
    let started = std::time::Instant::now();
    let data = source_file("bars100.csv", &sample_csv("spy-like-daily.csv", 100));
    let out = palisade(&["backtest", &path, "--data", &data, "--json", "--policy", "strict"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "slept");
    let v = json_of(&out);
    let logs = v["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 100, "{v}");
    for line in logs {
        let parts: Vec<&str> = line["message"].as_str().unwrap().split(' ').collect();
        let ts = parts[2].parse::<f64>().unwrap();
        assert_eq!(parts[0].parse::<f64>().unwrap(), ts, "{line}");
        assert_eq!(parts[1].parse::<f64>().unwrap(), ts, "{line}");
        assert_eq!(line["ts"].as_f64(), Some(ts));
    }
}
