//! The Palisade host ABI, version 2: the one contract between the runtime (which
//! validates modules against it and implements the imports) and guest strategies
//! (which export the entry point and call the imports, usually through
//! `palisade-sdk`).
//!
//! It is `no_std` and dependency-free (serde derives are behind the `serde`
//! feature) so that any guest, in any language targeting wasm32, can follow it
//! by reading this file. It holds names, signatures, memory layouts, constants
//! and the manifest schema; it holds no behaviour.
//!
//! # Shape of a run
//!
//! The host calls the guest exactly once: `palisade_run() -> i32`. The guest
//! then *pulls* its events, one timestamp at a time. Each call of
//! [`imports::NEXT_BARS`] hands over the bars of the next timestamp `T`,
//! every symbol's bar at `T` together (all of them are known at `T`'s close),
//! written into the guest's own memory as [`Bar`] records; the guest decides,
//! and asks for the next timestamp until it gets 0 bars. Before it hands `T`
//! over, the host has filled the orders due at `T`'s opens and marked the
//! positions at `T`'s closes, so every other call (orders, positions, cash,
//! equity, fills) is about "now", the timestamp last handed over, and takes
//! no time argument.
//!
//! **No look-ahead, by construction.** The guest never holds a bar stamped
//! later than the timestamp it is deciding at: the host writes nothing else
//! into its memory, whatever the policy. An order placed while deciding at
//! `T` fills on its symbol's first bar stamped after `T` (market orders at
//! that bar's open), for every symbol.
//!
//! ABI v1 (batches of bars and a bar index on every call, `palisade-sdk`
//! 0.1) let a guest read bars ahead of the one it handled; the runtime
//! refuses v1 modules, naming the SDK version to rebuild with.
#![no_std]

#[cfg(feature = "serde")]
extern crate alloc;

/// The ABI version this crate describes. A module declares the version it was
/// built for in its manifest (`"abi": 2`); the runtime refuses other versions.
pub const ABI_VERSION: u32 = 2;

/// The version of `palisade-sdk` that builds modules for [`ABI_VERSION`]
/// (named in the error a module built for another version gets).
pub const SDK_VERSION: &str = "0.2";

/// Module name of every host import.
pub const IMPORT_MODULE: &str = "palisade";

/// Name of the custom section holding the JSON manifest (see [`manifest`]).
pub const MANIFEST_SECTION: &str = "palisade.manifest";

/// A WebAssembly value type, as used in the signatures below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    I32,
    I64,
    F64,
}

/// The name and signature of one function of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncSig {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

use ValType::{F64, I32, I64};

/// Names of what a guest module exports.
pub mod exports {
    /// The guest's linear memory (memory index 0).
    pub const MEMORY: &str = "memory";
    /// The entry point: `() -> i32`, returning [`crate::status::OK`] or a
    /// guest-defined non-zero status.
    pub const RUN: &str = "palisade_run";
}

/// Signatures of the functions a guest must export.
pub const REQUIRED_EXPORTS: &[FuncSig] = &[FuncSig {
    name: exports::RUN,
    params: &[],
    results: &[I32],
}];

