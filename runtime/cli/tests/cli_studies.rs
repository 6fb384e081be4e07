//! `palisade optimize`, `walk-forward` and `monte-carlo`, run as a user would:
//! each variant agrees with `palisade backtest`, results do not depend on
//! `--threads`, a seed gives the same output, and bad input gets a clear error
//! with exit code 2. Needs the guest modules: `scripts/build-guests.sh` (the
//! test command runs it).

mod support;

use serde_json::Value;
use support::{guest_path as guest, palisade, sample_path as sample};

/// Runs `args`, which must succeed, and parses its JSON.
#[track_caller]
fn json(args: &[&str]) -> (Value, String) {
    let out = palisade(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "palisade {args:?} exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("palisade {args:?}: not JSON ({e}): {stdout}"));
    (v, stdout)
}

/// Runs `args`, expects exit code `code` and `message` on stderr.
#[track_caller]
fn check_error(args: &[&str], code: i32, message: &str) {
    let out = palisade(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "palisade {args:?}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "palisade {args:?} panicked: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "palisade {args:?}: {message:?} not in stderr: {stderr}"
    );
}

#[test]
fn optimize_variants_match_standalone_backtests_and_do_not_depend_on_threads() {
    let (module, data) = (guest("sma_cross"), sample());
    let args = |flag: &'static str, threads: &'static str| {
        vec![
            "optimize",
            &module,
            "--data",
            &data,
            "--grid",
            "fast=5:25:10",
            "--grid",
            "slow=20,40,60",
            "-p",
            "size=50",
            flag,
            threads,
            "--json",
            "--no-timing",
        ]
    };
    let (one, text_one) = json(&args("--threads", "1"));
    let (_, text_two) = json(&args("--threads", "2"));
    assert_eq!(
        text_one, text_two,
        "--threads 1 and --threads 2 print the same bytes"
    );
    // `--jobs` and `-j` are other names for `--threads`.
    assert_eq!(json(&args("--jobs", "2")).1, text_one);
    assert_eq!(json(&args("-j", "2")).1, text_one);

    let variants = one["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 9);
    assert_eq!(
        one["counts"],
        serde_json::json!({"ok": 8, "failed": 1, "rejected": 0})
    );
    assert_eq!(one["params"], serde_json::json!({"size": 50.0}));
    for v in variants {
        let (fast, slow) = (
            v["params"]["fast"].as_i64().unwrap(),
            v["params"]["slow"].as_i64().unwrap(),
        );
        let (f, s) = (format!("fast={fast}"), format!("slow={slow}"));
        let out = palisade(&[
            "backtest",
            &module,
            "--data",
            &data,
            "-p",
            &f,
            "-p",
            &s,
            "-p",
            "size=50",
            "--json",
            "--no-timing",
        ]);
        let alone: Value = serde_json::from_slice(&out.stdout).unwrap();
        if fast < slow {
            assert_eq!(v["status"], "ok");
            assert_eq!(v["stats"], alone["stats"], "{f} {s}");
            assert_eq!(v["objective"], alone["stats"]["total_return"]);
        } else {
            assert_eq!(
                (v["status"].as_str(), v["cause"].as_str()),
                (Some("failed"), Some("invalid_params"))
            );
            assert_eq!(v["message"], alone["outcome"]["message"]);
        }
    }
    // The best is the largest return; `top` lists indices best first.
    let best = one["best"]["objective"].as_f64().unwrap();
    let top: Vec<usize> = one["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(top.len(), 8);
    assert_eq!(variants[top[0]]["objective"].as_f64().unwrap(), best);
    for v in variants.iter().filter(|v| v["status"] == "ok") {
        assert!(v["objective"].as_f64().unwrap() <= best);
    }
}

#[test]
fn random_search_and_monte_carlo_repeat_for_a_seed() {
    let (module, data) = (guest("sma_cross"), sample());
    let sampled = |seed: &'static str| {
        json(&[
            "optimize",
            &module,
            "--data",
            &data,
            "--grid",
            "fast=2:30:1",
            "--grid",
            "slow=31:90:1",
            "--samples",
            "12",
            "--seed",
            seed,
            "--json",
            "--no-timing",
        ])
    };
    let (a, text_a) = sampled("3");
    assert_eq!(text_a, sampled("3").1);
    assert_ne!(a["variants"], sampled("4").0["variants"]);
    assert_eq!(a["variants"].as_array().unwrap().len(), 12);
    assert_eq!(a["sample"], serde_json::json!({"samples": 12, "seed": 3}));

    let mc = |method: &'static str, seed: &'static str| {
        json(&[
            "monte-carlo",
            &module,
            "--data",
            &data,
            "-p",
            "fast=10",
            "-p",
            "slow=40",
            "-p",
            "size=100",
            "--runs",
            "500",
            "--method",
            method,
            "--seed",
            seed,
            "--json",
            "--no-timing",
        ])
    };
    for method in ["bootstrap", "permutation"] {
        let (v, text) = mc(method, "1");
        assert_eq!(text, mc(method, "1").1, "{method}");
        assert_ne!(v["max_drawdown"], mc(method, "2").0["max_drawdown"], "{method}");
        for key in ["final_return", "max_drawdown"] {
            let p = &v[key];
            assert!(
                p["p5"].as_f64() <= p["p50"].as_f64() && p["p50"].as_f64() <= p["p95"].as_f64(),
                "{p}"
            );
        }
        let trades = v["trades"].as_u64().unwrap();
        assert!(trades > 10, "{trades}");
        assert_eq!(v["trade_returns"].as_array().unwrap().len() as u64, trades);
    }
}

#[test]
fn walk_forward_reports_every_window_and_the_summary() {
    let (module, data) = (guest("sma_cross"), sample());
    let (v, _) = json(&[
        "walk-forward",
        &module,
        "--data",
        &data,
        "--grid",
        "fast=5:25:10",
        "--grid",
        "slow=30,60",
        "-p",
        "size=100",
        "--windows",
        "3",
        "--in-sample",
        "0.6",
        "--mode",
        "anchored",
        "--json",
        "--no-timing",
        "--equity-curve",
    ]);
    let windows = v["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3);
    for w in windows {
        assert_eq!(
            w["in_sample"]["start_ts"], windows[0]["in_sample"]["start_ts"],
            "anchored"
        );
        assert!(w["chosen"]["params"]["fast"].is_i64(), "{w}");
        assert_eq!(w["test"]["status"], "ok");
    }
    let stitched = &v["stitched"];
    let oos_bars: u64 = windows
        .iter()
        .map(|w| w["out_of_sample"]["bars"].as_u64().unwrap())
        .sum();
    assert_eq!(
        stitched["equity_curve"].as_array().unwrap().len() as u64,
        oos_bars
    );
    let robustness = v["robustness"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&robustness));
    assert_eq!(v["warmup"], 60);
    assert_eq!(v["stability"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (module, data) = (guest("sma_cross"), sample());
    let opt = |extra: &[&'static str]| {
        let mut a = vec![
            "optimize".to_string(),
            module.clone(),
            "--data".into(),
            data.clone(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cases: &[(&[&str], &str)] = &[
        (&[], "error: empty grid: name at least one parameter to vary"),
        (
            &["--grid", "fast=5:50:0"],
            "error: grid fast: the step must be > 0 (got 0)",
        ),
        (
            &["--grid", "fast=50:5:5"],
            "error: grid fast: min 50 is greater than max 5",
        ),
        (
            &["--grid", "medium=1:3:1"],
            "error: grid: unknown parameter medium (the strategy declares: fast, slow, size)",
        ),
        (
            &["--grid", "fast=1:1000:1", "--grid", "slow=2:200:1"],
            "error: the grid has 199000 variants, more than policy default allows (max_variants = 100000)",
        ),
        (
            &["--grid", "fast=1:5:1", "-p", "fast=3"],
            "error: parameter fast is both varied by the grid and fixed with --param",
        ),
        (
            &["--grid", "fast", "--samples", "0"],
            "error: --samples must be at least 1",
        ),
        (
            &["--grid", "fast", "--objective", "return"],
            "unknown objective \"return\"",
        ),
    ];
    for (extra, message) in cases {
        let args = opt(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check_error(&args, 2, message);
    }
    check_error(
        &[
            "walk-forward", &module, "--data", &data, "--grid", "fast=5", "--grid", "slow=400,800", "--windows", "8",
        ],
        2,
        "error: walk-forward windows are too short for the strategy's warm-up: in-sample windows hold 576 bars \
         and out-of-sample windows 243, but the strategy needs 800 bars of warm-up (parameter slow = 800, the \
         largest in the grid)",
    );
    check_error(
        &["monte-carlo", &module, "--data", &data, "--runs", "0"],
        2,
        "error: runs = 0 is invalid: a Monte Carlo study needs at least one run",
    );
    // Nothing usable: exit code 1.
    check_error(
        &[
            "optimize", &module, "--data", &data, "--grid", "fast=40", "--grid", "slow=30",
        ],
        1,
        "",
    );
    check_error(
        &["monte-carlo", &guest("adversary"), "--data", &data],
        1,
        "error: the backtest closed no trades: there is nothing to resample",
    );
}

#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_cancels_a_study() {
    use std::time::{Duration, Instant};
    // 2,001 variants of a guest that burns fuel on every bar: many seconds.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "optimize",
            &guest("adversary"),
            "--data",
            &sample(),
            "--grid",
            "at=0:2000:1",
            "-p",
            "mode=9",
            "-p",
            "amount=100000",
            "--threads",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start palisade");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the study ended too soon to be interrupted"
    );
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let interrupted = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the study was cancelled after"), "{stderr}");
    assert!(stderr.contains("of 2001 runs"), "{stderr}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        interrupted.elapsed()
    );
}
