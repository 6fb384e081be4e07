-- The schema of the embedded store (SQLite), version 1. Every statement
-- is idempotent: data directories made before migrations were tracked by
-- sqlx (PRAGMA user_version = 1) hold these tables already.

CREATE TABLE IF NOT EXISTS strategies (
    tenant TEXT NOT NULL, sha256 TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    manifest TEXT NOT NULL, info TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (tenant, sha256));

CREATE TABLE IF NOT EXISTS dataset_files (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS datasets (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, bars INTEGER NOT NULL,
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (tenant, id));

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, tenant TEXT NOT NULL, kind TEXT NOT NULL,
    strategy TEXT NOT NULL, dataset TEXT NOT NULL, spec TEXT NOT NULL, priority TEXT NOT NULL,
    policy TEXT NOT NULL, policy_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled','timed_out')),
    progress REAL NOT NULL DEFAULT 0, error_cause TEXT, error_message TEXT,
    created INTEGER NOT NULL, started INTEGER, finished INTEGER, attempts INTEGER NOT NULL DEFAULT 0);

CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, seq);

CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);

CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, json TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policy_versions (hash TEXT PRIMARY KEY, toml TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY, hash TEXT NOT NULL, updated INTEGER NOT NULL, updated_by TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policy_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, hash TEXT NOT NULL,
    previous_hash TEXT, tenant TEXT NOT NULL, at INTEGER NOT NULL);
