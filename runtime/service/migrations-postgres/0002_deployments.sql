-- Live deployments in the distributed mode (docs/distributed.md, "Live
-- deployments"): each deployment's record and lease, the bytes of its files
-- (bar log, journals, audit log) as the worker running it shipped them, and
-- the emergency stops in force.

-- One row per deployment. `owner` holds its lease until `lease_until`
-- (milliseconds, Postgres's clock); `epoch` counts the leases taken, and
-- fences a worker that lost its lease: its writes name an older epoch.
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, spec TEXT NOT NULL,
    strategy TEXT NOT NULL, policy TEXT NOT NULL,
    stopped BOOLEAN NOT NULL DEFAULT FALSE,
    owner TEXT, owner_url TEXT, epoch BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL);

CREATE INDEX IF NOT EXISTS deployments_by_lease ON deployments (stopped, lease_until);

-- A deployment's files as a log of writes: `bytes` written at `at` of
-- `file`, or (`bytes` NULL) the file cut to `at` bytes. Replayed in `seq`
-- order, they give the files as shipped.
CREATE TABLE IF NOT EXISTS deployment_chunks (
    seq BIGSERIAL PRIMARY KEY, deployment TEXT NOT NULL, file TEXT NOT NULL,
    at BIGINT NOT NULL, bytes BYTEA);

CREATE INDEX IF NOT EXISTS deployment_chunks_by_deployment ON deployment_chunks (deployment, seq);

-- The emergency stops in force, one row per scope (`key`), the stop as
-- JSON (scope, who imposed it, the reason).
CREATE TABLE IF NOT EXISTS emergency_stops (key TEXT PRIMARY KEY, stop TEXT NOT NULL);
