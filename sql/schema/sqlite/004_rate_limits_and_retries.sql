-- A SQLite file belongs to one process, so its rate limits are counted in that process
-- (todo_service.py); only the safe retries of a create need the database.
-- The client's Idempotency-Key is kept on the task it made, with a hash of the request, so
-- that the task and its key are written in one statement.
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 255);
ALTER TABLE tasks ADD COLUMN request_hash TEXT;

CREATE UNIQUE INDEX tasks_user_idempotency_key_idx ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
