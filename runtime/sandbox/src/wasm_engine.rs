//! The process's wasmtime engine, configured once, and its epoch ticker.
//!
//! Cranelift, the pooling instance allocator (copy-on-write memory images,
//! microsecond instantiation), fuel metering, epoch interruption, a bounded
//! wasm stack, NaN canonicalization and deterministic relaxed SIMD so results
//! are bit-identical across machines, and no threads or shared memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the ticker advances the engine's epoch: the resolution of
/// deadlines, cancellation and time-slicing.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bytes of host stack kept above the deepest wasm stack allowed, for host
/// calls made from the guest.
const HOST_STACK_HEADROOM: usize = 1 << 20;

/// Linear memory kept resident between instances in a pool slot, so the next
/// instance does not page-fault its pages back in, and teardown does not
/// `madvise` them away (each `madvise` flushes TLBs on every core). With
/// `PAGEMAP_SCAN` (Linux 6.7+) only the pages an instance dirtied are reset,
/// so the figure bounds the work rather than setting it: 2 MiB covers a Rust
/// guest's 1 MiB shadow stack plus its data and first heap pages.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Engine-wide settings: what must be fixed before modules are compiled.
/// Per-run limits (fuel, memory below `max_memory_bytes`, deadlines) come from
/// the policy of each run instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// Deepest wasm stack a guest may use (`max_wasm_stack`).
    pub stack_bytes: usize,
    /// Largest linear memory any policy may grant.
    pub max_memory_bytes: u64,
    /// Most elements of a table any policy may grant (the pool's table
    /// slots are this large).
    pub max_table_elements: u32,
    /// Most tables of a module any policy may grant.
    pub max_tables: u32,
    /// Instances that may be alive at once (pool slots).
    pub max_instances: u32,
    /// Deepest wasm stack the Python runtime may use (the component
    /// engine's `max_wasm_stack`).
    pub python_stack_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            stack_bytes: palisade_run::policy::DEFAULT_STACK_BYTES as usize,
            max_memory_bytes: 4 << 30,
            max_table_elements: palisade_run::policy::DEFAULT_TABLE_ELEMENTS,
            max_tables: palisade_run::policy::DEFAULT_MAX_TABLES,
            max_instances: 1000,
            python_stack_bytes: palisade_run::policy::DEFAULT_PYTHON_STACK_BYTES as usize,
        }
    }
}

impl EngineSettings {
    /// Settings that can run any job of `policy`.
    pub fn for_policy(policy: &palisade_run::Policy) -> EngineSettings {
        EngineSettings {
            stack_bytes: policy.stack_bytes as usize,
            max_memory_bytes: policy.memory_bytes,
            max_table_elements: policy.table_elements,
            max_tables: policy.max_tables.max(1),
            python_stack_bytes: policy.python_stack_bytes as usize,
            ..EngineSettings::default()
        }
    }
}

/// The configured engines plus the thread that ticks their epochs. Dropping
/// it stops the thread.
///
/// Two engines, one ticker: `engine` runs core modules (ABI v2) from the
/// pooling allocator; `components` runs the Python runtime component, whose
/// dozens of core instances and several memories would not fit the pool's
/// one-memory slots, so it allocates on demand (copy-on-write images all the
/// same). Both meter fuel and epochs identically, and one tick counter
/// measures both's deadlines.
pub struct WasmEngine {
    engine: Engine,
    components: Engine,
    settings: EngineSettings,
    /// Ticks so far, incremented with the engine's epoch: what per-event
    /// deadlines are measured in (reading it costs no clock read).
    ticks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("settings", &self.settings)
            .finish()
    }
}

impl WasmEngine {
    pub fn new(settings: EngineSettings) -> wasmtime::Result<WasmEngine> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_memories(settings.max_instances)
            .total_tables(settings.max_instances.saturating_mul(settings.max_tables.max(1)))
            .total_stacks(settings.max_instances)
            .total_core_instances(settings.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(settings.max_tables.max(1))
            .table_elements(settings.max_table_elements as usize)
            .max_memory_size(settings.max_memory_bytes as usize)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .pagemap_scan(Enabled::Auto);

        let mut config = base_config(settings.stack_bytes);
        config
            .wasm_multi_memory(false)
            .wasm_component_model(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut config = base_config(settings.python_stack_bytes);
        config
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::OnDemand);
        let components = Engine::new(&config)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let engines = [engine.weak(), components.weak()];
            let stop = stop.clone();
            let ticks = ticks.clone();
            std::thread::Builder::new()
                .name("palisade-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        let [Some(a), Some(b)] = engines.each_ref().map(|e| e.upgrade()) else {
                            break;
                        };
                        ticks.fetch_add(1, Ordering::Relaxed);
                        a.increment_epoch();
                        b.increment_epoch();
                    }
                })?
        };
        Ok(WasmEngine {
            engine,
            components,
            settings,
            ticks,
            stop,
            ticker: Some(ticker),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine of components (the Python runtime).
    pub fn components(&self) -> &Engine {
        &self.components
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The tick counter (see the field).
    pub fn ticks(&self) -> Arc<AtomicU64> {
        self.ticks.clone()
    }
}

/// What both engines share: Cranelift, fuel, epochs, a stack bound,
/// deterministic floats, no threads or 64-bit memories.
fn base_config(stack_bytes: usize) -> Config {
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(stack_bytes)
        .async_stack_size(stack_bytes + HOST_STACK_HEADROOM)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_memory64(false)
        .parallel_compilation(true);
    // For profiling guests: with `PALISADE_PERF_MAP=1`, compiled code is
    // listed in /tmp/perf-<pid>.map, so `perf report` names guest functions
    // instead of showing raw addresses.
    if std::env::var_os("PALISADE_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}
