//! Performance statistics of a backtest, computed from its equity curve and
//! its closed trades. This page is the reference for what each number means.
//!
//! # Inputs
//!
//! - `C`: the initial cash.
//! - `e_0 … e_T`: the equity curve, one point per distinct timestamp of the
//!   data, each taken after every bar of that timestamp was filled and marked
//!   (so `e_0` is the equity after the first timestamp's bars, not `C`).
//! - `r_t = e_t / e_{t−1} − 1` for `t = 0 … T`, with `e_{−1} = C`: one return
//!   per equity point, `n = T + 1` returns.
//! - `ppy`: periods per year, from the backtest's config (252 by default,
//!   meaning daily bars). Annualized numbers assume one equity point is one
//!   period: they are measured in bars, not in calendar time, so intraday or
//!   irregular data needs a matching `periods_per_year`.
//!
//! # Definitions
//!
//! Undefined values are `None` (`null` in JSON), never NaN or infinity.
//!
//! - `total_return = e_T / C − 1` (0 without any equity point).
//! - `cagr = (e_T / C)^(ppy / n) − 1`.
//! - `volatility = stdev(r) × √ppy`, with the sample standard deviation
//!   (divisor `n − 1`); needs `n >= 2`.
//! - `sharpe = mean(r) / stdev(r) × √ppy`, risk-free rate 0; `None` when
//!   `n < 2` or `stdev(r) = 0`.
//! - `sortino = mean(r) / downside × √ppy` with
//!   `downside = √(mean(min(r_t, 0)²))` over all `n` periods; `None` when no
//!   return is negative.
//! - `max_drawdown = max_t (1 − e_t / max(C, e_0, …, e_t))`: the largest
//!   fall from a running peak, as a positive fraction (0.25 is 25 %); `C` is
//!   the first peak. It exceeds 1 when equity goes below zero.
//! - `calmar = cagr / max_drawdown`; `None` when `max_drawdown = 0`.
//! - `win_rate = wins / trade_count`, a win being a closed trade with
//!   `pnl > 0`; `None` without trades.
//! - `profit_factor = Σ pnl of winning trades / |Σ pnl of losing trades|`
//!   (`pnl < 0`); `None` when no trade lost.
//! - `exposure`: the fraction of equity points at which any position was
//!   open.
//! - `trade_count`: closed trades (one per closed FIFO lot, see the broker);
//!   `avg_trade_pnl`, `best_trade`, `worst_trade`: mean, largest and smallest
//!   trade `pnl`; `fills`: number of order fills.
//!
//! The return-based statistics (`cagr`, `volatility`, `sharpe`, `sortino`,
//! `calmar`) are `None` when the equity ever reaches zero or below, where
//! returns stop meaning anything (the account is ruined: see
//! `total_return` and `max_drawdown`).
//!
//! Sums are sequential and compensated (Neumaier), so a result does not
//! depend on anything but its inputs, and long curves do not drift.

use serde::Serialize;

use super::report::Trade;

/// The numbers a statistics computation starts from.
#[derive(Clone, Copy, Debug)]
pub struct StatsInput<'a> {
    pub initial_cash: f64,
    pub periods_per_year: f64,
    /// Equity points `e_0 … e_T`.
    pub equity: &'a [f64],
    /// Equity points at which a position was open.
    pub exposed_points: usize,
    pub trades: &'a [Trade],
    pub fills: usize,
}

/// Performance statistics; see the module documentation for definitions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub total_return: f64,
    pub cagr: Option<f64>,
    pub volatility: Option<f64>,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub max_drawdown: f64,
    pub calmar: Option<f64>,
    pub win_rate: Option<f64>,
    pub profit_factor: Option<f64>,
    pub exposure: Option<f64>,
    pub trade_count: usize,
    pub avg_trade_pnl: Option<f64>,
    pub best_trade: Option<f64>,
    pub worst_trade: Option<f64>,
    pub fills: usize,
    /// `n`, the number of returns (equity points).
    pub periods: usize,
    /// The annualization basis used.
    pub periods_per_year: f64,
}

