//! `palisade-deployment`, live deployments: a strategy's instance fed a
//! live bar feed ([`runner`]), its decisions turned into order intents behind
//! the gate, paper fills compared with live fills for drift, and recovery by
//! replaying the stored bars; the signal check ([`verify`]) replays them
//! offline and compares the orders bit for bit. [`spec`] is what a
//! deployment is, [`metrics`] what it reports.
//!
//! What it must not touch: HTTP and the service's storage (the service
//! keeps the list of deployments and serves the API over [`runner::Handle`]),
//! the terminal. The wasm-free parts (feeds, the bar log, the venue, drift,
//! the gate, the audit log) are `palisade-live`'s; wasmtime is the sandbox's.

pub mod feed;
pub mod journal;
pub mod lease;
pub mod metrics;
pub mod runner;
pub mod spec;
pub mod verify;

pub use lease::Lease;
pub use metrics::LiveMetrics;
pub use runner::{start, CommandError, FeedSource, FillError, Handle, Launch, Lifecycle, StartError, Status};
pub use spec::{DeploymentSpec, FeedSpec, SpecError};
pub use verify::SignalCheck;
