//! The strategy's side of a deployment: the [`Feed`] the sandbox's live
//! `next_bars` waits on, passing bars from the deployment's actor to the
//! strategy and the strategy's decisions back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use palisade_host_api::{Bar, Fill};
use palisade_run::live::{Feed, NextBars};
use palisade_run::session::{PlacedOrder, Session};
use prometheus::Histogram;
use tokio::sync::mpsc;

/// Bars of one or more timestamps, stored, with when their message arrived
/// (`None` for bars replayed from the log).
pub type Delivery = (Vec<Bar>, Option<Instant>);

/// What the strategy decided at one timestamp.
#[derive(Debug)]
pub struct Decision {
    /// The timestamp handled; `None` for the initialisation.
    pub ts: Option<i64>,
    pub orders: Vec<PlacedOrder>,
    /// Paper fills since the previous decision (at this timestamp's opens).
    pub fills: Vec<Fill>,
    /// The timestamp's closes, by symbol id.
    pub closes: Vec<(i32, f64)>,
    /// The strategy's log lines since the previous decision.
    pub logs: Vec<palisade_run::LogLine>,
}

/// The live run's [`Feed`]: bars from the actor, decisions to it.
pub struct ChannelFeed {
    pub bars: mpsc::UnboundedReceiver<Delivery>,
    /// Set when the deployment stops: bars still queued are not handed
    /// over (they are stored; a replay handles them).
    pub stopping: Arc<AtomicBool>,
    pub decisions: mpsc::UnboundedSender<Decision>,
    /// `palisade_feed_to_strategy_seconds`.
    pub latency: Histogram,
}

impl Feed for ChannelFeed {
    fn decided(&mut self, session: &mut Session) {
        let decision = Decision {
            ts: session.now_ts(),
            orders: session.take_orders(),
            fills: session.bt.take_fills(),
            closes: session.now_bars().iter().map(|b| (b.symbol, b.close)).collect(),
            logs: session.take_logs(),
        };
        // A closed channel means the deployment is stopping: nothing is
        // left to tell.
        let _ = self.decisions.send(decision);
    }

    fn next(&mut self) -> NextBars<'_> {
        Box::pin(async move {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            let (bars, received) = self.bars.recv().await?;
            if let Some(at) = received {
                self.latency.observe(at.elapsed().as_secs_f64());
            }
            Some(bars)
        })
    }
}
