-- The first schema's index for a user's tasks newest first. Since 003 every list is served
-- by the index of its sort order (tasks_user_created_idx for the default), a task by its id
-- through the primary key, and a user's tasks as a whole (tags, a user's delete) by any
-- index that starts with user_id: this one only cost each insert, and each update that
-- changes updated_at, one more index entry to write.
DROP INDEX IF EXISTS tasks_user_id_id_idx;
