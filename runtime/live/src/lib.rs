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

/// Most characters of a client's value that an error echoes.
pub const ECHO_CHARS: usize = 200;

/// `text` cut to its first [`ECHO_CHARS`] characters (marked with `…`):
/// what an error echoes of a value a client sent (a URL, a host), so a
/// 100 KB value does not come back 100 KB long.
pub fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}
