//! The host side of ABI v2 for WebAssembly guests: the `palisade.*`
//! functions, as adapters between guest memory and a [`Session`] (which holds
//! the ABI's semantics), plus what only a sandboxed guest needs: memory and
//! table limits, fuel windows, deadlines and cancellation.
//!
//! Invariant: nothing a guest passes can make the host panic. Every pointer is
//! bounds-checked against the guest's memory; a violation stops the run with a
//! classified [`Failure`]. Host work is bounded by what the guest may keep:
//! a log line that does not fit is not read, a parameter name longer than any
//! declared one is not read, names and messages are read up to their caps.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_host_api::manifest::MAX_NAME_LEN;
use palisade_host_api::{error, imports, Bar, Fill, IMPORT_MODULE};
use wasmtime::{AsContextMut, Caller, Linker, Memory, ResourceLimiter, StoreContextMut, UpdateDeadline};

use palisade_run::live::Feed;
use palisade_run::session::{Session, MAX_METRIC_NAME, ORDER_RECORD_BYTES};
use palisade_run::{Cause, Failure, Policy, ProgressFn};

/// Longest `fail` message kept, in bytes.
pub(crate) const MAX_FAIL_MESSAGE: usize = 4096;

/// Fuel every host call that reads, writes, keeps or searches records on
/// the guest's behalf costs (`order`, `cancel`, `poll_fill`, `param`,
/// `symbol_name`, `log`, `metric`, `fail`), besides one unit per
/// [`FUEL_BYTES`] bytes of it: host work is paid from the same budget as the
/// guest's own. Calls that move only scalars (`position`, `cash`, `equity`,
/// `random`, `symbol_count`) are free, and `next_bars` is the event itself
/// (its fills count against the new event's deadline).
pub const HOST_CALL_FUEL: u64 = 8;

/// Bytes of host work one unit of fuel pays for.
pub const FUEL_BYTES: u64 = 8;

/// Memory and table limits of one store; remembers a denied growth so a
/// later failure can be classified as `memory_limit`.
///
/// `memory_bytes` bounds the linear memory of the whole store: a core module
/// has one memory, a component (the Python runtime) several, and their sizes
/// add up.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    pub(crate) table_elements: usize,
    pub(crate) tables: usize,
    /// Core instances and memories a store may hold: 1 and 1 for a core
    /// module, more for a component.
    pub(crate) instances: usize,
    pub(crate) memories: usize,
    /// Linear memory granted so far, all memories together.
    total_memory: usize,
    /// Why growth was last denied.
    pub denied: Option<String>,
    /// Largest linear memory the guest reached (all memories together).
    pub peak_memory: usize,
    /// The policy key a denied growth names (`memory_bytes`, or
    /// `python_memory_bytes` for the Python runtime).
    pub(crate) memory_knob: &'static str,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total_memory.saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.denied = Some(if self.memories == 1 {
                format!(
                    "growing memory from {current} to {desired} bytes was denied: the policy allows {} bytes ({})",
                    self.memory_bytes, self.memory_knob
                )
            } else {
                format!(
                    "growing a memory from {current} to {desired} bytes was denied: that makes {total} bytes of linear memory in all, and the policy allows {} ({})",
                    self.memory_bytes, self.memory_knob
                )
            });
            return Ok(false);
        }
        self.total_memory = total;
        self.peak_memory = self.peak_memory.max(total);
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
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// Limits of one run that only a sandboxed guest has (fuel and time).
#[derive(Clone, Debug)]
pub struct RunLimits {
    pub fuel_per_event: u64,
    pub fuel_per_run: u64,
    pub deadline_per_event: Duration,
    pub deadline_per_run: Duration,
    /// The policy keys that set these limits, for messages.
    pub knobs: Knobs,
}

