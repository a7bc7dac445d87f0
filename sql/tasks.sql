-- Every statement here names the owner in its WHERE clause: ownership is enforced by the
-- database query itself, not only by the check of the path against the token. A task comes
-- back as its id and version (the ETag) and {task_json}, the body the API answers, written
-- by the database (sql/<database>/json.sql).
-- A write with If-Match passes the ETags it names as text, ',12-3,12-7,' (id-version; null:
-- no condition), and changes the row only when its own is one of them: the check and the
-- write are one statement, so of many racing writes with one ETag exactly one finds it.

-- fragment: task_filters
-- The caller's tasks matching every filter given; a null filter is no filter. {tags_match}
-- is the database's own test of "carries all of :tags" (sql/<database>/tags.sql), and
-- {search_match} its own test of "holds :pattern in the title or the description", both
-- sides folded to lower case the same way in both databases, whatever PostgreSQL's locale
-- (sql/<database>/search.sql).
user_id = :user_id
  AND (CAST(:completed AS boolean) IS NULL OR completed = :completed)
  AND (CAST(:priorities AS text) IS NULL OR replace(:priorities, ',' || priority || ',', '') <> :priorities)
  AND (CAST(:tags AS text) IS NULL OR {tags_match})
  AND (CAST(:pattern AS text) IS NULL OR {search_match})
  AND (CAST(:due_after AS timestamptz) IS NULL OR due_at >= :due_after)
  AND (CAST(:due_before AS timestamptz) IS NULL OR due_at < :due_before)
  AND (CAST(:overdue AS boolean) IS NULL
       OR :overdue = (due_at IS NOT NULL AND due_at < :now AND NOT completed))

-- name: list_tasks :one
-- One page of the matching tasks as the JSON array the API answers ({task_list}, written by
-- the database: sql/<database>/json.sql), and the number matching in all. The count is a
-- subquery the database runs once: a window over every match would read every row of a
-- user with 10,000 tasks for a page of 20. {order} is one entry of SORT_ORDERS in
-- todo_service.py, picked by key, never client text.
SELECT COALESCE({task_list}, '[]') AS body,
       (SELECT count(*) FROM tasks WHERE {task_filters}) AS total,
       COALESCE((SELECT position FROM task_counts WHERE user_id = :user_id), 0) AS position
FROM (
    SELECT * FROM tasks
    WHERE {task_filters}
    ORDER BY {order}
    LIMIT :limit OFFSET :offset
) AS tasks

-- name: list_all_tasks :one
-- The same with no filter, as nearly every page load asks for it. With no filter to fold
-- away, PostgreSQL plans it once per connection (the query above is planned again on every
-- call, to drop the filters it was not given), and the total is the user's row of
-- task_counts, which the database keeps (sql/schema/*/005_task_counts.sql): nothing is counted.
-- Both lists answer the user's feed position too, read in the same statement as the page:
-- the list's ETag (sql/schema/*/008_change_feed.sql). Here the total and the position come
-- from one read of the user's row (no row: a user with no task yet, or no such user).
SELECT page.body, COALESCE(counts.tasks, 0) AS total, COALESCE(counts.position, 0) AS position
FROM (
    SELECT COALESCE({task_list}, '[]') AS body
    FROM (
        SELECT * FROM tasks
        WHERE user_id = :user_id
        ORDER BY {order}
        LIMIT :limit OFFSET :offset
    ) AS tasks
) AS page
LEFT JOIN task_counts AS counts ON counts.user_id = :user_id

-- name: insert_task :one
-- Inserts nothing, and returns no row, when the owner does not exist, or when the owner
-- already made a task with this Idempotency-Key (a retry: see get_task_by_idempotency_key).
INSERT INTO tasks (user_id, title, description, completed, priority, due_at, tags, recurrence, time_zone, reminders,
                   idempotency_key, request_hash, created_at, updated_at)
SELECT id, :title, :description, :completed, :priority, :due_at, :tags, :recurrence, :time_zone, :reminders,
       :idempotency_key, :request_hash, :now, :now
FROM users
WHERE id = :user_id
ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, version, {task_json} AS body

