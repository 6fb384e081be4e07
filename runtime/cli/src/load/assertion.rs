//! The `--assert` expressions of `palisade load`: `METRIC OP NUMBER[UNIT]`,
//! e.g. `p95<100ms`, `failed==0`, `jobs_per_sec>=20`. The grammar is small
//! and strict so that a typo is an error, never an assertion that passes by
//! accident: the metric is one of [`METRICS`], the comparator one of
//! `< <= > >= == !=`, the number plain decimal (no sign, exponent or
//! `inf`), a latency needs its unit (`ms` or `s`), a count or a rate must
//! have none, and a count is a whole number. Spaces around the parts are
//! allowed. It parses and compares; it measures nothing (`load.rs` does).

use std::fmt;
use std::str::FromStr;

/// Which end-to-end or submission latency statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    P50,
    P90,
    P95,
    P99,
    Max,
}

impl Stat {
    pub const ALL: [Stat; 5] = [Stat::P50, Stat::P90, Stat::P95, Stat::P99, Stat::Max];

    pub fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Max => "max",
        }
    }
}

/// Jobs counted by how they ended, or answers counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Jobs attempted.
    Jobs,
    Succeeded,
    /// Jobs in state `failed` (any cause).
    Failed,
    TimedOut,
    Cancelled,
    /// Refusal answers to submissions (429, 503, 507), retried or not.
    Refused,
    /// Jobs never acknowledged: every try was refused.
    Dropped,
    /// Jobs lost to a transport error or an unexpected answer.
    Errors,
}

/// What an assertion measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// From the start of a job (its scheduled time with `--rate`) to its
    /// terminal state, in seconds.
    Latency(Stat),
    /// From the start of a job to its acknowledgement (201), in seconds.
    Submit(Stat),
    JobsPerSec,
    Count(Count),
}

