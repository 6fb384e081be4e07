//! `palisade-run`, the vocabulary every way of running a strategy shares:
//! limit policies ([`policy`]), parameters ([`params`]), how a run ended
//! ([`outcome`]), what a run needs ([`config`]) and what it produced
//! ([`output`]), the ABI's semantics without WebAssembly ([`session`]), and
//! what a live run waits on ([`live`]).
//! The sandbox (`palisade-sandbox`) and the native runner ([`native`]) are
//! both adapters over [`session::Session`], so a strategy built for wasm and
//! the same strategy built natively see the same host.
//!
//! What it must not touch: wasmtime, threads and executors, files other than
//! policy files, the terminal and HTTP. It sits below the sandbox, the
//! studies, the documents and the service, and depends on none of them.

pub mod config;
pub mod live;
pub mod native;
pub mod outcome;
pub mod output;
pub mod params;
pub mod policy;
pub mod session;

pub use config::{ProgressFn, RunConfig};
pub use outcome::{Cause, Failure};
pub use output::{LogLine, RefusedOrders, RunOutput, Usage};
pub use policy::{Policy, PolicyError};
