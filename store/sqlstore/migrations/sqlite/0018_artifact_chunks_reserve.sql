-- 0018: PostgreSQL's makes room for artifact chunks ahead of time. SQLite
-- keeps artifact bytes in files (0012), so here there is nothing to do;
-- the file keeps the engines' numbers in step.
SELECT 1;
