//! The semantics of ABI v1, independent of WebAssembly: one strategy's view
//! of one backtest (batches, the bar cursor, orders, fills, parameters, logs,
//! metrics, the seeded random stream) and the output limits that apply to it.
//!
//! The wasm host functions (`palisade-sandbox`) and the native host
//! (`crate::native`) are thin adapters over this type, so a strategy compiled
//! to wasm and the same strategy compiled natively see exactly the same host.
//! It knows nothing of guest memory, fuel or deadlines.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use palisade_host_api::{error, Fill};

use crate::config::RunConfig;
use crate::outcome::{Cause, Failure};
use crate::output::{LogLine, RunOutput, Usage};
use crate::policy::Policy;
use palisade_backtest::{Backtest, BacktestReport, Dataset, OrderKind};

/// Estimated bytes of result per order a guest places, charged against the
/// policy's `output_bytes`.
pub const ORDER_RECORD_BYTES: u64 = 160;

/// Longest metric name kept, in bytes.
pub const MAX_METRIC_NAME: usize = 256;

/// Where the strategy is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the first `next_batch`.
    Init,
    /// Handling bars.
    Bars,
    /// `next_batch` returned 0.
    Finished,
}

/// The output limits of a session, from the policy.
#[derive(Clone, Debug)]
pub struct OutputLimits {
    pub bars_per_batch: usize,
    pub orders_per_event: u32,
    pub log_bytes: u64,
    pub metrics: usize,
    pub output_bytes: u64,
}

impl OutputLimits {
    pub fn from_policy(p: &Policy) -> OutputLimits {
        OutputLimits {
            bars_per_batch: p.bars_per_batch as usize,
            orders_per_event: p.orders_per_event,
            log_bytes: p.log_bytes,
            metrics: p.metrics_per_run as usize,
            output_bytes: p.output_bytes,
        }
    }
}

/// One strategy's run over one dataset.
pub struct Session {
    pub data: Arc<Dataset>,
    pub bt: Backtest,
    pub limits: OutputLimits,
    pub phase: Phase,
    /// Event index of the current batch's first bar, and its length.
    batch_start: usize,
    batch_len: usize,
    /// Highest bar index (in the batch) the guest has asked about.
    cursor: usize,
    orders_at: usize,
    orders_here: u32,
    pub orders_total: u64,
    params: Vec<(String, f64)>,
    rng: u64,
    pub logs: Vec<LogLine>,
    log_bytes: u64,
    pub metrics: BTreeMap<String, f64>,
}

fn fail(cause: Cause, message: String) -> Failure {
    Failure::new(cause, message)
}

impl Session {
    pub fn new(bt: Backtest, limits: OutputLimits, params: Vec<(String, f64)>, seed: u64) -> Session {
        Session {
            data: bt.data().clone(),
            bt,
            limits,
            phase: Phase::Init,
            batch_start: 0,
            batch_len: 0,
            cursor: 0,
            orders_at: usize::MAX,
            orders_here: 0,
            orders_total: 0,
            params,
            rng: seed,
            logs: Vec::new(),
            log_bytes: 0,
            metrics: BTreeMap::new(),
        }
    }

    /// The session of one backtest run: `run`'s engine settings, parameters
    /// and seed over `data`, with `policy`'s output limits.
    pub fn for_run(data: Arc<Dataset>, policy: &Policy, run: &RunConfig) -> Session {
        let bt = Backtest::new(data, run.backtest.clone());
        Session::new(
            bt,
            OutputLimits::from_policy(policy),
            run.params.clone(),
            run.seed,
        )
    }

