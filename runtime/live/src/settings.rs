//! What the live crate's configurations share: reading them from TOML or
//! JSON text and the one error type that names the text, the key and the
//! allowed range.
//!
//! Each configuration ([`crate::VenueConfig`], [`crate::DriftPolicy`],
//! [`crate::GatePolicy`]) is plain serde data with `deny_unknown_fields` and
//! its defaults written next to it; this module only parses and then calls
//! the type's own range checks. It reads no files: callers pass the text and
//! a name for it (normally the file name).

use std::fmt::Display;

use serde::de::DeserializeOwned;

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Malformed text, an unknown key or a value of the wrong type; the
    /// message is the parser's, which gives the position.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value outside its allowed range.
    #[error("{origin}: {key} = {value} is out of range (allowed {expected})")]
    OutOfRange {
        origin: String,
        /// The key as written in the file, e.g. `drift[1].until_intent`.
        key: String,
        value: String,
        /// The allowed range in words, e.g. "in (0, 1]".
        expected: &'static str,
    },
}

/// A configuration that can check its own ranges.
pub(crate) trait Settings: DeserializeOwned {
    /// Checks every value, naming `origin` in the error.
    fn check(&self, origin: &str) -> Result<(), ConfigError>;
}

/// Parses TOML text into `T` and checks it.
pub(crate) fn from_toml<T: Settings>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let value: T = toml::from_str(text).map_err(|err| ConfigError::Parse {
        origin: origin.to_owned(),
        message: err.to_string().trim_end().replace('\n', "; "),
    })?;
    value.check(origin)?;
    Ok(value)
}

/// Parses JSON text into `T` and checks it.
pub(crate) fn from_json<T: Settings>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let value: T = serde_json::from_str(text).map_err(|err| ConfigError::Parse {
        origin: origin.to_owned(),
        message: err.to_string(),
    })?;
    value.check(origin)?;
    Ok(value)
}

/// `Ok` when `ok`, else the out-of-range error for `key`.
pub(crate) fn ensure(
    ok: bool,
    origin: &str,
    key: impl Into<String>,
    value: impl Display,
    expected: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        origin: origin.to_owned(),
        key: key.into(),
        value: value.to_string(),
        expected,
    })
}

/// Finite and > 0.
pub(crate) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
