-- 0002: the audit trail and the replay cache of SMART client assertions.
-- Neither holds PHI (patients and resources appear as references, searches
-- without their parameter values), and PurgeBefore leaves both alone:
-- audit records have their own retention (PurgeAuditBefore), jti claims
-- expire. docs/store.md explains both.

-- One row per audit record, written once and never updated. The reference
-- lists are JSON arrays (text, as on SQLite); audit_patients repeats the
-- patient references for search.
CREATE TABLE audit_events (
    domain          text        NOT NULL,
    id              text        NOT NULL,
    recorded        timestamptz NOT NULL,
    action          text        NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    interaction     text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('0', '4', '8', '12')),
    outcome_desc    text        NOT NULL DEFAULT '',
    agent_id        text        NOT NULL DEFAULT '',
    agent_method    text        NOT NULL DEFAULT '',
    token_id        text        NOT NULL DEFAULT '',
    network_addr    text        NOT NULL DEFAULT '',
    patient_refs    text        NOT NULL DEFAULT '[]',
    entity_refs     text        NOT NULL DEFAULT '[]',
    query           text        NOT NULL DEFAULT '', -- parameter names only, never values
    correlation_id  text        NOT NULL DEFAULT '',
    request_path    text        NOT NULL DEFAULT '',
    PRIMARY KEY (domain, id)
);
-- SearchAudit pages newest first by (recorded, id); a btree is read
-- backwards as easily as forwards.
CREATE INDEX audit_events_search ON audit_events (domain, recorded, id);
CREATE INDEX audit_events_agent ON audit_events (domain, agent_id, recorded, id);
CREATE INDEX audit_events_purge ON audit_events (recorded);

-- Which patients each record is about, with its time, so that a search by
-- patient reads one index range.
CREATE TABLE audit_patients (
    domain          text        NOT NULL,
    audit_id        text        NOT NULL,
    patient_ref     text        NOT NULL,
    recorded        timestamptz NOT NULL,
    PRIMARY KEY (domain, audit_id, patient_ref),
    FOREIGN KEY (domain, audit_id) REFERENCES audit_events (domain, id) ON DELETE CASCADE
);
CREATE INDEX audit_patients_search ON audit_patients (domain, patient_ref, recorded, audit_id);

-- SMART client assertions seen, until they expire: (issuer, jti) is
-- claimed once, by INSERT ... ON CONFLICT, atomically across replicas.
CREATE TABLE jti_claims (
    issuer          text        NOT NULL,
    jti             text        NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX jti_claims_expiry ON jti_claims (expires_at);
