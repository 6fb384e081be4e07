//! Running a strategy compiled natively (through `palisade-sdk`) against the
//! same engine and the same ABI semantics as a sandboxed wasm guest.
//!
//! It exists so that wasm and native runs of one strategy can be compared
//! result for result (tests) and time for time (benchmarks). It is not a
//! sandbox: native code is trusted, has no fuel, memory or time limits, and a
//! panic in it is a panic of the caller.

use std::sync::Arc;
use std::time::Instant;

use palisade_host_api::{error, fail_kind, Bar, Fill};

use crate::config::RunConfig;
use crate::outcome::{Cause, Failure};
use crate::output::RunOutput;
use crate::policy::Policy;
use crate::session::Session;
use palisade_backtest::Dataset;

/// A [`palisade_sdk::Host`] over a [`Session`]. The first failure (an output
/// limit, a protocol error, an undeclared parameter) ends the data: later
/// calls get neutral answers.
pub struct NativeHost {
    session: Session,
    failure: Option<Failure>,
}

impl NativeHost {
    pub fn new(session: Session) -> NativeHost {
        NativeHost {
            session,
            failure: None,
        }
    }

    fn ok<T>(&mut self, r: Result<T, Failure>, otherwise: T) -> T {
        match r {
            Ok(v) => v,
            Err(f) => {
                self.failure.get_or_insert(f);
                otherwise
            }
        }
    }
}

impl palisade_sdk::Host for NativeHost {
    fn symbol_count(&mut self) -> usize {
        self.session.symbol_count()
    }

    fn next_bars(&mut self, buf: &mut [Bar]) -> usize {
        if self.failure.is_some() {
            return 0;
        }
        let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        let r = self.session.next_bars(cap);
        let events = self.ok(r, 0..0);
        let n = events.len();
        buf[..n].copy_from_slice(&self.session.data().bars()[events]);
        n
    }

    fn order(&mut self, symbol: i32, qty: f64, kind: i32, price: f64) -> i64 {
        let r = self.session.order(symbol, qty, kind, price);
        self.ok(r, i64::from(error::BAD_ARGUMENT))
    }

    fn cancel(&mut self, id: i64) -> i32 {
        self.session.cancel(id)
    }

    fn position(&mut self, symbol: i32) -> f64 {
        self.session.position(symbol)
    }

    fn cash(&mut self) -> f64 {
        self.session.cash()
    }

    fn equity(&mut self) -> f64 {
        self.session.equity()
    }

    fn poll_fill(&mut self) -> Option<Fill> {
        self.session.poll_fill()
    }

    fn param(&mut self, name: &str) -> f64 {
        let r = self.session.param(name);
        self.ok(r, f64::NAN)
    }

    fn symbol_name(&mut self, symbol: i32, out: &mut [u8]) -> i32 {
        let Some(name) = self.session.symbol_name(symbol) else {
            return error::UNKNOWN_SYMBOL;
        };
        let n = name.len().min(out.len());
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        name.len() as i32
    }

    fn log(&mut self, level: i32, message: &str) {
        let r = self.session.log(level, message.to_string());
        self.ok(r, ());
    }

    fn random(&mut self) -> f64 {
        self.session.random()
    }

    fn metric(&mut self, name: &str, value: f64) {
        let r = self.session.metric(name.to_string(), value);
        self.ok(r, ());
    }
}

/// Backtests a natively compiled strategy `S` exactly as
/// `palisade_sandbox::Sandbox::backtest` would its wasm build (same engine,
/// same delivery and output limits of `policy`, no fuel or time limits).
pub fn backtest<S: palisade_sdk::Strategy>(
    data: Arc<Dataset>,
    policy: &Policy,
    run: &RunConfig,
) -> RunOutput {
    let started = Instant::now();
    let session = Session::for_run(data, policy, run);
    let mut host = NativeHost::new(session);
    let result = palisade_sdk::run::<S>(&mut host);
    let run_seconds = started.elapsed().as_secs_f64();
    let outcome = match (host.failure.take(), result) {
        (Some(f), _) => Err(f),
        (None, Err(f)) => {
            let cause = match f.kind {
                fail_kind::INVALID_PARAMS => Cause::InvalidParams,
                fail_kind::PANIC => Cause::GuestPanic,
                _ => Cause::GuestError,
            };
            Err(Failure::new(cause, f.message))
        }
        (None, Ok(())) => Ok(()),
    };
    let usage = host.session.usage(0, 0);
    host.session.into_output(outcome, usage, run_seconds)
}
