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

/// Whether a URL's `authority` writes a port that did not read as one
/// (`parsed`, the URI parser's port): `h:99999`, `h:x` or `h:` parse as no
/// port at all, and would otherwise reach the scheme's default. The colons
/// of a bracketed IPv6 address are not a port.
pub fn port_unreadable(authority: &str, parsed: Option<u16>) -> bool {
    parsed.is_none() && authority.rsplit_once(':').is_some_and(|(_, p)| !p.ends_with(']'))
}

/// `host` without the brackets of a literal IPv6 address: what is
/// connected to, and the name its certificate is checked for.
pub fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}
