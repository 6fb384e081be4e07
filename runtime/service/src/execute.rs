//! Running one job of any kind on the executor and turning how it ended into
//! a job state, an error and a result document.
//!
//! Each kind is one arm of [`execute`]: a backtest is one sandboxed run;
//! `optimize`, `walk_forward` and `monte_carlo` are `palisade-study`'s
//! studies over the same compiled module, with the job's cancel flag and
//! progress. Every result is the document `palisade-document` writes, the
//! same bytes as `palisade <kind> --json` (with the strategy id in place of
//! the module path, and no `timing`). Adding a kind is adding its arm here
//! and its options in `jobs`.
//!
//! Mapping of endings: ok → `succeeded`; cancelled by the client →
//! `cancelled`; the sandbox's `deadline` or the job deadline → `timed_out`;
//! stopped by the watchdog → `failed` (`watchdog`); stopped by a shutdown →
//! back to the queue; any other classified failure → `failed` with its
//! cause. A failed backtest still has a result: the report up to where it
//! stopped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use palisade_document::Subject;
use palisade_run::{Cause, Failure, ProgressFn, RunConfig};
use palisade_study::{self as study, Progress, Study, StudyError};

use crate::jobs::{Job, Plan};
use crate::metrics::Metrics;
use crate::scheduler::{Control, StopReason};
use crate::storage::JobState;

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    Finished {
        state: JobState,
        /// `(cause, message)`.
        error: Option<(String, String)>,
    },
    /// Stopped by a shutdown: to run again after the restart.
    Requeue,
}

/// A job's ending and its result document.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub result: Option<String>,
}

/// Runs `job` to its end. Never panics on guest behaviour.
pub async fn execute(job: &Job, control: &Arc<Control>, metrics: &Metrics, parallelism: usize) -> Outcome {
    let instances = match job.plan {
        Plan::Backtest | Plan::MonteCarlo { .. } => 1,
        _ => parallelism as i64,
    };
    metrics.running_instances.add(instances);
    let (outcome, busy) = Timed::new(run(job, control, metrics, parallelism)).await;
    metrics.running_instances.sub(instances);
    let cpu = match job.plan {
        Plan::Backtest => busy,
        // Variants run as their own tasks: count wall time × parallelism,
        // an upper bound.
        _ => control.started.elapsed() * parallelism as u32,
    };
    metrics
        .cpu_seconds
        .with_label_values(&[&job.label])
        .inc_by(cpu.as_secs_f64());
    outcome
}

async fn run(job: &Job, control: &Arc<Control>, metrics: &Metrics, parallelism: usize) -> Outcome {
    match &job.plan {
        Plan::Backtest => backtest(job, control, metrics).await,
        Plan::Optimize { grid, options } => {
            let study = study_of(job, control, metrics, parallelism);
            let result = study::optimize(&study, grid, options).await;
            finish_study(control, result, |report| {
                palisade_document::optimize(&subject(job), grid, &job.params, report, None)
            })
        }
        Plan::WalkForward { grid, options } => {
            let study = study_of(job, control, metrics, parallelism);
            let result = study::walk_forward(&study, grid, options).await;
            finish_study(control, result, |report| {
                palisade_document::walk_forward(&subject(job), grid, &job.params, report, false, None)
            })
        }
        Plan::MonteCarlo { options } => {
            let study = study_of(job, control, metrics, 1);
            match study::monte_carlo(&study, options).await {
                // The backtest the trades come from failed: its document
                // names the failure, as the CLI's does.
                Err(StudyError::BacktestFailed(f)) => Outcome {
                    end: end_of(Some(&f), control),
                    result: Some(palisade_document::monte_carlo(
                        &subject(job),
                        &job.params,
                        Err(f),
                        None,
                    )),
                },
                result => finish_study(control, result, |report| {
                    palisade_document::monte_carlo(&subject(job), &job.params, Ok(report), None)
                }),
            }
        }
    }
}

async fn backtest(job: &Job, control: &Arc<Control>, metrics: &Metrics) -> Outcome {
    let compiled = &job.compiled;
    let policy = &job.policy.policy;
    let run = RunConfig {
        params: job.params.clone(),
        seed: job.request.seed,
        backtest: job.backtest.clone(),
        cancel: Some(control.cancel.clone()),
        progress: Some(ProgressFn({
            let control = control.clone();
            Arc::new(move |p| control.set_progress(p))
        })),
    };
    let out = compiled
        .sandbox
        .backtest(&compiled.strategy, job.data.clone(), policy, &run)
        .await;
    let end = end_of(out.outcome.as_ref().err(), control);
    metrics.step("run", Duration::from_secs_f64(out.run_seconds));
    metrics
        .fuel
        .with_label_values(&[&job.label])
        .inc_by(out.usage.fuel);
    let peak = metrics.memory_peak.with_label_values(&[&job.label]);
    let used = i64::try_from(out.usage.memory_peak_bytes).unwrap_or(i64::MAX);
    if used > peak.get() {
        peak.set(used);
    }
    let doc = palisade_document::backtest(&subject(job), &job.params, out, job.request.equity_curve, None);
    Outcome {
        end,
        result: Some(doc),
    }
}

