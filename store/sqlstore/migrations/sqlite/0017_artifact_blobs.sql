-- Needs 0016 (added on main beside this one) before it.
--
-- PostgreSQL's 0017 writes artifact bytes as blobs before the version
-- that names them. On SQLite they stay in files beside the database
-- (0012): the tables and the column exist so that both engines share
-- their queries (the purge), and stay empty.
CREATE TABLE artifact_blobs (
    id         TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE artifact_blob_chunks (
    blob_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    PRIMARY KEY (blob_id, seq)
) WITHOUT ROWID;
ALTER TABLE report_artifacts ADD COLUMN blob_id TEXT;
