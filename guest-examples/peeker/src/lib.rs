//! `peeker`: a hostile strategy that tries to see the future, so tests can
//! prove that it cannot. `mode` picks the attempt:
//!
//! | mode | attempt | what the tests expect |
//! |---|---|---|
//! | 0 | at every timestamp, scans its whole linear memory for any bar of a later timestamp (see "canary data" below) and fails loudly when it finds one | ok, and `scans` > 0 |
//! | 1 | reads ahead: while handling `T`, asks the host for the next timestamp's bars itself and trades on where the price goes | no edge: win rate and mean trade PnL of a coin |
//! | 2 | trades across symbols: when symbol 0 rose over `T`'s bar, buys symbol 1 (which moves with symbol 0), closes a timestamp later | no edge |
//! | 3 | mode 0's self-test: writes a later bar's canary into its own memory, then scans | `guest_panic` naming the canary (so a scan that finds nothing is a scan that works) |
//!
//! **Canary data** (modes 0 and 3): every price of the bar of symbol `s` at
//! timestamp index `k` (below 1024) is `1000 × (s + 1) + k / 1024` (exact in
//! f64), and timestamps are `CANARY_T0 + 60 k`. A value of that form with an
//! index above the current one, anywhere in memory, is a bar of the future.
#![no_std]

extern crate alloc;

use palisade_sdk::{Bar, Ctx, Init, Strategy, StrategyError};

/// First timestamp of the canary data.
pub const CANARY_T0: i64 = 1_700_000_000;

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "palisade")]
    extern "C" {
        pub fn next_bars(buf: i32, cap: i32) -> i32;
    }
}

pub struct Peeker {
    mode: u32,
    symbols: usize,
    /// Timestamp index of the bars being handled.
    index: i64,
    scans: u64,
    /// Mode 2: symbol 1 was bought at the previous timestamp.
    holding: bool,
    /// Where mode 3 plants its canary (kept alive so the write stays).
    planted: alloc::boxed::Box<[f64; 4]>,
}

/// The timestamp index a price encodes, if it is a canary price.
fn canary_index(value: f64, symbols: usize) -> Option<i64> {
    if !value.is_finite() || value < 1000.0 {
        return None;
    }
    let s = (value / 1000.0) as i64;
    if s < 1 || s as usize > symbols {
        return None;
    }
    let frac = (value - 1000.0 * s as f64) * 1024.0;
    // Indices below 1024 only: the price then lies in `[1000 (s + 1),
    // 1000 (s + 1) + 1)`, where no other number of this guest lives.
    (frac >= 0.0 && frac == (frac as i64) as f64 && frac < 1024.0).then_some(frac as i64)
}

impl Peeker {
    /// Scans linear memory (8-byte words, as bars are written) for a price or
    /// a timestamp of a later timestamp index.
    #[cfg(target_arch = "wasm32")]
    fn scan(&mut self) -> Result<(), alloc::string::String> {
        let end = core::arch::wasm32::memory_size(0) * 65536;
        let mut addr = 8usize;
        while addr + 8 <= end {
            // SAFETY: any address below memory_size × 64 KiB is in bounds in
            // wasm32; this guest reads its own memory on purpose.
            let bits = unsafe { core::ptr::read_volatile(addr as *const u64) };
            let as_f64 = f64::from_bits(bits);
            if let Some(k) = canary_index(as_f64, self.symbols) {
                if k > self.index {
                    return Err(alloc::format!(
                        "found the price {as_f64} of timestamp index {k} at address {addr:#x} while handling index {}",
                        self.index
                    ));
                }
            }
            let ts = bits as i64;
            let ahead = ts - CANARY_T0 - 60 * self.index;
            if ahead > 0 && ahead % 60 == 0 && ahead < 60 * 10_000_000 {
                return Err(alloc::format!(
                    "found the timestamp {ts} ({} timestamps ahead) at address {addr:#x}",
                    ahead / 60
                ));
            }
            addr += 8;
        }
        self.scans += 1;
        Ok(())
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn scan(&mut self) -> Result<(), alloc::string::String> {
        self.scans += 1;
        Ok(())
    }

    /// Asks the host for the next timestamp's bars into a large buffer of
    /// its own: the first bar, if any.
    #[cfg(target_arch = "wasm32")]
    fn read_ahead(&mut self) -> Option<Bar> {
        let mut buf = alloc::vec![Bar::default(); 256];
        // SAFETY: the buffer is live and 256 bars long.
        let n = unsafe { raw::next_bars(buf.as_mut_ptr() as i32, 256) };
        (n > 0).then(|| buf[0])
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn read_ahead(&mut self) -> Option<Bar> {
        None
    }
}

impl Strategy for Peeker {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        let mode = init.param_usize("mode") as u32;
        let mut symbols = 0;
        while init.symbol_name(symbols as i32).is_some() {
            symbols += 1;
        }
        Ok(Peeker {
            mode,
            symbols,
            index: -1,
            scans: 0,
            holding: false,
            planted: alloc::boxed::Box::new([0.0; 4]),
        })
    }

    fn on_bar(&mut self, _ctx: &mut Ctx<'_>, _bar: &Bar) {}

    fn on_timestamp(&mut self, ctx: &mut Ctx<'_>, bars: &[Bar]) {
        self.index += 1;
        match self.mode {
            0 | 3 => {
                if self.mode == 3 && self.index == 1 {
                    // A bar of index 5, planted by the guest itself.
                    self.planted[1] = 1000.0 + 5.0 / 1024.0;
                    core::hint::black_box(&self.planted);
                }
                if let Err(found) = self.scan() {
                    panic!("{found}");
                }
            }
            1 => {
                let now = bars[0];
                if ctx.position(0) != 0.0 {
                    let _ = ctx.close_position(0);
                }
                if let Some(next) = self.read_ahead() {
                    // Time moved on to `next`: the order fills after it.
                    let qty = if next.close > now.close { 1.0 } else { -1.0 };
                    let _ = ctx.buy(0, qty);
                }
            }
            2 => {
                if self.holding {
                    let _ = ctx.close_position(1);
                    self.holding = false;
                }
                let a = bars.iter().find(|b| b.symbol == 0);
                if let Some(a) = a {
                    let qty = if a.close > a.open { 1.0 } else { -1.0 };
                    let _ = ctx.buy(1, qty);
                    self.holding = true;
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>) {
        ctx.metric("scans", self.scans as f64);
        ctx.metric("timestamps", (self.index + 1) as f64);
    }
}

palisade_sdk::strategy! {
    strategy: Peeker,
    name: "peeker",
    version: "0.1.0",
    description: "tries to see the future, to prove that it cannot; see the crate docs for modes",
    params: {
        mode: int = 0, min = 0, max = 3, doc = "which attempt";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_prices_decode_to_their_index() {
        assert_eq!(canary_index(1000.0 + 7.0 / 1024.0, 1), Some(7));
        assert_eq!(canary_index(2000.0 + 3.0 / 1024.0, 2), Some(3));
        assert_eq!(canary_index(2000.0 + 3.0 / 1024.0, 1), None);
        assert_eq!(canary_index(1000.3, 1), None);
        assert_eq!(canary_index(1500.0, 1), None, "whole numbers are not canaries");
        assert_eq!(canary_index(f64::NAN, 1), None);
    }
}
