//! Parameter grids: which values of which parameters a study tries.
//!
//! One [`GridArg`] per varied parameter, written as:
//!
//! - `fast=5:50:5`: from 5 to 50 by steps of 5, both ends included when the
//!   step lands on them (`min + i × step` for every `i` that stays at or below
//!   `max`). Values are rounded to the decimals written in the bounds and
//!   step, so `k=0.1:0.5:0.1` gives exactly 0.1, 0.2, 0.3, 0.4, 0.5.
//! - `fast=5,10,20`: these values, in this order (`true`/`false` for booleans).
//! - `fast`: the range the manifest declares for the parameter. An `int`
//!   range gives every whole value when it holds at most
//!   [`DECLARED_RANGE_POINTS`], otherwise that many whole values spread
//!   evenly from `min` to `max`, both included (`min + round(i × (max − min)
//!   / 19)`); a `float` range is cut into [`DECLARED_RANGE_POINTS`] evenly
//!   spaced values,
//!   both ends included; a `bool` is `false, true`. A parameter without a
//!   declared `min` and `max` needs explicit values.
//!
//! The grid is the cartesian product of its axes, numbered in grid order: the
//! first axis varies slowest. [`Search::Random`] draws distinct points of it
//! uniformly (without replacement), with a seeded stream.
//!
//! Values are checked against the declared types and ranges only when
//! variants are made, so that a value outside its range becomes a rejected
//! variant, reported as such, instead of failing the whole study. This
//! module runs nothing and knows no policy limit.

use std::collections::BTreeSet;
use std::str::FromStr;

use palisade_host_api::manifest::{Manifest, ParamType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use palisade_run::params::{self, ParamError};

/// Most values a bare parameter name expands to (see the module docs).
pub const DECLARED_RANGE_POINTS: u64 = 20;

/// Most values one axis may have.
pub const MAX_AXIS_POINTS: u64 = 1_000_000;

/// Most decimals a range's values are rounded to; beyond that they are left
/// as computed.
const MAX_ROUNDING_DECIMALS: u32 = 12;

/// A grid that cannot be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GridError {
    #[error("empty grid: name at least one parameter to vary (e.g. --grid fast=5:50:5)")]
    Empty,
    #[error(
        "grid {arg:?}: expected name=min:max:step, name=v1,v2,... or a bare name for its declared range"
    )]
    Syntax { arg: String },
    #[error("grid {name}: {text:?} is not a number")]
    Number { name: String, text: String },
    #[error("grid {name}: the step must be > 0 (got {step})")]
    Step { name: String, step: f64 },
    #[error("grid {name}: min {min} is greater than max {max}")]
    Reversed { name: String, min: f64, max: f64 },
    #[error("grid {name}: no values")]
    NoValues { name: String },
    #[error("grid: parameter {name} is given twice")]
    Twice { name: String },
    #[error(
        "grid {name}: the manifest declares no range (min and max) for it, so give one, e.g. {name}=1:10:1"
    )]
    NoDeclaredRange { name: String },
    #[error("grid {name}: {count} values, more than {MAX_AXIS_POINTS} for one parameter")]
    TooManyPoints { name: String, count: f64 },
    #[error("the grid has more than 2^64 points")]
    TooLarge,
    #[error("--samples must be at least 1")]
    NoSamples,
    #[error("grid {name}: the values from {min} to {max} are not all finite numbers")]
    NotFinite { name: String, min: f64, max: f64 },
    #[error("parameter {name} is both varied by the grid and fixed with --param")]
    Fixed { name: String },
    #[error("grid: {0}")]
    Param(#[from] ParamError),
}

/// How an axis's values are given.
#[derive(Clone, Debug, PartialEq)]
pub enum AxisSpec {
    /// `min:max:step`; `decimals` is the most decimals written in the three
    /// numbers (`None` when one is in exponent form), used for rounding.
    Range {
        min: f64,
        max: f64,
        step: f64,
        decimals: Option<u32>,
    },
    /// `v1,v2,...`.
    List(Vec<f64>),
    /// A bare name: the manifest's declared range.
    Declared,
}

