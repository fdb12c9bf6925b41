-- 0013: ImagingStudy.started in the worklist index (see the SQLite file
-- of the same number).
ALTER TABLE worklist_index ADD COLUMN started_start TIMESTAMPTZ;
ALTER TABLE worklist_index ADD COLUMN started_end TIMESTAMPTZ;
ALTER TABLE worklist_index ADD COLUMN row_format INTEGER NOT NULL DEFAULT 0;
