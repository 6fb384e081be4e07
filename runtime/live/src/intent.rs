//! Order intents and live fills: what a deployment publishes to the
//! organisation's execution system, and what that system reports back.
//!
//! An [`Intent`] is one strategy order as it leaves Palisade, already
//! scaled by the gate's size factor; a [`LiveFill`] is one (partial) fill of
//! it at a real venue. Both are plain serde data whose JSON form is the
//! documented wire schema (`docs/live.md`). Their `validate` methods check
//! one value on its own; whether a fill belongs to a known intent and stays
//! within its quantity is the drift tracker's business
//! ([`crate::DriftTracker::on_live_fill`]), which knows the intents.
//!
//! What it does not do: publish, route or persist anything.

use palisade_backtest::{OrderKind as BacktestOrderKind, OrderKindName};
use serde::{Deserialize, Serialize};

/// What an intent asks for: `market`, `limit` or `stop` (the names the
/// backtest report uses).
pub type OrderKind = OrderKindName;

/// The direction of an order; quantities travel unsigned beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The side of a signed strategy quantity (`qty > 0` buys).
    pub fn of_qty(qty: f64) -> Side {
        if qty > 0.0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// +1 for a buy, −1 for a sell: signs a quantity, and makes a higher
    /// price adverse for a buy and a lower one adverse for a sell.
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// One strategy order as published to the execution system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// `"{deployment}:{order_id}"` ([`Intent::id_for`]), unique per deployment.
    pub id: String,
    pub deployment: String,
    /// The strategy's order id (the id the guest's `order` call returned).
    pub order_id: u64,
    /// Timestamp of the bar the strategy decided at, unix seconds: the order
    /// may fill only on a later bar of its symbol.
    pub decided_ts: i64,
    pub symbol: String,
    pub side: Side,
    /// Quantity to trade, unsigned, after the gate's size factor.
    pub qty: f64,
    /// Quantity the strategy asked for, unsigned (`qty` ≤ `intended_qty`).
    pub intended_qty: f64,
    pub kind: OrderKind,
    /// Limit or stop price; absent for a market order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// When the intent was published, unix milliseconds.
    pub published_ms: i64,
}

/// One (partial) fill of an intent, as the execution system reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveFill {
    /// The [`Intent::id`] this fill belongs to.
    pub intent_id: String,
    /// Quantity of this fill, unsigned (the side is the intent's).
    pub qty: f64,
    pub price: f64,
    /// When the venue filled it, unix milliseconds.
    pub ts_ms: i64,
    /// The venue's own id of the fill, when it has one; a repeated id is
    /// refused as a duplicate report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_fill_id: Option<String>,
}

/// Why an intent or a fill is malformed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IntentError {
    #[error("{field} must be finite and > 0, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("id must be `{expected}` (deployment:order_id), got `{id}`")]
    BadId { id: String, expected: String },
    #[error("qty {qty} is above intended_qty {intended_qty}")]
    AboveIntended { qty: f64, intended_qty: f64 },
    #[error("a {} intent needs a price", kind_name(*kind))]
    MissingPrice { kind: OrderKind },
    #[error("a market intent has no price, got {price}")]
    UnexpectedPrice { price: f64 },
    #[error("ts_ms {ts_ms} is not a time between 2000 and 2100 in unix milliseconds")]
    BadTime { ts_ms: i64 },
    #[error("{field} is {len} bytes long; at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// Fill times accepted: 2000-01-01 to 2100-01-01, unix ms.
pub const FILL_TIMES_MS: std::ops::Range<i64> = 946_684_800_000..4_102_444_800_000;
/// The longest `intent_id` or `venue_fill_id`.
pub const MAX_FILL_ID: usize = 256;

impl Intent {
    /// The id of order `order_id` of `deployment`.
    pub fn id_for(deployment: &str, order_id: u64) -> String {
        format!("{deployment}:{order_id}")
    }

    /// Checks the intent on its own: names, id, quantities and price.
    pub fn validate(&self) -> Result<(), IntentError> {
        non_empty("deployment", &self.deployment)?;
        non_empty("symbol", &self.symbol)?;
        let expected = Intent::id_for(&self.deployment, self.order_id);
        if self.id != expected {
            return Err(IntentError::BadId {
                id: self.id.clone(),
                expected,
            });
        }
        positive("qty", self.qty)?;
        positive("intended_qty", self.intended_qty)?;
        if self.qty > self.intended_qty {
            return Err(IntentError::AboveIntended {
                qty: self.qty,
                intended_qty: self.intended_qty,
            });
        }
        self.order_kind().map(|_| ())
    }

    /// The backtest's order kind with its price, which the fill model's
    /// trigger rules take.
    pub fn order_kind(&self) -> Result<BacktestOrderKind, IntentError> {
        match (self.kind, self.price) {
            (OrderKind::Market, None) => Ok(BacktestOrderKind::Market),
            (OrderKind::Market, Some(price)) => Err(IntentError::UnexpectedPrice { price }),
            (kind, None) => Err(IntentError::MissingPrice { kind }),
            (OrderKind::Limit, Some(p)) => positive("price", p).map(|()| BacktestOrderKind::Limit(p)),
            (OrderKind::Stop, Some(p)) => positive("price", p).map(|()| BacktestOrderKind::Stop(p)),
        }
    }
}