impl RunLimits {
    pub fn from_policy(p: &Policy) -> RunLimits {
        RunLimits {
            fuel_per_event: p.fuel_per_event,
            fuel_per_run: p.fuel_per_run,
            deadline_per_event: p.deadline_per_event(),
            deadline_per_run: p.deadline_per_run(),
            knobs: Knobs::WASM,
        }
    }
}

/// The policy keys a failure names: a Python run is bounded by the
/// `python_*` knobs (see `Policy::for_python`), and a message naming
/// `memory_bytes` or `stack_bytes` would send its reader to the wrong key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    pub memory: &'static str,
    pub stack: &'static str,
    pub fuel_per_event: &'static str,
    pub fuel_per_run: &'static str,
}

impl Knobs {
    /// A core module's limits.
    pub const WASM: Knobs = Knobs {
        memory: "memory_bytes",
        stack: "stack_bytes",
        fuel_per_event: "fuel_per_event",
        fuel_per_run: "fuel_per_run",
    };
    /// The Python runtime's limits.
    pub const PYTHON: Knobs = Knobs {
        memory: "python_memory_bytes",
        stack: "python_stack_bytes",
        fuel_per_event: "fuel_per_event * python_fuel_scale",
        fuel_per_run: "fuel_per_run * python_fuel_scale",
    };
}

/// Everything the host keeps for one run (the wasmtime store's data).
pub struct RunState {
    pub session: Session,
    pub limiter: Limiter,
    pub memory: Option<Memory>,
    pub limits: RunLimits,
    /// A failure detected by the host (bad pointer, limit, deadline).
    pub fault: Option<Failure>,
    /// What the guest reported through `fail`.
    pub guest_failure: Option<(i32, String)>,
    /// Fuel granted for the current event window, fuel used before it, and
    /// whether the run's total (not the per-event budget) bounds the window.
    pub fuel_budget: u64,
    pub fuel_used: u64,
    pub fuel_bound_by_run: bool,
    /// The engine's tick count (one per [`crate::wasm_engine::EPOCH_TICK`]), and the tick
    /// at which the current event's deadline passes: set per event without
    /// reading the clock.
    pub ticks: Arc<AtomicU64>,
    pub event_deadline_tick: u64,
    pub run_deadline: Instant,
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<ProgressFn>,
    /// A live run's feed (see [`define_live`]); `None` in a backtest.
    pub live: Option<Box<dyn Feed>>,
}

impl RunState {
    pub fn new(
        session: Session,
        policy: &Policy,
        ticks: Arc<AtomicU64>,
        cancel: Option<Arc<AtomicBool>>,
        progress: Option<ProgressFn>,
    ) -> RunState {
        let limits = RunLimits::from_policy(policy);
        let now = Instant::now();
        let event_deadline_tick = deadline_tick(&ticks, limits.deadline_per_event);
        RunState {
            session,
            limiter: Limiter {
                memory_bytes: policy.memory_bytes as usize,
                table_elements: policy.table_elements as usize,
                tables: policy.max_tables.max(1) as usize,
                instances: 1,
                memories: 1,
                total_memory: 0,
                denied: None,
                peak_memory: 0,
                memory_knob: Knobs::WASM.memory,
            },
            memory: None,
            fault: None,
            guest_failure: None,
            fuel_budget: 0,
            fuel_used: 0,
            fuel_bound_by_run: false,
            ticks,
            event_deadline_tick,
            run_deadline: now + limits.deadline_per_run,
            limits,
            cancel,
            progress,
            live: None,
        }
    }

    /// Records a host-detected failure and returns the error that stops the guest.
    pub(crate) fn fault(&mut self, failure: Failure) -> wasmtime::Error {
        self.fault = Some(failure.clone());
        wasmtime::Error::new(failure)
    }

    /// Unwraps a session result, turning a failure into the error that stops the guest.
    #[inline]
    pub(crate) fn check<T>(&mut self, r: Result<T, Failure>) -> wasmtime::Result<T> {
        r.map_err(|f| self.fault(f))
    }
}

