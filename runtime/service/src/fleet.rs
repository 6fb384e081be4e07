//! Live deployments in the distributed mode: workers run them under leases
//! kept in Postgres, ship their files there as they grow, and take over a
//! dead worker's deployments by restoring those files and recovering by
//! replay; API nodes forward each deployment's requests to the worker that
//! holds its lease.
//!
//! - A deployment's row (`deployments`) holds its spec, strategy, policy and
//!   lease: `owner`, `owner_url`, `lease_until` (Postgres's clock) and
//!   `epoch`, counted up by every claim.
//! - Its files (bar log, journals, audit log) are shipped as a log of writes
//!   (`deployment_chunks`) by a [`Shipper`]: what a file gained since the
//!   last shipment, or a cut. Each shipment is fenced: it commits only while
//!   the row still names this worker and epoch, so a worker that lost its
//!   lease cannot write over its successor's.
//! - A worker renews its leases every heartbeat; one it could not renew for
//!   a lease's life, or that another worker took, is stopped at once.
//!   Expired leases are claimed by workers with room, oldest deployment first.
//! - Requests that acknowledge something (a fill, a gate command, a stop)
//!   are answered after the shipment that carries them has committed.
//!
//! This module holds the pieces (rows, leases, shipments, restores, the
//! forwarding client); the service's use of them, as methods of `Service`,
//! is `crate::takeover`'s. It must not know wasmtime nor the service, and
//! holds no deployment logic: the deployments themselves are
//! `crate::deployments`'.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use palisade_deployment::Lease;

use crate::lock;
use sqlx::postgres::PgPool;
use sqlx::Row;

/// The files of a deployment that are shipped, as the runner names them.
/// `spec.json` and `service.json` are written from the row instead.
pub const FILES: [&str; 5] = [
    "bars.log",
    "audit.jsonl",
    "intents.jsonl",
    "fills.jsonl",
    "orders.jsonl",
];

/// Postgres's clock in milliseconds since the Unix epoch: leases are
/// compared on one clock, whatever the workers' clocks say.
const PG_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How often a deployment's files are looked at when nothing signalled a
/// change (a change of the deployment's status ships at once).
pub const SHIP_TICK: Duration = Duration::from_secs(1);

/// Longest answer read back from a worker (a long list of deployments).
const MAX_FORWARDED_BYTES: usize = 64 << 20;

/// Longest a worker may take to answer a forwarded request (beyond the
/// wait a long poll of intents asks for): a paused or cut-off worker is
/// answered for with a 503 rather than held on to.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait of the intents' long poll (`?wait=`).
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// The wait a forwarded request asks the worker for (`wait=` in its query).
fn asked_wait(path_and_query: &str) -> Duration {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let ms = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ms).min(LONGEST_POLL)
}

/// A transaction on a deployment's row that Postgres ends if its worker
/// stops sending for a second in the middle of it (a paused or cut-off
/// process): the row lock it holds would otherwise keep every other worker
/// from claiming the deployment (claims skip locked rows) for as long as
/// that process is stopped.
async fn begin(pool: &PgPool) -> Result<Tx, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '1s'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Why a shipment did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The lease is another worker's now (or another epoch's): this worker
    /// must stop the deployment.
    #[error("deployment {0}: its lease was taken over by another worker")]
    Lost(String),
    #[error("deployment {id}: {path}: {error}")]
    Io {
        id: String,
        path: String,
        error: std::io::Error,
    },
    #[error("deployment {0}: the shared store: {1}")]
    Store(String, sqlx::Error),
}

/// Ships one deployment's files to Postgres, fenced by its lease.
#[derive(Debug)]
pub struct Shipper {
    pub id: String,
    pub owner: String,
    pub epoch: i64,
    dir: PathBuf,
    pool: PgPool,
    /// What Postgres holds of each file.
    shipped: tokio::sync::Mutex<Shipped>,
    lost: AtomicBool,
    /// The folder holds what Postgres holds plus this worker's writes: a
    /// claimed deployment's folder is not that until it is restored (it
    /// may hold an old copy), and is never shipped before.
    ready: AtomicBool,
    /// Writes shipped since the log was last compacted by this shipper.
    since_compaction: std::sync::atomic::AtomicU64,
    /// The lease as this process's clock sees it: the deployment publishes
    /// intents only while it is held.
    pub lease: Lease,
}

/// One write of the log: bytes at an offset, or a cut (`None`).
type Op = (usize, u64, Option<Vec<u8>>);

/// The last bytes shipped of each file are kept and compared with the file
/// at each shipment: a tail cut and written again (a torn last line cut
/// at open, then a new line) is shipped again from where it differs.
pub const TAIL: usize = 4096;

/// What Postgres holds of each file (in [`FILES`]' order): its length, and
/// its last bytes (up to [`TAIL`]).
#[derive(Clone, Debug, Default)]
pub struct Shipped {
    len: [u64; 5],
    tail: [Vec<u8>; 5],
}

impl Shipped {
    /// Files as restored: Postgres holds all of each.
    pub fn of(files: &[Vec<u8>; 5]) -> Shipped {
        let mut s = Shipped::default();
        for (i, f) in files.iter().enumerate() {
            s.len[i] = f.len() as u64;
            s.tail[i] = f[f.len().saturating_sub(TAIL)..].to_vec();
        }
        s
    }
}

