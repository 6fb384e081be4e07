//! Drift measures: how far a deployment's live fills have moved from its
//! paper fills, per kind, and one combined score the gate acts on.
//!
//! # Definitions
//!
//! Every measure is over the deployment's published intents since the
//! tracker last (re)started ([`DriftTracker::restart`]); `side` is +1 for a
//! buy and −1 for a sell.
//!
//! - **Price drift**, per *matched fill* (a live fill whose intent has a
//!   paper fill): `bps = side × (live_price − paper_price) / paper_price ×
//!   10⁴`, positive when live is worse; `paper_price` is the intent's
//!   volume-weighted paper price. A live fill that arrives before its paper
//!   fill is matched when the paper fill arrives. The measure is the mean of
//!   `|bps|` over the last `window` matched fills (fewer when fewer exist).
//! - **Volume drift**: `(1 − Σ live filled qty / Σ qty) × 100` over the
//!   last `window` *settled* intents, where `qty` is the quantity published
//!   (after the gate's size factor, so a recovering gate's smaller orders
//!   are not counted as shortfall). An intent settles when its live fills
//!   reach its quantity, when the execution system reports it done
//!   (rejected, or the rest unfilled: [`DriftTracker::on_done`]), or when it
//!   times out ([`DriftTracker::expire`]: `fill_timeout_ms` after it was
//!   published).
//! - **Latency drift**: the mean of `last live fill time − published time`,
//!   in ms, over the settled intents of that window with at least one fill.
//! - **PnL drift** (`paper_live_delta`): over the intents with both paper
//!   and live fills, the paper fills' PnL minus the live fills' PnL, as a
//!   percent of the initial cash. Each side's PnL is its cash flow plus its
//!   position marked at the symbol's last close given to
//!   [`DriftTracker::mark`] (before any, at the last paper price seen), i.e.
//!   realized plus marked PnL. Paper quantities are scaled by `qty /
//!   intended_qty`, so both sides trade the published size. Its score uses
//!   the absolute value: live doing better than paper is drift too.
//! - **Signal drift**: the count of orders an offline replay of the stored
//!   bars produced differently, set by the caller
//!   ([`DriftTracker::set_signal_mismatches`]).
//!
//! Each kind's score is `value / threshold` (`|value|` for price and PnL);
//! `score` is the largest. `score ≥ 1` crosses the threshold; `score ≥
//! critical` is the critical alert's level.
//!
//! What it does not do: decide anything (the gate does), read a clock, or
//! keep intents forever: settled intents are forgotten after
//! [`RETAINED_INTENTS`] later ones settled, and a fill for one of them is
//! then an unknown intent.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::intent::{Intent, IntentError, LiveFill, Side};
use crate::settings::{self, ensure, positive, ConfigError, Settings};

/// Default [`DriftPolicy::window`]: the last 5 matched fills or settled intents.
pub const DEFAULT_WINDOW: usize = 5;
/// Default [`DriftPolicy::price_bps`]: a mean of 50 bps.
pub const DEFAULT_PRICE_BPS: f64 = 50.0;
/// Default [`DriftPolicy::volume_pct`]: 20 % of the published quantity unfilled.
pub const DEFAULT_VOLUME_PCT: f64 = 20.0;
/// Default [`DriftPolicy::latency_ms`]: 5 s from publication to the last fill.
pub const DEFAULT_LATENCY_MS: f64 = 5_000.0;
/// Default [`DriftPolicy::pnl_pct`]: 1 % of the initial cash.
pub const DEFAULT_PNL_PCT: f64 = 1.0;
/// Default [`DriftPolicy::signal`]: any mismatch crosses.
pub const DEFAULT_SIGNAL: f64 = 1.0;
/// Default [`DriftPolicy::critical`]: twice a threshold.
pub const DEFAULT_CRITICAL: f64 = 2.0;
/// Default [`DriftPolicy::fill_timeout_ms`]: one minute.
pub const DEFAULT_FILL_TIMEOUT_MS: u64 = 60_000;
/// Largest accepted [`DriftPolicy::window`].
pub const MAX_WINDOW: usize = 10_000;
/// Settled intents the tracker remembers for late fills.
pub const RETAINED_INTENTS: usize = 10_000;

/// Relative tolerance of quantity sums: fills split in parts may add up to a
/// hair above their intent.
const QTY_TOLERANCE: f64 = 1e-9;

/// Thresholds of the drift measures and the window they are taken over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftPolicy {
    /// Matched fills (price) and settled intents (volume, latency) the
    /// measures average over, in 1..=10000 (default 5).
    pub window: usize,
    /// Price drift threshold, mean |bps|, > 0 (default 50).
    pub price_bps: f64,
    /// Volume drift threshold, percent unfilled, > 0 (default 20).
    pub volume_pct: f64,
    /// Latency drift threshold, mean ms, > 0 (default 5000).
    pub latency_ms: f64,
    /// PnL drift threshold, |percent of initial cash|, > 0 (default 1).
    pub pnl_pct: f64,
    /// Signal drift threshold, mismatched orders, > 0 (default 1: any).
    pub signal: f64,
    /// Score of the critical alert, ≥ 1 (default 2).
    pub critical: f64,
    /// An intent without a complete fill settles this long after it was
    /// published, in ms, > 0 (default 60000).
    pub fill_timeout_ms: u64,
}

impl Default for DriftPolicy {
    fn default() -> Self {
        DriftPolicy {
            window: DEFAULT_WINDOW,
            price_bps: DEFAULT_PRICE_BPS,
            volume_pct: DEFAULT_VOLUME_PCT,
            latency_ms: DEFAULT_LATENCY_MS,
            pnl_pct: DEFAULT_PNL_PCT,
            signal: DEFAULT_SIGNAL,
            critical: DEFAULT_CRITICAL,
            fill_timeout_ms: DEFAULT_FILL_TIMEOUT_MS,
        }
    }
}

