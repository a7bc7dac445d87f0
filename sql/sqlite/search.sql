-- The list's search, as SQLite asks it: the title and the description folded as PostgreSQL's
-- search_fold() folds them (sql/schema/postgresql/007_search_fold.sql), against :pattern,
-- which the service folded the same way. lower() is the service's, Python's, one letter at a
-- time; then every sigma is σ, and an i with a combining dot above (U+0307, 775) a plain i.

-- fragment: search_match
replace(replace(lower(title), 'ς', 'σ'), 'i' || char(775), 'i') LIKE :pattern ESCAPE '\'
OR replace(replace(lower(description), 'ς', 'σ'), 'i' || char(775), 'i') LIKE :pattern ESCAPE '\'
