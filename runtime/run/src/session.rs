//! The semantics of ABI v2, independent of WebAssembly: one strategy's view
//! of one backtest (the timestamp cursor, orders, fills, parameters, logs,
//! metrics, the seeded random stream) and the output limits that apply to it.
//!
//! The host hands the data over one timestamp at a time ([`Session::next_bars`]):
//! every symbol's bar at `T` together, after the engine has filled the orders
//! due at `T`'s opens and marked positions at `T`'s closes. Every other call
//! is about that timestamp ("now"); nothing later is ever handed over, so a
//! strategy cannot see the future whatever it does.
//!
//! The wasm host functions (`palisade-sandbox`) and the native host
//! (`crate::native`) are thin adapters over this type, so a strategy compiled
//! to wasm and the same strategy compiled natively see exactly the same host.
//! It knows nothing of guest memory, fuel or deadlines.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use palisade_backtest::{Backtest, Dataset, OrderError, OrderKind};
use palisade_host_api::{error, Fill};

use crate::config::RunConfig;
use crate::outcome::{Cause, Failure};
use crate::output::{LogLine, RefusedOrders, RunOutput, Usage};
use crate::policy::{LogOverflow, Policy};

/// Estimated bytes of result per order a guest places, charged against the
/// policy's `output_bytes`.
pub const ORDER_RECORD_BYTES: u64 = 160;

/// Longest metric name kept, in bytes.
pub const MAX_METRIC_NAME: usize = 256;

/// Bytes each log line costs against the policy's `log_bytes` besides its
/// message: what the host keeps per line (level, timestamp, the string's
/// header), so that empty lines are not free.
pub const LOG_LINE_OVERHEAD: u64 = 64;

/// Where the strategy is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the first `next_bars`.
    Init,
    /// Handling a timestamp.
    Bars,
    /// `next_bars` returned 0: the finish phase.
    Finished,
}

/// The output limits of a session, from the policy.
#[derive(Clone, Debug)]
pub struct OutputLimits {
    pub orders_per_event: u32,
    pub log_bytes: u64,
    pub log_overflow: LogOverflow,
    pub metrics: usize,
    pub output_bytes: u64,
}

impl OutputLimits {
    pub fn from_policy(p: &Policy) -> OutputLimits {
        OutputLimits {
            orders_per_event: p.orders_per_event,
            log_bytes: p.log_bytes,
            log_overflow: p.log_overflow,
            metrics: p.metrics_per_run as usize,
            output_bytes: p.output_bytes,
        }
    }
}

/// One strategy's run over one dataset.
pub struct Session {
    pub bt: Backtest,
    pub limits: OutputLimits,
    pub phase: Phase,
    /// Events of the timestamp being handled: `now_start..now_end`.
    now_start: usize,
    now_end: usize,
    orders_here: u32,
    pub orders_total: u64,
    /// Orders the host refused, by reason.
    pub refused: RefusedOrders,
    params: Vec<(String, f64)>,
    rng: u64,
    pub logs: Vec<LogLine>,
    log_bytes: u64,
    /// Log lines dropped past `log_bytes`.
    pub logs_dropped: u64,
    pub metrics: BTreeMap<String, f64>,
    /// Host calls the strategy made (`palisade bench` reports them).
    calls: std::cell::Cell<u64>,
    /// Every accepted order, for a caller that asked
    /// ([`Session::keep_orders`]): a live deployment publishes them.
    journal: Option<Vec<PlacedOrder>>,
}

/// An order the session accepted, as a live deployment publishes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlacedOrder {
    pub id: u64,
    /// The timestamp it was decided at.
    pub ts: i64,
    pub symbol: u32,
    pub qty: f64,
    pub kind: OrderKind,
}

fn fail(cause: Cause, message: String) -> Failure {
    Failure::new(cause, message)
}

