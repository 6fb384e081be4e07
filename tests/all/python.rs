//! Python strategies end to end, adversarially: the Python examples trade
//! exactly as the Rust ones, runs are deterministic, every limit stops a
//! Python strategy with its exact cause on both sides of its threshold, bad
//! source is refused at load naming what is wrong, and hostile Python (files,
//! network, clocks, randomness, introspection hunting for later bars, the
//! host binding called directly) gets nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_backtest::Dataset;
use palisade_run::{params, Cause, Failure, Policy, ProgressFn, RunConfig, RunOutput};
use palisade_sandbox::Sandbox;
use palisade_testkit::bars::{canary, minute_dataset, multi_walk, regime_dataset};
use palisade_testkit::python as py;

use crate::support::{block_on, guests, result_json, sandbox, threshold};

/// Runs `source` under `p` in a fresh sandbox started for `p`; `Err` when
/// it is refused at load.
fn run(
    source: &str,
    p: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> Result<RunOutput, Failure> {
    py::run_in(&sandbox(p), source, p, overrides, data)
}

/// How a run ended: Ok, or its failure (a refusal at load included).
fn outcome(source: &str, p: &Policy, overrides: &[(&str, &str)], data: Arc<Dataset>) -> Result<(), Failure> {
    run(source, p, overrides, data)?.outcome
}

/// Loads `source` in `sb` and runs it with `seed`; panics if it is refused.
fn run_seeded(sb: &Sandbox, source: &str, p: &Policy, data: Arc<Dataset>, seed: u64) -> RunOutput {
    let strategy = py::load(sb, source, p).unwrap_or_else(|f| panic!("refused at load: {f}"));
    let run = RunConfig {
        params: params::resolve(&strategy.info.manifest, &[]).unwrap(),
        seed,
        ..RunConfig::default()
    };
    block_on(sb.backtest(&strategy, data, p, &run))
}

#[track_caller]
fn assert_cause(got: Result<(), Failure>, cause: Cause, fragments: &[&str]) {
    match got {
        Err(f) => {
            assert_eq!(f.cause, cause, "{f}");
            for fragment in fragments {
                assert!(
                    f.message.contains(fragment),
                    "message {:?} lacks {fragment:?}",
                    f.message
                );
            }
        }
        Ok(()) => panic!("expected {cause}, the run succeeded"),
    }
}

/// The messages a run logged, in order.
fn messages(out: &RunOutput) -> Vec<&str> {
    out.logs.iter().map(|l| l.message.as_str()).collect()
}

/// The default Python policy.
fn python() -> Policy {
    py::policy(|_| {})
}

// ---------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------

#[test]
fn the_python_examples_trade_exactly_like_the_rust_ones() {
    let rust_policy = crate::support::policy(|_| {});
    let py_policy = python();
    let rust_sb = sandbox(&rust_policy);
    let py_sb = sandbox(&py_policy);
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("sma_cross", &[]),
        ("sma_cross", &[("fast", "5"), ("slow", "20"), ("size", "2.5")]),
        ("bollinger_revert", &[]),
        (
            "bollinger_revert",
            &[("period", "10"), ("k", "1.5"), ("size", "3")],
        ),
        ("donchian_breakout", &[]),
        (
            "donchian_breakout",
            &[("entry", "30"), ("exit", "7"), ("size", "0.5")],
        ),
    ];
    let datasets = [
        ("multi_walk(2000, 1, 11)", multi_walk(2_000, 1, 11)),
        ("multi_walk(1500, 3, 12)", multi_walk(1_500, 3, 12)),
        ("multi_walk(800, 5, 13)", multi_walk(800, 5, 13)),
        ("minute_dataset(3000, 14)", minute_dataset(3_000, 14)),
        ("regime_dataset(2000, 15)", regime_dataset(2_000, 15)),
    ];
    for (name, overrides) in cases {
        let source = py::example(name);
        let wasm = guests::bytes(name);
        for (what, data) in &datasets {
            let rust =
                crate::support::run_in(&rust_sb, &wasm, &rust_policy, overrides, data.clone()).unwrap();
            let python = py::run_in(&py_sb, &source, &py_policy, overrides, data.clone()).unwrap();
            assert_eq!(python.outcome, Ok(()), "{name} {overrides:?} on {what}");
            assert_eq!(rust.outcome, Ok(()), "{name} {overrides:?} on {what}");
            assert!(
                !rust.report.trades.is_empty(),
                "{name} {overrides:?} should trade on {what}"
            );
            assert_eq!(
                result_json(&python),
                result_json(&rust),
                "{name} {overrides:?} on {what}"
            );
            // Orders and refusals too, not only what they led to.
            assert_eq!(python.usage.orders, rust.usage.orders, "{name} on {what}");
            assert_eq!(python.usage.orders_refused, rust.usage.orders_refused);
        }
    }
}

// ---------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------

/// A strategy that uses everything that could differ between runs: both
/// random streams, the clocks, string hashing (set iteration order), the
/// heap (ids), orders and logs.
const BUSY: &str = r#"
import random
import time

from palisade import Int, Strategy


class Busy(Strategy):
    every = Int(7, min=1, max=100)

    def init(self):
        self.words = {f"w{i}" for i in range(50)}
        self.n = 0

    def next(self, bar):
        self.n += 1
        if self.n % self.every == 0:
            order = "".join(sorted(self.words)[:3]) + "".join(list(self.words)[:3])
            self.log(f"{bar.ts} {time.time()} {random.random()!r} {self.random()!r} {order} {hash('x') & 0xff}")
            if self.position(bar.symbol) == 0:
                self.buy(1 + self.random(), bar.symbol)
            else:
                self.close(bar.symbol)

    def finish(self):
        self.metric("bars", self.n)
"#;

#[test]
fn the_same_run_is_identical_fuel_included() {
    let p = python();
    let data = multi_walk(400, 2, 21);
    let everything = |out: &RunOutput| {
        assert_eq!(out.outcome, Ok(()));
        format!(
            "{}\n{}",
            result_json(out),
            serde_json::to_string(&out.usage).unwrap()
        )
    };
    let a = sandbox(&p);
    let first = everything(&run_seeded(&a, BUSY, &p, data.clone(), 5));
    assert!(first.contains("\"trades\":[{"), "the test data should trade");
    assert_eq!(everything(&run_seeded(&a, BUSY, &p, data.clone(), 5)), first);
    let b = sandbox(&p);
    assert_eq!(everything(&run_seeded(&b, BUSY, &p, data.clone(), 5)), first);
    // A different seed gives a different run (the check can fail).
    assert_ne!(everything(&run_seeded(&b, BUSY, &p, data, 6)), first);
}

