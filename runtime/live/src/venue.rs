//! A simulated execution venue, for tests and demos: it receives intents as
//! the organisation's execution system would and answers with fills and
//! rejects, with configurable slippage, partial fills, latency, rejects and
//! drift injected at known intents.
//!
//! # Fill rules
//!
//! - An intent fills on the first bar of its symbol stamped after its
//!   `decided_ts` that reaches it, by the backtest's trigger rules
//!   ([`palisade_backtest::OrderKind::fill_price`]): market at the open;
//!   limit and stop when the bar trades through their price, at the open
//!   when it gaps through.
//! - The price is then moved adversely by `slippage_bps` plus the injected
//!   `price_bps` of every [`DriftInjection`] covering the intent: a buy pays
//!   `p × (1 + bps / 10⁴)`, a sell receives `p × (1 − bps / 10⁴)`. A limit
//!   fill is then capped at its limit, the worst price a limit accepts.
//! - `fill_ratio × qty` is filled, split into `partial_fills` equal fills at
//!   that price; when `fill_ratio < 1` an [`VenueReport::Unfilled`] report
//!   for the rest follows them.
//! - Each submitted intent draws one number from a splitmix64 stream seeded
//!   by `seed` ([`palisade_host_api::next_random`]); below `reject_rate` it is
//!   rejected. So one config and one sequence of calls always give the same
//!   reports.
//!
//! # Latency
//!
//! Latency is delivery time. A report produced at `now_ms` (the bar's receipt
//! for a fill, the submission for a reject) is stamped and delivered at
//! `now_ms + latency_ms + extra_latency_ms`: [`SimVenue::due`] hands over the
//! reports whose time has come, in time order, and [`SimVenue::next_due`]
//! says when the next one is, for a caller that sleeps until then. With no
//! latency, [`SimVenue::on_bar`] returns the bar's fills at once.
//!
//! What it does not do: read a clock, talk to a network, or keep a
//! portfolio; the caller feeds it bars and times and forwards its reports.

use std::collections::BTreeMap;

use palisade_backtest::OrderKind as BacktestOrderKind;
use palisade_host_api::{next_random, Bar};
use serde::{Deserialize, Serialize};

use crate::intent::{Intent, IntentError, LiveFill, Side};
use crate::settings::{self, ensure, ConfigError, Settings};

/// Largest accepted `slippage_bps` and injected `price_bps` (exclusive):
/// 10,000 bps is the whole price.
pub const MAX_BPS: f64 = 10_000.0;
/// Largest accepted `partial_fills`.
pub const MAX_PARTIAL_FILLS: u32 = 1_000;
/// Largest accepted latency, configured or injected: one day.
pub const MAX_LATENCY_MS: u64 = 86_400_000;

/// How the simulated venue behaves. Every key is optional; the defaults
/// fill every intent completely, at once, without slippage or rejects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VenueConfig {
    /// Adverse price move on every fill, in bps, in [0, 10000) (default 0).
    pub slippage_bps: f64,
    /// Share of each intent filled, in (0, 1] (default 1); the rest is
    /// reported unfilled.
    pub fill_ratio: f64,
    /// Fills per intent splitting the filled quantity, in 1..=1000 (default 1).
    pub partial_fills: u32,
    /// Delay of every report, in 0..=86400000 ms (default 0).
    pub latency_ms: u64,
    /// Probability that an intent is rejected, in [0, 1] (default 0).
    pub reject_rate: f64,
    /// Seed of the reject draws (default 0).
    pub seed: u64,
    /// Drift injected over ranges of intents (default none).
    pub drift: Vec<DriftInjection>,
}

impl Default for VenueConfig {
    fn default() -> Self {
        VenueConfig {
            slippage_bps: 0.0,
            fill_ratio: 1.0,
            partial_fills: 1,
            latency_ms: 0,
            reject_rate: 0.0,
            seed: 0,
            drift: Vec::new(),
        }
    }
}

/// Extra adverse price and delay from the `from_intent`-th submitted intent
/// (1-based) to `until_intent` (inclusive; absent = to the end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftInjection {
    /// First intent covered, ≥ 1.
    pub from_intent: u64,
    /// Last intent covered, ≥ `from_intent`; absent = every later intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_intent: Option<u64>,
    /// Extra adverse price move, in bps, in [0, 10000) (default 0).
    #[serde(default)]
    pub price_bps: f64,
    /// Extra delay of the intent's reports, in 0..=86400000 ms (default 0).
    #[serde(default)]
    pub extra_latency_ms: u64,
}

