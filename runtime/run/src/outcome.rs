//! How a run ended: `ok`, or one classified cause with a message.
//!
//! Guest misbehaviour is data, not a crash: every way a guest can fail maps to
//! exactly one [`Cause`], whose snake_case name is stable (it appears in JSON,
//! metrics and alerts).

use serde::Serialize;

/// Why a run did not complete.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Cause {
    /// The guest used all the fuel its policy grants (per event or per run).
    FuelExhausted,
    /// The guest tried to grow its memory (or tables) past the policy's limit.
    MemoryLimit,
    /// A wall-clock deadline passed (per event or per run).
    Deadline,
    /// The guest's call stack went past the policy's stack size.
    StackOverflow,
    /// The guest panicked; the message is its panic message.
    GuestPanic,
    /// The guest stopped itself with an error, or returned a non-zero status.
    GuestError,
    /// The guest trapped on its own (unreachable, out-of-bounds access,
    /// integer division by zero).
    GuestTrap,
    /// The strategy refused its parameters.
    InvalidParams,
    /// The module is not acceptable (not wasm, wrong ABI, bad manifest,
    /// missing exports, over a declared-size limit).
    InvalidModule,
    /// The module imports something the policy does not grant.
    ForbiddenImport,
    /// The guest passed a pointer outside its memory to a host call.
    BadPointer,
    /// The guest produced more output than allowed (orders per event, log
    /// bytes, metrics, result size).
    OutputLimit,
    /// The guest broke the ABI's protocol (e.g. asked about an earlier bar).
    HostAbuse,
    /// The run was cancelled from outside.
    Cancelled,
}

impl Cause {
    /// Every cause, for metrics and documentation.
    pub const ALL: &'static [Cause] = <Cause as strum::VariantArray>::VARIANTS;

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A classified failure: the cause and a message naming what happened.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{cause}: {message}")]
pub struct Failure {
    pub cause: Cause,
    pub message: String,
}

impl Failure {
    pub fn new(cause: Cause, message: impl Into<String>) -> Failure {
        Failure {
            cause,
            message: message.into(),
        }
    }
}
