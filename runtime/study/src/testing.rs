//! Helpers for the studies' unit tests: a ready [`Study`] of a prebuilt
//! guest over generated bars, and standalone backtests to compare with. The
//! bars, guests and fixtures come from `palisade-testkit`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use palisade_backtest::{BacktestConfig, Dataset};
use palisade_run::{params, Policy, RunConfig, RunOutput};
use palisade_testkit::{bars, fixtures, guests};

use crate::study::Study;

pub use fixtures::{endless_policy, with};

/// A guest of `guest-examples/out/`.
#[derive(Clone, Copy, Debug)]
pub enum Guest {
    SmaCross,
    Adversary,
}

impl Guest {
    pub fn bytes(self) -> Vec<u8> {
        guests::bytes(match self {
            Guest::SmaCross => "sma_cross",
            Guest::Adversary => "adversary",
        })
    }
}

/// A study of `guest` over `n` generated bars, the default policy, the
/// manifest's default parameters and `threads` threads.
pub fn study(guest: Guest, n: usize, threads: usize) -> Study {
    let policy = Policy::default();
    let sandbox = fixtures::sandbox(&policy);
    let strategy = sandbox.load(&guest.bytes(), &policy).expect("the guest loads");
    let base_params = params::resolve(&strategy.info.manifest, &[]).expect("defaults");
    Study {
        sandbox: Arc::new(sandbox),
        strategy: Arc::new(strategy),
        policy: Arc::new(policy),
        data: bars::regime_dataset(n, 42),
        base_params,
        backtest: BacktestConfig::default(),
        seed: 7,
        threads,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
    }
}

/// One standalone backtest with the study's strategy, data, policy, config
/// and seed, on a current-thread runtime (as `palisade backtest` runs it).
pub fn backtest(study: &Study, params: &[(String, f64)]) -> RunOutput {
    backtest_on(study, study.data.clone(), params)
}

/// Like [`backtest`] over other data.
pub fn backtest_on(study: &Study, data: Arc<Dataset>, params: &[(String, f64)]) -> RunOutput {
    let run = RunConfig {
        params: params.to_vec(),
        seed: study.seed,
        backtest: study.backtest.clone(),
        cancel: None,
        progress: None,
    };
    fixtures::block_on(study.sandbox.backtest(&study.strategy, data, &study.policy, &run))
}