impl DriftInjection {
    fn covers(&self, n: u64) -> bool {
        n >= self.from_intent && self.until_intent.is_none_or(|until| n <= until)
    }
}

impl VenueConfig {
    /// Parses and checks a TOML config; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<VenueConfig, ConfigError> {
        settings::from_toml(text, origin)
    }

    /// Parses and checks a JSON config; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<VenueConfig, ConfigError> {
        settings::from_json(text, origin)
    }

    /// Checks every value's range, naming `origin` and the key in errors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let c = self;
        let bps = |x: f64| (0.0..MAX_BPS).contains(&x);
        ensure(
            bps(c.slippage_bps),
            origin,
            "slippage_bps",
            c.slippage_bps,
            "in [0, 10000)",
        )?;
        let ratio_ok = c.fill_ratio > 0.0 && c.fill_ratio <= 1.0;
        ensure(ratio_ok, origin, "fill_ratio", c.fill_ratio, "in (0, 1]")?;
        let parts_ok = (1..=MAX_PARTIAL_FILLS).contains(&c.partial_fills);
        ensure(parts_ok, origin, "partial_fills", c.partial_fills, "in 1..=1000")?;
        let latency_ok = c.latency_ms <= MAX_LATENCY_MS;
        ensure(latency_ok, origin, "latency_ms", c.latency_ms, "in 0..=86400000")?;
        let reject_ok = (0.0..=1.0).contains(&c.reject_rate);
        ensure(reject_ok, origin, "reject_rate", c.reject_rate, "in [0, 1]")?;
        for (i, d) in c.drift.iter().enumerate() {
            let key = |name: &str| format!("drift[{i}].{name}");
            ensure(
                d.from_intent >= 1,
                origin,
                key("from_intent"),
                d.from_intent,
                ">= 1",
            )?;
            if let Some(until) = d.until_intent {
                let ok = until >= d.from_intent;
                ensure(ok, origin, key("until_intent"), until, ">= from_intent")?;
            }
            ensure(
                bps(d.price_bps),
                origin,
                key("price_bps"),
                d.price_bps,
                "in [0, 10000)",
            )?;
            let ok = d.extra_latency_ms <= MAX_LATENCY_MS;
            ensure(
                ok,
                origin,
                key("extra_latency_ms"),
                d.extra_latency_ms,
                "in 0..=86400000",
            )?;
        }
        Ok(())
    }
}

impl Settings for VenueConfig {
    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate(origin)
    }
}

/// What the venue reports about an intent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VenueReport {
    /// A (partial) fill, stamped with its delivery time.
    Fill(LiveFill),
    /// The intent was refused; nothing of it fills.
    Reject { intent_id: String, reason: String },
    /// The intent is done and `qty` of it will never fill.
    Unfilled { intent_id: String, qty: f64 },
}

/// Why [`SimVenue::submit`] refused an intent.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VenueError {
    #[error("invalid intent: {0}")]
    Invalid(#[from] IntentError),
    #[error("intent {intent_id} is already waiting at the venue")]
    Duplicate { intent_id: String },
}

/// An intent waiting for a bar that reaches it.
#[derive(Clone, Debug)]
struct Waiting {
    intent: Intent,
    /// The intent's 1-based number among the submitted ones.
    n: u64,
    kind: BacktestOrderKind,
    /// Slippage plus injected drift.
    adverse_bps: f64,
    delay_ms: u64,
}

/// The simulated venue. See the module docs for its rules.
#[derive(Clone, Debug)]
pub struct SimVenue {
    config: VenueConfig,
    rng: u64,
    submitted: u64,
    waiting: Vec<Waiting>,
    /// Reports by (delivery time, production order).
    outbox: BTreeMap<(i64, u64), VenueReport>,
    produced: u64,
}

impl SimVenue {
    /// A venue with `config`, which the caller has validated.
    pub fn new(config: VenueConfig) -> SimVenue {
        SimVenue {
            rng: config.seed,
            config,
            submitted: 0,
            waiting: Vec::new(),
            outbox: BTreeMap::new(),
            produced: 0,
        }
    }

