//! Every limit ends a run with its exact cause, on both sides of its
//! threshold, and leaves the process (and the next run) unharmed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_run::Policy;
use palisade_run::{params, Cause, Failure, RunConfig};

use crate::support::{
    block_on, data, guests, outcome, policy, read, result_json, run, run_in, sandbox, threshold, wat_guest,
    DRAIN,
};

fn adversary(p: &Policy, mode: u32, amount: f64, at: u32, bars: usize) -> Result<(), Failure> {
    let mode = mode.to_string();
    let amount = amount.to_string();
    let at = at.to_string();
    outcome(
        &read(guests::ADVERSARY),
        p,
        &[("mode", &mode), ("amount", &amount), ("at", &at)],
        data(bars, 1, 1),
    )
}

#[track_caller]
fn assert_cause(got: Result<(), Failure>, cause: Cause, fragment: &str) {
    match got {
        Err(f) => {
            assert_eq!(f.cause, cause, "{f}");
            assert!(
                f.message.contains(fragment),
                "message {:?} lacks {fragment:?}",
                f.message
            );
        }
        Ok(()) => panic!("expected {cause}, the run succeeded"),
    }
}

#[test]
fn a_well_behaved_adversary_runs() {
    adversary(&policy(|_| {}), 0, 0.0, 0, 50).unwrap();
}

#[test]
fn memory_growth_is_limited_exactly() {
    // Starts with 1 page and grows to 16; traps when growth is refused.
    let bytes = wat_guest(
        1,
        &format!("(if (i32.eq (memory.grow (i32.const 15)) (i32.const -1)) (then unreachable)) {DRAIN}"),
        "",
    );
    let at = |pages: u64| {
        outcome(
            &bytes,
            &policy(|p| p.memory_bytes = pages * 65536),
            &[],
            data(3, 1, 1),
        )
    };
    at(16).unwrap();
    assert_cause(
        at(15),
        Cause::MemoryLimit,
        "growing memory from 65536 to 1048576 bytes was denied",
    );
}

#[test]
fn a_denied_growth_explains_only_the_failure_it_leads_to() {
    let p = policy(|p| p.memory_bytes = 4 * 65536);
    let denied = "(drop (memory.grow (i32.const 100)))";
    // The guest copes with the refusal, then divides by zero: its own trap.
    let div = wat_guest(
        1,
        &format!("{denied} (drop (i32.div_u (i32.const 1) (i32.const 0))) {DRAIN}"),
        "",
    );
    assert_cause(
        outcome(&div, &p, &[], data(3, 1, 1)),
        Cause::GuestTrap,
        "integer divide by zero",
    );
    // ... or refuses its parameters: invalid_params, not memory_limit.
    let refuse = wat_guest(
        1,
        &format!("{denied} (call $fail (i32.const 1) (i32.const 0) (i32.const 3)) {DRAIN}"),
        r#"(data (i32.const 0) "bad")"#,
    );
    assert_cause(
        outcome(&refuse, &p, &[], data(3, 1, 1)),
        Cause::InvalidParams,
        "bad",
    );
    // An abort after the refusal is the allocation failure it explains.
    let abort = wat_guest(1, &format!("{denied} unreachable {DRAIN}"), "");
    assert_cause(
        outcome(&abort, &p, &[], data(3, 1, 1)),
        Cause::MemoryLimit,
        "was denied",
    );
}

#[test]
fn tables_get_what_the_policy_grants() {
    // Growing a table to 50,000 elements under a policy of 100,000 works
    // (the engine's table slots follow the policy), past it is refused.
    let grow = |n: u32| {
        wat_guest(
            1,
            &format!(
                "(if (i32.eq (table.grow $t (ref.null func) (i32.const {n})) (i32.const -1)) (then unreachable)) {DRAIN}"
            ),
            "(table $t 1 funcref)",
        )
    };
    let p = policy(|p| p.table_elements = 100_000);
    outcome(&grow(49_999), &p, &[], data(3, 1, 1)).unwrap();
    assert_cause(
        outcome(&grow(100_000), &p, &[], data(3, 1, 1)),
        Cause::MemoryLimit,
        "the policy allows 100000 (table_elements)",
    );
    // Two tables under a policy that allows two.
    let two = wat_guest(1, DRAIN, "(table 5 funcref) (table 7 funcref)");
    let p = policy(|p| p.max_tables = 2);
    outcome(&two, &p, &[], data(3, 1, 1)).unwrap();
    assert_cause(
        outcome(&two, &policy(|_| {}), &[], data(3, 1, 1)),
        Cause::InvalidModule,
        "module declares 2 tables, the policy allows 1 (max_tables)",
    );
}

