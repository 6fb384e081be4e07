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

/// Most symbols one deployment trades.
pub const MAX_SYMBOLS: usize = 1_000;

/// Longest symbol name, in bytes.
pub const MAX_SYMBOL_LEN: usize = 64;

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
        if self.symbols.len() > MAX_SYMBOLS {
            return Err(bad(
                "symbols",
                format!("{} symbols; at most {MAX_SYMBOLS}", self.symbols.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for symbol in &self.symbols {
            if symbol.is_empty() || symbol.len() > MAX_SYMBOL_LEN || symbol.chars().any(char::is_control) {
                let shown: String = symbol.chars().take(MAX_SYMBOL_LEN).collect();
                return Err(bad(
                    "symbols",
                    format!("{shown:?}: a symbol is 1 to {MAX_SYMBOL_LEN} bytes, no control characters"),
                ));
            }
            if !seen.insert(symbol) {
                return Err(bad("symbols", format!("`{symbol}` is named twice")));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(symbols: serde_json::Value) -> DeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "id": "d", "tenant": "t", "symbols": symbols, "feed": {"url": "ws://127.0.0.1:9/"},
            "params": [], "seed": 0
        }))
        .expect("a spec")
    }

    #[test]
    fn symbols_are_named_once_each_within_bounds() {
        spec(serde_json::json!(["SPY", "QQQ"])).validate().unwrap();
        let many: Vec<String> = (0..=MAX_SYMBOLS).map(|i| format!("S{i}")).collect();
        let all_but_one = serde_json::json!(many[..MAX_SYMBOLS]);
        spec(all_but_one).validate().unwrap();
        for (symbols, problem) in [
            (serde_json::json!([]), "at least one"),
            (serde_json::json!(many), "1001 symbols; at most 1000"),
            (serde_json::json!(["SPY", "SPY"]), "`SPY` is named twice"),
            (serde_json::json!([""]), "1 to 64 bytes"),
            (serde_json::json!(["A\nB"]), "no control characters"),
            (serde_json::json!(["x".repeat(65)]), "1 to 64 bytes"),
        ] {
            let error = spec(symbols).validate().unwrap_err().to_string();
            assert!(error.contains("symbols") && error.contains(problem), "{error}");
        }
        spec(serde_json::json!(["x".repeat(64)])).validate().unwrap();
    }

    #[test]
    fn a_long_feed_url_is_not_echoed_whole() {
        let mut s = spec(serde_json::json!(["SPY"]));
        s.feed.url = format!("http://h/{}", "a".repeat(100_000));
        let error = s.validate().unwrap_err().to_string();
        assert!(error.len() < 400 && error.contains("feed.url"), "{}", error.len());
    }
}
