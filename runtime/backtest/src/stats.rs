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
//! Sums are compensated (Neumaier) and added in a fixed order, so a result
//! does not depend on anything but its inputs, and long curves do not drift.
//! Everything comes from one pass over the curve, which the broker makes as
//! the curve grows: the sum of squared deviations is taken around the first
//! non-zero return `K` and corrected at the end,
//! `Σ (r − m)² = Σ (r − K)² − (Σ (r − K))² / n`, which loses no precision
//! worth speaking of while `K` is a typical return (it is one).

use serde::Serialize;

use crate::records::{EquityPoint, Trade};

/// The numbers a statistics computation starts from.
#[derive(Clone, Copy, Debug)]
pub struct StatsInput<'a> {
    pub initial_cash: f64,
    pub periods_per_year: f64,
    /// Equity points `e_0 … e_T`.
    pub equity: &'a [EquityPoint],
    /// Equity points at which a position was open.
    pub exposed_points: usize,
    pub trades: &'a [Trade],
    pub fills: usize,
}

/// Performance statistics; see the module documentation for definitions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Null in JSON when it is not finite (an initial cash so small that
    /// `e_T / c` overflows, for one).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub total_return: f64,
    pub cagr: Option<f64>,
    pub volatility: Option<f64>,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    /// Null in JSON when not finite, as `total_return`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
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

/// What the statistics need from the equity curve that one pass over it can
/// give: running peak and drawdown, the sums of returns and of squared
/// downside returns, solvency. The broker feeds it one point at a time as
/// the curve grows, so a report only needs the deviation pass at the end.
#[derive(Clone, Debug)]
pub struct CurvePass {
    initial_cash: f64,
    points: usize,
    peak: f64,
    /// Lowest point since `peak` was reached: the drawdown from `peak` is
    /// largest there, so it is the only division the segment needs.
    trough: f64,
    /// Largest drawdown of the segments before the current peak.
    max_drawdown: f64,
    solvent: bool,
    sum_r: Neumaier,
    sum_down: Neumaier,
    first_r: Option<f64>,
    all_equal: bool,
    prev: f64,
    /// `K`, the first non-zero return, and `Σ (r − K)`, `Σ (r − K)²` over
    /// the non-zero returns; `flat` counts the zero ones.
    shift: Option<f64>,
    sum_d: Neumaier,
    sum_d2: Neumaier,
    flat: u64,
}

impl CurvePass {
    /// Before the first point, starting from `initial_cash`.
    pub fn new(initial_cash: f64) -> CurvePass {
        CurvePass {
            initial_cash,
            points: 0,
            peak: initial_cash,
            trough: initial_cash,
            max_drawdown: 0.0,
            solvent: initial_cash > 0.0,
            sum_r: Neumaier::default(),
            sum_down: Neumaier::default(),
            first_r: None,
            all_equal: true,
            prev: initial_cash,
            shift: None,
            sum_d: Neumaier::default(),
            sum_d2: Neumaier::default(),
            flat: 0,
        }
    }

    /// The pass over a whole curve.
    pub fn over(initial_cash: f64, equity: &[EquityPoint]) -> CurvePass {
        let mut pass = CurvePass::new(initial_cash);
        for p in equity {
            pass.push(p.equity);
        }
        pass
    }

    /// Takes the next equity point `e_t`.
    #[inline]
    pub fn push(&mut self, e: f64) {
        self.points += 1;
        if unchanged(e, self.prev) {
            // r_t = 0 exactly: the sums do not move, neither do the peak,
            // the trough or solvency (a common case: no position open).
            self.all_equal &= *self.first_r.get_or_insert(0.0) == 0.0;
            self.flat += 1;
            return;
        }
        if e > self.peak {
            self.max_drawdown = self.drawdown();
            self.peak = e;
            self.trough = e;
        } else {
            self.trough = self.trough.min(e);
        }
        self.solvent &= e > 0.0;
        let r = e / self.prev - 1.0;
        self.prev = e;
        self.all_equal &= *self.first_r.get_or_insert(r) == r;
        self.sum_r.add(r);
        self.sum_down.add(r.min(0.0).powi(2));
        let d = r - *self.shift.get_or_insert(r);
        self.sum_d.add(d);
        self.sum_d2.add(d * d);
    }

    /// `Σ (r_t − m)²` over all the returns so far, `m` being their mean.
    fn squared_deviations(&self) -> f64 {
        let n = self.points as f64;
        let k = self.shift.unwrap_or(0.0);
        let flat = self.flat as f64;
        // The zero returns are `0 − K` from the shift.
        let mut s1 = self.sum_d;
        s1.add(-k * flat);
        let mut s2 = self.sum_d2;
        s2.add(k * k * flat);
        let s1 = s1.value();
        (s2.value() - s1 * s1 / n).max(0.0)
    }

