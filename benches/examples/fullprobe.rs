//! TEMPORARY experiment (not to be committed).
use palisade_benches::{guest_module, random_walk, DEFAULT_SEED};
use palisade_runtime::native;
use palisade_runtime::policy::Policy;
use palisade_runtime::sandbox::{params, EngineSettings, RunConfig, Sandbox};
use std::time::Instant;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let policy = Policy::default();
    let sandbox = Sandbox::new(EngineSettings {
        max_instances: 4,
        ..EngineSettings::for_policy(&policy)
    })
    .unwrap();
    let bytes = match std::env::var("WASM") {
        Ok(p) => std::fs::read(p).unwrap(),
        Err(_) => guest_module("sma_cross"),
    };
    let strategy = sandbox.load(&bytes, &policy).unwrap();
    let values = params::resolve(&strategy.info.manifest, &[]).unwrap();
    let run = RunConfig {
        params: values,
        ..RunConfig::default()
    };
    let data = random_walk(1_000_000, DEFAULT_SEED);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut best_w = f64::MAX;
    let mut best_n = f64::MAX;
    for _ in 0..15 {
        if which != "native" {
            let t = Instant::now();
            let out = rt.block_on(sandbox.backtest(&strategy, data.clone(), &policy, &run));
            best_w = best_w.min(t.elapsed().as_secs_f64());
            assert!(out.outcome.is_ok());
        }
        if which != "wasm" {
            let t = Instant::now();
            let out = native::backtest::<sma_cross::SmaCross>(data.clone(), &policy, &run);
            best_n = best_n.min(t.elapsed().as_secs_f64());
            assert!(out.outcome.is_ok());
        }
    }
    println!("best wasm {:.1} ms, native {:.1} ms", best_w * 1e3, best_n * 1e3);
}
