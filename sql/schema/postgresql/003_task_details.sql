-- Version 2 of a task: priority, due date, tags, and a version that every write bumps (the
-- ETag). Priority is kept as its rank, 0 low, 1 medium, 2 high, so that it sorts as it reads.
-- Tags are a JSON array of lower-case strings, sorted; jsonb answers "carries all of these"
-- with @>, which the GIN index serves.
ALTER TABLE tasks
    ADD COLUMN priority smallint NOT NULL DEFAULT 1 CHECK (priority IN (0, 1, 2)),
    ADD COLUMN due_at timestamptz,
    ADD COLUMN tags jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- A list is one user's tasks in one of the sort orders: each index gives a first page
-- without sorting the user's every task.
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated_idx ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due_idx ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_due_desc_idx ON tasks (user_id, due_at DESC NULLS LAST, id DESC);
CREATE INDEX tasks_user_title_idx ON tasks (user_id, lower(title) COLLATE "C", id);
CREATE INDEX tasks_user_priority_idx ON tasks (user_id, priority, id);
CREATE INDEX tasks_tags_idx ON tasks USING gin (tags jsonb_path_ops);
