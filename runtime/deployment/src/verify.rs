//! The signal check: the stored bars replayed offline through a fresh
//! instance of the same module, with the same parameters and seed, must give
//! the orders the live path gave, bit for bit. Strategies are deterministic
//! in the sandbox (no clock, no host randomness but the seeded stream, NaNs
//! canonical), so any difference means the live path diverged: bars handed
//! over that were not stored, a different build, a host bug.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use palisade_backtest::{Dataset, OrderKindName};
use palisade_live::barlog;
use palisade_run::live::{Feed, NextBars};
use palisade_run::session::{PlacedOrder, Session};
use palisade_run::Policy;
use palisade_sandbox::{CompiledModule, Sandbox};
use serde::{Deserialize, Serialize};

use crate::spec::DeploymentSpec;

/// What the last signal check found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalCheck {
    /// Bars replayed offline.
    pub bars: u64,
    /// Live orders compared with the replay's.
    pub orders: u64,
    pub mismatches: u64,
    /// The first differences, described.
    pub differences: Vec<String>,
}

/// An order the strategy decided live, as journaled (`orders.jsonl`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: u64,
    /// The timestamp decided at.
    pub ts: i64,
    pub symbol: u32,
    /// Signed quantity; compared by its bits.
    pub qty: f64,
    pub kind: OrderKindName,
    /// A limit or stop price; compared by its bits.
    pub price: Option<f64>,
    /// Whether the gate let its intent out.
    pub published: bool,
}

impl OrderRecord {
    pub fn new(order: &PlacedOrder, published: bool) -> OrderRecord {
        OrderRecord {
            id: order.id,
            ts: order.ts,
            symbol: order.symbol,
            qty: order.qty,
            kind: order.kind.name(),
            price: order.kind.price(),
            published,
        }
    }

    /// How this order differs from `other`, if it does (bit for bit).
    pub fn difference(&self, other: &OrderRecord) -> Option<String> {
        let same = self.ts == other.ts
            && self.symbol == other.symbol
            && self.qty.to_bits() == other.qty.to_bits()
            && self.kind == other.kind
            && self.price.map(f64::to_bits) == other.price.map(f64::to_bits);
        (!same).then(|| {
            format!(
                "order {}: live decided {:?} {} of symbol {} at {} (price {:?}), the replay {:?} {} of symbol {} at {} (price {:?})",
                self.id, self.kind, self.qty, self.symbol, self.ts, self.price,
                other.kind, other.qty, other.symbol, other.ts, other.price
            )
        })
    }
}

/// What a signal check needs beyond the deployment's spec.
#[derive(Clone)]
pub struct Verifier {
    pub sandbox: Arc<Sandbox>,
    pub strategy: Arc<CompiledModule>,
    pub policy: Policy,
    pub bars_path: PathBuf,
}

/// Most differences a check describes.
const SHOWN: usize = 5;

impl Verifier {
    /// Replays the stored bars up to `upto_ts` (the last timestamp the live
    /// strategy has decided at) and compares the orders with `live`, the
    /// orders it decided up to then.
    pub async fn check(
        &self,
        spec: &DeploymentSpec,
        live: &[OrderRecord],
        upto_ts: i64,
    ) -> Result<SignalCheck, String> {
        let mut bars = barlog::read(&self.bars_path, &spec.symbols).map_err(|e| e.to_string())?;
        bars.truncate(bars.partition_point(|b| b.ts <= upto_ts));
        let mut data = Dataset::empty(spec.symbols.clone()).map_err(|e| e.to_string())?;
        data.push(&bars).map_err(|e| e.to_string())?;
        let last_ts = bars.last().map(|b| b.ts);
        let replayed = replay(self, spec, data).await?;
        Ok(compare(live, &replayed, last_ts, bars.len() as u64))
    }
}

/// The orders of an offline replay of `data`.
pub async fn replay(v: &Verifier, spec: &DeploymentSpec, data: Dataset) -> Result<Vec<OrderRecord>, String> {
    let orders = Arc::new(Mutex::new(Vec::new()));
    let feed = Collect(orders.clone());
    let run = spec.run_config();
    let out = v
        .sandbox
        .live(&v.strategy, Arc::new(data), &v.policy, &run, Box::new(feed))
        .await;
    if let Err(f) = out.outcome {
        return Err(format!("the offline replay failed: {f}"));
    }
    let orders = std::mem::take(&mut *orders.lock().expect("not poisoned"));
    Ok(orders)
}

/// Compares the live orders decided up to `last_ts` with the replay's.
fn compare(live: &[OrderRecord], replayed: &[OrderRecord], last_ts: Option<i64>, bars: u64) -> SignalCheck {
    let mut check = SignalCheck {
        bars,
        orders: 0,
        mismatches: 0,
        differences: Vec::new(),
    };
    let note = |check: &mut SignalCheck, text: String| {
        check.mismatches += 1;
        if check.differences.len() < SHOWN {
            check.differences.push(text);
        }
    };
    let by_id: std::collections::HashMap<u64, &OrderRecord> = replayed.iter().map(|r| (r.id, r)).collect();
    let live_ids: std::collections::HashSet<u64> = live.iter().map(|o| o.id).collect();
    for order in live.iter().filter(|o| last_ts.is_some_and(|t| o.ts <= t)) {
        check.orders += 1;
        match by_id.get(&order.id) {
            Some(r) => {
                if let Some(d) = order.difference(r) {
                    note(&mut check, d);
                }
            }
            None => note(
                &mut check,
                format!("order {}: decided live, not by the replay", order.id),
            ),
        }
    }
    // Orders the replay decided that the live path never did.
    for r in replayed {
        if !live_ids.contains(&r.id) {
            check.orders += 1;
            note(
                &mut check,
                format!("order {}: decided by the replay, not live", r.id),
            );
        }
    }
    check
}

/// A feed with nothing after the stored bars, collecting orders.
struct Collect(Arc<Mutex<Vec<OrderRecord>>>);

impl Feed for Collect {
    fn decided(&mut self, session: &mut Session) {
        let orders = session.take_orders();
        session.bt.take_fills();
        let mut all = self.0.lock().expect("not poisoned");
        all.extend(orders.iter().map(|o| OrderRecord::new(o, false)));
    }

    fn next(&mut self) -> NextBars<'_> {
        Box::pin(async { None })
    }
}
