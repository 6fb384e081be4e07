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

pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789";
pub const OPS: &str = "ops-token-0123456789";

/// A `palisade feed replay` process and its URL.
pub struct Replay(pub std::process::Child, pub String);

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `palisade feed replay` of the sample at `speed` (0: full speed) on a
/// free port.
pub fn replay_at(speed: &str) -> Replay {
    replay_with(speed, &[])
}

/// [`replay_at`] with more arguments (`--tls-cert`, `--tls-key`: the URL
/// is then `wss://localhost:PORT/`).
pub fn replay_with(speed: &str, more: &[&str]) -> Replay {
    let port = palisade_testkit::servers::free_port();
    let data = format!("SPY={}", sample_path());
    let child = std::process::Command::new(PALISADE)
        .args([
            "feed",
            "replay",
            &data,
            "--speed",
            speed,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(more)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the replay");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let url = if more.contains(&"--tls-cert") {
        format!("wss://localhost:{port}/")
    } else {
        format!("ws://127.0.0.1:{port}/")
    };
    Replay(child, url)
}

/// `palisade feed replay` of the sample at full speed on a free port.
pub fn replay() -> Replay {
    replay_at("0")
}

/// A tokens file in `dir`: tenants alice and bob, and an operator.
pub fn tokens(dir: &std::path::Path) -> String {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[token]]\ntoken = \"{ALICE}\"\ntenant = \"alice\"\n\n[[token]]\ntoken = \"{BOB}\"\ntenant = \"bob\"\n\n\
         [[token]]\ntoken = \"{OPS}\"\ntenant = \"ops\"\noperator = true\n"
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}
