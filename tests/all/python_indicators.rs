//! Indicators the host computes for Python strategies (`Strategy.indicator`,
//! the WIT `indicator` import): the same values as the Python SDK's classes
//! bit for bit, on both of the runtime's paths, paid in fuel, and refused
//! with a reason when the host cannot honour them, even when the host is
//! called behind the SDK's back.

use palisade_run::{Cause, Policy};
use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_host_api::Bar;
use palisade_testkit::bars::{dataset, minute_dataset, multi_walk, regime_dataset};
use palisade_testkit::python as py;

use crate::support::sandbox;

fn python() -> Policy {
    py::policy(|_| {})
}

/// Every kind the host computes, as `(declaration, what the strategy
/// computes itself per bar from `bar`)`.
const KINDS: &[(&str, &str)] = &[
    ("Sma(7)", "Sma(7).update(bar.close)"),
    ("Sma(3, 100), of='high'", "Sma(3, 100).update(bar.high)"),
    ("SmaPair(3, 8)", "SmaPair(3, 8).push_compare(bar.close)"),
    ("SmaPair(4, 9), line='cross'", "Crossing(4, 9)(bar.close)"),
    ("Ema(5), of='open'", "Ema(5).update(bar.open)"),
    ("Rsi(6)", "Rsi(6).update(bar.close)"),
    ("Atr(5)", "Atr(5).update(bar.high, bar.low, bar.close)"),
    (
        "Donchian(6), line='upper'",
        "Line(Donchian(6), 0)(bar.high, bar.low)",
    ),
    (
        "Donchian(6), line='lower'",
        "Line(Donchian(6), 1)(bar.high, bar.low)",
    ),
    (
        "Donchian(6), line='middle'",
        "Line(Donchian(6), 2)(bar.high, bar.low)",
    ),
    (
        "Bollinger(8, 2.0), line='upper'",
        "Line(Bollinger(8, 2.0), 2)(bar.close)",
    ),
    (
        "Bollinger(8, 1.5), line='middle', of='volume'",
        "Line(Bollinger(8, 1.5), 1)(bar.volume)",
    ),
    (
        "Bollinger(8, 2.5), line='lower'",
        "Line(Bollinger(8, 2.5), 0)(bar.close)",
    ),
];

/// A strategy declaring every kind and checking, on each bar, that the host's
/// value is the one its own Python instance gives. `bar_path` makes `next`
/// use its bar as a whole (the runtime then hands over `Bar` tuples).
fn checker(bar_path: bool) -> String {
    let mut declare = String::new();
    let mut own = String::new();
    let mut check = String::new();
    for (i, (decl, mine)) in KINDS.iter().enumerate() {
        declare.push_str(&format!("        self.indicator('x{i}', {decl})\n"));
        let (made, call) = split_call(mine);
        own.push_str(&format!("            {made},\n"));
        check.push_str(&format!("        same(self, {i}, bar.x{i}, mine[{i}]{call})\n"));
    }
    let whole = if bar_path {
        "        assert len(bar) == 7 + 13\n"
    } else {
        ""
    };
    format!(
        r#"
from palisade import Strategy
from palisade.indicators import *


class Crossing:
    def __init__(self, *settings):
        self.push = SmaPair(*settings).push_compare
        self.before = None

    def __call__(self, x):
        now, before = self.push(x), self.before
        self.before = now
        if now is None or before is None:
            return None
        return 1 if now > 0 and before <= 0 else -1 if now < 0 and before >= 0 else 0


class Line:
    def __init__(self, indicator, i):
        self.update = indicator.update
        self.i = i

    def __call__(self, *x):
        got = self.update(*x)
        return None if got is None else got[self.i]


def same(strategy, i, host, mine):
    if mine is None:
        ok = host != host
    else:
        ok = type(host) is float and (host == mine or (host != host and mine != mine))
    if not ok:
        raise AssertionError(f"indicator x{{i}} at bar {{strategy.bars}}: host {{host!r}}, Python {{mine!r}}")
    if mine is not None:
        strategy.defined[i] += 1


class Check(Strategy):
    def init(self):
{declare}        self.own = {{}}
        self.bars = 0
        self.defined = [0] * {n}

    def next(self, bar):
{whole}        mine = self.own.get(bar.symbol)
        if mine is None:
            mine = self.own[bar.symbol] = [
{own}            ]
{check}        self.bars += 1

    def finish(self):
        self.metric("bars", self.bars)
        self.metric("least_defined", min(self.defined))
"#,
        n = KINDS.len()
    )
}