impl DriftPolicy {
    /// Parses and checks a TOML policy; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<DriftPolicy, ConfigError> {
        settings::from_toml(text, origin)
    }

    /// Parses and checks a JSON policy; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<DriftPolicy, ConfigError> {
        settings::from_json(text, origin)
    }

    /// Checks every value's range, naming `origin` and the key in errors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let p = self;
        let window_ok = (1..=MAX_WINDOW).contains(&p.window);
        ensure(window_ok, origin, "window", p.window, "in 1..=10000")?;
        for (key, value) in [
            ("price_bps", p.price_bps),
            ("volume_pct", p.volume_pct),
            ("latency_ms", p.latency_ms),
            ("pnl_pct", p.pnl_pct),
            ("signal", p.signal),
        ] {
            ensure(positive(value), origin, key, value, "finite and > 0")?;
        }
        let critical_ok = p.critical.is_finite() && p.critical >= 1.0;
        ensure(critical_ok, origin, "critical", p.critical, "finite and >= 1")?;
        ensure(
            p.fill_timeout_ms > 0,
            origin,
            "fill_timeout_ms",
            p.fill_timeout_ms,
            "> 0",
        )
    }

    /// Whether `score` reaches the critical alert's level.
    pub fn is_critical(&self, score: f64) -> bool {
        score >= self.critical
    }
}

impl Settings for DriftPolicy {
    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate(origin)
    }
}

/// The kinds of drift, as metric labels and reasons name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    Price,
    Volume,
    Latency,
    Pnl,
    Signal,
}

impl DriftKind {
    /// Every kind, in the order reasons list them.
    pub const ALL: [DriftKind; 5] = [
        DriftKind::Price,
        DriftKind::Volume,
        DriftKind::Latency,
        DriftKind::Pnl,
        DriftKind::Signal,
    ];

    /// The kind's label, e.g. `price`.
    pub fn name(self) -> &'static str {
        match self {
            DriftKind::Price => "price",
            DriftKind::Volume => "volume",
            DriftKind::Latency => "latency",
            DriftKind::Pnl => "pnl",
            DriftKind::Signal => "signal",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            DriftKind::Price => " bps",
            DriftKind::Volume | DriftKind::Pnl => " %",
            DriftKind::Latency => " ms",
            DriftKind::Signal => " mismatched orders",
        }
    }
}

/// Each kind's `value / threshold`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftScores {
    #[serde(deserialize_with = "lenient")]
    pub price: f64,
    #[serde(deserialize_with = "lenient")]
    pub volume: f64,
    #[serde(deserialize_with = "lenient")]
    pub latency: f64,
    #[serde(deserialize_with = "lenient")]
    pub pnl: f64,
    #[serde(deserialize_with = "lenient")]
    pub signal: f64,
}

impl DriftScores {
    /// The score of `kind`.
    pub fn of(&self, kind: DriftKind) -> f64 {
        match kind {
            DriftKind::Price => self.price,
            DriftKind::Volume => self.volume,
            DriftKind::Latency => self.latency,
            DriftKind::Pnl => self.pnl,
            DriftKind::Signal => self.signal,
        }
    }
}

/// The drift measures at one moment (see the module docs for definitions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftSnapshot {
    /// Mean |bps| over the window's matched fills.
    #[serde(deserialize_with = "lenient")]
    pub price_bps: f64,
    /// Percent of the window's published quantity not filled.
    #[serde(deserialize_with = "lenient")]
    pub volume_pct: f64,
    /// Mean ms from publication to the last fill over the window.
    #[serde(deserialize_with = "lenient")]
    pub latency_ms: f64,
    /// Paper minus live PnL, percent of the initial cash (signed).
    #[serde(deserialize_with = "lenient")]
    pub pnl_pct: f64,
    /// Mismatched orders reported by the offline replay.
    pub signal: u64,
    /// The largest of the kinds' scores; ≥ 1 crosses the threshold.
    #[serde(deserialize_with = "lenient")]
    pub score: f64,
    /// Matched fills since the tracker (re)started.
    pub fills_matched: u64,
    /// Each kind's score.
    pub scores: DriftScores,
}

impl DriftSnapshot {
    /// The value of `kind`.
    pub fn value(&self, kind: DriftKind) -> f64 {
        match kind {
            DriftKind::Price => self.price_bps,
            DriftKind::Volume => self.volume_pct,
            DriftKind::Latency => self.latency_ms,
            DriftKind::Pnl => self.pnl_pct,
            DriftKind::Signal => self.signal as f64,
        }
    }

    /// The kinds whose score is ≥ 1.
    pub fn crossed(&self) -> Vec<DriftKind> {
        DriftKind::ALL
            .into_iter()
            .filter(|&k| self.scores.of(k) >= 1.0)
            .collect()
    }

    /// The crossed kinds with their values, e.g. `price drift 99.01 bps
    /// (1.98× its threshold)`, joined by `; `.
    pub fn describe_crossed(&self) -> String {
        let describe = |k: DriftKind| {
            let (value, unit, score) = (self.value(k), k.unit(), self.scores.of(k));
            format!(
                "{} drift {}{unit} ({}× its threshold)",
                k.name(),
                short(value),
                short(score)
            )
        };
        self.crossed()
            .into_iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `x` with two decimals, or in scientific notation when that would be
/// long (a reason stays readable whatever the drift).
fn short(x: f64) -> String {
    if x.abs() < 1e9 {
        format!("{x:.2}")
    } else {
        format!("{x:.3e}")
    }
}

/// `x` as a finite number: the measures of absurd fills (a price of 1e308
/// against 100) would overflow to infinity, or give NaN, which JSON cannot
/// hold. Either is as far over any threshold as a number can be.
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        f64::MAX
    } else {
        x.clamp(-f64::MAX, f64::MAX)
    }
}

