-- 0018: room for artifact chunks made ahead of time (chunkreserve.go).
-- PostgreSQL 15 grows a table one 8 KB page at a time, under a lock, with
-- a write to the file for each page; on the reference machine that was 16
-- of the 19 ms a 2 MiB artifact's COPY took, against 3 ms into pages a
-- VACUUM had freed (docs/performance.md). The bridge makes free pages
-- beforehand, off the request's path: it inserts rows, one a page, rolls
-- them back, and VACUUMs.
--
-- fillfactor 10 lets those rows be small: a page then keeps 7,372 of its
-- bytes free, so a row over ~650 bytes, which cannot fit beside that, goes
-- to a nearly empty page. 800 bytes fill a page, and making a page costs
-- ~900 bytes of WAL, not 8 KB. The chunks themselves (~8,000 bytes each)
-- always took a page of their own and still do. Rows of ~400 to ~4,000
-- bytes (the last chunk of an artifact, a small artifact) now take a page
-- each where two or more shared one; shorter ones share pages up to 10 %
-- full. A release before this one keeps these settings if rolled back to.
--
-- vacuum_truncate off keeps the free pages at the table's end that VACUUM
-- (manual or auto) would otherwise give back to the file system: they are
-- the reserve. A table never shrinks by itself any more; VACUUM (TRUNCATE)
-- still does it by hand (docs/store.md).
ALTER TABLE report_artifact_chunks SET (fillfactor = 10, vacuum_truncate = false);

-- The room's count reads the chunks of the artifacts that still have bytes:
-- a partial index keeps that to the rows within retention (the purge sets
-- chunks to NULL, and report_artifacts keeps its rows for good). Built in
-- the migration's transaction (not CONCURRENTLY), it holds writes to
-- report_artifacts while it reads the table once.
CREATE INDEX report_artifacts_chunked ON report_artifacts (chunks) WHERE chunks > 0;
