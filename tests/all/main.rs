//! End-to-end tests of the sandbox against real guest modules: the examples
//! and adversaries built from `guest-examples/`, and hand-written WAT.
//! Run with `cargo test -p palisade-tests`; the helpers come from
//! `palisade-testkit`.

mod assemblyscript;
mod determinism;
mod limits;
mod live;
mod lookahead;
mod python;
mod python_indicators;
mod support;
mod validation;
