-- The same two questions of tags, as SQLite asks them of a JSON array in text.

-- fragment: tags_match
NOT EXISTS (
    SELECT 1 FROM json_each(:tags) AS wanted
    WHERE wanted.value NOT IN (SELECT value FROM json_each(tasks.tags))
)

-- name: list_tags :many
-- The caller's tags in use, each with how many of the caller's tasks carry it, by name.
SELECT tag.value AS tag, count(*) AS count
FROM tasks, json_each(tasks.tags) AS tag
WHERE user_id = :user_id
GROUP BY tag.value
ORDER BY tag.value
