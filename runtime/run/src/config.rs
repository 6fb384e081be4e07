//! What one run needs besides the module and the data: resolved parameters,
//! the seed, the backtest's settings, and the caller's cancel flag and
//! progress callback. Plain data; the sandbox and the native runner read it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use palisade_backtest::BacktestConfig;

/// What one run needs besides the module and the data.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Resolved parameter values (see [`crate::params::resolve`]).
    pub params: Vec<(String, f64)>,
    /// Seed of the guest's `random` stream.
    pub seed: u64,
    pub backtest: BacktestConfig,
    /// Set to stop the run at the next epoch tick.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Told, at every epoch tick, the fraction of the bars handed to the
    /// guest so far.
    pub progress: Option<ProgressFn>,
}

/// A callback taking a run's progress, from 0 to 1.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(f64) + Send + Sync>);

impl std::fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressFn")
    }
}
