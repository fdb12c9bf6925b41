-- 0017: occurrence and started as the site's wall clock too
-- ("2031-03-05T23:30:00", end exclusive; NULL for none, as the instants), beside the instants
-- of 0010 and 0013. A search value without a time (a day, month, year) is
-- that span at each study's own site (docs/worklist-index.md): compared
-- with these as text it is one range for every site, where against the
-- instants it needed one per zone. Rows written before are filled in by
-- the next walk that finds them unchanged (row_format 3).
ALTER TABLE worklist_index ADD COLUMN occurrence_local_start TEXT;
ALTER TABLE worklist_index ADD COLUMN occurrence_local_end TEXT;
ALTER TABLE worklist_index ADD COLUMN started_local_start TEXT;
ALTER TABLE worklist_index ADD COLUMN started_local_end TEXT;
