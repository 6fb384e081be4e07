//! Helpers of the CLI's and the service's end-to-end tests and of the
//! service's load benchmark: this build's `palisade` binary, over the
//! workspace's shared test kit (`palisade-testkit`).

#![allow(dead_code, unused_imports)]

pub use palisade_testkit::guests::{bytes as guest, path as guest_path, repo_root as repo, sample_csv};
pub use palisade_testkit::http::{Client, Reply, Server};

/// The `palisade` binary of this build.
pub const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

/// The bundled sample bars the CLI tests run on.
pub fn sample_path() -> String {
    palisade_testkit::guests::sample_path("spy-like-daily.csv")
}

/// Runs the `palisade` binary of this build with `args`.
pub fn palisade(args: &[&str]) -> std::process::Output {
    std::process::Command::new(PALISADE)
        .args(args)
        .output()
        .expect("run palisade")
}

/// Starts `palisade serve` of this build (see [`Server::start`]).
pub fn server(data_dir: &std::path::Path, args: &[&str]) -> Server {
    Server::start(PALISADE, data_dir, args)
}
