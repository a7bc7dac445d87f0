-- name: notify_reminders :one
-- Fired reminders, announced to the listener of every replica (ids and times, never task data).
SELECT count(pg_notify('task_changes', payload)) AS sent FROM unnest(CAST(:payloads AS text[])) AS payload
