-- A database at migration 0006 made by the store/sqlite of commit 913b45c (the
-- hand-written runner before store/sqlstore), filled with one of everything
-- and dumped with sqlite3 .dump. TestUpgradeFromRelease0006 loads it.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL);
INSERT INTO schema_migrations VALUES(1,'0001_init',1796204691373837);
INSERT INTO schema_migrations VALUES(2,'0002_audit',1796204691374826);
INSERT INTO schema_migrations VALUES(3,'0003_appointment_queues',1796204691376052);
INSERT INTO schema_migrations VALUES(4,'0004_drop_unused',1796204691384239);
INSERT INTO schema_migrations VALUES(5,'0005_artifact_binaries',1796204691384872);
INSERT INTO schema_migrations VALUES(6,'0006_audit_patients_lean',1796204691392749);
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
INSERT INTO reports VALUES('acme','r1',2,'A1','Patient/P1','final',1740819600123456,1740823200123456,NULL,NULL,NULL,NULL);
INSERT INTO reports VALUES('acme','r2',1,'A2','Patient/P2','final',1740826800123456,1740826800123456,NULL,NULL,NULL,NULL);
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
    next_attempt_at INTEGER NOT NULL, queue_seq INTEGER,
    PRIMARY KEY (domain, report_id, version),
    FOREIGN KEY (domain, report_id) REFERENCES reports (domain, id)
);
INSERT INTO report_versions VALUES('acme','r1',1,'A1','Patient/P1','preliminary',X'7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227231227d',X'7b2276223a317d',0,1740819600123456,'delivered',1,'','report-guid-1',1740819603123456,1740819600123456,1);
INSERT INTO report_versions VALUES('acme','r1',2,'A1','Patient/P1','final',X'7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227231222c22737461747573223a2266696e616c227d',X'7b2276223a327d',0,1740823200123456,'pending',1,'','',NULL,1740823200123456,2);
INSERT INTO report_versions VALUES('acme','r2',1,'A2','Patient/P2','final',X'7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227232227d',X'7b2276223a317d',0,1740826800123456,'pending',0,'','',NULL,1740826800123456,1);
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
    uploaded_at     INTEGER, binary_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, report_id, version, idx),
    FOREIGN KEY (domain, report_id, version) REFERENCES report_versions (domain, report_id, version)
);
INSERT INTO report_artifacts VALUES('acme','r1',1,0,'r1.pdf','application/pdf',32,'2aa8a0f38de994e88107092b3361e2a5be3e5193b07d248a968242f694e35792',X'255044462d312e34206f6c642d72656c65617365206172746966616374000102','att-guid-1',1740819602123456,'dra-r1-0');
INSERT INTO report_artifacts VALUES('acme','r1',2,0,'r1.pdf','application/pdf',32,'2aa8a0f38de994e88107092b3361e2a5be3e5193b07d248a968242f694e35792',X'255044462d312e34206f6c642d72656c65617365206172746966616374000102','',NULL,'dra-r1-0');
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
INSERT INTO binaries VALUES('acme','b1','application/pdf',X'62696e617279206279746573',12,'4f463802bc436efdd9a0c4e8c999ec3d37450657bd50b579d796b58bc9d3f1ef',1740819600123456,0);
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
INSERT INTO idempotency_keys VALUES('acme','DiagnosticReport:create','k1','h1','DiagnosticReport','r1',1,1740819600123456);
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
INSERT INTO audit_events VALUES('acme','ae-1',1740819600123456,'E','search-type','0','','ris','','','','["Patient/P1","Patient/P2"]','["ServiceRequest/A1"]','ServiceRequest?_count','','/fhir/:domain/ServiceRequest');
CREATE TABLE jti_claims (
    issuer          TEXT    NOT NULL,
    jti             TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
INSERT INTO jti_claims VALUES('client-1','jti-1',4102444800000000);
CREATE TABLE delivery_queues (
    domain          TEXT    NOT NULL,
    appointment_id  TEXT    NOT NULL,
    accepted        INTEGER NOT NULL DEFAULT 0, -- the last queue_seq handed out
    due_at          INTEGER,          -- next_attempt_at of the newest pending version; NULL: nothing to deliver
    leased_report   TEXT,             -- the version a worker holds (report id, version), with the lease below
    leased_version  INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    PRIMARY KEY (domain, appointment_id)
);
INSERT INTO delivery_queues VALUES('acme','A1',2,1740823200123456,'r1',2,'dead-worker',1740827400123456);
INSERT INTO delivery_queues VALUES('acme','A2',1,1740826800123456,NULL,NULL,NULL,NULL);
CREATE TABLE IF NOT EXISTS "audit_patients" (
    domain          TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL,
    recorded        INTEGER NOT NULL,
    audit_id        TEXT    NOT NULL,
    PRIMARY KEY (domain, patient_ref, recorded, audit_id)
) WITHOUT ROWID;
INSERT INTO audit_patients VALUES('acme','Patient/P1',1740819600123456,'ae-1');
INSERT INTO audit_patients VALUES('acme','Patient/P2',1740819600123456,'ae-1');
CREATE INDEX reports_search ON reports (domain, created_at, id);
CREATE INDEX reports_appointment ON reports (domain, appointment_id);
CREATE INDEX reports_patient ON reports (domain, patient_ref);
CREATE INDEX reports_queue ON reports (queue_due_at) WHERE queue_due_at IS NOT NULL;
CREATE INDEX report_versions_pending ON report_versions (domain, report_id, version) WHERE state = 'pending';
CREATE INDEX report_versions_purge ON report_versions (created_at) WHERE purged = 0;
CREATE INDEX binaries_purge ON binaries (created_at) WHERE purged = 0;
CREATE INDEX audit_events_search ON audit_events (domain, recorded, id);
CREATE INDEX audit_events_agent ON audit_events (domain, agent_id, recorded, id);
CREATE INDEX audit_events_purge ON audit_events (recorded);
CREATE INDEX jti_claims_expiry ON jti_claims (expires_at);
CREATE INDEX delivery_queues_due ON delivery_queues (due_at) WHERE due_at IS NOT NULL;
CREATE UNIQUE INDEX report_versions_queue ON report_versions (domain, appointment_id, queue_seq);
CREATE INDEX report_versions_queue_pending ON report_versions (domain, appointment_id, queue_seq) WHERE state = 'pending';
CREATE INDEX report_artifacts_binary ON report_artifacts (domain, binary_id, version) WHERE binary_id <> '';
COMMIT;