fn study_of(job: &Job, control: &Arc<Control>, metrics: &Metrics, parallelism: usize) -> Study {
    let progress_control = control.clone();
    let fuel = metrics.fuel.with_label_values(&[&job.label]);
    let peak = metrics.memory_peak.with_label_values(&[&job.label]);
    let counted = AtomicU64::new(0);
    Study {
        sandbox: job.compiled.sandbox.clone(),
        strategy: job.compiled.strategy.clone(),
        policy: job.policy.policy.clone(),
        data: job.data.clone(),
        base_params: job.params.clone(),
        backtest: job.backtest.clone(),
        seed: job.request.seed,
        threads: parallelism.max(1),
        cancel: control.cancel.clone(),
        progress: Some(Arc::new(move |p: Progress| {
            if p.total > 0 {
                progress_control.set_progress(p.done as f64 / p.total as f64);
            }
            // Calls come one at a time with growing totals.
            let before = counted.swap(p.fuel, Ordering::Relaxed);
            fuel.inc_by(p.fuel.saturating_sub(before));
            let used = i64::try_from(p.memory_peak_bytes).unwrap_or(i64::MAX);
            if used > peak.get() {
                peak.set(used);
            }
        })),
    }
}

/// What a job's result document says about it: its strategy (labelled by
/// the module's SHA-256), policy, data and seed.
fn subject(job: &Job) -> Subject<'_> {
    Subject {
        manifest: &job.compiled.strategy.info.manifest,
        module: &job.compiled.sha,
        policy: &job.policy.policy.name,
        data: &job.data,
        seed: job.request.seed,
    }
}

/// The ending of a study, and its document (written by `document`) when it
/// completed.
fn finish_study<R>(
    control: &Control,
    result: Result<R, StudyError>,
    document: impl FnOnce(R) -> String,
) -> Outcome {
    match result {
        Ok(report) => Outcome {
            end: End::Finished {
                state: JobState::Succeeded,
                error: None,
            },
            result: Some(document(report)),
        },
        Err(StudyError::Cancelled { .. }) => Outcome {
            end: end_of(
                Some(&Failure::new(Cause::Cancelled, "the study was cancelled")),
                control,
            ),
            result: None,
        },
        Err(StudyError::BacktestFailed(f)) => Outcome {
            end: end_of(Some(&f), control),
            result: None,
        },
        Err(e) => Outcome {
            end: End::Finished {
                state: JobState::Failed,
                error: Some(("study_error".into(), e.to_string())),
            },
            result: None,
        },
    }
}

/// The ending of a run that stopped with `failure` (or completed).
fn end_of(failure: Option<&Failure>, control: &Control) -> End {
    let Some(f) = failure else {
        return End::Finished {
            state: JobState::Succeeded,
            error: None,
        };
    };
    let failed = |cause: &str, message: String| End::Finished {
        state: JobState::Failed,
        error: Some((cause.to_owned(), message)),
    };
    match (f.cause, control.reason()) {
        (Cause::Cancelled, Some(StopReason::Shutdown)) => End::Requeue,
        (Cause::Cancelled, Some(StopReason::Deadline)) => End::Finished {
            state: JobState::TimedOut,
            error: Some((
                "deadline".into(),
                format!(
                    "the job ran past its deadline ({} ms, deadline_per_run)",
                    control
                        .deadline
                        .saturating_duration_since(control.started)
                        .as_millis()
                ),
            )),
        },
        (Cause::Cancelled, Some(StopReason::Watchdog)) => failed(
            "watchdog",
            format!(
                "no progress for {:.0} s: stopped by the watchdog",
                control.stalled_for(Instant::now()).as_secs_f64()
            ),
        ),
        (Cause::Cancelled, _) => End::Finished {
            state: JobState::Cancelled,
            error: Some(("cancelled".into(), "cancelled by the client".into())),
        },
        (Cause::Deadline, _) => End::Finished {
            state: JobState::TimedOut,
            error: Some(("deadline".into(), f.message.clone())),
        },
        (cause, _) => failed(cause.as_str(), f.message.clone()),
    }
}

/// A future that adds up the time spent inside its `poll`: the CPU time the
/// executor gave it (plus any time its thread was descheduled mid-poll).
struct Timed<F> {
    inner: Pin<Box<F>>,
    busy: Duration,
}

impl<F: Future> Timed<F> {
    fn new(inner: F) -> Self {
        Timed {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.busy += started.elapsed();
        polled.map(|out| (out, self.busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(reason: Option<StopReason>) -> Control {
        let c = Control::new("j".into(), "t".into(), Duration::from_secs(1));
        if let Some(r) = reason {
            c.stop(r);
        }
        c
    }

    #[test]
    fn endings_map_to_states() {
        let cancelled = Failure::new(Cause::Cancelled, "the run was cancelled");
        let check = |f: Option<&Failure>,
                     reason: Option<StopReason>,
                     state: Option<JobState>,
                     cause: Option<&str>| {
            let end = end_of(f, &control(reason));
            match (end, state) {
                (End::Requeue, None) => {}
                (End::Finished { state: s, error }, Some(want)) => {
                    assert_eq!(s, want, "{f:?} {reason:?}");
                    assert_eq!(error.as_ref().map(|e| e.0.as_str()), cause, "{f:?} {reason:?}");
                }
                (end, want) => panic!("{f:?} {reason:?}: {end:?}, wanted {want:?}"),
            }
        };
        check(None, None, Some(JobState::Succeeded), None);
        check(
            Some(&cancelled),
            Some(StopReason::Cancelled),
            Some(JobState::Cancelled),
            Some("cancelled"),
        );
        check(
            Some(&cancelled),
            Some(StopReason::Deadline),
            Some(JobState::TimedOut),
            Some("deadline"),
        );
        check(
            Some(&cancelled),
            Some(StopReason::Watchdog),
            Some(JobState::Failed),
            Some("watchdog"),
        );
        check(Some(&cancelled), Some(StopReason::Shutdown), None, None);
        check(
            Some(&Failure::new(Cause::Deadline, "run deadline")),
            None,
            Some(JobState::TimedOut),
            Some("deadline"),
        );
        check(
            Some(&Failure::new(Cause::FuelExhausted, "fuel")),
            None,
            Some(JobState::Failed),
            Some("fuel_exhausted"),
        );
    }
}
