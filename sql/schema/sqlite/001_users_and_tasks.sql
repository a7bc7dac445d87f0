-- The embedded default. Timestamps are ISO 8601 text in UTC; booleans are 0 or 1.
-- AUTOINCREMENT keeps ids of deleted rows from coming back, so id order stays creation order.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 255),
    description TEXT CHECK (length(description) <= 10000),
    completed   INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX tasks_user_id_id_idx ON tasks (user_id, id DESC);
