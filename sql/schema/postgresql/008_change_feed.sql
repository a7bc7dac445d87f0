-- Version 3: every write of a task is a change with a position in its user's feed. A task row
-- carries the position of its latest change; a deleted task leaves a tombstone with the
-- position of its deletion. Positions come from the user's row of task_counts, taken under
-- that row's lock until the write commits, so a user's changes commit in the order of their
-- positions: a reader never sees position 11 before 10, whichever replica wrote them.
-- Writes to tasks wait while the existing tasks get their first positions.
LOCK TABLE tasks IN SHARE MODE;

ALTER TABLE task_counts
    ADD COLUMN position bigint NOT NULL DEFAULT 0,
    -- The highest position of the tombstones pruned: a cursor before it may have missed a deletion.
    ADD COLUMN pruned_through bigint NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;

UPDATE tasks SET change_seq = ordered.position
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS position FROM tasks) AS ordered
WHERE tasks.id = ordered.id;
UPDATE task_counts SET position = COALESCE((SELECT max(change_seq) FROM tasks WHERE tasks.user_id = task_counts.user_id), 0);

CREATE INDEX tasks_user_change_idx ON tasks (user_id, change_seq);

CREATE TABLE task_tombstones (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    change_seq bigint NOT NULL,
    task_id    bigint NOT NULL,
    deleted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, change_seq)
);
CREATE INDEX task_tombstones_deleted_idx ON task_tombstones (deleted_at);

-- The user id, never task data, is announced to every replica's listener at commit (NOTIFY),
-- so their open streams read the feed. 005's trigger still counts the tasks, after the insert.
-- A BEFORE trigger runs ahead of an insert's ON CONFLICT check, so a retried create (the same
-- Idempotency-Key, which ON CONFLICT DO NOTHING skips) is skipped here first: after taking
-- the user's row of task_counts, whose lock makes a retry racing its original wait for it.
CREATE FUNCTION record_task_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO task_counts AS counts (user_id, tasks, position) VALUES (NEW.user_id, 0, 0)
        ON CONFLICT (user_id) DO UPDATE SET position = counts.position;
        IF EXISTS (SELECT 1 FROM tasks WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
            RETURN NULL;  -- a retry: no row, no change
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS counts (user_id, tasks, position) VALUES (NEW.user_id, 0, 1)
        ON CONFLICT (user_id) DO UPDATE SET position = counts.position + 1
        RETURNING position INTO NEW.change_seq;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE task_counts SET position = position + 1 WHERE user_id = NEW.user_id
        RETURNING position INTO NEW.change_seq;
    ELSE
        WITH counted AS (
            UPDATE task_counts SET position = position + 1 WHERE user_id = OLD.user_id
            RETURNING position
        )
        INSERT INTO task_tombstones (user_id, change_seq, task_id, deleted_at)
        SELECT OLD.user_id, position, OLD.id, clock_timestamp() FROM counted;
    END IF;
    PERFORM pg_notify('task_changes', COALESCE(NEW.user_id, OLD.user_id)::text);
    RETURN COALESCE(NEW, OLD);
END
$$;

CREATE TRIGGER tasks_changed BEFORE INSERT OR UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION record_task_change();
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION record_task_change();

-- The key cursors are signed with, one for every replica, made once.
CREATE TABLE feed_secret (
    id     smallint PRIMARY KEY CHECK (id = 1),
    secret text NOT NULL
);
INSERT INTO feed_secret (id, secret) VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

-- One-use tickets that open an event stream (a browser's EventSource sends no header), kept
-- by the SHA-256 of the ticket, never the ticket itself.
CREATE TABLE event_tickets (
    ticket_hash      text PRIMARY KEY,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at       timestamptz NOT NULL,
    token_expires_at double precision NOT NULL
);

-- The open event streams of every replica, so that a user's limit counts them all. A replica
-- refreshes seen_at of its own; the rows of one that died stop counting when it goes stale.
CREATE TABLE event_streams (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    process text NOT NULL,
    seen_at timestamptz NOT NULL
);
CREATE INDEX event_streams_user_idx ON event_streams (user_id, seen_at);
