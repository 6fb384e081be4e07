-- Takeovers that failed to start a deployment, in a row, and the last
-- error: after a few (fleet.rs, MAX_FAILED_STARTS) it is stopped for good
-- rather than claimed again at every heartbeat.
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS failed_starts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS error TEXT;
