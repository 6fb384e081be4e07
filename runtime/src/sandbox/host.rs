//! The host side of ABI v1: the state of one run and the `palisade.*`
//! functions a guest may import.
//!
//! Invariant: nothing a guest passes can make the host panic. Every pointer is
//! bounds-checked against the guest's memory, every index against the current
//! batch; a violation stops the run with a classified [`Failure`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_host_api::{error, imports, Bar, Fill, IMPORT_MODULE};
use serde::Serialize;
use wasmtime::{AsContextMut, Caller, Linker, Memory, ResourceLimiter, StoreContextMut, UpdateDeadline};

use super::outcome::{Cause, Failure};
use crate::engine::{Backtest, Dataset, OrderKind};
use crate::policy::Policy;

/// Estimated bytes of result per order a guest places, charged against the
/// policy's `output_bytes`.
pub const ORDER_RECORD_BYTES: u64 = 160;

/// Longest `fail` message kept, in bytes.
const MAX_FAIL_MESSAGE: usize = 4096;

/// Memory and table limits of one store; remembers a denied growth so a
/// later failure can be classified as `memory_limit`.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    /// Why growth was last denied.
    pub denied: Option<String>,
    /// Largest linear memory the guest reached.
    pub peak_memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.denied = Some(format!(
                "growing memory from {current} to {desired} bytes was denied: the policy allows {} bytes (memory_bytes)",
                self.memory_bytes
            ));
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.denied = Some(format!(
                "growing a table from {current} to {desired} elements was denied: the policy allows {} (table_elements)",
                self.table_elements
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Where the guest is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the first `next_batch`.
    Init,
    /// Handling bars.
    Bars,
    /// `next_batch` returned 0.
    Finished,
}

/// One line the guest logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    /// Timestamp of the bar being handled, if any.
    pub ts: Option<i64>,
    pub message: String,
}

/// Limits of one run, taken from the policy.
#[derive(Clone, Debug)]
pub struct RunLimits {
    pub fuel_per_event: u64,
    pub fuel_per_run: u64,
    pub bars_per_batch: usize,
    pub orders_per_event: u32,
    pub log_bytes: u64,
    pub metrics: usize,
    pub output_bytes: u64,
    pub deadline_per_event: Duration,
    pub deadline_per_run: Duration,
}

impl RunLimits {
    pub fn from_policy(p: &Policy) -> RunLimits {
        RunLimits {
            fuel_per_event: p.fuel_per_event,
            fuel_per_run: p.fuel_per_run,
            bars_per_batch: p.bars_per_batch as usize,
            orders_per_event: p.orders_per_event,
            log_bytes: p.log_bytes,
            metrics: p.metrics_per_run as usize,
            output_bytes: p.output_bytes,
            deadline_per_event: p.deadline_per_event(),
            deadline_per_run: p.deadline_per_run(),
        }
    }
}

