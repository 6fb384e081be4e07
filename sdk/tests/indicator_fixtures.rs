//! Writes what every indicator of `palisade_sdk::indicators` gives over
//! deterministic inputs into `sdk-python/tests/fixtures/indicators.json`, the
//! fixture the Python SDK's port (`sdk-python/palisade/indicators.py`) is
//! compared with, float for float (`tests/test_indicators.py`).
//!
//! The test fails when the committed fixture differs from what it would
//! write, so a change to an indicator cannot leave the Python port behind
//! unnoticed. `PALISADE_WRITE_FIXTURES=1 cargo test -p palisade-sdk --test
//! indicator_fixtures` rewrites it; then run the Python tests
//! (`scripts/test-python-sdk.sh`) and port the change.
//!
//! Floats are written with Rust's `{:?}` (shortest digits that round-trip,
//! exponent notation for very large or small magnitudes, `-0.0` kept), NaN
//! and the infinities as the strings `"NaN"`, `"inf"` and `"-inf"`, a value
//! not ready (`None`) as `null`, an ordering as -1, 0 or 1.

use std::cmp::Ordering;
use std::fmt::Write as _;

use palisade_sdk::indicators::{
    Atr, Bollinger, BollingerBands, Donchian, DonchianChannel, Ema, RollingStats, Rsi, Sma, SmaPair,
    WindowStats, DEFAULT_SCALE,
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sdk-python/tests/fixtures/indicators.json"
);