/// `"Sma(7).update(bar.close)"` as the instance to make once per symbol,
/// `"Sma(7).update"`, and the call on each bar, `"(bar.close)"`.
fn split_call(mine: &str) -> (String, String) {
    let at = mine
        .rfind(")(")
        .map(|i| i + 1)
        .unwrap_or_else(|| mine.rfind('(').unwrap());
    (mine[..at].to_owned(), mine[at..].to_owned())
}

/// Prices on a coarse grid (five closes, half a unit apart): averages tie
/// often, and so do the pair's comparisons and the channel's extremes.
fn ties(n: usize) -> Arc<Dataset> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut close = 101.0;
    let bars = (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let open = close;
            close = 100.0 + (state % 5) as f64 * 0.5;
            Bar {
                ts: 60 * i as i64,
                symbol: 0,
                reserved: 0,
                open,
                high: open.max(close) + 0.5,
                low: open.min(close) - 0.5,
                close,
                volume: 100.0 + (state % 3) as f64,
            }
        })
        .collect();
    dataset(&["TIE"], bars)
}

#[test]
fn declared_indicators_are_the_python_classes_values_bit_for_bit() {
    let p = python();
    let sb = sandbox(&p);
    for bar_path in [false, true] {
        let source = checker(bar_path);
        for (what, data) in [
            ("3 symbols", multi_walk(1_500, 3, 11)),
            ("regimes", regime_dataset(2_000, 5)),
            ("minutes", minute_dataset(2_000, 9)),
            ("ties", ties(2_000)),
        ] {
            let out = py::run_in(&sb, &source, &p, &[], data.clone()).unwrap();
            assert!(
                out.outcome.is_ok(),
                "{what}, bar path {bar_path}: {:?}",
                out.outcome
            );
            assert_eq!(out.metrics["bars"], data.bars().len() as f64, "{what}");
            assert!(out.metrics["least_defined"] > 100.0, "{what}: {:?}", out.metrics);
        }
    }
}

#[test]
fn declared_indicators_cost_fuel_per_bar() {
    let p = python();
    let sb = sandbox(&p);
    let strategy = |n: usize| {
        format!(
            "from palisade import Strategy\nfrom palisade.indicators import Ema\n\n\nclass S(Strategy):\n    def init(self):\n        for i in range({n}):\n            self.indicator(f'e{{i}}', Ema(3))\n\n    def next(self, bar):\n        pass\n"
        )
    };
    let data = minute_dataset(3_000, 2);
    let fuel = |n| {
        let out = py::run_in(&sb, &strategy(n), &p, &[], data.clone()).unwrap();
        assert!(out.outcome.is_ok(), "{:?}", out.outcome);
        out.usage.fuel
    };
    let (none, many) = (fuel(0), fuel(16));
    let charged = 3_000 * 16 * palisade_sandbox::indicators::INDICATOR_FUEL;
    assert!(
        many >= none + charged,
        "{many} fuel with 16 indicators, {none} without"
    );
}

