-- 0001: the bridge's store. Times are INTEGER microseconds since the Unix
-- epoch (UTC), so they sort and compare as numbers; booleans are 0/1.
-- docs/store.md explains every table.

-- One row per DiagnosticReport: the latest version's search fields and the
-- head of its delivery queue. Locking this row (BEGIN IMMEDIATE here, FOR
-- UPDATE on PostgreSQL) serialises everything that changes one report's
-- queue: updates, claims, completions.
CREATE TABLE reports (
    domain          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    latest_version  INTEGER NOT NULL,
    appointment_id  TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL, -- of version 1: the search order
    updated_at      INTEGER NOT NULL, -- of the latest version
    queue_due_at    INTEGER,          -- next_attempt_at of the newest pending version; NULL: nothing to deliver
    leased_version  INTEGER,          -- the version a worker holds, with the lease below
    lease_owner     TEXT,
    lease_until     INTEGER,
    PRIMARY KEY (domain, id)
);
CREATE INDEX reports_search ON reports (domain, created_at, id);
CREATE INDEX reports_appointment ON reports (domain, appointment_id);
CREATE INDEX reports_patient ON reports (domain, patient_ref);
CREATE INDEX reports_queue ON reports (queue_due_at) WHERE queue_due_at IS NOT NULL;

-- Every accepted version with its delivery state: the outbox. A version is
-- written in the same transaction as its report row, so an accepted report
-- is always queued.
CREATE TABLE report_versions (
    domain          TEXT    NOT NULL,
    report_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    appointment_id  TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL DEFAULT '',
    resource        BLOB,             -- PHI; NULL once purged
    submission      BLOB,             -- PHI; NULL once purged
    purged          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '', -- PHI-free by contract
    report_guid     TEXT    NOT NULL DEFAULT '',
    delivered_at    INTEGER,
    next_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (domain, report_id, version),
    FOREIGN KEY (domain, report_id) REFERENCES reports (domain, id)
);
CREATE INDEX report_versions_pending ON report_versions (domain, report_id, version) WHERE state = 'pending';
CREATE INDEX report_versions_purge ON report_versions (created_at) WHERE purged = 0;

CREATE TABLE report_artifacts (
    domain          TEXT    NOT NULL,
    report_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    idx             INTEGER NOT NULL,
    file_name       TEXT    NOT NULL DEFAULT '',
    content_type    TEXT    NOT NULL DEFAULT '',
    size            INTEGER NOT NULL,
    sha256          TEXT    NOT NULL,
    data            BLOB,             -- PHI; NULL once purged
    qubs_guid       TEXT    NOT NULL DEFAULT '',
    uploaded_at     INTEGER,
    PRIMARY KEY (domain, report_id, version, idx),
    FOREIGN KEY (domain, report_id, version) REFERENCES report_versions (domain, report_id, version)
);

CREATE TABLE binaries (
    domain          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    content_type    TEXT    NOT NULL DEFAULT '',
    data            BLOB,             -- PHI; NULL once purged
    size            INTEGER NOT NULL,
    sha256          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    purged          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, id)
);
CREATE INDEX binaries_purge ON binaries (created_at) WHERE purged = 0;

CREATE TABLE communications (
    domain          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    appointment_id  TEXT    NOT NULL DEFAULT '',
    comment_guid    TEXT    NOT NULL DEFAULT '',
    resource        BLOB,             -- PHI; NULL once purged
    idempotency_key TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    purged          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, id)
);
CREATE INDEX communications_appointment ON communications (domain, appointment_id, created_at);
CREATE INDEX communications_purge ON communications (created_at) WHERE purged = 0;

CREATE TABLE document_references (
    domain          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    appointment_id  TEXT    NOT NULL DEFAULT '',
    attachment_guid TEXT    NOT NULL DEFAULT '',
    resource        BLOB,             -- may hold PHI; NULL once purged
    created_at      INTEGER NOT NULL,
    purged          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, id)
);
CREATE INDEX document_references_purge ON document_references (created_at) WHERE purged = 0;

-- No PHI: keys, a request digest and the id of what was created.
CREATE TABLE idempotency_keys (
    domain          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL DEFAULT '',
    resource_type   TEXT    NOT NULL DEFAULT '',
    resource_id     TEXT    NOT NULL DEFAULT '',
    version         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (domain, scope, key)
);