    /// `max_t (1 − e_t / peak_t)` over the points so far. For a fixed
    /// positive peak, `1 − e / peak` falls as `e` rises (correctly rounded
    /// division is monotone), so each peak's segment is represented by its
    /// lowest point exactly.
    fn drawdown(&self) -> f64 {
        self.max_drawdown.max(1.0 - self.trough / self.peak)
    }

    /// Points taken so far.
    pub fn points(&self) -> usize {
        self.points
    }
}

impl Stats {
    /// Computes every statistic.
    pub fn compute(input: &StatsInput<'_>) -> Stats {
        Stats::complete(&CurvePass::over(input.initial_cash, input.equity), input)
    }

    /// Computes every statistic from `pass`, which has taken every point of
    /// `input.equity` (and only those) from `input.initial_cash`.
    pub fn complete(pass: &CurvePass, input: &StatsInput<'_>) -> Stats {
        let c = input.initial_cash;
        debug_assert_eq!(pass.initial_cash.to_bits(), c.to_bits());
        debug_assert_eq!(pass.points, input.equity.len());
        let ppy = input.periods_per_year;
        let equity = input.equity;
        let n = equity.len();
        let last = equity.last().map_or(c, |p| p.equity);
        let total_return = last / c - 1.0;
        let max_drawdown = pass.drawdown();
        let solvent = pass.solvent;

        let count = if solvent { n } else { 0 };
        let annual = ppy.sqrt();
        let mean_r = (count > 0).then(|| pass.sum_r.value() / count as f64);
        let stdev_r = match mean_r {
            Some(_) if count < 2 => None,
            Some(_) if pass.all_equal => Some(0.0),
            Some(_) => Some((pass.squared_deviations() / (count - 1) as f64).sqrt()),
            None => None,
        };
        let volatility = stdev_r.map(|s| s * annual);
        let sharpe = match (mean_r, stdev_r) {
            (Some(m), Some(s)) if s > 0.0 => Some(m / s * annual),
            _ => None,
        };
        let downside = (count > 0).then(|| (pass.sum_down.value() / count as f64).sqrt());
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

/// Whether `e / prev − 1` is exactly 0 without dividing: equal, finite,
/// non-zero (`0 / 0` and `∞ / ∞` are NaN).
#[inline]
fn unchanged(e: f64, prev: f64) -> bool {
    e == prev && e != 0.0 && e.is_finite()
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

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
        let curve: Vec<EquityPoint> = equity
            .iter()
            .enumerate()
            .map(|(t, &equity)| EquityPoint { ts: t as i64, equity })
            .collect();
        Stats::compute(&StatsInput {
            initial_cash,
            periods_per_year: ppy,
            equity: &curve,
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
    fn shifted_deviations_agree_with_the_two_pass_definition() {
        // 10,007 points, not a multiple of the lanes, of a seeded random walk.
        let mut state = 7_u64;
        let mut e = 100.0;
        let equity: Vec<f64> = (0..10_007)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (state >> 11) as f64 / (1_u64 << 53) as f64;
                // A third of the points repeat the previous one (no position).
                if u > 1.0 / 3.0 {
                    e *= 1.0 + (u - 0.5) * 0.02;
                }
                e
            })
            .collect();
        let mut prev = 100.0;
        let returns: Vec<f64> = equity
            .iter()
            .map(|&v| {
                let r = v / prev - 1.0;
                prev = v;
                r
            })
            .collect();
        let s = stats(100.0, 252.0, &equity, &[]);
        let stdev = sample_stdev(&returns).unwrap();
        close(s.volatility, Some(stdev * 252.0_f64.sqrt()));
        close(s.sharpe, Some(mean(&returns).unwrap() / stdev * 252.0_f64.sqrt()));
        assert_eq!(s.periods, 10_007);
        // The drawdown, taken at each segment's trough, is the definition's
        // to the bit.
        let mut peak = 100.0_f64;
        let mut max_drawdown = 0.0_f64;
        for &v in &equity {
            peak = peak.max(v);
            max_drawdown = max_drawdown.max(1.0 - v / peak);
        }
        assert!(max_drawdown > 0.01, "{max_drawdown}");
        assert_eq!(s.max_drawdown.to_bits(), max_drawdown.to_bits());
    }

    #[test]
    fn deviations_stay_accurate_when_the_mean_dominates() {
        // Steady growth of 0.1 % per period with noise a million times
        // smaller: summing r² and subtracting n·m² would lose every digit.
        let mut e = 100.0;
        let mut prev = e;
        let mut returns = Vec::new();
        let equity: Vec<f64> = (0..5_000)
            .map(|t| {
                e *= 1.001 + if t % 2 == 0 { 1e-9 } else { -1e-9 };
                returns.push(e / prev - 1.0);
                prev = e;
                e
            })
            .collect();
        let s = stats(100.0, 1.0, &equity, &[]);
        let want = sample_stdev(&returns).unwrap();
        let got = s.volatility.unwrap();
        assert!((got - want).abs() <= 1e-6 * want, "got {got}, want {want}");
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