/// Bytes `[from, to)` of the file at `path` (fewer if it is shorter).
fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
    file.take(to.saturating_sub(from)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl Shipper {
    pub fn new(
        id: &str,
        owner: &str,
        epoch: i64,
        dir: &Path,
        pool: PgPool,
        shipped: Shipped,
        lease: Lease,
    ) -> Shipper {
        Shipper {
            lease,
            id: id.to_owned(),
            owner: owner.to_owned(),
            epoch,
            dir: dir.to_owned(),
            pool,
            shipped: tokio::sync::Mutex::new(shipped),
            lost: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            since_compaction: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> ShipError + '_ {
        let path = path.display().to_string();
        move |error| ShipError::Io {
            id: self.id.clone(),
            path,
            error,
        }
    }

    /// Replaces what Postgres holds (the files were just restored): ships
    /// from now on.
    pub async fn restored(&self, shipped: Shipped) {
        *self.shipped.lock().await = shipped;
        self.ready.store(true, Ordering::Release);
    }

    /// A new deployment's (an empty folder): ships from now on.
    pub fn fresh(self) -> Shipper {
        self.ready.store(true, Ordering::Release);
        self
    }

    /// What each file gained (or lost, or had rewritten in its last bytes)
    /// since the last shipment.
    fn changes(&self, shipped: &Shipped) -> Result<(Vec<Op>, Shipped), ShipError> {
        let mut ops = Vec::new();
        let mut next = shipped.clone();
        for (i, name) in FILES.iter().enumerate() {
            let path = self.dir.join(name);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(self.io(&path)(e)),
            };
            // Where the file and what Postgres holds part: the end of the
            // shipped bytes, or the first of the kept tail that differs.
            let tail = &shipped.tail[i];
            let tail_at = shipped.len[i] - tail.len() as u64;
            let mut same = shipped.len[i];
            if len == 0 || len < tail_at {
                // Cut below the kept tail (not something the files do):
                // nothing is known to be the same, the whole is shipped.
                same = 0;
            } else if !tail.is_empty() {
                let now = read_range(&path, tail_at, shipped.len[i]).map_err(self.io(&path))?;
                let common = now.iter().zip(tail).take_while(|(a, b)| a == b).count();
                same = tail_at + common as u64;
            } else {
                same = same.min(len);
            }
            let mut kept = tail[..(same - tail_at.min(same)) as usize].to_vec();
            if same < shipped.len[i] {
                // Cut (a torn tail at open, a failed write cut back), and
                // perhaps written again since.
                ops.push((i, same, None));
            }
            if len > same {
                let bytes = read_range(&path, same, len).map_err(self.io(&path))?;
                kept.extend_from_slice(&bytes);
                next.len[i] = same + bytes.len() as u64;
                ops.push((i, same, Some(bytes)));
            } else {
                next.len[i] = same;
            }
            let want = (next.len[i] as usize).min(TAIL);
            if kept.len() < want {
                // After a cut the kept tail is short: fill it again from the
                // bytes before it, which Postgres holds as they are.
                let from = next.len[i] - want as u64;
                let before = next.len[i] - kept.len() as u64;
                let mut full = read_range(&path, from, before).map_err(self.io(&path))?;
                if full.len() as u64 == before - from {
                    full.extend_from_slice(&kept);
                    kept = full;
                }
            }
            next.tail[i] = kept[kept.len().saturating_sub(TAIL)..].to_vec();
        }
        Ok((ops, next))
    }

    /// Ships what the files gained since the last shipment, in one
    /// transaction that commits only while this worker holds the lease at
    /// this epoch. Returns once Postgres holds everything written before
    /// the call.
    pub async fn ship(&self) -> Result<(), ShipError> {
        if self.is_lost() {
            return Err(ShipError::Lost(self.id.clone()));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut shipped = self.shipped.lock().await;
        let (ops, next) = self.changes(&shipped)?;
        if ops.is_empty() {
            return Ok(());
        }
        let store = |e| ShipError::Store(self.id.clone(), e);
        let writes = ops.len() as u64;
        let mut tx = begin(&self.pool).await.map_err(store)?;
        self.hold(&mut tx, false).await?;
        for (file, at, bytes) in ops {
            insert_write(&mut tx, &self.id, None, FILES[file], at, bytes.as_deref())
                .await
                .map_err(store)?;
        }
        tx.commit().await.map_err(store)?;
        *shipped = next;
        self.since_compaction.fetch_add(writes, Ordering::Relaxed);
        Ok(())
    }

    /// Locks the deployment's row in `tx` (`exclusive`: against shipments
    /// too) while this shipper's lease holds; lost otherwise, for good.
    async fn hold(&self, tx: &mut Tx, exclusive: bool) -> Result<(), ShipError> {
        let held = holds(tx, &self.id, &self.owner, self.epoch, exclusive)
            .await
            .map_err(|e| ShipError::Store(self.id.clone(), e))?;
        if !held {
            self.lost.store(true, Ordering::Release);
            self.lease.lose();
            return Err(ShipError::Lost(self.id.clone()));
        }
        Ok(())
    }

    /// Writes shipped since this shipper last compacted the log.
    pub fn since_compaction(&self) -> u64 {
        self.since_compaction.load(Ordering::Relaxed)
    }

    /// Replaces the deployment's whole shipped log with one write per file:
    /// the files' shipped bytes, read back from the folder (the files only
    /// grow, or lose a last record, which the kept tails check). Nothing is
    /// shipped meanwhile; fenced like a shipment. False when skipped (a
    /// tail rewritten since the last shipment: the next one ships it).
    pub async fn compact_log(&self) -> Result<bool, ShipError> {
        if self.is_lost() {
            return Err(ShipError::Lost(self.id.clone()));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Ok(false);
        }
        let shipped = self.shipped.lock().await;
        let mut files: [Vec<u8>; 5] = Default::default();
        for (i, name) in FILES.iter().enumerate() {
            if shipped.len[i] == 0 {
                continue;
            }
            let path = self.dir.join(name);
            let bytes = read_range(&path, 0, shipped.len[i]).map_err(self.io(&path))?;
            let tail = &shipped.tail[i];
            if bytes.len() as u64 != shipped.len[i] || !bytes.ends_with(tail) {
                return Ok(false);
            }
            files[i] = bytes;
        }
        let store = |e| ShipError::Store(self.id.clone(), e);
        let mut tx = begin(&self.pool).await.map_err(store)?;
        self.hold(&mut tx, true).await?;
        sqlx::query("DELETE FROM deployment_chunks WHERE deployment = $1")
            .bind(&self.id)
            .execute(&mut *tx)
            .await
            .map_err(store)?;
        write_whole(&mut tx, &self.id, &files, None)
            .await
            .map_err(store)?;
        tx.commit().await.map_err(store)?;
        self.since_compaction.store(0, Ordering::Relaxed);
        Ok(true)
    }
}

/// Writes a running deployment may ship before its log is compacted (about
/// a week of one-minute bars): the log, and a takeover's restore, stay
/// bounded however long it runs.
pub const COMPACT_EVERY: u64 = 10_000;

/// A deployment's row.
#[derive(Clone, Debug)]
pub struct DeploymentRow {
    pub id: String,
    pub tenant: String,
    pub spec: String,
    pub strategy: String,
    pub policy: String,
    pub stopped: bool,
    pub owner: Option<String>,
    pub owner_url: Option<String>,
    pub epoch: i64,
    /// Whether the lease is alive now (by Postgres's clock).
    pub live: bool,
    /// Why it was stopped after [`MAX_FAILED_STARTS`] failed takeovers
    /// (until a `DELETE` stops it for good): listed as failed.
    pub failed: Option<String>,
}

fn row_of(r: &sqlx::postgres::PgRow) -> DeploymentRow {
    DeploymentRow {
        id: r.get("id"),
        tenant: r.get("tenant"),
        spec: r.get("spec"),
        strategy: r.get("strategy"),
        policy: r.get("policy"),
        stopped: r.get("stopped"),
        owner: r.get("owner"),
        owner_url: r.get("owner_url"),
        epoch: r.get("epoch"),
        live: r.get("live"),
        // Only the listing's SELECT has it (a claim's RETURNING does not).
        failed: r.try_get("failed").ok().flatten(),
    }
}

fn select_rows(filter: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT id, tenant, spec, strategy, policy, stopped, owner, owner_url, epoch, \
         (lease_until > {PG_NOW}) AS live, \
         CASE WHEN stopped AND failed_starts >= {MAX_FAILED_STARTS} THEN coalesce(error, '') END AS failed \
         FROM deployments {filter}"
    ))
}

