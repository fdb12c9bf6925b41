-- 0010: the worklist index (docs/worklist-index.md). One row per QUBS
-- appointment pending reporting, per domain, with the columns searches
-- filter and sort on (derived from the ServiceRequest it maps to), the
-- appointment as received and the ServiceRequest (PHI: rows that left are
-- deleted by retention). left_at is NULL while the study is on the
-- worklist. The appointment and the ServiceRequest are in worklist_content.
CREATE TABLE worklist_index (
    domain           TEXT    NOT NULL,
    appointment_id   TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    patient          TEXT    NOT NULL DEFAULT '',
    performer        TEXT    NOT NULL DEFAULT '',
    requester        TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL DEFAULT '',
    priority         TEXT    NOT NULL DEFAULT '',
    priority_rank    INTEGER NOT NULL,
    occurrence_start INTEGER,
    occurrence_end   INTEGER,
    needed_by        INTEGER,
    site             TEXT    NOT NULL DEFAULT '',
    digest           TEXT    NOT NULL,
    last_updated     INTEGER NOT NULL,
    first_seen       INTEGER NOT NULL,
    seen_at          INTEGER NOT NULL,
    left_at          INTEGER,
    PRIMARY KEY (domain, appointment_id)
);
CREATE UNIQUE INDEX worklist_index_id ON worklist_index (domain, id);
CREATE INDEX worklist_index_priority ON worklist_index (domain, priority_rank, id);
CREATE INDEX worklist_index_performer ON worklist_index (domain, performer);
CREATE INDEX worklist_index_patient ON worklist_index (domain, patient);
CREATE INDEX worklist_index_updated ON worklist_index (domain, last_updated, id);
CREATE INDEX worklist_index_left ON worklist_index (left_at);
-- The appointment as received and the ServiceRequest (PHI), apart from
-- the search columns: searches scan and sort the narrow rows above (a few
-- hundred bytes each) and read these only for the page they answer.
CREATE TABLE worklist_content (
    domain         TEXT NOT NULL,
    appointment_id TEXT NOT NULL,
    appointment    BLOB NOT NULL,
    resource       BLOB NOT NULL,
    PRIMARY KEY (domain, appointment_id)
);
-- The coded values token parameters match (identifier, code, modality).
CREATE TABLE worklist_tokens (
    domain         TEXT NOT NULL,
    appointment_id TEXT NOT NULL,
    param          TEXT NOT NULL,
    system         TEXT NOT NULL,
    code           TEXT NOT NULL,
    PRIMARY KEY (domain, appointment_id, param, system, code)
);
CREATE INDEX worklist_tokens_code ON worklist_tokens (domain, param, code);
-- Per domain: who syncs it (a lease) and when the last complete walk ran.
CREATE TABLE worklist_sync (
    domain       TEXT PRIMARY KEY,
    owner        TEXT    NOT NULL DEFAULT '',
    lease_until  INTEGER,
    started      INTEGER,
    finished     INTEGER
);
