-- 0019: PostgreSQL's artifact chunk rows keep their key in the row (no
-- TOAST). SQLite keeps artifact bytes in files (0012), so here there is
-- nothing to do; the file keeps the engines' numbers in step.
SELECT 1;