/// A new deployment's row, its lease held by `owner` at epoch 1. False
/// when the id is taken (by any tenant, stopped or not).
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    pool: &PgPool,
    id: &str,
    tenant: &str,
    spec: &str,
    strategy: &str,
    policy: &str,
    owner: &str,
    owner_url: &str,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments (id, tenant, spec, strategy, policy, owner, owner_url, epoch, lease_until, created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, {PG_NOW} + $8, {PG_NOW}) ON CONFLICT (id) DO NOTHING"
    )))
    .bind(id)
    .bind(tenant)
    .bind(spec)
    .bind(strategy)
    .bind(policy)
    .bind(owner)
    .bind(owner_url)
    .bind(ttl.as_millis() as i64)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets a row whose deployment did not start (and everything shipped).
pub async fn remove(pool: &PgPool, id: &str, owner: &str) -> Result<(), sqlx::Error> {
    let mut tx = begin(pool).await?;
    let gone = sqlx::query("DELETE FROM deployments WHERE id = $1 AND owner = $2")
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 1 {
        sqlx::query("DELETE FROM deployment_chunks WHERE deployment = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Marks a deployment no worker holds stopped for good (false: a worker
/// holds it now); one stopped after failed takeovers is no longer listed.
pub async fn mark_stopped_if_free(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployments SET stopped = TRUE, lease_until = 0, failed_starts = 0 \
         WHERE id = $1 AND lease_until < {PG_NOW}"
    )))
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a deployment stopped for good: no worker takes it over, and one
/// stopped after failed takeovers is no longer listed.
pub async fn mark_stopped(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deployments SET stopped = TRUE, lease_until = 0, failed_starts = 0 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The row of deployment `id`, if there is one.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<DeploymentRow>, sqlx::Error> {
    Ok(sqlx::query(select_rows("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(row_of))
}

/// The deployments not stopped: `tenant`'s, or everyone's.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<DeploymentRow>, sqlx::Error> {
    let rows = match tenant {
        Some(t) => {
            sqlx::query(select_rows(&format!(
                "WHERE (NOT stopped OR failed_starts >= {MAX_FAILED_STARTS}) AND tenant = $1 ORDER BY id"
            )))
            .bind(t)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(select_rows(&format!(
                "WHERE NOT stopped OR failed_starts >= {MAX_FAILED_STARTS} ORDER BY id"
            )))
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows.iter().map(row_of).collect())
}

/// Renews `owner`'s leases on `ids`; returns the ids still held, with their
/// epochs (a stopped deployment's or another worker's lease is not).
pub async fn renew(
    pool: &PgPool,
    owner: &str,
    ids: &[String],
    ttl: Duration,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployments SET lease_until = {PG_NOW} + $3 \
         WHERE owner = $1 AND id = ANY($2) AND NOT stopped AND lease_until > {PG_NOW} RETURNING id, epoch"
    )))
    .bind(owner)
    .bind(ids)
    .bind(ttl.as_millis() as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get("id"), r.get("epoch"))).collect())
}