-- name: get_task_by_idempotency_key :one
SELECT id, version, request_hash, created_at, {task_json} AS body
FROM tasks
WHERE user_id = :user_id AND idempotency_key = :idempotency_key

-- name: forget_idempotency_key :exec
-- A key is kept for a day; after that the same key makes a new task.
UPDATE tasks SET idempotency_key = NULL, request_hash = NULL
WHERE user_id = :user_id AND idempotency_key = :idempotency_key

-- name: get_task :one
SELECT id, version, {task_json} AS body
FROM tasks
WHERE id = :task_id AND user_id = :user_id

-- name: replace_task :one
UPDATE tasks
SET title = :title, description = :description, completed = :completed, priority = :priority,
    due_at = :due_at, tags = :tags, recurrence = :recurrence, time_zone = :time_zone, reminders = :reminders,
    version = version + 1, updated_at = :now
WHERE id = :task_id AND user_id = :user_id
  AND (CAST(:if_match AS text) IS NULL OR replace(:if_match, ',' || id || '-' || version || ',', '') <> :if_match)
RETURNING id, version, {makes_next} AS makes_next, {task_json} AS body

-- name: update_task :one
-- A null field means unchanged; description, due_at and recurrence may be set to null, so they have flags.
UPDATE tasks
SET title = COALESCE(:title, title),
    description = CASE WHEN :set_description THEN :description ELSE description END,
    completed = COALESCE(:completed, completed),
    priority = COALESCE(:priority, priority),
    due_at = CASE WHEN :set_due_at THEN :due_at ELSE due_at END,
    tags = COALESCE(:tags, tags),
    recurrence = CASE WHEN :set_recurrence THEN :recurrence ELSE recurrence END,
    time_zone = COALESCE(:time_zone, time_zone),
    reminders = COALESCE(:reminders, reminders),
    version = version + 1,
    updated_at = :now
WHERE id = :task_id AND user_id = :user_id
  AND (CAST(:if_match AS text) IS NULL OR replace(:if_match, ',' || id || '-' || version || ',', '') <> :if_match)
RETURNING id, version, {makes_next} AS makes_next, {task_json} AS body

-- name: set_task_completed :one
UPDATE tasks
SET completed = :completed, version = version + 1, updated_at = :now
WHERE id = :task_id AND user_id = :user_id
  AND (CAST(:if_match AS text) IS NULL OR replace(:if_match, ',' || id || '-' || version || ',', '') <> :if_match)
RETURNING id, version, {makes_next} AS makes_next, {task_json} AS body

-- name: delete_task :one
DELETE FROM tasks
WHERE id = :task_id AND user_id = :user_id
  AND (CAST(:if_match AS text) IS NULL OR replace(:if_match, ',' || id || '-' || version || ',', '') <> :if_match)
RETURNING id

-- fragment: makes_next
-- A completed recurring task that has not yet made its next occurrence: it makes it now, in
-- this write's transaction (the row stays locked until then, so racing completions make one).
(completed AND recurrence IS NOT NULL AND next_id IS NULL)

-- name: get_recurrence :one
-- What the next occurrence of a task is computed from.
SELECT recurrence, time_zone, due_at, COALESCE(series_start, due_at) AS series_start, occurrence
FROM tasks
WHERE id = :task_id AND user_id = :user_id

-- name: insert_next_occurrence :one
-- The next occurrence: the same task, not completed, due at :due_at, with the reminders that
-- are relative to its due date (an `at` reminder belongs to its one occurrence).
INSERT INTO tasks (user_id, title, description, completed, priority, due_at, tags, recurrence, time_zone, reminders,
                   series_id, series_start, occurrence, created_at, updated_at)
SELECT user_id, title, description, false, priority, :due_at, tags, recurrence, time_zone, {relative_reminders},
       COALESCE(series_id, id), COALESCE(series_start, due_at), occurrence + 1, :now, :now
FROM tasks
WHERE id = :task_id AND user_id = :user_id
RETURNING id

-- name: set_next_id :one
-- The completed task names the occurrence it made, and its series when it was the first.
UPDATE tasks SET next_id = :next_id, series_id = COALESCE(series_id, id)
WHERE id = :task_id AND user_id = :user_id
RETURNING id, version, {task_json} AS body
