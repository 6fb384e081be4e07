//! Live runs (`Sandbox::live`): a strategy fed bars as they arrive decides
//! exactly what a backtest over the same bars decides, whether its bars were
//! stored before it started (recovery by replay) or arrive one timestamp at
//! a time; waiting for a bar counts against no deadline; a trap stops the run
//! with its classified cause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_backtest::Dataset;
use palisade_host_api::Bar;
use palisade_run::live::{Feed, NextBars};
use palisade_run::session::{PlacedOrder, Session};
use palisade_run::{Cause, Policy, RunOutput};
use palisade_sandbox::{CompiledModule, Sandbox};
use palisade_testkit::bars::minute_dataset;
use palisade_testkit::python as py;

use crate::support::{block_on, guests, policy, result_json, run, run_config, sandbox};

/// A feed over a channel that records what the strategy decided.
struct ChannelFeed {
    rx: tokio::sync::mpsc::Receiver<Vec<Bar>>,
    orders: Arc<Mutex<Vec<PlacedOrder>>>,
    fills: Arc<Mutex<Vec<palisade_host_api::Fill>>>,
    decided: Arc<Mutex<u64>>,
    logs: Arc<Mutex<u64>>,
}

impl Feed for ChannelFeed {
    fn decided(&mut self, session: &mut Session) {
        *self.logs.lock().unwrap() += session.take_logs().len() as u64;
        self.orders.lock().unwrap().extend(session.take_orders());
        self.fills.lock().unwrap().extend(session.bt.take_fills());
        *self.decided.lock().unwrap() += 1;
    }

    fn next(&mut self) -> NextBars<'_> {
        Box::pin(self.rx.recv())
    }
}

/// What a live run produced and what its feed saw.
struct Live {
    out: RunOutput,
    orders: Vec<PlacedOrder>,
    fills: Vec<palisade_host_api::Fill>,
    decided: u64,
    logs: u64,
}

/// Splits `data` into its first `stored` timestamps (a dataset, as if
/// replayed from storage) and the rest, one timestamp per message.
fn split(data: &Dataset, stored: usize) -> (Arc<Dataset>, Vec<Vec<Bar>>) {
    let mut stamps: Vec<Vec<Bar>> = Vec::new();
    for bar in data.bars() {
        match stamps.last_mut() {
            Some(last) if last[0].ts == bar.ts => last.push(*bar),
            _ => stamps.push(vec![*bar]),
        }
    }
    let mut head = Dataset::empty(data.symbols().to_vec()).unwrap();
    for stamp in &stamps[..stored] {
        head.push(stamp).unwrap();
    }
    (Arc::new(head), stamps[stored..].to_vec())
}

/// Runs `module` live: `stored` timestamps of `data` replayed, the rest sent
/// one by one, `pause` apart.
fn live(
    module: &[u8],
    p: &Policy,
    overrides: &[(&str, &str)],
    data: &Dataset,
    stored: usize,
    pause: Duration,
) -> Live {
    let sandbox = sandbox(p);
    let strategy = sandbox.load(module, p).expect("loads");
    live_loaded(&sandbox, &strategy, p, overrides, data, stored, pause)
}

/// [`live`] of a loaded strategy (a module or a Python source).
fn live_loaded(
    sandbox: &Sandbox,
    strategy: &CompiledModule,
    p: &Policy,
    overrides: &[(&str, &str)],
    data: &Dataset,
    stored: usize,
    pause: Duration,
) -> Live {
    let run = run_config(strategy, overrides);
    let (head, rest) = split(data, stored);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let orders = Arc::new(Mutex::new(Vec::new()));
    let fills = Arc::new(Mutex::new(Vec::new()));
    let decided = Arc::new(Mutex::new(0));
    let logs = Arc::new(Mutex::new(0));
    let feed = ChannelFeed {
        rx,
        orders: orders.clone(),
        fills: fills.clone(),
        decided: decided.clone(),
        logs: logs.clone(),
    };
    let out = block_on(async {
        let sender = tokio::spawn(async move {
            for stamp in rest {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                if tx.send(stamp).await.is_err() {
                    break;
                }
            }
        });
        let out = sandbox.live(strategy, head, p, &run, Box::new(feed)).await;
        sender.abort();
        out
    });
    let orders = orders.lock().unwrap().clone();
    let fills = fills.lock().unwrap().clone();
    let decided = *decided.lock().unwrap();
    let logs = *logs.lock().unwrap();
    Live {
        out,
        orders,
        fills,
        decided,
        logs,
    }
}

#[test]
fn a_python_strategy_runs_live_as_it_backtests() {
    let p = py::policy(|_| {});
    let sb = sandbox(&p);
    let strategy = py::load(&sb, &py::example("sma_cross"), &p).expect("loads");
    let data = minute_dataset(600, 7);
    let overrides = [("fast", "5"), ("slow", "20")];
    let backtest = block_on(sb.backtest(&strategy, data.clone(), &p, &run_config(&strategy, &overrides)));
    assert!(backtest.report.trades.len() > 3, "the strategy trades");
    for stored in [0, 250] {
        let got = live_loaded(&sb, &strategy, &p, &overrides, &data, stored, Duration::ZERO);
        assert_eq!(
            result_json(&got.out),
            result_json(&backtest),
            "{stored} bars stored"
        );
        assert_eq!(got.fills.len(), backtest.report.fills);
    }
}

