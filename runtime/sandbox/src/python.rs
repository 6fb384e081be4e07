//! Python strategies: the host side of the WIT world
//! `palisade:strategy/python-strategy` (`host-api/wit/palisade.wit`).
//!
//! One generic runtime component (CPython for WASI with the Python SDK,
//! built by `scripts/build-python-runtime.sh`) is compiled once per process
//! or loaded precompiled ([`crate::PythonRuntime`]); a strategy is its source, handed
//! to a fresh instance of that component for every run (`run`) and once at
//! load time (`describe`, which checks it and returns its manifest).
//!
//! The `host` interface's functions are ABI v2's imports one for one and
//! adapt the same [`palisade_run::session::Session`], fuel windows and
//! deadlines as the core module host (`host.rs`); only how values cross
//! differs. WASI is linked so that Python's own failures stay ordinary
//! exceptions, but grants nothing: no preopened directory, environment,
//! arguments or sockets; stdout and stderr are bounded pipes whose contents
//! end in the run's logs; both clocks read the timestamp last handed over,
//! and waiting on them returns at once; randomness is the run's seed, at
//! most 64 KiB a call.

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_host_api::manifest::MAX_NAME_LEN;
use palisade_host_api::{log_level, Fill};
use palisade_run::session::{MAX_METRIC_NAME, ORDER_RECORD_BYTES};
use palisade_run::{Cause, Failure};
use wasmtime::component::{ComponentType, Lift, Linker, ResourceTable};
use wasmtime::{AsContextMut, StoreContextMut};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::host::{self, HasRun, Knobs, RunState, MAX_FAIL_MESSAGE};
use crate::indicators::{Declaration, Indicators, INDICATOR_FUEL};

/// The instance of the `host` interface the runtime component imports.
pub const HOST_INTERFACE: &str = "palisade:strategy/host@2.0.0";
/// The component's exports.
pub const DESCRIBE: &str = "describe";
pub const RUN: &str = "run";

/// Core instances, memories and tables one component store may hold (the
/// runtime component has a few dozen core instances; the limits keep a
/// tampered one from creating thousands).
pub(crate) const MAX_CORE_INSTANCES: usize = 128;
pub(crate) const MAX_MEMORIES: usize = 16;
pub(crate) const MAX_TABLES: usize = 64;
/// Most random bytes one WASI call may ask for (the host makes them): more is
/// an error the strategy sees as an exception.
const MAX_RANDOM_BYTES: u64 = 64 << 10;
/// Elements a table of the runtime component may have. Its tables are the
/// interpreter's, sized when the runtime was built (Python code cannot grow
/// them), so the policy's `table_elements`, which bounds what a strategy's
/// own module declares, does not apply.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 16;

/// Bytes of source that earn the set-up window (instantiation, loading the
/// source, `init`) one more event's fuel: loading costs about 5,000 to
/// 20,000 fuel a byte, so a long source gets a window in proportion, and
/// `init` about the same fuel whatever the source's length.
pub const SOURCE_BYTES_PER_EVENT: u64 = 4096;

/// Bytes of `next`'s header: the bar and fill counts, two u32.
const NEXT_HEADER: usize = 8;

/// The WIT world's `error` variant: why the runtime could not describe or run
/// a strategy.
#[derive(ComponentType, Lift, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum PyError {
    #[component(name = "syntax")]
    Syntax(String),
    #[component(name = "forbidden-import")]
    ForbiddenImport(String),
    #[component(name = "manifest")]
    Manifest(String),
    #[component(name = "exception")]
    Exception(String),
    #[component(name = "out-of-memory")]
    OutOfMemory(String),
    #[component(name = "recursion")]
    Recursion(String),
}

impl PyError {
    /// The classified failure: `describe` is a check before running
    /// (`at_load`), where syntax and declarations make the strategy invalid;
    /// while running they are the guest's error. A MemoryError is
    /// `memory_limit` when the limiter denied a growth (the usual cause), a
    /// RecursionError `stack_overflow`.
    pub fn into_failure(self, st: &RunState, at_load: bool) -> Failure {
        match self {
            PyError::Syntax(m) if at_load => Failure::new(Cause::InvalidModule, format!("syntax error: {m}")),
            PyError::Syntax(m) => Failure::new(Cause::GuestError, format!("SyntaxError: {m}")),
            PyError::ForbiddenImport(module) => Failure::new(
                Cause::ForbiddenImport,
                format!("import of module {module} is not allowed (see the allowlist in docs/python.md)"),
            ),
            PyError::Manifest(m) if at_load => Failure::new(Cause::InvalidModule, format!("manifest: {m}")),
            PyError::Manifest(m) => Failure::new(Cause::GuestError, m),
            PyError::Exception(m) => Failure::new(Cause::GuestError, m),
            PyError::OutOfMemory(m) => match &st.limiter.denied {
                Some(denied) => Failure::new(Cause::MemoryLimit, format!("{denied}; Python then raised {m}")),
                None => Failure::new(Cause::GuestError, m),
            },
            PyError::Recursion(m) => Failure::new(
                Cause::StackOverflow,
                format!("{m} (Python's recursion limit, below the policy's python_stack_bytes)"),
            ),
        }
    }
}

