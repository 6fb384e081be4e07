//! Bearer tokens and tenants. A tokens file (TOML) maps each token to a
//! tenant and says whether it is an operator's:
//!
//! ```toml
//! [[token]]
//! token = "s3cret-alice"
//! tenant = "alice"
//! operator = false
//! ```
//!
//! A tenant sees and touches only its own strategies, datasets and jobs;
//! operators may also replace policies. Tokens are kept as SHA-256 digests
//! and compared by digest, so the lookup does not depend on how much of a
//! guessed token is right.
//!
//! Without a tokens file the service is single-user: every request is the
//! operator tenant [`LOCAL_TENANT`], and the server listens on loopback only.
//! This module decides who a request is; it does not know HTTP (the API turns
//! its answers into 401 and 403).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The tenant of every request when no token is configured.
pub const LOCAL_TENANT: &str = "local";

/// Who a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub operator: bool,
}

/// The configured tokens, or none (open, loopback-only service).
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

/// Why a request has no principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("unknown bearer token")]
    Unknown,
}

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("tokens file {}: entry {index}: {problem}", path.display())]
    Entry {
        path: PathBuf,
        /// 1-based position of the `[[token]]` entry.
        index: usize,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    token: String,
    tenant: String,
    #[serde(default)]
    operator: bool,
}

/// Shortest token accepted, so that a token cannot be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    /// Reads a tokens file. Each token must be at least [`MIN_TOKEN_CHARS`]
    /// characters and unique; tenant names are `[A-Za-z0-9_.-]{1,64}`.
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Tokens::from_toml(&text, path)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let file: File = toml::from_str(text).map_err(|e| TokensError::Parse {
            path: path.to_owned(),
            message: e.message().trim_end().to_owned(),
        })?;
        let mut by_digest = HashMap::new();
        for (i, e) in file.token.into_iter().enumerate() {
            let entry_error = |problem: String| TokensError::Entry {
                path: path.to_owned(),
                index: i + 1,
                problem,
            };
            if e.token.chars().count() < MIN_TOKEN_CHARS {
                return Err(entry_error(format!(
                    "token of tenant {} is shorter than {MIN_TOKEN_CHARS} characters",
                    e.tenant
                )));
            }
            if !valid_tenant(&e.tenant) {
                return Err(entry_error(format!(
                    "tenant {:?} is not [A-Za-z0-9_.-]{{1,64}}",
                    e.tenant
                )));
            }
            let principal = Principal {
                tenant: e.tenant,
                operator: e.operator,
            };
            if by_digest.insert(digest(&e.token), principal).is_some() {
                return Err(entry_error("the same token is given twice".to_owned()));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// True when no token is configured (single-user service).
    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Who presents `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal {
                tenant: LOCAL_TENANT.to_owned(),
                operator: true,
            });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.by_digest
            .get(&digest(token))
            .cloned()
            .ok_or(AuthError::Unknown)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_tenant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
token = "alice-token-0123456789"
tenant = "alice"

[[token]]
token = "ops-token-0123456789ab"
tenant = "ops"
operator = true
"#;

    fn tokens() -> Tokens {
        Tokens::from_toml(FILE, Path::new("tokens.toml")).unwrap()
    }

    #[test]
    fn tokens_map_to_tenants() {
        let t = tokens();
        let check = |header: Option<&str>, expected: Result<(&str, bool), AuthError>| {
            let got = t.authenticate(header).map(|p| (p.tenant, p.operator));
            let expected = expected.map(|(n, o)| (n.to_owned(), o));
            assert_eq!(got, expected, "{header:?}");
        };
        check(Some("Bearer alice-token-0123456789"), Ok(("alice", false)));
        check(Some("Bearer ops-token-0123456789ab"), Ok(("ops", true)));
        check(None, Err(AuthError::Missing));
        check(Some("Basic YWxpY2U6"), Err(AuthError::Missing));
        check(Some("Bearer "), Err(AuthError::Missing));
        check(Some("Bearer alice-token-012345678"), Err(AuthError::Unknown));
        check(Some("Bearer ALICE-TOKEN-0123456789"), Err(AuthError::Unknown));
    }

    #[test]
    fn without_tokens_everyone_is_the_local_operator() {
        let t = Tokens::default();
        assert!(t.is_open());
        let p = t.authenticate(None).unwrap();
        assert_eq!((p.tenant.as_str(), p.operator), (LOCAL_TENANT, true));
    }

    #[test]
    fn bad_files_are_refused_with_the_entry() {
        let check = |text: &str, fragment: &str| {
            let message = Tokens::from_toml(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(message.contains(fragment), "`{message}` lacks `{fragment}`");
        };
        check(
            "[[token]]\ntoken = \"short\"\ntenant = \"a\"\n",
            "entry 1: token of tenant a is shorter",
        );
        check(
            "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a b\"\n",
            "tenant \"a b\" is not",
        );
        check(
            "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\n[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"b\"\n",
            "entry 2: the same token is given twice",
        );
        check(
            "[[token]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nadmin = true\n",
            "unknown field `admin`",
        );
    }
}
