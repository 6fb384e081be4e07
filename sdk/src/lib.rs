//! Guest SDK for Palisade strategies.
//!
//! A strategy is a type implementing [`Strategy`], exported with the
//! [`strategy!`] macro, which also writes the `palisade.manifest` section
//! (name, version, declared parameters). Built for `wasm32-unknown-unknown`
//! the crate talks to the host through the ABI v2 imports of
//! [`palisade_host_api`]; built natively the very same strategy runs against
//! any [`Host`] implementation, such as [`harness::MockHost`] for unit tests or
//! the runtime's own backtest engine for wasm-versus-native comparisons.
//!
//! What it deliberately does not do: no I/O, no clock, no threads. Everything a
//! strategy learns about the world comes from the bars and from host calls, so
//! that a run is deterministic. Strategy authors never need `unsafe`.
#![no_std]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

mod host;
pub mod indicators;
mod macros;
mod strategy;

#[cfg(not(target_arch = "wasm32"))]
pub mod harness;

#[cfg(target_arch = "wasm32")]
mod wasm_rt;

pub use host::Host;
#[cfg(target_arch = "wasm32")]
pub use host::WasmHost;
pub use palisade_host_api as abi;
pub use palisade_host_api::{Bar, Fill};
pub use strategy::{run, Ctx, Init, Level, OrderError, OrderId, OrderKind, Strategy, StrategyError};

// The manifest the `strategy!` macro writes says `"abi":2`.
const _: () = assert!(palisade_host_api::ABI_VERSION == 2);

#[doc(hidden)]
pub mod __private {
    pub use core;

    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm_rt::run_export;

    /// Length of the manifest assembled from its pieces (see [`manifest_bytes`]).
    pub const fn manifest_len(head: &str, params: &[&str], tail: &str) -> usize {
        let mut n = head.len() + tail.len();
        let mut i = 0;
        while i < params.len() {
            n += params[i].len();
            if i > 0 {
                n += 1;
            }
            i += 1;
        }
        n
    }

    /// Joins `head`, the parameter objects separated by commas, and `tail`
    /// into a fixed-size byte array at compile time (the custom section).
    pub const fn manifest_bytes<const N: usize>(head: &str, params: &[&str], tail: &str) -> [u8; N] {
        let mut out = [0u8; N];
        let mut at = copy(&mut out, 0, head.as_bytes());
        let mut i = 0;
        while i < params.len() {
            if i > 0 {
                out[at] = b',';
                at += 1;
            }
            at = copy(&mut out, at, params[i].as_bytes());
            i += 1;
        }
        copy(&mut out, at, tail.as_bytes());
        out
    }

    const fn copy<const N: usize>(out: &mut [u8; N], at: usize, src: &[u8]) -> usize {
        let mut i = 0;
        while i < src.len() {
            out[at + i] = src[i];
            i += 1;
        }
        at + src.len()
    }
}
