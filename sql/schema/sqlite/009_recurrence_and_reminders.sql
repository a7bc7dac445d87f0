-- Version 3: tasks that recur and remind. recurrence is {"rule", "from"} or null; reminders a
-- JSON array of {"minutes_before"} or {"at"}. series_id is the id of the series' first task,
-- next_id the occurrence this one's completion made (at most one, ever); series_start the
-- due_at the series' rule starts from, and occurrence this task's number in its series.
ALTER TABLE tasks ADD COLUMN recurrence TEXT CHECK (recurrence IS NULL OR json_type(recurrence) = 'object');
ALTER TABLE tasks ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE tasks ADD COLUMN reminders TEXT NOT NULL DEFAULT '[]' CHECK (json_type(reminders) = 'array');
ALTER TABLE tasks ADD COLUMN series_id INTEGER;
ALTER TABLE tasks ADD COLUMN next_id INTEGER;
ALTER TABLE tasks ADD COLUMN series_start TEXT;
ALTER TABLE tasks ADD COLUMN occurrence INTEGER NOT NULL DEFAULT 1;

-- Each planned reminder a row with its time (RFC 3339 text in UTC, as every timestamp here).
-- A fired row keeps what its webhook sends and when to try the webhook next.
CREATE TABLE reminders (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    task_id         INTEGER NOT NULL,
    fire_at         TEXT NOT NULL,
    fired_at        TEXT,
    task_body       TEXT,
    next_attempt_at TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX reminders_due_idx ON reminders (fire_at) WHERE fired_at IS NULL;
CREATE INDEX reminders_task_idx ON reminders (task_id) WHERE fired_at IS NULL;
CREATE INDEX reminders_delivery_idx ON reminders (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Planned in the write's own transaction; a time already past is not planned. A reminder
-- minutes before due_at keeps due_at's fraction of a second, so the text stays in one format.
CREATE TRIGGER tasks_reminders_planned_on_insert AFTER INSERT ON tasks WHEN NOT NEW.completed
BEGIN
    INSERT INTO reminders (user_id, task_id, fire_at)
    SELECT NEW.user_id, NEW.id, planned.fire_at
    FROM (
        SELECT CASE WHEN json_type(reminder.value, '$.at') IS NOT NULL THEN json_extract(reminder.value, '$.at')
                    ELSE strftime('%Y-%m-%dT%H:%M:%S', NEW.due_at, '-' || json_extract(reminder.value, '$.minutes_before') || ' minutes')
                         || substr(NEW.due_at, 20) END AS fire_at
        FROM json_each(NEW.reminders) AS reminder
    ) AS planned
    WHERE planned.fire_at > strftime('%Y-%m-%dT%H:%M:%f000Z', 'now');
END;

CREATE TRIGGER tasks_reminders_planned_on_update AFTER UPDATE OF due_at, reminders, completed ON tasks
WHEN OLD.due_at IS NOT NEW.due_at OR OLD.reminders IS NOT NEW.reminders OR OLD.completed IS NOT NEW.completed
BEGIN
    DELETE FROM reminders WHERE task_id = OLD.id AND fired_at IS NULL;
    INSERT INTO reminders (user_id, task_id, fire_at)
    SELECT NEW.user_id, NEW.id, planned.fire_at
    FROM (
        SELECT CASE WHEN json_type(reminder.value, '$.at') IS NOT NULL THEN json_extract(reminder.value, '$.at')
                    ELSE strftime('%Y-%m-%dT%H:%M:%S', NEW.due_at, '-' || json_extract(reminder.value, '$.minutes_before') || ' minutes')
                         || substr(NEW.due_at, 20) END AS fire_at
        FROM json_each(NEW.reminders) AS reminder
    ) AS planned
    WHERE NOT NEW.completed AND planned.fire_at > strftime('%Y-%m-%dT%H:%M:%f000Z', 'now');
END;

CREATE TRIGGER tasks_reminders_cancelled AFTER DELETE ON tasks
BEGIN
    DELETE FROM reminders WHERE task_id = OLD.id AND fired_at IS NULL;
END;
