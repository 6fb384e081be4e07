//! Generated bars: seeded random walks, the same on every machine and every
//! run, with 4-decimal prices (so moving averages meet exact ties as they do
//! on real data) and valid OHLC (`low <= min(open, close)`,
//! `high >= max(open, close)`, all > 0).
//!
//! Three shapes, each kept because tests and benches count trades on its
//! exact numbers:
//! - [`minute_walk`]: one-minute bars of one symbol, a log-price walk pulled
//!   weakly towards 100 (a million bars stay in a realistic range); the
//!   benches' data.
//! - [`regime_walk`]: daily bars of one symbol `X` switching between trending
//!   and choppy stretches every 40 bars (moving averages cross often); the
//!   studies' tests.
//! - [`multi_walk`]: daily bars of several symbols `S0`, `S1`, ... sharing
//!   timestamps; the sandbox's end-to-end tests.

use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_host_api::Bar;

/// Seed of the data every bench uses unless it says otherwise.
pub const DEFAULT_SEED: u64 = 0x5EED_BA25;

/// Timestamp of the first bar of [`minute_walk`] (2023-11-14T22:13:20Z).
pub const MINUTE_START_TS: i64 = 1_700_000_000;

/// Seconds between bars of [`minute_walk`].
pub const MINUTE_BAR_SECONDS: i64 = 60;

/// Rounds to 4 decimals (the tick of the generated prices).
pub fn tick(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The ABI's own random stream (splitmix64, 53-bit floats in `[0, 1)`), so
/// it is defined in one place.
fn splitmix(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || palisade_host_api::next_random(&mut state)
}

/// `bars` of the named symbols as a checked [`Dataset`].
pub fn dataset(symbols: &[&str], bars: Vec<Bar>) -> Arc<Dataset> {
    let names = symbols.iter().map(|s| (*s).to_owned()).collect();
    Arc::new(Dataset::from_bars(names, bars).unwrap_or_else(|e| panic!("generated bars are invalid: {e}")))
}

/// `n` one-minute bars of symbol 0: a seeded random walk of the log price
/// (about 0.1% per bar, pulled weakly back towards 100); volume a positive
/// whole number.
pub fn minute_walk(n: usize, seed: u64) -> Vec<Bar> {
    let mut next = splitmix(seed);
    let mut bars = Vec::with_capacity(n);
    let mut close = 100.0_f64;
    for i in 0..n {
        let open = close;
        let pull = -0.0005 * (open / 100.0).ln();
        let step = 0.001 * (2.0 * next() - 1.0) * 1.732 + pull;
        close = tick((open * step.exp()).max(0.01));
        let high = tick(open.max(close) * (1.0 + 0.0005 * next()));
        let low = tick(open.min(close) * (1.0 - 0.0005 * next())).max(0.0001);
        let volume = (1_000.0 + 9_000.0 * next()).round();
        bars.push(Bar {
            ts: MINUTE_START_TS + MINUTE_BAR_SECONDS * i as i64,
            symbol: 0,
            reserved: 0,
            open,
            high,
            low,
            close,
            volume,
        });
    }
    bars
}

/// [`minute_walk`] as a one-symbol dataset (symbol `SYN`).
pub fn minute_dataset(n: usize, seed: u64) -> Arc<Dataset> {
    dataset(&["SYN"], minute_walk(n, seed))
}

/// `n` daily bars of one symbol `X`: a seeded random walk whose drift is
/// drawn anew every 40 bars (trending and choppy stretches).
pub fn regime_walk(n: usize, seed: u64) -> Vec<Bar> {
    let mut next = splitmix(seed);
    let mut close = 100.0_f64;
    let mut drift = 0.0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 40 == 0 {
            drift = (next() - 0.5) * 0.01;
        }
        let open = close;
        let step = drift + (next() - 0.5) * 0.03;
        close = tick((open * (1.0 + step)).max(1.0));
        let high = tick(open.max(close) * (1.0 + 0.004 * next())).max(open.max(close));
        let low = tick(open.min(close) * (1.0 - 0.004 * next())).min(open.min(close));
        out.push(Bar {
            ts: 1_500_000_000 + 86_400 * i as i64,
            symbol: 0,
            reserved: 0,
            open,
            high,
            low,
            close,
            volume: 1000.0,
        });
    }
    out
}

/// [`regime_walk`] as a one-symbol dataset (symbol `X`).
pub fn regime_dataset(n: usize, seed: u64) -> Arc<Dataset> {
    dataset(&["X"], regime_walk(n, seed))
}

