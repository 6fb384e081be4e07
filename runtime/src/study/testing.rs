//! Helpers for the studies' tests: the prebuilt guest modules, generated
//! bars and a ready [`Study`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use palisade_host_api::Bar;

use super::Study;
use crate::engine::{BacktestConfig, Dataset};
use crate::policy::Policy;
use crate::sandbox::{params, EngineSettings, RunConfig, RunOutput, Sandbox};

/// A guest of `guest-examples/out/` (built by `scripts/build-guests.sh`).
#[derive(Clone, Copy, Debug)]
pub enum Guest {
    SmaCross,
    Adversary,
}

impl Guest {
    pub fn path(self) -> PathBuf {
        let file = match self {
            Guest::SmaCross => "sma_cross.wasm",
            Guest::Adversary => "adversary.wasm",
        };
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-examples/out")
            .join(file)
    }

    pub fn bytes(self) -> Vec<u8> {
        let path = self.path();
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the guests with scripts/build-guests.sh",
                path.display()
            )
        })
    }
}

/// `n` daily bars of one symbol `X`: a seeded random walk that switches
/// between trending and choppy stretches (so moving averages cross often),
/// prices rounded to 4 decimals.
pub fn bars(n: usize, seed: u64) -> Dataset {
    let mut state = seed;
    let mut next = move || palisade_host_api::next_random(&mut state);
    let tick = |x: f64| (x * 10_000.0).round() / 10_000.0;
    let mut close = 100.0_f64;
    let mut drift = 0.0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 40 == 0 {
            drift = (next() - 0.5) * 0.01;
        }
        let open = close;
        let step = drift + (next() - 0.5) * 0.03;
        close = tick((open * (1.0 + step)).max(1.0));
        let high = tick(open.max(close) * (1.0 + 0.004 * next())).max(open.max(close));
        let low = tick(open.min(close) * (1.0 - 0.004 * next())).min(open.min(close));
        out.push(Bar {
            ts: 1_500_000_000 + 86_400 * i as i64,
            symbol: 0,
            reserved: 0,
            open,
            high,
            low,
            close,
            volume: 1000.0,
        });
    }
    Dataset::from_bars(vec!["X".into()], out).expect("generated bars are valid")
}

/// A study of `guest` over `n` generated bars, the default policy, the
/// manifest's default parameters and `jobs` jobs.
pub fn study(guest: Guest, n: usize, jobs: usize) -> Study {
    let policy = Policy::default();
    let sandbox = Sandbox::new(EngineSettings {
        max_instances: 16,
        ..EngineSettings::for_policy(&policy)
    })
    .expect("sandbox");
    let strategy = sandbox.load(&guest.bytes(), &policy).expect("the guest loads");
    let base_params = params::resolve(&strategy.info.manifest, &[]).expect("defaults");
    Study {
        sandbox: Arc::new(sandbox),
        strategy: Arc::new(strategy),
        policy: Arc::new(policy),
        data: Arc::new(bars(n, 42)),
        base_params,
        backtest: BacktestConfig::default(),
        seed: 7,
        jobs,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
    }
}

/// `base` with `changes` applied (by name).
pub fn with(base: &[(String, f64)], changes: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut out = base.to_vec();
    for (name, value) in changes {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = *value,
            None => out.push((name.clone(), *value)),
        }
    }
    out
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(study.sandbox.backtest(&study.strategy, data, &study.policy, &run))
}

/// The default policy with fuel and deadlines so large that a guest in an
/// endless loop runs until it is cancelled.
pub fn endless_policy() -> Policy {
    Policy {
        fuel_per_event: 1_000_000_000_000,
        fuel_per_run: 1_000_000_000_000_000,
        deadline_per_event_ms: 3_600_000,
        deadline_per_run_ms: 86_400_000,
        ..Policy::default()
    }
}