/// Reads a measure that an older build may have written as `null` (JSON's
/// rendering of a non-finite number) as the largest number.
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::MAX))
}

/// The most live fills one intent may have (partial fills of a real venue
/// are far fewer; a client repeating dust fills is refused).
pub const MAX_FILLS_PER_INTENT: u32 = 10_000;

/// How much earlier than its intent's publication a live fill may be
/// stamped (the execution system's clock may run behind ours); earlier
/// still is refused, and a fill within it counts as no latency at all.
pub const FILL_CLOCK_SKEW_MS: i64 = 5_000;

/// Why the tracker refused a fill or an intent. The service answers 404 to
/// [`DriftError::UnknownIntent`] and 422 to the others.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DriftError {
    #[error("unknown intent {intent_id}")]
    UnknownIntent { intent_id: String },
    #[error("intent {intent_id} has had {max} live fills, the most one intent may have")]
    TooManyFills { intent_id: String, max: u32 },
    #[error("intent {intent_id} is already tracked")]
    DuplicateIntent { intent_id: String },
    #[error("invalid {what}: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: IntentError,
    },
    #[error("{which} fills of intent {intent_id} would reach {filled}, above its {qty}")]
    Overfill {
        intent_id: String,
        /// `live` or `paper`.
        which: &'static str,
        filled: f64,
        qty: f64,
    },
    #[error(
        "a fill of intent {intent_id} at ts_ms {ts_ms} is before the intent was published at {published_ms} (more than {FILL_CLOCK_SKEW_MS} ms)"
    )]
    FillBeforeIntent {
        intent_id: String,
        ts_ms: i64,
        published_ms: i64,
    },
    #[error("fill {venue_fill_id} of intent {intent_id} was already reported")]
    DuplicateFill {
        intent_id: String,
        venue_fill_id: String,
    },
}

/// Fills of one side of an intent, summed.
#[derive(Clone, Copy, Debug, Default)]
struct Filled {
    qty: f64,
    notional: f64,
}

impl Filled {
    fn add(&mut self, qty: f64, price: f64) {
        self.qty += qty;
        self.notional += qty * price;
    }

    fn vwap(&self) -> f64 {
        self.notional / self.qty
    }
}

/// One symbol's paper and live cash flows and positions over matched intents.
#[derive(Clone, Copy, Debug, Default)]
struct Book {
    paper_cash: f64,
    paper_position: f64,
    live_cash: f64,
    live_position: f64,
    last_paper_price: f64,
}

/// What the tracker knows of one published intent.
#[derive(Clone, Debug)]
struct Tracked {
    /// The restart the intent was published in; older intents' fills are
    /// accepted but not measured.
    epoch: u64,
    symbol: String,
    side: Side,
    qty: f64,
    intended_qty: f64,
    published_ms: i64,
    paper: Filled,
    live: Filled,
    last_live_ms: Option<i64>,
    /// Live fill prices waiting for a paper fill to be matched with.
    unmatched: Vec<f64>,
    venue_fill_ids: std::collections::HashSet<String>,
    /// Live fills applied (at most [`MAX_FILLS_PER_INTENT`]).
    live_fills: u32,
    settled: bool,
}

impl Tracked {
    /// Paper quantities are scaled to the published size.
    fn paper_scale(&self) -> f64 {
        self.qty / self.intended_qty
    }

    fn both_sides(&self) -> bool {
        self.paper.qty > 0.0 && self.live.qty > 0.0
    }
}

/// A settled intent as the volume and latency windows see it.
#[derive(Clone, Copy, Debug)]
struct Settled {
    qty: f64,
    filled: f64,
    latency_ms: Option<f64>,
}

/// Which side of an intent a fill belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Leg {
    Paper,
    Live,
}

/// Drift measures of one deployment, fed with its intents, paper fills,
/// live fills and closes.
#[derive(Clone, Debug)]
pub struct DriftTracker {
    policy: DriftPolicy,
    initial_cash: f64,
    epoch: u64,
    intents: HashMap<String, Tracked>,
    /// Settled intents' ids, oldest first, forgotten past [`RETAINED_INTENTS`].
    retired: VecDeque<String>,
    /// Signed bps of the last `window` matched fills.
    prices: VecDeque<f64>,
    settled: VecDeque<Settled>,
    books: BTreeMap<String, Book>,
    marks: HashMap<String, f64>,
    signal: u64,
    fills_matched: u64,
}

impl DriftTracker {
    /// A tracker with `policy` (validated by the caller) for a deployment
    /// whose paper portfolio started with `initial_cash` (> 0).
    pub fn new(policy: DriftPolicy, initial_cash: f64) -> DriftTracker {
        DriftTracker {
            policy,
            initial_cash,
            epoch: 0,
            intents: HashMap::new(),
            retired: VecDeque::new(),
            prices: VecDeque::new(),
            settled: VecDeque::new(),
            books: BTreeMap::new(),
            marks: HashMap::new(),
            signal: 0,
            fills_matched: 0,
        }
    }

    /// The policy the tracker measures against.
    pub fn policy(&self) -> &DriftPolicy {
        &self.policy
    }

