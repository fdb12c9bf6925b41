-- 0018: room for artifact chunks made ahead of time (chunkreserve.go).
-- PostgreSQL 15 grows a table one 8 KB page at a time, under a lock, with
-- a write to the file for each page; on the reference machine that was 16
-- of the 19 ms a 2 MiB artifact's COPY took, against 3 ms into pages a
-- VACUUM had freed (docs/performance.md). The bridge makes free pages
-- beforehand, off the request's path: it inserts a page's worth of rows
-- it rolls back, and VACUUMs.
--
-- fillfactor 10 lets those rows be small (800 bytes fill a page: a row
-- that cannot fit beside the fillfactor's reserve goes to a nearly empty
-- page), so making a page costs ~1 KB of WAL, not 8. The chunks themselves
-- (~8,000 bytes each) always took a page of their own and still do; tails
-- shorter than ~790 bytes share pages only up to 10 % full.
--
-- vacuum_truncate off keeps the free pages at the table's end that VACUUM
-- (manual or auto) would otherwise give back to the file system: they are
-- the reserve. A table never shrinks by itself any more; VACUUM (TRUNCATE)
-- still does it by hand (docs/store.md).
ALTER TABLE report_artifact_chunks SET (fillfactor = 10, vacuum_truncate = false);

-- The room's count reads the chunks of the artifacts that still have bytes:
-- a partial index keeps that to the rows within retention (the purge sets
-- chunks to NULL, and report_artifacts keeps its rows for good).
CREATE INDEX report_artifacts_chunked ON report_artifacts (chunks) WHERE chunks > 0;