    /// Validates the bar index a guest passed and brings the engine up to it.
    /// `None` when no bar is being handled (init, or after the data ended).
    #[inline]
    pub fn at(&mut self, bar: i32) -> Result<Option<usize>, Failure> {
        match self.phase {
            Phase::Bars => {}
            Phase::Finished => return Ok(None),
            Phase::Init if bar == 0 => return Ok(None),
            Phase::Init => {
                return Err(fail(
                    Cause::HostAbuse,
                    format!("bar index {bar} passed before the first next_batch (must be 0)"),
                ))
            }
        }
        let Ok(bar) = usize::try_from(bar) else {
            return Err(fail(Cause::HostAbuse, format!("bar index {bar} is negative")));
        };
        if bar >= self.batch_len {
            return Err(fail(
                Cause::HostAbuse,
                format!(
                    "bar index {bar} is outside the current batch of {} bars",
                    self.batch_len
                ),
            ));
        }
        if bar < self.cursor {
            return Err(fail(
                Cause::HostAbuse,
                format!(
                    "bar index went back from {} to {bar}: bars are handled in order",
                    self.cursor
                ),
            ));
        }
        self.cursor = bar;
        let event = self.batch_start + bar;
        self.bt.advance_to(event);
        Ok(Some(event))
    }

    /// Finishes the current batch and chooses the next one: at most `cap`
    /// bars (and at most the policy's `bars_per_batch`). Returns the events
    /// to deliver, empty once the data is exhausted.
    pub fn next_batch(&mut self, cap: i32) -> Result<Range<usize>, Failure> {
        if cap <= 0 {
            return Err(fail(Cause::HostAbuse, format!("next_batch asked for {cap} bars")));
        }
        match self.phase {
            Phase::Finished => return Ok(0..0),
            Phase::Init => self.phase = Phase::Bars,
            Phase::Bars => {
                if self.batch_len > 0 {
                    self.bt.advance_to(self.batch_start + self.batch_len - 1);
                }
            }
        }
        let start = self.batch_start + self.batch_len;
        let left = self.data.len().saturating_sub(start);
        let n = (cap as usize).min(self.limits.bars_per_batch).min(left);
        self.batch_start = start;
        self.batch_len = n;
        self.cursor = 0;
        if n == 0 {
            self.phase = Phase::Finished;
        }
        Ok(start..start + n)
    }

    /// The fraction of the data's bars handed to the strategy so far.
    pub fn progress(&self) -> f64 {
        match self.data.len() {
            0 => 1.0,
            n => (self.batch_start + self.batch_len) as f64 / n as f64,
        }
    }

    /// Bars in the current batch.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }

    pub fn order(&mut self, bar: i32, symbol: i32, qty: f64, kind: i32, price: f64) -> Result<i64, Failure> {
        let Some(event) = self.at(bar)? else {
            return Ok(i64::from(error::NO_BAR));
        };
        if self.orders_at != event {
            self.orders_at = event;
            self.orders_here = 0;
        }
        self.orders_here += 1;
        self.orders_total += 1;
        if self.orders_here > self.limits.orders_per_event {
            let n = self.limits.orders_per_event;
            return Err(fail(
                Cause::OutputLimit,
                format!("placed more than {n} orders while handling bar {event} (orders_per_event)"),
            ));
        }
        if self.orders_total.saturating_mul(ORDER_RECORD_BYTES) > self.limits.output_bytes {
            let n = self.limits.output_bytes;
            return Err(fail(
                Cause::OutputLimit,
                format!(
                    "placed {} orders, more than a result of {n} bytes can hold (output_bytes)",
                    self.orders_total
                ),
            ));
        }
        let Some(kind) = OrderKind::from_abi(kind, price) else {
            return Ok(i64::from(error::BAD_ARGUMENT));
        };
        let Ok(symbol) = u32::try_from(symbol) else {
            return Ok(i64::from(error::UNKNOWN_SYMBOL));
        };
        Ok(match self.bt.place_order(event, symbol, qty, kind) {
            Ok(id) => id as i64,
            Err(e) => i64::from(e.code()),
        })
    }

    pub fn cancel(&mut self, bar: i32, id: i64) -> Result<i32, Failure> {
        self.at(bar)?;
        let Ok(id) = u64::try_from(id) else {
            return Ok(error::UNKNOWN_ORDER);
        };
        Ok(match self.bt.cancel(id) {
            Ok(()) => 0,
            Err(e) => e.code(),
        })
    }

