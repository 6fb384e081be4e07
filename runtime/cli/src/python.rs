//! Python strategies from the command line: finding the Python runtime
//! component, keeping its compiled code in the user's cache so that only the
//! first run ever compiles it, and loading a strategy's source.
//!
//! A strategy file is Python when its name ends in `.py`; anything else is a
//! wasm module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_run::{Cause, Failure, Policy};
use palisade_sandbox::{CompiledModule, PythonRuntime, RuntimeCache, Sandbox};

use crate::InputError;

/// The environment variable naming the runtime component (`.wasm`).
pub const RUNTIME_ENV: &str = "PALISADE_PYTHON_RUNTIME";
/// The environment variable naming the cache directory.
pub const CACHE_ENV: &str = "PALISADE_CACHE_DIR";
/// The runtime component's file name.
const RUNTIME_FILE: &str = "palisade-python.wasm";

/// Whether the strategy at `path` is Python source.
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// The policy a strategy runs under when `--policy` is not given: `python`
/// for Python strategies, `default` for wasm modules.
pub fn default_policy(path: &Path) -> &'static str {
    if is_python(path) {
        "python"
    } else {
        palisade_run::policy::DEFAULT_POLICY_NAME
    }
}

/// Where the runtime component is: `$PALISADE_PYTHON_RUNTIME`, else beside
/// this executable (or in `../share/palisade/` from it), else where
/// `scripts/build-python-runtime.sh` writes it in the source tree this
/// binary was built from.
pub fn find_runtime() -> Result<PathBuf, InputError> {
    if let Some(p) = std::env::var_os(RUNTIME_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(InputError(format!(
                "{RUNTIME_ENV} names {}, which is not a file",
                p.display()
            )))
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(RUNTIME_FILE));
        candidates.push(dir.join("../share/palisade").join(RUNTIME_FILE));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../sdk-python/out")
            .join(RUNTIME_FILE),
    );
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        InputError(format!(
            "the Python runtime component ({RUNTIME_FILE}) is not built: run scripts/build-python-runtime.sh, or set {RUNTIME_ENV} to its path"
        ))
    })
}

/// The directory compiled code is kept in: `$PALISADE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/palisade`, else `~/.cache/palisade`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_ENV) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("palisade"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/palisade"))
}

/// The Python runtime, compiled by `sandbox`'s engine: from the cache when it
/// is there, else compiled (seconds, once) and kept in the cache.
pub fn runtime(sandbox: &Sandbox) -> Result<Arc<PythonRuntime>, InputError> {
    let component = find_runtime()?;
    let dir = cache_dir();
    let cached = sandbox.cached_python_runtime(&component, dir.as_deref(), |event| match event {
        RuntimeCache::Compiling => eprintln!(
            "compiling the Python runtime {} (once; the compiled code is kept in the cache)",
            component.display()
        ),
        RuntimeCache::Note(note) => eprintln!("note: {note}"),
    });
    cached.map(Arc::new).map_err(|f| InputError(f.message))
}

/// Loads a Python strategy: its source must be UTF-8; the runtime checks it
/// (`describe`) under `policy`. The inner `Err` is the strategy's fault.
pub fn load(
    sandbox: &Sandbox,
    path: &Path,
    bytes: &[u8],
    policy: &Policy,
) -> Result<Result<CompiledModule, Failure>, InputError> {
    let filename = path
        .file_name()
        .map_or_else(|| "strategy.py".to_owned(), |n| n.to_string_lossy().into_owned());
    let source = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(Failure::new(
                Cause::InvalidModule,
                format!(
                    "{filename} is not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )))
        }
    };
    let runtime = self::runtime(sandbox)?;
    Ok(crate::runtime()?.block_on(sandbox.load_python(&runtime, &filename, source, policy)))
}