/// One `--grid` argument: a parameter name and how its values are given.
#[derive(Clone, Debug, PartialEq)]
pub struct GridArg {
    pub name: String,
    pub spec: AxisSpec,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn number(name: &str, text: &str) -> Result<f64, GridError> {
    let bad = || GridError::Number {
        name: name.to_string(),
        text: text.to_string(),
    };
    let v = match text {
        "true" => 1.0,
        "false" => 0.0,
        _ => text.parse::<f64>().map_err(|_| bad())?,
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(bad())
    }
}

/// Decimals written after the point; `None` for exponent form.
fn decimals(text: &str) -> Option<u32> {
    if text.contains(['e', 'E']) {
        return None;
    }
    Some(text.split_once('.').map_or(0, |(_, frac)| frac.len() as u32))
}

impl FromStr for GridArg {
    type Err = GridError;

    fn from_str(arg: &str) -> Result<GridArg, GridError> {
        let syntax = || GridError::Syntax { arg: arg.to_string() };
        let (name, rest) = match arg.split_once('=') {
            Some((n, r)) => (n.trim(), Some(r.trim())),
            None => (arg.trim(), None),
        };
        if !is_name(name) {
            return Err(syntax());
        }
        let name = name.to_string();
        let spec = match rest {
            None => AxisSpec::Declared,
            Some("") => return Err(GridError::NoValues { name }),
            Some(r) if r.contains(':') => {
                let parts: Vec<&str> = r.split(':').map(str::trim).collect();
                let [lo, hi, st] = parts[..] else {
                    return Err(syntax());
                };
                let (min, max, step) = (number(&name, lo)?, number(&name, hi)?, number(&name, st)?);
                if step <= 0.0 {
                    return Err(GridError::Step { name, step });
                }
                if min > max {
                    return Err(GridError::Reversed { name, min, max });
                }
                let decimals = [lo, hi, st]
                    .into_iter()
                    .map(decimals)
                    .try_fold(0, |acc, d| d.map(|d| acc.max(d)));
                AxisSpec::Range {
                    min,
                    max,
                    step,
                    decimals,
                }
            }
            Some(r) => {
                let values = r
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| number(&name, t))
                    .collect::<Result<Vec<f64>, _>>()?;
                if values.is_empty() {
                    return Err(GridError::NoValues { name });
                }
                AxisSpec::List(values)
            }
        };
        Ok(GridArg { name, spec })
    }
}

/// One varied parameter and its values, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<f64>,
    /// The parameter is an `int` or a `bool` (its values are whole numbers).
    pub integer: bool,
}

/// A parameter grid: the cartesian product of its axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    axes: Vec<Axis>,
    size: u64,
}

fn round_to(value: f64, decimals: Option<u32>) -> f64 {
    match decimals {
        Some(d) if d <= MAX_ROUNDING_DECIMALS => {
            let scale = 10f64.powi(d as i32);
            (value * scale).round() / scale
        }
        _ => value,
    }
}

fn checked_count(name: &str, count: f64) -> Result<usize, GridError> {
    if count.is_finite() && count <= MAX_AXIS_POINTS as f64 {
        Ok(count as usize)
    } else {
        Err(GridError::TooManyPoints {
            name: name.to_string(),
            count,
        })
    }
}

fn range_values(
    name: &str,
    min: f64,
    max: f64,
    step: f64,
    decimals: Option<u32>,
) -> Result<Vec<f64>, GridError> {
    // Steps that divide the span exactly can land a hair below an integer in
    // floating point ((0.3 - 0.1) / 0.1 = 1.9999999999999998).
    let q = (max - min) / step;
    let count = checked_count(name, (q + q.abs() * 1e-12 + 1e-9).floor() + 1.0)?;
    finite(
        name,
        min,
        max,
        (0..count)
            .map(|i| round_to(min + i as f64 * step, decimals))
            .collect(),
    )
}

/// `values`, or an error naming the axis when one of them is not finite (a
/// span past the largest f64): a grid never holds NaN or infinities.
fn finite(name: &str, min: f64, max: f64, values: Vec<f64>) -> Result<Vec<f64>, GridError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(GridError::NotFinite {
            name: name.to_string(),
            min,
            max,
        })
    }
}

