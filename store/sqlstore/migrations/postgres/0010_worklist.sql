-- 0010: the worklist index (see the SQLite file of the same number).
CREATE TABLE worklist_index (
    domain           TEXT        NOT NULL,
    appointment_id   TEXT        NOT NULL,
    id               TEXT        NOT NULL,
    patient          TEXT        NOT NULL DEFAULT '',
    performer        TEXT        NOT NULL DEFAULT '',
    requester        TEXT        NOT NULL DEFAULT '',
    status           TEXT        NOT NULL DEFAULT '',
    priority         TEXT        NOT NULL DEFAULT '',
    priority_rank    INTEGER     NOT NULL,
    occurrence_start TIMESTAMPTZ,
    occurrence_end   TIMESTAMPTZ,
    needed_by        TIMESTAMPTZ,
    site             TEXT        NOT NULL DEFAULT '',
    digest           TEXT        NOT NULL,
    last_updated     TIMESTAMPTZ NOT NULL,
    first_seen       TIMESTAMPTZ NOT NULL,
    seen_at          TIMESTAMPTZ NOT NULL,
    left_at          TIMESTAMPTZ,
    PRIMARY KEY (domain, appointment_id)
);
CREATE UNIQUE INDEX worklist_index_id ON worklist_index (domain, id);
CREATE INDEX worklist_index_priority ON worklist_index (domain, priority_rank, id);
CREATE INDEX worklist_index_performer ON worklist_index (domain, performer);
CREATE INDEX worklist_index_patient ON worklist_index (domain, patient);
CREATE INDEX worklist_index_updated ON worklist_index (domain, last_updated, id);
CREATE INDEX worklist_index_left ON worklist_index (left_at);
CREATE TABLE worklist_content (
    domain         TEXT  NOT NULL,
    appointment_id TEXT  NOT NULL,
    appointment    BYTEA NOT NULL,
    resource       BYTEA NOT NULL,
    PRIMARY KEY (domain, appointment_id)
);
CREATE TABLE worklist_tokens (
    domain         TEXT NOT NULL,
    appointment_id TEXT NOT NULL,
    param          TEXT NOT NULL,
    system         TEXT NOT NULL,
    code           TEXT NOT NULL,
    PRIMARY KEY (domain, appointment_id, param, system, code)
);
CREATE INDEX worklist_tokens_code ON worklist_tokens (domain, param, code);
CREATE TABLE worklist_sync (
    domain       TEXT PRIMARY KEY,
    owner        TEXT        NOT NULL DEFAULT '',
    lease_until  TIMESTAMPTZ,
    started      TIMESTAMPTZ,
    finished     TIMESTAMPTZ
);
