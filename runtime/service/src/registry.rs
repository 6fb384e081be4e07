//! What jobs run with, kept in memory so that a submission costs no
//! compilation and no file read: compiled modules, sandboxes (one per engine
//! key: stack size and table slots), bar data and
//! policies.
//!
//! - **Sandboxes**: one per distinct `stack_bytes` among the policies in
//!   use, since the wasm stack is fixed per engine; every sandbox allows the
//!   largest memory a policy may grant, so one engine serves all policies
//!   with that stack.
//! - **Compiled modules**: compiled once per (module hash, sandbox) and
//!   shared by every job; a module is validated once against each policy
//!   (hash) it runs under. The compiled code is also written to the data
//!   directory (`compiled/`), so that after a restart, or once the bounded
//!   in-memory cache forgot a module, it is loaded in about a millisecond
//!   instead of being compiled again.
//! - **Python strategies**: a module that is UTF-8 text, not wasm, is a
//!   Python strategy's source. The Python runtime component is compiled once
//!   per sandbox (or loaded from `runtimes/` in the data directory, where its
//!   compiled code is kept); a strategy is checked by the runtime's
//!   `describe` under each policy it runs with, and then costs no
//!   compilation at all.
//! - **Datasets**: parsed once per dataset id (or list of ids, merged), in a
//!   bounded cache.
//! - **Policies**: by name, in this order: replaced over the API (stored in
//!   the database), `<policies_dir>/<name>.toml`, the built-in ones; each is
//!   read once. A policy is identified by the SHA-256 of its canonical TOML; every
//!   version a job runs with is stored, so a re-queued job runs with exactly
//!   the policy it was submitted with.
//!
//! Blocking work (compiling, parsing CSV) is done by the callers on blocking
//! threads; no lock here is held across an await.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_backtest::{DataError, Dataset};
use palisade_run::{Cause, Failure, Policy, PolicyError};
use palisade_sandbox::compiler::{CompileError, CompileLimits};
use palisade_sandbox::{CompiledModule, EngineSettings, ModuleInfo, PythonRuntime, Sandbox};

use crate::lock;
use crate::metrics::Metrics;
use crate::storage::{sha256_hex, Blob, Storage, StorageError};

/// Largest memory any policy may grant (see `crate::policy`): every sandbox
/// is built for it.
const MAX_POLICY_MEMORY: u64 = 4 << 30;
/// Parsed datasets kept in memory.
const DATASET_CACHE: usize = 256;
/// Compiled modules kept in memory (per module and sandbox); the least
/// recently used are forgotten first and loaded again from their
/// precompiled files.
const COMPILED_CACHE: usize = 512;
/// (module, policy) pairs remembered as validated; a forgotten pair costs
/// one validation (about a millisecond) at its next use.
const VALIDATED_CACHE: usize = 4 * COMPILED_CACHE;

/// A policy as the service knows it.
#[derive(Debug)]
pub struct PolicyEntry {
    pub policy: Arc<Policy>,
    /// SHA-256 of [`PolicyEntry::toml`].
    pub hash: String,
    /// The canonical TOML (every key).
    pub toml: String,
    /// `builtin`, `file` or `api`.
    pub source: &'static str,
}

impl PolicyEntry {
    pub fn new(policy: Policy, source: &'static str) -> PolicyEntry {
        let toml = policy.canonical_toml();
        PolicyEntry {
            hash: sha256_hex(toml.as_bytes()),
            toml,
            policy: Arc::new(policy),
            source,
        }
    }
}

/// A module compiled for one sandbox.
pub struct Compiled {
    pub sha: String,
    pub strategy: Arc<CompiledModule>,
    pub sandbox: Arc<Sandbox>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sha", &self.sha)
            .finish_non_exhaustive()
    }
}

