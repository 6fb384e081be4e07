//! Embedded storage: an SQLite database (through sqlx, WAL mode) for records,
//! and content-addressed files for the bytes of modules and datasets, both in
//! the data directory. The same [`Storage`] runs over a shared Postgres
//! ([`Storage::open_postgres`], distributed mode): the same statements
//! (placeholders translated, [`postgres_placeholders`]), the schema in
//! `migrations-postgres/`, module and dataset bytes in the table `blobs`
//! (the data directory caches them), job numbers from a sequence.
//!
//! - Files are named by the SHA-256 of their content (`modules/<hex>.wasm`,
//!   `datasets/<hex>.csv`) and opened only through a `cap_std` [`Dir`] of the
//!   data directory, so no name can reach outside it. A file is written to
//!   `tmp/`, synced and renamed into place before any row refers to it.
//! - Tables: `strategies`, `datasets` (per tenant, referring to files by
//!   hash), `jobs`, `results`, `policies` (operator replacements),
//!   `policy_versions` (every policy text a job ran with, by hash) and
//!   `policy_audit`. The schema is made by sqlx's migrations
//!   (`runtime/service/migrations/`, applied by [`migrate`]); rows map to
//!   records through `sqlx::FromRow`.
//! - Job writes go through one [`Writer`] task that applies whatever is
//!   waiting as a few atomic multi-row statements (group commit); callers that must know a write is durable (a submission
//!   before it is acknowledged, a start before the guest runs, a result
//!   before it is shown) wait for its acknowledgement.
//! - [`JobState`] is the job state machine; [`JobState::transition`] rejects
//!   every move it does not list.
//! - [`Storage::recover`] runs at start-up: jobs found `running` were
//!   interrupted by a crash and are re-queued, or failed with the reason
//!   after too many starts.
//!
//! Durability: `synchronous = NORMAL` in WAL mode, so a committed write
//! survives the process being killed (`kill -9`); a power loss may lose the
//! last commits, never corrupt the database. This module knows nothing of
//! HTTP, scheduling or wasm.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

/// Which database holds the records: the embedded SQLite file, or a shared
/// Postgres (distributed mode, `--store postgres://…`).
#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Evaluates `$body` with `$pool` bound to the store's pool, whichever
/// database it is: one text, type-checked against each.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Writes one entry of the policy audit trail in a transaction.
macro_rules! insert_audit {
    ($store:expr, $tx:expr, $a:expr) => {{
        let a: &PolicyAudit = $a;
        sqlx::query(
            $store.sql(
                "INSERT INTO policy_audit (name, hash, previous_hash, tenant, at) VALUES (?, ?, ?, ?, ?)",
            ),
        )
        .bind(&a.name)
        .bind(&a.hash)
        .bind(a.previous_hash.as_deref())
        .bind(&a.tenant)
        .bind(a.at)
        .execute($tx)
        .await?;
    }};
}

/// SQL written with SQLite's placeholders (`?`, `?N`) in Postgres's (`$N`).
/// No statement of this module has a `?` inside a string literal.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        out.push('$');
        if chars.peek().is_some_and(char::is_ascii_digit) {
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
        } else {
            out += &next.to_string();
            next += 1;
        }
    }
    out
}

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "palisade.db";
/// Most writes applied in one transaction.
pub const MAX_BATCH: usize = 2_048;
/// Writes waiting for the writer before senders wait.
const WRITE_QUEUE: usize = 16_384;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// True for a lowercase hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the database writer has stopped")]
    WriterGone,
    /// A write batch was not committed (nothing of it is stored).
    #[error("the store cannot write: {0}")]
    Write(String),
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database schema: {0}")]
    Migrate(String),
    /// A shared store or queue that cannot be reached (distributed mode).
    #[error("cannot reach {what} at {address}: {detail}")]
    Unreachable {
        what: &'static str,
        address: String,
        detail: String,
    },
}

impl StorageError {
    /// True when the store could not write for want of space: a full disk
    /// or database, a quota, or a file-size limit.
    pub fn is_out_of_space(&self) -> bool {
        const CODES: [i32; 3] = [libc::ENOSPC, libc::EDQUOT, libc::EFBIG];
        let text = |m: &str| {
            let m = m.to_ascii_lowercase();
            [
                "disk is full",
                "no space left",
                "quota exceeded",
                "file too large",
            ]
            .iter()
            .any(|s| m.contains(s))
        };
        match self {
            StorageError::Io { source, .. } => source.raw_os_error().is_some_and(|c| CODES.contains(&c)),
            StorageError::Db(sqlx::Error::Io(e)) => e.raw_os_error().is_some_and(|c| CODES.contains(&c)),
            StorageError::Db(sqlx::Error::Database(d)) => {
                d.code().as_deref() == Some("13") || text(d.message())
            }
            StorageError::Db(e) => text(&e.to_string()),
            StorageError::Write(m) => text(m),
            _ => false,
        }
    }

    /// True when the store failed to write (out of space or an I/O error):
    /// a condition of the host that may pass, not a fault of the request.
    pub fn is_write_failure(&self) -> bool {
        match self {
            StorageError::Write(_) | StorageError::WriterGone | StorageError::Unreachable { .. } => true,
            StorageError::Io { .. } | StorageError::Db(sqlx::Error::Io(_)) => true,
            // A shared store that cannot be reached or is restarting.
            StorageError::Db(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_),
            ) => true,
            StorageError::Db(sqlx::Error::Database(d))
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                true
            }
            // SQLITE_FULL, SQLITE_IOERR (and its extended codes), SQLITE_CANTOPEN.
            StorageError::Db(sqlx::Error::Database(d)) => {
                let code = d.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                self.is_out_of_space() || matches!(code & 0xff, 10 | 13 | 14)
            }
            _ => self.is_out_of_space(),
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let what = what.into();
    move |source| StorageError::Io { what, source }
}

/// Where a job is in its life.
///
/// ```text
/// queued ──► running ──► succeeded | failed | cancelled | timed_out
///   │  ▲        │
///   │  └────────┘  (re-queued: interrupted by a restart or a shutdown)
///   └──► cancelled | failed   (cancelled while queued; cannot be prepared after a restart)
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

/// A state change the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    /// Every state.
    pub const ALL: &'static [JobState] = <JobState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// True for the states a job never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The state after moving to `to`, or the error when the move is not
    /// allowed (see the diagram on [`JobState`]).
    pub fn transition(self, to: JobState) -> Result<JobState, TransitionError> {
        use JobState::*;
        let allowed = matches!(
            (self, to),
            (Queued, Running | Cancelled | Failed)
                | (Running, Succeeded | Failed | Cancelled | TimedOut | Queued)
        );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl TryFrom<String> for JobState {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// One row of `jobs`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct JobRecord {
    pub id: String,
    /// Submission order, across restarts.
    pub seq: i64,
    pub tenant: String,
    pub kind: String,
    /// SHA-256 of the strategy module.
    pub strategy: String,
    /// Dataset ids, comma-separated in the order given.
    pub dataset: String,
    /// The normalized submission (JSON).
    pub spec: String,
    pub priority: String,
    pub policy: String,
    pub policy_hash: String,
    #[sqlx(try_from = "String")]
    pub state: JobState,
    /// 0 to 1.
    pub progress: f64,
    pub error_cause: Option<String>,
    pub error_message: Option<String>,
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
    /// Times the job was started.
    pub attempts: i64,
}

/// One row of `strategies`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct StrategyRecord {
    pub tenant: String,
    pub sha256: String,
    pub name: String,
    pub version: String,
    /// The manifest (JSON).
    pub manifest: String,
    /// What validation found: imports, exports, sizes (JSON).
    pub info: String,
    pub size: i64,
    pub created: i64,
}

