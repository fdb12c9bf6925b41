-- 0013 is taken by a migration on a branch developed alongside the comment
-- watch (0014); this empty file keeps the numbers without a gap until the
-- two meet, when the other branch's 0013 replaces it.
SELECT 1;