/// Deterministic xorshift64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "\"NaN\"".into()
    } else if x == f64::INFINITY {
        "\"inf\"".into()
    } else if x == f64::NEG_INFINITY {
        "\"-inf\"".into()
    } else {
        format!("{x:?}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "null".into(), num)
}

fn ord(o: Option<Ordering>) -> String {
    match o {
        None => "null".into(),
        Some(Ordering::Less) => "-1".into(),
        Some(Ordering::Equal) => "0".into(),
        Some(Ordering::Greater) => "1".into(),
    }
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let parts: Vec<String> = items.iter().map(f).collect();
    format!("[{}]", parts.join(","))
}

/// One case: the indicator and its settings (a JSON fragment), the inputs,
/// and the output after each input from `from` on.
struct Case {
    head: String,
    outputs: Vec<String>,
    from: usize,
}

/// The input series by name (each written once) and the cases over them.
#[derive(Default)]
struct Fixture {
    series: Vec<(String, String)>,
    cases: Vec<Case>,
}

impl Fixture {
    fn push(&mut self, head: String, outputs: Vec<String>, from: usize) {
        self.cases.push(Case {
            head,
            outputs: outputs[from..].to_vec(),
            from,
        });
    }

    fn json(&self) -> String {
        let mut out = String::from("{\n\"about\": \"written by sdk/tests/indicator_fixtures.rs (PALISADE_WRITE_FIXTURES=1 cargo test -p palisade-sdk --test indicator_fixtures); do not edit\",\n\"series\": {\n");
        for (i, (name, values)) in self.series.iter().enumerate() {
            let sep = if i + 1 == self.series.len() { "" } else { "," };
            writeln!(out, "\"{name}\":{values}{sep}").unwrap();
        }
        out.push_str("},\n\"cases\": [\n");
        for (i, c) in self.cases.iter().enumerate() {
            let sep = if i + 1 == self.cases.len() { "" } else { "," };
            writeln!(
                out,
                "{{{},\"from\":{},\n \"outputs\":[{}]}}{sep}",
                c.head,
                c.from,
                c.outputs.join(",")
            )
            .unwrap();
        }
        out.push_str("]\n}\n");
        out
    }
}

/// Input series (closes), each with a name.
fn series() -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = Rng(0x1234_5678_9ABC_DEF0);
    // 4-decimal prices on a coarse grid: exact SMA ties are frequent.
    let ticks4: Vec<f64> = (0..200)
        .map(|_| (10_000 + rng.range(0, 39)) as f64 / 10_000.0)
        .collect();
    // A 4-decimal random walk around 100, with flat stretches.
    let mut t = 1_000_000i64;
    let walk: Vec<f64> = (0..200)
        .map(|_| {
            t += rng.range(-40, 40) * i64::from(rng.range(0, 3) != 0);
            t as f64 / 10_000.0
        })
        .collect();
    // Exact ties of different-length means, as in the SDK's unit test.
    let ties = vec![0.3, 0.3, 0.1, 0.2, 0.3, 0.3, 0.1, 0.2, 0.2, 0.2, 0.1, 0.3];
    // Values the indicators must survive: non-finite, signed zeros,
    // subnormals, the largest floats, the edges of the quantizable range,
    // halves at several scales, negative prices.
    let specials = vec![
        1.0,
        2.0,
        f64::NAN,
        3.0,
        4.0,
        5.0,
        f64::INFINITY,
        6.0,
        7.0,
        8.0,
        f64::NEG_INFINITY,
        9.0,
        10.0,
        11.0,
        12.0,
        -0.0,
        0.0,
        5e-324,
        0.125,
        -0.125,
        2.5,
        -2.5,
        0.000000005,
        -0.000000015,
        0.1,
        0.2,
        0.3,
        22_000_000.0,
        90_071_992.0,
        90_071_993.0,
        1e9,
        -1e9,
        f64::MAX,
        -f64::MAX,
        -3.75,
        -1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        0.5,
        0.5,
        100.1234,
        100.1234,
        100.1235,
        99.9999,
        1e-300,
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    ];
    let constant = vec![101.2345; 30];
    let neg_zero = vec![-0.0, -0.0, -0.0, -0.0, 1.0, -0.0, -0.0, -0.0, -0.0, -0.0];
    let huge = vec![1e308, 1e308, 1e308, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    vec![
        ("ticks4", ticks4),
        ("walk", walk),
        ("ties", ties),
        ("specials", specials),
        ("constant", constant),
        ("neg_zero", neg_zero),
        ("huge", huge),
    ]
}

/// One bar as the indicators take it: `(high, low, close)`.
type Hlc = (f64, f64, f64);

/// Bars `(high, low, close)` around a series of closes.
fn bars_of(closes: &[f64], seed: u64) -> Vec<Hlc> {
    let mut rng = Rng(seed);
    closes
        .iter()
        .map(|&c| {
            let up = rng.range(0, 30) as f64 / 10_000.0;
            let down = rng.range(0, 30) as f64 / 10_000.0;
            (c + up, c - down, c)
        })
        .collect()
}

fn bar_series(closes: &[(&'static str, Vec<f64>)]) -> Vec<(&'static str, Vec<Hlc>)> {
    let get = |name: &str| &closes.iter().find(|(n, _)| *n == name).unwrap().1;
    let mut special = bars_of(get("walk"), 7)[..40].to_vec();
    special[3].0 = f64::NAN;
    special[9].1 = f64::NAN;
    special[15].2 = f64::NAN;
    special[20] = (f64::INFINITY, 1.0, 2.0);
    special[25] = (5.0, f64::NEG_INFINITY, 2.0);
    special[30] = (-0.0, -0.0, -0.0);
    special[31] = (1.0, 2.0, 1.5); // high below low, used as given
    vec![
        ("walk", bars_of(get("walk"), 3)),
        ("ticks4", bars_of(get("ticks4"), 5)),
        ("specials", special),
    ]
}

fn fmt_bands(b: &Option<BollingerBands>) -> String {
    b.map_or_else(
        || "null".into(),
        |b| {
            format!(
                "[{},{},{},{}]",
                num(b.lower),
                num(b.middle),
                num(b.upper),
                num(b.stddev)
            )
        },
    )
}

fn fmt_channel(c: &Option<DonchianChannel>) -> String {
    c.map_or_else(
        || "null".into(),
        |c| format!("[{},{},{}]", num(c.upper), num(c.lower), num(c.middle)),
    )
}

fn fmt_stats(s: &Option<WindowStats>) -> String {
    s.map_or_else(
        || "null".into(),
        |s| format!("[{},{},{}]", num(s.mean), num(s.variance), num(s.stddev)),
    )
}

/// Feeds `xs` into a fresh indicator (reset before input `reset_at`, if
/// given) and collects the formatted outputs.
fn feed<T, I>(
    xs: &[I],
    reset_at: Option<usize>,
    mut make: impl FnMut() -> T,
    mut step: impl FnMut(&mut T, &I) -> String,
    reset: impl Fn(&mut T),
) -> Vec<String> {
    let mut ind = make();
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            if reset_at == Some(i) {
                reset(&mut ind);
            }
            step(&mut ind, x)
        })
        .collect()
}

fn reset_field(reset_at: Option<usize>) -> String {
    reset_at.map_or_else(String::new, |r| format!(",\"reset_at\":{r}"))
}

fn build() -> Fixture {
    let closes = series();
    let bars = bar_series(&closes);
    let mut fx = Fixture::default();
    let floats = |xs: &[f64]| list(xs, |&x| num(x));
    let bar_list = |xs: &[Hlc]| list(xs, |b| format!("[{},{},{}]", num(b.0), num(b.1), num(b.2)));
    let scales = [1u64, 100, 10_000, DEFAULT_SCALE, 1 << 53];
    for (name, xs) in &closes {
        fx.series.push((name.to_string(), floats(xs)));
    }
    for (name, bs) in &bars {
        fx.series.push((format!("bars_{name}"), bar_list(bs)));
    }

    for (name, xs) in &closes {
        // Sma at several periods and scales.
        for period in [1usize, 2, 3, 5, 20] {
            for &scale in &scales {
                if scale != DEFAULT_SCALE && !matches!(*name, "specials" | "walk") {
                    continue;
                }
                let reset_at = (period == 5 && *name == "walk").then_some(150);
                let out = feed(
                    xs,
                    reset_at,
                    || Sma::with_scale(period, scale),
                    |s, &x| {
                        let got = s.update(x);
                        assert_eq!(got.map(f64::to_bits), s.value().map(f64::to_bits));
                        opt(got)
                    },
                    Sma::reset,
                );
                fx.push(
                    format!(
                        "\"series\":\"{name}\",\"indicator\":\"sma\",\"period\":{period},\"scale\":{scale}{}",
                        reset_field(reset_at)
                    ),
                    out,
                    0,
                );
            }
        }
        // SmaPair: fast, slow and their exact comparison after each value.
        for (fast, slow) in [(1usize, 3usize), (3, 1), (2, 5), (5, 5), (10, 30), (1, 2)] {
            for scale in [100u64, DEFAULT_SCALE] {
                if scale != DEFAULT_SCALE && *name != "specials" {
                    continue;
                }
                let reset_at = (fast == 2 && *name == "ticks4").then_some(100);
                let out = feed(
                    xs,
                    reset_at,
                    || SmaPair::with_scale(fast, slow, scale),
                    |p, &x| {
                        p.push(x);
                        format!("[{},{},{}]", opt(p.fast()), opt(p.slow()), ord(p.compare()))
                    },
                    SmaPair::reset,
                );
                fx.push(
                    format!(
                        "\"series\":\"{name}\",\"indicator\":\"sma_pair\",\"fast\":{fast},\"slow\":{slow},\"scale\":{scale}{}",
                        reset_field(reset_at)
                    ),
                    out,
                    0,
                );
            }
        }
        // Sma::compare between two separate averages (None across scales).
        for (a, sa, b, sb) in [
            (2usize, DEFAULT_SCALE, 5usize, DEFAULT_SCALE),
            (3, 10_000, 3, DEFAULT_SCALE),
        ] {
            let mut x_sma = Sma::with_scale(a, sa);
            let mut y_sma = Sma::with_scale(b, sb);
            let out: Vec<String> = xs
                .iter()
                .map(|&x| {
                    x_sma.push(x);
                    y_sma.push(x);
                    ord(x_sma.compare(&y_sma))
                })
                .collect();
            fx.push(
                format!(
                    "\"series\":\"{name}\",\"indicator\":\"sma_compare\",\"a\":[{a},{sa}],\"b\":[{b},{sb}]"
                ),
                out,
                0,
            );
        }
        for period in [1usize, 2, 5, 14] {
            let reset_at = (period == 5 && *name == "walk").then_some(120);
            let out = feed(
                xs,
                reset_at,
                || Ema::new(period),
                |e, &x| opt(e.update(x)),
                Ema::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"{name}\",\"indicator\":\"ema\",\"period\":{period}{}",
                    reset_field(reset_at)
                ),
                out,
                0,
            );
            let out = feed(
                xs,
                reset_at,
                || Rsi::new(period),
                |r, &x| opt(r.update(x)),
                Rsi::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"{name}\",\"indicator\":\"rsi\",\"period\":{period}{}",
                    reset_field(reset_at)
                ),
                out,
                0,
            );
        }
        for (period, k, scale) in [
            (2usize, 2.0, DEFAULT_SCALE),
            (5, 2.0, DEFAULT_SCALE),
            (20, 1.5, DEFAULT_SCALE),
            (3, 2.0, 100),
            (4, 2.0, 1 << 53),
            (5, -1.0, DEFAULT_SCALE),
            (5, f64::NAN, DEFAULT_SCALE),
        ] {
            let reset_at = (period == 5 && k == 2.0 && *name == "walk").then_some(77);
            let out = feed(
                xs,
                reset_at,
                || Bollinger::with_scale(period, k, scale),
                |b, &x| fmt_bands(&b.update(x)),
                Bollinger::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"{name}\",\"indicator\":\"bollinger\",\"period\":{period},\"k\":{},\"scale\":{scale}{}",
                    num(k),
                    reset_field(reset_at)
                ),
                out,
                0,
            );
        }
        for period in [2usize, 3, 20] {
            let reset_at = (period == 3 && *name == "walk").then_some(50);
            let out = feed(
                xs,
                reset_at,
                || RollingStats::new(period),
                |r, &x| fmt_stats(&r.update(x)),
                RollingStats::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"{name}\",\"indicator\":\"rolling_stats\",\"period\":{period}{}",
                    reset_field(reset_at)
                ),
                out,
                0,
            );
        }
    }

    for (name, bs) in &bars {
        for period in [1usize, 3, 14] {
            let reset_at = (period == 3 && *name == "walk").then_some(60);
            let out = feed(
                bs,
                reset_at,
                || Atr::new(period),
                |a, &(h, l, c)| opt(a.update(h, l, c)),
                Atr::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"bars_{name}\",\"indicator\":\"atr\",\"period\":{period}{}",
                    reset_field(reset_at)
                ),
                out,
                0,
            );
        }
        for period in [1usize, 2, 5, 20] {
            let reset_at = (period == 5 && *name == "walk").then_some(60);
            let out = feed(
                bs,
                reset_at,
                || Donchian::new(period),
                |d, &(h, l, _)| fmt_channel(&d.update(h, l)),
                Donchian::reset,
            );
            fx.push(
                format!(
                    "\"series\":\"bars_{name}\",\"indicator\":\"donchian\",\"period\":{period}{}",
                    reset_field(reset_at)
                ),
                out,
                0,
            );
        }
    }

    // Bollinger's last step in floating point: n · Σ(q - m)² beyond 2^128
    // (a long window of values at the largest scale, far from their mean).
    let mut rng = Rng(42);
    let period = 4096;
    let big: Vec<f64> = (0..period + 64)
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            sign * (0.9 + rng.range(0, 999) as f64 / 10_000.0)
        })
        .collect();
    fx.series.push(("wide".into(), floats(&big)));
    let out = feed(
        &big,
        None,
        || Bollinger::with_scale(period, 2.0, 1 << 53),
        |b, &x| fmt_bands(&b.update(x)),
        Bollinger::reset,
    );
    fx.push(
        format!(
            "\"series\":\"wide\",\"indicator\":\"bollinger\",\"period\":{period},\"k\":2.0,\"scale\":{}",
            1u64 << 53
        ),
        out,
        period - 2,
    );
    fx
}

#[test]
fn python_fixture_matches_the_rust_indicators() {
    let want = build().json();
    if std::env::var_os("PALISADE_WRITE_FIXTURES").is_some_and(|v| v == "1") {
        std::fs::write(FIXTURE, &want).unwrap_or_else(|e| panic!("writing {FIXTURE}: {e}"));
        return;
    }
    let have = std::fs::read_to_string(FIXTURE).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the length".into(), |i| format!("line {}", i + 1));
        panic!(
            "{FIXTURE} is missing or differs from what the Rust indicators give (first difference at {line}); \
             rewrite it with `PALISADE_WRITE_FIXTURES=1 cargo test -p palisade-sdk --test indicator_fixtures`, \
             then run scripts/test-python-sdk.sh and bring sdk-python/palisade/indicators.py in line"
        );
    }
}