fn declared_values(manifest: &Manifest, name: &str) -> Result<Vec<f64>, GridError> {
    let spec = params::spec(manifest, name)?;
    if spec.ty == ParamType::Bool {
        return Ok(vec![0.0, 1.0]);
    }
    let (Some(min), Some(max)) = (spec.min, spec.max) else {
        return Err(GridError::NoDeclaredRange {
            name: name.to_string(),
        });
    };
    if min > max {
        return Err(GridError::Reversed {
            name: name.to_string(),
            min,
            max,
        });
    }
    let points = DECLARED_RANGE_POINTS;
    match spec.ty {
        ParamType::Int => {
            let (lo, hi) = (min.ceil(), max.floor());
            let span = hi - lo;
            if span + 1.0 <= points as f64 {
                return range_values(name, lo, hi, 1.0, Some(0));
            }
            // More whole values than points: spread them evenly, both ends
            // included; span >= points, so they are distinct.
            Ok((0..points)
                .map(|i| lo + (span * i as f64 / (points - 1) as f64).round())
                .collect())
        }
        _ if min == max => Ok(vec![min]),
        // `min (1 − t) + max t` stays finite where `max − min` would not.
        _ => finite(
            name,
            min,
            max,
            (0..points)
                .map(|i| {
                    let t = i as f64 / (points - 1) as f64;
                    if i + 1 == points {
                        max
                    } else {
                        min * (1.0 - t) + max * t
                    }
                })
                .collect(),
        ),
    }
}

impl Grid {
    /// Builds the axes, in the order given. Every name must be declared by
    /// the manifest and appear once.
    pub fn new(manifest: &Manifest, args: &[GridArg]) -> Result<Grid, GridError> {
        if args.is_empty() {
            return Err(GridError::Empty);
        }
        let mut axes: Vec<Axis> = Vec::with_capacity(args.len());
        for arg in args {
            params::spec(manifest, &arg.name)?;
            if axes.iter().any(|a| a.name == arg.name) {
                return Err(GridError::Twice {
                    name: arg.name.clone(),
                });
            }
            let values = match &arg.spec {
                AxisSpec::Range {
                    min,
                    max,
                    step,
                    decimals,
                } => range_values(&arg.name, *min, *max, *step, *decimals)?,
                AxisSpec::List(values) => {
                    checked_count(&arg.name, values.len() as f64)?;
                    values.clone()
                }
                AxisSpec::Declared => declared_values(manifest, &arg.name)?,
            };
            axes.push(Axis {
                integer: params::is_integer(manifest, &arg.name),
                name: arg.name.clone(),
                values,
            });
        }
        let size = axes
            .iter()
            .try_fold(1u64, |acc, a| acc.checked_mul(a.values.len() as u64))
            .ok_or(GridError::TooLarge)?;
        Ok(Grid { axes, size })
    }