/// Claims up to `room` deployments whose lease has expired, oldest first,
/// for `owner`; each claim counts the epoch up.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    owner_url: &str,
    room: usize,
    ttl: Duration,
) -> Result<Vec<DeploymentRow>, sqlx::Error> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployments SET owner = $1, owner_url = $2, epoch = epoch + 1, lease_until = {PG_NOW} + $3 \
         WHERE id IN (SELECT id FROM deployments WHERE NOT stopped AND lease_until < {PG_NOW} \
                      ORDER BY created LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING id, tenant, spec, strategy, policy, stopped, owner, owner_url, epoch, TRUE AS live"
    )))
    .bind(owner)
    .bind(owner_url)
    .bind(ttl.as_millis() as i64)
    .bind(room as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(row_of).collect())
}

/// Lets `owner`'s leases on `ids` go at once (a worker draining): other
/// workers claim them at their next heartbeat.
pub async fn release(pool: &PgPool, owner: &str, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deployments SET lease_until = 0 WHERE owner = $1 AND id = ANY($2)")
        .bind(owner)
        .bind(ids)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The shipped writes a restore read, to be compacted into one write per
/// file once the deployment runs ([`compact`]).
#[derive(Debug)]
pub struct Compaction {
    files: Arc<[Vec<u8>; 5]>,
    /// The `seq`s of the writes read, ascending.
    seqs: Vec<i64>,
}

/// Takeovers of a deployment that fail to start it in a row (its module
/// refused, its feed's host no longer allowed, its log unreadable) before it
/// is stopped, listed as failed until a `DELETE`, as the embedded service
/// lists a deployment that does not restart.
pub const MAX_FAILED_STARTS: i64 = 3;

/// Why a takeover did not start its deployment.
#[derive(Debug)]
pub enum TakeoverError {
    /// It may start next time (the lease lost, the store unreachable).
    Passing(String),
    /// It will fail the same way on any worker.
    Lasting(String),
}

impl TakeoverError {
    pub fn message(&self) -> &str {
        match self {
            TakeoverError::Passing(m) | TakeoverError::Lasting(m) => m,
        }
    }
}

/// A takeover at `epoch` did not start the deployment: the lease goes, and
/// a lasting failure is counted; the [`MAX_FAILED_STARTS`]th in a row
/// stops it for good. True when it was stopped.
pub async fn failed_start(
    pool: &PgPool,
    id: &str,
    owner: &str,
    epoch: i64,
    error: &str,
    lasting: bool,
) -> Result<bool, sqlx::Error> {
    let stopped: Option<bool> = sqlx::query_scalar(
        "UPDATE deployments SET lease_until = 0, \
         failed_starts = failed_starts + CASE WHEN $4 THEN 1 ELSE 0 END, \
         error = CASE WHEN $4 THEN $5 ELSE error END, \
         stopped = stopped OR (failed_starts + CASE WHEN $4 THEN 1 ELSE 0 END >= $6) \
         WHERE id = $1 AND owner = $2 AND epoch = $3 RETURNING stopped",
    )
    .bind(id)
    .bind(owner)
    .bind(epoch)
    .bind(lasting)
    .bind(error)
    .bind(MAX_FAILED_STARTS)
    .fetch_optional(pool)
    .await?;
    Ok(stopped.unwrap_or(false))
}

/// A takeover started the deployment: its failures are forgotten.
pub async fn started_ok(pool: &PgPool, id: &str, owner: &str, epoch: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deployments SET failed_starts = 0, error = NULL \
         WHERE id = $1 AND owner = $2 AND epoch = $3 AND failed_starts > 0",
    )
    .bind(id)
    .bind(owner)
    .bind(epoch)
    .execute(pool)
    .await
    .map(drop)
}