/// One row of `datasets`: the bars of one symbol.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DatasetRecord {
    pub tenant: String,
    pub id: String,
    /// The symbol.
    pub name: String,
    pub bars: i64,
    pub first_ts: i64,
    pub last_ts: i64,
    /// SHA-256 of the CSV file.
    pub sha256: String,
    pub size: i64,
    pub created: i64,
}

/// One audited policy replacement.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct PolicyAudit {
    pub name: String,
    pub hash: String,
    pub previous_hash: Option<String>,
    pub tenant: String,
    pub at: i64,
}

/// An idempotency key of a job submission: the job it created and the
/// SHA-256 of the request body it came with.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct IdempotencyKey {
    pub tenant: String,
    pub key: String,
    pub job_id: String,
    pub request_sha256: String,
    pub created: i64,
}

/// Filters of [`Storage::list_jobs`].
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub strategy: Option<String>,
    /// Only jobs submitted before this `seq` (pagination).
    pub before: Option<i64>,
    pub limit: i64,
}

/// The kind of content-addressed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blob {
    Module,
    Dataset,
}

impl Blob {
    fn dir(self) -> &'static str {
        match self {
            Blob::Module => "modules",
            Blob::Dataset => "datasets",
        }
    }

    fn file(self, sha: &str) -> String {
        match self {
            Blob::Module => format!("modules/{sha}.wasm"),
            Blob::Dataset => format!("datasets/{sha}.csv"),
        }
    }
}

/// Where compiled modules are kept, as `<module sha>.<artifact key>.cwasm`.
const COMPILED_DIR: &str = "compiled";
/// The Python runtime's compiled code, by the runtime component's SHA-256 and
/// the engine's artifact key (not swept: no row refers to it).
const RUNTIME_DIR: &str = "runtimes";

fn compiled_file(sha: &str, key: &str) -> String {
    format!("{COMPILED_DIR}/{sha}.{key}.cwasm")
}

/// What [`Storage::recover`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Interrupted jobs put back in the queue.
    pub requeued: Vec<String>,
    /// Interrupted jobs failed after too many starts.
    pub failed: Vec<String>,
    /// Unreferenced content files removed.
    pub swept_files: usize,
}

/// An upload written to a file in `tmp/` as it arrives and hashed on the
/// way, so that memory holds one chunk of it at a time whatever its size.
/// [`Spool::keep`] syncs it and renames it into the content-addressed
/// store; otherwise the file is removed when the spool is dropped (and any
/// left by a crash by the next start's sweep of `tmp/`).
pub struct Spool {
    dir: Arc<Dir>,
    /// A shared store's database and runtime: [`Spool::keep`] stores the
    /// bytes there too.
    shared: Option<(PgPool, tokio::runtime::Handle)>,
    tmp: String,
    file: Option<std::fs::File>,
    hasher: Sha256,
    size: u64,
    kept: bool,
}

impl Spool {
    /// Appends a chunk (blocking file I/O: call from a blocking context or
    /// with chunks small enough to land in the page cache at once).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("a spool is written before it is kept");
        std::io::Write::write_all(file, chunk).map_err(io("cannot spool the upload to tmp/"))?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The SHA-256 of what was written, in hex.
    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    /// The file from its start, to read what was written.
    pub fn reader(&self) -> Result<std::fs::File, StorageError> {
        self.dir
            .open(&self.tmp)
            .map(cap_std::fs::File::into_std)
            .map_err(io("cannot read the spooled upload"))
    }