/// Names of the host imports, all in module [`IMPORT_MODULE`].
pub mod imports {
    /// `next_bars(buf: i32, cap: i32) -> i32`: write the bars of the next
    /// timestamp (one per symbol that has a bar at it, in symbol order) as
    /// [`crate::Bar`] records at `buf`; returns how many, or 0 once the data
    /// is exhausted (then the finish phase begins; asking again stops the
    /// run). `cap` is the buffer's size in bars: it must be at least
    /// [`SYMBOL_COUNT`]'s answer, and all of it must lie in the guest's
    /// memory. Before it returns, the host has filled the orders due at this
    /// timestamp's opens and marked positions at its closes.
    pub const NEXT_BARS: &str = "next_bars";
    /// `symbol_count() -> i32`: the number of symbols in the run's data (the
    /// most bars one timestamp can have).
    pub const SYMBOL_COUNT: &str = "symbol_count";
    /// `order(symbol: i32, qty: f64, kind: i32, price: f64) -> i64`: place
    /// an order at the current timestamp (`qty` > 0 buys, < 0 sells; `price`
    /// is the limit or stop price, ignored for market orders). Returns the
    /// order id (>= 1) or a negative [`crate::error`] code.
    pub const ORDER: &str = "order";
    /// `cancel(id: i64) -> i32`: cancel a pending order. Returns 0 or a
    /// negative error code.
    pub const CANCEL: &str = "cancel";
    /// `position(symbol: i32) -> f64`: signed quantity held now.
    pub const POSITION: &str = "position";
    /// `cash() -> f64`.
    pub const CASH: &str = "cash";
    /// `equity() -> f64`: cash plus positions marked at their last close.
    pub const EQUITY: &str = "equity";
    /// `poll_fill(out: i32) -> i32`: write the oldest undelivered
    /// [`crate::Fill`] at `out` and return 1, or return 0 when there is none.
    pub const POLL_FILL: &str = "poll_fill";
    /// `param(name_ptr: i32, name_len: i32) -> f64`: value of a declared
    /// parameter (booleans are 0 or 1). A name the manifest does not declare
    /// stops the run as `invalid_params`, naming it.
    pub const PARAM: &str = "param";
    /// `symbol_name(symbol: i32, out: i32, cap: i32) -> i32`: write the UTF-8
    /// name of a symbol id at `out` (at most `cap` bytes); returns its full
    /// length, or a negative error code.
    pub const SYMBOL_NAME: &str = "symbol_name";
    /// `log(level: i32, ptr: i32, len: i32)`: a UTF-8 log line (see [`crate::log_level`]).
    pub const LOG: &str = "log";
    /// `fail(kind: i32, ptr: i32, len: i32)`: stop the run with a UTF-8
    /// message (see [`crate::fail_kind`]). Never returns.
    pub const FAIL: &str = "fail";
    /// `random() -> f64`: the next value in `[0, 1)` of the run's seeded stream.
    pub const RANDOM: &str = "random";
    /// `metric(name_ptr: i32, name_len: i32, value: f64)`: record a named
    /// value in the result (the last value per name is kept).
    pub const METRIC: &str = "metric";
}

/// Signatures of every host import. A module may import any subset of these
/// and nothing else.
pub const IMPORTS: &[FuncSig] = &[
    FuncSig {
        name: imports::NEXT_BARS,
        params: &[I32, I32],
        results: &[I32],
    },
    FuncSig {
        name: imports::SYMBOL_COUNT,
        params: &[],
        results: &[I32],
    },
    FuncSig {
        name: imports::ORDER,
        params: &[I32, F64, I32, F64],
        results: &[I64],
    },
    FuncSig {
        name: imports::CANCEL,
        params: &[I64],
        results: &[I32],
    },
    FuncSig {
        name: imports::POSITION,
        params: &[I32],
        results: &[F64],
    },
    FuncSig {
        name: imports::CASH,
        params: &[],
        results: &[F64],
    },
    FuncSig {
        name: imports::EQUITY,
        params: &[],
        results: &[F64],
    },
    FuncSig {
        name: imports::POLL_FILL,
        params: &[I32],
        results: &[I32],
    },
    FuncSig {
        name: imports::PARAM,
        params: &[I32, I32],
        results: &[F64],
    },
    FuncSig {
        name: imports::SYMBOL_NAME,
        params: &[I32, I32, I32],
        results: &[I32],
    },
    FuncSig {
        name: imports::LOG,
        params: &[I32, I32, I32],
        results: &[],
    },
    FuncSig {
        name: imports::FAIL,
        params: &[I32, I32, I32],
        results: &[],
    },
    FuncSig {
        name: imports::RANDOM,
        params: &[],
        results: &[F64],
    },
    FuncSig {
        name: imports::METRIC,
        params: &[I32, I32, F64],
        results: &[],
    },
];

/// Looks up an import's signature by name.
pub fn import(name: &str) -> Option<&'static FuncSig> {
    IMPORTS.iter().find(|f| f.name == name)
}