/// Rebuilds deployment `id`'s files in `dir` (emptied first) from what was
/// shipped. Returns what Postgres holds of them, and, when the log has
/// more than one write per file, what [`compact`] needs.
pub async fn restore(pool: &PgPool, id: &str, dir: &Path) -> Result<(Shipped, Option<Compaction>), String> {
    let rows =
        sqlx::query("SELECT seq, file, at, bytes FROM deployment_chunks WHERE deployment = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("the shared store: {e}"))?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.get("seq")).collect();
    let files = replay_writes(
        rows.into_iter()
            .map(|r| (r.get("file"), r.get("at"), r.get("bytes"))),
    )?;
    let files = Arc::new(files);
    let (written, into) = (files.clone(), dir.to_owned());
    tokio::task::spawn_blocking(move || write_files(&into, &written))
        .await
        .map_err(|e| format!("writing the files: {e}"))??;
    let shipped = Shipped::of(&files);
    let compaction = (seqs.len() > FILES.len()).then_some(Compaction { files, seqs });
    Ok((shipped, compaction))
}

/// Empties `dir` and writes the files into it, synced.
fn write_files(dir: &Path, files: &[Vec<u8>; 5]) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir, e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (i, bytes) in files.iter().enumerate() {
        if bytes.is_empty() {
            continue;
        }
        let path = dir.join(FILES[i]);
        std::fs::write(&path, bytes)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The files a log of shipped writes gives, in [`FILES`]' order: each
/// write puts its bytes at its offset (cutting what followed), each cut
/// shortens its file. A write past a file's end, or of another file, is
/// refused: the log is not whole.
pub fn replay_writes(
    writes: impl IntoIterator<Item = (String, i64, Option<Vec<u8>>)>,
) -> Result<[Vec<u8>; 5], String> {
    let mut files: [Vec<u8>; 5] = Default::default();
    for (name, at, bytes) in writes {
        let Some(i) = FILES.iter().position(|f| *f == name) else {
            return Err(format!("a shipped write names an unknown file {name:?}"));
        };
        let file = &mut files[i];
        let at = usize::try_from(at)
            .ok()
            .filter(|at| *at <= file.len())
            .ok_or_else(|| format!("{name}: a write at {at}, past its end {}", file.len()))?;
        file.truncate(at);
        if let Some(b) = bytes {
            file.extend_from_slice(&b);
        }
    }
    Ok(files)
}

/// Replaces the writes a restore read with one write per file, under the
/// fence of the lease that read them. Writes shipped since (the
/// deployment runs meanwhile) stay, after: the new writes take the last
/// `seq`s of the ones they replace, below every later one.
pub async fn compact(
    pool: &PgPool,
    id: &str,
    owner: &str,
    epoch: i64,
    c: &Compaction,
) -> Result<bool, sqlx::Error> {
    let (Some(&last), files) = (c.seqs.last(), &c.files) else {
        return Ok(false);
    };
    let mut tx = begin(pool).await?;
    if !holds(&mut tx, id, owner, epoch, true).await? {
        return Ok(false);
    }
    sqlx::query("DELETE FROM deployment_chunks WHERE deployment = $1 AND seq <= $2")
        .bind(id)
        .bind(last)
        .execute(&mut *tx)
        .await?;
    write_whole(&mut tx, id, files, Some(&c.seqs[c.seqs.len() - FILES.len()..])).await?;
    tx.commit().await.map(|()| true)
}

/// A transaction on the shared store.
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Whether `owner` holds deployment `id`'s lease at `epoch`, locking its
/// row in `tx` when it does: shared by shipments, exclusive (`exclusive`)
/// for compactions, and against claims either way.
async fn holds(tx: &mut Tx, id: &str, owner: &str, epoch: i64, exclusive: bool) -> Result<bool, sqlx::Error> {
    let sql = if exclusive {
        "SELECT epoch FROM deployments WHERE id = $1 AND owner = $2 AND epoch = $3 FOR UPDATE"
    } else {
        "SELECT epoch FROM deployments WHERE id = $1 AND owner = $2 AND epoch = $3 FOR SHARE"
    };
    let held: Option<i64> = sqlx::query_scalar(sql)
        .bind(id)
        .bind(owner)
        .bind(epoch)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(held.is_some())
}

/// One write of deployment `id`'s log: `bytes` at `at` of `file`, or a cut
/// (`None`); numbered `seq`, or the next number.
async fn insert_write(
    tx: &mut Tx,
    id: &str,
    seq: Option<i64>,
    file: &str,
    at: u64,
    bytes: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deployment_chunks (seq, deployment, file, at, bytes) \
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('deployment_chunks', 'seq'))), $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(id)
    .bind(file)
    .bind(at as i64)
    .bind(bytes)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Each non-empty file as one write at 0, numbered by `seqs` (one per file,
/// in [`FILES`]' order) or by the next numbers.
async fn write_whole(
    tx: &mut Tx,
    id: &str,
    files: &[Vec<u8>; 5],
    seqs: Option<&[i64]>,
) -> Result<(), sqlx::Error> {
    for (i, bytes) in files.iter().enumerate() {
        if !bytes.is_empty() {
            let seq = seqs.map(|s| s[i]);
            insert_write(tx, id, seq, FILES[i], 0, Some(bytes)).await?;
        }
    }
    Ok(())
}

/// A worker's side of the fleet: where it is reached, and the shippers of
/// the deployments whose leases it holds.
#[derive(Debug, Default)]
pub struct Leases {
    /// The URL API nodes forward requests to (set once it listens).
    pub url: OnceLock<String>,
    pub held: Mutex<HashMap<String, Arc<Shipper>>>,
    /// When the leases were last renewed.
    pub renewed: Mutex<Option<Instant>>,
    /// Deployments whose requests answer 503 here rather than 404: claimed
    /// and not started yet (`None`), or lost at an instant (their lease may
    /// look alive to API nodes for a while).
    pub unavailable: Mutex<HashMap<String, Option<Instant>>>,
}

impl Leases {
    pub fn get(&self, id: &str) -> Option<Arc<Shipper>> {
        lock(&self.held).get(id).cloned()
    }

    pub fn insert(&self, shipper: Arc<Shipper>) {
        lock(&self.held).insert(shipper.id.clone(), shipper);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Shipper>> {
        lock(&self.held).remove(id)
    }

    pub fn ids(&self) -> Vec<String> {
        lock(&self.held).keys().cloned().collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.held).len()
    }

    /// Whether `shipper` is the one this worker holds for its deployment.
    pub fn is_current(&self, shipper: &Arc<Shipper>) -> bool {
        self.get(&shipper.id).is_some_and(|s| Arc::ptr_eq(&s, shipper))
    }

    /// Whether requests for `id` answer 503 here: starting, or lost less
    /// than `for_lost` ago.
    pub fn is_unavailable(&self, id: &str, for_lost: Duration) -> bool {
        let mut map = lock(&self.unavailable);
        map.retain(|_, lost| lost.is_none_or(|t| t.elapsed() < for_lost));
        map.contains_key(id)
    }
}

/// The HTTP client API nodes forward deployments' requests with.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Forwarder { client }
    }
}

