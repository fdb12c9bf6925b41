-- Placeholder, so that this branch opens a database: 0009 is taken by work
-- in flight on other branches, which replaces this file at merge.
SELECT 1;