/// The `random` stream: splitmix64 over the run's seed, mapped to `[0, 1)`
/// with 53 bits. Part of the contract, so a run's random choices are the same
/// on every host (and in the SDK's native test harness).
pub fn next_random(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Status a guest returns from `palisade_run`.
pub mod status {
    /// The run completed.
    pub const OK: i32 = 0;
}

/// Negative codes returned by host calls that can refuse a request. They are
/// answers, not traps: the guest decides what to do.
pub mod error {
    /// An argument is out of its domain (zero, NaN or infinite quantity, a
    /// missing or non-positive price for a limit or stop order, a bad kind).
    pub const BAD_ARGUMENT: i32 = -1;
    /// No such symbol id in this run's data.
    pub const UNKNOWN_SYMBOL: i32 = -2;
    /// No pending order with that id.
    pub const UNKNOWN_ORDER: i32 = -3;
    /// Orders need a timestamp: none may be placed in init or after the data
    /// ended.
    pub const NO_BAR: i32 = -4;
}

/// Order kinds for [`imports::ORDER`].
pub mod order_kind {
    /// Fill at the open of the symbol's first bar after the current timestamp.
    pub const MARKET: i32 = 0;
    /// Buy at or below / sell at or above `price`.
    pub const LIMIT: i32 = 1;
    /// Buy when the price trades at or above / sell at or below `price`.
    pub const STOP: i32 = 2;
}

/// Levels for [`imports::LOG`].
pub mod log_level {
    pub const ERROR: i32 = 0;
    pub const WARN: i32 = 1;
    pub const INFO: i32 = 2;
    pub const DEBUG: i32 = 3;
}

/// Kinds for [`imports::FAIL`].
pub mod fail_kind {
    /// The guest panicked; the message is the panic message.
    pub const PANIC: i32 = 0;
    /// The strategy refused its parameters (a constraint between them that
    /// declared ranges cannot express); the message says which.
    pub const INVALID_PARAMS: i32 = 1;
    /// Any other error the strategy reports.
    pub const ERROR: i32 = 2;
}

/// One bar as the host writes it into guest memory: 56 bytes, little-endian,
/// 8-byte aligned, fields in this order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bar {
    /// Unix time of the bar's open, in seconds.
    pub ts: i64,
    /// Symbol id: the index of the symbol in the run's data (see
    /// [`imports::SYMBOL_NAME`]).
    pub symbol: i32,
    /// Reserved, always 0.
    pub reserved: i32,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Bar {
    /// Size of the record in guest memory.
    pub const SIZE: usize = 56;

    /// The record's bytes as they are laid out in guest memory.
    pub fn to_le_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        self.write_le(&mut out);
        out
    }

    /// Writes the record, as laid out in guest memory, into `out` (the one
    /// definition of the layout; hosts write straight into guest memory).
    #[inline]
    pub fn write_le(&self, out: &mut [u8; Self::SIZE]) {
        out[0..8].copy_from_slice(&self.ts.to_le_bytes());
        out[8..12].copy_from_slice(&self.symbol.to_le_bytes());
        out[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        out[16..24].copy_from_slice(&self.open.to_le_bytes());
        out[24..32].copy_from_slice(&self.high.to_le_bytes());
        out[32..40].copy_from_slice(&self.low.to_le_bytes());
        out[40..48].copy_from_slice(&self.close.to_le_bytes());
        out[48..56].copy_from_slice(&self.volume.to_le_bytes());
    }

    /// Reads a record laid out as [`Bar::write_le`] writes it.
    pub fn from_le_bytes(bytes: &[u8; Self::SIZE]) -> Bar {
        let word = |at: usize| -> [u8; 8] { bytes[at..at + 8].try_into().expect("8 bytes") };
        let half = |at: usize| -> [u8; 4] { bytes[at..at + 4].try_into().expect("4 bytes") };
        Bar {
            ts: i64::from_le_bytes(word(0)),
            symbol: i32::from_le_bytes(half(8)),
            reserved: i32::from_le_bytes(half(12)),
            open: f64::from_le_bytes(word(16)),
            high: f64::from_le_bytes(word(24)),
            low: f64::from_le_bytes(word(32)),
            close: f64::from_le_bytes(word(40)),
            volume: f64::from_le_bytes(word(48)),
        }
    }
}

/// One fill as the host writes it for [`imports::POLL_FILL`]: 48 bytes,
/// little-endian, 8-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fill {
    /// The id [`imports::ORDER`] returned.
    pub order_id: i64,
    /// Timestamp of the bar the order filled on.
    pub ts: i64,
    pub symbol: i32,
    pub reserved: i32,
    /// Signed quantity filled.
    pub qty: f64,
    /// Fill price, slippage included.
    pub price: f64,
    /// Commission charged for this fill.
    pub commission: f64,
}

