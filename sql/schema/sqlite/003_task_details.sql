-- Version 2 of a task: priority, due date, tags, and a version that every write bumps (the
-- ETag). Priority is kept as its rank, 0 low, 1 medium, 2 high, so that it sorts as it reads.
-- Tags are a JSON array of lower-case strings, sorted. due_at is RFC 3339 text in UTC with
-- microseconds, as the other timestamps, so that text order is time order.
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 1 CHECK (priority IN (0, 1, 2));
ALTER TABLE tasks ADD COLUMN due_at TEXT;
ALTER TABLE tasks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags));
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated_idx ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due_idx ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_priority_idx ON tasks (user_id, priority, id);
