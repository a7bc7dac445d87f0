-- Rate-limit counts live here, so that every replica counts against one limit: a row per
-- limit and client (or email), its window starting at its first hit; expired rows are
-- deleted in small batches.
CREATE TABLE rate_limits (
    limit_name text NOT NULL,
    client     text NOT NULL,
    expires_at double precision NOT NULL,
    hits       integer NOT NULL,
    PRIMARY KEY (limit_name, client)
);

CREATE INDEX rate_limits_expires_at_idx ON rate_limits (expires_at);

-- Safe retries of a create: the client's Idempotency-Key is kept on the task it made, with a
-- hash of the request, so that the task and its key are written in one statement.
ALTER TABLE tasks
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN request_hash text;

CREATE UNIQUE INDEX tasks_user_idempotency_key_idx ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
