-- Each user's number of tasks, kept by the database on every insert and delete, so that the
-- total of an unfiltered list (X-Total-Count) is read, not counted: a user with 10,000 tasks
-- paid a millisecond of PostgreSQL on every page for counting them.
-- Writes to tasks wait while the counts are taken, so that none falls between the count and
-- the trigger.
LOCK TABLE tasks IN SHARE MODE;

ALTER TABLE users ADD COLUMN task_count bigint NOT NULL DEFAULT 0;

UPDATE users SET task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id);

CREATE FUNCTION count_user_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE users SET task_count = task_count + 1 WHERE id = NEW.user_id;
    ELSE
        UPDATE users SET task_count = task_count - 1 WHERE id = OLD.user_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_counted AFTER INSERT OR DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION count_user_tasks();
