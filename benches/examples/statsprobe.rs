//! TEMPORARY experiment (not to be committed): Stats::compute vs a fused, allocation-free version.
use palisade_benches::{random_walk, DEFAULT_SEED};
use palisade_runtime::engine::stats::{Stats, StatsInput};
use palisade_runtime::native;
use palisade_runtime::policy::Policy;
use palisade_runtime::sandbox::RunConfig;
use std::time::Instant;

#[derive(Clone, Copy, Default)]
struct Neumaier {
    total: f64,
    c: f64,
}
impl Neumaier {
    #[inline(always)]
    fn add(&mut self, v: f64) {
        let t = self.total + v;
        if self.total.abs() >= v.abs() {
            self.c += (self.total - t) + v;
        } else {
            self.c += (v - t) + self.total;
        }
        self.total = t;
    }
    fn get(&self) -> f64 {
        self.total + self.c
    }
}

/// Same definitions and the same summation order per sum as Stats::compute, in two passes without temporaries.
fn fused(input: &StatsInput<'_>) -> (f64, Option<f64>, Option<f64>, Option<f64>, f64) {
    let c = input.initial_cash;
    let equity = input.equity;
    let n = equity.len();
    let mut peak = c;
    let mut max_drawdown = 0.0_f64;
    let mut solvent = c > 0.0;
    let mut sum_r = Neumaier::default();
    let mut sum_down = Neumaier::default();
    let mut prev = c;
    let mut first = f64::NAN;
    let mut all_equal = true;
    for (i, &e) in equity.iter().enumerate() {
        peak = peak.max(e);
        max_drawdown = max_drawdown.max(1.0 - e / peak);
        solvent &= e > 0.0;
        let r = e / prev - 1.0;
        prev = e;
        if i == 0 {
            first = r;
        }
        all_equal &= r == first;
        sum_r.add(r);
        sum_down.add(r.min(0.0).powi(2));
    }
    if !solvent || n == 0 {
        return (max_drawdown, None, None, None, 0.0);
    }
    let mean_r = sum_r.get() / n as f64;
    let downside = (sum_down.get() / n as f64).sqrt();
    let stdev = if n < 2 {
        None
    } else if all_equal {
        Some(0.0)
    } else {
        let mut sq = Neumaier::default();
        let mut prev = c;
        for &e in equity {
            let r = e / prev - 1.0;
            prev = e;
            sq.add((r - mean_r) * (r - mean_r));
        }
        Some((sq.get() / (n - 1) as f64).sqrt())
    };
    (max_drawdown, Some(mean_r), stdev, Some(downside), 0.0)
}

fn main() {
    let policy = Policy::default();
    let data = random_walk(1_000_000, DEFAULT_SEED);
    let run = RunConfig {
        params: vec![("fast".into(), 10.0), ("slow".into(), 30.0), ("size".into(), 1.0)],
        ..RunConfig::default()
    };
    let out = native::backtest::<sma_cross::SmaCross>(data, &policy, &run);
    let equity: Vec<f64> = out.report.equity_curve.iter().map(|p| p.equity).collect();
    assert_eq!(equity.len(), 1_000_000);
    let input = StatsInput {
        initial_cash: out.report.initial_cash,
        periods_per_year: 252.0,
        equity: &equity,
        exposed_points: 0,
        trades: &out.report.trades,
        fills: 0,
    };
    let s = Stats::compute(&input);
    let (dd, _m, sd, _down, _) = fused(&input);
    assert_eq!(dd, s.max_drawdown);
    assert_eq!(sd.map(|v| v * 252f64.sqrt()), s.volatility, "volatility differs");
    let mut a = f64::MAX;
    let mut b = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        std::hint::black_box(Stats::compute(std::hint::black_box(&input)));
        a = a.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(fused(std::hint::black_box(&input)));
        b = b.min(t.elapsed().as_secs_f64());
    }
    println!(
        "Stats::compute {:.2} ms, fused {:.2} ms (1M points), results identical",
        a * 1e3,
        b * 1e3
    );
}
