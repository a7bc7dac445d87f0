-- Better Auth's users get backend accounts of their own, linked by (issuer, subject): an
-- identity is the pair, as OpenID Connect defines it, so Better Auth's user "1" is never
-- the backend's user 1. A linked account has no password, and its email (the token's email
-- claim, for display) is no login: only accounts with a password need a unique email.
-- SQLite cannot drop a column's UNIQUE, so the table is rebuilt, ids and their sequence kept.
CREATE TABLE users_v2 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT CHECK (email = lower(email) AND length(email) <= 254),
    password_hash TEXT,
    created_at    TEXT NOT NULL,
    issuer        TEXT,
    subject       TEXT CHECK (length(subject) BETWEEN 1 AND 255),
    UNIQUE (issuer, subject),
    CHECK (
        (password_hash IS NOT NULL AND email IS NOT NULL AND issuer IS NULL AND subject IS NULL)
        OR (password_hash IS NULL AND issuer IS NOT NULL AND subject IS NOT NULL)
    )
);

INSERT INTO users_v2 (id, email, password_hash, created_at)
SELECT id, email, password_hash, created_at FROM users;

DELETE FROM sqlite_sequence WHERE name = 'users_v2';

INSERT INTO sqlite_sequence (name, seq) SELECT 'users_v2', seq FROM sqlite_sequence WHERE name = 'users';

DROP TABLE users;

ALTER TABLE users_v2 RENAME TO users;

CREATE UNIQUE INDEX users_password_email_key ON users (email) WHERE password_hash IS NOT NULL;
