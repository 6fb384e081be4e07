//! `palisade-sandbox`, the sandbox: validates, compiles and runs guest
//! strategies under a policy's hard limits, and classifies every way a run
//! can end. It is the only crate that knows wasmtime.
//!
//! One [`Sandbox`] per process, built for the largest limits it will grant:
//! one wasmtime engine for core modules and one for components, one epoch
//! ticker thread, one linker with the ABI v2 imports and one with the Python
//! runtime's (`python.rs`). A module is validated and compiled once
//! ([`Sandbox::load`]) into a [`CompiledModule`] that can be instantiated in
//! microseconds for each run; a Python strategy is its source, checked by the
//! runtime component ([`Sandbox::load_python`]), which is compiled once per
//! process or loaded from its cached compilation. Each run gets a new `Store`
//! with its own limits; a run ends with `ok` or a classified [`Failure`],
//! never with a panic of the host and never affecting another run.
//!
//! What it does not do: schedule runs (callers drive the returned futures on
//! whatever executor they like), read files other than the Python runtime
//! component and its compilation in the cache directory it is given, know
//! the terminal or HTTP. The semantics of the ABI (timestamps, orders, logs, output limits) live in
//! `palisade-run`'s session; this crate adapts guest memory, fuel and
//! deadlines to it.

pub mod compiler;
mod host;
pub mod indicators;
pub mod python;
pub mod validate;
mod wasm_engine;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use palisade_host_api::{exports, fail_kind};
use wasmtime::component::Component;
use wasmtime::{Instance, InstancePre, Linker, Module, Store, Trap};

pub use host::{FUEL_BYTES, HOST_CALL_FUEL};
pub use python::PyError;
pub use validate::{Language, ModuleInfo};
pub use wasm_engine::{EngineSettings, WasmEngine, EPOCH_TICK};

use palisade_backtest::{Backtest, BacktestConfig, Dataset};
use palisade_run::session::{OutputLimits, Phase, Session};
use palisade_run::{Cause, Failure, Policy, ProgressFn, RunConfig, RunOutput};

use crate::host::RunState;
use crate::python::PyState;

/// The engine and linker every run of this process shares.
pub struct Sandbox {
    engine: WasmEngine,
    linker: Linker<RunState>,
    /// `linker` with the live `next_bars`, which waits for a feed
    /// ([`Sandbox::live`]).
    live_linker: Linker<RunState>,
    /// The linker of the Python runtime component: WASI granting nothing and
    /// the `host` interface.
    py_linker: wasmtime::component::Linker<PyState>,
    /// `py_linker` with the live `next`.
    py_live_linker: wasmtime::component::Linker<PyState>,
    /// An empty window of data, for stores that run no bars
    /// ([`Sandbox::instantiate_and_drop`]).
    probe_data: Arc<Dataset>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("engine", &self.engine).finish()
    }
}

/// A validated strategy, ready to instantiate: a compiled core module, or a
/// Python strategy's source with the runtime component that runs it.
pub struct CompiledModule {
    pub info: ModuleInfo,
    code: Code,
}

enum Code {
    Core(InstancePre<RunState>),
    Python(PythonStrategy),
}

/// A Python strategy: its source, checked by the runtime's `describe`.
#[derive(Clone)]
struct PythonStrategy {
    runtime: Arc<PythonRuntime>,
    filename: Arc<str>,
    source: Arc<str>,
}

/// What [`Sandbox::cached_python_runtime`] tells its caller.
#[derive(Clone, Debug)]
pub enum RuntimeCache {
    /// No usable compilation was cached: compiling now (seconds).
    Compiling,
    /// Something worth telling (a cached file that did not load, a cache
    /// that cannot be written); the runtime is still given.
    Note(String),
}

/// The Python runtime component, compiled and linked once per process (or
/// loaded from its precompiled artifact); every Python strategy runs in a
/// fresh instance of it.
pub struct PythonRuntime {
    pre: wasmtime::component::InstancePre<PyState>,
    /// Linked with the live `next` ([`Sandbox::live`]).
    live_pre: wasmtime::component::InstancePre<PyState>,
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PythonRuntime")
    }
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("info", &self.info)
            .finish()
    }
}

