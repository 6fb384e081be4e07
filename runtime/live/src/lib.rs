//! `palisade-live`, live paper trading's parts that need no WebAssembly:
//! what a feed sends and how its bars are checked before a strategy sees
//! them, the durable bar log a deployment replays after a crash, the
//! simulated execution venue, drift measures and the gate's state machine
//! with its audit log.
//!
//! What it must not touch: wasmtime (the sandbox runs the strategy; the
//! service's deployment runner joins the two), HTTP routes and the service's
//! storage, the terminal.

pub mod audit;
pub mod barlog;
pub mod drift;
pub mod gate;
pub mod intent;
pub mod schema;
pub mod sequencer;
mod settings;
pub mod tls;
pub mod venue;
pub mod webhook;
pub mod ws;

pub use audit::{AuditEntry, AuditError, AuditLog, TornTail};
pub use drift::{DriftError, DriftKind, DriftPolicy, DriftScores, DriftSnapshot, DriftTracker};
pub use gate::{Command, Gate, GateError, GatePolicy, GateState, Transition};
pub use intent::{Intent, IntentError, LiveFill, OrderKind, Side};
pub use settings::ConfigError;
pub use venue::{DriftInjection, SimVenue, VenueConfig, VenueError, VenueReport};
