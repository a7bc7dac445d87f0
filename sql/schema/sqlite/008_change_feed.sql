-- Version 3: every write of a task is a change with a position in its user's feed. A task row
-- carries the position of its latest change; a deleted task leaves a tombstone with the
-- position of its deletion. Positions come from the user's row of task_counts; SQLite lets
-- one writer in at a time, so they commit in their order.
ALTER TABLE task_counts ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
-- The highest position of the tombstones pruned: a cursor before it may have missed a deletion.
ALTER TABLE task_counts ADD COLUMN pruned_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;

UPDATE tasks SET change_seq = ordered.position
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS position FROM tasks) AS ordered
WHERE tasks.id = ordered.id;
UPDATE task_counts SET position = COALESCE((SELECT max(change_seq) FROM tasks WHERE tasks.user_id = task_counts.user_id), 0);

CREATE INDEX tasks_user_change_idx ON tasks (user_id, change_seq);

CREATE TABLE task_tombstones (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    change_seq INTEGER NOT NULL,
    task_id    INTEGER NOT NULL,
    deleted_at TEXT NOT NULL,
    PRIMARY KEY (user_id, change_seq)
);
CREATE INDEX task_tombstones_deleted_idx ON task_tombstones (deleted_at);

-- The counts' triggers of 005 become the feed's.
DROP TRIGGER tasks_counted_on_insert;
DROP TRIGGER tasks_counted_on_delete;

CREATE TRIGGER tasks_changed_on_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (user_id, tasks, position) VALUES (NEW.user_id, 1, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = tasks + 1, position = position + 1;
    UPDATE tasks SET change_seq = (SELECT position FROM task_counts WHERE user_id = NEW.user_id) WHERE id = NEW.id;
END;

-- The feed's own updates of change_seq (here and on insert) are no change of their own.
CREATE TRIGGER tasks_changed_on_update AFTER UPDATE ON tasks WHEN NEW.change_seq IS OLD.change_seq
BEGIN
    UPDATE task_counts SET position = position + 1 WHERE user_id = NEW.user_id;
    UPDATE tasks SET change_seq = (SELECT position FROM task_counts WHERE user_id = NEW.user_id) WHERE id = NEW.id;
END;

CREATE TRIGGER tasks_changed_on_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET tasks = tasks - 1, position = position + 1 WHERE user_id = OLD.user_id;
    INSERT INTO task_tombstones (user_id, change_seq, task_id, deleted_at)
    SELECT OLD.user_id, position, OLD.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM task_counts WHERE user_id = OLD.user_id;
END;

-- The key cursors are signed with, made once.
CREATE TABLE feed_secret (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL
);
INSERT INTO feed_secret (id, secret) VALUES (1, lower(hex(randomblob(32))));

-- One-use tickets that open an event stream, kept by the SHA-256 of the ticket.
CREATE TABLE event_tickets (
    ticket_hash      TEXT PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at       TEXT NOT NULL,
    token_expires_at REAL NOT NULL
);

-- The open event streams, so that a user's limit counts them.
CREATE TABLE event_streams (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    process TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX event_streams_user_idx ON event_streams (user_id, seen_at);