    /// Parses `--grid` arguments and builds the grid.
    pub fn parse(manifest: &Manifest, args: &[impl AsRef<str>]) -> Result<Grid, GridError> {
        let args = args
            .iter()
            .map(|a| a.as_ref().parse::<GridArg>())
            .collect::<Result<Vec<_>, _>>()?;
        Grid::new(manifest, &args)
    }

    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// The names of the varied parameters, in grid order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.axes.iter().map(|a| a.name.as_str())
    }

    /// Number of points.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The values of point `index` (in grid order: the last axis varies
    /// fastest), one per axis.
    ///
    /// # Panics
    ///
    /// When `index >= self.size()`.
    pub fn point(&self, index: u64) -> Vec<f64> {
        assert!(index < self.size, "grid point {index} of {}", self.size);
        let mut rest = index;
        let mut out = vec![0.0; self.axes.len()];
        for (slot, axis) in out.iter_mut().zip(&self.axes).rev() {
            let len = axis.values.len() as u64;
            *slot = axis.values[(rest % len) as usize];
            rest /= len;
        }
        out
    }

    /// Fails when a grid parameter is also fixed by the user (`fixed` are the
    /// names given with `--param`).
    pub fn check_fixed<'a>(&self, fixed: impl IntoIterator<Item = &'a str>) -> Result<(), GridError> {
        for name in fixed {
            if self.axes.iter().any(|a| a.name == name) {
                return Err(GridError::Fixed {
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Which points of a grid a study runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// Every point.
    #[default]
    All,
    /// `samples` distinct points drawn uniformly (all of them when the grid
    /// has no more), from a ChaCha8 stream seeded with `seed`.
    Random { samples: u64, seed: u64 },
}

impl Search {
    /// How many points this search runs on a grid of `size` points.
    pub fn count(self, size: u64) -> Result<u64, GridError> {
        match self {
            Search::All => Ok(size),
            Search::Random { samples: 0, .. } => Err(GridError::NoSamples),
            Search::Random { samples, .. } => Ok(samples.min(size)),
        }
    }

    /// The grid indices to run, increasing. Check [`Search::count`] against
    /// limits first: this allocates one entry per point.
    pub fn indices(self, size: u64) -> Result<Vec<u64>, GridError> {
        let count = self.count(size)?;
        match self {
            Search::Random { seed, .. } if count < size => {
                // Floyd's algorithm: `count` distinct values of 0..size.
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut chosen = BTreeSet::new();
                for j in size - count..size {
                    let t = rng.random_range(0..=j);
                    if !chosen.insert(t) {
                        chosen.insert(j);
                    }
                }
                Ok(chosen.into_iter().collect())
            }
            _ => Ok((0..size).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_str(
            r#"{"abi":1,"name":"t","version":"1","params":[
                {"name":"fast","type":"int","default":10,"min":1,"max":1000},
                {"name":"slow","type":"int","default":30,"min":2,"max":12},
                {"name":"k","type":"float","default":2.0,"min":0.5,"max":3.0},
                {"name":"free","type":"float","default":1.0},
                {"name":"on","type":"bool","default":true}]}"#,
        )
        .unwrap()
    }

    /// Builds a grid of one axis from `arg` and compares its values, or the
    /// error message.
    fn check(arg: &str, expected: Result<&[f64], &str>) {
        let got = Grid::parse(&manifest(), &[arg]).map(|g| g.axes()[0].values.clone());
        match expected {
            Ok(values) => assert_eq!(got.unwrap_or_else(|e| panic!("{arg}: {e}")), values, "{arg}"),
            Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{arg}"),
        }
    }

    #[test]
    fn ranges_include_both_ends_and_round_to_the_written_decimals() {
        check(
            "fast=5:50:5",
            Ok(&[5., 10., 15., 20., 25., 30., 35., 40., 45., 50.]),
        );
        check("fast=5:12:5", Ok(&[5., 10.]));
        check("fast=7:7:1", Ok(&[7.]));
        check("k=0.1:0.5:0.1", Ok(&[0.1, 0.2, 0.3, 0.4, 0.5]));
        check("k=0.5:1.25:0.25", Ok(&[0.5, 0.75, 1.0, 1.25]));
        check("k = 1 : 2 : 0.5", Ok(&[1.0, 1.5, 2.0]));
        check("fast=-3:-1:1", Ok(&[-3., -2., -1.]));
        check("k=1e-1:3e-1:1e-1", Ok(&[0.1, 0.2, 0.30000000000000004]));
    }

    #[test]
    fn lists_keep_their_order() {
        check("fast=5,10,20", Ok(&[5., 10., 20.]));
        check("fast=20, 5", Ok(&[20., 5.]));
        check("on=true,false", Ok(&[1., 0.]));
        check("fast=3", Ok(&[3.]));
        check("fast=3,", Ok(&[3.]));
    }

    #[test]
    fn bare_names_use_the_declared_range() {
        // 11 values: step 1.
        check("slow", Ok(&[2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.]));
        // 1000 whole values: 20 of them, spread evenly, both ends included.
        let fast: Vec<f64> = (0..20).map(|i| 1.0 + (999.0 * i as f64 / 19.0).round()).collect();
        assert_eq!((fast[0], fast[1], fast[19]), (1.0, 54.0, 1000.0));
        check("fast", Ok(&fast));
        // Floats: 20 evenly spaced values, both ends exact.
        let grid = Grid::parse(&manifest(), &["k"]).unwrap();
        let k = &grid.axes()[0].values;
        assert_eq!(k.len(), DECLARED_RANGE_POINTS as usize);
        assert_eq!((k[0], k[19]), (0.5, 3.0));
        assert!((k[1] - (0.5 + 2.5 / 19.0)).abs() < 1e-15);
        check("on", Ok(&[0., 1.]));
    }

    #[test]
    fn a_declared_range_as_wide_as_f64_gives_finite_points() {
        let m: Manifest = serde_json::from_str(
            r#"{"abi":2,"name":"t","version":"1","params":[
                {"name":"x","type":"float","default":0,"min":-1.7976931348623157e308,"max":1.7976931348623157e308}]}"#,
        )
        .unwrap();
        let grid = Grid::parse(&m, &["x"]).unwrap();
        let x = &grid.axes()[0].values;
        assert_eq!(x.len(), DECLARED_RANGE_POINTS as usize);
        assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
        assert_eq!((x[0], x[19]), (f64::MIN, f64::MAX));
        // A range whose span is past the largest f64 is refused, not NaN.
        assert!(Grid::parse(&m, &["x=-1.7e308:1.7e308:1e307"]).is_err());
    }

    #[test]
    fn bad_grids_get_clear_errors() {
        check("fast=5:50:0", Err("grid fast: the step must be > 0 (got 0)"));
        check("fast=5:50:-5", Err("grid fast: the step must be > 0 (got -5)"));
        check("fast=50:5:5", Err("grid fast: min 50 is greater than max 5"));
        check("fast=5:50", Err("grid \"fast=5:50\": expected name=min:max:step, name=v1,v2,... or a bare name for its declared range"));
        check("fast=a:50:5", Err("grid fast: \"a\" is not a number"));
        check("fast=5,x", Err("grid fast: \"x\" is not a number"));
        check("fast=inf,1", Err("grid fast: \"inf\" is not a number"));
        check("fast=", Err("grid fast: no values"));
        check("fast=,", Err("grid fast: no values"));
        check("=5", Err("grid \"=5\": expected name=min:max:step, name=v1,v2,... or a bare name for its declared range"));
        check(
            "medium=1:2:1",
            Err("grid: unknown parameter medium (the strategy declares: fast, slow, k, free, on)"),
        );
        check(
            "free",
            Err("grid free: the manifest declares no range (min and max) for it, so give one, e.g. free=1:10:1"),
        );
        check(
            "fast=0:1:0.0000001",
            Err("grid fast: 10000001 values, more than 1000000 for one parameter"),
        );
        let empty: [&str; 0] = [];
        assert_eq!(
            Grid::parse(&manifest(), &empty).unwrap_err().to_string(),
            "empty grid: name at least one parameter to vary (e.g. --grid fast=5:50:5)"
        );
        assert_eq!(
            Grid::parse(&manifest(), &["fast=1,2", "fast=3"]).unwrap_err(),
            GridError::Twice { name: "fast".into() }
        );
    }

    #[test]
    fn points_are_numbered_with_the_first_axis_slowest() {
        let grid = Grid::parse(&manifest(), &["fast=1,2", "slow=3:5:1", "on=false,true"]).unwrap();
        assert_eq!(grid.size(), 12);
        let points: Vec<Vec<f64>> = (0..grid.size()).map(|i| grid.point(i)).collect();
        assert_eq!(points[0], [1., 3., 0.]);
        assert_eq!(points[1], [1., 3., 1.]);
        assert_eq!(points[2], [1., 4., 0.]);
        assert_eq!(points[5], [1., 5., 1.]);
        assert_eq!(points[6], [2., 3., 0.]);
        assert_eq!(points[11], [2., 5., 1.]);
        assert_eq!(grid.names().collect::<Vec<_>>(), ["fast", "slow", "on"]);
        assert!(grid.check_fixed(["k", "size"]).is_ok());
        assert_eq!(
            grid.check_fixed(["k", "slow"]).unwrap_err().to_string(),
            "parameter slow is both varied by the grid and fixed with --param"
        );
    }

    #[test]
    fn random_search_draws_distinct_points_deterministically() {
        let all = Search::All.indices(7).unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6]);
        let draw = |samples, seed| Search::Random { samples, seed }.indices(1000).unwrap();
        let a = draw(50, 1);
        assert_eq!(a.len(), 50);
        assert!(
            a.windows(2).all(|w| w[0] < w[1]),
            "increasing and distinct: {a:?}"
        );
        assert!(a.iter().all(|&i| i < 1000));
        assert_eq!(a, draw(50, 1), "same seed, same sample");
        assert_ne!(a, draw(50, 2), "another seed, another sample");
        // Not just the first points: a uniform draw of 50 of 1000 spreads out.
        assert!(*a.last().unwrap() > 500, "{a:?}");
        assert_eq!(draw(5000, 3), Search::All.indices(1000).unwrap());
        assert_eq!(Search::Random { samples: 9, seed: 0 }.count(4), Ok(4));
        assert_eq!(
            Search::Random { samples: 0, seed: 0 }
                .count(4)
                .unwrap_err()
                .to_string(),
            "--samples must be at least 1"
        );
    }
}
