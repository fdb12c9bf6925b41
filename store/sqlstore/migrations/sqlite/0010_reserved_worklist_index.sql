-- 0010: reserved for the worklist index (built on another branch); this
-- placeholder keeps the numbers contiguous until it is merged, and is
-- dropped in favour of the index's file then.
SELECT 1;