/// The store data of a component run: the run's state, its WASI context
/// (which grants nothing) and the timestamp the clocks read.
pub struct PyState {
    pub(crate) run: RunState,
    wasi: WasiCtx,
    table: ResourceTable,
    now: Arc<AtomicI64>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// A timestamp `next-bar` advanced to but could not hand over alone
    /// (several bars, fills, or the end): the next `next` call returns it.
    held: Option<Vec<u8>>,
    /// The indicators the strategy declared, computed as bars are handed
    /// over.
    indicators: Indicators,
}

impl HasRun for PyState {
    #[inline]
    fn run(&self) -> &RunState {
        &self.run
    }
    #[inline]
    fn run_mut(&mut self) -> &mut RunState {
        &mut self.run
    }
}

impl WasiView for PyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PyState {
    /// A run's state with a WASI context that grants nothing: no files,
    /// environment, arguments or network; clocks at the bar's time; random
    /// bytes from `seed`; stdout and stderr kept up to `log_bytes` each.
    pub fn new(mut run: RunState, seed: u64, log_bytes: u64) -> PyState {
        run.limiter.instances = MAX_CORE_INSTANCES;
        run.limiter.memories = MAX_MEMORIES;
        run.limiter.tables = run.limiter.tables.max(MAX_TABLES);
        run.limiter.table_elements = MAX_TABLE_ELEMENTS;
        run.limiter.memory_knob = Knobs::PYTHON.memory;
        run.limits.knobs = Knobs::PYTHON;
        let now = Arc::new(AtomicI64::new(0));
        let cap = usize::try_from(log_bytes).unwrap_or(usize::MAX).min(1 << 20);
        let stdout = MemoryOutputPipe::new(cap);
        let stderr = MemoryOutputPipe::new(cap);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(BarClock(now.clone()))
            .monotonic_clock(BarClock(now.clone()))
            .secure_random(SeededRng(seed ^ 0x5EC0_4E00_0000_0001))
            .insecure_random(SeededRng(seed ^ 0x1A5E_C04E_0000_0002))
            .insecure_random_seed(u128::from(seed))
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        PyState {
            run,
            wasi,
            table: ResourceTable::new(),
            now,
            stdout,
            stderr,
            held: None,
            indicators: Indicators::default(),
        }
    }

    /// Ends the run's state: what the component wrote to stdout and stderr
    /// (rather than through `print`, which the runtime sends to `log`) is
    /// added to its logs, line by line, within the policy's log limits as
    /// any log line is: a line that does not fit is dropped and counted, or,
    /// under `log_overflow = "fail"`, is the run's failure (returned).
    pub fn into_run(self) -> (RunState, Option<Failure>) {
        let PyState {
            mut run,
            stdout,
            stderr,
            ..
        } = self;
        for (pipe, level) in [(stdout, log_level::INFO), (stderr, log_level::WARN)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                match run.session.log_fits_kept(line.len() as u64) {
                    Ok(true) => run.session.keep_log(level, line.to_owned()),
                    Ok(false) => {}
                    Err(f) => return (run, Some(f)),
                }
            }
        }
        (run, None)
    }
}

/// Both WASI clocks: the timestamp last handed over (0 before the first).
struct BarClock(Arc<AtomicI64>);

impl BarClock {
    fn seconds(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

impl HostWallClock for BarClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(self.seconds())
    }
}

impl HostMonotonicClock for BarClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        self.seconds().saturating_mul(1_000_000_000)
    }
}