// ---------------------------------------------------------------------------
// CPU: fuel and deadlines
// ---------------------------------------------------------------------------

/// `while True: pass` in `next`, in `init` and at module level.
fn endless(place: &str) -> String {
    let (module, init, next) = match place {
        "module" => ("while True:\n    pass\n", "pass", "pass"),
        "init" => ("", "while True:\n            pass", "pass"),
        "next" => ("", "pass", "while True:\n            pass"),
        _ => unreachable!(),
    };
    format!(
        "from palisade import Strategy\n\n{module}\n\nclass Endless(Strategy):\n    def init(self):\n        {init}\n\n    def next(self, bar):\n        {next}\n"
    )
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_wherever_it_is() {
    let p = python();
    let per_event = (p.fuel_per_event * p.python_fuel_scale).to_string();
    for (place, event) in [
        ("module", "init"),
        ("init", "init"),
        ("next", "timestamp 1600000000 (1 bars from bar 0)"),
    ] {
        assert_cause(
            outcome(&endless(place), &p, &[], multi_walk(10, 1, 1)),
            Cause::FuelExhausted,
            &[&format!(
                "{event} used more than {per_event} fuel per event (fuel_per_event * python_fuel_scale)"
            )],
        );
    }
}

#[test]
fn an_infinite_loop_meets_its_deadline_wherever_it_is() {
    let p = py::policy(|p| {
        p.fuel_per_event = 100_000_000_000;
        p.fuel_per_run = 1_000_000_000_000_000;
        p.deadline_per_event_ms = 50;
    });
    for place in ["module", "init", "next"] {
        let started = Instant::now();
        let got = outcome(&endless(place), &p, &[], multi_walk(10, 1, 1));
        let took = started.elapsed();
        assert_cause(
            got,
            Cause::Deadline,
            &["took longer than 50 ms (deadline_per_event_ms)"],
        );
        assert!(
            took >= Duration::from_millis(50),
            "{place}: stopped after {took:?}, before its deadline"
        );
    }
    // The other side: bounded work in the same places, under the same
    // policy, ends well within it.
    let bounded = endless("next").replace(
        "while True:\n            pass",
        "for _ in range(1000):\n            pass",
    );
    outcome(&bounded, &p, &[], multi_walk(50, 1, 1)).unwrap();
}

/// A strategy that counts to `n` on every bar.
const SPIN: &str = r#"
from palisade import Int, Strategy


class Spin(Strategy):
    n = Int(0, min=0, max=1000000000)

    def next(self, bar):
        i = 0
        n = self.n
        while i < n:
            i += 1
"#;

#[test]
fn fuel_per_event_is_exact_and_scaled_for_python() {
    // Work per bar well above what loading the source costs in init, so a
    // bar is the event that needs the most fuel.
    let work = [("n", "300000")];
    let sb = sandbox(&python());
    let with = |fuel: u64, scale: u64| {
        let p = py::policy(|p| {
            p.fuel_per_event = fuel;
            p.python_fuel_scale = scale;
        });
        py::run_in(&sb, SPIN, &p, &work, multi_walk(5, 1, 1)).and_then(|out| out.outcome)
    };
    // The exact budget a bar needs, at scale 1.
    let need = threshold(1_000, 1_000_000_000, |f| with(f, 1).is_ok());
    with(need, 1).unwrap();
    assert_cause(
        with(need - 1, 1),
        Cause::FuelExhausted,
        &[
            "timestamp 16000",
            &format!(
                "used more than {} fuel per event (fuel_per_event * python_fuel_scale)",
                need - 1
            ),
        ],
    );
    // At scale 10, fuel_per_event × 10 is the budget: just under the need
    // fails, just over passes.
    let tenth = need.div_ceil(10);
    with(tenth, 10).unwrap();
    assert_cause(
        with(tenth - 1, 10),
        Cause::FuelExhausted,
        &["fuel per event (fuel_per_event"],
    );
    eprintln!("a bar counting to 300000 needs {need} fuel");
}

#[test]
fn fuel_per_run_is_scaled_for_python() {
    let sb = sandbox(&python());
    let with = |fuel: u64| {
        let p = py::policy(|p| {
            p.fuel_per_event = fuel.min(p.fuel_per_event);
            p.fuel_per_run = fuel;
            p.python_fuel_scale = 10;
        });
        py::run_in(&sb, SPIN, &p, &[("n", "1000")], multi_walk(20, 1, 1))
    };
    let need = threshold(1_000, 1_000_000_000, |f| {
        with(f).is_ok_and(|out| out.outcome.is_ok())
    });
    assert_cause(
        with(need - 1).unwrap().outcome,
        Cause::FuelExhausted,
        &[&format!(
            "used all {} fuel of the run (fuel_per_run * python_fuel_scale)",
            (need - 1) * 10
        )],
    );
    let used = with(need).unwrap().usage.fuel;
    assert!(
        used <= need * 10 && used > (need - 1) * 10,
        "used {used} of a run budget of {need} × 10"
    );
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// A strategy allocating `size` bytes in init (and keeping them).
const ALLOC: &str = r#"
from palisade import Int, Strategy


class Alloc(Strategy):
    size = Int(0, min=0, max=4294967296)

    def init(self):
        self.buf = bytearray(self.size)
"#;

const BOMB: &str = r#"
from palisade import Strategy


class Bomb(Strategy):
    def next(self, bar):
        self.x = 'a' * 10**9
"#;

const HOARD: &str = r#"
from palisade import Strategy


class Hoard(Strategy):
    def init(self):
        self.hoard = []

    def next(self, bar):
        self.hoard.append(' ' * 1_000_000)
"#;

#[test]
fn a_memory_bomb_is_stopped() {
    let p = python();
    let limit = p.python_memory_bytes.to_string();
    assert_cause(
        outcome(BOMB, &p, &[], multi_walk(3, 1, 1)),
        Cause::MemoryLimit,
        &[&limit, "(python_memory_bytes)", "MemoryError"],
    );
    let p = py::policy(|p| p.python_memory_bytes = 64 << 20);
    assert_cause(
        outcome(HOARD, &p, &[], multi_walk(500, 1, 1)),
        Cause::MemoryLimit,
        &["67108864 (python_memory_bytes)"],
    );
    // The other side: the same hoarding over fewer bars fits.
    outcome(HOARD, &p, &[], multi_walk(10, 1, 1)).unwrap();
}

#[test]
fn python_memory_bytes_is_exact() {
    let at = |limit: u64| {
        let p = py::policy(|p| p.python_memory_bytes = limit);
        let sb = sandbox(&p);
        move |size: u64| {
            let size = size.to_string();
            py::run_in(&sb, ALLOC, &p, &[("size", &size)], multi_walk(3, 1, 1))
                .unwrap()
                .outcome
        }
    };
    let at_48 = at(48 << 20);
    let fails = threshold(0, 48 << 20, |n| at_48(n).is_err());
    at_48(fails - 1).unwrap();
    assert_cause(
        at_48(fails),
        Cause::MemoryLimit,
        &["the policy allows 50331648 (python_memory_bytes)"],
    );
    // It is the knob: a larger limit lets the same allocation through.
    at(64 << 20)(fails).unwrap();
    eprintln!(
        "under python_memory_bytes = 48 MiB, bytearray({}) fails, one byte less fits",
        fails
    );
}

#[test]
fn a_caught_memory_error_lets_the_run_go_on() {
    let source = r#"
from palisade import Strategy


class Survivor(Strategy):
    def init(self):
        self.bars = 0
        try:
            self.hog = 'a' * 10**9
        except MemoryError as e:
            self.log(f"caught {type(e).__name__}")

    def next(self, bar):
        self.bars += 1
        if self.bars == 5:
            self.buy()

    def finish(self):
        self.metric("bars", self.bars)
"#;
    let out = run(source, &python(), &[], multi_walk(20, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(messages(&out), ["caught MemoryError"]);
    assert_eq!(out.metrics["bars"], 20.0);
    assert_eq!(out.usage.orders, 1);
}

// ---------------------------------------------------------------------------
// Recursion and the stack
// ---------------------------------------------------------------------------

/// Recursion `depth` deep in init, by plain Python calls (`plain`) or through
/// a C function on every level (`map`), which costs wasm stack.
fn dive(kind: &str) -> String {
    let call = match kind {
        "plain" => "1 + dive(n - 1)",
        "map" => "1 + max(map(dive, (n - 1,)))",
        _ => unreachable!(),
    };
    format!(
        r#"
from palisade import Int, Strategy


def dive(n):
    return 0 if n == 0 else {call}


class Dive(Strategy):
    depth = Int(200, min=0, max=100000000)

    def init(self):
        self.metric("depth", dive(self.depth))
"#
    )
}

#[test]
fn runaway_recursion_is_a_stack_overflow_and_legitimate_recursion_runs() {
    let p = python();
    let sb = sandbox(&p);
    let at = |depth: u64| {
        let depth = depth.to_string();
        py::run_in(&sb, &dive("plain"), &p, &[("depth", &depth)], multi_walk(3, 1, 1)).unwrap()
    };
    let out = at(200);
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(out.metrics["depth"], 200.0);
    assert_cause(
        at(100_000_000).outcome,
        Cause::StackOverflow,
        &[
            "RecursionError: maximum recursion depth exceeded",
            "strategy.py, line 6",
        ],
    );
    // Python's recursion limit, both sides.
    let fails = threshold(200, 100_000, |d| at(d).outcome.is_err());
    assert_eq!(at(fails - 1).metrics["depth"], (fails - 1) as f64);
    assert_cause(
        at(fails).outcome,
        Cause::StackOverflow,
        &["(Python's recursion limit, below the policy's python_stack_bytes)"],
    );
    eprintln!("plain Python recursion fails from depth {fails}");
    // Recursion inside C code (the json parser, 100,000 lists deep) meets
    // the wasm stack's bound instead: stack_overflow as well.
    assert_cause(
        outcome(
            &strategy("import json", "json.loads('[' * 100000)"),
            &p,
            &[],
            multi_walk(3, 1, 1),
        ),
        Cause::StackOverflow,
        &["the guest's call stack went past the policy's stack size (python_stack_bytes)"],
    );
}

#[test]
fn python_stack_bytes_bounds_deep_legal_recursion() {
    // The stack bound is the engine's (`max_wasm_stack`): each probe runs in
    // a sandbox started for its policy.
    let at = |kind: &str, depth: &str, stack: u64| {
        let p = py::policy(|p| p.python_stack_bytes = stack);
        py::run_in(
            &sandbox(&p),
            &dive(kind),
            &p,
            &[("depth", depth)],
            multi_walk(3, 1, 1),
        )
        .unwrap()
        .outcome
    };
    // Python calling Python costs no wasm stack: 900 deep (under the
    // recursion limit) fits the smallest stack a policy may set.
    at("plain", "900", 64 << 10).unwrap();
    // Through a C function on every level, each level costs wasm stack: 150
    // deep is legal under the default stack, and a trap under a small one.
    at("map", "150", python().python_stack_bytes).unwrap();
    let need = threshold(64 << 10, 8 << 20, |s| at("map", "150", s).is_ok());
    at("map", "150", need).unwrap();
    assert_cause(
        at("map", "150", need - 1),
        Cause::StackOverflow,
        &["the guest's call stack went past the policy's stack size (python_stack_bytes)"],
    );
    eprintln!("recursing 150 deep through map needs python_stack_bytes = {need}");
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Loads `source` under the Python policy and checks the verdict.
#[track_caller]
fn check_load(what: &str, source: &str, want: Result<(), (Cause, &[&str])>) {
    let p = python();
    let got = py::load(&sandbox(&p), source, &p).map(drop);
    match (&got, &want) {
        (Ok(()), Ok(())) => {}
        (Err(f), Err((cause, fragments))) => {
            assert_eq!(f.cause, *cause, "{what}: {f}");
            for fragment in *fragments {
                assert!(
                    f.message.contains(fragment),
                    "{what}: message {:?} lacks {fragment:?}",
                    f.message
                );
            }
        }
        _ => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

/// A valid strategy with `extra` lines at module level and `body` as its
/// `next`.
fn strategy(extra: &str, body: &str) -> String {
    format!("from palisade import Strategy\n{extra}\n\n\nclass S(Strategy):\n    def next(self, bar):\n        {body}\n")
}

#[test]
fn syntax_errors_are_refused_at_load_with_file_and_line() {
    check_load(
        "missing colon",
        "from palisade import Strategy\n\n\nclass S(Strategy)\n    pass\n",
        Err((
            Cause::InvalidModule,
            &["syntax error: strategy.py, line 4:", "expected ':'"],
        )),
    );
    check_load(
        "bad indentation",
        &strategy("", "x = 1\n      y = 2"),
        Err((
            Cause::InvalidModule,
            &["syntax error: strategy.py, line 8:", "indent"],
        )),
    );
    check_load(
        "a NUL byte",
        &strategy("", "x = '\0'"),
        Err((
            Cause::InvalidModule,
            &["syntax error: strategy.py, line 0: source code string cannot contain null bytes"],
        )),
    );
    check_load("the control", &strategy("", "x = 1"), Ok(()));
}

#[test]
fn imports_outside_the_allowlist_are_refused_naming_the_module() {
    let refused = |what: &str, source: &str, module: &str| {
        check_load(
            what,
            source,
            Err((
                Cause::ForbiddenImport,
                &[&format!("import of module {module} is not allowed")],
            )),
        );
    };
    refused("import os", &strategy("import os", "pass"), "os");
    refused(
        "from socket",
        &strategy("from socket import socket", "pass"),
        "socket",
    );
    refused("importlib", &strategy("import importlib", "pass"), "importlib");
    refused("os.path", &strategy("import os.path", "pass"), "os.path");
    refused("sys", &strategy("import sys", "pass"), "sys");
    refused("gc", &strategy("", "import gc"), "gc");
    refused(
        "in a function",
        &strategy("\ndef helper():\n    import subprocess\n", "pass"),
        "subprocess",
    );
    refused("__import__ literal", &strategy("", "__import__('os')"), "os");
    refused("relative", &strategy("from . import x", "pass"), ".");

    // At run time, with a name the source does not spell: the run stops,
    // even when the strategy catches everything.
    let p = python();
    for body in [
        "__import__('o' + 's')",
        "try:\n            __import__('o' + 's')\n        except BaseException:\n            pass",
        "__builtins__['__import__']('sub' + 'process')",
    ] {
        let module = if body.contains("sub") { "subprocess" } else { "os" };
        assert_cause(
            outcome(&strategy("", body), &p, &[], multi_walk(3, 1, 1)),
            Cause::ForbiddenImport,
            &[&format!("import of module {module} is not allowed")],
        );
    }
}

#[test]
fn allowed_imports_work() {
    let source = r#"
import collections
import datetime
import json
import math
import statistics
from decimal import Decimal
from fractions import Fraction

from palisade import Strategy


class Uses(Strategy):
    def init(self):
        self.closes = collections.deque(maxlen=5)

    def next(self, bar):
        self.closes.append(bar.close)

    def finish(self):
        day = datetime.datetime.fromtimestamp(1600000000, datetime.timezone.utc)
        self.log(json.dumps({
            "sqrt": math.sqrt(2.25),
            "mean": statistics.mean([1, 2, 3, 4]),
            "kept": len(self.closes),
            "day": day.isoformat(),
            "dec": str(Decimal("1.10") + Decimal("2.20")),
            "frac": str(Fraction(1, 3) + Fraction(1, 6)),
        }, sort_keys=True))
"#;
    let out = run(source, &python(), &[], multi_walk(10, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(
        messages(&out),
        [
            r#"{"day": "2020-09-13T12:26:40+00:00", "dec": "3.30", "frac": "1/2", "kept": 5, "mean": 2.5, "sqrt": 1.5}"#
        ]
    );
}

#[test]
fn an_exception_is_a_guest_error_with_type_message_and_line() {
    let p = python();
    let source = strategy("", "if bar.ts > 1600086400:\n            1 / 0");
    assert_cause(
        outcome(&source, &p, &[], multi_walk(5, 1, 1)),
        Cause::GuestError,
        &["ZeroDivisionError: division by zero (strategy.py, line 8)"],
    );
    let source = strategy("\ndef helper(d):\n    return d['missing']\n", "helper({})");
    assert_cause(
        outcome(&source, &p, &[], multi_walk(5, 1, 1)),
        Cause::GuestError,
        &["KeyError: 'missing' (strategy.py, line 4)"],
    );
    // The strategy's own errors.
    let source = "from palisade import Strategy, StrategyError\n\n\nclass S(Strategy):\n    def finish(self):\n        raise StrategyError('out of ideas')\n";
    assert_cause(
        outcome(source, &p, &[], multi_walk(5, 1, 1)),
        Cause::GuestError,
        &["out of ideas"],
    );
}

#[test]
fn parameters_are_refused_as_invalid_params_naming_them() {
    let p = python();
    assert_cause(
        outcome(
            &py::example("sma_cross"),
            &p,
            &[("fast", "30"), ("slow", "10")],
            multi_walk(50, 1, 1),
        ),
        Cause::InvalidParams,
        &["fast (30) must be less than slow (10)"],
    );
    let declared = "from palisade import Int, Strategy\n\n\nclass S(Strategy):\n    n = Int(3)\n\n    def next(self, bar):\n        ";
    let undeclared =
        "the strategy read parameter \"nope\", which its manifest does not declare (declared: n)";
    for read in [
        "self.param('nope')",
        "print(self.nope)",
        "hasattr(self, 'nope')",
        // Caught: the host has stopped the run already.
        "try:\n            self.param('nope')\n        except BaseException:\n            pass",
    ] {
        let got = outcome(&format!("{declared}{read}\n"), &p, &[], multi_walk(5, 1, 1));
        assert!(
            matches!(&got, Err(f) if f.cause == Cause::InvalidParams && f.message.contains(undeclared)),
            "reading it by {read}: {got:?}"
        );
    }
    // A name longer than any declared one can be is refused unread.
    assert_cause(
        outcome(
            &format!("{declared}self.param('a' * 1000000)\n"),
            &p,
            &[],
            multi_walk(5, 1, 1),
        ),
        Cause::InvalidParams,
        &["the strategy read parameter \"<1000000 bytes>\""],
    );
    // The declared one reads fine.
    outcome(
        &format!("{declared}assert self.n == 3 and self.param('n') == 3\n"),
        &p,
        &[],
        multi_walk(5, 1, 1),
    )
    .unwrap();
}

#[test]
fn the_strategy_class_and_its_declarations_are_checked_at_load() {
    let manifest = |what: &str, source: &str, fragment: &str| {
        check_load(
            what,
            source,
            Err((Cause::InvalidModule, &["manifest: ", fragment])),
        );
    };
    manifest(
        "no class",
        "from palisade import Strategy\n\nx = 1\n",
        "strategy.py defines no strategy",
    );
    manifest(
        "two classes",
        "from palisade import Strategy\n\n\nclass A(Strategy):\n    pass\n\n\nclass B(Strategy):\n    pass\n",
        "strategy.py defines 2 strategies (A, B)",
    );
    manifest(
        "default out of range",
        "from palisade import Int, Strategy\n\n\nclass A(Strategy):\n    n = Int(50, min=1, max=10)\n",
        "parameter n: default 50 is outside [min, max] = [1, 10]",
    );
    manifest(
        "fractional int",
        "from palisade import Int, Strategy\n\n\nclass A(Strategy):\n    n = Int(1.5)\n",
        "parameter n: default of an Int must be a whole number",
    );
    manifest(
        "hides the API",
        "from palisade import Float, Strategy\n\n\nclass A(Strategy):\n    cash = Float(1.0)\n",
        "the name hides Strategy.cash",
    );
    manifest(
        "bad name",
        "from palisade import Strategy\n\n\nclass A(Strategy):\n    name = 'Bad Name'\n",
        "strategy name 'Bad Name' must be",
    );
    // A base class shared by the strategy is not a second strategy.
    check_load(
        "a base and a leaf",
        "from palisade import Strategy\n\n\nclass Base(Strategy):\n    pass\n\n\nclass Leaf(Base):\n    pass\n",
        Ok(()),
    );
    // An exception while loading is the module's fault, at load.
    check_load(
        "raises at import",
        &strategy("raise ValueError('nope')", "pass"),
        Err((Cause::GuestError, &["ValueError: nope (strategy.py, line 2)"])),
    );
}

/// A strategy counting to `n` in `init`, with `padding` bytes of comment.
fn init_spin(padding: usize) -> String {
    format!(
        "from palisade import Int, Strategy\n#{}\n\n\nclass S(Strategy):\n    n = Int(0, min=0, max=1000000000)\n\n    def init(self):\n        i = 0\n        while i < self.n:\n            i += 1\n",
        "x".repeat(padding)
    )
}

#[test]
fn a_long_source_gets_a_set_up_window_in_proportion() {
    // Loading a source costs about 5,000-20,000 fuel a byte: the set-up
    // window (loading and init) is one event's fuel plus one per 4 KiB of
    // source, so a long strategy has as much left for its init as a short
    // one.
    let run = |source: &str, fuel: u64| {
        let p = py::policy(|p| p.fuel_per_event = fuel);
        py::run_in(&sandbox(&p), source, &p, &[("n", "200000")], minute_dataset(3, 1))
            .and_then(|out| out.outcome)
    };
    let short = init_spin(0);
    let need = threshold(1_000_000, 1_000_000_000, |f| run(&short, f).is_ok());
    // Half the fuel is too little for the short source; padded to 8-12 KiB
    // (a window of three events) the same init fits.
    let half = need / 2;
    assert_cause(run(&short, half), Cause::FuelExhausted, &["init used more than"]);
    let long = init_spin(9_000);
    assert!((8_192..12_288).contains(&long.len()));
    run(&long, half).unwrap();
    // Padded to 4-8 KiB (a window of two events) at a third of the need,
    // the window is two thirds of it: too little.
    assert_cause(
        run(&init_spin(4_500), need / 3),
        Cause::FuelExhausted,
        &["init used more than"],
    );

    // A realistic long strategy (100 small methods, about 14 KB) loads and
    // runs under the default Python policy.
    let mut source = String::from("from palisade import Strategy\n\n\nclass S(Strategy):\n");
    for i in 0..100 {
        source.push_str(&format!(
            "    def m{i}(self, bar):\n        x = bar.close * {i}\n        if x > self.y:\n            return [v for v in self.z if v > x]\n        return None\n\n"
        ));
    }
    source.push_str("    def next(self, bar):\n        pass\n");
    assert!(source.len() > 12_000, "{}", source.len());
    check_load("a long source", &source, Ok(()));
    let p = python();
    let out = py::run_in(&sandbox(&p), &source, &p, &[], minute_dataset(3, 1)).unwrap();
    assert!(out.outcome.is_ok(), "{:?}", out.outcome);
}

#[test]
fn module_bytes_bounds_the_source_exactly() {
    let base = strategy("", "pass");
    let sized = |len: usize| {
        let pad = len - base.len() - 2;
        let source = format!("{base}#{}\n", "x".repeat(pad));
        assert_eq!(source.len(), len);
        source
    };
    let p = py::policy(|p| p.module_bytes = 4_096);
    let sb = sandbox(&p);
    py::load(&sb, &sized(4_096), &p).unwrap();
    let refused = py::load(&sb, &sized(4_097), &p).unwrap_err();
    assert_eq!(refused.cause, Cause::InvalidModule, "{refused}");
    assert!(
        refused
            .message
            .contains("strategy.py is 4097 bytes, over the policy's module_bytes (4096)"),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------
// Hostile Python
// ---------------------------------------------------------------------------

/// Module-level Python that finds the interpreter's real builtins (past the
/// import guard) by introspection alone, from `object`'s subclasses.
const ESCAPE: &str = r#"
def real_builtins():
    seen = set()
    todo = list(().__class__.__base__.__subclasses__())
    while todo:
        cls = todo.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        try:
            todo.extend(cls.__subclasses__())
        except TypeError:
            pass
        for attr in list(vars(cls).values()):
            g = getattr(attr, "__globals__", None)
            if not isinstance(g, dict) or g.get("__name__") == "strategy":
                continue
            b = g.get("__builtins__")
            b = b if isinstance(b, dict) else getattr(b, "__dict__", None)
            if b is not None and "__import__" in b:
                return b
    raise RuntimeError("no way to the real builtins")


def find_class(name):
    todo = list(object.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        try:
            todo.extend(cls.__subclasses__())
        except TypeError:
            pass
    raise LookupError(name)
"#;

#[test]
fn files_are_not_reachable() {
    let p = python();
    assert_cause(
        outcome(
            &strategy("", "open('/etc/passwd').read()"),
            &p,
            &[],
            multi_walk(3, 1, 1),
        ),
        Cause::GuestError,
        &["FileNotFoundError: [Errno 44] No such file or directory: '/etc/passwd' (strategy.py, line 7)"],
    );
    let caught = strategy(
        "",
        "try:\n            open('/etc/passwd').read()\n        except Exception as e:\n            self.log(type(e).__name__)",
    );
    let out = run(&caught, &p, &[], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(messages(&out), ["FileNotFoundError"; 3]);
}

#[test]
fn introspection_reaches_modules_but_no_capability() {
    let source = format!(
        r#"
from palisade import Strategy
{ESCAPE}

class Escape(Strategy):
    def init(self):
        imp = real_builtins()["__import__"]
        probes = [
            ("open", lambda: open("/etc/passwd").read()),
            ("os.listdir", lambda: imp("os").listdir("/")),
            ("os.open", lambda: imp("os").open("/etc/passwd", 0)),
            ("os.stat", lambda: imp("os").stat("/")),
            ("os.environ", lambda: sorted(imp("os").environ)),
            ("os.system", lambda: imp("os").system("id")),
            ("subprocess", lambda: imp("subprocess").run(["id"])),
            ("socket", lambda: imp("socket").create_connection(("127.0.0.1", 80))),
            ("_socket", lambda: imp("_socket").socket()),
            ("FileIO", lambda: find_class("FileIO")("/etc/passwd")),
            ("_wrap_close", lambda: find_class("_wrap_close").__init__.__globals__["listdir"]("/")),
            ("sys.argv", lambda: imp("sys").argv),
        ]
        for name, probe in probes:
            try:
                self.log(f"{{name}}: ok {{probe()!r}}")
            except BaseException as e:
                self.log(f"{{name}}: {{type(e).__name__}}")
"#
    );
    let out = run(&source, &python(), &[], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(
        messages(&out),
        [
            "open: FileNotFoundError",
            "os.listdir: FileNotFoundError",
            "os.open: FileNotFoundError",
            "os.stat: FileNotFoundError",
            "os.environ: ok []",
            "os.system: AttributeError",
            "subprocess: ModuleNotFoundError",
            "socket: ModuleNotFoundError",
            "_socket: PermissionError",
            "FileIO: FileNotFoundError",
            "_wrap_close: FileNotFoundError",
            "sys.argv: ok []",
        ]
    );
}

#[test]
fn clocks_read_the_bar_time() {
    let source = r#"
import datetime
import time

from palisade import Strategy


class Clock(Strategy):
    def init(self):
        self.log(f"init {time.time()!r} {time.monotonic_ns()}")

    def next(self, bar):
        now = datetime.datetime.now(datetime.timezone.utc).timestamp()
        local = datetime.datetime.now() == datetime.datetime.fromtimestamp(bar.ts)
        self.log(f"{bar.ts} {time.time()!r} {time.time_ns()} {now!r} {time.monotonic_ns()} {time.perf_counter()!r} {local}")
"#;
    let data = minute_dataset(20, 3);
    let out = run(source, &python(), &[], data.clone()).unwrap();
    assert_eq!(out.outcome, Ok(()));
    let lines = messages(&out);
    assert_eq!(lines[0], "init 0.0 0");
    assert_eq!(lines.len(), 21);
    for (line, bar) in lines[1..].iter().zip(data.bars()) {
        let t = bar.ts;
        assert_eq!(
            *line,
            format!("{t} {t}.0 {t}000000000 {t}.0 {t}000000000 {t}.0 True"),
            "the clocks at bar {t}"
        );
    }
}

#[test]
fn randomness_is_seeded_by_the_run() {
    let source = r#"
import random

from palisade import Strategy


class Dice(Strategy):
    def next(self, bar):
        self.log(f"{random.random()!r} {self.random()!r} {random.Random().random()!r}")
"#;
    let p = python();
    let sb = sandbox(&p);
    let streams = |seed: u64| {
        let out = run_seeded(&sb, source, &p, multi_walk(5, 1, 1), seed);
        assert_eq!(out.outcome, Ok(()));
        let mut columns = [Vec::new(), Vec::new(), Vec::new()];
        for line in messages(&out) {
            for (column, value) in columns.iter_mut().zip(line.split(' ')) {
                column.push(value.to_owned());
            }
        }
        columns
    };
    let one = streams(1);
    assert_eq!(streams(1), one, "the same seed, the same numbers");
    // And in another sandbox.
    let again = run_seeded(&sandbox(&p), source, &p, multi_walk(5, 1, 1), 1);
    let again: Vec<String> = messages(&again).iter().map(|l| (*l).to_owned()).collect();
    let joined: Vec<String> = (0..one[0].len())
        .map(|i| format!("{} {} {}", one[0][i], one[1][i], one[2][i]))
        .collect();
    assert_eq!(again, joined);
    let two = streams(2);
    for (i, name) in ["random.random()", "self.random()", "random.Random()"]
        .iter()
        .enumerate()
    {
        assert_ne!(one[i], two[i], "{name} is the same under seeds 1 and 2");
        let distinct: std::collections::BTreeSet<_> = one[i].iter().collect();
        assert_eq!(distinct.len(), one[i].len(), "{name} repeats itself");
    }
}

/// A hunter for later bars: at every timestamp of canary data (see
/// `palisade_testkit::bars::canary`), walks every object the garbage
/// collector tracks (modules, the SDK's and the runtime's state, frames'
/// locals) and everything they refer to, and the frames of the stack, for a
/// canary price or a timestamp of a later bar. It reaches `gc` and `sys`
/// through [`ESCAPE`]. `mode` 1 plants a later bar's price first (the
/// self-test: a scan that finds nothing is a scan that works).
fn hunter() -> String {
    format!(
        r#"
from palisade import Int, Strategy
{ESCAPE}

T0 = 1700000000


class Hunter(Strategy):
    mode = Int(0, min=0, max=1)
    keep_bars = True

    def init(self):
        imp = real_builtins()["__import__"]
        self.gc = imp("gc")
        self.sys = imp("sys")
        self.planted = []
        self.scans = 0

    def on_timestamp(self, bars):
        index = (bars[0].ts - T0) // 60
        if self.mode == 1 and index == 3:
            self.planted.append(1000.0 + (index + 2) / 1024)
        symbols = len(bars)
        seen_index, seen_ts = self.hunt(symbols)
        if seen_index > index or seen_ts > bars[0].ts:
            raise RuntimeError(f"found index {{seen_index}} / ts {{seen_ts}} while at index {{index}}")
        if seen_index != index or seen_ts != bars[0].ts:
            raise RuntimeError(f"blind: the scan missed the current bar ({{seen_index}}, {{seen_ts}}) at {{index}}")
        self.scans += 1

    def hunt(self, symbols):
        best = [-1, -1]

        def look(v):
            t = type(v)
            if t is float:
                if 1000.0 <= v < 1000.0 * (symbols + 1):
                    s = int(v // 1000.0)
                    frac = (v - 1000.0 * s) * 1024
                    if frac == int(frac) and frac < 1024 and int(frac) > best[0]:
                        best[0] = int(frac)
            elif t is int:
                if T0 <= v < T0 + 60 * 1024 and (v - T0) % 60 == 0 and v > best[1]:
                    best[1] = v

        tracked = self.gc.is_tracked

        def dig(v):
            # Numbers, and the containers the collector does not track
            # (tuples and dicts of numbers): reachable only from here.
            t = type(v)
            if t is float or t is int:
                look(v)
            elif (t is tuple or t is list or t is set or t is frozenset) and not tracked(v):
                for x in v:
                    dig(x)
            elif t is dict and not tracked(v):
                for k, x in v.items():
                    dig(k)
                    dig(x)

        referents = self.gc.get_referents
        for obj in self.gc.get_objects():
            for r in referents(obj):
                dig(r)
        frame = self.sys._getframe()
        while frame is not None:
            for v in frame.f_locals.values():
                dig(v)
            frame = frame.f_back
        return best

    def finish(self):
        self.metric("scans", self.scans)
"#
    )
}

#[test]
fn introspection_finds_no_later_bar() {
    let p = py::policy(|p| p.python_fuel_scale = 1_000);
    let sb = sandbox(&p);
    for symbols in [1, 3] {
        let out = py::run_in(&sb, &hunter(), &p, &[], canary(12, symbols, 1_700_000_000)).unwrap();
        assert_eq!(out.outcome, Ok(()), "{symbols} symbols");
        assert_eq!(out.metrics["scans"], 12.0);
    }
    // The self-test: a later bar's price planted in the heap is found.
    let got = py::run_in(&sb, &hunter(), &p, &[("mode", "1")], canary(12, 1, 1_700_000_000))
        .unwrap()
        .outcome;
    assert_cause(
        got,
        Cause::GuestError,
        &["RuntimeError: found index 5 / ts 1700000180 while at index 3"],
    );
}

#[test]
fn calling_the_host_binding_directly_earns_nothing() {
    // The binding found through sys.modules, as any hostile strategy could:
    // it reads the next timestamp itself and trades on where it went.
    let source = format!(
        r#"
from palisade import Strategy
{ESCAPE}


class ReadAhead(Strategy):
    def init(self):
        sys = real_builtins()["__import__"]("sys")
        names = [n for n in sys.modules if n.endswith("imports.host")]
        self.binding = sys.modules[names[0]]
        self.log(f"binding {{names[0]}}")
        self.holding = False
        self.peeks = 0

    def next(self, bar):
        if self.holding:
            self.close()
            self.holding = False
            return
        data = self.binding.next()
        if not int.from_bytes(data[:4], "little"):
            return
        self.peeks += 1
        self.metric("peeks", self.peeks)
        # The first bar's open, high, low, close and volume (the WIT packing).
        ahead = memoryview(data)[24:64].cast("d")
        if ahead[3] > ahead[0]:
            self.buy()
        else:
            self.sell()
        self.holding = True

"#
    );
    let p = python();
    for seed in [1, 2] {
        let out = run(&source, &p, &[], minute_dataset(4_000, seed)).unwrap();
        // Peeking at the end of the data takes the runtime's own last look:
        // the runtime then asks again, which stops the run.
        if let Err(f) = &out.outcome {
            assert_eq!(f.cause, Cause::HostAbuse, "seed {seed}: {f}");
            assert!(
                f.message
                    .starts_with("next_bars called again after the data ended"),
                "{f}"
            );
        }
        assert_eq!(messages(&out)[..1], ["binding wit_world.imports.host"]);
        assert!(out.metrics["peeks"] > 1_000.0, "{:?}", out.metrics);
        crate::lookahead::assert_trades_show_no_edge(
            &out,
            &format!("read-ahead through the binding, seed {seed}"),
        );
    }
}

#[test]
fn print_goes_to_the_log_within_log_bytes() {
    use palisade_run::policy::LogOverflow;
    use palisade_run::session::LOG_LINE_OVERHEAD;
    let source = r#"
from palisade import Int, Strategy


class Chatty(Strategy):
    lines = Int(10, min=0, max=10000000)
    width = Int(100, min=0, max=100000)

    def init(self):
        for i in range(self.lines):
            print("x" * self.width)
"#;
    let limit = 10 * (100 + LOG_LINE_OVERHEAD);
    let fail = py::policy(|p| {
        p.log_bytes = limit;
        p.log_overflow = LogOverflow::Fail;
    });
    let out = run(source, &fail, &[], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    let line = "x".repeat(100);
    assert_eq!(messages(&out), vec![line.as_str(); 10]);
    assert_cause(
        outcome(source, &fail, &[("width", "101")], multi_walk(3, 1, 1)),
        Cause::OutputLimit,
        &[&format!("logged more than {limit} bytes (log_bytes")],
    );
    // By default a flood is cut at log_bytes, every dropped line counted.
    let truncate = py::policy(|p| p.log_bytes = limit);
    let out = run(source, &truncate, &[("lines", "1000")], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!((out.logs.len(), out.usage.logs_dropped), (10, 990));
}

#[test]
fn the_real_stdout_is_bounded_like_the_log() {
    use palisade_run::policy::LogOverflow;
    use palisade_run::session::LOG_LINE_OVERHEAD;
    // Past print's sys.stdout, to the interpreter's own (WASI's stdout).
    let source = format!(
        r#"
from palisade import Int, Strategy
{ESCAPE}


class Raw(Strategy):
    lines = Int(10, min=0, max=10000000)
    width = Int(0, min=0, max=100000000)

    def init(self):
        out = real_builtins()["__import__"]("sys").__stdout__
        for i in range(self.lines):
            out.write(f"raw {{i}}\n")
        try:
            out.write("y" * self.width)
            out.flush()
        except Exception as e:
            self.log(type(e).__name__)
"#
    );
    // "raw 0" to "raw 9": 5 bytes each.
    let limit = 10 * (5 + LOG_LINE_OVERHEAD);
    let truncate = py::policy(|p| p.log_bytes = limit);
    let out = run(&source, &truncate, &[], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    let want: Vec<String> = (0..10).map(|i| format!("raw {i}")).collect();
    assert_eq!(messages(&out), want);
    let out = run(&source, &truncate, &[("lines", "15")], multi_walk(3, 1, 1)).unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(
        (messages(&out), out.usage.logs_dropped),
        (want.iter().map(String::as_str).collect(), 5)
    );
    let fail = py::policy(|p| {
        p.log_bytes = limit;
        p.log_overflow = LogOverflow::Fail;
    });
    outcome(&source, &fail, &[], multi_walk(3, 1, 1)).unwrap();
    assert_cause(
        outcome(&source, &fail, &[("lines", "11")], multi_walk(3, 1, 1)),
        Cause::OutputLimit,
        &[&format!("logged more than {limit} bytes (log_bytes")],
    );
    // The pipe holds log_bytes at most: a write past it is refused to the
    // strategy, as a closed pipe.
    let roomy = py::policy(|p| p.log_bytes = 1 << 20);
    let out = run(
        &source,
        &roomy,
        &[("lines", "0"), ("width", "2000000")],
        multi_walk(3, 1, 1),
    )
    .unwrap();
    assert_eq!(out.outcome, Ok(()));
    assert_eq!(messages(&out)[0], "BrokenPipeError");
}

// ---------------------------------------------------------------------------
// Cancellation, and what a failure leaves behind
// ---------------------------------------------------------------------------

#[test]
fn cancellation_stops_a_python_infinite_loop() {
    let p = py::policy(|p| {
        p.fuel_per_event = 100_000_000_000;
        p.fuel_per_run = 100_000_000_000_000;
        p.deadline_per_event_ms = 3_600_000;
        p.deadline_per_run_ms = 86_400_000;
    });
    let sb = sandbox(&p);
    let strategy = py::load(&sb, &endless("next"), &p).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    // The run reports progress at every epoch tick while the guest runs:
    // the first report past the first bar's hand-over says the loop in
    // `next` is spinning, and it is cancelled then.
    let (running, spinning) = std::sync::mpsc::channel::<()>();
    let run = RunConfig {
        cancel: Some(cancel.clone()),
        progress: Some(ProgressFn(Arc::new(move |done| {
            if done > 0.0 {
                let _ = running.send(());
            }
        }))),
        ..RunConfig::default()
    };
    let flag = cancel.clone();
    let canceller = std::thread::spawn(move || {
        spinning.recv().expect("the run reports progress");
        flag.store(true, Ordering::Relaxed);
        Instant::now()
    });
    let out = block_on(sb.backtest(&strategy, multi_walk(10, 1, 1), &p, &run));
    let stopped = Instant::now();
    let cancelled = canceller.join().unwrap();
    assert_cause(out.outcome, Cause::Cancelled, &["cancelled"]);
    let latency = stopped.duration_since(cancelled);
    eprintln!("the run ended {latency:?} after it was cancelled");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
}

#[test]
fn failures_do_not_touch_the_next_run() {
    let p = py::policy(|p| p.python_memory_bytes = 64 << 20);
    let sb = sandbox(&p);
    let sma = py::example("sma_cross");
    let data = multi_walk(500, 2, 9);
    let baseline = result_json(&py::run_in(&sb, &sma, &p, &[], data.clone()).unwrap());
    for hostile in [
        endless("next"),
        BOMB.to_owned(),
        HOARD.to_owned(),
        dive("plain").replace("200", "100000000"),
        strategy("", "1 / 0"),
        strategy("", "__import__('o' + 's')"),
    ] {
        let out = py::run_in(&sb, &hostile, &p, &[], data.clone()).unwrap();
        assert!(out.outcome.is_err(), "{hostile} should fail");
        let after = result_json(&py::run_in(&sb, &sma, &p, &[], data.clone()).unwrap());
        assert_eq!(after, baseline, "a run after {hostile} differs");
    }
    // Nor does a run that succeeds after tampering with the SDK and the
    // interpreter's state: every run starts from the runtime's snapshot.
    let tamper = format!(
        r#"
from palisade import Strategy
{ESCAPE}


class Tamper(Strategy):
    def init(self):
        modules = real_builtins()["__import__"]("sys").modules
        modules["palisade.indicators"].SmaPair.compare = lambda self: 1
        modules["palisade._runtime"].ALLOWED_MODULES = frozenset({{"os", "sys"}})
        modules["random"].seed(0)
        modules["builtins"].len = lambda x: 0
        self.log("tampered")
"#
    );
    let out = py::run_in(&sb, &tamper, &p, &[], data.clone()).unwrap();
    assert_eq!((&out.outcome, messages(&out)), (&Ok(()), vec!["tampered"]));
    let after = result_json(&py::run_in(&sb, &sma, &p, &[], data.clone()).unwrap());
    assert_eq!(after, baseline, "a run after tampering differs");
    check_load(
        "import os after tampering",
        &strategy("import os", "pass"),
        Err((Cause::ForbiddenImport, &["os"])),
    );
}