/// The caller an API node authenticated, as it tells a worker that has no
/// tokens of its own (one on loopback): without them every caller would be
/// its operator. A worker with tokens authenticates the caller itself and
/// ignores them.
pub const FORWARDED_TENANT: &str = "x-palisade-tenant";
pub const FORWARDED_OPERATOR: &str = "x-palisade-operator";

/// The headers of a worker's answer an API node passes on.
const PASSED_ON: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
];

/// A forwarded request's answer: status, the headers passed on, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: axum::body::Bytes,
}

impl Answer {
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

impl Forwarder {
    /// Sends `method path_and_query` with `body` to the worker at `base`,
    /// carrying the caller's authorization and content type.
    pub async fn send(
        &self,
        base: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Answer, String> {
        let uri = format!("{}{path_and_query}", base.trim_end_matches('/'));
        let mut req = Request::builder().method(method).uri(&uri);
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static(FORWARDED_TENANT),
            header::HeaderName::from_static(FORWARDED_OPERATOR),
        ] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        let req = req.body(Body::from(body)).map_err(|e| format!("{uri}: {e}"))?;
        let limit = FORWARD_TIMEOUT + asked_wait(path_and_query);
        let res = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| format!("{base}: no answer within {} s", limit.as_secs()))?
            .map_err(|e| format!("{base}: {e}"))?;
        let status = res.status();
        let mut headers = HeaderMap::new();
        for name in PASSED_ON {
            if let Some(v) = res.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        let body = axum::body::to_bytes(Body::new(res.into_body()), MAX_FORWARDED_BYTES)
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(file: &str, at: i64, bytes: Option<&[u8]>) -> (String, i64, Option<Vec<u8>>) {
        (file.to_owned(), at, bytes.map(<[u8]>::to_vec))
    }

    /// Ships `dir`'s changes into `log` (as if committed) and returns the
    /// files the log gives.
    fn ship_into(
        shipper: &Shipper,
        shipped: &mut Shipped,
        log: &mut Vec<(String, i64, Option<Vec<u8>>)>,
    ) -> [Vec<u8>; 5] {
        let (ops, next) = shipper.changes(shipped).unwrap();
        for (i, at, bytes) in ops {
            log.push((FILES[i].to_owned(), at as i64, bytes));
        }
        *shipped = next;
        replay_writes(log.clone()).unwrap()
    }

    #[tokio::test]
    async fn what_is_shipped_replays_into_the_files_even_when_a_tail_is_cut_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let lease = Lease::until(Instant::now() + Duration::from_secs(60));
        let shipper = Shipper::new("d", "w", 1, dir.path(), pool, Shipped::default(), lease);
        let (mut shipped, mut log) = (Shipped::default(), Vec::new());
        let journal = dir.path().join("fills.jsonl");
        let bars = dir.path().join("bars.log");
        let check = |files: &[Vec<u8>; 5]| {
            for (i, name) in FILES.iter().enumerate() {
                let on_disk = std::fs::read(dir.path().join(name)).unwrap_or_default();
                assert_eq!(files[i], on_disk, "{name}");
            }
        };
        std::fs::write(&journal, b"{\"a\":1}\n{\"b\":").unwrap();
        std::fs::write(&bars, vec![7u8; 10_000]).unwrap();
        check(&ship_into(&shipper, &mut shipped, &mut log));
        // A torn last line cut at open, then a longer line written: the
        // same length or more, different bytes.
        std::fs::write(&journal, b"{\"a\":1}\n{\"c\":2222}\n").unwrap();
        // Bytes past the kept tail rewritten are not seen (the formats
        // only ever cut a last record); the tail's are.
        let mut b = vec![7u8; 10_000];
        b[9_990] = 1;
        b.extend_from_slice(b"more");
        std::fs::write(&bars, &b).unwrap();
        let files = ship_into(&shipper, &mut shipped, &mut log);
        check(&files);
        // Nothing changed: nothing shipped.
        let before = log.len();
        ship_into(&shipper, &mut shipped, &mut log);
        assert_eq!(log.len(), before);
        // Cut below the kept tail, then grown: shipped whole again.
        let mut b = vec![7u8; 100];
        b.extend_from_slice(b"grown again");
        std::fs::write(&bars, &b).unwrap();
        check(&ship_into(&shipper, &mut shipped, &mut log));
        std::fs::remove_file(&journal).unwrap();
        check(&ship_into(&shipper, &mut shipped, &mut log));
    }