/// WASI's random bytes: splitmix64 over the run's seed.
struct SeededRng(u64);

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|v| (v >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The WASI monotonic clock whose `subscribe-*` functions are replaced.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A pollable that is ready at once: what waiting on a clock gives a
/// strategy. Time is the bar's and does not pass while the strategy waits,
/// so `time.sleep` returns at once instead of holding the run (a wait in a
/// host call would also escape the epoch deadlines, which are checked in
/// guest code).
struct Ready;

impl wasmtime_wasi::p2::Pollable for Ready {
    fn ready<'a, 'b>(&'a mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

/// A [`Ready`] pollable in the store's table.
fn ready_pollable(
    store: &mut StoreContextMut<'_, PyState>,
) -> wasmtime::Result<(wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>,)> {
    let table = &mut store.data_mut().table;
    let ready = table.push(Ready)?;
    Ok((wasmtime_wasi::p2::subscribe(table, ready)?,))
}

/// Adds WASI (granting nothing, see [`PyState::new`]) and the `host`
/// interface to `linker`.
pub fn define(linker: &mut Linker<PyState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // Waiting on the clock returns at once (see [`Ready`]).
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, PyState>, (_,): (u64,)| ready_pollable(&mut store),
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, PyState>, (_,): (u64,)| ready_pollable(&mut store),
    )?;
    linker.allow_shadowing(false);
    let mut h = linker.instance(HOST_INTERFACE)?;
    h.func_wrap("symbol-count", |store: StoreContextMut<'_, PyState>, (): ()| {
        Ok((i32::try_from(store.data().run.session.symbol_count()).unwrap_or(i32::MAX),))
    })?;
    h.func_wrap(
        "next",
        |mut store: StoreContextMut<'_, PyState>, (): ()| match store.data_mut().held.take() {
            Some(packed) => Ok((packed,)),
            None => Ok((advance(store)?,)),
        },
    )?;
    h.func_wrap("next-bar", |mut store: StoreContextMut<'_, PyState>, (): ()| {
        if store.data().held.is_some() {
            return Ok((Vec::new(),));
        }
        let packed = advance(store.as_context_mut())?;
        Ok((alone(&mut store, packed),))
    })?;
    h.func_wrap(
        "indicator",
        |mut store: StoreContextMut<'_, PyState>, declaration: Declaration| {
            host::charge(&mut store, "indicator", 0)?;
            let data = store.data_mut();
            let symbols = data.run.session.symbol_count();
            Ok((data.indicators.declare(declaration, symbols),))
        },
    )?;
    h.func_wrap(
        "order",
        |mut store: StoreContextMut<'_, PyState>, (symbol, qty, kind, price): (i32, f64, i32, f64)| {
            host::charge(&mut store, "order", ORDER_RECORD_BYTES)?;
            let st = &mut store.data_mut().run;
            let r = st.session.order(symbol, qty, kind, price);
            Ok((st.check(r)?,))
        },
    )?;
    h.func_wrap(
        "cancel",
        |mut store: StoreContextMut<'_, PyState>, (id,): (i64,)| {
            host::charge(&mut store, "cancel", ORDER_RECORD_BYTES)?;
            Ok((store.data_mut().run.session.cancel(id),))
        },
    )?;
    h.func_wrap(
        "position",
        |store: StoreContextMut<'_, PyState>, (symbol,): (i32,)| {
            Ok((store.data().run.session.position(symbol),))
        },
    )?;
    h.func_wrap("cash", |store: StoreContextMut<'_, PyState>, (): ()| {
        Ok((store.data().run.session.cash(),))
    })?;
    h.func_wrap("equity", |store: StoreContextMut<'_, PyState>, (): ()| {
        Ok((store.data().run.session.equity(),))
    })?;
    h.func_wrap(
        "param",
        |mut store: StoreContextMut<'_, PyState>, (name,): (String,)| {
            host::charge(&mut store, "param", name.len() as u64)?;
            let st = &mut store.data_mut().run;
            if name.len() > MAX_NAME_LEN {
                let f = st.session.undeclared(&format!("<{} bytes>", name.len()));
                return Err(st.fault(f));
            }
            let r = st.session.param(&name);
            Ok((st.check(r)?,))
        },
    )?;
    h.func_wrap(
        "symbol-name",
        |mut store: StoreContextMut<'_, PyState>, (symbol,): (i32,)| {
            let len = store.data().run.session.symbol_name_len(symbol);
            host::charge(&mut store, "symbol-name", len as u64)?;
            Ok((store.data().run.session.symbol_name(symbol).map(str::to_owned),))
        },
    )?;
    h.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, PyState>, (level, message): (i32, String)| {
            // The line has been read already (lifted by wasmtime): its bytes
            // are paid for whether it is kept or not.
            host::charge(&mut store, "log", message.len() as u64)?;
            let st = &mut store.data_mut().run;
            let fits = st.session.log_fits(message.len() as u64);
            if st.check(fits)? {
                st.session.keep_log(level, message);
            }
            Ok(())
        },
    )?;
    h.func_wrap(
        "fail",
        |mut store: StoreContextMut<'_, PyState>, (kind, message): (i32, String)| -> wasmtime::Result<()> {
            host::charge(&mut store, "fail", message.len().min(MAX_FAIL_MESSAGE) as u64)?;
            let message = truncate(message, MAX_FAIL_MESSAGE);
            let st = &mut store.data_mut().run;
            st.guest_failure = Some((kind, message.clone()));
            Err(wasmtime::Error::msg(format!("guest failed: {message}")))
        },
    )?;
    h.func_wrap("random", |mut store: StoreContextMut<'_, PyState>, (): ()| {
        Ok((store.data_mut().run.session.random(),))
    })?;
    h.func_wrap(
        "metric",
        |mut store: StoreContextMut<'_, PyState>, (name, value): (String, f64)| {
            host::charge(&mut store, "metric", name.len().min(MAX_METRIC_NAME) as u64)?;
            let name = truncate(name, MAX_METRIC_NAME);
            let st = &mut store.data_mut().run;
            let r = st.session.metric(name, value);
            st.check(r)
        },
    )?;
    Ok(())
}