#[test]
fn declarations_the_host_cannot_honour_are_refused_with_the_reason() {
    let p = python();
    for (decl, fragments) in [
        (
            "self.indicator('x', Donchian(5))",
            &["ValueError", "Donchian has several lines", "line 8"][..],
        ),
        ("self.indicator('x', RollingStats(5))", &["TypeError", "the host computes Sma"]),
        ("self.indicator('close', Sma(5))", &["ValueError", "not 'close'"]),
        (
            "[self.indicator(f'x{i}', Ema(2)) for i in range(17)]",
            &["indicator 'x16' is over the host's limits"],
        ),
        (
            "self.indicator('x', Bollinger(1 << 20, 2.0), line='upper'); self.indicator('y', Sma((1 << 20) + 1))",
            &["indicator 'y' is over the host's limits"],
        ),
    ] {
        let source = format!(
            "from palisade import Strategy\nfrom palisade.indicators import *\n\n\nclass S(Strategy):\n    def init(self):\n        x = 1\n        {decl}\n\n    def next(self, bar):\n        pass\n"
        );
        let out = py::run_in(&sandbox(&p), &source, &p, &[], minute_dataset(10, 1)).unwrap();
        let f = out.outcome.expect_err(decl);
        assert_eq!(f.cause, Cause::GuestError, "{decl}: {f}");
        for fragment in fragments {
            assert!(f.message.contains(fragment), "{decl}: {f}");
        }
    }
}

#[test]
fn the_host_binding_called_directly_gets_error_codes_and_nothing_else() {
    // Behind the SDK's back: every bad call is an error code, never a host
    // failure.
    let source = r#"
from palisade import Strategy


class S(Strategy):
    def init(self):
        h = self._host
        codes = [
            h.indicator(-1, 3, 5, 0, 0.0, 100),
            h.indicator(12, 3, 5, 0, 0.0, 100),
            h.indicator(0, 5, 5, 0, 0.0, 100),
            h.indicator(0, -1, 5, 0, 0.0, 100),
            h.indicator(0, 3, 0, 0, 0.0, 100),
            h.indicator(0, 3, 5, 0, 0.0, 0),
            h.indicator(0, 3, 5, 0, 0.0, (1 << 53) + 1),
            h.indicator(1, 3, 5, 0, 0.0, 100),
            h.indicator(8, 3, (1 << 20) + 1, 0, 2.0, 100),
            h.indicator(0, 3, 4294967295, 0, 0.0, 100),
            h.indicator(2, 3, 4294967295, 0, float("nan"), 0),
        ]
        self.log(" ".join(map(str, codes)))
"#;
    let p = python();
    let out = py::run_in(&sandbox(&p), source, &p, &[], minute_dataset(50, 1)).unwrap();
    // Ten refusals, then an EMA of period 2^32 - 1 (no window) declared.
    assert_eq!(out.logs[0].message, "-1 -1 -1 -1 -1 -1 -1 -1 -1 -6 0");
    // The bars are then longer than the SDK expects (the strategy declared
    // behind its back): the SDK says so at the first timestamp, and the run
    // stops as the strategy's own error, nothing else.
    let f = out.outcome.expect_err("the SDK cannot read its bars");
    assert_eq!(f.cause, Cause::GuestError, "{f}");
    assert!(
        f.message
            .contains("the host hands over 72 bytes for 1 bars and 0 fills")
            && f.message
                .contains("an indicator was declared on the host directly"),
        "{f}"
    );
    // Once bars flow, a declaration is refused and the run goes on.
    let late = r#"
from palisade import Strategy


class S(Strategy):
    def next(self, bar):
        self.metric("code", self._host.indicator(2, 3, 5, 0, 0.0, 0))
"#;
    let out = py::run_in(&sandbox(&p), late, &p, &[], minute_dataset(50, 1)).unwrap();
    assert!(out.outcome.is_ok(), "{:?}", out.outcome);
    assert_eq!(out.metrics["code"], -5.0);
}

#[test]
fn template_strings_keep_the_fast_path_from_showing() {
    // Python 3.14's t-strings keep each interpolation's source text, which
    // would show the fast path's locals: a `next` with one gets the Bar.
    let source = r#"
from palisade import Strategy
from palisade.indicators import Sma


class S(Strategy):
    def init(self):
        self.indicator("ma", Sma(2))

    def next(self, bar):
        t = t"{bar.ma=} {bar.close}"
        self.log(f"{t.strings[0]}|{t.interpolations[1].expression}")
"#;
    let p = python();
    let out = py::run_in(&sandbox(&p), source, &p, &[], minute_dataset(3, 1)).unwrap();
    assert!(out.outcome.is_ok(), "{:?}", out.outcome);
    assert_eq!(out.logs[0].message, "bar.ma=|bar.close");
}
