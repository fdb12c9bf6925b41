-- 0013: ImagingStudy searches served from the worklist index
-- (docs/worklist-index.md). started_start/started_end are the range
-- ImagingStudy.started stands for (a dateTime its second, a date alone
-- the whole site-local day), which occurrence_start/end are not: a
-- ServiceRequest's occurrence runs to its end time, a study's start is
-- one instant. row_format says which derived columns a row was written
-- with (0: before this migration); the next walk fills in the rows it
-- finds unchanged at 0, without an event, since their content did not
-- change.
ALTER TABLE worklist_index ADD COLUMN started_start INTEGER;
ALTER TABLE worklist_index ADD COLUMN started_end INTEGER;
ALTER TABLE worklist_index ADD COLUMN row_format INTEGER NOT NULL DEFAULT 0;
