//! `palisade-study`, the optimization studies: many sandboxed backtests of one compiled strategy,
//! run in parallel over shared read-only data.
//!
//! - [`optimize()`]: a parameter [`Grid`] (every point, or a seeded random
//!   sample of them) ranked by an [`Objective`].
//! - [`walk_forward()`]: optimize on in-sample windows, run the chosen
//!   parameters on the following out-of-sample windows, and measure how much
//!   of the in-sample performance survives.
//! - [`monte_carlo()`]: resample the trade returns of one backtest to see
//!   the spread of outcomes the same trades could have produced.
//!
//! Every backtest of a study (a *variant*) is its own sandboxed instance with
//! the policy's limits, made from the one compiled module in microseconds; the
//! [`Dataset`](palisade_backtest::Dataset) is shared through an `Arc`. Up to [`Study::threads`] variants run
//! at once, as tasks of the tokio runtime the study is awaited on (build one
//! with [`executor`] for as many worker threads). Results are collected by
//! variant index, never by completion order, so a study gives identical
//! results whatever the number of threads. A variant that fails (fuel, memory,
//! panic, parameters its strategy refuses) is reported with its cause and the
//! study goes on; a variant whose values break the manifest's declared types
//! or ranges is reported as rejected without running.
//!
//! Studies report progress (runs done / total) through [`Study::progress`]
//! and stop when [`Study::cancel`] is set: the flag is every variant's
//! [`RunConfig::cancel`](palisade_run::RunConfig::cancel), which the sandbox checks at each epoch tick
//! (about a millisecond), so even a variant stuck in a loop stops at once.
//! A cancelled study returns [`StudyError::Cancelled`].
//!
//! # Definitions
//!
//! **Grid order.** Variants are numbered in grid order, the first grid
//! parameter varying slowest (like nested loops, or Python's
//! `itertools.product`). A random sample keeps the grid order of the points
//! it drew.
//!
//! **Ranking.** Variants are ranked by their objective value, best first:
//! larger is better, except for [`Objective::MaxDrawdown`] and
//! [`Objective::Volatility`], where smaller is better. A variant without a
//! value (it failed, was rejected, or the statistic is undefined: no trades
//! for `win_rate`, no losing trade for `profit_factor`, ...) ranks after every
//! variant with one. Equal values rank in variant order, so the first variant
//! in grid order wins a tie (as in backtesting.py, whose optimizer takes the
//! first maximum).
//!
//! **Walk-forward windows.** The data's `T` distinct timestamps are cut into
//! `N` windows (timestamps are never split, so every symbol's bars of one
//! timestamp stay together). Out-of-sample (OOS) segments have
//! `L_oos = floor(T (1 − f) / (N (1 − f) + f))` timestamps for the in-sample
//! fraction `f`, and follow each other up to the end of the data; the first
//! in-sample (IS) segment takes the rest, `L_is = T − N L_oos` (so
//! `L_is ≈ L_oos f / (1 − f)`). Window `k` (from 0) tests on
//! `[L_is + k L_oos, L_is + (k + 1) L_oos)`. Its in-sample segment is the
//! `L_is` timestamps before that (*rolling*) or everything from the start
//! (*anchored*). Each segment is a separate backtest that starts flat with
//! the initial cash, so the strategy warms up inside it: every segment must
//! be longer than the strategy's warm-up (the manifest's `warmup`, the
//! largest value over the grid when it names a parameter).
//!
//! **Stitched OOS.** The OOS segments chained end to end, each compounding
//! on the previous: the stitched equity at a point of window `k` is
//! `C × Π_{j<k} (E_j / C) × (e / C)`, where `C` is the initial cash, `E_j` the
//! final equity of window `j` and `e` the equity in window `k`. Its
//! statistics follow `engine::stats` over that curve (trade statistics use
//! the windows' trades unchanged).
//!
//! **Walk-forward efficiency.** `WFE = CAGR(stitched OOS) / mean_k CAGR(IS_k)`,
//! with `IS_k` the in-sample backtest of the parameters chosen in window `k`,
//! and CAGR as in `engine::stats` (`(e_T / C)^(ppy / n) − 1`, so both sides
//! are annualized). Per window, `wfe_k = CAGR(OOS_k) / CAGR(IS_k)`. It is
//! undefined when the in-sample CAGR is not positive, where "what fraction
//! survives" means nothing. 1 means the OOS annual return equals the IS one;
//! 0.5 is half of it.
//!
//! **Degradation.** For each window, with `s` the objective's score
//! (its value, negated when smaller is better):
//! `d_k = (s(IS_k) − s(OOS_k)) / |s(IS_k)|`, and `degradation = mean_k d_k`
//! over the windows where both are defined and `s(IS_k) ≠ 0`. 0 means no
//! loss from IS to OOS, 1 means the OOS objective fell to zero, above 1 that
//! it changed sign.
//!
//! **Parameter stability.** For each grid parameter, the coefficient of
//! variation of the values chosen across windows: `cv = σ / |μ|` with the
//! population standard deviation `σ` and mean `μ` over the windows that
//! chose parameters. 0 means every window chose the same value (also when
//! that value is 0); undefined when `μ = 0 < σ`.
//!
//! **Robustness score**, in `[0, 1]`: the mean of three parts, each in
//! `[0, 1]`: the fraction of windows whose OOS total return is positive (a
//! window that could not be tested counts as not profitable);
//! `clamp(WFE, 0, 1)` (0 when undefined); and the mean over the grid
//! parameters of `1 / (1 + cv)` (a parameter with an undefined `cv` counts
//! 0; the part is 0 when no window chose parameters).
//!
//! A window whose in-sample variants all lack an objective value chooses
//! nothing and is not tested; a window whose OOS backtest fails is reported
//! with its cause. Neither is part of the stitched curve or of WFE.
//!
//! **Monte Carlo trade returns.** The closed trades of one backtest, in
//! closing order, as returns on the equity they were closed from:
//! `r_i = pnl_i / (C + Σ_{j<i} pnl_j)`. Compounding them in their original
//! order gives back `C + Σ pnl`, the realized equity. Each run draws `n`
//! returns with replacement (*bootstrap*) or shuffles them (*permutation*:
//! the final return is then the same in every run, only the path and its
//! drawdown change), compounds them from `C`, and records the final return
//! and the largest drawdown of that trade-by-trade path (peak starting at
//! `C`, as in `engine::stats`). Positions still open at the end are not
//! trades and are left out.
//!
//! **Monte Carlo results.** Percentiles interpolate linearly between order
//! statistics (the `p`-th of sorted `x_0..x_{m−1}` is at rank `(m − 1) p`,
//! numpy's default). Probability of profit: the fraction of runs with a final
//! return above 0. Probability of ruin: the fraction of runs whose equity is
//! at or below `(1 − ruin) × C` after any trade (`ruin = 0.5` by default:
//! losing half the account). The stream is ChaCha8 seeded from the seed, so a
//! seed always gives the same result.
//!
//! What this crate does not do: read files, parse flags or print (the CLI
//! does), write result documents (`palisade-document` does), or queue jobs
//! (the service does). It knows the sandbox only through `palisade-sandbox`'s
//! API and nothing of HTTP or the terminal.

pub mod grid;
pub mod monte_carlo;
pub mod optimize;
pub mod study;
mod variants;
pub mod walk_forward;

pub use grid::{Axis, AxisSpec, Grid, GridArg, GridError, Search, DECLARED_RANGE_POINTS, MAX_AXIS_POINTS};
pub use monte_carlo::{monte_carlo, resample, trade_returns, Method, MonteCarloOptions, MonteCarloReport};
pub use optimize::{optimize, OptimizeOptions, OptimizeReport, Variant, VariantStatus};
pub use palisade_run::params::{ParamSet, Reported};
pub use study::{
    default_threads, executor, rank, Objective, OnProgress, Progress, Study, StudyError, UnknownObjective,
};
pub use walk_forward::{walk_forward, WalkForwardOptions, WalkForwardReport, WindowMode};

#[cfg(test)]
mod testing;