    /// Syncs the file and renames it into the store as `kind`'s blob of
    /// `sha` (left as it is when that blob exists already). A shared store
    /// commits the bytes to its database first (blocking: call from a
    /// blocking thread).
    pub fn keep(mut self, kind: Blob, sha: &str) -> Result<(), StorageError> {
        debug_assert!(is_sha256_hex(sha));
        if let Some((pool, handle)) = &self.shared {
            let mut bytes = Vec::with_capacity(self.size as usize);
            std::io::Read::read_to_end(&mut self.reader()?, &mut bytes)
                .map_err(io("cannot read the spooled upload"))?;
            handle.block_on(put_shared_blob(pool, sha, &bytes))?;
        }
        let name = kind.file(sha);
        if self.dir.exists(&name) {
            return Ok(());
        }
        let file = self.file.take().expect("kept once");
        file.sync_all().map_err(io(format!("cannot store {name}")))?;
        drop(file);
        self.dir
            .rename(&self.tmp, &self.dir, &name)
            .map_err(io(format!("cannot store {name}")))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.kept {
            self.file = None;
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}

/// The reason recorded on a job failed by [`Storage::recover`].
pub const INTERRUPTED: &str = "interrupted by a restart";

/// Opens (creating if needed) a data directory and its subdirectories.
fn open_data_dir(data_dir: &Path) -> Result<Dir, StorageError> {
    std::fs::create_dir_all(data_dir)
        .map_err(io(format!("cannot create data directory {}", data_dir.display())))?;
    let dir = Dir::open_ambient_dir(data_dir, ambient_authority())
        .map_err(io(format!("cannot open data directory {}", data_dir.display())))?;
    for sub in ["modules", "datasets", COMPILED_DIR, RUNTIME_DIR, "tmp"] {
        dir.create_dir_all(sub)
            .map_err(io(format!("cannot create {sub}/ in the data directory")))?;
    }
    Ok(dir)
}

/// A URL without its password, to name an address in messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth {
        Some(auth) => {
            let user = auth.split(':').next().unwrap_or_default();
            let hidden = if auth.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => format!("{scheme}://{host}"),
    }
}

/// The database and the data directory.
#[derive(Clone)]
pub struct Storage {
    db: Db,
    dir: Arc<Dir>,
    tmp_counter: Arc<AtomicU64>,
    /// Distributed mode: module and dataset bytes are kept in the shared
    /// database (table `blobs`), and `dir` caches them. Blocking readers
    /// and writers of bytes reach the database through this runtime.
    shared: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (creating if needed) the data directory and its database, and
    /// brings the schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Storage, StorageError> {
        let dir = open_data_dir(data_dir)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoint (copy the WAL into the database, then sync it)
            // every 40 MB of WAL rather than every 4 MB: a busy service
            // writes several MB per second, and each checkpoint stalls the
            // writer for a sync.
            .pragma("wal_autocheckpoint", "10000")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            // A local file: nothing to check before each use.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(Storage {
            db: Db::Sqlite(pool),
            dir: Arc::new(dir),
            tmp_counter: Arc::new(AtomicU64::new(0)),
            shared: None,
        })
    }

    /// Opens a shared Postgres store (distributed mode) at `url`, with
    /// `cache_dir` as this node's cache of module and dataset bytes and of
    /// compiled code, and brings its schema up to date. Gives up after
    /// `connect_timeout` with an error naming the address.
    pub async fn open_postgres(
        url: &str,
        cache_dir: &Path,
        connect_timeout: Duration,
    ) -> Result<Storage, StorageError> {
        let dir = open_data_dir(cache_dir)?;
        let options: PgConnectOptions = url.parse().map_err(|e| StorageError::Unreachable {
            what: "Postgres",
            address: redact_url(url),
            detail: format!("not a Postgres URL: {e}"),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(connect_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StorageError::Unreachable {
                what: "Postgres",
                address: redact_url(url),
                detail: e.to_string(),
            })?;
        MIGRATOR_POSTGRES.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(found) => StorageError::SchemaTooNew {
                found,
                known: MIGRATOR_POSTGRES.iter().map(|m| m.version).max().unwrap_or(0),
            },
            other => StorageError::Migrate(other.to_string()),
        })?;
        Ok(Storage {
            db: Db::Postgres(pool),
            dir: Arc::new(dir),
            tmp_counter: Arc::new(AtomicU64::new(0)),
            shared: Some(tokio::runtime::Handle::current()),
        })
    }

    /// True for a shared (Postgres) store: several processes write it.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The Postgres pool of a shared store (for the distributed queue's
    /// records); `None` for the embedded store.
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres(pool) => Some(pool),
            Db::Sqlite(_) => None,
        }
    }

    #[cfg(test)]
    fn sqlite(&self) -> &SqlitePool {
        match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(_) => panic!("an embedded store"),
        }
    }

    /// `sql`, written with SQLite's placeholders, for this store's database.
    fn sql(&self, sql: &'static str) -> sqlx::AssertSqlSafe<std::borrow::Cow<'static, str>> {
        sqlx::AssertSqlSafe(match self.db {
            Db::Sqlite(_) => std::borrow::Cow::Borrowed(sql),
            Db::Postgres(_) => std::borrow::Cow::Owned(postgres_placeholders(sql)),
        })
    }

    /// Closes the database: waits for connections to be returned and
    /// checkpoints the WAL.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(pool) => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await {
                    tracing::warn!(error = %e, "WAL checkpoint at close failed");
                }
                pool.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }

    // ---- content-addressed files ----

    /// A new file in `tmp/` for an upload to be written to as it arrives
    /// (see [`Spool`]).
    pub fn spool(&self) -> Result<Spool, StorageError> {
        let tmp = self.tmp_name("upload");
        let file = self
            .dir
            .create(&tmp)
            .map_err(io("cannot spool the upload to tmp/"))?;
        Ok(Spool {
            dir: self.dir.clone(),
            shared: self.postgres().cloned().zip(self.shared.clone()),
            tmp,
            file: Some(file.into_std()),
            hasher: Sha256::new(),
            size: 0,
            kept: false,
        })
    }

    fn tmp_name(&self, tag: &str) -> String {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        format!("tmp/{tag}.{}.{n}", std::process::id())
    }

    /// Writes `parts` one after the other to a file in `tmp/` (named after
    /// `tag`), syncs it and renames it to `name`: readers see the whole file
    /// or none.
    fn write_file(&self, name: &str, tag: &str, parts: &[&[u8]]) -> Result<(), StorageError> {
        let tmp = self.tmp_name(tag);
        let write = || -> std::io::Result<()> {
            let mut file = self.dir.create(&tmp)?;
            for part in parts {
                std::io::Write::write_all(&mut file, part)?;
            }
            file.sync_all()?;
            self.dir.rename(&tmp, &self.dir, name)
        };
        write().map_err(|e| {
            let _ = self.dir.remove_file(&tmp);
            StorageError::Io {
                what: format!("cannot store {name}"),
                source: e,
            }
        })
    }

    /// Reads a content-addressed file and checks its hash.
    pub fn get_blob(&self, kind: Blob, sha: &str) -> Result<Vec<u8>, StorageError> {
        if !is_sha256_hex(sha) {
            return Err(StorageError::Corrupt {
                what: "content hash".into(),
                detail: format!("{sha:?} is not a SHA-256"),
            });
        }
        let name = kind.file(sha);
        let bytes = match (self.dir.read(&name), &self.db, &self.shared) {
            (Ok(bytes), ..) => bytes,
            (Err(e), Db::Postgres(pool), Some(handle)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Not cached here yet: fetched once, checked, cached.
                let bytes = handle.block_on(get_shared_blob(pool, sha))?;
                if sha256_hex(&bytes) == sha {
                    self.write_file(&name, "fetched", &[&bytes])?;
                }
                bytes
            }
            (Err(e), ..) => {
                return Err(StorageError::Io {
                    what: format!("cannot read {name}"),
                    source: e,
                })
            }
        };
        if sha256_hex(&bytes) != sha {
            return Err(StorageError::Corrupt {
                what: name,
                detail: "content does not match its hash".into(),
            });
        }
        Ok(bytes)
    }

    /// Stores the compiled code of module `sha` for sandboxes whose
    /// artifact key is `key` (see `Sandbox::artifact_key`), prefixed with
    /// its own SHA-256 so that a damaged file is never loaded. Replaces
    /// any older file atomically.
    pub fn put_compiled(&self, sha: &str, key: &str, artifact: &[u8]) -> Result<(), StorageError> {
        debug_assert!(is_sha256_hex(sha));
        let digest = Sha256::digest(artifact);
        self.write_file(
            &compiled_file(sha, key),
            &format!("{sha}.{key}"),
            &[&digest, artifact],
        )
    }

    /// Keeps the Python runtime's compiled code (component `sha`, engine
    /// artifact `key`) like [`Storage::put_compiled`], and removes the
    /// compilations of any other runtime component (an upgraded server's
    /// old runtime).
    pub fn put_runtime(&self, sha: &str, key: &str, artifact: &[u8]) -> Result<(), StorageError> {
        debug_assert!(is_sha256_hex(sha));
        let digest = Sha256::digest(artifact);
        self.write_file(
            &format!("{RUNTIME_DIR}/{sha}.{key}.cwasm"),
            &format!("runtime.{sha}.{key}"),
            &[&digest, artifact],
        )?;
        if let Ok(entries) = self.dir.read_dir(RUNTIME_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with(sha) {
                    let _ = self.dir.remove_file(format!("{RUNTIME_DIR}/{name}"));
                }
            }
        }
        Ok(())
    }

    /// The Python runtime's compiled code [`Storage::put_runtime`] stored,
    /// checked against its hash; `None` when there is none or it is damaged
    /// (then removed).
    pub fn get_runtime(&self, sha: &str, key: &str) -> Option<Vec<u8>> {
        self.read_checked(&format!("{RUNTIME_DIR}/{sha}.{key}.cwasm"), sha, key)
    }

    /// The compiled code [`Storage::put_compiled`] stored, checked against its
    /// hash; `None` when there is none or it is damaged (then removed).
    pub fn get_compiled(&self, sha: &str, key: &str) -> Option<Vec<u8>> {
        self.read_checked(&compiled_file(sha, key), sha, key)
    }

    /// A file of compiled code, hash first, checked; removed when damaged.
    fn read_checked(&self, name: &str, sha: &str, key: &str) -> Option<Vec<u8>> {
        if !is_sha256_hex(sha) || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes = self.dir.read(name).ok()?;
        let intact = bytes.len() > 32 && Sha256::digest(&bytes[32..]).as_slice() == &bytes[..32];
        if !intact {
            tracing::warn!(file = %name, "a damaged precompiled module was removed");
            let _ = self.dir.remove_file(name);
            return None;
        }
        Some(bytes[32..].to_vec())
    }

    /// Removes files no row refers to, and leftovers in `tmp/`. Run at
    /// start-up, before requests are served, so no upload can race it.
    async fn sweep(&self) -> Result<usize, StorageError> {
        if self.is_shared() {
            // A cache of what the shared store holds: nothing to sweep but
            // this process's leftovers.
            self.sweep_tmp()?;
            return Ok(0);
        }
        let mut keep: HashSet<String> = HashSet::new();
        let shas: Vec<String> = on_db!(&self.db, pool => sqlx::query_scalar(self.sql("SELECT sha256 FROM strategies UNION SELECT sha256 FROM datasets"))
            .fetch_all(pool).await)?;
        keep.extend(shas);
        // Jobs not yet finished still need their module and data.
        let live: Vec<(String, String)> = on_db!(&self.db, pool => sqlx::query_as(self.sql("SELECT strategy, dataset FROM jobs WHERE state IN ('queued', 'running')"))
            .fetch_all(pool).await)?;
        for (strategy, datasets) in live {
            keep.insert(strategy);
            for id in datasets.split(',').filter(|d| !d.is_empty()) {
                if let Some((_, sha)) = self.dataset_file(id).await? {
                    keep.insert(sha);
                }
            }
        }
        let mut removed = 0;
        for dir in [Blob::Module.dir(), Blob::Dataset.dir(), COMPILED_DIR] {
            let entries = self
                .dir
                .read_dir(dir)
                .map_err(io(format!("cannot list {dir}/")))?;
            for entry in entries {
                let entry = entry.map_err(io(format!("cannot list {dir}/")))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let sha = name.split('.').next().unwrap_or_default();
                if !keep.contains(sha) {
                    let path = format!("{dir}/{name}");
                    self.dir
                        .remove_file(&path)
                        .map_err(io(format!("cannot remove {path}")))?;
                    removed += 1;
                }
            }
        }
        self.sweep_tmp()?;
        Ok(removed)
    }

    /// Removes what is in `tmp/`: uploads and files a crash left
    /// half-written. Several processes may share a shared store's cache
    /// directory: there only files untouched for an hour go.
    fn sweep_tmp(&self) -> Result<(), StorageError> {
        for entry in self.dir.read_dir("tmp").map_err(io("cannot list tmp/"))? {
            let entry = entry.map_err(io("cannot list tmp/"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let recent = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.into_std().elapsed().ok())
                    .is_none_or(|age| age < Duration::from_secs(3600))
            };
            if self.is_shared() && recent() {
                continue;
            }
            let path = format!("tmp/{name}");
            self.dir
                .remove_file(&path)
                .map_err(io(format!("cannot remove {path}")))?;
        }
        Ok(())
    }

    // ---- strategies ----

    /// Inserts a strategy for its tenant; returns false when that tenant
    /// already has this module (nothing is changed).
    pub async fn insert_strategy(&self, s: &StrategyRecord) -> Result<bool, StorageError> {
        let done = on_db!(&self.db, pool => sqlx::query(self.sql("INSERT INTO strategies (tenant, sha256, name, version, manifest, info, size, created) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, sha256) DO NOTHING"))
        .bind(&s.tenant)
        .bind(&s.sha256)
        .bind(&s.name)
        .bind(&s.version)
        .bind(&s.manifest)
        .bind(&s.info)
        .bind(s.size)
        .bind(s.created)
        .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn get_strategy(
        &self,
        tenant: &str,
        sha: &str,
    ) -> Result<Option<StrategyRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, StrategyRecord>(self.sql("SELECT * FROM strategies WHERE tenant = ? AND sha256 = ?"))
                .bind(tenant)
                .bind(sha)
                .fetch_optional(pool).await)?,
        )
    }

    pub async fn list_strategies(&self, tenant: &str) -> Result<Vec<StrategyRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, StrategyRecord>(self.sql("SELECT * FROM strategies WHERE tenant = ? ORDER BY created, sha256"))
        .bind(tenant)
        .fetch_all(pool).await)?,
        )
    }

    /// Deletes a tenant's strategy; false when it had none. The file stays
    /// until the next start-up sweep if another tenant or a job uses it.
    pub async fn delete_strategy(&self, tenant: &str, sha: &str) -> Result<bool, StorageError> {
        let done = on_db!(&self.db, pool => sqlx::query(self.sql("DELETE FROM strategies WHERE tenant = ? AND sha256 = ?"))
            .bind(tenant)
            .bind(sha)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    // ---- datasets ----

    pub async fn insert_dataset(&self, d: &DatasetRecord) -> Result<bool, StorageError> {
        on_db!(&self.db, pool => {
        let mut tx = pool.begin().await?;
                sqlx::query(self.sql("INSERT INTO dataset_files (id, sha256, name) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"))
                .bind(&d.id)
                .bind(&d.sha256)
                .bind(&d.name)
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query(self.sql("INSERT INTO datasets (tenant, id, name, bars, first_ts, last_ts, sha256, size, created) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO NOTHING"))
                .bind(&d.tenant)
                .bind(&d.id)
                .bind(&d.name)
                .bind(d.bars)
                .bind(d.first_ts)
                .bind(d.last_ts)
                .bind(&d.sha256)
                .bind(d.size)
                .bind(d.created)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
                })
    }

    pub async fn get_dataset(&self, tenant: &str, id: &str) -> Result<Option<DatasetRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, DatasetRecord>(self.sql("SELECT * FROM datasets WHERE tenant = ? AND id = ?"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool).await)?,
        )
    }

    /// The symbol and file of a dataset id, whoever uploaded it (so a
    /// re-queued job still finds a dataset deleted since): `(name, sha256)`.
    pub async fn dataset_file(&self, id: &str) -> Result<Option<(String, String)>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as(self.sql("SELECT name, sha256 FROM dataset_files WHERE id = ?"))
            .bind(id)
            .fetch_optional(pool).await)?,
        )
    }

    pub async fn list_datasets(&self, tenant: &str) -> Result<Vec<DatasetRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, DatasetRecord>(self.sql("SELECT * FROM datasets WHERE tenant = ? ORDER BY created, id"))
            .bind(tenant)
            .fetch_all(pool).await)?,
        )
    }

    pub async fn delete_dataset(&self, tenant: &str, id: &str) -> Result<bool, StorageError> {
        let done = on_db!(&self.db, pool => sqlx::query(self.sql("DELETE FROM datasets WHERE tenant = ? AND id = ?"))
            .bind(tenant)
            .bind(id)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    // ---- jobs ----

    /// The next `seq` to give a job.
    pub async fn next_seq(&self) -> Result<i64, StorageError> {
        if let Db::Postgres(pool) = &self.db {
            // Several API nodes take numbers at once: from one sequence.
            return Ok(sqlx::query_scalar("SELECT nextval('jobs_seq')")
                .fetch_one(pool)
                .await?);
        }
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar(self.sql("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM jobs"))
            .fetch_one(pool).await)?,
        )
    }

    pub async fn get_job(&self, tenant: &str, id: &str) -> Result<Option<JobRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, JobRecord>(self.sql("SELECT * FROM jobs WHERE tenant = ? AND id = ?"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool).await)?,
        )
    }

    /// A tenant's jobs, newest first.
    pub async fn list_jobs(&self, tenant: &str, f: &JobFilter) -> Result<Vec<JobRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, JobRecord>(self.sql("SELECT * FROM jobs WHERE tenant = ?1 \
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR kind = ?3) \
             AND (?4 IS NULL OR strategy = ?4) AND (?5 IS NULL OR seq < ?5) \
             ORDER BY seq DESC LIMIT ?6"))
        .bind(tenant)
        .bind(f.state.map(JobState::as_str))
        .bind(f.kind.as_deref())
        .bind(f.strategy.as_deref())
        .bind(f.before)
        .bind(f.limit)
        .fetch_all(pool).await)?,
        )
    }

    /// Jobs waiting to run, in submission order (start-up).
    pub async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, JobRecord>(self.sql("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq"))
                .fetch_all(pool).await)?,
        )
    }

    /// The stored result of a tenant's job.
    pub async fn get_result(&self, tenant: &str, id: &str) -> Result<Option<String>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar(self.sql("SELECT r.json FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.tenant = ? AND j.id = ?"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool).await)?,
        )
    }

    /// Start-up recovery: jobs left `running` by a crash go back to
    /// `queued`, or to `failed` ([`INTERRUPTED`]) once they have been started
    /// `max_attempts` times; then unreferenced files are swept.
    pub async fn recover(&self, max_attempts: u32) -> Result<Recovery, StorageError> {
        let mut out = Recovery::default();
        if self.is_shared() {
            // Other processes run the jobs found running: workers reap
            // those of dead workers (see `crate::distributed`).
            out.swept_files = self.sweep().await?;
            return Ok(out);
        }
        on_db!(&self.db, pool => {
        let mut tx = pool.begin().await?;
                let rows = sqlx::query(self.sql("SELECT id, attempts FROM jobs WHERE state = 'running' ORDER BY seq"))
                    .fetch_all(&mut *tx)
                    .await?;
                for row in rows {
                    let id: String = row.try_get("id")?;
                    let attempts: i64 = row.try_get("attempts")?;
                    if attempts >= i64::from(max_attempts) {
                        JobState::Running.transition(JobState::Failed)?;
                        sqlx::query(self.sql("UPDATE jobs SET state = 'failed', error_cause = 'interrupted', error_message = ?, finished = ? \
                             WHERE id = ?"))
                        .bind(format!("{INTERRUPTED} ({attempts} attempts)"))
                        .bind(now_ms())
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                        out.failed.push(id);
                    } else {
                        JobState::Running.transition(JobState::Queued)?;
                        sqlx::query(self.sql("UPDATE jobs SET state = 'queued', progress = 0, started = NULL WHERE id = ?"))
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                        out.requeued.push(id);
                    }
                }
                tx.commit().await?;
        });
        out.swept_files = self.sweep().await?;
        Ok(out)
    }

    // ---- policies ----

    /// Records a policy text by its hash (idempotent).
    pub async fn put_policy_version(&self, hash: &str, toml: &str) -> Result<(), StorageError> {
        on_db!(&self.db, pool => sqlx::query(self.sql("INSERT INTO policy_versions (hash, toml) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING"))
            .bind(hash)
            .bind(toml)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// A policy text by hash.
    pub async fn policy_version(&self, hash: &str) -> Result<Option<String>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar(self.sql("SELECT toml FROM policy_versions WHERE hash = ?"))
            .bind(hash)
            .fetch_optional(pool).await)?,
        )
    }

    /// Replaces policy `name` with `toml` (hash `hash`) and audits it, in
    /// one transaction.
    pub async fn replace_policy(
        &self,
        name: &str,
        toml: &str,
        hash: &str,
        tenant: &str,
    ) -> Result<PolicyAudit, StorageError> {
        let at = now_ms();
        on_db!(&self.db, pool => {
        let mut tx = pool.begin().await?;
                let previous: Option<String> = sqlx::query(self.sql("SELECT hash FROM policies WHERE name = ?"))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("hash"))
                    .transpose()?;
                sqlx::query(self.sql("INSERT INTO policy_versions (hash, toml) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING"))
                    .bind(hash)
                    .bind(toml)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(self.sql("INSERT INTO policies (name, hash, updated, updated_by) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, updated = excluded.updated, updated_by = excluded.updated_by"))
                .bind(name)
                .bind(hash)
                .bind(at)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
                let audit = PolicyAudit {
                    name: name.to_owned(),
                    hash: hash.to_owned(),
                    previous_hash: previous,
                    tenant: tenant.to_owned(),
                    at,
                };
                insert_audit!(self, &mut *tx, &audit);
                tx.commit().await?;
                Ok(audit)
                })
    }

    /// Removes the replacement of policy `name` and audits it (the entry's
    /// hash is `now_hash`, the policy in force after: the shipped one, or
    /// empty when there is none), in one transaction. `None` when the policy
    /// was not replaced.
    pub async fn revert_policy(
        &self,
        name: &str,
        now_hash: &str,
        tenant: &str,
    ) -> Result<Option<PolicyAudit>, StorageError> {
        let at = now_ms();
        on_db!(&self.db, pool => {
        let mut tx = pool.begin().await?;
                let previous: Option<String> = sqlx::query(self.sql("DELETE FROM policies WHERE name = ? RETURNING hash"))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("hash"))
                    .transpose()?;
                let Some(previous) = previous else {
                    return Ok(None);
                };
                let audit = PolicyAudit {
                    name: name.to_owned(),
                    hash: now_hash.to_owned(),
                    previous_hash: Some(previous),
                    tenant: tenant.to_owned(),
                    at,
                };
                insert_audit!(self, &mut *tx, &audit);
                tx.commit().await?;
                Ok(Some(audit))
                })
    }

    /// A tenant's idempotency key, if it was stored with a job.
    pub async fn idempotency_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotencyKey>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, IdempotencyKey>(self.sql("SELECT tenant, key, job_id, request_sha256, created FROM idempotency_keys WHERE tenant = ? AND key = ?"))
        .bind(tenant)
        .bind(key)
        .fetch_optional(pool).await)?,
        )
    }

    /// Every replaced policy: `(name, toml)`.
    pub async fn replaced_policies(&self) -> Result<Vec<(String, String)>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as(self.sql("SELECT p.name, v.toml FROM policies p JOIN policy_versions v ON v.hash = p.hash ORDER BY p.name"))
        .fetch_all(pool).await)?,
        )
    }

    /// The audit trail of a policy, oldest first.
    pub async fn policy_audit(&self, name: &str) -> Result<Vec<PolicyAudit>, StorageError> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, PolicyAudit>(self.sql("SELECT * FROM policy_audit WHERE name = ? ORDER BY id"))
                .bind(name)
                .fetch_all(pool).await)?,
        )
    }

    /// Starts the batching writer; see [`Writer`]. `on_commit` is told of
    /// each batch: its writes, how long it took, whether it was committed.
    pub fn writer(&self, on_commit: impl Fn(usize, Duration, bool) + Send + Sync + 'static) -> Writer {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let db = self.db.clone();
        let writable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(write_loop(db, rx, Box::new(on_commit), writable.clone()));
        Writer { tx, writable }
    }
}

