-- 0001: the bridge's store. Tables are created in the first schema of the
-- connection's search_path. docs/store.md explains every table.

-- One row per DiagnosticReport: the latest version's search fields and the
-- head of its delivery queue. SELECT ... FOR UPDATE on this row serialises
-- everything that changes one report's queue (updates, claims, completions)
-- across replicas; claims skip rows another replica holds (SKIP LOCKED).
CREATE TABLE reports (
    domain          text        NOT NULL,
    id              text        NOT NULL,
    latest_version  integer     NOT NULL,
    appointment_id  text        NOT NULL,
    patient_ref     text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL, -- of version 1: the search order
    updated_at      timestamptz NOT NULL, -- of the latest version
    queue_due_at    timestamptz,          -- next_attempt_at of the newest pending version; NULL: nothing to deliver
    leased_version  integer,              -- the version a worker holds, with the lease below
    lease_owner     text,
    lease_until     timestamptz,
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
    domain          text        NOT NULL,
    report_id       text        NOT NULL,
    version         integer     NOT NULL,
    appointment_id  text        NOT NULL,
    patient_ref     text        NOT NULL DEFAULT '',
    status          text        NOT NULL DEFAULT '',
    resource        bytea,                -- PHI; NULL once purged
    submission      bytea,                -- PHI; NULL once purged
    purged          boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'superseded')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '', -- PHI-free by contract
    report_guid     text        NOT NULL DEFAULT '',
    delivered_at    timestamptz,
    next_attempt_at timestamptz NOT NULL,
    PRIMARY KEY (domain, report_id, version),
    FOREIGN KEY (domain, report_id) REFERENCES reports (domain, id)
);
CREATE INDEX report_versions_pending ON report_versions (domain, report_id, version) WHERE state = 'pending';
CREATE INDEX report_versions_purge ON report_versions (created_at) WHERE NOT purged;

CREATE TABLE report_artifacts (
    domain          text        NOT NULL,
    report_id       text        NOT NULL,
    version         integer     NOT NULL,
    idx             integer     NOT NULL,
    file_name       text        NOT NULL DEFAULT '',
    content_type    text        NOT NULL DEFAULT '',
    size            bigint      NOT NULL,
    sha256          text        NOT NULL,
    data            bytea,                -- PHI; NULL once purged
    qubs_guid       text        NOT NULL DEFAULT '',
    uploaded_at     timestamptz,
    PRIMARY KEY (domain, report_id, version, idx),
    FOREIGN KEY (domain, report_id, version) REFERENCES report_versions (domain, report_id, version)
);

CREATE TABLE binaries (
    domain          text        NOT NULL,
    id              text        NOT NULL,
    content_type    text        NOT NULL DEFAULT '',
    data            bytea,                -- PHI; NULL once purged
    size            bigint      NOT NULL,
    sha256          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    purged          boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (domain, id)
);
CREATE INDEX binaries_purge ON binaries (created_at) WHERE NOT purged;

CREATE TABLE communications (
    domain          text        NOT NULL,
    id              text        NOT NULL,
    appointment_id  text        NOT NULL DEFAULT '',
    comment_guid    text        NOT NULL DEFAULT '',
    resource        bytea,                -- PHI; NULL once purged
    idempotency_key text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    purged          boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (domain, id)
);
CREATE INDEX communications_appointment ON communications (domain, appointment_id, created_at);
CREATE INDEX communications_purge ON communications (created_at) WHERE NOT purged;

CREATE TABLE document_references (
    domain          text        NOT NULL,
    id              text        NOT NULL,
    appointment_id  text        NOT NULL DEFAULT '',
    attachment_guid text        NOT NULL DEFAULT '',
    resource        bytea,                -- may hold PHI; NULL once purged
    created_at      timestamptz NOT NULL,
    purged          boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (domain, id)
);
CREATE INDEX document_references_purge ON document_references (created_at) WHERE NOT purged;

-- No PHI: keys, a request digest and the id of what was created.
CREATE TABLE idempotency_keys (
    domain          text        NOT NULL,
    scope           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL DEFAULT '',
    resource_type   text        NOT NULL DEFAULT '',
    resource_id     text        NOT NULL DEFAULT '',
    version         integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (domain, scope, key)
);
