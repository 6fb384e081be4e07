//! What a process of the distributed mode is ([`Role`]) and a worker's own
//! state ([`WorkerState`]), which its heartbeats report. The distributed
//! mode's work is in `crate::distributed`.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use crate::storage::now_ms;

/// What a process of the distributed mode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `palisade serve` without `--store`/`--queue`: runs its own jobs.
    Embedded,
    /// `palisade serve --store … --queue …`: takes requests, runs nothing.
    Api,
    /// `palisade worker`: runs jobs from the queue, serves nothing.
    Worker,
}

/// A worker's own state, reported in its heartbeats.
#[derive(Debug)]
pub struct WorkerState {
    pub id: String,
    pub name: String,
    pub capacity: usize,
    pub started_ms: i64,
    pub started: Instant,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    /// Set by a drain (SIGTERM): no new jobs are taken.
    pub draining: AtomicBool,
    pub build: String,
}

impl WorkerState {
    pub fn new(name: Option<&str>, capacity: usize, build: String) -> WorkerState {
        let host = hostname();
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        WorkerState {
            id: format!("{host}-{}-{suffix}", std::process::id()),
            name: name.map_or_else(|| host.clone(), str::to_owned),
            capacity,
            started_ms: now_ms(),
            started: Instant::now(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            build,
        }
    }
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}