impl Fill {
    /// Size of the record in guest memory.
    pub const SIZE: usize = 48;

    /// The record's bytes as they are laid out in guest memory.
    pub fn to_le_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..8].copy_from_slice(&self.order_id.to_le_bytes());
        out[8..16].copy_from_slice(&self.ts.to_le_bytes());
        out[16..20].copy_from_slice(&self.symbol.to_le_bytes());
        out[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        out[24..32].copy_from_slice(&self.qty.to_le_bytes());
        out[32..40].copy_from_slice(&self.price.to_le_bytes());
        out[40..48].copy_from_slice(&self.commission.to_le_bytes());
        out
    }
}

const _: () = assert!(core::mem::size_of::<Bar>() == Bar::SIZE);
const _: () = assert!(core::mem::size_of::<Fill>() == Fill::SIZE);

/// The `palisade.manifest` custom section: a UTF-8 JSON object read by the host
/// at upload, without running guest code.
///
/// ```json
/// {
///   "abi": 2,
///   "name": "sma-cross",
///   "version": "0.1.0",
///   "description": "long-only moving-average crossover",
///   "warmup": "slow",
///   "params": [
///     {"name": "fast", "type": "int", "default": 10, "min": 2, "max": 200,
///      "description": "fast SMA length"}
///   ]
/// }
/// ```
///
/// - `abi` (required): must equal [`ABI_VERSION`].
/// - `name` (required): 1 to [`MAX_NAME_LEN`](manifest::MAX_NAME_LEN) characters of `[a-z0-9_-]`.
/// - `version` (required), `description` (optional): free text.
/// - `warmup` (optional): bars the strategy needs before it can act, either a
///   number or the name of an `int` parameter whose value it is.
/// - `params`: at most [`MAX_PARAMS`](manifest::MAX_PARAMS), names unique, of type `int`, `float` or
///   `bool`; `default` is required and must lie in `[min, max]` when they are
///   given; `int` values are whole numbers.
pub mod manifest {
    /// Longest strategy or parameter name.
    pub const MAX_NAME_LEN: usize = 64;
    /// Most parameters a strategy may declare.
    pub const MAX_PARAMS: usize = 64;
    /// Largest manifest section accepted, in bytes.
    pub const MAX_SECTION_BYTES: usize = 64 * 1024;

    #[cfg(feature = "serde")]
    pub use self::schema::*;

    #[cfg(feature = "serde")]
    mod schema {
        use alloc::string::String;
        use alloc::vec::Vec;
        use serde::{Deserialize, Serialize};

        /// The manifest as declared by the module.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Manifest {
            pub abi: u32,
            pub name: String,
            pub version: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub description: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub warmup: Option<Warmup>,
            #[serde(default)]
            pub params: Vec<ParamSpec>,
        }

        /// How many bars a strategy needs before it can act.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        pub enum Warmup {
            Bars(u64),
            Param(String),
        }

        /// Type of a parameter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum ParamType {
            Int,
            Float,
            Bool,
        }

        /// One declared parameter.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ParamSpec {
            pub name: String,
            #[serde(rename = "type")]
            pub ty: ParamType,
            pub default: ParamValue,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub min: Option<f64>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max: Option<f64>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub description: Option<String>,
        }

        /// A parameter value as written in JSON: a number or a boolean.
        #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        pub enum ParamValue {
            Bool(bool),
            Number(f64),
        }

        impl ParamValue {
            /// The value as the guest sees it through `param` (booleans are 0 or 1).
            pub fn as_f64(self) -> f64 {
                match self {
                    ParamValue::Bool(b) => f64::from(u8::from(b)),
                    ParamValue::Number(x) => x,
                }
            }
        }
    }
}
