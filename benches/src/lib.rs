//! Helpers shared by Palisade's criterion benches (`benches/benches/*.rs`):
//! deterministic synthetic bar data and the paths of the prebuilt guest
//! modules. Run the benches with `scripts/build-guests.sh && cargo bench -p
//! palisade-benches` (figures and how to read them: `BENCHMARKS.md`).
//!
//! What it does not do: measure anything itself, or read market data from
//! disk. Generated data is the same on every machine and every run, so two
//! measurements differ only by the code and the machine.

use std::path::PathBuf;
use std::sync::Arc;

use palisade_runtime::engine::Dataset;
use palisade_sdk::Bar;

/// Seed of the data every bench uses unless it says otherwise.
pub const DEFAULT_SEED: u64 = 0x5EED_BA25;

/// Timestamp of the first generated bar (2023-11-14T22:13:20Z), in seconds.
pub const START_TS: i64 = 1_700_000_000;

/// Seconds between generated bars (one-minute bars).
pub const BAR_SECONDS: i64 = 60;

/// The seeded stream of the generated prices: the ABI's own `random`
/// stream (splitmix64, 53-bit floats), so it is defined in one place.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        palisade_sdk::abi::next_random(&mut self.0)
    }

    /// Uniform in `[-1, 1)`.
    pub fn next_signed(&mut self) -> f64 {
        2.0 * self.next_f64() - 1.0
    }
}

/// Rounds to 4 decimals (the tick of the generated prices).
fn tick(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// `n` one-minute bars of symbol 0: a seeded random walk of the log price
/// (about 0.1% per bar, pulled weakly back towards 100 so a million bars stay
/// in a realistic range), prices rounded to 4 decimals so that moving
/// averages meet exact ties as they do on real data. Every bar is valid OHLC:
/// `open` is the previous close, `low <= min(open, close)`,
/// `high >= max(open, close)`, all > 0; volume is a positive whole number.
/// The same `(n, seed)` gives the same bars on every machine.
pub fn random_walk_bars(n: usize, seed: u64) -> Vec<Bar> {
    let mut rng = SplitMix64::new(seed);
    let mut bars = Vec::with_capacity(n);
    let mut close = 100.0_f64;
    for i in 0..n {
        let open = close;
        let pull = -0.0005 * (open / 100.0).ln();
        let step = 0.001 * rng.next_signed() * 1.732 + pull;
        close = tick((open * step.exp()).max(0.01));
        let high = tick(open.max(close) * (1.0 + 0.0005 * rng.next_f64()));
        let low = tick(open.min(close) * (1.0 - 0.0005 * rng.next_f64())).max(0.0001);
        let volume = (1_000.0 + 9_000.0 * rng.next_f64()).round();
        bars.push(Bar {
            ts: START_TS + BAR_SECONDS * i as i64,
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

/// [`random_walk_bars`] as a one-symbol [`Dataset`] (symbol `SYN`), checked
/// by [`Dataset::from_bars`].
pub fn random_walk(n: usize, seed: u64) -> Arc<Dataset> {
    let bars = random_walk_bars(n, seed);
    let data = Dataset::from_bars(vec!["SYN".to_owned()], bars)
        .unwrap_or_else(|e| panic!("generated bars are invalid: {e}"));
    Arc::new(data)
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// The bytes of a prebuilt guest module, `guest-examples/out/<name>.wasm`
/// (e.g. `sma_cross`). Panics with the command to run when it is missing.
pub fn guest_module(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("guest-examples/out")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nbuild the guest modules first: scripts/build-guests.sh",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_walk_is_deterministic_and_valid() {
        let a = random_walk_bars(10_000, DEFAULT_SEED);
        assert_eq!(a, random_walk_bars(10_000, DEFAULT_SEED));
        assert_ne!(a, random_walk_bars(10_000, DEFAULT_SEED + 1));
        for b in &a {
            assert!(b.low > 0.0 && b.low <= b.open.min(b.close), "{b:?}");
            assert!(b.high >= b.open.max(b.close), "{b:?}");
            assert_eq!(tick(b.close), b.close);
        }
        // Dataset::from_bars checks the same invariants the CSV reader does.
        assert_eq!(random_walk(10_000, DEFAULT_SEED).len(), 10_000);
    }
}