impl Session {
    pub fn new(bt: Backtest, limits: OutputLimits, params: Vec<(String, f64)>, seed: u64) -> Session {
        Session {
            bt,
            limits,
            phase: Phase::Init,
            now_start: 0,
            now_end: 0,
            orders_here: 0,
            orders_total: 0,
            refused: RefusedOrders::default(),
            params,
            rng: seed,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            metrics: BTreeMap::new(),
            calls: std::cell::Cell::new(0),
            journal: None,
        }
    }

    /// The data handed over so far (all of it, in a backtest).
    #[inline]
    pub fn data(&self) -> &Arc<Dataset> {
        self.bt.data()
    }

    /// Keeps every accepted order from now on, and every fill, for
    /// [`Session::take_orders`] and [`Backtest::take_fills`].
    pub fn keep_orders(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
        self.bt.keep_fills();
    }

    /// The log lines kept since the last call; the policy's `log_bytes`
    /// then counts afresh (a live run drains them at every timestamp, so it
    /// bounds each timestamp's logs, not a deployment's lifetime).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.log_bytes = 0;
        std::mem::take(&mut self.logs)
    }

    /// The orders accepted since the last call.
    pub fn take_orders(&mut self) -> Vec<PlacedOrder> {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The timestamp being handled; `None` in init and in the finish phase.
    pub fn now_ts(&self) -> Option<i64> {
        self.now().map(|e| self.data().bars()[e].ts)
    }

    /// The bars of the timestamp being handled (none in init and in the
    /// finish phase).
    pub fn now_bars(&self) -> &[palisade_host_api::Bar] {
        match self.phase {
            Phase::Bars => &self.data().bars()[self.now_start..self.now_end],
            _ => &[],
        }
    }

    /// True when a timestamp is waiting to be handed over: a live deployment
    /// waits for its feed otherwise.
    pub fn has_next(&self) -> bool {
        self.now_end < self.data().len()
    }

    /// Appends a live feed's bars (see [`Backtest::extend`]).
    pub fn extend(&mut self, bars: &[palisade_host_api::Bar]) -> Result<(), palisade_backtest::DataError> {
        self.bt.extend(bars)
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

    /// Counts one host call.
    #[inline]
    fn call(&self) {
        self.calls.set(self.calls.get() + 1);
    }

    /// The number of symbols: the most bars one timestamp has.
    pub fn symbol_count(&self) -> usize {
        self.call();
        self.data().symbols().len()
    }

    /// The last event of the timestamp being handled; `None` in init and in
    /// the finish phase.
    #[inline]
    fn now(&self) -> Option<usize> {
        match self.phase {
            Phase::Bars => Some(self.now_end - 1),
            _ => None,
        }
    }

    /// Hands over the next timestamp: brings the engine to the end of it
    /// (fills at its opens, marks at its closes) and returns its events (one
    /// per symbol with a bar at it); empty once the data is exhausted, which
    /// starts the finish phase. `cap` is the guest's buffer, in bars: it must
    /// hold a bar of every symbol. Asking again after the end breaks the
    /// protocol.
    #[inline]
    pub fn next_bars(&mut self, cap: i32) -> Result<Range<usize>, Failure> {
        self.call();
        match self.phase {
            Phase::Finished => {
                return Err(fail(
                    Cause::HostAbuse,
                    "next_bars called again after the data ended (it returned 0 once; the finish phase has begun)"
                        .to_owned(),
                ))
            }
            Phase::Init => self.phase = Phase::Bars,
            Phase::Bars => {}
        }
        let symbols = self.data().symbols().len();
        if usize::try_from(cap).map_or(true, |c| c < symbols) {
            return Err(fail(
                Cause::HostAbuse,
                format!("next_bars: a buffer of {cap} bars cannot hold a timestamp of {symbols} symbols (symbol_count)"),
            ));
        }
        let bars = self.data().bars();
        let start = self.now_end;
        let Some(first) = bars.get(start) else {
            self.phase = Phase::Finished;
            self.now_start = start;
            return Ok(start..start);
        };
        let ts = first.ts;
        let mut end = start + 1;
        while end < bars.len() && bars[end].ts == ts {
            end += 1;
        }
        if end - start > usize::try_from(cap).unwrap_or(0) {
            return Err(fail(
                Cause::HostAbuse,
                format!(
                    "next_bars: a buffer of {cap} bars cannot hold the {} bars at timestamp {ts}",
                    end - start
                ),
            ));
        }
        self.bt.advance_to(end - 1);
        self.now_start = start;
        self.now_end = end;
        self.orders_here = 0;
        Ok(start..end)
    }

    /// The fraction of the data's bars handed to the strategy so far.
    pub fn progress(&self) -> f64 {
        match self.data().len() {
            0 => 1.0,
            n => self.now_end as f64 / n as f64,
        }
    }

    /// Bars of the timestamp being handled.
    pub fn bars_now(&self) -> usize {
        self.now_end - self.now_start
    }

    pub fn order(&mut self, symbol: i32, qty: f64, kind: i32, price: f64) -> Result<i64, Failure> {
        self.call();
        let Some(event) = self.now() else {
            self.refused.no_bar += 1;
            return Ok(i64::from(error::NO_BAR));
        };
        self.orders_here += 1;
        self.orders_total += 1;
        if self.orders_here > self.limits.orders_per_event {
            let n = self.limits.orders_per_event;
            let ts = self.data().bars()[event].ts;
            return Err(fail(
                Cause::OutputLimit,
                format!("placed more than {n} orders while handling timestamp {ts} (orders_per_event)"),
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
            self.refused.bad_argument += 1;
            return Ok(i64::from(error::BAD_ARGUMENT));
        };
        let Ok(symbol) = u32::try_from(symbol) else {
            self.refused.unknown_symbol += 1;
            return Ok(i64::from(error::UNKNOWN_SYMBOL));
        };
        Ok(match self.bt.place_order(event, symbol, qty, kind) {
            Ok(id) => {
                if let Some(journal) = &mut self.journal {
                    let ts = self.bt.data().bars()[event].ts;
                    journal.push(PlacedOrder {
                        id,
                        ts,
                        symbol,
                        qty,
                        kind,
                    });
                }
                id as i64
            }
            Err(e) => {
                match e {
                    OrderError::BadArgument => self.refused.bad_argument += 1,
                    OrderError::UnknownSymbol => self.refused.unknown_symbol += 1,
                    OrderError::NoBar => self.refused.no_bar += 1,
                    OrderError::UnknownOrder => {}
                }
                i64::from(e.code())
            }
        })
    }

    pub fn cancel(&mut self, id: i64) -> i32 {
        self.call();
        let Ok(id) = u64::try_from(id) else {
            self.refused.unknown_order += 1;
            return error::UNKNOWN_ORDER;
        };
        match self.bt.cancel(id) {
            Ok(()) => 0,
            Err(e) => {
                self.refused.unknown_order += 1;
                e.code()
            }
        }
    }

    pub fn position(&self, symbol: i32) -> f64 {
        self.call();
        let held = u32::try_from(symbol).ok().and_then(|s| self.bt.position(s));
        held.unwrap_or(f64::NAN)
    }

    pub fn cash(&self) -> f64 {
        self.call();
        self.bt.cash()
    }

    pub fn equity(&self) -> f64 {
        self.call();
        self.bt.equity()
    }

    pub fn poll_fill(&mut self) -> Option<Fill> {
        self.call();
        self.bt.pop_fill()
    }

    /// A declared parameter's value; reading a name the manifest does not
    /// declare fails the run (`invalid_params`, naming it).
    pub fn param(&self, name: &str) -> Result<f64, Failure> {
        self.call();
        match self.params.iter().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(*v),
            None => Err(self.undeclared(name)),
        }
    }

    /// The failure of reading the undeclared parameter `name` (also for a
    /// name too long to be declared, which the host does not read).
    pub fn undeclared(&self, name: &str) -> Failure {
        let declared: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        let declared = if declared.is_empty() {
            "none".to_owned()
        } else {
            declared.join(", ")
        };
        fail(
            Cause::InvalidParams,
            format!("the strategy read parameter {name:?}, which its manifest does not declare (declared: {declared})"),
        )
    }

    /// The length of a symbol's name (0 for an unknown symbol), without
    /// counting a host call.
    pub fn symbol_name_len(&self, symbol: i32) -> usize {
        usize::try_from(symbol)
            .ok()
            .and_then(|i| self.data().symbols().get(i))
            .map_or(0, String::len)
    }

    pub fn symbol_name(&self, symbol: i32) -> Option<&str> {
        self.call();
        usize::try_from(symbol)
            .ok()
            .and_then(|i| self.data().symbols().get(i))
            .map(|s| s.as_str())
    }

    /// Whether a line of `len` message bytes fits in what is left of
    /// `log_bytes`. `Ok(false)`: it is dropped (counted, not kept, and the
    /// host need not read it); `Err`: the policy fails the run instead.
    pub fn log_fits(&mut self, len: u64) -> Result<bool, Failure> {
        self.call();
        self.log_fits_kept(len)
    }

    /// [`Session::log_fits`] for the text the host will keep, when it is
    /// longer than what the guest passed (invalid UTF-8 replaced): the same
    /// check, not another host call.
    pub fn log_fits_kept(&mut self, len: u64) -> Result<bool, Failure> {
        let cost = len.saturating_add(LOG_LINE_OVERHEAD);
        if self.log_bytes.saturating_add(cost) <= self.limits.log_bytes {
            return Ok(true);
        }
        match self.limits.log_overflow {
            LogOverflow::Truncate => {
                self.logs_dropped += 1;
                Ok(false)
            }
            LogOverflow::Fail => {
                let n = self.limits.log_bytes;
                Err(fail(
                    Cause::OutputLimit,
                    format!(
                        "logged more than {n} bytes (log_bytes, {LOG_LINE_OVERHEAD} bytes per line included; log_overflow = \"fail\")"
                    ),
                ))
            }
        }
    }

    /// A log call: keeps the line when it fits (see [`Session::log_fits`]).
    pub fn log(&mut self, level: i32, message: String) -> Result<(), Failure> {
        if !self.log_fits(message.len() as u64)? {
            return Ok(());
        }
        self.keep_log(level, message);
        Ok(())
    }

    /// Keeps a log line that [`Session::log_fits`] said fits.
    pub fn keep_log(&mut self, level: i32, message: String) {
        self.log_bytes += message.len() as u64 + LOG_LINE_OVERHEAD;
        let level = match level {
            0 => "error",
            1 => "warn",
            2 => "info",
            _ => "debug",
        };
        let ts = self.now().map(|e| self.data().bars()[e].ts);
        self.logs.push(LogLine { level, ts, message });
    }

    pub fn metric(&mut self, name: String, value: f64) -> Result<(), Failure> {
        self.call();
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
        self.call();
        palisade_host_api::next_random(&mut self.rng)
    }

    /// What the run used besides fuel and memory: orders placed and refused,
    /// log lines dropped.
    pub fn usage(&self, fuel: u64, memory_peak_bytes: u64) -> Usage {
        Usage {
            fuel,
            memory_peak_bytes,
            orders: self.orders_total,
            orders_refused: self.refused.clone(),
            logs_dropped: self.logs_dropped,
            host_calls: self.calls.get(),
        }
    }

    /// What the run produced: the full report when it succeeded, the report
    /// up to where it stopped otherwise (the timestamps handed over).
    pub fn into_output(self, outcome: Result<(), Failure>, usage: Usage, run_seconds: f64) -> RunOutput {
        let mut session = self;
        let logs = std::mem::take(&mut session.logs);
        let metrics = std::mem::take(&mut session.metrics);
        let report = if outcome.is_ok() {
            session.bt.finish()
        } else {
            session.bt.abort()
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

    /// A description of the current event, for messages.
    pub fn event_name(&self) -> String {
        match self.phase {
            Phase::Init => "init".into(),
            Phase::Finished => "finish".into(),
            Phase::Bars => format!(
                "timestamp {} ({} bars from bar {})",
                self.data().bars()[self.now_start].ts,
                self.now_end - self.now_start,
                self.now_start
            ),
        }
    }
}
