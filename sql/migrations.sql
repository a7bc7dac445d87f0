-- name: use_write_ahead_log :one
-- SQLite only, kept in the file: readers no longer wait for a writer, and a commit costs one
-- append instead of a rewrite of the journal, so bursts of writes queue far less.
PRAGMA journal_mode = WAL

-- name: create_schema_migrations :exec
-- One row per file of sql/schema/<database>/ that has run, so a later change is a new file.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
)

-- name: lock_schema_migrations :exec
-- PostgreSQL only: replicas starting together apply each file once, one after the other.
SELECT pg_advisory_xact_lock(7040512)

-- name: applied_migrations :many
SELECT version FROM schema_migrations

-- name: record_migration :exec
INSERT INTO schema_migrations (version, applied_at) VALUES (:version, :applied_at)
