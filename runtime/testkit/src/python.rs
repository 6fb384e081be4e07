//! Python strategies in tests: the runtime component compiled by a test's
//! sandbox (cached under the target directory, so only the first test
//! process compiles it), loading a strategy's source, running it.

use std::path::Path;
use std::sync::Arc;

use palisade_backtest::Dataset;
use palisade_run::{Failure, Policy, RunOutput};
use palisade_sandbox::{CompiledModule, PythonRuntime, Sandbox};

use crate::fixtures::block_on;
pub use crate::guests::PYTHON_RUNTIME;

/// Where the tests keep the runtime's compiled code.
const CACHE_DIR: &str = concat!(env!("OUT_DIR"), "/python-cache");

/// The Python runtime compiled by `sandbox`'s engine.
pub fn runtime(sandbox: &Sandbox) -> Arc<PythonRuntime> {
    let rt = sandbox
        .cached_python_runtime(Path::new(PYTHON_RUNTIME), Some(Path::new(CACHE_DIR)), |_| {})
        .unwrap_or_else(|f| panic!("the Python runtime does not load: {f}"));
    Arc::new(rt)
}

/// The Python policy with `edit` applied (and checked).
pub fn policy(edit: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy::builtin("python").expect("the python policy is built in");
    p.name = "test-python".into();
    edit(&mut p);
    p.validate("test")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    p
}

/// Checks `source` (as file `strategy.py`) with the runtime's `describe`.
pub fn load(sandbox: &Sandbox, source: &str, policy: &Policy) -> Result<CompiledModule, Failure> {
    block_on(sandbox.load_python(&runtime(sandbox), "strategy.py", source, policy))
}

/// Loads `source` and backtests it over `data` with `overrides` (seed 0);
/// `Err` when the strategy is refused at load.
pub fn run_in(
    sandbox: &Sandbox,
    source: &str,
    policy: &Policy,
    overrides: &[(&str, &str)],
    data: Arc<Dataset>,
) -> Result<RunOutput, Failure> {
    let strategy = load(sandbox, source, policy)?;
    Ok(crate::fixtures::backtest_loaded(
        sandbox, &strategy, policy, overrides, data,
    ))
}

/// The source of a Python example (`sma_cross`, `bollinger_revert`,
/// `donchian_breakout`).
pub fn example(name: &str) -> String {
    let path = crate::guests::repo_root().join(format!("sdk-python/examples/{name}.py"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