/// What a store's data must give the generic parts of the host (fuel
/// windows, deadlines, host-call fuel): the run's state. A core module's
/// store holds a [`RunState`]; a component's holds one beside its WASI
/// context.
pub trait HasRun: Send + 'static {
    fn run(&self) -> &RunState;
    fn run_mut(&mut self) -> &mut RunState;
}

impl HasRun for RunState {
    #[inline]
    fn run(&self) -> &RunState {
        self
    }
    #[inline]
    fn run_mut(&mut self) -> &mut RunState {
        self
    }
}

/// The tick at which a window of `deadline` that starts now has passed for
/// sure: ticks come at most once per [`crate::wasm_engine::EPOCH_TICK`], so `deadline`
/// (rounded up to ticks) plus one more tick never ends a window early.
pub(crate) fn deadline_tick(ticks: &AtomicU64, deadline: Duration) -> u64 {
    let per_tick = crate::wasm_engine::EPOCH_TICK.as_nanos().max(1);
    let n = deadline.as_nanos().div_ceil(per_tick) as u64;
    ticks.load(Ordering::Relaxed).saturating_add(n).saturating_add(1)
}

/// Grants fuel for the next window of `events` events: `fuel_per_event` per
/// event, bounded by what is left of `fuel_per_run`, and starts the window's
/// deadline (`deadline_per_event`).
#[inline]
pub fn refuel<T: HasRun>(store: &mut StoreContextMut<'_, T>, events: u64) -> wasmtime::Result<()> {
    let left = store.get_fuel()?;
    let st = store.data_mut().run_mut();
    st.fuel_used += st.fuel_budget.saturating_sub(left);
    let run_left = st.limits.fuel_per_run.saturating_sub(st.fuel_used);
    let want = st.limits.fuel_per_event.saturating_mul(events.max(1));
    st.fuel_bound_by_run = run_left < want;
    st.fuel_budget = want.min(run_left);
    st.event_deadline_tick = deadline_tick(&st.ticks, st.limits.deadline_per_event);
    let budget = st.fuel_budget;
    store.set_fuel(budget)
}

/// Fuel used so far, the current window included.
pub fn fuel_used<T: HasRun>(store: &StoreContextMut<'_, T>) -> u64 {
    let left = store.get_fuel().unwrap_or(0);
    let st = store.data().run();
    st.fuel_used + st.fuel_budget.saturating_sub(left)
}