impl Stats {
    /// Computes every statistic.
    pub fn compute(input: &StatsInput<'_>) -> Stats {
        let c = input.initial_cash;
        let ppy = input.periods_per_year;
        let equity = input.equity;
        let n = equity.len();
        let last = equity.last().copied().unwrap_or(c);
        let total_return = last / c - 1.0;

        // Two passes, no temporaries: every sum below adds the same values
        // in the same order as its definition, so the results are
        // bit-identical to summing materialized vectors.
        let mut peak = c;
        let mut max_drawdown = 0.0_f64;
        let mut solvent = c > 0.0;
        let mut sum_r = Neumaier::default();
        let mut sum_down = Neumaier::default();
        let mut first_r = None;
        let mut all_equal = true;
        let mut prev = c;
        for &e in equity {
            peak = peak.max(e);
            max_drawdown = max_drawdown.max(1.0 - e / peak);
            solvent &= e > 0.0;
            let r = e / prev - 1.0;
            prev = e;
            all_equal &= *first_r.get_or_insert(r) == r;
            sum_r.add(r);
            sum_down.add(r.min(0.0).powi(2));
        }
        let count = if solvent { n } else { 0 };
        let annual = ppy.sqrt();
        let mean_r = (count > 0).then(|| sum_r.value() / count as f64);
        let stdev_r = match mean_r {
            Some(_) if count < 2 => None,
            Some(_) if all_equal => Some(0.0),
            Some(m) => {
                let mut squares = Neumaier::default();
                let mut prev = c;
                for &e in equity {
                    let r = e / prev - 1.0;
                    prev = e;
                    squares.add((r - m) * (r - m));
                }
                Some((squares.value() / (count - 1) as f64).sqrt())
            }
            None => None,
        };
        let volatility = stdev_r.map(|s| s * annual);
        let sharpe = match (mean_r, stdev_r) {
            (Some(m), Some(s)) if s > 0.0 => Some(m / s * annual),
            _ => None,
        };
        let downside = (count > 0).then(|| (sum_down.value() / count as f64).sqrt());
        let sortino = match (mean_r, downside) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d * annual),
            _ => None,
        };
        let cagr = (solvent && n > 0).then(|| (last / c).powf(ppy / n as f64) - 1.0);
        let calmar = match cagr {
            Some(g) if max_drawdown > 0.0 => Some(g / max_drawdown),
            _ => None,
        };

        let pnls: Vec<f64> = input.trades.iter().map(|t| t.pnl).collect();
        let wins = pnls.iter().filter(|&&p| p > 0.0).count();
        let gross_profit = sum(pnls.iter().copied().filter(|&p| p > 0.0));
        let gross_loss = -sum(pnls.iter().copied().filter(|&p| p < 0.0));
        let trade_count = pnls.len();

        Stats {
            total_return,
            cagr: finite(cagr),
            volatility: finite(volatility),
            sharpe: finite(sharpe),
            sortino: finite(sortino),
            max_drawdown,
            calmar: finite(calmar),
            win_rate: (trade_count > 0).then(|| wins as f64 / trade_count as f64),
            profit_factor: finite((gross_loss > 0.0).then(|| gross_profit / gross_loss)),
            exposure: (n > 0).then(|| input.exposed_points as f64 / n as f64),
            trade_count,
            avg_trade_pnl: finite(mean(&pnls)),
            best_trade: pnls.iter().copied().reduce(f64::max),
            worst_trade: pnls.iter().copied().reduce(f64::min),
            fills: input.fills,
            periods: n,
            periods_per_year: ppy,
        }
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// Neumaier-compensated sequential sum.
/// A running Neumaier (compensated) sum.
#[derive(Clone, Copy, Debug, Default)]
struct Neumaier {
    total: f64,
    compensation: f64,
}

impl Neumaier {
    #[inline]
    fn add(&mut self, v: f64) {
        let t = self.total + v;
        if self.total.abs() >= v.abs() {
            self.compensation += (self.total - t) + v;
        } else {
            self.compensation += (v - t) + self.total;
        }
        self.total = t;
    }

    #[inline]
    fn value(&self) -> f64 {
        self.total + self.compensation
    }
}

pub fn sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut s = Neumaier::default();
    for v in values {
        s.add(v);
    }
    s.value()
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| sum(values.iter().copied()) / values.len() as f64)
}

