-- 0017: occurrence and started as the site's wall clock too (see the
-- SQLite file of the same number). COLLATE "C": compared byte by byte, as
-- SQLite and the walk compare them, whatever the database's collation.
ALTER TABLE worklist_index ADD COLUMN occurrence_local_start TEXT COLLATE "C";
ALTER TABLE worklist_index ADD COLUMN occurrence_local_end TEXT COLLATE "C";
ALTER TABLE worklist_index ADD COLUMN started_local_start TEXT COLLATE "C";
ALTER TABLE worklist_index ADD COLUMN started_local_end TEXT COLLATE "C";