    /// An intent was published: its fills may now be reported.
    pub fn on_intent(&mut self, intent: &Intent) -> Result<(), DriftError> {
        intent.validate().map_err(|source| DriftError::Invalid {
            what: "intent",
            source,
        })?;
        if self.intents.contains_key(&intent.id) {
            return Err(DriftError::DuplicateIntent {
                intent_id: intent.id.clone(),
            });
        }
        let tracked = Tracked {
            epoch: self.epoch,
            symbol: intent.symbol.clone(),
            side: intent.side,
            qty: intent.qty,
            intended_qty: intent.intended_qty,
            published_ms: intent.published_ms,
            paper: Filled::default(),
            live: Filled::default(),
            last_live_ms: None,
            unmatched: Vec::new(),
            venue_fill_ids: std::collections::HashSet::new(),
            live_fills: 0,
            settled: false,
        };
        self.intents.insert(intent.id.clone(), tracked);
        Ok(())
    }

    /// The paper broker filled `qty` (unsigned, of the strategy's intended
    /// quantity) of a published intent at `price`.
    pub fn on_paper_fill(&mut self, intent_id: &str, qty: f64, price: f64) -> Result<(), DriftError> {
        let probe = LiveFill {
            intent_id: intent_id.to_owned(),
            qty,
            price,
            ts_ms: 0,
            venue_fill_id: None,
        };
        probe.validate().map_err(|source| DriftError::Invalid {
            what: "paper fill",
            source,
        })?;
        let t = self.tracked(intent_id)?;
        check_room(intent_id, "paper", t.paper.qty + qty, t.intended_qty)?;
        self.record(intent_id, Leg::Paper, qty, price);
        let t = &self.intents[intent_id];
        if t.epoch == self.epoch {
            let pending = std::mem::take(&mut self.intents.get_mut(intent_id).expect("tracked").unmatched);
            for live_price in pending {
                self.match_fill(intent_id, live_price);
            }
        }
        Ok(())
    }

    /// The execution system reported a live fill. Refused, and not applied,
    /// when it is malformed, for an unknown intent, a repeated venue fill id,
    /// or above what remains of its intent.
    pub fn on_live_fill(&mut self, fill: &LiveFill) -> Result<(), DriftError> {
        fill.validate().map_err(|source| DriftError::Invalid {
            what: "live fill",
            source,
        })?;
        let id = fill.intent_id.as_str();
        let t = self.tracked(id)?;
        if let Some(venue_id) = &fill.venue_fill_id {
            if t.venue_fill_ids.contains(venue_id) {
                return Err(DriftError::DuplicateFill {
                    intent_id: id.to_owned(),
                    venue_fill_id: venue_id.clone(),
                });
            }
        }
        check_room(id, "live", t.live.qty + fill.qty, t.qty)?;
        if fill.ts_ms < t.published_ms.saturating_sub(FILL_CLOCK_SKEW_MS) {
            return Err(DriftError::FillBeforeIntent {
                intent_id: id.to_owned(),
                ts_ms: fill.ts_ms,
                published_ms: t.published_ms,
            });
        }
        if t.live_fills >= MAX_FILLS_PER_INTENT {
            return Err(DriftError::TooManyFills {
                intent_id: id.to_owned(),
                max: MAX_FILLS_PER_INTENT,
            });
        }
        self.record(id, Leg::Live, fill.qty, fill.price);
        let t = self.intents.get_mut(id).expect("tracked");
        t.last_live_ms = Some(t.last_live_ms.map_or(fill.ts_ms, |ms| ms.max(fill.ts_ms)));
        t.venue_fill_ids.extend(fill.venue_fill_id.clone());
        t.live_fills += 1;
        let (current, paper, complete) = (
            t.epoch == self.epoch,
            t.paper.qty > 0.0,
            t.live.qty >= t.qty * (1.0 - QTY_TOLERANCE),
        );
        if current && paper {
            self.match_fill(id, fill.price);
        } else if current {
            t.unmatched.push(fill.price);
        }
        if complete {
            self.settle(id);
        }
        Ok(())
    }

    /// The execution system says no more of the intent will fill (rejected,
    /// cancelled, or the rest reported unfilled): it settles with what was
    /// filled. Settling a settled intent again changes nothing.
    pub fn on_done(&mut self, intent_id: &str) -> Result<(), DriftError> {
        self.tracked(intent_id)?;
        self.settle(intent_id);
        Ok(())
    }

