-- name: insert_user :one
-- A taken email inserts nothing and returns no row, even when two signups race: the caller answers 409.
INSERT INTO users (email, password_hash, created_at)
VALUES (:email, :password_hash, :now)
ON CONFLICT (email) DO NOTHING
RETURNING id, email, created_at

-- name: get_user :one
SELECT id, email, created_at
FROM users
WHERE id = :user_id

-- name: get_login :one
SELECT id, email, password_hash
FROM users
WHERE email = :email

-- name: ping :one
SELECT 1 AS ok
