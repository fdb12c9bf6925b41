-- PostgreSQL's 0015 moves artifact bytes into report_artifact_chunks. On
-- SQLite they stay in files beside the database (0012): the table and the
-- column exist so that both engines share their queries (the purge), and
-- stay empty.
CREATE TABLE report_artifact_chunks (
    domain    TEXT    NOT NULL,
    report_id TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (domain, report_id, version, idx, seq)
) WITHOUT ROWID;
ALTER TABLE report_artifacts ADD COLUMN chunks INTEGER;