    /// Settles the intents published `fill_timeout_ms` or longer before
    /// `now_ms` that have not settled, oldest first; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let timeout = i64::try_from(self.policy.fill_timeout_ms).unwrap_or(i64::MAX);
        let mut due: Vec<(i64, String)> = self
            .intents
            .iter()
            .filter(|(_, t)| !t.settled && t.published_ms.saturating_add(timeout) <= now_ms)
            .map(|(id, t)| (t.published_ms, id.clone()))
            .collect();
        due.sort();
        let ids: Vec<String> = due.into_iter().map(|(_, id)| id).collect();
        for id in &ids {
            self.settle(id);
        }
        ids
    }

    /// The last close of `symbol`, which PnL drift marks positions at.
    pub fn mark(&mut self, symbol: &str, close: f64) {
        if close.is_finite() && close > 0.0 {
            self.marks.insert(symbol.to_owned(), close);
        }
    }

    /// Sets the mismatch count of the latest offline replay.
    pub fn set_signal_mismatches(&mut self, count: u64) {
        self.signal = count;
    }

    /// Starts the measures afresh: the windows, the PnL books, the matched
    /// fill count and the signal count are cleared. Intents published
    /// before still accept fills, which no longer count. The caller calls
    /// this when a gate transition says so
    /// ([`crate::Transition::restarts_drift`]).
    pub fn restart(&mut self) {
        self.epoch += 1;
        self.prices.clear();
        self.settled.clear();
        self.books.clear();
        self.signal = 0;
        self.fills_matched = 0;
    }

    /// The measures now.
    pub fn snapshot(&self) -> DriftSnapshot {
        let p = &self.policy;
        let price_bps = mean(self.prices.iter().map(|b| b.abs()));
        let volume_pct = self.volume_pct();
        let latency_ms = mean(self.settled.iter().filter_map(|s| s.latency_ms));
        let pnl_pct = self.pnl_pct();
        let (price_bps, volume_pct, latency_ms, pnl_pct) = (
            finite(price_bps),
            finite(volume_pct),
            finite(latency_ms),
            finite(pnl_pct),
        );
        let scores = DriftScores {
            price: finite(price_bps / p.price_bps),
            volume: finite(volume_pct / p.volume_pct),
            latency: finite(latency_ms / p.latency_ms),
            pnl: finite(pnl_pct.abs() / p.pnl_pct),
            signal: finite(self.signal as f64 / p.signal),
        };
        let score = DriftKind::ALL
            .into_iter()
            .map(|k| scores.of(k))
            .fold(0.0, f64::max);
        DriftSnapshot {
            price_bps,
            volume_pct,
            latency_ms,
            pnl_pct,
            signal: self.signal,
            score,
            fills_matched: self.fills_matched,
            scores,
        }
    }

    fn tracked(&self, intent_id: &str) -> Result<&Tracked, DriftError> {
        self.intents
            .get(intent_id)
            .ok_or_else(|| DriftError::UnknownIntent {
                intent_id: intent_id.to_owned(),
            })
    }

    /// Adds a fill to its intent and, for a current intent with both sides
    /// filled, to the PnL book of its symbol: all of both sides when this
    /// fill is the one that matched them, else just this fill.
    fn record(&mut self, intent_id: &str, leg: Leg, qty: f64, price: f64) {
        let t = self.intents.get_mut(intent_id).expect("tracked");
        let was_matched = t.both_sides();
        match leg {
            Leg::Paper => t.paper.add(qty, price),
            Leg::Live => t.live.add(qty, price),
        }
        if t.epoch != self.epoch || !t.both_sides() {
            return;
        }
        let (sign, scale) = (t.side.sign(), t.paper_scale());
        let book = self.books.entry(t.symbol.clone()).or_default();
        if leg == Leg::Paper {
            book.last_paper_price = price;
        }
        let mut add = |leg: Leg, filled: Filled| {
            let (cash, position) = match leg {
                Leg::Paper => (&mut book.paper_cash, &mut book.paper_position),
                Leg::Live => (&mut book.live_cash, &mut book.live_position),
            };
            let factor = if leg == Leg::Paper { scale } else { 1.0 };
            *cash -= sign * filled.notional * factor;
            *position += sign * filled.qty * factor;
        };
        if was_matched {
            add(
                leg,
                Filled {
                    qty,
                    notional: qty * price,
                },
            );
        } else {
            add(Leg::Paper, t.paper);
            add(Leg::Live, t.live);
            book.last_paper_price = t.paper.vwap();
        }
    }

    /// Counts a live fill at `live_price` matched with its intent's paper
    /// price into the price window.
    fn match_fill(&mut self, intent_id: &str, live_price: f64) {
        let t = &self.intents[intent_id];
        let paper_price = t.paper.vwap();
        let bps = t.side.sign() * (live_price - paper_price) / paper_price * 10_000.0;
        push_bounded(&mut self.prices, bps, self.policy.window);
        self.fills_matched += 1;
    }

    /// Settles an intent once: a current one enters the volume and latency
    /// window; every one is remembered for late fills for a while.
    fn settle(&mut self, intent_id: &str) {
        let t = self.intents.get_mut(intent_id).expect("tracked");
        if t.settled {
            return;
        }
        t.settled = true;
        if t.epoch == self.epoch {
            let latency_ms = t.last_live_ms.map(|ms| (ms - t.published_ms).max(0) as f64);
            let settled = Settled {
                qty: t.qty,
                filled: t.live.qty,
                latency_ms,
            };
            push_bounded(&mut self.settled, settled, self.policy.window);
        }
        self.retired.push_back(intent_id.to_owned());
        if self.retired.len() > RETAINED_INTENTS {
            let old = self.retired.pop_front().expect("non-empty");
            self.intents.remove(&old);
        }
    }

    fn volume_pct(&self) -> f64 {
        let qty: f64 = self.settled.iter().map(|s| s.qty).sum();
        if qty == 0.0 {
            return 0.0;
        }
        let filled: f64 = self.settled.iter().map(|s| s.filled).sum();
        ((1.0 - filled / qty) * 100.0).max(0.0)
    }

    fn pnl_pct(&self) -> f64 {
        let delta: f64 = self
            .books
            .iter()
            .map(|(symbol, b)| {
                let mark = self.marks.get(symbol).copied().unwrap_or(b.last_paper_price);
                (b.paper_cash + b.paper_position * mark) - (b.live_cash + b.live_position * mark)
            })
            .sum();
        delta / self.initial_cash * 100.0
    }
}

/// `Ok` when `filled` stays within `qty` (with a relative tolerance).
fn check_room(intent_id: &str, which: &'static str, filled: f64, qty: f64) -> Result<(), DriftError> {
    if filled <= qty * (1.0 + QTY_TOLERANCE) {
        return Ok(());
    }
    Err(DriftError::Overfill {
        intent_id: intent_id.to_owned(),
        which,
        filled,
        qty,
    })
}

