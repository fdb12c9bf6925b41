-- 0002: the audit trail and the replay cache of SMART client assertions.
-- Neither holds PHI (patients and resources appear as references, searches
-- without their parameter values), and PurgeBefore leaves both alone:
-- audit records have their own retention (PurgeAuditBefore), jti claims
-- expire. docs/store.md explains both.

-- One row per audit record, written once and never updated. The reference
-- lists are JSON arrays; audit_patients repeats the patient references for
-- search.
CREATE TABLE audit_events (
    domain          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    recorded        INTEGER NOT NULL,
    action          TEXT    NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    interaction     TEXT    NOT NULL,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('0', '4', '8', '12')),
    outcome_desc    TEXT    NOT NULL DEFAULT '',
    agent_id        TEXT    NOT NULL DEFAULT '',
    agent_method    TEXT    NOT NULL DEFAULT '',
    token_id        TEXT    NOT NULL DEFAULT '',
    network_addr    TEXT    NOT NULL DEFAULT '',
    patient_refs    TEXT    NOT NULL DEFAULT '[]',
    entity_refs     TEXT    NOT NULL DEFAULT '[]',
    query           TEXT    NOT NULL DEFAULT '', -- parameter names only, never values
    correlation_id  TEXT    NOT NULL DEFAULT '',
    request_path    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (domain, id)
);
-- SearchAudit pages newest first by (recorded, id); an index is read
-- backwards as easily as forwards.
CREATE INDEX audit_events_search ON audit_events (domain, recorded, id);
CREATE INDEX audit_events_agent ON audit_events (domain, agent_id, recorded, id);
CREATE INDEX audit_events_purge ON audit_events (recorded);

-- Which patients each record is about, with its time, so that a search by
-- patient reads one index range.
CREATE TABLE audit_patients (
    domain          TEXT    NOT NULL,
    audit_id        TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL,
    recorded        INTEGER NOT NULL,
    PRIMARY KEY (domain, audit_id, patient_ref),
    FOREIGN KEY (domain, audit_id) REFERENCES audit_events (domain, id) ON DELETE CASCADE
);
CREATE INDEX audit_patients_search ON audit_patients (domain, patient_ref, recorded, audit_id);

-- SMART client assertions seen, until they expire: (issuer, jti) is
-- claimed once.
CREATE TABLE jti_claims (
    issuer          TEXT    NOT NULL,
    jti             TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX jti_claims_expiry ON jti_claims (expires_at);
