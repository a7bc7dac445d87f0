-- Each user's number of tasks, kept by the database on every insert and delete of a task, so
-- that the total of an unfiltered list (X-Total-Count) is read, not counted. A user with no
-- row has no task. This runs in one write transaction: no task is written between the counts
-- and the triggers.
CREATE TABLE task_counts (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tasks   INTEGER NOT NULL
);

INSERT INTO task_counts (user_id, tasks) SELECT user_id, count(*) FROM tasks GROUP BY user_id;

CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (user_id, tasks) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = tasks + 1;
END;

CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET tasks = tasks - 1 WHERE user_id = OLD.user_id;
END;
