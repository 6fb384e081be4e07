//! Same module + params + data + policy gives the same result, byte for byte:
//! across repeated runs, across batch sizes, and between the wasm build of a
//! strategy and its native build run through the same engine.

use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_run::native;
use palisade_run::Policy;
use palisade_run::{params, RunConfig, RunOutput};

use crate::support::{data, guests, policy, read, result_json, run};

fn wasm(path: &str, p: &Policy, overrides: &[(&str, &str)], prices: Arc<Dataset>) -> RunOutput {
    let out = run(&read(path), p, overrides, prices).expect("module loads");
    assert!(out.outcome.is_ok(), "{path}: {:?}", out.outcome);
    out
}

fn native_run<S: palisade_sdk::Strategy>(
    manifest: &str,
    p: &Policy,
    overrides: &[(&str, &str)],
    prices: Arc<Dataset>,
) -> RunOutput {
    let manifest = serde_json::from_str(manifest).unwrap();
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let run = RunConfig {
        params: params::resolve(&manifest, &overrides).unwrap(),
        ..RunConfig::default()
    };
    native::backtest::<S>(prices, p, &run)
}

#[test]
fn repeated_runs_are_identical() {
    let p = policy(|_| {});
    let prices = data(3000, 1, 3);
    let first = result_json(&wasm(guests::SMA_CROSS, &p, &[], prices.clone()));
    for _ in 0..3 {
        assert_eq!(
            result_json(&wasm(guests::SMA_CROSS, &p, &[], prices.clone())),
            first
        );
    }
    assert!(first.contains("\"trades\":[{"), "the test data should trade");
}

#[test]
fn wasm_and_native_builds_agree() {
    let p = policy(|_| {});
    for (symbols, seed) in [(1, 11), (3, 12)] {
        let prices = data(3000, symbols, seed);
        let cases: [(&str, String, String); 3] = [
            (
                "sma-cross",
                result_json(&wasm(
                    guests::SMA_CROSS,
                    &p,
                    &[("fast", "5"), ("slow", "20")],
                    prices.clone(),
                )),
                result_json(&native_run::<sma_cross::SmaCross>(
                    sma_cross::MANIFEST_JSON,
                    &p,
                    &[("fast", "5"), ("slow", "20")],
                    prices.clone(),
                )),
            ),
            (
                "bollinger-revert",
                result_json(&wasm(guests::BOLLINGER_REVERT, &p, &[], prices.clone())),
                result_json(&native_run::<bollinger_revert::BollingerRevert>(
                    bollinger_revert::MANIFEST_JSON,
                    &p,
                    &[],
                    prices.clone(),
                )),
            ),
            (
                "donchian-breakout",
                result_json(&wasm(guests::DONCHIAN_BREAKOUT, &p, &[], prices.clone())),
                result_json(&native_run::<donchian_breakout::DonchianBreakout>(
                    donchian_breakout::MANIFEST_JSON,
                    &p,
                    &[],
                    prices.clone(),
                )),
            ),
        ];
        for (name, wasm, native) in cases {
            assert_eq!(wasm, native, "{name} with {symbols} symbols");
            assert!(
                wasm.contains("\"trades\":[{"),
                "{name} should trade on the test data"
            );
        }
    }
}

#[test]
fn a_precompiled_artifact_runs_like_the_compiled_module() {
    let p = policy(|_| {});
    let bytes = read(guests::SMA_CROSS);
    let sandbox = crate::support::sandbox(&p);
    let compiled = sandbox.load(&bytes, &p).expect("module loads");
    let artifact = sandbox.serialize(&compiled).expect("serializes");
    // Loading takes the module's checked description, as compiling does.
    let info = || sandbox.check(&bytes, &p).expect("module is valid");
    // SAFETY: the artifact was produced just above by this sandbox.
    let loaded = unsafe { sandbox.load_precompiled(info(), &artifact) }.expect("artifact loads");
    assert_eq!(format!("{:?}", loaded.info), format!("{:?}", compiled.info));
    let run = RunConfig {
        params: params::resolve(&loaded.info.manifest, &[]).unwrap(),
        ..RunConfig::default()
    };
    let prices = data(3_000, 1, 11);
    let a = crate::support::block_on(sandbox.backtest(&compiled, prices.clone(), &p, &run));
    let b = crate::support::block_on(sandbox.backtest(&loaded, prices, &p, &run));
    assert!(a.outcome.is_ok(), "{:?}", a.outcome);
    assert_eq!(result_json(&a), result_json(&b));

    // The module is still validated against the policy it is loaded for:
    // without that check there is no description to load it with.
    let tiny = policy(|q| q.module_bytes = 1_024);
    let refused = sandbox.check(&bytes, &tiny).unwrap_err();
    assert!(refused.message.contains("module_bytes"), "{refused}");

    // The key names the compiled code's kind: stable for one engine build
    // and configuration. A damaged artifact is refused.
    assert_eq!(sandbox.artifact_key(), crate::support::sandbox(&p).artifact_key());
    assert_eq!(sandbox.artifact_key().len(), 16);
    // SAFETY: a truncated artifact fails the header and section checks.
    let refused = unsafe { sandbox.load_precompiled(info(), &artifact[..artifact.len() / 2]) }.unwrap_err();
    assert!(
        refused.message.contains("precompiled artifact does not load"),
        "{refused}"
    );
}
