//! Runs a list of backtests of one strategy in parallel and returns their
//! results in list order.
//!
//! `study.threads` worker tasks are spawned on the current tokio runtime; each takes the
//! next unstarted backtest from a shared counter until none is left or the
//! study is cancelled. Each result is stored under its index, so the output
//! does not depend on which worker ran what or when it finished. It knows
//! nothing of grids or objectives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::study::{OnProgress, Progress, Study, StudyError};
use palisade_backtest::Dataset;
use palisade_run::{RunConfig, RunOutput, Usage};

/// One backtest to run: every parameter's value, and the data.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub params: Vec<(String, f64)>,
    pub data: Arc<Dataset>,
}

/// Counts finished runs across the batches of one study and reports them.
pub(crate) struct Tracker {
    /// `done`, `fuel` and `memory_peak_bytes` of the next report.
    state: Mutex<Progress>,
    progress: Option<OnProgress>,
}

impl Tracker {
    pub fn new(total: u64, progress: Option<OnProgress>) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            state: Mutex::new(Progress {
                done: 0,
                total,
                fuel: 0,
                memory_peak_bytes: 0,
            }),
            progress,
        });
        tracker.report(*tracker.lock());
        tracker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, now: Progress) {
        if let Some(p) = &self.progress {
            p(now);
        }
    }

    /// Counts one finished run that used no sandbox.
    pub fn tick(&self) {
        self.advance(1);
    }

    /// Counts one finished backtest and what it used. The lock makes the
    /// reports arrive in order.
    pub fn ran(&self, usage: &Usage) {
        let mut state = self.lock();
        state.done += 1;
        state.fuel = state.fuel.saturating_add(usage.fuel);
        state.memory_peak_bytes = state.memory_peak_bytes.max(usage.memory_peak_bytes);
        self.report(*state);
    }

    /// Counts `n` finished runs that used no sandbox.
    pub fn advance(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut state = self.lock();
        state.done += n;
        self.report(*state);
    }

    pub fn done(&self) -> u64 {
        self.lock().done
    }

    pub fn cancelled(&self) -> StudyError {
        StudyError::Cancelled {
            done: self.done(),
            total: self.lock().total,
        }
    }
}

/// Runs `runs` with `study`'s strategy, policy, config and seed, at most
/// `study.threads` at once, and maps each output with `keep` on the worker (so
/// that what is not kept is dropped early). Returns the kept values in run
/// order, or [`StudyError::Cancelled`] when the study's cancel flag was set.
pub(crate) async fn run_all<T, F>(
    study: &Study,
    runs: Vec<Run>,
    tracker: &Arc<Tracker>,
    keep: F,
) -> Result<Vec<T>, StudyError>
where
    T: Send + 'static,
    F: Fn(usize, RunOutput) -> T + Clone + Send + Sync + 'static,
{
    let count = runs.len();
    let runs = Arc::new(runs);
    let next = Arc::new(AtomicUsize::new(0));
    let workers = study.threads.clamp(1, count.max(1));
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (study, runs, next, tracker, keep) = (
            study.clone(),
            runs.clone(),
            next.clone(),
            tracker.clone(),
            keep.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                // A claimed run always runs: when the study is cancelled
                // meanwhile, the sandbox stops it at its first epoch tick.
                if study.cancel.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs.len() {
                    break;
                }
                let planned = &runs[i];
                let config = RunConfig {
                    params: planned.params.clone(),
                    seed: study.seed,
                    backtest: study.backtest.clone(),
                    cancel: Some(study.cancel.clone()),
                    // The study reports progress per variant.
                    progress: None,
                };
                let out = study
                    .sandbox
                    .backtest(&study.strategy, planned.data.clone(), &study.policy, &config)
                    .await;
                let usage = out.usage.clone();
                kept.push((i, keep(i, out)));
                tracker.ran(&usage);
            }
            kept
        }));
    }
    let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for handle in handles {
        let kept = handle.await.map_err(|e| StudyError::Worker(e.to_string()))?;
        for (i, value) in kept {
            slots[i] = Some(value);
        }
    }
    if study.cancel.load(Ordering::Relaxed) {
        return Err(tracker.cancelled());
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| StudyError::Worker(format!("run {i} produced no result"))))
        .collect()
}
