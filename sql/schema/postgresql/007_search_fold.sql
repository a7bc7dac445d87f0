-- The list's search (q) finds text case-insensitively whatever the database's collation and
-- ctype. lower() under the database's own locale folds only A to Z under C (initdb
-- --no-locale, several container images), so there CRÈME never found Crème. ICU's root
-- locale ("und-x-icu", in every PostgreSQL built with ICU: Debian's, the official images,
-- Neon) lowers each letter as Python's str.lower() does, the lower() the service gives SQLite.
-- The one difference, ICU's final sigma (ΟΔΟΣ → οδος), is folded away by writing every sigma
-- as σ, and a dotted capital I (İ → i and a combining dot above, U+0307) folds to a plain i,
-- as Turkish writes it. search_fold() in todo_service.py folds q so, and
-- sql/sqlite/search.sql SQLite's titles and descriptions. A server without ICU stops the
-- upgrade here, saying so.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu') THEN
        RAISE EXCEPTION 'todo-backend needs PostgreSQL built with ICU (the collation "und-x-icu" is missing): the search folds case with it';
    END IF;
END
$$;

CREATE FUNCTION search_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT replace(replace(lower(value COLLATE "und-x-icu"), 'ς', 'σ'), U&'i\0307', 'i') $$;

-- Each task keeps its title and description folded, written by the database on every insert
-- and update (old rows too, by this file), so that a search compares stored text: ICU's
-- lower() on every row of a search made a list of 10,000 tasks four to eight times slower
-- than the locale's lower() had been, and left the planner no statistics to estimate it by.
-- Adding the columns rewrites the table once, while reads and writes of tasks wait. Like an
-- index on lower(), a stored fold is ICU's of the day it was written.
ALTER TABLE tasks
    ADD COLUMN title_folded text GENERATED ALWAYS AS (search_fold(title)) STORED,
    ADD COLUMN description_folded text GENERATED ALWAYS AS (search_fold(description)) STORED;