/// A guest that logs `calls` lines of `len` bytes (from address 0) in
/// init, then drains the data.
fn logger(calls: u32, len: u32) -> Vec<u8> {
    wat_guest(
        2,
        &format!(
            "(local $i i32)
             (block $done (loop $again
               (br_if $done (i32.ge_u (local.get $i) (i32.const {calls})))
               (call $log (i32.const 2) (i32.const 0) (i32.const {len}))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br $again)))
             {DRAIN}"
        ),
        "",
    )
}

#[test]
fn host_calls_pay_for_the_bytes_they_handle() {
    use palisade_sandbox::{FUEL_BYTES, HOST_CALL_FUEL};
    let fuel = |p: &Policy, calls: u32, len: u32| {
        let out = run(&logger(calls, len), p, &[], data(2, 1, 1)).unwrap();
        assert_eq!(out.outcome, Ok(()));
        out.usage.fuel
    };
    let roomy = policy(|p| p.log_bytes = 64 << 20);
    // The same instructions; only the bytes logged differ.
    let base = fuel(&roomy, 100, 0);
    assert_eq!(fuel(&roomy, 100, 8_000) - base, 100 * 8_000 / FUEL_BYTES);
    // A line that does not fit is not read: the call's fixed cost only.
    let tight = policy(|p| p.log_bytes = 1_000);
    assert_eq!(fuel(&tight, 100, 100_000), fuel(&tight, 100, 0));
    const { assert!(HOST_CALL_FUEL > 0) };
    // Fuel runs out inside a host call as it does in the guest's code.
    let scarce = policy(|p| {
        p.log_bytes = 64 << 20;
        p.fuel_per_event = 10_000;
    });
    assert_cause(
        outcome(&logger(100, 8_000), &scarce, &[], data(2, 1, 1)),
        Cause::FuelExhausted,
        "the last of it in host call palisade.log",
    );
}

#[test]
fn parameter_names_are_read_only_as_long_as_a_declared_one() {
    let asking = |len: u32| {
        wat_guest(
            2,
            &format!("(drop (call $param (i32.const 0) (i32.const {len}))) {DRAIN}"),
            r#"(data (i32.const 0) "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")"#,
        )
    };
    let p = policy(|_| {});
    // A name as long as a declared one can be is read, and refused by name.
    assert_cause(
        outcome(&asking(64), &p, &[], data(2, 1, 1)),
        Cause::InvalidParams,
        &format!(
            "parameter {:?}, which its manifest does not declare (declared: none)",
            "a".repeat(64)
        ),
    );
    // A longer one is refused without being read, however long.
    for len in [65, 0x7fff_ffff] {
        assert_cause(
            outcome(&asking(len), &p, &[], data(2, 1, 1)),
            Cause::InvalidParams,
            &format!("parameter \"<{len} bytes>\""),
        );
    }
}

#[test]
fn the_finish_phase_has_one_events_budget_and_cannot_be_renewed() {
    let p = policy(|p| p.fuel_per_event = 100_000);
    // Asking for bars again after the end is refused: no fresh window.
    let again = wat_guest(
        1,
        &format!("{DRAIN} (drop (call $next_bars (i32.const 0) (i32.const 1))) (i32.const 0) drop"),
        "",
    );
    assert_cause(
        outcome(&again, &p, &[], data(3, 1, 1)),
        Cause::HostAbuse,
        "next_bars called again after the data ended",
    );
    // Work after the end comes out of one event's fuel, in total.
    let finish = |n: u64| {
        wat_guest(
            1,
            &format!(
                "(local $i i64)
                 {DRAIN} drop
                 (loop $spin
                   (local.set $i (i64.add (local.get $i) (i64.const 1)))
                   (br_if $spin (i64.lt_u (local.get $i) (i64.const {n}))))
                 (i32.const 0)"
            ),
            "",
        )
    };
    outcome(&finish(1_000), &p, &[], data(3, 1, 1)).unwrap();
    assert_cause(
        outcome(&finish(1_000_000), &p, &[], data(3, 1, 1)),
        Cause::FuelExhausted,
        "finish used more than 100000 fuel per event (fuel_per_event)",
    );
}

#[test]
fn a_memory_bomb_is_stopped() {
    let p = policy(|p| p.memory_bytes = 8 << 20);
    adversary(&p, 2, (1 << 20) as f64, 0, 3).unwrap();
    assert_cause(
        adversary(&p, 2, 1e12, 0, 3),
        Cause::MemoryLimit,
        "the policy allows 8388608 bytes (memory_bytes)",
    );
}

/// A guest that spins `n` iterations in init, then drains the data.
fn spinner(n: u64) -> Vec<u8> {
    wat_guest(
        1,
        &format!(
            "(local $i i64)
             (loop $spin
               (local.set $i (i64.add (local.get $i) (i64.const 1)))
               (br_if $spin (i64.lt_u (local.get $i) (i64.const {n}))))
             {DRAIN}"
        ),
        "",
    )
}

