-- Version 3: tasks that recur and remind. recurrence is {"rule", "from"} or null; reminders a
-- JSON array of {"minutes_before"} or {"at"}. series_id is the id of the series' first task,
-- next_id the occurrence this one's completion made (at most one, ever); series_start the
-- due_at the series' rule starts from, and occurrence this task's number in its series.
ALTER TABLE tasks
    ADD COLUMN recurrence jsonb CHECK (recurrence IS NULL OR jsonb_typeof(recurrence) = 'object'),
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN reminders jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(reminders) = 'array'),
    ADD COLUMN series_id bigint,
    ADD COLUMN next_id bigint,
    ADD COLUMN series_start timestamptz,
    ADD COLUMN occurrence integer NOT NULL DEFAULT 1;

-- Each planned reminder a row with its time: every replica claims the due ones with SKIP
-- LOCKED, so each fires once. A fired row keeps what its webhook sends (the task as it was
-- when it fired) and when to try the webhook next, until it is delivered or given up.
CREATE TABLE reminders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    task_id         bigint NOT NULL,
    fire_at         timestamptz NOT NULL,
    fired_at        timestamptz,
    task_body       text,
    next_attempt_at timestamptz,
    attempts        integer NOT NULL DEFAULT 0
);
CREATE INDEX reminders_due_idx ON reminders (fire_at) WHERE fired_at IS NULL;
CREATE INDEX reminders_task_idx ON reminders (task_id) WHERE fired_at IS NULL;
CREATE INDEX reminders_delivery_idx ON reminders (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Reminders are planned in the transaction of the write that sets them: a change of due_at,
-- reminders or completed plans them again (a time already past is not planned), a
-- completion or a deletion cancels what has not fired.
CREATE FUNCTION plan_reminders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.due_at IS NOT DISTINCT FROM NEW.due_at AND OLD.reminders = NEW.reminders
       AND OLD.completed = NEW.completed THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM reminders WHERE task_id = OLD.id AND fired_at IS NULL;
    END IF;
    IF TG_OP <> 'DELETE' AND NOT NEW.completed THEN
        INSERT INTO reminders (user_id, task_id, fire_at)
        SELECT NEW.user_id, NEW.id, planned.fire_at
        FROM (
            SELECT CASE WHEN reminder ? 'at' THEN CAST(reminder ->> 'at' AS timestamptz)
                        ELSE NEW.due_at - make_interval(mins => CAST(reminder ->> 'minutes_before' AS integer)) END AS fire_at
            FROM jsonb_array_elements(NEW.reminders) AS reminder
        ) AS planned
        WHERE planned.fire_at > clock_timestamp();
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_reminders_planned AFTER INSERT OR UPDATE OR DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION plan_reminders();
