//! `palisade-testkit`: what the workspace's tests and benches share, in one
//! dev-only crate. Generated bars ([`bars`]), the prebuilt guest modules
//! ([`guests`], built by this crate's build script when stale), sandbox-level
//! fixtures ([`fixtures`]: policies, a sandbox, running a module, hand-written
//! WAT guests), Python strategies in the sandbox ([`python`]: the runtime
//! component, built by the build script, compiled once and cached under the
//! target directory), a real `palisade serve` process with a blocking
//! HTTP client ([`http`]), and real Redis, Redis Cluster and Postgres
//! servers on loopback ports that a test can crash and bring back
//! ([`servers`]; `scripts/install-servers.sh` installs them).
//!
//! What it must not do: be a dependency of anything but tests and benches
//! (`publish = false`, only ever under `[dev-dependencies]`), or depend on
//! `palisade-study`, `palisade-document`, `palisade-service` or the binary:
//! those crates' own unit tests use it, and a crate under test must not reach
//! itself a second time through its test helpers.

pub mod bars;
pub mod fixtures;
pub mod guests;
pub mod http;
pub mod python;
pub mod servers;
