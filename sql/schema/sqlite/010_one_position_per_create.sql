-- 008's insert trigger sets the new row's change_seq with an UPDATE, and that UPDATE fired
-- the update trigger (only a trigger firing itself is kept from recursing), so every create
-- took two positions in its user's feed. The update trigger now skips the feed's own update
-- of change_seq; every other update leaves change_seq as it was.
DROP TRIGGER tasks_changed_on_update;

CREATE TRIGGER tasks_changed_on_update AFTER UPDATE ON tasks WHEN NEW.change_seq IS OLD.change_seq
BEGIN
    UPDATE task_counts SET position = position + 1 WHERE user_id = NEW.user_id;
    UPDATE tasks SET change_seq = (SELECT position FROM task_counts WHERE user_id = NEW.user_id) WHERE id = NEW.id;
END;