/// The schema's migrations (`runtime/service/migrations/`), embedded at
/// build time and applied in order by sqlx, each in a transaction; sqlx
/// records them in `_sqlx_migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The same schema for a shared Postgres store
/// (`runtime/service/migrations-postgres/`), with Postgres's types, the
/// `blobs` table of module and dataset bytes, and the sequence of `seq`.
static MIGRATOR_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Stores content-addressed bytes in a shared store (idempotent).
async fn put_shared_blob(pool: &PgPool, sha: &str, bytes: &[u8]) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING")
        .bind(sha)
        .bind(bytes)
        .execute(pool)
        .await?;
    Ok(())
}

/// Content-addressed bytes from a shared store.
async fn get_shared_blob(pool: &PgPool, sha: &str) -> Result<Vec<u8>, StorageError> {
    sqlx::query("SELECT bytes FROM blobs WHERE sha256 = $1")
        .bind(sha)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get::<Vec<u8>, _>("bytes"))
        .transpose()?
        .ok_or_else(|| StorageError::Corrupt {
            what: format!("blob {sha}"),
            detail: "no such bytes in the shared store".into(),
        })
}

/// Brings the schema up to this build's last migration. A database that has
/// applied a migration this build does not know was written by a newer
/// build: it is refused, unchanged.
pub async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(found) => StorageError::SchemaTooNew {
            found,
            known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
        },
        other => StorageError::Migrate(other.to_string()),
    })
}

