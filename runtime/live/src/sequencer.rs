//! Checking a feed's bars before a deployment stores them: each bar is
//! validated by the backtest's rules, given its symbol id, and released one
//! timestamp at a time, in order, every timestamp at most once; what does
//! not fit is rejected with a kind the caller counts (a metric label) and a
//! message it logs. Gaps (missing bars, missed messages) are counted, not
//! rejected.
//!
//! What it does not do: parse messages ([`crate::schema`]), store bars, or
//! keep time. When the feed goes quiet the caller decides the pending
//! timestamp is complete and calls [`Sequencer::flush`].

use std::collections::{HashMap, VecDeque};
use std::fmt;

use palisade_host_api::Bar;

use crate::schema::{FeedBar, Malformed};

/// How many accepted timestamps per symbol are remembered to tell a
/// duplicate from a late bar (8 KiB a symbol; a feed resending older bars
/// than that is told out of order).
const REMEMBERED: usize = 1024;

/// Why a message or bar was rejected; [`RejectKind::as_str`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// The message could not be parsed.
    Malformed,
    /// A price or volume breaks the bar rules (NaN, ≤ 0, high below low…).
    Invalid,
    /// The symbol is not one the deployment trades.
    UnknownSymbol,
    /// The bar's timestamp has already gone out (or a later one has begun)
    /// and this symbol had no bar at it.
    OutOfOrder,
    /// The same (symbol, timestamp) was already accepted or stored.
    Duplicate,
}

impl RejectKind {
    /// Every kind, for metrics that start each label at 0.
    pub const ALL: [RejectKind; 5] = [
        RejectKind::Malformed,
        RejectKind::Invalid,
        RejectKind::UnknownSymbol,
        RejectKind::OutOfOrder,
        RejectKind::Duplicate,
    ];

    /// The kind's metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Malformed => "malformed",
            RejectKind::Invalid => "invalid",
            RejectKind::UnknownSymbol => "unknown_symbol",
            RejectKind::OutOfOrder => "out_of_order",
            RejectKind::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message or bar: its kind and a message naming the symbol,
/// timestamp and problem.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Reject {
    pub kind: RejectKind,
    pub message: String,
}

impl Reject {
    /// A message that could not be parsed, as a rejection.
    pub fn malformed(error: &Malformed) -> Reject {
        Reject {
            kind: RejectKind::Malformed,
            message: error.to_string(),
        }
    }

    fn new(kind: RejectKind, bar: &FeedBar, problem: impl fmt::Display) -> Reject {
        Reject {
            kind,
            message: format!("{} at {}: {problem}", bar.symbol, bar.ts),
        }
    }
}

/// Bars missing between two of one symbol's accepted bars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub symbol: String,
    /// The symbol's previous bar (or the resume point).
    pub after: i64,
    /// The bar that arrived.
    pub ts: i64,
    /// `(ts - after) / interval - 1`.
    pub missing: u64,
}

/// What one [`Sequencer::accept`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accepted {
    /// Timestamps now complete, oldest first; each is every bar of one
    /// timestamp, in symbol id order.
    pub ready: Vec<Vec<Bar>>,
    /// Bars missing before this one, when an interval is known.
    pub gap: Option<Gap>,
    /// Messages the feed's `seq` skipped before this one.
    pub missed_messages: u64,
    /// Why the bar was not accepted, if it was not.
    pub rejected: Option<Reject>,
}

impl Accepted {
    /// Bars missing before this one (0 without a gap).
    pub fn gap_bars(&self) -> u64 {
        self.gap.as_ref().map_or(0, |g| g.missing)
    }
}

/// Orders one feed's bars into timestamps (see the module documentation).
#[derive(Debug)]
pub struct Sequencer {
    symbols: Vec<String>,
    ids: HashMap<String, usize>,
    interval_secs: Option<i64>,
    resume_after: Option<i64>,
    /// The last timestamp released (or the resume point).
    emitted: Option<i64>,
    /// The timestamp being collected, with one slot per symbol.
    pending: Option<(i64, Vec<Option<Bar>>)>,
    /// Per symbol, its most recent accepted timestamps, ascending.
    accepted: Vec<VecDeque<i64>>,
    last_seq: Option<u64>,
}

impl Sequencer {
    /// A sequencer for `symbols` (a bar's symbol id is its index here);
    /// `interval_secs` enables gap counting; `resume_after` is the last
    /// timestamp already stored (bars at or before it are duplicates).
    pub fn new(symbols: Vec<String>, interval_secs: Option<i64>, resume_after: Option<i64>) -> Sequencer {
        let ids = symbols.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        let accepted = vec![VecDeque::new(); symbols.len()];
        Sequencer {
            symbols,
            ids,
            interval_secs: interval_secs.filter(|&i| i > 0),
            resume_after,
            emitted: resume_after,
            pending: None,
            accepted,
            last_seq: None,
        }
    }