    /// Receives an intent at `now_ms`: draws whether it is rejected (the
    /// reject is delivered after the latency), else keeps it until a bar
    /// of its symbol reaches it.
    pub fn submit(&mut self, intent: &Intent, now_ms: i64) -> Result<(), VenueError> {
        intent.validate()?;
        if self.waiting.iter().any(|w| w.intent.id == intent.id) {
            return Err(VenueError::Duplicate {
                intent_id: intent.id.clone(),
            });
        }
        self.submitted += 1;
        let n = self.submitted;
        let (extra_bps, extra_ms) = self.injected(n);
        let delay_ms = self.config.latency_ms + extra_ms;
        if next_random(&mut self.rng) < self.config.reject_rate {
            let reason = format!(
                "rejected by the simulated venue (reject_rate {})",
                self.config.reject_rate
            );
            let report = VenueReport::Reject {
                intent_id: intent.id.clone(),
                reason,
            };
            self.schedule(deliver_at(now_ms, delay_ms), report);
            return Ok(());
        }
        self.waiting.push(Waiting {
            kind: intent.order_kind()?,
            intent: intent.clone(),
            n,
            adverse_bps: self.config.slippage_bps + extra_bps,
            delay_ms,
        });
        Ok(())
    }

    /// A bar of `symbol` received at `now_ms`: fills the waiting intents of
    /// that symbol it reaches, then returns every report due at `now_ms`.
    pub fn on_bar(&mut self, symbol: &str, bar: &Bar, now_ms: i64) -> Vec<VenueReport> {
        let mut still = Vec::with_capacity(self.waiting.len());
        for w in std::mem::take(&mut self.waiting) {
            let price = (w.intent.symbol == symbol && bar.ts > w.intent.decided_ts)
                .then(|| fill_price(&w, bar))
                .flatten();
            match price {
                Some(price) => self.fill(&w, price, now_ms),
                None => still.push(w),
            }
        }
        self.waiting = still;
        self.due(now_ms)
    }

    /// The reports delivered by `now_ms`, oldest first; each is handed over
    /// once.
    pub fn due(&mut self, now_ms: i64) -> Vec<VenueReport> {
        let later = self.outbox.split_off(&(now_ms.saturating_add(1), 0));
        std::mem::replace(&mut self.outbox, later).into_values().collect()
    }

    /// When the next report is delivered, if one is on its way.
    pub fn next_due(&self) -> Option<i64> {
        self.outbox.keys().next().map(|&(at, _)| at)
    }

    /// Intents waiting for a bar that reaches them.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Intents submitted so far, rejected ones included.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Extra bps and delay injected for the `n`-th intent: the sums over the
    /// injections covering it.
    fn injected(&self, n: u64) -> (f64, u64) {
        let covering = self.config.drift.iter().filter(|d| d.covers(n));
        covering.fold((0.0, 0), |(bps, ms), d| {
            (bps + d.price_bps, ms + d.extra_latency_ms)
        })
    }

    /// Schedules `w`'s fills at `price` and, when it is not filled
    /// completely, its unfilled report.
    fn fill(&mut self, w: &Waiting, price: f64, now_ms: i64) {
        let at = deliver_at(now_ms, w.delay_ms);
        let filled = w.intent.qty * self.config.fill_ratio;
        let parts = self.config.partial_fills;
        let part = filled / f64::from(parts);
        for k in 1..=parts {
            let qty = if k == parts {
                filled - part * f64::from(parts - 1)
            } else {
                part
            };
            let fill = LiveFill {
                intent_id: w.intent.id.clone(),
                qty,
                price,
                ts_ms: at,
                venue_fill_id: Some(format!("sim-{}-{k}", w.n)),
            };
            self.schedule(at, VenueReport::Fill(fill));
        }
        if self.config.fill_ratio < 1.0 {
            let report = VenueReport::Unfilled {
                intent_id: w.intent.id.clone(),
                qty: w.intent.qty - filled,
            };
            self.schedule(at, report);
        }
    }

    fn schedule(&mut self, at: i64, report: VenueReport) {
        self.produced += 1;
        self.outbox.insert((at, self.produced), report);
    }
}

fn deliver_at(now_ms: i64, delay_ms: u64) -> i64 {
    now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX))
}

