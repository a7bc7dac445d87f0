-- A task as the API answers it, written by PostgreSQL itself: the route passes the text on,
-- with no rows turned into Python objects and back (as PostgREST does). Timestamps in UTC
-- with microseconds and Z, as both databases answer them.
--
-- The JSON is text filled into a template, byte for byte what json_build_object and json_agg
-- wrote before ({"id" : 1, "title" : "...", ...}, elements joined by ", "): json_build_object looks
-- up the type of each of its 30 arguments on every row, which cost more than the rest of the
-- page (a page of 20 tasks: 190 µs of PostgreSQL's CPU with it, 135 µs with the template).
-- In the template, strings go through to_json (JSON's escapes, as json_build_object made
-- them), jsonb and numbers are their own text, and a column that may be null has its
-- COALESCE(..., 'null'); the others are NOT NULL in the schema. The result is text, not
-- json: a cast to json would parse it again, and JSON around it must splice it in as text.

-- fragment: task_json
-- A recurring task that has made no occurrence yet is the first of its series: series_id is its own id.
format(
    '{"id" : %s, "user_id" : %s, "title" : %s, "description" : %s, "completed" : %s, "priority" : %s, '
    '"due_at" : %s, "tags" : %s, "recurrence" : %s, "time_zone" : %s, "reminders" : %s, "series_id" : %s, '
    '"next_id" : %s, "created_at" : "%s", "updated_at" : "%s"}',
    id, user_id, to_json(title), COALESCE(CAST(to_json(description) AS text), 'null'),
    CASE WHEN completed THEN 'true' ELSE 'false' END,
    (ARRAY['"low"', '"medium"', '"high"'])[priority + 1],
    COALESCE('"' || to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"', 'null'),
    tags, COALESCE(CAST(recurrence AS text), 'null'), to_json(time_zone), reminders,
    COALESCE(CAST(COALESCE(series_id, CASE WHEN recurrence IS NOT NULL THEN id END) AS text), 'null'),
    COALESCE(CAST(next_id AS text), 'null'),
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
)

-- fragment: task_list
-- Null for no row, as json_agg was: the query answers '[]' then.
'[' || string_agg({task_json}, ', ' ORDER BY {order}) || ']'

-- fragment: tombstone_json
format('{"id" : %s, "deleted" : true, "deleted_at" : "%s"}',
       task_id, to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))

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
