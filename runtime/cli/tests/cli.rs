//! The `palisade` binary, run as a user would: exit codes, the JSON
//! contract, and a clear error (never a panic) for every kind of bad input.
//! Needs the guest modules: `scripts/build-guests.sh` (the test command runs it).

mod support;

use std::process::Output;
use support::{guest_path as guest, palisade, sample_path as sample};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `contents` to a fresh file named `name` and returns its path.
fn file(name: &str, contents: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

/// Runs `args`, expects exit code `code` and `fragment` in stderr (or stdout).
#[track_caller]
fn check(args: &[&str], code: i32, fragment: &str) {
    let out = palisade(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "palisade {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "palisade {args:?} panicked: {stderr}"
    );
    assert!(
        stderr.contains(fragment) || stdout.contains(fragment),
        "palisade {args:?}: {fragment:?} not in\nstdout: {stdout}\nstderr: {stderr}"
    );
}

#[test]
fn backtest_json_has_the_documented_shape() {
    let out = palisade(&["backtest", &guest("sma_cross"), "--data", &sample(), "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["bars", "stats", "trades", "final_equity", "outcome", "timing"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["bars"], 2520);
    let trade = &v["trades"][0];
    for key in ["entry_ts", "exit_ts", "qty", "entry_price", "exit_price", "pnl"] {
        assert!(trade.get(key).is_some(), "trade lacks {key}");
    }
    assert!(v["timing"]["load_seconds"].is_number() && v["timing"]["run_seconds"].is_number());
    assert!(v["stats"]["sharpe"].is_number());
}

#[test]
fn repeated_runs_print_identical_bytes() {
    let args = [
        "backtest",
        &guest("sma_cross"),
        "--data",
        &sample(),
        "--json",
        "--no-timing",
        "-p",
        "fast=5",
    ];
    let first = palisade(&args).stdout;
    assert!(!first.is_empty());
    for _ in 0..2 {
        assert_eq!(palisade(&args).stdout, first);
    }
}

#[test]
fn a_failed_run_exits_non_zero_and_still_prints_its_outcome() {
    let args = [
        "backtest",
        &guest("adversary"),
        "--data",
        &sample(),
        "-p",
        "mode=4",
        "-p",
        "at=7",
        "--json",
    ];
    let strict: Vec<&str> = args.iter().copied().chain(["--policy", "strict"]).collect();
    let out = palisade(&strict);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on failure too");
    assert_eq!(v["outcome"]["cause"], "guest_panic");
    assert!(v["outcome"]["message"]
        .as_str()
        .unwrap()
        .contains("adversary gave up at bar 7"));
    // The host hands over one timestamp at a time, so it knows exactly where
    // the guest was: bars 0 to 7.
    assert_eq!(v["bars"], 8, "the report covers the bars up to the failure");
    assert_eq!(v["policy"], "strict");
}

#[test]
fn validate_and_inspect_report_on_modules() {
    check(
        &["validate", &guest("sma_cross")],
        0,
        "ok: sma-cross 0.1.0 is a valid ABI v2 strategy",
    );
    check(&["inspect", &guest("sma_cross")], 0, "fast SMA length in bars");
    let bad = file("bad.wasm", b"not wasm at all");
    check(
        &["validate", &bad],
        1,
        "rejected: invalid_module: not a WebAssembly module",
    );
    let system = wat::parse_str(
        r#"(module (import "env" "system" (func (param i32) (result i32))) (memory (export "memory") 1)
            (func (export "palisade_run") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let system = file("system.wasm", &system);
    check(
        &["validate", &system],
        1,
        "forbidden_import: forbidden import env.system",
    );
    // A module built with palisade-sdk 0.1 (ABI v1) is refused, naming the
    // SDK version to rebuild with.
    let abi1 = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "palisade_run") (result i32) (i32.const 0))
            (@custom "palisade.manifest" "{\"abi\":1,\"name\":\"x\",\"version\":\"1\"}"))"#,
    )
    .unwrap();
    let abi1 = file("abi1.wasm", &abi1);
    check(
        &["backtest", &abi1, "--data", &sample()],
        1,
        "invalid_module: the module was built for ABI v1 (palisade-sdk 0.1), which this runtime no longer runs",
    );
    check(&["validate", &abi1, "--json"], 1, "\"verdict\":\"rejected\"");
    check(
        &["validate", &abi1],
        1,
        "rebuild it with palisade-sdk 0.2 (ABI v2)",
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let sma = guest("sma_cross");
    let data = |name: &str, csv: &str| file(name, csv.as_bytes());
    let head = "timestamp,open,high,low,close,volume\n";
    let cases: Vec<(String, &str)> = vec![
        (
            data("short.csv", &format!("{head}1,1,1,1,1,1\n2,1,1,1\n")),
            "short.csv line 3",
        ),
        (
            data("text.csv", &format!("{head}1,1,1,1,1,1\n2,1,x,1,1,1\n")),
            "text.csv line 3",
        ),
        (
            data("back.csv", &format!("{head}5,1,1,1,1,1\n4,1,1,1,1,1\n")),
            "back.csv line 3",
        ),
        (
            data("same.csv", &format!("{head}5,1,1,1,1,1\n5,1,1,1,1,1\n")),
            "same.csv line 3",
        ),
        (
            data("nan.csv", &format!("{head}1,1,1,1,NaN,1\n")),
            "nan.csv line 2",
        ),
        (
            data("neg.csv", &format!("{head}1,-1,1,-1,1,1\n")),
            "neg.csv line 2",
        ),
        (
            data("header.csv", "time,o,h,l,c,v\n1,1,1,1,1,1\n"),
            "expected header",
        ),
        (data("empty.csv", head), "no bars"),
    ];
    for (path, fragment) in &cases {
        check(&["backtest", &sma, "--data", path], 2, fragment);
    }
    check(
        &["backtest", &sma, "--data", "/nonexistent/prices.csv"],
        2,
        "/nonexistent/prices.csv",
    );
    check(
        &["backtest", &sma, "--data", &sample(), "-p", "speed=3"],
        2,
        "unknown parameter speed",
    );
    check(
        &["backtest", &sma, "--data", &sample(), "-p", "fast=0"],
        2,
        "parameter fast = 0 is out of range",
    );
    check(
        &["backtest", &sma, "--data", &sample(), "-p", "fast"],
        2,
        "not of the form name=value",
    );
    check(
        &["backtest", &sma, "--data", &sample(), "--policy", "lenient"],
        2,
        "unknown policy",
    );
    check(
        &["backtest", "/nonexistent.wasm", "--data", &sample()],
        2,
        "/nonexistent.wasm: cannot read",
    );
    check(
        &["backtest", &sma, "--data", &sample(), "--cash=-5"],
        2,
        "initial_cash",
    );
}

#[test]
fn compilation_is_bounded_by_the_policy() {
    let bomb = file("bomb.wasm", &palisade_testkit::fixtures::compile_bomb(5_000));
    let tight = file("tight.toml", b"compile_ms = 100\n");
    // Past its CPU time: refused as invalid_module, with the budget named.
    let started = std::time::Instant::now();
    check(
        &["validate", &bomb, "--policy", &tight],
        1,
        "invalid_module: compilation exceeded its 100 ms of CPU time (compile_ms",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the compiler was not stopped in time"
    );
    // Within a budget that covers it, the same module compiles.
    let roomy = file("roomy.toml", b"compile_ms = 120_000\n");
    check(&["validate", &bomb, "--policy", &roomy], 0, "ok: bomb 1");
    // Past its memory: refused too.
    let big_bomb = file("big-bomb.wasm", &palisade_testkit::fixtures::compile_bomb(20_000));
    let small = file("small.toml", b"compile_memory_bytes = 134_217_728\n");
    check(
        &["validate", &big_bomb, "--policy", &small],
        1,
        "invalid_module: compilation exceeded its 134217728 bytes of memory (compile_memory_bytes)",
    );
    // The example strategies compile well within the same budgets.
    for policy in [&tight, &small] {
        check(
            &["validate", &guest("sma_cross"), "--policy", policy],
            0,
            "ok: sma-cross",
        );
    }
    check(
        &[
            "backtest",
            &guest("sma_cross"),
            "--data",
            &sample(),
            "--policy",
            &tight,
        ],
        0,
        "outcome: ok",
    );
}

#[test]
fn bench_reports_exact_costs_and_catches_regressions() {
    use palisade_testkit::fixtures::{wat_guest, DRAIN};
    let data = sample();
    let base = std::env::temp_dir().join(format!("palisade-bench-{}.json", std::process::id()));
    let base = base.to_str().unwrap().to_owned();
    // The same strategy (by name) twice: as built, and with a few more
    // operations per bar.
    let lean = file("lean.wasm", &wat_guest(1, DRAIN, ""));
    let slower_body = r#"
    (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (call $next_bars (i32.const 0) (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 7)))
      (local.set $i (i32.mul (local.get $i) (i32.const 3)))
      (br $next)))
    (i32.const 0)"#;
    let slower = file("slower.wasm", &wat_guest(1, slower_body, ""));
    check(
        &["bench", &lean, "--data", &data, "--runs", "1", "--save", &base],
        0,
        "fuel per bar",
    );
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    assert_eq!(saved["kind"], "bench");
    assert_eq!(
        saved["figures"]["host_calls"], 2521,
        "one next_bars per bar, and the last"
    );
    // Run after run: the same exact figures.
    check(
        &[
            "bench",
            &lean,
            "--data",
            &data,
            "--runs",
            "2",
            "--baseline",
            &base,
        ],
        0,
        "fuel_per_bar",
    );
    // The slower build: fuel per bar grew, named, exit 1.
    let out = palisade(&[
        "bench",
        &slower,
        "--data",
        &data,
        "--runs",
        "1",
        "--baseline",
        &base,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("regression: fuel_per_bar"), "{stderr}");
    assert!(stdout.contains("module changed"), "{stdout}");
    // ... unless the regression is allowed.
    check(
        &[
            "bench",
            &slower,
            "--data",
            &data,
            "--runs",
            "1",
            "--baseline",
            &base,
            "--max-regression",
            "1000",
        ],
        0,
        "within bounds",
    );
    // Bad baselines get clear errors (exit 2), never a comparison.
    check(
        &[
            "bench",
            &lean,
            "--data",
            &data,
            "--baseline",
            "/nonexistent/base.json",
        ],
        2,
        "baseline /nonexistent/base.json: cannot read",
    );
    let junk = file("junk.json", b"{\"kind\":\"bench\"}");
    check(
        &["bench", &lean, "--data", &data, "--baseline", &junk],
        2,
        "not a report of `palisade bench --save`",
    );
    let other_data = file("other.csv", &support::sample_csv("spy-like-daily.csv", 100));
    check(
        &[
            "bench",
            &lean,
            "--data",
            &format!("spy-like-daily={other_data}"),
            "--baseline",
            &base,
        ],
        2,
        "is of another data set",
    );
    check(
        &["bench", &guest("sma_cross"), "--data", &data, "--baseline", &base],
        2,
        "is of another strategy (wat-guest), not sma-cross",
    );
    let _ = std::fs::remove_file(&base);
}
