//! What a deployment is: its strategy's settings, its feed, its policies.
//! Written once as `spec.json` in the deployment's folder, and read back to
//! recover it.

use palisade_backtest::BacktestConfig;
use palisade_live::barlog::Durability;
use palisade_live::schema::Format;
use palisade_live::webhook::WebhookSpec;
use palisade_live::{DriftPolicy, GatePolicy, VenueConfig};
use serde::{Deserialize, Serialize};

/// A deployment's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// `[A-Za-z0-9_-]`, 1 to 64 characters; intents are named after it.
    pub id: String,
    pub tenant: String,
    /// The symbols the strategy trades, in the order of their ids.
    pub symbols: Vec<String>,
    /// The bar interval, for gap detection and feed lag; `None` when the
    /// feed's bars are irregular.
    pub interval_secs: Option<i64>,
    pub feed: FeedSpec,
    /// Resolved parameter values.
    pub params: Vec<(String, f64)>,
    pub seed: u64,
    #[serde(default)]
    pub backtest: BacktestConfig,
    #[serde(default)]
    pub drift: DriftPolicy,
    #[serde(default)]
    pub gate: GatePolicy,
    #[serde(default)]
    pub durability: Durability,
    /// A simulated execution venue run in-process (tests and demos); `None`
    /// when the organisation's execution system reports fills through the
    /// API.
    #[serde(default)]
    pub venue: Option<VenueConfig>,
    /// Where published intents are POSTed, besides the intents journal the
    /// API serves.
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    /// Bars between two signal checks (an offline replay of the stored bars
    /// compared with the live orders, bit for bit); 0 checks only on demand.
    #[serde(default = "default_verify_every")]
    pub verify_every: u64,
}

fn default_verify_every() -> u64 {
    1_440
}

/// Where a deployment's bars come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSpec {
    /// `ws://…`, or `wss://…` over TLS.
    pub url: String,
    #[serde(default = "default_format")]
    pub format: Format,
}

fn default_format() -> Format {
    Format::Palisade
}

/// A setting a deployment cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SpecError {
    pub key: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> SpecError {
    SpecError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The longest deployment id.
pub const MAX_ID_LEN: usize = 64;

impl DeploymentSpec {
    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_id(&self.id)?;
        if self.tenant.is_empty() {
            return Err(bad("tenant", "must not be empty"));
        }
        if self.symbols.is_empty() {
            return Err(bad("symbols", "name at least one symbol"));
        }
        if let Some(i) = self.interval_secs.filter(|&i| i <= 0) {
            return Err(bad("interval_secs", format!("{i} is not > 0")));
        }
        palisade_live::ws::check_url(&self.feed.url).map_err(|e| bad("feed.url", e.to_string()))?;
        self.backtest
            .validate()
            .map_err(|e| bad("backtest", e.to_string()))?;
        self.drift
            .validate("drift")
            .map_err(|e| bad("drift", e.to_string()))?;
        self.gate
            .validate("gate")
            .map_err(|e| bad("gate", e.to_string()))?;
        if let Some(hook) = &self.webhook {
            hook.validate().map_err(|e| bad("webhook", e))?;
        }
        if let Some(venue) = &self.venue {
            venue.validate("venue").map_err(|e| bad("venue", e.to_string()))?;
        }
        Ok(())
    }
}

impl DeploymentSpec {
    /// The run settings of the deployment's strategy (live, and replayed
    /// offline by the signal check).
    pub fn run_config(&self) -> palisade_run::RunConfig {
        palisade_run::RunConfig {
            params: self.params.clone(),
            seed: self.seed,
            backtest: self.backtest.clone(),
            cancel: None,
            progress: None,
        }
    }
}

/// Checks a deployment id: it names files and metric labels.
pub fn check_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            "id",
            format!("`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, _ and -"),
        ))
    }
}