/// The epoch callback: cancellation and deadlines are checked at every tick,
/// and the guest yields to the executor so one run cannot hold a worker.
pub fn on_epoch<T: HasRun>(mut store: StoreContextMut<'_, T>) -> wasmtime::Result<UpdateDeadline> {
    let st = store.data_mut().run_mut();
    if st.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(st.fault(Failure::new(Cause::Cancelled, "the run was cancelled")));
    }
    if let Some(progress) = &st.progress {
        (progress.0)(st.session.progress());
    }
    let now = Instant::now();
    if now >= st.run_deadline {
        let ms = st.limits.deadline_per_run.as_millis();
        return Err(st.fault(Failure::new(
            Cause::Deadline,
            format!("the run took longer than {ms} ms (deadline_per_run_ms)"),
        )));
    }
    if st.ticks.load(Ordering::Relaxed) >= st.event_deadline_tick {
        let ms = st.limits.deadline_per_event.as_millis();
        let what = st.session.event_name();
        return Err(st.fault(Failure::new(
            Cause::Deadline,
            format!("{what} took longer than {ms} ms (deadline_per_event_ms)"),
        )));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// Takes the fuel of a host call that handles `bytes` bytes
/// ([`HOST_CALL_FUEL`]); running out is `fuel_exhausted`, as for the guest's
/// own code.
pub(crate) fn charge<T: HasRun>(
    store: &mut impl AsContextMut<Data = T>,
    call: &str,
    bytes: u64,
) -> wasmtime::Result<()> {
    charge_fuel(store, call, HOST_CALL_FUEL.saturating_add(bytes / FUEL_BYTES))
}

/// Takes `cost` fuel for host work done in `call`; running out is
/// `fuel_exhausted`, as for the guest's own code.
pub(crate) fn charge_fuel<T: HasRun>(
    store: &mut impl AsContextMut<Data = T>,
    call: &str,
    cost: u64,
) -> wasmtime::Result<()> {
    let mut store = store.as_context_mut();
    let left = store.get_fuel()?;
    if left >= cost {
        return store.set_fuel(left - cost);
    }
    store.set_fuel(0)?;
    let st = store.data_mut().run_mut();
    let message = if st.fuel_bound_by_run {
        format!(
            "used all {} fuel of the run ({}), the last of it in host call {IMPORT_MODULE}.{call}",
            st.limits.fuel_per_run, st.limits.knobs.fuel_per_run
        )
    } else {
        format!(
            "{} used more than {} fuel per event ({}), the last of it in host call {IMPORT_MODULE}.{call}",
            st.session.event_name(),
            st.limits.fuel_per_event,
            st.limits.knobs.fuel_per_event
        )
    };
    Err(st.fault(Failure::new(Cause::FuelExhausted, message)))
}

/// A byte range of guest memory, or a `bad_pointer` failure naming the call.
fn span(st: &mut RunState, mem_len: usize, call: &str, ptr: i32, len: u64) -> wasmtime::Result<Range<usize>> {
    let start = u64::from(ptr as u32);
    match start.checked_add(len) {
        Some(end) if end <= mem_len as u64 => Ok(start as usize..end as usize),
        _ => Err(st.fault(Failure::new(
            Cause::BadPointer,
            format!(
                "{IMPORT_MODULE}.{call}: {len} bytes at address {start:#x} are outside the guest's memory ({mem_len} bytes)"
            ),
        ))),
    }
}

fn memory(caller: &mut Caller<'_, RunState>) -> wasmtime::Result<Memory> {
    match caller.data().memory {
        Some(m) => Ok(m),
        None => {
            let st = caller.data_mut();
            Err(st.fault(Failure::new(
                Cause::HostAbuse,
                "host called before the guest's memory was bound",
            )))
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
    linker.func_wrap(IMPORT_MODULE, imports::NEXT_BARS, next_bars)?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::SYMBOL_COUNT,
        |caller: Caller<'_, RunState>| -> i32 {
            i32::try_from(caller.data().session.symbol_count()).unwrap_or(i32::MAX)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::ORDER,
        |mut caller: Caller<'_, RunState>,
         symbol: i32,
         qty: f64,
         kind: i32,
         price: f64|
         -> wasmtime::Result<i64> {
            charge(&mut caller, imports::ORDER, ORDER_RECORD_BYTES)?;
            let st = caller.data_mut();
            let r = st.session.order(symbol, qty, kind, price);
            st.check(r)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::CANCEL,
        |mut caller: Caller<'_, RunState>, id: i64| -> wasmtime::Result<i32> {
            // Cancelling looks through the symbol's pending orders.
            charge(&mut caller, imports::CANCEL, ORDER_RECORD_BYTES)?;
            Ok(caller.data_mut().session.cancel(id))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::POSITION,
        |caller: Caller<'_, RunState>, symbol: i32| -> f64 { caller.data().session.position(symbol) },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::CASH,
        |caller: Caller<'_, RunState>| -> f64 { caller.data().session.cash() },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::EQUITY,
        |caller: Caller<'_, RunState>| -> f64 { caller.data().session.equity() },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::POLL_FILL,
        |mut caller: Caller<'_, RunState>, out: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, imports::POLL_FILL, Fill::SIZE as u64)?;
            let mem = memory(&mut caller)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let range = span(st, data.len(), imports::POLL_FILL, out, Fill::SIZE as u64)?;
            Ok(match st.session.poll_fill() {
                Some(fill) => {
                    data[range].copy_from_slice(&fill.to_le_bytes());
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
            // No declared name is longer: a longer one is refused unread.
            if len as u32 as usize > MAX_NAME_LEN {
                let st = caller.data_mut();
                let f = st.session.undeclared(&format!("<{} bytes>", len as u32));
                return Err(st.fault(f));
            }
            charge(&mut caller, imports::PARAM, u64::from(len as u32))?;
            let name = read_str(&mut caller, imports::PARAM, ptr, len, MAX_NAME_LEN)?;
            let st = caller.data_mut();
            let r = st.session.param(&name);
            st.check(r)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::SYMBOL_NAME,
        |mut caller: Caller<'_, RunState>, symbol: i32, out: i32, cap: i32| -> wasmtime::Result<i32> {
            let written = caller.data().session.symbol_name_len(symbol);
            charge(
                &mut caller,
                imports::SYMBOL_NAME,
                written.min(cap.max(0) as usize) as u64,
            )?;
            let mem = memory(&mut caller)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let r = span(st, data.len(), imports::SYMBOL_NAME, out, u64::from(cap as u32))?;
            let Some(name) = st.session.symbol_name(symbol) else {
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
            let mem = memory(&mut caller)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let r = span(st, data.len(), imports::LOG, ptr, u64::from(len as u32))?;
            // A line that does not fit is dropped (or fails the run) unread,
            // for the call's fixed fuel only.
            let fits = st.session.log_fits(r.len() as u64);
            if !st.check(fits)? {
                return charge(&mut caller, imports::LOG, 0);
            }
            charge(&mut caller, imports::LOG, r.len() as u64)?;
            let (data, st) = mem.data_and_store_mut(&mut caller);
            let read = r.len();
            let message = String::from_utf8_lossy(&data[r]).into_owned();
            // Invalid UTF-8 grows when replaced: what is kept must fit too.
            if message.len() > read {
                let fits = st.session.log_fits_kept(message.len() as u64);
                if !st.check(fits)? {
                    return Ok(());
                }
            }
            st.session.keep_log(level, message);
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::FAIL,
        |mut caller: Caller<'_, RunState>, kind: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            charge(
                &mut caller,
                imports::FAIL,
                (len as u32 as u64).min(MAX_FAIL_MESSAGE as u64),
            )?;
            let message = read_str(&mut caller, imports::FAIL, ptr, len, MAX_FAIL_MESSAGE)?;
            let st = caller.data_mut();
            st.guest_failure = Some((kind, message.clone()));
            Err(wasmtime::Error::msg(format!("guest failed: {message}")))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::RANDOM,
        |mut caller: Caller<'_, RunState>| -> f64 { caller.data_mut().session.random() },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        imports::METRIC,
        |mut caller: Caller<'_, RunState>, ptr: i32, len: i32, value: f64| -> wasmtime::Result<()> {
            charge(
                &mut caller,
                imports::METRIC,
                (len as u32 as u64).min(MAX_METRIC_NAME as u64),
            )?;
            let name = read_str(&mut caller, imports::METRIC, ptr, len, MAX_METRIC_NAME)?;
            let st = caller.data_mut();
            let r = st.session.metric(name, value);
            st.check(r)
        },
    )?;
    Ok(())
}

/// Replaces `next_bars` in `linker` (a copy of [`define`]'s) with the live
/// one: it tells the run's [`Feed`] what the strategy decided at the
/// timestamp it just handled, and when no stored bar is left to hand over,
/// waits for the feed's next bars (the strategy's instance stays suspended,
/// costing no thread) before handing them over like [`next_bars`]. Time spent
/// waiting counts against no deadline: the event's window starts when its
/// bars arrive.
pub fn define_live(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        IMPORT_MODULE,
        imports::NEXT_BARS,
        |mut caller: Caller<'_, RunState>, (buf, cap): (i32, i32)| {
            Box::new(async move {
                let (mut feed, wait) = take_feed(caller.data_mut())?;
                let bars = if wait { feed.next().await } else { None };
                give_feed(caller.data_mut(), feed, bars)?;
                next_bars(caller, buf, cap)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A live `next_bars`' first half: takes the run's feed out of its state
/// (so the state is not borrowed while it waits), tells it what the
/// strategy decided, and says whether to wait for bars (none is left).
pub(crate) fn take_feed(st: &mut RunState) -> wasmtime::Result<(Box<dyn Feed>, bool)> {
    let Some(mut feed) = st.live.take() else {
        let f = Failure::new(Cause::HostAbuse, "a live import in a run without a feed");
        return Err(st.fault(f));
    };
    feed.decided(&mut st.session);
    Ok((feed, !st.session.has_next()))
}

/// Its second half: puts the feed back and appends the bars it gave.
pub(crate) fn give_feed(
    st: &mut RunState,
    feed: Box<dyn Feed>,
    bars: Option<Vec<Bar>>,
) -> wasmtime::Result<()> {
    st.live = Some(feed);
    if let Some(bars) = bars {
        if let Err(e) = st.session.extend(&bars) {
            let f = Failure::new(Cause::HostAbuse, format!("the feed handed over a bad bar: {e}"));
            return Err(st.fault(f));
        }
    }
    Ok(())
}

/// `next_bars`: hands over the next timestamp and grants its fuel and
/// deadline window; at the end of the data, the finish phase's window (one
/// event's, once: asking again is refused by the session).
#[inline]
fn next_bars(mut caller: Caller<'_, RunState>, buf: i32, cap: i32) -> wasmtime::Result<i32> {
    let mem = memory(&mut caller)?;
    let (data, st) = mem.data_and_store_mut(&mut caller);
    // The whole buffer the guest declares must be its own, however many bars
    // this timestamp has.
    let declared = u64::from(cap.max(0) as u32) * Bar::SIZE as u64;
    let out = span(st, data.len(), imports::NEXT_BARS, buf, declared)?;
    // The new window's deadline counts the engine's work for it (fills of
    // pending orders at the timestamp's opens) too.
    let deadline = deadline_tick(&st.ticks, st.limits.deadline_per_event);
    let r = st.session.next_bars(cap);
    let events = st.check(r)?;
    let n = events.len();
    write_bars(&mut data[out], &st.session.data().bars()[events]);
    refuel(&mut caller.as_context_mut(), n.max(1) as u64)?;
    caller.data_mut().event_deadline_tick = deadline;
    Ok(n as i32)
}

/// Writes `bars` as consecutive [`Bar`] records at the start of `out`,
/// straight into guest memory with [`Bar::write_le`] (no temporary record:
/// this runs for every bar of every run).
#[inline]
fn write_bars(out: &mut [u8], bars: &[Bar]) {
    let (records, _) = out.as_chunks_mut::<{ Bar::SIZE }>();
    for (record, bar) in records.iter_mut().zip(bars) {
        bar.write_le(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bars_matches_the_abi_layout() {
        let bars: Vec<Bar> = (0..3)
            .map(|i| Bar {
                ts: -5 + i,
                symbol: i as i32,
                reserved: 7,
                open: 1.5 + i as f64,
                high: f64::MAX,
                low: -0.0,
                close: f64::NAN,
                volume: 1e-300,
            })
            .collect();
        let mut out = vec![0xAA; 4 * Bar::SIZE];
        write_bars(&mut out, &bars);
        let want: Vec<u8> = bars.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(&out[..3 * Bar::SIZE], &want[..]);
        assert!(
            out[3 * Bar::SIZE..].iter().all(|&b| b == 0xAA),
            "wrote past the bars"
        );
    }
}