    pub fn position(&mut self, bar: i32, symbol: i32) -> Result<f64, Failure> {
        self.at(bar)?;
        let held = u32::try_from(symbol).ok().and_then(|s| self.bt.position(s));
        Ok(held.unwrap_or(f64::NAN))
    }

    pub fn cash(&mut self, bar: i32) -> Result<f64, Failure> {
        self.at(bar)?;
        Ok(self.bt.cash())
    }

    pub fn equity(&mut self, bar: i32) -> Result<f64, Failure> {
        self.at(bar)?;
        Ok(self.bt.equity())
    }

    pub fn poll_fill(&mut self, bar: i32) -> Result<Option<Fill>, Failure> {
        self.at(bar)?;
        Ok(self.bt.pop_fill())
    }

    /// A declared parameter's value; NaN for an undeclared name.
    pub fn param(&self, name: &str) -> f64 {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, v)| *v)
    }

    pub fn symbol_name(&self, symbol: i32) -> Option<&str> {
        usize::try_from(symbol)
            .ok()
            .and_then(|i| self.data.symbols().get(i))
            .map(|s| s.as_str())
    }

    pub fn log(&mut self, level: i32, message: String) -> Result<(), Failure> {
        self.log_bytes += message.len() as u64;
        if self.log_bytes > self.limits.log_bytes {
            let n = self.limits.log_bytes;
            return Err(fail(
                Cause::OutputLimit,
                format!("logged more than {n} bytes (log_bytes)"),
            ));
        }
        let level = match level {
            0 => "error",
            1 => "warn",
            2 => "info",
            _ => "debug",
        };
        let ts = self.current_ts();
        self.logs.push(LogLine { level, ts, message });
        Ok(())
    }

    pub fn metric(&mut self, name: String, value: f64) -> Result<(), Failure> {
        if !self.metrics.contains_key(&name) && self.metrics.len() >= self.limits.metrics {
            let n = self.limits.metrics;
            return Err(fail(
                Cause::OutputLimit,
                format!("recorded more than {n} distinct metrics (metrics_per_run)"),
            ));
        }
        self.metrics.insert(name, value);
        Ok(())
    }

    /// The next value of the run's random stream (see `palisade_host_api::next_random`).
    pub fn random(&mut self) -> f64 {
        palisade_host_api::next_random(&mut self.rng)
    }

    fn current_ts(&self) -> Option<i64> {
        match self.phase {
            Phase::Bars => self.data.bars().get(self.batch_start + self.cursor).map(|b| b.ts),
            _ => None,
        }
    }

    /// What the run produced: the full report when it succeeded, the report
    /// up to where it stopped otherwise (see [`Session::abort`]).
    pub fn into_output(self, outcome: Result<(), Failure>, usage: Usage, run_seconds: f64) -> RunOutput {
        let mut session = self;
        let logs = std::mem::take(&mut session.logs);
        let metrics = std::mem::take(&mut session.metrics);
        let report = if outcome.is_ok() {
            session.bt.finish()
        } else {
            session.abort()
        };
        RunOutput {
            outcome,
            report,
            logs,
            metrics,
            usage,
            run_seconds,
        }
    }

    /// The report of a run that ended early: every bar up to the one the
    /// guest was last known to handle (the start of its current batch, or a
    /// later bar it asked about; exact with `bars_per_batch = 1`).
    pub fn abort(mut self) -> BacktestReport {
        if self.phase == Phase::Bars && self.batch_len > 0 {
            self.bt.advance_to(self.batch_start + self.cursor);
        }
        self.bt.abort()
    }

    /// A description of the current event, for messages.
    pub fn event_name(&self) -> String {
        match self.phase {
            Phase::Init => "init".into(),
            Phase::Finished => "finish".into(),
            Phase::Bars => format!(
                "the batch of {} bars starting at bar {}",
                self.batch_len, self.batch_start
            ),
        }
    }
}
