-- Every statement here names the owner in its WHERE clause: ownership is enforced by the
-- database query itself, not only by the check of the path against the token.

-- name: list_tasks :many
-- Newest first. A null completed means both.
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE user_id = :user_id
  AND (CAST(:completed AS boolean) IS NULL OR completed = :completed)
ORDER BY id DESC
LIMIT :limit OFFSET :offset

-- name: insert_task :one
-- Inserts nothing, and returns no row, when the owner does not exist.
INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT id, :title, :description, :completed, :now, :now
FROM users
WHERE id = :user_id
RETURNING id, user_id, title, description, completed, created_at, updated_at

-- name: get_task :one
SELECT id, user_id, title, description, completed, created_at, updated_at
FROM tasks
WHERE id = :task_id AND user_id = :user_id

-- name: replace_task :one
UPDATE tasks
SET title = :title, description = :description, completed = :completed, updated_at = :now
WHERE id = :task_id AND user_id = :user_id
RETURNING id, user_id, title, description, completed, created_at, updated_at

-- name: update_task :one
-- A null title or completed means unchanged; description may be set to null, so it has a flag.
UPDATE tasks
SET title = COALESCE(:title, title),
    description = CASE WHEN :set_description THEN :description ELSE description END,
    completed = COALESCE(:completed, completed),
    updated_at = :now
WHERE id = :task_id AND user_id = :user_id
RETURNING id, user_id, title, description, completed, created_at, updated_at

-- name: set_task_completed :one
UPDATE tasks
SET completed = :completed, updated_at = :now
WHERE id = :task_id AND user_id = :user_id
RETURNING id, user_id, title, description, completed, created_at, updated_at

-- name: delete_task :one
DELETE FROM tasks
WHERE id = :task_id AND user_id = :user_id
RETURNING id
