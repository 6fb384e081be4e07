//! Palisade runtime: the sandbox that runs WebAssembly strategies under hard
//! limits, and the engines (backtest, studies) built on it.
pub mod cli;
pub mod engine;
pub mod native;
pub mod policy;
pub mod sandbox;
pub mod service;
pub mod session;
pub mod study;
