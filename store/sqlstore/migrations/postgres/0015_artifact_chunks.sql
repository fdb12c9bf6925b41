-- Report artifacts' bytes in rows of about 8,000 bytes, stored as they are
-- (STORAGE PLAIN: one heap tuple per chunk, no TOAST). In report_artifacts.data
-- (EXTERNAL since 0007) a 2 MiB PDF became ~1,050 TOAST tuples of ~2,000
-- bytes, each with its own TOAST index entry and WAL record: half the
-- server's CPU of a report POST. As ~263 chunks written by one binary COPY
-- (which batches its heap inserts and their WAL records) the same bytes cost
-- about half as much (docs/performance.md). The bytes stay in the database:
-- replicas share them.
--
-- report_artifacts.chunks counts a row's chunks; NULL where the bytes are in
-- data (rows written before, still read) or gone (purged).
CREATE TABLE report_artifact_chunks (
    domain    text    NOT NULL,
    report_id text    NOT NULL,
    version   integer NOT NULL,
    idx       integer NOT NULL,
    seq       integer NOT NULL,
    data      bytea   NOT NULL,  -- PHI; deleted by the purge
    PRIMARY KEY (domain, report_id, version, idx, seq)
);
ALTER TABLE report_artifact_chunks ALTER COLUMN data SET STORAGE PLAIN;
ALTER TABLE report_artifacts ADD COLUMN chunks integer;