impl Sandbox {
    pub fn new(settings: EngineSettings) -> Result<Sandbox, Failure> {
        let engine = WasmEngine::new(settings).map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("cannot start the wasm engine: {e:#}"),
            )
        })?;
        let mut linker = Linker::new(engine.engine());
        host::define(&mut linker).expect("the ABI's imports are defined once each");
        let mut live_linker = linker.clone();
        host::define_live(&mut live_linker).expect("the live next_bars replaces the backtest's");
        let mut py_linker = wasmtime::component::Linker::new(engine.components());
        python::define(&mut py_linker).expect("WASI and the host interface are defined once each");
        let mut py_live_linker = py_linker.clone();
        python::define_live(&mut py_live_linker).expect("the live next replaces the backtest's");
        let probe_data = Arc::new(probe_dataset());
        Ok(Sandbox {
            engine,
            linker,
            live_linker,
            py_linker,
            py_live_linker,
            probe_data,
        })
    }

    pub fn settings(&self) -> &EngineSettings {
        self.engine.settings()
    }

    /// Validates and compiles a module. The policy decides what is accepted;
    /// it must not grant more stack or memory than the engine was built for.
    pub fn load(&self, bytes: &[u8], policy: &Policy) -> Result<CompiledModule, Failure> {
        let info = self.check(bytes, policy)?;
        self.compile(info, bytes)
    }

    /// The first half of [`Sandbox::load`]: checks the policy against the
    /// engine, then validates the module against the policy. The
    /// [`ModuleInfo`] it returns is what [`Sandbox::compile`] and
    /// [`Sandbox::load_precompiled`] take, so nothing is linked unchecked.
    pub fn check(&self, bytes: &[u8], policy: &Policy) -> Result<ModuleInfo, Failure> {
        self.check_policy(policy)?;
        validate::validate(bytes, policy)
    }

    /// Refuses a policy that asks for more than this engine was started with.
    fn check_policy(&self, policy: &Policy) -> Result<(), Failure> {
        let settings = self.engine.settings();
        let over = [
            ("stack_bytes", policy.stack_bytes, settings.stack_bytes as u64),
            ("memory_bytes", policy.memory_bytes, settings.max_memory_bytes),
            (
                "table_elements",
                u64::from(policy.table_elements),
                u64::from(settings.max_table_elements),
            ),
            (
                "max_tables",
                u64::from(policy.max_tables),
                u64::from(settings.max_tables),
            ),
            (
                "python_stack_bytes",
                policy.python_stack_bytes,
                settings.python_stack_bytes as u64,
            ),
        ]
        .into_iter()
        .find(|(_, asked, bound)| asked > bound);
        if let Some((knob, asked, bound)) = over {
            return Err(Failure::new(
                Cause::InvalidModule,
                format!(
                    "policy {} asks for {knob} = {asked}, more than this engine was started with ({bound}): start it for this policy",
                    policy.name
                ),
            ));
        }
        Ok(())
    }

    /// The second half of [`Sandbox::load`]: compiles the module `info`
    /// describes (`bytes`, checked by [`Sandbox::check`]) and links it.
    pub fn compile(&self, info: ModuleInfo, bytes: &[u8]) -> Result<CompiledModule, Failure> {
        let module = Module::new(self.engine.engine(), bytes)
            .map_err(|e| Failure::new(Cause::InvalidModule, format!("compilation failed: {e:#}")))?;
        self.link(info, &module)
    }

    /// Like [`Sandbox::compile`], with Cranelift run in a child process
    /// started from `compiler` (the `palisade` binary) and bounded by
    /// `limits`: a module whose compilation takes more CPU time or memory
    /// is `invalid_module` ("compilation exceeded ..."). See [`compiler`].
    pub fn compile_bounded(
        &self,
        info: ModuleInfo,
        bytes: &[u8],
        compiler: &std::path::Path,
        limits: compiler::CompileLimits,
    ) -> Result<CompiledModule, compiler::CompileError> {
        let artifact = compiler::compile_bounded(compiler, self.engine.settings(), bytes, limits)?;
        // SAFETY: the artifact is what this build's own compiler child wrote
        // for `bytes`, which `info` describes, read straight from its pipe.
        unsafe { self.load_precompiled(info, &artifact) }.map_err(|f| compiler::CompileError::Host(f.message))
    }

    /// Like [`Sandbox::compile`], with the compiled code taken from
    /// `artifact` (what [`Sandbox::serialize`] gave for the same module)
    /// instead of compiling. Fails on an artifact of another engine build or
    /// configuration (see [`Sandbox::artifact_key`]); the caller then
    /// compiles.
    ///
    /// # Safety
    ///
    /// `artifact` is machine code that will run as is: it must be bytes that
    /// [`Sandbox::serialize`] produced for the module `info` describes, read
    /// back intact (e.g. checked against a hash stored with them) from
    /// storage only this process writes. wasmtime checks its header, not its
    /// code.
    pub unsafe fn load_precompiled(
        &self,
        info: ModuleInfo,
        artifact: &[u8],
    ) -> Result<CompiledModule, Failure> {
        // SAFETY: the caller vouches for `artifact` (see above).
        let module = unsafe { Module::deserialize(self.engine.engine(), artifact) }.map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("the precompiled artifact does not load: {e:#}"),
            )
        })?;
        self.link(info, &module)
    }

    /// The compiled code of a loaded strategy, for
    /// [`Sandbox::load_precompiled`]. A Python strategy has none of its own
    /// (its runtime's is [`Sandbox::serialize_python_runtime`]).
    pub fn serialize(&self, strategy: &CompiledModule) -> Result<Vec<u8>, Failure> {
        let Code::Core(pre) = &strategy.code else {
            return Err(Failure::new(
                Cause::InvalidModule,
                "a Python strategy has no compiled code of its own",
            ));
        };
        pre.module().serialize().map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("cannot serialize the compiled module: {e:#}"),
            )
        })
    }

    /// Names this sandbox's kind of compiled code (wasmtime build, target,
    /// compiler settings): an artifact loads only where the key is the same.
    pub fn artifact_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.engine().precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    fn link(&self, info: ModuleInfo, module: &Module) -> Result<CompiledModule, Failure> {
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| Failure::new(Cause::InvalidModule, format!("cannot link: {e:#}")))?;
        Ok(CompiledModule {
            info,
            code: Code::Core(pre),
        })
    }

    /// Compiles the Python runtime component (`palisade-python.wasm`, built
    /// by `scripts/build-python-runtime.sh`) and links it. This takes
    /// seconds: keep the result ([`Sandbox::serialize_python_runtime`]) and
    /// load it with [`Sandbox::load_python_runtime`] next time.
    pub fn compile_python_runtime(&self, component: &[u8]) -> Result<PythonRuntime, Failure> {
        let c = Component::new(self.engine.components(), component).map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("the Python runtime component does not compile: {e:#}"),
            )
        })?;
        self.link_python_runtime(&c)
    }

    /// Like [`Sandbox::compile_python_runtime`], from what
    /// [`Sandbox::serialize_python_runtime`] wrote to `path` (mapped, not
    /// read: milliseconds).
    ///
    /// # Safety
    ///
    /// As for [`Sandbox::load_precompiled`]: the file is machine code that
    /// will run as is, and must be what this build serialized, intact.
    pub unsafe fn load_python_runtime(&self, path: &std::path::Path) -> Result<PythonRuntime, Failure> {
        // SAFETY: the caller vouches for the file (see above).
        let c = unsafe { Component::deserialize_file(self.engine.components(), path) }.map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!(
                    "the precompiled Python runtime {} does not load: {e:#}",
                    path.display()
                ),
            )
        })?;
        self.link_python_runtime(&c)
    }

    /// Like [`Sandbox::load_python_runtime`], from bytes in memory.
    ///
    /// # Safety
    ///
    /// As for [`Sandbox::load_python_runtime`].
    pub unsafe fn load_python_runtime_bytes(&self, artifact: &[u8]) -> Result<PythonRuntime, Failure> {
        // SAFETY: the caller vouches for the bytes (see above).
        let c = unsafe { Component::deserialize(self.engine.components(), artifact) }.map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("the precompiled Python runtime does not load: {e:#}"),
            )
        })?;
        self.link_python_runtime(&c)
    }

    /// The compiled code of the Python runtime, for
    /// [`Sandbox::load_python_runtime`].
    pub fn serialize_python_runtime(&self, runtime: &PythonRuntime) -> Result<Vec<u8>, Failure> {
        runtime.pre.component().serialize().map_err(|e| {
            Failure::new(
                Cause::InvalidModule,
                format!("cannot serialize the Python runtime: {e:#}"),
            )
        })
    }

    /// Like [`Sandbox::artifact_key`], for the Python runtime's compiled code.
    pub fn python_artifact_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .components()
            .precompile_compatibility_hash()
            .hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// The Python runtime component at `component`, compiled by this
    /// sandbox: loaded from `cache_dir` when a compilation of this very file
    /// (path, size, modification time) by this kind of engine is there,
    /// else compiled (seconds) and written there atomically, replacing older
    /// compilations. `events` hears what happens (to tell a user why the
    /// first run is slow). Without a cache directory it always compiles.
    pub fn cached_python_runtime(
        &self,
        component: &std::path::Path,
        cache_dir: Option<&std::path::Path>,
        events: impl Fn(RuntimeCache),
    ) -> Result<PythonRuntime, Failure> {
        let io = |what: &str, e: std::io::Error| {
            Failure::new(
                Cause::InvalidModule,
                format!("{what} {}: {e}", component.display()),
            )
        };
        let meta = std::fs::metadata(component).map_err(|e| io("cannot read the Python runtime", e))?;
        let file = cache_dir.map(|dir| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::canonicalize(component)
                .unwrap_or_else(|_| component.to_path_buf())
                .hash(&mut h);
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
            dir.join(format!(
                "python-runtime-{:016x}-{}.cwasm",
                h.finish(),
                self.python_artifact_key()
            ))
        });
        if let Some(file) = file.as_deref().filter(|f| f.is_file()) {
            // SAFETY: the file is what `serialize_python_runtime` of this
            // build wrote (its name carries the engine's artifact key), put
            // in place by an atomic rename in a cache directory the caller
            // owns.
            match unsafe { self.load_python_runtime(file) } {
                Ok(rt) => return Ok(rt),
                Err(f) => events(RuntimeCache::Note(format!("recompiling: {}", f.message))),
            }
        }
        events(RuntimeCache::Compiling);
        let bytes = std::fs::read(component).map_err(|e| io("cannot read the Python runtime", e))?;
        let rt = self.compile_python_runtime(&bytes)?;
        if let (Some(file), Some(dir)) = (file, cache_dir) {
            if let Err(e) = self.keep_python_runtime(&rt, &file, dir) {
                events(RuntimeCache::Note(format!(
                    "cannot keep the compiled Python runtime in {}: {e}",
                    dir.display()
                )));
            }
        }
        Ok(rt)
    }

    /// Writes the compiled runtime to `file` through a temporary file and a
    /// rename, then removes other compilations of the runtime in `dir`.
    fn keep_python_runtime(
        &self,
        rt: &PythonRuntime,
        file: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<(), String> {
        let bytes = self.serialize_python_runtime(rt).map_err(|f| f.message)?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let tmp = dir.join(format!(
            ".python-runtime-{}-{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, file).map_err(|e| e.to_string())?;
        let key = self.python_artifact_key();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // Older compilations by this kind of engine (other engines'
                // are other processes' to keep).
                if path != file
                    && name.starts_with("python-runtime-")
                    && name.ends_with(&format!("-{key}.cwasm"))
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(())
    }

    fn link_python_runtime(&self, component: &Component) -> Result<PythonRuntime, Failure> {
        let link = |linker: &wasmtime::component::Linker<PyState>| {
            linker.instantiate_pre(component).map_err(|e| {
                Failure::new(
                    Cause::InvalidModule,
                    format!("the Python runtime component does not link (is it built from host-api/wit/palisade.wit?): {e:#}"),
                )
            })
        };
        Ok(PythonRuntime {
            pre: link(&self.py_linker)?,
            live_pre: link(&self.py_live_linker)?,
        })
    }

    /// Checks a Python strategy and returns it ready to run: the source must
    /// fit the policy's `module_bytes`; the runtime's `describe`, run under
    /// the policy's limits for one event, checks its syntax, its imports
    /// against the allowlist and its parameter declarations, and gives the
    /// manifest, which is then checked as a wasm module's is.
    pub async fn load_python(
        &self,
        runtime: &Arc<PythonRuntime>,
        filename: &str,
        source: &str,
        policy: &Policy,
    ) -> Result<CompiledModule, Failure> {
        self.check_policy(policy)?;
        if source.len() as u64 > policy.module_bytes {
            return Err(Failure::new(
                Cause::InvalidModule,
                format!(
                    "{filename} is {} bytes, over the policy's module_bytes ({})",
                    source.len(),
                    policy.module_bytes
                ),
            ));
        }
        let strategy = PythonStrategy {
            runtime: Arc::clone(runtime),
            filename: Arc::from(filename),
            source: Arc::from(source),
        };
        let session = self.probe_session(policy);
        let mut store = self.py_store(session, policy, 0, None, None);
        let manifest: String = self.py_call(&mut store, &strategy, python::DESCRIBE).await?;
        let manifest = validate::parse_manifest(manifest.as_bytes())?;
        let info = ModuleInfo::python(manifest, source.len());
        Ok(CompiledModule {
            info,
            code: Code::Python(strategy),
        })
    }

    /// Creates the `Store` of one Python run (see [`Sandbox::store`]).
    fn py_store(
        &self,
        session: Session,
        policy: &Policy,
        seed: u64,
        cancel: Option<Arc<AtomicBool>>,
        progress: Option<ProgressFn>,
    ) -> Store<PyState> {
        let policy = policy.for_python();
        let run = RunState::new(session, &policy, self.engine.ticks(), cancel, progress);
        let state = PyState::new(run, seed, policy.log_bytes);
        let mut store = Store::new(self.engine.components(), state);
        store.limiter(|st| &mut st.run.limiter);
        store.epoch_deadline_callback(host::on_epoch);
        store.set_epoch_deadline(1);
        store
    }

    /// A session over no bars, for stores that run none (a probe, or
    /// `describe`).
    fn probe_session(&self, policy: &Policy) -> Session {
        Session::new(
            Backtest::new(Arc::clone(&self.probe_data), BacktestConfig::default()),
            OutputLimits::from_policy(policy),
            Vec::new(),
            0,
        )
    }

    /// Grants the fuel of the set-up window and instantiates the Python
    /// runtime in `store` (as [`Sandbox::instantiate`] does a core module).
    /// The window is one event's fuel, plus one more per
    /// [`python::SOURCE_BYTES_PER_EVENT`] bytes of the `source` it will
    /// load: parsing and compiling a source is the interpreter's work, about
    /// 5,000 to 20,000 fuel a byte, and would otherwise leave a long
    /// strategy no fuel for its `init`.
    async fn py_instantiate(
        &self,
        store: &mut Store<PyState>,
        pre: &wasmtime::component::InstancePre<PyState>,
        source: &str,
    ) -> Result<wasmtime::component::Instance, Failure> {
        let fail = |store: &Store<PyState>, e: &wasmtime::Error| {
            let st = &store.data().run;
            classify(st, e, st.fuel_bound_by_run)
        };
        let events = 1 + source.len() as u64 / python::SOURCE_BYTES_PER_EVENT;
        host::refuel(&mut store.as_context_mut(), events).map_err(|e| fail(store, &e))?;
        match pre.instantiate_async(&mut *store).await {
            Ok(i) => Ok(i),
            Err(e) => Err(fail(store, &e)),
        }
    }

    /// Instantiates the runtime in `store` and calls `export` (`describe`,
    /// which gives the manifest, or `run`, which gives nothing) with the
    /// strategy's source.
    async fn py_call<R>(
        &self,
        store: &mut Store<PyState>,
        strategy: &PythonStrategy,
        export: &str,
    ) -> Result<R, Failure>
    where
        R: wasmtime::component::ComponentType + wasmtime::component::Lift + Send + Sync + 'static,
    {
        let pre = if store.data().run.live.is_some() {
            &strategy.runtime.live_pre
        } else {
            &strategy.runtime.pre
        };
        let instance = self.py_instantiate(store, pre, &strategy.source).await?;
        let f = instance
            .get_typed_func::<(&str, &str), (Result<R, PyError>,)>(&mut *store, export)
            .map_err(|e| Failure::new(Cause::InvalidModule, format!("python runtime: {export}: {e:#}")))?;
        match f
            .call_async(&mut *store, (&*strategy.filename, &*strategy.source))
            .await
        {
            Ok((r,)) => r.map_err(|e| e.into_failure(&store.data().run, export == python::DESCRIBE)),
            Err(e) => {
                let st = &store.data().run;
                Err(classify(st, &e, st.fuel_bound_by_run))
            }
        }
    }

    /// Runs a backtest of `strategy` over `data`, under `policy`.
    pub async fn backtest(
        &self,
        strategy: &CompiledModule,
        data: Arc<Dataset>,
        policy: &Policy,
        run: &RunConfig,
    ) -> RunOutput {
        let started = Instant::now();
        let session = Session::for_run(data, policy, run);
        let (outcome, fuel, st) = match &strategy.code {
            Code::Core(pre) => {
                let mut store = self.store(session, policy, run.cancel.clone(), run.progress.clone());
                let outcome = self.drive(&mut store, pre).await;
                let fuel = host::fuel_used(&store.as_context_mut());
                (outcome, fuel, store.into_data())
            }
            Code::Python(py) => {
                let store = self.py_store(
                    session,
                    policy,
                    run.seed,
                    run.cancel.clone(),
                    run.progress.clone(),
                );
                self.py_finish(py, store).await
            }
        };
        let run_seconds = started.elapsed().as_secs_f64();
        let usage = st.session.usage(fuel, st.limiter.peak_memory as u64);
        st.session.into_output(outcome, usage, run_seconds)
    }

    /// Runs `strategy` live: first over the bars of `data` (a deployment's
    /// stored bars, replayed at backtest speed), then over `feed`'s bars as
    /// they arrive, until the feed ends. The limits per event are the
    /// policy's; the run's totals (`fuel_per_run`, `deadline_per_run_ms`) do
    /// not apply, as a deployment lives as long as it is wanted. The
    /// strategy's orders and paper fills go to `feed` after every timestamp.
    /// A core module waits in its `next_bars`, a Python strategy in the
    /// runtime's `next`.
    pub async fn live(
        &self,
        strategy: &CompiledModule,
        data: Arc<Dataset>,
        policy: &Policy,
        run: &RunConfig,
        feed: Box<dyn palisade_run::live::Feed>,
    ) -> RunOutput {
        let started = Instant::now();
        let mut session = Session::for_run(data, policy, run);
        session.keep_orders();
        // A deployment's lifetime is unbounded: orders are bounded per
        // event (`orders_per_event`), logs per timestamp (the feed drains
        // them), not over the run.
        session.limits.output_bytes = u64::MAX;
        let live = |st: &mut RunState, feed| {
            st.limits.fuel_per_run = u64::MAX;
            st.run_deadline = far_future(started);
            st.live = Some(feed);
        };
        let (outcome, fuel, st) = match &strategy.code {
            Code::Core(pre) => {
                let mut store = self.store(session, policy, run.cancel.clone(), run.progress.clone());
                live(store.data_mut(), feed);
                let outcome = match self.live_linker.instantiate_pre(pre.module()) {
                    Ok(pre) => self.drive(&mut store, &pre).await,
                    Err(e) => Err(Failure::new(Cause::InvalidModule, format!("{e:#}"))),
                };
                let fuel = host::fuel_used(&store.as_context_mut());
                (outcome, fuel, store.into_data())
            }
            Code::Python(py) => {
                let mut store = self.py_store(
                    session,
                    policy,
                    run.seed,
                    run.cancel.clone(),
                    run.progress.clone(),
                );
                live(&mut store.data_mut().run, feed);
                self.py_finish(py, store).await
            }
        };
        let usage = st.session.usage(fuel, st.limiter.peak_memory as u64);
        st.session
            .into_output(outcome, usage, started.elapsed().as_secs_f64())
    }

    /// Runs a Python strategy's `run` in `store` to its end: the outcome,
    /// the fuel used and the run's state, its output appended.
    async fn py_finish(
        &self,
        py: &PythonStrategy,
        mut store: Store<PyState>,
    ) -> (Result<(), Failure>, u64, RunState) {
        let outcome = match self.py_call::<()>(&mut store, py, python::RUN).await {
            Ok(()) if store.data().run.session.phase != Phase::Finished => Err(Failure::new(
                Cause::GuestError,
                "the Python runtime returned before consuming all bars",
            )),
            r => r,
        };
        let fuel = host::fuel_used(&store.as_context_mut());
        let (st, overflow) = store.into_data().into_run();
        let outcome = match (outcome, overflow) {
            (Ok(()), Some(f)) => Err(f),
            (outcome, _) => outcome,
        };
        (outcome, fuel, st)
    }

    /// Creates the `Store` of one run of `policy`: its limiter, epoch
    /// callback and first epoch deadline.
    fn store(
        &self,
        session: Session,
        policy: &Policy,
        cancel: Option<Arc<AtomicBool>>,
        progress: Option<ProgressFn>,
    ) -> Store<RunState> {
        let state = RunState::new(session, policy, self.engine.ticks(), cancel, progress);
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|st| &mut st.limiter);
        store.epoch_deadline_callback(host::on_epoch);
        store.set_epoch_deadline(1);
        store
    }

    /// Grants the fuel of one event (a start function or data initialisers
    /// run during instantiation) and instantiates `strategy` in `store`.
    async fn instantiate(
        &self,
        store: &mut Store<RunState>,
        pre: &InstancePre<RunState>,
    ) -> Result<Instance, Failure> {
        host::refuel(&mut store.as_context_mut(), 1).map_err(|e| classify(store.data(), &e, false))?;
        match pre.instantiate_async(&mut *store).await {
            Ok(i) => Ok(i),
            Err(e) => Err(classify(store.data(), &e, false)),
        }
    }

    /// Creates a run's `Store` with `policy`'s limits, instantiates
    /// `strategy` in it without calling any export, and drops both: all the
    /// fixed cost of a run and none of its work. Operators can use it as a
    /// health or warm-up probe (it fails with the same classified cause a run
    /// would if the module cannot be instantiated under `policy`, e.g. an
    /// initial memory above `memory_bytes`); the instantiation benchmark
    /// measures it.
    pub async fn instantiate_and_drop(
        &self,
        strategy: &CompiledModule,
        policy: &Policy,
    ) -> Result<(), Failure> {
        let session = self.probe_session(policy);
        match &strategy.code {
            Code::Core(pre) => {
                let mut store = self.store(session, policy, None, None);
                self.instantiate(&mut store, pre).await.map(drop)
            }
            Code::Python(py) => {
                let mut store = self.py_store(session, policy, 0, None, None);
                self.py_instantiate(&mut store, &py.runtime.pre, "")
                    .await
                    .map(drop)
            }
        }
    }

    async fn drive(&self, store: &mut Store<RunState>, pre: &InstancePre<RunState>) -> Result<(), Failure> {
        let instance = self.instantiate(store, pre).await?;
        let memory = instance.get_memory(&mut *store, exports::MEMORY);
        store.data_mut().memory = memory;
        let run = instance
            .get_typed_func::<(), i32>(&mut *store, exports::RUN)
            .map_err(|e| Failure::new(Cause::InvalidModule, format!("{}: {e:#}", exports::RUN)))?;
        match run.call_async(&mut *store, ()).await {
            Ok(0) => {
                if store.data().session.phase != Phase::Finished {
                    return Err(Failure::new(
                        Cause::GuestError,
                        "palisade_run returned before consuming all bars (next_bars never returned 0)",
                    ));
                }
                Ok(())
            }
            Ok(status) => Err(Failure::new(
                Cause::GuestError,
                format!("palisade_run returned status {status}"),
            )),
            Err(e) => {
                let bound_by_run = store.data().fuel_bound_by_run;
                Err(classify(store.data(), &e, bound_by_run))
            }
        }
    }
}

use wasmtime::AsContextMut as _;

/// A moment no deployment reaches (a century on), for a deadline that must
/// not pass.
fn far_future(now: Instant) -> Instant {
    let century = std::time::Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(century).unwrap_or(now)
}

/// An empty window (no events) of a one-bar dataset.
fn probe_dataset() -> Dataset {
    let bar = palisade_host_api::Bar {
        ts: 0,
        symbol: 0,
        reserved: 0,
        open: 1.0,
        high: 1.0,
        low: 1.0,
        close: 1.0,
        volume: 0.0,
    };
    Dataset::from_bars(vec!["probe".to_owned()], vec![bar])
        .expect("one valid bar is a valid dataset")
        .slice(0..0)
}

/// Maps an error out of wasmtime to one classified failure.
fn classify(st: &RunState, err: &wasmtime::Error, fuel_bound_by_run: bool) -> Failure {
    if let Some(fault) = &st.fault {
        return fault.clone();
    }
    if let Some(f) = err.downcast_ref::<Failure>() {
        return f.clone();
    }
    if let Some((kind, message)) = &st.guest_failure {
        // A denied growth explains the failure it leads to (an allocation
        // that fails, then panics), not any later failure of the guest.
        if let Some(denied) = &st.limiter.denied {
            if *kind == fail_kind::PANIC && message.contains("memory allocation") {
                return Failure::new(
                    Cause::MemoryLimit,
                    format!("{denied}; the guest then failed: {message}"),
                );
            }
        }
        let cause = match *kind {
            fail_kind::PANIC => Cause::GuestPanic,
            fail_kind::INVALID_PARAMS => Cause::InvalidParams,
            _ => Cause::GuestError,
        };
        return Failure::new(cause, message.clone());
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            let l = &st.limits;
            let message = if fuel_bound_by_run {
                format!(
                    "used all {} fuel of the run ({})",
                    l.fuel_per_run, l.knobs.fuel_per_run
                )
            } else {
                format!(
                    "{} used more than {} fuel per event ({})",
                    st.session.event_name(),
                    l.fuel_per_event,
                    l.knobs.fuel_per_event
                )
            };
            Failure::new(Cause::FuelExhausted, message)
        }
        Some(Trap::StackOverflow) => Failure::new(
            Cause::StackOverflow,
            format!(
                "the guest's call stack went past the policy's stack size ({})",
                st.limits.knobs.stack
            ),
        ),
        Some(Trap::Interrupt) => Failure::new(Cause::Deadline, "the guest was interrupted at a deadline"),
        // After a denied growth, the traps an allocation failure leads to
        // (an abort, an access past the memory it could not get) are
        // `memory_limit`; any other trap (a division by zero) is the
        // guest's own.
        Some(trap @ (Trap::UnreachableCodeReached | Trap::MemoryOutOfBounds | Trap::TableOutOfBounds))
            if st.limiter.denied.is_some() =>
        {
            let denied = st.limiter.denied.as_deref().unwrap_or_default();
            Failure::new(
                Cause::MemoryLimit,
                format!("{denied}; the guest then trapped: {trap}"),
            )
        }
        Some(trap) => Failure::new(
            Cause::GuestTrap,
            format!("{} trapped: {trap}", st.session.event_name()),
        ),
        None => match &st.limiter.denied {
            Some(denied) => Failure::new(Cause::MemoryLimit, denied.clone()),
            None => Failure::new(Cause::GuestTrap, format!("{err:#}")),
        },
    }
}
