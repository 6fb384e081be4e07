//! Sandbox-level fixtures: policies, a sandbox, running a module over data,
//! hand-written WAT guests, and a threshold search for limits.

use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_run::{params, Failure, Policy, RunConfig, RunOutput};
use palisade_sandbox::{CompiledModule, EngineSettings, Sandbox};

/// The default policy with `edit` applied (and checked).
pub fn policy(edit: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        name: "test".into(),
        ..Policy::default()
    };
    edit(&mut p);
    p.validate("test")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    p
}

/// A sandbox able to run `policy`.
pub fn sandbox(policy: &Policy) -> Sandbox {
    Sandbox::new(EngineSettings {
        max_instances: 16,
        ..EngineSettings::for_policy(policy)
    })
    .expect("engine starts")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Loads `module` and backtests it; `Err` when the module is refused.
pub fn run_in(
    sandbox: &Sandbox,
    module: &[u8],
    policy: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> Result<RunOutput, Failure> {
    let strategy = sandbox.load(module, policy)?;
    Ok(backtest_loaded(sandbox, &strategy, policy, overrides, data))
}

/// Backtests a loaded strategy (a module or a Python source) with
/// `overrides` of its parameters and seed 0.
pub fn backtest_loaded(
    sandbox: &Sandbox,
    strategy: &CompiledModule,
    policy: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> RunOutput {
    block_on(sandbox.backtest(strategy, data, policy, &run_config(strategy, overrides)))
}

/// The run settings of `strategy` with `overrides` of its parameters and
/// seed 0.
pub fn run_config(strategy: &CompiledModule, overrides: &[(&str, &str)]) -> RunConfig {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let values = params::resolve(&strategy.info.manifest, &overrides).expect("test parameters are valid");
    RunConfig {
        params: values,
        ..RunConfig::default()
    }
}

/// [`run_in`] with a fresh sandbox for `policy`.
pub fn run(
    module: &[u8],
    policy: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> Result<RunOutput, Failure> {
    run_in(&sandbox(policy), module, policy, overrides, data)
}

/// How a run ended: Ok, or the failure (refusal at load included).
pub fn outcome(
    module: &[u8],
    policy: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> Result<(), Failure> {
    run(module, policy, overrides, data)?.outcome
}

/// Everything a run produced, as JSON text (for byte-for-byte comparisons).
pub fn result_json(out: &RunOutput) -> String {
    serde_json::to_string(&serde_json::json!({
        "outcome": out.outcome.as_ref().err(),
        "report": out.report,
        "logs": out.logs,
        "metrics": out.metrics,
    }))
    .unwrap()
}

/// A hand-written guest: every ABI import declared, `pages` of memory, the
/// body of `palisade_run` and extra module fields, and a minimal manifest.
pub fn wat_guest(pages: u32, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "palisade" "next_bars" (func $next_bars (param i32 i32) (result i32)))
  (import "palisade" "order" (func $order (param i32 f64 i32 f64) (result i64)))
  (import "palisade" "log" (func $log (param i32 i32 i32)))
  (import "palisade" "fail" (func $fail (param i32 i32 i32)))
  (import "palisade" "param" (func $param (param i32 i32) (result f64)))
  (memory (export "memory") {pages})
  (func (export "palisade_run") (result i32)
    {body})
  {extra}
  (@custom "palisade.manifest" "{{\"abi\":2,\"name\":\"wat-guest\",\"version\":\"1\",\"params\":[]}}")
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

/// WAT that hands every bar back: asks for batches of one bar at address 0
/// until the data ends, then returns 0.
pub const DRAIN: &str = r#"
    (block $done (loop $next
      (br_if $done (i32.eqz (call $next_bars (i32.const 0) (i32.const 1))))
      (br $next)))
    (i32.const 0)"#;

/// Finds the smallest value in `lo..=hi` for which `ok` holds, assuming it
/// is monotonic (false below the threshold, true from it on).
pub fn threshold(mut lo: u64, mut hi: u64, mut ok: impl FnMut(u64) -> bool) -> u64 {
    assert!(ok(hi), "no threshold below {hi}");
    assert!(!ok(lo), "already passes at {lo}");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The default policy with fuel and deadlines so large that a guest in an
/// endless loop runs until it is cancelled.
pub fn endless_policy() -> Policy {
    Policy {
        fuel_per_event: 1_000_000_000_000,
        fuel_per_run: 1_000_000_000_000_000,
        deadline_per_event_ms: 3_600_000,
        deadline_per_run_ms: 86_400_000,
        ..Policy::default()
    }
}

/// `base` with `changes` applied (by name; new names appended).
pub fn with(base: &[(String, f64)], changes: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut out = base.to_vec();
    for (name, value) in changes {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = *value,
            None => out.push((name.clone(), *value)),
        }
    }
    out
}

/// A module made to make compilation explode: one function that pushes `n`
/// f64 constants, all alive at once on the operand stack, then adds them
/// up. Its compile time and memory grow about quadratically with `n` (here:
/// 5,000 takes about 1 s of CPU and 90 MB; 20,000 about 30 s and 190 MB).
pub fn compile_bomb(n: usize) -> Vec<u8> {
    let mut w = String::from(
        r#"(module
  (import "palisade" "next_bars" (func $next_bars (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $bomb (result f64)"#,
    );
    for i in 0..n {
        w.push_str(&format!(" (f64.const {i}.5)"));
    }
    for _ in 1..n {
        w.push_str(" f64.add");
    }
    w.push_str(
        r#")
  (func (export "palisade_run") (result i32)
    (drop (call $bomb))
    (block $done (loop $next (br_if $done (i32.eqz (call $next_bars (i32.const 0) (i32.const 1)))) (br $next)))
    (i32.const 0))
  (@custom "palisade.manifest" "{\"abi\":2,\"name\":\"bomb\",\"version\":\"1\",\"params\":[]}"))"#,
    );
    wat::parse_str(&w).expect("the bomb is valid WAT")
}