/// `n` daily bars of each of `symbols` symbols (`S0`, `S1`, ...) sharing
/// timestamps: independent walks of up to ±2% per bar (xorshift stream).
pub fn multi_walk(n: usize, symbols: usize, seed: u64) -> Arc<Dataset> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut bars = Vec::with_capacity(n * symbols);
    let mut closes = vec![100.0f64; symbols];
    for i in 0..n {
        for (s, close) in closes.iter_mut().enumerate() {
            let open = *close;
            let c = tick((open * (1.0 + (next() - 0.5) * 0.04)).max(1.0));
            let high = tick(open.max(c) * (1.0 + next() * 0.01));
            let low = tick(open.min(c) * (1.0 - next() * 0.01));
            bars.push(Bar {
                ts: 1_600_000_000 + i as i64 * 86_400,
                symbol: s as i32,
                reserved: 0,
                open,
                high,
                low,
                close: c,
                volume: 1000.0,
            });
            *close = c;
        }
    }
    let names: Vec<String> = (0..symbols).map(|s| format!("S{s}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    dataset(&names, bars)
}

/// `n` one-minute timestamps of two symbols `A` and `B` whose returns over
/// each bar are correlated (`rho`): B's return is `rho` × A's plus
/// independent noise. Each bar opens at the previous close, so a bar's move
/// is known only at its close. For tests of cross-symbol look-ahead.
pub fn correlated_pair(n: usize, rho: f64, seed: u64) -> Arc<Dataset> {
    let mut next = splitmix(seed);
    let mut noise = move || 2.0 * next() - 1.0;
    let (mut a, mut b) = (100.0_f64, 100.0_f64);
    let mut bars = Vec::with_capacity(2 * n);
    let bar = |ts: i64, symbol: i32, open: f64, close: f64| Bar {
        ts,
        symbol,
        reserved: 0,
        open,
        high: open.max(close),
        low: open.min(close),
        close,
        volume: 1000.0,
    };
    for i in 0..n {
        let ts = MINUTE_START_TS + MINUTE_BAR_SECONDS * i as i64;
        let ra = 0.002 * noise();
        let rb = rho * ra + (1.0 - rho * rho).sqrt() * 0.002 * noise();
        let (a_open, b_open) = (a, b);
        a = tick((a * (1.0 + ra)).max(1.0));
        b = tick((b * (1.0 + rb)).max(1.0));
        bars.push(bar(ts, 0, a_open, a));
        bars.push(bar(ts, 1, b_open, b));
    }
    dataset(&["A", "B"], bars)
}

/// `n` timestamps (at most 1024) of `symbols` symbols whose every price
/// encodes where it comes from: the bar of symbol `s` at timestamp index `k`
/// has all four prices `1000 (s + 1) + k / 1024`, at `t0 + 60 k`. A guest that
/// finds such a value with an index above the one it handles has seen the
/// future (the `peeker` guest's scan).
pub fn canary(n: usize, symbols: usize, t0: i64) -> Arc<Dataset> {
    assert!(n <= 1024, "canary indices go up to 1023");
    let mut bars = Vec::with_capacity(n * symbols);
    for k in 0..n {
        for s in 0..symbols {
            let p = 1000.0 * (s + 1) as f64 + k as f64 / 1024.0;
            bars.push(Bar {
                ts: t0 + 60 * k as i64,
                symbol: s as i32,
                reserved: 0,
                open: p,
                high: p,
                low: p,
                close: p,
                volume: 1.0,
            });
        }
    }
    let names: Vec<String> = (0..symbols).map(|s| format!("C{s}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    dataset(&names, bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_are_deterministic_and_valid() {
        let a = minute_walk(10_000, DEFAULT_SEED);
        assert_eq!(a, minute_walk(10_000, DEFAULT_SEED));
        assert_ne!(a, minute_walk(10_000, DEFAULT_SEED + 1));
        let b = regime_walk(5_000, 42);
        assert_eq!(b, regime_walk(5_000, 42));
        for bar in a.iter().chain(&b) {
            assert!(bar.low > 0.0 && bar.low <= bar.open.min(bar.close), "{bar:?}");
            assert!(bar.high >= bar.open.max(bar.close), "{bar:?}");
            assert_eq!(tick(bar.close), bar.close);
        }
        // Dataset::from_bars checks the same invariants the CSV reader does.
        assert_eq!(minute_dataset(10_000, DEFAULT_SEED).len(), 10_000);
        assert_eq!(regime_dataset(5_000, 42).len(), 5_000);
        assert_eq!(multi_walk(1_000, 3, 7).len(), 3_000);
    }
}
