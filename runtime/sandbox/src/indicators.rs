//! Indicators the host computes for a Python strategy (the WIT `indicator`
//! import): declared in the strategy's set-up, updated with each bar of each
//! symbol as the bar is handed over (never before: the values after a bar
//! depend on that bar and the symbol's earlier ones only), and handed over
//! after the bar's fields in `next`'s packing.
//!
//! They are the Rust SDK's indicators (`palisade_sdk::indicators`), whose
//! values the Python SDK's classes of the same names reproduce bit for bit:
//! a strategy gets the same numbers whether it declares an indicator or
//! updates one itself, and the host's work is paid in fuel
//! ([`INDICATOR_FUEL`] per indicator and bar).

use std::cmp::Ordering;

use palisade_host_api::Bar;
use palisade_sdk::indicators::{Atr, Bollinger, Donchian, Ema, Rsi, Sma, SmaPair};

/// Most indicators one run may declare.
pub const MAX_INDICATORS: usize = 16;
/// Most bytes the declared indicators' instances may hold, windows
/// included, all symbols together (the host's memory, outside the guest's
/// limit).
pub const MAX_WINDOW_BYTES: u64 = 16 << 20;
/// Fuel one indicator's update costs, per bar.
pub const INDICATOR_FUEL: u64 = 32;

/// `indicator`'s error codes (its index, `>= 0`, otherwise).
pub mod code {
    /// An unknown kind or field, a period of 0 (or above the kind's
    /// largest), a scale outside `1..=2^53`.
    pub const BAD_ARGUMENT: i32 = palisade_host_api::error::BAD_ARGUMENT;
    /// Declared after the first bar was handed over.
    pub const TOO_LATE: i32 = -5;
    /// More than [`super::MAX_INDICATORS`] indicators, or windows beyond
    /// [`super::MAX_WINDOW_BYTES`].
    pub const OVER_LIMIT: i32 = -6;
}

/// The WIT `indicator` call's arguments: kind, field, period, slow period,
/// k and scale.
pub type Declaration = (i32, i32, u32, u32, f64, u64);

/// What an indicator computes: the WIT `indicator` call's `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 0: the SMA of `field` over `period` bars, at `scale`.
    Sma,
    /// 1: the comparison of the SMAs of `field` over `period` (fast) and
    /// `slow` bars, at `scale`: -1, 0 or 1.
    SmaPair,
    /// 11: the same pair's crossing at this bar: 1 when fast > slow now and
    /// fast <= slow on the symbol's previous bar, -1 when fast < slow now
    /// and fast >= slow before, else 0 (NaN until both bars compare).
    SmaCross,
    /// 2: the EMA of `field` over `period` bars.
    Ema,
    /// 3: the RSI of `field` over `period` bars.
    Rsi,
    /// 4: the ATR over `period` bars (reads high, low and close).
    Atr,
    /// 5, 6, 7: a Donchian channel's upper, lower and middle line over
    /// `period` bars (reads high and low).
    Donchian(Line),
    /// 8, 9, 10: Bollinger bands' upper, middle and lower line of `field`
    /// over `period` bars, `k` standard deviations wide, at `scale`.
    Bollinger(Line),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Upper,
    Middle,
    Lower,
}

/// One declared indicator's settings, checked.
#[derive(Clone, Copy, Debug)]
struct Spec {
    kind: Kind,
    /// 0 open, 1 high, 2 low, 3 close, 4 volume.
    field: usize,
    period: usize,
    slow: usize,
    k: f64,
    scale: u64,
}

/// What the host counts for one instance besides its window (a bound on
/// its size in memory).
const INSTANCE_BYTES: u64 = 256;
const _: () = assert!(std::mem::size_of::<State>() as u64 + 32 <= INSTANCE_BYTES);

/// The largest scale an exact indicator takes (`2^53`).
const MAX_SCALE: u64 = 1 << 53;

