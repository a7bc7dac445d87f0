-- name: insert_user :one
-- A taken email inserts nothing and returns no row, even when two signups race: the caller
-- answers 409. Only password accounts hold a login email; a linked account's never conflicts.
INSERT INTO users (email, password_hash, created_at)
VALUES (:email, :password_hash, :now)
ON CONFLICT (email) WHERE password_hash IS NOT NULL DO NOTHING
RETURNING id, email, created_at

-- name: get_user :one
SELECT id, email, created_at
FROM users
WHERE id = :user_id

-- name: get_login :one
-- Linked accounts have no password, so they are never found here.
SELECT id, email, password_hash
FROM users
WHERE email = :email AND password_hash IS NOT NULL

-- name: get_linked_user :one
SELECT id, email
FROM users
WHERE issuer = :issuer AND subject = :subject

-- name: link_user :one
-- The account for this identity: made on its first token, found again on any later one.
-- Racing first tokens all land on the one row the unique (issuer, subject) allows.
INSERT INTO users (issuer, subject, email, created_at)
VALUES (:issuer, :subject, :email, :now)
ON CONFLICT (issuer, subject) DO UPDATE SET email = COALESCE(excluded.email, users.email)
RETURNING id, email

-- name: ping :one
SELECT 1 AS ok
