//! `adversary`: a strategy that misbehaves on purpose, so tests can prove that
//! every limit holds and every failure is classified. `mode` picks the attack,
//! `amount` sizes it, `at` is the bar (counted from 0) where it starts.
//!
//! | mode | attack | expected cause |
//! |---|---|---|
//! | 0 | none: trades once and finishes | ok |
//! | 1 | infinite loop | `fuel_exhausted` or `deadline` |
//! | 2 | allocates and touches `amount` bytes in 64 KiB chunks | `memory_limit` when over the limit |
//! | 3 | recursion `amount` frames deep | `stack_overflow` when too deep |
//! | 4 | panics with a message | `guest_panic` |
//! | 5 | places `amount` orders on every bar | `output_limit` when over `orders_per_event` |
//! | 6 | logs `amount` bytes on every bar | lines past `log_bytes` dropped and counted; `output_limit` with `log_overflow = "fail"` |
//! | 7 | passes an out-of-bounds pointer to host call `amount` (0 log, 1 next_bars, 2 param, 3 poll_fill, 4 metric) | `bad_pointer` |
//! | 8 | asks for the next timestamp into a buffer too small for it (breaks the ABI's protocol) | `host_abuse` |
//! | 9 | burns `amount` fuel-ish loop iterations per bar, then behaves | `fuel_exhausted` when over |
#![no_std]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::hint::black_box;

use palisade_sdk::{Bar, Ctx, Init, Strategy, StrategyError};

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "palisade")]
    extern "C" {
        pub fn log(level: i32, ptr: i32, len: i32);
        pub fn next_bars(buf: i32, cap: i32) -> i32;
        pub fn param(ptr: i32, len: i32) -> f64;
        pub fn poll_fill(out: i32) -> i32;
        pub fn metric(ptr: i32, len: i32, value: f64);
    }
}

pub struct Adversary {
    mode: u32,
    amount: f64,
    at: usize,
    seen: usize,
    hoard: Vec<Vec<u8>>,
}

/// Recurses `depth` frames; the array keeps each frame on the stack.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    if depth == 0 {
        return frame[3];
    }
    dive(depth - 1).wrapping_add(frame[7])
}

impl Adversary {
    fn attack(&mut self, ctx: &mut Ctx<'_>, bar: &Bar) {
        match self.mode {
            1 => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            2 => {
                let chunk = 64 * 1024;
                let mut total = 0.0;
                while total < self.amount {
                    self.hoard.push(vec![1u8; chunk]);
                    total += chunk as f64;
                }
            }
            3 => {
                black_box(dive(self.amount as u64));
            }
            4 => panic!("adversary gave up at bar {}", self.seen),
            5 => {
                for _ in 0..self.amount as u64 {
                    let _ = ctx.buy(bar.symbol, 1.0);
                }
            }
            6 => {
                let line = vec![b'x'; self.amount as usize];
                let line = core::str::from_utf8(&line).unwrap_or("");
                ctx.log(palisade_sdk::Level::Info, line);
            }
            7 => bad_pointer(self.amount as u32),
            8 => break_protocol(),
            9 => {
                let mut acc = 0u64;
                for i in 0..self.amount as u64 {
                    acc = black_box(acc ^ i);
                }
                black_box(acc);
            }
            _ => {}
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn bad_pointer(call: u32) {
    let past_end = (core::arch::wasm32::memory_size(0) * 65536) as i32;
    // SAFETY: none needed on the guest side: the host must refuse these.
    unsafe {
        match call {
            0 => raw::log(2, past_end - 4, 64),
            1 => {
                raw::next_bars(past_end - 8, 4);
            }
            2 => {
                raw::param(-16, 8);
            }
            3 => {
                raw::poll_fill(past_end - 1);
            }
            _ => raw::metric(past_end, 1, 1.0),
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn break_protocol() {
    let mut buf = [0u8; 8];
    // SAFETY: as above; a buffer of no bars cannot hold the next timestamp.
    unsafe {
        raw::next_bars(buf.as_mut_ptr() as i32, 0);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn bad_pointer(_call: u32) {}

#[cfg(not(target_arch = "wasm32"))]
fn break_protocol() {}

impl Strategy for Adversary {
    fn init(init: &mut Init<'_>) -> Result<Self, StrategyError> {
        Ok(Adversary {
            mode: init.param_usize("mode") as u32,
            amount: init.param("amount"),
            at: init.param_usize("at"),
            seen: 0,
            hoard: Vec::new(),
        })
    }

    fn on_bar(&mut self, ctx: &mut Ctx<'_>, bar: &Bar) {
        if self.seen == 0 && self.mode == 0 {
            let _ = ctx.buy(bar.symbol, 1.0);
        }
        if self.seen >= self.at {
            self.attack(ctx, bar);
        }
        self.seen += 1;
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>) {
        ctx.metric("bars_seen", self.seen as f64);
        ctx.metric("hoarded_chunks", self.hoard.len() as f64);
    }
}

palisade_sdk::strategy! {
    strategy: Adversary,
    name: "adversary",
    version: "0.1.0",
    description: "misbehaves on purpose to test the sandbox; see the crate docs for modes",
    params: {
        mode: int = 0, min = 0, max = 9, doc = "which attack";
        amount: float = 0, min = 0, max = 1000000000000000, doc = "size of the attack";
        at: int = 0, min = 0, max = 1000000000, doc = "bar at which the attack starts";
    }
}
