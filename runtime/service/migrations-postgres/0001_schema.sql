-- The schema of a shared store (Postgres, distributed mode): the embedded
-- store's tables (migrations/) with Postgres's types, plus the bytes of
-- modules and datasets (`blobs`, by SHA-256), the sequence that numbers
-- jobs across API nodes, and the worker holding a running job.

CREATE TABLE IF NOT EXISTS strategies (
    tenant TEXT NOT NULL, sha256 TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    manifest TEXT NOT NULL, info TEXT NOT NULL, size BIGINT NOT NULL, created BIGINT NOT NULL,
    PRIMARY KEY (tenant, sha256));

CREATE TABLE IF NOT EXISTS dataset_files (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS datasets (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, bars BIGINT NOT NULL,
    first_ts BIGINT NOT NULL, last_ts BIGINT NOT NULL, sha256 TEXT NOT NULL,
    size BIGINT NOT NULL, created BIGINT NOT NULL,
    PRIMARY KEY (tenant, id));

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq BIGINT NOT NULL UNIQUE, tenant TEXT NOT NULL, kind TEXT NOT NULL,
    strategy TEXT NOT NULL, dataset TEXT NOT NULL, spec TEXT NOT NULL, priority TEXT NOT NULL,
    policy TEXT NOT NULL, policy_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled','timed_out')),
    progress DOUBLE PRECISION NOT NULL DEFAULT 0, error_cause TEXT, error_message TEXT,
    created BIGINT NOT NULL, started BIGINT, finished BIGINT, attempts BIGINT NOT NULL DEFAULT 0,
    worker TEXT);

CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, seq);

CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);

CREATE SEQUENCE IF NOT EXISTS jobs_seq;

CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, json TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policy_versions (hash TEXT PRIMARY KEY, toml TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY, hash TEXT NOT NULL, updated BIGINT NOT NULL, updated_by TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS policy_audit (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL,
    previous_hash TEXT, tenant TEXT NOT NULL, at BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL, created BIGINT NOT NULL,
    PRIMARY KEY (tenant, key));

CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, bytes BYTEA NOT NULL);
