//! No look-ahead, by construction (ABI v2): a guest never holds a bar of a
//! later timestamp anywhere in its memory, and an order decided at `T` fills
//! on its symbol's first bar after `T`, for every symbol. The `peeker` guest
//! tries; these tests check that it finds nothing and earns nothing, under
//! every built-in policy and a custom one.

use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_run::{Cause, Policy, RunOutput};
use palisade_testkit::bars::{canary, correlated_pair, minute_dataset};

use crate::support::{guests, policy, read, run};

/// `CANARY_T0` of the peeker guest.
const CANARY_T0: i64 = 1_700_000_000;

/// The built-in policies and a custom one, with fuel enough for `fuel`
/// per event where they grant less.
fn policies(fuel: u64) -> Vec<Policy> {
    let mut out: Vec<Policy> = ["default", "strict"]
        .iter()
        .map(|name| Policy::builtin(name).expect("built in"))
        .collect();
    out.push(policy(|p| {
        p.name = "custom".into();
        p.orders_per_event = 3;
        p.log_bytes = 0;
        p.memory_bytes = 4 << 20;
    }));
    for p in &mut out {
        p.fuel_per_event = p.fuel_per_event.max(fuel);
        p.fuel_per_run = p.fuel_per_run.max(p.fuel_per_event);
        p.deadline_per_event_ms = p.deadline_per_event_ms.max(1_000);
    }
    out
}

fn peek(mode: u32, p: &Policy, data: Arc<Dataset>) -> RunOutput {
    let mode = mode.to_string();
    run(&read(guests::PEEKER), p, &[("mode", &mode)], data).expect("the peeker loads")
}

#[test]
fn no_bar_of_a_later_timestamp_is_ever_in_guest_memory() {
    // A full scan of 2 MiB of memory costs a few million fuel per timestamp.
    for p in policies(50_000_000) {
        for symbols in [1, 3] {
            let out = peek(0, &p, canary(200, symbols, CANARY_T0));
            assert_eq!(out.outcome, Ok(()), "policy {} with {symbols} symbols", p.name);
            // The scan ran at every timestamp: a test that cannot pass by
            // not looking.
            assert_eq!(out.metrics["scans"], 200.0, "policy {}", p.name);
            assert_eq!(out.metrics["timestamps"], 200.0);
        }
    }
}

#[test]
fn the_memory_scan_finds_a_planted_future_bar() {
    let p = &policies(50_000_000)[0];
    let out = peek(3, p, canary(20, 1, CANARY_T0));
    let f = out.outcome.expect_err("the planted canary is found");
    assert_eq!(f.cause, Cause::GuestPanic, "{f}");
    assert!(
        f.message
            .contains("found the price 1000.0048828125 of timestamp index 5"),
        "{f}"
    );
}

/// A run that ended ok and whose closed trades show no edge (see
/// [`assert_trades_show_no_edge`]).
#[track_caller]
fn assert_no_edge(out: &RunOutput, what: &str) {
    assert_eq!(out.outcome, Ok(()), "{what}");
    assert_trades_show_no_edge(out, what);
}

/// Win rate and mean PnL of the closed trades, with the bounds of a coin:
/// 4.5 standard errors around zero edge.
#[track_caller]
pub(crate) fn assert_trades_show_no_edge(out: &RunOutput, what: &str) {
    let pnl: Vec<f64> = out.report.trades.iter().map(|t| t.pnl).collect();
    let n = pnl.len() as f64;
    assert!(n >= 300.0, "{what}: only {n} trades");
    let wins = pnl.iter().filter(|p| **p > 0.0).count() as f64;
    let win_rate = wins / n;
    let bound = 4.5 * (0.25 / n).sqrt();
    assert!(
        (win_rate - 0.5).abs() < bound,
        "{what}: win rate {win_rate:.3} over {n} trades is an edge (bound 0.5 ± {bound:.3})"
    );
    let mean = pnl.iter().sum::<f64>() / n;
    let var = pnl.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let t = mean / (var / n).sqrt();
    assert!(t.abs() < 4.5, "{what}: mean trade PnL {mean:.5} has t = {t:.2}");
}

#[test]
fn reading_ahead_earns_nothing() {
    // The guest asks for the next timestamp itself and trades on where the
    // price went: time moves on with what it reads, so its orders fill after
    // the bar it peeked at.
    for p in policies(1_000_000) {
        for seed in [1, 2] {
            let out = peek(1, &p, minute_dataset(4_000, seed));
            assert_no_edge(&out, &format!("read-ahead, policy {}, seed {seed}", p.name));
        }
    }
}

#[test]
fn trading_across_symbols_earns_nothing() {
    let data = correlated_pair(4_000, 0.9, 7);
    // The data is exploitable by look-ahead: buying B at its open of the
    // same timestamp when A rose over it would win most of the time.
    let bars = data.bars();
    let (mut wins, mut n) = (0, 0);
    for pair in bars.chunks(2) {
        let (a, b) = (pair[0], pair[1]);
        let side = if a.close > a.open { 1.0 } else { -1.0 };
        let pnl = side * (b.close - b.open);
        if pnl != 0.0 {
            n += 1;
            wins += usize::from(pnl > 0.0);
        }
    }
    assert!(
        wins as f64 / n as f64 > 0.75,
        "the control should show an edge ({wins} of {n})"
    );
    // Through the engine, the order decided at T's close fills at B's next
    // open: no edge.
    for p in policies(1_000_000) {
        let out = peek(2, &p, data.clone());
        assert_no_edge(&out, &format!("cross-symbol, policy {}", p.name));
    }
}