impl Spec {
    /// The settings of a WIT `indicator` call, or `None` when one is bad.
    fn new(kind: i32, field: i32, period: u32, slow: u32, k: f64, scale: u64) -> Option<Spec> {
        let kind = match kind {
            0 => Kind::Sma,
            1 => Kind::SmaPair,
            2 => Kind::Ema,
            3 => Kind::Rsi,
            4 => Kind::Atr,
            5 => Kind::Donchian(Line::Upper),
            6 => Kind::Donchian(Line::Lower),
            7 => Kind::Donchian(Line::Middle),
            8 => Kind::Bollinger(Line::Upper),
            9 => Kind::Bollinger(Line::Middle),
            10 => Kind::Bollinger(Line::Lower),
            11 => Kind::SmaCross,
            _ => return None,
        };
        let field = usize::try_from(field).ok().filter(|f| *f < 5)?;
        let period = period as usize;
        if period == 0 {
            return None;
        }
        let exact = matches!(
            kind,
            Kind::Sma | Kind::SmaPair | Kind::SmaCross | Kind::Bollinger(_)
        );
        if exact && !(1..=MAX_SCALE).contains(&scale) {
            return None;
        }
        if matches!(kind, Kind::SmaPair | Kind::SmaCross) && slow == 0 {
            return None;
        }
        if matches!(kind, Kind::Bollinger(_)) && period > Bollinger::MAX_PERIOD {
            return None;
        }
        Some(Spec {
            kind,
            field,
            period,
            slow: slow as usize,
            k,
            scale,
        })
    }

    /// Bytes one symbol's instance holds (a bound): the instance itself
    /// and its window.
    fn window_bytes(&self) -> u64 {
        let p = self.period as u64;
        let window = match self.kind {
            Kind::Sma | Kind::Bollinger(_) => 8 * p,
            Kind::SmaPair | Kind::SmaCross => 8 * p.max(self.slow as u64),
            // Two deques of (index, value) pairs.
            Kind::Donchian(_) => 32 * p,
            Kind::Ema | Kind::Rsi | Kind::Atr => 0,
        };
        INSTANCE_BYTES + window
    }

    fn make(&self) -> State {
        match self.kind {
            Kind::Sma => State::Sma(Sma::with_scale(self.period, self.scale)),
            Kind::SmaPair => State::SmaPair(SmaPair::with_scale(self.period, self.slow, self.scale)),
            Kind::SmaCross => State::SmaCross(SmaPair::with_scale(self.period, self.slow, self.scale), None),
            Kind::Ema => State::Ema(Ema::new(self.period)),
            Kind::Rsi => State::Rsi(Rsi::new(self.period)),
            Kind::Atr => State::Atr(Atr::new(self.period)),
            Kind::Donchian(line) => State::Donchian(Donchian::new(self.period), line),
            Kind::Bollinger(line) => {
                State::Bollinger(Bollinger::with_scale(self.period, self.k, self.scale), line)
            }
        }
    }
}

/// One symbol's instance of a declared indicator.
enum State {
    Sma(Sma),
    SmaPair(SmaPair),
    /// The pair and its comparison after the previous bar.
    SmaCross(SmaPair, Option<Ordering>),
    Ema(Ema),
    Rsi(Rsi),
    Atr(Atr),
    Donchian(Donchian, Line),
    Bollinger(Bollinger, Line),
}

impl State {
    /// The value after `bar` (NaN while undefined).
    fn update(&mut self, field: usize, bar: &Bar) -> f64 {
        let x = match field {
            0 => bar.open,
            1 => bar.high,
            2 => bar.low,
            3 => bar.close,
            _ => bar.volume,
        };
        let value = match self {
            State::Sma(s) => s.update(x),
            State::SmaPair(p) => {
                p.push(x);
                p.compare().map(|o| o as i8 as f64)
            }
            State::SmaCross(p, before) => {
                p.push(x);
                let now = p.compare();
                let cross = match (*before, now) {
                    (Some(b), Some(Ordering::Greater)) => {
                        Some(if b == Ordering::Greater { 0.0 } else { 1.0 })
                    }
                    (Some(b), Some(Ordering::Less)) => Some(if b == Ordering::Less { 0.0 } else { -1.0 }),
                    (Some(_), Some(Ordering::Equal)) => Some(0.0),
                    _ => None,
                };
                *before = now;
                cross
            }
            State::Ema(e) => e.update(x),
            State::Rsi(r) => r.update(x),
            State::Atr(a) => a.update(bar.high, bar.low, bar.close),
            State::Donchian(d, line) => d.update(bar.high, bar.low).map(|c| match line {
                Line::Upper => c.upper,
                Line::Middle => c.middle,
                Line::Lower => c.lower,
            }),
            State::Bollinger(b, line) => b.update(x).map(|bands| match line {
                Line::Upper => bands.upper,
                Line::Middle => bands.middle,
                Line::Lower => bands.lower,
            }),
        };
        value.unwrap_or(f64::NAN)
    }
}

