-- Rate limits shared by every replica (PostgreSQL only; SQLite counts in its one process).

-- name: count_hit :one
-- One more hit, and how many there are in the client's window now: a window begins with the
-- first hit after the last one closed. One statement, however many replicas count at once,
-- on the database's clock, so that replicas whose clocks differ still keep one window.
INSERT INTO rate_limits (limit_name, client, expires_at, hits)
VALUES (:limit_name, :client, extract(epoch FROM clock_timestamp()) + :period, 1)
ON CONFLICT (limit_name, client) DO UPDATE SET
    hits = CASE WHEN rate_limits.expires_at <= excluded.expires_at - :period THEN 1 ELSE rate_limits.hits + 1 END,
    expires_at = CASE WHEN rate_limits.expires_at <= excluded.expires_at - :period THEN excluded.expires_at
                      ELSE rate_limits.expires_at END
RETURNING hits, expires_at - extract(epoch FROM clock_timestamp()) AS seconds_left

-- name: delete_expired_rate_limits :one
-- A bounded batch, so that no run holds many locks or takes long; the caller repeats it.
WITH expired AS (
    DELETE FROM rate_limits
    WHERE ctid IN (SELECT ctid FROM rate_limits WHERE expires_at <= extract(epoch FROM clock_timestamp()) LIMIT 1000)
    RETURNING 1
)
SELECT count(*) AS deleted FROM expired
