-- A task as the API answers it, written by SQLite itself: the route passes the text on.
-- Timestamps are stored as the API shows them; booleans are 0 or 1, made true or false here.

-- fragment: task_json
-- A recurring task that has made no occurrence yet is the first of its series: series_id is its own id.
json_object(
    'id', id, 'user_id', user_id, 'title', title, 'description', description,
    'completed', json(CASE WHEN completed THEN 'true' ELSE 'false' END),
    'priority', CASE priority WHEN 0 THEN 'low' WHEN 1 THEN 'medium' ELSE 'high' END,
    'due_at', due_at, 'tags', json(tags),
    'recurrence', json(recurrence), 'time_zone', time_zone, 'reminders', json(reminders), 'series_id', COALESCE(series_id, CASE WHEN recurrence IS NOT NULL THEN id END), 'next_id', next_id,
    'created_at', created_at, 'updated_at', updated_at
)

-- fragment: task_list
-- In the page's order: SQLite aggregates the rows of an ordered subquery in that order.
json_group_array({task_json})

-- fragment: tombstone_json
json_object('id', task_id, 'deleted', json('true'), 'deleted_at', deleted_at)

-- fragment: relative_reminders
-- A task's reminders that are minutes before its due date, in their order.
(SELECT json_group_array(json(reminder.value)) FROM json_each(reminders) AS reminder
 WHERE json_type(reminder.value, '$.minutes_before') IS NOT NULL)

-- fragment: skip_locked
-- One process writes a SQLite file: there is no other claimant to skip.


-- fragment: json_id_pairs
-- The pairs of ids of a JSON array of [a, b] in :pairs, as rows.
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:pairs)