    /// The symbols, in id order.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// The timestamp being collected, if any.
    pub fn pending_ts(&self) -> Option<i64> {
        self.pending.as_ref().map(|(ts, _)| *ts)
    }

    /// Forgets the last `seq` seen, for a feed that numbers each
    /// connection's messages from the start again.
    pub fn reset_seq(&mut self) {
        self.last_seq = None;
    }

    /// Takes one bar: counts what its `seq` skipped, checks it, and returns
    /// the timestamps it completes, its gap, or why it was rejected.
    pub fn accept(&mut self, bar: FeedBar) -> Accepted {
        let mut out = Accepted {
            missed_messages: self.count_seq(bar.seq),
            ..Accepted::default()
        };
        match self.check(&bar) {
            Ok(slot) => {
                out.gap = self.gap(slot, &bar);
                self.insert(slot, &bar, &mut out.ready);
            }
            Err(reject) => out.rejected = Some(reject),
        }
        out
    }

    /// Emits the pending timestamp, complete or not (the feed went quiet).
    pub fn flush(&mut self) -> Vec<Bar> {
        match self.pending.take() {
            Some((ts, slots)) => {
                self.emitted = Some(ts);
                slots.into_iter().flatten().collect()
            }
            None => Vec::new(),
        }
    }

    /// Messages skipped between the last `seq` and this one; a `seq` at or
    /// below the last is not counted and does not move it back.
    fn count_seq(&mut self, seq: Option<u64>) -> u64 {
        let Some(seq) = seq else { return 0 };
        let missed = match self.last_seq {
            Some(last) if seq > last => seq - last - 1,
            Some(_) => return 0,
            None => 0,
        };
        self.last_seq = Some(seq);
        missed
    }

    /// The bar's symbol slot, if the bar may be accepted.
    fn check(&self, bar: &FeedBar) -> Result<usize, Reject> {
        let slot = *self.ids.get(&bar.symbol).ok_or_else(|| {
            Reject::new(
                RejectKind::UnknownSymbol,
                bar,
                "symbol is not one of the deployment's",
            )
        })?;
        palisade_backtest::data::check_bar(&to_bar(slot, bar))
            .map_err(|problem| Reject::new(RejectKind::Invalid, bar, problem))?;
        if let Some(stored) = self.resume_after.filter(|&r| bar.ts <= r) {
            let problem = format!("already stored (bars are stored up to {stored})");
            return Err(Reject::new(RejectKind::Duplicate, bar, problem));
        }
        if self.accepted[slot].binary_search(&bar.ts).is_ok() {
            return Err(Reject::new(RejectKind::Duplicate, bar, "already accepted"));
        }
        if let Some(emitted) = self.emitted.filter(|&e| bar.ts <= e) {
            let problem = format!("timestamp {emitted} has already been released");
            return Err(Reject::new(RejectKind::OutOfOrder, bar, problem));
        }
        if let Some(pending) = self.pending_ts().filter(|&p| bar.ts < p) {
            let problem = format!("timestamp {pending} has already begun");
            return Err(Reject::new(RejectKind::OutOfOrder, bar, problem));
        }
        Ok(slot)
    }

    /// The bars missing between the symbol's previous bar and this one.
    fn gap(&self, slot: usize, bar: &FeedBar) -> Option<Gap> {
        let interval = self.interval_secs?;
        let after = self.accepted[slot].back().copied().or(self.resume_after)?;
        let missing = u64::try_from((bar.ts - after) / interval - 1)
            .ok()
            .filter(|&m| m > 0)?;
        Some(Gap {
            symbol: bar.symbol.clone(),
            after,
            ts: bar.ts,
            missing,
        })
    }

    /// Adds an accepted bar: a later timestamp first releases the pending
    /// one; a timestamp every symbol has is released at once.
    fn insert(&mut self, slot: usize, bar: &FeedBar, ready: &mut Vec<Vec<Bar>>) {
        if self.pending_ts().is_some_and(|ts| ts < bar.ts) {
            ready.push(self.flush());
        }
        let count = self.symbols.len();
        let (_, slots) = self.pending.get_or_insert_with(|| (bar.ts, vec![None; count]));
        slots[slot] = Some(to_bar(slot, bar));
        if slots.iter().all(Option::is_some) {
            ready.push(self.flush());
        }
        let remembered = &mut self.accepted[slot];
        if remembered.len() == REMEMBERED {
            remembered.pop_front();
        }
        remembered.push_back(bar.ts);
    }
}

