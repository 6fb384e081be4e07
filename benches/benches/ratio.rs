//! The wasm-vs-native ratio of the project's ratio gate
//! (`scripts/ratio-gate.sh`, run by the README's test command).
//!
//! Run: `cargo bench -p palisade-benches --bench ratio`. sma-cross (fast 10,
//! slow 30, size 1) over 200,000 generated bars, in the sandbox and compiled
//! natively through the same engine, in alternating rounds so that both
//! sides meet the same machine: a noisy moment slows one round of each, and
//! the median of the per-round ratios stays put. Prints one JSON object:
//! the median times of each side and the median ratio wasm / native.

use std::sync::Arc;
use std::time::Instant;

use palisade_backtest::Dataset;
use palisade_run::{native, params, Policy, RunConfig};
use palisade_sandbox::{EngineSettings, Sandbox};
use palisade_testkit::bars::{minute_dataset, DEFAULT_SEED};
use palisade_testkit::guests::bytes as guest_module;

const BARS: usize = 200_000;
const ROUNDS: usize = 15;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let policy = Policy::default();
    let settings = EngineSettings {
        max_instances: 2,
        ..EngineSettings::for_policy(&policy)
    };
    let sandbox = Sandbox::new(settings).unwrap_or_else(|f| panic!("cannot start the sandbox: {f}"));
    let strategy = sandbox
        .load(&guest_module("sma_cross"), &policy)
        .unwrap_or_else(|f| panic!("sma_cross.wasm was refused: {f}"));
    let overrides =
        [("fast", "10"), ("slow", "30"), ("size", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let run = RunConfig {
        params: params::resolve(&strategy.info.manifest, &overrides).expect("sma-cross parameters"),
        ..RunConfig::default()
    };
    let data: Arc<Dataset> = minute_dataset(BARS, DEFAULT_SEED);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let wasm_run = || {
        let t = Instant::now();
        let out = rt.block_on(sandbox.backtest(&strategy, data.clone(), &policy, &run));
        (t.elapsed().as_secs_f64(), out)
    };
    let native_run = || {
        let t = Instant::now();
        let out = native::backtest::<sma_cross::SmaCross>(data.clone(), &policy, &run);
        (t.elapsed().as_secs_f64(), out)
    };
    // Both do the same work (and are warm): same trades, same equity.
    let (_, w) = wasm_run();
    let (_, n) = native_run();
    if let Err(f) = w.outcome.as_ref().and(n.outcome.as_ref()) {
        panic!("sma-cross failed: {f}");
    }
    assert_eq!(w.report.trades, n.report.trades, "wasm and native trades differ");
    assert_eq!(w.report.final_equity, n.report.final_equity);

    let (mut wasm, mut native, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (tw, _) = wasm_run();
        let (tn, _) = native_run();
        wasm.push(tw);
        native.push(tn);
        ratios.push(tw / tn);
    }
    println!(
        "{{\"bars\": {BARS}, \"rounds\": {ROUNDS}, \"wasm_ms\": {:.3}, \"native_ms\": {:.3}, \"wasm_over_native\": {:.4}}}",
        median(wasm) * 1e3,
        median(native) * 1e3,
        median(ratios)
    );
}