/// Sample standard deviation (divisor `n − 1`), two-pass; `None` for fewer
/// than two values. Exactly 0 when all values are equal.
pub fn sample_stdev(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    if values.iter().all(|&v| v == values[0]) {
        return Some(0.0);
    }
    let m = mean(values)?;
    let squares = sum(values.iter().map(|&v| (v - m) * (v - m)));
    Some((squares / (values.len() - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(pnl: f64) -> Trade {
        Trade {
            symbol: "X".into(),
            entry_ts: 0,
            exit_ts: 1,
            qty: 1.0,
            entry_price: 100.0,
            exit_price: 100.0 + pnl,
            pnl,
            commission: 0.0,
            ret: pnl / 100.0,
            bars_held: 1,
        }
    }

    fn stats(initial_cash: f64, ppy: f64, equity: &[f64], pnls: &[f64]) -> Stats {
        let trades: Vec<Trade> = pnls.iter().map(|&p| trade(p)).collect();
        Stats::compute(&StatsInput {
            initial_cash,
            periods_per_year: ppy,
            equity,
            exposed_points: equity.len() / 2,
            trades: &trades,
            fills: 2 * pnls.len(),
        })
    }

    #[track_caller]
    fn close(got: Option<f64>, want: Option<f64>) {
        match (got, want) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "got {g}, want {w}"),
            _ => assert_eq!(got, want),
        }
    }

    #[test]
    fn alternating_returns() {
        // Returns +10 %, −10 %, +10 %: mean 1/30, sample stdev √(1/75).
        let s = stats(100.0, 1.0, &[110.0, 99.0, 108.9], &[]);
        close(Some(s.total_return), Some(0.089));
        close(s.volatility, Some((1.0_f64 / 75.0).sqrt()));
        close(s.sharpe, Some(75.0_f64.sqrt() / 30.0));
        // Downside: √(0.01 / 3); sortino = (1/30) / √(1/300) = 1/√3.
        close(s.sortino, Some(1.0 / 3.0_f64.sqrt()));
        close(Some(s.max_drawdown), Some(0.1));
        // n = 3 periods at ppy 1: cagr = 1.089^(1/3) − 1.
        close(s.cagr, Some(1.089_f64.powf(1.0 / 3.0) - 1.0));
        close(s.calmar, Some((1.089_f64.powf(1.0 / 3.0) - 1.0) / 0.1));
        assert_eq!(s.periods, 3);
        assert_eq!(s.exposure, Some(1.0 / 3.0));

        // Annualizing scales volatility and Sharpe by √ppy.
        let s = stats(100.0, 252.0, &[110.0, 99.0, 108.9], &[]);
        close(s.sharpe, Some(75.0_f64.sqrt() / 30.0 * 252.0_f64.sqrt()));
        close(s.cagr, Some(1.089_f64.powf(84.0) - 1.0));
        assert_eq!(s.periods_per_year, 252.0);
    }

    #[test]
    fn drawdown_includes_initial_cash_as_first_peak() {
        // Peak 100 (the initial cash), trough 80, new peak 120, trough 90.
        let s = stats(100.0, 252.0, &[80.0, 120.0, 90.0, 130.0], &[]);
        close(Some(s.max_drawdown), Some(0.25));
        let s = stats(100.0, 252.0, &[90.0, 95.0], &[]);
        close(Some(s.max_drawdown), Some(0.1));
        // Only rising: no drawdown, no Calmar, no Sortino.
        let s = stats(100.0, 252.0, &[101.0, 103.0, 104.0], &[]);
        assert_eq!(s.max_drawdown, 0.0);
        assert_eq!(s.calmar, None);
        assert_eq!(s.sortino, None);
        assert!(s.sharpe.is_some());
    }

    #[test]
    fn undefined_values() {
        // Flat equity: zero returns, no deviation.
        let s = stats(100.0, 252.0, &[100.0, 100.0, 100.0], &[]);
        assert_eq!(s.total_return, 0.0);
        assert_eq!(s.volatility, Some(0.0));
        assert_eq!(s.sharpe, None);
        assert_eq!(s.sortino, None);
        assert_eq!(s.cagr, Some(0.0));
        assert_eq!(s.win_rate, None);
        assert_eq!(s.profit_factor, None);
        assert_eq!(s.avg_trade_pnl, None);
        // Constant non-zero return: stdev exactly 0.
        let s = stats(1.0, 1.0, &[2.0, 4.0, 8.0], &[]);
        assert_eq!(s.volatility, Some(0.0));
        assert_eq!(s.sharpe, None);
        // One point: no stdev.
        let s = stats(100.0, 252.0, &[110.0], &[]);
        assert_eq!(s.volatility, None);
        assert_eq!(s.sharpe, None);
        close(Some(s.total_return), Some(0.1));
        // No points at all.
        let s = stats(100.0, 252.0, &[], &[]);
        assert_eq!(s.total_return, 0.0);
        assert_eq!(s.cagr, None);
        assert_eq!(s.exposure, None);
        assert_eq!(s.periods, 0);
        // Ruin: equity at or below zero leaves return statistics undefined.
        let s = stats(100.0, 252.0, &[50.0, -10.0, 20.0], &[]);
        close(Some(s.total_return), Some(-0.8));
        close(Some(s.max_drawdown), Some(1.1));
        assert_eq!(
            (s.cagr, s.volatility, s.sharpe, s.sortino, s.calmar),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn trade_statistics() {
        let s = stats(100.0, 252.0, &[100.0], &[10.0, -5.0, 0.0, 20.0, -15.0]);
        assert_eq!(s.trade_count, 5);
        close(s.win_rate, Some(0.4));
        close(s.profit_factor, Some(1.5));
        close(s.avg_trade_pnl, Some(2.0));
        assert_eq!(s.best_trade, Some(20.0));
        assert_eq!(s.worst_trade, Some(-15.0));
        assert_eq!(s.fills, 10);
        // Only winners: no profit factor.
        let s = stats(100.0, 252.0, &[100.0], &[1.0, 2.0]);
        assert_eq!(s.profit_factor, None);
        assert_eq!(s.win_rate, Some(1.0));
    }

    #[test]
    fn compensated_sum_and_stdev() {
        assert_eq!(sum([1e16, 1.0, -1e16]), 1.0);
        let tenths = [0.1; 10];
        assert_eq!(sum(tenths.iter().copied()), 1.0);
        assert_eq!(mean(&[]), None);
        assert_eq!(sample_stdev(&[1.0]), None);
        close(
            sample_stdev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]),
            Some((32.0_f64 / 7.0).sqrt()),
        );
    }
}