/// The ABI's bar for a feed bar of symbol id `slot`.
fn to_bar(slot: usize, bar: &FeedBar) -> Bar {
    Bar {
        ts: bar.ts,
        symbol: i32::try_from(slot).expect("symbol ids fit in i32"),
        reserved: 0,
        open: bar.open,
        high: bar.high,
        low: bar.low,
        close: bar.close,
        volume: bar.volume,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(symbol: &str, ts: i64) -> FeedBar {
        FeedBar {
            symbol: symbol.to_owned(),
            ts,
            open: 10.0,
            high: 12.0,
            low: 9.0,
            close: 11.0,
            volume: 100.0,
            seq: None,
        }
    }

    fn seq(bar: FeedBar, seq: u64) -> FeedBar {
        FeedBar {
            seq: Some(seq),
            ..bar
        }
    }

    fn sequencer(symbols: &[&str], interval: Option<i64>, resume_after: Option<i64>) -> Sequencer {
        Sequencer::new(
            symbols.iter().map(|s| s.to_string()).collect(),
            interval,
            resume_after,
        )
    }

    /// Released timestamps as (ts, [symbol ids]).
    type Released = Vec<(i64, Vec<i32>)>;

    fn released(ready: &[Vec<Bar>]) -> Released {
        ready
            .iter()
            .map(|bars| (bars[0].ts, bars.iter().map(|b| b.symbol).collect()))
            .collect()
    }

    /// Feeds `bars` and checks what each one gives: released timestamps, or the rejection kind.
    fn check(seq: &mut Sequencer, steps: &[(FeedBar, Result<Released, RejectKind>)]) {
        for (bar, expected) in steps {
            let out = seq.accept(bar.clone());
            let got = match &out.rejected {
                Some(reject) => Err(reject.kind),
                None => Ok(released(&out.ready)),
            };
            assert_eq!(&got, expected, "accepting {bar:?}: {out:?}");
        }
    }

    #[test]
    fn one_symbol_releases_each_bar_at_once() {
        let mut s = sequencer(&["A"], None, None);
        check(
            &mut s,
            &[
                (bar("A", 60), Ok(vec![(60, vec![0])])),
                (bar("A", 120), Ok(vec![(120, vec![0])])),
                (bar("A", 120), Err(RejectKind::Duplicate)),
                (bar("A", 60), Err(RejectKind::Duplicate)),
                (bar("A", 90), Err(RejectKind::OutOfOrder)),
                (bar("A", 180), Ok(vec![(180, vec![0])])),
            ],
        );
        assert!(s.flush().is_empty());
    }

    #[test]
    fn several_symbols_release_a_timestamp_when_complete_or_overtaken() {
        let mut s = sequencer(&["A", "B"], None, None);
        check(
            &mut s,
            &[
                (bar("B", 60), Ok(vec![])),
                (bar("B", 60), Err(RejectKind::Duplicate)),
                (bar("A", 60), Ok(vec![(60, vec![0, 1])])),
                (bar("A", 120), Ok(vec![])),
                // B never sends 120: 180 releases it incomplete, first.
                (bar("A", 180), Ok(vec![(120, vec![0])])),
                (bar("B", 120), Err(RejectKind::OutOfOrder)),
                (bar("A", 120), Err(RejectKind::Duplicate)),
                (bar("B", 180), Ok(vec![(180, vec![0, 1])])),
            ],
        );
        assert_eq!(s.pending_ts(), None);
    }

    #[test]
    fn flush_releases_an_incomplete_timestamp_once() {
        let mut s = sequencer(&["A", "B"], None, None);
        check(&mut s, &[(bar("A", 60), Ok(vec![]))]);
        assert_eq!(s.pending_ts(), Some(60));
        let flushed = s.flush();
        assert_eq!(released(&[flushed]), vec![(60, vec![0])]);
        assert!(s.flush().is_empty());
        check(
            &mut s,
            &[
                (bar("B", 60), Err(RejectKind::OutOfOrder)),
                (bar("A", 60), Err(RejectKind::Duplicate)),
                (bar("B", 120), Ok(vec![])),
            ],
        );
    }

    #[test]
    fn unknown_symbols_and_invalid_bars_are_rejected_with_their_reason() {
        let mut s = sequencer(&["A"], None, None);
        let cases = [
            (
                bar("Z", 60),
                RejectKind::UnknownSymbol,
                "Z at 60: symbol is not one of the deployment's",
            ),
            (
                FeedBar {
                    high: 8.0,
                    ..bar("A", 60)
                },
                RejectKind::Invalid,
                "A at 60: high 8 is below open 10",
            ),
            (
                FeedBar {
                    low: 10.5,
                    ..bar("A", 60)
                },
                RejectKind::Invalid,
                "A at 60: low 10.5 is above open 10",
            ),
            (
                FeedBar {
                    open: 0.0,
                    ..bar("A", 60)
                },
                RejectKind::Invalid,
                "A at 60: open is zero",
            ),
            (
                FeedBar {
                    close: f64::NAN,
                    ..bar("A", 60)
                },
                RejectKind::Invalid,
                "A at 60: close is NaN",
            ),
            (
                FeedBar {
                    volume: -1.0,
                    ..bar("A", 60)
                },
                RejectKind::Invalid,
                "A at 60: volume is negative (-1)",
            ),
        ];
        for (input, kind, message) in cases {
            let out = s.accept(input.clone());
            let expected = Reject {
                kind,
                message: message.to_owned(),
            };
            assert_eq!(out.rejected, Some(expected), "accepting {input:?}");
            assert!(out.ready.is_empty());
        }
        // None of them moved time: a valid bar at 60 is still accepted, and zero volume is valid.
        check(
            &mut s,
            &[(
                FeedBar {
                    volume: 0.0,
                    ..bar("A", 60)
                },
                Ok(vec![(60, vec![0])]),
            )],
        );
    }

    #[test]
    fn bars_up_to_the_resume_point_are_duplicates() {
        let mut s = sequencer(&["A", "B"], Some(60), Some(120));
        check(
            &mut s,
            &[
                (bar("A", 60), Err(RejectKind::Duplicate)),
                (bar("B", 120), Err(RejectKind::Duplicate)),
                (bar("A", 180), Ok(vec![])),
                (bar("B", 180), Ok(vec![(180, vec![0, 1])])),
            ],
        );
        let reject = sequencer(&["A"], None, Some(120))
            .accept(bar("A", 120))
            .rejected
            .unwrap();
        assert_eq!(
            reject.to_string(),
            "duplicate: A at 120: already stored (bars are stored up to 120)"
        );
    }

    #[test]
    fn gaps_count_missing_bars_per_symbol() {
        let mut s = sequencer(&["A", "B"], Some(60), None);
        assert_eq!(s.accept(bar("A", 60)).gap, None);
        assert_eq!(s.accept(bar("A", 120)).gap, None, "no gap: the next interval");
        let out = s.accept(bar("A", 300));
        let expected = Gap {
            symbol: "A".into(),
            after: 120,
            ts: 300,
            missing: 2,
        };
        assert_eq!(out.gap, Some(expected));
        assert_eq!(out.gap_bars(), 2);
        assert_eq!(
            s.accept(bar("A", 390)).gap_bars(),
            0,
            "a jump under two intervals misses nothing"
        );
        // B's first bar has nothing before it to miss.
        assert_eq!(s.accept(bar("B", 450)).gap_bars(), 0);
        // Without an interval there is nothing to count.
        let mut plain = sequencer(&["A"], None, None);
        plain.accept(bar("A", 60));
        assert_eq!(plain.accept(bar("A", 6000)).gap, None);
        // After a resume, the stored bar is the previous one.
        let mut resumed = sequencer(&["A"], Some(60), Some(120));
        assert_eq!(resumed.accept(bar("A", 300)).gap_bars(), 2);
    }

    #[test]
    fn sequence_numbers_count_missed_messages() {
        let mut s = sequencer(&["A"], None, None);
        assert_eq!(
            s.accept(seq(bar("A", 60), 7)).missed_messages,
            0,
            "the first seq misses nothing"
        );
        assert_eq!(s.accept(seq(bar("A", 120), 8)).missed_messages, 0);
        assert_eq!(s.accept(seq(bar("A", 180), 12)).missed_messages, 3);
        // A rejected bar's seq still arrived.
        let dup = s.accept(seq(bar("A", 180), 13));
        assert_eq!(
            (dup.missed_messages, dup.rejected.map(|r| r.kind)),
            (0, Some(RejectKind::Duplicate))
        );
        assert_eq!(s.accept(seq(bar("A", 240), 14)).missed_messages, 0);
        // A repeated or lower seq is not counted and does not move the count back.
        assert_eq!(s.accept(seq(bar("A", 300), 3)).missed_messages, 0);
        assert_eq!(s.accept(seq(bar("A", 360), 15)).missed_messages, 0);
        s.reset_seq();
        assert_eq!(s.accept(seq(bar("A", 420), 1)).missed_messages, 0);
        assert_eq!(s.accept(seq(bar("A", 480), 3)).missed_messages, 1);
    }

    #[test]
    fn reject_kinds_have_metric_labels() {
        let labels: Vec<&str> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "malformed",
                "invalid",
                "unknown_symbol",
                "out_of_order",
                "duplicate"
            ]
        );
        let malformed = Reject::malformed(&Malformed::Missing { field: "ts" });
        assert_eq!(malformed.to_string(), "malformed: missing field `ts`");
    }
}