/// Every metric name, for error messages and the documentation.
pub const METRICS: &str = "p50, p90, p95, p99, max (submission to end), \
    submit_p50, submit_p90, submit_p95, submit_p99, submit_max (submission to 201), \
    jobs_per_sec, jobs, succeeded, failed, timed_out, cancelled, refused, dropped, errors";

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        let count = |c| Some(Metric::Count(c));
        match name {
            "jobs_per_sec" => Some(Metric::JobsPerSec),
            "jobs" => count(Count::Jobs),
            "succeeded" => count(Count::Succeeded),
            "failed" => count(Count::Failed),
            "timed_out" => count(Count::TimedOut),
            "cancelled" => count(Count::Cancelled),
            "refused" => count(Count::Refused),
            "dropped" => count(Count::Dropped),
            "errors" => count(Count::Errors),
            _ => {
                let (submit, stat) = match name.strip_prefix("submit_") {
                    Some(rest) => (true, rest),
                    None => (false, name),
                };
                let stat = Stat::ALL.into_iter().find(|s| s.name() == stat)?;
                Some(if submit {
                    Metric::Submit(stat)
                } else {
                    Metric::Latency(stat)
                })
            }
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Metric::Latency(_) | Metric::Submit(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Longest first, so that `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// One parsed `--assert`.
#[derive(Clone, Debug, PartialEq)]
pub struct Assertion {
    /// As written, trimmed.
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    /// Seconds for a latency; the plain number otherwise.
    pub threshold: f64,
}

/// A malformed `--assert`, naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionError {
    pub text: String,
    pub reason: String,
}

impl fmt::Display for AssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--assert {:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for AssertionError {}

impl FromStr for Assertion {
    type Err = AssertionError;

    fn from_str(text: &str) -> Result<Assertion, AssertionError> {
        let text = text.trim();
        let err = |reason: String| AssertionError {
            text: text.to_owned(),
            reason,
        };
        let Some((at, symbol, op)) = text.char_indices().find_map(|(i, _)| {
            Op::ALL
                .iter()
                .find(|(s, _)| text[i..].starts_with(s))
                .map(|&(s, op)| (i, s, op))
        }) else {
            return Err(err(
                "expected METRIC OP VALUE with OP one of < <= > >= == !=, e.g. p95<100ms".into(),
            ));
        };
        let name = text[..at].trim();
        let value = text[at + symbol.len()..].trim();
        if name.is_empty() {
            return Err(err(format!("no metric before {symbol:?} (metrics: {METRICS})")));
        }
        let metric = Metric::parse(name)
            .ok_or_else(|| err(format!("unknown metric {name:?} (metrics: {METRICS})")))?;
        let digits_end = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(value.len());
        let (number, unit) = (&value[..digits_end], value[digits_end..].trim_start());
        let plain = !number.is_empty()
            && number.split('.').count() <= 2
            && number.split('.').all(|part| !part.is_empty());
        let Some(n) = plain.then(|| number.parse::<f64>().ok()).flatten() else {
            return Err(err(format!(
                "{value:?} is not a number (write digits, e.g. 100ms, 0, 12.5)"
            )));
        };
        let threshold = if metric.is_latency() {
            match unit {
                "ms" => n / 1e3,
                "s" => n,
                "" => {
                    return Err(err(format!(
                        "{name} is a latency: give its unit, ms or s (e.g. {name}<{number}ms)"
                    )))
                }
                other => return Err(err(format!("unknown unit {other:?}: a latency is in ms or s"))),
            }
        } else {
            if !unit.is_empty() {
                return Err(err(format!("{name} has no unit (got {unit:?})")));
            }
            if matches!(metric, Metric::Count(_)) && n.fract() != 0.0 {
                return Err(err(format!("{name} counts jobs: a whole number, not {number}")));
            }
            n
        };
        Ok(Assertion {
            text: text.to_owned(),
            metric,
            op,
            threshold,
        })
    }
}

impl Assertion {
    /// Whether the assertion holds for `value` (seconds for a latency);
    /// `None` (a latency with no job to measure) never holds.
    pub fn holds(&self, value: Option<f64>) -> bool {
        value.is_some_and(|v| self.op.holds(v, self.threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Assertion, String> {
        text.parse::<Assertion>().map_err(|e| e.to_string())
    }

    /// `text` parses to `metric`, `op` and `threshold`.
    fn check(text: &str, metric: Metric, op: Op, threshold: f64) {
        let a = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((a.metric, a.op, a.threshold), (metric, op, threshold), "{text}");
    }

    fn refused(text: &str, reason: &str) {
        let e = parse(text).expect_err(text);
        assert!(e.contains(reason), "{text}: {e}");
        assert!(e.starts_with("--assert "), "{e}");
    }

    #[test]
    fn parses_every_metric_comparator_and_unit() {
        check("p95<100ms", Metric::Latency(Stat::P95), Op::Lt, 0.1);
        check(" p50 <= 2s ", Metric::Latency(Stat::P50), Op::Le, 2.0);
        check("p90>1.5ms", Metric::Latency(Stat::P90), Op::Gt, 0.0015);
        check("p99>=0s", Metric::Latency(Stat::P99), Op::Ge, 0.0);
        check("max!=30 s", Metric::Latency(Stat::Max), Op::Ne, 30.0);
        check("submit_p95<5ms", Metric::Submit(Stat::P95), Op::Lt, 0.005);
        check("failed==0", Metric::Count(Count::Failed), Op::Eq, 0.0);
        check("succeeded>=48", Metric::Count(Count::Succeeded), Op::Ge, 48.0);
        check("refused>0", Metric::Count(Count::Refused), Op::Gt, 0.0);
        check("errors == 0", Metric::Count(Count::Errors), Op::Eq, 0.0);
        check("timed_out==0", Metric::Count(Count::TimedOut), Op::Eq, 0.0);
        check("cancelled==0", Metric::Count(Count::Cancelled), Op::Eq, 0.0);
        check("dropped==0", Metric::Count(Count::Dropped), Op::Eq, 0.0);
        check("jobs==24", Metric::Count(Count::Jobs), Op::Eq, 24.0);
        check("jobs_per_sec>=12.5", Metric::JobsPerSec, Op::Ge, 12.5);
    }

    #[test]
    fn malformed_assertions_name_themselves_and_the_fault() {
        refused("p95", "expected METRIC OP VALUE");
        refused("p95=100ms", "expected METRIC OP VALUE");
        refused("<100ms", "no metric");
        refused("p96<100ms", "unknown metric \"p96\"");
        refused("P95<100ms", "unknown metric");
        refused("latency<100ms", "unknown metric");
        refused("p95<100", "give its unit");
        refused("p95<100us", "unknown unit \"us\"");
        refused("p95<100 ms extra", "unknown unit");
        refused("p95<", "is not a number");
        refused("p95<-1ms", "is not a number");
        refused("p95<1e3ms", "unknown unit \"e3ms\"");
        refused("p95<.5s", "is not a number");
        refused("p95<5.s", "is not a number");
        refused("p95<1.2.3s", "is not a number");
        refused("p95<<100ms", "is not a number");
        refused("failed==0ms", "failed has no unit");
        refused("failed==0.5", "a whole number");
        refused("jobs_per_sec>1/s", "has no unit");
        assert_eq!(
            parse("p95<100").unwrap_err(),
            "--assert \"p95<100\": p95 is a latency: give its unit, ms or s (e.g. p95<100ms)"
        );
    }

    #[test]
    fn holds_on_each_side_of_the_threshold() {
        let a = |t: &str| parse(t).expect(t);
        let p95 = a("p95<100ms");
        assert!(p95.holds(Some(0.0999)));
        assert!(!p95.holds(Some(0.100)));
        assert!(!p95.holds(Some(0.1001)));
        assert!(!p95.holds(None), "no job measured: a latency assertion fails");
        let le = a("p95<=100ms");
        assert!(le.holds(Some(0.1)) && !le.holds(Some(0.1001)));
        let failed = a("failed==0");
        assert!(failed.holds(Some(0.0)) && !failed.holds(Some(1.0)));
        let ne = a("errors!=0");
        assert!(ne.holds(Some(1.0)) && !ne.holds(Some(0.0)));
        let rate = a("jobs_per_sec>10");
        assert!(rate.holds(Some(10.01)) && !rate.holds(Some(10.0)));
        let ge = a("succeeded>=48");
        assert!(ge.holds(Some(48.0)) && !ge.holds(Some(47.0)));
        let seconds = a("max<30s");
        assert!(seconds.holds(Some(29.9)) && !seconds.holds(Some(30.0)));
    }
}
