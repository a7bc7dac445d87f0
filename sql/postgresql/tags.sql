-- The same two questions of tags, as PostgreSQL asks them of a jsonb array.

-- fragment: tags_match
tags @> CAST(:tags AS jsonb)

-- name: list_tags :many
-- The caller's tags in use, each with how many of the caller's tasks carry it, by name
-- (byte order, as SQLite sorts).
SELECT tag, count(*) AS count
FROM tasks, jsonb_array_elements_text(tasks.tags) AS tag
WHERE user_id = :user_id
GROUP BY tag
ORDER BY tag COLLATE "C"