/// Everything the host keeps for one run (the wasmtime store's data).
pub struct RunState {
    pub limiter: Limiter,
    pub memory: Option<Memory>,
    pub data: Arc<Dataset>,
    pub bt: Backtest,
    pub limits: RunLimits,
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
    /// A failure detected by the host (bad pointer, limit, deadline).
    pub fault: Option<Failure>,
    /// What the guest reported through `fail`.
    pub guest_failure: Option<(i32, String)>,
    /// Fuel granted for the current event window, fuel used before it, and
    /// whether the run's total (not the per-event budget) bounds the window.
    pub fuel_budget: u64,
    pub fuel_used: u64,
    pub fuel_bound_by_run: bool,
    pub window_events: u64,
    pub event_deadline: Instant,
    pub run_deadline: Instant,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl RunState {
    pub fn new(
        data: Arc<Dataset>,
        bt: Backtest,
        policy: &Policy,
        params: Vec<(String, f64)>,
        seed: u64,
        cancel: Option<Arc<AtomicBool>>,
    ) -> RunState {
        let limits = RunLimits::from_policy(policy);
        let now = Instant::now();
        RunState {
            limiter: Limiter {
                memory_bytes: policy.memory_bytes as usize,
                table_elements: policy.table_elements as usize,
                denied: None,
                peak_memory: 0,
            },
            memory: None,
            data,
            bt,
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
            fault: None,
            guest_failure: None,
            fuel_budget: 0,
            fuel_used: 0,
            fuel_bound_by_run: false,
            window_events: 1,
            event_deadline: now + limits.deadline_per_event,
            run_deadline: now + limits.deadline_per_run,
            limits,
            cancel,
        }
    }

    /// Records a host-detected failure and returns the error that stops the guest.
    fn fault(&mut self, cause: Cause, message: String) -> wasmtime::Error {
        let failure = Failure::new(cause, message);
        self.fault = Some(failure.clone());
        wasmtime::Error::new(failure)
    }

    /// Validates the bar index a guest passed and brings the engine up to it.
    /// `None` when no bar is being handled (init, or after the data ended).
    #[inline]
    fn at(&mut self, bar: i32) -> wasmtime::Result<Option<usize>> {
        match self.phase {
            Phase::Bars => {}
            Phase::Finished => return Ok(None),
            Phase::Init if bar == 0 => return Ok(None),
            Phase::Init => {
                return Err(self.fault(
                    Cause::HostAbuse,
                    format!("bar index {bar} passed before the first next_batch (must be 0)"),
                ))
            }
        }
        let Ok(bar) = usize::try_from(bar) else {
            return Err(self.fault(Cause::HostAbuse, format!("bar index {bar} is negative")));
        };
        if bar >= self.batch_len {
            return Err(self.fault(
                Cause::HostAbuse,
                format!(
                    "bar index {bar} is outside the current batch of {} bars",
                    self.batch_len
                ),
            ));
        }
        if bar < self.cursor {
            return Err(self.fault(
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

    fn next_random(&mut self) -> f64 {
        // splitmix64 over the run's seed: deterministic per job.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn current_ts(&self) -> Option<i64> {
        match self.phase {
            Phase::Bars => self.data.bars().get(self.batch_start + self.cursor).map(|b| b.ts),
            _ => None,
        }
    }

    /// A description of the current event, for deadline messages.
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

/// Grants fuel for the next window of `events` events: `fuel_per_event` per
/// event, bounded by what is left of `fuel_per_run`.
pub fn refuel(store: &mut StoreContextMut<'_, RunState>, events: u64) -> wasmtime::Result<()> {
    let left = store.get_fuel()?;
    let st = store.data_mut();
    st.fuel_used += st.fuel_budget.saturating_sub(left);
    let run_left = st.limits.fuel_per_run.saturating_sub(st.fuel_used);
    let want = st.limits.fuel_per_event.saturating_mul(events.max(1));
    st.fuel_bound_by_run = run_left < want;
    st.fuel_budget = want.min(run_left);
    st.window_events = events.max(1);
    st.event_deadline = Instant::now() + st.limits.deadline_per_event;
    let budget = st.fuel_budget;
    store.set_fuel(budget)
}

/// Fuel used so far, the current window included.
pub fn fuel_used(store: &StoreContextMut<'_, RunState>) -> u64 {
    let left = store.get_fuel().unwrap_or(0);
    let st = store.data();
    st.fuel_used + st.fuel_budget.saturating_sub(left)
}

/// The epoch callback: cancellation and deadlines are checked at every tick,
/// and the guest yields to the executor so one run cannot hold a worker.
pub fn on_epoch(mut store: StoreContextMut<'_, RunState>) -> wasmtime::Result<UpdateDeadline> {
    let st = store.data_mut();
    if st.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(st.fault(Cause::Cancelled, "the run was cancelled".into()));
    }
    let now = Instant::now();
    if now >= st.run_deadline {
        let ms = st.limits.deadline_per_run.as_millis();
        return Err(st.fault(
            Cause::Deadline,
            format!("the run took longer than {ms} ms (deadline_per_run_ms)"),
        ));
    }
    if now >= st.event_deadline {
        let ms = st.limits.deadline_per_event.as_millis();
        let what = st.event_name();
        return Err(st.fault(
            Cause::Deadline,
            format!("{what} took longer than {ms} ms (deadline_per_event_ms)"),
        ));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// A byte range of guest memory, or a `bad_pointer` failure naming the call.
fn span(st: &mut RunState, mem_len: usize, call: &str, ptr: i32, len: u64) -> wasmtime::Result<Range<usize>> {
    let start = u64::from(ptr as u32);
    match start.checked_add(len) {
        Some(end) if end <= mem_len as u64 => Ok(start as usize..end as usize),
        _ => Err(st.fault(
            Cause::BadPointer,
            format!(
                "{IMPORT_MODULE}.{call}: {len} bytes at address {start:#x} are outside the guest's memory ({mem_len} bytes)"
            ),
        )),
    }
}

fn memory(caller: &mut Caller<'_, RunState>) -> wasmtime::Result<Memory> {
    match caller.data().memory {
        Some(m) => Ok(m),
        None => {
            let st = caller.data_mut();
            Err(st.fault(
                Cause::HostAbuse,
                "host called before the guest's memory was bound".into(),
            ))
        }
    }
}

/// Reads a guest string (lossily: invalid UTF-8 becomes U+FFFD).
fn read_str(
    caller: &mut Caller<'_, RunState>,
    call: &str,
    ptr: i32,
    len: i32,
    cap: usize,
) -> wasmtime::Result<String> {
    let mem = memory(caller)?;
    let (data, st) = mem.data_and_store_mut(&mut *caller);
    let len = u64::from(len as u32);
    let r = span(st, data.len(), call, ptr, len)?;
    let r = r.start..r.end.min(r.start.saturating_add(cap));
    Ok(String::from_utf8_lossy(&data[r]).into_owned())
}

/// Adds the `palisade.*` functions to `linker`.
pub fn define(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.func_wrap(IMPORT_MODULE, imports::NEXT_BATCH, next_batch)?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::ORDER,
        |mut caller: Caller<'_, RunState>,
         bar: i32,
         symbol: i32,
         qty: f64,
         kind: i32,
         price: f64|
         -> wasmtime::Result<i64> {
            let st = caller.data_mut();
            let Some(event) = st.at(bar)? else {
                return Ok(i64::from(error::NO_BAR));
            };
            if st.orders_at != event {
                st.orders_at = event;
                st.orders_here = 0;
            }
            st.orders_here += 1;
            st.orders_total += 1;
            if st.orders_here > st.limits.orders_per_event {
                let n = st.limits.orders_per_event;
                return Err(st.fault(
                    Cause::OutputLimit,
                    format!("placed more than {n} orders while handling bar {event} (orders_per_event)"),
                ));
            }
            if st.orders_total.saturating_mul(ORDER_RECORD_BYTES) > st.limits.output_bytes {
                let n = st.limits.output_bytes;
                return Err(st.fault(
                    Cause::OutputLimit,
                    format!(
                        "placed {} orders, more than a result of {n} bytes can hold (output_bytes)",
                        st.orders_total
                    ),
                ));
            }
            let Some(kind) = OrderKind::from_abi(kind, price) else {
                return Ok(i64::from(error::BAD_ARGUMENT));
            };
            let Ok(symbol) = u32::try_from(symbol) else {
                return Ok(i64::from(error::UNKNOWN_SYMBOL));
            };
            Ok(match st.bt.place_order(event, symbol, qty, kind) {
                Ok(id) => id as i64,
                Err(e) => i64::from(e.code()),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::CANCEL,
        |mut caller: Caller<'_, RunState>, bar: i32, id: i64| -> wasmtime::Result<i32> {
            let st = caller.data_mut();
            st.at(bar)?;
            let Ok(id) = u64::try_from(id) else {
                return Ok(error::UNKNOWN_ORDER);
            };
            Ok(match st.bt.cancel(id) {
                Ok(()) => 0,
                Err(e) => e.code(),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::POSITION,
        |mut caller: Caller<'_, RunState>, bar: i32, symbol: i32| -> wasmtime::Result<f64> {
            let st = caller.data_mut();
            st.at(bar)?;
            let held = u32::try_from(symbol).ok().and_then(|s| st.bt.position(s));
            Ok(held.unwrap_or(f64::NAN))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::CASH,
        |mut caller: Caller<'_, RunState>, bar: i32| -> wasmtime::Result<f64> {
            let st = caller.data_mut();
            st.at(bar)?;
            Ok(st.bt.cash())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::EQUITY,
        |mut caller: Caller<'_, RunState>, bar: i32| -> wasmtime::Result<f64> {
            let st = caller.data_mut();
            st.at(bar)?;
            Ok(st.bt.equity())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::POLL_FILL,
        |mut caller: Caller<'_, RunState>, bar: i32, out: i32| -> wasmtime::Result<i32> {
            let mem = memory(&mut caller)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let r = span(st, data.len(), imports::POLL_FILL, out, Fill::SIZE as u64)?;
            st.at(bar)?;
            Ok(match st.bt.pop_fill() {
                Some(fill) => {
                    data[r].copy_from_slice(&fill.to_le_bytes());
                    1
                }
                None => 0,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::PARAM,
        |mut caller: Caller<'_, RunState>, ptr: i32, len: i32| -> wasmtime::Result<f64> {
            let name = read_str(&mut caller, imports::PARAM, ptr, len, usize::MAX)?;
            let st = caller.data();
            Ok(st
                .params
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(f64::NAN, |(_, v)| *v))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::SYMBOL_NAME,
        |mut caller: Caller<'_, RunState>, symbol: i32, out: i32, cap: i32| -> wasmtime::Result<i32> {
            let mem = memory(&mut caller)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let r = span(st, data.len(), imports::SYMBOL_NAME, out, u64::from(cap as u32))?;
            let name = usize::try_from(symbol)
                .ok()
                .and_then(|i| st.data.symbols().get(i));
            let Some(name) = name else {
                return Ok(error::UNKNOWN_SYMBOL);
            };
            let n = name.len().min(r.len());
            data[r.start..r.start + n].copy_from_slice(&name.as_bytes()[..n]);
            Ok(name.len() as i32)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::LOG,
        |mut caller: Caller<'_, RunState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let message = read_str(&mut caller, imports::LOG, ptr, len, usize::MAX)?;
            let st = caller.data_mut();
            st.log_bytes += message.len() as u64;
            if st.log_bytes > st.limits.log_bytes {
                let n = st.limits.log_bytes;
                return Err(st.fault(
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
            let ts = st.current_ts();
            st.logs.push(LogLine { level, ts, message });
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::FAIL,
        |mut caller: Caller<'_, RunState>, kind: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let message = read_str(&mut caller, imports::FAIL, ptr, len, MAX_FAIL_MESSAGE)?;
            let st = caller.data_mut();
            st.guest_failure = Some((kind, message.clone()));
            Err(wasmtime::Error::msg(format!("guest failed: {message}")))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::RANDOM,
        |mut caller: Caller<'_, RunState>| -> f64 { caller.data_mut().next_random() },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::METRIC,
        |mut caller: Caller<'_, RunState>, ptr: i32, len: i32, value: f64| -> wasmtime::Result<()> {
            let name = read_str(&mut caller, imports::METRIC, ptr, len, 256)?;
            let st = caller.data_mut();
            if !st.metrics.contains_key(&name) && st.metrics.len() >= st.limits.metrics {
                let n = st.limits.metrics;
                return Err(st.fault(
                    Cause::OutputLimit,
                    format!("recorded more than {n} distinct metrics (metrics_per_run)"),
                ));
            }
            st.metrics.insert(name, value);
            Ok(())
        },
    )?;
    Ok(())
}

fn next_batch(mut caller: Caller<'_, RunState>, buf: i32, cap: i32) -> wasmtime::Result<i32> {
    let mem = memory(&mut caller)?;
    let (data, st) = mem.data_and_store_mut(&mut caller);
    if cap <= 0 {
        return Err(st.fault(Cause::HostAbuse, format!("next_batch asked for {cap} bars")));
    }
    match st.phase {
        Phase::Finished => return Ok(0),
        Phase::Init => st.phase = Phase::Bars,
        Phase::Bars => {
            if st.batch_len > 0 {
                st.bt.advance_to(st.batch_start + st.batch_len - 1);
            }
        }
    }
    let start = st.batch_start + st.batch_len;
    let dataset = st.data.clone();
    let bars: &[Bar] = dataset.bars();
    let n = (cap as usize)
        .min(st.limits.bars_per_batch)
        .min(bars.len() - start.min(bars.len()));
    let r = span(st, data.len(), imports::NEXT_BATCH, buf, (n * Bar::SIZE) as u64)?;
    for (chunk, bar) in data[r].chunks_exact_mut(Bar::SIZE).zip(&bars[start..start + n]) {
        chunk.copy_from_slice(&bar.to_le_bytes());
    }
    st.batch_start = start;
    st.batch_len = n;
    st.cursor = 0;
    if n == 0 {
        st.phase = Phase::Finished;
    }
    refuel(&mut caller.as_context_mut(), n.max(1) as u64)?;
    Ok(n as i32)
}
