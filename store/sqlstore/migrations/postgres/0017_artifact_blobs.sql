-- Needs 0016 (added on main beside this one) before it.
--
-- Report artifacts' bytes as blobs written before the version that names
-- them, in a transaction of their own committed without waiting for the
-- WAL flush, while the version's transaction runs: the version's
-- synchronous commit, later in the WAL, makes them durable with it
-- (docs/store.md, "Artifact blobs on PostgreSQL"). A blob no version names
-- (its version failed or never committed) is swept once older than an hour.
--
-- Chunks as in 0015 (rows of about 8,000 bytes, STORAGE PLAIN), keyed by
-- the blob's random id. report_artifacts.blob_id references the blob, so a
-- sweep can never delete one a committed or committing version names;
-- report_artifacts.chunks still counts its chunks (NULL: bytes in data, or
-- purged). report_artifact_chunks keeps the rows written from 0015 on.
CREATE TABLE artifact_blobs (
    id         text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE artifact_blob_chunks (
    blob_id text    NOT NULL,
    seq     integer NOT NULL,
    data    bytea   NOT NULL,  -- PHI; deleted by the purge
    PRIMARY KEY (blob_id, seq)
);
ALTER TABLE artifact_blob_chunks ALTER COLUMN data SET STORAGE PLAIN;
ALTER TABLE report_artifacts ADD COLUMN blob_id text REFERENCES artifact_blobs (id);
CREATE INDEX report_artifacts_blob ON report_artifacts (blob_id) WHERE blob_id IS NOT NULL;