#[test]
fn fuel_per_run_is_exact() {
    let bytes = spinner(10_000);
    let with = |fuel: u64| {
        outcome(
            &bytes,
            &policy(|p| {
                p.fuel_per_run = fuel;
                p.fuel_per_event = fuel.min(1_000_000);
            }),
            &[],
            data(5, 1, 1),
        )
    };
    let need = threshold(1_000, 1_000_000, |f| with(f).is_ok());
    with(need).unwrap();
    assert_cause(with(need - 1), Cause::FuelExhausted, "fuel_per_run");
    // Fuel is checked at loop headers and calls, so the straight-line code
    // after the last check may run a few units past the budget: the fuel
    // reported as used is the threshold give or take that tail.
    let used = run(
        &bytes,
        &policy(|p| p.fuel_per_event = 1_000_000),
        &[],
        data(5, 1, 1),
    )
    .unwrap()
    .usage
    .fuel;
    assert!(used >= need && used - need < 64, "used {used}, threshold {need}");
}

#[test]
fn fuel_per_event_is_exact() {
    let bytes = spinner(10_000);
    let with = |fuel: u64| outcome(&bytes, &policy(|p| p.fuel_per_event = fuel), &[], data(5, 1, 1));
    let need = threshold(1_000, 1_000_000, |f| with(f).is_ok());
    with(need).unwrap();
    assert_cause(with(need - 1), Cause::FuelExhausted, "init used more than");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    assert_cause(
        adversary(&policy(|_| {}), 1, 0.0, 2, 10),
        Cause::FuelExhausted,
        "(fuel_per_event)",
    );
}

#[test]
fn an_infinite_loop_meets_its_deadline() {
    let p = policy(|p| {
        p.fuel_per_event = 1_000_000_000_000;
        p.fuel_per_run = 1_000_000_000_000_000;
        p.deadline_per_event_ms = 30;
    });
    let started = Instant::now();
    let got = adversary(&p, 1, 0.0, 0, 10);
    let took = started.elapsed();
    assert_cause(
        got,
        Cause::Deadline,
        "took longer than 30 ms (deadline_per_event_ms)",
    );
    assert!(
        took >= Duration::from_millis(30),
        "stopped after {took:?}, before its deadline"
    );
    let p = policy(|p| {
        p.fuel_per_event = 1_000_000_000_000;
        p.fuel_per_run = 1_000_000_000_000_000;
        p.deadline_per_run_ms = 40;
        p.deadline_per_event_ms = 40;
    });
    assert_cause(adversary(&p, 1, 0.0, 0, 10), Cause::Deadline, "deadline");
}

#[test]
fn recursion_is_stopped_at_the_stack_limit_exactly() {
    let p = policy(|p| p.stack_bytes = 128 * 1024);
    let sb = sandbox(&p);
    let at = |depth: u64| {
        let bytes = wat_guest(
            1,
            &format!("(drop (call $dive (i32.const {depth}))) {DRAIN}"),
            "(func $dive (param i32) (result i32)
               (if (result i32) (i32.eqz (local.get 0))
                 (then (i32.const 0))
                 (else (i32.add (call $dive (i32.sub (local.get 0) (i32.const 1))) (i32.const 1)))))",
        );
        run_in(&sb, &bytes, &p, &[], data(2, 1, 1)).unwrap().outcome
    };
    let deepest_failing = threshold(10, 10_000_000, |d| at(d).is_err());
    at(deepest_failing - 1).unwrap();
    assert_cause(at(deepest_failing), Cause::StackOverflow, "stack_bytes");
    // The Rust adversary too.
    assert_cause(adversary(&p, 3, 1e7, 0, 2), Cause::StackOverflow, "stack");
    adversary(&p, 3, 100.0, 0, 2).unwrap();
}

#[test]
fn a_panic_is_reported_with_its_message() {
    assert_cause(
        adversary(&policy(|_| {}), 4, 0.0, 3, 10),
        Cause::GuestPanic,
        "adversary gave up at bar 3 at ",
    );
}

#[test]
fn orders_per_event_is_exact() {
    let p = policy(|p| p.orders_per_event = 20);
    adversary(&p, 5, 20.0, 0, 3).unwrap();
    assert_cause(
        adversary(&p, 5, 21.0, 0, 3),
        Cause::OutputLimit,
        "placed more than 20 orders while handling timestamp 1600000000",
    );
}

