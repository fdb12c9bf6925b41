-- 0017: occurrence and started as the site's wall clock too (see the
-- SQLite file of the same number).
ALTER TABLE worklist_index ADD COLUMN occurrence_local_start TEXT;
ALTER TABLE worklist_index ADD COLUMN occurrence_local_end TEXT;
ALTER TABLE worklist_index ADD COLUMN started_local_start TEXT;
ALTER TABLE worklist_index ADD COLUMN started_local_end TEXT;