impl LiveFill {
    /// Checks the fill on its own: a named intent, a quantity and a price
    /// that are finite and > 0. Whether the quantity fits what remains of
    /// the intent is checked by the caller, who knows the intent.
    pub fn validate(&self) -> Result<(), IntentError> {
        non_empty("intent_id", &self.intent_id)?;
        positive("qty", self.qty)?;
        positive("price", self.price)?;
        for (field, id) in [
            ("intent_id", Some(&self.intent_id)),
            ("venue_fill_id", self.venue_fill_id.as_ref()),
        ] {
            if let Some(id) = id.filter(|id| id.len() > MAX_FILL_ID) {
                return Err(IntentError::TooLong {
                    field,
                    len: id.len(),
                    max: MAX_FILL_ID,
                });
            }
        }
        match &self.venue_fill_id {
            Some(id) => non_empty("venue_fill_id", id),
            None => Ok(()),
        }
    }
}

impl LiveFill {
    /// [`LiveFill::validate`] for a fill reported from outside: also a time
    /// between 2000 and 2100 ([`FILL_TIMES_MS`]).
    pub fn validate_reported(&self) -> Result<(), IntentError> {
        self.validate()?;
        if FILL_TIMES_MS.contains(&self.ts_ms) {
            Ok(())
        } else {
            Err(IntentError::BadTime { ts_ms: self.ts_ms })
        }
    }
}

/// The kind's name on the wire.
pub(crate) fn kind_name(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Market => "market",
        OrderKind::Limit => "limit",
        OrderKind::Stop => "stop",
    }
}

fn positive(field: &'static str, value: f64) -> Result<(), IntentError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(IntentError::NotPositive { field, value })
    }
}

fn non_empty(field: &'static str, value: &str) -> Result<(), IntentError> {
    if value.is_empty() {
        Err(IntentError::Empty { field })
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid market buy of 10 (`intended_qty` 10) of `X`, order `n` of
    /// deployment `d`, decided at bar `n` and published at `n` seconds.
    pub(crate) fn intent(n: u64) -> Intent {
        Intent {
            id: Intent::id_for("d", n),
            deployment: "d".into(),
            order_id: n,
            decided_ts: n as i64,
            symbol: "X".into(),
            side: Side::Buy,
            qty: 10.0,
            intended_qty: 10.0,
            kind: OrderKind::Market,
            price: None,
            published_ms: n as i64 * 1000,
        }
    }

    pub(crate) fn fill(intent_id: &str, qty: f64, price: f64, ts_ms: i64) -> LiveFill {
        LiveFill {
            intent_id: intent_id.into(),
            qty,
            price,
            ts_ms,
            venue_fill_id: None,
        }
    }

    fn check_intent(change: impl FnOnce(&mut Intent), expected: Result<(), &str>) {
        let mut i = intent(7);
        change(&mut i);
        let got = i.validate().map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(String::from), "intent {i:?}");
    }

    #[test]
    fn intent_validation() {
        check_intent(|_| {}, Ok(()));
        check_intent(|i| i.qty = 0.0, Err("qty must be finite and > 0, got 0"));
        check_intent(|i| i.qty = f64::NAN, Err("qty must be finite and > 0, got NaN"));
        check_intent(
            |i| i.intended_qty = -1.0,
            Err("intended_qty must be finite and > 0, got -1"),
        );
        check_intent(|i| i.qty = 10.5, Err("qty 10.5 is above intended_qty 10"));
        check_intent(|i| i.qty = 2.5, Ok(()));
        check_intent(
            |i| i.id = "d:8".into(),
            Err("id must be `d:7` (deployment:order_id), got `d:8`"),
        );
        check_intent(|i| i.symbol.clear(), Err("symbol must not be empty"));
        check_intent(
            |i| i.price = Some(5.0),
            Err("a market intent has no price, got 5"),
        );
        check_intent(|i| i.kind = OrderKind::Limit, Err("a limit intent needs a price"));
        check_intent(
            |i| (i.kind, i.price) = (OrderKind::Stop, Some(f64::INFINITY)),
            Err("price must be finite and > 0, got inf"),
        );
        check_intent(|i| (i.kind, i.price) = (OrderKind::Stop, Some(99.5)), Ok(()));
    }

    #[test]
    fn fill_validation() {
        let check = |f: LiveFill, expected: Result<(), &str>| {
            let got = f.validate().map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(String::from), "fill {f:?}");
        };
        check(fill("d:1", 1.0, 100.0, 0), Ok(()));
        check(
            fill("d:1", 0.0, 100.0, 0),
            Err("qty must be finite and > 0, got 0"),
        );
        check(
            fill("d:1", 1.0, -3.0, 0),
            Err("price must be finite and > 0, got -3"),
        );
        check(
            fill("d:1", 1.0, f64::NAN, 0),
            Err("price must be finite and > 0, got NaN"),
        );
        check(fill("", 1.0, 1.0, 0), Err("intent_id must not be empty"));
        let mut f = fill("d:1", 1.0, 1.0, 0);
        f.venue_fill_id = Some(String::new());
        check(f, Err("venue_fill_id must not be empty"));
    }

    #[test]
    fn wire_form() {
        let mut i = intent(3);
        (i.kind, i.price, i.side) = (OrderKind::Limit, Some(99.5), Side::Sell);
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "d:3", "deployment": "d", "order_id": 3, "decided_ts": 3,
                "symbol": "X", "side": "sell", "qty": 10.0, "intended_qty": 10.0,
                "kind": "limit", "price": 99.5, "published_ms": 3000
            })
        );
        assert_eq!(serde_json::from_value::<Intent>(json).unwrap(), i);
        let f: LiveFill =
            serde_json::from_str(r#"{"intent_id":"d:3","qty":4,"price":99.5,"ts_ms":5}"#).unwrap();
        assert_eq!(f, fill("d:3", 4.0, 99.5, 5));
        let unknown =
            serde_json::from_str::<LiveFill>(r#"{"intent_id":"d:3","qty":4,"price":1,"ts_ms":5,"x":1}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field `x`"));
    }
}