/// One write of the job lifecycle.
#[derive(Clone, Debug)]
pub enum Write {
    /// Inserts or updates a job's row with its whole record (a submission,
    /// a start, an end, a re-queue), and stores its result document with it.
    /// A row in a terminal state is never changed again.
    Job {
        record: Box<JobRecord>,
        result: Option<Arc<str>>,
        /// The submission's idempotency key, stored with the job's row (in
        /// the same transaction) if it is not there yet.
        key: Option<Arc<IdempotencyKey>>,
    },
    /// A running job's progress.
    Progress { id: String, progress: f64 },
    /// A row written and deleted in the batch's transaction: commits pages
    /// like any write and leaves nothing; see [`Writer::probe`].
    Probe,
}

impl Write {
    pub fn job(record: JobRecord) -> Write {
        Write::Job {
            record: Box::new(record),
            result: None,
            key: None,
        }
    }
}

/// What to do once a write's batch is committed (or failed).
enum Ack {
    /// Wake the writer of [`Writer::commit`].
    Wake(oneshot::Sender<Result<(), Arc<str>>>),
    /// Run [`Writer::commit_then`]'s continuation on the writer task.
    Then(Box<dyn FnOnce(Result<(), Arc<str>>) + Send + Sync>),
}

enum Msg {
    Write(Write, Option<Ack>),
    /// Apply what came before, then stop.
    Stop(oneshot::Sender<()>),
}