#[test]
fn log_bytes_is_exact_and_counts_every_line() {
    use palisade_run::policy::LogOverflow;
    use palisade_run::session::LOG_LINE_OVERHEAD;
    // 10 bars × (100 bytes + the line's overhead) = the limit exactly.
    let limit = 10 * (100 + LOG_LINE_OVERHEAD);
    let fail = policy(|p| {
        p.log_bytes = limit;
        p.log_overflow = LogOverflow::Fail;
    });
    adversary(&fail, 6, 100.0, 0, 10).unwrap();
    assert_cause(
        adversary(&fail, 6, 101.0, 0, 10),
        Cause::OutputLimit,
        &format!("logged more than {limit} bytes (log_bytes"),
    );
    // Empty lines are not free: each costs its overhead.
    let empty = policy(|p| {
        p.log_bytes = 10 * LOG_LINE_OVERHEAD;
        p.log_overflow = LogOverflow::Fail;
    });
    adversary(&empty, 6, 0.0, 0, 10).unwrap();
    assert_cause(adversary(&empty, 6, 0.0, 0, 11), Cause::OutputLimit, "log_bytes");
    // By default the run goes on: lines past the limit are dropped, counted.
    let truncate = policy(|p| p.log_bytes = limit);
    let params = [("mode", "6"), ("amount", "101"), ("at", "0")];
    let out = run(&read(guests::ADVERSARY), &truncate, &params, data(10, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!((out.logs.len(), out.usage.logs_dropped), (9, 1));
    let out = run(&read(guests::ADVERSARY), &truncate, &params, data(1000, 1, 1)).unwrap();
    assert_eq!((out.logs.len(), out.usage.logs_dropped), (9, 991));
}

#[test]
fn bad_pointers_are_classified_for_every_call() {
    let p = policy(|_| {});
    for (call, name) in [
        (0, "log"),
        (1, "next_bars"),
        (2, "param"),
        (3, "poll_fill"),
        (4, "metric"),
    ] {
        assert_cause(
            adversary(&p, 7, f64::from(call), 0, 3),
            Cause::BadPointer,
            &format!("palisade.{name}:"),
        );
    }
}

#[test]
fn a_buffer_too_small_for_the_next_timestamp_is_host_abuse() {
    assert_cause(
        adversary(&policy(|_| {}), 8, 0.0, 0, 10),
        Cause::HostAbuse,
        "next_bars: a buffer of 0 bars cannot hold a timestamp of 1 symbols",
    );
}

#[test]
fn a_strategy_can_refuse_its_parameters() {
    let got = outcome(
        &read(guests::SMA_CROSS),
        &policy(|_| {}),
        &[("fast", "30"), ("slow", "10")],
        data(50, 1, 1),
    );
    assert_cause(got, Cause::InvalidParams, "fast (30) must be less than slow (10)");
}

#[test]
fn cancellation_stops_an_infinite_loop() {
    let p = policy(|p| {
        p.fuel_per_event = 1_000_000_000_000;
        p.fuel_per_run = 1_000_000_000_000_000;
    });
    let sb = sandbox(&p);
    let strategy = sb.load(&read(guests::ADVERSARY), &p).unwrap();
    let overrides = [("mode".to_string(), "1".to_string())];
    let cancel = Arc::new(AtomicBool::new(false));
    let run = RunConfig {
        params: params::resolve(&strategy.info.manifest, &overrides).unwrap(),
        cancel: Some(cancel.clone()),
        ..RunConfig::default()
    };
    let flag = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::Relaxed);
    });
    let out = block_on(sb.backtest(&strategy, data(10, 1, 1), &p, &run));
    canceller.join().unwrap();
    assert_cause(out.outcome, Cause::Cancelled, "cancelled");
}

#[test]
fn failures_do_not_touch_the_next_run() {
    let p = policy(|p| p.memory_bytes = 8 << 20);
    let sb = sandbox(&p);
    let sma = read(guests::SMA_CROSS);
    let prices = data(500, 1, 9);
    let baseline = result_json(&run_in(&sb, &sma, &p, &[], prices.clone()).unwrap());
    let adversary = read(guests::ADVERSARY);
    for (mode, amount) in [
        (1, 0.0),
        (2, 1e12),
        (3, 1e7),
        (4, 0.0),
        (5, 1e6),
        (7, 1.0),
        (8, 0.0),
    ] {
        let (m, a) = (mode.to_string(), amount.to_string());
        let out = run_in(
            &sb,
            &adversary,
            &p,
            &[("mode", &m), ("amount", &a)],
            prices.clone(),
        )
        .unwrap();
        assert!(out.outcome.is_err(), "mode {mode} should fail");
        let after = result_json(&run_in(&sb, &sma, &p, &[], prices.clone()).unwrap());
        assert_eq!(after, baseline, "a run after adversary mode {mode} differs");
    }
}