#[test]
fn a_live_run_decides_what_a_backtest_of_the_same_bars_decides() {
    let p = Policy::default();
    let data = minute_dataset(3_000, 7);
    let module = guests::bytes("sma_cross");
    let overrides = [("fast", "5"), ("slow", "20")];
    let backtest = run(&module, &p, &overrides, data.clone()).unwrap();
    assert!(backtest.report.trades.len() > 10, "the strategy trades");
    for stored in [0, 1, 1_234, 3_000] {
        let got = live(&module, &p, &overrides, &data, stored, Duration::ZERO);
        assert_eq!(
            result_json(&got.out),
            result_json(&backtest),
            "{stored} bars stored"
        );
        // One decision per timestamp, and the initialisation's.
        assert_eq!(got.decided, 3_001, "{stored} bars stored");
        assert_eq!(got.fills.len(), backtest.report.fills, "{stored} bars stored");
        let ids: Vec<u64> = got.orders.iter().map(|o| o.id).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        // Every fill is of an order decided before the fill's bar.
        for fill in &got.fills {
            let order = &got.orders[fill.order_id as usize - 1];
            assert!(order.ts < fill.ts, "{order:?} filled at {}", fill.ts);
        }
    }
}

#[test]
fn waiting_for_a_bar_counts_against_no_deadline() {
    // Bars 150 ms apart, a deadline of 20 ms per event: only the strategy's
    // own work counts.
    let p = policy(|p| p.deadline_per_event_ms = 20);
    let data = minute_dataset(12, 3);
    let module = guests::bytes("sma_cross");
    let overrides = [("fast", "2"), ("slow", "4")];
    let got = live(&module, &p, &overrides, &data, 2, Duration::from_millis(150));
    assert!(got.out.outcome.is_ok(), "{:?}", got.out.outcome);
    let backtest = run(&module, &p, &overrides, data.clone()).unwrap();
    assert_eq!(result_json(&got.out), result_json(&backtest));
}

#[test]
fn a_strategy_that_traps_live_stops_with_its_cause() {
    let p = Policy::default();
    let data = minute_dataset(50, 3);
    let module = guests::bytes("adversary");
    // Panics at bar 30: 10 bars replayed, 20 live, then the trap.
    let got = live(
        &module,
        &p,
        &[("mode", "4"), ("at", "30")],
        &data,
        10,
        Duration::ZERO,
    );
    let failure = got.out.outcome.unwrap_err();
    assert_eq!(failure.cause, Cause::GuestPanic, "{failure:?}");
    assert_eq!(got.out.report.bars, 31, "stopped at the bar it panicked on");
    // An infinite loop while live is cut by the per-event limits.
    let got = live(
        &module,
        &p,
        &[("mode", "1"), ("at", "20")],
        &data,
        10,
        Duration::ZERO,
    );
    let cause = got.out.outcome.unwrap_err().cause;
    assert!(
        matches!(cause, Cause::FuelExhausted | Cause::Deadline),
        "{cause:?}"
    );
}

#[test]
fn a_live_run_is_not_bounded_by_the_run_totals() {
    // Fuel and time per run would stop a backtest of these bars; a live
    // deployment has no end, so only the per-event limits apply.
    let p = policy(|p| {
        p.fuel_per_event = 50_000;
        p.fuel_per_run = 200_000;
        // Less than the run's orders need.
        p.output_bytes = 1_024;
        p.deadline_per_event_ms = 50;
        p.deadline_per_run_ms = 100;
    });
    let data = minute_dataset(2_000, 5);
    let module = guests::bytes("sma_cross");
    let overrides = [("fast", "3"), ("slow", "9")];
    let backtest = run(&module, &p, &overrides, data.clone()).unwrap();
    let cause = backtest.outcome.unwrap_err().cause;
    assert!(
        matches!(cause, Cause::FuelExhausted | Cause::OutputLimit),
        "{cause:?}"
    );
    let got = live(&module, &p, &overrides, &data, 0, Duration::from_millis(1));
    assert!(got.out.outcome.is_ok(), "{:?}", got.out.outcome);
    assert_eq!(got.out.report.bars, 2_000);
    assert!(got.out.usage.fuel > 200_000, "{:?}", got.out.usage);
}

#[test]
fn a_live_run_bounds_logs_per_timestamp_not_per_lifetime() {
    // 100 bytes of log per bar, 1,000 allowed, overflow fails the run: a
    // backtest of 50 bars fails; a live run, whose logs the feed drains at
    // every timestamp, does not.
    let p = policy(|p| {
        p.log_bytes = 1_000;
        p.log_overflow = palisade_run::policy::LogOverflow::Fail;
    });
    let data = minute_dataset(50, 3);
    let module = guests::bytes("adversary");
    let overrides = [("mode", "6"), ("amount", "100"), ("at", "0")];
    let backtest = run(&module, &p, &overrides, data.clone()).unwrap();
    assert_eq!(backtest.outcome.unwrap_err().cause, Cause::OutputLimit);
    let got = live(&module, &p, &overrides, &data, 10, Duration::ZERO);
    assert!(got.out.outcome.is_ok(), "{:?}", got.out.outcome);
    assert!(got.logs >= 50, "{} lines drained", got.logs);
    // More than the limit at one timestamp still fails, live too.
    let overrides = [("mode", "6"), ("amount", "2000"), ("at", "5")];
    let got = live(&module, &p, &overrides, &data, 0, Duration::ZERO);
    assert_eq!(got.out.outcome.unwrap_err().cause, Cause::OutputLimit);
}