/// The handle of the batching writer task. Writes are applied in the order
/// sent; each batch (up to [`MAX_BATCH`] writes that were waiting) is one
/// transaction.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    /// Whether the last batch was committed.
    writable: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Queues a write and waits until it is committed.
    pub async fn commit(&self, write: Write) -> Result<(), StorageError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Write(write, Some(Ack::Wake(ack))))
            .await
            .map_err(|_| StorageError::WriterGone)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StorageError::Write(message.to_string())),
            Err(_) => Err(StorageError::WriterGone),
        }
    }

    /// Whether the last write batch was committed: false from a failed
    /// batch (a full disk, an I/O error) until one succeeds again.
    pub fn is_writable(&self) -> bool {
        self.writable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Writes a row and takes it back (growing the database file), to learn
    /// whether the store can write again; updates [`Writer::is_writable`].
    pub async fn probe(&self) -> Result<(), StorageError> {
        self.commit(Write::Probe).await
    }

    /// Queues a write; `then` runs on the writer task once it is committed
    /// (with the error if its batch failed), so that nobody has to wait
    /// for the commit to act on it. `then` must be quick and must not block.
    pub async fn commit_then(
        &self,
        write: Write,
        then: impl FnOnce(Result<(), Arc<str>>) + Send + Sync + 'static,
    ) -> Result<(), StorageError> {
        self.tx
            .send(Msg::Write(write, Some(Ack::Then(Box::new(then)))))
            .await
            .map_err(|_| StorageError::WriterGone)
    }

    /// Queues a write without waiting for it.
    pub async fn send(&self, write: Write) -> Result<(), StorageError> {
        self.tx
            .send(Msg::Write(write, None))
            .await
            .map_err(|_| StorageError::WriterGone)
    }

    /// Applies everything queued so far and stops the task. Later writes fail
    /// with [`StorageError::WriterGone`].
    pub async fn flush_and_stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

async fn write_loop(
    db: Db,
    mut rx: mpsc::Receiver<Msg>,
    on_commit: Box<dyn Fn(usize, Duration, bool) + Send + Sync>,
    writable: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<(Write, Option<Ack>)> = Vec::with_capacity(MAX_BATCH);
    let mut stop = None;
    while stop.is_none() && rx.recv_many(&mut msgs, MAX_BATCH).await > 0 {
        for msg in msgs.drain(..) {
            match msg {
                Msg::Write(w, ack) if stop.is_none() => batch.push((w, ack)),
                // Writes after a stop are refused: their acks are dropped.
                Msg::Write(..) => {}
                Msg::Stop(done) => stop = Some(done),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = match &db {
            Db::Sqlite(pool) => match pool.acquire().await {
                Ok(mut conn) => apply(&mut conn, &batch).await,
                Err(e) => Err(e),
            },
            Db::Postgres(pool) => apply_postgres(pool, &batch).await,
        };
        on_commit(batch.len(), started.elapsed(), result.is_ok());
        writable.store(result.is_ok(), std::sync::atomic::Ordering::Release);
        let result = result.map_err(|e| {
            tracing::error!(error = %e, writes = batch.len(), "a write batch failed");
            Arc::<str>::from(e.to_string())
        });
        for (_, ack) in batch.drain(..) {
            match ack {
                Some(Ack::Wake(tx)) => {
                    let _ = tx.send(result.clone());
                }
                Some(Ack::Then(then)) => then(result.clone()),
                None => {}
            }
        }
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Rows per multi-row statement (SQLite allows 32766 bound values).
const ROWS_PER_STATEMENT: usize = 500;

const JOB_COLUMNS: &str = "id, seq, tenant, kind, strategy, dataset, spec, priority, policy, policy_hash, \
                           state, progress, error_cause, error_message, created, started, finished, attempts";

/// `INSERT … VALUES (?, …), (?, …) …` for `rows` rows of `columns` values.
fn values_sql(head: &str, rows: usize, columns: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    format!("{head} VALUES {}{tail}", vec![row; rows].join(", "))
}

/// A batch of writes as the rows they make: the last record of each job
/// (writes of one job come in order), results, progress, keys.
struct Rows<'a> {
    jobs: Vec<&'a JobRecord>,
    results: Vec<(&'a str, &'a str)>,
    progress: Vec<(&'a str, f64)>,
    keys: Vec<&'a IdempotencyKey>,
    probe: bool,
}

/// The guard of the job upsert: a row in a terminal state is never
/// changed again, nor a row by an older attempt than its own.
const JOB_UPSERT: &str =
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state, progress = excluded.progress, \
     error_cause = excluded.error_cause, error_message = excluded.error_message, \
     started = excluded.started, finished = excluded.finished, attempts = excluded.attempts \
     WHERE jobs.state IN ('queued', 'running') AND jobs.attempts <= excluded.attempts";

fn rows(batch: &[(Write, Option<Ack>)]) -> Rows<'_> {
    let mut order: Vec<&str> = Vec::new();
    let mut latest: std::collections::HashMap<&str, &JobRecord> = std::collections::HashMap::new();
    let mut results: Vec<(&str, &str)> = Vec::new();
    let mut progress: Vec<(&str, f64)> = Vec::new();
    let mut probe = false;
    let mut keys: Vec<&IdempotencyKey> = Vec::new();
    for (write, _) in batch {
        match write {
            Write::Job { record, result, key } => {
                if latest.insert(&record.id, record).is_none() {
                    order.push(&record.id);
                }
                if let Some(json) = result {
                    results.push((&record.id, json));
                }
                if let Some(k) = key {
                    keys.push(k);
                }
            }
            Write::Progress { id, progress: p } => progress.push((id, *p)),
            Write::Probe => probe = true,
        }
    }
    let jobs: Vec<&JobRecord> = order.iter().map(|id| latest[id]).collect();
    Rows {
        jobs,
        results,
        progress,
        keys,
        probe,
    }
}

/// Binds a job record's columns, in [`JOB_COLUMNS`]' order.
macro_rules! bind_job {
    ($q:expr, $j:expr) => {{
        let j: &JobRecord = $j;
        $q.bind(&j.id)
            .bind(j.seq)
            .bind(&j.tenant)
            .bind(&j.kind)
            .bind(&j.strategy)
            .bind(&j.dataset)
            .bind(&j.spec)
            .bind(&j.priority)
            .bind(&j.policy)
            .bind(&j.policy_hash)
            .bind(j.state.as_str())
            .bind(j.progress)
            .bind(j.error_cause.as_deref())
            .bind(j.error_message.as_deref())
            .bind(j.created)
            .bind(j.started)
            .bind(j.finished)
            .bind(j.attempts)
    }};
}

/// Applies a batch in one transaction of a few multi-row statements, sent
/// to SQLite as one query: the last record of each job wins, and the batch
/// is all there or not at all.
async fn apply(conn: &mut sqlx::SqliteConnection, batch: &[(Write, Option<Ack>)]) -> Result<(), sqlx::Error> {
    let Rows {
        jobs,
        results,
        progress,
        keys,
        probe,
    } = rows(batch);

    // One transaction, sent as one multi-statement query: a single round
    // trip to SQLite's thread and a single commit per batch. Positional
    // parameters are bound across the statements in order.
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    // Results first: a result whose job row still says running (a crash in
    // between) is never shown, and is replaced when the job runs again.
    for chunk in results.chunks(ROWS_PER_STATEMENT) {
        sql += &values_sql(
            "INSERT OR REPLACE INTO results (job_id, json)",
            chunk.len(),
            2,
            ";\n",
        );
    }
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        sql += &values_sql(
            &format!("INSERT INTO jobs ({JOB_COLUMNS})"),
            chunk.len(),
            18,
            &format!("{JOB_UPSERT};\n"),
        );
    }
    for _ in &progress {
        sql += "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running';\n";
    }
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        sql += &values_sql(
            "INSERT INTO idempotency_keys (tenant, key, job_id, request_sha256, created)",
            chunk.len(),
            5,
            " ON CONFLICT (tenant, key) DO NOTHING;\n",
        );
    }
    if probe {
        // No job id starts with a space. A few pages' worth, so the
        // database or its log has to grow.
        sql +=
            "INSERT OR REPLACE INTO results (job_id, json) VALUES (' probe', printf('%.*c', 16384, 'x'));\n\
                DELETE FROM results WHERE job_id = ' probe';\n";
    }
    sql += "COMMIT;";
    // Every value from a record is bound, never spliced into the SQL.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (id, json) in &results {
        q = q.bind(*id).bind(*json);
    }
    for j in &jobs {
        q = bind_job!(q, j);
    }
    for (id, p) in &progress {
        q = q.bind(*p).bind(*id);
    }
    for k in &keys {
        q = q
            .bind(&k.tenant)
            .bind(&k.key)
            .bind(&k.job_id)
            .bind(&k.request_sha256)
            .bind(k.created);
    }
    if let Err(e) = q.execute(&mut *conn).await {
        // Whatever ran of the batch is undone; the connection is left
        // without an open transaction for the next batch.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e);
    }
    Ok(())
}

/// Applies a batch to Postgres in one transaction of a few multi-row
/// statements (Postgres takes one statement per prepared query): the same
/// rows, guards and order as [`apply`].
async fn apply_postgres(pool: &PgPool, batch: &[(Write, Option<Ack>)]) -> Result<(), sqlx::Error> {
    let Rows {
        jobs,
        results,
        progress,
        keys,
        probe,
    } = rows(batch);
    let mut tx = pool.begin().await?;
    // Jobs first: the rows written (not refused by the guard) say which
    // results may be stored, so a stale attempt's result never lands, and a
    // result once stored is never replaced: at most one per job.
    let mut written: HashSet<String> = HashSet::new();
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            &format!("INSERT INTO jobs ({JOB_COLUMNS})"),
            chunk.len(),
            18,
            &format!("{JOB_UPSERT} RETURNING id"),
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(postgres_placeholders(&sql)));
        for j in chunk {
            q = bind_job!(q, j);
        }
        written.extend(q.fetch_all(&mut *tx).await?);
    }
    let results: Vec<(&str, &str)> = results
        .into_iter()
        .filter(|(id, _)| {
            let ok = written.contains(*id);
            if !ok {
                tracing::warn!(job = %id, "the end of a stale attempt was not committed");
            }
            ok
        })
        .collect();
    for chunk in results.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO results (job_id, json)",
            chunk.len(),
            2,
            " ON CONFLICT (job_id) DO NOTHING",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(postgres_placeholders(&sql)));
        for (id, json) in chunk {
            q = q.bind(*id).bind(*json);
        }
        q.execute(&mut *tx).await?;
    }
    for (id, p) in &progress {
        sqlx::query("UPDATE jobs SET progress = $1 WHERE id = $2 AND state = 'running'")
            .bind(*p)
            .bind(*id)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO idempotency_keys (tenant, key, job_id, request_sha256, created)",
            chunk.len(),
            5,
            " ON CONFLICT (tenant, key) DO NOTHING",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(postgres_placeholders(&sql)));
        for k in chunk {
            q = q
                .bind(&k.tenant)
                .bind(&k.key)
                .bind(&k.job_id)
                .bind(&k.request_sha256)
                .bind(k.created);
        }
        q.execute(&mut *tx).await?;
    }
    if probe {
        sqlx::query(
            "INSERT INTO results (job_id, json) VALUES (' probe', repeat('x', 16384)) \
             ON CONFLICT (job_id) DO UPDATE SET json = excluded.json",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM results WHERE job_id = ' probe'")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// For tests against a real Postgres (started by the test kit, skipped
/// where Postgres is not installed): runs `test` on a two-thread runtime with
/// the pool of a store opened on a fresh server (schema migrated) and a
/// temporary directory that lives as long as the test.
#[cfg(test)]
pub(crate) fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(PgPool, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    palisade_testkit::servers::Postgres::require();
    let pg = palisade_testkit::servers::Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = Storage::open_postgres(&pg.url(), &tmp.path().join("cache"), Duration::from_secs(10))
            .await
            .unwrap();
        test(store.postgres().unwrap().clone(), tmp.path().to_path_buf()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_spool_hashes_what_it_writes_and_leaves_nothing_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).await.unwrap();
        let tmp_files = || std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let data = b"timestamp,open,high,low,close,volume\n".repeat(1000);
        let sha = sha256_hex(&data);

        let mut spool = store.spool().unwrap();
        for chunk in data.chunks(777) {
            spool.write(chunk).unwrap();
        }
        assert_eq!(spool.size(), data.len() as u64);
        assert_eq!(spool.sha256(), sha, "hashed on the way, chunk by chunk");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut spool.reader().unwrap(), &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(tmp_files(), 1);
        drop(spool);
        assert_eq!(tmp_files(), 0, "a spool dropped unkept is removed");

        let mut spool = store.spool().unwrap();
        spool.write(&data).unwrap();
        spool.keep(Blob::Dataset, &sha).unwrap();
        assert_eq!(tmp_files(), 0, "kept: renamed into the store");
        assert_eq!(store.get_blob(Blob::Dataset, &sha).unwrap(), data);

        // The same content again: the stored file stays, the spool goes.
        let mut spool = store.spool().unwrap();
        spool.write(&data).unwrap();
        spool.keep(Blob::Dataset, &sha).unwrap();
        assert_eq!(tmp_files(), 0);
        assert_eq!(store.get_blob(Blob::Dataset, &sha).unwrap(), data);

        let empty = store.spool().unwrap();
        assert_eq!(empty.size(), 0);
        assert_eq!(empty.sha256(), sha256_hex(b""));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn schema_from_before_tracked_migrations_opens_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A data directory of an earlier build: the tables, user_version 1,
        // no record of migrations.
        {
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join(DATABASE_FILE))
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(options).await.unwrap();
            let sql = include_str!("../migrations/0001_schema.sql");
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            sqlx::query("PRAGMA user_version = 1")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO policy_versions (hash, toml) VALUES ('h', 'x = 1')")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = Storage::open(dir.path()).await.expect("an earlier schema opens");
        let kept: (String,) = sqlx::query_as("SELECT toml FROM policy_versions WHERE hash = 'h'")
            .fetch_one(store.sqlite())
            .await
            .unwrap();
        assert_eq!(kept.0, "x = 1", "opening keeps what was stored");
        // and adds what later migrations make.
        assert_eq!(store.idempotency_key("t", "k").await.unwrap(), None);
        // A newer build recorded a migration this build does not know.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', 1, x'00', 0)",
        )
        .execute(store.sqlite())
        .await
        .unwrap();
        store.sqlite().close().await;
        match Storage::open(dir.path()).await {
            Err(e @ StorageError::SchemaTooNew { found: 999, known: 2 }) => {
                assert_eq!(
                    e.to_string(),
                    "database schema version 999 is newer than this build knows (2)"
                );
            }
            other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn state_machine_allows_only_listed_moves() {
        use JobState::*;
        let allowed = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Failed),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
            (Running, Queued),
        ];
        for &from in JobState::ALL {
            for &to in JobState::ALL {
                let ok = allowed.contains(&(from, to));
                assert_eq!(from.transition(to).is_ok(), ok, "{from} -> {to}");
                if !ok {
                    assert_eq!(
                        from.transition(to).unwrap_err().to_string(),
                        format!("a job cannot go from {from} to {to}")
                    );
                }
            }
            assert_eq!(from.as_str().parse::<JobState>(), Ok(from));
            assert_eq!(from.is_terminal(), !matches!(from, Queued | Running));
        }
    }

    fn job(id: &str, seq: i64, state: JobState, attempts: i64) -> JobRecord {
        JobRecord {
            id: id.into(),
            seq,
            tenant: "t".into(),
            kind: "backtest".into(),
            strategy: sha256_hex(b"module"),
            dataset: "d1".into(),
            spec: "{}".into(),
            priority: "normal".into(),
            policy: "default".into(),
            policy_hash: "h".into(),
            state,
            progress: 0.0,
            error_cause: None,
            error_message: None,
            created: 1,
            started: None,
            finished: None,
            attempts,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batched_writes_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).await.unwrap();
        let writer = store.writer(|_, _, _| {});
        for (i, (state, attempts)) in [
            (JobState::Queued, 0),
            (JobState::Running, 1),
            (JobState::Running, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("j{i}");
            let record = job(&id, i as i64 + 1, JobState::Queued, 0);
            writer.send(Write::job(record.clone())).await.unwrap();
            if state == JobState::Running {
                let started = JobRecord {
                    state,
                    attempts,
                    started: Some(5),
                    ..record
                };
                writer.send(Write::job(started)).await.unwrap();
            }
        }
        writer
            .commit(Write::Progress {
                id: "j1".into(),
                progress: 0.5,
            })
            .await
            .unwrap();
        assert_eq!(store.next_seq().await.unwrap(), 4);
        let j1 = store.get_job("t", "j1").await.unwrap().unwrap();
        assert_eq!((j1.state, j1.attempts, j1.progress), (JobState::Running, 1, 0.5));
        assert!(
            store.get_job("other", "j1").await.unwrap().is_none(),
            "another tenant's job"
        );
        // A finished job's row never changes again.
        let done = JobRecord {
            state: JobState::Succeeded,
            ..job("j0", 1, JobState::Queued, 1)
        };
        writer
            .commit(Write::Job {
                record: Box::new(done),
                result: Some(Arc::from("{\"ok\":1}")),
                key: None,
            })
            .await
            .unwrap();
        writer
            .commit(Write::job(job("j0", 1, JobState::Running, 2)))
            .await
            .unwrap();
        let j0 = store.get_job("t", "j0").await.unwrap().unwrap();
        assert_eq!((j0.state, j0.attempts), (JobState::Succeeded, 1));
        assert_eq!(
            store.get_result("t", "j0").await.unwrap().as_deref(),
            Some("{\"ok\":1}")
        );
        writer.flush_and_stop().await;
        drop(store);

        // As after a crash: j1 (1 start) is re-queued, j2 (3 starts) failed.
        let store = Storage::open(dir.path()).await.unwrap();
        let r = store.recover(3).await.unwrap();
        assert_eq!(r.requeued, vec!["j1".to_string()]);
        assert_eq!(r.failed, vec!["j2".to_string()]);
        let j2 = store.get_job("t", "j2").await.unwrap().unwrap();
        assert_eq!(j2.state, JobState::Failed);
        assert_eq!(
            j2.error_message.as_deref(),
            Some("interrupted by a restart (3 attempts)")
        );
        let queued: Vec<String> = store
            .queued_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(queued, ["j1"]);
        let filter = JobFilter {
            state: Some(JobState::Failed),
            limit: 10,
            ..JobFilter::default()
        };
        assert_eq!(store.list_jobs("t", &filter).await.unwrap().len(), 1);
        let all = JobFilter {
            limit: 10,
            ..JobFilter::default()
        };
        let ids: Vec<String> = store
            .list_jobs("t", &all)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids, ["j2", "j1", "j0"], "newest first");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).await.unwrap();
        // Whether each batch was committed, as the writer reports it.
        let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = committed.clone();
        let writer = store.writer(move |_, _, ok| seen.lock().unwrap().push(ok));
        writer
            .commit(Write::job(job("j0", 1, JobState::Queued, 0)))
            .await
            .unwrap();
        // One batch: a valid job with its result, then a job whose `seq`
        // collides (UNIQUE): the whole batch is refused.
        let ok = Write::Job {
            record: Box::new(job("j1", 2, JobState::Queued, 0)),
            result: Some(Arc::from("{}")),
            key: None,
        };
        let clash = Write::job(job("j2", 1, JobState::Queued, 0));
        let (a, b) = tokio::join!(writer.commit(ok), writer.commit(clash));
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
        assert!(store.get_job("t", "j1").await.unwrap().is_none());
        assert!(store.get_result("t", "j1").await.unwrap().is_none());
        // The connection is usable: the next batch commits.
        writer
            .commit(Write::job(job("j1", 2, JobState::Queued, 0)))
            .await
            .unwrap();
        assert!(store.get_job("t", "j1").await.unwrap().is_some());
        assert_eq!(store.next_seq().await.unwrap(), 3);
        assert_eq!(*committed.lock().unwrap(), [true, false, true]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blobs_are_content_addressed_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).await.unwrap();
        let kept = sha256_hex(b"kept");
        let orphan = sha256_hex(b"orphan");
        let put = |bytes: &[u8]| {
            let mut spool = store.spool().unwrap();
            spool.write(bytes).unwrap();
            let sha = spool.sha256();
            spool.keep(Blob::Module, &sha).unwrap();
        };
        put(b"kept");
        put(b"kept");
        put(b"orphan");
        assert_eq!(store.get_blob(Blob::Module, &kept).unwrap(), b"kept");
        assert!(store.get_blob(Blob::Module, "../palisade.db").is_err());
        let record = StrategyRecord {
            tenant: "t".into(),
            sha256: kept.clone(),
            name: "n".into(),
            version: "1".into(),
            manifest: "{}".into(),
            info: "{}".into(),
            size: 4,
            created: 1,
        };
        assert!(store.insert_strategy(&record).await.unwrap());
        assert!(!store.insert_strategy(&record).await.unwrap(), "duplicate");
        // A corrupted file is detected, not served.
        std::fs::write(dir.path().join(format!("modules/{orphan}.wasm")), b"tampered").unwrap();
        assert!(matches!(
            store.get_blob(Blob::Module, &orphan),
            Err(StorageError::Corrupt { .. })
        ));
        let r = store.recover(3).await.unwrap();
        assert_eq!(r.swept_files, 1);
        assert!(store.get_blob(Blob::Module, &kept).is_ok());
        assert!(store.get_blob(Blob::Module, &orphan).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn policy_replacements_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(dir.path()).await.unwrap();
        let a = store
            .replace_policy("fast", "fuel_per_run = 1000", "h1", "ops")
            .await
            .unwrap();
        assert_eq!(a.previous_hash, None);
        let b = store
            .replace_policy("fast", "fuel_per_run = 2000", "h2", "ops")
            .await
            .unwrap();
        assert_eq!(b.previous_hash.as_deref(), Some("h1"));
        assert_eq!(store.policy_audit("fast").await.unwrap().len(), 2);
        assert_eq!(
            store.replaced_policies().await.unwrap(),
            vec![("fast".to_string(), "fuel_per_run = 2000".to_string())]
        );
        assert_eq!(
            store.policy_version("h1").await.unwrap().as_deref(),
            Some("fuel_per_run = 1000")
        );
    }
}