/// A run's declared indicators and their instances, per symbol.
#[derive(Default)]
pub struct Indicators {
    specs: Vec<Spec>,
    /// Per symbol (made at its first bar), one instance per spec.
    states: Vec<Vec<State>>,
    window_bytes: u64,
    /// Set when the first bar is handed over: declaring is over.
    started: bool,
}

impl Indicators {
    /// Declares an indicator (the WIT `indicator` call's arguments) for a
    /// run of `symbols` symbols: its index, or a negative [`code`].
    pub fn declare(&mut self, (kind, field, period, slow, k, scale): Declaration, symbols: usize) -> i32 {
        if self.started {
            return code::TOO_LATE;
        }
        let Some(spec) = Spec::new(kind, field, period, slow, k, scale) else {
            return code::BAD_ARGUMENT;
        };
        let bytes = spec.window_bytes().saturating_mul(symbols.max(1) as u64);
        let total = self.window_bytes.saturating_add(bytes);
        if self.specs.len() >= MAX_INDICATORS || total > MAX_WINDOW_BYTES {
            return code::OVER_LIMIT;
        }
        self.window_bytes = total;
        self.specs.push(spec);
        (self.specs.len() - 1) as i32
    }

    /// How many indicators are declared.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Bytes one bar takes in `next`'s packing: the bar, then one f64 per
    /// declared indicator.
    pub fn record_size(&self) -> usize {
        Bar::SIZE + 8 * self.specs.len()
    }

    /// Ends the declarations (the first bar is being handed over).
    pub fn start(&mut self) {
        self.started = true;
    }

