-- Reminders (sql/schema/*/009_recurrence_and_reminders.sql): planned by the database on every
-- write of a task, fired by whichever replica claims them first.

-- name: drop_late_reminders :many
-- Reminders that fell due before :late_cutoff while no replica ran: too late to be of use.
DELETE FROM reminders
WHERE fired_at IS NULL AND fire_at < :late_cutoff
RETURNING id, user_id, task_id, fire_at

-- name: claim_due_reminders :many
-- The reminders due by :now, each claimed by one replica only: marked fired, with the task as
-- it is now kept for the webhook, and the first webhook attempt due at :first_attempt_at
-- (both null when no webhook is configured).
UPDATE reminders
SET fired_at = :now,
    task_body = CASE WHEN CAST(:webhook AS boolean) THEN (SELECT {task_json} FROM tasks WHERE tasks.id = reminders.task_id) END,
    next_attempt_at = :first_attempt_at
WHERE id IN (
    SELECT id FROM reminders
    WHERE fired_at IS NULL AND fire_at <= :now
    ORDER BY fire_at
    LIMIT :batch
    {skip_locked}
)
RETURNING id, user_id, task_id, fire_at, fired_at

-- name: get_reminded_tasks :many
-- The tasks of fired reminders, for the streams of their users: :pairs is JSON, [[user id,
-- task id], ...], so that every task is named with its owner.
SELECT id, {task_json} AS body FROM tasks
WHERE (user_id, id) IN ({json_id_pairs})

-- name: claim_deliveries :many
-- Webhook attempts that are due, each leased to one replica until :lease_until: a replica that
-- dies mid-attempt leaves the row to be tried again when the lease runs out.
UPDATE reminders
SET next_attempt_at = :lease_until, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM reminders
    WHERE next_attempt_at <= :now
    ORDER BY next_attempt_at
    LIMIT :batch
    {skip_locked}
)
RETURNING id, user_id, fire_at, fired_at, task_body, attempts

-- name: retry_delivery :exec
UPDATE reminders SET next_attempt_at = :next_attempt_at WHERE id = :reminder_id

-- name: finish_delivery :exec
-- Delivered, or given up after REMINDER_WEBHOOK_RETRY_SECONDS.
DELETE FROM reminders WHERE id = :reminder_id

-- name: delete_fired_reminders :exec
-- Fired reminders with no webhook attempt left to make.
DELETE FROM reminders WHERE fired_at IS NOT NULL AND next_attempt_at IS NULL