/// Why something a job needs could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown policy {0}")]
    UnknownPolicy(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The module is refused (under the named policy).
    #[error("{0}")]
    Module(Failure),
    #[error("unknown dataset {0}")]
    UnknownDataset(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A fault of the host (an engine that cannot start, a stopped task).
    #[error("{0}")]
    Internal(String),
}

/// What a sandbox's engines are built for: the policy knobs fixed at engine
/// start (stack size, table slots, the Python runtime's stack size).
/// Policies that agree on them share one sandbox and its compiled modules
/// (the Python stack size does not change a wasm module's compiled code, so
/// [`compiled_key`] leaves it out).
type EngineKey = (u64, u32, u32, u64);

fn engine_key(policy: &Policy) -> EngineKey {
    (
        policy.stack_bytes,
        policy.table_elements,
        policy.max_tables.max(1),
        policy.python_stack_bytes,
    )
}

fn compiled_key(sha: &str, engine: EngineKey) -> String {
    format!("{sha}/{}/{}/{}", engine.0, engine.1, engine.2)
}

fn validated_key(sha: &str, policy: &PolicyEntry) -> String {
    format!("{sha}/{}", policy.hash)
}

/// Bounded map that forgets its least recently used entries: a hit or an
/// insertion makes an entry the most recent (the `lru` crate's cache, keyed
/// by text, handing out clones).
struct Lru<V>(lru::LruCache<String, V>);

impl<V: Clone> Lru<V> {
    fn new(cap: usize) -> Self {
        Lru(lru::LruCache::new(
            NonZeroUsize::new(cap.max(1)).expect("at least 1"),
        ))
    }

    fn get(&mut self, k: &str) -> Option<V> {
        self.0.get(k).cloned()
    }

    fn insert(&mut self, k: String, v: V) {
        self.0.put(k, v);
    }
}

/// A counting semaphore for blocking threads.
struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A slot taken from [`Slots`], given back on drop.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// The caches; see the module docs.
pub struct Registry {
    store: Storage,
    metrics: Arc<Metrics>,
    max_instances: u32,
    policies_dir: Option<PathBuf>,
    sandboxes: Mutex<HashMap<EngineKey, Arc<Sandbox>>>,
    /// The `palisade` binary, to compile in a bounded child process; `None`
    /// compiles in this process, unbounded (tests of this crate).
    compiler: Option<PathBuf>,
    /// Compilations running at once: half the cores, so uploads cannot take
    /// all of them.
    compile_slots: Slots,
    /// The Python runtime component's path, when the server has one.
    python_runtime: Option<PathBuf>,
    /// Its SHA-256, read once (names its compiled code in `runtimes/`).
    python_sha: std::sync::OnceLock<Result<String, String>>,
    /// The runtime compiled for each sandbox; the lock is held while one is
    /// compiled, so it is compiled once.
    python_runtimes: Mutex<HashMap<EngineKey, Arc<PythonRuntime>>>,
    /// By `"{sha}/{engine key}"`.
    compiled: Mutex<Lru<Arc<Compiled>>>,
    /// `"{sha}/{policy hash}"` of the modules validated against a policy.
    validated: Mutex<Lru<()>>,
    datasets: Mutex<Lru<Arc<Dataset>>>,
    /// Policies replaced over the API, and files read from the directory.
    policies: Mutex<HashMap<String, Arc<PolicyEntry>>>,
    /// Policy hashes known to be stored in `policy_versions`.
    stored_versions: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(
        store: Storage,
        metrics: Arc<Metrics>,
        max_instances: u32,
        policies_dir: Option<PathBuf>,
        compiler: Option<PathBuf>,
        python_runtime: Option<PathBuf>,
    ) -> Registry {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Registry {
            store,
            metrics,
            max_instances,
            policies_dir,
            compiler,
            compile_slots: Slots::new((cores / 2).max(1)),
            python_runtime,
            python_sha: std::sync::OnceLock::new(),
            python_runtimes: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            compiled: Mutex::new(Lru::new(COMPILED_CACHE)),
            validated: Mutex::new(Lru::new(VALIDATED_CACHE)),
            datasets: Mutex::new(Lru::new(DATASET_CACHE)),
            policies: Mutex::new(HashMap::new()),
            stored_versions: Mutex::new(HashSet::new()),
        }
    }

    /// Loads the policies replaced over the API (start-up).
    pub async fn load_replaced_policies(&self) -> Result<(), RegistryError> {
        for (name, text) in self.store.replaced_policies().await? {
            let entry = Arc::new(PolicyEntry::new(
                Policy::from_toml_str(&text, &format!("{name}.toml"))?,
                "api",
            ));
            lock(&self.policies).insert(name, entry);
        }
        Ok(())
    }

    /// Brings the replaced policies up to the store (a shared store, where
    /// other API nodes replace and revert them): a replacement made
    /// elsewhere takes effect here, one reverted elsewhere goes. Returns
    /// how many changed.
    pub async fn sync_replaced_policies(&self) -> Result<usize, RegistryError> {
        let stored: HashMap<String, String> = self.store.replaced_policies().await?.into_iter().collect();
        let mut changed = 0;
        let mut fresh = Vec::new();
        for (name, text) in &stored {
            let entry = PolicyEntry::new(Policy::from_toml_str(text, &format!("{name}.toml"))?, "api");
            let current = lock(&self.policies).get(name).map(|p| p.hash.clone());
            if current.as_deref() != Some(entry.hash.as_str()) {
                fresh.push((name.clone(), Arc::new(entry)));
            }
        }
        let mut policies = lock(&self.policies);
        for (name, entry) in fresh {
            policies.insert(name, entry);
            changed += 1;
        }
        let reverted: Vec<String> = policies
            .iter()
            .filter(|(name, p)| p.source == "api" && !stored.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in reverted {
            policies.remove(&name);
            changed += 1;
        }
        Ok(changed)
    }

    // ---- policies ----

    /// The policy jobs naming `name` run with now.
    pub fn policy(&self, name: &str) -> Result<Arc<PolicyEntry>, RegistryError> {
        if let Some(p) = lock(&self.policies).get(name) {
            return Ok(p.clone());
        }
        if !valid_policy_name(name) {
            return Err(RegistryError::UnknownPolicy(name.to_owned()));
        }
        let entry = match &self.policies_dir {
            Some(dir) if dir.join(format!("{name}.toml")).is_file() => {
                PolicyEntry::new(Policy::from_file(&dir.join(format!("{name}.toml")))?, "file")
            }
            _ => match Policy::builtin(name) {
                Some(p) => PolicyEntry::new(p, "builtin"),
                None => return Err(RegistryError::UnknownPolicy(name.to_owned())),
            },
        };
        let entry = Arc::new(entry);
        Ok(lock(&self.policies)
            .entry(name.to_owned())
            .or_insert(entry)
            .clone())
    }

    /// Every policy name: built-in, in the directory, replaced; sorted.
    pub fn policy_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Policy::builtin_names().iter().map(|s| s.to_string()).collect();
        if let Some(dir) = &self.policies_dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_some_and(|x| x == "toml") {
                        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                            if valid_policy_name(stem) {
                                names.push(stem.to_owned());
                            }
                        }
                    }
                }
            }
        }
        names.extend(lock(&self.policies).keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// The policy `name` as shipped (a file of the policies directory, else
    /// built in), whatever replaced it; `None` when there is none.
    pub fn shipped_policy(&self, name: &str) -> Result<Option<PolicyEntry>, RegistryError> {
        if !valid_policy_name(name) {
            return Ok(None);
        }
        if let Some(dir) = &self.policies_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                return Ok(Some(PolicyEntry::new(Policy::from_file(&path)?, "file")));
            }
        }
        Ok(Policy::builtin(name).map(|p| PolicyEntry::new(p, "builtin")))
    }

    /// Forgets the replacement of `name` (after the caller removed and
    /// audited it): new jobs get the shipped policy, if any.
    pub fn forget_policy(&self, name: &str) {
        lock(&self.policies).remove(name);
    }

    /// Makes `entry` the policy named `name` for new jobs (after the caller
    /// stored and audited it).
    pub fn set_policy(&self, name: &str, entry: Arc<PolicyEntry>) {
        lock(&self.stored_versions).insert(entry.hash.clone());
        lock(&self.policies).insert(name.to_owned(), entry);
    }

    /// Stores the policy text under its hash, once per process.
    pub async fn persist_version(&self, entry: &PolicyEntry) -> Result<(), RegistryError> {
        if lock(&self.stored_versions).contains(&entry.hash) {
            return Ok(());
        }
        self.store.put_policy_version(&entry.hash, &entry.toml).await?;
        lock(&self.stored_versions).insert(entry.hash.clone());
        Ok(())
    }

    /// The exact policy a stored job was submitted with.
    pub async fn policy_by_hash(&self, name: &str, hash: &str) -> Result<Arc<PolicyEntry>, RegistryError> {
        if let Ok(current) = self.policy(name) {
            if current.hash == hash {
                return Ok(current);
            }
        }
        let text = self
            .store
            .policy_version(hash)
            .await?
            .ok_or_else(|| RegistryError::UnknownPolicy(format!("{name} (version {hash})")))?;
        let policy = Policy::from_toml_str(&text, &format!("{name}.toml"))?;
        Ok(Arc::new(PolicyEntry::new(policy, "api")))
    }

    // ---- sandboxes and modules ----

    /// The sandbox for policies like `policy`: those with the same stack
    /// size and table slots share one.
    pub fn sandbox(&self, policy: &Policy) -> Result<Arc<Sandbox>, RegistryError> {
        let key = engine_key(policy);
        if let Some(s) = lock(&self.sandboxes).get(&key) {
            return Ok(s.clone());
        }
        let sandbox = Sandbox::new(EngineSettings {
            stack_bytes: key.0 as usize,
            max_memory_bytes: MAX_POLICY_MEMORY,
            max_table_elements: key.1,
            max_tables: key.2,
            max_instances: self.max_instances,
            python_stack_bytes: key.3 as usize,
        })
        .map_err(|f| RegistryError::Internal(format!("cannot start a sandbox: {}", f.message)))?;
        let sandbox = Arc::new(sandbox);
        Ok(lock(&self.sandboxes).entry(key).or_insert(sandbox).clone())
    }

    /// The module `sha` compiled for `policy`'s sandbox, when it is compiled
    /// and validated against `policy` already (never blocks).
    pub fn compiled_cached(&self, sha: &str, policy: &PolicyEntry) -> Option<Arc<Compiled>> {
        let c = lock(&self.compiled).get(&compiled_key(sha, engine_key(&policy.policy)))?;
        lock(&self.validated).get(&validated_key(sha, policy)).map(|()| c)
    }

    /// The module `sha` compiled for `policy`'s sandbox, validated against
    /// `policy`; `bytes` when the caller has them (else they are read).
    /// Blocking: compiles on a miss.
    pub fn compiled(
        &self,
        sha: &str,
        bytes: Option<&[u8]>,
        policy: &PolicyEntry,
    ) -> Result<Arc<Compiled>, RegistryError> {
        if let Some(c) = self.compiled_cached(sha, policy) {
            return Ok(c);
        }
        let engine = engine_key(&policy.policy);
        let key = compiled_key(sha, engine);
        // Compiled but not validated against this policy yet: the compiled
        // code serves once the module passes this policy's checks.
        let cached = lock(&self.compiled).get(&key);
        let owned;
        let bytes = match bytes {
            Some(b) => b,
            None => {
                owned = self.store.get_blob(Blob::Module, sha)?;
                &owned
            }
        };
        let sandbox = match &cached {
            Some(c) => c.sandbox.clone(),
            None => self.sandbox(&policy.policy)?,
        };
        if let Some(source) = python_source(bytes) {
            // Checked by the runtime under this policy; nothing to compile.
            let started = Instant::now();
            let runtime = self.python_runtime(&sandbox, engine)?;
            let strategy = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| RegistryError::Internal(format!("cannot start a runtime: {e}")))?
                .block_on(sandbox.load_python(&runtime, PYTHON_FILENAME, source, &policy.policy))
                .map_err(RegistryError::Module)?;
            self.metrics.step("validate", started.elapsed());
            let c = Arc::new(Compiled {
                sha: sha.to_owned(),
                strategy: Arc::new(strategy),
                sandbox,
            });
            let c = match cached {
                Some(c) => c,
                None => {
                    lock(&self.compiled).insert(key, c.clone());
                    c
                }
            };
            lock(&self.validated).insert(validated_key(sha, policy), ());
            return Ok(c);
        }
        // Validated once, here: loading and compiling take the result.
        let started = Instant::now();
        let info = sandbox
            .check(bytes, &policy.policy)
            .map_err(RegistryError::Module)?;
        self.metrics.step("validate", started.elapsed());
        let compiled = match cached {
            Some(c) => c,
            None => {
                let strategy = match self.precompiled(sha, &info, &sandbox) {
                    Some(strategy) => strategy,
                    None => {
                        let started = Instant::now();
                        let strategy = match &self.compiler {
                            Some(exe) => {
                                let _slot = self.compile_slots.take();
                                let limits = CompileLimits::from_policy(&policy.policy);
                                sandbox
                                    .compile_bounded(info, bytes, exe, limits)
                                    .map_err(|e| match e {
                                        CompileError::Module(f) => RegistryError::Module(f),
                                        CompileError::Host(m) => {
                                            RegistryError::Internal(format!("the compiler failed: {m}"))
                                        }
                                    })?
                            }
                            None => sandbox.compile(info, bytes).map_err(RegistryError::Module)?,
                        };
                        self.metrics.step("compile", started.elapsed());
                        self.persist_compiled(sha, &sandbox, &strategy);
                        strategy
                    }
                };
                let c = Arc::new(Compiled {
                    sha: sha.to_owned(),
                    strategy: Arc::new(strategy),
                    sandbox,
                });
                let mut compiled = lock(&self.compiled);
                match compiled.get(&key) {
                    Some(other) => other,
                    None => {
                        compiled.insert(key, c.clone());
                        c
                    }
                }
            }
        };
        lock(&self.validated).insert(validated_key(sha, policy), ());
        Ok(compiled)
    }

    /// The Python runtime compiled for `sandbox` (engine `engine`): kept in
    /// memory, else loaded from `runtimes/`, else compiled (seconds, once)
    /// and kept there. Blocking.
    fn python_runtime(
        &self,
        sandbox: &Sandbox,
        engine: EngineKey,
    ) -> Result<Arc<PythonRuntime>, RegistryError> {
        let refused = |m: String| RegistryError::Module(Failure::new(Cause::InvalidModule, m));
        let Some(path) = &self.python_runtime else {
            return Err(refused(
                "this is Python source, and this server has no Python runtime (start it with --python-runtime)".into(),
            ));
        };
        let mut runtimes = lock(&self.python_runtimes);
        if let Some(rt) = runtimes.get(&engine) {
            return Ok(rt.clone());
        }
        let sha = self
            .python_sha
            .get_or_init(|| {
                std::fs::read(path)
                    .map(|b| sha256_hex(&b))
                    .map_err(|e| format!("cannot read the Python runtime {}: {e}", path.display()))
            })
            .clone()
            .map_err(RegistryError::Internal)?;
        let key = sandbox.python_artifact_key();
        let loaded = self.store.get_runtime(&sha, &key).and_then(|artifact| {
            let started = Instant::now();
            // SAFETY: `runtimes/` holds only what `put_runtime` wrote below,
            // for this component and artifact key, and `get_runtime`
            // checked it against the SHA-256 stored with it.
            match unsafe { sandbox.load_python_runtime_bytes(&artifact) } {
                Ok(rt) => {
                    self.metrics.step("load", started.elapsed());
                    Some(rt)
                }
                Err(f) => {
                    tracing::warn!(error = %f.message, "the kept Python runtime was not used; compiling");
                    None
                }
            }
        });
        let rt = match loaded {
            Some(rt) => rt,
            None => {
                let bytes = std::fs::read(path).map_err(|e| {
                    RegistryError::Internal(format!("cannot read the Python runtime {}: {e}", path.display()))
                })?;
                let started = Instant::now();
                tracing::info!(runtime = %path.display(), "compiling the Python runtime (once)");
                let rt = {
                    let _slot = self.compile_slots.take();
                    sandbox
                        .compile_python_runtime(&bytes)
                        .map_err(|f| RegistryError::Internal(f.message))?
                };
                self.metrics.step("compile", started.elapsed());
                let kept = sandbox
                    .serialize_python_runtime(&rt)
                    .map_err(|f| f.message)
                    .and_then(|a| self.store.put_runtime(&sha, &key, &a).map_err(|e| e.to_string()));
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "cannot keep the compiled Python runtime");
                }
                rt
            }
        };
        let rt = Arc::new(rt);
        runtimes.insert(engine, rt.clone());
        Ok(rt)
    }

    /// Module `sha` (checked, `info`) loaded from its precompiled file,
    /// when there is one for `sandbox` that loads.
    fn precompiled(&self, sha: &str, info: &ModuleInfo, sandbox: &Sandbox) -> Option<CompiledModule> {
        let key = sandbox.artifact_key();
        let artifact = self.store.get_compiled(sha, &key)?;
        let started = Instant::now();
        // SAFETY: the file is one `persist_compiled` wrote into this data
        // directory, for module `sha` and this artifact key, and
        // `get_compiled` checked it against the SHA-256 stored with it.
        match unsafe { sandbox.load_precompiled(info.clone(), &artifact) } {
            Ok(strategy) => {
                self.metrics.step("load", started.elapsed());
                Some(strategy)
            }
            Err(f) => {
                tracing::warn!(module = %sha, error = %f.message, "precompiled module not used; compiling");
                None
            }
        }
    }

    /// Writes a freshly compiled module's code to the data directory (a
    /// failure costs a compilation later, nothing else).
    fn persist_compiled(&self, sha: &str, sandbox: &Sandbox, strategy: &CompiledModule) {
        let written = sandbox
            .serialize(strategy)
            .map_err(|f| f.message)
            .and_then(|artifact| {
                self.store
                    .put_compiled(sha, &sandbox.artifact_key(), &artifact)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(module = %sha, error = %e, "cannot keep the compiled module");
        }
    }

    // ---- data ----

    /// The bars of `ids` (merged by timestamp when several), parsed once.
    pub async fn dataset(&self, ids: &[String]) -> Result<Arc<Dataset>, RegistryError> {
        let key = ids.join(",");
        if let Some(d) = lock(&self.datasets).get(&key) {
            return Ok(d);
        }
        let mut parts = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = lock(&self.datasets).get(id) {
                parts.push(d);
                continue;
            }
            let (name, sha) = self
                .store
                .dataset_file(id)
                .await?
                .ok_or_else(|| RegistryError::UnknownDataset(id.clone()))?;
            let store = self.store.clone();
            let id_owned = id.clone();
            let parsed = tokio::task::spawn_blocking(move || -> Result<Dataset, RegistryError> {
                let bytes = store.get_blob(Blob::Dataset, &sha)?;
                Ok(Dataset::from_csv_bytes(
                    &name,
                    &bytes[..],
                    &format!("dataset {id_owned}"),
                )?)
            })
            .await
            .map_err(|e| RegistryError::Internal(format!("dataset loader stopped: {e}")))??;
            let parsed = Arc::new(parsed);
            lock(&self.datasets).insert(id.clone(), parsed.clone());
            parts.push(parsed);
        }
        let merged = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Arc::new(Dataset::merge(parts.iter().map(|d| (**d).clone()))?)
        };
        lock(&self.datasets).insert(key, merged.clone());
        Ok(merged)
    }

    /// Puts a freshly parsed dataset in the cache.
    pub fn remember_dataset(&self, id: &str, data: Arc<Dataset>) {
        lock(&self.datasets).insert(id.to_owned(), data);
    }
}

/// What a Python strategy's source is called in its tracebacks.
const PYTHON_FILENAME: &str = "strategy.py";

/// The source of a Python strategy, if `bytes` is one: UTF-8 text that is
/// not a wasm module (anything else is treated as wasm and validated so).
pub fn python_source(bytes: &[u8]) -> Option<&str> {
    if bytes.starts_with(b"\0asm") {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Policy names: `[a-z0-9_-]{1,64}`, as files in a policies directory.
pub fn valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn lru_forgets_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("b".into(), 2);
        // A hit makes "a" the most recent: "b" goes when "c" comes.
        assert_eq!(lru.get("a"), Some(1));
        lru.insert("c".into(), 3);
        assert_eq!(lru.get("b"), None);
        assert_eq!((lru.get("a"), lru.get("c")), (Some(1), Some(3)));
        // Replacing a value refreshes it too and keeps one entry per key.
        lru.insert("a".into(), 10);
        lru.insert("d".into(), 4);
        assert_eq!(
            (lru.get("a"), lru.get("c"), lru.get("d")),
            (Some(10), None, Some(4))
        );
        assert_eq!(lru.0.len(), 2);
    }
}
