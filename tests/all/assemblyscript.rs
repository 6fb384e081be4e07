//! AssemblyScript as a strategy language: the sma-cross written in
//! AssemblyScript (`guest-examples/assemblyscript/sma_cross.ts`, built by
//! `scripts/build-assemblyscript.sh`) validates as an ABI v2 module and
//! gives the Rust sma-cross's results exactly (trades, report, outcome, logs,
//! metrics; everything a run produces but its usage, since the two modules
//! do different work for it) over one- and multi-symbol data, default and
//! other parameters, ties, and windows long enough to leave the integer fast
//! path.
//!
//! What it does not test: containment of hostile AssemblyScript (a module
//! is a module; the limits are tested on the Rust adversary and WAT).

use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_host_api::IMPORT_MODULE;
use palisade_run::{Cause, Policy, RunOutput};
use palisade_testkit::bars;

use crate::support::{guests, policy, read, result_json, run_in, sandbox};

/// A case: what it is, the parameters given, the data.
type Case = (&'static str, Vec<(&'static str, &'static str)>, Arc<Dataset>);

fn as_module() -> Vec<u8> {
    read(guests::SMA_CROSS_AS)
}

/// Runs the AssemblyScript and the Rust sma-cross with the same parameters
/// over the same data and checks that everything but usage is equal; returns
/// the AssemblyScript run.
fn check_same(what: &str, p: &Policy, overrides: &[(&str, &str)], data: Arc<Dataset>) -> RunOutput {
    let sandbox = sandbox(p);
    let ours = run_in(&sandbox, &as_module(), p, overrides, data.clone())
        .unwrap_or_else(|f| panic!("{what}: the AssemblyScript module was refused: {f}"));
    let rust = run_in(&sandbox, &guests::bytes("sma_cross"), p, overrides, data)
        .unwrap_or_else(|f| panic!("{what}: the Rust module was refused: {f}"));
    assert_eq!(
        result_json(&ours),
        result_json(&rust),
        "{what} (parameters {overrides:?}): the AssemblyScript sma-cross differs from the Rust one"
    );
    ours
}

/// Closes (one symbol, one bar a day) as a dataset; open = high = low = close.
fn closes(prices: &[f64]) -> Arc<Dataset> {
    let bars = prices
        .iter()
        .enumerate()
        .map(|(i, &c)| palisade_host_api::Bar {
            ts: 1_600_000_000 + 86_400 * i as i64,
            symbol: 0,
            reserved: 0,
            open: c,
            high: c,
            low: c,
            close: c,
            volume: 1.0,
        })
        .collect();
    bars::dataset(&["TIE"], bars)
}

#[test]
fn validates_as_an_abi_v2_module() {
    let p = policy(|_| {});
    let loaded = sandbox(&p)
        .load(&as_module(), &p)
        .unwrap_or_else(|f| panic!("{}: {f}", guests::SMA_CROSS_AS));
    let info = &loaded.info;
    assert!(
        info.imports
            .iter()
            .all(|i| i.starts_with(&format!("{IMPORT_MODULE}."))),
        "imports beyond the ABI: {:?}",
        info.imports
    );
    assert_eq!(info.manifest.name, "sma-cross-as");
    let rust = sandbox(&p).load(&guests::bytes("sma_cross"), &p).unwrap();
    assert_eq!(
        info.manifest.params, rust.info.manifest.params,
        "the parameters must be declared as the Rust sma-cross declares them"
    );
    assert_eq!(info.manifest.warmup, rust.info.manifest.warmup);
}

#[test]
fn trades_as_the_rust_sma_cross() {
    let p = policy(|_| {});
    let cases: Vec<Case> = vec![
        ("minute walk, defaults", vec![], bars::minute_dataset(4000, 7)),
        (
            "regime walk, fast 5, slow 20, size 2.5",
            vec![("fast", "5"), ("slow", "20"), ("size", "2.5")],
            bars::regime_dataset(3000, 3),
        ),
        ("four symbols, defaults", vec![], bars::multi_walk(1500, 4, 9)),
        (
            "three symbols, fast 3, slow 8, size 10",
            vec![("fast", "3"), ("slow", "8"), ("size", "10")],
            bars::multi_walk(1000, 3, 21),
        ),
        (
            // Windows of 1,024 bars and more: the comparison leaves the
            // 64-bit cross-multiplication (i128 in Rust, floor quotients
            // and remainders in AssemblyScript).
            "minute walk, fast 300, slow 1100",
            vec![("fast", "300"), ("slow", "1100")],
            bars::minute_dataset(6000, 5),
        ),
    ];
    for (what, overrides, data) in cases {
        let out = check_same(what, &p, &overrides, data);
        assert!(out.outcome.is_ok(), "{what}: {:?}", out.outcome);
        assert!(
            !out.report.trades.is_empty(),
            "{what}: the test data should trade"
        );
    }
}

#[test]
fn a_tie_is_not_a_cross() {
    // fast(1) vs slow(3): at the 4th close 0.2 == (0.3 + 0.1 + 0.2) / 3
    // exactly (a float running sum says 0.20000000000000004), a tie, so the
    // cross above comes one bar later. Repeated, with a fall in between.
    let mut prices = Vec::new();
    for _ in 0..20 {
        prices.extend_from_slice(&[0.3, 0.3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1]);
    }
    let out = check_same(
        "ties",
        &policy(|_| {}),
        &[("fast", "1"), ("slow", "3")],
        closes(&prices),
    );
    assert!(!out.report.trades.is_empty(), "the tie data should trade");
}

#[test]
fn refuses_fast_not_below_slow_as_the_rust_one() {
    let out = check_same(
        "fast = slow",
        &policy(|_| {}),
        &[("fast", "5"), ("slow", "5")],
        bars::minute_dataset(50, 1),
    );
    let failure = out.outcome.unwrap_err();
    assert_eq!(failure.cause, Cause::InvalidParams, "{failure}");
    assert!(
        failure.message.contains("fast (5) must be less than slow (5)"),
        "{failure}"
    );
}
