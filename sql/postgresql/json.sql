-- A task as the API answers it, written by PostgreSQL itself: the route passes the text on,
-- with no rows turned into Python objects and back (as PostgREST does). Timestamps in UTC
-- with microseconds and Z, as both databases answer them.

-- fragment: task_json
-- A recurring task that has made no occurrence yet is the first of its series: series_id is its own id.
json_build_object(
    'id', id, 'user_id', user_id, 'title', title, 'description', description, 'completed', completed,
    'priority', (ARRAY['low', 'medium', 'high'])[priority + 1],
    'due_at', to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'tags', tags,
    'recurrence', recurrence, 'time_zone', time_zone, 'reminders', reminders, 'series_id', COALESCE(series_id, CASE WHEN recurrence IS NOT NULL THEN id END), 'next_id', next_id,
    'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
)

-- fragment: task_list
json_agg({task_json} ORDER BY {order})

-- fragment: tombstone_json
json_build_object('id', task_id, 'deleted', true,
                  'deleted_at', to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))

-- fragment: relative_reminders
-- A task's reminders that are minutes before its due date, in their order.
COALESCE((SELECT jsonb_agg(reminder ORDER BY position) FROM jsonb_array_elements(reminders) WITH ORDINALITY AS r (reminder, position)
          WHERE reminder ? 'minutes_before'), '[]')

-- fragment: skip_locked
-- Rows another replica has claimed and not yet committed are left to it.
FOR UPDATE SKIP LOCKED

-- fragment: json_id_pairs
-- The pairs of ids of a JSON array of [a, b] in :pairs, as rows.
SELECT CAST(pair ->> 0 AS bigint), CAST(pair ->> 1 AS bigint) FROM jsonb_array_elements(CAST(:pairs AS jsonb)) AS pair