/// Replaces `next` and `next-bar` in `linker` (a copy of [`define`]'s) with
/// the live ones, as `host::define_live` does for core modules: before
/// advancing, they wait for the feed (`wait_for_feed`); a timestamp held
/// by `next-bar` is handed over at once.
pub fn define_live(linker: &mut Linker<PyState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut h = linker.instance(HOST_INTERFACE)?;
    h.func_wrap_async("next", |mut store: StoreContextMut<'_, PyState>, (): ()| {
        Box::new(async move {
            if let Some(packed) = store.data_mut().held.take() {
                return Ok((packed,));
            }
            wait_for_feed(&mut store).await?;
            Ok((advance(store)?,))
        })
    })?;
    h.func_wrap_async("next-bar", |mut store: StoreContextMut<'_, PyState>, (): ()| {
        Box::new(async move {
            if store.data().held.is_some() {
                return Ok((Vec::new(),));
            }
            wait_for_feed(&mut store).await?;
            let packed = advance(store.as_context_mut())?;
            Ok((alone(&mut store, packed),))
        })
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A live run's wait before advancing: the run's feed is told what the
/// strategy decided, and when no stored bar is left the instance waits for
/// the feed's next bars.
async fn wait_for_feed(store: &mut StoreContextMut<'_, PyState>) -> wasmtime::Result<()> {
    let (mut feed, wait) = host::take_feed(&mut store.data_mut().run)?;
    let bars = if wait { feed.next().await } else { None };
    host::give_feed(&mut store.data_mut().run, feed, bars)
}

/// `next-bar`'s answer for a timestamp `advance` packed: its one bar's
/// record (56 bytes and the declared indicators' values) when it is one bar
/// and no fill (the header's counts say so), else nothing, the packing being
/// held for the next `next` call.
fn alone(store: &mut StoreContextMut<'_, PyState>, mut packed: Vec<u8>) -> Vec<u8> {
    if packed[..4] == 1u32.to_le_bytes() && packed[4..8] == [0; 4] {
        packed.drain(..NEXT_HEADER);
        return packed;
    }
    store.data_mut().held = Some(packed);
    Vec::new()
}

/// Advances to the next timestamp: its bars and the fills at its opens,
/// packed as `next` hands them over (see the WIT file), and grants its fuel
/// and deadline window (as `next_bars` does for core modules). Each fill
/// costs what `poll_fill` costs a core module.
fn advance(mut store: StoreContextMut<'_, PyState>) -> wasmtime::Result<Vec<u8>> {
    let PyState {
        run: st,
        indicators,
        now,
        ..
    } = store.data_mut();
    let deadline = host::deadline_tick(&st.ticks, st.limits.deadline_per_event);
    let cap = i32::try_from(st.session.symbol_count()).unwrap_or(i32::MAX);
    let r = st.session.next_bars(cap);
    let events = st.check(r)?;
    let bars = &st.session.data().bars()[events];
    indicators.start();
    let mut out = Vec::with_capacity(NEXT_HEADER + bars.len() * indicators.record_size());
    out.extend_from_slice(&(bars.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for b in bars {
        out.extend_from_slice(&b.to_le_bytes());
        indicators.push(b, &mut out);
    }
    if let Some(b) = bars.first() {
        now.store(b.ts, Ordering::Relaxed);
    }
    let computed = (bars.len() * indicators.len()) as u64;
    let n = bars.len();
    let mut fills = 0u32;
    while let Some(f) = st.session.poll_fill() {
        out.extend_from_slice(&f.to_le_bytes());
        fills += 1;
    }
    out[4..8].copy_from_slice(&fills.to_le_bytes());
    host::refuel(&mut store.as_context_mut(), n.max(1) as u64)?;
    store.data_mut().run.event_deadline_tick = deadline;
    if computed > 0 {
        host::charge_fuel(&mut store, "next", computed.saturating_mul(INDICATOR_FUEL))?;
    }
    for _ in 0..fills {
        host::charge(&mut store, "next", Fill::SIZE as u64)?;
    }
    Ok(out)
}