    /// Against a real Postgres: writes shipped, restored elsewhere, then
    /// more shipped while the restored log is compacted; the next restore
    /// gives the files as they are, and a worker that lost the lease can
    /// neither ship nor compact.
    #[test]
    fn a_log_compacted_while_the_deployment_ships_restores_whole_and_fences_the_old_owner() {
        crate::storage::with_postgres(|pool, tmp| async move {
            let ttl = Duration::from_secs(60);
            assert!(insert(&pool, "d", "t", "{}", "s", "p", "w1", "http://w1", ttl)
                .await
                .unwrap());
            let lease = || Lease::until(Instant::now() + ttl);
            let (a, b, c) = (tmp.join("a"), tmp.join("b"), tmp.join("c"));
            std::fs::create_dir_all(&a).unwrap();
            let w1 = Shipper::new("d", "w1", 1, &a, pool.clone(), Shipped::default(), lease()).fresh();
            let bars = a.join("bars.log");
            let mut all = Vec::new();
            for i in 0..20u8 {
                all.extend_from_slice(&[i; 60]);
                std::fs::write(&bars, &all).unwrap();
                std::fs::write(
                    a.join("audit.jsonl"),
                    format!("{{\"n\":{i}}}\n").repeat(usize::from(i) + 1),
                )
                .unwrap();
                w1.ship().await.unwrap();
            }
            // w2 claims (w1's lease made to expire), restores into b.
            sqlx::query("UPDATE deployments SET lease_until = 0")
                .execute(&pool)
                .await
                .unwrap();
            // A worker stalled inside a transaction on the row (paused
            // mid-shipment) holds its lock for a second at most: claims,
            // which skip locked rows, go through once Postgres ends it.
            let mut stalled = begin(&pool).await.unwrap();
            sqlx::query("SELECT epoch FROM deployments WHERE id = 'd' FOR SHARE")
                .execute(&mut *stalled)
                .await
                .unwrap();
            assert!(
                claim(&pool, "w2", "http://w2", 10, ttl).await.unwrap().is_empty(),
                "locked: skipped"
            );
            // Claimed as soon as Postgres lets the stalled one go (bounded).
            let deadline = Instant::now() + Duration::from_secs(10);
            let rows = loop {
                let rows = claim(&pool, "w2", "http://w2", 10, ttl).await.unwrap();
                if !rows.is_empty() {
                    break rows;
                }
                assert!(
                    Instant::now() < deadline,
                    "the stalled transaction still holds the row"
                );
                tokio::task::yield_now().await;
            };
            assert_eq!((rows.len(), rows[0].epoch), (1, 2));
            assert!(
                stalled.commit().await.is_err(),
                "Postgres ended the stalled transaction"
            );
            // Claimed, not restored yet: its folder (here w1's old copy)
            // is not shipped, whatever it holds.
            let unready = Shipper::new("d", "w2", 2, &a, pool.clone(), Shipped::default(), lease());
            let rows_before: i64 = sqlx::query_scalar("SELECT count(*) FROM deployment_chunks")
                .fetch_one(&pool)
                .await
                .unwrap();
            unready.ship().await.unwrap();
            let rows_after: i64 = sqlx::query_scalar("SELECT count(*) FROM deployment_chunks")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(rows_before, rows_after, "nothing shipped before the restore");
            let (shipped, compaction) = restore(&pool, "d", &b).await.unwrap();
            let compaction = compaction.expect("40 writes: compacted");
            assert_eq!(std::fs::read(b.join("bars.log")).unwrap(), all);
            // w1 learns it lost the lease at its next shipment.
            all.extend_from_slice(&[99; 60]);
            std::fs::write(&bars, &all).unwrap();
            assert!(matches!(w1.ship().await, Err(ShipError::Lost(_))));
            assert!(!w1.lease.held());
            // w2 runs: a torn tail cut, more written, shipped before the
            // compaction commits.
            let w2 = Shipper::new("d", "w2", 2, &b, pool.clone(), Shipped::default(), lease());
            w2.restored(shipped).await;
            let mut now = std::fs::read(b.join("bars.log")).unwrap();
            now.truncate(now.len() - 30);
            now.extend_from_slice(&[7; 90]);
            std::fs::write(b.join("bars.log"), &now).unwrap();
            w2.ship().await.unwrap();
            assert!(
                !compact(&pool, "d", "w1", 1, &compaction).await.unwrap(),
                "the old owner cannot compact"
            );
            assert!(compact(&pool, "d", "w2", 2, &compaction).await.unwrap());
            now.extend_from_slice(b"after");
            std::fs::write(b.join("bars.log"), &now).unwrap();
            w2.ship().await.unwrap();
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deployment_chunks")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(
                count, 5,
                "two files compacted; a cut and a write, then a write, since"
            );
            let (_, again) = restore(&pool, "d", &c).await.unwrap();
            assert!(
                again.is_none(),
                "five writes, one per file at most: nothing to compact"
            );
            for name in FILES {
                assert_eq!(
                    std::fs::read(c.join(name)).unwrap_or_default(),
                    std::fs::read(b.join(name)).unwrap_or_default(),
                    "{name}"
                );
            }
            // The running owner compacts its whole log (as it does every
            // COMPACT_EVERY writes): one write per file, the same files;
            // not while a tail was rewritten and not shipped yet; never the
            // old owner.
            assert!(w2.since_compaction() >= 2);
            let mut bars_now = std::fs::read(b.join("bars.log")).unwrap();
            let last = bars_now.len() - 1;
            bars_now[last] ^= 0xff;
            std::fs::write(b.join("bars.log"), &bars_now).unwrap();
            assert!(
                !w2.compact_log().await.unwrap(),
                "a rewritten tail waits for its shipment"
            );
            w2.ship().await.unwrap();
            assert!(w2.compact_log().await.unwrap());
            assert_eq!(w2.since_compaction(), 0);
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deployment_chunks")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(count, 2, "bars.log and audit.jsonl, whole");
            bars_now.extend_from_slice(b"and on");
            std::fs::write(b.join("bars.log"), &bars_now).unwrap();
            w2.ship().await.unwrap();
            let d = tmp.join("d");
            let (_, none) = restore(&pool, "d", &d).await.unwrap();
            assert!(none.is_none());
            for name in FILES {
                assert_eq!(
                    std::fs::read(d.join(name)).unwrap_or_default(),
                    std::fs::read(b.join(name)).unwrap_or_default(),
                    "{name}"
                );
            }
            assert!(matches!(w1.compact_log().await, Err(ShipError::Lost(_))));
        });
    }

