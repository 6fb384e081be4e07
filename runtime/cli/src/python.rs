//! Python strategies from the command line: finding the Python runtime
//! component, keeping its compiled code in the user's cache so that only the
//! first run ever compiles it, and loading a strategy's source.
//!
//! A strategy file is Python when its name ends in `.py`; anything else is a
//! wasm module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_run::{Cause, Failure, Policy};
use palisade_sandbox::{CompiledModule, PythonRuntime, Sandbox};

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

/// The cache file of `component` compiled by `sandbox`: named after the
/// component's path, size and modification time (a rebuilt component gets a
/// new name without hashing 18 MB on every run) and the engine's artifact
/// key.
fn cache_file(dir: &Path, component: &Path, sandbox: &Sandbox) -> Result<PathBuf, InputError> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(component)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", component.display())))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(component)
        .unwrap_or_else(|_| component.to_path_buf())
        .hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    Ok(dir.join(format!(
        "python-runtime-{:016x}-{}.cwasm",
        h.finish(),
        sandbox.python_artifact_key()
    )))
}

/// The Python runtime, compiled by `sandbox`'s engine: from the cache when it
/// is there, else compiled (seconds, once) and written to the cache
/// atomically, replacing older compilations.
pub fn runtime(sandbox: &Sandbox) -> Result<Arc<PythonRuntime>, InputError> {
    let component = find_runtime()?;
    let cached = match cache_dir() {
        Some(dir) => Some((cache_file(&dir, &component, sandbox)?, dir)),
        None => None,
    };
    if let Some((file, _)) = &cached {
        if file.is_file() {
            // SAFETY: the file is what `serialize_python_runtime` of this
            // build wrote (its name carries the engine's artifact key), put
            // in place by an atomic rename in the user's own cache.
            match unsafe { sandbox.load_python_runtime(file) } {
                Ok(rt) => return Ok(Arc::new(rt)),
                Err(f) => eprintln!("note: recompiling the Python runtime: {}", f.message),
            }
        }
    }
    eprintln!(
        "compiling the Python runtime {} (once; the compiled code is kept in the cache)",
        component.display()
    );
    let bytes = std::fs::read(&component)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", component.display())))?;
    let rt = sandbox
        .compile_python_runtime(&bytes)
        .map_err(|f| InputError(f.message))?;
    if let Some((file, dir)) = cached {
        if let Err(e) = store(sandbox, &rt, &file, &dir) {
            eprintln!(
                "note: cannot keep the compiled Python runtime in {}: {e}",
                dir.display()
            );
        }
    }
    Ok(Arc::new(rt))
}

/// Writes the compiled runtime to `file` through a temporary file and a
/// rename, then removes other compilations of the runtime in `dir`.
fn store(sandbox: &Sandbox, rt: &PythonRuntime, file: &Path, dir: &Path) -> Result<(), String> {
    let bytes = sandbox.serialize_python_runtime(rt).map_err(|f| f.message)?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!(".python-runtime-{}.tmp", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, file).map_err(|e| e.to_string())?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path != file && name.starts_with("python-runtime-") && name.ends_with(".cwasm") {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
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
