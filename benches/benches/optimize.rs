//! A 1,000-variant grid of `sma-cross` over 100,000 bars, with 1 and 2 worker
//! threads (issue 3). Run with
//! `scripts/build-guests.sh && cargo bench -p palisade-benches --bench optimize`.
//!
//! Each iteration is a whole `palisade optimize` study through the library:
//! 20 `fast` values × 50 `slow` values, every variant its own sandboxed
//! instance of the one compiled module over the same shared data, ranked by
//! total return. After criterion's report it prints the mean time per study
//! for each thread count, the throughput in bars per second and the scaling
//! efficiency `t1 / (2 × t2)` (1 is perfect scaling).

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use palisade_run::params;
use palisade_run::Policy;
use palisade_sandbox::{EngineSettings, Sandbox};
use palisade_study::{self as study, Grid, OptimizeOptions, Study};
use palisade_testkit::bars::{minute_dataset as random_walk, DEFAULT_SEED};
use palisade_testkit::guests::bytes as guest_module;

const BARS: usize = 100_000;
const GRID: [&str; 2] = ["fast=2:21:1", "slow=30:520:10"];
const VARIANTS: usize = 1_000;

/// Seconds per study measured by each thread count, all iterations.
static TIMES: Mutex<Vec<(usize, f64)>> = Mutex::new(Vec::new());

fn study(threads: usize) -> (Study, Grid) {
    let policy = Policy::default();
    let sandbox = Sandbox::new(EngineSettings {
        max_instances: 8,
        ..EngineSettings::for_policy(&policy)
    })
    .expect("sandbox");
    let strategy = sandbox
        .load(&guest_module("sma_cross"), &policy)
        .expect("sma_cross loads");
    let manifest = &strategy.info.manifest;
    let base_params = params::resolve(manifest, &[]).expect("defaults");
    let grid = Grid::parse(manifest, &GRID).expect("grid");
    assert_eq!(grid.size() as usize, VARIANTS);
    let study = Study {
        sandbox: Arc::new(sandbox),
        strategy: Arc::new(strategy),
        policy: Arc::new(policy),
        data: random_walk(BARS, DEFAULT_SEED),
        base_params,
        backtest: Default::default(),
        seed: 0,
        threads,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: None,
    };
    (study, grid)
}

fn optimize_grid(c: &mut Criterion) {
    let mut group = c.benchmark_group("optimize_1000x100k");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(40));
    for threads in [1, 2] {
        let (study, grid) = study(threads);
        let rt = study::executor(threads).expect("runtime");
        let options = OptimizeOptions::default();
        group.bench_function(format!("threads={threads}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let report = rt
                        .block_on(study::optimize(&study, &grid, &options))
                        .expect("study");
                    let took = started.elapsed();
                    assert_eq!(report.counts.ok, VARIANTS, "every variant completes");
                    black_box(report);
                    TIMES.lock().unwrap().push((threads, took.as_secs_f64()));
                    total += took;
                }
                total
            })
        });
    }
    group.finish();
}

fn summary() {
    let times = TIMES.lock().unwrap();
    let mean = |threads: usize| {
        let t: Vec<f64> = times
            .iter()
            .filter(|(j, _)| *j == threads)
            .map(|(_, t)| *t)
            .collect();
        (!t.is_empty()).then(|| t.iter().sum::<f64>() / t.len() as f64)
    };
    let bars = (VARIANTS * BARS) as f64;
    println!(
        "\n{VARIANTS}-variant grid of sma-cross over {BARS} bars ({} studies measured):",
        times.len()
    );
    for threads in [1, 2] {
        if let Some(t) = mean(threads) {
            println!(
                "  threads={threads}: {t:.3} s per study, {:.1} M bars/s",
                bars / t / 1e6
            );
        }
    }
    if let (Some(t1), Some(t2)) = (mean(1), mean(2)) {
        println!(
            "  scaling efficiency t1 / (2 t2) = {:.1}%",
            100.0 * t1 / (2.0 * t2)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    optimize_grid(&mut c);
    c.final_summary();
    summary();
}