fn push_bounded<T>(window: &mut VecDeque<T>, value: T, len: usize) {
    window.push_back(value);
    while window.len() > len {
        window.pop_front();
    }
}

/// The mean, 0 for no values.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::tests::{fill, intent};
    use crate::venue::{SimVenue, VenueConfig, VenueReport};
    use crate::DriftInjection;
    use palisade_backtest::OrderKind as BacktestOrderKind;
    use palisade_host_api::Bar;

    const CASH: f64 = 100_000.0;

    fn tracker(policy: DriftPolicy) -> DriftTracker {
        policy.validate("test").unwrap();
        DriftTracker::new(policy, CASH)
    }

    /// A tracker with intents 1..=n published (market buys of 10 at `n` s).
    fn with_intents(n: u64) -> DriftTracker {
        let mut t = tracker(DriftPolicy::default());
        for i in 1..=n {
            t.on_intent(&intent(i)).unwrap();
        }
        t
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn price_drift_is_signed_by_side_and_matched_in_either_order() {
        let mut t = with_intents(2);
        // Live before paper: matched when the paper fill arrives.
        t.on_live_fill(&fill("d:1", 10.0, 100.5, 1)).unwrap();
        assert_eq!(t.snapshot().fills_matched, 0);
        t.on_paper_fill("d:1", 10.0, 100.0).unwrap();
        let s = t.snapshot();
        assert_eq!(s.fills_matched, 1);
        assert!(close(s.price_bps, 50.0), "{s:?}");
        // A sell filled higher live than paper is favourable: −50 bps, |·| = 50.
        let mut sell = intent(3);
        sell.side = Side::Sell;
        t.on_intent(&sell).unwrap();
        t.on_paper_fill("d:3", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:3", 10.0, 100.5, 2)).unwrap();
        assert_eq!(
            t.prices.iter().map(|b| b.round()).collect::<Vec<_>>(),
            [50.0, -50.0]
        );
        assert!(close(t.snapshot().price_bps, 50.0));
    }

    #[test]
    fn absurd_fills_give_the_largest_finite_drift_which_reads_back() {
        let mut t = with_intents(2);
        t.on_paper_fill("d:1", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:1", 10.0, 1e308, 1_500)).unwrap();
        let s = t.snapshot();
        assert_eq!((s.price_bps, s.score), (f64::MAX, f64::MAX), "{s:?}");
        assert!(s.scores.price.is_finite() && s.scores.price > 1e300, "{s:?}");
        assert!(s.crossed().contains(&DriftKind::Price));
        let reason = s.describe_crossed();
        assert!(reason.len() < 200 && reason.contains("e308"), "{reason}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert_eq!(serde_json::from_str::<DriftSnapshot>(&json).unwrap(), s);
        // What an older build wrote for infinity reads back as the largest.
        let old = json.replace("1.7976931348623157e+308", "null");
        assert!(old.contains("null"), "{old}");
        let read: DriftSnapshot = serde_json::from_str(&old).unwrap();
        assert_eq!((read.price_bps, read.score), (f64::MAX, f64::MAX));
    }

    #[test]
    fn fills_stamped_before_their_intent_are_refused_beyond_the_clock_skew() {
        // Intent 1 is published at 1,000 ms.
        let mut t = with_intents(1);
        let early = 1_000 - FILL_CLOCK_SKEW_MS - 1;
        match t.on_live_fill(&fill("d:1", 4.0, 100.0, early)) {
            Err(DriftError::FillBeforeIntent {
                published_ms: 1_000, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Within the skew: accepted, counted as no latency (not negative).
        t.on_live_fill(&fill("d:1", 10.0, 100.0, early + 1)).unwrap();
        assert_eq!(t.snapshot().latency_ms, 0.0, "{:?}", t.snapshot());
    }

    #[test]
    fn price_drift_is_the_mean_over_the_last_window_matched_fills() {
        let mut t = with_intents(7);
        let lives = [100.2, 100.0, 100.0, 100.0, 100.0, 100.1, 100.0];
        for (i, live) in (1..).zip(lives) {
            let id = format!("d:{i}");
            t.on_paper_fill(&id, 10.0, 100.0).unwrap();
            t.on_live_fill(&fill(&id, 10.0, live, i * 1_000)).unwrap();
            if i == 2 {
                // Fewer than the window: the mean of what exists.
                assert!(close(t.snapshot().price_bps, 10.0));
            }
        }
        // The last five: 0, 0, 0, 10, 0 bps.
        assert!(close(t.snapshot().price_bps, 2.0), "{:?}", t.snapshot());
        assert_eq!(t.snapshot().fills_matched, 7);
    }

    #[test]
    fn volume_and_latency_over_settled_intents() {
        let mut t = with_intents(3);
        // Intent 1 (published at 1000 ms): filled in two parts, complete at 1400.
        t.on_live_fill(&fill("d:1", 4.0, 100.0, 1_200)).unwrap();
        assert_eq!(t.snapshot().volume_pct, 0.0, "unsettled intents do not count");
        t.on_live_fill(&fill("d:1", 6.0, 100.0, 1_400)).unwrap();
        // Intent 2 (2000 ms): half filled at 2600, the rest reported unfilled.
        t.on_live_fill(&fill("d:2", 5.0, 100.0, 2_600)).unwrap();
        t.on_done("d:2").unwrap();
        let s = t.snapshot();
        assert!(close(s.volume_pct, 25.0), "{s:?}");
        assert!(close(s.latency_ms, 500.0), "{s:?}");
        // Intent 3 (3000 ms): rejected, nothing filled; no latency.
        t.on_done("d:3").unwrap();
        t.on_done("d:3").unwrap();
        let s = t.snapshot();
        assert!(close(s.volume_pct, 50.0), "{s:?}");
        assert!(close(s.latency_ms, 500.0));
        assert!(close(s.scores.volume, 2.5) && close(s.score, 2.5), "{s:?}");
    }

    #[test]
    fn intents_time_out_at_exactly_the_timeout() {
        let mut t = with_intents(2); // published at 1000 and 2000 ms
        let timeout = DEFAULT_FILL_TIMEOUT_MS as i64;
        assert!(t.expire(1_000 + timeout - 1).is_empty());
        assert_eq!(t.expire(2_000 + timeout), ["d:1", "d:2"]);
        assert!(close(t.snapshot().volume_pct, 100.0));
        assert!(t.expire(i64::MAX).is_empty(), "settled once");
        // A late fill of a timed-out intent is accepted (and matched), but
        // the intent stays settled as it was.
        t.on_live_fill(&fill("d:1", 10.0, 100.0, 99_000)).unwrap();
        assert!(close(t.snapshot().volume_pct, 100.0));
    }

    #[test]
    fn pnl_drift_marks_both_sides_at_the_last_close() {
        let mut t = with_intents(2);
        // Paper buys 10 at 100, live 10 at 101: at a close of 110 paper made
        // 100, live 90; the delta is 10 of 100,000 = 0.01 %.
        t.on_paper_fill("d:1", 10.0, 100.0).unwrap();
        assert_eq!(t.snapshot().pnl_pct, 0.0, "no live fill yet");
        t.on_live_fill(&fill("d:1", 10.0, 101.0, 1)).unwrap();
        assert!(
            close(t.snapshot().pnl_pct, 0.01),
            "marked at the paper price: {:?}",
            t.snapshot()
        );
        t.mark("X", 110.0);
        assert!(close(t.snapshot().pnl_pct, 0.01));
        // Selling: paper 10 at 120, live 10 at 118: realized 200 vs 170.
        let mut sell = intent(3);
        sell.side = Side::Sell;
        t.on_intent(&sell).unwrap();
        t.on_live_fill(&fill("d:3", 10.0, 118.0, 2)).unwrap();
        t.on_paper_fill("d:3", 10.0, 120.0).unwrap();
        t.mark("X", 50.0);
        assert!(close(t.snapshot().pnl_pct, 0.03), "{:?}", t.snapshot());
    }

    #[test]
    fn pnl_drift_scales_paper_to_the_published_size() {
        let mut t = tracker(DriftPolicy::default());
        let mut i = intent(1);
        i.qty = 2.5; // a recovering gate's 25 %
        t.on_intent(&i).unwrap();
        t.on_paper_fill("d:1", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:1", 2.5, 100.0, 1)).unwrap();
        t.mark("X", 200.0);
        let s = t.snapshot();
        assert!(close(s.pnl_pct, 0.0) && close(s.volume_pct, 0.0), "{s:?}");
        // 2000 of paper profit against 0 live: 2 % of 100,000 crosses.
        t.on_intent(&intent(2)).unwrap();
        t.on_paper_fill("d:2", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:2", 10.0, 300.0, 2)).unwrap();
        let s = t.snapshot();
        assert!(close(s.pnl_pct, 2.0) && close(s.scores.pnl, 2.0), "{s:?}");
    }

    #[test]
    fn signal_drift_crosses_at_one_mismatch() {
        let mut t = with_intents(0);
        t.set_signal_mismatches(0);
        assert_eq!(t.snapshot().score, 0.0);
        t.set_signal_mismatches(1);
        let s = t.snapshot();
        assert_eq!((s.signal, s.score), (1, 1.0));
        assert_eq!(s.crossed(), [DriftKind::Signal]);
        assert_eq!(
            s.describe_crossed(),
            "signal drift 1.00 mismatched orders (1.00× its threshold)"
        );
    }

    #[test]
    fn refused_reports_change_nothing() {
        let mut t = with_intents(1);
        let check = |t: &mut DriftTracker, f: LiveFill, want: &str| {
            let before = t.snapshot();
            assert_eq!(t.on_live_fill(&f).unwrap_err().to_string(), want);
            assert_eq!(t.snapshot(), before);
        };
        check(&mut t, fill("d:9", 1.0, 100.0, 0), "unknown intent d:9");
        check(
            &mut t,
            fill("d:1", 10.5, 100.0, 0),
            "live fills of intent d:1 would reach 10.5, above its 10",
        );
        check(
            &mut t,
            fill("d:1", 1.0, 0.0, 0),
            "invalid live fill: price must be finite and > 0, got 0",
        );
        let mut f = fill("d:1", 4.0, 100.0, 0);
        f.venue_fill_id = Some("v1".into());
        t.on_live_fill(&f).unwrap();
        check(&mut t, f, "fill v1 of intent d:1 was already reported");
        check(
            &mut t,
            fill("d:1", 6.5, 100.0, 0),
            "live fills of intent d:1 would reach 10.5, above its 10",
        );
        t.on_live_fill(&fill("d:1", 6.0, 100.0, 0)).unwrap();
        let paper = t.on_paper_fill("d:1", 11.0, 100.0).unwrap_err();
        assert_eq!(
            paper.to_string(),
            "paper fills of intent d:1 would reach 11, above its 10"
        );
        let unknown = t.on_paper_fill("d:2", 1.0, 100.0).unwrap_err();
        assert_eq!(
            unknown,
            DriftError::UnknownIntent {
                intent_id: "d:2".into()
            }
        );
        assert_eq!(
            t.on_intent(&intent(1)).unwrap_err().to_string(),
            "intent d:1 is already tracked"
        );
        assert_eq!(t.on_done("d:5").unwrap_err().to_string(), "unknown intent d:5");
    }

    #[test]
    fn restart_clears_the_measures_and_ignores_older_intents() {
        let mut t = with_intents(2);
        t.on_paper_fill("d:1", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:1", 10.0, 102.0, 1)).unwrap();
        t.set_signal_mismatches(3);
        assert!(t.snapshot().score >= 1.0);
        t.restart();
        assert_eq!(t.snapshot(), DriftSnapshot::default());
        // Intent 2 was published before the restart: accepted, not measured.
        t.on_paper_fill("d:2", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:2", 10.0, 150.0, 2)).unwrap();
        assert_eq!(t.snapshot(), DriftSnapshot::default());
        t.on_intent(&intent(3)).unwrap();
        t.on_paper_fill("d:3", 10.0, 100.0).unwrap();
        t.on_live_fill(&fill("d:3", 10.0, 100.1, 3)).unwrap();
        assert_eq!(t.snapshot().fills_matched, 1);
    }

    #[test]
    fn policy_parsing_and_ranges() {
        let p = DriftPolicy::from_toml_str("window = 8\nprice_bps = 25.0", "drift.toml").unwrap();
        assert_eq!(
            (p.window, p.price_bps, p.volume_pct),
            (8, 25.0, DEFAULT_VOLUME_PCT)
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(DriftPolicy::from_json_str(&json, "drift.json").unwrap(), p);
        let cases = [
            (
                "window = 0",
                "drift.toml: window = 0 is out of range (allowed in 1..=10000)",
            ),
            (
                "price_bps = 0.0",
                "drift.toml: price_bps = 0 is out of range (allowed finite and > 0)",
            ),
            (
                "signal = -1.0",
                "drift.toml: signal = -1 is out of range (allowed finite and > 0)",
            ),
            (
                "critical = 0.5",
                "drift.toml: critical = 0.5 is out of range (allowed finite and >= 1)",
            ),
            (
                "fill_timeout_ms = 0",
                "drift.toml: fill_timeout_ms = 0 is out of range (allowed > 0)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                DriftPolicy::from_toml_str(text, "drift.toml")
                    .unwrap_err()
                    .to_string(),
                want
            );
        }
        let unknown = DriftPolicy::from_json_str(r#"{"windows": 3}"#, "drift.json").unwrap_err();
        assert!(
            unknown
                .to_string()
                .starts_with("drift.json: unknown field `windows`"),
            "{unknown}"
        );
        assert!(p.is_critical(2.0) && !p.is_critical(1.99));
    }

    /// Feeds `intents` market buys through the simulated venue with
    /// `config` and through the backtest's fill rule with `slippage_bps` as
    /// the paper fill, one bar per intent; returns the score after each
    /// matched fill.
    fn scores(config: VenueConfig, slippage_bps: f64, intents: u64) -> Vec<DriftSnapshot> {
        let mut venue = SimVenue::new(config);
        let mut t = tracker(DriftPolicy::default());
        let mut out = Vec::new();
        for n in 1..=intents {
            let i = intent(n);
            t.on_intent(&i).unwrap();
            venue.submit(&i, i.published_ms).unwrap();
            // The next bar, a little random walk around 100.
            let open = 100.0 + (n % 7) as f64 * 0.37;
            let bar = Bar {
                ts: n as i64 + 1,
                open,
                high: open + 1.0,
                low: open - 1.0,
                close: open + 0.5,
                ..Bar::default()
            };
            let paper = BacktestOrderKind::Market
                .fill_price(true, &bar, slippage_bps / 10_000.0)
                .unwrap();
            t.on_paper_fill(&i.id, i.intended_qty, paper).unwrap();
            for report in venue.on_bar("X", &bar, bar.ts * 1000) {
                let VenueReport::Fill(f) = report else {
                    panic!("{report:?}")
                };
                t.on_live_fill(&f).unwrap();
                out.push(t.snapshot());
            }
            t.mark("X", bar.close);
        }
        out
    }

    #[test]
    fn one_percent_injected_from_intent_ten_is_detected_within_five_fills() {
        let config = VenueConfig {
            slippage_bps: 5.0,
            drift: vec![DriftInjection {
                from_intent: 10,
                until_intent: None,
                price_bps: 100.0,
                extra_latency_ms: 0,
            }],
            ..VenueConfig::default()
        };
        let s: Vec<f64> = scores(config, 5.0, 30).iter().map(|s| s.score).collect();
        assert!(s[..9].iter().all(|&x| x < 1.0), "clean before intent 10: {s:?}");
        let first = s.iter().position(|&x| x >= 1.0).expect("detected");
        assert!(
            (9..9 + 5).contains(&first),
            "detected at fill {} of {s:?}",
            first + 1
        );
    }

    #[test]
    fn clean_fills_never_reach_the_threshold() {
        let config = VenueConfig {
            slippage_bps: 5.0,
            ..VenueConfig::default()
        };
        let s = scores(config, 5.0, 2_000);
        assert_eq!(s.len(), 2_000);
        // The bars are a second apart, so each fill comes 1 s after its
        // intent: latency scores 0.2; prices agree exactly.
        assert!(
            s.iter().all(|s| s.price_bps == 0.0 && s.score < 1.0),
            "{:?}",
            s.iter().find(|s| s.score >= 1.0)
        );
        assert!(close(s[1_999].score, 0.2), "{:?}", s[1_999]);
    }
}