    #[test]
    fn a_long_polls_wait_extends_the_forwarding_timeout_up_to_a_minute() {
        assert_eq!(asked_wait("/v1/deployments/d/intents"), Duration::ZERO);
        assert_eq!(
            asked_wait("/v1/deployments/d/intents?after=3&wait=2500"),
            Duration::from_millis(2500)
        );
        assert_eq!(asked_wait("/v1/deployments/d/intents?wait=600000"), LONGEST_POLL);
        assert_eq!(asked_wait("/v1/deployments/d/intents?wait=x"), Duration::ZERO);
    }

    #[test]
    fn writes_replay_into_the_files_they_were_shipped_from() {
        let files = replay_writes([
            w("bars.log", 0, Some(b"abc")),
            w("audit.jsonl", 0, Some(b"{}\n")),
            w("bars.log", 3, Some(b"def")),
            // A failed write cut back, then written again.
            w("bars.log", 4, None),
            w("bars.log", 4, Some(b"XY")),
            w("orders.jsonl", 0, Some(b"")),
        ])
        .unwrap();
        assert_eq!(files[0], b"abcdXY");
        assert_eq!(files[1], b"{}\n");
        assert!(files[2].is_empty() && files[3].is_empty() && files[4].is_empty());
        // A write at the very end is whole; one byte past it is not.
        assert!(replay_writes([w("fills.jsonl", 0, Some(b"a")), w("fills.jsonl", 1, Some(b"b"))]).is_ok());
        let gap =
            replay_writes([w("fills.jsonl", 0, Some(b"a")), w("fills.jsonl", 2, Some(b"b"))]).unwrap_err();
        assert!(
            gap.contains("fills.jsonl") && gap.contains("past its end 1"),
            "{gap}"
        );
        let cut = replay_writes([w("fills.jsonl", 3, None)]).unwrap_err();
        assert!(cut.contains("past its end 0"), "{cut}");
        let neg = replay_writes([w("bars.log", -1, Some(b"a"))]).unwrap_err();
        assert!(neg.contains("-1"), "{neg}");
        let other = replay_writes([w("spec.json", 0, Some(b"{}"))]).unwrap_err();
        assert!(other.contains("spec.json"), "{other}");
    }
}