/// The price `w` fills at on `bar`, or `None` when the bar does not reach it.
fn fill_price(w: &Waiting, bar: &Bar) -> Option<f64> {
    let side = w.intent.side;
    let base = w.kind.fill_price(side == Side::Buy, bar, 0.0)?;
    let moved = base * (1.0 + side.sign() * w.adverse_bps / 10_000.0);
    Some(match (w.kind, side) {
        (BacktestOrderKind::Limit(limit), Side::Buy) => moved.min(limit),
        (BacktestOrderKind::Limit(limit), Side::Sell) => moved.max(limit),
        _ => moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::tests::intent;
    use crate::intent::OrderKind;

    pub(crate) fn bar(ts: i64, [open, high, low, close]: [f64; 4]) -> Bar {
        Bar {
            ts,
            open,
            high,
            low,
            close,
            volume: 1.0,
            ..Bar::default()
        }
    }

    fn flat(ts: i64, price: f64) -> Bar {
        bar(ts, [price; 4])
    }

    fn fills(reports: &[VenueReport]) -> Vec<(String, f64, f64, i64)> {
        let fill = |r: &VenueReport| match r {
            VenueReport::Fill(f) => Some((f.intent_id.clone(), f.qty, f.price, f.ts_ms)),
            _ => None,
        };
        reports.iter().filter_map(fill).collect()
    }

    fn venue(config: VenueConfig) -> SimVenue {
        config.validate("test").unwrap();
        SimVenue::new(config)
    }

    /// The price one intent of `side`, `kind` at `price` fills at on the
    /// bar `next = (open, high, low, close)` with `slippage_bps`.
    fn check(
        slippage_bps: f64,
        side: Side,
        kind: OrderKind,
        price: Option<f64>,
        next: [f64; 4],
        want: Option<f64>,
    ) {
        let mut v = venue(VenueConfig {
            slippage_bps,
            ..VenueConfig::default()
        });
        let mut i = intent(1);
        (i.side, i.kind, i.price) = (side, kind, price);
        v.submit(&i, 0).unwrap();
        let got = fills(&v.on_bar("X", &bar(2, next), 5)).first().map(|f| f.2);
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        assert!(
            close(got, want),
            "{side:?} {kind:?} {price:?} on {next:?}: got {got:?}, want {want:?}"
        );
    }

    #[test]
    fn market_fills_at_the_open_moved_adversely() {
        let next = [100.0, 103.0, 96.0, 101.0];
        check(0.0, Side::Buy, OrderKind::Market, None, next, Some(100.0));
        check(25.0, Side::Buy, OrderKind::Market, None, next, Some(100.25));
        check(25.0, Side::Sell, OrderKind::Market, None, next, Some(99.75));
    }

    #[test]
    fn limit_and_stop_follow_the_backtest_triggers() {
        let next = [100.0, 103.0, 96.0, 101.0];
        let limit = |side, p, want| check(0.0, side, OrderKind::Limit, Some(p), next, want);
        limit(Side::Buy, 97.0, Some(97.0));
        limit(Side::Buy, 105.0, Some(100.0));
        limit(Side::Buy, 95.99, None);
        limit(Side::Sell, 102.0, Some(102.0));
        limit(Side::Sell, 90.0, Some(100.0));
        limit(Side::Sell, 103.01, None);
        let stop = |side, p, want| check(0.0, side, OrderKind::Stop, Some(p), next, want);
        stop(Side::Buy, 102.0, Some(102.0));
        stop(Side::Buy, 95.0, Some(100.0));
        stop(Side::Buy, 103.5, None);
        stop(Side::Sell, 97.0, Some(97.0));
        stop(Side::Sell, 110.0, Some(100.0));
        stop(Side::Sell, 95.5, None);
        // The adverse move: stops move like market orders, limits are capped
        // at their limit.
        check(
            100.0,
            Side::Buy,
            OrderKind::Stop,
            Some(102.0),
            next,
            Some(102.0 * 1.01),
        );
        check(100.0, Side::Sell, OrderKind::Stop, Some(110.0), next, Some(99.0));
        check(100.0, Side::Buy, OrderKind::Limit, Some(105.0), next, Some(101.0));
        check(100.0, Side::Buy, OrderKind::Limit, Some(100.5), next, Some(100.5));
        check(100.0, Side::Sell, OrderKind::Limit, Some(99.5), next, Some(99.5));
        check(100.0, Side::Sell, OrderKind::Limit, Some(97.0), next, Some(99.0));
    }

    #[test]
    fn fills_only_on_a_later_bar_of_its_symbol() {
        let mut v = venue(VenueConfig::default());
        v.submit(&intent(5), 0).unwrap(); // decided at ts 5
        assert!(v.on_bar("X", &flat(5, 100.0), 1).is_empty(), "same bar");
        assert!(v.on_bar("Y", &flat(6, 100.0), 2).is_empty(), "other symbol");
        assert_eq!(v.waiting(), 1);
        assert_eq!(
            fills(&v.on_bar("X", &flat(6, 101.0), 3)),
            [("d:5".into(), 10.0, 101.0, 3)]
        );
        assert_eq!(v.waiting(), 0);
        assert!(v.on_bar("X", &flat(7, 101.0), 4).is_empty(), "fills once");
    }

    #[test]
    fn latency_is_delivery_time() {
        let mut v = venue(VenueConfig {
            latency_ms: 250,
            ..VenueConfig::default()
        });
        v.submit(&intent(1), 0).unwrap();
        assert!(v.on_bar("X", &flat(2, 100.0), 1_000).is_empty());
        assert_eq!(v.next_due(), Some(1_250));
        assert!(v.due(1_249).is_empty(), "one ms early");
        assert_eq!(fills(&v.due(1_250)), [("d:1".into(), 10.0, 100.0, 1_250)]);
        assert!(v.due(5_000).is_empty(), "delivered once");
        assert_eq!(v.next_due(), None);
    }

    #[test]
    fn reject_rate_zero_and_one() {
        let run = |reject_rate| {
            let mut v = venue(VenueConfig {
                reject_rate,
                ..VenueConfig::default()
            });
            for n in 1..=50 {
                v.submit(&intent(n), 0).unwrap();
            }
            v.on_bar("X", &flat(100, 100.0), 1)
        };
        let none = run(0.0);
        assert_eq!(fills(&none).len(), 50);
        let all = run(1.0);
        assert_eq!(all.len(), 50);
        for (n, r) in (1..).zip(&all) {
            let want = VenueReport::Reject {
                intent_id: format!("d:{n}"),
                reason: "rejected by the simulated venue (reject_rate 1)".into(),
            };
            assert_eq!(r, &want);
        }
    }

    #[test]
    fn rejects_are_seeded() {
        let run = |seed| {
            let mut v = venue(VenueConfig {
                reject_rate: 0.5,
                seed,
                ..VenueConfig::default()
            });
            for n in 1..=64 {
                v.submit(&intent(n), 0).unwrap();
            }
            let reports = v.on_bar("X", &flat(100, 100.0), 1);
            let rejected = |r: &VenueReport| matches!(r, VenueReport::Reject { .. });
            reports.iter().map(rejected).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same rejects");
        assert_ne!(a, run(8), "another seed, other rejects");
        let count = a.iter().filter(|&&r| r).count();
        assert!((16..=48).contains(&count), "{count} of 64 rejected at rate 0.5");
    }

    #[test]
    fn fill_ratio_and_partial_fills() {
        let run = |fill_ratio, partial_fills| {
            let mut v = venue(VenueConfig {
                fill_ratio,
                partial_fills,
                ..VenueConfig::default()
            });
            v.submit(&intent(1), 0).unwrap();
            v.on_bar("X", &flat(2, 100.0), 1)
        };
        assert_eq!(
            run(1.0, 1),
            [VenueReport::Fill(LiveFill {
                intent_id: "d:1".into(),
                qty: 10.0,
                price: 100.0,
                ts_ms: 1,
                venue_fill_id: Some("sim-1-1".into()),
            })]
        );
        let half = run(0.5, 1);
        assert_eq!(fills(&half), [("d:1".into(), 5.0, 100.0, 1)]);
        assert_eq!(
            half[1],
            VenueReport::Unfilled {
                intent_id: "d:1".into(),
                qty: 5.0
            }
        );
        let thirds = run(1.0, 3);
        let qty: Vec<f64> = fills(&thirds).iter().map(|f| f.1).collect();
        assert_eq!(qty.len(), 3);
        assert!((qty.iter().sum::<f64>() - 10.0).abs() < 1e-12, "{qty:?}");
    }

    #[test]
    fn drift_is_injected_on_its_intents() {
        let mut v = venue(VenueConfig {
            slippage_bps: 10.0,
            drift: vec![DriftInjection {
                from_intent: 3,
                until_intent: Some(4),
                price_bps: 100.0,
                extra_latency_ms: 40,
            }],
            ..VenueConfig::default()
        });
        for n in 1..=5 {
            v.submit(&intent(n), 0).unwrap();
        }
        let mut reports = v.on_bar("X", &flat(10, 100.0), 0);
        reports.extend(v.due(100));
        let got = fills(&reports);
        let want: Vec<(String, f64, f64, i64)> = [
            (1, 100.1, 0),
            (2, 100.1, 0),
            (5, 100.1, 0),
            (3, 101.1, 40),
            (4, 101.1, 40),
        ]
        .into_iter()
        .map(|(n, p, t)| (format!("d:{n}"), 10.0, p, t))
        .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.0 == w.0 && (g.2 - w.2).abs() < 1e-9 && g.3 == w.3,
                "got {g:?}, want {w:?}"
            );
        }
    }

    #[test]
    fn duplicate_and_invalid_intents() {
        let mut v = venue(VenueConfig::default());
        v.submit(&intent(1), 0).unwrap();
        let dup = v.submit(&intent(1), 0).unwrap_err();
        assert_eq!(dup.to_string(), "intent d:1 is already waiting at the venue");
        let mut bad = intent(2);
        bad.qty = 0.0;
        let err = v.submit(&bad, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid intent: qty must be finite and > 0, got 0"
        );
        assert_eq!(v.submitted(), 1);
    }

    fn config_error(text: &str) -> String {
        match VenueConfig::from_toml_str(text, "venue.toml") {
            Ok(c) => panic!("accepted {text:?} as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn config_parsing_and_ranges() {
        let text = "slippage_bps = 5.0\nfill_ratio = 0.5\npartial_fills = 2\nlatency_ms = 30\nreject_rate = 0.1\nseed = 9\n\n[[drift]]\nfrom_intent = 10\nprice_bps = 100.0\n";
        let c = VenueConfig::from_toml_str(text, "venue.toml").unwrap();
        assert_eq!(
            (
                c.fill_ratio,
                c.partial_fills,
                c.drift[0].from_intent,
                c.drift[0].until_intent
            ),
            (0.5, 2, 10, None)
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(VenueConfig::from_json_str(&json, "venue.json").unwrap(), c);
        assert_eq!(
            VenueConfig::from_toml_str("", "venue.toml").unwrap(),
            VenueConfig::default()
        );
        let cases = [
            (
                "fill_ratio = 0.0",
                "venue.toml: fill_ratio = 0 is out of range (allowed in (0, 1])",
            ),
            (
                "fill_ratio = 1.0000001",
                "venue.toml: fill_ratio = 1.0000001 is out of range (allowed in (0, 1])",
            ),
            (
                "partial_fills = 0",
                "venue.toml: partial_fills = 0 is out of range (allowed in 1..=1000)",
            ),
            (
                "reject_rate = 1.5",
                "venue.toml: reject_rate = 1.5 is out of range (allowed in [0, 1])",
            ),
            (
                "slippage_bps = -1.0",
                "venue.toml: slippage_bps = -1 is out of range (allowed in [0, 10000))",
            ),
            (
                "latency_ms = 86400001",
                "venue.toml: latency_ms = 86400001 is out of range (allowed in 0..=86400000)",
            ),
            (
                "[[drift]]\nfrom_intent = 0",
                "venue.toml: drift[0].from_intent = 0 is out of range (allowed >= 1)",
            ),
            (
                "[[drift]]\nfrom_intent = 5\n[[drift]]\nfrom_intent = 5\nuntil_intent = 4",
                "venue.toml: drift[1].until_intent = 4 is out of range (allowed >= from_intent)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(config_error(text), want, "{text}");
        }
        assert!(config_error("slipage_bps = 1.0").contains("unknown field `slipage_bps`"));
        for ok in [
            "fill_ratio = 1.0",
            "reject_rate = 0.0",
            "reject_rate = 1.0",
            "partial_fills = 1000",
        ] {
            VenueConfig::from_toml_str(ok, "venue.toml").unwrap();
        }
    }
}
