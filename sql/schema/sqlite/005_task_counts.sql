-- Each user's number of tasks, kept by the database on every insert and delete, so that the
-- total of an unfiltered list (X-Total-Count) is read, not counted. This runs in one write
-- transaction: no task is written between the count and the triggers.
ALTER TABLE users ADD COLUMN task_count INTEGER NOT NULL DEFAULT 0;

UPDATE users SET task_count = (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id);

CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
BEGIN
    UPDATE users SET task_count = task_count + 1 WHERE id = NEW.user_id;
END;

CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
BEGIN
    UPDATE users SET task_count = task_count - 1 WHERE id = OLD.user_id;
END;
