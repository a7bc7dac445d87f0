-- A retried create (the same Idempotency-Key) inserts nothing: ON CONFLICT DO NOTHING skips
-- the row. But 008's trigger runs BEFORE INSERT, ahead of that conflict check, so a retry
-- counted one task more and took a feed position (and woke every stream) with no write.
-- The trigger now skips the retry itself, after taking the user's row of task_counts, whose
-- lock makes a retry racing its original wait until that commits and then see it.
CREATE OR REPLACE FUNCTION record_task_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO task_counts AS counts (user_id, tasks, position) VALUES (NEW.user_id, 0, 0)
        ON CONFLICT (user_id) DO UPDATE SET tasks = counts.tasks;
        IF EXISTS (SELECT 1 FROM tasks WHERE user_id = NEW.user_id AND idempotency_key = NEW.idempotency_key) THEN
            RETURN NULL;  -- a retry: no row, no change
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS counts (user_id, tasks, position) VALUES (NEW.user_id, 1, 1)
        ON CONFLICT (user_id) DO UPDATE SET tasks = counts.tasks + 1, position = counts.position + 1
        RETURNING position INTO NEW.change_seq;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE task_counts SET position = position + 1 WHERE user_id = NEW.user_id
        RETURNING position INTO NEW.change_seq;
    ELSE
        WITH counted AS (
            UPDATE task_counts SET tasks = tasks - 1, position = position + 1 WHERE user_id = OLD.user_id
            RETURNING position
        )
        INSERT INTO task_tombstones (user_id, change_seq, task_id, deleted_at)
        SELECT OLD.user_id, position, OLD.id, clock_timestamp() FROM counted;
    END IF;
    PERFORM pg_notify('task_changes', COALESCE(NEW.user_id, OLD.user_id)::text);
    RETURN COALESCE(NEW, OLD);
END
$$;