    /// Updates `bar`'s symbol's indicators with it and appends their values
    /// (little-endian f64, in declaration order) to `out`.
    pub fn push(&mut self, bar: &Bar, out: &mut Vec<u8>) {
        if self.specs.is_empty() {
            return;
        }
        let s = usize::try_from(bar.symbol).unwrap_or(0);
        if self.states.len() <= s {
            self.states.resize_with(s + 1, Vec::new);
        }
        let states = &mut self.states[s];
        if states.is_empty() {
            states.extend(self.specs.iter().map(Spec::make));
        }
        for (state, spec) in states.iter_mut().zip(&self.specs) {
            out.extend_from_slice(&state.update(spec.field, bar).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(symbol: i32, close: f64) -> Bar {
        Bar {
            ts: 0,
            symbol,
            reserved: 0,
            open: close,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 10.0,
        }
    }

    fn values(out: &[u8]) -> Vec<f64> {
        out.chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn bad_settings_are_refused_and_declare_nothing() {
        let mut ind = Indicators::default();
        for (kind, field, period, slow, scale) in [
            (-1, 3, 10, 0, 1),
            (12, 3, 10, 0, 1),
            (11, 3, 10, 0, 1),
            (0, 5, 10, 0, 1),
            (0, -1, 10, 0, 1),
            (0, 3, 0, 0, 1),
            (0, 3, 10, 0, 0),
            (0, 3, 10, 0, MAX_SCALE + 1),
            (1, 3, 10, 0, 1),
            (8, 3, (Bollinger::MAX_PERIOD + 1) as u32, 0, 1),
        ] {
            assert_eq!(
                ind.declare((kind, field, period, slow, 2.0, scale), 1),
                code::BAD_ARGUMENT,
                "{kind} {period}"
            );
        }
        assert!(ind.is_empty());
        // Settings a kind does not read are ignored.
        assert_eq!(ind.declare((2, 3, 10, 0, f64::NAN, 0), 1), 0);
        assert_eq!(ind.declare((0, 3, 10, 0, 0.0, MAX_SCALE), 1), 1);
    }

    #[test]
    fn limits_on_count_and_window_bytes_hold_on_both_sides() {
        let mut ind = Indicators::default();
        for i in 0..MAX_INDICATORS {
            assert_eq!(ind.declare((2, 3, 5, 0, 0.0, 0), 1), i as i32);
        }
        assert_eq!(ind.declare((2, 3, 5, 0, 0.0, 0), 1), code::OVER_LIMIT);
        // Windows: exactly the budget fits, one more value does not.
        let mut ind = Indicators::default();
        let values = ((MAX_WINDOW_BYTES / 4 - INSTANCE_BYTES) / 8) as u32;
        assert_eq!(ind.declare((0, 3, values, 0, 0.0, 100), 4), 0);
        assert_eq!(ind.declare((2, 3, 1, 0, 0.0, 0), 1), code::OVER_LIMIT);
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((0, 3, values + 1, 0, 0.0, 100), 4), code::OVER_LIMIT);
        assert!(ind.is_empty());
        // Instances count without windows too: many symbols.
        let symbols = (MAX_WINDOW_BYTES / INSTANCE_BYTES) as usize;
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((2, 3, 5, 0, 0.0, 0), symbols), 0);
        assert_eq!(ind.declare((2, 3, 5, 0, 0.0, 0), 1), code::OVER_LIMIT);
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((2, 3, 5, 0, 0.0, 0), symbols + 1), code::OVER_LIMIT);
    }

    #[test]
    fn nothing_is_declared_once_bars_flow() {
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((0, 3, 2, 0, 0.0, 100), 1), 0);
        ind.start();
        assert_eq!(ind.declare((0, 3, 2, 0, 0.0, 100), 1), code::TOO_LATE);
        assert_eq!(ind.len(), 1);
        assert_eq!(ind.record_size(), Bar::SIZE + 8);
    }

    #[test]
    fn values_are_the_sdk_indicators_per_symbol() {
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((0, 3, 2, 0, 0.0, 100), 2), 0);
        assert_eq!(ind.declare((1, 3, 1, 2, 0.0, 100), 2), 1);
        assert_eq!(ind.declare((5, 0, 2, 0, 0.0, 0), 2), 2);
        let mut got = Vec::new();
        for b in [bar(0, 1.0), bar(1, 50.0), bar(0, 3.0), bar(0, 2.0), bar(1, 50.0)] {
            let mut out = Vec::new();
            ind.push(&b, &mut out);
            got.push(values(&out));
        }
        let nan = |v: f64| v.is_nan();
        // Symbol 0: closes 1, 3, 2.
        assert!(nan(got[0][0]) && nan(got[0][1]) && nan(got[0][2]));
        assert_eq!(got[2], vec![2.0, 1.0, 4.0]);
        assert_eq!(got[3], vec![2.5, -1.0, 4.0]);
        // Symbol 1 has its own windows: 50, 50.
        assert!(nan(got[1][0]));
        assert_eq!(got[4], vec![50.0, 0.0, 51.0]);
    }

    #[test]
    fn a_cross_is_signalled_on_the_bar_it_happens_only() {
        let mut ind = Indicators::default();
        assert_eq!(ind.declare((11, 3, 1, 2, 0.0, 100), 1), 0);
        // fast = close, slow = mean of the last two: compare after bar 2 on.
        let closes = [5.0, 4.0, 6.0, 7.0, 7.0, 3.0, 3.0, 4.0];
        let got: Vec<f64> = closes
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                ind.push(&bar(0, *c), &mut out);
                values(&out)[0]
            })
            .collect();
        // compares: -, <, >, >, =, <, =, >
        assert!(got[0].is_nan() && got[1].is_nan());
        assert_eq!(&got[2..], &[1.0, 0.0, 0.0, -1.0, 0.0, 1.0]);
    }
}
