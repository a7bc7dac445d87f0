-- The list's search, as PostgreSQL asks it: the title and the description each task keeps
-- folded by search_fold() (sql/schema/postgresql/007_search_fold.sql), never by the
-- database's own locale, against :pattern, which the service folded the same way.

-- fragment: search_match
title_folded LIKE :pattern ESCAPE '\'
OR description_folded LIKE :pattern ESCAPE '\'
