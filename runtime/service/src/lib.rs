//! `palisade-service`, the strategy service behind `palisade serve`: HTTP
//! uploads of modules and datasets, jobs over a priority scheduler, embedded
//! storage and metrics. It is the only crate that knows HTTP.
//!
//! ```text
//! HTTP runtime (api) ──► Service ──► Scheduler (queues, buckets, caps)
//!        │                  │               │ next()
//!        │                  │               ▼
//!        │                  │        executor runtime ──► execute ──► sandbox / studies ──► document
//!        │                  ▼               │
//!        └──── JobTable ◄── Writer (batched SQLite transactions) ◄──┘
//! ```
//!
//! [`Service`] ([`service`]) is the one shared state: it prepares
//! submissions (resolves the strategy, data, policy and parameters, compiles
//! once), admits them through the [`scheduler::Scheduler`], runs dispatched
//! jobs as tasks of a separate executor runtime (so a saturated executor
//! never slows `/healthz`), records every state change through the batching
//! [`storage::Writer`], and shuts down gracefully. Modules: [`config`]
//! (flags, env, file), [`auth`] (tokens and tenants), [`storage`] (SQLite and
//! content-addressed files), [`registry`] (compiled modules, data, policies
//! in memory), [`jobs`] (requests and the live job table), [`scheduler`],
//! [`execute`] (one job of any kind; its result is the document
//! `palisade-document` writes, the same as the CLI's), [`metrics`], [`api`]
//! (axum routes and the OpenAPI document derived from them), [`problem`]
//! (problem+json errors), [`deployments`] (live deployments run by this
//! process, restarted and recovered by replay when it starts; see
//! `palisade-deployment`) and [`server`] (the socket).
//!
//! In distributed mode (`store` and `queue` set) the same [`Service`] runs
//! as an API node or a worker ([`worker::Role`]) over a shared Postgres
//! ([`storage`]) and a Redis queue ([`queue`]); [`distributed`] has what
//! they do beyond the embedded service: claiming, heartbeats, reaping dead
//! workers' jobs, reconciling entries Redis lost, draining.
//!
//! It does not parse flags, print to a terminal or install signal handlers
//! (the `palisade` binary does), and it knows nothing of how a guest is
//! sandboxed beyond `palisade-sandbox`'s API.

pub mod api;
pub mod auth;
pub mod config;
pub mod deployments;
pub mod distributed;
pub mod execute;
pub mod fleet;
pub mod intent_log;
pub mod jobs;
pub mod metrics;
pub mod problem;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod storage;
pub mod takeover;
pub mod views;
pub mod worker;

/// The guard of `m`, poisoned or not: a panic elsewhere does not take the
/// shared state down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use config::Config;
pub use server::{listen_address, serve};
pub use service::{ResultRead, Service, ServiceError, StartError};
