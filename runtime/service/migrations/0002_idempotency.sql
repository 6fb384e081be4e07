-- Idempotency keys of job submissions: a key a tenant sent once names the
-- job it created, and the SHA-256 of the request body it came with.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (tenant, key));
