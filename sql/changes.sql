-- The change feed (sql/schema/*/008_change_feed.sql): each task row carries the position of
-- its latest change, each deleted task a tombstone with the position of its deletion, so a
-- feed is one query over both. Every statement names the owner in its WHERE clause.

-- name: list_changes :many
-- The user's changes after position :since, oldest first, at most :limit of them, with the
-- user's latest position and the highest one pruned: read in one statement, so they agree
-- with the page (a write still in flight has a later position than any of them). Without
-- :tombstones (a first sync) only the tasks that exist now. The page's rows come after the
-- head row, whose change_seq is null.
WITH head AS (
    SELECT position, pruned_through FROM task_counts WHERE user_id = :user_id
), page AS (
    SELECT change_seq, {task_json} AS body FROM tasks
    WHERE user_id = :user_id AND change_seq > :since
    UNION ALL
    SELECT change_seq, {tombstone_json} AS body FROM task_tombstones
    WHERE user_id = :user_id AND change_seq > :since AND CAST(:tombstones AS boolean)
    ORDER BY change_seq
    LIMIT :limit
)
SELECT NULL AS change_seq, NULL AS body,
       COALESCE((SELECT position FROM head), 0) AS position,
       COALESCE((SELECT pruned_through FROM head), 0) AS pruned_through
UNION ALL
SELECT change_seq, body, NULL, NULL FROM page
ORDER BY change_seq NULLS FIRST

-- name: feed_position :one
-- The user's latest position alone: what a list's If-None-Match is checked against.
SELECT COALESCE((SELECT position FROM task_counts WHERE user_id = :user_id), 0) AS position

-- name: get_feed_secret :one
SELECT secret FROM feed_secret WHERE id = 1

-- name: raise_pruned_through :exec
-- Before tombstones older than :cutoff go, their users' feeds remember how far they went.
UPDATE task_counts
SET pruned_through = (SELECT max(change_seq) FROM task_tombstones
                      WHERE task_tombstones.user_id = task_counts.user_id AND deleted_at < :cutoff)
WHERE user_id IN (SELECT user_id FROM task_tombstones WHERE deleted_at < :cutoff)

-- name: prune_tombstones :many
-- A bounded batch, so that no run holds many locks or takes long; the caller repeats it.
DELETE FROM task_tombstones
WHERE (user_id, change_seq) IN (SELECT user_id, change_seq FROM task_tombstones WHERE deleted_at < :cutoff LIMIT 1000)
RETURNING task_id

-- name: insert_ticket :exec
INSERT INTO event_tickets (ticket_hash, user_id, expires_at, token_expires_at)
VALUES (:ticket_hash, :user_id, :expires_at, :token_expires_at)

-- name: redeem_ticket :one
-- One use: the ticket is gone once it has opened a stream, on whichever replica.
DELETE FROM event_tickets
WHERE ticket_hash = :ticket_hash AND expires_at > :now
RETURNING user_id, token_expires_at

-- name: delete_expired_tickets :exec
DELETE FROM event_tickets WHERE expires_at <= :now

-- name: lock_user_streams :exec
-- PostgreSQL only, in open_stream's transaction: streams of one user opening at once on
-- several replicas are counted one after the other, each seeing the others' rows (the
-- lock on the user's row leaves tasks' foreign keys free).
SELECT 1 FROM users WHERE id = :user_id FOR NO KEY UPDATE

-- name: open_stream :one
-- A stream for the user unless :max are open already, on every replica (a stale row is a
-- replica that stopped without closing its streams).
INSERT INTO event_streams (user_id, process, seen_at)
SELECT :user_id, :process, :now
WHERE (SELECT count(*) FROM event_streams WHERE user_id = :user_id AND seen_at > :stale_before) < :max
RETURNING id

-- name: close_stream :exec
DELETE FROM event_streams WHERE id = :stream_id

-- name: refresh_streams :exec
UPDATE event_streams SET seen_at = :now WHERE process = :process

-- name: delete_stale_streams :exec
DELETE FROM event_streams WHERE seen_at <= :stale_before
